//! What N concurrent `SUBSCRIBE`s cost: sharing a view's log vs one transient dataflow each.
//!
//! Starts viewcast in-process (pgwire on a free loopback port) with a table of 10,000 rows and a
//! view over it, opens N tokio-postgres connections and on each either `COPY (SUBSCRIBE v) TO
//! STDOUT` (`shared`: every subscriber reads the view's one log) or `COPY (SUBSCRIBE (SELECT ...
//! FROM t WHERE ...)) TO STDOUT` (`dataflow`: a transient dataflow per subscriber), waits until each
//! has its snapshot, then inserts one row and times until every subscriber has it. Reports the
//! process's resident memory growth per subscriber (server and clients share the process; the
//! client side is the same in both modes) and the time for one change to reach all.
//!
//!     cargo run --release -p viewcast-pgwire --example subscribe_fanout -- 1000 shared
//!     cargo run --release -p viewcast-pgwire --example subscribe_fanout -- 1000 dataflow
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_postgres::NoTls;
use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};

const ROWS: usize = 10_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn run(coord: &Coordinator, sql: &str) {
    for r in coord.execute(sql).await {
        if let ExecuteResult::Error(e) = r {
            panic!("{sql}: {e}");
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let mode = std::env::args().nth(2).unwrap_or_else(|| "shared".into());
    let query = match mode.as_str() {
        "shared" => "COPY (SUBSCRIBE v) TO STDOUT".to_string(),
        "dataflow" => "COPY (SUBSCRIBE (SELECT a, b FROM t WHERE a >= 0)) TO STDOUT".to_string(),
        other => panic!("mode must be shared or dataflow, not {other}"),
    };
    let coord = Arc::new(Coordinator::start(CoordConfig::default()).expect("coordinator starts"));
    run(&coord, "CREATE TABLE t (a int, b text); CREATE MATERIALIZED VIEW v AS SELECT a, b FROM t WHERE a >= 0").await;
    let values: Vec<String> = (0..ROWS).map(|i| format!("({i}, 'row {i}')")).collect();
    run(&coord, &format!("INSERT INTO t VALUES {}", values.join(", "))).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(viewcast_pgwire::serve(listener, coord.clone(), None, std::future::pending()));
    let conn = format!("host=127.0.0.1 port={} user=materialize dbname=materialize", addr.port());

    let before = rss_kib();
    let (snap_tx, mut snap_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (change_tx, mut change_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    for _ in 0..n {
        let (client, connection) = tokio_postgres::connect(&conn, NoTls).await.expect("connect");
        tokio::spawn(connection);
        let (query, snap_tx, change_tx) = (query.clone(), snap_tx.clone(), change_tx.clone());
        tokio::spawn(async move {
            let copy = client.copy_out(query.as_str()).await.expect("copy out");
            let mut copy = Box::pin(copy);
            let mut rows = 0usize;
            let mut snapshot_done = false;
            while let Some(Ok(chunk)) = copy.next().await {
                rows += chunk.iter().filter(|b| **b == b'\n').count();
                if !snapshot_done && rows >= ROWS {
                    snapshot_done = true;
                    let _ = snap_tx.send(());
                }
                if rows > ROWS {
                    let _ = change_tx.send(Instant::now());
                    break;
                }
            }
            drop(client);
        });
    }
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(300), snap_rx.recv()).await.expect("every snapshot in time");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let sent = Instant::now();
    run(&coord, &format!("INSERT INTO t VALUES ({ROWS}, 'new')")).await;
    let mut last = sent;
    for _ in 0..n {
        let at = tokio::time::timeout(Duration::from_secs(120), change_rx.recv()).await.expect("every change in time");
        last = last.max(at.expect("sender alive"));
    }
    println!(
        "{{\"bench\":\"subscribe_fanout\",\"mode\":\"{mode}\",\"subscribers\":{n},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"rss_per_subscriber_kib\":{:.1},\"change_to_all_ms\":{:.1}}}",
        after.saturating_sub(before) as f64 / n as f64,
        last.duration_since(sent).as_secs_f64() * 1000.0
    );
    std::process::exit(0);
}
