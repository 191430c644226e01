//! The streams' promises under reconnects, slow clients, many clients and hostile input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{demo_sql, ws_connect_url, ws_next, ws_send, Replica, Server, Ws};
use futures::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use viewcast_coord::CoordConfig;
use viewcast_gateway::GatewayConfig;

fn mux_url(server: &Server) -> String {
    format!("ws://{}/api/v1/ws", server.addr)
}

/// A TCP proxy to `upstream` that cuts each connection after a random number of server-to-client
/// bytes: a server-side drop at an arbitrary point, possibly mid-frame.
async fn cutting_proxy(upstream: std::net::SocketAddr, seed: u64) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let budget: usize = rng.gen_range(100_000..1_500_000);
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async { tokio::io::copy(&mut cr, &mut sw).await };
                let down = async {
                    let mut left = budget;
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let n = sr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let n = n.min(left);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        left -= n;
                        if left == 0 {
                            break; // Cut.
                        }
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    addr
}

/// Follows `useredits` on a multiplexed socket until the replica reaches `until`, resuming after
/// every drop. Returns the update timestamps applied, in order.
fn until_store(until: &AtomicU64, t: u64) {
    until.store(t, Ordering::SeqCst);
}

async fn follow_with_cuts(proxy: std::net::SocketAddr, until: Arc<AtomicU64>, seed: u64) -> (Replica, Vec<u64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut replica = Replica::default();
    let mut applied = Vec::new();
    let mut reconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while replica.ts.is_none_or(|t| t < until.load(Ordering::SeqCst)) {
        assert!(Instant::now() < deadline, "did not catch up after {reconnects} reconnects");
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{proxy}/api/v1/ws")).await else {
            continue;
        };
        let mut sub = json!({ "type": "subscribe", "id": "u", "view": "useredits" });
        if let Some(ts) = replica.ts {
            sub["since"] = json!(ts);
        }
        if ws.send(Message::Text(sub.to_string().into())).await.is_err() {
            continue;
        }
        // A client-side close after a random number of messages, unless the proxy cuts first.
        let close_after: usize = rng.gen_range(1..40);
        let mut seen = 0;
        loop {
            let msg = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(&t).unwrap(),
                Ok(Some(Ok(_))) => continue,
                _ => break, // Cut by the proxy (or stalled): resume.
            };
            assert_eq!(msg["id"], "u", "{msg}");
            match msg["type"].as_str().unwrap() {
                "snapshot" => assert!(replica.ts.is_none(), "a resumed subscription got a snapshot: {msg}"),
                "resync" => panic!("history was retained, yet resync: {msg}"),
                "update" => applied.push(msg["ts"].as_u64().unwrap()),
                _ => {}
            }
            replica.apply(&msg);
            seen += 1;
            if seen >= close_after || replica.ts.is_some_and(|t| t >= until.load(Ordering::SeqCst)) {
                let _ = ws.close(None).await;
                break;
            }
        }
        reconnects += 1;
    }
    assert!(reconnects > 3, "the test should have cut the stream several times, got {reconnects}");
    (replica, applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_at_random_cut_points_loses_and_repeats_nothing() {
    let _heavy = common::HEAVY.lock().await;
    let total = 12_000;
    let server = Server::start(&demo_sql(1_000, total), CoordConfig::default()).await;
    // The reference: one uninterrupted subscription from the start.
    let mut reference = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut reference, json!({ "type": "subscribe", "id": "r", "view": "useredits" })).await;
    let first = ws_next(&mut reference).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    let start_ts = first["ts"].as_u64().unwrap();
    let mut ref_replica = Replica::default();
    ref_replica.apply(&first);

    let proxy = cutting_proxy(server.addr, 7).await;
    let until = Arc::new(AtomicU64::new(u64::MAX));
    let follower = tokio::spawn(follow_with_cuts(proxy, until.clone(), 11));
    let done = server
        .wait_value("SELECT * FROM counter", Duration::from_secs(120), |v| v.as_i64() == Some(total as i64))
        .await;
    assert_eq!(done, json!(total));
    let until = {
        let t = server.coord.sealed_ts();
        until_store(&until, t);
        t
    };
    let (replica, applied) = follower.await.unwrap();

    let mut ref_updates = Vec::new();
    while ref_replica.ts.is_none_or(|t| t < until) {
        let m = ws_next(&mut reference).await;
        if m["type"] == "update" {
            ref_updates.push(m["ts"].as_u64().unwrap());
        }
        ref_replica.apply(&m);
    }
    let expected = server.select_multiset("SELECT * FROM useredits").await;
    assert_eq!(replica.rows, expected, "the resumed replica equals the view");
    assert_eq!(ref_replica.rows, expected, "the reference replica equals the view");
    // Every timestamp after the resumed client's first snapshot arrived exactly once.
    let first_ts = applied.first().copied().unwrap_or(u64::MAX);
    let want: Vec<u64> = ref_updates.iter().copied().filter(|t| *t >= first_ts).collect();
    let got_set: BTreeSet<u64> = applied.iter().copied().collect();
    assert_eq!(got_set.len(), applied.len(), "no timestamp delivered twice");
    assert_eq!(applied, want, "no timestamp missing across reconnects");
    assert!(start_ts <= first_ts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_insert_of_many_rows_arrives_in_one_message() {
    let _heavy = common::HEAVY.lock().await;
    let server = Server::start("CREATE TABLE t (a int, b text)", CoordConfig::default()).await;
    let mut ws = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut ws, json!({ "type": "subscribe", "id": 1, "view": "t" })).await;
    let snap = ws_next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["id"], "1");
    for k in [1usize, 7, 250, 3000] {
        let values: Vec<String> = (0..k).map(|i| format!("({i}, 'row{i}')")).collect();
        let r = server.sql(&format!("INSERT INTO t VALUES {}", values.join(","))).await;
        assert_eq!(r["ok"], format!("INSERT 0 {k}"), "{r}");
        loop {
            let m = ws_next(&mut ws).await;
            if m["type"] == "progress" {
                continue;
            }
            assert_eq!(m["type"], "update", "{m}");
            assert_eq!(m["rows"].as_array().unwrap().len(), k, "all {k} rows of one INSERT in one message");
            break;
        }
        let r = server.sql("DELETE FROM t").await;
        assert_eq!(r["ok"], format!("DELETE {k}"), "{r}");
        loop {
            let m = ws_next(&mut ws).await;
            if m["type"] == "update" {
                assert_eq!(m["rows"].as_array().unwrap().len(), k, "the whole DELETE in one message");
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_connecting_at_once_each_get_a_correct_snapshot() {
    let _heavy = common::HEAVY.lock().await;
    let server = Server::start(&demo_sql(5_000, 5_000), CoordConfig::default()).await;
    server.wait_value("SELECT * FROM counter", Duration::from_secs(60), |v| v.as_i64() == Some(5_000)).await;
    let expected = server.select_multiset("SELECT * FROM top10").await;
    assert_eq!(expected.values().sum::<i64>(), 10);
    let url = format!("ws://{}/api/v1/stream/top10", server.addr);
    let clients: Vec<_> = (0..2000)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut ws = ws_connect_url(&url).await;
                let snap = ws_next(&mut ws).await;
                let mut r = Replica::default();
                r.apply(&snap);
                (snap["type"].as_str().unwrap().to_string(), r.rows, ws)
            })
        })
        .collect();
    let mut open: Vec<Ws> = Vec::new();
    for c in clients {
        let (kind, rows, ws) = c.await.unwrap();
        assert_eq!(kind, "snapshot");
        assert_eq!(rows, expected, "every client's snapshot equals SELECT * FROM top10");
        open.push(ws);
    }
    assert_eq!(open.len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_clear_errors_and_others_are_served() {
    let _heavy = common::HEAVY.lock().await;
    let gateway = GatewayConfig {
        grants: vec![viewcast_gateway::auth::Grant { token: "s3cret".into(), views: None }],
        max_ws_message_bytes: 16 << 10,
        ..GatewayConfig::default()
    };
    let server = Server::start_with(&demo_sql(500, 1_000_000), CoordConfig::default(), gateway).await;
    // A well-behaved client, authenticated by its first message.
    let mut good = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut good, json!({ "type": "auth", "token": "s3cret" })).await;
    ws_send(&mut good, json!({ "type": "subscribe", "id": "c", "view": "counter" })).await;
    assert_eq!(ws_next(&mut good).await["type"], "snapshot");

    // Malformed JSON and unknown views: an error, and the connection keeps serving.
    let mut bad = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut bad, json!({ "type": "auth", "token": "s3cret" })).await;
    bad.send(Message::Text("{not json".into())).await.unwrap();
    let e = ws_next(&mut bad).await;
    assert_eq!(e["type"], "error");
    assert!(e["message"].as_str().unwrap().contains("bad message"), "{e}");
    ws_send(&mut bad, json!({ "type": "subscribe", "id": "x", "view": "no_such_view" })).await;
    let e = ws_next(&mut bad).await;
    assert_eq!((e["type"].as_str(), e["id"].as_str()), (Some("error"), Some("x")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("no_such_view"), "{e}");
    ws_send(&mut bad, json!({ "type": "subscribe", "id": "q", "query": "SELEC nonsense" })).await;
    let e = ws_next(&mut bad).await;
    assert_eq!(
        (e["type"].as_str(), e["id"].as_str(), e["code"].as_str()),
        (Some("error"), Some("q"), Some("42601")),
        "{e}"
    );
    ws_send(&mut bad, json!({ "type": "subscribe", "id": "ok", "view": "top10" })).await;
    assert_eq!(ws_next(&mut bad).await["type"], "snapshot", "still serving after errors");

    // An oversized message closes that connection with 1009 (message too big).
    let mut huge = ws_connect_url(&mux_url(&server)).await;
    send_oversized_and_expect_close(&mut huge).await;

    // A wrong token: an error and a close; no token on the HTTP API: 401.
    let mut wrong = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut wrong, json!({ "type": "auth", "token": "guess" })).await;
    let e = ws_next(&mut wrong).await;
    assert_eq!(e["message"], "invalid token");
    let mut unauth = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut unauth, json!({ "type": "subscribe", "id": "a", "view": "counter" })).await;
    assert!(ws_next(&mut unauth).await["message"].as_str().unwrap().contains("authentication required"));
    let client = reqwest::Client::new();
    let r = client.post(server.url("/api/sql")).body(r#"{"query":"SELECT 1"}"#).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r =
        client.post(server.url("/api/sql")).bearer_auth("s3cret").body(r#"{"query":"SELECT 1"}"#).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A WebSocket from a foreign Origin is refused before the upgrade.
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(mux_url(&server)).unwrap();
    req.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("foreign origin accepted: {:?}", other.map(|_| ())),
    }

    // The good client was served throughout.
    let t0 = Instant::now();
    let mut updates = 0;
    while updates < 3 && t0.elapsed() < Duration::from_secs(20) {
        if ws_next(&mut good).await["type"] == "update" {
            updates += 1;
        }
    }
    assert_eq!(updates, 3, "the good client kept receiving updates");
}

