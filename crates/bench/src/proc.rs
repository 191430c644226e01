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

/// A server process under test; killed when dropped.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

/// The processes of one system under test: one or more serving the clients on one address (with
/// `SO_REUSEPORT` when several), and the upstream they follow, if any (stopped after them).
pub struct Servers {
    pub addr: SocketAddr,
    pub procs: Vec<Server>,
    pub upstream: Option<Server>,
}

impl Servers {
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Server::pid).collect()
    }
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
                return Ok(Server { addr, child });
            }
        }
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
        let rss_kib = kib_field(&status, "VmRSS:");
        ProcSample { at: Some(Instant::now()), cpu_ticks, rss_kib }
    }

    /// Several processes taken together (at the latest instant of theirs).
    pub fn sum(samples: &[ProcSample]) -> ProcSample {
        ProcSample {
            at: samples.iter().filter_map(|s| s.at).max(),
            cpu_ticks: samples.iter().map(|s| s.cpu_ticks).sum(),
            rss_kib: samples.iter().map(|s| s.rss_kib).sum(),
        }
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

/// Open file descriptors of a process (its sockets, mostly).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The kernel's side of the sockets, machine-wide (both ends of every loopback connection, and
/// whatever else runs): TCP sockets in use and their buffer memory (`/proc/net/sockstat`), and
/// unreclaimable slab memory (`/proc/meminfo`), where socket structures live.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelSockets {
    pub tcp_inuse: u64,
    pub tcp_mem_kib: u64,
    pub slab_unreclaim_kib: u64,
}

impl KernelSockets {
    pub fn now() -> KernelSockets {
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        let tcp: Vec<&str> = sockstat
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let field = |name: &str| {
            tcp.iter().position(|f| *f == name).and_then(|i| tcp.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
        };
        let page_kib = 4; // sockstat's `mem` counts pages
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let slab_unreclaim_kib = kib_field(&meminfo, "SUnreclaim:");
        KernelSockets {
            tcp_inuse: field("inuse").unwrap_or(0),
            tcp_mem_kib: field("mem").unwrap_or(0) * page_kib,
            slab_unreclaim_kib,
        }
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

/// The number after `name` in a `/proc` listing of `Name:   123 kB` lines (0 when absent).
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
