//! The coordinator: the catalog, statement execution, and the clock that drives the engine.
//!
//! Owns: names and ids of sources, tables and views; turning statements into engine commands and
//! hub registrations; the tick loop (assigning ingested rows to timestamps, with admission control
//! so the engine never falls more than a bounded number of ticks behind); the thread applying the
//! engine's sealed output to the hub. It is the one crate that sees every layer.
//! Never touches: sockets or HTTP (the gateway), dataflow internals (the engine).

mod catalog;
mod clock;
mod execute;
mod ingest;
mod sinks;
mod system;
mod upstream;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use viewcast_engine::{Engine, EngineConfig, EngineEvent};
use viewcast_hub::Hub;
use viewcast_repr::{RelationDesc, Row};

pub use catalog::{ItemKind, RelationInfo};
pub use clock::now_ms;
pub use execute::{ExecuteResult, StatementError};
pub use sinks::{FollowError, SinkStatus, ViewFollower};
pub use system::{SINK_STATUS_VIEW, SOURCE_STATS_VIEW};
pub use viewcast_hub::HubConfig;
pub use viewcast_sources::SourceStatsSnapshot;

/// Settings of one viewcast instance.
#[derive(Clone, Debug)]
pub struct CoordConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// Length of a tick (one timestamp of ingested rows) in milliseconds.
    pub tick_ms: u64,
    /// Rows taken from one source per tick at most; the rest wait in the source's bounded queue.
    pub max_rows_per_tick: usize,
    /// The engine may lag this many ticks behind before ingestion pauses.
    pub max_lag_ticks: u64,
    pub hub: HubConfig,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig { workers: 1, tick_ms: 50, max_rows_per_tick: 200_000, max_lag_ticks: 4, hub: HubConfig::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("engine: {0}")]
    Engine(#[from] viewcast_engine::EngineError),
    #[error("could not start thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("setup: {0}")]
    Setup(String),
}

pub(crate) struct Shared {
    pub config: CoordConfig,
    pub engine: Engine,
    pub hub: Arc<Hub>,
    pub catalog: Mutex<catalog::Catalog>,
    pub clock: Mutex<clock::Clock>,
    pub stop: std::sync::atomic::AtomicBool,
    /// Serializes table writes so each reads what the previous one wrote. Holds the timestamp of
    /// the last write queued (0: none); held by a write only until its timestamp is assigned, not
    /// until it is sealed (see `execute::write`).
    pub write_lock: tokio::sync::Mutex<u64>,
    /// The stages of recently sealed ticks, most recent last (bounded).
    pub tick_stages: Mutex<std::collections::VecDeque<TickStages>>,
    /// Running webhook sinks.
    pub sinks: sinks::Sinks,
    /// Upstream views' changes for the engine inputs that local views read (gateway mode).
    pub upstream_mailbox: Arc<upstream::UpstreamMailbox>,
}

/// Where one tick's latency went: microseconds from the tick closing ([`Engine::tick`]) to the end
/// of each stage, cumulative (see [`Coordinator::take_tick_stages`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TickStages {
    pub ts: u64,
    /// Rows the tick carried.
    pub rows: usize,
    /// Since the previous tick closed.
    pub interval_us: u64,
    /// The last worker took the tick's command.
    pub taken_us: u64,
    /// The last worker's dataflows were done with the tick (its frontier passed it).
    pub passed_us: u64,
    /// The merger received that worker's report.
    pub merged_us: u64,
    /// The `Sealed` event left the engine.
    pub sealed_us: u64,
    /// The apply thread received it.
    pub received_us: u64,
    /// The hub had applied it: subscribers can see it.
    pub applied_us: u64,
}

/// Samples kept for [`Coordinator::take_tick_stages`].
const MAX_LATENCY_SAMPLES: usize = 100_000;

