//! How a record's bytes (one line of a file, one webhook body) become rows: `FORMAT JSON`, `TEXT`
//! or `REGEX`. Pure and synchronous; the file and webhook sources share it.

use viewcast_repr::{Datum, JsonView, Jsonb, JsonbDocument, Row};

use crate::SourceError;

/// The decoding of one source's records.
#[derive(Clone, Debug)]
pub enum RecordFormat {
    /// Each record is one JSON document: one `data jsonb` column.
    Json,
    /// Each record is one `text text` column.
    Text,
    /// One nullable text column per named capture group, in the order the groups open. Records
    /// that do not match are skipped (counted, not errors).
    Regex(RegexFormat),
}

/// A compiled `FORMAT REGEX` pattern and the capture-group index of each output column.
#[derive(Clone, Debug)]
pub struct RegexFormat {
    regex: regex::Regex,
    groups: Vec<usize>,
}

/// What decoding one record produced.
#[derive(Debug)]
pub enum Decoded {
    Row(Row),
    /// Not an error and not a row: a blank line, or a line the pattern does not match.
    Skipped,
}

impl RecordFormat {
    /// Compiles a `FORMAT REGEX` pattern; it needs at least one named capture group.
    pub fn regex(pattern: &str) -> Result<RecordFormat, SourceError> {
        let regex = regex::Regex::new(pattern).map_err(|e| SourceError::config(format!("bad regex: {e}")))?;
        let groups: Vec<usize> = regex.capture_names().enumerate().filter_map(|(i, name)| name.map(|_| i)).collect();
        if groups.is_empty() {
            return Err(SourceError::config("FORMAT REGEX needs at least one named capture group (?P<name>...)"));
        }
        Ok(RecordFormat::Regex(RegexFormat { regex, groups }))
    }

    /// Columns of the rows this format produces.
    pub fn arity(&self) -> usize {
        match self {
            RecordFormat::Json | RecordFormat::Text => 1,
            RecordFormat::Regex(r) => r.groups.len(),
        }
    }

    /// Decodes one line (without its terminator; a trailing `\r` is ignored).
    pub fn decode_line(&self, line: &[u8]) -> Result<Decoded, SourceError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self {
            RecordFormat::Json => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Decoded::Skipped);
                }
                Ok(Decoded::Row(Row::new(vec![Datum::Jsonb(Jsonb::from_slice(line)?)])))
            }
            RecordFormat::Text => {
                let text = std::str::from_utf8(line).map_err(|_| SourceError::InvalidUtf8)?;
                Ok(Decoded::Row(Row::new(vec![Datum::text(text)])))
            }
            RecordFormat::Regex(r) => {
                let text = std::str::from_utf8(line).map_err(|_| SourceError::InvalidUtf8)?;
                Ok(match r.regex.captures(text) {
                    None => Decoded::Skipped,
                    Some(caps) => Decoded::Row(Row::new(
                        r.groups
                            .iter()
                            .map(|&g| caps.get(g).map_or(Datum::Null, |m| Datum::text(m.as_str())))
                            .collect(),
                    )),
                })
            }
        }
    }

    /// Decodes a whole request body, all or nothing: the first bad record fails the body.
    ///
    /// `JSON` takes one document (an array is one row per element), or several documents separated
    /// by whitespace (NDJSON: one row each). `TEXT` and `REGEX` take one record per line.
    pub fn decode_body(&self, body: &[u8]) -> Result<Vec<Row>, BodyError> {
        match self {
            RecordFormat::Json => decode_json_body(body),
            RecordFormat::Text | RecordFormat::Regex(_) => {
                let body = body.strip_suffix(b"\n").unwrap_or(body);
                let mut rows = Vec::new();
                if body.is_empty() {
                    return Ok(rows);
                }
                for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                    match self.decode_line(line) {
                        Ok(Decoded::Row(row)) => rows.push(row),
                        Ok(Decoded::Skipped) => {}
                        Err(error) => return Err(BodyError { record: i + 1, error }),
                    }
                }
                Ok(rows)
            }
        }
    }
}

/// Why a body was rejected: its `record`-th record (1-based) could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("record {record}: {error}")]
pub struct BodyError {
    pub record: usize,
    pub error: SourceError,
}

fn decode_json_body(body: &[u8]) -> Result<Vec<Row>, BodyError> {
    let mut values = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<JsonbDocument>();
    loop {
        match stream.next() {
            None => break,
            Some(Ok(JsonbDocument(v))) => values.push(v),
            Some(Err(e)) => return Err(BodyError { record: values.len() + 1, error: SourceError::Json(e) }),
        }
    }
    let row = |j: Jsonb| Row::new(vec![Datum::Jsonb(j)]);
    if let [only] = values.as_slice() {
        if let JsonView::Array(items) = only.json().view() {
            return Ok(items.iter().map(|item| row(Jsonb::from(item))).collect());
        }
    }
    Ok(values.into_iter().map(row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(format: &RecordFormat, body: &str) -> Vec<String> {
        format.decode_body(body.as_bytes()).unwrap().iter().map(|r| format!("{:?}", r.get(0))).collect()
    }

    #[test]
    fn json_bodies_object_array_ndjson() {
        let f = RecordFormat::Json;
        assert_eq!(rows(&f, r#"{"a":1}"#).len(), 1);
        assert_eq!(rows(&f, r#"[{"a":1},{"a":2},3]"#).len(), 3);
        assert_eq!(rows(&f, "{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n").len(), 3);
        assert_eq!(rows(&f, "").len(), 0);
        let e = f.decode_body(b"{\"a\":1}\n{\"a\":").unwrap_err();
        assert_eq!(e.record, 2);
        assert!(f.decode_body(b"{\"a\":\"\xFF\"}").is_err());
    }

    #[test]
    fn regex_lines_match_or_skip() {
        let f = RecordFormat::regex(r"^data: (?P<data>.*)").unwrap();
        assert_eq!(f.arity(), 1);
        assert!(matches!(f.decode_line(b"event: message").unwrap(), Decoded::Skipped));
        let Decoded::Row(r) = f.decode_line(b"data: {\"x\":1}\r").unwrap() else { panic!() };
        assert_eq!(r.get(0), &Datum::text("{\"x\":1}"));
        let f = RecordFormat::regex(r"(?P<a>\d+)(x(?P<b>\d+))?").unwrap();
        let Decoded::Row(r) = f.decode_line(b"12").unwrap() else { panic!() };
        assert_eq!((r.get(0), r.get(1)), (&Datum::text("12"), &Datum::Null));
        assert!(RecordFormat::regex("(a)").is_err());
        assert!(matches!(f.decode_line(b"\xFF1"), Err(SourceError::InvalidUtf8)));
    }

    #[test]
    fn json_lines_skip_blanks_and_reject_garbage() {
        let f = RecordFormat::Json;
        assert!(matches!(f.decode_line(b"  \r").unwrap(), Decoded::Skipped));
        assert!(matches!(f.decode_line(b"{\"a\":"), Err(SourceError::Json(_))));
    }
}
