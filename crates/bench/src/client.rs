//! The load: many WebSocket (or SSE) clients on loopback, each bound to one of several source
//! addresses 127.0.0.k so more than one address's ~28k ephemeral ports can be used.
//!
//! Every client parses each message (`type`, `ts`, and the view's sequence number), and records
//! what it received inside the measurement window only. Latency = receive wall-clock time minus
//! the message's `ts` (ms since the epoch, so the resolution is 1 ms).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Measurement phases shared by every client.
pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const DONE: u8 = 2;

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// What every client shares: the phase, and when the driver sent each sequence number.
pub struct Shared {
    pub phase: AtomicU8,
    /// `sent_ms[seq]`: when the load driver issued the change that produced `seq` (0 = unknown).
    pub sent_ms: Vec<AtomicU64>,
    /// Clients that have received their first frame.
    pub ready: AtomicU64,
    /// Clients whose WebSocket handshake (or SSE response) completed.
    pub handshaken: AtomicU64,
    done: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub fn new(max_seq: usize) -> Arc<Shared> {
        Arc::new(Shared {
            phase: AtomicU8::new(WARMUP),
            sent_ms: (0..max_seq).map(|_| AtomicU64::new(0)).collect(),
            ready: AtomicU64::new(0),
            handshaken: AtomicU64::new(0),
            done: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::SeqCst);
        if phase == DONE {
            self.done.send_replace(true);
        }
    }

    pub fn record_sent(&self, seq: u64, ms: u64) {
        if let Some(slot) = self.sent_ms.get(seq as usize) {
            slot.store(ms, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Reads everything as fast as it can.
    Fast,
    /// Reads its first frame, then never reads again (a small receive buffer, so the server sees
    /// it quickly).
    Stalled,
}

#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub server: SocketAddr,
    pub path: String,
    pub transport: Transport,
    pub behaviour: Behaviour,
    pub source: Ipv4Addr,
}

/// What one client saw (sent from a client process to the bench as JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientResult {
    pub connected: bool,
    /// From starting to connect until the first frame (the snapshot) was in.
    pub first_frame_us: Option<u64>,
    /// Whether that first frame was a `snapshot` (viewcast's complete view; baselines send none).
    pub first_frame_snapshot: bool,
    pub error: Option<String>,
    /// Whether the server closed the stream before the end of the run.
    pub closed_early: bool,
    // Inside the measurement window:
    pub frames: u64,
    pub bytes: u64,
    pub updates: u64,
    pub progress: u64,
    pub resyncs: u64,
    /// Sequence numbers skipped between consecutive updates (lost or merged changes).
    pub gaps: u64,
    /// Receive time minus the message's `ts`, per update, in microseconds.
    pub lat_us: Vec<u64>,
    /// Receive time minus the driver's send time of the change, per update, in microseconds.
    pub e2e_us: Vec<u64>,
    /// Receive time minus `ts`, per progress message, in microseconds.
    pub progress_lat_us: Vec<u64>,
}

#[derive(Deserialize)]
struct RowDiff {
    row: Vec<serde_json::Value>,
    diff: i64,
}

/// The fields of a message the bench looks at (viewcast's messages, and the baselines').
#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<&'a str>,
    ts: Option<u64>,
    rows: Option<Vec<RowDiff>>,
    // The 2020 design posts one row per message.
    row: Option<Vec<serde_json::Value>>,
    diff: Option<i64>,
}

impl Msg<'_> {
    /// The view's sequence number after this message: the first column of an inserted row.
    fn seq(&self) -> Option<u64> {
        let from_rows = self
            .rows
            .iter()
            .flatten()
            .filter(|r| r.diff > 0)
            .filter_map(|r| r.row.first().and_then(|v| v.as_u64()))
            .max();
        let single = match (&self.row, self.diff) {
            (Some(r), Some(d)) if d > 0 => r.first().and_then(|v| v.as_u64()),
            _ => None,
        };
        from_rows.or(single)
    }
}

struct State {
    shared: Arc<Shared>,
    res: ClientResult,
    last_seq: Option<u64>,
    started: Instant,
    /// The connection slot, given back once the handshake is done.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl State {
    fn on_message(&mut self, bytes: &[u8]) {
        let recv_us = now_us();
        let first = self.res.first_frame_us.is_none();
        if first {
            self.res.first_frame_us = Some(self.started.elapsed().as_micros() as u64);
            self.shared.ready.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(msg) = serde_json::from_slice::<Msg>(bytes) else { return };
        if first {
            self.res.first_frame_snapshot = msg.ty == Some("snapshot");
        }
        let measuring = self.shared.phase.load(Ordering::Relaxed) == MEASURE;
        let lat = msg.ts.map(|ts| recv_us.saturating_sub(ts * 1000));
        if measuring {
            self.res.frames += 1;
            self.res.bytes += bytes.len() as u64;
        }
        match msg.ty {
            Some("snapshot") => {
                self.last_seq = msg.seq();
                return;
            }
            Some("resync") => {
                if measuring {
                    self.res.resyncs += 1;
                }
                self.last_seq = None;
                return;
            }
            Some("progress") => {
                if measuring {
                    self.res.progress += 1;
                    self.res.progress_lat_us.extend(lat);
                }
                return;
            }
            _ => {}
        }
        let Some(seq) = msg.seq() else { return };
        if measuring {
            self.res.updates += 1;
            self.res.lat_us.extend(lat);
            let sent = self.shared.sent_ms.get(seq as usize).map(|s| s.load(Ordering::Relaxed)).unwrap_or(0);
            if sent > 0 {
                self.res.e2e_us.push(recv_us.saturating_sub(sent * 1000));
            } else if let Some(l) = lat {
                self.res.e2e_us.push(l);
            }
            if let Some(last) = self.last_seq {
                self.res.gaps += seq.saturating_sub(last + 1);
            }
        }
        self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
    }
}

async fn connect_tcp(spec: &ClientSpec, small_rcvbuf: bool) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(spec.source), 0))?;
    if small_rcvbuf {
        sock.set_recv_buffer_size(4096)?;
    }
    sock.set_nodelay(true)?;
    sock.connect(spec.server).await
}

