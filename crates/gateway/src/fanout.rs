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

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame as WsFrame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
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

/// Frames written with one `writev` at most (each is a header and a payload).
const MAX_FRAMES_PER_WRITE: usize = 64;

/// One WebSocket frame as the shard writes it: its header, formatted once, and its payload, shared
/// with every other client of the same hub frame. Control replies that the reader's protocol
/// library formatted (pongs, the answer to a client's close) are payloads without a header.
struct Out {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
}

impl Out {
    /// An unfragmented, unmasked server frame (RFC 6455 5.1: a server never masks).
    fn frame(opcode: OpCode, payload: Bytes) -> Out {
        let mut header = [0u8; 10];
        let mut cursor = std::io::Cursor::new(&mut header[..]);
        let head = FrameHeader { opcode, ..FrameHeader::default() };
        // Ten bytes hold every unmasked header (2, plus 8 for the longest length).
        head.format(payload.len() as u64, &mut cursor).expect("an unmasked header fits ten bytes");
        let header_len = cursor.position() as u8;
        Out { header, header_len, payload }
    }

    fn text(payload: Bytes) -> Out {
        Out::frame(OpCode::Data(Data::Text), payload)
    }

    fn ping() -> Out {
        Out::frame(OpCode::Control(Control::Ping), Bytes::new())
    }

    fn pong(payload: Bytes) -> Out {
        Out::frame(OpCode::Control(Control::Pong), payload)
    }

    fn close(frame: Option<CloseFrame>) -> Out {
        // The whole frame, as the protocol library formats it (the code, then the reason).
        let mut payload = Vec::new();
        if let Err(e) = WsFrame::close(frame).format(&mut payload) {
            tracing::debug!(error = %e, "close frame not formatted");
        }
        Out { header: [0; 10], header_len: 0, payload: Bytes::from(payload) }
    }

    /// Bytes already formatted as whole frames.
    fn raw(bytes: Bytes) -> Out {
        Out { header: [0; 10], header_len: 0, payload: bytes }
    }

    fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload.len()
    }

    /// Its bytes from `offset` on, as at most two slices.
    fn slices(&self, offset: usize) -> [&[u8]; 2] {
        let header = &self.header[..usize::from(self.header_len)];
        if offset < header.len() {
            [&header[offset..], &self.payload[..]]
        } else {
            [&[], &self.payload[offset - header.len()..]]
        }
    }
}

/// What a connection's reader tells its shard, which owns the writing side and answers between
/// whole frames.
enum ReaderEvent {
    /// The client pinged: answer with this payload.
    Ping(u64, Bytes),
    /// The client closed (or broke the protocol): write this close frame after what must go, then end.
    Closed(u64, Option<CloseFrame>),
    /// The client's side ended or broke.
    Gone(u64),
}

/// The reading side of a connection as the reader's WebSocket sees it: reads come from the
/// socket; what the library would write on its own (its automatic pongs and close reply) is
/// dropped, since the shard answers from the reader's events instead.
struct ReadSide(OwnedReadHalf);

impl AsyncRead for ReadSide {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

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