/// Sends a 64 KiB message (over a 16 KiB limit) and expects the connection closed, with 1009
/// (message too big) if a close frame arrives first; returns the close code, if any.
async fn send_oversized_and_expect_close(huge: &mut Ws) -> Option<u16> {
    huge.send(Message::Text("x".repeat(64 << 10).into())).await.unwrap();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), huge.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert!(closed.is_none() || closed == Some(1009), "close code {closed:?}");
    closed
}

/// Rows the stall tests' load generator makes (20,000 a second).
const STALL_TEST_ROWS: u64 = 60_000;

/// A server whose clients have a `bound`-byte budget and a 3 s stall timeout, running the demo's
/// views over `STALL_TEST_ROWS` events, and two clients that subscribe to its biggest stream,
/// `recentchanges`, with a 4 KiB receive buffer and never read: one on the multiplexed WebSocket,
/// one on the single-view WebSocket.
async fn with_stalled_clients(
    bound: usize,
) -> (Server, tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::WebSocketStream<TcpStream>) {
    let gateway =
        GatewayConfig { client_buffer_bytes: bound, stall_timeout: Duration::from_secs(3), ..GatewayConfig::default() };
    let server = Server::start_with(&demo_sql(20_000, STALL_TEST_ROWS), CoordConfig::default(), gateway).await;
    let small_buffer_socket = || {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
    };
    let tcp = small_buffer_socket().connect(server.addr).await.unwrap();
    let (mut mux, _) = tokio_tungstenite::client_async(mux_url(&server), tcp).await.unwrap();
    let sub = json!({ "type": "subscribe", "id": "s", "view": "recentchanges" });
    mux.send(Message::Text(sub.to_string().into())).await.unwrap();
    let tcp = small_buffer_socket().connect(server.addr).await.unwrap();
    let single_url = format!("ws://{}/api/v1/stream/recentchanges", server.addr);
    let (single, _) = tokio_tungstenite::client_async(single_url, tcp).await.unwrap();
    (server, mux, single)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_stays_bounded_and_others_get_every_timestamp() {
    let _heavy = common::HEAVY.lock().await;
    let bound = 1 << 20;
    let (server, stalled, stalled_single) = with_stalled_clients(bound).await;
    let total = STALL_TEST_ROWS;
    // A reading client of the same view.
    let mut reader = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut reader, json!({ "type": "subscribe", "id": "r", "view": "recentchanges" })).await;
    let mut replica = Replica::default();
    let mut max_queued = 0u64;
    let mut max_backlog = 0u64;
    let stats_url = server.url("/api/v1/stats");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0u64;
    loop {
        let m = ws_next(&mut reader).await;
        // On an oversubscribed machine even a reading client may be consolidated or resynced;
        // what must hold is that it ends with exactly the view's contents (checked below).
        replica.apply(&m);
        seen += 1;
        if seen.is_multiple_of(10) {
            let s: Value = client.get(&stats_url).send().await.unwrap().json().await.unwrap();
            max_queued = max_queued.max(s["queued_bytes"].as_u64().unwrap());
            max_backlog = max_backlog.max(s["max_backlog_bytes"].as_u64().unwrap());
        }
        if replica.rows.values().sum::<i64>() == total as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "reader did not see all {total} rows");
    }
    let expected = server.select_multiset("SELECT * FROM recentchanges").await;
    assert_eq!(replica.rows, expected, "the reading client's replica equals the view");
    let s: Value = client.get(&stats_url).send().await.unwrap().json().await.unwrap();
    // Three connections, each with at most `bound` queued; backlog per subscription at most `bound`.
    assert!(max_queued <= 3 * bound as u64, "queued {max_queued} > 3 x {bound}");
    assert!(max_backlog <= bound as u64 + (512 << 10), "backlog {max_backlog}");
    assert!(
        s["max_backlog_bytes"].as_u64().unwrap() + s["consolidated"].as_u64().unwrap() + s["resyncs"].as_u64().unwrap()
            > 0,
        "the stalled client's changes were held as a consolidated backlog (or resynced), not queued: {s}"
    );
    // The stalled client is closed once it has not read for the stall timeout; as soon as the
    // server gives up on it, it starts reading again and finds the close frame with a resume point.
    let t0 = Instant::now();
    loop {
        let s: Value = client.get(&stats_url).send().await.unwrap().json().await.unwrap();
        if s["stalled_closes"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the stalled clients were not both closed: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The close frame (with the reason and resume point) is best effort: it queues behind what the
    // client never read, so the connection may simply end. Either way it is closed.
    for stalled in [stalled, stalled_single] {
        expect_stall_close(stalled).await;
    }
}

/// A client that stops reading is never resynced while it has not taken what is queued for it: a
/// resync's snapshot is as large as the view, and building one for a client that reads nothing
/// cost a snapshot's memory and encoding per stalled client until the stall timeout (seen as
/// seconds of p99 for every other client in the slow-consumer benchmark). Its changes are held
/// as a bounded backlog instead, and it is closed at the stall timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_closed_not_resynced() {
    let _heavy = common::HEAVY.lock().await;
    let (server, mux, single) = with_stalled_clients(256 << 10).await;
    let stats_url = server.url("/api/v1/stats");
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let s = loop {
        let s: Value = client.get(&stats_url).send().await.unwrap().json().await.unwrap();
        if s["stalled_closes"].as_u64().unwrap() >= 2 {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "the stalled clients were not both closed: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(s["max_backlog_bytes"].as_u64().unwrap() > 0, "the stalled clients' changes were held as a backlog: {s}");
    assert_eq!(s["resyncs"].as_u64().unwrap(), 0, "a client that took nothing was resynced: {s}");
    for stalled in [mux, single] {
        expect_stall_close(stalled).await;
    }
}

async fn expect_stall_close(mut stalled: tokio_tungstenite::WebSocketStream<TcpStream>) {
    let mut last_ts = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stalled.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                let reason = f.reason.to_string();
                assert!(reason.contains("stalled") && reason.contains("since="), "{reason}");
                break;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                last_ts = m["ts"].as_u64().or(last_ts);
            }
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => break,
            Err(e) => panic!("the stalled client's connection was not closed: {e:?}"),
        }
    }
    assert!(last_ts.is_some(), "the stalled client had received data before it stalled");
}

