//! One subscription's message flow to one client, with the slow-client policy.
//!
//! A [`Pump`] reads the hub's frames of one view and pushes encoded messages to its connection's
//! [`Outbox`], whose byte budget bounds what is queued for the socket. When the budget is spent
//! (the client reads slower than the view changes), the pump stops queueing and instead merges the
//! frames it receives into one pending, consolidated update (an insert and a delete of the same row
//! cancel); when the client catches up it gets that single update at the latest timestamp. If the
//! pending changes themselves outgrow the budget, or the hub's queue overflows, they are dropped
//! and the client is sent `resync` and a fresh snapshot. The engine, the hub and other clients
//! never wait for a slow client.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{mpsc, Semaphore};
use viewcast_hub::{wire, Frame, FrameKind, Hub, HubError, Start, Subscription};
use viewcast_repr::{Diff, Row, Timestamp};

/// One encoded message and what it completes: the view, and the timestamp the client has complete
/// data through once it has applied it.
pub(crate) struct OutMsg {
    pub bytes: Bytes,
    pub view: Arc<str>,
    pub ts: Option<Timestamp>,
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
}

/// The queue of encoded messages to one socket, bounded in bytes.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<(OutMsg, u32)>,
    budget: Arc<Semaphore>,
    max: u32,
    pub metrics: Arc<StreamMetrics>,
}

/// The socket side of an [`Outbox`].
pub(crate) struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<(OutMsg, u32)>,
    budget: Arc<Semaphore>,
    metrics: Arc<StreamMetrics>,
}

