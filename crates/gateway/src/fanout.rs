//! Writer shards: the socket side of every single-view WebSocket stream.
//!
//! A few shard tasks per runtime worker each own a share of the connections. It holds one receiver per
//! view it serves (its "bell"); when the hub broadcasts a frame, the bell wakes the shard once,
//! and the shard walks that view's connections: each takes the frame from its own subscription
//! (`try_recv`, no waker registered), and the shard writes it to the socket and flushes at once.
//! A frame to N clients costs N writes but one wake-up per shard, not one per connection; a
//! connection's reader is a task of its own that wakes only when the client sends something.
//!
//! A socket that would block keeps its unflushed bytes and is retried whenever the shard wakes;
//! meanwhile its frames are consolidated into one pending update ([`Backlog`], the slow-client
//! policy of `feed`), dropped for `resync` and a fresh snapshot past the budget, and the client is
//! closed with a resume point once it has not taken a write for the stall timeout. Several pending
//! messages go out with one flush (up to [`COALESCE_BYTES`]).
//!
//! Never touches: the hub's state (only its frames and subscriptions), other connection types
//! (multiplexed WebSockets and SSE run `feed::Pump` tasks).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, SinkExt, StreamExt};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use viewcast_hub::timeline::LocalHistogram;
use viewcast_hub::{Frame, FrameKind, Hub};
use viewcast_plan::GlobalId;
use viewcast_repr::Timestamp;

use crate::auth::ConnectionSlot;
use crate::feed::{resubscribe, start_frames, Backlog, BacklogShare, Encoding, StreamMetrics};
use crate::GatewayConfig;

/// Most bytes written with one flush (several messages per syscall when a client is behind).
pub(crate) const COALESCE_BYTES: usize = 64 << 10;

/// Connections a shard serves in one poll before letting the worker run other tasks.
const SERVICE_BATCH: usize = 1024;

/// Shards per runtime worker. More shards than workers keeps the work stealable: while one
/// worker's thread is preempted in the middle of a pass, the other workers take the shards still
/// queued behind it, instead of every connection after the preempted one waiting for it.
const SHARDS_PER_WORKER: usize = 4;

/// Connections waiting to be handed to one shard.
const HANDOFF_QUEUE: usize = 1024;

type WsSink = SplitSink<WebSocket, Message>;

/// The shards of one server, started on first use (they need the runtime).
pub(crate) struct Fanout {
    hub: Arc<Hub>,
    config: Arc<GatewayConfig>,
    metrics: Arc<StreamMetrics>,
    shards: OnceLock<Vec<mpsc::Sender<Conn>>>,
    next_shard: AtomicUsize,
    next_id: AtomicU64,
}

