//! Writer shards: the socket side of every WebSocket stream, single-view and multiplexed.
//!
//! A few shard tasks per runtime worker each own a share of the connections. A shard holds one
//! receiver per view it serves (its "bell"); when the hub broadcasts a frame, the bell wakes the
//! shard once, and the shard walks the connections subscribed to that view: each takes the frame
//! from its own subscription (`try_recv`, no waker registered), and the shard writes it to the
//! socket at once. A frame to N clients costs N writes but one wake-up per shard, not one per
//! connection. A connection holds one subscription (`/api/v1/stream/{view}`) or any number
//! (`/api/v1/ws`); its reader is a task of its own that wakes only when the client sends
//! something, and tells the shard what to do: answer a ping, start or stop a subscription, send
//! a reply, close.
//!
//! A socket that would block keeps its unflushed bytes and is retried whenever the shard wakes;
//! meanwhile each subscription's frames are consolidated into one pending update ([`Backlog`],
//! the slow-client policy of `feed`), dropped for `resync` and a fresh snapshot past the budget,
//! and the client is closed with a resume point once it has not taken a write for the stall
//! timeout. Several pending messages go out with one write (up to [`COALESCE_BYTES`]).
//!
//! Never touches: the hub's state (only its frames and subscriptions), Server-Sent Events (they
//! run `feed::Pump` tasks).

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame as WsFrame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use viewcast_hub::timeline::LocalHistogram;
use viewcast_hub::{Frame, FrameKind, Hub, HubError};
use viewcast_plan::GlobalId;
use viewcast_repr::Timestamp;

use crate::auth::ConnectionSlot;
use crate::feed::{resubscribe, start_frames, Backlog, BacklogShare, Encoding, StreamMetrics};
use crate::ws::{MuxReader, QueryView};
use crate::GatewayConfig;

/// Most bytes written with one flush (several messages per syscall when a client is behind).
const COALESCE_BYTES: usize = 64 << 10;

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
/// with every other client of the same hub frame. Frames formatted whole (the close frame, a
/// cached live frame) are payloads without a header.
struct Out {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
    /// A reply to a multiplexed client, or the last of a subscription's start frames, holds its
    /// share of the connection's budget until it is written (or dropped with the connection):
    /// what bounds the replies and snapshots queued for a client that does not read.
    _permit: Option<OwnedSemaphorePermit>,
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
        Out { header, header_len, payload, _permit: None }
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
        Out::raw(Bytes::from(payload))
    }

    /// Bytes already formatted as whole frames.
    fn raw(bytes: Bytes) -> Out {
        Out { header: [0; 10], header_len: 0, payload: bytes, _permit: None }
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
pub(crate) enum ReaderEvent {
    /// The client pinged: answer with this payload.
    Ping(u64, Bytes),
    /// The client closed (or broke the protocol, or is closed by its reader): write this close
    /// frame after what must go, then end.
    Closed(u64, Option<CloseFrame>),
    /// The client's side ended or broke.
    Gone(u64),
    /// A multiplexed client's new subscription, with the frames it starts with.
    Subscribe(u64, Box<NewSub>),
    /// A multiplexed client stops the subscription with this id.
    Unsubscribe(u64, Arc<str>),
    /// A reply to a multiplexed client (an error message), holding its share of the budget.
    Reply(u64, Bytes, OwnedSemaphorePermit),
}

/// Where a connection's reader reports to.
pub(crate) struct Link {
    pub id: u64,
    pub events: mpsc::Sender<ReaderEvent>,
}

/// What a connection's reader does with the client's text and binary messages.
pub(crate) trait Messages {
    /// Handles one message; `false` closes the connection (after what the reader queued).
    async fn message(&mut self, link: &Link, message: Message) -> bool;

    /// A connection silent for this long is closed (`None`: never, the stall timeout and the
    /// pings watch it instead).
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }

    /// Told before the connection is closed for idleness.
    async fn idle(&mut self, _link: &Link) {}
}

/// A single-view stream's client has nothing to say: its messages are read and dropped.
struct Ignore;

