//! The merger: turns per-worker captured changes and frontiers into one `Sealed` event per tick.
//!
//! Invariant: a worker reports a local frontier `f` only after it has sent every captured change at
//! times `< f`, so once the minimum over workers passes `ts + 1`, the changes buffered for times
//! `<= ts` are complete and can be sealed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use viewcast_plan::GlobalId;
use viewcast_repr::{Timestamp, Update};

use crate::{EngineEvent, Shared};

pub(crate) enum MergerMsg {
    /// Sent by the handle before the tick's commands: one `Sealed` is owed for `ts`, and these are
    /// the tick's changes to published inputs.
    Tick {
        ts: Timestamp,
        inputs: Vec<(GlobalId, Vec<Update>)>,
    },
    /// A worker's captured changes since its last report, and its local frontier.
    Progress {
        worker: usize,
        frontier: Timestamp,
        changes: Vec<(GlobalId, Vec<Update>)>,
    },
    /// `id` was dropped: forget its buffered changes and ignore late ones.
    Dropped {
        id: GlobalId,
    },
    Shutdown,
}

pub(crate) fn run(workers: usize, rx: crossbeam_channel::Receiver<MergerMsg>, shared: Arc<Shared>) {
    let mut frontiers = vec![0 as Timestamp; workers];
    let mut ticks: VecDeque<Timestamp> = VecDeque::new();
    let mut pending: HashMap<GlobalId, Vec<Update>> = HashMap::new();
    let mut dropped: HashSet<GlobalId> = HashSet::new();
    while let Ok(msg) = rx.recv() {
        let mut batch = vec![msg];
        // Drain what is already queued so one frontier advance seals once.
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for msg in batch {
            match msg {
                MergerMsg::Tick { ts, inputs } => {
                    ticks.push_back(ts);
                    absorb(&mut pending, &dropped, inputs);
                }
                MergerMsg::Progress { worker, frontier, changes } => {
                    frontiers[worker] = frontiers[worker].max(frontier);
                    absorb(&mut pending, &dropped, changes);
                }
                MergerMsg::Dropped { id } => {
                    dropped.insert(id);
                    pending.remove(&id);
                }
                MergerMsg::Shutdown => return,
            }
        }
        let global = frontiers.iter().copied().min().unwrap_or(0);
        while let Some(&ts) = ticks.front() {
            if ts >= global {
                break;
            }
            ticks.pop_front();
            let upto = ts + 1;
            let mut changes = Vec::new();
            for (id, updates) in pending.iter_mut() {
                if updates.is_empty() {
                    continue;
                }
                let (mut sealed, rest): (Vec<Update>, Vec<Update>) = updates.drain(..).partition(|u| u.1 < upto);
                *updates = rest;
                consolidate(&mut sealed);
                if !sealed.is_empty() {
                    changes.push((*id, sealed));
                }
            }
            pending.retain(|_, u| !u.is_empty());
            changes.sort_by_key(|(id, _)| *id);
            if shared.events.send(EngineEvent::Sealed { upto, changes }).is_err() {
                return;
            }
            shared.sealed.store(upto, Ordering::Release);
            if let Ok(mut times) = shared.seal_times.lock() {
                if times.len() == crate::SEAL_TIMES {
                    times.pop_front();
                }
                times.push_back((upto, std::time::Instant::now()));
            }
        }
    }
}

fn absorb(
    pending: &mut HashMap<GlobalId, Vec<Update>>,
    dropped: &HashSet<GlobalId>,
    changes: Vec<(GlobalId, Vec<Update>)>,
) {
    for (id, mut updates) in changes {
        if dropped.contains(&id) {
            continue;
        }
        pending.entry(id).or_default().append(&mut updates);
    }
}

/// Merges updates of equal `(time, row)`, dropping those that cancel; sorted by time, then by a hash
/// of the row (rows are compared only on equal hashes, so a tick of thousands of wide rows that
/// share their first columns is not sorted by comparing strings). The order within a time is
/// deterministic but otherwise unspecified.
fn consolidate(updates: &mut Vec<Update>) {
    use std::hash::{Hash, Hasher};
    let mut keyed: Vec<(Timestamp, u64, Update)> = updates
        .drain(..)
        .map(|u| {
            let mut h = crate::render::FxHasher::default();
            u.0.hash(&mut h);
            (u.1, h.finish(), u)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| a.2 .0.cmp(&b.2 .0)));
    for (time, _, (row, _, diff)) in keyed {
        match updates.last_mut() {
            Some(last) if last.1 == time && last.0 == row => last.2 += diff,
            _ => {
                if updates.last().is_some_and(|l| l.2 == 0) {
                    updates.pop();
                }
                updates.push((row, time, diff));
            }
        }
    }
    if updates.last().is_some_and(|l| l.2 == 0) {
        updates.pop();
    }
}
