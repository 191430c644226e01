//! System views: relations the coordinator writes itself — `viewcast_source_stats` (per source:
//! events, bytes, errors, lag) and `viewcast_sink_status` (per sink: delivery state). Each is a
//! published view over a hidden input, so it is queryable, streamable and sinkable like any view.
//! One thread rewrites every system input once a second with the difference between the rows it
//! holds and the current ones (one pending write per view, landing in the next tick).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use viewcast_plan::{GlobalId, RelExpr};
use viewcast_repr::{ColumnType, Datum, Diff, RelationDesc, Row, ScalarType, Timestamp};
use viewcast_sql::ItemKind;

use crate::catalog::Item;
use crate::clock::PendingWrite;
use crate::execute::{create_hidden_input, engine_error, StatementError};
use crate::Shared;

/// The name of the system view of source statistics.
pub const SOURCE_STATS_VIEW: &str = "viewcast_source_stats";
/// The name of the system view of sink delivery status.
pub const SINK_STATUS_VIEW: &str = "viewcast_sink_status";

/// How often system views are refreshed.
const INTERVAL: Duration = Duration::from_secs(1);

/// The current rows of one system view, keyed by name, at wall-clock time `now`.
type RowsFn = fn(&Shared, Timestamp) -> BTreeMap<String, Row>;

/// A registered system view: the hidden input its rows are written to.
pub(crate) struct SystemView {
    input: GlobalId,
    rows: RowsFn,
    current: BTreeMap<String, Row>,
}

fn col(name: &str, t: ScalarType, nullable: bool) -> (String, ColumnType) {
    (name.to_string(), ColumnType::new(t, nullable))
}

fn source_stats_desc() -> RelationDesc {
    RelationDesc::new([
        col("name", ScalarType::Text, false),
        col("events_in", ScalarType::Int64, false),
        col("bytes_in", ScalarType::Int64, false),
        col("errors", ScalarType::Int64, false),
        col("skipped", ScalarType::Int64, false),
        col("last_error", ScalarType::Text, true),
        col("last_event_time", ScalarType::TimestampTz, true),
        col("lag_ms", ScalarType::Int64, true),
    ])
}

fn source_stats_rows(shared: &Shared, now: Timestamp) -> BTreeMap<String, Row> {
    let cat = shared.catalog.lock().expect("catalog lock");
    cat.items
        .values()
        .filter(|it| !it.hidden)
        .filter_map(|it| Some((it.name.clone(), crate::ingest::stats_row(&it.name, &it.source.as_ref()?.handle, now))))
        .collect()
}

/// The columns of `SHOW SINKS` and `viewcast_sink_status`.
pub(crate) fn sink_status_desc() -> RelationDesc {
    RelationDesc::new([
        col("name", ScalarType::Text, false),
        col("type", ScalarType::Text, false),
        col("view", ScalarType::Text, false),
        col("url", ScalarType::Text, false),
        col("state", ScalarType::Text, false),
        col("last_acked_ts", ScalarType::Int64, true),
        col("pending_rows", ScalarType::Int64, false),
        col("posts", ScalarType::Int64, false),
        col("errors", ScalarType::Int64, false),
        col("last_error", ScalarType::Text, true),
    ])
}

/// Every sink's status row, by sink name.
pub(crate) fn sink_status_rows(shared: &Shared, _now: Timestamp) -> BTreeMap<String, Row> {
    let int = |v: u64| Datum::Int(i64::try_from(v).unwrap_or(i64::MAX));
    shared
        .sinks
        .statuses()
        .into_iter()
        .map(|s| {
            let row = Row::new(vec![
                Datum::text(&s.name),
                Datum::text("webhook"),
                Datum::text(&s.view),
                Datum::text(&s.url),
                Datum::text(s.state),
                s.last_acked_ts.map_or(Datum::Null, int),
                int(s.pending_rows),
                int(s.posts),
                int(s.errors),
                s.last_error.as_deref().map_or(Datum::Null, Datum::text),
            ]);
            (s.name, row)
        })
        .collect()
}

/// Registers every system view (a hidden input and a published view reading it).
pub(crate) fn register(shared: &Shared) -> Result<Vec<SystemView>, StatementError> {
    let specs: [(&str, RelationDesc, RowsFn); 2] = [
        (SOURCE_STATS_VIEW, source_stats_desc(), source_stats_rows),
        (SINK_STATUS_VIEW, sink_status_desc(), sink_status_rows),
    ];
    let clock = shared.clock.lock().expect("clock lock");
    let mut cat = shared.catalog.lock().expect("catalog lock");
    let mut out = Vec::new();
    for (name, desc, rows) in specs {
        let input = create_hidden_input(shared, &mut cat, &format!("__input_{name}"), &desc, &system_sql(name))?;
        let id = cat.allocate_id();
        let plan = RelExpr::Get { id: input, arity: desc.arity() };
        shared.hub.register(id, name, desc.clone(), clock.as_of());
        shared.engine.create_view(id, plan.clone(), true).map_err(engine_error)?;
        let mut item = Item::new(name, ItemKind::View, desc, system_sql(name));
        item.plan = Some(plan);
        item.depends_on = vec![input];
        cat.insert(id, item);
        out.push(SystemView { input, rows, current: BTreeMap::new() });
    }
    Ok(out)
}

fn system_sql(name: &str) -> String {
    format!("-- system view {name}, refreshed every second")
}

/// Rewrites every system view's input once a second with the difference from what it holds, until shutdown.
pub(crate) fn publisher(shared: &Shared, mut views: Vec<SystemView>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let now = crate::clock::now_ms();
        for view in &mut views {
            let next = (view.rows)(shared, now);
            let mut updates: Vec<(Row, Diff)> = Vec::new();
            for (name, row) in &view.current {
                if next.get(name) != Some(row) {
                    updates.push((row.clone(), -1));
                }
            }
            for (name, row) in &next {
                if view.current.get(name) != Some(row) {
                    updates.push((row.clone(), 1));
                }
            }
            if !updates.is_empty() {
                let write = PendingWrite { id: view.input, updates, done: None };
                shared.clock.lock().expect("clock lock").pending.push(write);
            }
            view.current = next;
        }
        // Short sleeps, so shutdown is not held up by a whole interval.
        let until = std::time::Instant::now() + INTERVAL;
        while std::time::Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
