//! Statement execution: what each statement does to the catalog, the engine and the hub.

use std::sync::atomic::{AtomicU64, Ordering};

use viewcast_plan::{ColumnOrder, GlobalId, RelExpr};
use viewcast_repr::{Diff, RelationDesc, Row};

use crate::catalog::{Item, ItemKind, SourceRuntime};
use crate::Shared;

/// An error of one statement, as the SQL API and pgwire report it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StatementError {
    pub message: String,
    /// The Postgres SQLSTATE.
    pub code: String,
    /// 1-based character position in the query text, when the error points at one.
    pub position: Option<usize>,
}

impl StatementError {
    pub fn new(message: impl Into<String>, code: &str, position: Option<usize>) -> Self {
        StatementError { message: message.into(), code: code.to_string(), position }
    }
}

/// The outcome of one statement.
#[derive(Clone, Debug)]
pub enum ExecuteResult {
    Rows { tag: String, desc: RelationDesc, rows: Vec<Row> },
    Ok { tag: String },
    Error(StatementError),
}

pub(crate) async fn execute(shared: &Shared, sql: &str) -> Vec<ExecuteResult> {
    let statements = match crate::sql_glue::plan_all(shared, sql) {
        Ok(s) => s,
        Err(e) => return vec![ExecuteResult::Error(e)],
    };
    let mut results = Vec::new();
    for stmt in statements {
        // Later statements are planned against the catalog as the earlier ones left it.
        let r = match stmt {
            crate::sql_glue::Pending::Planned(p) => crate::sql_glue::execute_planned(shared, p).await,
            crate::sql_glue::Pending::Deferred(text) => match crate::sql_glue::plan_one(shared, &text) {
                Ok(p) => crate::sql_glue::execute_planned(shared, p).await,
                Err(e) => Err(e),
            },
        };
        match r {
            Ok(r) => results.push(r),
            Err(e) => {
                results.push(ExecuteResult::Error(e));
                break;
            }
        }
    }
    results
}

fn already_exists(name: &str) -> StatementError {
    StatementError::new(format!("catalog item '{name}' already exists"), "42710", None)
}

/// Registers a new source fed by `rows`; `guard` stops its producer when dropped.
pub(crate) fn create_source(
    shared: &Shared,
    name: &str,
    desc: RelationDesc,
    rows: crossbeam_channel::Receiver<Vec<Row>>,
    guard: Box<dyn Send>,
) -> Result<ExecuteResult, StatementError> {
    // Lock order: clock, then catalog (as the tick loop does).
    let _clock = shared.clock.lock().expect("clock lock");
    let mut cat = shared.catalog.lock().expect("catalog lock");
    if cat.resolve(name).is_some() {
        return Err(already_exists(name));
    }
    let id = cat.allocate_id();
    shared.engine.create_input(id, desc.arity()).map_err(engine_error)?;
    let source = Some(SourceRuntime { rows, guard, carry: Vec::new() });
    cat.insert(
        id,
        Item {
            name: name.to_string(),
            kind: ItemKind::Source,
            desc,
            plan: None,
            depends_on: vec![],
            source,
            hidden: false,
            errors: 0,
            last_error: None,
        },
    );
    Ok(ExecuteResult::Ok { tag: "CREATE SOURCE".into() })
}

/// Creates a table: an input written by INSERT/UPDATE/DELETE, published so it can be read and streamed.
pub(crate) async fn create_table(
    shared: &Shared,
    name: &str,
    desc: RelationDesc,
) -> Result<ExecuteResult, StatementError> {
    let as_of = {
        let clock = shared.clock.lock().expect("clock lock");
        let mut cat = shared.catalog.lock().expect("catalog lock");
        if cat.resolve(name).is_some() {
            return Err(already_exists(name));
        }
        let id = cat.allocate_id();
        shared.engine.create_input(id, desc.arity()).map_err(engine_error)?;
        // The table is published through an identity view so it has a change log like any view.
        let view_id = id;
        let as_of = clock.next_ts();
        shared.hub.register(view_id, name, desc.clone(), as_of);
        cat.insert(
            id,
            Item {
                name: name.to_string(),
                kind: ItemKind::Table,
                desc,
                plan: None,
                depends_on: vec![],
                source: None,
                hidden: false,
                errors: 0,
                last_error: None,
            },
        );
        shared.engine.set_publish(id, true).map_err(engine_error)?;
        as_of
    };
    shared.hub.wait_for(as_of + 1).await;
    Ok(ExecuteResult::Ok { tag: "CREATE TABLE".into() })
}

