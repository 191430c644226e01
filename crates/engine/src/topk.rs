//! Top-k per group as a timely operator: O(changes + k) work per timestamp and group touched.
//!
//! Updates are exchanged by a hash of the group key (all to one worker for a global top-k) and
//! stashed under their own time. Once the input frontier passes a time, its diffs are applied to an
//! ordered multiset per group and the group's window (ranks `offset .. offset + limit`) is diffed
//! against the window before: the old window's rows are retracted and the new window's inserted.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use viewcast_plan::relation::compare_rows;
use viewcast_plan::ColumnOrder;
use viewcast_repr::{consolidate_updates, Diff, Row, Timestamp};

use crate::render::Coll;

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

type Group = BTreeMap<SortKey, Diff>;

/// Updates waiting for the frontier to pass their time, with a capability to emit at that time.
type Stash = BTreeMap<Timestamp, (Capability<Timestamp>, Vec<(Row, Diff)>)>;

/// The rows of `group` at ranks `offset .. offset + limit`, with their multiplicity in the window.
fn window(group: &Group, offset: usize, limit: Option<usize>, out: &mut Vec<(Row, Diff)>, sign: Diff) {
    let mut skip = offset as i64;
    let mut take = limit.map(|l| l as i64).unwrap_or(i64::MAX);
    for (key, &count) in group {
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

fn hash_key(row: &Row, key: &[usize]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for &i in key {
        row.get(i).hash(&mut h);
    }
    h.finish()
}

pub(crate) fn render<'s>(
    input: Coll<'s>,
    group_key: Vec<usize>,
    order_key: Vec<ColumnOrder>,
    limit: Option<usize>,
    offset: usize,
) -> Coll<'s> {
    let order: Rc<[ColumnOrder]> = order_key.into();
    let key_for_exchange = group_key.clone();
    let exchange = Exchange::new(
        move |(row, _t, _d): &(Row, Timestamp, Diff)| {
            if key_for_exchange.is_empty() {
                0
            } else {
                hash_key(row, &key_for_exchange)
            }
        },
    );
    input
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(Row, Timestamp, Diff)>>, _, _, _>(
            exchange,
            "TopK",
            move |_cap, _info| {
                let mut stash: Stash = BTreeMap::new();
                let mut groups: HashMap<Row, Group> = HashMap::new();
                let mut touched: HashMap<Row, Vec<(Row, Diff)>> = HashMap::new();
                let mut out: Vec<(Row, Diff)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for (row, time, diff) in data.drain(..) {
                            let entry = stash.entry(time).or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
                            entry.1.push((row, diff));
                        }
                    });
                    while let Some(entry) = stash.first_entry() {
                        let time = *entry.key();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let (cap, updates) = entry.remove();
                        for (row, diff) in updates {
                            let key = Row::new(group_key.iter().map(|&i| row.get(i).clone()).collect());
                            touched.entry(key).or_default().push((row, diff));
                        }
                        out.clear();
                        for (key, mut changes) in touched.drain() {
                            consolidate_updates(&mut changes);
                            if changes.is_empty() {
                                continue;
                            }
                            let group = groups.entry(key.clone()).or_default();
                            window(group, offset, limit, &mut out, -1);
                            for (row, diff) in changes {
                                match group.entry(SortKey { row, order: order.clone() }) {
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
                            }
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
