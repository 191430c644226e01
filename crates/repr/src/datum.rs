use std::fmt;

use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

use crate::json::Jsonb;
use smol_str::SmolStr;

/// One SQL value.
///
/// The derived order is a total order used for consolidation and arrangements (`Null` first);
/// SQL's `ORDER BY` order (NULLs last ascending) is applied by the sort keys of plans, not here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Datum {
    Null,
    Bool(bool),
    /// `smallint`, `integer` and `bigint` values; the column type says which.
    Int(i64),
    /// `real`, `double precision` and (for now) `numeric` values.
    Float(OrderedFloat<f64>),
    /// Text. Most text a dashboard's views carry is short (user and wiki names, change types):
    /// up to 23 bytes is held inside the value, so extracting, cloning, hashing and comparing it
    /// allocates nothing and follows no pointer, and `Datum` stays 24 bytes; longer text is an
    /// `Arc<str>`. Equality, order and hash are the string's (`SmolStr`'s are `str`'s).
    Text(SmolStr),
    Jsonb(Jsonb),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00:00 (UTC for `timestamptz`).
    Timestamp(i64),
    /// Months, days and microseconds, kept apart as Postgres keeps them.
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
}

impl Datum {
    pub fn text(s: &str) -> Datum {
        Datum::Text(SmolStr::new(s))
    }

    pub fn float(f: f64) -> Datum {
        Datum::Float(OrderedFloat(f))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// The value as JSON, the shape every stream and the HTTP API send.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Datum::Null => Value::Null,
            Datum::Bool(b) => Value::Bool(*b),
            Datum::Int(i) => Value::from(*i),
            Datum::Float(f) => {
                serde_json::Number::from_f64(f.0).map(Value::Number).unwrap_or_else(|| Value::String(format_float(f.0)))
            }
            Datum::Text(s) => Value::String(s.to_string()),
            Datum::Jsonb(j) => j.to_value(),
            other => Value::String(other.to_string()),
        }
    }
}

/// Formats a float as Postgres prints `double precision`.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if f == f.trunc() && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        let s = format!("{f}");
        if s.len() > 17 {
            format!("{f:e}")
        } else {
            s
        }
    }
}

/// The Postgres text form of a value (`NULL` prints as the empty string only where a caller says so).
impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Null => write!(f, "NULL"),
            Datum::Bool(b) => write!(f, "{}", if *b { "t" } else { "f" }),
            Datum::Int(i) => write!(f, "{i}"),
            Datum::Float(x) => write!(f, "{}", format_float(x.0)),
            Datum::Text(s) => write!(f, "{s}"),
            Datum::Jsonb(j) => write!(f, "{j}"),
            Datum::Date(d) => crate::datum::fmt_date(*d, f),
            Datum::Timestamp(us) => {
                let days = us.div_euclid(86_400_000_000);
                let rem = us.rem_euclid(86_400_000_000);
                fmt_date(days as i32, f)?;
                let secs = rem / 1_000_000;
                let micros = rem % 1_000_000;
                write!(f, " {:02}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60)?;
                if micros != 0 {
                    let frac = format!("{micros:06}");
                    write!(f, ".{}", frac.trim_end_matches('0'))?;
                }
                Ok(())
            }
            Datum::Interval { months, days, micros } => {
                let mut parts = Vec::new();
                if *months != 0 {
                    let (y, m) = (months / 12, months % 12);
                    if y != 0 {
                        parts.push(format!("{y} year{}", if y.abs() == 1 { "" } else { "s" }));
                    }
                    if m != 0 {
                        parts.push(format!("{m} mon{}", if m.abs() == 1 { "" } else { "s" }));
                    }
                }
                if *days != 0 {
                    parts.push(format!("{days} day{}", if days.abs() == 1 { "" } else { "s" }));
                }
                if *micros != 0 || parts.is_empty() {
                    let sign = if *micros < 0 { "-" } else { "" };
                    let m = micros.unsigned_abs();
                    let secs = m / 1_000_000;
                    let frac = m % 1_000_000;
                    let mut s = format!("{sign}{:02}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60);
                    if frac != 0 {
                        s.push_str(format!(".{frac:06}").trim_end_matches('0'));
                    }
                    parts.push(s);
                }
                write!(f, "{}", parts.join(" "))
            }
        }
    }
}

