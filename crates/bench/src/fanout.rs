//! Fan-out runs: one server under test (viewcast or a baseline, each a child process), N clients,
//! a load of R changing timestamps per second, and what the clients and the kernel measured.
//! `fanout`, `connect-storm` and `slow-consumers` are all this run with different settings.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::client::{self, ClientResult, Shared, Transport, DONE, MEASURE};
use crate::group::{Counts, Group, GroupSpec, LocalGroup, RemoteGroup};
use crate::proc::{bench_dir, open_fds, KernelSockets, ProcSample, Server, Servers};

/// Hard caps of the tool, whatever the flags say.
pub const MAX_CLIENTS: usize = 60_000;
pub const MAX_SECONDS: f64 = 120.0;
pub const MAX_RATE: f64 = 100.0;
/// How long connecting every client may take before the run goes on without the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// viewcast over WebSocket (`GET /api/v1/stream/{view}`).
    Viewcast,
    /// viewcast over Server-Sent Events (same endpoint, `Accept: text/event-stream`).
    ViewcastSse,
    /// `viewcast gateway` in front of an upstream `viewcast serve` (one upstream SUBSCRIBE for the
    /// view); the clients connect to the gateway over WebSocket. Load generator load only.
    ViewcastGateway,
    /// `viewcast-bench minimal-broadcaster`: tokio-tungstenite, one shared frame per tick.
    Minimal,
    /// `bench/node-ws/server.mjs`: Node.js + ws, internal timer.
    Node,
    /// `bench/tornado2020/server.py`: the 2020 design, one POST per changed row.
    Tornado,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Viewcast => "viewcast",
            System::ViewcastSse => "viewcast-sse",
            System::ViewcastGateway => "viewcast-gateway",
            System::Minimal => "minimal",
            System::Node => "node-ws",
            System::Tornado => "tornado2020",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub system: System,
    pub clients: usize,
    pub stalled: usize,
    pub rate: f64,
    pub seconds: f64,
    pub warmup: f64,
    pub addresses: usize,
    /// Connection attempts in flight at once; 0 = every client at once (a storm).
    pub connect_concurrency: usize,
    /// The view streamed: `bench_seq` (the bench's table, changed R times a second) or a demo view.
    pub view: String,
    /// Also run the demo's load generator and views (for `top10`).
    pub demo: bool,
    pub tick_ms: u64,
    /// How viewcast's view is changed R times a second.
    pub viewcast_load: ViewcastLoad,
    /// The viewcast binary (default: `viewcast` beside the bench tool).
    pub viewcast_bin: Option<std::path::PathBuf>,
    /// Events per second of the demo's load generator (with `demo`).
    pub demo_rate: u64,
    /// Server processes sharing one port (`--reuse-port`; viewcast and viewcast-gateway only).
    pub server_procs: usize,
    /// Client processes the clients are split over (0: tasks of this process). Each has its own
    /// `addresses` source addresses.
    pub client_procs: usize,
    /// The view the stalled clients subscribe to (viewcast; default: `view`). The baselines'
    /// stalled clients get frames of `big_bytes` instead, at the same rate as the fast ones.
    pub stalled_view: Option<String>,
    /// Size of the baselines' frames to stalled clients (minimal, node; 0: the fast clients' frames).
    pub big_bytes: usize,
}