    /// Serves one upgraded single-view WebSocket (its TCP socket, and what the client sent after
    /// its upgrade request): subscribes on the client's behalf, then hands the writing side to a
    /// shard and the reading side to a task of its own.
    pub async fn serve(
        &self,
        tcp: TcpStream,
        read_buf: Vec<u8>,
        view: Arc<str>,
        encoding: Encoding,
        since: Option<Timestamp>,
        slot: ConnectionSlot,
    ) {
        let (read, mut writer) = tcp.into_split();
        let mut sub = match self.hub.subscribe(&view, since) {
            Ok(s) => s,
            Err(e) => {
                let error = Out::text(encoding.error(&view, &e.to_string()));
                let close = Out::close(None);
                let _ =
                    tokio::time::timeout(self.config.stall_timeout, write_all(&mut writer, &[error, close], 0)).await;
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
            writer,
            updates: sub.updates,
            must: VecDeque::new(),
            ending: false,
            pong: None,
            backlog: Backlog::Empty,
            share: BacklogShare::new(self.metrics.clone()),
            out: VecDeque::new(),
            out_offset: 0,
            unflushed: 0,
            gauged: 0,
            made: Vec::new(),
            blocked_since: None,
            last_ping: Instant::now(),
            last_ts: None,
            queued: false,
            incoming: Some((read, read_buf)),
            reader: None,
            _slot: slot,
        };
        conn.queue_start(start);
        // A shard that is gone (the server is shutting down) drops the connection.
        let _ = shard.send(conn).await;
    }
}

/// Reads (and discards) what the client sends until it closes, through the protocol library
/// (frame sizes, masking, fragments, UTF-8), and tells the shard what to answer: pings, and the
/// close (the client's, echoed, or one saying why its message was refused).
async fn read_client(read: OwnedReadHalf, read_buf: Vec<u8>, id: u64, events: mpsc::Sender<ReaderEvent>, max: usize) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(crate::stream::WS_READ_BUFFER_BYTES)
        .write_buffer_size(0);
    let mut incoming = WebSocketStream::from_partially_read(ReadSide(read), read_buf, Role::Server, Some(config)).await;
    let event = loop {
        match incoming.next().await {
            // A ping the shard's queue has no room for goes unanswered (RFC 6455 5.5.3 allows
            // answering only the latest); the shard keeps one pending pong per connection.
            Some(Ok(Message::Ping(payload))) => {
                let _ = events.try_send(ReaderEvent::Ping(id, payload));
            }
            Some(Ok(Message::Close(frame))) => break ReaderEvent::Closed(id, frame),
            Some(Ok(_)) => {}
            // A message over the limit or a protocol violation: say why in the close frame.
            Some(Err(e @ (WsError::Capacity(_) | WsError::Protocol(_)))) => {
                let code = if matches!(e, WsError::Capacity(_)) { CloseCode::Size } else { CloseCode::Protocol };
                break ReaderEvent::Closed(id, Some(CloseFrame { code, reason: e.to_string().into() }));
            }
            Some(Err(_)) | None => break ReaderEvent::Gone(id),
        }
    };
    let _ = events.send(event).await;
}

/// Writes `outs` (from `offset` into the first) in full.
async fn write_all(writer: &mut OwnedWriteHalf, outs: &[Out], offset: usize) -> std::io::Result<()> {
    let mut offset = offset;
    for out in outs {
        for part in out.slices(offset) {
            writer.write_all(part).await?;
        }
        offset = 0;
    }
    writer.flush().await
}

/// Finishes what a leaving connection had half written, then writes `last` (a close frame),
/// giving up after `timeout`.
fn close_after(mut conn: Conn, last: Option<Out>, timeout: Duration) {
    tokio::spawn(async move {
        let mut outs: Vec<Out> = conn.out.drain(..).collect();
        outs.extend(last);
        let _ = tokio::time::timeout(timeout, write_all(&mut conn.writer, &outs, conn.out_offset)).await;
    });
}

/// One client of one view, as a shard holds it.
struct Conn {
    id: u64,
    view_id: GlobalId,
    view: Arc<str>,
    encoding: Encoding,
    writer: OwnedWriteHalf,
    updates: broadcast::Receiver<Frame>,
    /// Messages that go before any live frame, whatever the budget: the start (snapshot or
    /// replay), a resync and its snapshot, a consolidated backlog, a final error and the close
    /// frame after it, a ping.
    must: VecDeque<Out>,
    /// Close once `must` is written (the view ended, or an error was sent, or the client closed).
    ending: bool,
    /// The answer to the client's latest ping, not yet taken for the socket: one at most, however
    /// fast the client pings.
    pong: Option<Bytes>,
    backlog: Backlog,
    share: BacklogShare,
    /// Frames taken for the socket and not yet written whole, and how much of the first is.
    out: VecDeque<Out>,
    out_offset: usize,
    /// Bytes in `out` not yet written.
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
    /// The reading side (and what the client sent with its upgrade), until the shard starts the
    /// connection's reader on it. The reader starts only once the shard holds the connection, so
    /// its report of a close cannot come first.
    incoming: Option<(OwnedReadHalf, Vec<u8>)>,
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
    formatted: &'a mut Formatted,
}

