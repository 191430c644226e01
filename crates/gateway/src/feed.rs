//! One subscription's message flow to one client, with the slow-client policy.
//!
//! Server-Sent Events streams run a [`Pump`] per view; WebSockets (single-view and multiplexed)
//! are written by the writer shards of `fanout`, which share this module's encoding
//! ([`Encoding`]) and slow-client backlog ([`Backlog`]).
//!
//! A [`Pump`] reads the hub's frames of one view and pushes encoded messages to its connection's
//! [`Outbox`], whose byte budget bounds what is queued for the socket. When the budget is spent
//! (the client reads slower than the view changes), the pump stops queueing and instead merges the
//! frames it receives into one pending, consolidated update (an insert and a delete of the same row
//! cancel); when the client catches up it gets that single update at the latest timestamp. If the
//! pending changes themselves outgrow the budget, or the hub's queue overflows, they are dropped
//! and the client is sent `resync` and a fresh snapshot, but only once it has taken everything
//! queued for it (its outbox is empty): a snapshot can be as large as the view, and a client that
//! has stopped reading would otherwise hold one (and have it encoded) for nothing until the stall
//! timeout closes it. The engine, the hub and other clients never wait for a slow client.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::Notify;
use viewcast_hub::timeline::StageHistogram;
use viewcast_hub::{wire, Frame, FrameKind, Hub, HubError, Start, Subscription};
use viewcast_repr::{Diff, Row, Timestamp};

/// One encoded message and what it completes: the view, and the timestamp the client has complete
/// data through once it has applied it.
pub(crate) struct OutMsg {
    pub bytes: Bytes,
    pub view: Arc<str>,
    pub ts: Option<Timestamp>,
    /// When the hub serialized the frame this message carries (live frames only), for the
    /// `written` stage of the timeline.
    pub made: Option<Instant>,
}

/// Counters over every client of the server, for `/api/v1/stats` and tests.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    /// Bytes queued for sockets right now (all connections).
    pub queued_bytes: AtomicUsize,
    /// Bytes of consolidated backlog held for slow clients right now.
    pub backlog_bytes: AtomicUsize,
    /// Largest backlog one subscription has held.
    pub max_backlog_bytes: AtomicUsize,
    /// Times a slow subscription's changes were consolidated into one update.
    pub consolidated: AtomicU64,
    /// Times a subscription was resynced (backlog too big, or the hub's queue overflowed).
    pub resyncs: AtomicU64,
    /// Connections closed because the client stopped reading for longer than the stall timeout.
    pub stalled_closes: AtomicU64,
    /// Timeline: from the hub serializing a live frame to a subscription's pump taking it (the
    /// wake-up of the connection's task).
    pub frame_to_pump: StageHistogram,
    /// Timeline: from the hub serializing a live frame to its bytes written to the socket (for
    /// Server-Sent Events: to the event handed to the HTTP connection).
    pub frame_to_written: StageHistogram,
}

/// The queue of encoded messages to one socket, bounded in bytes. Each of the connection's pumps
/// holds a clone and queues; the connection's socket writer holds the [`OutboxReceiver`] and takes.
/// Overflow policy: a message that does not fit is handed back (`try_send`) and its pump
/// consolidates instead, or the sender waits for room (`send`, for the few messages that must go).
pub(crate) struct Outbox {
    shared: Arc<OutboxShared>,
    pub metrics: Arc<StreamMetrics>,
}

/// What an outbox's senders and its receiver share.
struct OutboxShared {
    state: Mutex<OutboxState>,
    /// Wakes the receiver: a message was queued, or the last sender went away.
    queued: Notify,
    /// Wakes senders waiting for room: bytes were given back, or the receiver went away.
    room: Notify,
    max: usize,
}

struct OutboxState {
    /// Queued messages and their cost. Starts empty and unallocated, so an idle connection holds
    /// no queue memory.
    queue: VecDeque<(OutMsg, usize)>,
    /// Bytes queued or being written: taken when queued, given back once written.
    used: usize,
    senders: usize,
    receiver_gone: bool,
}

/// The socket side of an [`Outbox`].
pub(crate) struct OutboxReceiver {
    shared: Arc<OutboxShared>,
    metrics: Arc<StreamMetrics>,
}

impl OutboxShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().expect("outbox lock")
    }
}

impl OutboxState {
    /// Takes the oldest message; a queue that a burst grew is freed once it is empty again.
    fn pop(&mut self) -> Option<(OutMsg, usize)> {
        let next = self.queue.pop_front();
        if self.queue.is_empty() && self.queue.capacity() > 16 {
            self.queue = VecDeque::new();
        }
        next
    }
}

