//! `gateway-latency`: the time a `viewcast gateway` adds between an upstream's progress row and a
//! gateway WebSocket client's receipt of that complete timestamp (issue #7's target).
//!
//! Processes, all on this machine: an upstream `viewcast serve` (a table and the grouped view
//! `totals`, 20 ms ticks), a `viewcast gateway --view totals` in front of it, and `--client-procs`
//! child processes of this tool (`gateway-latency-clients`) holding the WebSocket clients. This
//! process does the least work of all: a direct `COPY (SUBSCRIBE totals WITH (PROGRESS))` reader
//! of the upstream, on a thread of its own (in the real-time class when allowed, so its stamps are
//! not late), stamps each progress row `p` when its chunk arrives; a writer changes the upstream's
//! table every `--write-ms`. Each client takes each frame's `ts` without parsing the rest of the
//! message, and stamps the frame twice: when its read returned it (`added_ms`, the client's
//! receipt), and when its last bytes reached the client's socket (`added_ms_socket`, the kernel's
//! receive timestamp: the same without the client processes' own scheduling). The gateway seals
//! the upstream's progress row `p` as its frame for `p - 1`, so a client's frame for `t` is
//! matched with the direct reader's progress row `t + 1`. Every stamp is `CLOCK_REALTIME`
//! (`SystemTime`, and the kernel's timestamps) in nanoseconds, one clock for every process of the
//! machine.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures::StreamExt as _;
use serde_json::{json, Value};

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;

use crate::proc::{ProcSample, Server};

/// The upstream's schema: `totals` changes in every timestamp the writer writes in.
const UPSTREAM_SQL: &str = "CREATE TABLE t (k text, n bigint);
INSERT INTO t VALUES ('k0', 1), ('k1', 2);
CREATE VIEW totals AS SELECT k, sum(n) AS total, count(*) AS c FROM t GROUP BY k;";

/// Both processes' tick, as in `crates/viewcast/tests/gateway.rs`.
const TICK_MS: &str = "20";

/// Caps, whatever the flags say.
const MAX_CLIENTS: usize = 20_000;
const MAX_SECONDS: f64 = 120.0;

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Spec {
    pub clients: usize,
    /// Child processes the clients are split over (at least one).
    pub client_procs: usize,
    /// The writer's interval: 7 changes nearly every 20 ms upstream tick (~50 changing
    /// timestamps/s), 100 gives ~10.
    pub write_ms: u64,
    pub seconds: f64,
    /// Seconds with the writer running before the window opens.
    pub warmup: f64,
    /// The `viewcast` binary for the gateway.
    pub gateway_bin: PathBuf,
    /// The `viewcast` binary for the upstream (kept fixed when comparing gateway builds).
    pub upstream_bin: PathBuf,
    /// The gateway's runtime worker threads (`TOKIO_WORKER_THREADS`; `None`: one per core).
    pub gateway_workers: Option<usize>,
    /// Niceness of the client processes (0: as this process).
    pub clients_nice: i32,
    /// The client processes run in the idle scheduling class (`SCHED_IDLE`).
    pub clients_idle: bool,
    /// Runtime worker threads of each client process.
    pub client_threads: usize,
    /// Niceness of the upstream process (negative: it writes each progress row to the direct
    /// reader and to the gateway back to back, not a preemption apart).
    pub upstream_nice: i32,
    /// Clients subscribe over the multiplexed WebSocket (`/api/v1/ws`).
    pub mux: bool,
}