/// A running viewcast instance (engine, hub, catalog). Dropping it stops every thread.
pub struct Coordinator {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Coordinator {
    pub fn start(config: CoordConfig) -> Result<Coordinator, CoordError> {
        let (events_tx, events_rx) = crossbeam_channel::bounded::<EngineEvent>(1024);
        let engine = Engine::start(EngineConfig { workers: config.workers }, events_tx)?;
        let hub = Arc::new(Hub::new(config.hub));
        let shared = Arc::new(Shared {
            config,
            engine,
            hub: hub.clone(),
            catalog: Mutex::new(catalog::Catalog::default()),
            clock: Mutex::new(clock::Clock::new()),
            stop: std::sync::atomic::AtomicBool::new(false),
            write_lock: tokio::sync::Mutex::new(0),
            tick_stages: Mutex::new(Default::default()),
            sinks: sinks::Sinks::default(),
            upstream_mailbox: Arc::default(),
        });
        clock::first_tick(&shared)?;
        let applier = std::thread::Builder::new().name("viewcast-apply".into()).spawn({
            let shared = shared.clone();
            move || apply_loop(&shared, events_rx)
        })?;
        let ticker = std::thread::Builder::new().name("viewcast-ticker".into()).spawn({
            let shared = shared.clone();
            move || clock::tick_loop(&shared)
        })?;
        let system_views = system::register(&shared).map_err(|e| CoordError::Setup(e.message))?;
        let stats = std::thread::Builder::new().name("viewcast-system-views".into()).spawn({
            let shared = shared.clone();
            move || system::publisher(&shared, system_views)
        })?;
        Ok(Coordinator { shared, threads: vec![applier, ticker, stats] })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// Every relation in the catalog, sorted by name.
    pub fn relations(&self) -> Vec<RelationInfo> {
        let cat = self.shared.catalog.lock().expect("catalog lock");
        let summaries = self.shared.hub.summaries();
        cat.relations(&summaries)
    }

    /// Runs the statements of `sql` in order; stops after the first error.
    pub async fn execute(&self, sql: &str) -> Vec<ExecuteResult> {
        execute::execute(&self.shared, sql).await
    }

    /// Runs the statements and returns the rows of the last one, or its error: a convenience for tests.
    pub async fn query(&self, sql: &str) -> Result<(RelationDesc, Vec<Row>), StatementError> {
        match self.execute(sql).await.pop() {
            Some(ExecuteResult::Rows { desc, rows, .. }) => Ok((desc, rows)),
            Some(ExecuteResult::Ok { tag }) => {
                Ok((RelationDesc::default(), vec![Row::new(vec![viewcast_repr::Datum::text(&tag)])]))
            }
            Some(ExecuteResult::Error(e)) => Err(e),
            None => Err(StatementError::new("empty query", "42601", None)),
        }
    }

    /// Ingests rows into the webhook source `source` at the next tick, all in one timestamp, and
    /// returns that timestamp once it is sealed. Errors: unknown source (42P01), not a webhook
    /// source (42809), rows of the wrong shape (22023), too much waiting already (53400).
    pub async fn ingest(&self, source: &str, rows: Vec<Row>) -> Result<viewcast_repr::Timestamp, StatementError> {
        ingest::ingest(&self.shared, source, rows).await
    }

    /// Decodes a webhook request body in the source's format (JSON: an object, an array of rows, or
    /// NDJSON) and ingests it like [`Coordinator::ingest`]: all of it or, if any record is bad
    /// (22P02), none. Returns the number of rows and their sealed timestamp.
    pub async fn ingest_body(
        &self,
        source: &str,
        body: &[u8],
    ) -> Result<(usize, viewcast_repr::Timestamp), StatementError> {
        ingest::ingest_body(&self.shared, source, body).await
    }

    /// Starts maintaining an ad-hoc query (a `SELECT`) as a hidden view that can be subscribed to
    /// by the returned name; drop it with [`Coordinator::drop_query_view`].
    pub async fn create_query_view(&self, query: &str) -> Result<(viewcast_plan::GlobalId, String), StatementError> {
        execute::create_query_view(&self.shared, query).await
    }

    /// Drops a view created by [`Coordinator::create_query_view`].
    pub fn drop_query_view(&self, id: viewcast_plan::GlobalId) {
        if let Err(e) = execute::drop_items(&self.shared, &[id]) {
            tracing::warn!(id, error = %e, "dropping a query view failed");
        }
    }

    /// Takes the recorded latencies from sending a tick to the engine to its sealed output leaving the engine,
    /// in microseconds (at most the last 100,000).
    pub fn take_tick_latencies(&self) -> Vec<u64> {
        self.take_tick_stages().iter().map(|s| s.sealed_us).collect()
    }

    /// Takes the recorded stages of the ticks sealed since the last call (at most the last 100,000).
    pub fn take_tick_stages(&self) -> Vec<TickStages> {
        self.shared.tick_stages.lock().expect("latency lock").drain(..).collect()
    }

    /// The engine's shared arrangements (one per relation and key, read by every view and index
    /// that joins, groups or deduplicates the relation by that key) installed on its workers,
    /// summed over the workers.
    pub fn installed_arrangements(&self) -> usize {
        self.shared.engine.installed_arrangements()
    }

    /// The last timestamp whose output is applied to every view.
    pub fn sealed_ts(&self) -> u64 {
        self.shared.hub.frontier().saturating_sub(1)
    }

    /// Parses and plans one `SUBSCRIBE` (or `TAIL`) statement against the current catalog.
    pub fn plan_subscribe(&self, sql: &str) -> Result<viewcast_sql::Subscribe, StatementError> {
        let parsed = viewcast_sql::parse(sql).map_err(StatementError::from)?;
        let [stmt] = parsed.as_slice() else {
            return Err(StatementError::new("expected exactly one SUBSCRIBE statement", "42601", None));
        };
        let planned = {
            let cat = self.shared.catalog.lock().expect("catalog lock");
            viewcast_sql::plan(stmt, &catalog::PlannerCatalog(&cat)).map_err(StatementError::from)?
        };
        match planned {
            viewcast_sql::Statement::Subscribe(s) => Ok(s),
            _ => Err(StatementError::new("expected a SUBSCRIBE statement", "42601", None)),
        }
    }

    /// Maintains `plan` as a hidden, unnamed view (for `SUBSCRIBE (query)` and subscriptions to
    /// unpublished relations) and returns its id once its initial contents are sealed. The caller
    /// drops it with [`Coordinator::drop_transient_view`].
    pub async fn create_transient_view(
        &self,
        plan: viewcast_plan::RelExpr,
        desc: RelationDesc,
    ) -> Result<viewcast_plan::GlobalId, StatementError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!("__subscribe_{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        execute::create_view(&self.shared, &name, plan, desc, ItemKind::View, "", true).await
    }

    /// Drops a view made by [`Coordinator::create_transient_view`].
    pub fn drop_transient_view(&self, id: viewcast_plan::GlobalId) -> Result<(), StatementError> {
        execute::drop_items(&self.shared, &[id])
    }

    /// The number of hidden (transient) items in the catalog: tests check that cancelled
    /// subscriptions free theirs.
    pub fn transient_count(&self) -> usize {
        self.shared
            .catalog
            .lock()
            .expect("catalog lock")
            .items
            .values()
            .filter(|i| i.hidden && i.kind == ItemKind::View)
            .count()
    }

    /// Every webhook sink's state, sorted by name.
    pub fn sink_statuses(&self) -> Vec<SinkStatus> {
        self.shared.sinks.statuses()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shared.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.catalog.lock().map(|mut c| c.stop_sources()).ok();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn apply_loop(shared: &Shared, events: crossbeam_channel::Receiver<EngineEvent>) {
    use std::sync::atomic::Ordering;
    let mut previous_sent = None;
    while !shared.stop.load(Ordering::SeqCst) {
        match events.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(EngineEvent::Sealed { upto, changes }) => {
                let received = std::time::Instant::now();
                shared.hub.apply(upto, changes);
                record_stages(shared, upto, received, &mut previous_sent);
            }
            Ok(EngineEvent::Error { id, message }) => {
                let name = shared.catalog.lock().expect("catalog lock").name_of(id);
                tracing::warn!(view = %name, %message, "row dropped: evaluation error in view");
                shared.catalog.lock().expect("catalog lock").record_error(id, message);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
}

fn record_stages(
    shared: &Shared,
    upto: u64,
    received: std::time::Instant,
    previous_sent: &mut Option<std::time::Instant>,
) {
    let applied = std::time::Instant::now();
    let Some(t) = shared.engine.tick_timeline(upto.saturating_sub(1)) else { return };
    let us = |at: std::time::Instant| at.saturating_duration_since(t.sent).as_micros() as u64;
    let last = |stage: &[Option<std::time::Instant>]| us(stage.iter().flatten().copied().max().unwrap_or(t.sent));
    let stages = TickStages {
        ts: t.ts,
        rows: t.rows,
        interval_us: previous_sent.map_or(0, |p| t.sent.saturating_duration_since(p).as_micros() as u64),
        taken_us: last(&t.taken),
        passed_us: last(&t.passed),
        merged_us: us(t.merged),
        sealed_us: us(t.sealed),
        received_us: us(received),
        applied_us: us(applied),
    };
    *previous_sent = Some(t.sent);
    let mut all = shared.tick_stages.lock().expect("latency lock");
    if all.len() == MAX_LATENCY_SAMPLES {
        all.pop_front();
    }
    all.push_back(stages);
}
