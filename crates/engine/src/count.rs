//! `COUNT(*)` per group as a timely operator over a hash map: O(1) work per input row and per
//! group touched, no arrangement.
//!
//! Rows are exchanged by a hash of their group key (all to worker 0 for a global count), their
//! multiplicities summed per key under their own time, and once the input frontier passes a time the
//! sums are applied to the map of counts: each group whose count changed retracts its old row
//! `(key.., old)` and inserts `(key.., new)`. A global count (no key) always has exactly one row, the
//! shape's default while nothing is counted.
//!
//! The operator owns its counts; a dependent dataflow that reads the view subscribes to the view's
//! [`Forward`] with a snapshot: the operator hands it every row at the dependent's `as_of` (its counts
//! before processing any later time), then every later change. This replaces differential's
//! `arrange` + `count_total` (and the second `count_total` each dependent ran over the imported trace).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use differential_dataflow::AsCollection;
use hashbrown::hash_table::{Entry as HashEntry, HashTable};
use smallvec::SmallVec;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use viewcast_repr::{Datum, Diff, Row, Timestamp};

use crate::forward::Forward;
use crate::render::{Coll, CountShape, FxHasher};

/// A group key. A one-column key (`GROUP BY user`) is held in the table's own slot, so finding
/// and comparing it reads no other memory: the counts of 100,000 users are one random access
/// per key touched, not two.
type Key = SmallVec<[Datum; 1]>;

/// Sums per group key, each key with its hash ([`key_hash`] of the key's datums): a key is hashed
/// once, when its row arrives; applying a time's sums to the counts and growing either table
/// hashes no key again.
type Sums = HashTable<(u64, Key, Diff)>;

/// Multiplicity changes per key waiting for the frontier to pass their time.
type Stash = BTreeMap<Timestamp, (Capability<Timestamp>, Sums)>;

/// The view's row for a group with `count` rows, if it has one.
fn row_of(key: &[Datum], count: Diff, shape: &CountShape) -> Option<Row> {
    if count == 0 {
        return shape.default.clone();
    }
    let mut datums = Vec::with_capacity(key.len() + shape.aggs);
    datums.extend_from_slice(key);
    datums.extend(std::iter::repeat_n(Datum::Int(count), shape.aggs));
    Some(Row::new(datums))
}

/// The retraction of a group's row at count `old` and the insertion of its row at `new`.
fn push_change(
    changes: &mut Vec<(Row, Timestamp, Diff)>,
    key: &[Datum],
    old: Diff,
    new: Diff,
    time: Timestamp,
    shape: &CountShape,
) {
    if let Some(row) = row_of(key, old, shape) {
        changes.push((row, time, -1));
    }
    if let Some(row) = row_of(key, new, shape) {
        changes.push((row, time, 1));
    }
}

/// The hash that routes a row to the worker counting its group: of the datums at `cols`. A
/// count's output row starts with its key, so routing the output by its first `key.len()`
/// columns with this hash keeps each row on the worker that counted it.
pub(crate) fn key_hash(row: &Row, cols: impl Iterator<Item = usize>) -> u64 {
    hash_datums(cols.map(|i| row.get(i)))
}

/// The hash of a sequence of datums: of a key, as [`Sums`] keeps it and [`key_hash`] routes it.
fn hash_datums<'a>(datums: impl IntoIterator<Item = &'a Datum>) -> u64 {
    let mut h = FxHasher::default();
    for d in datums {
        d.hash(&mut h);
    }
    h.finish()
}