impl Messages for Ignore {
    async fn message(&mut self, _link: &Link, _message: Message) -> bool {
        true
    }
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

/// One subscription of a connection, as its shard holds it.
pub(crate) struct Sub {
    view_id: GlobalId,
    view: Arc<str>,
    /// How its messages are encoded; on a multiplexed connection, with the client's id for it.
    encoding: Encoding,
    updates: broadcast::Receiver<Frame>,
    backlog: Backlog,
    share: BacklogShare,
    /// The last timestamp queued to the client (a stalled client is told to resume after it).
    last_ts: Option<Timestamp>,
    /// An ad-hoc query's transient view, dropped with the subscription.
    _query: Option<QueryView>,
}

/// A subscription to hand to a shard, and the frames it starts with.
pub(crate) struct NewSub {
    sub: Sub,
    start: Vec<Frame>,
    /// The start's share of a multiplexed connection's budget, given back once it is written.
    permit: Option<OwnedSemaphorePermit>,
}

impl NewSub {
    /// Subscribes to `view` (resuming after `since`).
    pub(crate) fn open(
        hub: &Hub,
        view: &str,
        since: Option<Timestamp>,
        encoding: Encoding,
        metrics: &Arc<StreamMetrics>,
    ) -> Result<NewSub, HubError> {
        let mut sub = hub.subscribe(view, since)?;
        let start = start_frames(view, &mut sub);
        let sub = Sub {
            view_id: sub.id,
            view: Arc::from(view),
            encoding,
            updates: sub.updates,
            backlog: Backlog::Empty,
            share: BacklogShare::new(metrics.clone()),
            last_ts: None,
            _query: None,
        };
        Ok(NewSub { sub, start, permit: None })
    }

    /// The size of the frames it starts with.
    pub(crate) fn start_bytes(&self) -> usize {
        self.start.iter().map(|f| f.bytes.len()).sum()
    }

    /// Holds `permit` until its start is written.
    pub(crate) fn holding(mut self, permit: OwnedSemaphorePermit) -> NewSub {
        self.permit = Some(permit);
        self
    }

    /// Drops `query` (an ad-hoc query's view) with the subscription.
    pub(crate) fn owning(mut self, query: QueryView) -> NewSub {
        self.sub._query = Some(query);
        self
    }
}

/// How a connection's reader starts.
struct Incoming {
    read: OwnedReadHalf,
    /// What the client sent right after its upgrade request.
    read_buf: Vec<u8>,
    /// `None`: a single-view stream, whose messages are ignored.
    mux: Option<Box<MuxReader>>,
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
        let new = match NewSub::open(&self.hub, &view, since, encoding.clone(), &self.metrics) {
            Ok(s) => s,
            Err(e) => {
                let error = Out::text(encoding.error(&view, &e.to_string()));
                let close = Out::close(None);
                let _ =
                    tokio::time::timeout(self.config.stall_timeout, write_all(&mut writer, &[error, close], 0)).await;
                return;
            }
        };
        let mut conn = Conn::new(self.next_id.fetch_add(1, Ordering::Relaxed), writer, None, slot);
        conn.incoming = Some(Incoming { read, read_buf, mux: None });
        conn.subs.push(new.sub);
        conn.queue_start(0, new.start);
        self.hand_over(conn).await;
    }

    /// Serves one upgraded multiplexed WebSocket (`/api/v1/ws`): a connection with no
    /// subscriptions yet, whose reader (`reader`) starts and stops them as the client asks.
    pub async fn serve_mux(&self, tcp: TcpStream, read_buf: Vec<u8>, reader: MuxReader, slot: ConnectionSlot) {
        let (read, writer) = tcp.into_split();
        let mut conn = Conn::new(self.next_id.fetch_add(1, Ordering::Relaxed), writer, Some(reader.open_ids()), slot);
        conn.incoming = Some(Incoming { read, read_buf, mux: Some(Box::new(reader)) });
        self.hand_over(conn).await;
    }

    async fn hand_over(&self, conn: Conn) {
        let shards = self.shards();
        let shard = &shards[self.next_shard.fetch_add(1, Ordering::Relaxed) % shards.len()];
        // A shard that is gone (the server is shutting down) drops the connection.
        let _ = shard.send(conn).await;
    }
}

