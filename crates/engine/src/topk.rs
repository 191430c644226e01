//! Top-k per group as a timely operator: O(changes + k) work per timestamp and group touched.
//!
//! Updates are exchanged by a hash of the group key and stashed under their own time. A global
//! top-k with a limit on several workers runs in two stages: a local top `offset + limit` per
//! worker over rows spread by their hash, then the global one on worker 0 over the local windows'
//! changes. Once the input frontier passes a time, its diffs are consolidated
//! and applied to the group's state and the group's window (ranks `offset .. offset + limit`) is
//! diffed against the window before: the old window's rows are retracted and the new window's
//! inserted.
//!
//! A group with a limit keeps only its first rows ordered (`top`, a few times the window's size);
//! every other row sits unordered in `rest`, and every row of `rest` sorts after every row of `top`.
//! Most changes of a large group touch `rest` (one comparison and a hash lookup) instead of paying
//! for a search of an ordered map of the whole group. When `top` runs short of the window, the
//! smallest rows of `rest` are selected into it in one linear pass.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BinaryHeap};
use std::rc::Rc;

use differential_dataflow::AsCollection;
use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use smallvec::SmallVec;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use viewcast_plan::relation::{compare_datums, compare_rows};
use viewcast_plan::ColumnOrder;
use viewcast_repr::{consolidate_updates, Datum, Diff, Row, Timestamp};

use crate::render::{Coll, FxHashMap};

/// A row ordered by an `ORDER BY`, ties broken by the whole row.
struct SortKey {
    row: Row,
    order: Rc<[ColumnOrder]>,
}

impl PartialEq for SortKey {
    fn eq(&self, other: &Self) -> bool {
        self.row == other.row
    }
}
impl Eq for SortKey {}
impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_rows(&self.order, &self.row, &other.row)
    }
}

/// A row of a group's `rest`.
type RestRow = SmallVec<[Datum; 2]>;

/// One group's rows with their multiplicities (never zero).
#[derive(Default)]
struct Group {
    /// The group's first rows, ordered.
    top: BTreeMap<SortKey, Diff>,
    /// The other rows, each sorting after every row of `top`, with their multiplicities and
    /// hashes. Rows come and go as their counts change, so the table fills with tombstones and
    /// periodically rehashes in place; with the hashes kept that moves entries without hashing
    /// any row again (hashing 100,000 rows took 20-30 ms every 3.65 s at 50,000 events/s: the
    /// tick latency's p99). A row of up to two columns (a counted view's `(key, count)`) is held
    /// in its slot, so finding and comparing it reads no other memory.
    rest: HashTable<(u64, RestRow, Diff)>,
    /// Whether the time being applied has touched the group (its old window is already read).
    touched: bool,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.top.is_empty() && self.rest.is_empty()
    }

    /// Adds `diff` to `row`'s multiplicity; `cap` bounds `top`'s length. `row_hash` is how `rest`
    /// hashes rows (see [`RowHash`]).
    fn update(&mut self, row: Row, diff: Diff, order: &Rc<[ColumnOrder]>, cap: usize, row_hash: RowHash) {
        // One hash of the row for the common case, a row of `rest`.
        let rest_was_empty = self.rest.is_empty();
        let hash = row_hash.of(&row);
        match self.rest.entry(hash, |e| e.1.as_slice() == row.datums(), |e| e.0) {
            TableEntry::Occupied(mut o) => {
                o.get_mut().2 += diff;
                if o.get().2 == 0 {
                    o.remove();
                }
                return;
            }
            TableEntry::Vacant(v) => {
                let into_top = rest_was_empty
                    || self
                        .top
                        .last_key_value()
                        .is_some_and(|(last, _)| compare_rows(order, &row, &last.row) != Ordering::Greater);
                if !into_top {
                    v.insert((hash, RestRow::from_vec(row.0), diff));
                    return;
                }
            }
        }
        let key = SortKey { row, order: order.clone() };
        match self.top.entry(key) {
            Entry::Occupied(mut o) => {
                *o.get_mut() += diff;
                if *o.get() == 0 {
                    o.remove();
                }
            }
            Entry::Vacant(v) => {
                v.insert(diff);
            }
        }
        while self.top.len() > cap {
            let (key, n) = self.top.pop_last().expect("top is not empty");
            let hash = row_hash.of(&key.row);
            self.rest.insert_unique(hash, (hash, RestRow::from_vec(key.row.0), n), |e| e.0);
        }
    }

    /// Makes `top` hold at least `need` rows (counted with multiplicity) while `rest` has any.
    ///
    /// One pass over `rest` keeps the `take` smallest rows seen in a bounded heap of references;
    /// only those rows leave `rest`. (Draining all of `rest` and inserting back what was not taken
    /// re-hashed the whole group at every refill: 25-30 ms for a 70,000-row group, at one tick in
    /// twenty-five, which was the tick latency's p99.)
    fn refill(&mut self, need: usize, order: &Rc<[ColumnOrder]>, cap: usize) {
        loop {
            if self.rest.is_empty() {
                return;
            }
            let have: i64 = self.top.values().filter(|n| **n > 0).sum();
            if have >= need as i64 {
                return;
            }
            let take = cap.saturating_sub(self.top.len()).max(need).max(1);
            let chosen: Vec<(u64, RestRow)> = if self.rest.len() <= take {
                self.rest.iter().map(|e| (e.0, e.1.clone())).collect()
            } else {
                let mut heap: BinaryHeap<Ranked<'_>> = BinaryHeap::with_capacity(take + 1);
                for (hash, row, _) in self.rest.iter() {
                    let ranked = Ranked { hash: *hash, row, order };
                    if heap.len() < take {
                        heap.push(ranked);
                    } else if heap.peek().is_some_and(|worst| ranked < *worst) {
                        heap.pop();
                        heap.push(ranked);
                    }
                }
                heap.into_iter().map(|r| (r.hash, r.row.iter().cloned().collect())).collect()
            };
            for (hash, row) in chosen {
                let found = self.rest.find_entry(hash, |e| e.1 == row).expect("a row chosen from rest");
                let ((_, row, n), _) = found.remove();
                self.top.insert(SortKey { row: Row::new(row.into_vec()), order: order.clone() }, n);
            }
        }
    }
}

