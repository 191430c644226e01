//! One timely worker: applies commands in order, steps its dataflows, reports to the merger.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::input::InputSession;
use differential_dataflow::trace::TraceReader;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::progress::Antichain;
use timely::worker::Worker;
use viewcast_plan::{EvalError, GlobalId, RelExpr};
use viewcast_repr::{Diff, Row, Timestamp, Update};

use crate::arrange::{ArrangementKey, SharedArrangement};
use crate::forward::Forward;
use crate::merger::Report;
use crate::render::{count_view, is_linear, Feed, Part, RenderCtx, RowTrace};
use crate::{Command, EngineEvent, Shared};

/// How long an idle worker parks before looking at its command channel again. Commands unpark it,
/// so this only bounds the delay of trace compaction.
const PARK: Duration = Duration::from_millis(20);

/// Hash used by the handle to partition rows across workers (equal rows land on one worker, so
/// an input's history consolidates locally).
pub(crate) fn row_hash(row: &Row) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    row.hash(&mut h);
    h.finish()
}

/// An input's retained history on this worker.
pub(crate) struct InputState {
    arity: usize,
    /// Every row this worker received, with multiplicities, as the ticks' own vectors (appending
    /// a tick moves its vector in: no copy of the history as it grows, no doubling reallocation on
    /// a tick's path). Consolidated into one chunk when it has doubled in length since the last
    /// consolidation and has seen a retraction (append-only inputs never pay). Includes the rows
    /// fed so far of an open tick (see `Command::Feed`).
    history: Vec<Vec<(Row, Diff)>>,
    len: usize,
    consolidated_len: usize,
    saw_retraction: bool,
}

impl InputState {
    fn new(arity: usize) -> InputState {
        InputState { arity, history: Vec::new(), len: 0, consolidated_len: 0, saw_retraction: false }
    }

    /// Appends rows fed or ticked.
    fn append(&mut self, rows: Vec<(Row, Diff)>) {
        debug_assert!(rows.iter().all(|(r, _)| r.len() == self.arity), "the handle checks arities");
        if rows.is_empty() {
            return;
        }
        self.saw_retraction |= rows.iter().any(|(_, d)| *d < 0);
        self.len += rows.len();
        self.history.push(rows);
        if self.saw_retraction && self.len >= 2 * self.consolidated_len.max(1024) {
            let mut all: Vec<(Row, Diff)> = Vec::with_capacity(self.len);
            for chunk in self.history.drain(..) {
                all.extend(chunk);
            }
            viewcast_repr::consolidate_updates(&mut all);
            self.len = all.len();
            self.consolidated_len = all.len();
            self.history.push(all);
        }
    }

    /// Every retained row with its multiplicity (not necessarily consolidated).
    pub(crate) fn rows(&self) -> impl Iterator<Item = &(Row, Diff)> {
        self.history.iter().flatten()
    }
}

/// A dataflow's input session, and how it is fed (see [`start_sessions`]).
pub(crate) type Session = (GlobalId, Feed, InputSession<Timestamp, Row, Diff>);

/// A view's dataflow on this worker.
pub(crate) struct ViewState {
    pub(crate) plan: RelExpr,
    /// The arranged output, for views neither linear nor counting (dependents import it).
    pub(crate) trace: Option<RowTrace>,
    /// The live changes, for linear views (dependents subscribe to them).
    pub(crate) forward: Option<Rc<RefCell<Forward>>>,
    /// For a `COUNT(*)` view (no trace): its counting operator's changes, and its contents at a
    /// dependent's `as_of` (a snapshot), for dependents to subscribe to.
    pub(crate) output: Option<Rc<RefCell<Forward>>>,
    dataflow: usize,
    /// The sessions fed by every tick.
    sessions: Vec<Session>,
    capture: Rc<RefCell<Capture>>,
}

/// What a dataflow's capture sink has seen.
struct Capture {
    /// The input frontier of each of the view's capture sinks (as_of until a sink first runs;
    /// `u64::MAX` once complete); the view's frontier is their minimum.
    frontiers: Vec<Timestamp>,
    /// Changes at times in `[publish_from, publish_until)` are kept.
    publish_from: Timestamp,
    publish_until: Timestamp,
    updates: Vec<Update>,
}