impl RunSpec {
    /// Whether the server changes its view by itself (no driver in the bench).
    fn load_is_internal(&self) -> bool {
        matches!(self.system, System::Minimal | System::Node)
            || (matches!(self.system, System::Viewcast | System::ViewcastSse | System::ViewcastGateway)
                && self.viewcast_load == ViewcastLoad::Loadgen)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewcastLoad {
    /// The server's load generator at R events/s (one event every 1/R s, so at R <= 10 with 50 ms
    /// ticks each event is its own timestamp); `bench_seq` counts the events.
    Loadgen,
    /// One `INSERT` per change through `POST /api/sql`, issued by the bench one after another.
    /// Each INSERT returns once its timestamp is sealed, so the rate reached is at most
    /// 1 / (wait for the tick + tick-to-sealed latency).
    Insert,
}

/// The SQL a viewcast server under test starts with.
fn viewcast_sql(spec: &RunSpec) -> String {
    let mut sql = if spec.viewcast_load == ViewcastLoad::Loadgen && spec.rate > 0.0 {
        format!(
            "CREATE SOURCE bench_src FROM LOAD GENERATOR WIKIPEDIA (EVENTS PER SECOND {}, SEED 11);\n\
             CREATE MATERIALIZED VIEW bench_seq AS SELECT count(*) AS seq FROM bench_src;\n",
            spec.rate
        )
    } else {
        String::from(
            "CREATE TABLE bench_ticks (n bigint);\n\
             CREATE MATERIALIZED VIEW bench_seq AS SELECT count(*) AS seq FROM bench_ticks;\n",
        )
    };
    if spec.demo {
        let demo = include_str!("../../viewcast/src/demo.sql");
        sql.push_str(&demo.replace("EVENTS PER SECOND 200", &format!("EVENTS PER SECOND {}", spec.demo_rate)));
    }
    sql
}

/// Starts `spec.server_procs` processes of `cmd(listen address, reuse port)` on one address: the
/// first on a free port, the others on the same one (all with `--reuse-port` when several).
fn spawn_sharing(
    spec: &RunSpec,
    name: &str,
    cmd: impl Fn(&str, bool) -> Command,
    marker: &str,
) -> anyhow::Result<Vec<Server>> {
    let reuse = spec.server_procs > 1;
    let mut procs: Vec<Server> = Vec::with_capacity(spec.server_procs);
    for _ in 0..spec.server_procs.max(1) {
        let listen = procs.first().map_or("127.0.0.1:0".to_string(), |p| p.addr.to_string());
        procs.push(Server::spawn(name, cmd(&listen, reuse), marker)?);
    }
    Ok(procs)
}

fn start_servers(spec: &RunSpec) -> anyhow::Result<Servers> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?.to_path_buf();
    let hz = format!("{}", spec.rate);
    anyhow::ensure!(
        spec.server_procs <= 1 || matches!(spec.system, System::Viewcast | System::ViewcastGateway),
        "several server processes: viewcast and viewcast-gateway only"
    );
    let bin = spec.viewcast_bin.clone().unwrap_or_else(|| dir.join("viewcast"));
    // `viewcast SUBCOMMAND` serving HTTP on `listen` (sharing it when `reuse`) and pgwire on `pg`.
    let viewcast = |subcommand: &str, listen: &str, pg: &str, reuse: bool| {
        let mut cmd = Command::new(&bin);
        cmd.args([subcommand, "--listen", listen, "--pgwire-listen", pg, "--tick-ms", &spec.tick_ms.to_string()])
            .args(reuse.then_some("--reuse-port"))
            .env("RUST_LOG", "warn");
        cmd
    };
    let one = |server: Server| Servers { addr: server.addr, procs: vec![server], upstream: None };
    match spec.system {
        System::Viewcast | System::ViewcastSse | System::ViewcastGateway => {
            anyhow::ensure!(bin.exists(), "{} not found: cargo build --release -p viewcast", bin.display());
            let sql = std::env::temp_dir().join(format!("viewcast-bench-{}.sql", std::process::id()));
            std::fs::write(&sql, viewcast_sql(spec))?;
            if spec.system != System::ViewcastGateway {
                let serve = |listen: &str, reuse: bool| {
                    let mut cmd = viewcast("serve", listen, "127.0.0.1:0", reuse);
                    cmd.arg("--sql").arg(&sql);
                    cmd
                };
                let procs = spawn_sharing(spec, spec.system.name(), serve, "open ")?;
                return Ok(Servers { addr: procs[0].addr, procs, upstream: None });
            }
            anyhow::ensure!(
                spec.viewcast_load == ViewcastLoad::Loadgen,
                "viewcast-gateway runs with --viewcast-load loadgen"
            );
            let pg = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let mut up = viewcast("serve", "127.0.0.1:0", &pg.to_string(), false);
            up.arg("--sql").arg(&sql);
            let upstream = Server::spawn("viewcast-upstream", up, "open ")?;
            let url = format!("postgres://materialize@{pg}/materialize");
            let gateway = |listen: &str, reuse: bool| {
                let mut cmd = viewcast("gateway", listen, "127.0.0.1:0", reuse);
                cmd.args(["--upstream", &url, "--view", &spec.view]);
                cmd
            };
            let procs = spawn_sharing(spec, spec.system.name(), gateway, "open ")?;
            Ok(Servers { addr: procs[0].addr, procs, upstream: Some(upstream) })
        }
        System::Minimal => {
            let mut cmd = Command::new(exe);
            cmd.args(["minimal-broadcaster", "--port", "0", "--hz", &hz, "--big-bytes", &spec.big_bytes.to_string()]);
            Server::spawn("minimal", cmd, "listening ").map(one)
        }
        System::Node => {
            let script = bench_dir().join("node-ws/server.mjs");
            let mut cmd = Command::new("node");
            cmd.arg(script).args(["--port", "0", "--hz", &hz, "--big-bytes", &spec.big_bytes.to_string()]);
            Server::spawn("node-ws", cmd, "listening ").map(one)
        }
        System::Tornado => {
            let py = bench_dir().join(".venv/bin/python");
            anyhow::ensure!(py.exists(), "{} not found: run bench/setup.sh", py.display());
            let mut cmd = Command::new(py);
            cmd.arg(bench_dir().join("tornado2020/server.py")).args(["--port", "0"]);
            Server::spawn("tornado2020", cmd, "listening ").map(one)
        }
    }
}

/// Drives R changes a second into viewcast (one INSERT each, via the SQL API) or the 2020 design
/// (one POST per changed row: the old count's retraction, then the new count). Counts the changes
/// issued during the measurement window.
async fn drive(
    system: System,
    internal: bool,
    view: String,
    server: std::net::SocketAddr,
    rate: f64,
    shared: Arc<Shared>,
    issued_in_window: Arc<AtomicU64>,
) {
    if rate <= 0.0 || internal {
        return;
    }
    let http = reqwest::Client::builder().http1_only().tcp_nodelay(true).build().expect("http client");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while shared.phase.load(Ordering::Relaxed) != DONE {
        tick.tick().await;
        n += 1;
        let ms = client::now_us() / 1000;
        shared.record_sent(n, ms);
        let in_window = shared.phase.load(Ordering::Relaxed) == MEASURE;
        let ok = match system {
            System::Viewcast | System::ViewcastSse => {
                let body = json!({ "query": format!("INSERT INTO bench_ticks VALUES ({n})") });
                http.post(format!("http://{server}/api/sql"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
            System::Tornado => {
                let url = format!("http://{server}/api/v1/update/{view}");
                let mut ok = true;
                for (row, diff) in [(n - 1, -1), (n, 1)] {
                    if row == 0 && diff < 0 {
                        continue;
                    }
                    let body = json!({ "view": view, "ts": ms, "row": [row], "diff": diff }).to_string();
                    ok &= http.post(&url).body(body).send().await.is_ok_and(|r| r.status().is_success());
                }
                ok
            }
            System::Minimal | System::Node | System::ViewcastGateway => return,
        };
        if !ok {
            eprintln!("[driver] change {n} failed");
        }
        if in_window {
            issued_in_window.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn hist(samples: impl Iterator<Item = u64>) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    for s in samples {
        h.saturating_record(s.max(1));
    }
    h
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 10.0).round() / 10.0
}

fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "n": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p95_ms": ms(h.value_at_quantile(0.95)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

/// Quantile -> ms pairs, for plots.
fn cdf(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!([]);
    }
    let qs = (0..=100).map(|i| i as f64 / 100.0).chain([0.995, 0.999, 1.0]);
    Value::Array(qs.map(|q| json!([q, ms(h.value_at_quantile(q.min(1.0)))])).collect())
}

/// Runs one system through one scenario; returns (the summary line, data for plots).
pub async fn run(spec: &RunSpec) -> anyhow::Result<(Value, Value)> {
    anyhow::ensure!(spec.clients + spec.stalled <= MAX_CLIENTS, "at most {MAX_CLIENTS} clients");
    anyhow::ensure!(spec.seconds <= MAX_SECONDS && spec.warmup <= MAX_SECONDS, "at most {MAX_SECONDS} s a phase");
    anyhow::ensure!(spec.rate <= MAX_RATE, "at most {MAX_RATE} changes/s");
    anyhow::ensure!(
        spec.load_is_internal() || (spec.server_procs <= 1 && spec.client_procs == 0),
        "several server or client processes: only with loads the server makes itself (--viewcast-load loadgen)"
    );
    // Each process stays under the open-file limit. The kernel's hash spreads connections over
    // server processes unevenly: allow four standard deviations (about the square root of a share).
    let limit = crate::proc::open_file_limit() as usize;
    let total = spec.clients + spec.stalled;
    for (what, n) in [("server", spec.server_procs.max(1)), ("client", spec.client_procs.max(1))] {
        let spread = if what == "server" && n > 1 { 4 * (total / n).isqrt() } else { 0 };
        anyhow::ensure!(
            total.div_ceil(n) + spread + 100 <= limit,
            "{total} clients over {n} {what} process(es) pass the open-file limit {limit}: use more"
        );
    }
    let servers = start_servers(spec)?;
    let t0 = Instant::now();
    let shared = Shared::new((spec.rate * (spec.seconds + spec.warmup + 200.0)) as usize + 16);
    // Memory over the whole run.
    let series: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let sampler = {
        let series = series.clone();
        let pids = servers.pids();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let rss = pids.iter().map(|p| ProcSample::of(*p).rss_kib).sum();
                series.lock().expect("series").push((t0.elapsed().as_secs_f64(), rss));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per_proc = |servers: &Servers| servers.procs.iter().map(Server::sample).collect::<Vec<_>>();
    let (p_idle, k_idle) = (per_proc(&servers), KernelSockets::now());
    let s_idle = ProcSample::sum(&p_idle);
    let up_idle = servers.upstream.as_ref().map(Server::sample);
    let issued = Arc::new(AtomicU64::new(0));
    let driver = tokio::spawn(drive(
        spec.system,
        spec.load_is_internal(),
        spec.view.clone(),
        servers.addr,
        spec.rate,
        shared.clone(),
        issued.clone(),
    ));

    // Connect.
    let deadline = Instant::now() + CONNECT_TIMEOUT + Duration::from_secs_f64(spec.warmup + spec.seconds + 30.0);
    let group = GroupSpec {
        server: servers.addr,
        path: format!("/api/v1/stream/{}", spec.view),
        stalled_path: match (&spec.stalled_view, spec.system) {
            (Some(v), System::Viewcast | System::ViewcastSse | System::ViewcastGateway) => {
                format!("/api/v1/stream/{v}")
            }
            (Some(_), System::Minimal | System::Node) if spec.big_bytes > 0 => "/api/v1/stream/big".to_string(),
            _ => format!("/api/v1/stream/{}", spec.view),
        },
        transport: if spec.system == System::ViewcastSse { Transport::Sse } else { Transport::WebSocket },
        clients: spec.clients,
        stalled: spec.stalled,
        first_address: 2,
        addresses: spec.addresses,
        concurrency: spec.connect_concurrency,
        deadline,
    };
    let stalled_path = group.stalled_path.clone();
    let connect_start = Instant::now();
    let mut groups = if spec.client_procs == 0 {
        vec![Group::Local(LocalGroup::start(group, shared.clone()))]
    } else {
        // Process k gets every client_procs-th client and its own source addresses.
        let n = spec.client_procs;
        let mut groups = Vec::with_capacity(n);
        for k in 0..n {
            let share = |m: usize| m / n + usize::from(k < m % n);
            let first_address = u8::try_from(2 + k * spec.addresses).context("too many source addresses")?;
            let g = GroupSpec {
                clients: share(spec.clients),
                stalled: share(spec.stalled),
                first_address,
                ..group.clone()
            };
            groups.push(Group::Remote(RemoteGroup::start(&g)?));
        }
        groups
    };
    let counts = |groups: &[Group]| groups.iter().map(Group::counts).fold(Counts::default(), |a, b| a + b);
    // Wait until every client is connected or has given up, then (at most 10 s more) until the
    // connected ones have their first frame (the 2020 design sends none until something changes).
    let wait_until = connect_start + CONNECT_TIMEOUT;
    loop {
        let c = counts(&groups);
        if (c.handshaken + c.finished) as usize >= total || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_frames_until = Instant::now() + Duration::from_secs(10);
    loop {
        let c = counts(&groups);
        if c.ready >= c.handshaken || Instant::now() > first_frames_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup)).await;
    let (p_connected, k_connected) = (per_proc(&servers), KernelSockets::now());
    let s_connected = ProcSample::sum(&p_connected);
    let fds_connected: Vec<usize> = servers.pids().into_iter().map(open_fds).collect();
    let up_connected = servers.upstream.as_ref().map(Server::sample);
    let bench_pids: Vec<u32> =
        std::iter::once(std::process::id()).chain(groups.iter().filter_map(Group::pid)).collect();
    let bench_sample = || ProcSample::sum(&bench_pids.iter().map(|p| ProcSample::of(*p)).collect::<Vec<_>>());
    let me0 = bench_sample();
    let timeline0 = server_timeline(spec, servers.addr).await;
    shared.set_phase(MEASURE);
    groups.iter_mut().for_each(|g| g.set_phase(MEASURE));
    let measure_start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(spec.seconds)).await;
    let window = measure_start.elapsed().as_secs_f64();
    let p_end = per_proc(&servers);
    let s_end = ProcSample::sum(&p_end);
    let up_end = servers.upstream.as_ref().map(Server::sample);
    let me1 = bench_sample();
    let timeline1 = server_timeline(spec, servers.addr).await;
    let policy = server_policy(spec, servers.addr).await;
    let k_end = KernelSockets::now();
    let c_end = counts(&groups);
    shared.set_phase(DONE);
    groups.iter_mut().for_each(|g| g.set_phase(DONE));
    let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
    let mut fast: Vec<ClientResult> = Vec::new();
    let mut slow: Vec<ClientResult> = Vec::new();
    for g in groups {
        for (stalled, r) in g.finish().await {
            if stalled {
                slow.push(r)
            } else {
                fast.push(r)
            }
        }
    }
    sampler.abort();
    drop(servers);

    let connected = fast.iter().filter(|r| r.connected).count();
    let got_first = fast.iter().filter(|r| r.first_frame_us.is_some()).count();
    let first_error = fast.iter().chain(&slow).find_map(|r| r.error.clone());
    let errors = fast.iter().filter(|r| r.error.is_some()).count();
    let lat = hist(fast.iter().flat_map(|r| r.lat_us.iter().copied()));
    let e2e = hist(fast.iter().flat_map(|r| r.e2e_us.iter().copied()));
    let prog = hist(fast.iter().flat_map(|r| r.progress_lat_us.iter().copied()));
    let first = hist(fast.iter().filter_map(|r| r.first_frame_us));
    let sum = |f: fn(&ClientResult) -> u64| fast.iter().map(f).sum::<u64>();
    let (frames, bytes, updates, progress) =
        (sum(|r| r.frames), sum(|r| r.bytes), sum(|r| r.updates), sum(|r| r.progress));
    let changes = match (spec.system, spec.viewcast_load) {
        (System::Tornado, _) | (System::Viewcast | System::ViewcastSse, ViewcastLoad::Insert) => {
            issued.load(Ordering::Relaxed)
        }
        _ => (spec.rate * window).round() as u64,
    };
    // Per-client spread: with the same load every client should receive the same updates.
    let per_client = fast.iter().filter(|r| r.connected).map(|r| r.updates);
    let (min_updates, max_updates) = (per_client.clone().min().unwrap_or(0), per_client.max().unwrap_or(0));
    // Timer-driven loads: the changing timestamps are what the best-served client received
    // (the rate times the window only approximates them).
    let changes = if changes == (spec.rate * window).round() as u64 && max_updates > 0 { max_updates } else { changes };
    let expected = changes * connected as u64;
    let rss_per_conn_kib = if connected + slow.len() > 0 {
        (s_connected.rss_kib as f64 - s_idle.rss_kib as f64) / (connected + slow.len()) as f64
    } else {
        f64::NAN
    };
    let series = series.lock().expect("series").clone();
    let rss_max = series.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let per_conn = |bytes_kib: f64| ((bytes_kib / (connected + slow.len()).max(1) as f64) * 100.0).round() / 100.0;
    let cpu = |end: &ProcSample, start: &ProcSample| (end.cpu_percent_since(start) * 10.0).round() / 10.0;
    let server_procs: Vec<Value> = (0..p_idle.len())
        .map(|i| {
            json!({
                "rss_mib_before_clients": p_idle[i].rss_kib / 1024,
                "rss_mib_connected": p_connected[i].rss_kib / 1024,
                "open_fds_connected": fds_connected[i],
                "cpu_pct": cpu(&p_end[i], &p_connected[i]),
            })
        })
        .collect();
    let upstream = match (up_idle, up_connected, up_end) {
        (Some(i), Some(c), Some(e)) => json!({
            "rss_mib_before_clients": i.rss_kib / 1024, "rss_mib_connected": c.rss_kib / 1024, "cpu_pct": cpu(&e, &c),
        }),
        _ => Value::Null,
    };
    // Machine-wide, so both ends of each loopback connection and anything else running.
    let kernel = json!({
        "tcp_sockets_before_clients": k_idle.tcp_inuse,
        "tcp_sockets_connected": k_connected.tcp_inuse,
        "tcp_buffers_mib_connected": k_connected.tcp_mem_kib / 1024,
        "tcp_buffers_mib_end": k_end.tcp_mem_kib / 1024,
        "slab_unreclaim_mib_before_clients": k_idle.slab_unreclaim_kib / 1024,
        "slab_unreclaim_mib_connected": k_connected.slab_unreclaim_kib / 1024,
        "slab_unreclaim_per_conn_kib": per_conn(k_connected.slab_unreclaim_kib as f64 - k_idle.slab_unreclaim_kib as f64),
    });
    let mut line = json!({
        "system": spec.system.name(),
        "clients": spec.clients,
        "stalled": spec.stalled,
        "view": spec.view,
        "rate_target": spec.rate,
        "changes_in_window": changes,
        "window_s": (window * 100.0).round() / 100.0,
        "connected": connected,
        "got_first_frame": got_first,
        "client_errors": errors,
        "first_error": first_error,
        "closed_early": fast.iter().filter(|r| r.closed_early).count(),
        "connect_all_s": (connect_secs * 100.0).round() / 100.0,
        "first_frame": summary(&first),
        "frames_per_s": (frames as f64 / window).round(),
        "updates_per_s": (updates as f64 / window).round(),
        "progress_per_s": (progress as f64 / window).round(),
        "bytes_per_s": (bytes as f64 / window).round(),
        "updates_expected": expected,
        "updates_delivered": updates,
        "delivered_fraction": if expected > 0 { ((updates as f64 / expected as f64) * 10_000.0).round() / 10_000.0 } else { f64::NAN },
        "updates_per_client_min": min_updates,
        "updates_per_client_max": max_updates,
        "seq_gaps": sum(|r| r.gaps),
        "resyncs": sum(|r| r.resyncs),
        "latency": summary(&lat),
        "e2e_latency": summary(&e2e),
        "progress_latency": summary(&prog),
        "stalled_closed_by_server": slow.iter().filter(|r| r.closed_early).count(),
        "server_cpu_pct": cpu(&s_end, &s_connected),
        "bench_cpu_pct": cpu(&me1, &me0),
        "server_rss_mib": {
            "before_clients": s_idle.rss_kib / 1024,
            "connected": s_connected.rss_kib / 1024,
            "end": s_end.rss_kib / 1024,
            "max": rss_max / 1024,
        },
        "rss_per_conn_kib": (rss_per_conn_kib * 10.0).round() / 10.0,
        "loadavg_1m_end": loadavg_1m(),
        "server_timeline": window_timeline(timeline0.as_ref(), timeline1.as_ref()),
    });
    // (More keys than one `json!` expands.)
    for (key, value) in [
        ("server_procs", json!(spec.server_procs.max(1))),
        ("client_procs", json!(spec.client_procs)),
        ("first_frame_snapshot", json!(fast.iter().filter(|r| r.first_frame_snapshot).count())),
        ("ended_before_window_end", json!(c_end.finished)),
        ("server_per_proc", json!(server_procs)),
        ("upstream", upstream),
        ("kernel", kernel),
        ("stalled_path", json!(stalled_path)),
        ("policy", policy),
    ] {
        line[key] = value;
    }
    let plot = json!({
        "system": spec.system.name(),
        "latency_cdf": cdf(&lat),
        "first_frame_cdf": cdf(&first),
        "rss_series": series.iter().map(|(t, r)| json!([(t * 100.0).round() / 100.0, *r as f64 / 1024.0])).collect::<Vec<_>>(),
        "measure_start_s": measure_start.duration_since(t0).as_secs_f64(),
    });
    Ok((line, plot))
}

/// viewcast's slow-client policy counters (`/api/v1/stats`, cumulative since it started, one
/// process only): consolidations, resyncs, stalled closes, and the bytes queued and held now.
async fn server_policy(spec: &RunSpec, addr: std::net::SocketAddr) -> Value {
    if !matches!(spec.system, System::Viewcast | System::ViewcastSse | System::ViewcastGateway) || spec.server_procs > 1
    {
        return Value::Null;
    }
    let body = match reqwest::get(format!("http://{addr}/api/v1/stats")).await {
        Ok(r) => r.bytes().await.ok(),
        Err(_) => None,
    };
    let Some(body) = body else { return Value::Null };
    let stats: Value = serde_json::from_slice(&body).unwrap_or_default();
    let keys = [
        "connections",
        "consolidated",
        "resyncs",
        "stalled_closes",
        "queued_bytes",
        "backlog_bytes",
        "max_backlog_bytes",
    ];
    Value::Object(keys.iter().map(|k| (k.to_string(), stats.get(*k).cloned().unwrap_or(Value::Null))).collect())
}

/// viewcast's per-stage timeline counters (`/api/v1/stats`), cumulative since it started (one
/// process only).
async fn server_timeline(spec: &RunSpec, addr: std::net::SocketAddr) -> Option<Value> {
    // With several processes on the address, a request reaches one of them at random.
    if !matches!(spec.system, System::Viewcast | System::ViewcastSse | System::ViewcastGateway) || spec.server_procs > 1
    {
        return None;
    }
    stats_timeline(addr).await
}

/// The `timeline` of a viewcast process's `/api/v1/stats`.
pub(crate) async fn stats_timeline(addr: std::net::SocketAddr) -> Option<Value> {
    let body = reqwest::get(format!("http://{addr}/api/v1/stats")).await.ok()?.bytes().await.ok()?;
    let stats: Value = serde_json::from_slice(&body).ok()?;
    stats.get("timeline").cloned()
}

/// The server's stages inside the measurement window: the difference of the two cumulative
/// reports' buckets, as p50 / p90 / p99 / max-bucket in ms per stage (bucket upper bounds, 12.5%
/// wide). Stages: `close_to_apply` (timestamp's wall-clock ms to the hub applying it: engine or
/// upstream), `apply` (the hub's seal, serialization and broadcast), `frame_to_pump` (serialized
/// to a connection's task taking it), `frame_to_written` (serialized to written to the socket).
pub(crate) fn window_timeline(start: Option<&Value>, end: Option<&Value>) -> Value {
    let (Some(start), Some(end)) = (start, end) else { return Value::Null };
    let stages = [
        ("close_to_apply", "/hub/close_to_apply"),
        ("apply", "/hub/apply"),
        ("frame_to_pump", "/frame_to_pump"),
        ("frame_to_written", "/frame_to_written"),
    ];
    let buckets = |v: &Value, path: &str| -> std::collections::BTreeMap<u64, u64> {
        v.pointer(&format!("{path}/buckets"))
            .and_then(Value::as_array)
            .map(|bs| bs.iter().filter_map(|b| Some((b.get(0)?.as_u64()?, b.get(1)?.as_u64()?))).collect())
            .unwrap_or_default()
    };
    let mut out = serde_json::Map::new();
    for (name, path) in stages {
        let before = buckets(start, path);
        let diff: Vec<(u64, u64)> = buckets(end, path)
            .into_iter()
            .map(|(upper, n)| (upper, n.saturating_sub(before.get(&upper).copied().unwrap_or(0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        let n: u64 = diff.iter().map(|(_, c)| c).sum();
        let q = |q: f64| {
            let rank = ((q * n as f64).ceil() as u64).max(1);
            let mut seen = 0;
            diff.iter()
                .find(|(_, c)| {
                    seen += c;
                    seen >= rank
                })
                .map_or(0.0, |(upper, _)| ms(*upper))
        };
        out.insert(
            name.to_string(),
            if n == 0 {
                Value::Null
            } else {
                json!({ "n": n, "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": q(1.0) })
            },
        );
    }
    Value::Object(out)
}

/// The machine's 1-minute load average (the share of the cores the servers competed for).
pub(crate) fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}
