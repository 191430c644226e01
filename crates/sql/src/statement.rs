//! What a planned statement asks the coordinator to do.

use viewcast_plan::relation::compare_rows;
use viewcast_plan::{ColumnOrder, GlobalId, RelExpr};
use viewcast_repr::{ColumnType, Diff, RelationDesc, Row, ScalarType};

use crate::catalog::ItemKind;

/// A planned statement. Names are normalized (see [`crate::Catalog::resolve`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// `CREATE SOURCE`. The source produces rows of `desc`.
    CreateSource {
        name: String,
        if_not_exists: bool,
        connector: SourceConnector,
        desc: RelationDesc,
    },
    /// `CREATE SINK name FROM item INTO WEBHOOK 'url' [WITH (SNAPSHOT = b, TOKEN = '..', TIMEOUT = '..')]`.
    CreateSink {
        name: String,
        if_not_exists: bool,
        from: GlobalId,
        connector: SinkConnector,
        /// Send the item's contents at the sink's start first (default true).
        snapshot: bool,
    },
    /// `CREATE [MATERIALIZED] VIEW`. `ORDER BY .. LIMIT` is part of `plan` (a `TopK`); an `ORDER BY`
    /// without `LIMIT` is dropped, as in Materialize.
    CreateView {
        name: String,
        materialized: bool,
        if_not_exists: bool,
        or_replace: bool,
        plan: RelExpr,
        desc: RelationDesc,
    },
    /// `CREATE [UNIQUE] INDEX [name] ON item (columns)`: a shared arrangement of the item by
    /// those columns, which later views that join, group or deduplicate the item by that key read
    /// (see `EXPLAIN`); recorded in the catalog (listed by `SHOW INDEXES`, dropped by `DROP INDEX`
    /// or with its relation). It changes no result. Uniqueness is not enforced: use a table's
    /// `PRIMARY KEY` or `UNIQUE` constraint.
    CreateIndex {
        /// `None`: named `<relation>_<columns>_idx` as Postgres and Materialize do.
        name: Option<String>,
        on: GlobalId,
        /// The key columns' positions in `on`'s columns.
        key: Vec<usize>,
        if_not_exists: bool,
    },
    /// `CREATE TABLE`. A primary key's columns are NOT NULL in `desc`.
    CreateTable {
        name: String,
        if_not_exists: bool,
        desc: RelationDesc,
        /// `PRIMARY KEY` and `UNIQUE` constraints, in the order written: the coordinator refuses
        /// writes that would leave two rows with equal non-NULL values in a key's columns.
        keys: Vec<UniqueKey>,
    },
    /// `INSERT`: evaluating `changes` yields the `(row, +n)` to add, already in the table's column
    /// order and types. The coordinator checks NOT NULL and the table's keys.
    Insert {
        id: GlobalId,
        changes: RelExpr,
    },
    /// `DELETE`: evaluating `changes` (over the table's current contents) yields `(row, -n)` retractions.
    Delete {
        id: GlobalId,
        changes: RelExpr,
    },
    /// `UPDATE`: evaluating `changes` yields retractions of old rows and insertions of their new
    /// versions; apply all of them at one timestamp. The affected row count is the sum of the
    /// positive diffs.
    Update {
        id: GlobalId,
        changes: RelExpr,
    },
    /// `DROP`. Not resolved here: the coordinator applies `if_exists` and `cascade`.
    Drop {
        kind: ItemKind,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
    Show(Show),
    /// A one-shot query: evaluate `plan`, then apply `finishing` to present it.
    Select {
        plan: RelExpr,
        desc: RelationDesc,
        finishing: Finishing,
    },
    /// `EXPLAIN`: the plan as text, one line per operator.
    Explain {
        /// `plan`'s text followed by `trailer`.
        text: String,
        plan: RelExpr,
        /// What follows the plan's lines (a one-shot query's sorting and limit).
        trailer: String,
        /// Whether `plan` is a view's (`EXPLAIN CREATE VIEW`), maintained by a dataflow; the
        /// coordinator then says which arrangements the dataflow would share.
        maintained: bool,
    },
    /// `SUBSCRIBE` (alias `TAIL`).
    Subscribe(Subscribe),
}

