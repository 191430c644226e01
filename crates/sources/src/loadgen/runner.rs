use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{EventClock, WikipediaGenerator};
use crate::source::{jsonb_row, Batch, BatchSink, SourceHandle};
use crate::stats::now_millis;
use crate::{SourceError, SourceStats};

/// How a [`LoadGenerator`] runs.
#[derive(Clone, Debug)]
pub struct LoadGenConfig {
    pub seed: u64,
    /// Target rate, spread evenly over time; `None` sends as fast as the channel accepts.
    pub events_per_second: Option<f64>,
    /// Stop after exactly this many events (then the sender is dropped); `None` runs until stopped.
    pub max_events: Option<u64>,
    /// Most events per batch. At a fixed rate batches are also capped at 10 ms worth of events,
    /// so a consumer ticking every 50 ms sees events in every tick.
    pub batch_size: usize,
    pub clock: EventClock,
}

impl Default for LoadGenConfig {
    fn default() -> Self {
        LoadGenConfig { seed: 0, events_per_second: None, max_events: None, batch_size: 1024, clock: EventClock::Wall }
    }
}

/// Runs a [`WikipediaGenerator`] on its own thread, sending `data jsonb` row batches.
pub struct LoadGenerator;

/// Longest burst the token bucket saves up while the consumer is slow.
const MAX_BURST: Duration = Duration::from_millis(100);
/// Longest span of events one batch covers at a fixed rate.
const BATCH_SPAN: Duration = Duration::from_millis(10);

impl LoadGenerator {
    /// Starts generating into `sink` on a thread named `loadgen-<seed>`.
    ///
    /// The thread ends after `max_events`, when the receiver is dropped, or when the handle is
    /// stopped or dropped; the sender is dropped when it ends.
    pub fn spawn(config: LoadGenConfig, sink: Sender<Batch>) -> Result<SourceHandle, SourceError> {
        if config.batch_size == 0 {
            return Err(SourceError::config("batch_size must be at least 1"));
        }
        if let Some(r) = config.events_per_second {
            if !(r.is_finite() && r > 0.0) {
                return Err(SourceError::config(format!("events_per_second must be positive, got {r}")));
            }
        }
        let stats = Arc::new(SourceStats::new());
        let thread_stats = Arc::clone(&stats);
        SourceHandle::spawn(&format!("loadgen-{}", config.seed), stats, move |stop| {
            let sink = BatchSink::new(sink, stop);
            run(config, &sink, &thread_stats);
            Ok(())
        })
    }
}

fn run(config: LoadGenConfig, sink: &BatchSink, stats: &SourceStats) {
    let mut generator = WikipediaGenerator::new(config.seed).with_clock(config.clock);
    let mut remaining = config.max_events.unwrap_or(u64::MAX);
    let mut bucket = config.events_per_second.map(|rate| TokenBucket::new(rate, config.batch_size));
    let stop = sink.stop_signal();
    while remaining > 0 {
        let mut n = (config.batch_size as u64).min(remaining) as usize;
        if let Some(bucket) = &mut bucket {
            n = n.min(bucket.batch_cap);
            if let Some(wait) = bucket.take(n, Instant::now()) {
                if stop.wait_timeout(wait) {
                    return;
                }
                continue;
            }
        }
        let mut batch: Batch = Vec::with_capacity(n);
        let mut bytes = 0u64;
        for _ in 0..n {
            let event = generator.next_event();
            bytes += event.json().text_len() as u64;
            batch.push(jsonb_row(event));
        }
        if sink.send_blocking(batch).is_err() {
            return;
        }
        stats.record_events(n as u64, bytes, now_millis());
        remaining -= n as u64;
    }
}

/// Tokens accrue at `rate` per second on the monotonic clock, up to [`MAX_BURST`] worth.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    capacity: f64,
    last: Instant,
    batch_cap: usize,
}

impl TokenBucket {
    fn new(rate: f64, batch_size: usize) -> TokenBucket {
        let batch_cap = ((rate * BATCH_SPAN.as_secs_f64()) as usize).clamp(1, batch_size);
        let capacity = (rate * MAX_BURST.as_secs_f64()).max(batch_cap as f64);
        TokenBucket { rate, tokens: 0.0, capacity, last: Instant::now(), batch_cap }
    }

    /// Takes `n` tokens if there are enough, else says how long until there will be.
    fn take(&mut self, n: usize, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            None
        } else {
            Some(Duration::from_secs_f64((n - self.tokens) / self.rate))
        }
    }
}
