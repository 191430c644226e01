//! Decoding `COPY (SUBSCRIBE ...) TO STDOUT` output: Postgres's COPY text format, one row per
//! line, then Materialize's SUBSCRIBE columns (`mz_timestamp`, `mz_progressed`, `mz_diff`, the
//! view's columns) into typed values.

use tokio_postgres::types::Type;
use viewcast_repr::{Datum, Diff, Row, ScalarType, Timestamp};

use crate::UpstreamError;

/// One decoded SUBSCRIBE row.
#[derive(Debug, PartialEq)]
pub(crate) enum SubscribeRow {
    /// `mz_progressed = true`: no later row has a timestamp below `ts`.
    Progress(Timestamp),
    Data {
        ts: Timestamp,
        diff: Diff,
        row: Row,
    },
}

/// The viewcast type a Postgres (or Materialize) column type maps to. Types without a
/// counterpart (uuid, arrays, Materialize's `uint8`, `list`, `map`...) become `text`, keeping the
/// upstream's text form of each value.
pub fn scalar_type_of(ty: &Type) -> ScalarType {
    match *ty {
        Type::BOOL => ScalarType::Bool,
        Type::INT2 => ScalarType::Int16,
        Type::INT4 => ScalarType::Int32,
        Type::INT8 => ScalarType::Int64,
        Type::FLOAT4 => ScalarType::Float32,
        Type::FLOAT8 => ScalarType::Float64,
        Type::NUMERIC => ScalarType::Numeric,
        Type::JSON | Type::JSONB => ScalarType::Jsonb,
        Type::DATE => ScalarType::Date,
        Type::TIMESTAMP => ScalarType::Timestamp,
        Type::TIMESTAMPTZ => ScalarType::TimestampTz,
        Type::INTERVAL => ScalarType::Interval,
        _ => ScalarType::Text,
    }
}

/// Splits one COPY text line (without its newline) into fields, undoing the format's escapes;
/// `None` is SQL NULL (`\N`).
pub(crate) fn split_fields(line: &[u8]) -> Result<Vec<Option<String>>, UpstreamError> {
    let bad = |why: &str| UpstreamError::Protocol(format!("{why} in COPY line {:?}", String::from_utf8_lossy(line)));
    let mut fields = Vec::new();
    for raw in line.split(|b| *b == b'\t') {
        if raw == b"\\N" {
            fields.push(None);
            continue;
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            i += 1;
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let Some(&e) = raw.get(i) else { return Err(bad("trailing backslash")) };
            i += 1;
            match e {
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'0'..=b'7' => {
                    let mut v = (e - b'0') as u32;
                    for _ in 0..2 {
                        match raw.get(i) {
                            Some(d @ b'0'..=b'7') => {
                                v = v * 8 + (d - b'0') as u32;
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push(v as u8);
                }
                b'x' => {
                    let mut v = 0u32;
                    let mut n = 0;
                    while n < 2 {
                        match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                            Some(d) => {
                                v = v * 16 + d;
                                i += 1;
                                n += 1;
                            }
                            None => break,
                        }
                    }
                    if n == 0 {
                        out.push(b'x');
                    } else {
                        out.push(v as u8);
                    }
                }
                other => out.push(other),
            }
        }
        fields.push(Some(String::from_utf8(out).map_err(|_| bad("invalid UTF-8"))?));
    }
    Ok(fields)
}

/// Decodes one SUBSCRIBE ... WITH (PROGRESS) row whose view columns have `types`. Values are
/// parsed with the SQL engine's own text input (`viewcast_plan::expr::cast` from text), the same
/// rules as `CAST('...' AS type)`.
pub(crate) fn decode_row(line: &[u8], types: &[ScalarType]) -> Result<SubscribeRow, UpstreamError> {
    let fields = split_fields(line)?;
    let bad = |why: String| UpstreamError::Protocol(format!("{why}: {:?}", String::from_utf8_lossy(line)));
    if fields.len() != 3 + types.len() {
        return Err(bad(format!("expected {} columns, got {}", 3 + types.len(), fields.len())));
    }
    let ts_text = fields[0].as_deref().ok_or_else(|| bad("NULL mz_timestamp".into()))?;
    // Materialize prints mz_timestamp as a numeric without a fraction; tolerate a zero one.
    let ts: Timestamp = ts_text
        .strip_suffix(".0")
        .unwrap_or(ts_text)
        .parse()
        .map_err(|_| bad(format!("mz_timestamp {ts_text:?} is not an integer")))?;
    let progressed = matches!(fields[1].as_deref(), Some("t" | "true"));
    if progressed {
        return Ok(SubscribeRow::Progress(ts));
    }
    let diff: Diff = fields[2]
        .as_deref()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad(format!("mz_diff {:?} is not an integer", fields[2])))?;
    let mut datums = Vec::with_capacity(types.len());
    for (field, ty) in fields.into_iter().skip(3).zip(types) {
        datums.push(match field {
            None => Datum::Null,
            Some(text) if *ty == ScalarType::Text => Datum::text(&text),
            Some(text) => viewcast_plan::expr::cast(Datum::text(&text), *ty)
                .map_err(|e| bad(format!("value {text:?} of type {}: {e}", ty.name())))?,
        });
    }
    Ok(SubscribeRow::Data { ts, diff, row: Row::new(datums) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_unescape_and_nulls() {
        let f = split_fields(b"1\\tx\t\\N\ta\\\\b\\nc\t\\101\\x42").unwrap();
        assert_eq!(f, vec![Some("1\tx".to_string()), None, Some("a\\b\nc".to_string()), Some("AB".to_string())]);
        assert!(split_fields(b"abc\\").is_err());
    }

    #[test]
    fn rows_decode_to_typed_values() {
        let types = [ScalarType::Int64, ScalarType::Text, ScalarType::Jsonb, ScalarType::Float64, ScalarType::Bool];
        let row = decode_row(b"1700000000123\tf\t-2\t42\tBob\\tSmith\t{\"a\": [1]}\t1.5\tt", &types).unwrap();
        let SubscribeRow::Data { ts, diff, row } = row else { panic!("data row") };
        assert_eq!((ts, diff), (1700000000123, -2));
        assert_eq!(row.get(0), &Datum::Int(42));
        assert_eq!(row.get(1), &Datum::text("Bob\tSmith"));
        assert_eq!(row.get(2).to_json(), serde_json_value(r#"{"a":[1]}"#));
        assert_eq!(row.get(3), &Datum::float(1.5));
        assert_eq!(row.get(4), &Datum::Bool(true));
        assert_eq!(decode_row(b"17\tt\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N", &types).unwrap(), SubscribeRow::Progress(17));
        assert!(decode_row(b"17\tf\t1\t1", &types).is_err(), "wrong column count");
        assert!(decode_row(b"x\tf\t1\t1\ta\t1\t1\tt", &types).is_err(), "bad timestamp");
        assert!(decode_row(b"1\tf\t1\tnope\ta\t1\t1\tt", &types).is_err(), "bad integer");
    }

    fn serde_json_value(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }
}
