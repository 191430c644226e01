//! Names, ids, kinds, schemas and dependencies of every relation, and the runtime of sources.

use std::collections::{BTreeMap, HashMap};

use viewcast_hub::ViewSummary;
use viewcast_plan::{GlobalId, RelExpr};
use viewcast_repr::{Diff, RelationDesc, Row, Timestamp};

pub use viewcast_sql::ItemKind;

/// A running source: its rows arrive in a bounded queue drained once per tick.
pub(crate) struct SourceRuntime {
    pub rows: crossbeam_channel::Receiver<Vec<Row>>,
    /// Stops the source's producer when dropped.
    pub handle: viewcast_sources::SourceHandle,
    /// Rows taken from the queue but not yet sent (over the per-tick limit).
    pub carry: Vec<Row>,
    /// For a webhook source: how request bodies decode (its rows arrive as pending writes).
    pub webhook: Option<viewcast_sources::RecordFormat>,
}

pub(crate) struct Item {
    pub name: String,
    pub kind: ItemKind,
    pub desc: RelationDesc,
    pub plan: Option<RelExpr>,
    /// The statement that created it, for `SHOW CREATE`.
    pub create_sql: String,
    /// For a table: the engine input its writes go to (the item itself is the published view of it).
    pub input: Option<GlobalId>,
    /// For a table: its `PRIMARY KEY` and `UNIQUE` constraints, enforced on every write.
    pub keys: Vec<viewcast_sql::UniqueKey>,
    pub depends_on: Vec<GlobalId>,
    pub source: Option<SourceRuntime>,
    /// For an upstream view (gateway mode): the task following it.
    pub upstream: Option<crate::upstream::UpstreamRuntime>,
    /// Hidden items (transient query dataflows) are not listed and cannot be named.
    pub hidden: bool,
    pub errors: u64,
    pub last_error: Option<String>,
}

impl Item {
    /// An item with nothing but its name, kind, columns and creating statement.
    pub fn new(name: &str, kind: ItemKind, desc: RelationDesc, create_sql: String) -> Item {
        Item {
            name: name.to_string(),
            kind,
            desc,
            plan: None,
            create_sql,
            input: None,
            keys: Vec::new(),
            depends_on: vec![],
            source: None,
            upstream: None,
            hidden: false,
            errors: 0,
            last_error: None,
        }
    }
}

/// One relation as listed by `/api/v1/views` and `SHOW`.
#[derive(Clone, Debug)]
pub struct RelationInfo {
    pub id: GlobalId,
    pub name: String,
    pub kind: &'static str,
    pub desc: RelationDesc,
    /// Whether it can be streamed and read directly (its output is published to the hub).
    pub streamable: bool,
    pub rows: Option<i64>,
    pub sealed_ts: Option<Timestamp>,
    pub errors: u64,
    /// For a source: what it has ingested and rejected so far.
    pub source_stats: Option<viewcast_sources::SourceStatsSnapshot>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    pub items: BTreeMap<GlobalId, Item>,
    by_name: HashMap<String, GlobalId>,
    next_id: GlobalId,
}

impl Catalog {
    pub fn allocate_id(&mut self) -> GlobalId {
        self.next_id += 1;
        self.next_id
    }

    pub fn resolve(&self, name: &str) -> Option<(GlobalId, &Item)> {
        let id = *self.by_name.get(name)?;
        Some((id, &self.items[&id]))
    }

    pub fn insert(&mut self, id: GlobalId, item: Item) {
        if !item.hidden {
            self.by_name.insert(item.name.clone(), id);
        }
        self.items.insert(id, item);
    }

    pub fn remove(&mut self, id: GlobalId) -> Option<Item> {
        let item = self.items.remove(&id)?;
        if self.by_name.get(&item.name) == Some(&id) {
            self.by_name.remove(&item.name);
        }
        Some(item)
    }

    /// Items that read `id` directly.
    pub fn dependents(&self, id: GlobalId) -> Vec<GlobalId> {
        self.items.iter().filter(|(_, it)| it.depends_on.contains(&id)).map(|(i, _)| *i).collect()
    }

    /// `id` and everything that depends on it transitively, dependents first (a safe drop order).
    pub fn dependents_closure(&self, id: GlobalId) -> Vec<GlobalId> {
        let mut order = Vec::new();
        fn visit(cat: &Catalog, id: GlobalId, order: &mut Vec<GlobalId>) {
            if order.contains(&id) {
                return;
            }
            for d in cat.dependents(id) {
                visit(cat, d, order);
            }
            order.push(id);
        }
        visit(self, id, &mut order);
        order
    }

    pub fn name_of(&self, id: GlobalId) -> String {
        self.items.get(&id).map(|i| i.name.clone()).unwrap_or_else(|| format!("#{id}"))
    }

    pub fn record_error(&mut self, id: GlobalId, message: String) {
        if let Some(item) = self.items.get_mut(&id) {
            item.errors += 1;
            item.last_error = Some(message);
        }
    }

    /// Takes up to `max_rows` queued rows from each source, as insertions for the next tick.
    pub fn drain_sources(&mut self, max_rows: usize) -> Vec<(GlobalId, Vec<(Row, Diff)>)> {
        let mut out = Vec::new();
        for (id, item) in self.items.iter_mut() {
            let Some(src) = item.source.as_mut() else { continue };
            let mut rows = std::mem::take(&mut src.carry);
            while rows.len() < max_rows {
                match src.rows.try_recv() {
                    Ok(batch) => rows.extend(batch),
                    Err(_) => break,
                }
            }
            if rows.len() > max_rows {
                src.carry = rows.split_off(max_rows);
            }
            if !rows.is_empty() {
                out.push((*id, rows.into_iter().map(|r| (r, 1)).collect()));
            }
        }
        out
    }

    pub fn stop_sources(&mut self) {
        for item in self.items.values_mut() {
            item.source = None;
            item.upstream = None;
        }
    }

    pub fn relations(&self, summaries: &[ViewSummary]) -> Vec<RelationInfo> {
        let mut out: Vec<RelationInfo> = self
            .items
            .iter()
            .filter(|(_, it)| !it.hidden && it.kind != ItemKind::Index)
            .map(|(id, it)| {
                let s = summaries.iter().find(|s| s.id == *id);
                RelationInfo {
                    id: *id,
                    name: it.name.clone(),
                    kind: it.kind.name(),
                    desc: it.desc.clone(),
                    streamable: s.is_some(),
                    rows: s.map(|s| s.rows),
                    sealed_ts: s.map(|s| s.sealed_ts),
                    errors: it.errors,
                    source_stats: it.source.as_ref().map(|s| s.handle.stats().snapshot()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The planner's view of the catalog.
pub(crate) struct PlannerCatalog<'a>(pub &'a Catalog);

impl viewcast_sql::Catalog for PlannerCatalog<'_> {
    fn resolve(&self, name: &str) -> Option<viewcast_sql::CatalogItem> {
        let (id, item) = self.0.resolve(name)?;
        Some(viewcast_sql::CatalogItem { id, desc: item.desc.clone(), kind: item.kind })
    }

    fn now(&self) -> Option<Timestamp> {
        Some(crate::clock::now_ms())
    }
}
