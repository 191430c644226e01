//! Real clients against a real server on port 0: tokio-postgres (simple, extended, COPY out,
//! cancel), psql (COPY (SUBSCRIBE) TO STDOUT, cancelled with SIGINT), and a webhook sink
//! delivering to a flaky HTTP receiver.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::{NoTls, SimpleQueryMessage};
use viewcast_coord::{CoordConfig, Coordinator};

async fn start() -> (Arc<Coordinator>, SocketAddr) {
    let coord = Arc::new(Coordinator::start(CoordConfig { tick_ms: 10, ..CoordConfig::default() }).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(viewcast_pgwire::serve(listener, coord.clone(), None, std::future::pending()));
    (coord, addr)
}

async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    let conn_str = format!("host={} port={} user=materialize dbname=materialize", addr.ip(), addr.port());
    let (client, connection) = tokio_postgres::connect(&conn_str, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn rows_of(msgs: &[SimpleQueryMessage]) -> Vec<Vec<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect()),
            _ => None,
        })
        .collect()
}

/// Reads COPY lines until `pred` holds for the lines so far (bounded in time).
async fn read_until(
    stream: &mut std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    lines: &mut Vec<Vec<String>>,
    pred: impl Fn(&[Vec<String>]) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !pred(lines) {
            let chunk = stream.next().await.expect("stream open").expect("copy data");
            for line in String::from_utf8_lossy(&chunk).lines() {
                lines.push(line.split('\t').map(str::to_string).collect());
            }
        }
    })
    .await
    .expect("expected rows in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_subscribe_snapshot_changes_cancel() {
    let (coord, addr) = start().await;
    let client = connect(addr).await;
    client.batch_execute("CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x'), (2, 'y')").await.unwrap();

    // Extended protocol with binary results.
    let rows = client.query("SELECT a, b FROM t ORDER BY a", &[]).await.unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, "x".to_string()), (2, "y".to_string())]);
    // Errors carry SQLSTATE and position.
    let e = client.simple_query("SELECT nope FROM t").await.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42703");
    assert!(matches!(db.position(), Some(tokio_postgres::error::ErrorPosition::Original(8))));

    // COPY (SUBSCRIBE (query)) streams a snapshot, then changes, until cancelled.
    let copy = client.copy_out("COPY (SUBSCRIBE (SELECT a, b FROM t WHERE a > 0)) TO STDOUT").await.unwrap();
    let mut copy = Box::pin(copy);
    let mut lines = Vec::new();
    read_until(&mut copy, &mut lines, |l| l.len() >= 2).await;
    let snapshot: HashSet<(String, String, String)> =
        lines.iter().map(|l| (l[1].clone(), l[2].clone(), l[3].clone())).collect();
    assert_eq!(snapshot, HashSet::from([("1".into(), "1".into(), "x".into()), ("1".into(), "2".into(), "y".into())]));
    assert_eq!(coord.transient_count(), 1, "the (query) runs as one transient view");

    let writer = connect(addr).await;
    writer.batch_execute("INSERT INTO t VALUES (3, 'z'); DELETE FROM t WHERE a = 1").await.unwrap();
    read_until(&mut copy, &mut lines, |l| l.len() >= 4).await;
    let changes: HashSet<(String, String)> = lines[2..].iter().map(|l| (l[1].clone(), l[2].clone())).collect();
    assert_eq!(changes, HashSet::from([("1".into(), "3".into()), ("-1".into(), "1".into())]));
    let ts: Vec<u64> = lines.iter().map(|l| l[0].parse().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "timestamps never decrease: {ts:?}");

    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match copy.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        }
    })
    .await
    .expect("stream ends after cancel");
    let e = end.expect("cancel ends the COPY with an error");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("57014"), "{e}");
    // The connection and the server keep working; the transient view is gone.
    let n = rows_of(&client.simple_query("SELECT count(*) FROM t").await.unwrap());
    assert_eq!(n, vec![vec!["2".to_string()]]);
    assert_eq!(coord.transient_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_fetch_progress_upsert_as_of() {
    let (_coord, addr) = start().await;
    let client = connect(addr).await;
    client.batch_execute("CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x')").await.unwrap();
    let fetch = |sql: &'static str| {
        let c = &client;
        async move { rows_of(&c.simple_query(sql).await.unwrap()) }
    };
    let e = client.simple_query("DECLARE c CURSOR FOR SUBSCRIBE t").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "25P01");
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE t ENVELOPE UPSERT (KEY (a)) WITH (PROGRESS)")
        .await
        .unwrap();
    let first = fetch("FETCH ALL c").await;
    assert_eq!(first[0][1..], ["f", "upsert", "1", "x"].map(String::from));
    let writer = connect(addr).await;
    writer.batch_execute("UPDATE t SET b = 'y' WHERE a = 1").await.unwrap();
    writer.batch_execute("DELETE FROM t").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.extend(fetch("FETCH 100 c WITH (timeout = '100ms')").await);
        if seen.iter().any(|r| r[2] == "delete") {
            break;
        }
    }
    let data: Vec<Vec<String>> = seen.iter().filter(|r| r[1] == "f").map(|r| r[2..].to_vec()).collect();
    assert_eq!(
        data,
        vec![["upsert", "1", "y"].map(String::from).to_vec(), ["delete", "1", "NULL"].map(String::from).to_vec()]
    );
    let ts: Vec<u64> = seen.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    client.batch_execute("COMMIT").await.unwrap();

    // AS OF a retained time replays history; a time before it is refused.
    let old = ts[0] - 1;
    let sql = format!("BEGIN; DECLARE h CURSOR FOR SUBSCRIBE t AS OF {old} UP TO {}", ts.last().unwrap() + 1);
    client.batch_execute(&sql).await.unwrap();
    let all = rows_of(&client.simple_query("FETCH ALL h WITH (timeout = '2s')").await.unwrap());
    assert!(all.len() >= 2, "{all:?}");
    client.batch_execute("COMMIT").await.unwrap();
    // (Bounded: had the time been accepted, the SUBSCRIBE would stream forever.)
    let e = tokio::time::timeout(Duration::from_secs(10), client.simple_query("SUBSCRIBE t AS OF 5"))
        .await
        .expect("AS OF before the table existed is refused at once")
        .unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("not valid"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_subscribe_and_catalog() {
    let (_coord, addr) = start().await;
    let client = connect(addr).await;
    client
        .batch_execute(
            "CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x'); CREATE VIEW v AS SELECT a FROM t",
        )
        .await
        .unwrap();
    let port = addr.port().to_string();
    let psql = {
        let port = port.clone();
        move |args: &[&str]| {
            let out = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "materialize", "-d", "materialize", "-X"])
                .args(args)
                .output()
                .expect("psql is installed");
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
        }
    };
    let listing = tokio::task::spawn_blocking({
        let psql = psql.clone();
        move || psql(&["-c", "\\d", "-c", "\\dv", "-c", "\\d t"])
    })
    .await
    .unwrap();
    let words = listing.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("| t | table"), "{listing}");
    assert!(words.contains("| v | view"), "{listing}");
    assert!(listing.contains("Table \"public.t\""), "{listing}");

    let mut child = std::process::Command::new("stdbuf")
        .args(["-o0", "psql", "-h", "127.0.0.1", "-p", &port, "-U", "materialize", "-X", "-c"])
        .arg("COPY (SUBSCRIBE t) TO STDOUT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        line.expect("a line in time").expect("psql still running")
    }
    let snap = next(&mut rx).await;
    assert!(snap.ends_with("\t1\t1\tx"), "{snap}");
    client.batch_execute("INSERT INTO t VALUES (2, 'y')").await.unwrap();
    let change = next(&mut rx).await;
    assert!(change.ends_with("\t1\t2\ty"), "{change}");
    // Ctrl-C: psql sends a cancel request; the server ends the COPY with 57014 and keeps running.
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("canceling statement due to user request"), "{err} {status}");
    let n = rows_of(&client.simple_query("SELECT count(*) FROM t").await.unwrap());
    assert_eq!(n, vec![vec!["2".to_string()]]);
}

