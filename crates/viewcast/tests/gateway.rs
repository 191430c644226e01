//! Gateway mode against a real upstream: a second `viewcast serve` process (its pgwire SUBSCRIBE
//! follows Materialize's format). A writer changes the upstream's table at random; an oracle
//! subscribes to the upstream directly and records its contents at every timestamp; WebSocket
//! clients of the gateway must see, at each timestamp they are sent, exactly the upstream's
//! contents at that timestamp, every timestamp once and in order, across connection loss and
//! an upstream restart.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{dir, free_port, http_get_json, Proc};
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};

type Contents = BTreeMap<String, i64>;

const UPSTREAM_SQL: &str = "CREATE TABLE t (k text, n bigint);
INSERT INTO t VALUES ('k0', 1), ('k1', 2);
CREATE VIEW totals AS SELECT k, sum(n) AS total, count(*) AS c FROM t GROUP BY k;";

/// A local view over the upstream view (runs on the gateway).
const GATEWAY_SQL: &str = "CREATE VIEW big AS SELECT k, total FROM totals WHERE total > 10;";

impl Proc {
    async fn upstream(pg_port: u16, name: &str) -> Proc {
        let sql = dir().join("upstream.sql");
        std::fs::write(&sql, UPSTREAM_SQL).unwrap();
        let pg = format!("127.0.0.1:{pg_port}");
        Proc::start(
            &[
                "serve",
                "--sql",
                sql.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--pgwire-listen",
                &pg,
                "--tick-ms",
                "20",
            ],
            &dir().join(format!("{name}.log")),
        )
        .await
    }

    async fn gateway(upstream: SocketAddr, name: &str) -> Proc {
        let sql = dir().join("gateway.sql");
        std::fs::write(&sql, GATEWAY_SQL).unwrap();
        let url = format!("postgres://materialize@{upstream}/materialize");
        Proc::start(
            &[
                "gateway",
                "--upstream",
                &url,
                "--view",
                "totals",
                "--sql",
                sql.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--pgwire-listen",
                "127.0.0.1:0",
                "--tick-ms",
                "20",
            ],
            &dir().join(format!("{name}.log")),
        )
        .await
    }
}

async fn pg(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={} port={} user=materialize", addr.ip(), addr.port()),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

fn key(k: &str, total: i64, c: i64) -> String {
    json!([k, total, c]).to_string()
}

/// The upstream's `totals` as `SELECT` returns it now.
async fn upstream_contents(addr: SocketAddr) -> Contents {
    let client = pg(addr).await.unwrap();
    let mut m = Contents::new();
    for msg in client.simple_query("SELECT k, total, c FROM totals").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
            let num = |i| r.get(i).unwrap().parse::<i64>().unwrap();
            *m.entry(key(r.get(0).unwrap(), num(1), num(2))).or_default() += 1;
        }
    }
    m
}

/// The upstream's contents at every timestamp, from its own SUBSCRIBE.
#[derive(Default)]
struct Oracle {
    /// (ts, contents after every change through ts), increasing ts.
    history: Vec<(u64, Contents)>,
    /// Every time below this is complete.
    frontier: u64,
}

impl Oracle {
    /// The contents at `ts`, if `ts` is within what this oracle saw completely.
    fn at(&self, ts: u64) -> Option<&Contents> {
        if ts >= self.frontier {
            return None;
        }
        let i = self.history.partition_point(|(t, _)| *t <= ts);
        (i > 0).then(|| &self.history[i - 1].1)
    }

    fn start(addr: SocketAddr) -> Arc<Mutex<Oracle>> {
        let oracle = Arc::new(Mutex::new(Oracle::default()));
        let o = oracle.clone();
        tokio::spawn(async move {
            let client = pg(addr).await.unwrap();
            let stream = client.copy_out("COPY (SUBSCRIBE totals WITH (PROGRESS)) TO STDOUT").await.unwrap();
            futures::pin_mut!(stream);
            let mut state = Contents::new();
            let mut pending: Vec<(u64, String, i64)> = Vec::new();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8(line).unwrap();
                    let f: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
                    let ts: u64 = f[0].parse().unwrap();
                    if f[1] == "t" {
                        pending.sort_by_key(|(t, _, _)| *t);
                        let mut o = o.lock().unwrap();
                        for (i, (t, k, d)) in pending.iter().enumerate() {
                            let e = state.entry(k.clone()).or_default();
                            *e += d;
                            if *e == 0 {
                                state.remove(k);
                            }
                            if pending.get(i + 1).is_none_or(|n| n.0 != *t) {
                                o.history.push((*t, state.clone()));
                            }
                        }
                        pending.clear();
                        o.frontier = ts;
                    } else {
                        let num = |i: usize| f[i].parse::<i64>().unwrap();
                        pending.push((ts, key(f[3], num(4), num(5)), num(2)));
                    }
                }
            }
        });
        oracle
    }
}

