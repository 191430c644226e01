//! `viewcast-bench`: measurements behind BENCHMARKS.md. Every run is bounded in time and count and
//! talks to loopback only. Each subcommand prints one JSON line per system measured, then a
//! `summary` line with viewcast's ratios to each baseline; `--plot FILE.png` draws a plot (through
//! `bench/plot.py`, after `bench/setup.sh`).

mod client;
mod fanout;
mod ingest;
mod minimal;
mod proc;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use viewcast_coord::{CoordConfig, Coordinator};

use crate::fanout::{RunSpec, System};

/// Longest a whole invocation may run.
const MAX_INVOCATION: Duration = Duration::from_secs(30 * 60);

#[derive(Parser)]
#[command(name = "viewcast-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Fast (always reading) clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Changing timestamps per second (viewcast: one INSERT each; minimal/node: timer; tornado: POSTs).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,
    /// Seconds between the last client's first frame and the window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Source addresses 127.0.0.2.. the clients are spread over (about 28k connections each).
    #[arg(long, default_value_t = 4)]
    addresses: usize,
    /// Connection attempts in flight at once (0: all at once).
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Systems to run, in order, with the same clients and load.
    #[arg(long, value_delimiter = ',', default_value = "viewcast,minimal,node,tornado")]
    systems: Vec<System>,
    /// viewcast's tick (timestamp length) in ms.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// How viewcast's view is changed R times a second.
    #[arg(long, value_enum, default_value = "loadgen")]
    viewcast_load: fanout::ViewcastLoad,
    /// Write a PNG plot here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
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
<<<<<<< HEAD
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
=======
    /// N clients x R changing timestamps/s on a view: delivered frames, latency, server CPU/RSS.
    Fanout {
        #[command(flatten)]
        load: LoadArgs,
        /// Stream this view (default: the bench's own table, changed `rate` times a second).
        #[arg(long, default_value = "bench_seq")]
        view: String,
    },
    /// N clients connecting at once to `top10` (demo running): time to complete snapshot.
    ConnectStorm {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// K stalled clients (never read after their first frame) among fast ones: server RSS over
    /// time and the fast clients' latency.
    SlowConsumers {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 200)]
        stalled: usize,
    },
    /// Events/s through the demo's four views, load generator as fast as possible, in process.
    Ingest {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
    },
    /// The minimal Rust broadcaster (a baseline server; normally started by the other subcommands).
    MinimalBroadcaster {
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 10.0)]
        hz: f64,
>>>>>>> bench
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
    let cli = Cli::parse();
    if let Command::MinimalBroadcaster { port, hz } = cli.command {
        return minimal::run(port, hz).await;
    }
    tokio::time::timeout(MAX_INVOCATION, run(cli.command)).await.context("the run exceeded its time cap")?
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::TickLatency { rate, seconds, tick_ms, workers } => tick_latency(rate, seconds, tick_ms, workers).await,
        Command::Fanout { load, view } => {
            let demo = view != "bench_seq";
            scenario("fanout", &load, view, demo, 0, "latency").await
        }
        Command::ConnectStorm { load } => {
            scenario("connect-storm", &load, "top10".into(), true, 0, "first-frame").await
        }
        Command::SlowConsumers { load, stalled } => {
            scenario("slow-consumers", &load, "bench_seq".into(), false, stalled, "rss").await
        }
        Command::Ingest { events, workers, tick_ms, plot } => {
            let mut runs = Vec::new();
            for w in workers {
                let r = ingest::run(events, w, tick_ms).await?;
                println!("{r}");
                runs.push(r);
            }
            if let Some(p) = plot {
                draw("ingest", &format!("ingest: {events} events, tick {tick_ms} ms, {}", machine()), &runs, &p)?;
            }
            Ok(())
        }
        Command::MinimalBroadcaster { .. } => unreachable!("handled in main"),
    }
}

