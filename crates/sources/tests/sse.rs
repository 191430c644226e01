//! The SSE source against a real HTTP server on port 0 that replays the fixture with unique ids,
//! cuts connections mid-event, mixes line endings, and slips in malformed, oversize and canary
//! events: every good event arrives exactly once, in order, and every bad one is counted.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use viewcast_sources::{Datum, Row, SourceHandle, SseConfig, SseSource};

const FIXTURE: &str = include_str!("fixtures/recentchange-sample.sse");
const MAX_EVENT_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Good,
    Canary,
    BadJson,
    BadUtf8,
    Oversize,
}

fn kind(i: u64) -> Kind {
    match i {
        _ if i % 97 == 13 => Kind::BadJson,
        _ if i % 101 == 17 => Kind::BadUtf8,
        _ if i % 211 == 5 => Kind::Oversize,
        _ if i % 50 == 7 => Kind::Canary,
        _ => Kind::Good,
    }
}

#[derive(Clone, Copy)]
struct Options {
    total: u64,
    gzip: bool,
    /// Answer the first request with a 503.
    fail_first: bool,
}

#[derive(Default)]
struct ServerLog {
    /// The `Last-Event-ID` each request carried, in order.
    requests: Mutex<Vec<Option<String>>>,
}

/// A tiny deterministic PRNG for the server's cut points and write sizes.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn fixture_events() -> Vec<Value> {
    FIXTURE.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

/// Event `i` as it goes on the wire, lines ended by `nl`.
fn event_bytes(i: u64, templates: &[Value], nl: &str) -> Vec<u8> {
    let mut e = templates[(i % templates.len() as u64) as usize].clone();
    e["meta"]["offset"] = i.into();
    e["meta"]["id"] = format!("evt-{i}").into();
    let mut out = format!(
        "event: message{nl}id: [{{\"topic\":\"eqiad.mediawiki.recentchange\",\"partition\":0,\"offset\":{i}}}]{nl}"
    )
    .into_bytes();
    let mut data = |payload: &[u8]| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(payload);
        out.extend_from_slice(nl.as_bytes());
    };
    match kind(i) {
        Kind::BadJson => data(format!("{{\"broken\": {i}").as_bytes()),
        Kind::BadUtf8 => data(b"{\"title\": \"\xFF\xFE not utf-8\"}"),
        Kind::Oversize => {
            e["padding"] = "x".repeat(MAX_EVENT_BYTES + 10).into();
            data(serde_json::to_string(&e).unwrap().as_bytes());
        }
        Kind::Canary => {
            e["meta"]["domain"] = "canary".into();
            data(serde_json::to_string(&e).unwrap().as_bytes());
        }
        Kind::Good if i % 10 == 3 => {
            // Multi-line data: the lines join with \n, which JSON takes as whitespace.
            for line in serde_json::to_string_pretty(&e).unwrap().lines() {
                data(line.as_bytes());
            }
        }
        Kind::Good => data(serde_json::to_string(&e).unwrap().as_bytes()),
    }
    if i.is_multiple_of(7) {
        out.extend_from_slice(format!(":heartbeat{nl}").as_bytes());
    }
    out.extend_from_slice(nl.as_bytes());
    out
}

async fn start_server(opts: Options) -> (SocketAddr, Arc<ServerLog>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(ServerLog::default());
    let server_log = Arc::clone(&log);
    tokio::spawn(async move {
        let templates = Arc::new(fixture_events());
        for conn in 0u64.. {
            let Ok((socket, _)) = listener.accept().await else { return };
            let (log, templates) = (Arc::clone(&server_log), Arc::clone(&templates));
            tokio::spawn(async move {
                let _ = serve(socket, conn, opts, &log, &templates).await;
            });
        }
    });
    (addr, log)
}

async fn serve(
    mut socket: TcpStream,
    conn: u64,
    opts: Options,
    log: &ServerLog,
    templates: &[Value],
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 || request.len() > 64 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request).into_owned();
    let last_id = request.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("last-event-id").then(|| value.trim().to_owned())
    });
    log.requests.lock().unwrap().push(last_id.clone());
    if opts.fail_first && conn == 0 {
        let resp = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return socket.write_all(resp.as_bytes()).await;
    }
    let start = match &last_id {
        None => 0,
        Some(id) => serde_json::from_str::<Value>(id).unwrap()[0]["offset"].as_u64().unwrap() + 1,
    };
    let mut rng = Lcg(conn.wrapping_mul(0x9e37_79b9) + 1);
    let nl = ["\n", "\r\n", "\r"][(conn % 3) as usize];
    let mut body = format!(":ok{nl}retry: 5{nl}{nl}").into_bytes();
    let end = (start + 20 + rng.below(200)).min(opts.total);
    for i in start..end {
        body.extend(event_bytes(i, templates, nl));
    }
    let idle = end == opts.total;
    if !idle {
        // Cut the connection in the middle of the next event.
        let next = event_bytes(end, templates, nl);
        body.extend_from_slice(&next[..1 + rng.below(next.len() as u64 - 1) as usize]);
    }
    let mut head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n".to_owned();
    if opts.gzip {
        head.push_str("Content-Encoding: gzip\r\n");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body)?;
        body = gz.finish()?;
        if !idle && conn % 2 == 1 {
            // Also cut the gzip stream itself, which the client sees as a decoding error.
            body.truncate(body.len() * 3 / 4);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await?;
    let mut rest = &body[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(3000) as usize).min(rest.len());
        socket.write_all(&rest[..n]).await?;
        rest = &rest[n..];
        if rng.below(8) == 0 {
            tokio::task::yield_now().await;
        }
    }
    if idle {
        // Hold the connection open, as the real stream does, until the client leaves.
        let _ = tokio::time::timeout(Duration::from_secs(60), socket.read(&mut buf)).await;
    }
    Ok(())
}