/// Reads what the client sends until it closes, through the protocol library (frame sizes,
/// masking, fragments, UTF-8), hands its text and binary messages to `messages`, and tells the
/// shard what to answer: pings, and the close (the client's, echoed, or one saying why its message
/// was refused).
async fn read_client<M: Messages>(read: OwnedReadHalf, read_buf: Vec<u8>, link: Link, max: usize, mut messages: M) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(crate::stream::WS_READ_BUFFER_BYTES)
        .write_buffer_size(0);
    let mut incoming = WebSocketStream::from_partially_read(ReadSide(read), read_buf, Role::Server, Some(config)).await;
    let id = link.id;
    let idle = messages.idle_timeout();
    let event = loop {
        let next = match idle {
            Some(limit) => match tokio::time::timeout(limit, incoming.next()).await {
                Ok(next) => next,
                Err(_) => {
                    messages.idle(&link).await;
                    break ReaderEvent::Closed(id, None);
                }
            },
            None => incoming.next().await,
        };
        match next {
            // A ping the shard's queue has no room for goes unanswered (RFC 6455 5.5.3 allows
            // answering only the latest); the shard keeps one pending pong per connection.
            Some(Ok(Message::Ping(payload))) => {
                let _ = link.events.try_send(ReaderEvent::Ping(id, payload));
            }
            Some(Ok(Message::Close(frame))) => break ReaderEvent::Closed(id, frame),
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if !messages.message(&link, message).await {
                    break ReaderEvent::Closed(id, None);
                }
            }
            Some(Ok(_)) => {}
            // A message over the limit or a protocol violation: say why in the close frame.
            Some(Err(e @ (WsError::Capacity(_) | WsError::Protocol(_)))) => {
                let code = if matches!(e, WsError::Capacity(_)) { CloseCode::Size } else { CloseCode::Protocol };
                break ReaderEvent::Closed(id, Some(CloseFrame { code, reason: e.to_string().into() }));
            }
            Some(Err(_)) | None => break ReaderEvent::Gone(id),
        }
    };
    let _ = link.events.send(event).await;
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

/// One client connection, as a shard holds it.
struct Conn {
    id: u64,
    writer: OwnedWriteHalf,
    /// Its subscriptions: exactly one on a single-view stream (held inline: the pass over a
    /// view's connections reads no other allocation), any number when multiplexed.
    subs: SmallVec<[Sub; 1]>,
    /// On a multiplexed connection, the subscription ids its reader counts as open (it checks
    /// new ones against them); a subscription that ends here leaves the set.
    open_ids: Option<Arc<Mutex<HashSet<Arc<str>>>>>,
    /// The subscription a pass looks at first (they take turns).
    next_sub: usize,
    /// Views of the subscriptions that ended since the shard last looked (their bells forget the
    /// connection).
    left: Vec<GlobalId>,
    /// Messages that go before any live frame, whatever the budget: a subscription's start
    /// (snapshot or replay), a resync and its snapshot, a consolidated backlog, replies and
    /// errors, the close frame, a ping.
    must: VecDeque<Out>,
    /// Close once `must` is written (a single view ended, an error was sent, or the client closed).
    ending: bool,
    /// The answer to the client's latest ping, not yet taken for the socket: one at most, however
    /// fast the client pings.
    pong: Option<Bytes>,
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
    /// In its shard's to-do queue.
    queued: bool,
    /// The reading side, until the shard starts the connection's reader on it. The reader starts
    /// only once the shard holds the connection, so its reports cannot come first.
    incoming: Option<Incoming>,
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

/// What one subscription had for the socket.
enum Taken {
    /// A live frame.
    Frame(Out),
    /// Nothing now.
    Nothing,
    /// Something changed (messages queued in `must`, the subscription ended): look again.
    Again,
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

/// The live frame a shard formatted last: the hub's frame, the encoding it was formatted for, and
/// the whole WebSocket frame. Every subscription of a view with the same encoding (no id, or the
/// same id: dashboards subscribe with the view's name) gets the same bytes, so the shard encodes
/// and formats each frame once and each client's write is one contiguous `send`.
#[derive(Default)]
struct Formatted {
    last: Option<Cached>,
}

struct Cached {
    /// The hub's bytes, held so that an equal address and length is the same frame.
    frame: Bytes,
    id: Option<Arc<str>>,
    key: Option<Vec<usize>>,
    whole: Bytes,
}

impl Formatted {
    fn live(&mut self, frame: &Frame, encoding: &Encoding) -> Result<Out, String> {
        let key = encoding.key.as_ref().map(|(cols, _)| cols);
        if let Some(c) = &self.last {
            if c.frame.as_ptr() == frame.bytes.as_ptr()
                && c.frame.len() == frame.bytes.len()
                && c.id == encoding.id
                && c.key.as_ref() == key
            {
                return Ok(Out::raw(c.whole.clone()));
            }
        }
        let out = Out::text(encoding.encode(frame)?);
        let mut whole = Vec::with_capacity(out.len());
        for part in out.slices(0) {
            whole.extend_from_slice(part);
        }
        let whole = Bytes::from(whole);
        self.last = Some(Cached {
            frame: frame.bytes.clone(),
            id: encoding.id.clone(),
            key: key.cloned(),
            whole: whole.clone(),
        });
        Ok(Out::raw(whole))
    }
}

impl Conn {
    fn new(
        id: u64,
        writer: OwnedWriteHalf,
        open_ids: Option<Arc<Mutex<HashSet<Arc<str>>>>>,
        slot: ConnectionSlot,
    ) -> Conn {
        Conn {
            id,
            writer,
            subs: SmallVec::new(),
            open_ids,
            next_sub: 0,
            left: Vec::new(),
            must: VecDeque::new(),
            ending: false,
            pong: None,
            out: VecDeque::new(),
            out_offset: 0,
            unflushed: 0,
            gauged: 0,
            made: Vec::new(),
            blocked_since: None,
            last_ping: Instant::now(),
            queued: false,
            incoming: None,
            reader: None,
            _slot: slot,
        }
    }