impl Fanout {
    pub fn new(hub: Arc<Hub>, config: Arc<GatewayConfig>, metrics: Arc<StreamMetrics>) -> Fanout {
        Fanout {
            hub,
            config,
            metrics,
            shards: OnceLock::new(),
            next_shard: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    fn shards(&self) -> &[mpsc::Sender<Conn>] {
        self.shards.get_or_init(|| {
            let workers = tokio::runtime::Handle::current().metrics().num_workers().max(1);
            (0..workers * SHARDS_PER_WORKER)
                .map(|_| {
                    let (conns, new) = mpsc::channel(HANDOFF_QUEUE);
                    let shard = Shard::new(self.hub.clone(), self.config.clone(), self.metrics.clone(), new);
                    // The shard writes to many sockets per poll; tokio's per-task budget would
                    // make every write past the 128th return Pending. It yields on its own instead
                    // (SERVICE_BATCH).
                    tokio::spawn(tokio::task::unconstrained(shard.run()));
                    conns
                })
                .collect()
        })
    }

    /// Serves one upgraded single-view WebSocket: subscribes on the client's behalf, then hands
    /// the socket to a shard and its reading side to a task of its own.
    pub async fn serve(
        &self,
        socket: WebSocket,
        view: Arc<str>,
        encoding: Encoding,
        since: Option<Timestamp>,
        slot: ConnectionSlot,
    ) {
        let (sink, incoming) = socket.split();
        let mut sub = match self.hub.subscribe(&view, since) {
            Ok(s) => s,
            Err(e) => {
                let error = text(encoding.error(&view, &e.to_string()));
                close_after(sink, vec![error], None, self.config.stall_timeout).await;
                return;
            }
        };
        let shards = self.shards();
        let shard = &shards[self.next_shard.fetch_add(1, Ordering::Relaxed) % shards.len()];
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let start = start_frames(&view, &mut sub);
        let mut conn = Conn {
            id,
            view_id: sub.id,
            view: view.clone(),
            encoding,
            sink,
            updates: sub.updates,
            must: VecDeque::new(),
            ending: false,
            backlog: Backlog::Empty,
            share: BacklogShare::new(self.metrics.clone()),
            unflushed: 0,
            gauged: 0,
            made: Vec::new(),
            blocked_since: None,
            last_ping: Instant::now(),
            last_ts: None,
            queued: false,
            incoming: Some(incoming),
            reader: None,
            _slot: slot,
        };
        conn.queue_start(start);
        // A shard that is gone (the server is shutting down) drops the connection.
        let _ = shard.send(conn).await;
    }
}

/// Reads (and discards) what the client sends until it closes; pings are answered by the library.
async fn read_client(mut incoming: SplitStream<WebSocket>, id: u64, gone: mpsc::Sender<u64>) {
    while let Some(Ok(msg)) = incoming.next().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
    }
    let _ = gone.send(id).await;
}

/// Writes `last` messages and a close frame, giving up after `timeout`.
async fn close_after(mut sink: WsSink, last: Vec<Message>, close: Option<CloseFrame>, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async move {
        for m in last {
            sink.feed(m).await?;
        }
        sink.send(Message::Close(close)).await
    })
    .await;
}

fn text(bytes: Bytes) -> Message {
    // Every frame is JSON text the hub serialized: valid UTF-8.
    Message::Text(Utf8Bytes::try_from(bytes).unwrap_or_default())
}

/// One client of one view, as a shard holds it.
struct Conn {
    id: u64,
    view_id: GlobalId,
    view: Arc<str>,
    encoding: Encoding,
    sink: WsSink,
    updates: broadcast::Receiver<Frame>,
    /// Messages that go before any live frame, whatever the budget: the start (snapshot or
    /// replay), a resync and its snapshot, a consolidated backlog, a final error, a ping.
    must: VecDeque<Message>,
    /// Close once `must` is written (the view ended, or an error was sent).
    ending: bool,
    backlog: Backlog,
    share: BacklogShare,
    /// Bytes handed to the socket since its last completed flush.
    unflushed: usize,
    /// The part of `unflushed` counted in `StreamMetrics::queued_bytes` (while the socket blocks).
    gauged: usize,
    /// When the live frames in `unflushed` were serialized (for the `written` stage).
    made: Vec<Instant>,
    /// Since when the socket has not taken a flush.
    blocked_since: Option<Instant>,
    last_ping: Instant,
    /// The last timestamp queued to the client (a stalled client is told to resume after it).
    last_ts: Option<Timestamp>,
    /// In its shard's to-do queue.
    queued: bool,
    /// The reading side, until the shard starts the connection's reader on it. The reader starts
    /// only once the shard holds the connection, so its report of a close cannot come first.
    incoming: Option<SplitStream<WebSocket>>,
    reader: Option<JoinHandle<()>>,
    _slot: ConnectionSlot,
}

/// What a shard's pass over one connection left it as.
enum Served {
    /// Everything it had is written.
    Idle,
    /// Its socket (or its lock) would block; retried at the shard's next wake-up.
    Blocked,
    /// It ended (its last messages written): close it.
    Done,
    /// The socket failed.
    Broken,
}

/// What a pass over connections shares.
struct Pass<'a> {
    hub: &'a Hub,
    metrics: &'a StreamMetrics,
    max_backlog_bytes: usize,
    to_pump: &'a mut LocalHistogram,
    to_written: &'a mut LocalHistogram,
}

impl Conn {
    fn queue_start(&mut self, frames: Vec<Frame>) {
        for f in frames {
            match self.encoding.encode(&f) {
                Ok(bytes) => {
                    self.last_ts = f.ts.or(self.last_ts);
                    self.must.push_back(text(bytes));
                }
                Err(message) => {
                    self.end_with_error(&message);
                    return;
                }
            }
        }
    }