/// Runs one client until the phase is DONE (or `deadline`), then reports.
pub async fn run_client(
    spec: ClientSpec,
    shared: Arc<Shared>,
    deadline: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> ClientResult {
    let mut st = State {
        shared: shared.clone(),
        res: ClientResult::default(),
        last_seq: None,
        started: Instant::now(),
        permit: Some(permit),
    };
    let outcome = tokio::time::timeout_at(deadline.into(), async {
        match spec.transport {
            Transport::WebSocket => run_ws(&spec, &mut st).await,
            Transport::Sse => run_sse(&spec, &mut st).await,
        }
    })
    .await;
    match outcome {
        Ok(Err(e)) => st.res.error = Some(e),
        Ok(Ok(())) => {}
        Err(_) => {} // deadline: the run is over
    }
    st.res
}

async fn wait_done(shared: &Shared) {
    let mut rx = shared.done.subscribe();
    let _ = rx.wait_for(|d| *d).await;
}

async fn run_ws(spec: &ClientSpec, st: &mut State) -> Result<(), String> {
    let stalled = spec.behaviour == Behaviour::Stalled;
    let tcp = connect_tcp(spec, stalled).await.map_err(|e| format!("connect: {e}"))?;
    let url = format!("ws://{}{}", spec.server, spec.path);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    st.res.connected = true;
    st.shared.handshaken.fetch_add(1, Ordering::Relaxed);
    st.permit = None;
    let (_sink, mut stream) = ws.split();
    let shared = st.shared.clone();
    let done = wait_done(&shared);
    tokio::pin!(done);
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    st.on_message(t.as_bytes());
                    if stalled {
                        // Never read again; keep the socket open until the run ends.
                        wait_done(&st.shared).await;
                        return Ok(());
                    }
                }
                Some(Ok(Message::Binary(b))) => st.on_message(&b),
                Some(Ok(Message::Close(_))) | None => {
                    if st.shared.phase.load(Ordering::Relaxed) != DONE {
                        st.res.closed_early = true;
                    }
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if st.shared.phase.load(Ordering::Relaxed) != DONE {
                        st.res.closed_early = true;
                        return Err(format!("read: {e}"));
                    }
                    return Ok(());
                }
            },
            _ = &mut done => return Ok(()),
        }
    }
}

async fn run_sse(spec: &ClientSpec, st: &mut State) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(spec.source))
        .http1_only()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}{}", spec.server, spec.path);
    let resp =
        client.get(url).header("accept", "text/event-stream").send().await.map_err(|e| format!("connect: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    st.res.connected = true;
    st.shared.handshaken.fetch_add(1, Ordering::Relaxed);
    st.permit = None;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let shared = st.shared.clone();
    let done = wait_done(&shared);
    tokio::pin!(done);
    loop {
        tokio::select! {
            chunk = body.next() => match chunk {
                Some(Ok(c)) => {
                    buf.extend_from_slice(&c);
                    while let Some(end) = find(&buf, b"\n\n") {
                        let event: Vec<u8> = buf.drain(..end + 2).collect();
                        let mut data = Vec::new();
                        for line in event.split(|b| *b == b'\n') {
                            if let Some(d) = line.strip_prefix(b"data:") {
                                data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
                            }
                        }
                        if !data.is_empty() {
                            st.on_message(&data);
                            if spec.behaviour == Behaviour::Stalled {
                                wait_done(&st.shared).await;
                                return Ok(());
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    st.res.closed_early = st.shared.phase.load(Ordering::Relaxed) != DONE;
                    return Err(format!("read: {e}"));
                }
                None => {
                    st.res.closed_early = st.shared.phase.load(Ordering::Relaxed) != DONE;
                    return Ok(());
                }
            },
            _ = &mut done => return Ok(()),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The source address of client `i`, spread over `addresses` addresses 127.0.0.`first`,
/// 127.0.0.`first + 1`, ...
pub fn source_for(i: usize, first: u8, addresses: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, first.saturating_add((i % addresses.max(1)) as u8))
}
