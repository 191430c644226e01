//! The tick loop: every `tick_ms`, the rows ingested since the last tick (and pending table
//! writes) become one timestamp, the wall-clock time in ms at which the tick is due to close
//! (strictly increasing).
//!
//! A tick is fed while it is open: [`FEEDS_PER_TICK`] times per tick the rows the sources have
//! queued so far go to the engine ([`viewcast_engine::Engine::feed`]), which starts on them at the
//! tick's time; the close sends the rest and the table writes, and advances time. So when a tick
//! closes, most of its rows are already through the views' scalar work, and what is left before
//! its changes are sealed is the rest of the tick and the per-time work (counts, top-k, sealing).
//! Nothing at the tick's time is sealed before it closes. Items created while a tick is open
//! start after it.
//!
//! Admission control: while `max_lag_ticks` sent ticks are not yet sealed by the engine, no new
//! tick is sent; sources then fill their bounded queues and block, so backpressure reaches the
//! source instead of growing an unbounded input buffer inside the engine.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use viewcast_plan::GlobalId;
use viewcast_repr::{Diff, Row, Timestamp};

use crate::Shared;

pub(crate) struct PendingWrite {
    pub id: GlobalId,
    pub updates: Vec<(Row, Diff)>,
    pub done: Option<oneshot::Sender<Timestamp>>,
}

/// How many times a tick is fed while it is open (the last of them is its close).
const FEEDS_PER_TICK: u32 = 5;

pub(crate) struct Clock {
    /// The timestamp of the last tick sent to the engine.
    pub last: Option<Timestamp>,
    /// The open tick (fed, not yet closed): its time and the rows fed so far.
    open: Option<(Timestamp, usize)>,
    /// Sent ticks not yet known to be sealed, oldest first.
    in_flight: VecDeque<Timestamp>,
    /// Table writes for the next tick; each statement's writes land in one tick.
    pub pending: Vec<PendingWrite>,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { last: None, open: None, in_flight: VecDeque::new(), pending: Vec::new() }
    }

    /// The time at which an item created now has its initial contents: the engine's `as_of`,
    /// right after the open tick if one is open, else right after the last tick (0 before the
    /// first; [`crate::Coordinator::start`] sends a first, empty tick before anything can be
    /// created, so no item is ever as of 0).
    pub fn as_of(&self) -> Timestamp {
        match self.open {
            Some((ts, _)) => ts + 1,
            None => self.last.map_or(0, |l| l + 1),
        }
    }

    /// Whether `max_lag_ticks` sent ticks are not yet sealed (forgetting those that are): no
    /// tick opens then.
    fn lagging(&mut self, shared: &Shared) -> bool {
        let sealed = shared.engine.sealed_frontier();
        while self.in_flight.front().is_some_and(|t| *t < sealed) {
            self.in_flight.pop_front();
        }
        self.in_flight.len() as u64 >= shared.config.max_lag_ticks
    }

    /// The timestamp the next tick carries: wall-clock ms, strictly after the last tick.
    pub fn next_ts(&self) -> Timestamp {
        self.last.map(|l| l + 1).unwrap_or_else(now_ms).max(now_ms())
    }
}

/// The wall clock as a timestamp: milliseconds since the Unix epoch.
pub fn now_ms() -> Timestamp {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Timestamp).unwrap_or(0)
}

/// Sends the engine an empty tick at the current time, before any item exists: items are then
/// created as of a real time (not 0), so `AS OF` a time before the instance existed is refused
/// rather than answered with an empty past.
pub(crate) fn first_tick(shared: &Shared) -> Result<(), viewcast_engine::EngineError> {
    let mut clock = shared.clock.lock().expect("clock lock");
    let ts = clock.next_ts();
    shared.engine.tick(ts, Vec::new())?;
    clock.last = Some(ts);
    clock.in_flight.push_back(ts);
    Ok(())
}

pub(crate) fn tick_loop(shared: &Shared) {
    let tick = Duration::from_millis(shared.config.tick_ms.max(1));
    let feed_every = tick / FEEDS_PER_TICK;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        next += tick;
        let now = Instant::now();
        if next <= now {
            next = now; // Behind schedule: don't try to catch up with a burst of ticks.
        }
        // Feed the tick while it is open.
        loop {
            let now = Instant::now();
            if now + feed_every >= next {
                break;
            }
            std::thread::sleep(feed_every);
            if let Err(e) = feed(shared, next) {
                tracing::error!(error = %e, "engine refused rows; stopping the clock");
                return;
            }
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let mut clock = shared.clock.lock().expect("clock lock");
        // An open tick is closed whatever the lag (it was admitted when it opened).
        if clock.open.is_none() && clock.lagging(shared) {
            continue;
        }
        let (ts, fed) = clock.open.take().unwrap_or_else(|| (clock.next_ts(), 0));
        let budget = shared.config.max_rows_per_tick.saturating_sub(fed);
        let mut updates = shared.catalog.lock().expect("catalog lock").drain_sources(budget);
        updates.extend(shared.upstream_mailbox.take());
        let mut done = Vec::new();
        for w in clock.pending.drain(..) {
            updates.push((w.id, w.updates));
            done.extend(w.done);
        }
        if let Err(e) = shared.engine.tick(ts, updates) {
            tracing::error!(error = %e, "engine refused a tick; stopping the clock");
            return;
        }
        clock.last = Some(ts);
        clock.in_flight.push_back(ts);
        for d in done {
            let _ = d.send(ts);
        }
    }
}

/// Feeds the engine the rows the sources have queued, at the open tick's time, opening a tick
/// (due to close at `close`) if none is open and the engine is not too far behind.
fn feed(shared: &Shared, close: Instant) -> Result<(), viewcast_engine::EngineError> {
    let mut clock = shared.clock.lock().expect("clock lock");
    if clock.open.is_none() && clock.lagging(shared) {
        return Ok(());
    }
    let fed = clock.open.map_or(0, |(_, n)| n);
    let budget = shared.config.max_rows_per_tick.saturating_sub(fed);
    let updates = shared.catalog.lock().expect("catalog lock").drain_sources(budget);
    let rows: usize = updates.iter().map(|(_, r)| r.len()).sum();
    if rows == 0 {
        return Ok(());
    }
    // The tick's time: when it is due to close, in wall-clock ms (after the last tick's).
    let ts = match clock.open {
        Some((ts, _)) => ts,
        None => {
            let due = now_ms() + close.saturating_duration_since(Instant::now()).as_millis() as Timestamp;
            clock.last.map_or(due, |l| due.max(l + 1))
        }
    };
    shared.engine.feed(ts, updates)?;
    clock.open = Some((ts, fed + rows));
    Ok(())
}
