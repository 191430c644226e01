//! A group of clients: tasks of this process, or a child process of this tool running them (its
//! `clients` subcommand), so that a run can hold more sockets than one process's open-file limit
//! allows. Either way the group reports the same `ClientResult`s, and the measurement phases are
//! the bench's: a child is told `measure` and `done` on its stdin and reports its counts every
//! 100 ms on its stdout, then its results as one JSON line.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::client::{self, Behaviour, ClientResult, ClientSpec, Shared, Transport, DONE, MEASURE};

/// What a group of clients does.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    pub server: SocketAddr,
    pub path: String,
    /// The stalled clients' path (e.g. a view with larger frames).
    pub stalled_path: String,
    pub transport: Transport,
    /// Fast clients, then `stalled` stalled ones spread among them.
    pub clients: usize,
    pub stalled: usize,
    /// Source addresses 127.0.0.`first_address` and the `addresses - 1` after it.
    pub first_address: u8,
    pub addresses: usize,
    /// Connection attempts in flight at once; 0 = every client at once (a storm).
    pub concurrency: usize,
    /// When every client gives up, whatever the phase.
    pub deadline: Instant,
}

/// How far a group has got connecting.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// WebSocket handshakes (SSE responses) completed.
    pub handshaken: u64,
    /// Clients with their first frame.
    pub ready: u64,
    /// Clients whose task has ended (failed to connect, or closed).
    pub finished: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            handshaken: self.handshaken + o.handshaken,
            ready: self.ready + o.ready,
            finished: self.finished + o.finished,
        }
    }
}

/// A client's result, and whether it was a stalled one.
pub type Outcome = (bool, ClientResult);

pub enum Group {
    Local(LocalGroup),
    Remote(RemoteGroup),
}

impl Group {
    pub fn counts(&self) -> Counts {
        match self {
            Group::Local(g) => g.counts(),
            Group::Remote(g) => g.counts(),
        }
    }

    pub fn set_phase(&mut self, phase: u8) {
        match self {
            Group::Local(g) => g.shared.set_phase(phase),
            Group::Remote(g) => g.set_phase(phase),
        }
    }

    /// The client process, if the clients run in one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Group::Local(_) => None,
            Group::Remote(g) => Some(g.child.id()),
        }
    }

    /// Every client's result, once the phase is `DONE`.
    pub async fn finish(self) -> Vec<Outcome> {
        match self {
            Group::Local(g) => g.finish().await,
            Group::Remote(g) => g.finish().await,
        }
    }
}

/// Clients running as tasks of this process.
pub struct LocalGroup {
    shared: Arc<Shared>,
    finished: Arc<AtomicU64>,
    /// Starts the clients, a connection slot at a time; returns their tasks.
    starter: tokio::task::JoinHandle<Vec<(bool, tokio::task::JoinHandle<ClientResult>)>>,
}

impl LocalGroup {
    pub fn start(spec: GroupSpec, shared: Arc<Shared>) -> LocalGroup {
        let finished = Arc::new(AtomicU64::new(0));
        let starter = tokio::spawn({
            let (shared, finished) = (shared.clone(), finished.clone());
            async move {
                let total = spec.clients + spec.stalled;
                let permits = Arc::new(tokio::sync::Semaphore::new(if spec.concurrency == 0 {
                    total.max(1)
                } else {
                    spec.concurrency
                }));
                let every = (total / spec.stalled.max(1)).max(1);
                let mut handles = Vec::with_capacity(total);
                for i in 0..total {
                    // Stalled clients are spread among the fast ones.
                    let stalled = spec.stalled > 0 && i % every == 0 && i / every < spec.stalled;
                    let cs = ClientSpec {
                        server: spec.server,
                        path: if stalled { spec.stalled_path.clone() } else { spec.path.clone() },
                        transport: spec.transport,
                        behaviour: if stalled { Behaviour::Stalled } else { Behaviour::Fast },
                        source: client::source_for(i, spec.first_address, spec.addresses),
                    };
                    // A connection slot is held until the client's handshake is done (or has failed).
                    let permit = permits.clone().acquire_owned().await.expect("semaphore");
                    let (shared, done) = (shared.clone(), finished.clone());
                    handles.push((
                        stalled,
                        tokio::spawn(async move {
                            let r = client::run_client(cs, shared, spec.deadline, permit).await;
                            done.fetch_add(1, Ordering::Relaxed);
                            r
                        }),
                    ));
                }
                handles
            }
        });
        LocalGroup { shared, finished, starter }
    }

    fn counts(&self) -> Counts {
        Counts {
            handshaken: self.shared.handshaken.load(Ordering::Relaxed),
            ready: self.shared.ready.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
        }
    }

    async fn finish(self) -> Vec<Outcome> {
        let handles = self.starter.await.unwrap_or_default();
        let mut out = Vec::with_capacity(handles.len());
        for (stalled, h) in handles {
            let r = match tokio::time::timeout(Duration::from_secs(30), h).await {
                Ok(Ok(r)) => r,
                _ => ClientResult { error: Some("client task did not finish".into()), ..Default::default() },
            };
            out.push((stalled, r));
        }
        out
    }
}

/// Starts a client process with its stdin and stdout piped to this process (its stderr inherited).
pub fn spawn_piped(cmd: &mut Command) -> anyhow::Result<(Child, Option<ChildStdin>, ChildStdout)> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("starting a client process: {cmd:?}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("the client process's stdout")?;
    Ok((child, stdin, stdout))
}

