use std::fmt;

/// Why a source rejected an input or stopped.
///
/// Per-event variants (`Json`, `InvalidUtf8`, `Oversize`) are counted in
/// [`SourceStats`](crate::SourceStats) and the event skipped; they never stop a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid source configuration: {0}")]
    Config(String),
    #[error("malformed JSON event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("event is not valid UTF-8")]
    InvalidUtf8,
    #[error("event of at least {size} bytes exceeds the limit of {limit} bytes")]
    Oversize { size: usize, limit: usize },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream error: {0}")]
    Upstream(String),
    #[error("source thread panicked: {0}")]
    Panicked(String),
}

impl SourceError {
    pub(crate) fn config(msg: impl fmt::Display) -> SourceError {
        SourceError::Config(msg.to_string())
    }
}