fn offset(row: &Row) -> u64 {
    match row.get(0) {
        Datum::Jsonb(j) => j.to_value()["meta"]["offset"].as_u64().unwrap(),
        other => panic!("expected jsonb, got {other:?}"),
    }
}

fn config(addr: SocketAddr) -> SseConfig {
    let mut c = SseConfig::new(format!("http://{addr}/v2/stream/recentchange"));
    c.max_event_bytes = MAX_EVENT_BYTES;
    c.batch_size = 64;
    // Only the stream's `retry: 5` keeps reconnects quick: this checks it is honored.
    c.initial_backoff = Duration::from_secs(20);
    c.max_backoff = Duration::from_secs(20);
    c
}

/// Collects rows until `want` have arrived or the deadline passes.
fn collect(rx: &crossbeam_channel::Receiver<Vec<Row>>, want: usize, deadline: Duration) -> Vec<u64> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < want && start.elapsed() < deadline {
        if let Ok(batch) = rx.recv_timeout(Duration::from_millis(100)) {
            got.extend(batch.iter().map(offset));
        }
    }
    got
}

fn run_replay(opts: Options) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, log) = runtime.block_on(start_server(opts));
    let (tx, rx) = crossbeam_channel::bounded(4);
    let handle: SourceHandle = SseSource::spawn(config(addr), tx).unwrap();
    let want: Vec<u64> = (0..opts.total).filter(|&i| kind(i) == Kind::Good).collect();
    let got = collect(&rx, want.len(), Duration::from_secs(120));
    // Nothing more may trickle in: no duplicates after the last event either.
    std::thread::sleep(Duration::from_millis(200));
    let extra: Vec<u64> = rx.try_iter().flatten().map(|r| offset(&r)).collect();
    let stats = handle.stats().snapshot();
    let start = Instant::now();
    handle.stop().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "stop took {:?}", start.elapsed());

    assert_eq!(got.len(), want.len(), "missing events; stats {stats:?}");
    assert_eq!(got, want, "events lost, duplicated or reordered");
    assert!(extra.is_empty(), "{extra:?}");
    assert_eq!(stats.events_in, want.len() as u64);
    let bad = (0..opts.total).filter(|&i| matches!(kind(i), Kind::BadJson | Kind::BadUtf8 | Kind::Oversize)).count();
    let requests = log.requests.lock().unwrap().clone();
    assert!(requests.len() > 5, "the server should have cut many connections: {}", requests.len());
    assert_eq!(requests[0], None);
    assert!(requests[1..].iter().all(|r| r.is_some()), "every reconnect resumes: {requests:?}");
    if opts.gzip || opts.fail_first {
        // Cut gzip streams and the 503 are failed attempts, counted too.
        assert!(stats.errors > bad as u64, "{stats:?}");
    } else {
        assert_eq!(stats.errors, bad as u64, "{stats:?}");
    }
    assert!(stats.last_error.is_some());
}

#[test]
fn replay_with_cuts_loses_and_duplicates_nothing() {
    run_replay(Options { total: 3000, gzip: false, fail_first: false });
}

#[test]
fn gzip_replay_with_cuts_loses_and_duplicates_nothing() {
    run_replay(Options { total: 1500, gzip: true, fail_first: false });
}

#[test]
fn an_http_error_is_counted_and_retried() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, _log) = runtime.block_on(start_server(Options { total: 300, gzip: false, fail_first: true }));
    let (tx, rx) = crossbeam_channel::bounded(4);
    let mut c = config(addr);
    c.initial_backoff = Duration::from_millis(20);
    let handle = SseSource::spawn(c, tx).unwrap();
    let want = (0..300).filter(|&i| kind(i) == Kind::Good).count();
    let got = collect(&rx, want, Duration::from_secs(60));
    assert_eq!(got.len(), want);
    let stats = handle.stats().snapshot();
    assert!(stats.errors >= 1 && stats.last_error.is_some(), "{stats:?}");
    handle.stop().unwrap();
}

#[test]
fn resumes_from_a_configured_last_event_id() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, log) = runtime.block_on(start_server(Options { total: 700, gzip: false, fail_first: false }));
    let (tx, rx) = crossbeam_channel::bounded(4);
    let mut c = config(addr);
    c.last_event_id = Some(r#"[{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":599}]"#.into());
    let handle = SseSource::spawn(c, tx).unwrap();
    let want: Vec<u64> = (600..700).filter(|&i| kind(i) == Kind::Good).collect();
    let got = collect(&rx, want.len(), Duration::from_secs(60));
    handle.stop().unwrap();
    assert_eq!(got, want);
    assert!(log.requests.lock().unwrap()[0].as_deref().unwrap().contains("\"offset\":599"));
}

#[test]
fn dropping_the_receiver_or_the_handle_ends_the_source() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, _log) = runtime.block_on(start_server(Options { total: 100_000, gzip: false, fail_first: false }));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let handle = SseSource::spawn(config(addr), tx).unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    drop(rx);
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(start.elapsed() < Duration::from_secs(10), "source did not notice the receiver is gone");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().unwrap();

    // Blocked on a full channel, then the handle is dropped.
    let (tx, rx) = crossbeam_channel::bounded(1);
    let handle = SseSource::spawn(config(addr), tx).unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    drop(handle);
    assert!(start.elapsed() < Duration::from_secs(5));
    // The sender is gone with the thread.
    while rx.recv_timeout(Duration::from_secs(5)).is_ok() {}
    assert!(rx.recv().is_err());
}
