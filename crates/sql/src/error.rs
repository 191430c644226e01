//! The one error type of the SQL front end.

use sqlparser::tokenizer::Location;

/// A SQL error as a Postgres client expects it: message, SQLSTATE and where in the text it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    pub message: String,
    /// The SQLSTATE code, e.g. `42703` for an undefined column.
    pub code: &'static str,
    /// 1-based character offset into the query text, as Postgres reports `position`.
    pub position: Option<usize>,
}

/// SQLSTATE codes used by the front end.
pub mod code {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const GROUPING_ERROR: &str = "42803";
    pub const INVALID_COLUMN_REFERENCE: &str = "42P10";
    pub const DUPLICATE_ALIAS: &str = "42712";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const WRONG_OBJECT_TYPE: &str = "42809";
}

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> SqlError {
        SqlError { message: message.into(), code, position: None }
    }

    pub fn at(mut self, position: Option<usize>) -> SqlError {
        if self.position.is_none() {
            self.position = position;
        }
        self
    }

    pub fn unsupported(what: impl std::fmt::Display) -> SqlError {
        SqlError::new(code::FEATURE_NOT_SUPPORTED, format!("{what} not yet supported"))
    }

    pub fn syntax(message: impl Into<String>) -> SqlError {
        SqlError::new(code::SYNTAX_ERROR, message)
    }
}

/// Maps sqlparser locations (1-based line and column, in characters) to 1-based character offsets.
#[derive(Clone, Debug)]
pub(crate) struct Positions {
    /// Character offset at which each line starts.
    line_starts: Vec<usize>,
}

impl Positions {
    pub fn new(text: &str) -> Positions {
        let mut line_starts = vec![0];
        for (i, c) in text.chars().enumerate() {
            if c == '\n' {
                line_starts.push(i + 1);
            }
        }
        Positions { line_starts }
    }

    pub fn offset(&self, loc: Location) -> Option<usize> {
        if loc.line == 0 || loc.column == 0 {
            return None;
        }
        let start = *self.line_starts.get(usize::try_from(loc.line).ok()? - 1)?;
        Some(start + usize::try_from(loc.column).ok()?)
    }
}

/// Splits sqlparser's `"... at Line: L, Column: C"` message suffix off into a location.
pub(crate) fn split_location(message: &str) -> (String, Option<Location>) {
    let Some(i) = message.rfind(" at Line: ") else {
        return (message.to_string(), None);
    };
    let tail = &message[i + " at Line: ".len()..];
    let mut parts = tail.split(", Column: ");
    let line = parts.next().and_then(|l| l.trim().parse::<u64>().ok());
    let column = parts.next().and_then(|c| c.trim().parse::<u64>().ok());
    match (line, column) {
        (Some(line), Some(column)) => (message[..i].to_string(), Some(Location { line, column })),
        _ => (message.to_string(), None),
    }
}
