//! Hands a linear view's live changes to the dataflows that read it, within one worker.
//!
//! A linear view's dataflow computes its output in two parts: its plan over the inputs' history
//! (once, at creation) and over the ticks that follow (live). The live part passes through a
//! [`Forward`], from which every dependent dataflow receives the changes at times `>=` its own
//! `as_of` through a source operator; the dependent computes the part before `as_of` from the
//! inputs' history itself. So a view's scalars are evaluated once per row, however many views read it.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Scope;
use timely::scheduling::Activator;
use viewcast_repr::{Diff, Row, Timestamp};

use crate::render::Coll;

/// One dependent's inbox.
struct Listener {
    as_of: Timestamp,
    updates: Vec<(Row, Timestamp, Diff)>,
    /// The forwarded stream's frontier: no more changes at earlier times will arrive.
    frontier: Timestamp,
    activator: Activator,
}

/// A linear view's live changes on this worker, and who listens.
#[derive(Default)]
pub(crate) struct Forward {
    listeners: Vec<Weak<RefCell<Listener>>>,
    frontier: Timestamp,
}

impl Forward {
    /// A forward for a view whose live changes start at `as_of`.
    pub(crate) fn new(as_of: Timestamp) -> Forward {
        Forward { listeners: Vec::new(), frontier: as_of }
    }
}

/// Sends `live` (a linear view's changes from ticks) to every listener of `forward`.
pub(crate) fn publish(live: Coll<'_>, forward: Rc<RefCell<Forward>>) {
    live.inner.sink(Pipeline, "Forward", move |(input, frontier)| {
        let mut fwd = forward.borrow_mut();
        let mut batch = Vec::new();
        input.for_each(|_, data| batch.append(data));
        fwd.frontier = frontier.frontier().first().copied().unwrap_or(Timestamp::MAX);
        let new_frontier = fwd.frontier;
        fwd.listeners.retain(|l| l.strong_count() > 0);
        let listeners = fwd.listeners.len();
        for (i, l) in fwd.listeners.iter().enumerate() {
            let Some(l) = l.upgrade() else { continue };
            let mut l = l.borrow_mut();
            let as_of = l.as_of;
            if i + 1 == listeners {
                // The last listener takes the batch itself.
                l.updates.extend(batch.drain(..).filter(|u| u.1 >= as_of));
            } else {
                l.updates.extend(batch.iter().filter(|u| u.1 >= as_of).cloned());
            }
            if new_frontier > l.frontier {
                l.frontier = new_frontier;
            }
            l.activator.activate();
        }
    });
}

/// The changes of the view behind `forward` at times `>= as_of`, as a collection in `scope`.
pub(crate) fn subscribe<'s>(scope: Scope<'s, Timestamp>, forward: &Rc<RefCell<Forward>>, as_of: Timestamp) -> Coll<'s> {
    let forward = forward.clone();
    source::<_, CapacityContainerBuilder<Vec<(Row, Timestamp, Diff)>>, _, _>(scope, "Forwarded", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let listener = Rc::new(RefCell::new(Listener {
            as_of,
            updates: Vec::new(),
            frontier: as_of.max(forward.borrow().frontier),
            activator,
        }));
        forward.borrow_mut().listeners.push(Rc::downgrade(&listener));
        let mut cap = Some(cap.delayed(&as_of));
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
