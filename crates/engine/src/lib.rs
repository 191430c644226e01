//! The incremental engine: maintains views over live inputs with timely/differential dataflow.
//!
//! Owns: the timely worker threads, rendering a [`RelExpr`] into a dataflow, the retained history of
//! every input, capture of published views' changes, and sealing them into [`EngineEvent::Sealed`]
//! batches in timestamp order. This is the only crate that knows timely or differential dataflow.
//! Never touches: SQL text, the catalog's names, async runtimes, I/O beyond its own channels.
//!
//! # How a tick flows
//!
//! [`Engine::feed`] (any number of times while the tick is open) and [`Engine::tick`] (its close)
//! partition the tick's rows by hash across the workers and send each worker its share in a
//! [`Command::Feed`] or [`Command::Tick`]. Each worker appends its share to the input's history and
//! feeds it to every dataflow that reads the input; the close advances its inputs to `ts + 1`. Capture sinks at the
//! end of published dataflows buffer `(row, time, diff)`; after each step a worker hands its buffered
//! changes and its local frontier to the [`merger`] (on the worker's own thread, under a lock), and
//! the report that completes a tick (every worker's frontier has passed it) consolidates its changes
//! and emits one [`EngineEvent::Sealed`].
//!
//! # Views over views
//!
//! A view whose plan is *linear* (only Get/Constant/Map/Filter/Project/Union/Negate, reading inputs or
//! other linear views) keeps no state: views that read it render its plan inline over the inputs'
//! history, and take its live changes from its [`forward`] (only the columns they read, when they
//! count). A view that only counts (`SELECT k.., COUNT(*) .. GROUP BY k..`) keeps its counts in a
//! hash map ([`count`]) and serves dependents a snapshot of them plus its later changes, so no
//! dependent counts again. Every other view's output is arranged, and dependents import that
//! arrangement.
//!
//! # Shared arrangements
//!
//! Joins, `DISTINCT` and non-accumulable reductions whose input is a whole item read the one
//! arrangement of that item by their key that every such reader (and `CREATE INDEX`) shares,
//! kept in a dataflow of its own while it has users ([`arrange`]).

mod arrange;
mod count;
mod forward;
mod merger;
mod render;
mod scalar;
mod topk;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use viewcast_plan::RelExpr;
use viewcast_repr::{Diff, Row, Timestamp, Update};

pub use arrange::ArrangementInfo;
pub use viewcast_plan::GlobalId;

/// How to run the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of timely worker threads (at least 1).
    pub workers: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { workers: 1 }
    }
}

/// What the engine reports to its consumer.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// All changes of every *published* item at times in `[previous upto, upto)`, consolidated per
    /// `(row, time)` and sorted by time. Emitted strictly in increasing `upto` order, exactly once
    /// per tick (`upto = ts + 1`), with empty `changes` when nothing changed. `upto` is the global
    /// sealed frontier: the minimum over all dataflows and all workers.
    ///
    /// Changes are usually at tick times, but a temporal filter's changes are at the times its rows
    /// enter or leave (`mz_now()` crossing a bound), which may lie between ticks: they are held until
    /// a tick seals past them and then arrive in that tick's event, at their own times.
    Sealed { upto: Timestamp, changes: Vec<(GlobalId, Vec<Update>)> },
    /// A scalar evaluation error in a view's dataflow: the offending row was dropped. At most one
    /// event per view per second per worker; `message` says how many rows were dropped since the last one.
    Error { id: GlobalId, message: String },
}

/// When one tick passed each stage inside the engine ([`Engine::tick_timeline`]): where its latency
/// goes. Worker stages are per worker, `None` if not seen (e.g. a report lost at shutdown).
#[derive(Clone, Debug)]
pub struct TickTimeline {
    /// The tick's time.
    pub ts: Timestamp,
    /// Rows the tick carried, all inputs together.
    pub rows: usize,
    /// [`Engine::tick`] was called.
    pub sent: Instant,
    /// Per worker: the worker took the tick's command from its channel.
    pub taken: Vec<Option<Instant>>,
    /// Per worker: the worker reported a local frontier past `ts` (every dataflow is done with it).
    pub passed: Vec<Option<Instant>>,
    /// The merger applied the report that completed the tick (the last worker's).
    pub merged: Instant,
    /// The tick's `Sealed` event was ready to be sent.
    pub sealed: Instant,
}