    fn end_with_error(&mut self, message: &str) {
        if !self.ending {
            self.must.push_back(text(self.encoding.error(&self.view, message)));
            self.ending = true;
        }
    }

    /// Writes what the connection has, as far as its socket takes it without blocking.
    fn serve(&mut self, cx: &mut Context<'_>, pass: &mut Pass<'_>) -> Served {
        loop {
            if self.unflushed > 0 {
                match Pin::new(&mut self.sink).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushed(pass),
                    Poll::Ready(Err(_)) => return Served::Broken,
                    Poll::Pending => return self.blocked(pass),
                }
            }
            if self.ending && self.must.is_empty() {
                return Served::Done;
            }
            // Queue messages while the socket takes them, up to one flush's worth.
            while self.unflushed < COALESCE_BYTES {
                match Pin::new(&mut self.sink).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Served::Broken,
                    Poll::Pending if self.unflushed > 0 => break,
                    Poll::Pending => return self.blocked(pass),
                }
                let Some(msg) = self.next_message(pass) else { break };
                let len = match &msg {
                    Message::Text(t) => t.len(),
                    _ => 0,
                };
                if Pin::new(&mut self.sink).start_send(msg).is_err() {
                    return Served::Broken;
                }
                self.unflushed += len.max(1);
            }
            if self.unflushed == 0 {
                return if self.ending && self.must.is_empty() { Served::Done } else { Served::Idle };
            }
        }
    }

    /// The next message to write: what must go first, then the backlog, then live frames.
    fn next_message(&mut self, pass: &mut Pass<'_>) -> Option<Message> {
        loop {
            if let Some(m) = self.must.pop_front() {
                return Some(m);
            }
            if self.ending {
                return None;
            }
            if !self.backlog.is_empty() {
                self.release_backlog(pass);
                continue;
            }
            match self.updates.try_recv() {
                Ok(frame) => {
                    if frame.kind == FrameKind::Error {
                        self.queue_start(vec![frame]);
                        self.ending = true;
                        continue;
                    }
                    let bytes = match self.encoding.encode(&frame) {
                        Ok(b) => b,
                        Err(message) => {
                            self.end_with_error(&message);
                            continue;
                        }
                    };
                    pass.to_pump.record(frame.made.elapsed());
                    self.made.push(frame.made);
                    self.last_ts = frame.ts.or(self.last_ts);
                    return Some(text(bytes));
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(_)) => self.backlog.overflow(&self.share),
                Err(TryRecvError::Closed) => self.end_with_error("view was dropped"),
            }
        }
    }

    /// Queues the backlog: its consolidated update, or `resync` and a fresh snapshot.
    fn release_backlog(&mut self, pass: &mut Pass<'_>) {
        if let Some(frame) = self.backlog.take(&self.view, &self.share) {
            self.queue_start(vec![frame]);
            return;
        }
        match resubscribe(pass.hub, &self.view, pass.metrics) {
            Ok(mut sub) if sub.id == self.view_id => {
                let frames = start_frames(&self.view, &mut sub);
                self.updates = sub.updates;
                self.queue_start(frames);
            }
            Ok(_) => self.end_with_error("view was dropped"),
            Err(e) => self.end_with_error(&e.to_string()),
        }
    }

    fn flushed(&mut self, pass: &mut Pass<'_>) {
        if !self.made.is_empty() {
            let now = Instant::now();
            for made in self.made.drain(..) {
                pass.to_written.record(now.saturating_duration_since(made));
            }
        }
        if self.gauged > 0 {
            pass.metrics.queued_bytes.fetch_sub(std::mem::take(&mut self.gauged), Ordering::Relaxed);
        }
        self.unflushed = 0;
        self.blocked_since = None;
    }

    /// The socket would block: count its unflushed bytes as queued, and consolidate the frames
    /// that arrive meanwhile instead of queueing them.
    fn blocked(&mut self, pass: &mut Pass<'_>) -> Served {
        self.blocked_since.get_or_insert_with(Instant::now);
        if self.unflushed > self.gauged {
            pass.metrics.queued_bytes.fetch_add(self.unflushed - self.gauged, Ordering::Relaxed);
            self.gauged = self.unflushed;
        }
        while !self.ending {
            match self.updates.try_recv() {
                Ok(frame) => {
                    if !self.backlog.absorb(&frame, &self.share, pass.max_backlog_bytes) {
                        self.queue_start(vec![frame]);
                        self.ending = true;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_)) => self.backlog.overflow(&self.share),
                Err(TryRecvError::Closed) => self.end_with_error("view was dropped"),
            }
        }
        Served::Blocked
    }

    /// Gives back what the connection counted in the shared gauges.
    fn release(&mut self, metrics: &StreamMetrics) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
        if self.gauged > 0 {
            metrics.queued_bytes.fetch_sub(std::mem::take(&mut self.gauged), Ordering::Relaxed);
        }
    }
}