/// An unchanging view costs a subscriber about one `progress` a second (not one per 50 ms tick);
/// an update still arrives at once; a resumed subscription is told at once how far the view is
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_view_sends_progress_about_once_a_second_and_updates_at_once() {
    let _heavy = common::HEAVY.lock().await;
    let server = Server::start("CREATE TABLE t (a int)", CoordConfig::default()).await;
    let mut ws = common::ws_connect(server.addr, "t").await;
    let snap = ws_next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    // The view's progress clock is per view, not per subscriber: the first progress may follow
    // the snapshot sooner than the interval; later ones are at least the interval apart.
    let mut last_ts = snap["ts"].as_u64().unwrap();
    let mut progress: Vec<u64> = Vec::new();
    let watch_until = Instant::now() + Duration::from_millis(3_500);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(watch_until.into(), ws.next()).await {
        let Message::Text(t) = m else { continue };
        let m: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(m["type"], "progress", "nothing changed: {m}");
        let ts = m["ts"].as_u64().unwrap();
        assert!(ts > last_ts, "progress goes forward");
        if !progress.is_empty() {
            assert!(ts >= last_ts + 1_000, "progress {ts} less than the interval after {last_ts}");
        }
        last_ts = ts;
        progress.push(ts);
    }
    // 3.5 s at 50 ms ticks would be 70 progress frames unthrottled.
    assert!((2..=5).contains(&progress.len()), "progress frames in 3.5 s: {progress:?}");

    let r = server.sql("INSERT INTO t VALUES (1)").await;
    assert_eq!(r["ok"], "INSERT 0 1", "{r}");
    let asked = Instant::now();
    let m = ws_next(&mut ws).await;
    assert_eq!(m["type"], "update", "the change comes next, not after a progress: {m}");
    assert!(asked.elapsed() < Duration::from_millis(900), "an update waits for no progress interval");
    let update_ts = m["ts"].as_u64().unwrap();

    // Resuming from before the update: the update, then progress at the sealed time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sealed = server.coord.sealed_ts();
    let mut mux = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut mux, json!({ "type": "subscribe", "id": "r", "view": "t", "since": update_ts - 1 })).await;
    let replayed = ws_next(&mut mux).await;
    assert_eq!((replayed["type"].as_str(), replayed["ts"].as_u64()), (Some("update"), Some(update_ts)), "{replayed}");
    let caught_up = ws_next(&mut mux).await;
    assert_eq!(caught_up["type"], "progress", "{caught_up}");
    assert!(caught_up["ts"].as_u64().unwrap() >= sealed, "{caught_up} vs sealed {sealed}");
}