/// Writes a day count since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian).
pub(crate) fn fmt_date(days: i32, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let (y, m, d) = civil_from_days(days as i64);
    write!(f, "{y:04}-{m:02}-{d:02}")
}

/// Converts days since 1970-01-01 to (year, month, day); Howard Hinnant's civil calendar algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Converts (year, month, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A tuple of values, one per column.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row(pub Vec<Datum>);

impl Row {
    pub fn new(datums: Vec<Datum>) -> Row {
        Row(datums)
    }

    /// A fast hash of the whole row (FxHash), the same in every process: what consolidation sorts
    /// by and what tables that keep a row's hash beside it store.
    pub fn fx_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        self.hash(&mut h);
        h.finish()
    }

    pub fn datums(&self) -> &[Datum] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, i: usize) -> &Datum {
        &self.0[i]
    }

    /// The row as a JSON array, values in column order.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.0.iter().map(Datum::to_json).collect())
    }
}

impl From<Vec<Datum>> for Row {
    fn from(v: Vec<Datum>) -> Row {
        Row(v)
    }
}

/// Serializes a row as its JSON array without building a `serde_json::Value`.
pub struct JsonRow<'a>(pub &'a Row);

impl Serialize for JsonRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for d in self.0.datums() {
            seq.serialize_element(&JsonDatum(d))?;
        }
        seq.end()
    }
}

/// Serializes one value in its JSON wire form.
pub struct JsonDatum<'a>(pub &'a Datum);

impl Serialize for JsonDatum<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Datum::Null => s.serialize_unit(),
            Datum::Bool(b) => s.serialize_bool(*b),
            Datum::Int(i) => s.serialize_i64(*i),
            Datum::Float(f) if f.0.is_finite() => s.serialize_f64(f.0),
            Datum::Text(t) => s.serialize_str(t),
            Datum::Jsonb(j) => j.json().serialize(s),
            other => s.collect_str(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text datums, inline (up to 23 bytes) or shared, behave as the strings they hold: equality,
    /// order (consolidation and arrangements sort by it), hash (exchange routes by it, in every
    /// process alike), `Debug`, JSON; and a `Datum` stays three words.
    #[test]
    fn text_behaves_as_its_str_inline_or_not() {
        use std::hash::BuildHasher;
        assert_eq!(std::mem::size_of::<Datum>(), 24);
        let texts: Vec<String> = vec![
            String::new(),
            "enwiki".into(),
            "ß€😀".into(),
            "x".repeat(22),
            "x".repeat(23),
            "x".repeat(24),
            format!("{}é", "y".repeat(22)),
            "a much longer title of a Wikipedia page".into(),
            "zzzzz\u{0}".into(),
        ];
        let hasher = std::collections::hash_map::RandomState::new();
        for a in &texts {
            let Datum::Text(s) = Datum::text(a) else { unreachable!() };
            assert_eq!(s.as_str(), a);
            assert_eq!(s.is_heap_allocated(), a.len() > 23, "{a:?}");
            assert_eq!(hasher.hash_one(&s), hasher.hash_one(a.as_str()), "the hash is str's");
            assert_eq!(format!("{s:?}"), format!("{a:?}"));
            let json = serde_json::to_string(&Datum::text(a)).unwrap();
            assert_eq!(serde_json::from_str::<Datum>(&json).unwrap(), Datum::text(a));
            for b in &texts {
                assert_eq!(Datum::text(a) == Datum::text(b), a == b);
                assert_eq!(Datum::text(a).cmp(&Datum::text(b)), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 59, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
    }

    #[test]
    fn json_row_matches_value() {
        let row = Row::new(vec![Datum::Null, Datum::Int(3), Datum::text("a\"b"), Datum::float(1.5), Datum::Bool(true)]);
        let fast = serde_json::to_string(&JsonRow(&row)).unwrap();
        assert_eq!(fast, row.to_json().to_string());
    }
}
