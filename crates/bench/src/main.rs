//! `viewcast-bench`: measurements behind BENCHMARKS.md. Every run is bounded in time and count and
//! talks to loopback only. Each subcommand prints one JSON line per system measured, then a
//! `summary` line with viewcast's ratios to each baseline; `--plot FILE.png` draws a plot (through
//! `bench/plot.py`, after `bench/setup.sh`).

mod client;
mod fanout;
mod group;
mod gwlat;
mod ingest;
mod minimal;
mod proc;
mod webhook;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use viewcast_coord::{CoordConfig, Coordinator, TickStages};

use crate::fanout::{RunSpec, System};

/// Longest a whole invocation may run.
pub(crate) const MAX_INVOCATION: Duration = Duration::from_secs(30 * 60);

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
    /// The viewcast binary to start (default: `viewcast` beside this tool), e.g. another build
    /// to compare before and after a change.
    #[arg(long)]
    viewcast_bin: Option<std::path::PathBuf>,
    /// Events per second of the demo's load generator, when a demo view (`counter`, `top10`) is
    /// streamed.
    #[arg(long, default_value_t = 200)]
    demo_rate: u64,
    /// Run each system at these scales, one after another, instead of `--clients` in one server
    /// and this process: `CLIENTS:SERVER_PROCS:CLIENT_PROCS`, e.g. `19000:1:1,50000:3:4`. Server
    /// processes share one port (`--reuse-port`; viewcast and viewcast-gateway); each client
    /// process holds its share of the clients from its own `--addresses` source addresses. This
    /// is how a run goes past one process's open-file limit.
    #[arg(long, value_delimiter = ',')]
    scale: Vec<Scale>,
}

/// What the stalled clients of `slow-consumers` read, and the run without them.
#[derive(Args, Clone, Debug, Default)]
struct SlowArgs {
    /// viewcast's stalled clients subscribe to this view (e.g. the demo's `recentchanges`, whose
    /// frames carry every event; the demo then runs at `--demo-rate`) instead of the fast
    /// clients' view.
    #[arg(long)]
    stalled_view: Option<String>,
    /// The baselines' (minimal, node) stalled clients get their frames padded to this many bytes
    /// (0: the fast clients' frames). Choose it to match the stalled view's bytes per second.
    #[arg(long, default_value_t = 0)]
    big_bytes: usize,
    /// Run each system without the stalled clients first (same fast clients and load), for the
    /// fast clients' latency without them.
    #[arg(long)]
    compare_unstalled: bool,
}

/// How many clients, over how many server and client processes (0 client processes: the
/// clients are tasks of the bench itself).
#[derive(Clone, Copy, Debug)]
struct Scale {
    clients: usize,
    server_procs: usize,
    client_procs: usize,
}