/// A keyed subscription's replica: key (JSON) to row (JSON).
#[derive(Default)]
struct KeyedReplica {
    rows: BTreeMap<String, String>,
    ts: Option<u64>,
}

impl KeyedReplica {
    fn apply(&mut self, m: &Value) {
        match m["type"].as_str() {
            Some("snapshot") => {
                assert_eq!(m["key"], json!(["k"]), "{m}");
                self.rows.clear();
                for r in m["rows"].as_array().unwrap() {
                    assert_eq!(r["diff"], 1, "{m}");
                    self.rows.insert(r["row"][0].to_string(), r["row"].to_string());
                }
            }
            Some("update") => {
                for row in m["upserts"].as_array().unwrap() {
                    self.rows.insert(row[0].to_string(), row.to_string());
                }
                for key in m["deletes"].as_array().unwrap() {
                    assert!(self.rows.remove(&key[0].to_string()).is_some(), "delete of a missing key: {m}");
                }
            }
            Some("progress") => {}
            _ => panic!("unexpected message {m}"),
        }
        self.ts = m["ts"].as_u64();
    }
}

/// Single-view WebSockets are written by the gateway's writer shards, many sockets per task:
/// plain, keyed and resuming clients of two views each end with exactly their view's contents,
/// and dropping a view ends its clients' streams with an error and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_view_websockets_follow_resume_and_key_exactly() {
    let _heavy = common::HEAVY.lock().await;
    let server = Server::start("CREATE TABLE t (k int, v int); CREATE TABLE u (a int)", CoordConfig::default()).await;
    let view_of = |i: usize| if i.is_multiple_of(2) { "t" } else { "u" };
    let mut plain: Vec<(Ws, Replica)> = Vec::new();
    for i in 0..24 {
        plain.push((common::ws_connect(server.addr, view_of(i)).await, Replica::default()));
    }
    let mut keyed = ws_connect_url(&format!("ws://{}/api/v1/stream/t?key=k", server.addr)).await;
    let mut keyed_replica = KeyedReplica::default();
    let write = |step: i64| {
        let server = &server;
        async move {
            let mut sql = vec![format!("INSERT INTO t VALUES ({step}, 0)"), format!("INSERT INTO u VALUES ({step})")];
            if step % 3 == 2 {
                sql.push(format!("UPDATE t SET v = v + 1 WHERE k = {}", step / 2));
            }
            if step % 5 == 4 {
                sql.push(format!("DELETE FROM t WHERE k = {}", step - 3));
            }
            for q in sql {
                let r = server.sql(&q).await;
                assert!(r["ok"].is_string(), "{q}: {r}");
            }
        }
    };
    for step in 0..12 {
        write(step).await;
    }
    // A client that follows t to some timestamp, then leaves; it resumes later from there.
    let mut first = common::ws_connect(server.addr, "t").await;
    let mut resumed = Replica::default();
    common::ws_follow_until(&mut first, &mut resumed, server.coord.sealed_ts()).await;
    drop(first);
    let since = resumed.ts.unwrap();
    for step in 12..30 {
        write(step).await;
    }
    let mut second = ws_connect_url(&format!("ws://{}/api/v1/stream/t?since={since}", server.addr)).await;
    let sealed = server.coord.sealed_ts();
    common::ws_follow_until(&mut second, &mut resumed, sealed).await;
    assert_eq!(resumed.snapshots, 1, "the resumed stream replays, without a snapshot");
    let expected_t = server.select_multiset("SELECT * FROM t").await;
    let expected_u = server.select_multiset("SELECT * FROM u").await;
    assert_eq!(resumed.rows, expected_t, "resumed after {since}");
    for (i, (ws, replica)) in plain.iter_mut().enumerate() {
        common::ws_follow_until(ws, replica, sealed).await;
        let expected = if view_of(i) == "t" { &expected_t } else { &expected_u };
        assert_eq!(&replica.rows, expected, "client {i} of {}", view_of(i));
        assert_eq!(replica.snapshots, 1);
    }
    while keyed_replica.ts.is_none_or(|t| t < sealed) {
        keyed_replica.apply(&ws_next(&mut keyed).await);
    }
    let by_key: BTreeMap<String, String> = expected_t
        .keys()
        .map(|row| (serde_json::from_str::<Value>(row).unwrap()[0].to_string(), row.clone()))
        .collect();
    assert_eq!(keyed_replica.rows, by_key, "the keyed replica");

    let r = server.sql("DROP TABLE u").await;
    assert!(r["ok"].is_string(), "{r}");
    for (i, (ws, _)) in plain.iter_mut().enumerate().filter(|(i, _)| view_of(*i) == "u") {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("the stream ends in time") {
                Some(Ok(Message::Text(t))) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    if m["type"] == "error" {
                        assert!(m["message"].as_str().unwrap().contains("dropped"), "{m}");
                        break;
                    }
                    assert_ne!(m["type"], "update", "client {i}: no update after the drop");
                }
                Some(Ok(_)) => continue,
                other => panic!("client {i}: the stream ended without an error: {other:?}"),
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
            other => panic!("client {i}: not closed after the error: {other:?}"),
        }
    }
    // Clients that go away give their connection slots back.
    drop((plain, keyed, second));
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    loop {
        let s: Value = client.get(server.url("/api/v1/stats")).send().await.unwrap().json().await.unwrap();
        if s["connections"] == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "connections still open: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The single-view WebSocket answers its own handshake and writes its own frames: check the
/// protocol at its edges with a real client library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_view_websockets_speak_the_protocol_at_its_edges() {
    let _heavy = common::HEAVY.lock().await;
    let gateway = GatewayConfig { max_ws_message_bytes: 16 << 10, ..GatewayConfig::default() };
    let server = Server::start_with("CREATE TABLE t (k int)", CoordConfig::default(), gateway).await;
    let url = format!("ws://{}/api/v1/stream/t", server.addr);

    // Bad handshakes are refused before any upgrade: a foreign origin, a wrong version, no key.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(&url).unwrap();
    req.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("foreign origin accepted: {:?}", other.map(|_| ())),
    }
    for extra in
        ["Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET /api/v1/stream/t HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut response)).await.unwrap().unwrap();
        let response = String::from_utf8_lossy(&response[..n]);
        assert!(response.starts_with("HTTP/1.1 400"), "{extra}: {response}");
        assert!(response.contains("bad WebSocket upgrade"), "{response}");
    }

    // A good one: the snapshot, then a ping answered with its payload, then a live update.
    let mut ws = ws_connect_url(&url).await;
    assert_eq!(ws_next(&mut ws).await["type"], "snapshot");
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    assert!(server.sql("INSERT INTO t VALUES (7)").await["ok"].is_string());
    let (mut pong, mut update) = (false, None);
    while !pong || update.is_none() {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"are you there");
                pong = true;
            }
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                if m["type"] == "update" {
                    update = Some(m);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(update.unwrap()["rows"][0]["row"], json!([7]));

    // The client closes: the gateway answers the close, then ends the connection.
    ws.close(None).await.unwrap();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(_))) | None => break "closed",
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("no clean close: {e}"),
        }
    };
    assert_eq!(end, "closed");

    // An oversized message closes that connection with 1009 (message too big); others go on.
    let mut other = ws_connect_url(&url).await;
    assert_eq!(ws_next(&mut other).await["type"], "snapshot");
    let mut huge = ws_connect_url(&url).await;
    assert_eq!(ws_next(&mut huge).await["type"], "snapshot");
    assert_eq!(send_oversized_and_expect_close(&mut huge).await, Some(1009));
    assert!(server.sql("INSERT INTO t VALUES (8)").await["ok"].is_string());
    let m = loop {
        let m = ws_next(&mut other).await;
        if m["type"] == "update" {
            break m;
        }
    };
    assert_eq!(m["rows"][0]["row"], json!([8]));
}