/// Every item this worker knows.
#[derive(Default)]
pub(crate) struct Items {
    pub(crate) inputs: HashMap<GlobalId, InputState>,
    pub(crate) views: HashMap<GlobalId, ViewState>,
    /// The shared arrangements (see [`crate::arrange`]).
    pub(crate) arrangements: HashMap<ArrangementKey, SharedArrangement>,
}

/// Reports evaluation errors, at most one event per view per second on each worker.
pub(crate) struct ErrorSink {
    events: crossbeam_channel::Sender<EngineEvent>,
    state: RefCell<HashMap<GlobalId, (Option<Instant>, u64)>>,
}

impl ErrorSink {
    pub(crate) fn report(&self, id: GlobalId, err: &EvalError) {
        let mut state = self.state.borrow_mut();
        let entry = state.entry(id).or_insert((None, 0));
        entry.1 += 1;
        let now = Instant::now();
        if entry.0.is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1)) {
            let message = format!("{err} (SQLSTATE {}); {} row(s) dropped", err.sqlstate(), entry.1);
            let _ = self.events.send(EngineEvent::Error { id, message });
            *entry = (Some(now), 0);
        }
    }
}

struct WorkerState {
    items: Items,
    /// The time every input of this worker is at: the last tick's time plus one.
    next_time: Timestamp,
    /// The open tick's time, while one is fed (see `Command::Feed`).
    open: Option<Timestamp>,
    errors: Rc<ErrorSink>,
    /// The global sealed frontier last applied to trace compaction.
    compacted_to: Timestamp,
    reported_frontier: Timestamp,
    /// When this worker took each tick command since its last report (for the tick's timeline).
    taken: Vec<(Timestamp, Instant)>,
}

pub(crate) fn run(worker: &mut Worker, commands: crossbeam_channel::Receiver<Command>, shared: Arc<Shared>) {
    let index = worker.index();
    let mut st = WorkerState {
        items: Items::default(),
        next_time: 0,
        open: None,
        errors: Rc::new(ErrorSink { events: shared.events.clone(), state: RefCell::new(HashMap::new()) }),
        compacted_to: 0,
        reported_frontier: 0,
        taken: Vec::new(),
    };
    loop {
        let mut worked = false;
        while let Ok(cmd) = commands.try_recv() {
            worked = true;
            if !st.apply(worker, cmd, &shared) {
                for (_, view) in st.items.views.drain() {
                    worker.drop_dataflow(view.dataflow);
                }
                for id in st.items.arrangements.values().flat_map(|a| a.users.clone()).collect::<Vec<_>>() {
                    crate::arrange::release(worker, &mut st.items, id, &shared.live_arrangements);
                }
                return;
            }
        }
        if worked {
            worker.step();
        } else {
            worker.step_or_park(Some(PARK));
        }
        st.report(index, &shared);
        let sealed = shared.sealed.load(Ordering::Acquire);
        if sealed > st.compacted_to {
            st.compacted_to = sealed;
            let frontier = Antichain::from_elem(sealed);
            for view in st.items.views.values_mut() {
                if let Some(trace) = view.trace.as_mut() {
                    trace.set_logical_compaction(frontier.borrow());
                    trace.set_physical_compaction(frontier.borrow());
                }
            }
            for arrangement in st.items.arrangements.values_mut() {
                crate::arrange::compact(&mut arrangement.trace, sealed);
            }
        }
    }
}