impl Outbox {
    pub fn new(max_bytes: usize, metrics: Arc<StreamMetrics>) -> (Outbox, OutboxReceiver) {
        let state = OutboxState { queue: VecDeque::new(), used: 0, senders: 1, receiver_gone: false };
        let shared = Arc::new(OutboxShared {
            state: Mutex::new(state),
            queued: Notify::new(),
            room: Notify::new(),
            max: max_bytes.max(1),
        });
        let receiver = OutboxReceiver { shared: shared.clone(), metrics: metrics.clone() };
        (Outbox { shared, metrics }, receiver)
    }

    /// A message's share of the budget: its length, at least 1 and at most the whole budget (so
    /// an oversized message still goes, alone).
    fn cost(&self, bytes: &Bytes) -> usize {
        bytes.len().clamp(1, self.shared.max)
    }

    /// Queues `msg` under the lock if it fits; otherwise hands it back.
    fn push(&self, st: &mut OutboxState, msg: OutMsg) -> Result<(), OutMsg> {
        let cost = self.cost(&msg.bytes);
        if st.receiver_gone || st.used + cost > self.shared.max {
            return Err(msg);
        }
        st.used += cost;
        st.queue.push_back((msg, cost));
        self.metrics.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Queues `msg` if the budget allows now; otherwise hands it back.
    pub fn try_send(&self, msg: OutMsg) -> Result<(), OutMsg> {
        let mut st = self.shared.lock();
        self.push(&mut st, msg)
    }

    /// Queues `msg`, waiting for budget. Returns false once the connection is gone.
    pub async fn send(&self, msg: OutMsg) -> bool {
        let mut msg = msg;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if st.receiver_gone {
                    return false;
                }
                match self.push(&mut st, msg) {
                    Ok(()) => return true,
                    Err(m) => msg = m,
                }
            }
            room.await;
        }
    }

    /// Waits until `bytes` worth of budget is free (without taking it), or the connection is gone.
    async fn wait_for_room(&self, bytes: usize) {
        let cost = bytes.clamp(1, self.shared.max);
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.receiver_gone || st.used + cost <= self.shared.max {
                    return;
                }
            }
            room.await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Outbox {
        self.shared.lock().senders += 1;
        Outbox { shared: self.shared.clone(), metrics: self.metrics.clone() }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.senders -= 1;
        if st.senders == 0 {
            self.shared.queued.notify_one();
        }
    }
}

impl OutboxReceiver {
    /// The next message; its budget is returned once the caller has written it (drop the guard).
    /// `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<(OutMsg, BudgetGuard)> {
        loop {
            let queued = self.shared.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if let Some((msg, cost)) = st.pop() {
                    return Some(self.guarded(msg, cost));
                }
                if st.senders == 0 {
                    return None;
                }
            }
            queued.await;
        }
    }

    /// The next message if one is queued already.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<(OutMsg, BudgetGuard)> {
        let (msg, cost) = self.shared.lock().pop()?;
        Some(self.guarded(msg, cost))
    }

    pub fn metrics(&self) -> &StreamMetrics {
        &self.metrics
    }

    fn guarded(&self, msg: OutMsg, cost: usize) -> (OutMsg, BudgetGuard) {
        (msg, BudgetGuard { shared: self.shared.clone(), cost, metrics: self.metrics.clone() })
    }
}

/// Returns a message's budget when dropped.
pub(crate) struct BudgetGuard {
    shared: Arc<OutboxShared>,
    cost: usize,
    metrics: Arc<StreamMetrics>,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.shared.lock().used -= self.cost;
        self.metrics.queued_bytes.fetch_sub(self.cost, Ordering::Relaxed);
        self.shared.room.notify_waiters();
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // Messages never written give their bytes back to the gauge; waiting senders give up.
        let mut st = self.shared.lock();
        st.receiver_gone = true;
        for (_, cost) in st.queue.drain(..) {
            self.metrics.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
        }
        st.queue = VecDeque::new();
        drop(st);
        self.shared.room.notify_waiters();
    }
}

/// How a subscription's messages are encoded.
#[derive(Clone, Debug)]
pub(crate) struct Encoding {
    /// The subscription id spliced into every message (multiplexed connections).
    pub id: Option<Arc<str>>,
    /// Keyed output: column positions and names.
    pub key: Option<(Vec<usize>, Vec<String>)>,
}