/// A client that pings without reading: the gateway answers the latest ping, not every one, so
/// what it holds for the client stays bounded, and the client is still served afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_pings_without_reading_gets_no_queue_of_pongs() {
    let _heavy = common::HEAVY.lock().await;
    let server = Server::start("CREATE TABLE t (k int)", CoordConfig::default()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let url = format!("ws://{}/api/v1/stream/t", server.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => assert!(t.contains(r#""type":"snapshot""#), "{t}"),
        other => panic!("no snapshot: {other:?}"),
    }
    // 200,000 pings of 125 bytes (25 MB), far more pongs than the sockets' buffers hold.
    let pings = 200_000;
    for i in 0..pings {
        ws.feed(Message::Ping(vec![b'p'; 125].into())).await.unwrap();
        if i % 1000 == 999 {
            ws.flush().await.unwrap();
        }
    }
    ws.flush().await.unwrap();
    assert!(server.sql("INSERT INTO t VALUES (1)").await["ok"].is_string());
    // Every pong the gateway still held would arrive before the update.
    let mut pongs = 0;
    let update = loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(_))) => pongs += 1,
            Some(Ok(Message::Text(t))) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                if m["type"] == "update" {
                    break m;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(update["rows"][0]["row"], json!([1]));
    assert!(pongs >= 1, "pings are answered");
    assert!(pongs < pings / 2, "{pongs} pongs for {pings} pings: the gateway queued them");
}

/// Every subscription of a multiplexed connection, by id.
#[derive(Default)]
struct MuxReplicas {
    by_id: std::collections::HashMap<String, Replica>,
    /// Every message seen, in order: (id, type).
    seen: Vec<(String, String)>,
}

impl MuxReplicas {
    /// Reads one message, applies it to its subscription's replica (errors are only recorded),
    /// and returns it.
    async fn next(&mut self, ws: &mut Ws) -> Value {
        let m = ws_next(ws).await;
        let id = m["id"].as_str().unwrap_or("").to_string();
        let kind = m["type"].as_str().unwrap_or("").to_string();
        if kind != "error" {
            self.by_id.entry(id.clone()).or_default().apply(&m);
        }
        self.seen.push((id, kind));
        m
    }

    /// Reads until each listed subscription's replica equals its query evaluated from scratch.
    async fn follow_until_equal(&mut self, ws: &mut Ws, server: &Server, oracle: &[(&str, &str)]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all = true;
            for (id, query) in oracle {
                let expected = server.select_multiset(query).await;
                all &= self.by_id.get(*id).is_some_and(|r| r.rows == expected);
            }
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "replicas never matched {oracle:?}: {:?}", self.seen);
            self.next(ws).await;
        }
    }
}