/// The receiver: fails about a third of requests (500 or a dropped connection), applies each
/// Idempotency-Key at most once, and records how many duplicates it skipped and applied.
#[derive(Default)]
struct Receiver {
    applied_keys: HashSet<String>,
    duplicates_skipped: u64,
    duplicates_applied: u64,
    state: BTreeMap<String, i64>,
    last_ts: u64,
    out_of_order: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sink_survives_a_flaky_receiver() {
    use axum::http::{HeaderMap, StatusCode};
    let (coord, addr) = start().await;
    let recv = Arc::new(Mutex::new(Receiver::default()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let recv = recv.clone();
            move |headers: HeaderMap, body: String| {
                let recv = recv.clone();
                async move {
                    let roll: u32 = rand::random::<u32>() % 3;
                    if roll == 0 {
                        return Err(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    let key = headers.get("idempotency-key").unwrap().to_str().unwrap().to_string();
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let mut r = recv.lock().unwrap();
                    if r.applied_keys.contains(&key) {
                        r.duplicates_skipped += 1;
                    } else {
                        let ts = v["ts"].as_u64().unwrap();
                        if ts < r.last_ts {
                            r.out_of_order += 1;
                        }
                        r.last_ts = ts;
                        for e in v["rows"].as_array().unwrap() {
                            let n = r.state.entry(e["row"].to_string()).or_default();
                            *n += e["diff"].as_i64().unwrap();
                        }
                        r.state.retain(|_, n| *n != 0);
                        r.applied_keys.insert(key);
                    }
                    drop(r);
                    // Some acknowledgements are lost after the change was applied.
                    if rand::random::<u32>().is_multiple_of(6) {
                        return Err(StatusCode::BAD_GATEWAY);
                    }
                    Ok::<_, StatusCode>("ok")
                }
            }
        }),
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(http, app).await });

    let client = connect(addr).await;
    client.batch_execute("CREATE TABLE t (a int, b text)").await.unwrap();
    client.batch_execute(&format!("CREATE SINK s FROM t INTO WEBHOOK 'http://{http_addr}/hook'")).await.unwrap();
    for i in 0..40u32 {
        client.batch_execute(&format!("INSERT INTO t VALUES ({i}, 'v{i}')")).await.unwrap();
        if i.is_multiple_of(3) {
            client.batch_execute(&format!("DELETE FROM t WHERE a = {}", i / 2)).await.unwrap();
        }
    }
    let expected: BTreeMap<String, i64> = rows_of(&client.simple_query("SELECT a, b FROM t").await.unwrap())
        .into_iter()
        .map(|r| (serde_json::json!([r[0].parse::<i64>().unwrap(), r[1]]).to_string(), 1))
        .collect();
    let sealed = coord.sealed_ts();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let st = coord.sink_statuses().pop().unwrap();
            if st.last_acked_ts.is_some_and(|t| t >= sealed.saturating_sub(50))
                && recv.lock().unwrap().state == expected
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("receiver converges: {:?} vs {:?}", recv.lock().unwrap().state, expected));
    {
        let r = recv.lock().unwrap();
        assert_eq!(r.duplicates_applied, 0);
        assert_eq!(r.out_of_order, 0);
        eprintln!("receiver skipped {} duplicate deliveries", r.duplicates_skipped);
    }
    let status = coord.sink_statuses().pop().unwrap();
    assert!(status.errors > 0, "the receiver failed some requests: {status:?}");
    let shown = rows_of(&client.simple_query("SHOW SINKS").await.unwrap());
    assert_eq!(shown[0][0], "s");
    let e = client.batch_execute("DROP TABLE t").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "2BP01");
    client.batch_execute("DROP SINK s").await.unwrap();
    assert!(coord.sink_statuses().is_empty());
}