/// How a group's `rest` hashes its rows.
///
/// Over a counted view a row's key (its first columns) is in at most one row at a time, and a
/// count's change is its old row's retraction next to its new row's insertion. Hashed by the key,
/// the two land on the same slot of `rest`, so the insertion finds in cache what the retraction
/// just read: one random access into a table of 100,000 rows per change instead of two.
#[derive(Clone, Copy)]
enum RowHash {
    Whole,
    Key(usize),
}

impl RowHash {
    fn of(self, row: &Row) -> u64 {
        match self {
            RowHash::Whole => row.fx_hash(),
            RowHash::Key(k) => crate::count::key_hash(row, 0..k),
        }
    }
}

/// A borrowed row in `ORDER BY` order (ties broken by the whole row), for choosing rows of `rest`.
struct Ranked<'a> {
    hash: u64,
    row: &'a [Datum],
    order: &'a [ColumnOrder],
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.row == other.row
    }
}
impl Eq for Ranked<'_> {}
impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_datums(self.order, self.row, other.row)
    }
}

/// Updates waiting for the frontier to pass their time, with a capability to emit at that time.
type Stash = BTreeMap<Timestamp, (Capability<Timestamp>, Vec<(Row, Diff)>)>;

/// The rows of `group` at ranks `offset .. offset + limit`, with their multiplicity in the window.
fn window(group: &Group, offset: usize, limit: Option<usize>, out: &mut Vec<(Row, Diff)>, sign: Diff) {
    let mut skip = offset as i64;
    let mut take = limit.map(|l| l as i64).unwrap_or(i64::MAX);
    for (key, &count) in &group.top {
        if take <= 0 {
            break;
        }
        if count <= 0 {
            continue;
        }
        let mut n = count;
        if skip > 0 {
            let s = skip.min(n);
            skip -= s;
            n -= s;
        }
        let n = n.min(take);
        if n > 0 {
            take -= n;
            out.push((key.row.clone(), n * sign));
        }
    }
}