/// A view's frames as one shard sees them: a receiver that only says "a frame arrived".
struct Bell {
    frames: BroadcastStream<Frame>,
    conns: Vec<u64>,
}

/// Why a connection leaves its shard.
enum Leave {
    /// The client closed, or the socket broke.
    Gone,
    /// The view ended; its last messages are written: send a close frame.
    Done,
    /// The client did not take a write for the stall timeout.
    Stalled,
}

struct Shard {
    hub: Arc<Hub>,
    config: Arc<GatewayConfig>,
    metrics: Arc<StreamMetrics>,
    new: mpsc::Receiver<Conn>,
    /// Where connections' readers report that their client closed (the shard holds a sender, so
    /// this never ends).
    gone: mpsc::Receiver<u64>,
    gone_tx: mpsc::Sender<u64>,
    conns: HashMap<u64, Conn>,
    bells: HashMap<GlobalId, Bell>,
    /// Connections whose socket would block (retried at every wake-up).
    blocked: Vec<u64>,
    todo: VecDeque<u64>,
    tick: tokio::time::Interval,
    to_pump: LocalHistogram,
    to_written: LocalHistogram,
}

impl Shard {
    fn new(hub: Arc<Hub>, config: Arc<GatewayConfig>, metrics: Arc<StreamMetrics>, new: mpsc::Receiver<Conn>) -> Shard {
        // Stall and ping deadlines are checked on this tick: a stalled client is closed at most
        // a quarter of the stall timeout late.
        let period = (config.stall_timeout.min(config.ping_interval) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Readers never wait long here: the shard drains this at every wake-up.
        let (gone_tx, gone) = mpsc::channel(HANDOFF_QUEUE);
        Shard {
            hub,
            config,
            metrics,
            new,
            gone,
            gone_tx,
            conns: HashMap::new(),
            bells: HashMap::new(),
            blocked: Vec::new(),
            todo: VecDeque::new(),
            tick,
            to_pump: LocalHistogram::default(),
            to_written: LocalHistogram::default(),
        }
    }

    async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll(cx)).await;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut open = true;
        loop {
            match self.new.poll_recv(cx) {
                Poll::Ready(Some(conn)) => self.add(conn),
                Poll::Ready(None) => {
                    open = false;
                    break;
                }
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(id)) = self.gone.poll_recv(cx) {
            self.leave(id, Leave::Gone);
        }
        self.ring(cx);
        while self.tick.poll_tick(cx).is_ready() {
            self.on_tick();
        }
        for i in 0..self.blocked.len() {
            let id = self.blocked[i];
            self.enqueue(id);
        }
        let mut served = 0;
        while let Some(id) = self.todo.pop_front() {
            if served == SERVICE_BATCH {
                self.todo.push_front(id);
                self.flush_timeline();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            served += 1;
            self.serve(id, cx);
        }
        self.flush_timeline();
        if !open && self.conns.is_empty() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Queues every connection of each view that got frames.
    fn ring(&mut self, cx: &mut Context<'_>) {
        let mut ended = Vec::new();
        let mut rung = Vec::new();
        for (view, bell) in &mut self.bells {
            let mut rang = false;
            loop {
                match bell.frames.poll_next_unpin(cx) {
                    // A frame, or the bell's own lag: either way there is something to take.
                    Poll::Ready(Some(_)) => rang = true,
                    Poll::Ready(None) => {
                        ended.push(*view);
                        rang = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if rang {
                rung.extend_from_slice(&bell.conns);
            }
        }
        for view in ended {
            self.bells.remove(&view);
        }
        for id in rung {
            self.enqueue(id);
        }
    }

    fn enqueue(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if !conn.queued {
                conn.queued = true;
                self.todo.push_back(id);
            }
        }
    }

    fn add(&mut self, mut conn: Conn) {
        let id = conn.id;
        if let Some(incoming) = conn.incoming.take() {
            conn.reader = Some(tokio::spawn(read_client(incoming, id, self.gone_tx.clone())));
        }
        let bell = self
            .bells
            .entry(conn.view_id)
            .or_insert_with(|| Bell { frames: BroadcastStream::new(conn.updates.resubscribe()), conns: Vec::new() });
        bell.conns.push(id);
        self.conns.insert(id, conn);
        self.enqueue(id);
    }

    fn serve(&mut self, id: u64, cx: &mut Context<'_>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.queued = false;
        let was_blocked = conn.blocked_since.is_some();
        let mut pass = Pass {
            hub: &self.hub,
            metrics: &self.metrics,
            max_backlog_bytes: self.config.client_buffer_bytes,
            to_pump: &mut self.to_pump,
            to_written: &mut self.to_written,
        };
        match conn.serve(cx, &mut pass) {
            Served::Idle if was_blocked => self.blocked.retain(|b| *b != id),
            Served::Idle => {}
            Served::Blocked if !was_blocked => self.blocked.push(id),
            Served::Blocked => {}
            Served::Done => self.leave(id, Leave::Done),
            Served::Broken => self.leave(id, Leave::Gone),
        }
    }

    fn leave(&mut self, id: u64, why: Leave) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        self.blocked.retain(|b| *b != id);
        if let Some(bell) = self.bells.get_mut(&conn.view_id) {
            bell.conns.retain(|c| *c != id);
            if bell.conns.is_empty() {
                self.bells.remove(&conn.view_id);
            }
        }
        conn.release(&self.metrics);
        let timeout = self.config.stall_timeout;
        match why {
            Leave::Gone => {}
            Leave::Done => {
                tokio::spawn(close_after(conn.sink, Vec::new(), None, timeout));
            }
            Leave::Stalled => {
                let reason = match conn.last_ts {
                    Some(t) => format!("client stalled; resume with since={t}"),
                    None => "client stalled".to_string(),
                };
                tracing::info!(%reason, "closing a stalled WebSocket");
                self.metrics.stalled_closes.fetch_add(1, Ordering::Relaxed);
                // The close frame queues behind what the client has not read: give it a few
                // seconds to get through, then drop the connection regardless.
                let frame = CloseFrame { code: 1008, reason: reason.into() };
                tokio::spawn(close_after(conn.sink, Vec::new(), Some(frame), Duration::from_secs(5)));
            }
        }
    }

    /// Closes stalled clients and pings the others when their interval is up.
    fn on_tick(&mut self) {
        let now = Instant::now();
        let stalled: Vec<u64> = self
            .blocked
            .iter()
            .copied()
            .filter(|id| {
                let since = self.conns.get(id).and_then(|c| c.blocked_since);
                since.is_some_and(|s| now.saturating_duration_since(s) >= self.config.stall_timeout)
            })
            .collect();
        for id in stalled {
            self.leave(id, Leave::Stalled);
        }
        let mut ping = Vec::new();
        for (id, conn) in &mut self.conns {
            if conn.blocked_since.is_none()
                && !conn.ending
                && now.saturating_duration_since(conn.last_ping) >= self.config.ping_interval
            {
                conn.last_ping = now;
                conn.must.push_back(Message::Ping(Bytes::new()));
                ping.push(*id);
            }
        }
        for id in ping {
            self.enqueue(id);
        }
    }

    fn flush_timeline(&mut self) {
        self.to_pump.flush_into(&self.metrics.frame_to_pump);
        self.to_written.flush_into(&self.metrics.frame_to_written);
    }
}