/// Why a request to the engine failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("unknown item {0}")]
    UnknownId(GlobalId),
    #[error("item {0} already exists")]
    AlreadyExists(GlobalId),
    #[error("item {0} is not an input")]
    NotAnInput(GlobalId),
    #[error("item {id} has dependents: {dependents:?}")]
    HasDependents { id: GlobalId, dependents: Vec<GlobalId> },
    #[error("tick time {ts} is not after the previous tick {previous}")]
    TimeNotIncreasing { ts: Timestamp, previous: Timestamp },
    #[error("tick time {ts} is not the open tick's {open}")]
    NotTheOpenTick { ts: Timestamp, open: Timestamp },
    #[error("row of arity {got} for input {id} of arity {expected}")]
    ArityMismatch { id: GlobalId, expected: usize, got: usize },
    #[error("plan arity {got} does not match item {id} of arity {expected}")]
    PlanArity { id: GlobalId, expected: usize, got: usize },
    #[error(transparent)]
    Temporal(#[from] viewcast_plan::TemporalError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the engine has stopped")]
    Stopped,
}

/// The protocol from the [`Engine`] handle to each worker. Every worker receives every command, in
/// the same order; the handle validates commands before sending them, so workers never fail on one.
#[derive(Clone, Debug)]
pub(crate) enum Command {
    /// A new input with `arity` columns. Invariant: `id` is unused; issued between ticks.
    CreateInput { id: GlobalId, arity: usize },
    /// A new view maintained by a dataflow rendered from `plan`, whose initial contents appear at
    /// `as_of` (the time after the last tick). Invariant: `id` is unused and every id `plan` reads exists.
    CreateView { id: GlobalId, plan: RelExpr, publish: bool, as_of: Timestamp },
    /// A `CREATE INDEX`: `id` becomes a user of the shared arrangement of `on` (of `arity`
    /// columns) by `key`, built from `as_of` if it does not exist. Invariant: `id` is unused, `on` exists.
    CreateIndex { id: GlobalId, on: GlobalId, arity: usize, key: Vec<usize>, as_of: Timestamp },
    /// Starts or stops capturing `id`'s changes, effective for times `>= from` (the time after the
    /// last tick), so the consumer never sees a partial timestamp. Invariant: `id` exists.
    SetPublish { id: GlobalId, publish: bool, from: Timestamp },
    /// Drops `id`'s dataflow, trace and (for inputs) history, and its use of shared arrangements
    /// (dropping those it was the last user of). Invariant: nothing reads `id`.
    Drop { id: GlobalId },
    /// Part of this worker's share of the updates at `ts`, before the tick closes: fed to the
    /// dataflows now, so they work on the tick while it is open; inputs stay at `ts`. A dataflow
    /// created while the tick is open starts at `ts + 1` and takes the tick's rows at that time.
    /// Invariant: as for `Tick`, and every `Feed` until the next `Tick` has that tick's `ts`.
    Feed { ts: Timestamp, updates: Vec<(GlobalId, Vec<(Row, Diff)>)> },
    /// This worker's share of the (rest of the) updates at `ts`; afterwards every input is at `ts + 1`.
    /// Invariant: `ts` is greater than every earlier tick's, every id is an input, arities match.
    Tick { ts: Timestamp, updates: Vec<(GlobalId, Vec<(Row, Diff)>)> },
    /// Stop the worker; it drops its dataflows and exits.
    Shutdown,
}

/// Rows per input id, as one tick carries them.
type TickUpdates = Vec<(GlobalId, Vec<(Row, Diff)>)>;

/// A tick being fed: its time, and what the merger gets when it closes.
struct OpenTick {
    ts: Timestamp,
    rows: usize,
    /// The fed rows of published inputs, captured when fed.
    published: Vec<(GlobalId, Vec<Update>)>,
    /// Inputs whose publishing was switched while the tick was open: switched when it closes,
    /// so a tick's rows are captured all or none.
    switch_publish: Vec<(GlobalId, bool)>,
}

/// What the handle remembers of each item, to validate commands.
struct ItemInfo {
    arity: usize,
    input: bool,
    depends_on: Vec<GlobalId>,
    published: bool,
}

