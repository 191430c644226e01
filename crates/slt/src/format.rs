//! How result values are printed and compared, as SQLite's sqllogictest harness prints them.
//!
//! The corpus's expected results were produced by SQLite's C harness: one value per line, `NULL`
//! for SQL NULL, `(empty)` for the empty string, integers (`I`) printed whole, reals (`R`) with
//! three decimals, and results with more values than the hash threshold replaced by
//! `N values hashing to <md5>` (the MD5 of every value followed by a newline, after sorting).

use md5::{Digest, Md5};
use sqllogictest::SortMode;
use viewcast_repr::{Datum, Row};

/// Prints one value for a column of type letter `ty` (`I`, `R`, anything else is text).
pub fn format_value(d: &Datum, ty: char) -> String {
    if d.is_null() {
        return "NULL".to_string();
    }
    match ty {
        'I' => match d {
            Datum::Int(i) => i.to_string(),
            // SQLite's `sqlite3_column_int64` truncates reals toward zero.
            Datum::Float(f) if f.0.is_finite() => (f.0.trunc() as i64).to_string(),
            Datum::Bool(b) => i64::from(*b).to_string(),
            Datum::Text(t) => leading_integer(t).to_string(),
            other => other.to_string(),
        },
        'R' => match d {
            Datum::Int(i) => format!("{:.3}", *i as f64),
            Datum::Float(f) => format!("{:.3}", f.0),
            Datum::Bool(b) => format!("{:.3}", f64::from(u8::from(*b))),
            Datum::Text(t) => format!("{:.3}", t.trim().parse::<f64>().unwrap_or(0.0)),
            other => other.to_string(),
        },
        _ => match d {
            Datum::Text(t) if t.is_empty() => "(empty)".to_string(),
            // The harness replaces unprintable characters so every value fits on one line.
            Datum::Text(t) => t.chars().map(|c| if (' '..='~').contains(&c) { c } else { '@' }).collect(),
            Datum::Bool(b) => i64::from(*b).to_string(),
            // SQLite prints a real that happens to be whole with a trailing `.0`.
            Datum::Float(f) if f.0.is_finite() && f.0 == f.0.trunc() && f.0.abs() < 1e15 => format!("{:.1}", f.0),
            other => other.to_string(),
        },
    }
}

/// The integer prefix of a text value, as SQLite converts text to an integer (0 when none).
fn leading_integer(t: &str) -> i64 {
    let t = t.trim_start();
    let end = t
        .char_indices()
        .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && (*c == '-' || *c == '+')))
        .map(|(i, c)| i + c.len_utf8())
        .last()
        .unwrap_or(0);
    t[..end].parse().unwrap_or(0)
}

/// Formats rows as lists of printed values, one list per row.
pub fn format_rows(rows: &[Row], types: &[char]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            r.datums().iter().enumerate().map(|(i, d)| format_value(d, types.get(i).copied().unwrap_or('T'))).collect()
        })
        .collect()
}

/// The flat list of values the harness compares, sorted as `sort` asks.
pub fn flatten(mut rows: Vec<Vec<String>>, sort: SortMode) -> Vec<String> {
    match sort {
        SortMode::NoSort => rows.into_iter().flatten().collect(),
        SortMode::RowSort => {
            rows.sort();
            rows.into_iter().flatten().collect()
        }
        SortMode::ValueSort => {
            let mut values: Vec<String> = rows.into_iter().flatten().collect();
            values.sort();
            values
        }
    }
}

/// `N values hashing to <md5>`, as the harness abbreviates long results.
pub fn hash_values(values: &[String]) -> String {
    let mut md5 = Md5::new();
    for v in values {
        md5.update(v.as_bytes());
        md5.update(b"\n");
    }
    let digest: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{} values hashing to {digest}", values.len())
}

/// Whether `values` (already sorted) match the expected lines: a hash line, one value per line,
/// or (some files) one row per line with values separated by spaces.
pub fn matches_expected(values: &[String], columns: usize, expected: &[String]) -> bool {
    if let [line] = expected {
        if line.contains(" values hashing to ") {
            return hash_values(values) == line.trim();
        }
    }
    if expected.len() == values.len() {
        return expected.iter().zip(values).all(|(e, v)| e.trim_end() == v);
    }
    let columns = columns.max(1);
    values.len() == expected.len() * columns
        && values.chunks(columns).zip(expected).all(|(row, e)| row.join(" ") == e.trim_end())
}

/// What a result prints as, for failure reports (long results abbreviated by their hash).
pub fn describe(values: &[String]) -> String {
    if values.len() > 16 {
        hash_values(values)
    } else {
        values.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_sqlite_harness_prints_them() {
        assert_eq!(format_value(&Datum::Null, 'I'), "NULL");
        assert_eq!(format_value(&Datum::text(""), 'T'), "(empty)");
        assert_eq!(format_value(&Datum::float(2.5), 'R'), "2.500");
        assert_eq!(format_value(&Datum::Int(-3), 'R'), "-3.000");
        assert_eq!(format_value(&Datum::float(-2.7), 'I'), "-2");
        assert_eq!(format_value(&Datum::Bool(true), 'I'), "1");
        assert_eq!(format_value(&Datum::text("12abc"), 'I'), "12");
        assert_eq!(format_value(&Datum::text("a\tb"), 'T'), "a@b");
    }

    #[test]
    fn hashes_match_the_corpus() {
        // From random/select: `SELECT ALL * FROM tab0` style results hash their sorted values.
        let values: Vec<String> = ["1", "2", "3"].iter().map(|s| s.to_string()).collect();
        let h = hash_values(&values);
        assert!(h.starts_with("3 values hashing to "), "{h}");
        assert!(matches_expected(&values, 1, std::slice::from_ref(&h)));
        assert!(matches_expected(&values, 3, &["1 2 3".to_string()]));
        assert!(!matches_expected(&values, 1, &["1".into(), "2".into(), "4".into()]));
    }
}