/// A multiplexed connection's subscriptions start, stop and end independently: each message
/// carries its own id and each subscription's replica equals its query evaluated from scratch; an
/// unsubscribed id gets nothing more and can be reused; an ad-hoc query's view lives exactly as
/// long as its subscription; a view dropped under one subscription ends that one with an error
/// while the connection serves the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_subscriptions_start_stop_and_end_independently() {
    let _heavy = common::HEAVY.lock().await;
    let sql = "CREATE TABLE t (k text, n bigint);
               INSERT INTO t VALUES ('a', 1), ('b', 2);
               CREATE VIEW v1 AS SELECT k, n FROM t;
               CREATE VIEW v2 AS SELECT count(*) AS c FROM t;";
    let server = Server::start(sql, CoordConfig::default()).await;
    let hidden_before = server.coord.transient_count();
    let (v1, v2, q) = ("SELECT k, n FROM t", "SELECT count(*) AS c FROM t", "SELECT k FROM t WHERE n > 1");
    let mut ws = ws_connect_url(&mux_url(&server)).await;
    let mut subs = MuxReplicas::default();
    ws_send(&mut ws, json!({ "type": "subscribe", "id": "a", "view": "v1" })).await;
    ws_send(&mut ws, json!({ "type": "subscribe", "id": "b", "view": "v2" })).await;
    ws_send(&mut ws, json!({ "type": "subscribe", "id": "q", "query": q })).await;
    ws_send(&mut ws, json!({ "type": "subscribe", "id": "a", "view": "v2" })).await;
    subs.follow_until_equal(&mut ws, &server, &[("a", v1), ("b", v2), ("q", q)]).await;
    server.sql("INSERT INTO t VALUES ('c', 3), ('d', 0)").await;
    subs.follow_until_equal(&mut ws, &server, &[("a", v1), ("b", v2), ("q", q)]).await;
    assert!(
        subs.seen.contains(&("a".into(), "error".into())),
        "a second subscription with an open id is refused: {:?}",
        subs.seen
    );
    assert_eq!(subs.by_id["a"].snapshots, 1, "the refused duplicate did not restart the first");
    assert_eq!(server.coord.transient_count(), hidden_before + 1, "the query's view exists while subscribed");

    // Unsubscribed: once a later subscription's snapshot has arrived, nothing more for that id.
    ws_send(&mut ws, json!({ "type": "unsubscribe", "id": "a" })).await;
    ws_send(&mut ws, json!({ "type": "unsubscribe", "id": "q" })).await;
    ws_send(&mut ws, json!({ "type": "subscribe", "id": "a2", "view": "v1" })).await;
    while subs.next(&mut ws).await["id"] != "a2" {}
    let mark = subs.seen.len();
    server.sql("INSERT INTO t VALUES ('e', 5)").await;
    subs.follow_until_equal(&mut ws, &server, &[("a2", v1), ("b", v2)]).await;
    let late: Vec<_> = subs.seen[mark..].iter().filter(|(id, _)| id == "a" || id == "q").collect();
    assert!(late.is_empty(), "messages after unsubscribing: {late:?}");
    let t0 = Instant::now();
    while server.coord.transient_count() != hidden_before {
        assert!(t0.elapsed() < Duration::from_secs(10), "the unsubscribed query's view was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The id is free again.
    subs.by_id.remove("a");
    ws_send(&mut ws, json!({ "type": "subscribe", "id": "a", "view": "v1" })).await;
    subs.follow_until_equal(&mut ws, &server, &[("a", v1)]).await;

    // Dropping v2 ends `b` with an error; the others go on, and `b` can be reused.
    server.sql("DROP VIEW v2").await;
    let t0 = Instant::now();
    while !subs.seen.contains(&("b".into(), "error".into())) {
        assert!(t0.elapsed() < Duration::from_secs(20), "no error for the dropped view: {:?}", subs.seen);
        subs.next(&mut ws).await;
    }
    server.sql("INSERT INTO t VALUES ('f', 6)").await;
    subs.follow_until_equal(&mut ws, &server, &[("a", v1), ("a2", v1)]).await;
    ws_send(&mut ws, json!({ "type": "subscribe", "id": "b", "view": "v1" })).await;
    subs.by_id.remove("b");
    subs.follow_until_equal(&mut ws, &server, &[("b", v1)]).await;
}

/// Sends `count` rounds of `round(i)`'s messages over a multiplexed connection that reads nothing
/// (small socket buffers), until the server stops taking them; returns how many rounds got through.
async fn flood_without_reading(server: &Server, count: u64, round: fn(u64) -> Vec<String>) -> u64 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (flood, _) = tokio_tungstenite::client_async(mux_url(server), tcp).await.unwrap();
    let (mut sink, unread) = flood.split();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        for i in 0..count {
            for m in round(i) {
                sink.feed(Message::Text(m.into())).await.unwrap();
            }
            if i % 128 == 0 {
                sink.flush().await.unwrap();
            }
            counter.store(i + 1, Ordering::Relaxed);
        }
        sink.flush().await.unwrap();
    });
    // Wait until the flood stops moving.
    let (mut last, mut still_since) = (0, Instant::now());
    let t0 = Instant::now();
    while still_since.elapsed() < Duration::from_secs(2) && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::Relaxed);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    let finished = writer.is_finished();
    writer.abort();
    drop(unread);
    eprintln!("a flooding client got {last} of {count} rounds through");
    assert!(last < count && !finished, "the server read all {count} rounds of a client that reads nothing");
    last
}

