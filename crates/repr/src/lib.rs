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
    let mut out: usize = 0;
    for i in 0..updates.len() {
        if out > 0 && updates[out - 1].0 == updates[i].0 {
            updates[out - 1].1 += updates[i].1;
        } else {
            if out > 0 && updates[out - 1].1 == 0 {
                out -= 1;
            }
            updates.swap(out, i);
            out += 1;
        }
    }
    if out > 0 && updates[out - 1].1 == 0 {
        out -= 1;
    }
    updates.truncate(out);
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
}
