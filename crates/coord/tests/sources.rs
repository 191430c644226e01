//! Real sources through the coordinator and the 2020 views, unchanged: an SSE server on port 0
//! that cuts connections mid-event, and files that grow, rotate and are truncated. Every time, the
//! views equal a recomputation over the distinct events (none lost, none duplicated).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use viewcast_coord::{CoordConfig, Coordinator};
use viewcast_repr::{Datum, Row};

const FIXTURE: &str = include_str!("fixtures/recentchange-sample.sse");

/// The demo's views (crates/viewcast/src/demo.sql) without its load generator.
const VIEWS: &str = "
CREATE MATERIALIZED VIEW recentchanges AS
  SELECT val->>'user' AS user, (val->'bot')::bool AS bot, val->>'wiki' AS wiki,
         val->>'type' AS type, val->>'title' AS title, (val->'timestamp')::float AS r_ts,
         (val->'length'->'new')::float::int - (val->'length'->'old')::float::int AS delta
  FROM (SELECT data::jsonb AS val FROM wikirecent);
CREATE MATERIALIZED VIEW counter AS SELECT COUNT(*) FROM recentchanges;
CREATE MATERIALIZED VIEW useredits AS SELECT user, count(*) FROM recentchanges GROUP BY user;
CREATE MATERIALIZED VIEW top10 AS SELECT * FROM useredits ORDER BY count DESC LIMIT 10;";

fn templates() -> Vec<Value> {
    FIXTURE.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

/// Event `i`: a fixture event with a distinct id and one of 40 users, skewed so counts differ.
fn event(i: u64, templates: &[Value]) -> Value {
    let mut e = templates[(i % templates.len() as u64) as usize].clone();
    e["meta"]["offset"] = i.into();
    e["meta"]["id"] = format!("evt-{i}").into();
    e["id"] = i.into();
    e["user"] = format!("user-{}", user_of(i)).into();
    e
}

fn user_of(i: u64) -> u64 {
    // Squaring a uniform draw skews toward low numbers: user-0 edits most.
    let x = (i.wrapping_mul(2654435761) % 1000) as f64 / 1000.0;
    (x * x * 40.0) as u64
}

/// What the views must hold after events `ids`.
fn expected_useredits(ids: impl IntoIterator<Item = u64>) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for i in ids {
        *m.entry(format!("user-{}", user_of(i))).or_insert(0) += 1;
    }
    m
}