struct HandleState {
    items: HashMap<GlobalId, ItemInfo>,
    /// The last tick's time, if any.
    last_tick: Option<Timestamp>,
    /// The tick fed but not yet closed (see [`Engine::feed`]), if any.
    open: Option<OpenTick>,
    /// The shared arrangements, as every worker holds them.
    arrangements: Vec<ArrangementInfo>,
    commands: Vec<crossbeam_channel::Sender<Command>>,
    threads: Vec<Thread>,
    timely_thread: Option<JoinHandle<()>>,
}

/// A thread-safe handle over the engine's worker threads. Methods take `&self`; commands from
/// concurrent callers are serialized in one order that every worker applies.
pub struct Engine {
    state: Mutex<HandleState>,
    shared: Arc<Shared>,
    sealed: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
    workers: usize,
}

/// How many recent ticks' timelines the engine remembers for [`Engine::tick_timeline`].
const TIMELINES: usize = 4096;

/// State shared with the worker threads.
pub(crate) struct Shared {
    pub(crate) sealed: Arc<AtomicU64>,
    pub(crate) events: crossbeam_channel::Sender<EngineEvent>,
    /// Shared arrangement dataflows installed, summed over the workers.
    pub(crate) live_arrangements: std::sync::atomic::AtomicUsize,
    /// The timelines of recently sealed ticks, oldest first; at most [`TIMELINES`] (the oldest are
    /// dropped), written by the merger, read by [`Engine::tick_timeline`].
    pub(crate) timelines: Mutex<VecDeque<TickTimeline>>,
    /// Turns the workers' reports into `Sealed` events; see [`merger`].
    pub(crate) merger: Mutex<merger::Merger>,
}