    /// Queues subscription `i`'s start frames; false if that ended it (a frame it cannot encode).
    fn queue_start(&mut self, i: usize, frames: Vec<Frame>) -> bool {
        for f in frames {
            let sub = &mut self.subs[i];
            match sub.encoding.encode(&f) {
                Ok(bytes) => {
                    sub.last_ts = f.ts.or(sub.last_ts);
                    self.must.push_back(Out::text(bytes));
                }
                Err(message) => {
                    self.end_sub(i, Some(&message));
                    return false;
                }
            }
        }
        true
    }

    /// Ends subscription `i`, telling the client why when `error` says: a single-view connection
    /// closes with it; a multiplexed one drops it and serves the others.
    fn end_sub(&mut self, i: usize, error: Option<&str>) {
        if self.ending {
            return;
        }
        if let Some(message) = error {
            let sub = &self.subs[i];
            self.must.push_back(Out::text(sub.encoding.error(&sub.view, message)));
        }
        match &self.open_ids {
            None => self.finish(),
            Some(open) => {
                let sub = self.subs.remove(i);
                if let Some(id) = &sub.encoding.id {
                    open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
                }
                self.left.push(sub.view_id);
            }
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

    /// The next message to write: what must go first, then a pong, then each subscription's
    /// backlog or live frames, the subscriptions taking turns.
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
            let n = self.subs.len();
            let mut again = false;
            for k in 0..n {
                let i = (self.next_sub + k) % n;
                match self.take(i, pass) {
                    Taken::Frame(out) => {
                        self.next_sub = i + 1;
                        return Some(out);
                    }
                    Taken::Nothing => {}
                    Taken::Again => {
                        again = true;
                        break;
                    }
                }
            }
            if !again {
                return None;
            }
        }
    }

    /// What subscription `i` has for the socket: its backlog first, then its next live frame.
    fn take(&mut self, i: usize, pass: &mut Pass<'_>) -> Taken {
        if !self.subs[i].backlog.is_empty() {
            self.release_backlog(i, pass);
            return Taken::Again;
        }
        let sub = &mut self.subs[i];
        match sub.updates.try_recv() {
            Ok(frame) if frame.kind == FrameKind::Error => {
                // The view ended: its error is the subscription's last message.
                let last =
                    sub.encoding.encode(&frame).unwrap_or_else(|message| sub.encoding.error(&sub.view, &message));
                self.must.push_back(Out::text(last));
                self.end_sub(i, None);
                Taken::Again
            }
            Ok(frame) => match pass.formatted.live(&frame, &sub.encoding) {
                Ok(out) => {
                    pass.to_pump.record(frame.made.elapsed());
                    self.made.push(frame.made);
                    sub.last_ts = frame.ts.or(sub.last_ts);
                    Taken::Frame(out)
                }
                Err(message) => {
                    self.end_sub(i, Some(&message));
                    Taken::Again
                }
            },
            Err(TryRecvError::Empty) => Taken::Nothing,
            Err(TryRecvError::Lagged(_)) => {
                sub.backlog.overflow(&sub.share);
                Taken::Again
            }
            Err(TryRecvError::Closed) => {
                self.end_sub(i, Some("view was dropped"));
                Taken::Again
            }
        }
    }