/// A multiplexed client that does not read what it is answered with holds a bounded amount of
/// it: once the replies and snapshots queued for it fill the socket and its budget, the server
/// stops reading its messages (so its own sends block), and other clients are served. Two floods:
/// bad messages, each answered with an error, and subscribe/unsubscribe rounds, each answered
/// with a snapshot (which the unsubscribe does not take back once queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_flooding_requests_without_reading_are_not_read_further() {
    let _heavy = common::HEAVY.lock().await;
    let server = Server::start(&demo_sql(500, 1_000_000), CoordConfig::default()).await;
    // Each error is ~70 bytes: 300,000 of them (21 MB) are more than the kernel's socket buffers
    // hold (4 MB of send buffer at most, by default).
    flood_without_reading(&server, 300_000, |_| vec!["{bad".to_string()]).await;
    // Each round queues top10's snapshot (~1 KB): 100,000 rounds would be 100 MB.
    flood_without_reading(&server, 100_000, |_| {
        vec![
            json!({ "type": "subscribe", "id": "s", "view": "top10" }).to_string(),
            json!({ "type": "unsubscribe", "id": "s" }).to_string(),
        ]
    })
    .await;
    // Meanwhile another client is served.
    let mut good = ws_connect_url(&mux_url(&server)).await;
    ws_send(&mut good, json!({ "type": "subscribe", "id": "c", "view": "counter" })).await;
    assert_eq!(ws_next(&mut good).await["type"], "snapshot");
    let mut updates = 0;
    while updates < 3 {
        if ws_next(&mut good).await["type"] == "update" {
            updates += 1;
        }
    }
}
