//! Server-Sent Events: an incremental `text/event-stream` parser and a reconnecting HTTP client
//! source (Wikimedia EventStreams is the model upstream).

mod client;
mod parser;

pub use client::{SseConfig, SseSource};
pub use parser::{SseEvent, SseParser};