/// A `PRIMARY KEY` or `UNIQUE` constraint of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueKey {
    /// The constraint's name: as written, else Postgres' `<table>_pkey` / `<table>_<columns>_key`.
    pub name: String,
    /// The key's columns, as positions in the table's columns.
    pub columns: Vec<usize>,
    pub primary: bool,
}

/// What a `SHOW` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Show {
    /// `SHOW SOURCES | TABLES | VIEWS | MATERIALIZED VIEWS | SINKS`.
    Items(ItemKind),
    /// `SHOW OBJECTS`: every item.
    Objects,
    /// `SHOW INDEXES [FROM|IN|ON item]`.
    Indexes { on: Option<GlobalId> },
    /// `SHOW COLUMNS FROM item`.
    Columns { id: GlobalId, desc: RelationDesc },
    /// `SHOW CREATE <kind> name`: the coordinator prints the stored SQL.
    Create { kind: ItemKind, name: String },
    /// `SHOW variable`.
    Variable(String),
}

/// Where a source's rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConnector {
    LoadGenerator(LoadGenerator),
    /// `FROM SSE 'url' [WITH (INCLUDE_METADATA = true)]`: each server-sent event's data, parsed as
    /// JSON, is one row; with metadata, the event's `id` and `event` fields follow as text columns.
    Sse {
        url: String,
        include_metadata: bool,
    },
    /// `FROM WEBHOOK BODY FORMAT JSON`: each POSTed body is one row.
    Webhook {
        format: Format,
    },
    /// `FROM FILE 'path' [WITH (TAIL = true)] FORMAT ...`: one row per line.
    File {
        path: String,
        tail: bool,
        format: Format,
    },
    /// `FROM UPSTREAM 'postgres://...' SUBSCRIBE view`: gateway mode. The view of another
    /// Materialize-compatible server, followed over `SUBSCRIBE`; its columns are the upstream's
    /// (the planned `desc` is empty: the coordinator asks the upstream).
    Upstream {
        url: String,
        view: String,
    },
}

/// How bytes become rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    /// One `data jsonb` column.
    Json,
    /// One `text text` column.
    Text,
    /// One text column per named capture group of `pattern`, in order.
    Regex { pattern: String },
}

/// `FROM LOAD GENERATOR <kind> (options)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadGenerator {
    pub kind: LoadGeneratorKind,
    /// `EVENTS PER SECOND n`. `None` means the generator's default rate. `Some(0.0)`, or the
    /// `AS FAST AS POSSIBLE` / `MAX SPEED` options, mean no rate limit at all.
    pub events_per_second: Option<f64>,
    /// `SEED n`: makes the generated stream reproducible.
    pub seed: Option<u64>,
    /// `MAX EVENTS n` (alias `TOTAL EVENTS n`): stop after that many events.
    pub max_events: Option<u64>,
    /// `TICK INTERVAL 'n ms'`: how often timestamps advance, in milliseconds.
    pub tick_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadGeneratorKind {
    /// Synthetic Wikipedia recent-changes events, one JSON document per row (`data jsonb`).
    Wikipedia,
}

/// Where a sink delivers. Its `Debug` never shows a token.
#[derive(Clone, PartialEq, Eq)]
pub enum SinkConnector {
    /// POSTs each batch of changes as JSON to `url`, with `Authorization: Bearer token` when
    /// given, each request abandoned and retried after `timeout_ms` (default 30 s).
    Webhook { url: String, token: Option<String>, timeout_ms: Option<u64> },
}

