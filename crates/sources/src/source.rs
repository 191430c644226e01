//! The shape every source shares: a stop signal, a bounded batch sink, and an owning handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use viewcast_repr::{Datum, Jsonb, Row};

use crate::{SourceError, SourceStats};

/// The unit a source emits: rows of one `data jsonb` column.
pub type Batch = Vec<Row>;

/// Wraps a JSON document as a one-column `data jsonb` row.
pub fn json_row(value: serde_json::Value) -> Row {
    jsonb_row(Jsonb::from_value(&value))
}

/// A `data jsonb` row holding `doc`.
pub fn jsonb_row(doc: Jsonb) -> Row {
    Row::new(vec![Datum::Jsonb(doc)])
}

/// A one-shot, cloneable request to stop. Once stopped it stays stopped.
///
/// Blocking code waits on it through [`StopSignal::wait_timeout`] or by selecting on
/// [`StopSignal::receiver`], which disconnects at the moment of the stop.
#[derive(Clone, Debug)]
pub struct StopSignal {
    inner: Arc<StopInner>,
}

#[derive(Debug)]
struct StopInner {
    stopped: AtomicBool,
    /// Dropped on stop, which disconnects `rx` and wakes every waiter.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    /// Wakes async waiters.
    notify: tokio::sync::Notify,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::new()
    }
}

impl StopSignal {
    pub fn new() -> StopSignal {
        let (tx, rx) = crossbeam_channel::bounded(0);
        StopSignal {
            inner: Arc::new(StopInner {
                stopped: AtomicBool::new(false),
                tx: Mutex::new(Some(tx)),
                rx,
                notify: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.inner.notify.notify_waiters();
    }

    /// Completes once the signal is stopped.
    pub async fn stopped(&self) {
        loop {
            let notified = self.inner.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a stop between the check and the await still wakes us.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// A receiver that never yields a value and disconnects when the signal stops.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.inner.rx
    }

    /// Sleeps for `timeout` or until stopped; returns whether the signal is stopped.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match self.inner.rx.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => self.is_stopped(),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        }
    }
}

/// Where a source's batches go: a bounded channel, given up on when stopped or when the receiver
/// is gone.
#[derive(Clone, Debug)]
pub struct BatchSink {
    tx: Sender<Batch>,
    stop: StopSignal,
}

/// Why a batch could not be delivered; either way the source should end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkClosed {
    Stopped,
    ReceiverGone,
}

impl BatchSink {
    pub fn new(tx: Sender<Batch>, stop: StopSignal) -> BatchSink {
        BatchSink { tx, stop }
    }

    /// Blocks until the channel accepts `batch`, the receiver is dropped, or the source is stopped.
    pub fn send_blocking(&self, batch: Batch) -> Result<(), SinkClosed> {
        if self.stop.is_stopped() {
            return Err(SinkClosed::Stopped);
        }
        crossbeam_channel::select! {
            send(self.tx, batch) -> res => res.map_err(|_| SinkClosed::ReceiverGone),
            recv(self.stop.receiver()) -> _ => Err(SinkClosed::Stopped),
        }
    }

    /// Like [`BatchSink::send_blocking`] for async code: never blocks the executor thread; while
    /// the channel is full it retries with a short, growing sleep (at most 20 ms).
    pub async fn send_async(&self, mut batch: Batch) -> Result<(), SinkClosed> {
        let mut wait = Duration::from_micros(200);
        loop {
            if self.stop.is_stopped() {
                return Err(SinkClosed::Stopped);
            }
            match self.tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(SinkClosed::ReceiverGone),
                Err(TrySendError::Full(b)) => batch = b,
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.stopped() => return Err(SinkClosed::Stopped),
            }
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }

    pub fn stop_signal(&self) -> &StopSignal {
        &self.stop
    }
}

/// Owns one running source. Stopping or dropping the handle signals the source and joins its
/// thread, so a source never outlives its handle.
#[derive(Debug)]
pub struct SourceHandle {
    name: String,
    stats: Arc<SourceStats>,
    stop: StopSignal,
    thread: Option<JoinHandle<Result<(), SourceError>>>,
}

impl SourceHandle {
    /// Runs `body` on a new thread named `name`. `body` must return soon after its stop signal
    /// stops and must not hold the sink's sender past its return.
    pub fn spawn<F>(name: &str, stats: Arc<SourceStats>, body: F) -> Result<SourceHandle, SourceError>
    where
        F: FnOnce(StopSignal) -> Result<(), SourceError> + Send + 'static,
    {
        let stop = StopSignal::new();
        let thread_stop = stop.clone();
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            // Marks the source finished however the body ends, a panic included.
            struct Finished(Arc<SourceStats>);
            impl Drop for Finished {
                fn drop(&mut self) {
                    self.0.mark_finished();
                }
            }
            let _finished = Finished(Arc::clone(&thread_stats));
            let result = body(thread_stop);
            if let Err(e) = &result {
                thread_stats.record_error(e);
            }
            result
        })?;
        Ok(SourceHandle { name: name.to_owned(), stats, stop, thread: Some(thread) })
    }

    /// A handle of a source without a thread of its own, whose rows someone else pushes (a
    /// webhook: the HTTP server). It only carries the name and the statistics.
    pub fn passive(name: &str, stats: Arc<SourceStats>) -> SourceHandle {
        SourceHandle { name: name.to_owned(), stats, stop: StopSignal::new(), thread: None }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &Arc<SourceStats> {
        &self.stats
    }

    /// Whether the source has ended (finished, failed, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the source to stop without waiting for it.
    pub fn signal_stop(&self) {
        self.stop.stop();
    }

    /// Stops the source and waits for its thread; returns how it ended.
    pub fn stop(mut self) -> Result<(), SourceError> {
        self.stop.stop();
        self.join_thread()
    }

    /// Waits for the source to end by itself (e.g. after `max_events`); returns how it ended.
    pub fn join(mut self) -> Result<(), SourceError> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> Result<(), SourceError> {
        match self.thread.take() {
            None => Ok(()),
            Some(t) => t.join().unwrap_or_else(|payload| {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(SourceError::Panicked(msg))
            }),
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.stop.stop();
        let _ = self.join_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn stop_wakes_a_waiter_at_once() {
        let stop = StopSignal::new();
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            assert!(s2.wait_timeout(Duration::from_secs(30)));
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(20));
        stop.stop();
        assert!(t.join().unwrap() < Duration::from_secs(10));
        assert!(stop.wait_timeout(Duration::from_secs(30)));
    }

    #[test]
    fn blocked_send_returns_on_stop_and_on_receiver_drop() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sink = BatchSink::new(tx, StopSignal::new());
        sink.send_blocking(vec![]).unwrap();
        let s2 = sink.clone();
        let t = std::thread::spawn(move || s2.send_blocking(vec![]));
        std::thread::sleep(Duration::from_millis(20));
        sink.stop_signal().stop();
        assert_eq!(t.join().unwrap(), Err(SinkClosed::Stopped));

        let (tx, rx2) = crossbeam_channel::bounded(1);
        let sink = BatchSink::new(tx, StopSignal::new());
        drop(rx2);
        assert_eq!(sink.send_blocking(vec![]), Err(SinkClosed::ReceiverGone));
        drop(rx);
    }

    #[test]
    fn panics_surface_as_errors() {
        let h = SourceHandle::spawn("panicky", Arc::default(), |_| panic!("boom")).unwrap();
        while !h.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(matches!(h.join(), Err(SourceError::Panicked(m)) if m == "boom"));
    }
}
