//! Data representation shared by every stage: [`Datum`], [`Row`], [`ScalarType`], [`Timestamp`],
//! [`Diff`] and the JSON rendering of values used on every wire.
//!
//! Owns: how a SQL value is held in memory, ordered, hashed and printed.
//! Never touches: I/O, async, dataflow, parsing SQL.

mod datum;
mod json;
mod types;

pub use datum::{civil_from_days, days_from_civil, format_float, Datum, JsonDatum, JsonRow, Row};
pub use json::{Json, JsonArray, JsonNumber, JsonObject, JsonView, Jsonb, JsonbDocument, JsonbWriter};
pub use types::{ColumnType, RelationDesc, ScalarType};

/// Milliseconds since the Unix epoch, the one timeline every source, table and view shares.
pub type Timestamp = u64;

/// Multiplicity change of a row: `+n` inserts `n` copies, `-n` retracts `n` copies.
pub type Diff = i64;

/// One change to a relation: `row` gained `diff` copies at `time`.
pub type Update = (Row, Timestamp, Diff);

/// Sorts `updates` and merges equal rows, dropping those whose diffs cancel.
pub fn consolidate_updates(updates: &mut Vec<(Row, Diff)>) {
    updates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    merge_runs(updates, |a, b| a.0 == b.0, |u| &mut u.1);
}

/// Merges each run of adjacent `same` items into its first, summing their diffs, and drops the
/// items whose diffs sum to zero, in place.
fn merge_runs<T>(items: &mut Vec<T>, same: impl Fn(&T, &T) -> bool, diff: impl Fn(&mut T) -> &mut Diff) {
    let mut kept = 0;
    for i in 0..items.len() {
        if kept > 0 && same(&items[kept - 1], &items[i]) {
            let d = *diff(&mut items[i]);
            *diff(&mut items[kept - 1]) += d;
            continue;
        }
        if kept > 0 && *diff(&mut items[kept - 1]) == 0 {
            kept -= 1;
        }
        items.swap(kept, i);
        kept += 1;
    }
    if kept > 0 && *diff(&mut items[kept - 1]) == 0 {
        kept -= 1;
    }
    items.truncate(kept);
}

/// Merges updates of equal `(time, row)`, dropping those that cancel; sorted by time, then by a hash
/// of the row (rows are compared only on equal hashes, so a tick of thousands of wide rows that
/// share their first columns is not sorted by comparing strings). The order within a time is
/// deterministic but otherwise unspecified.
pub fn consolidate_timed(updates: &mut Vec<Update>) {
    // Sorts small keys that point into `updates`, then moves the updates into that order in place:
    // neither the sort nor a copy moves whole updates into a second buffer.
    let mut order: Vec<(Timestamp, u64, u32)> = updates
        .iter()
        .enumerate()
        .map(|(i, u)| (u.1, u.0.fx_hash(), u32::try_from(i).expect("fewer than 2^32 updates")))
        .collect();
    order.sort_unstable_by(|a, b| {
        (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| updates[a.2 as usize].0.cmp(&updates[b.2 as usize].0))
    });
    permute(updates, order.into_iter().map(|(_, _, i)| i as usize).collect());
    merge_runs(updates, |a, b| a.1 == b.1 && a.0 == b.0, |u| &mut u.2);
}

/// Reorders `items` so that position `i` holds what was at `from[i]` (`from` a permutation), by
/// following its cycles with swaps.
fn permute<T>(items: &mut [T], mut from: Vec<usize>) {
    for start in 0..items.len() {
        let mut cur = start;
        while from[cur] != start && from[cur] != cur {
            // Position `cur` holds what was at `start`; it wants what was at `from[cur]`.
            let src = from[cur];
            items.swap(cur, src);
            from[cur] = cur;
            cur = src;
        }
        from[cur] = cur;
    }
}

/// An error with its causes, `outer: inner: root`: clients such as reqwest and tokio-postgres
/// often say only "error sending request" or "error connecting to server" at the top.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidation_cancels_and_merges() {
        let r = |i: i64| Row::new(vec![Datum::Int(i)]);
        let mut u = vec![(r(2), 1), (r(1), 1), (r(2), -1), (r(1), 2), (r(3), -1), (r(3), 1), (r(4), 1)];
        consolidate_updates(&mut u);
        assert_eq!(u, vec![(r(1), 3), (r(4), 1)]);
        let mut empty: Vec<(Row, Diff)> = vec![(r(5), 1), (r(5), -1)];
        consolidate_updates(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn timed_consolidation_agrees_with_a_map_and_sorts_by_time() {
        let mut seed = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let n = next() % 60;
            let mut updates: Vec<Update> = (0..n)
                .map(|_| {
                    let row =
                        Row::new(vec![Datum::Int((next() % 5) as i64), Datum::text(["a", "b"][next() as usize % 2])]);
                    (row, next() % 4, (next() % 5) as i64 - 2)
                })
                .collect();
            let mut want: std::collections::BTreeMap<(Timestamp, Row), Diff> = Default::default();
            for (row, t, d) in &updates {
                *want.entry((*t, row.clone())).or_default() += d;
            }
            want.retain(|_, d| *d != 0);
            consolidate_timed(&mut updates);
            assert!(updates.windows(2).all(|w| w[0].1 <= w[1].1), "sorted by time");
            let got: std::collections::BTreeMap<(Timestamp, Row), Diff> =
                updates.iter().map(|(r, t, d)| ((*t, r.clone()), *d)).collect();
            assert_eq!(got.len(), updates.len(), "no (time, row) twice");
            assert_eq!(got, want);
        }
    }
}