impl std::fmt::Debug for SinkConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkConnector::Webhook { url, token, timeout_ms } => f
                .debug_struct("Webhook")
                .field("url", url)
                .field("token", &token.as_ref().map(|_| "<redacted>"))
                .field("timeout_ms", timeout_ms)
                .finish(),
        }
    }
}

/// `SUBSCRIBE [TO] item | (query) [ENVELOPE UPSERT (KEY (cols))] [WITH (SNAPSHOT = b, PROGRESS = b)]
/// [AS OF t] [UP TO t]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscribe {
    pub target: SubscribeTarget,
    pub desc: RelationDesc,
    /// Columns (positions in `desc`) of the upsert key, when `ENVELOPE UPSERT` was asked for.
    pub upsert_key: Option<Vec<usize>>,
    /// Send the contents at the start time first (default true).
    pub snapshot: bool,
    /// Send progress messages for timestamps without changes (default false).
    pub progress: bool,
    pub as_of: Option<u64>,
    pub up_to: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SubscribeTarget {
    /// An existing item, by id.
    Item(GlobalId),
    /// A query to maintain for the subscription's lifetime.
    Query(RelExpr),
}

/// How a one-shot result is presented: sort, skip, cut and drop the helper columns.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Finishing {
    /// Over the plan's columns (which may include hidden sort columns).
    pub order_by: Vec<ColumnOrder>,
    pub limit: Option<usize>,
    pub offset: usize,
    /// Output columns, in order, as positions in the plan's rows.
    pub project: Vec<usize>,
}

impl Finishing {
    /// Expands consolidated `(row, diff)` results into presented rows. Rows with negative
    /// multiplicity are dropped (a correct plan has none).
    pub fn apply(&self, rows: Vec<(Row, Diff)>) -> Vec<Row> {
        let mut rows: Vec<(Row, Diff)> = rows.into_iter().filter(|(_, d)| *d > 0).collect();
        rows.sort_by(|a, b| compare_rows(&self.order_by, &a.0, &b.0));
        let limit = self.limit.unwrap_or(usize::MAX);
        rows.into_iter()
            .flat_map(|(row, d)| std::iter::repeat_n(row, usize::try_from(d).unwrap_or(0)))
            .skip(self.offset)
            .take(limit)
            .map(|row| Row::new(self.project.iter().map(|&i| row.get(i).clone()).collect()))
            .collect()
    }
}

/// The relation desc of a source with the given format.
pub fn format_desc(format: &Format) -> RelationDesc {
    match format {
        Format::Json => RelationDesc::new([("data".to_string(), ColumnType::new(ScalarType::Jsonb, false))]),
        Format::Text => RelationDesc::new([("text".to_string(), ColumnType::new(ScalarType::Text, false))]),
        Format::Regex { pattern } => RelationDesc::new(
            regex_group_names(pattern).into_iter().map(|n| (n, ColumnType::new(ScalarType::Text, true))),
        ),
    }
}

/// The relation desc of an SSE source: `data jsonb`, then `id text, event text` with metadata.
pub fn sse_desc(include_metadata: bool) -> RelationDesc {
    let mut cols = vec![("data".to_string(), ColumnType::new(ScalarType::Jsonb, false))];
    if include_metadata {
        cols.push(("id".to_string(), ColumnType::new(ScalarType::Text, false)));
        cols.push(("event".to_string(), ColumnType::new(ScalarType::Text, false)));
    }
    RelationDesc::new(cols)
}

/// Names of the named capture groups (`(?P<name>` or `(?<name>`) of a regular expression, in order.
pub fn regex_group_names(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(i) = rest.find("(?") {
        let after = &rest[i + 2..];
        let after = after.strip_prefix('P').unwrap_or(after);
        if let Some(named) = after.strip_prefix('<') {
            if let Some(end) = named.find('>') {
                if !named[..end].is_empty() && !named[..end].starts_with(['=', '!']) {
                    out.push(named[..end].to_string());
                }
            }
        }
        rest = &rest[i + 2..];
    }
    out
}
