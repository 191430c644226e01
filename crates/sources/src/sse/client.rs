//! A reconnecting SSE client that turns a JSON event stream into `data jsonb` rows.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use futures::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};

use viewcast_repr::{error_chain, Datum, Jsonb, Row};

use super::parser::{SseEvent, SseParser};
use crate::loadgen::rng::Rng;
use crate::source::{Batch, BatchSink, SinkClosed, SourceHandle};
use crate::stats::now_millis;
use crate::{SourceError, SourceStats};

/// How an [`SseSource`] connects and what it keeps.
#[derive(Clone, Debug)]
pub struct SseConfig {
    pub url: String,
    /// Resume after this event id (sent as `Last-Event-ID` on the first request).
    pub last_event_id: Option<String>,
    /// Emit `data jsonb, id text, event text` rows, for events of every type; otherwise `data jsonb`
    /// rows of `message` events only.
    pub include_metadata: bool,
    /// Drop Wikimedia's canary events (`meta.domain == "canary"`), which are not real edits.
    pub skip_canary: bool,
    /// Larger events are counted as errors and skipped; it also bounds the parser's memory.
    pub max_event_bytes: usize,
    /// Most rows per batch; a batch is also sent at the end of every network read.
    pub batch_size: usize,
    /// First reconnect delay when the stream sent no `retry:`; doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Longest reconnect delay, unless the stream's `retry:` asks for longer.
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// Reconnect when nothing (not even a comment) arrives for this long.
    pub idle_timeout: Duration,
    /// Wikimedia asks every client to identify itself.
    pub user_agent: String,
}

impl SseConfig {
    pub fn new(url: impl Into<String>) -> SseConfig {
        SseConfig {
            url: url.into(),
            last_event_id: None,
            include_metadata: false,
            skip_canary: true,
            max_event_bytes: SseParser::DEFAULT_MAX_EVENT_BYTES,
            batch_size: 512,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            user_agent: concat!("viewcast/", env!("CARGO_PKG_VERSION"), " (live SQL views over event streams)").into(),
        }
    }

    fn validate(&self) -> Result<reqwest::Url, SourceError> {
        if self.batch_size == 0 || self.max_event_bytes == 0 {
            return Err(SourceError::config("batch_size and max_event_bytes must be at least 1"));
        }
        let url =
            reqwest::Url::parse(&self.url).map_err(|e| SourceError::config(format!("bad URL {}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SourceError::config(format!("SSE needs an http(s) URL, got {}", self.url)));
        }
        Ok(url)
    }
}

/// Reads a `text/event-stream` of JSON events into `data jsonb` rows, reconnecting forever.
///
/// Each event's `data` must be one JSON document. Events whose data is not valid UTF-8, not JSON,
/// or larger than `max_event_bytes` are counted in [`SourceStats`] and skipped; events of a type
/// other than `message` are ignored. After a dropped connection the source reconnects with
/// exponential backoff and jitter (starting from the stream's `retry:` when it sent one) and
/// resumes with `Last-Event-ID`, so an upstream that honors it loses and repeats nothing.
pub struct SseSource;

impl SseSource {
    /// Runs the source on its own thread (named `sse-source`) with a single-threaded runtime.
    pub fn spawn(config: SseConfig, sink: Sender<Batch>) -> Result<SourceHandle, SourceError> {
        config.validate()?;
        let stats = Arc::new(SourceStats::new());
        let thread_stats = Arc::clone(&stats);
        SourceHandle::spawn("sse-source", stats, move |stop| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(SseSource::run(config, BatchSink::new(sink, stop), thread_stats))
        })
    }

    /// Runs the source on the caller's runtime until the sink's stop signal stops or its receiver
    /// is dropped; fails only on a bad configuration. Upstream failures are retried and counted.
    pub async fn run(config: SseConfig, sink: BatchSink, stats: Arc<SourceStats>) -> Result<(), SourceError> {
        let url = config.validate()?;
        let client = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| SourceError::config(error_chain(&e)))?;
        let mut conn = Connection {
            config: &config,
            sink: &sink,
            stats: &stats,
            parser: SseParser::with_max_event_bytes(config.max_event_bytes),
        };
        if let Some(id) = &config.last_event_id {
            conn.parser.set_last_event_id(id);
        }
        let mut rng = Rng::new(now_millis() ^ (Arc::as_ptr(&stats) as u64));
        let mut failures: u32 = 0;
        loop {
            let delivered = match conn.stream_once(url.clone(), &client).await {
                Attempt::Closed => return Ok(()),
                Attempt::Ended { delivered } => delivered,
                Attempt::Failed { delivered, error } => {
                    stats.record_error(&error);
                    delivered
                }
            };
            failures = if delivered > 0 { 0 } else { failures.saturating_add(1) };
            let delay = backoff(&config, conn.parser.retry(), failures, rng.unit());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = sink.stop_signal().stopped() => return Ok(()),
            }
        }
    }
}

/// The delay before the next attempt after `failures` consecutive attempts that delivered nothing:
/// the base delay (the stream's `retry:`, else `initial_backoff`) doubled per failure, capped, then
/// scaled by a random factor in [0.5, 1) so many clients don't reconnect in lockstep.
fn backoff(config: &SseConfig, retry: Option<Duration>, failures: u32, unit: f64) -> Duration {
    let base = retry.unwrap_or(config.initial_backoff);
    let cap = config.max_backoff.max(base);
    let delay = base.saturating_mul(1u32 << failures.min(20)).min(cap);
    delay.mul_f64(0.5 + 0.5 * unit)
}