/// The top-k of `input`; `counted_key` is the key length when `input` is a counted view (its rows
/// start with the key they were counted by).
pub(crate) fn render<'s>(
    input: Coll<'s>,
    group_key: Vec<usize>,
    order_key: Vec<ColumnOrder>,
    limit: Option<usize>,
    offset: usize,
    counted_key: Option<usize>,
) -> Coll<'s> {
    let order: Rc<[ColumnOrder]> = order_key.into();
    let peers = input.inner.scope().peers();
    let hash = counted_key.map_or(RowHash::Whole, RowHash::Key);
    match limit {
        // A global top-k with a limit, on several workers: each worker first keeps the top
        // `offset + limit` of its share of the rows (rows spread by a hash of the whole row, so all
        // of one row's updates meet on one worker), and only the changes to those local windows
        // reach the worker that ranks them all. The global window is within the union of the
        // local ones: a row among the first `n` overall has fewer than `n` rows before it on its
        // own worker too. Without this every update went to worker 0, which did all the ranking
        // while the others idled (BENCHMARKS.md, "Ingest: two-stage top-k").
        Some(limit) if group_key.is_empty() && peers > 1 => {
            // Any function of the row will do; `rest`'s own hash is used. Over a counted view that
            // is the hash its count routed the key by, which leaves every row on the worker it is
            // already on.
            let spread = Exchange::new(move |(row, _t, _d): &(Row, Timestamp, Diff)| hash.of(row));
            let local = operator(input, spread, "TopKLocal", Vec::new(), order.clone(), Some(offset + limit), 0, hash);
            let global = Exchange::new(|_: &(Row, Timestamp, Diff)| 0);
            operator(local, global, "TopK", group_key, order, Some(limit), offset, hash)
        }
        _ => {
            // Each group to one worker (a global one, without a limit, to worker 0), by the hash
            // counts route keys by.
            let key_for_exchange = group_key.clone();
            let exchange = Exchange::new(move |(row, _t, _d): &(Row, Timestamp, Diff)| {
                crate::count::key_hash(row, key_for_exchange.iter().copied())
            });
            operator(input, exchange, "TopK", group_key, order, limit, offset, hash)
        }
    }
}