/// The rows of `COUNT(*) .. GROUP BY key_cols` over `input`, in the output shape `shape`. If `output`
/// is given, every change is also delivered to it, and its snapshot listeners are served.
pub(crate) fn render<'s>(
    input: Coll<'s>,
    key_cols: Vec<usize>,
    shape: CountShape,
    as_of: Timestamp,
    output: Option<Rc<RefCell<Forward>>>,
) -> Coll<'s> {
    let scope = input.inner.scope();
    // The global row's default is introduced once, by worker 0, which all global counts go to.
    let owner = key_cols.is_empty() && scope.index() == 0;
    let exchange_key = key_cols.clone();
    let exchange =
        Exchange::new(move |(row, _, _): &(Row, Timestamp, Diff)| key_hash(row, exchange_key.iter().copied()));
    // A contiguous key is looked up as a slice of the row, without building it.
    let contiguous = key_cols.windows(2).all(|w| w[1] == w[0] + 1);
    let range = key_cols.first().map_or(0..0, |&s| s..s + key_cols.len());
    input
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(Row, Timestamp, Diff)>>, _, _, _>(
            exchange,
            "CountStar",
            move |cap, info| {
                let mut initial = owner.then(|| cap.delayed(&as_of));
                drop(cap);
                if let Some(out) = &output {
                    out.borrow_mut().set_producer(scope.activator_for(info.address));
                }
                let mut stash: Stash = BTreeMap::new();
                let mut spare: Vec<Sums> = Vec::new();
                let mut counts: Sums = HashTable::new();
                let mut changes: Vec<(Row, Timestamp, Diff)> = Vec::new();
                let mut scratch: Vec<Datum> = Vec::new();
                move |(input, frontier), out| {
                    if let Some(cap) = initial.take() {
                        if let Some(default) = &shape.default {
                            out.session(&cap).give((default.clone(), as_of, 1));
                        }
                    }
                    input.for_each(|cap, data| {
                        for (row, time, diff) in data.drain(..) {
                            let sums = &mut stash
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), spare.pop().unwrap_or_default()))
                                .1;
                            let key: &[Datum] = if contiguous {
                                &row.datums()[range.clone()]
                            } else {
                                scratch.clear();
                                scratch.extend(key_cols.iter().map(|&i| row.get(i).clone()));
                                &scratch
                            };
                            let hash = hash_datums(key);
                            match sums.entry(hash, |e| e.1.as_slice() == key, |e| e.0) {
                                HashEntry::Occupied(mut o) => o.get_mut().2 += diff,
                                HashEntry::Vacant(v) => {
                                    v.insert((hash, key.iter().cloned().collect(), diff));
                                }
                            }
                        }
                    });
                    let upto = frontier.frontier().first().copied().unwrap_or(Timestamp::MAX);
                    while let Some(entry) = stash.first_entry() {
                        let time = *entry.key();
                        if time >= upto {
                            break;
                        }
                        if let Some(out) = &output {
                            serve_snapshots(out, time, &counts, &shape, owner);
                        }
                        let (cap, mut sums) = entry.remove();
                        for (hash, key, delta) in sums.drain() {
                            if delta == 0 {
                                continue;
                            }
                            // The key's hash from its arrival: its entry is read and written in place.
                            match counts.entry(hash, |e| e.1 == key, |e| e.0) {
                                HashEntry::Occupied(mut o) => {
                                    let entry = o.get_mut();
                                    let (old, new) = (entry.2, entry.2 + delta);
                                    push_change(&mut changes, &entry.1, old, new, time, &shape);
                                    if new == 0 {
                                        o.remove();
                                    } else {
                                        entry.2 = new;
                                    }
                                }
                                HashEntry::Vacant(v) => {
                                    push_change(&mut changes, &key, 0, delta, time, &shape);
                                    v.insert((hash, key, delta));
                                }
                            }
                        }
                        spare.push(sums);
                        if let Some(out) = &output {
                            out.borrow_mut().deliver(&changes);
                        }
                        if !changes.is_empty() {
                            out.session(&cap).give_iterator(changes.drain(..));
                        }
                    }
                    if let Some(out) = &output {
                        serve_snapshots(out, upto, &counts, &shape, owner);
                        out.borrow_mut().advance(upto);
                    }
                }
            },
        )
        .as_collection()
}

/// Hands every listener of `out` waiting for a snapshot at a time `<= upto` the view's rows now:
/// every time before `upto` has been applied to `counts` and no later one.
fn serve_snapshots(out: &Rc<RefCell<Forward>>, upto: Timestamp, counts: &Sums, shape: &CountShape, owner: bool) {
    let mut out = out.borrow_mut();
    if !out.snapshot_due(upto) {
        return;
    }
    let mut rows: Vec<(Row, Diff)> =
        counts.iter().filter_map(|(_, key, n)| row_of(key, *n, shape).map(|row| (row, 1))).collect();
    if owner && counts.is_empty() {
        rows.extend(shape.default.clone().map(|row| (row, 1)));
    }
    out.give_snapshots(upto, &rows);
}