/// Wall-clock nanoseconds since the epoch: comparable across the processes of one machine.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The top-level `"ts"` member of a JSON object message, when it is an unsigned integer, found
/// without parsing the rest (viewcast writes `ts` before `columns` and `rows`, so this stops
/// early). Keys inside nested values and strings that merely contain `"ts":` are not it.
pub fn frame_ts(msg: &[u8]) -> Option<u64> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < msg.len() {
        match msg[i] {
            b'"' => {
                let start = i + 1;
                i = start;
                while *msg.get(i)? != b'"' {
                    i += if msg[i] == b'\\' { 2 } else { 1 };
                }
                let is_ts = depth == 1 && &msg[start..i] == b"ts";
                i += 1;
                if is_ts {
                    let rest = msg[i..].trim_ascii_start();
                    if let Some(value) = rest.strip_prefix(b":") {
                        let value = value.trim_ascii_start();
                        let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
                        let after = value[digits..].trim_ascii_start().first();
                        if digits == 0 || !matches!(after, Some(b',' | b'}')) {
                            return None;
                        }
                        return std::str::from_utf8(&value[..digits]).ok()?.parse().ok();
                    }
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The direct reader's progress rows matched with the clients' frames.
#[derive(Debug, Default, PartialEq)]
pub struct Matched {
    /// Added latency of every matched frame, µs, sorted (a frame that arrived before the direct
    /// reader's row counts as 0).
    pub added_us: Vec<u64>,
    /// Frames that arrived before the direct reader's row (the upstream wrote the row to the
    /// gateway's connection first, or the reader ran late).
    pub early: u64,
    /// How much earlier each of those arrived, µs, sorted.
    pub early_us: Vec<u64>,
    /// Timestamps of the window at least one client got a frame for.
    pub timestamps: usize,
    /// (timestamp, client) pairs among those with no frame: lost, merged or late past the run.
    pub missing: u64,
}

/// Matches each client frame `(ts, received_ns)` with the direct reader's progress row `ts + 1`
/// (`(p, arrived_ns)`), for progress rows that arrived inside `window` (ns, inclusive). `arrivals`
/// holds one list per client.
pub fn match_frames(direct: &[(u64, u64)], window: (u64, u64), arrivals: &[Vec<(u64, u64)>]) -> Matched {
    let progress: std::collections::HashMap<u64, u64> =
        direct.iter().filter(|(_, at)| (window.0..=window.1).contains(at)).map(|&(p, at)| (p, at)).collect();
    let mut m = Matched::default();
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for client in arrivals {
        for &(ts, at) in client {
            let Some(&row_at) = ts.checked_add(1).and_then(|p| progress.get(&p)) else { continue };
            *seen.entry(ts).or_default() += 1;
            if at < row_at {
                m.early += 1;
                m.early_us.push((row_at - at) / 1000);
            }
            m.added_us.push(at.saturating_sub(row_at) / 1000);
        }
    }
    m.added_us.sort_unstable();
    m.early_us.sort_unstable();
    m.timestamps = seen.len();
    m.missing = seen.values().map(|n| (arrivals.len() as u64).saturating_sub(*n)).sum();
    m
}

/// A viewcast command line: `subcommand` with HTTP and pgwire on `pg`, the bench's tick.
fn viewcast(bin: &PathBuf, subcommand: &str, pg: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([subcommand, "--listen", "127.0.0.1:0", "--pgwire-listen", pg, "--tick-ms", TICK_MS])
        .env("RUST_LOG", "warn");
    cmd
}

async fn pg_connect(addr: SocketAddr) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let conninfo = format!("host={} port={} user=materialize", addr.ip(), addr.port());
        match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return Ok(client);
            }
            Err(e) if Instant::now() > deadline => return Err(e).context("connecting to the upstream's pgwire"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Puts this process's thread called `name` in the `SCHED_FIFO` class (through `chrt`), so it
/// runs as soon as its socket is readable instead of waiting behind the busy processes of the
/// run; whether that worked (it needs the privilege).
fn realtime(name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return false };
    let tid = tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        (comm.trim() == name).then(|| t.file_name().to_string_lossy().into_owned())
    });
    let Some(tid) = tid else { return false };
    Command::new("chrt")
        .args(["-f", "-p", "10", &tid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The direct reader: a thread and runtime of its own, stamping each progress row `(p, ns)` on
/// its chunk's arrival (before the chunk is split into lines); and whether it runs in the
/// real-time class.
#[allow(clippy::type_complexity)]
fn start_direct_reader(upstream: SocketAddr) -> anyhow::Result<(Arc<Mutex<Vec<(u64, u64)>>>, bool)> {
    let rows: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let out = rows.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new().name("direct-reader".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
        };
        rt.block_on(async move {
            let stream = async {
                let client = pg_connect(upstream).await?;
                let stream = client.copy_out("COPY (SUBSCRIBE totals WITH (PROGRESS)) TO STDOUT").await?;
                anyhow::Ok((client, stream))
            };
            let (_client, stream) = match stream.await {
                Ok(s) => s,
                Err(e) => return drop(ready_tx.send(Err(format!("{e:#}")))),
            };
            let _ = ready_tx.send(Ok(()));
            futures::pin_mut!(stream);
            let mut partial: Vec<u8> = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                let at = now_ns();
                partial.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
                    let mut fields = partial[start..start + nl].split(|b| *b == b'\t');
                    let ts = fields.next().and_then(|f| std::str::from_utf8(f).ok()?.parse::<u64>().ok());
                    if let (Some(p), Some(b"t")) = (ts, fields.next()) {
                        out.lock().expect("direct reader's rows").push((p, at));
                    }
                    start += nl + 1;
                }
                partial.drain(..start);
            }
        });
    })?;
    match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok((rows, realtime("direct-reader"))),
        Ok(Err(e)) => bail!("the direct reader: {e}"),
        Err(_) => bail!("the direct reader did not start within 30 s"),
    }
}