impl Engine {
    /// Starts `config.workers` timely workers; events go to `events`.
    pub fn start(config: EngineConfig, events: crossbeam_channel::Sender<EngineEvent>) -> Result<Engine, EngineError> {
        if config.workers == 0 {
            return Err(EngineError::Config("workers must be at least 1".into()));
        }
        let workers = config.workers;
        let sealed = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            sealed: sealed.clone(),
            events: events.clone(),
            live_arrangements: std::sync::atomic::AtomicUsize::new(0),
            timelines: Mutex::new(VecDeque::new()),
            merger: Mutex::new(merger::Merger::new(workers)),
        });

        let mut command_txs = Vec::with_capacity(workers);
        let mut command_rxs = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            command_txs.push(tx);
            command_rxs.push(Some(rx));
        }
        let command_rxs = Arc::new(Mutex::new(command_rxs));
        let (thread_tx, thread_rx) = crossbeam_channel::unbounded::<(usize, Thread)>();

        let timely_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("viewcast-timely".into())
                .spawn(move || {
                    let for_workers = shared.clone();
                    let result = timely::execute(timely::Config::process(workers), move |worker| {
                        let index = worker.index();
                        let rx = command_rxs.lock().expect("command receivers poisoned")[index]
                            .take()
                            .expect("each worker takes its receiver once");
                        let _ = thread_tx.send((index, std::thread::current()));
                        worker::run(worker, rx, for_workers.clone());
                    });
                    match result {
                        Ok(guards) => drop(guards.join()),
                        Err(e) => {
                            let _ = shared.events.send(EngineEvent::Error { id: 0, message: format!("timely: {e}") });
                        }
                    }
                })
                .map_err(|e| EngineError::Config(format!("spawning timely: {e}")))?
        };

        let mut threads: Vec<Option<Thread>> = vec![None; workers];
        for _ in 0..workers {
            let (i, t) = thread_rx.recv().map_err(|_| EngineError::Stopped)?;
            threads[i] = Some(t);
        }
        let threads = threads.into_iter().map(|t| t.expect("every worker reported")).collect();

        Ok(Engine {
            state: Mutex::new(HandleState {
                items: HashMap::new(),
                last_tick: None,
                open: None,
                arrangements: Vec::new(),
                commands: command_txs,
                threads,
                timely_thread: Some(timely_thread),
            }),
            shared,
            sealed,
            stopped,
            workers,
        })
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// An input (a source or table) with `arity` columns. Its whole history is retained, so a view
    /// created later sees every row ever inserted.
    pub fn create_input(&self, id: GlobalId, arity: usize) -> Result<(), EngineError> {
        let mut st = self.lock()?;
        if st.items.contains_key(&id) {
            return Err(EngineError::AlreadyExists(id));
        }
        st.items.insert(id, ItemInfo { arity, input: true, depends_on: Vec::new(), published: false });
        st.broadcast(Command::CreateInput { id, arity })
    }

    /// A view maintained by a new dataflow rendered from `plan`. If `publish`, its changes are
    /// sent in [`EngineEvent::Sealed`]; its first changes (at the time after the last tick) are its
    /// complete contents over all history of its inputs.
    pub fn create_view(&self, id: GlobalId, plan: RelExpr, publish: bool) -> Result<(), EngineError> {
        let mut st = self.lock()?;
        if st.items.contains_key(&id) {
            return Err(EngineError::AlreadyExists(id));
        }
        let mut bad = None;
        plan.visit(&mut |e| {
            if let RelExpr::Get { id: dep, arity } = e {
                match st.items.get(dep) {
                    None => bad = bad.clone().or(Some(EngineError::UnknownId(*dep))),
                    Some(info) if info.arity != *arity => {
                        bad =
                            bad.clone().or(Some(EngineError::PlanArity { id: *dep, expected: info.arity, got: *arity }))
                    }
                    Some(_) => {}
                }
            }
        });
        if let Some(e) = bad {
            return Err(e);
        }
        plan.check_temporal()?;
        let as_of = st.next_time();
        let depends_on = plan.depends_on();
        st.items.insert(id, ItemInfo { arity: plan.arity(), input: false, depends_on, published: publish });
        let wanted = plan.shared_arrangements().into_iter().map(|(on, _, key)| (on, key));
        arrange::record_users(&mut st.arrangements, wanted, id);
        if render::consolidated_after_as_of(&plan) {
            self.shared.merger.lock().map_err(|_| EngineError::Stopped)?.consolidated(id, as_of);
        }
        st.broadcast(Command::CreateView { id, plan, publish, as_of })
    }

    /// An index `id`: the shared arrangement of `on` by the `key` columns, kept while `id` exists
    /// (until [`Engine::drop_item`]), so views created later that join, group or deduplicate `on`
    /// by `key` read it instead of arranging `on` again.
    pub fn create_index(&self, id: GlobalId, on: GlobalId, key: Vec<usize>) -> Result<(), EngineError> {
        let mut st = self.lock()?;
        if st.items.contains_key(&id) {
            return Err(EngineError::AlreadyExists(id));
        }
        let arity = st.items.get(&on).ok_or(EngineError::UnknownId(on))?.arity;
        if let Some(&bad) = key.iter().find(|&&k| k >= arity) {
            return Err(EngineError::PlanArity { id: on, expected: arity, got: bad + 1 });
        }
        let as_of = st.next_time();
        st.items.insert(id, ItemInfo { arity: 0, input: false, depends_on: vec![on], published: false });
        arrange::record_users(&mut st.arrangements, [(on, key.clone())], id);
        st.broadcast(Command::CreateIndex { id, on, arity, key, as_of })
    }

    /// The live shared arrangement of `on` by `key`, if any.
    pub fn arrangement(&self, on: GlobalId, key: &[usize]) -> Option<ArrangementInfo> {
        let st = self.lock().ok()?;
        st.arrangements.iter().find(|a| a.on == on && a.key == key).cloned()
    }

    /// Every live shared arrangement, in creation order.
    pub fn arrangements(&self) -> Vec<ArrangementInfo> {
        self.lock().map(|st| st.arrangements.clone()).unwrap_or_default()
    }

    /// Shared arrangement dataflows the workers have installed and not dropped, summed over the
    /// workers (each worker holds every arrangement, once its command is applied).
    pub fn installed_arrangements(&self) -> usize {
        self.shared.live_arrangements.load(Ordering::Relaxed)
    }

    /// Starts or stops publishing `id`'s changes, from the time after the last tick. Turning it on
    /// sends changes only: the consumer must already hold (or separately obtain) the contents.
    ///
    /// While a tick is open (see [`Engine::feed`]) the switch takes effect when it closes: changes
    /// start or stop with the next tick, so no timestamp is captured in part.
    pub fn set_publish(&self, id: GlobalId, publish: bool) -> Result<(), EngineError> {
        let mut st = self.lock()?;
        let from = st.next_time();
        let st = &mut *st;
        let info = st.items.get_mut(&id).ok_or(EngineError::UnknownId(id))?;
        if info.input {
            // Inputs are captured by the handle itself, when fed and at tick time.
            match st.open.as_mut() {
                Some(open) => open.switch_publish.push((id, publish)),
                None => info.published = publish,
            }
            return Ok(());
        }
        info.published = publish;
        st.broadcast(Command::SetPublish { id, publish, from })
    }

    /// Drops `id`'s dataflow and trace (or an input's history). Fails if another item reads it.
    pub fn drop_item(&self, id: GlobalId) -> Result<(), EngineError> {
        let mut st = self.lock()?;
        if !st.items.contains_key(&id) {
            return Err(EngineError::UnknownId(id));
        }
        let mut dependents: Vec<GlobalId> =
            st.items.iter().filter(|(_, info)| info.depends_on.contains(&id)).map(|(k, _)| *k).collect();
        if !dependents.is_empty() {
            dependents.sort_unstable();
            return Err(EngineError::HasDependents { id, dependents });
        }
        st.items.remove(&id);
        arrange::forget_user(&mut st.arrangements, id);
        self.shared.merger.lock().map_err(|_| EngineError::Stopped)?.dropped(id);
        st.broadcast(Command::Drop { id })
    }

    /// Inserts `updates` (per input id) at time `ts`, then advances every input to `ts + 1`: the
    /// tick closes. `ts` must increase from call to call (and be the open tick's, after
    /// [`Engine::feed`]); call it once per tick even with nothing to insert.
    pub fn tick(&self, ts: Timestamp, updates: Vec<(GlobalId, Vec<(Row, Diff)>)>) -> Result<(), EngineError> {
        let sent = Instant::now();
        let mut st = self.lock()?;
        st.check_updates(ts, &updates)?;
        let open = st.open.take();
        st.last_tick = Some(ts);
        // Published inputs are captured here (and when fed); the merger sees them before any
        // worker's progress past `ts`.
        let (mut rows, mut published, switches) =
            open.map_or((0, Vec::new(), Vec::new()), |o| (o.rows, o.published, o.switch_publish));
        rows += updates.iter().map(|(_, r)| r.len()).sum::<usize>();
        published.extend(st.capture_published(ts, &updates));
        for (id, publish) in switches {
            if let Some(info) = st.items.get_mut(&id) {
                info.published = publish;
            }
        }
        self.shared.merger.lock().map_err(|_| EngineError::Stopped)?.tick(ts, rows, sent, published);
        st.send_shares(updates, |updates| Command::Tick { ts, updates })
    }

    /// Inserts `updates` at time `ts` without closing the tick: the workers start on them while
    /// more rows of the same tick arrive, so less is left to do when [`Engine::tick`] closes it.
    /// Every `feed` until that `tick` must carry the same `ts`, greater than the last tick's.
    /// Nothing at `ts` is sealed before the tick closes. Items created while a tick is open start
    /// after it (their `as_of` is `ts + 1`).
    pub fn feed(&self, ts: Timestamp, updates: Vec<(GlobalId, Vec<(Row, Diff)>)>) -> Result<(), EngineError> {
        let mut st = self.lock()?;
        st.check_updates(ts, &updates)?;
        let published = st.capture_published(ts, &updates);
        let open =
            st.open.get_or_insert_with(|| OpenTick { ts, rows: 0, published: Vec::new(), switch_publish: Vec::new() });
        open.rows += updates.iter().map(|(_, r)| r.len()).sum::<usize>();
        open.published.extend(published);
        st.send_shares(updates, |updates| Command::Feed { ts, updates })
    }

    /// All times below this are sealed and their [`EngineEvent::Sealed`] has been sent.
    pub fn sealed_frontier(&self) -> Timestamp {
        self.sealed.load(Ordering::Acquire)
    }

    /// The stages of the tick at `ts`, if it is sealed and recent; forgets every earlier tick's.
    /// For measuring latency from [`Engine::tick`] to sealing without the consumer's queueing.
    pub fn tick_timeline(&self, ts: Timestamp) -> Option<TickTimeline> {
        let mut times = self.shared.timelines.lock().ok()?;
        while times.front().is_some_and(|t| t.ts < ts) {
            times.pop_front();
        }
        times.front().filter(|t| t.ts == ts).cloned()
    }

    /// Stops the workers and joins their threads.
    pub fn shutdown(self) {
        // Drop does the work.
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HandleState>, EngineError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(EngineError::Stopped);
        }
        self.state.lock().map_err(|_| EngineError::Stopped)
    }
}

