use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use viewcast_repr::Timestamp;

/// Counters one source updates while it runs and anyone may read at any time (the coordinator shows
/// them as a system view). Shared as `Arc<SourceStats>`; every update is a relaxed atomic, so a
/// reader sees each counter current but not necessarily all counters from the same instant.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Events turned into rows and delivered to the sink.
    events_in: AtomicU64,
    /// The JSON text size of those events (not wire bytes: no framing, no compression).
    bytes_in: AtomicU64,
    /// Rejected events and failed attempts (connects, HTTP errors, broken streams).
    errors: AtomicU64,
    /// Records that were neither rows nor errors (blank lines, lines a `FORMAT REGEX` skips).
    skipped: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 until the first event.
    last_event_time: AtomicU64,
    /// Set once the source has ended by itself (a one-off file read to its end) or failed.
    finished: std::sync::atomic::AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`SourceStats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatsSnapshot {
    pub events_in: u64,
    pub bytes_in: u64,
    pub errors: u64,
    pub skipped: u64,
    pub last_error: Option<String>,
    /// Wall-clock time at which the source last emitted an event.
    pub last_event_time: Option<Timestamp>,
    /// The source has ended: everything it will ever emit has been sent to its sink.
    pub finished: bool,
}

impl SourceStats {
    pub fn new() -> SourceStats {
        SourceStats::default()
    }

    /// Counts `events` accepted events of `bytes` encoded bytes in total, emitted at wall-clock `now`.
    pub fn record_events(&self, events: u64, bytes: u64, now: Timestamp) {
        self.events_in.fetch_add(events, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.last_event_time.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts one rejected input or failed attempt and remembers its message.
    pub fn record_error(&self, error: &dyn Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(error.to_string());
    }

    /// Counts `n` records that were neither rows nor errors.
    pub fn record_skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// Marks the source as ended; called when its thread returns.
    pub fn mark_finished(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    pub fn events_in(&self) -> u64 {
        self.events_in.load(Ordering::Relaxed)
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn last_event_time(&self) -> Option<Timestamp> {
        Some(self.last_event_time.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    pub fn snapshot(&self) -> SourceStatsSnapshot {
        SourceStatsSnapshot {
            events_in: self.events_in(),
            bytes_in: self.bytes_in(),
            errors: self.errors(),
            skipped: self.skipped.load(Ordering::Relaxed),
            last_error: self.last_error(),
            last_event_time: self.last_event_time(),
            finished: self.is_finished(),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_millis() -> Timestamp {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Timestamp).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_remembers_last_error() {
        let s = SourceStats::new();
        assert_eq!(s.snapshot(), SourceStatsSnapshot::default());
        s.record_events(3, 300, 1_000);
        s.record_events(2, 50, 900);
        s.record_error(&"bad json");
        s.record_error(&"oversize");
        let snap = s.snapshot();
        assert_eq!((snap.events_in, snap.bytes_in, snap.errors), (5, 350, 2));
        assert_eq!(snap.last_error.as_deref(), Some("oversize"));
        assert_eq!(snap.last_event_time, Some(1_000));
    }
}
