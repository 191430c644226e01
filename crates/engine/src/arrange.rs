//! Shared arrangements: one arrangement per (item, key columns) on each worker, read by every
//! dataflow that joins, groups or deduplicates that item by that key, and by `CREATE INDEX`.
//!
//! An arrangement lives in a dataflow of its own, built the first time a user needs it (a view
//! whose plan reads it, see [`viewcast_plan::RelExpr::arranged_inputs`], or an index). Each user's
//! dataflow imports its trace at the user's `as_of` instead of arranging the item again. The
//! arrangement records its users; it is dropped with its last one. Every worker applies the same
//! commands in the same order, so every worker holds the same arrangements, and the handle's
//! mirror of them ([`ArrangementInfo`]) is exact.
//!
//! The arrangement keys every row (NULL keys included: `GROUP BY` groups NULLs, and a join drops
//! them when it reads a key) and keeps the whole row as the value.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::VecCollection;
use timely::progress::Antichain;
use timely::worker::Worker;
use viewcast_plan::{GlobalId, RelExpr};
use viewcast_repr::{Diff, Row, Timestamp};

use crate::render::{Coll, RenderCtx};
use crate::worker::{ErrorSink, Items};

/// Rows keyed by some of their columns: `(key, row)`.
pub(crate) type KeyedTrace = TraceAgent<ValSpine<Row, Row, Timestamp, Diff>>;
/// An arrangement of rows by key in a dataflow: a shared one imported, or a private one.
pub(crate) type Imported<'s> = Arranged<'s, KeyedTrace>;
/// What identifies an arrangement: the item arranged and its key columns.
pub(crate) type ArrangementKey = (GlobalId, Vec<usize>);

/// One shared arrangement on this worker.
pub(crate) struct SharedArrangement {
    pub(crate) trace: KeyedTrace,
    dataflow: usize,
    /// The input sessions its dataflow reads, fed by every tick.
    pub(crate) sessions: Vec<crate::worker::Session>,
    /// The views and indexes reading it, the first being the one it was built for.
    pub(crate) users: Vec<GlobalId>,
}

/// The handle's record of one live arrangement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrangementInfo {
    /// The item arranged.
    pub on: GlobalId,
    /// Its key columns.
    pub key: Vec<usize>,
    /// The views and indexes reading it, the first being the one it was built for.
    pub users: Vec<GlobalId>,
}

/// `(key, row)` for every row of `coll`, the key being the `key` columns.
pub(crate) fn keyed<'s>(coll: Coll<'s>, key: Rc<[usize]>) -> VecCollection<'s, Timestamp, (Row, Row), Diff> {
    coll.map(move |row: Row| (Row::new(key.iter().map(|&i| row.get(i).clone()).collect()), row))
}

/// Records `user` as a user of the arrangement of `on` (of `arity` columns) by `key`, first
/// building it (a dataflow reading `on` from `as_of`) if it does not exist. `live` counts the
/// arrangements held, summed over the workers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn acquire(
    worker: &mut Worker,
    items: &mut Items,
    (on, arity, key): (GlobalId, usize, Vec<usize>),
    user: GlobalId,
    as_of: Timestamp,
    open: Option<Timestamp>,
    compacted_to: Timestamp,
    errors: Rc<ErrorSink>,
    live: &AtomicUsize,
) {
    if let Some(arrangement) = items.arrangements.get_mut(&(on, key.clone())) {
        if !arrangement.users.contains(&user) {
            arrangement.users.push(user);
        }
        return;
    }
    let dataflow = worker.next_dataflow_index();
    let shared_items: &Items = items;
    let cols: Rc<[usize]> = key.clone().into();
    let (sessions, trace) = worker.dataflow_named::<Timestamp, _, _>(&format!("arrange u{on} by {key:?}"), |scope| {
        let mut ctx = RenderCtx::new(scope, as_of, on, errors, shared_items);
        let coll = ctx.render(&RelExpr::Get { id: on, arity });
        let trace = keyed(coll, cols).arrange_by_key_named("SharedArrangement").trace;
        (ctx.sessions, trace)
    });
    let sessions = crate::worker::start_sessions(sessions, as_of, open, &items.inputs);
    let mut trace = trace;
    compact(&mut trace, compacted_to);
    items.arrangements.insert((on, key), SharedArrangement { trace, dataflow, sessions, users: vec![user] });
    live.fetch_add(1, Ordering::Relaxed);
}

/// Lets the arrangement forget distinctions between times before `to` (the sealed frontier).
/// Physical compaction stops at what the trace holds: a join importing it asserts that it is not
/// ahead of the trace's upper bound, which lags `to` while the arrangement's dataflow catches up
/// (at its start, or when it has no view waiting on it, only an index).
pub(crate) fn compact(trace: &mut KeyedTrace, to: Timestamp) {
    let mut upper = Antichain::new();
    trace.read_upper(&mut upper);
    trace.set_logical_compaction(Antichain::from_elem(to).borrow());
    let physical = upper.first().map_or(to, |u| (*u).min(to));
    trace.set_physical_compaction(Antichain::from_elem(physical).borrow());
}

/// Removes `user` from every arrangement it reads, dropping those left without users.
pub(crate) fn release(worker: &mut Worker, items: &mut Items, user: GlobalId, live: &AtomicUsize) {
    items.arrangements.retain(|_, a| {
        a.users.retain(|u| *u != user);
        if a.users.is_empty() {
            worker.drop_dataflow(a.dataflow);
            live.fetch_sub(1, Ordering::Relaxed);
            false
        } else {
            true
        }
    });
}

/// The handle's side: records `user` on each of `wanted`, creating the records that do not exist.
pub(crate) fn record_users(
    all: &mut Vec<ArrangementInfo>,
    wanted: impl IntoIterator<Item = (GlobalId, Vec<usize>)>,
    user: GlobalId,
) {
    for (on, key) in wanted {
        match all.iter_mut().find(|a| a.on == on && a.key == key) {
            Some(a) => {
                if !a.users.contains(&user) {
                    a.users.push(user);
                }
            }
            None => all.push(ArrangementInfo { on, key, users: vec![user] }),
        }
    }
}

/// The handle's side of [`release`].
pub(crate) fn forget_user(all: &mut Vec<ArrangementInfo>, user: GlobalId) {
    all.retain_mut(|a| {
        a.users.retain(|u| *u != user);
        !a.users.is_empty()
    });
}
