//! What the planner needs to know about existing catalog items; the coordinator implements it.

use viewcast_plan::GlobalId;
use viewcast_repr::{RelationDesc, Timestamp};

/// The kind of a catalog item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemKind {
    Source,
    Table,
    View,
    MaterializedView,
    Sink,
    /// `CREATE INDEX`: a name for an arrangement of a relation by key columns.
    Index,
}

impl ItemKind {
    /// Whether it produces rows (can be read, subscribed to, indexed, sunk).
    pub fn is_relation(self) -> bool {
        !matches!(self, ItemKind::Sink | ItemKind::Index)
    }

    /// "a" or "an", whichever goes before [`ItemKind::name`].
    pub fn article(self) -> &'static str {
        if self.name().starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ItemKind::Source => "source",
            ItemKind::Table => "table",
            ItemKind::View => "view",
            ItemKind::MaterializedView => "materialized view",
            ItemKind::Sink => "sink",
            ItemKind::Index => "index",
        }
    }
}

/// One resolvable item: its id, the columns it produces and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogItem {
    pub id: GlobalId,
    pub desc: RelationDesc,
    pub kind: ItemKind,
}

/// Name resolution against the coordinator's catalog.
pub trait Catalog {
    /// The item called `name`. Names arrive normalized: unquoted identifiers folded to lower case
    /// (as Postgres does), quoted ones verbatim; a qualified name (`public.t`) arrives as its last part.
    fn resolve(&self, name: &str) -> Option<CatalogItem>;

    /// The wall-clock time `now()` means in a one-shot query, in milliseconds since the Unix epoch.
    /// `None` (the default) makes `now()` an error.
    fn now(&self) -> Option<Timestamp> {
        None
    }
}