impl std::str::FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Scale, String> {
        let parts: Vec<usize> = s
            .split(':')
            .map(|p| p.trim().parse::<usize>().map_err(|e| format!("{s:?}: {e}")))
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [clients, server_procs, client_procs] if server_procs >= 1 => {
                Ok(Scale { clients, server_procs, client_procs })
            }
            _ => Err(format!("{s:?}: expected CLIENTS:SERVER_PROCS:CLIENT_PROCS, at least one server process")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum IngestSource {
    /// The load generator, in this process.
    Loadgen,
    /// `POST /api/webhook/wikirecent` to a `viewcast serve` process, then the in-process load
    /// generator as the baseline.
    Webhook,
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
        #[command(flatten)]
        slow: SlowArgs,
    },
    /// Events/s through the demo's views: the load generator as fast as possible, in process;
    /// or (`--source webhook`) NDJSON POSTed to a `viewcast serve` process's webhook source, each
    /// run followed by the in-process load generator run with the same views and events.
    Ingest {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value = "loadgen")]
        source: IngestSource,
        /// Webhook: events per request (the server's 1 MiB body limit bounds it).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Webhook: concurrent keep-alive HTTP clients.
        #[arg(long, default_value_t = 4)]
        http_clients: usize,
        /// Webhook: the viewcast binary to start (default: `viewcast` beside this tool).
        #[arg(long)]
        viewcast_bin: Option<std::path::PathBuf>,
    },
    /// The time `viewcast gateway` adds between an upstream's progress row (as a direct SUBSCRIBE
    /// of the upstream sees it) and its WebSocket clients' receipt of that complete timestamp.
    /// The upstream, the gateway and the clients (`--client-procs` processes) are processes of
    /// their own; this one only reads the upstream directly and writes to it.
    GatewayLatency {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Processes the clients are split over.
        #[arg(long, default_value_t = 2)]
        client_procs: usize,
        /// The writer changes the upstream every this many ms: 7 gives a change in nearly every
        /// 20 ms tick (~50 changing timestamps/s), 100 about 10.
        #[arg(long, default_value_t = 7)]
        write_ms: u64,
        /// Length of the measurement window.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of writing before the window.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Runs, one after another (with each of `--gateway-bin`'s binaries in turn).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// The gateway's `viewcast` binaries (default: `viewcast` beside this tool); several
        /// alternate, run by run, to compare builds.
        #[arg(long, value_delimiter = ',')]
        gateway_bin: Vec<std::path::PathBuf>,
        /// The upstream's `viewcast` binary (default: `viewcast` beside this tool).
        #[arg(long)]
        upstream_bin: Option<std::path::PathBuf>,
        /// The gateway's runtime worker threads (default: one per core); several alternate, run
        /// by run (after `--gateway-bin`'s binaries).
        #[arg(long, value_delimiter = ',')]
        gateway_workers: Vec<usize>,
        /// Niceness of the client processes (e.g. 10: the clients run when the gateway and the
        /// upstream leave a core free, as if they were on other machines).
        #[arg(long, default_value_t = 0)]
        clients_nice: i32,
        /// Run the client processes in the idle scheduling class (`SCHED_IDLE`, by `chrt --idle`):
        /// they get a core only when the gateway and the upstream leave one free and never preempt
        /// them, the nearest this machine comes to clients on other machines. Read the kernel's
        /// socket-arrival figures then: the clients' own reads wait for the gateway's pass.
        #[arg(long)]
        clients_idle: bool,
        /// Client threads of each client process, each reading its share of the process's
        /// clients from one epoll set.
        #[arg(long, default_value_t = 2)]
        client_threads: usize,
        /// Niceness of the upstream process. Negative (the default) so that it writes each
        /// progress row to the direct reader and to the gateway back to back: at 0 a busy machine
        /// preempts it between the two, and the direct reader's row comes up to 20 ms late.
        #[arg(long, default_value_t = -10, allow_negative_numbers = true)]
        upstream_nice: i32,
        /// Clients use the multiplexed WebSocket (`/api/v1/ws`, one `subscribe` message each), the
        /// browser dashboard's path, instead of the single-view one (`/api/v1/stream/totals`).
        #[arg(long)]
        mux: bool,
    },
    /// A share of a gateway-latency run's clients, in a process of its own.
    #[command(hide = true)]
    GatewayLatencyClients(gwlat::ClientArgs),
    /// A share of a run's clients in a process of its own (started by the other subcommands).
    #[command(hide = true)]
    Clients(group::ChildArgs),
    /// The minimal Rust broadcaster (a baseline server; normally started by the other subcommands).
    MinimalBroadcaster {
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 10.0)]
        hz: f64,
        /// Frames of this size to clients on a path ending in `/big` (0: none).
        #[arg(long, default_value_t = 0)]
        big_bytes: usize,
    },
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

