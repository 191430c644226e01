//! Sources: everything that turns bytes or generators into rows.
//!
//! Sources emit rows (by default one column, `data jsonb`: a [`Row`] holding one [`Datum::Jsonb`];
//! files and webhooks may also decode `TEXT` or `REGEX` records into text columns) in `Vec<Row>`
//! batches sent into a bounded `crossbeam_channel` whose bound is the backpressure, and
//! counts what it ingests and what it rejects in a shared [`SourceStats`]. A running source is owned
//! through a [`SourceHandle`]: stopping or dropping the handle stops the source and joins its thread.
//!
//! Owns: the synthetic Wikipedia load generator, the SSE client, the file reader (`tail -F`), the
//! decoding of webhook bodies, parsing and decoding of ingested bytes, retry and
//! backoff against upstreams. Never touches: dataflow (timely/differential), SQL, the catalog.

mod decode;
mod error;
mod file;
pub mod loadgen;
mod source;
pub mod sse;
mod stats;

pub use decode::{BodyError, Decoded, RecordFormat};
pub use error::SourceError;
pub use file::{FileConfig, FileSource};
pub use loadgen::{EventClock, LoadGenConfig, LoadGenerator, WikipediaGenerator};
pub use source::{json_row, jsonb_row, Batch, BatchSink, SinkClosed, SourceHandle, StopSignal};
pub use sse::{SseConfig, SseEvent, SseParser, SseSource};
pub use stats::{now_millis, SourceStats, SourceStatsSnapshot};

#[doc(no_inline)]
pub use viewcast_repr::{Datum, Row};