    /// Queues subscription `i`'s backlog: its consolidated update, or `resync` and a fresh snapshot.
    fn release_backlog(&mut self, i: usize, pass: &mut Pass<'_>) {
        let sub = &mut self.subs[i];
        if let Some(frame) = sub.backlog.take(&sub.view, &sub.share) {
            self.queue_start(i, vec![frame]);
            return;
        }
        match resubscribe(pass.hub, &sub.view, pass.metrics) {
            Ok(mut new) if new.id == sub.view_id => {
                let frames = start_frames(&sub.view, &mut new);
                sub.updates = new.updates;
                self.queue_start(i, frames);
            }
            Ok(_) => self.end_sub(i, Some("view was dropped")),
            Err(e) => self.end_sub(i, Some(&e.to_string())),
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
    /// that arrive meanwhile into each subscription's backlog instead of queueing them.
    fn blocked(&mut self, pass: &mut Pass<'_>) -> Served {
        self.blocked_since.get_or_insert_with(Instant::now);
        if self.unflushed > self.gauged {
            pass.metrics.queued_bytes.fetch_add(self.unflushed - self.gauged, Ordering::Relaxed);
            self.gauged = self.unflushed;
        }
        let mut i = 0;
        while !self.ending && i < self.subs.len() {
            let sub = &mut self.subs[i];
            let end = loop {
                match sub.updates.try_recv() {
                    Ok(frame) => {
                        if !sub.backlog.absorb(&frame, &sub.share, pass.max_backlog_bytes) {
                            // The view ended: its error frame is the subscription's last message.
                            break Some(Some(frame));
                        }
                    }
                    Err(TryRecvError::Empty) => break None,
                    Err(TryRecvError::Lagged(_)) => sub.backlog.overflow(&sub.share),
                    Err(TryRecvError::Closed) => break Some(None),
                }
            };
            let Some(last) = end else {
                i += 1;
                continue;
            };
            let before = self.subs.len();
            match last {
                Some(frame) => {
                    if self.queue_start(i, vec![frame]) {
                        self.end_sub(i, None);
                    }
                }
                None => self.end_sub(i, Some("view was dropped")),
            }
            if self.subs.len() == before {
                i += 1;
            }
        }
        Served::Blocked
    }

    /// Where a stalled client should resume, for its close frame.
    fn stall_reason(&self) -> String {
        match self.subs.as_slice() {
            [sub] => match sub.last_ts {
                Some(t) => format!("client stalled; resume with since={t}"),
                None => "client stalled".to_string(),
            },
            [] => "client stalled".to_string(),
            _ => "client stalled; resume each subscription with since= its last ts".to_string(),
        }
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

/// A view's frames as one shard sees them: a receiver that only says "a frame arrived", and the
/// connections with a subscription to the view (a connection with two is listed twice).
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
    /// Where connections' readers send what the shard should do (the shard holds a sender, so
    /// this never ends).
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
            self.on_event(event);
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

    fn on_event(&mut self, event: ReaderEvent) {
        let id = match &event {
            ReaderEvent::Ping(id, _)
            | ReaderEvent::Closed(id, _)
            | ReaderEvent::Gone(id)
            | ReaderEvent::Subscribe(id, _)
            | ReaderEvent::Unsubscribe(id, _)
            | ReaderEvent::Reply(id, _, _) => *id,
        };
        if let ReaderEvent::Gone(_) = event {
            self.leave(id, Leave::Gone);
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.ending {
            // Its close frame is queued: nothing more goes after it.
            return;
        }
        match event {
            ReaderEvent::Ping(_, payload) => conn.pong = Some(payload),
            ReaderEvent::Closed(_, frame) => conn.finish_with(frame),
            ReaderEvent::Reply(_, bytes, permit) => {
                let mut reply = Out::text(bytes);
                reply._permit = Some(permit);
                conn.must.push_back(reply);
            }
            ReaderEvent::Subscribe(_, new) => {
                let NewSub { sub, start, permit } = *new;
                if conn.subs.iter().any(|s| s.encoding.id == sub.encoding.id) {
                    // The reader checks ids first; this is for a subscription that ended here
                    // while its id was being reused.
                    conn.must.push_back(Out::text(
                        sub.encoding.error(&sub.view, "a subscription with this id is already open"),
                    ));
                } else {
                    let bell = self.bells.entry(sub.view_id).or_insert_with(|| Bell {
                        frames: BroadcastStream::new(sub.updates.resubscribe()),
                        conns: Vec::new(),
                    });
                    bell.conns.push(id);
                    conn.subs.push(sub);
                    // A start it cannot encode ends it at once (and the bell forgets it).
                    let queued = conn.must.len();
                    conn.queue_start(conn.subs.len() - 1, start);
                    // Queued last, so written last: the budget comes back once all of it is.
                    if conn.must.len() > queued {
                        if let Some(last) = conn.must.back_mut() {
                            last._permit = permit;
                        }
                    }
                }
            }
            ReaderEvent::Unsubscribe(_, sub_id) => {
                if let Some(i) = conn.subs.iter().position(|s| s.encoding.id.as_ref() == Some(&sub_id)) {
                    let sub = conn.subs.remove(i);
                    self.forget(sub.view_id, id);
                }
            }
            ReaderEvent::Gone(_) => unreachable!("handled above"),
        }
        self.enqueue(id);
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
        if let Some(Incoming { read, read_buf, mux }) = conn.incoming.take() {
            let max = self.config.max_ws_message_bytes;
            let link = Link { id, events: self.events_tx.clone() };
            conn.reader = Some(match mux {
                None => tokio::spawn(read_client(read, read_buf, link, max, Ignore)),
                Some(reader) => tokio::spawn(read_client(read, read_buf, link, max, *reader)),
            });
        }
        for sub in &conn.subs {
            let bell = self
                .bells
                .entry(sub.view_id)
                .or_insert_with(|| Bell { frames: BroadcastStream::new(sub.updates.resubscribe()), conns: Vec::new() });
            bell.conns.push(id);
        }
        self.conns.insert(id, conn);
        self.enqueue(id);
    }

    /// Takes one listing of connection `id` off `view`'s bell (dropping the bell once no one is on it).
    fn forget(&mut self, view: GlobalId, id: u64) {
        if let Some(bell) = self.bells.get_mut(&view) {
            if let Some(at) = bell.conns.iter().position(|c| *c == id) {
                bell.conns.swap_remove(at);
            }
            if bell.conns.is_empty() {
                self.bells.remove(&view);
            }
        }
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
        let served = conn.serve(cx, &mut pass);
        let left = std::mem::take(&mut conn.left);
        for view in left {
            self.forget(view, id);
        }
        match served {
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
        let views: Vec<GlobalId> = conn.subs.iter().map(|s| s.view_id).chain(conn.left.drain(..)).collect();
        for view in views {
            self.forget(view, id);
        }
        conn.release(&self.metrics);
        match why {
            Leave::Gone => {}
            // The close frame (ours, or the answer to the client's) is written.
            Leave::Done => {}
            Leave::Stalled => {
                let reason = conn.stall_reason();
                // Its subscriptions (and any ad-hoc query's view) end now, not with the close.
                conn.subs.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use viewcast_hub::wire;
    use viewcast_repr::{Datum, Row};

    fn whole(out: &Out) -> Vec<u8> {
        out.slices(0).concat()
    }

    /// The shard's one-entry cache gives every subscription exactly what encoding its frame for it
    /// alone would: across frames, ids and keys, in an order that hits and misses the cache.
    #[test]
    fn formatted_frames_equal_encoding_each_subscription_alone() {
        // An insert and a delete: a keyed encoding lists the deleted row's key, so keys differ.
        let rows = |n: i64| {
            let row = |a: i64, b: i64| Row::new(vec![Datum::Int(a), Datum::Int(b)]);
            Arc::new(vec![(row(n, n * 10), 1), (row(n + 100, 7), -1)])
        };
        let frames = [wire::update("v", 5, rows(1)), wire::update("v", 6, rows(2)), wire::progress("v", 7)];
        let key = |col: usize| Some((vec![col], vec![format!("c{col}")]));
        let id = |s: &str| Some(Arc::from(s));
        // Neighbours differ in one respect each: the id, the key, or none (a cache hit).
        let encodings = [
            Encoding { id: None, key: None },
            Encoding { id: id("s"), key: None },
            Encoding { id: id("s"), key: None },
            Encoding { id: id("t"), key: None },
            Encoding { id: id("t"), key: key(0) },
            Encoding { id: id("t"), key: key(0) },
            Encoding { id: id("t"), key: key(1) },
            Encoding { id: None, key: key(1) },
            Encoding { id: None, key: None },
        ];
        let mut formatted = Formatted::default();
        for frame in &frames {
            for encoding in encodings.iter().chain(encodings.iter().rev()) {
                let alone = Out::text(encoding.encode(frame).unwrap());
                assert_eq!(whole(&formatted.live(frame, encoding).unwrap()), whole(&alone), "{encoding:?}");
            }
        }
    }
}
