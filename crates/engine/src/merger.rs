//! The merger: turns per-worker captured changes and frontiers into one `Sealed` event per tick.
//!
//! It has no thread of its own: the handle registers each tick ([`Merger::tick`]) and each worker
//! applies its reports ([`Merger::progress`]) under the merger's lock, and the report that completes
//! a tick seals it on that worker's thread. A hand-off to a merger thread cost a wake-up per report,
//! and on a loaded machine each wake-up waits for a core (measured: the merger thread spent 80% of
//! the run waiting in the run queue for 2% of CPU, see BENCHMARKS.md "Tick latency").
//!
//! Invariant: a worker reports a local frontier `f` only after it has reported every captured
//! change at times `< f`, so once the minimum over workers passes `ts + 1`, the changes buffered for
//! times `<= ts` are complete and can be sealed. The handle registers a tick before any worker
//! receives it, so no report passes a tick the merger does not know.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use viewcast_plan::GlobalId;
use viewcast_repr::{Timestamp, Update};

use crate::{EngineEvent, Shared, TickTimeline};

/// A worker's report: its captured changes since its last report and its local frontier.
pub(crate) struct Report {
    pub(crate) worker: usize,
    pub(crate) frontier: Timestamp,
    pub(crate) changes: Vec<(GlobalId, Vec<Update>)>,
    /// When the worker took each tick command since its last report.
    pub(crate) taken: Vec<(Timestamp, Instant)>,
}

pub(crate) struct Merger {
    frontiers: Vec<Timestamp>,
    /// Ticks owed a `Sealed`, oldest first, with their timelines so far.
    ticks: VecDeque<TickTimeline>,
    /// Changes not yet sealed, per view and time.
    pending: HashMap<GlobalId, BTreeMap<Timestamp, Vec<Update>>>,
    dropped: HashSet<GlobalId>,
    /// Views whose changes at times after the given one (their `as_of`) arrive consolidated (see
    /// `render::consolidated_after_as_of`): sealing does not consolidate them again.
    consolidated: HashMap<GlobalId, Timestamp>,
}

impl Merger {
    pub(crate) fn new(workers: usize) -> Merger {
        Merger {
            frontiers: vec![0; workers],
            ticks: VecDeque::new(),
            pending: HashMap::new(),
            dropped: HashSet::new(),
            consolidated: HashMap::new(),
        }
    }

    /// One `Sealed` is owed for `ts`; `inputs` are the tick's changes to published inputs. Called by
    /// the handle before the tick's commands are sent.
    pub(crate) fn tick(&mut self, ts: Timestamp, rows: usize, sent: Instant, inputs: Vec<(GlobalId, Vec<Update>)>) {
        let workers = self.frontiers.len();
        self.ticks.push_back(TickTimeline {
            ts,
            rows,
            sent,
            taken: vec![None; workers],
            passed: vec![None; workers],
            merged: sent,
            sealed: sent,
        });
        self.absorb(inputs);
    }

    /// `id` was dropped: forget its buffered changes and ignore late ones.
    pub(crate) fn dropped(&mut self, id: GlobalId) {
        self.dropped.insert(id);
        self.pending.remove(&id);
        self.consolidated.remove(&id);
    }

    /// View `id`'s changes at times after `as_of` need no consolidation when sealed.
    pub(crate) fn consolidated(&mut self, id: GlobalId, as_of: Timestamp) {
        self.consolidated.insert(id, as_of);
    }

    /// Applies a worker's report, then seals (sends `Sealed` for) every tick it completes.
    pub(crate) fn progress(&mut self, report: Report, shared: &Shared) {
        let now = Instant::now();
        let Report { worker, frontier, changes, taken } = report;
        for (ts, when) in taken {
            if let Some(t) = self.ticks.iter_mut().find(|t| t.ts == ts) {
                t.taken[worker] = Some(when);
            }
        }
        for t in self.ticks.iter_mut().take_while(|t| t.ts < frontier) {
            t.passed[worker].get_or_insert(now);
        }
        self.frontiers[worker] = self.frontiers[worker].max(frontier);
        self.absorb(changes);
        self.seal(shared, now);
    }

    fn seal(&mut self, shared: &Shared, completed: Instant) {
        let global = self.frontiers.iter().copied().min().unwrap_or(0);
        while self.ticks.front().is_some_and(|t| t.ts < global) {
            let mut timeline = self.ticks.pop_front().expect("a front tick");
            timeline.merged = completed;
            let upto = timeline.ts + 1;
            let mut changes = Vec::new();
            for (id, times) in self.pending.iter_mut() {
                let mut sealed: Vec<Update> = Vec::new();
                while let Some(entry) = times.first_entry().filter(|e| *e.key() < upto) {
                    let updates = entry.remove();
                    if sealed.is_empty() {
                        sealed = updates;
                    } else {
                        sealed.extend(updates);
                    }
                }
                match self.consolidated.get(id) {
                    Some(&as_of) if sealed.iter().all(|u| u.1 > as_of) => {
                        debug_assert!(is_consolidated(&sealed), "view {id} claimed consolidated changes");
                    }
                    _ => viewcast_repr::consolidate_timed(&mut sealed),
                }
                if !sealed.is_empty() {
                    changes.push((*id, sealed));
                }
            }
            self.pending.retain(|_, times| !times.is_empty());
            changes.sort_by_key(|(id, _)| *id);
            // The timeline is stored before the event is sent, so a consumer that looks it up on
            // receiving the event finds it.
            timeline.sealed = Instant::now();
            if let Ok(mut times) = shared.timelines.lock() {
                if times.len() == crate::TIMELINES {
                    times.pop_front();
                }
                times.push_back(timeline);
            }
            // The consumer is gone only at shutdown; the workers stop on their own then.
            let _ = shared.events.send(EngineEvent::Sealed { upto, changes });
            shared.sealed.store(upto, Ordering::Release);
        }
    }

    /// Files each view's changes under their times. A report's changes are usually all at one
    /// time: that vector is filed whole. (Partitioning one buffer per view at every seal copied the
    /// later ticks' changes again at each seal while several ticks were in flight.)
    fn absorb(&mut self, changes: Vec<(GlobalId, Vec<Update>)>) {
        for (id, updates) in changes {
            if self.dropped.contains(&id) || updates.is_empty() {
                continue;
            }
            let times = self.pending.entry(id).or_default();
            let first = updates[0].1;
            if updates.iter().all(|u| u.1 == first) {
                let slot = times.entry(first).or_default();
                if slot.is_empty() {
                    *slot = updates;
                } else {
                    slot.extend(updates);
                }
            } else {
                for update in updates {
                    times.entry(update.1).or_default().push(update);
                }
            }
        }
    }
}

/// Whether no two of `updates` share a time and row, and none has a zero diff.
fn is_consolidated(updates: &[Update]) -> bool {
    let mut seen = HashSet::new();
    updates.iter().all(|(row, time, diff)| *diff != 0 && seen.insert((row, time)))
}