impl HandleState {
    /// The time an item created now starts at: after the open tick if one is open, else after
    /// the last tick.
    fn next_time(&self) -> Timestamp {
        match &self.open {
            Some(open) => open.ts + 1,
            None => self.last_tick.map(|t| t + 1).unwrap_or(0),
        }
    }

    /// Checks that updates at `ts` may be inserted now: `ts` after the last tick (and the open
    /// tick's, if one is open), every id an input, every row of its arity.
    fn check_updates(&self, ts: Timestamp, updates: &[(GlobalId, Vec<(Row, Diff)>)]) -> Result<(), EngineError> {
        if let Some(open) = &self.open {
            if ts != open.ts {
                return Err(EngineError::NotTheOpenTick { ts, open: open.ts });
            }
        }
        if let Some(previous) = self.last_tick {
            if ts <= previous {
                return Err(EngineError::TimeNotIncreasing { ts, previous });
            }
        }
        for (id, rows) in updates {
            let info = self.items.get(id).ok_or(EngineError::UnknownId(*id))?;
            if !info.input {
                return Err(EngineError::NotAnInput(*id));
            }
            if let Some((row, _)) = rows.iter().find(|(r, _)| r.len() != info.arity) {
                return Err(EngineError::ArityMismatch { id: *id, expected: info.arity, got: row.len() });
            }
        }
        Ok(())
    }

