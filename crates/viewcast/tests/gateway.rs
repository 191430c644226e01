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

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

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

/// A gateway started before its upstream waits for it, retrying with backoff, instead of exiting;
/// once the upstream is up it serves the upstream's contents. With `--upstream-wait` it gives up
/// after that long, with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_its_upstream_waits_for_it() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let port = free_port();
        let url = format!("postgres://materialize@127.0.0.1:{port}/materialize");
        let mut bounded = gateway_args(&url);
        bounded.extend(["--upstream-wait".to_string(), "1".to_string()]);
        let (status, out) = run_to_exit(&bounded, "gateway-gives-up").await;
        assert!(!status.success(), "gave up without an upstream:\n{out}");
        assert!(out.contains("upstream not reachable yet"), "retried before giving up:\n{out}");
        assert!(out.contains("the upstream is not reachable"), "said why it stopped:\n{out}");

        // On a port of our own, to ask it about its health while it waits.
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut args = gateway_args(&url);
        let at = args.iter().position(|a| a == "--listen").unwrap() + 1;
        args[at] = http.to_string();
        let log = dir().join("gateway-early.log");
        // `Proc::start` returns once the gateway is ready, and panics if it exits first.
        let gateway = tokio::spawn(async move { Proc::start(&args, &log).await });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!gateway.is_finished(), "the gateway got ready, or exited, without its upstream");
        // Meanwhile it is alive (health) but not ready, and says why.
        assert_eq!(http_get(http, "/api/v1/health").await, (200, json!({ "status": "ok" })));
        let (status, body) = http_get(http, "/api/v1/ready").await;
        assert_eq!((status, &body["ready"]), (503, &json!(false)), "{body}");
        assert!(body["reason"].as_str().unwrap().contains("waiting for the upstream"), "{body}");
        let upstream = Proc::upstream(port, "upstream-late").await;
        let gateway = gateway.await.expect("the gateway starts once its upstream is up");
        let (status, body) = http_get(http, "/api/v1/ready").await;
        assert_eq!((status, &body["ready"]), (200, &json!(true)), "{body}");
        let client = Client::start(gateway.http, "totals");
        let writer = start_writer(Arc::new(Mutex::new(upstream.pg)));
        tokio::time::sleep(Duration::from_millis(700)).await;
        writer.stop().await;
        let expected = settle(&client, upstream.pg).await;
        assert!(!expected.is_empty(), "the writer changed the upstream");

        // Readiness tells how far behind the clock each view is. With its upstream gone the
        // gateway stays ready (it serves what it has), unless asked to bound the lag.
        let (status, body) = http_get(http, "/api/v1/ready?max_lag_ms=2000").await;
        assert_eq!(status, 200, "{body}");
        assert!(body["lag_ms"]["totals"].as_u64().is_some_and(|ms| ms <= 2000), "{body}");
        upstream.kill().await;
        let t0 = Instant::now();
        let body = loop {
            let (status, body) = http_get(http, "/api/v1/ready?max_lag_ms=2000").await;
            if status == 503 {
                break body;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "still ready with its upstream gone: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(body["reason"].as_str().unwrap().contains("behind the clock"), "{body}");
        assert!(body["lag_ms"]["totals"].as_u64().unwrap() > 2000, "{body}");
        let (status, body) = http_get(http, "/api/v1/ready").await;
        assert_eq!((status, &body["ready"]), (200, &json!(true)), "without a bound it stays ready: {body}");
        // The upstream back: ready again under the bound.
        let _upstream = Proc::upstream(port, "upstream-back").await;
        let t0 = Instant::now();
        while http_get(http, "/api/v1/ready?max_lag_ms=2000").await.0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(30), "not ready again after the upstream came back");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("test timed out");
}

/// `GET path` over a fresh connection: the status and the JSON body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}")))
}

/// Speed, not correctness (run by hand, see BENCHMARKS.md): the time the gateway adds between the
/// upstream's progress row and a WebSocket client's receipt of that timestamp. A direct SUBSCRIBE
/// client of the upstream timestamps each progress row `p` on arrival; each of `GW_CLIENTS`
/// gateway clients (default 1) timestamps its frame for `p - 1` (the same complete timestamp).
/// Runs `GW_SECONDS` (default 10) with the writer changing the upstream every `GW_WRITE_MS`
/// (default 7: a change in nearly every 20 ms upstream tick, 50 timestamps a second; 100 gives
/// about 10 changing timestamps a second, the fan-out benchmark's rate). Its clients run in this
/// process and parse every frame as JSON on the gateway's cores, so at 1,000 clients it charges
/// their work to the gateway: `viewcast-bench gateway-latency` is the measurement of record (its
/// clients in processes of their own, stamped on arrival; BENCHMARKS.md).
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
