//! Statement execution: what each statement does to the catalog, the engine and the hub.

use std::sync::atomic::{AtomicU64, Ordering};

use viewcast_plan::{GlobalId, RelExpr};
use viewcast_repr::{ColumnType, Datum, Diff, RelationDesc, Row, ScalarType};
use viewcast_sql::{Finishing, ItemKind, Show, SinkConnector, SourceConnector, SqlError, Statement};

use crate::catalog::{Item, PlannerCatalog, SourceRuntime};
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

impl From<SqlError> for StatementError {
    fn from(e: SqlError) -> Self {
        StatementError { message: e.message, code: e.code.to_string(), position: e.position }
    }
}

impl From<viewcast_plan::EvalError> for StatementError {
    fn from(e: viewcast_plan::EvalError) -> Self {
        StatementError::new(e.to_string(), e.sqlstate(), None)
    }
}

/// The outcome of one statement.
#[derive(Clone, Debug)]
pub enum ExecuteResult {
    Rows { tag: String, desc: RelationDesc, rows: Vec<Row> },
    Ok { tag: String },
    Error(StatementError),
}

fn ok(tag: &str) -> Result<ExecuteResult, StatementError> {
    Ok(ExecuteResult::Ok { tag: tag.to_string() })
}

pub(crate) async fn execute(shared: &Shared, sql: &str) -> Vec<ExecuteResult> {
    let parsed = match viewcast_sql::parse(sql) {
        Ok(p) => p,
        Err(e) => return vec![ExecuteResult::Error(e.into())],
    };
    let mut results = Vec::new();
    for stmt in &parsed {
        // Each statement is planned against the catalog as the earlier ones left it.
        let planned = {
            let cat = shared.catalog.lock().expect("catalog lock");
            viewcast_sql::plan(stmt, &PlannerCatalog(&cat))
        };
        let r = match planned {
            Ok(p) => execute_planned(shared, p, stmt.sql()).await,
            Err(e) => Err(e.into()),
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

async fn execute_planned(shared: &Shared, stmt: Statement, sql: &str) -> Result<ExecuteResult, StatementError> {
    match stmt {
        Statement::CreateSource { name, if_not_exists, connector, desc } => {
            if if_not_exists && exists(shared, &name) {
                return ok("CREATE SOURCE");
            }
            if let SourceConnector::Upstream { url, view } = connector {
                crate::upstream::create_upstream(shared, &name, &url, &view).await?;
                return ok("CREATE SOURCE");
            }
            create_source(shared, &name, connector, desc, sql)
        }
        Statement::CreateView { name, if_not_exists, or_replace, plan, desc, materialized } => {
            if exists(shared, &name) {
                if if_not_exists {
                    return ok("CREATE VIEW");
                }
                if or_replace {
                    return Err(StatementError::new("CREATE OR REPLACE of an existing view", "0A000", None));
                }
            }
            let kind = if materialized { ItemKind::MaterializedView } else { ItemKind::View };
            create_view(shared, &name, plan, desc, kind, sql, false).await?;
            ok(if materialized { "CREATE MATERIALIZED VIEW" } else { "CREATE VIEW" })
        }
        Statement::CreateTable { name, if_not_exists, desc, keys } => {
            if if_not_exists && exists(shared, &name) {
                return ok("CREATE TABLE");
            }
            create_table(shared, &name, desc, keys).await
        }
        Statement::CreateIndex { name, on, key, if_not_exists } => {
            create_index(shared, name, on, &key, if_not_exists, sql)
        }
        Statement::Insert { id, changes } => write(shared, id, changes, "INSERT 0").await,
        Statement::Update { id, changes } => write(shared, id, changes, "UPDATE").await,
        Statement::Delete { id, changes } => write(shared, id, changes, "DELETE").await,
        Statement::Drop { kind, names, if_exists, cascade } => drop_named(shared, kind, &names, if_exists, cascade),
        Statement::Select { plan, desc, finishing } => select(shared, plan, desc, &finishing).await,
        Statement::Explain { plan, trailer, maintained, .. } => {
            let text = format!("{}{trailer}", explain(shared, &plan, maintained));
            Ok(text_rows("QUERY PLAN", text.lines().map(str::to_string).collect()))
        }
        Statement::Show(Show::Items(ItemKind::Sink)) => Ok(sink_rows(shared)),
        Statement::Show(show) => show_rows(shared, show),
        Statement::CreateSink { name, if_not_exists, from, connector, snapshot } => {
            if exists(shared, &name) {
                if if_not_exists {
                    return ok("CREATE SINK");
                }
                return Err(already_exists(&name));
            }
            create_sink(shared, &name, from, connector, snapshot, sql)
        }
        Statement::Subscribe(_) => Err(StatementError::new(
            "SUBSCRIBE needs a streaming connection: use GET /api/v1/stream/{view} (WebSocket or SSE)",
            "0A000",
            None,
        )),
    }
}

fn exists(shared: &Shared, name: &str) -> bool {
    shared.catalog.lock().expect("catalog lock").resolve(name).is_some()
}

pub(crate) fn already_exists(name: &str) -> StatementError {
    StatementError::new(format!("catalog item '{name}' already exists"), "42710", None)
}

#[allow(dead_code)] // For statements and connectors not supported yet; none at the moment.
fn unsupported(what: &str) -> StatementError {
    StatementError::new(format!("{what} is not supported yet"), "0A000", None)
}

fn text_rows(column: &str, lines: Vec<String>) -> ExecuteResult {
    let desc = RelationDesc::new([(column.to_string(), ColumnType::new(ScalarType::Text, false))]);
    let rows: Vec<Row> = lines.into_iter().map(|l| Row::new(vec![Datum::text(&l)])).collect();
    ExecuteResult::Rows { tag: format!("SELECT {}", rows.len()), desc, rows }
}

pub(crate) fn new_item(name: &str, kind: ItemKind, desc: RelationDesc, sql: &str) -> Item {
    Item::new(name, kind, desc, sql.to_string())
}

/// Rows queued between a source's producer and the tick loop: the bound of ingestion backpressure.
const SOURCE_QUEUE_BATCHES: usize = 64;

fn create_source(
    shared: &Shared,
    name: &str,
    connector: SourceConnector,
    desc: RelationDesc,
    sql: &str,
) -> Result<ExecuteResult, StatementError> {
    // Lock order: clock, then catalog (as the tick loop does).
    let _clock = shared.clock.lock().expect("clock lock");
    let mut cat = shared.catalog.lock().expect("catalog lock");
    if cat.resolve(name).is_some() {
        return Err(already_exists(name));
    }
    let id = cat.allocate_id();
    let (tx, rx) = crossbeam_channel::bounded(SOURCE_QUEUE_BATCHES);
    let started = crate::ingest::start_source(name, connector, desc.arity(), tx)?;
    shared.engine.create_input(id, desc.arity()).map_err(engine_error)?;
    let mut item = new_item(name, ItemKind::Source, desc, sql);
    item.source = Some(SourceRuntime { rows: rx, handle: started.handle, carry: Vec::new(), webhook: started.webhook });
    cat.insert(id, item);
    ok("CREATE SOURCE")
}

/// A hidden (unnamed, unlisted) engine input with `desc`'s columns, recorded in the catalog: what a
/// table, an upstream view and a system view write to. Callers hold the clock lock, then `cat`'s.
pub(crate) fn create_hidden_input(
    shared: &Shared,
    cat: &mut crate::catalog::Catalog,
    name: &str,
    desc: &RelationDesc,
    sql: &str,
) -> Result<GlobalId, StatementError> {
    let input = cat.allocate_id();
    shared.engine.create_input(input, desc.arity()).map_err(engine_error)?;
    let mut item = new_item(name, ItemKind::Source, desc.clone(), sql);
    item.hidden = true;
    cat.insert(input, item);
    Ok(input)
}

/// A table is an engine input (written by INSERT/UPDATE/DELETE) plus a published identity view
/// of it under the table's name, so it has a change log, streams and answers SELECTs like a view.
/// Its `SHOW CREATE TABLE` text is rebuilt from its columns and named constraints.
async fn create_table(
    shared: &Shared,
    name: &str,
    desc: RelationDesc,
    keys: Vec<viewcast_sql::UniqueKey>,
) -> Result<ExecuteResult, StatementError> {
    let sql = &create_table_sql(name, &desc, &keys);
    let input = {
        let _clock = shared.clock.lock().expect("clock lock");
        let mut cat = shared.catalog.lock().expect("catalog lock");
        if cat.resolve(name).is_some() {
            return Err(already_exists(name));
        }
        create_hidden_input(shared, &mut cat, &format!("__input_{name}"), &desc, sql)?
    };
    let plan = RelExpr::Get { id: input, arity: desc.arity() };
    let id = create_view(shared, name, plan, desc, ItemKind::Table, sql, false).await?;
    let mut cat = shared.catalog.lock().expect("catalog lock");
    let item = cat.items.get_mut(&id).expect("just created");
    item.input = Some(input);
    item.keys = keys;
    ok("CREATE TABLE")
}

/// `CREATE TABLE name (col type [NOT NULL], ..., CONSTRAINT k PRIMARY KEY|UNIQUE (cols), ...)`.
fn create_table_sql(name: &str, desc: &RelationDesc, keys: &[viewcast_sql::UniqueKey]) -> String {
    let mut parts: Vec<String> = desc
        .names
        .iter()
        .zip(&desc.types)
        .map(|(n, t)| format!("{} {}{}", ident(n), t.scalar.name(), if t.nullable { "" } else { " NOT NULL" }))
        .collect();
    for k in keys {
        let cols: Vec<String> = k.columns.iter().map(|&i| ident(&desc.names[i])).collect();
        let kind = if k.primary { "PRIMARY KEY" } else { "UNIQUE" };
        parts.push(format!("CONSTRAINT {} {kind} ({})", ident(&k.name), cols.join(", ")));
    }
    format!("CREATE TABLE {} ({})", ident(name), parts.join(", "))
}

/// `name` as a SQL identifier: bare when it reads back as itself, else double-quoted.
fn ident(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Checks that `updates` (consolidated) leave table `id` without a NULL in a NOT NULL column
/// and without two rows with equal keys, given its current contents `current`. Errors carry
/// Postgres' SQLSTATE and message.
fn check_constraints(
    cat: &crate::catalog::Catalog,
    id: GlobalId,
    updates: &[(Row, Diff)],
    current: &dyn Fn() -> Vec<(Row, Diff)>,
) -> Result<(), StatementError> {
    let Some(table) = cat.items.get(&id) else { return Ok(()) };
    for (row, _) in updates.iter().filter(|(_, d)| *d > 0) {
        if let Some(col) = (0..row.len()).find(|&i| !table.desc.types[i].nullable && row.get(i).is_null()) {
            let message = format!(
                "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                table.desc.names[col], table.name
            );
            return Err(StatementError::new(message, "23502", None));
        }
    }
    if table.keys.is_empty() || !updates.iter().any(|(_, d)| *d > 0) {
        return Ok(());
    }
    let current = current();
    for key in &table.keys {
        let key_of = |row: &Row| -> Option<Vec<Datum>> {
            let k: Vec<Datum> = key.columns.iter().map(|&i| row.get(i).clone()).collect();
            // NULLs are distinct from each other: a key with a NULL never conflicts.
            (!k.iter().any(Datum::is_null)).then_some(k)
        };
        // Only keys the statement inserts can end up duplicated.
        let mut counts: std::collections::HashMap<Vec<Datum>, Diff> =
            updates.iter().filter(|(_, d)| *d > 0).filter_map(|(r, _)| key_of(r)).map(|k| (k, 0)).collect();
        for (row, diff) in current.iter().chain(updates) {
            if let Some(count) = key_of(row).and_then(|k| counts.get_mut(&k)) {
                *count += diff;
            }
        }
        if counts.values().any(|&n| n > 1) {
            let message = format!("duplicate key value violates unique constraint \"{}\"", key.name);
            return Err(StatementError::new(message, "23505", None));
        }
    }
    Ok(())
}

/// Creates a maintained view and returns once its initial contents are sealed.
pub(crate) async fn create_view(
    shared: &Shared,
    name: &str,
    plan: RelExpr,
    desc: RelationDesc,
    kind: ItemKind,
    sql: &str,
    hidden: bool,
) -> Result<GlobalId, StatementError> {
    let (id, as_of) = {
        let clock = shared.clock.lock().expect("clock lock");
        let mut cat = shared.catalog.lock().expect("catalog lock");
        if !hidden && cat.resolve(name).is_some() {
            return Err(already_exists(name));
        }
        let id = cat.allocate_id();
        let as_of = clock.as_of();
        shared.hub.register(id, name, desc.clone(), as_of);
        let depends_on = plan.depends_on();
        let engine_plan = crate::upstream::engine_plan(&cat, plan.clone());
        if let Err(e) = shared.engine.create_view(id, engine_plan, true) {
            shared.hub.unregister(id);
            return Err(engine_error(e));
        }
        let mut item = new_item(name, kind, desc, sql);
        item.plan = Some(plan);
        item.depends_on = depends_on;
        item.hidden = hidden;
        cat.insert(id, item);
        (id, as_of)
    };
    shared.hub.wait_for(as_of + 1).await;
    Ok(id)
}

fn drop_named(
    shared: &Shared,
    kind: ItemKind,
    names: &[String],
    if_exists: bool,
    cascade: bool,
) -> Result<ExecuteResult, StatementError> {
    let mut order = Vec::new();
    {
        let cat = shared.catalog.lock().expect("catalog lock");
        for name in names {
            let Some((id, item)) = cat.resolve(name) else {
                if if_exists {
                    continue;
                }
                return Err(StatementError::new(format!("unknown catalog item '{name}'"), "42P01", None));
            };
            let kind_matches = item.kind == kind
                || matches!(
                    (item.kind, kind),
                    (ItemKind::MaterializedView, ItemKind::View) | (ItemKind::View, ItemKind::MaterializedView)
                );
            if !kind_matches {
                return Err(StatementError::new(
                    format!("\"{name}\" is a {}, not a {}", item.kind.name(), kind.name()),
                    "42809",
                    None,
                ));
            }
            let closure = cat.dependents_closure(id);
            // Indexes go with their relation, as in Postgres: they never block a drop.
            let visible_dependents: Vec<String> = closure
                .iter()
                .filter(|d| **d != id && !cat.items[d].hidden && cat.items[d].kind != ItemKind::Index)
                .map(|d| cat.items[d].name.clone())
                .collect();
            if !cascade && !visible_dependents.is_empty() {
                return Err(StatementError::new(
                    format!("cannot drop {name}: still depended upon by {}", visible_dependents.join(", ")),
                    "2BP01",
                    None,
                ));
            }
            for d in closure {
                if !order.contains(&d) {
                    order.push(d);
                }
                // A table's hidden input goes with it.
                if let Some(input) = cat.items.get(&d).and_then(|i| i.input) {
                    if !order.contains(&input) {
                        order.push(input);
                    }
                }
            }
        }
    }
    drop_items(shared, &order)?;
    ok(&format!("DROP {}", kind.name().to_uppercase()))
}

/// Drops `ids` (in a safe order: dependents first).
pub(crate) fn drop_items(shared: &Shared, ids: &[GlobalId]) -> Result<(), StatementError> {
    let _clock = shared.clock.lock().expect("clock lock");
    let mut cat = shared.catalog.lock().expect("catalog lock");
    for id in ids {
        match cat.items.get(id).map(|i| i.kind) {
            Some(ItemKind::Sink) => {
                shared.sinks.stop(*id);
                cat.remove(*id);
                continue;
            }
            // An index holds its arrangement in the engine (none for an upstream view's).
            Some(ItemKind::Index) => {
                match shared.engine.drop_item(*id) {
                    Ok(()) | Err(viewcast_engine::EngineError::UnknownId(_)) => {}
                    Err(e) => return Err(engine_error(e)),
                }
                cat.remove(*id);
                continue;
            }
            _ => {}
        }
        // An upstream view lives in the hub only (its engine input is dropped separately).
        if cat.items.get(id).is_some_and(|i| i.upstream.is_some()) {
            shared.hub.unregister(*id);
            cat.remove(*id);
            continue;
        }
        shared.hub.unregister(*id);
        shared.engine.drop_item(*id).map_err(engine_error)?;
        cat.remove(*id);
    }
    Ok(())
}

/// Evaluates a write's `changes` over the table's current contents and applies them at one timestamp.
async fn write(shared: &Shared, id: GlobalId, changes: RelExpr, verb: &str) -> Result<ExecuteResult, StatementError> {
    // One write at a time, so each reads the contents the previous one left. A write holds the
    // lock until its timestamp is assigned (at most a tick), not until it is sealed: the clock
    // applies queued writes in order, so blind writes (INSERT ... VALUES) pipeline one per tick,
    // and a write that reads tables first waits for the previous write to be sealed.
    //
    // A table with keys is checked against its contents after the previous write, so every write
    // to it waits for that write to be sealed: two INSERTs of one key cannot both pass the check.
    let mut last_write_ts = shared.write_lock.lock().await;
    let (input, keyed) = shared
        .catalog
        .lock()
        .expect("catalog lock")
        .items
        .get(&id)
        .and_then(|i| Some((i.input?, !i.keys.is_empty())))
        .ok_or_else(|| StatementError::new("only tables can be written", "42809", None))?;
    if *last_write_ts > 0 && (keyed || !changes.depends_on().is_empty()) {
        shared.hub.wait_for(*last_write_ts + 1).await;
    }
    let mut updates = evaluate(shared, &changes).await?;
    viewcast_repr::consolidate_updates(&mut updates);
    {
        let cat = shared.catalog.lock().expect("catalog lock");
        let current = || shared.hub.read(|_ts, get| get(id).unwrap_or_default());
        check_constraints(&cat, id, &updates, &current)?;
    }
    let affected: Diff = if verb == "DELETE" {
        updates.iter().filter(|(_, d)| *d < 0).map(|(_, d)| -d).sum()
    } else {
        updates.iter().filter(|(_, d)| *d > 0).map(|(_, d)| *d).sum()
    };
    if !updates.is_empty() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.clock.lock().expect("clock lock").pending.push(crate::clock::PendingWrite {
            id: input,
            updates,
            done: Some(tx),
        });
        let ts = rx.await.map_err(|_| StatementError::new("server is shutting down", "57P01", None))?;
        *last_write_ts = ts;
        drop(last_write_ts);
        shared.hub.wait_for(ts + 1).await;
    }
    ok(&format!("{verb} {affected}"))
}

static TRANSIENT: AtomicU64 = AtomicU64::new(0);

/// Plans `query` as a view body and maintains it under a fresh hidden name.
pub(crate) async fn create_query_view(shared: &Shared, query: &str) -> Result<(GlobalId, String), StatementError> {
    let query = query.trim().trim_end_matches(';');
    let prefix = "CREATE VIEW viewcast_query AS ";
    let parsed = viewcast_sql::parse(&format!("{prefix}{query}")).map_err(|e| shift(e.into(), prefix.len()))?;
    let [stmt] = parsed.as_slice() else {
        return Err(StatementError::new("a query subscription takes exactly one SELECT", "42601", None));
    };
    let planned = {
        let cat = shared.catalog.lock().expect("catalog lock");
        viewcast_sql::plan(stmt, &PlannerCatalog(&cat)).map_err(|e| shift(e.into(), prefix.len()))?
    };
    let Statement::CreateView { plan, desc, .. } = planned else {
        return Err(StatementError::new("a query subscription takes a SELECT", "42601", None));
    };
    let name = format!("__query_{}", TRANSIENT.fetch_add(1, Ordering::Relaxed));
    let id = create_view(shared, &name, plan, desc, ItemKind::View, query, true).await?;
    Ok((id, name))
}

/// Moves an error position back by the length of text prepended to the user's query.
fn shift(mut e: StatementError, by: usize) -> StatementError {
    e.position = e.position.and_then(|p| p.checked_sub(by)).filter(|p| *p > 0);
    e
}

/// Evaluates a plan at the latest sealed timestamp, which is what `mz_now()` means in it. Over
/// published relations only, the reference interpreter reads the hub's logs at one common
/// timestamp; otherwise (raw sources) a transient dataflow computes it, rendering temporal filters
/// as a view would, and binding any other `mz_now()` to the time the dataflow starts (a tick or
/// so before the time it is read at).
async fn evaluate(shared: &Shared, plan: &RelExpr) -> Result<Vec<(Row, Diff)>, StatementError> {
    let deps = plan.depends_on();
    if deps.iter().all(|id| shared.hub.is_ready(*id)) {
        return shared.hub.read(|ts, get| {
            viewcast_plan::interpret::evaluate_at(plan, ts, &|id| {
                get(id).ok_or_else(|| viewcast_plan::EvalError::Other(format!("relation {id} was dropped")))
            })
            .map_err(StatementError::from)
        });
    }
    let mut plan = plan.clone();
    if plan.check_temporal().is_err() {
        let as_of = shared.clock.lock().expect("clock lock").as_of();
        plan.bind_mz_now(as_of);
    }
    let name = format!("__query_{}", TRANSIENT.fetch_add(1, Ordering::Relaxed));
    let arity = plan.arity();
    let desc = RelationDesc::new((0..arity).map(|i| (format!("c{i}"), ColumnType::new(ScalarType::Text, true))));
    let id = create_view(shared, &name, plan, desc, ItemKind::View, "", true).await?;
    let rows = shared.hub.read(|_ts, get| get(id).unwrap_or_default());
    drop_items(shared, &[id])?;
    Ok(rows)
}

async fn select(
    shared: &Shared,
    plan: RelExpr,
    desc: RelationDesc,
    finishing: &Finishing,
) -> Result<ExecuteResult, StatementError> {
    let rows = finishing.apply(evaluate(shared, &plan).await?);
    Ok(ExecuteResult::Rows { tag: format!("SELECT {}", rows.len()), desc, rows })
}

fn show_rows(shared: &Shared, show: Show) -> Result<ExecuteResult, StatementError> {
    let cat = shared.catalog.lock().expect("catalog lock");
    let text = |s: &str| Datum::text(s);
    let col = |n: &str| (n.to_string(), ColumnType::new(ScalarType::Text, false));
    let listing = |filter: &dyn Fn(ItemKind) -> bool| {
        let mut rows: Vec<Row> = cat
            .items
            .values()
            .filter(|i| !i.hidden && filter(i.kind))
            .map(|i| Row::new(vec![text(&i.name), text(i.kind.name())]))
            .collect();
        rows.sort();
        let desc = RelationDesc::new([col("name"), col("type")]);
        ExecuteResult::Rows { tag: format!("SELECT {}", rows.len()), desc, rows }
    };
    Ok(match show {
        Show::Items(kind) => listing(&|k| {
            k == kind
                || matches!(
                    (k, kind),
                    (ItemKind::MaterializedView, ItemKind::View) | (ItemKind::View, ItemKind::MaterializedView)
                )
        }),
        Show::Objects => listing(&|_| true),
        Show::Indexes { on } => {
            let mut rows: Vec<Row> = cat
                .items
                .values()
                .filter(|i| i.kind == ItemKind::Index && on.is_none_or(|on| i.depends_on == [on]))
                .map(|i| {
                    let on = i.depends_on.first().map(|d| cat.name_of(*d)).unwrap_or_default();
                    Row::new(vec![text(&i.name), text(&on), text(&i.desc.names.join(", "))])
                })
                .collect();
            rows.sort();
            let desc = RelationDesc::new([col("name"), col("on"), col("key")]);
            ExecuteResult::Rows { tag: format!("SELECT {}", rows.len()), desc, rows }
        }
        Show::Columns { id, desc } => {
            let keys = cat.items.get(&id).map(|i| i.keys.as_slice()).unwrap_or_default();
            let rows: Vec<Row> = desc
                .names
                .iter()
                .zip(&desc.types)
                .enumerate()
                .map(|(i, (n, t))| {
                    // The constraints the column is part of.
                    let key: Vec<&str> =
                        keys.iter().filter(|k| k.columns.contains(&i)).map(|k| k.name.as_str()).collect();
                    Row::new(vec![text(n), Datum::Bool(t.nullable), text(t.scalar.name()), text(&key.join(", "))])
                })
                .collect();
            let desc = RelationDesc::new([
                col("name"),
                ("nullable".to_string(), ColumnType::new(ScalarType::Bool, false)),
                col("type"),
                col("key"),
            ]);
            ExecuteResult::Rows { tag: format!("SELECT {}", rows.len()), desc, rows }
        }
        Show::Create { name, .. } => {
            let (_, item) = cat
                .resolve(&name)
                .ok_or_else(|| StatementError::new(format!("unknown catalog item '{name}'"), "42P01", None))?;
            let desc = RelationDesc::new([col("name"), col("create_sql")]);
            let rows = vec![Row::new(vec![text(&name), text(&item.create_sql)])];
            ExecuteResult::Rows { tag: "SELECT 1".into(), desc, rows }
        }
        Show::Variable(v) => {
            let value = match v.as_str() {
                "server_version" => "9.5.0",
                "client_encoding" | "server_encoding" => "UTF8",
                "datestyle" => "ISO, MDY",
                "timezone" => "UTC",
                "transaction_isolation" => "strict serializable",
                _ => {
                    return Err(StatementError::new(
                        format!("unrecognized configuration parameter \"{v}\""),
                        "42704",
                        None,
                    ))
                }
            };
            text_rows(&v, vec![value.to_string()])
        }
    })
}

pub(crate) fn engine_error(e: viewcast_engine::EngineError) -> StatementError {
    let code = match e {
        viewcast_engine::EngineError::Temporal(_) => "0A000",
        _ => "XX000",
    };
    StatementError::new(e.to_string(), code, None)
}

/// An index: a catalog entry naming `on`'s key columns (its `desc` is theirs), dropped with
/// `on`, and the engine's shared arrangement of `on` by those columns, which views created later
/// that join, group or deduplicate `on` by that key read instead of arranging `on` themselves.
fn create_index(
    shared: &Shared,
    name: Option<String>,
    on: GlobalId,
    key: &[usize],
    if_not_exists: bool,
    sql: &str,
) -> Result<ExecuteResult, StatementError> {
    let mut cat = shared.catalog.lock().expect("catalog lock");
    let on_item = cat.items.get(&on).ok_or_else(|| StatementError::new("unknown relation", "42P01", None))?;
    let key_names: Vec<&str> = key.iter().map(|i| on_item.desc.names[*i].as_str()).collect();
    let name = match name {
        Some(name) => {
            if cat.resolve(&name).is_some() {
                return if if_not_exists { ok("CREATE INDEX") } else { Err(already_exists(&name)) };
            }
            name
        }
        // Postgres's choice: <relation>_<columns>_idx, then a number until it is free.
        None => {
            let stem = format!("{}_{}_idx", on_item.name, key_names.join("_"));
            let mut name = stem.clone();
            let mut n = 1;
            while cat.resolve(&name).is_some() {
                name = format!("{stem}{n}");
                n += 1;
            }
            name
        }
    };
    let desc = RelationDesc::new(key.iter().map(|i| (on_item.desc.names[*i].clone(), on_item.desc.types[*i])));
    // An upstream view lives in the hub only: its index is a catalog entry.
    let arranged = on_item.upstream.is_none();
    let mut item = new_item(&name, ItemKind::Index, desc, sql);
    item.depends_on = vec![on];
    let id = cat.allocate_id();
    if arranged {
        shared.engine.create_index(id, on, key.to_vec()).map_err(engine_error)?;
    }
    cat.insert(id, item);
    ok("CREATE INDEX")
}

/// `EXPLAIN`'s text for `plan`. For a maintained plan, each arranged input says whether the view
/// would build the arrangement (`new`), share the one already built for an existing view or
/// index (`shared with index t_a_idx`), or keep one of its own (`private`).
fn explain(shared: &Shared, plan: &RelExpr, maintained: bool) -> String {
    if !maintained {
        return plan.explain();
    }
    let cat = shared.catalog.lock().expect("catalog lock");
    plan.explain_with(&|input| {
        let Some(on) = input.shared else { return Some("(private)".to_string()) };
        let users = shared.engine.arrangement(on, &input.key).map(|a| a.users).unwrap_or_default();
        // The first user the catalog names (a hidden one is a transient query's dataflow).
        let named = users.iter().find_map(|u| cat.items.get(u).filter(|i| !i.hidden));
        Some(match (named, users.is_empty()) {
            (_, true) => format!("of {} (new)", cat.name_of(on)),
            (Some(user), false) => format!("of {} (shared with {} {})", cat.name_of(on), user.kind.name(), user.name),
            (None, false) => format!("of {} (shared with a running query)", cat.name_of(on)),
        })
    })
}

/// A webhook sink: a catalog item (so it has a name, is listed, and blocks dropping its view
/// without CASCADE) plus the tasks that follow the view and POST its changes.
fn create_sink(
    shared: &Shared,
    name: &str,
    from: GlobalId,
    connector: SinkConnector,
    snapshot: bool,
    sql: &str,
) -> Result<ExecuteResult, StatementError> {
    let SinkConnector::Webhook { url, token, timeout_ms } = connector;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(StatementError::new(
            format!("invalid webhook URL '{url}': expected http:// or https://"),
            "22023",
            None,
        ));
    }
    let mut cat = shared.catalog.lock().expect("catalog lock");
    if cat.resolve(name).is_some() {
        return Err(already_exists(name));
    }
    if !shared.hub.is_published(from) {
        return Err(StatementError::new(
            format!("cannot sink \"{}\": only views and tables can be sunk", cat.name_of(from)),
            "0A000",
            None,
        ));
    }
    let view = cat.name_of(from);
    let id = cat.allocate_id();
    // The statement as written would show the token in `SHOW CREATE SINK`: keep a redacted one.
    let create_sql = match &token {
        None => sql.to_string(),
        Some(_) => format!(
            "CREATE SINK {name} FROM {view} INTO WEBHOOK '{}' WITH (SNAPSHOT = {snapshot}, TOKEN = '<redacted>'{})",
            url.replace('\'', "''"),
            timeout_ms.map(|ms| format!(", TIMEOUT = '{ms}ms'")).unwrap_or_default()
        ),
    };
    let mut item = new_item(name, ItemKind::Sink, RelationDesc::default(), &create_sql);
    item.depends_on = vec![from];
    cat.insert(id, item);
    let options = crate::sinks::WebhookOptions {
        url,
        token,
        timeout: timeout_ms.map(std::time::Duration::from_millis),
        snapshot,
    };
    shared.sinks.start(id, name, shared.hub.clone(), from, &view, options);
    ok("CREATE SINK")
}

/// `SHOW SINKS`: every sink with its delivery status (the rows of `viewcast_sink_status`, now).
fn sink_rows(shared: &Shared) -> ExecuteResult {
    let rows: Vec<Row> = crate::system::sink_status_rows(shared, 0).into_values().collect();
    ExecuteResult::Rows { tag: format!("SELECT {}", rows.len()), desc: crate::system::sink_status_desc(), rows }
}