    /// The rows of published inputs among `updates`, as changes at `ts`.
    fn capture_published(
        &self,
        ts: Timestamp,
        updates: &[(GlobalId, Vec<(Row, Diff)>)],
    ) -> Vec<(GlobalId, Vec<Update>)> {
        updates
            .iter()
            .filter(|(id, rows)| !rows.is_empty() && self.items.get(id).is_some_and(|i| i.published))
            .map(|(id, rows)| (*id, rows.iter().map(|(r, d)| (r.clone(), ts, *d)).collect()))
            .collect()
    }

    /// Partitions `updates` by a hash of each row across the workers (equal rows to one worker)
    /// and sends each worker its share as `command(share)`.
    fn send_shares(
        &self,
        updates: Vec<(GlobalId, Vec<(Row, Diff)>)>,
        command: impl Fn(TickUpdates) -> Command,
    ) -> Result<(), EngineError> {
        let n = self.commands.len();
        let mut shares: Vec<TickUpdates> = (0..n).map(|_| Vec::new()).collect();
        for (id, rows) in updates {
            if n == 1 {
                shares[0].push((id, rows));
                continue;
            }
            let mut parts: Vec<Vec<(Row, Diff)>> = (0..n).map(|_| Vec::with_capacity(rows.len() / n + 1)).collect();
            for (row, diff) in rows {
                let w = (worker::row_hash(&row) % n as u64) as usize;
                parts[w].push((row, diff));
            }
            for (w, part) in parts.into_iter().enumerate() {
                shares[w].push((id, part));
            }
        }
        for (w, share) in shares.into_iter().enumerate() {
            self.commands[w].send(command(share)).map_err(|_| EngineError::Stopped)?;
            self.threads[w].unpark();
        }
        Ok(())
    }

    fn broadcast(&self, cmd: Command) -> Result<(), EngineError> {
        for (tx, thread) in self.commands.iter().zip(&self.threads) {
            tx.send(cmd.clone()).map_err(|_| EngineError::Stopped)?;
            thread.unpark();
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        let mut st = match self.state.lock() {
            Ok(st) => st,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (tx, thread) in st.commands.iter().zip(&st.threads) {
            let _ = tx.send(Command::Shutdown);
            thread.unpark();
        }
        if let Some(t) = st.timely_thread.take() {
            let _ = t.join();
        }
    }
}