impl Encoding {
    pub(crate) fn encode(&self, frame: &Frame) -> Result<Bytes, String> {
        let keyed_update;
        let frame = match (&self.key, frame.kind, &frame.rows) {
            (Some((cols, _)), FrameKind::Update, Some(rows)) => {
                let (ups, dels) = wire::to_upserts(cols, rows)?;
                keyed_update = wire::keyed_update(view_of(frame), frame.ts.unwrap_or(0), &ups, &dels);
                &keyed_update
            }
            _ => frame,
        };
        let extra = match (&self.key, frame.kind) {
            (Some((_, names)), FrameKind::Snapshot) => {
                format!("\"key\":{}", serde_json::to_string(names).expect("names serialize"))
            }
            _ => String::new(),
        };
        Ok(match &self.id {
            Some(id) => frame.with_id(id, &extra),
            None if extra.is_empty() => frame.bytes.clone(),
            None => frame.with_id("", &extra),
        })
    }

    pub(crate) fn error(&self, view: &str, message: &str) -> Bytes {
        let f = wire::error(Some(view), message);
        match &self.id {
            Some(id) => f.with_id(id, ""),
            None => f.bytes,
        }
    }
}

fn view_of(frame: &Frame) -> &str {
    // Only used for re-encoding update frames, whose JSON always has "view".
    let text = std::str::from_utf8(&frame.bytes).unwrap_or("");
    text.split("\"view\":\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("")
}

/// Changes received while the client could not take them.
pub(crate) enum Backlog {
    Empty,
    /// Consolidated changes through `ts` (possibly none: progress only).
    Pending {
        ts: Timestamp,
        rows: BTreeMap<Row, Diff>,
        bytes: usize,
    },
    /// Too much to consolidate: the client gets `resync` and a fresh snapshot.
    Resync,
}

/// The frames a subscription starts with (taken out of it): its snapshot, the replayed
/// timestamps of a resume, or `resync` and a snapshot.
pub(crate) fn start_frames(view: &str, sub: &mut Subscription) -> Vec<Frame> {
    match std::mem::replace(&mut sub.start, Start::Replay(Vec::new())) {
        Start::Snapshot(f) => vec![f],
        Start::Replay(fs) => fs,
        Start::Resync(f) => vec![wire::resync(view), f],
    }
}

/// A fresh subscription for a client whose backlog was dropped: it starts with `resync` and a
/// snapshot.
pub(crate) fn resubscribe(hub: &Hub, view: &str, metrics: &StreamMetrics) -> Result<Subscription, HubError> {
    metrics.resyncs.fetch_add(1, Ordering::Relaxed);
    let mut sub = hub.subscribe(view, None)?;
    if let Start::Snapshot(f) = std::mem::replace(&mut sub.start, Start::Replay(vec![])) {
        sub.start = Start::Resync(f);
    }
    Ok(sub)
}

/// Pumps one view's frames into an outbox until the view or the connection is gone.
pub(crate) struct Pump {
    pub hub: Arc<Hub>,
    pub view: Arc<str>,
    pub encoding: Encoding,
    pub outbox: Outbox,
    /// Most bytes of consolidated backlog kept before falling back to a resync.
    pub max_backlog_bytes: usize,
}

/// This subscription's share of [`StreamMetrics::backlog_bytes`], given back however it ends.
pub(crate) struct BacklogShare {
    metrics: Arc<StreamMetrics>,
    bytes: AtomicUsize,
}

impl BacklogShare {
    pub(crate) fn new(metrics: Arc<StreamMetrics>) -> BacklogShare {
        BacklogShare { metrics, bytes: AtomicUsize::new(0) }
    }

    fn release(&self, backlog: &Backlog) {
        if let Backlog::Pending { bytes, .. } = backlog {
            self.metrics.backlog_bytes.fetch_sub(*bytes, Ordering::Relaxed);
            self.bytes.fetch_sub(*bytes, Ordering::Relaxed);
        }
    }
}

impl Drop for BacklogShare {
    fn drop(&mut self) {
        self.metrics.backlog_bytes.fetch_sub(self.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Pump {
    /// Runs until the view is dropped or the client goes away. `since` resumes after that timestamp.
    pub async fn run(self, since: Option<Timestamp>) {
        let sub = match self.hub.subscribe(&self.view, since) {
            Ok(s) => s,
            Err(e) => {
                let msg = match e {
                    HubError::UnknownView(_) | HubError::NotReady(_) => e.to_string(),
                };
                self.send_error(&msg).await;
                return;
            }
        };
        self.follow(sub).await;
    }

    async fn start(&self, sub: &mut Subscription) -> bool {
        for f in start_frames(&self.view, sub) {
            if !self.send(&f).await {
                return false;
            }
        }
        true
    }

    fn msg(&self, bytes: Bytes, ts: Option<Timestamp>) -> OutMsg {
        OutMsg { bytes, view: self.view.clone(), ts, made: None }
    }

    /// A live frame's message, timed from the hub's serialization on.
    fn live(&self, bytes: Bytes, frame: &Frame) -> OutMsg {
        self.outbox.metrics.frame_to_pump.record(frame.made.elapsed());
        OutMsg { bytes, view: self.view.clone(), ts: frame.ts, made: Some(frame.made) }
    }

    async fn send_error(&self, message: &str) {
        self.outbox.send(self.msg(self.encoding.error(&self.view, message), None)).await;
    }

    async fn send(&self, frame: &Frame) -> bool {
        match self.encoding.encode(frame) {
            Ok(b) => self.outbox.send(self.msg(b, frame.ts)).await,
            Err(message) => {
                self.send_error(&message).await;
                false
            }
        }
    }

    async fn follow(self, sub: Subscription) {
        let share = BacklogShare::new(self.outbox.metrics.clone());
        self.follow_with(sub, &share).await
    }

    async fn follow_with(&self, mut sub: Subscription, share: &BacklogShare) {
        if !self.start(&mut sub).await {
            return;
        }
        let mut backlog = Backlog::Empty;
        loop {
            if self.outbox.is_closed() {
                return;
            }
            // Flush the backlog as soon as there is room for it.
            if !backlog.is_empty() {
                let need = match &backlog {
                    Backlog::Pending { bytes, .. } => *bytes,
                    // A resync waits for an empty outbox (see the module's doc).
                    _ => usize::MAX,
                };
                tokio::select! {
                    _ = self.outbox.wait_for_room(need) => {
                        if let Some(frame) = backlog.take(&self.view, share) {
                            if !self.send(&frame).await {
                                return;
                            }
                        } else {
                            match resubscribe(&self.hub, &self.view, &self.outbox.metrics) {
                                Ok(new) => {
                                    sub = new;
                                    if !self.start(&mut sub).await {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    self.send_error(&e.to_string()).await;
                                    return;
                                }
                            }
                        }
                        continue;
                    }
                    r = sub.updates.recv() => {
                        if !self.absorb(r, &mut backlog, share) {
                            self.send_error("view was dropped").await;
                            return;
                        }
                    }
                }
                continue;
            }
            let r = sub.updates.recv().await;
            let frame = match r {
                Ok(f) => f,
                other => {
                    if !self.absorb(other, &mut backlog, share) {
                        self.send_error("view was dropped").await;
                        return;
                    }
                    continue;
                }
            };
            if frame.kind == FrameKind::Error {
                let _ = self.send(&frame).await;
                return;
            }
            match self.encoding.encode(&frame) {
                Ok(bytes) => {
                    if self.outbox.try_send(self.live(bytes, &frame)).is_err() {
                        // No room: start consolidating instead of queueing.
                        self.absorb(Ok(frame), &mut backlog, share);
                    }
                }
                Err(message) => {
                    self.send_error(&message).await;
                    return;
                }
            }
            // Drain what is already waiting without blocking, so a burst is consolidated.
            while backlog.is_empty() {
                match sub.updates.try_recv() {
                    Ok(f) => match self.encoding.encode(&f) {
                        Ok(bytes) => {
                            if self.outbox.try_send(self.live(bytes, &f)).is_err() {
                                self.absorb(Ok(f), &mut backlog, share);
                            }
                        }
                        Err(message) => {
                            self.send_error(&message).await;
                            return;
                        }
                    },
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(_)) => backlog.overflow(share),
                    Err(TryRecvError::Closed) => {
                        self.send_error("view was dropped").await;
                        return;
                    }
                }
            }
        }
    }

    /// Merges a received frame into the backlog. Returns false when the view is gone.
    fn absorb(&self, r: Result<Frame, RecvError>, backlog: &mut Backlog, share: &BacklogShare) -> bool {
        let frame = match r {
            Ok(f) => f,
            Err(RecvError::Lagged(_)) => {
                backlog.overflow(share);
                return true;
            }
            Err(RecvError::Closed) => return false,
        };
        backlog.absorb(&frame, share, self.max_backlog_bytes)
    }
}

impl Backlog {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Backlog::Empty)
    }

    /// The hub's queue overflowed (or the changes outgrew their budget): what was held is dropped
    /// and the client will be resynced.
    pub(crate) fn overflow(&mut self, share: &BacklogShare) {
        share.release(self);
        *self = Backlog::Resync;
    }

    /// Merges `frame` into the backlog, falling back to a resync past `max_bytes`. Returns false
    /// when the frame ends the view (an error).
    pub(crate) fn absorb(&mut self, frame: &Frame, share: &BacklogShare, max_bytes: usize) -> bool {
        if frame.kind == FrameKind::Error {
            return false;
        }
        if matches!(self, Backlog::Resync) {
            return true;
        }
        if matches!(self, Backlog::Empty) {
            *self = Backlog::Pending { ts: 0, rows: BTreeMap::new(), bytes: 0 };
        }
        let Backlog::Pending { ts, rows, bytes } = self else { unreachable!("set above") };
        if let Some(t) = frame.ts {
            *ts = (*ts).max(t);
        }
        if let Some(changes) = &frame.rows {
            for (row, diff) in changes.iter() {
                let n = rows.entry(row.clone()).or_insert(0);
                *n += diff;
                if *n == 0 {
                    rows.remove(row);
                }
            }
            *bytes += frame.bytes.len();
            let m = &share.metrics;
            m.backlog_bytes.fetch_add(frame.bytes.len(), Ordering::Relaxed);
            share.bytes.fetch_add(frame.bytes.len(), Ordering::Relaxed);
            m.max_backlog_bytes.fetch_max(*bytes, Ordering::Relaxed);
        }
        if *bytes > max_bytes {
            self.overflow(share);
        }
        true
    }

    /// Empties the backlog: `Some(frame)` with its consolidated changes (a progress frame when they
    /// cancelled out), `None` when it was a resync (or empty).
    pub(crate) fn take(&mut self, view: &str, share: &BacklogShare) -> Option<Frame> {
        let taken = std::mem::replace(self, Backlog::Empty);
        share.release(&taken);
        let Backlog::Pending { ts, rows, .. } = taken else { return None };
        share.metrics.consolidated.fetch_add(1, Ordering::Relaxed);
        let rows: Vec<(Row, Diff)> = rows.into_iter().filter(|(_, d)| *d != 0).collect();
        Some(if rows.is_empty() { wire::progress(view, ts) } else { wire::update(view, ts, Arc::new(rows)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(n: usize) -> OutMsg {
        OutMsg { bytes: Bytes::from(vec![b'x'; n]), view: Arc::from("v"), ts: None, made: None }
    }

    #[tokio::test]
    async fn outbox_is_bounded_in_bytes_and_gives_budget_back_once_written() {
        let metrics = Arc::new(StreamMetrics::default());
        let (outbox, mut rx) = Outbox::new(100, metrics.clone());
        assert!(outbox.try_send(msg(60)).is_ok());
        assert!(outbox.try_send(msg(60)).is_err(), "past the budget: handed back");
        assert!(outbox.try_send(msg(40)).is_ok());
        assert_eq!(metrics.queued_bytes.load(Ordering::Relaxed), 100);
        // A waiting send completes only once a written message's guard is dropped.
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.send(msg(50)).await })
        };
        let (first, guard) = rx.recv().await.unwrap();
        assert_eq!(first.bytes.len(), 60);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "taken but not yet written: still counted");
        drop(guard);
        assert!(tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap());
        let lens: Vec<usize> = std::iter::from_fn(|| rx.try_recv()).map(|(m, _)| m.bytes.len()).collect();
        assert_eq!(lens, vec![40, 50], "in order");
        assert_eq!(metrics.queued_bytes.load(Ordering::Relaxed), 0);
        // An oversized message still goes, alone.
        assert!(outbox.try_send(msg(500)).is_ok());
        assert!(outbox.try_send(msg(1)).is_err());
        drop(rx.recv().await.unwrap());
        // Once every sender is gone the receiver ends; once the receiver is gone senders fail.
        drop(outbox);
        assert!(rx.recv().await.is_none());
        let (outbox, rx) = Outbox::new(10, metrics.clone());
        assert!(outbox.try_send(msg(10)).is_ok());
        let blocked = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.send(msg(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert!(!tokio::time::timeout(Duration::from_secs(5), blocked).await.unwrap().unwrap());
        assert!(outbox.is_closed());
        assert_eq!(metrics.queued_bytes.load(Ordering::Relaxed), 0, "unwritten bytes leave the gauge");
    }
}