impl WorkerState {
    /// Applies one command; `false` means shut down.
    fn apply(&mut self, worker: &mut Worker, cmd: Command, shared: &Shared) -> bool {
        match cmd {
            Command::CreateInput { id, arity } => {
                self.items.inputs.insert(id, InputState::new(arity));
            }
            Command::CreateView { id, plan, publish, as_of } => {
                for wanted in plan.shared_arrangements() {
                    let errors = self.errors.clone();
                    let (items, compacted_to, live, open) =
                        (&mut self.items, self.compacted_to, &shared.live_arrangements, self.open);
                    crate::arrange::acquire(worker, items, wanted, id, as_of, open, compacted_to, errors, live);
                }
                let linear = is_linear(&plan, &self.items);
                let capture = Rc::new(RefCell::new(Capture {
                    frontiers: Vec::new(),
                    publish_from: if publish { as_of } else { Timestamp::MAX },
                    publish_until: Timestamp::MAX,
                    updates: Vec::new(),
                }));
                let dataflow = worker.next_dataflow_index();
                let items = &self.items;
                let errors = self.errors.clone();
                let sink_capture = capture.clone();
                let forward = linear.then(|| Rc::new(RefCell::new(Forward::new(as_of))));
                let view_forward = forward.clone();
                let output = count_view(&plan).filter(|_| !linear).map(|_| Rc::new(RefCell::new(Forward::new(as_of))));
                let view_output = output.clone();
                let (sessions, trace) = worker.dataflow_named::<Timestamp, _, _>(&format!("view {id}"), |scope| {
                    let mut ctx = RenderCtx::new(scope, as_of, id, errors, items);
                    // The view's output as streams, each captured by its own sink, which first hands
                    // a linear view's live changes to its forward (by reference: the capture keeps them).
                    let (parts, trace) = match (view_forward, view_output) {
                        (Some(forward), _) => {
                            let live = ctx.render_part(&plan, Part::Live);
                            let snapshot = ctx.render_part(&plan, Part::Snapshot);
                            (vec![(snapshot, None), (live, Some(forward))], None)
                        }
                        (None, Some(output)) => {
                            let (input, group_key, shape) = count_view(&plan).expect("a count view");
                            (vec![(ctx.render_count_view(input, group_key, shape, output), None)], None)
                        }
                        (None, None) => {
                            let coll = ctx.render(&plan);
                            let trace = coll.clone().arrange_by_self().trace;
                            (vec![(coll, None)], Some(trace))
                        }
                    };
                    sink_capture.borrow_mut().frontiers = vec![as_of; parts.len()];
                    for (part, (coll, forward)) in parts.into_iter().enumerate() {
                        let capture = sink_capture.clone();
                        coll.inner.sink(Pipeline, "Capture", move |(input, frontier)| {
                            let mut cap = capture.borrow_mut();
                            let cap = &mut *cap;
                            let (from, until) = (cap.publish_from, cap.publish_until);
                            input.for_each(|_, data| {
                                if let Some(forward) = &forward {
                                    forward.borrow_mut().deliver(data);
                                }
                                cap.updates.extend(data.drain(..).filter(|u| u.1 >= from && u.1 < until));
                            });
                            let frontier = frontier.frontier().first().copied().unwrap_or(Timestamp::MAX);
                            if let Some(forward) = &forward {
                                forward.borrow_mut().advance(frontier);
                            }
                            cap.frontiers[part] = frontier;
                        });
                    }
                    (ctx.sessions, trace)
                });
                let live_sessions = start_sessions(sessions, as_of, self.open, &self.items.inputs);
                let mut trace = trace;
                if let Some(t) = trace.as_mut() {
                    let f = Antichain::from_elem(self.compacted_to);
                    t.set_logical_compaction(f.borrow());
                    t.set_physical_compaction(f.borrow());
                }
                self.items
                    .views
                    .insert(id, ViewState { plan, trace, forward, output, dataflow, sessions: live_sessions, capture });
            }
            Command::SetPublish { id, publish, from } => {
                if let Some(view) = self.items.views.get(&id) {
                    let mut cap = view.capture.borrow_mut();
                    if publish {
                        if cap.publish_from == Timestamp::MAX || cap.publish_until != Timestamp::MAX {
                            cap.publish_from = from;
                            cap.publish_until = Timestamp::MAX;
                        }
                    } else {
                        cap.publish_until = cap.publish_until.min(from);
                    }
                }
            }
            Command::CreateIndex { id, on, arity, key, as_of } => {
                let errors = self.errors.clone();
                let (items, compacted_to, live, open) =
                    (&mut self.items, self.compacted_to, &shared.live_arrangements, self.open);
                crate::arrange::acquire(worker, items, (on, arity, key), id, as_of, open, compacted_to, errors, live);
            }
            Command::Drop { id } => {
                if let Some(view) = self.items.views.remove(&id) {
                    worker.drop_dataflow(view.dataflow);
                }
                crate::arrange::release(worker, &mut self.items, id, &shared.live_arrangements);
                self.items.inputs.remove(&id);
            }
            Command::Feed { ts, updates } => {
                self.open = Some(ts);
                self.insert(ts, updates, false);
            }
            Command::Tick { ts, updates } => {
                self.taken.push((ts, Instant::now()));
                self.open = None;
                self.insert(ts, updates, true);
                self.next_time = ts + 1;
            }
            Command::Shutdown => return false,
        }
        true
    }