/// Changes `t` every `every` (an INSERT, or a DELETE of an earlier insert once 24 are live) until
/// `stop`; returns how many writes failed.
async fn write_until(upstream: SocketAddr, every: Duration, stop: Arc<AtomicU64>) -> anyhow::Result<u64> {
    let client = pg_connect(upstream).await?;
    let mut live = std::collections::VecDeque::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut n, mut failed) = (0u64, 0u64);
    while stop.load(Ordering::Relaxed) == 0 {
        tick.tick().await;
        n += 1;
        let sql = if live.len() >= 24 {
            let (k, v): (u64, u64) = live.pop_front().expect("non-empty");
            format!("DELETE FROM t WHERE k = 'k{k}' AND n = {v}")
        } else {
            let (k, v) = (n % 6, n % 9 + 1);
            live.push_back((k, v));
            format!("INSERT INTO t VALUES ('k{k}', {v})")
        };
        if client.simple_query(&sql).await.is_err() {
            failed += 1;
        }
    }
    Ok(failed)
}

/// A child process of this tool holding a share of the clients; killed when dropped.
struct ClientProc {
    child: Child,
    stdin: Option<ChildStdin>,
    connected: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    results: std::sync::mpsc::Receiver<Value>,
}

impl ClientProc {
    fn start(gateway: SocketAddr, clients: usize, seconds: f64, spec: &Spec) -> anyhow::Result<ClientProc> {
        let mut cmd = if spec.clients_idle {
            let mut chrt = Command::new("chrt");
            chrt.args(["--idle", "0", "nice"]);
            chrt
        } else {
            Command::new("nice")
        };
        cmd.args(["-n", &spec.clients_nice.to_string()])
            .arg(std::env::current_exe()?)
            .arg("gateway-latency-clients")
            .env("TOKIO_WORKER_THREADS", "1")
            .args(["--threads", &spec.client_threads.max(1).to_string()])
            .args(["--server", &gateway.to_string(), "--view", "totals"])
            .args(spec.mux.then_some("--mux"))
            .args(["--clients", &clients.to_string(), "--seconds", &format!("{seconds:.1}")]);
        let (child, stdin, stdout) = crate::group::spawn_piped(&mut cmd)?;
        let (connected, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (tx, results) = std::sync::mpsc::channel();
        let (c, f) = (connected.clone(), failed.clone());
        std::thread::Builder::new().name("gw-client-proc".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("[gateway-latency-clients] {line}");
                    continue;
                };
                if v.get("arrivals").is_some() {
                    let _ = tx.send(v);
                    break;
                }
                c.store(v["connected"].as_u64().unwrap_or(0), Ordering::Relaxed);
                f.store(v["failed"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
        })?;
        Ok(ClientProc { child, stdin, connected, failed, results })
    }

    /// Tells the clients to stop and returns their report (`arrivals`: one list of [`Arrival`]s
    /// per client; `errors`).
    async fn finish(mut self) -> anyhow::Result<Value> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "done").and_then(|()| stdin.flush());
        }
        let rx = std::mem::replace(&mut self.results, std::sync::mpsc::channel().1);
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await?
            .context("the client process reported no results")
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run; returns its JSON report.
pub async fn run(spec: &Spec) -> anyhow::Result<Value> {
    anyhow::ensure!((1..=MAX_CLIENTS).contains(&spec.clients), "1 to {MAX_CLIENTS} clients");
    anyhow::ensure!(spec.client_procs >= 1, "at least one client process");
    anyhow::ensure!(spec.seconds <= MAX_SECONDS && spec.warmup <= MAX_SECONDS, "at most {MAX_SECONDS} s a phase");
    anyhow::ensure!(spec.write_ms >= 1, "--write-ms at least 1");
    for bin in [&spec.gateway_bin, &spec.upstream_bin] {
        anyhow::ensure!(bin.exists(), "{} not found: cargo build --release -p viewcast", bin.display());
    }
    let sql = std::env::temp_dir().join(format!("viewcast-bench-gwlat-{}.sql", std::process::id()));
    std::fs::write(&sql, UPSTREAM_SQL)?;
    let pg = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut up = Command::new("nice");
    up.args(["-n", &spec.upstream_nice.to_string()]).arg(&spec.upstream_bin);
    up.args(viewcast(&spec.upstream_bin, "serve", &pg.to_string()).get_args()).env("RUST_LOG", "warn");
    up.arg("--sql").arg(&sql);
    let upstream = Server::spawn("viewcast-upstream", up, "open ")?;
    let (direct, direct_realtime) = start_direct_reader(pg)?;
    let mut gw = viewcast(&spec.gateway_bin, "gateway", "127.0.0.1:0");
    if let Some(n) = spec.gateway_workers {
        gw.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    gw.args(["--upstream", &format!("postgres://materialize@{pg}/materialize"), "--view", "totals"]);
    let gateway = Server::spawn("viewcast-gateway", gw, "open ")?;

    // Clients: split as evenly as the count allows, all connected before the writer starts.
    let cap = 60.0 + spec.warmup + spec.seconds + 60.0;
    let procs: Vec<ClientProc> = (0..spec.client_procs)
        .map(|i| spec.clients / spec.client_procs + usize::from(i < spec.clients % spec.client_procs))
        .filter(|n| *n > 0)
        .map(|n| ClientProc::start(gateway.addr, n, cap, spec))
        .collect::<anyhow::Result<_>>()?;
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sum = |f: fn(&ClientProc) -> &AtomicU64| procs.iter().map(|p| f(p).load(Ordering::Relaxed)).sum::<u64>();
        let (connected, failed) = (sum(|p| &p.connected), sum(|p| &p.failed));
        if connected + failed >= spec.clients as u64 {
            anyhow::ensure!(failed == 0, "{failed} of {} clients failed to connect", spec.clients);
            break;
        }
        anyhow::ensure!(Instant::now() < connect_deadline, "only {connected} of {} clients connected", spec.clients);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_until(pg, Duration::from_millis(spec.write_ms), stop.clone()));
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup)).await;
    let timeline0 = crate::fanout::stats_timeline(gateway.addr).await;
    let pids: Vec<(&str, u32)> =
        [("upstream", upstream.pid()), ("gateway", gateway.pid()), ("bench", std::process::id())]
            .into_iter()
            .chain(procs.iter().map(|p| ("clients", p.child.id())))
            .collect();
    let cpu0: Vec<ProcSample> = pids.iter().map(|(_, pid)| ProcSample::of(*pid)).collect();
    let load_start = crate::fanout::loadavg_1m();
    let window_start = now_ns();
    tokio::time::sleep(Duration::from_secs_f64(spec.seconds)).await;
    let window_end = now_ns();
    let load_end = crate::fanout::loadavg_1m();
    let cpu1: Vec<ProcSample> = pids.iter().map(|(_, pid)| ProcSample::of(*pid)).collect();
    // The frames of the window's last timestamps are still on their way: let them arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let timeline1 = crate::fanout::stats_timeline(gateway.addr).await;
    stop.store(1, Ordering::Relaxed);
    let failed_writes = writer.await?.context("the writer")?;

    let mut arrivals: Vec<Vec<Arrival>> = Vec::with_capacity(spec.clients);
    let mut errors: Vec<Value> = Vec::new();
    for p in procs {
        let report = p.finish().await?;
        let clients: Vec<Vec<Arrival>> = serde_json::from_value(report["arrivals"].clone())?;
        arrivals.extend(clients);
        errors.extend(report["errors"].as_array().cloned().unwrap_or_default());
    }
    let direct = direct.lock().expect("direct reader's rows").clone();
    let progress_rows = direct.iter().filter(|(_, at)| (window_start..=window_end).contains(at)).count();
    let window = (window_start, window_end);
    let project = |stamp: fn(&Arrival) -> u64| -> Vec<Vec<(u64, u64)>> {
        arrivals.iter().map(|c| c.iter().map(|a| (a.0, stamp(a))).filter(|(_, at)| *at > 0).collect()).collect()
    };
    let m = match_frames(&direct, window, &project(|a| a.1));
    let kernel = match_frames(&direct, window, &project(|a| a.2));
    // The clients' own share: from the bytes reaching a client's socket to its read returning.
    let mut client_us: Vec<u64> =
        arrivals.iter().flatten().filter(|a| a.2 > 0).map(|a| a.1.saturating_sub(a.2) / 1000).collect();
    client_us.sort_unstable();
    // Window frames without the kernel's timestamp (the kernel turns timestamping on for the
    // machine asynchronously, so the first packets after the first request may have none).
    let no_kernel_stamp = m.added_us.len().saturating_sub(kernel.added_us.len());
    drop(gateway);
    drop(upstream);
    let _ = std::fs::remove_file(&sql);

    let dist = |v: &[u64]| {
        let pct = |p: f64| crate::percentile(v, p);
        json!({ "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0) })
    };
    let mut cpu = serde_json::Map::new();
    for (((name, _), a), b) in pids.iter().zip(&cpu0).zip(&cpu1) {
        let e = cpu.entry(name.to_string()).or_insert(json!(0.0));
        *e = json!(((e.as_f64().unwrap_or(0.0) + b.cpu_percent_since(a)) * 10.0).round() / 10.0);
    }
    Ok(json!({
        "bench": "gateway-latency",
        "clients": spec.clients,
        "client_procs": spec.client_procs,
        "write_ms": spec.write_ms,
        "seconds": spec.seconds,
        "gateway_bin": spec.gateway_bin,
        "gateway_workers": spec.gateway_workers,
        "clients_nice": spec.clients_nice,
        "clients_idle": spec.clients_idle,
        "client_threads": spec.client_threads,
        "upstream_nice": spec.upstream_nice,
        "mux": spec.mux,
        "direct_reader_realtime": direct_realtime,
        "progress_rows": progress_rows,
        "timestamps_with_frames": m.timestamps,
        "changing_ts_per_s": (m.timestamps as f64 / spec.seconds * 10.0).round() / 10.0,
        "frames": m.added_us.len(),
        "missing": m.missing,
        "early": m.early,
        "added_ms": dist(&m.added_us),
        "added_ms_socket": dist(&kernel.added_us),
        "early_socket": kernel.early,
        "early_by_ms": dist(&m.early_us),
        "client_read_ms": dist(&client_us),
        "no_kernel_stamp": no_kernel_stamp,
        "gateway_timeline": crate::fanout::window_timeline(timeline0.as_ref(), timeline1.as_ref()),
        "cpu_pct": cpu,
        "failed_writes": failed_writes,
        "client_errors": errors.len(),
        "loadavg_1m_start": load_start,
        "loadavg_1m_end": load_end,
    }))
}

/// The flags of `viewcast-bench gateway-latency-clients`, set by [`ClientProc::start`].
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    view: String,
    #[arg(long)]
    clients: usize,
    /// Longest the clients run.
    #[arg(long)]
    seconds: f64,
    /// Client threads, each reading its share of the clients from one epoll set.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Subscribe over the multiplexed WebSocket instead of the view's own.
    #[arg(long)]
    mux: bool,
}