impl Outbox {
    pub fn new(max_bytes: usize, metrics: Arc<StreamMetrics>) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let max = max_bytes.clamp(1, u32::MAX as usize >> 4) as u32;
        let budget = Arc::new(Semaphore::new(max as usize));
        let receiver = OutboxReceiver { rx, budget: budget.clone(), metrics: metrics.clone() };
        (Outbox { tx, budget, max, metrics }, receiver)
    }

    fn cost(&self, bytes: &Bytes) -> u32 {
        (bytes.len() as u32).clamp(1, self.max)
    }

    /// Queues `msg` if the budget allows now; otherwise hands it back.
    pub fn try_send(&self, msg: OutMsg) -> Result<(), OutMsg> {
        let cost = self.cost(&msg.bytes);
        match self.budget.try_acquire_many(cost) {
            Ok(p) => {
                p.forget();
                self.metrics.queued_bytes.fetch_add(cost as usize, Ordering::Relaxed);
                self.tx.send((msg, cost)).map_err(|e| e.0 .0)
            }
            Err(_) => Err(msg),
        }
    }

    /// Queues `msg`, waiting for budget. Returns false once the connection is gone.
    pub async fn send(&self, msg: OutMsg) -> bool {
        let cost = self.cost(&msg.bytes);
        match self.budget.acquire_many(cost).await {
            Ok(p) => p.forget(),
            Err(_) => return false,
        }
        self.metrics.queued_bytes.fetch_add(cost as usize, Ordering::Relaxed);
        self.tx.send((msg, cost)).is_ok()
    }

    /// Waits until `bytes` worth of budget is free (without taking it).
    async fn wait_for_room(&self, bytes: usize) {
        let cost = (bytes as u32).clamp(1, self.max);
        if let Ok(p) = self.budget.acquire_many(cost).await {
            drop(p);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl OutboxReceiver {
    /// The next message; its budget is returned once the caller has written it (drop the guard).
    pub async fn recv(&mut self) -> Option<(OutMsg, BudgetGuard)> {
        let (msg, cost) = self.rx.recv().await?;
        Some((msg, BudgetGuard { budget: self.budget.clone(), cost, metrics: self.metrics.clone() }))
    }
}

/// Returns a message's budget when dropped.
pub(crate) struct BudgetGuard {
    budget: Arc<Semaphore>,
    cost: u32,
    metrics: Arc<StreamMetrics>,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.budget.add_permits(self.cost as usize);
        self.metrics.queued_bytes.fetch_sub(self.cost as usize, Ordering::Relaxed);
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // Messages never written give their bytes back to the gauge.
        self.rx.close();
        while let Ok((_, cost)) = self.rx.try_recv() {
            self.metrics.queued_bytes.fetch_sub(cost as usize, Ordering::Relaxed);
        }
    }
}

/// How a subscription's messages are encoded.
#[derive(Clone, Debug)]
pub(crate) struct Encoding {
    /// The subscription id spliced into every message (multiplexed connections).
    pub id: Option<String>,
    /// Keyed output: column positions and names.
    pub key: Option<(Vec<usize>, Vec<String>)>,
}

impl Encoding {
    fn encode(&self, frame: &Frame) -> Result<Bytes, String> {
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

    fn error(&self, view: &str, message: &str) -> Bytes {
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
enum Backlog {
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
struct BacklogShare {
    metrics: Arc<StreamMetrics>,
    bytes: AtomicUsize,
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
        let frames: Vec<Frame> = match std::mem::replace(&mut sub.start, Start::Replay(Vec::new())) {
            Start::Snapshot(f) => vec![f],
            Start::Replay(fs) => fs,
            Start::Resync(f) => vec![wire::resync(&self.view), f],
        };
        for f in frames {
            if !self.send(&f).await {
                return false;
            }
        }
        true
    }

    fn msg(&self, bytes: Bytes, ts: Option<Timestamp>) -> OutMsg {
        OutMsg { bytes, view: self.view.clone(), ts }
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
        let share = BacklogShare { metrics: self.outbox.metrics.clone(), bytes: AtomicUsize::new(0) };
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
            if !matches!(backlog, Backlog::Empty) {
                let need = match &backlog {
                    Backlog::Pending { bytes, .. } => *bytes,
                    _ => 1,
                };
                tokio::select! {
                    _ = self.outbox.wait_for_room(need) => {
                        let taken = std::mem::replace(&mut backlog, Backlog::Empty);
                        self.release_backlog(&taken, share);
                        match taken {
                            Backlog::Pending { ts, rows, .. } => {
                                let rows: Vec<(Row, Diff)> = rows.into_iter().filter(|(_, d)| *d != 0).collect();
                                self.outbox.metrics.consolidated.fetch_add(1, Ordering::Relaxed);
                                let frame = if rows.is_empty() {
                                    wire::progress(&self.view, ts)
                                } else {
                                    wire::update(&self.view, ts, Arc::new(rows))
                                };
                                if !self.send(&frame).await {
                                    return;
                                }
                            }
                            Backlog::Resync => match self.resubscribe() {
                                Ok(new) => {
                                    sub = new;
                                    if let Start::Snapshot(f) = std::mem::replace(&mut sub.start, Start::Replay(vec![])) {
                                        sub.start = Start::Resync(f);
                                    }
                                    if !self.start(&mut sub).await {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    self.send_error(&e.to_string()).await;
                                    return;
                                }
                            },
                            Backlog::Empty => {}
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
                    if self.outbox.try_send(self.msg(bytes, frame.ts)).is_err() {
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
            while matches!(backlog, Backlog::Empty) {
                match sub.updates.try_recv() {
                    Ok(f) => match self.encoding.encode(&f) {
                        Ok(bytes) => {
                            if self.outbox.try_send(self.msg(bytes, f.ts)).is_err() {
                                self.absorb(Ok(f), &mut backlog, share);
                            }
                        }
                        Err(message) => {
                            self.send_error(&message).await;
                            return;
                        }
                    },
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(_)) => {
                        self.release_backlog(&backlog, share);
                        backlog = Backlog::Resync
                    }
                    Err(TryRecvError::Closed) => {
                        self.send_error("view was dropped").await;
                        return;
                    }
                }
            }
        }
    }

    fn resubscribe(&self) -> Result<Subscription, HubError> {
        self.outbox.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
        self.hub.subscribe(&self.view, None)
    }

    fn release_backlog(&self, backlog: &Backlog, share: &BacklogShare) {
        if let Backlog::Pending { bytes, .. } = backlog {
            self.outbox.metrics.backlog_bytes.fetch_sub(*bytes, Ordering::Relaxed);
            share.bytes.fetch_sub(*bytes, Ordering::Relaxed);
        }
    }

    /// Merges a received frame into the backlog. Returns false when the view is gone.
    fn absorb(&self, r: Result<Frame, RecvError>, backlog: &mut Backlog, share: &BacklogShare) -> bool {
        let frame = match r {
            Ok(f) => f,
            Err(RecvError::Lagged(_)) => {
                self.release_backlog(backlog, share);
                *backlog = Backlog::Resync;
                return true;
            }
            Err(RecvError::Closed) => return false,
        };
        if frame.kind == FrameKind::Error {
            return false;
        }
        if matches!(backlog, Backlog::Resync) {
            return true;
        }
        if matches!(backlog, Backlog::Empty) {
            *backlog = Backlog::Pending { ts: 0, rows: BTreeMap::new(), bytes: 0 };
        }
        let Backlog::Pending { ts, rows, bytes } = backlog else { unreachable!("set above") };
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
            let m = &self.outbox.metrics;
            m.backlog_bytes.fetch_add(frame.bytes.len(), Ordering::Relaxed);
            share.bytes.fetch_add(frame.bytes.len(), Ordering::Relaxed);
            m.max_backlog_bytes.fetch_max(*bytes, Ordering::Relaxed);
        }
        if *bytes > self.max_backlog_bytes {
            self.release_backlog(backlog, share);
            *backlog = Backlog::Resync;
        }
        true
    }
}
