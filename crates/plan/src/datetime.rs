//! Dates, timestamps and intervals: parsing their text forms, arithmetic, `date_trunc` and `extract`.

use viewcast_repr::{civil_from_days, days_from_civil, Datum, ScalarType};

use crate::expr::EvalError;

const DAY_US: i64 = 86_400_000_000;

/// Parses the text form of a `date`, `timestamp[tz]` or `interval`; `None` when it is malformed.
pub fn parse(text: &str, to: ScalarType) -> Option<Datum> {
    let t = text.trim();
    match to {
        ScalarType::Date => {
            let days = parse_date(t.get(..10)?)?;
            t.get(10..).filter(|rest| rest.is_empty()).map(|_| Datum::Date(days))
        }
        ScalarType::Timestamp | ScalarType::TimestampTz => {
            let days = parse_date(t.get(..10)?)? as i64;
            let rest = t.get(10..)?.trim_start_matches([' ', 'T']);
            let rest = rest.trim_end_matches('Z').trim_end_matches("+00:00").trim_end_matches("+00");
            let micros = if rest.is_empty() { 0 } else { parse_time(rest)? };
            Some(Datum::Timestamp(days * DAY_US + micros))
        }
        ScalarType::Interval => parse_interval(t),
        _ => None,
    }
}

fn parse_date(s: &str) -> Option<i32> {
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d)).ok()
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let next = if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) };
    (next - days_from_civil(y, m, 1)) as u32
}

/// `HH:MM[:SS[.ffffff]]` as microseconds.
fn parse_time(s: &str) -> Option<i64> {
    let mut it = s.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let secs: f64 = match it.next() {
        Some(x) => x.parse().ok()?,
        None => 0.0,
    };
    if it.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&m) || !(0.0..61.0).contains(&secs) {
        return None;
    }
    Some(h * 3_600_000_000 + m * 60_000_000 + (secs * 1e6).round() as i64)
}

/// `'1 day 2 hours'`, `'3 minutes'`, `'01:02:03'` and combinations.
fn parse_interval(s: &str) -> Option<Datum> {
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    let mut i = 0;
    while i < words.len() {
        if words[i].contains(':') {
            let (neg, t) = match words[i].strip_prefix('-') {
                Some(t) => (true, t),
                None => (false, words[i]),
            };
            let us = parse_time(t)?;
            micros += if neg { -us } else { us };
            i += 1;
            continue;
        }
        let n: f64 = words[i].parse().ok()?;
        let unit = words.get(i + 1)?.to_ascii_lowercase();
        let unit = unit.trim_end_matches('s');
        match unit {
            "year" | "yr" | "y" => months += (n * 12.0) as i64,
            "mon" | "month" => months += n as i64,
            "week" | "w" => days += (n * 7.0) as i64,
            "day" | "d" => days += n as i64,
            "hour" | "hr" | "h" => micros += (n * 3.6e9) as i64,
            "minute" | "min" | "m" => micros += (n * 6e7) as i64,
            "second" | "sec" => micros += (n * 1e6) as i64,
            "millisecond" | "ms" => micros += (n * 1e3) as i64,
            _ => return None,
        }
        i += 2;
    }
    Some(Datum::Interval { months: i32::try_from(months).ok()?, days: i32::try_from(days).ok()?, micros })
}

fn add_months(us: i64, months: i32) -> i64 {
    let days = us.div_euclid(DAY_US);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m as i64 - 1) + months as i64;
    let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY_US + us.rem_euclid(DAY_US)
}

/// `+`/`-` on date/time operands; `None` when neither side is a date/time value.
pub fn arith(add: bool, a: &Datum, b: &Datum) -> Option<Result<Datum, EvalError>> {
    let overflow = || EvalError::OutOfRange("timestamp".into());
    let shift = |us: i64, months: i32, days: i32, micros: i64| -> Result<i64, EvalError> {
        let sign = if add { 1 } else { -1 };
        let us = add_months(us, months * sign);
        us.checked_add((days as i64 * DAY_US + micros) * sign as i64).ok_or_else(overflow)
    };
    Some(match (a, b) {
        (Datum::Timestamp(t), Datum::Interval { months, days, micros }) => {
            shift(*t, *months, *days, *micros).map(Datum::Timestamp)
        }
        (Datum::Interval { months, days, micros }, Datum::Timestamp(t)) if add => {
            shift(*t, *months, *days, *micros).map(Datum::Timestamp)
        }
        (Datum::Date(d), Datum::Interval { months, days, micros }) => {
            shift(*d as i64 * DAY_US, *months, *days, *micros).map(Datum::Timestamp)
        }
        (Datum::Date(d), Datum::Int(n)) => {
            let n = if add { *n } else { -*n };
            i32::try_from(*d as i64 + n).map(Datum::Date).map_err(|_| EvalError::OutOfRange("date".into()))
        }
        (Datum::Date(x), Datum::Date(y)) if !add => Ok(Datum::Int(*x as i64 - *y as i64)),
        (Datum::Timestamp(x), Datum::Timestamp(y)) if !add => {
            let d = x - y;
            Ok(Datum::Interval { months: 0, days: (d / DAY_US) as i32, micros: d % DAY_US })
        }
        (
            Datum::Interval { months: m1, days: d1, micros: u1 },
            Datum::Interval { months: m2, days: d2, micros: u2 },
        ) => {
            let s = if add { 1 } else { -1 };
            Ok(Datum::Interval { months: m1 + s * m2, days: d1 + s * d2, micros: u1 + s as i64 * u2 })
        }
        _ => return None,
    })
}