/// The live frame a shard formatted last: the hub's payload and the whole WebSocket frame around
/// it. Every client of a view whose encoding shares the hub's bytes gets the same payload, so the
/// shard formats each frame once and each client's write is one contiguous `send`.
#[derive(Default)]
struct Formatted {
    last: Option<(Bytes, Bytes)>,
}

impl Formatted {
    fn text(&mut self, payload: Bytes) -> Out {
        if let Some((p, whole)) = &self.last {
            // `p` is held here, so an equal address and length is the same allocation's bytes.
            if p.as_ptr() == payload.as_ptr() && p.len() == payload.len() {
                return Out::raw(whole.clone());
            }
        }
        let out = Out::text(payload.clone());
        let mut whole = Vec::with_capacity(out.len());
        for part in out.slices(0) {
            whole.extend_from_slice(part);
        }
        let whole = Bytes::from(whole);
        self.last = Some((payload, whole.clone()));
        Out::raw(whole)
    }
}

impl Conn {
    fn queue_start(&mut self, frames: Vec<Frame>) {
        for f in frames {
            match self.encoding.encode(&f) {
                Ok(bytes) => {
                    self.last_ts = f.ts.or(self.last_ts);
                    self.must.push_back(Out::text(bytes));
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
            self.must.push_back(Out::text(self.encoding.error(&self.view, message)));
            self.finish();
        }
    }

    /// Ends the connection once what must go is written, with a close frame after it.
    fn finish(&mut self) {
        self.finish_with(None);
    }

    fn finish_with(&mut self, close: Option<CloseFrame>) {
        if !self.ending {
            self.must.push_back(Out::close(close));
            self.ending = true;
        }
    }

    /// Writes what the connection has, as far as its socket takes it without blocking.
    fn serve(&mut self, cx: &mut Context<'_>, pass: &mut Pass<'_>) -> Served {
        loop {
            // Take messages, up to one write's worth.
            while self.unflushed < COALESCE_BYTES && self.out.len() < MAX_FRAMES_PER_WRITE {
                let Some(out) = self.next_message(pass) else { break };
                self.unflushed += out.len();
                self.out.push_back(out);
            }
            if self.out.is_empty() {
                return if self.ending { Served::Done } else { Served::Idle };
            }
            match self.write(cx) {
                Poll::Ready(Ok(())) => self.flushed(pass),
                Poll::Ready(Err(_)) => return Served::Broken,
                Poll::Pending => return self.blocked(pass),
            }
        }
    }

    /// Writes `out` whole (`Ready`), or until the socket would block (`Pending`, with the shard's
    /// waker registered for its writability).
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let result = if self.out.len() == 1 {
                // One frame (the usual case): a plain `send`, not the `writev` path.
                let tcp: &TcpStream = self.writer.as_ref();
                match self.out[0].slices(self.out_offset) {
                    [[], rest] | [rest, []] => tcp.try_write(rest),
                    parts => tcp.try_write_vectored(&parts.map(std::io::IoSlice::new)),
                }
            } else {
                let mut slices = [std::io::IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE];
                let mut n = 0;
                for (i, out) in self.out.iter().enumerate() {
                    for part in out.slices(if i == 0 { self.out_offset } else { 0 }) {
                        if !part.is_empty() {
                            slices[n] = std::io::IoSlice::new(part);
                            n += 1;
                        }
                    }
                }
                let tcp: &TcpStream = self.writer.as_ref();
                tcp.try_write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match self.writer.as_ref().poll_write_ready(cx)
                {
                    // Writable again already: try once more.
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                },
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Drops `written` bytes from the front of `out`.
    fn advance(&mut self, mut written: usize) {
        self.unflushed = self.unflushed.saturating_sub(written);
        while let Some(first) = self.out.front() {
            let left = first.len() - self.out_offset;
            if written < left {
                self.out_offset += written;
                return;
            }
            written -= left;
            self.out_offset = 0;
            self.out.pop_front();
        }
    }

    /// The next message to write: what must go first, then the backlog, then live frames.
    fn next_message(&mut self, pass: &mut Pass<'_>) -> Option<Out> {
        loop {
            if let Some(m) = self.must.pop_front() {
                return Some(m);
            }
            if self.ending {
                return None;
            }
            if let Some(payload) = self.pong.take() {
                return Some(Out::pong(payload));
            }
            if !self.backlog.is_empty() {
                self.release_backlog(pass);
                continue;
            }
            match self.updates.try_recv() {
                Ok(frame) => {
                    if frame.kind == FrameKind::Error {
                        self.queue_start(vec![frame]);
                        self.finish();
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
                    return Some(pass.formatted.text(bytes));
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
                        self.finish();
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
    /// Where connections' readers send control replies and report that their client closed (the
    /// shard holds a sender, so this never ends).
    events: mpsc::Receiver<ReaderEvent>,
    events_tx: mpsc::Sender<ReaderEvent>,
    conns: HashMap<u64, Conn>,
    bells: HashMap<GlobalId, Bell>,
    /// Connections whose socket would block (retried at every wake-up).
    blocked: Vec<u64>,
    todo: VecDeque<u64>,
    tick: tokio::time::Interval,
    to_pump: LocalHistogram,
    to_written: LocalHistogram,
    formatted: Formatted,
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
        let (events_tx, events) = mpsc::channel(HANDOFF_QUEUE);
        Shard {
            hub,
            config,
            metrics,
            new,
            events,
            events_tx,
            conns: HashMap::new(),
            bells: HashMap::new(),
            blocked: Vec::new(),
            todo: VecDeque::new(),
            tick,
            to_pump: LocalHistogram::default(),
            to_written: LocalHistogram::default(),
            formatted: Formatted::default(),
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
        while let Poll::Ready(Some(event)) = self.events.poll_recv(cx) {
            match event {
                ReaderEvent::Ping(id, payload) => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.pong = Some(payload);
                        self.enqueue(id);
                    }
                }
                ReaderEvent::Closed(id, frame) => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.finish_with(frame);
                        self.enqueue(id);
                    }
                }
                ReaderEvent::Gone(id) => self.leave(id, Leave::Gone),
            }
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
        if let Some((read, read_buf)) = conn.incoming.take() {
            let max = self.config.max_ws_message_bytes;
            conn.reader = Some(tokio::spawn(read_client(read, read_buf, id, self.events_tx.clone(), max)));
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
            formatted: &mut self.formatted,
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
        match why {
            Leave::Gone => {}
            // The close frame (ours, or the answer to the client's) is written.
            Leave::Done => {}
            Leave::Stalled => {
                let reason = match conn.last_ts {
                    Some(t) => format!("client stalled; resume with since={t}"),
                    None => "client stalled".to_string(),
                };
                tracing::info!(%reason, "closing a stalled WebSocket");
                self.metrics.stalled_closes.fetch_add(1, Ordering::Relaxed);
                // The close frame queues behind what the client has not read: give it a few
                // seconds to get through, then drop the connection regardless.
                let frame = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
                close_after(conn, Some(Out::close(Some(frame))), Duration::from_secs(5));
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
                conn.must.push_back(Out::ping());
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
