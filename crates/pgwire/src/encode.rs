//! Values to bytes: Postgres text and binary formats, and the backend messages sent per row
//! (`DataRow`, `CopyData`), written straight into the connection's output buffer.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use viewcast_repr::{Datum, RelationDesc, Row, ScalarType};

/// Days from 1970-01-01 to 2000-01-01, the Postgres binary epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// The wire format of one result column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Binary,
}

impl Format {
    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }

    /// Formats per column from a Bind message's result format codes (none: text; one: all).
    pub fn per_column(codes: &[i16], columns: usize) -> Vec<Format> {
        let f = |c: i16| if c == 1 { Format::Binary } else { Format::Text };
        match codes {
            [] => vec![Format::Text; columns],
            [one] => vec![f(*one); columns],
            many => (0..columns).map(|i| many.get(i).copied().map_or(Format::Text, f)).collect(),
        }
    }
}

/// Writes a value's Postgres text form.
pub fn text(d: &Datum, out: &mut BytesMut) {
    match d {
        Datum::Text(s) => out.put_slice(s.as_bytes()),
        Datum::Int(i) => {
            let _ = write!(out, "{i}");
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Writes a value's Postgres binary form for a column of type `ty`.
pub fn binary(d: &Datum, ty: ScalarType, out: &mut BytesMut) {
    match (ty, d) {
        (ScalarType::Bool, Datum::Bool(b)) => out.put_u8(u8::from(*b)),
        (ScalarType::Int16, Datum::Int(i)) => out.put_i16(*i as i16),
        (ScalarType::Int32, Datum::Int(i)) => out.put_i32(*i as i32),
        (ScalarType::Int64, Datum::Int(i)) => out.put_i64(*i),
        (ScalarType::Float32, Datum::Float(f)) => out.put_f32(f.0 as f32),
        (ScalarType::Float64, Datum::Float(f)) => out.put_f64(f.0),
        (ScalarType::Float32, Datum::Int(i)) => out.put_f32(*i as f32),
        (ScalarType::Float64, Datum::Int(i)) => out.put_f64(*i as f64),
        (ScalarType::Numeric, Datum::Int(i)) => numeric(&i.to_string(), out),
        (ScalarType::Numeric, Datum::Float(f)) => {
            if f.0.is_finite() {
                numeric(&format!("{}", f.0), out)
            } else {
                numeric("NaN", out)
            }
        }
        (ScalarType::Jsonb, d) => {
            out.put_u8(1);
            text(d, out);
        }
        (ScalarType::Date, Datum::Date(days)) => out.put_i32((*days as i64 - PG_EPOCH_DAYS) as i32),
        (ScalarType::Timestamp | ScalarType::TimestampTz, Datum::Timestamp(us)) => out.put_i64(us - PG_EPOCH_MICROS),
        (ScalarType::Interval, Datum::Interval { months, days, micros }) => {
            out.put_i64(*micros);
            out.put_i32(*days);
            out.put_i32(*months);
        }
        // Text and anything without a dedicated form: the text bytes (binary `text` is UTF-8).
        (_, d) => text(d, out),
    }
}

/// Postgres binary `numeric` from a plain decimal string (`-12.5`, `NaN`).
fn numeric(s: &str, out: &mut BytesMut) {
    if s == "NaN" {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(0xC000);
        out.put_i16(0);
        return;
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (ip, fp) = s.split_once('.').unwrap_or((s, ""));
    let ip = ip.trim_start_matches('0');
    let dscale = fp.len() as i16;
    let mut digits: Vec<i16> = Vec::new();
    let lead = (4 - ip.len() % 4) % 4;
    let ip_padded: String = "0".repeat(lead) + ip;
    for c in ip_padded.as_bytes().chunks(4) {
        digits.push(std::str::from_utf8(c).unwrap_or("0").parse().unwrap_or(0));
    }
    let mut weight = digits.len() as i16 - 1;
    let trail = (4 - fp.len() % 4) % 4;
    let fp_padded: String = fp.to_string() + &"0".repeat(trail);
    for c in fp_padded.as_bytes().chunks(4) {
        digits.push(std::str::from_utf8(c).unwrap_or("0").parse().unwrap_or(0));
    }
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    out.put_i16(digits.len() as i16);
    out.put_i16(weight);
    out.put_u16(if neg && !digits.is_empty() { 0x4000 } else { 0 });
    out.put_i16(dscale);
    for d in digits {
        out.put_i16(d);
    }
}

/// Appends one `DataRow` message.
pub fn data_row(row: &Row, desc: &RelationDesc, formats: &[Format], out: &mut BytesMut) {
    out.put_u8(b'D');
    let len_at = out.len();
    out.put_i32(0);
    out.put_i16(row.len() as i16);
    for (i, d) in row.datums().iter().enumerate() {
        if d.is_null() {
            out.put_i32(-1);
            continue;
        }
        let at = out.len();
        out.put_i32(0);
        match formats.get(i).copied().unwrap_or(Format::Text) {
            Format::Text => text(d, out),
            Format::Binary => binary(d, desc.types.get(i).map_or(ScalarType::Text, |t| t.scalar), out),
        }
        let n = (out.len() - at - 4) as i32;
        out[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }
    let n = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&n.to_be_bytes());
}

/// Appends one `CopyData` message holding a row in COPY's text format (tab-separated, `\N` for NULL).
pub fn copy_row(row: &Row, out: &mut BytesMut) {
    out.put_u8(b'd');
    let len_at = out.len();
    out.put_i32(0);
    for (i, d) in row.datums().iter().enumerate() {
        if i > 0 {
            out.put_u8(b'\t');
        }
        match d {
            Datum::Null => out.put_slice(b"\\N"),
            Datum::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Datum::Text(s) => copy_escape(s, out),
            other => copy_escape(&other.to_string(), out),
        }
    }
    out.put_u8(b'\n');
    let n = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&n.to_be_bytes());
}

fn copy_escape(s: &str, out: &mut BytesMut) {
    if !s.bytes().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.put_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b => out.put_u8(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        numeric(s, &mut b);
        b.to_vec()
    }

    #[test]
    fn numeric_binary_matches_postgres() {
        // 1764180000050 = 1,7641,8000,0050 in base 10000: ndigits 4, weight 3.
        assert_eq!(num("1764180000050"), vec![0, 4, 0, 3, 0, 0, 0, 0, 0, 1, 0x1d, 0xd9, 0x1f, 0x40, 0, 50]);
        assert_eq!(num("0"), vec![0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(num("-1.5"), vec![0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88]);
    }

    #[test]
    fn copy_text_escapes() {
        let mut b = BytesMut::new();
        copy_row(&Row::new(vec![Datum::Int(1), Datum::Null, Datum::text("a\tb\\")]), &mut b);
        assert_eq!(&b[5..], b"1\t\\N\ta\\tb\\\\\n");
    }
}