enum Attempt {
    /// The sink is closed (stopped, or its receiver dropped): end the source.
    Closed,
    /// The server ended the stream.
    Ended {
        delivered: u64,
    },
    Failed {
        delivered: u64,
        error: SourceError,
    },
}

struct Connection<'a> {
    config: &'a SseConfig,
    sink: &'a BatchSink,
    stats: &'a SourceStats,
    parser: SseParser,
}

impl Connection<'_> {
    async fn stream_once(&mut self, url: reqwest::Url, client: &reqwest::Client) -> Attempt {
        let mut request = client.get(url).header(ACCEPT, "text/event-stream").header(CACHE_CONTROL, "no-cache");
        let last_id = self.parser.last_event_id();
        if !last_id.is_empty() {
            match HeaderValue::from_str(last_id) {
                Ok(v) => request = request.header("Last-Event-ID", v),
                Err(_) => {
                    let error = SourceError::Upstream(format!("last event id {last_id:?} is not a valid header"));
                    self.stats.record_error(&error);
                }
            }
        }
        let stop = self.sink.stop_signal().clone();
        let response = tokio::select! {
            r = request.send() => r,
            _ = stop.stopped() => return Attempt::Closed,
        };
        let response = match response.and_then(|r| r.error_for_status()) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed { delivered: 0, error: SourceError::Upstream(error_chain(&e)) },
        };
        if let Some(ct) = response.headers().get(CONTENT_TYPE) {
            if !ct.to_str().unwrap_or("").trim_start().starts_with("text/event-stream") {
                let error = SourceError::Upstream(format!("expected text/event-stream, got {ct:?}"));
                return Attempt::Failed { delivered: 0, error };
            }
        }
        self.parser.reset_stream();
        let mut body = response.bytes_stream();
        let mut delivered = 0u64;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.config.idle_timeout, body.next()) => next,
                _ = stop.stopped() => return Attempt::Closed,
            };
            let chunk = match next {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => return Attempt::Ended { delivered },
                Ok(Some(Err(e))) => {
                    return Attempt::Failed { delivered, error: SourceError::Upstream(error_chain(&e)) }
                }
                Err(_) => {
                    let error = SourceError::Upstream(format!("no data for {:?}", self.config.idle_timeout));
                    return Attempt::Failed { delivered, error };
                }
            };
            match self.ingest(&chunk).await {
                Ok(n) => delivered += n,
                Err(_) => return Attempt::Closed,
            }
        }
    }

    /// Parses one network read and sends the rows it completes; returns how many.
    async fn ingest(&mut self, chunk: &[u8]) -> Result<u64, SinkClosed> {
        let mut events: Vec<SseEvent> = Vec::new();
        let stats = self.stats;
        self.parser.feed(chunk, &mut |item| match item {
            Ok(e) => events.push(e),
            Err(e) => stats.record_error(&e),
        });
        let mut sent = 0u64;
        let mut batch: Batch = Vec::new();
        let mut bytes = 0u64;
        for event in events {
            if event.event != "message" && !self.config.include_metadata {
                continue;
            }
            let value = match Jsonb::parse(&event.data) {
                Ok(v) => v,
                Err(e) => {
                    stats.record_error(&SourceError::Json(e));
                    continue;
                }
            };
            if self.config.skip_canary
                && value.json().get("meta").and_then(|m| m.get("domain")).and_then(|d| d.as_str()) == Some("canary")
            {
                continue;
            }
            bytes += event.data.len() as u64;
            batch.push(if self.config.include_metadata {
                Row::new(vec![Datum::Jsonb(value), Datum::text(&event.id), Datum::text(&event.event)])
            } else {
                Row::new(vec![Datum::Jsonb(value)])
            });
            if batch.len() >= self.config.batch_size {
                sent += self.send(std::mem::take(&mut batch), std::mem::take(&mut bytes)).await?;
            }
        }
        if !batch.is_empty() {
            sent += self.send(batch, bytes).await?;
        }
        Ok(sent)
    }

    async fn send(&self, batch: Batch, bytes: u64) -> Result<u64, SinkClosed> {
        let n = batch.len() as u64;
        self.sink.send_async(batch).await?;
        self.stats.record_events(n, bytes, now_millis());
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honors_retry() {
        let mut c = SseConfig::new("http://localhost/");
        c.initial_backoff = Duration::from_millis(100);
        c.max_backoff = Duration::from_secs(2);
        let d = |retry, failures, unit| backoff(&c, retry, failures, unit);
        assert_eq!(d(None, 0, 0.999_999).as_millis(), 99);
        assert_eq!(d(None, 0, 0.0), Duration::from_millis(50));
        assert_eq!(d(None, 3, 0.0), Duration::from_millis(400));
        assert_eq!(d(None, 30, 0.0), Duration::from_secs(1));
        assert_eq!(d(Some(Duration::from_millis(10)), 0, 0.0), Duration::from_millis(5));
        // A server asking for more than the cap gets what it asked for.
        assert_eq!(d(Some(Duration::from_secs(10)), 5, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn bad_configs_are_rejected() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        for url in ["not a url", "ftp://example.org/x"] {
            assert!(matches!(SseSource::spawn(SseConfig::new(url), tx.clone()), Err(SourceError::Config(_))));
        }
        let mut c = SseConfig::new("http://127.0.0.1:1/");
        c.batch_size = 0;
        assert!(matches!(SseSource::spawn(c, tx), Err(SourceError::Config(_))));
    }
}