/// The top-k operator over rows routed by `pact`: the rows at ranks `offset .. offset + limit` of
/// each group, per worker.
#[allow(clippy::too_many_arguments)]
fn operator<'s, P>(
    input: Coll<'s>,
    pact: P,
    name: &str,
    group_key: Vec<usize>,
    order: Rc<[ColumnOrder]>,
    limit: Option<usize>,
    offset: usize,
    hash: RowHash,
) -> Coll<'s>
where
    P: timely::dataflow::channels::pact::ParallelizationContract<Timestamp, Vec<(Row, Timestamp, Diff)>>,
{
    // Without a limit every row is in the window, so every row is kept ordered.
    // Room beyond the window, so that the rows leaving `top` (a retracted row whose replacement
    // sorts into `rest`) call for a refill rarely.
    let top_cap = limit.map_or(usize::MAX, |l| 8 * (offset + l) + 64);
    let need = limit.map_or(usize::MAX, |l| offset + l);
    input
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(Row, Timestamp, Diff)>>, _, _, _>(
            pact,
            name,
            move |_cap, _info| {
                let mut stash: Stash = BTreeMap::new();
                // Emptied stash vectors, reused so a tick's updates do not regrow a fresh one.
                let mut spare: Vec<Vec<(Row, Diff)>> = Vec::new();
                let mut groups: FxHashMap<Row, Group> = FxHashMap::default();
                // The groups the time being applied has touched, in the order first touched.
                let mut touched: Vec<Row> = Vec::new();
                let mut out: Vec<(Row, Diff)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for (row, time, diff) in data.drain(..) {
                            let entry = stash
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), spare.pop().unwrap_or_default()));
                            entry.1.push((row, diff));
                        }
                    });
                    while let Some(entry) = stash.first_entry() {
                        let time = *entry.key();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let (cap, mut updates) = entry.remove();
                        out.clear();
                        // Each update is applied as it comes: a group is a multiset, so the order
                        // of a time's updates does not change its state once all are applied (a
                        // row may go negative in between; windows skip such rows). A group's old
                        // window is read when the time first touches it.
                        for (row, diff) in updates.drain(..) {
                            let key = Row::new(group_key.iter().map(|&i| row.get(i).clone()).collect());
                            let group = match groups.get_mut(&key) {
                                Some(group) if group.touched => group,
                                Some(group) => {
                                    window(group, offset, limit, &mut out, -1);
                                    group.touched = true;
                                    touched.push(key);
                                    group
                                }
                                None => {
                                    touched.push(key.clone());
                                    let group = groups.entry(key).or_default();
                                    group.touched = true;
                                    group
                                }
                            };
                            group.update(row, diff, &order, top_cap, hash);
                        }
                        spare.push(updates);
                        for key in touched.drain(..) {
                            let group = groups.get_mut(&key).expect("a touched group exists");
                            group.touched = false;
                            group.refill(need, &order, top_cap);
                            window(group, offset, limit, &mut out, 1);
                            if group.is_empty() {
                                groups.remove(&key);
                            }
                        }
                        consolidate_updates(&mut out);
                        if !out.is_empty() {
                            let mut session = output.session(&cap);
                            for (row, diff) in out.drain(..) {
                                session.give((row, time, diff));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use viewcast_plan::ColumnOrder;
    use viewcast_repr::{Datum, Row};

    use super::{window, Group, RowHash, SortKey};

    /// The two-tier group gives the same windows as one ordered map of every row, with `top`
    /// far smaller than the group so eviction and refills happen often. Each time's updates reach
    /// the group unconsolidated and in random order, as the operator applies them: a row may be
    /// retracted before it is inserted, or inserted and retracted within the time.
    #[test]
    fn group_windows_match_a_full_sort() {
        use rand::seq::SliceRandom;
        let order: Rc<[ColumnOrder]> = vec![ColumnOrder::desc(1)].into();
        let mut rng = StdRng::seed_from_u64(7);
        let cases = [(0, 2, 3), (1, 3, 5), (0, 1, 1), (2, 2, 9)];
        for ((offset, limit, cap), hash) in cases.into_iter().flat_map(|c| [(c, RowHash::Whole), (c, RowHash::Key(1))])
        {
            let need = offset + limit;
            let mut group = Group::default();
            let mut full: BTreeMap<SortKey, i64> = BTreeMap::new();
            for _ in 0..400 {
                let mut changes: BTreeMap<Row, i64> = BTreeMap::new();
                let mut raw: Vec<(Row, i64)> = Vec::new();
                for _ in 0..rng.gen_range(1..6) {
                    let row = Row::new(vec![Datum::Int(rng.gen_range(0..30)), Datum::Int(rng.gen_range(0..8))]);
                    let present = full.get(&SortKey { row: row.clone(), order: order.clone() }).copied().unwrap_or(0)
                        + changes.get(&row).copied().unwrap_or(0);
                    let diff = if present > 0 && rng.gen_bool(0.5) { -1 } else { rng.gen_range(1..3) };
                    *changes.entry(row.clone()).or_insert(0) += diff;
                    raw.push((row.clone(), diff));
                    if rng.gen_bool(0.2) {
                        // A row that comes and goes within the time.
                        raw.push((row.clone(), 1));
                        raw.push((row, -1));
                    }
                }
                raw.shuffle(&mut rng);
                for (row, diff) in raw {
                    group.update(row, diff, &order, cap, hash);
                }
                for (row, diff) in changes {
                    if diff == 0 {
                        continue;
                    }
                    let n = full.entry(SortKey { row: row.clone(), order: order.clone() }).or_insert(0);
                    *n += diff;
                    if *n == 0 {
                        full.remove(&SortKey { row: row.clone(), order: order.clone() });
                    }
                }
                group.refill(need, &order, cap);
                let mut got = Vec::new();
                window(&group, offset, Some(limit), &mut got, 1);
                let all = Group { top: std::mem::take(&mut full), rest: Default::default(), touched: false };
                let mut want = Vec::new();
                window(&all, offset, Some(limit), &mut want, 1);
                full = all.top;
                assert_eq!(got, want);
            }
        }
    }
}
