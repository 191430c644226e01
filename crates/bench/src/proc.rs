//! The servers under test, each a child process on a free loopback port, and what the kernel says
//! about them (/proc): CPU time and resident memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where `bench/` (the baseline servers) lives: beside this crate's workspace.
pub fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench")
}

/// A server under test; killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    /// A process this one needs (the upstream of a gateway), stopped after it.
    companion: Option<Box<Server>>,
}

impl Server {
    /// Starts `cmd`, waits (at most 60 s) for a stdout line containing `marker` followed by the
    /// address, and keeps draining its output so it never blocks on a full pipe.
    pub fn spawn(name: &str, mut cmd: Command, marker: &str) -> anyhow::Result<Server> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::Builder::new().name(format!("{name}-stdout")).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })?;
        let err_name = name.to_string();
        std::thread::Builder::new().name(format!("{name}-stderr")).spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("panicked") || line.contains("Error") || line.contains("ERROR") {
                    eprintln!("[{err_name}] {line}");
                }
            }
        })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    bail!("{name} did not report its address within 60 s");
                }
            };
            if let Some(rest) = line.split(marker).nth(1) {
                let addr = rest.trim().trim_start_matches("http://").trim_end_matches('/');
                let addr: SocketAddr = addr.parse().with_context(|| format!("{name} printed {line:?}"))?;
                // Keep draining stdout in the background.
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return Ok(Server { addr, child, companion: None });
            }
        }
    }

    /// Keeps `upstream` running as long as this server.
    pub fn with_companion(mut self, upstream: Server) -> Server {
        self.companion = Some(Box::new(upstream));
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sample(&self) -> ProcSample {
        ProcSample::of(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.companion.take());
    }
}

/// CPU time and resident memory of a process at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub at: Option<Instant>,
    /// utime + stime, in clock ticks (USER_HZ, 100 on Linux).
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

const USER_HZ: f64 = 100.0;

impl ProcSample {
    pub fn of(pid: u32) -> ProcSample {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let cpu_ticks = ticks(11) + ticks(12);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        ProcSample { at: Some(Instant::now()), cpu_ticks, rss_kib }
    }

    /// CPU use between two samples, in percent of one core.
    pub fn cpu_percent_since(&self, earlier: &ProcSample) -> f64 {
        let (Some(a), Some(b)) = (earlier.at, self.at) else { return f64::NAN };
        let secs = b.duration_since(a).as_secs_f64();
        if secs <= 0.0 {
            return f64::NAN;
        }
        (self.cpu_ticks.saturating_sub(earlier.cpu_ticks)) as f64 / USER_HZ / secs * 100.0
    }
}

/// The open-file limit of this process (the servers inherit it).
pub fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Nanoseconds each thread of this process has run on a CPU and waited runnable in a run queue
/// (`/proc/self/task/*/schedstat`), summed per thread name.
pub fn thread_sched() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
        let sched = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let mut f = sched.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
        let (run, wait) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        let e = out.entry(name).or_insert((0, 0));
        e.0 += run;
        e.1 += wait;
    }
    out
}