// The `viewcast` binary's allocator, so in-process measurements (ingest, tick-latency) match it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let cli = Cli::parse();
    if let Command::MinimalBroadcaster { port, hz, big_bytes } = cli.command {
        return minimal::run(port, hz, big_bytes).await;
    }
    tokio::time::timeout(MAX_INVOCATION, run(cli.command)).await.context("the run exceeded its time cap")?
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::TickLatency { rate, seconds, tick_ms, workers } => tick_latency(rate, seconds, tick_ms, workers).await,
        Command::Fanout { load, view } => {
            let demo = view != "bench_seq";
            scenario("fanout", &load, view, demo, 0, &SlowArgs::default(), "latency").await
        }
        Command::ConnectStorm { load } => {
            scenario("connect-storm", &load, "top10".into(), true, 0, &SlowArgs::default(), "first-frame").await
        }
        Command::SlowConsumers { load, stalled, slow } => {
            let demo = slow.stalled_view.as_deref().is_some_and(|v| v != "bench_seq");
            scenario("slow-consumers", &load, "bench_seq".into(), demo, stalled, &slow, "rss").await
        }
        Command::Ingest { events, workers, tick_ms, plot, source, batch, http_clients, viewcast_bin } => {
            let mut runs = Vec::new();
            for w in workers {
                if source == IngestSource::Webhook {
                    let viewcast_bin = match viewcast_bin.clone() {
                        Some(b) => b,
                        None => std::env::current_exe()?.parent().context("exe dir")?.join("viewcast"),
                    };
                    let spec =
                        webhook::Spec { events, workers: w, tick_ms, batch, clients: http_clients, viewcast_bin };
                    let hook = webhook::run(&spec).await?;
                    println!("{hook}");
                    let base = ingest::run(events, w, tick_ms).await?;
                    println!("{base}");
                    let ratio = |k: &str| match (hook[k].as_f64(), base[k].as_f64()) {
                        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
                        _ => Value::Null,
                    };
                    println!(
                        "{}",
                        json!({"bench": "ingest", "workers": w, "summary": {"webhook/loadgen events_per_s": ratio("events_per_s")}})
                    );
                    runs.extend([hook, base]);
                    continue;
                }
                let r = ingest::run(events, w, tick_ms).await?;
                println!("{r}");
                runs.push(r);
            }
            if let Some(p) = plot {
                draw("ingest", &format!("ingest: {events} events, tick {tick_ms} ms, {}", machine()), &runs, &p)?;
            }
            Ok(())
        }
        Command::GatewayLatency {
            clients,
            client_procs,
            write_ms,
            seconds,
            warmup,
            runs,
            gateway_bin,
            upstream_bin,
            gateway_workers,
            clients_nice,
            clients_idle,
            client_threads,
            upstream_nice,
            mux,
        } => {
            let beside = std::env::current_exe()?.parent().context("exe dir")?.join("viewcast");
            let gateway_bins = if gateway_bin.is_empty() { vec![beside.clone()] } else { gateway_bin };
            let upstream_bin = upstream_bin.unwrap_or(beside);
            let workers: Vec<Option<usize>> =
                if gateway_workers.is_empty() { vec![None] } else { gateway_workers.into_iter().map(Some).collect() };
            for i in 0..runs {
                let spec = gwlat::Spec {
                    clients,
                    client_procs,
                    write_ms,
                    seconds,
                    warmup,
                    gateway_bin: gateway_bins[i % gateway_bins.len()].clone(),
                    upstream_bin: upstream_bin.clone(),
                    gateway_workers: workers[(i / gateway_bins.len()) % workers.len()],
                    clients_nice,
                    clients_idle,
                    client_threads,
                    upstream_nice,
                    mux,
                };
                let mut line = gwlat::run(&spec).await?;
                line["run"] = json!(i + 1);
                line["machine"] = json!(machine());
                println!("{line}");
            }
            Ok(())
        }
        Command::GatewayLatencyClients(args) => gwlat::clients(args).await,
        Command::Clients(args) => group::child(args).await,
        Command::MinimalBroadcaster { .. } => unreachable!("handled in main"),
    }
}