/// A WebSocket client of one gateway view, keeping its replica and every state it was sent.
#[derive(Default)]
struct Client {
    state: Contents,
    /// (ts, contents) after each snapshot or update message.
    seen: Vec<(u64, Contents)>,
    /// Every message's ts, in arrival order.
    ts_order: Vec<u64>,
    snapshots: usize,
    resyncs: usize,
}

impl Client {
    fn start(http: SocketAddr, view: &str) -> Arc<Mutex<Client>> {
        let client = Arc::new(Mutex::new(Client::default()));
        let c = client.clone();
        let url = format!("ws://{http}/api/v1/stream/{view}");
        tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            while let Some(Ok(msg)) = ws.next().await {
                let tokio_tungstenite::tungstenite::Message::Text(text) = msg else { continue };
                let m: Value = serde_json::from_str(&text).unwrap();
                let mut c = c.lock().unwrap();
                let ts = m["ts"].as_u64();
                match m["type"].as_str().unwrap() {
                    "snapshot" => {
                        c.snapshots += 1;
                        c.state.clear();
                        c.apply(&m["rows"]);
                    }
                    "update" => c.apply(&m["rows"]),
                    "resync" => c.resyncs += 1,
                    _ => {}
                }
                if let Some(ts) = ts {
                    c.ts_order.push(ts);
                    if m["type"] != "progress" {
                        let state = c.state.clone();
                        c.seen.push((ts, state));
                    }
                }
            }
        });
        client
    }

    fn apply(&mut self, rows: &Value) {
        for r in rows.as_array().unwrap() {
            let k = r["row"].to_string();
            let e = self.state.entry(k.clone()).or_default();
            *e += r["diff"].as_i64().unwrap();
            if *e == 0 {
                self.state.remove(&k);
            }
        }
    }
}

/// Inserts and deletes random rows of the upstream's table until stopped, reconnecting when the
/// upstream goes away.
fn start_writer(addr: Arc<Mutex<SocketAddr>>) -> Writer {
    start_writer_every(addr, Duration::from_millis(7))
}

/// A writer that changes the upstream's table about every `every` (plus the write's own time).
fn start_writer_every(addr: Arc<Mutex<SocketAddr>>, every: Duration) -> Writer {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut live: Vec<(String, i64)> = Vec::new();
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(every).await;
            if client.is_none() {
                let a = *addr.lock().unwrap();
                client = pg(a).await.ok();
                live.clear();
                continue;
            }
            let sql = {
                let mut rng = rand::thread_rng();
                if !live.is_empty() && rng.gen_bool(0.3) {
                    let (k, n) = live.swap_remove(rng.gen_range(0..live.len()));
                    format!("DELETE FROM t WHERE k = '{k}' AND n = {n}")
                } else {
                    let (k, n) = (format!("k{}", rng.gen_range(0..6)), rng.gen_range(1..10));
                    live.push((k.clone(), n));
                    format!("INSERT INTO t VALUES ('{k}', {n})")
                }
            };
            if client.as_ref().unwrap().simple_query(&sql).await.is_err() {
                client = None;
            }
        }
    });
    Writer { stop, task }
}

struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Stops writing and returns once the last write is done.
    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap();
    }
}

/// A TCP proxy whose connections can be cut, to lose the upstream without restarting it.
struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(handle);
            }
        });
        Proxy { addr, conns }
    }

    fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// Checks a client's history against oracles: strictly increasing timestamps, one snapshot, no
/// resync, and at every timestamp an oracle covers, the upstream's exact contents. Returns how
/// many timestamps were compared.
fn check(client: &Client, oracles: &[&Oracle]) -> usize {
    assert!(client.ts_order.windows(2).all(|w| w[0] < w[1]), "timestamps not strictly increasing");
    assert_eq!((client.snapshots, client.resyncs), (1, 0), "one snapshot, never a resync");
    let mut compared = 0;
    for (ts, state) in &client.seen {
        if let Some(expected) = oracles.iter().find_map(|o| o.at(*ts)) {
            assert_eq!(state, expected, "gateway client differs from the upstream at {ts}");
            compared += 1;
        }
    }
    compared
}