/// Clients running in a child process (`viewcast-bench clients`); killed when dropped.
pub struct RemoteGroup {
    child: Child,
    stdin: Option<ChildStdin>,
    counts: Arc<[AtomicU64; 3]>,
    results: Option<std::sync::mpsc::Receiver<Vec<Outcome>>>,
    clients: usize,
}

impl RemoteGroup {
    pub fn start(spec: &GroupSpec) -> anyhow::Result<RemoteGroup> {
        let seconds = spec.deadline.saturating_duration_since(Instant::now()).as_secs_f64();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("clients")
            .args(["--server", &spec.server.to_string(), "--path", &spec.path])
            .args(["--stalled-path", &spec.stalled_path])
            .args(["--clients", &spec.clients.to_string(), "--stalled", &spec.stalled.to_string()])
            .args(["--first-address", &spec.first_address.to_string(), "--addresses", &spec.addresses.to_string()])
            .args(["--concurrency", &spec.concurrency.to_string(), "--seconds", &format!("{seconds:.1}")])
            .args((spec.transport == Transport::Sse).then_some("--sse"));
        let (child, stdin, stdout) = spawn_piped(&mut cmd)?;
        let counts: Arc<[AtomicU64; 3]> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let c = counts.clone();
        std::thread::Builder::new().name("client-proc".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("[clients] {line}");
                    continue;
                };
                if let Some(results) = v.get("results") {
                    match serde_json::from_value::<Vec<Outcome>>(results.clone()) {
                        Ok(r) => drop(tx.send(r)),
                        Err(e) => eprintln!("[clients] unreadable results: {e}"),
                    }
                    break;
                }
                for (slot, key) in c.iter().zip(["handshaken", "ready", "finished"]) {
                    if let Some(n) = v.get(key).and_then(Value::as_u64) {
                        slot.store(n, Ordering::Relaxed);
                    }
                }
            }
        })?;
        Ok(RemoteGroup { child, stdin, counts, results: Some(rx), clients: spec.clients + spec.stalled })
    }

    fn counts(&self) -> Counts {
        let [h, r, f] = &*self.counts;
        Counts {
            handshaken: h.load(Ordering::Relaxed),
            ready: r.load(Ordering::Relaxed),
            finished: f.load(Ordering::Relaxed),
        }
    }

    fn set_phase(&mut self, phase: u8) {
        let word = match phase {
            MEASURE => "measure",
            DONE => "done",
            _ => return,
        };
        if let Some(stdin) = &mut self.stdin {
            if writeln!(stdin, "{word}").and_then(|()| stdin.flush()).is_err() {
                eprintln!("[clients] the client process is gone");
            }
        }
    }

    async fn finish(mut self) -> Vec<Outcome> {
        self.stdin = None;
        let rx = self.results.take().expect("finished once");
        let got = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60))).await;
        match got {
            Ok(Ok(r)) => r,
            _ => {
                let error = Some("the client process reported no results".to_string());
                (0..self.clients)
                    .map(|_| (false, ClientResult { error: error.clone(), ..Default::default() }))
                    .collect()
            }
        }
    }
}

impl Drop for RemoteGroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags of `viewcast-bench clients`, set by [`RemoteGroup::start`].
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    path: String,
    #[arg(long)]
    stalled_path: Option<String>,
    #[arg(long)]
    sse: bool,
    #[arg(long)]
    clients: usize,
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    #[arg(long)]
    first_address: u8,
    #[arg(long)]
    addresses: usize,
    #[arg(long)]
    concurrency: usize,
    /// Longest the clients run.
    #[arg(long)]
    seconds: f64,
}

/// This process's stdin, a line at a time (how a client process is told `measure` and `done`);
/// the channel closes with stdin.
pub fn stdin_lines() -> std::io::Result<tokio::sync::mpsc::Receiver<String>> {
    let (tx, lines) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    })?;
    Ok(lines)
}

/// The child's side: runs its clients, reports counts until told `done` (or its stdin closes),
/// then the results.
pub async fn child(args: ChildArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients + args.stalled <= crate::fanout::MAX_CLIENTS, "too many clients");
    let seconds = args.seconds.clamp(0.0, crate::MAX_INVOCATION.as_secs_f64());
    let spec = GroupSpec {
        server: args.server,
        stalled_path: args.stalled_path.unwrap_or_else(|| args.path.clone()),
        path: args.path,
        transport: if args.sse { Transport::Sse } else { Transport::WebSocket },
        clients: args.clients,
        stalled: args.stalled,
        first_address: args.first_address,
        addresses: args.addresses,
        concurrency: args.concurrency,
        deadline: Instant::now() + Duration::from_secs_f64(seconds),
    };
    let shared = Shared::new(16);
    let group = LocalGroup::start(spec, shared.clone());
    let mut commands = stdin_lines()?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let c = group.counts();
                writeln!(stdout, "{}", json!({"handshaken": c.handshaken, "ready": c.ready, "finished": c.finished}))?;
            }
            command = commands.recv() => match command.as_deref() {
                Some("measure") => shared.set_phase(MEASURE),
                Some("done") | None => break,
                Some(_) => {}
            },
        }
    }
    shared.set_phase(DONE);
    let results = group.finish().await;
    writeln!(stdout, "{}", json!({ "results": results }))?;
    stdout.flush()?;
    Ok(())
}