fn int(d: &Datum) -> i64 {
    match d {
        Datum::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

async fn rows(coord: &Coordinator, sql: &str) -> Vec<Row> {
    coord.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).1
}

async fn counter(coord: &Coordinator) -> i64 {
    rows(coord, "SELECT * FROM counter").await.first().map(|r| int(r.get(0))).unwrap_or(0)
}

async fn wait_counter(coord: &Coordinator, want: i64, timeout: Duration) {
    let start = Instant::now();
    loop {
        let n = counter(coord).await;
        if n == want {
            return;
        }
        assert!(n < want, "counter passed {want}: {n} (duplicates)");
        assert!(start.elapsed() < timeout, "counter stuck at {n}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// counter, useredits and top10 equal a recomputation over `expected`.
async fn check_views(coord: &Coordinator, expected: &BTreeMap<String, i64>) {
    let total: i64 = expected.values().sum();
    assert_eq!(counter(coord).await, total);
    let useredits: BTreeMap<String, i64> = rows(coord, "SELECT * FROM useredits")
        .await
        .iter()
        .map(|r| (r.get(0).to_json().as_str().unwrap().to_string(), int(r.get(1))))
        .collect();
    assert_eq!(&useredits, expected);
    let top10: Vec<(String, i64)> = rows(coord, "SELECT * FROM top10")
        .await
        .iter()
        .map(|r| (r.get(0).to_json().as_str().unwrap().to_string(), int(r.get(1))))
        .collect();
    let mut counts: Vec<i64> = expected.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let mut top_counts: Vec<i64> = top10.iter().map(|(_, c)| *c).collect();
    top_counts.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(top_counts, counts[..10.min(counts.len())], "top10 holds the ten largest counts");
    for (user, c) in &top10 {
        assert_eq!(expected.get(user), Some(c), "top10 row {user} agrees with the recomputation");
    }
}

async fn start() -> Coordinator {
    Coordinator::start(CoordConfig { tick_ms: 20, ..CoordConfig::default() }).unwrap()
}

// ---------------------------------------------------------------------------------------------
// SSE

/// Serves events `0..total` as SSE; each connection resumes after its `Last-Event-ID`, sends
/// 20 to 220 events and then cuts the connection in the middle of the next one.
async fn start_sse_server(total: u64) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let templates = templates();
    tokio::spawn(async move {
        for conn in 0u64.. {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let templates = templates.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let start = request
                    .lines()
                    .find_map(|l| l.strip_prefix("Last-Event-ID: ").or_else(|| l.strip_prefix("last-event-id: ")))
                    .map(|id| id.trim().parse::<u64>().unwrap() + 1)
                    .unwrap_or(0);
                let end = (start + 20 + (conn * 7919) % 200).min(total);
                let mut body = b":ok\nretry: 5\n\n".to_vec();
                let frame = |i: u64| {
                    let data = serde_json::to_string(&event(i, &templates)).unwrap();
                    format!("event: message\nid: {i}\ndata: {data}\n\n").into_bytes()
                };
                for i in start..end {
                    body.extend(frame(i));
                }
                if end < total {
                    let next = frame(end);
                    body.extend_from_slice(&next[..next.len() / 2]);
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() || socket.write_all(&body).await.is_err() {
                    return;
                }
                if end == total {
                    let _ = tokio::time::timeout(Duration::from_secs(60), socket.read(&mut buf)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_source_with_connection_cuts_feeds_the_2020_views_exactly_once() {
    const TOTAL: u64 = 3_000;
    let addr = start_sse_server(TOTAL).await;
    let coord = start().await;
    coord.execute(&format!("CREATE SOURCE wikirecent FROM SSE 'http://{addr}/v2/stream/recentchange'")).await;
    for r in coord.execute(VIEWS).await {
        assert!(!matches!(r, viewcast_coord::ExecuteResult::Error(_)), "{r:?}");
    }
    wait_counter(&coord, TOTAL as i64, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_views(&coord, &expected_useredits(0..TOTAL)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_metadata_columns_and_a_dead_url() {
    let addr = start_sse_server(50).await;
    let coord = start().await;
    let r = coord
        .query(&format!(
            "CREATE SOURCE meta FROM SSE 'http://{addr}/' WITH (include_metadata = true); SHOW COLUMNS FROM meta"
        ))
        .await
        .unwrap();
    let names: Vec<String> = r.1.iter().map(|r| r.get(0).to_json().as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["data", "id", "event"]);
    coord.execute("CREATE MATERIALIZED VIEW ids AS SELECT id, event, data->>'user' AS user FROM meta").await;
    let start = Instant::now();
    while rows(&coord, "SELECT * FROM ids").await.len() < 50 {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = rows(&coord, "SELECT id FROM ids WHERE id = '49' AND event = 'message'").await;
    assert_eq!(got.len(), 1);

    // Nothing listens on port 1: the source keeps retrying, counts errors, and nothing crashes.
    coord.execute("CREATE SOURCE dead FROM SSE 'http://127.0.0.1:1/stream'").await;
    let start = Instant::now();
    loop {
        let r = rows(&coord, "SELECT errors, last_error FROM viewcast_source_stats WHERE name = 'dead'").await;
        if r.first().is_some_and(|r| int(r.get(0)) >= 1) {
            assert!(r[0].get(1).to_json().as_str().unwrap().contains("127.0.0.1:1"), "{r:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "dead URL not reported: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Files

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("viewcast-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Appends events `ids` to `path` the way `curl ... >> file` saved the stream in 2020.
fn append_sse(path: &Path, ids: std::ops::Range<u64>, templates: &[Value]) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let mut out = String::new();
    for i in ids {
        let data = serde_json::to_string(&event(i, templates)).unwrap();
        out.push_str(&format!("event: message\nid: [{{\"offset\":{i}}}]\ndata: {data}\n\n"));
    }
    f.write_all(out.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_2020_file_setup_runs_unchanged_through_appends_rotation_and_truncation() {
    let dir = TempDir::new("regex-file");
    let path = dir.0.join("wikirecent");
    let t = templates();
    append_sse(&path, 0..500, &t);

    let coord = start().await;
    let sql = format!(
        "CREATE SOURCE wikirecent FROM FILE '{}' WITH (tail = true) FORMAT REGEX '^data: (?P<data>.*)'; {VIEWS}",
        path.display()
    );
    for r in coord.execute(&sql).await {
        assert!(!matches!(r, viewcast_coord::ExecuteResult::Error(_)), "{r:?}");
    }
    wait_counter(&coord, 500, Duration::from_secs(60)).await;
    check_views(&coord, &expected_useredits(0..500)).await;

    // Appends, in pieces that split lines.
    let mut more = Vec::new();
    for i in 500..1_200 {
        let data = serde_json::to_string(&event(i, &t)).unwrap();
        more.extend(format!("event: message\nid: [{{\"offset\":{i}}}]\ndata: {data}\n\n").into_bytes());
    }
    for piece in more.chunks(7_777) {
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(piece).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_counter(&coord, 1_200, Duration::from_secs(60)).await;
    check_views(&coord, &expected_useredits(0..1_200)).await;

    // Rotation: the file is renamed (a last append lands in the old one) and a new one created.
    std::fs::rename(&path, dir.0.join("wikirecent.1")).unwrap();
    append_sse(&dir.0.join("wikirecent.1"), 1_200..1_300, &t);
    tokio::time::sleep(Duration::from_millis(200)).await;
    append_sse(&path, 1_300..2_000, &t);
    wait_counter(&coord, 2_000, Duration::from_secs(60)).await;
    check_views(&coord, &expected_useredits(0..2_000)).await;

    // Truncation in place, then new events.
    std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    append_sse(&path, 2_000..2_100, &t);
    wait_counter(&coord, 2_100, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    check_views(&coord, &expected_useredits(0..2_100)).await;

    let stats = rows(&coord, "SELECT events_in, errors, skipped FROM viewcast_source_stats WHERE name = 'wikirecent'");
    let start = Instant::now();
    let mut stats = stats.await;
    while stats.first().is_none_or(|r| int(r.get(0)) != 2_100) {
        assert!(start.elapsed() < Duration::from_secs(10), "{stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = rows(&coord, "SELECT events_in, errors, skipped FROM viewcast_source_stats WHERE name = 'wikirecent'")
            .await;
    }
    assert_eq!(int(stats[0].get(1)), 0, "no errors: {stats:?}");
    // "event:", "id:" and blank lines: three skipped per event.
    assert_eq!(int(stats[0].get(2)), 3 * 2_100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_file_with_bad_lines_keeps_the_good_ones_and_counts_the_bad() {
    let dir = TempDir::new("ndjson-bad");
    let path = dir.0.join("events.ndjson");
    let t = templates();
    let mut body = Vec::new();
    let mut good = Vec::new();
    for i in 0..1_000u64 {
        match i % 100 {
            11 => body.extend_from_slice(b"{\"broken\": \n"),
            22 => body.extend_from_slice(b"{\"user\": \"\xFF\xFE\"}\n"),
            33 => body.extend(format!("{{\"pad\": \"{}\"}}\n", "x".repeat(2 << 20)).into_bytes()),
            44 => body.extend_from_slice(b"\n"),
            _ => {
                good.push(i);
                body.extend(serde_json::to_string(&event(i, &t)).unwrap().into_bytes());
                body.push(b'\n');
            }
        }
    }
    std::fs::write(&path, &body).unwrap();
    let coord = start().await;
    let sql = format!("CREATE SOURCE wikirecent FROM FILE '{}' FORMAT JSON; {VIEWS}", path.display());
    for r in coord.execute(&sql).await {
        assert!(!matches!(r, viewcast_coord::ExecuteResult::Error(_)), "{r:?}");
    }
    wait_counter(&coord, good.len() as i64, Duration::from_secs(60)).await;
    check_views(&coord, &expected_useredits(good.iter().copied())).await;
    let start = Instant::now();
    loop {
        let r = rows(&coord, "SELECT errors, skipped, events_in FROM viewcast_source_stats WHERE name = 'wikirecent'")
            .await;
        if r.first().is_some_and(|r| int(r.get(2)) == good.len() as i64) {
            assert_eq!((int(r[0].get(0)), int(r[0].get(1))), (30, 10), "{r:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A one-off read of a missing file fails the statement; a tailed one waits and reports it.
    let r = coord.query("CREATE SOURCE nope FROM FILE '/nonexistent/viewcast' FORMAT TEXT").await;
    assert!(r.is_err(), "{r:?}");
    let gone = dir.0.join("later.txt");
    coord
        .query(&format!("CREATE SOURCE later FROM FILE '{}' WITH (tail = true) FORMAT TEXT", gone.display()))
        .await
        .unwrap();
    coord.query("CREATE MATERIALIZED VIEW later_lines AS SELECT count(*) FROM later").await.unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&gone, "one\ntwo\nthree\n").unwrap();
    let start = Instant::now();
    loop {
        let r = rows(&coord, "SELECT * FROM later_lines").await;
        if r.first().is_some_and(|r| int(r.get(0)) == 3) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The file disappears: counted once it stays gone, never a crash.
    std::fs::remove_file(&gone).unwrap();
    let start = Instant::now();
    loop {
        let r = rows(&coord, "SELECT errors FROM viewcast_source_stats WHERE name = 'later'").await;
        if r.first().is_some_and(|r| int(r.get(0)) >= 2) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_ingest_is_sealed_all_or_nothing_and_checks_the_source() {
    let coord = start().await;
    coord.query("CREATE SOURCE hook FROM WEBHOOK BODY FORMAT JSON").await.unwrap();
    coord.query("CREATE MATERIALIZED VIEW hook_n AS SELECT count(*) FROM hook").await.unwrap();
    let (n, ts) = coord.ingest_body("hook", br#"[{"a":1},{"a":2}]"#).await.unwrap();
    assert_eq!(n, 2);
    assert!(coord.sealed_ts() >= ts, "answered only once sealed");
    assert_eq!(int(rows(&coord, "SELECT * FROM hook_n").await[0].get(0)), 2);
    let err = coord.ingest_body("hook", b"{\"a\":3}\n{\"a\":").await.unwrap_err();
    assert_eq!(err.code, "22P02");
    assert!(err.message.contains("record 2"), "{err}");
    assert_eq!(int(rows(&coord, "SELECT * FROM hook_n").await[0].get(0)), 2, "nothing of a bad request");
    assert_eq!(coord.ingest_body("nope", b"{}").await.unwrap_err().code, "42P01");
    assert_eq!(coord.ingest_body("hook_n", b"{}").await.unwrap_err().code, "42809");
}