async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the gateway client to equal the upstream's current contents (writer stopped).
async fn settle(client: &Arc<Mutex<Client>>, upstream: SocketAddr) -> Contents {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let expected = upstream_contents(upstream).await;
        if client.lock().unwrap().state == expected {
            return expected;
        }
        assert!(Instant::now() < deadline, "gateway client never matched the upstream: {expected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `big` is `totals` filtered on `total > 10`, computed here from the upstream's contents.
fn big_of(totals: &Contents) -> Contents {
    totals
        .iter()
        .filter_map(|(k, n)| {
            let row: Value = serde_json::from_str(k).unwrap();
            (row[1].as_i64().unwrap() > 10).then(|| (json!([row[0], row[1]]).to_string(), *n))
        })
        .collect()
}

/// The local view over the upstream view (`big`) converges to its definition over the upstream's
/// final contents, with its own timestamps in order and no resync.
async fn check_local(local: &Arc<Mutex<Client>>, upstream_totals: &Contents) {
    eventually("the local view to match", Duration::from_secs(10), || {
        local.lock().unwrap().state == big_of(upstream_totals)
    })
    .await;
    let l = local.lock().unwrap();
    assert!(l.ts_order.windows(2).all(|w| w[0] < w[1]));
    assert_eq!((l.snapshots, l.resyncs), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_the_upstream_at_every_timestamp_across_connection_loss() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let upstream = Proc::upstream(free_port(), "upstream-loss").await;
        let proxy = Proxy::start(upstream.pg).await;
        let oracle = Oracle::start(upstream.pg);
        let gateway = Proc::gateway(proxy.addr, "gateway-loss").await;
        // A Postgres client of the gateway, subscribing to the upstream view through it.
        let via_pgwire = Oracle::start(gateway.pg);
        let client = Client::start(gateway.http, "totals");
        let local = Client::start(gateway.http, "big");
        let writer = start_writer(Arc::new(Mutex::new(upstream.pg)));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            proxy.cut();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        writer.stop().await;
        let expected = settle(&client, upstream.pg).await;
        eventually("the oracle to pass the last change", Duration::from_secs(10), || {
            let (o, c) = (oracle.lock().unwrap(), client.lock().unwrap());
            c.seen.last().is_some_and(|(ts, _)| o.frontier > *ts)
        })
        .await;
        let compared = check(&client.lock().unwrap(), &[&oracle.lock().unwrap()]);
        assert!(compared >= 20, "only {compared} timestamps compared");
        {
            let (o, p) = (oracle.lock().unwrap(), via_pgwire.lock().unwrap());
            let same: Vec<bool> = p.history.iter().filter_map(|(ts, c)| o.at(*ts).map(|e| e == c)).collect();
            assert!(same.len() >= 20 && same.iter().all(|s| *s), "pgwire SUBSCRIBE through the gateway differs");
        }
        let log = gateway.log();
        assert!(
            log.matches("SNAPSHOT = false").count() >= 3,
            "each loss resumed AS OF the last complete timestamp:\n{log}"
        );
        assert!(!log.contains("taking a new snapshot"), "no re-snapshot was needed:\n{log}");
        check_local(&local, &expected).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_need_no_resync_when_the_upstream_restarts() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let port = free_port();
        let upstream = Proc::upstream(port, "upstream-restart-1").await;
        let addr = upstream.pg;
        let oracle1 = Oracle::start(addr);
        let gateway = Proc::gateway(addr, "gateway-restart").await;
        let client = Client::start(gateway.http, "totals");
        let local = Client::start(gateway.http, "big");
        let writer_addr = Arc::new(Mutex::new(addr));
        let writer = start_writer(writer_addr.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Mid-stream: the upstream dies and comes back empty-handed (a fresh table), on the same port.
        upstream.kill().await;
        let before_restart = client.lock().unwrap().seen.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let upstream = Proc::upstream(port, "upstream-restart-2").await;
        let oracle2 = Oracle::start(upstream.pg);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        writer.stop().await;
        let expected = settle(&client, upstream.pg).await;
        eventually("the oracle to pass the last change", Duration::from_secs(10), || {
            let (o, c) = (oracle2.lock().unwrap(), client.lock().unwrap());
            c.seen.last().is_some_and(|(ts, _)| o.frontier > *ts)
        })
        .await;
        {
            let c = client.lock().unwrap();
            assert!(c.seen.len() > before_restart, "no timestamps after the restart");
            let compared = check(&c, &[&oracle1.lock().unwrap(), &oracle2.lock().unwrap()]);
            assert!(compared >= 20, "only {compared} timestamps compared");
        }
        let log = gateway.log();
        assert!(log.contains("taking a new snapshot"), "the restarted upstream lacks the history:\n{log}");
        check_local(&local, &expected).await;
    })
    .await
    .expect("test timed out");
}

/// Speed, not correctness (run by hand, see BENCHMARKS.md): the time the gateway adds between the
/// upstream's progress row and a WebSocket client's receipt of that timestamp. A direct SUBSCRIBE
/// client of the upstream timestamps each progress row `p` on arrival; each of `GW_CLIENTS`
/// gateway clients (default 1) timestamps its frame for `p - 1` (the same complete timestamp).
/// Runs `GW_SECONDS` (default 10) with the writer changing the upstream every `GW_WRITE_MS`
/// (default 7: a change in nearly every 20 ms upstream tick, 50 timestamps a second; 100 gives
/// about 10 changing timestamps a second, the fan-out benchmark's rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture, preferably --release"]
async fn gateway_added_latency() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (clients, seconds) = (env("GW_CLIENTS", 1) as usize, env("GW_SECONDS", 10));
    let upstream = Proc::upstream(free_port(), "bench-upstream").await;
    let gateway = Proc::gateway(upstream.pg, "bench-gateway").await;
    let direct: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    {
        let direct = direct.clone();
        let client = pg(upstream.pg).await.unwrap();
        tokio::spawn(async move {
            let stream = client.copy_out("COPY (SUBSCRIBE totals WITH (PROGRESS)) TO STDOUT").await.unwrap();
            futures::pin_mut!(stream);
            while let Some(Ok(chunk)) = stream.next().await {
                let now = Instant::now();
                for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let line = String::from_utf8_lossy(line);
                    let mut f = line.split('\t');
                    let (ts, progressed) = (f.next().unwrap(), f.next() == Some("t"));
                    if progressed {
                        direct.lock().unwrap().insert(ts.parse().unwrap(), now);
                    }
                }
            }
        });
    }
    let received: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let url = format!("ws://{}/api/v1/stream/totals", gateway.http);
    for _ in 0..clients {
        let (received, url) = (received.clone(), url.clone());
        tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut mine = Vec::new();
            while let Some(Ok(msg)) = ws.next().await {
                let now = Instant::now();
                let tokio_tungstenite::tungstenite::Message::Text(text) = msg else { continue };
                let m: Value = serde_json::from_str(&text).unwrap();
                if let Some(ts) = m["ts"].as_u64() {
                    mine.push((ts, now));
                }
                if mine.len() >= 64 {
                    received.lock().unwrap().append(&mut mine);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    received.lock().unwrap().clear();
    let writer = start_writer_every(Arc::new(Mutex::new(upstream.pg)), Duration::from_millis(env("GW_WRITE_MS", 7)));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    writer.stop().await;
    let mut added_us: Vec<i64> = {
        let direct = direct.lock().unwrap();
        let received = received.lock().unwrap();
        received
            .iter()
            .filter_map(|(ts, at)| direct.get(&(ts + 1)).map(|d| at.duration_since(*d).as_micros() as i64))
            .collect()
    };
    added_us.sort_unstable();
    assert!(!added_us.is_empty(), "no timestamps matched");
    let pct = |p: f64| added_us[((added_us.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    println!(
        "gateway added latency, {clients} client(s), {} frames: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        added_us.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    // Where the gateway's share went (µs, cumulative since it started; see viewcast_hub::timeline).
    let stats = http_get_json(gateway.http, "/api/v1/stats").await;
    for (stage, path) in [
        ("upstream ts to hub apply", "/timeline/hub/close_to_apply"),
        ("hub apply", "/timeline/hub/apply"),
        ("frame to connection task", "/timeline/frame_to_pump"),
        ("frame to socket write", "/timeline/frame_to_written"),
    ] {
        let h = &stats.pointer(path).cloned().unwrap_or_default();
        println!("  {stage}: n {} p50 {} us, p99 {} us, max {} us", h["n"], h["p50_us"], h["p99_us"], h["max_us"]);
    }
}