/// One frame as a client got it: `(ts, user_ns, kernel_ns)`: its timestamp, when the client's
/// read returned it, and when its last bytes reached the client's socket (the kernel's receive
/// timestamp of that read, `SO_TIMESTAMPNS`; 0 if the kernel gave none).
pub type Arrival = (u64, u64, u64);

/// A server-to-client WebSocket frame header at the start of `buf`: `(fin, opcode, payload
/// range)`, once the whole frame is in `buf`. Server frames are never masked (RFC 6455 5.1).
pub fn ws_frame(buf: &[u8]) -> Option<(bool, u8, std::ops::Range<usize>)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let (len, header) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (n as usize, 2),
    };
    let mask: usize = if b1 & 0x80 != 0 { 4 } else { 0 };
    let start = header + mask;
    let end = start.checked_add(len)?;
    (buf.len() >= end).then_some((b0 & 0x80 != 0, b0 & 0x0f, start..end))
}

/// `recvmsg` into `into`, with the kernel's receive timestamp of the data read (ns since the
/// epoch), if it gave one.
fn recv_stamped(fd: std::os::fd::RawFd, into: &mut [u8], cmsg: &mut Vec<u8>) -> nix::Result<(usize, Option<u64>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(into)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(cmsg.as_mut_slice()), MsgFlags::MSG_DONTWAIT)?;
    let stamp = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(t) => Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64),
        _ => None,
    });
    Ok((msg.bytes, stamp))
}