/// Creates a maintained view and returns once its initial contents are sealed.
pub(crate) async fn create_view(
    shared: &Shared,
    name: &str,
    plan: RelExpr,
    desc: RelationDesc,
    hidden: bool,
) -> Result<GlobalId, StatementError> {
    let (id, as_of) = {
        let clock = shared.clock.lock().expect("clock lock");
        let mut cat = shared.catalog.lock().expect("catalog lock");
        if !hidden && cat.resolve(name).is_some() {
            return Err(already_exists(name));
        }
        let id = cat.allocate_id();
        let as_of = clock.next_ts();
        shared.hub.register(id, name, desc.clone(), as_of);
        let depends_on = plan.depends_on();
        if let Err(e) = shared.engine.create_view(id, plan.clone(), true) {
            shared.hub.unregister(id);
            return Err(engine_error(e));
        }
        cat.insert(
            id,
            Item {
                name: name.to_string(),
                kind: ItemKind::View,
                desc,
                plan: Some(plan),
                depends_on,
                source: None,
                hidden,
                errors: 0,
                last_error: None,
            },
        );
        (id, as_of)
    };
    shared.hub.wait_for(as_of + 1).await;
    Ok(id)
}

/// Drops `ids` (already in a safe order: dependents first).
pub(crate) fn drop_items(shared: &Shared, ids: &[GlobalId]) -> Result<(), StatementError> {
    let _clock = shared.clock.lock().expect("clock lock");
    let mut cat = shared.catalog.lock().expect("catalog lock");
    for id in ids {
        shared.hub.unregister(*id);
        shared.engine.drop_item(*id).map_err(engine_error)?;
        cat.remove(*id);
    }
    Ok(())
}

/// Writes `updates` to table `id` in one timestamp; returns once that timestamp is sealed.
pub(crate) async fn write_table(shared: &Shared, id: GlobalId, updates: Vec<(Row, Diff)>) -> Result<(), StatementError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.clock.lock().expect("clock lock").pending.push(crate::clock::PendingWrite { id, updates, done: Some(tx) });
    let ts = rx.await.map_err(|_| StatementError::new("server is shutting down", "57P01", None))?;
    shared.hub.wait_for(ts + 1).await;
    Ok(())
}

static TRANSIENT: AtomicU64 = AtomicU64::new(0);

/// Evaluates a query at the latest sealed timestamp. Over published relations only, the reference
/// interpreter reads the hub's logs at one common timestamp; otherwise a transient dataflow computes it.
pub(crate) async fn select(
    shared: &Shared,
    plan: RelExpr,
    desc: RelationDesc,
    order_by: &[ColumnOrder],
    limit: Option<usize>,
    offset: usize,
) -> Result<ExecuteResult, StatementError> {
    let deps = plan.depends_on();
    let rows = if deps.iter().all(|id| shared.hub.is_ready(*id)) {
        shared.hub.read(|_ts, get| {
            viewcast_plan::interpret::evaluate(&plan, &|id| {
                get(id).ok_or_else(|| viewcast_plan::EvalError::Other(format!("relation {id} is gone")))
            })
        })
    } else {
        let name = format!("__query_{}", TRANSIENT.fetch_add(1, Ordering::Relaxed));
        let id = create_view(shared, &name, plan, desc.clone(), true).await?;
        let rows = shared.hub.read(|_ts, get| get(id).unwrap_or_default());
        drop_items(shared, &[id])?;
        Ok(rows)
    }
    .map_err(|e| StatementError::new(e.to_string(), e.sqlstate(), None))?;
    let mut out: Vec<Row> = Vec::new();
    for (row, diff) in rows {
        for _ in 0..diff.max(0) {
            out.push(row.clone());
        }
    }
    out.sort_by(|a, b| viewcast_plan::relation::compare_rows(order_by, a, b));
    let out: Vec<Row> = out.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)).collect();
    Ok(ExecuteResult::Rows { tag: format!("SELECT {}", out.len()), desc, rows: out })
}

fn engine_error(e: viewcast_engine::EngineError) -> StatementError {
    StatementError::new(e.to_string(), "XX000", None)
}