/// `CREATE SINK ... WITH (SNAPSHOT = false, TOKEN = .., TIMEOUT = ..)`: the receiver sees the
/// bearer token on every request and no snapshot (only changes after the sink started); the token
/// never shows in `SHOW CREATE SINK`; `viewcast_sink_status` is a relation like any other, whose
/// rows follow the sink's progress; bad options are errors that say which option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sink_options_and_status_view() {
    use axum::http::{HeaderMap, StatusCode};
    let (_coord, addr) = start().await;
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let unauthorized = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let (bodies, unauthorized) = (bodies.clone(), unauthorized.clone());
            move |headers: HeaderMap, body: String| {
                let (bodies, unauthorized) = (bodies.clone(), unauthorized.clone());
                async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer s3cret") {
                        unauthorized.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    bodies.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                    Ok::<_, StatusCode>("ok")
                }
            }
        }),
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(http, app).await });

    let client = connect(addr).await;
    client.batch_execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2)").await.unwrap();
    let hook = format!("http://{http_addr}/hook");
    for (bad, says) in [
        ("WITH (SNAPSHOT = 7)", "TRUE or FALSE"),
        ("WITH (TIMEOUT = 'soon')", "TIMEOUT"),
        ("WITH (TOKEN = 5)", "string literal"),
        ("WITH (COLOR = 'red')", "SNAPSHOT, TOKEN, TIMEOUT"),
    ] {
        let e = client.batch_execute(&format!("CREATE SINK bad FROM t INTO WEBHOOK '{hook}' {bad}")).await.unwrap_err();
        let msg = e.as_db_error().unwrap().message().to_string();
        assert!(msg.contains(says), "{bad}: {msg}");
    }
    client
        .batch_execute(&format!(
            "CREATE SINK s FROM t INTO WEBHOOK '{hook}' WITH (SNAPSHOT = false, TOKEN = 's3cret', TIMEOUT = '5s')"
        ))
        .await
        .unwrap();
    client.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    client.batch_execute("DELETE FROM t WHERE a = 1").await.unwrap();

    // The receiver gets exactly the two changes (in one POST or two: a sink that falls behind
    // consolidates), and the status view catches up with the deliveries.
    let received = || -> Vec<(i64, i64)> {
        let mut changes: Vec<(i64, i64)> = bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["rows"].as_array().unwrap().clone())
            .map(|e| (e["row"][0].as_i64().unwrap(), e["diff"].as_i64().unwrap()))
            .collect();
        changes.sort_unstable();
        changes
    };
    let sql = "SELECT state, posts, errors, pending_rows, url FROM viewcast_sink_status WHERE name = 's'";
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = rows_of(&client.simple_query(sql).await.unwrap());
            let posts = bodies.lock().unwrap().len().to_string();
            if received().len() >= 2 && r.first().is_some_and(|r| r[1] == posts) {
                return r[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("viewcast_sink_status catches up with the receiver");
    assert_eq!(received(), [(1, -1), (3, 1)], "no snapshot, only the two changes");
    assert_eq!(status[0], "running");
    assert_eq!(status[2..], ["0", "0", hook.as_str()]);
    assert_eq!(unauthorized.load(std::sync::atomic::Ordering::SeqCst), 0, "every request carried the token");

    let shown = rows_of(&client.simple_query("SHOW CREATE SINK s").await.unwrap());
    assert!(!shown[0][1].contains("s3cret") && shown[0][1].contains("<redacted>"), "{shown:?}");
    let listed = rows_of(&client.simple_query("SHOW SINKS").await.unwrap());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0][0], "s");

    client.batch_execute("DROP SINK s").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !rows_of(&client.simple_query("SELECT name FROM viewcast_sink_status").await.unwrap()).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a dropped sink leaves viewcast_sink_status");
}