fn micros_of(d: &Datum) -> Result<i64, EvalError> {
    match d {
        Datum::Timestamp(us) => Ok(*us),
        Datum::Date(days) => Ok(*days as i64 * DAY_US),
        other => Err(EvalError::Other(format!("expected a date or timestamp, got {other}"))),
    }
}

/// `date_trunc(unit, value)`.
pub fn date_trunc(unit: &str, value: &Datum) -> Result<Datum, EvalError> {
    let us = micros_of(value)?;
    let days = us.div_euclid(DAY_US);
    let (y, m, _) = civil_from_days(days);
    let floor = |step: i64| us.div_euclid(step) * step;
    let out = match unit.to_ascii_lowercase().as_str() {
        "microsecond" | "microseconds" => us,
        "millisecond" | "milliseconds" => floor(1_000),
        "second" | "seconds" => floor(1_000_000),
        "minute" | "minutes" => floor(60_000_000),
        "hour" | "hours" => floor(3_600_000_000),
        "day" | "days" => floor(DAY_US),
        // 1970-01-01 was a Thursday; ISO weeks start on Monday.
        "week" | "weeks" => (days - (days + 3).rem_euclid(7)) * DAY_US,
        "month" | "months" => days_from_civil(y, m, 1) * DAY_US,
        "quarter" => days_from_civil(y, (m - 1) / 3 * 3 + 1, 1) * DAY_US,
        "year" | "years" => days_from_civil(y, 1, 1) * DAY_US,
        "decade" => days_from_civil(y.div_euclid(10) * 10, 1, 1) * DAY_US,
        other => return Err(EvalError::Other(format!("unit \"{other}\" not recognized by date_trunc"))),
    };
    Ok(Datum::Timestamp(out))
}

/// `extract(field FROM value)` as `double precision`.
pub fn extract(field: &str, value: &Datum) -> Result<Datum, EvalError> {
    let us = micros_of(value)?;
    let days = us.div_euclid(DAY_US);
    let in_day = us.rem_euclid(DAY_US);
    let (y, m, d) = civil_from_days(days);
    let v = match field.to_ascii_lowercase().as_str() {
        "year" | "years" => y as f64,
        "month" | "months" => m as f64,
        "day" | "days" => d as f64,
        "hour" | "hours" => (in_day / 3_600_000_000) as f64,
        "minute" | "minutes" => (in_day / 60_000_000 % 60) as f64,
        "second" | "seconds" => (in_day % 60_000_000) as f64 / 1e6,
        "millisecond" | "milliseconds" => (in_day % 60_000_000) as f64 / 1e3,
        "microsecond" | "microseconds" => (in_day % 60_000_000) as f64,
        "epoch" => us as f64 / 1e6,
        "dow" => (days + 4).rem_euclid(7) as f64,
        "isodow" => ((days + 3).rem_euclid(7) + 1) as f64,
        "doy" => (days - days_from_civil(y, 1, 1) + 1) as f64,
        "quarter" => ((m - 1) / 3 + 1) as f64,
        "decade" => y.div_euclid(10) as f64,
        "century" => ((y - 1).div_euclid(100) + 1) as f64,
        other => return Err(EvalError::Other(format!("unit \"{other}\" not recognized by extract"))),
    };
    Ok(Datum::float(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trunc_extract() {
        let ts = parse("2024-03-15 13:45:30.5", ScalarType::Timestamp).unwrap();
        assert_eq!(ts.to_string(), "2024-03-15 13:45:30.5");
        assert_eq!(date_trunc("hour", &ts).unwrap().to_string(), "2024-03-15 13:00:00");
        assert_eq!(date_trunc("month", &ts).unwrap().to_string(), "2024-03-01 00:00:00");
        assert_eq!(date_trunc("week", &ts).unwrap().to_string(), "2024-03-11 00:00:00");
        assert_eq!(extract("year", &ts).unwrap(), Datum::float(2024.0));
        assert_eq!(extract("second", &ts).unwrap(), Datum::float(30.5));
        assert_eq!(extract("dow", &ts).unwrap(), Datum::float(5.0));
        assert!(parse("2024-02-30", ScalarType::Date).is_none());
        let iv = parse("1 day 2 hours", ScalarType::Interval).unwrap();
        let later = arith(true, &ts, &iv).unwrap().unwrap();
        assert_eq!(later.to_string(), "2024-03-16 15:45:30.5");
        let jan31 = parse("2024-01-31", ScalarType::Timestamp).unwrap();
        let month = parse("1 month", ScalarType::Interval).unwrap();
        assert_eq!(arith(true, &jan31, &month).unwrap().unwrap().to_string(), "2024-02-29 00:00:00");
    }
}
