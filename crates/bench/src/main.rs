//! `viewcast-bench`: measurements behind BENCHMARKS.md. Every run is bounded in time and count and
//! talks to loopback only.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use viewcast_coord::{CoordConfig, Coordinator};

#[derive(Parser)]
#[command(name = "viewcast-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Latency from a tick closing to its sealed update leaving the engine, the demo's four views
    /// fed by the load generator at a fixed rate.
    TickLatency {
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// One pgwire client reading `COPY (SUBSCRIBE t UP TO ..) TO STDOUT` of a table's snapshot.
    PgwireCopy {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
    },
    /// Many pgwire clients streaming `COPY (SUBSCRIBE ..)` of one view while a writer changes it:
    /// memory and CPU per subscriber, sharing the view's log (`--mode shared`) or each with its
    /// own transient dataflow (`--mode dataflow`, `SUBSCRIBE (SELECT * FROM v)`).
    PgwireFanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value = "shared")]
        mode: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    match Cli::parse().command {
        Command::TickLatency { rate, seconds, tick_ms, workers } => {
            let coord = Coordinator::start(CoordConfig { workers, tick_ms, ..CoordConfig::default() })
                .context("starting the engine")?;
            let sql = include_str!("../../viewcast/src/demo.sql")
                .replace("EVENTS PER SECOND 200", &format!("EVENTS PER SECOND {rate}"));
            for r in coord.execute(&sql).await {
                if let viewcast_coord::ExecuteResult::Error(e) = r {
                    anyhow::bail!("setup failed: {e}");
                }
            }
            // Warm up, then measure.
            tokio::time::sleep(Duration::from_secs(2)).await;
            coord.take_tick_latencies();
            let start_count = counter(&coord).await;
            let start = Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let end_count = counter(&coord).await;
            let elapsed = start.elapsed().as_secs_f64();
            let mut lat = coord.take_tick_latencies();
            lat.sort_unstable();
            let out = serde_json::json!({
                "bench": "tick-latency",
                "rate_target": rate,
                "events_per_s_measured": ((end_count - start_count) as f64 / elapsed).round(),
                "tick_ms": tick_ms,
                "workers": workers,
                "ticks": lat.len(),
                "p50_ms": percentile(&lat, 0.50),
                "p99_ms": percentile(&lat, 0.99),
                "max_ms": percentile(&lat, 1.0),
            });
            println!("{out}");
        }
        Command::PgwireCopy { rows } => pgwire_copy(rows).await?,
        Command::PgwireFanout { subscribers, mode, seconds } => pgwire_fanout(subscribers, &mode, seconds).await?,
    }
    Ok(())
}

async fn start_pgwire() -> anyhow::Result<(std::sync::Arc<Coordinator>, std::net::SocketAddr)> {
    let coord = std::sync::Arc::new(Coordinator::start(CoordConfig::default()).context("starting the engine")?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(viewcast_pgwire::serve(listener, coord.clone(), std::future::pending()));
    Ok((coord, addr))
}

async fn pg_connect(addr: std::net::SocketAddr) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={} port={} user=materialize", addr.ip(), addr.port()),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn fill_table(client: &tokio_postgres::Client, rows: usize) -> anyhow::Result<()> {
    client.batch_execute("CREATE TABLE t (a bigint, b text, c double precision)").await?;
    let chunk = 50_000;
    for start in (0..rows).step_by(chunk) {
        let values: Vec<String> =
            (start..(start + chunk).min(rows)).map(|i| format!("({i}, 'user-{}', {}.5)", i % 997, i % 1000)).collect();
        client.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(","))).await?;
    }
    Ok(())
}

async fn pgwire_copy(rows: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    let (coord, addr) = start_pgwire().await?;
    let client = pg_connect(addr).await?;
    fill_table(&client, rows).await?;
    let up_to = coord.sealed_ts() + 1;
    let (_, cpu0) = proc_usage();
    let start = Instant::now();
    let stream = client.copy_out(&format!("COPY (SUBSCRIBE t UP TO {up_to}) TO STDOUT")).await?;
    let mut stream = Box::pin(stream);
    let (mut n, mut bytes) = (0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len();
        n += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let secs = start.elapsed().as_secs_f64();
    let (_, cpu1) = proc_usage();
    anyhow::ensure!(n == rows, "expected {rows} rows, got {n}");
    let out = serde_json::json!({
        "bench": "pgwire-copy-subscribe",
        "rows": n,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "rows_per_s": (n as f64 / secs).round(),
        "mb_per_s": ((bytes as f64 / secs / 1e6) * 10.0).round() / 10.0,
        // Server and client share this process: CPU seconds of both, and rows per CPU second.
        "cpu_s": ((cpu1 - cpu0) * 100.0).round() / 100.0,
        "rows_per_cpu_s": (n as f64 / (cpu1 - cpu0).max(0.01)).round(),
    });
    println!("{out}");
    Ok(())
}

/// Resident memory (KiB) and CPU time (s) of this process, from /proc.
fn proc_usage() -> (u64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (rss, ticks / 100.0)
}

async fn pgwire_fanout(subscribers: usize, mode: &str, seconds: u64) -> anyhow::Result<()> {
    use futures::StreamExt;
    let (coord, addr) = start_pgwire().await?;
    let admin = pg_connect(addr).await?;
    fill_table(&admin, 10_000).await?;
    admin.batch_execute("CREATE VIEW v AS SELECT b, count(*) AS n FROM t GROUP BY b").await?;
    let query = match mode {
        "shared" => "COPY (SUBSCRIBE v) TO STDOUT",
        "dataflow" => "COPY (SUBSCRIBE (SELECT b, count(*) AS n FROM t GROUP BY b)) TO STDOUT",
        other => anyhow::bail!("unknown mode {other}: shared or dataflow"),
    };
    let (rss0, _) = proc_usage();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let client = pg_connect(addr).await?;
        let stream = client.copy_out(query).await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut stream = Box::pin(stream);
            while let Some(Ok(chunk)) = stream.next().await {
                received.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, cpu1) = proc_usage();
    let rows0 = received.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        // 100 changed rows per write, about 10 writes per second.
        let values: Vec<String> =
            (0..100).map(|k| format!("({}, 'user-{}', 0.5)", i * 100 + k, (i * 7 + k) % 997)).collect();
        admin.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(","))).await?;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (rss2, cpu2) = proc_usage();
    let bytes = received.load(std::sync::atomic::Ordering::Relaxed) - rows0;
    let out = serde_json::json!({
        "bench": "pgwire-fanout",
        "mode": mode,
        "subscribers": subscribers,
        "transient_views": coord.transient_count(),
        "rss_before_mib": rss0 / 1024,
        "rss_with_subscribers_mib": rss2 / 1024,
        "rss_per_subscriber_kib": (rss1.saturating_sub(rss0)) / subscribers as u64,
        "cpu_s_per_s": ((cpu2 - cpu1) / secs * 100.0).round() / 100.0,
        "cpu_ms_per_s_per_subscriber": ((cpu2 - cpu1) / secs * 1000.0 / subscribers as f64 * 1000.0).round() / 1000.0,
        "writes": i,
        "mb_delivered_per_s": ((bytes as f64 / secs / 1e6) * 100.0).round() / 100.0,
    });
    println!("{out}");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn counter(coord: &Coordinator) -> i64 {
    match coord.query("SELECT * FROM counter").await {
        Ok((_, rows)) => match rows.first().map(|r| r.get(0)) {
            Some(viewcast_repr::Datum::Int(n)) => *n,
            _ => 0,
        },
        Err(_) => 0,
    }
}