async fn scenario(
    bench: &str,
    load: &LoadArgs,
    view: String,
    demo: bool,
    stalled: usize,
    slow: &SlowArgs,
    plot_kind: &str,
) -> anyhow::Result<()> {
    let scales = if load.scale.is_empty() {
        vec![Scale { clients: load.clients, server_procs: 1, client_procs: 0 }]
    } else {
        load.scale.clone()
    };
    let scale_names: Vec<String> =
        scales.iter().map(|s| format!("{}:{}:{}", s.clients, s.server_procs, s.client_procs)).collect();
    println!(
        "{}",
        json!({"bench": bench, "machine": machine(), "open_files_limit": proc::open_file_limit(),
               "scales": scale_names, "stalled": stalled, "rate": load.rate, "seconds": load.seconds,
               "stalled_view": slow.stalled_view, "big_bytes": slow.big_bytes, "demo_rate": load.demo_rate})
    );
    let mut plots = Vec::new();
    for (i, scale) in scales.iter().enumerate() {
        let mut at_scale = Vec::new();
        for &system in &load.systems {
            let spec = RunSpec {
                system,
                clients: scale.clients,
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
                viewcast_bin: load.viewcast_bin.clone(),
                demo_rate: load.demo_rate,
                server_procs: scale.server_procs,
                client_procs: scale.client_procs,
                stalled_view: slow.stalled_view.clone(),
                big_bytes: slow.big_bytes,
            };
            let run = |spec: RunSpec| async move {
                match fanout::run(&spec).await {
                    Ok(r) => r,
                    Err(e) => {
                        (json!({"system": system.name(), "error": format!("{e:#}")}), json!({"system": system.name()}))
                    }
                }
            };
            // The same run without the stalled clients, for the fast clients' latency without them.
            let unstalled = if slow.compare_unstalled && stalled > 0 {
                let (mut line, mut plot) = run(RunSpec { stalled: 0, ..spec.clone() }).await;
                line["bench"] = json!(bench);
                println!("{line}");
                plot["system"] = json!(format!("{} (no stalled)", system.name()));
                plots.push(plot);
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some(line)
            } else {
                None
            };
            let (mut line, plot) = run(spec).await;
            line["bench"] = json!(bench);
            if let Some(u) = unstalled {
                let p99 = |l: &Value| l.pointer("/latency/p99_ms").and_then(Value::as_f64);
                line["fast_p99_ms_without_stalled"] = json!(p99(&u));
                if let (Some(a), Some(b)) = (p99(&line), p99(&u)) {
                    line["fast_p99_with/without_stalled"] = json!((a / b * 100.0).round() / 100.0);
                }
            }
            println!("{line}");
            at_scale.push(line);
            plots.push(plot);
            // Let sockets in TIME_WAIT and the previous server's memory go before the next system.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let mut summary = json!({"bench": bench, "summary": ratios(&at_scale)});
        if scales.len() > 1 {
            summary["scale"] = json!(scale_names[i]);
        }
        println!("{summary}");
    }
    if let Some(p) = &load.plot {
        let title = format!(
            "{bench}: {} clients{} x {} ts/s, {}",
            if load.scale.is_empty() { load.clients.to_string() } else { scale_names.join(", ") },
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
    let baseline = |l: &&Value| !l["system"].as_str().unwrap_or("viewcast").starts_with("viewcast");
    for base in lines.iter().filter(baseline) {
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
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    coord.take_tick_stages();
    let load_start = fanout::loadavg_1m();
    let me0 = proc::ProcSample::of(std::process::id());
    let sched0 = proc::thread_sched();
    let start_count = counter(&coord).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let end_count = counter(&coord).await;
    let elapsed = start.elapsed().as_secs_f64();
    let me1 = proc::ProcSample::of(std::process::id());
    // Per thread: share of the window on a CPU and waiting in a run queue (percent of one core).
    let threads: serde_json::Map<String, Value> = proc::thread_sched()
        .into_iter()
        .map(|(name, (run, wait))| {
            let (run0, wait0) = sched0.get(&name).copied().unwrap_or((0, 0));
            let pct = |ns: u64| (ns as f64 / 1e7 / elapsed).round();
            (
                name,
                json!({ "on_cpu_pct": pct(run.saturating_sub(run0)), "runqueue_pct": pct(wait.saturating_sub(wait0)) }),
            )
        })
        .collect();
    let ticks = coord.take_tick_stages();
    let stage = |f: &dyn Fn(&TickStages) -> u64| {
        let mut v: Vec<u64> = ticks.iter().map(f).collect();
        v.sort_unstable();
        json!({ "p50_ms": percentile(&v, 0.50), "p99_ms": percentile(&v, 0.99), "max_ms": percentile(&v, 1.0) })
    };
    let mut rows: Vec<usize> = ticks.iter().map(|t| t.rows).collect();
    rows.sort_unstable();
    let mut slowest: Vec<&TickStages> = ticks.iter().collect();
    slowest.sort_unstable_by_key(|t| std::cmp::Reverse(t.sealed_us));
    let out = json!({
        "bench": "tick-latency",
        "rate_target": rate,
        "events_per_s_measured": ((end_count - start_count) as f64 / elapsed).round(),
        "tick_ms": tick_ms,
        "workers": workers,
        "ticks": ticks.len(),
        "ticks_expected": (elapsed * 1000.0 / tick_ms as f64).round(),
        "sealed": stage(&|t| t.sealed_us),
        "applied": stage(&|t| t.applied_us),
        "stages": {
            "tick_to_worker": stage(&|t| t.taken_us),
            "worker_compute": stage(&|t| t.passed_us.saturating_sub(t.taken_us)),
            "report_to_merger": stage(&|t| t.merged_us.saturating_sub(t.passed_us)),
            "merger_seal": stage(&|t| t.sealed_us.saturating_sub(t.merged_us)),
            "queue_to_apply": stage(&|t| t.received_us.saturating_sub(t.sealed_us)),
            "hub_apply": stage(&|t| t.applied_us.saturating_sub(t.received_us)),
        },
        "rows_per_tick": json!({ "min": rows.first(), "p50": rows.get(rows.len() / 2), "max": rows.last() }),
        "tick_interval": stage(&|t| t.interval_us),
        "slowest_ticks_us": slowest.iter().take(5).collect::<Vec<_>>(),
        "cpu_pct": (me1.cpu_percent_since(&me0) * 10.0).round() / 10.0,
        "threads": threads,
        "loadavg_1m_start": load_start,
        "loadavg_1m_end": fanout::loadavg_1m(),
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

#[cfg(test)]
mod tests {
    use super::Scale;

    #[test]
    fn scales_parse_and_need_a_server_process() {
        let s: Scale = "50000:3:4".parse().unwrap();
        assert_eq!((s.clients, s.server_procs, s.client_procs), (50_000, 3, 4));
        let s: Scale = "19000:1:0".parse().unwrap();
        assert_eq!((s.clients, s.server_procs, s.client_procs), (19_000, 1, 0));
        for bad in ["1000:0:1", "1000:2", "1000:2:x", "1000:2:2:2"] {
            assert!(bad.parse::<Scale>().is_err(), "{bad}");
        }
    }
}
