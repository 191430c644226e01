//! Rows per second one Postgres client receives from `COPY (SUBSCRIBE ...) TO STDOUT`.
//!
//! Starts viewcast in-process (pgwire on a free loopback port), loads `N` recentchange events
//! through the demo's `recentchanges` view (seven columns), then times a tokio-postgres client
//! reading the view's snapshot over the wire (`N` events; identical events arrive as one row with
//! `mz_diff` > 1). Reports wall rows/s and rows per CPU-second of the whole process (server and
//! client share it, as they share the machine).
//!
//!     cargo run --release -p viewcast-pgwire --example subscribe_throughput -- 1000000
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_postgres::NoTls;
use viewcast_coord::{CoordConfig, Coordinator};

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn count(coord: &Coordinator) -> i64 {
    match coord.query("SELECT * FROM counter").await {
        Ok((_, rows)) => match rows.first().map(|r| r.get(0)) {
            Some(viewcast_repr::Datum::Int(n)) => *n,
            _ => 0,
        },
        Err(_) => 0,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let coord = Arc::new(Coordinator::start(CoordConfig::default()).expect("coordinator starts"));
    let sql = format!(
        "CREATE SOURCE wikirecent FROM LOAD GENERATOR WIKIPEDIA (EVENTS PER SECOND 0, SEED 7, MAX EVENTS {n});
         CREATE MATERIALIZED VIEW recentchanges AS
           SELECT val->>'user' AS user, (val->'bot')::bool AS bot, val->>'wiki' AS wiki,
                  val->>'type' AS type, val->>'title' AS title, (val->'timestamp')::float AS r_ts,
                  (val->'length'->'new')::float::int - (val->'length'->'old')::float::int AS delta
           FROM (SELECT data::jsonb AS val FROM wikirecent);
         CREATE MATERIALIZED VIEW counter AS SELECT count(*) FROM recentchanges;"
    );
    for r in coord.execute(&sql).await {
        if let viewcast_coord::ExecuteResult::Error(e) = r {
            panic!("setup failed: {e}");
        }
    }
    let loaded = Instant::now();
    while count(&coord).await < n as i64 {
        assert!(loaded.elapsed() < Duration::from_secs(600), "loading {n} events took over 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("loaded {n} events in {:.1} s", loaded.elapsed().as_secs_f64());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(viewcast_pgwire::serve(listener, coord.clone(), None, std::future::pending()));
    let conn = format!("host=127.0.0.1 port={} user=materialize dbname=materialize", addr.port());
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await.expect("connect");
    tokio::spawn(connection);

    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let copy = client.copy_out("COPY (SUBSCRIBE recentchanges) TO STDOUT").await.expect("copy out");
    let mut copy = Box::pin(copy);
    // Identical events are one row with mz_diff > 1: count lines, and sum mz_diff to know when
    // the whole snapshot (n events) has arrived.
    let (mut rows, mut bytes, mut events) = (0u64, 0u64, 0i64);
    while events < n as i64 {
        let chunk = tokio::time::timeout(Duration::from_secs(60), copy.next())
            .await
            .expect("rows keep coming")
            .expect("stream open")
            .expect("copy data");
        bytes += chunk.len() as u64;
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            rows += 1;
            let diff = line.split(|b| *b == b'\t').nth(1).and_then(|d| std::str::from_utf8(d).ok());
            events += diff.and_then(|d| d.parse::<i64>().ok()).expect("mz_diff column");
        }
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    println!(
        "{{\"bench\":\"subscribe_throughput\",\"events\":{events},\"rows\":{rows},\"bytes\":{bytes},\"seconds\":{secs:.3},\"rows_per_s\":{:.0},\"cpu_seconds\":{cpu:.2},\"rows_per_cpu_s\":{:.0}}}",
        rows as f64 / secs,
        rows as f64 / cpu.max(0.01)
    );
}