/// Connects and upgrades to a WebSocket at `path` (blocking, bounded by `timeout`), with kernel
/// receive timestamps on; returns the socket, non-blocking from then on, and what arrived after the
/// handshake's response.
fn ws_connect(server: SocketAddr, path: &str, timeout: Duration) -> Result<(std::net::TcpStream, Vec<u8>), String> {
    use std::io::Read;
    let mut tcp = std::net::TcpStream::connect_timeout(&server, timeout).map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dmlld2Nhc3QtYmVuY2gtMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).map_err(|e| format!("handshake: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(format!("handshake: {}", String::from_utf8_lossy(&buf[..end])));
            }
            tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
            return Ok((tcp, buf.split_off(end + 4)));
        }
        let n = tcp.read(&mut chunk).map_err(|e| format!("handshake: {e}"))?;
        if buf.len() > 16 << 10 || n == 0 {
            return Err("handshake: no response".to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A client's frame (RFC 6455 5.2), formatted by tungstenite and masked as a client's must be
/// (with a zero key, so the payload reads as sent).
fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = WsFrame::message(payload.to_vec(), opcode, true);
    frame.header_mut().mask = Some([0; 4]);
    let mut out = Vec::with_capacity(payload.len() + 14);
    frame.format(&mut out).expect("a frame formats into a Vec");
    out
}

/// One client's connection as its thread holds it.
struct Client {
    tcp: std::net::TcpStream,
    /// Received bytes not yet parsed into whole frames.
    buf: Vec<u8>,
    /// A fragmented message's parts so far.
    message: Vec<u8>,
    got: Vec<Arrival>,
    /// Why it ended early (closed by the gateway, a failed read); `None` while it runs.
    ended: Option<String>,
}

impl Client {
    /// Takes the whole frames in `buf` read at `(user_ns, kernel_ns)`: text frames' `ts`, pings
    /// answered, a close ends the client.
    fn take_frames(&mut self, user_ns: u64, kernel_ns: u64) {
        let mut at = 0;
        while let Some((fin, opcode, payload)) = ws_frame(&self.buf[at..]) {
            let (payload, next) = (at + payload.start..at + payload.end, at + payload.end);
            match opcode {
                0x9 => {
                    // Pong with the ping's payload, masked with a zero key as a client must.
                    let pong = client_frame(OpCode::Control(Control::Pong), &self.buf[payload]);
                    let _ = self.tcp.write(&pong);
                }
                0x8 => {
                    self.ended = Some("closed by the gateway".to_string());
                    return;
                }
                0x0..=0x2 => {
                    let whole = if fin && self.message.is_empty() {
                        frame_ts(&self.buf[payload])
                    } else {
                        self.message.extend_from_slice(&self.buf[payload]);
                        if fin {
                            let ts = frame_ts(&self.message);
                            self.message.clear();
                            ts
                        } else {
                            None
                        }
                    };
                    self.got.extend(whole.map(|ts| (ts, user_ns, kernel_ns)));
                }
                _ => {}
            }
            at = next;
        }
        self.buf.drain(..at);
    }
}

/// One client thread: connects its `count` clients one after another, then reads them all from one
/// level-triggered epoll set until `done`: one `recvmsg` per readable socket per wake-up, so a frame
/// costs one read and a share of one `epoll_wait` (no runtime, no task wake-up, no read that only
/// finds the socket empty). The clients stand in for browsers on other machines; on this machine
/// they share the gateway's cores, so the less they spend per frame the less they delay it.
/// Returns each client's arrivals and the error that ended it early, if any.
fn client_thread(
    server: SocketAddr,
    path: &str,
    subscribe: Option<&[u8]>,
    count: usize,
    connected: &AtomicU64,
    failed: &AtomicU64,
    done: &std::sync::atomic::AtomicBool,
) -> Vec<(Vec<Arrival>, Option<String>)> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    use std::os::fd::AsRawFd;
    let mut out = Vec::with_capacity(count);
    let mut clients: Vec<Client> = Vec::with_capacity(count);
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => {
            failed.fetch_add(count as u64, Ordering::Relaxed);
            return (0..count).map(|_| (Vec::new(), Some(format!("epoll: {e}")))).collect();
        }
    };
    for _ in 0..count {
        if done.load(Ordering::Relaxed) {
            out.push((Vec::new(), Some("stopped before connecting".to_string())));
            continue;
        }
        match ws_connect(server, path, Duration::from_secs(30)) {
            Ok((mut tcp, buf)) => {
                // The socket is non-blocking already, but a few dozen bytes into its empty send
                // buffer are taken whole (a `WouldBlock` would count as this client failing).
                if let Err(e) = subscribe.map_or(Ok(()), |m| tcp.write_all(m)) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    out.push((Vec::new(), Some(format!("subscribe: {e}"))));
                    continue;
                }
                let event = EpollEvent::new(EpollFlags::EPOLLIN, clients.len() as u64);
                if let Err(e) = epoll.add(&tcp, event) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    out.push((Vec::new(), Some(format!("epoll: {e}"))));
                    continue;
                }
                connected.fetch_add(1, Ordering::Relaxed);
                let mut client = Client { tcp, buf, message: Vec::new(), got: Vec::with_capacity(1024), ended: None };
                client.take_frames(now_ns(), 0);
                clients.push(client);
            }
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                out.push((Vec::new(), Some(e)));
            }
        }
    }
    let mut events = vec![EpollEvent::empty(); 256];
    let mut chunk = vec![0u8; 64 << 10];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    while !done.load(Ordering::Relaxed) {
        let n = match epoll.wait(&mut events, EpollTimeout::from(50u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                for c in clients.iter_mut().filter(|c| c.ended.is_none()) {
                    c.ended = Some(format!("epoll: {e}"));
                }
                break;
            }
        };
        for event in &events[..n] {
            let client = &mut clients[event.data() as usize];
            let (read, kernel_ns) = match recv_stamped(client.tcp.as_raw_fd(), &mut chunk, &mut cmsg) {
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    client.ended = Some(format!("read: {e}"));
                    (0, None)
                }
                Ok((0, _)) => {
                    client.ended = Some("closed by the gateway".to_string());
                    (0, None)
                }
                Ok(r) => r,
            };
            if read > 0 {
                let user_ns = now_ns();
                client.buf.extend_from_slice(&chunk[..read]);
                client.take_frames(user_ns, kernel_ns.unwrap_or(0));
            }
            if client.ended.is_some() {
                let _ = epoll.delete(&client.tcp);
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    out.extend(clients.into_iter().map(|c| (c.got, c.ended)));
    out
}

/// The child's side: `--threads` client threads ([`client_thread`]) hold the clients, reporting
/// `{"connected", "failed"}` every 100 ms until told `done` (or its stdin closes), then
/// `{"arrivals": [[Arrival..] per client], "errors": [..]}` as one line.
pub async fn clients(args: ClientArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients <= MAX_CLIENTS, "too many clients");
    let (path, subscribe) = if args.mux {
        let message = json!({ "type": "subscribe", "id": "s", "view": args.view }).to_string();
        ("/api/v1/ws".to_string(), Some(client_frame(OpCode::Data(Data::Text), message.as_bytes())))
    } else {
        (format!("/api/v1/stream/{}", args.view), None)
    };
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads = args.threads.clamp(1, args.clients.max(1));
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let count = args.clients / threads + usize::from(i < args.clients % threads);
        let (path, subscribe) = (path.clone(), subscribe.clone());
        let (connected, failed, done) = (connected.clone(), failed.clone(), done.clone());
        let server = args.server;
        handles.push(
            std::thread::Builder::new()
                .name(format!("gw-client-{i}"))
                .spawn(move || client_thread(server, &path, subscribe.as_deref(), count, &connected, &failed, &done))?,
        );
    }
    let mut commands = crate::group::stdin_lines()?;
    let deadline =
        tokio::time::sleep(Duration::from_secs_f64(args.seconds.clamp(0.0, crate::MAX_INVOCATION.as_secs_f64())));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (c, f) = (connected.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                writeln!(stdout, "{}", json!({"connected": c, "failed": f}))?;
            }
            command = commands.recv() => if matches!(command.as_deref(), Some("done") | None) { break },
            _ = &mut deadline => break,
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut arrivals = Vec::with_capacity(args.clients);
    let mut errors = Vec::new();
    for h in handles {
        match tokio::task::spawn_blocking(move || h.join()).await? {
            Ok(clients) => {
                for (got, error) in clients {
                    arrivals.push(got);
                    errors.extend(error);
                }
            }
            Err(_) => errors.push("a client thread panicked".to_string()),
        }
    }
    writeln!(stdout, "{}", json!({ "arrivals": arrivals, "errors": errors }))?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ts_reads_the_top_level_member_only() {
        let update = br#"{"type":"update","view":"totals","ts":1764230000123,"rows":[{"row":["k0",1,1],"diff":1}]}"#;
        assert_eq!(frame_ts(update), Some(1_764_230_000_123));
        assert_eq!(frame_ts(br#"{"type":"progress","view":"v","ts":7}"#), Some(7));
        // A keyed client's frames start with its id.
        assert_eq!(frame_ts(br#"{"id":"a\"ts\":9","type":"progress","view":"v","ts": 8 }"#), Some(8));
        // A view called "ts", a row holding `"ts":`, a nested object with a ts member.
        assert_eq!(frame_ts(br#"{"type":"progress","view":"ts","ts":5}"#), Some(5));
        assert_eq!(frame_ts(br#"{"type":"update","view":"v","rows":[{"ts":3}],"ts":4}"#), Some(4));
        assert_eq!(frame_ts(br#"{"type":"update","view":"v","rows":[["\"ts\":3"]]}"#), None);
        // No ts (resync), not an unsigned integer, or cut short.
        assert_eq!(frame_ts(br#"{"type":"resync","view":"v"}"#), None);
        assert_eq!(frame_ts(br#"{"ts":-1}"#), None);
        assert_eq!(frame_ts(br#"{"ts":1.5}"#), None);
        assert_eq!(frame_ts(br#"{"ts":"#), None);
        assert_eq!(frame_ts(br#"{"view":"unterminated"#), None);
        assert_eq!(frame_ts(b"]]{}"), None);
    }

    #[test]
    fn ws_frames_are_read_once_complete_at_every_length_encoding() {
        // A final text frame of 5 bytes, then the start of the next one.
        let small = [&[0x81, 5][..], b"hello", &[0x81]].concat();
        assert_eq!(ws_frame(&small), Some((true, 1, 2..7)));
        assert_eq!(ws_frame(&small[..6]), None, "payload incomplete");
        assert_eq!(ws_frame(&small[7..]), None, "header incomplete");
        // 16-bit and 64-bit lengths; a non-final continuation.
        let mid = [&[0x01, 126, 0x01, 0x00][..], &[b'x'; 256]].concat();
        assert_eq!(ws_frame(&mid), Some((false, 1, 4..260)));
        let big = [&[0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0][..], &vec![b'y'; 65_536]].concat();
        assert_eq!(ws_frame(&big), Some((true, 0, 10..65_546)));
        assert_eq!(ws_frame(&big[..65_545]), None);
        // A masked frame's payload starts after its 4-byte key; a ping with no payload.
        assert_eq!(ws_frame(&[0x81, 0x82, 1, 2, 3, 4, 9, 9]), Some((true, 1, 6..8)));
        assert_eq!(ws_frame(&[0x89, 0]), Some((true, 9, 2..2)));
        // A length past what memory could hold never overflows.
        assert_eq!(ws_frame(&[0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn client_text_frames_are_masked_and_read_back_at_every_length_encoding() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let frame = client_frame(OpCode::Data(Data::Text), &payload);
            assert_eq!(frame[1] & 0x80, 0x80, "masked");
            let (fin, opcode, range) = ws_frame(&frame).unwrap();
            assert_eq!((fin, opcode, range.end), (true, 1, frame.len()), "length {len}");
            // A zero key leaves the payload as it was.
            assert_eq!(&frame[range], &payload[..], "length {len}");
        }
    }

    #[test]
    fn frames_match_the_next_progress_row_inside_the_window() {
        // Progress rows p at arrival ns: 10 and 11 are inside the window [1_000, 2_000], 12 is not.
        let direct: [(u64, u64); 3] = [(10, 1_000), (11, 1_500_000), (12, 2_500_000)];
        let window = (1_000, 2_000_000);
        let arrivals = vec![
            // Client 0: ts 9 (row 10) 2 ms after; ts 10 (row 11) 0.5 ms early; ts 11 is outside.
            vec![(9, 2_001_000), (10, 1_000_000), (11, 2_600_000)],
            // Client 1: only ts 9, 7.5 ms after.
            vec![(9, 7_501_000)],
        ];
        let m = match_frames(&direct, window, &arrivals);
        assert_eq!(m.added_us, vec![0, 2_000, 7_500]);
        assert_eq!(m.early_us, vec![500]);
        assert_eq!((m.early, m.timestamps, m.missing), (1, 2, 1));
        assert_eq!(crate::percentile(&m.added_us, 1.0), 7.5);
        assert_eq!(crate::percentile(&m.added_us, 0.5), 2.0);
    }
}
