//! Hands a view's live changes to the dataflows that read it, within one worker.
//!
//! A linear view's dataflow computes its output in two parts: its plan over the inputs' history
//! (once, at creation) and over the ticks that follow (live). The live part passes through a
//! [`Forward`], from which every dependent dataflow receives the changes at times `>=` its own
//! `as_of` through a source operator; the dependent computes the part before `as_of` from the
//! inputs' history itself. So a view's scalars are evaluated once per row, however many views read it.
//!
//! A `COUNT(*)` view's output also passes through a [`Forward`]: a dependent reads the counts at its
//! `as_of` once from the view's trace and every later change from the forward, instead of counting
//! the trace's keys again at every tick (see `RenderCtx::get`).
//!
//! A listener may ask for some columns only ([`subscribe`]'s `columns`): the forward builds the
//! narrow rows itself, so a view that counts by one column never receives (or clones) whole rows.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::Scope;
use timely::scheduling::Activator;
use viewcast_repr::{Diff, Row, Timestamp};

use crate::render::Coll;

/// One dependent's inbox. Owned by the dependent's source operator; the [`Forward`] holds a weak
/// reference, so dropping the dependent's dataflow unsubscribes it.
struct Listener {
    /// Changes at earlier times are not delivered.
    from: Timestamp,
    /// Deliver only these columns, in this order (`None`: whole rows).
    columns: Option<Rc<[usize]>>,
    updates: Vec<(Row, Timestamp, Diff)>,
    /// Waiting for the producer's contents at `from` (see [`Forward::give_snapshots`]); until then
    /// the listener's frontier stays at `from`.
    snapshot_pending: bool,
    /// The forwarded stream's frontier: no more changes at earlier times will arrive.
    frontier: Timestamp,
    activator: Activator,
}

/// A view's live changes on this worker, and who listens. Owned by the view's `ViewState`; the
/// view's sink operator delivers into it.
#[derive(Default)]
pub(crate) struct Forward {
    listeners: Vec<Weak<RefCell<Listener>>>,
    frontier: Timestamp,
    /// Wakes the operator that serves snapshots, when a listener asks for one.
    producer: Option<Activator>,
}

impl Forward {
    /// A forward for a view whose live changes start at `as_of`.
    pub(crate) fn new(as_of: Timestamp) -> Forward {
        Forward { listeners: Vec::new(), frontier: as_of, producer: None }
    }

    /// Registers the operator that serves snapshots (see [`crate::count`]).
    pub(crate) fn set_producer(&mut self, activator: Activator) {
        self.producer = Some(activator);
    }

    /// Whether a listener waits for a snapshot at a time `<= upto`.
    pub(crate) fn snapshot_due(&self, upto: Timestamp) -> bool {
        self.listeners
            .iter()
            .any(|l| l.upgrade().is_some_and(|l| l.borrow().snapshot_pending && l.borrow().from <= upto))
    }

    /// Gives `rows`, the producer's contents, to every listener waiting for a snapshot at a time
    /// `<= upto`, at that listener's `from`. The producer must call this with its contents at `from`:
    /// after applying every time before `from` and none after.
    pub(crate) fn give_snapshots(&mut self, upto: Timestamp, rows: &[(Row, Diff)]) {
        for l in &self.listeners {
            let Some(l) = l.upgrade() else { continue };
            let mut l = l.borrow_mut();
            let l = &mut *l;
            if !l.snapshot_pending || l.from > upto {
                continue;
            }
            let from = l.from;
            match &l.columns {
                Some(cols) => l.updates.extend(rows.iter().map(|(row, d)| (columns_of(row, cols), from, *d))),
                None => l.updates.extend(rows.iter().map(|(row, d)| (row.clone(), from, *d))),
            }
            l.snapshot_pending = false;
            l.frontier = l.frontier.max(self.frontier);
            l.activator.activate();
        }
    }

    /// Hands every listener its copy of `batch` (the changes it wants: at times `>= from`, only its
    /// columns), without taking the batch: the caller captures it afterwards.
    pub(crate) fn deliver(&mut self, batch: &[(Row, Timestamp, Diff)]) {
        if batch.is_empty() {
            return;
        }
        self.listeners.retain(|l| l.strong_count() > 0);
        for l in &self.listeners {
            let Some(l) = l.upgrade() else { continue };
            let mut l = l.borrow_mut();
            let l = &mut *l;
            let from = l.from;
            let wanted = batch.iter().filter(|u| u.1 >= from);
            match &l.columns {
                // No columns (a global `COUNT(*)`): every row is the empty row, so one update per
                // time carries the sum of the time's diffs instead of one per row.
                Some(cols) if cols.is_empty() => {
                    for (_, t, d) in wanted {
                        match l.updates.last_mut() {
                            Some(last) if last.1 == *t && last.0.is_empty() => last.2 += d,
                            _ => l.updates.push((Row::default(), *t, *d)),
                        }
                    }
                }
                Some(cols) => l.updates.extend(wanted.map(|(row, t, d)| (columns_of(row, cols), *t, *d))),
                None => l.updates.extend(wanted.cloned()),
            }
            l.activator.activate();
        }
    }

    /// Records that the sender will send no more changes at times before `frontier`.
    pub(crate) fn advance(&mut self, frontier: Timestamp) {
        if frontier <= self.frontier {
            return;
        }
        self.frontier = frontier;
        for l in &self.listeners {
            let Some(l) = l.upgrade() else { continue };
            let mut l = l.borrow_mut();
            if frontier > l.frontier && !l.snapshot_pending {
                l.frontier = frontier;
                l.activator.activate();
            }
        }
    }
}

/// The `cols` of `row`, in that order.
pub(crate) fn columns_of(row: &Row, cols: &[usize]) -> Row {
    Row::new(cols.iter().map(|&c| row.get(c).clone()).collect())
}

/// The changes of the view behind `forward` at times `>= from`, as a collection in `scope`; only
/// `columns` of each row if given. With `snapshot`, the view's contents at `from` (served by its
/// producer, see [`Forward::give_snapshots`]) come first, as updates at `from`.
pub(crate) fn subscribe<'s>(
    scope: Scope<'s, Timestamp>,
    forward: &Rc<RefCell<Forward>>,
    from: Timestamp,
    columns: Option<Rc<[usize]>>,
    snapshot: bool,
) -> Coll<'s> {
    let forward = forward.clone();
    source::<_, CapacityContainerBuilder<Vec<(Row, Timestamp, Diff)>>, _, _>(scope, "Forwarded", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let listener = Rc::new(RefCell::new(Listener {
            from,
            columns,
            updates: Vec::new(),
            snapshot_pending: snapshot,
            frontier: if snapshot { from } else { from.max(forward.borrow().frontier) },
            activator,
        }));
        let mut fwd = forward.borrow_mut();
        fwd.listeners.push(Rc::downgrade(&listener));
        if snapshot {
            if let Some(producer) = &fwd.producer {
                producer.activate();
            }
        }
        drop(fwd);
        let mut cap = Some(cap.delayed(&from));
        move |output| {
            let mut l = listener.borrow_mut();
            if let Some(c) = cap.as_mut() {
                if !l.updates.is_empty() {
                    let mut session = output.session(c);
                    for u in l.updates.drain(..) {
                        session.give(u);
                    }
                }
                if l.frontier == Timestamp::MAX {
                    cap = None;
                } else if l.frontier > *c.time() {
                    c.downgrade(&l.frontier);
                }
            }
        }
    })
    .as_collection()
}