async fn scenario(
    bench: &str,
    load: &LoadArgs,
    view: String,
    demo: bool,
    stalled: usize,
    plot_kind: &str,
) -> anyhow::Result<()> {
    println!(
        "{}",
        json!({"bench": bench, "machine": machine(), "open_files_limit": proc::open_file_limit(),
               "clients": load.clients, "stalled": stalled, "rate": load.rate, "seconds": load.seconds})
    );
    let mut lines = Vec::new();
    let mut plots = Vec::new();
    for &system in &load.systems {
        let spec = RunSpec {
            system,
            clients: load.clients,
            stalled,
            rate: load.rate,
            seconds: load.seconds,
            warmup: load.warmup,
            addresses: load.addresses,
            connect_concurrency: if bench == "connect-storm" { 0 } else { load.concurrency },
            view: view.clone(),
            demo,
            tick_ms: load.tick_ms,
            viewcast_load: load.viewcast_load,
        };
        let (mut line, plot) = match fanout::run(&spec).await {
            Ok(r) => r,
            Err(e) => (json!({"system": system.name(), "error": format!("{e:#}")}), json!({"system": system.name()})),
        };
        line["bench"] = json!(bench);
        println!("{line}");
        lines.push(line);
        plots.push(plot);
        // Let sockets in TIME_WAIT and the previous server's memory go before the next system.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("{}", json!({"bench": bench, "summary": ratios(&lines)}));
    if let Some(p) = &load.plot {
        let title = format!(
            "{bench}: {} clients{} x {} ts/s, {}",
            load.clients,
            if stalled > 0 { format!(" + {stalled} stalled") } else { String::new() },
            load.rate,
            machine()
        );
        draw(plot_kind, &title, &plots, p)?;
    }
    Ok(())
}

/// viewcast's figures divided by each baseline's.
fn ratios(lines: &[Value]) -> Value {
    let Some(vc) = lines.iter().find(|l| l["system"] == "viewcast") else { return json!({}) };
    let get = |l: &Value, path: &[&str]| path.iter().try_fold(l, |v, k| v.get(*k)).and_then(Value::as_f64);
    let metrics: [(&str, &[&str]); 6] = [
        ("updates_per_s", &["updates_per_s"]),
        ("latency_p99", &["latency", "p99_ms"]),
        ("e2e_p99", &["e2e_latency", "p99_ms"]),
        ("first_frame_p95", &["first_frame", "p95_ms"]),
        ("rss_per_conn", &["rss_per_conn_kib"]),
        ("server_cpu", &["server_cpu_pct"]),
    ];
    let mut out = serde_json::Map::new();
    for base in lines.iter().filter(|l| l["system"] != "viewcast") {
        let mut m = serde_json::Map::new();
        for (name, path) in metrics {
            if let (Some(a), Some(b)) = (get(vc, path), get(base, path)) {
                if b != 0.0 {
                    m.insert(format!("viewcast/{name}"), json!((a / b * 100.0).round() / 100.0));
                }
            }
        }
        out.insert(base["system"].as_str().unwrap_or("?").to_string(), Value::Object(m));
    }
    Value::Object(out)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    format!("{cores} cores, {} GiB", mem / 1024 / 1024)
}

fn draw(kind: &str, title: &str, runs: &[Value], out: &std::path::Path) -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("viewcast-bench-plot-{}.json", std::process::id()));
    std::fs::write(&data, json!({"title": title, "runs": runs}).to_string())?;
    let py = proc::bench_dir().join(".venv/bin/python");
    let status = std::process::Command::new(&py)
        .arg(proc::bench_dir().join("plot.py"))
        .arg(kind)
        .arg(&data)
        .arg(out)
        .status()
        .with_context(|| format!("running {} (bench/setup.sh installs it)", py.display()))?;
    anyhow::ensure!(status.success(), "plot.py failed");
    eprintln!("plot written to {}", out.display());
    Ok(())
}

async fn tick_latency(rate: u64, seconds: u64, tick_ms: u64, workers: usize) -> anyhow::Result<()> {
    let coord = Coordinator::start(CoordConfig { workers, tick_ms, ..CoordConfig::default() })
        .context("starting the engine")?;
    let sql = include_str!("../../viewcast/src/demo.sql")
        .replace("EVENTS PER SECOND 200", &format!("EVENTS PER SECOND {rate}"));
    for r in coord.execute(&sql).await {
        if let viewcast_coord::ExecuteResult::Error(e) = r {
            anyhow::bail!("setup failed: {e}");
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
    let out = json!({
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
