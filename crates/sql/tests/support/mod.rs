//! A tiny in-memory database over the planner and the reference interpreter.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use viewcast_plan::interpret::evaluate_at;
use viewcast_plan::{EvalError, GlobalId, RelExpr};
use viewcast_repr::{consolidate_updates, Datum, Diff, Jsonb, RelationDesc, Row};
use viewcast_sql::{parse, plan, Catalog, CatalogItem, ItemKind, SqlError, Statement};

#[derive(Default)]
pub struct Db {
    items: RefCell<HashMap<String, CatalogItem>>,
    views: RefCell<HashMap<GlobalId, RelExpr>>,
    data: RefCell<HashMap<GlobalId, Vec<(Row, Diff)>>>,
    next_id: RefCell<GlobalId>,
    /// The logical time queries and views are evaluated at: `mz_now()` (0 means [`Db::NOW`]).
    pub time: Cell<u64>,
}

impl Catalog for Db {
    fn resolve(&self, name: &str) -> Option<CatalogItem> {
        self.items.borrow().get(name).cloned()
    }
    fn now(&self) -> Option<u64> {
        Some(Db::NOW)
    }
}

#[derive(Debug)]
pub enum Error {
    Sql(SqlError),
    Eval(EvalError),
}

impl From<SqlError> for Error {
    fn from(e: SqlError) -> Self {
        Error::Sql(e)
    }
}
impl From<EvalError> for Error {
    fn from(e: EvalError) -> Self {
        Error::Eval(e)
    }
}

pub type Rows = Vec<Vec<Datum>>;

impl Db {
    /// The default logical time, equal to the catalog's wall clock for `now()`.
    pub const NOW: u64 = 1_700_000_000_000;

    pub fn new() -> Db {
        Db::default()
    }

    fn at(&self) -> u64 {
        match self.time.get() {
            0 => Db::NOW,
            t => t,
        }
    }

    fn evaluate(&self, plan: &RelExpr) -> Result<Vec<(Row, Diff)>, EvalError> {
        evaluate_at(plan, self.at(), &|i| self.contents(i))
    }

    fn register(&self, name: String, desc: RelationDesc, kind: ItemKind) -> GlobalId {
        let mut next = self.next_id.borrow_mut();
        *next += 1;
        let id = *next;
        self.items.borrow_mut().insert(name, CatalogItem { id, desc, kind });
        id
    }

    pub fn id(&self, name: &str) -> GlobalId {
        self.items.borrow()[name].id
    }

    pub fn desc(&self, name: &str) -> RelationDesc {
        self.items.borrow()[name].desc.clone()
    }

    pub fn contents(&self, id: GlobalId) -> Result<Vec<(Row, Diff)>, EvalError> {
        if let Some(plan) = self.views.borrow().get(&id).cloned() {
            return self.evaluate(&plan);
        }
        Ok(self.data.borrow().get(&id).cloned().unwrap_or_default())
    }

    pub fn push_json(&self, source: &str, docs: &[serde_json::Value]) {
        let id = self.id(source);
        let mut data = self.data.borrow_mut();
        let rows = data.entry(id).or_default();
        for d in docs {
            rows.push((Row::new(vec![Datum::Jsonb(Jsonb::from_value(d))]), 1));
        }
    }

    pub fn load(&self, table: &str, rows: Rows) {
        let id = self.id(table);
        self.data.borrow_mut().entry(id).or_default().extend(rows.into_iter().map(|r| (Row::new(r), 1)));
    }

    /// Runs every statement; returns the rows of the last one that produced rows.
    pub fn run(&self, sql: &str) -> Result<Rows, Error> {
        let mut last = Vec::new();
        for p in parse(sql)? {
            let stmt = plan(&p, self)?;
            if let Some(rows) = self.execute(stmt)? {
                last = rows;
            }
        }
        Ok(last)
    }

    pub fn query(&self, sql: &str) -> Rows {
        match self.run(sql) {
            Ok(rows) => rows,
            Err(e) => panic!("{sql}: {e:?}"),
        }
    }

    /// The query's rows, sorted, for order-insensitive comparison.
    pub fn query_sorted(&self, sql: &str) -> Rows {
        let mut rows = self.query(sql);
        rows.sort();
        rows
    }

    pub fn execute(&self, stmt: Statement) -> Result<Option<Rows>, Error> {
        match stmt {
            Statement::CreateSource { name, desc, .. } => {
                self.register(name, desc, ItemKind::Source);
            }
            Statement::CreateTable { name, desc, .. } => {
                self.register(name, desc, ItemKind::Table);
            }
            Statement::CreateIndex { .. } => {}
            Statement::CreateView { name, materialized, plan, desc, .. } => {
                let kind = if materialized { ItemKind::MaterializedView } else { ItemKind::View };
                let id = self.register(name, desc, kind);
                self.views.borrow_mut().insert(id, plan);
            }
            Statement::Insert { id, changes }
            | Statement::Delete { id, changes }
            | Statement::Update { id, changes } => {
                let diffs = self.evaluate(&changes)?;
                // NOT NULL, as the coordinator checks it (keys are the coordinator's tests').
                let desc = self.items.borrow().values().find(|i| i.id == id).map(|i| i.desc.clone());
                if let Some(desc) = desc {
                    let null = |(row, d): &(Row, Diff)| {
                        *d > 0 && (0..row.len()).any(|i| !desc.types[i].nullable && row.get(i).is_null())
                    };
                    if diffs.iter().any(null) {
                        return Err(Error::Eval(EvalError::NotNullViolation));
                    }
                }
                let mut data = self.data.borrow_mut();
                let rows = data.entry(id).or_default();
                rows.extend(diffs);
                consolidate_updates(rows);
                assert!(rows.iter().all(|(_, d)| *d > 0), "table went negative");
            }
            Statement::Select { plan, finishing, .. } => {
                let out = self.evaluate(&plan)?;
                return Ok(Some(finishing.apply(out).into_iter().map(|r| r.0).collect()));
            }
            Statement::Subscribe(_)
            | Statement::Explain { .. }
            | Statement::Show(_)
            | Statement::Drop { .. }
            | Statement::CreateSink { .. } => {}
        }
        Ok(None)
    }
}

pub fn int(i: i64) -> Datum {
    Datum::Int(i)
}
pub fn text(s: &str) -> Datum {
    Datum::text(s)
}
pub fn float(f: f64) -> Datum {
    Datum::float(f)
}