    /// Gives every dataflow session its input's rows among `updates` at `ts` (a session that
    /// started after `ts`, created while the tick was open, takes them at its start, or skips them
    /// if it reads only later ticks), appends them to the inputs' history and, if `close`,
    /// advances the sessions past `ts` and closes the history sessions kept for the open tick.
    fn insert(&mut self, ts: Timestamp, updates: Vec<(GlobalId, Vec<(Row, Diff)>)>, close: bool) {
        // One input may come several times (writes that landed in the same tick): all of them
        // count, not the last.
        let mut by_input: HashMap<GlobalId, Vec<(Row, Diff)>> = HashMap::new();
        for (id, rows) in updates {
            match by_input.entry(id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(rows);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().extend(rows),
            }
        }
        let views = self.items.views.values_mut().map(|v| &mut v.sessions);
        let arrangements = self.items.arrangements.values_mut().map(|a| &mut a.sessions);
        for sessions in views.chain(arrangements) {
            for (input, feed, session) in sessions.iter_mut() {
                let late = ts < *session.time();
                if !(late && *feed == Feed::Live) {
                    if !late {
                        session.advance_to(ts);
                    }
                    if let Some(rows) = by_input.get(input) {
                        for (row, diff) in rows {
                            session.update(row.clone(), *diff);
                        }
                    }
                }
                if close && *feed != Feed::History {
                    session.advance_to((ts + 1).max(*session.time()));
                }
                session.flush();
            }
            if close {
                // History sessions kept for the open tick have all of it now: closing them (by
                // dropping) lets their part of the dataflow finish.
                sessions.retain(|(_, feed, _)| *feed != Feed::History);
            }
        }
        for (id, rows) in by_input {
            if let Some(input) = self.items.inputs.get_mut(&id) {
                input.append(rows);
            }
        }
    }

    /// Hands captured changes and the local frontier to the merger when either has moved.
    fn report(&mut self, index: usize, shared: &Shared) {
        let mut frontier = self.next_time;
        let mut changes = Vec::new();
        for (id, view) in self.items.views.iter() {
            let mut cap = view.capture.borrow_mut();
            frontier = cap.frontiers.iter().fold(frontier, |f, g| f.min(*g));
            if !cap.updates.is_empty() {
                // The next tick's changes likely number about as many: sized once, not regrown (up to
                // 64k updates: a one-off snapshot must not size every later vector).
                let hint = cap.updates.len().min(1 << 16);
                changes.push((*id, std::mem::replace(&mut cap.updates, Vec::with_capacity(hint))));
            }
        }
        if frontier != self.reported_frontier || !changes.is_empty() || !self.taken.is_empty() {
            self.reported_frontier = frontier;
            let taken = std::mem::take(&mut self.taken);
            let report = Report { worker: index, frontier, changes, taken };
            if let Ok(mut merger) = shared.merger.lock() {
                merger.progress(report, shared);
            }
        }
    }
}

/// Starts the input sessions of a dataflow just built to show its inputs from `as_of`: each gets
/// its input's history at `as_of` unless it is live-only; history-only ones close here, unless a
/// tick is open (`open`, then `as_of` is after it): those take the rest of that tick at `as_of`
/// too and close when it does. Returns the sessions later ticks feed.
pub(crate) fn start_sessions(
    sessions: Vec<(GlobalId, Feed, InputSession<Timestamp, Row, Diff>)>,
    as_of: Timestamp,
    open: Option<Timestamp>,
    inputs: &HashMap<GlobalId, InputState>,
) -> Vec<Session> {
    debug_assert!(open.is_none_or(|ts| ts < as_of), "items created while a tick is open start after it");
    let mut live_sessions = Vec::new();
    for (input, feed, mut session) in sessions {
        session.advance_to(as_of);
        if feed != Feed::Live {
            for (row, diff) in inputs[&input].rows() {
                session.update(row.clone(), *diff);
            }
        }
        session.flush();
        if feed != Feed::History || open.is_some() {
            live_sessions.push((input, feed, session));
        }
    }
    live_sessions
}
