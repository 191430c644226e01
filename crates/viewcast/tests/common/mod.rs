//! What the process-level tests share: `viewcast` processes on free ports (an upstream `serve`, a
//! `gateway`), Postgres, WebSocket and JSON GET clients of them, a writer changing the upstream,
//! waiting helpers, and a certificate authority for TLS.

#![allow(dead_code)] // Each test binary uses its own part.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

pub type Contents = BTreeMap<String, i64>;

pub const UPSTREAM_SQL: &str = "CREATE TABLE t (k text, n bigint);
INSERT INTO t VALUES ('k0', 1), ('k1', 2);
CREATE VIEW totals AS SELECT k, sum(n) AS total, count(*) AS c FROM t GROUP BY k;";

/// A local view over the upstream view (runs on the gateway).
pub const GATEWAY_SQL: &str = "CREATE VIEW big AS SELECT k, total FROM totals WHERE total > 10;";

/// This test process's scratch directory (SQL files, logs, certificates).
pub fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("viewcast-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A viewcast process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub http: SocketAddr,
    pub pg: SocketAddr,
    pub log: PathBuf,
}

impl Proc {
    pub async fn start(args: &[impl AsRef<std::ffi::OsStr>], log: &Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_viewcast"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut http, mut pg) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.is_none() || pg.is_none() {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no addresses printed; log: {}", std::fs::read_to_string(log).unwrap()))
                .unwrap()
                .unwrap_or_else(|| panic!("process ended: {}", std::fs::read_to_string(log).unwrap()));
            if let Some(a) = line.strip_prefix("viewcast is running: open http://") {
                http = Some(a.trim_end_matches('/').parse().unwrap());
            }
            if let Some(a) = line.strip_prefix("pgwire listening on ") {
                pg = Some(a.parse().unwrap());
            }
        }
        // The binary logs to stdout: keep draining it (a closed pipe would fail its writes).
        let mut copy = std::fs::File::create(log.with_extension("out")).unwrap();
        tokio::spawn(async move {
            use std::io::Write as _;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(copy, "{line}");
            }
        });
        Proc { child, http: http.unwrap(), pg: pg.unwrap(), log: log.to_path_buf() }
    }

    pub async fn upstream(pg_port: u16, name: &str) -> Proc {
        Proc::upstream_with(pg_port, name, &[]).await
    }

    /// An upstream `serve` with `extra` flags (e.g. `--pg-tls-cert`).
    pub async fn upstream_with(pg_port: u16, name: &str, extra: &[&str]) -> Proc {
        let sql = dir().join("upstream.sql");
        std::fs::write(&sql, UPSTREAM_SQL).unwrap();
        let pg = format!("127.0.0.1:{pg_port}");
        let mut args = vec!["serve", "--sql", sql.to_str().unwrap(), "--listen", "127.0.0.1:0", "--pgwire-listen", &pg];
        args.extend(["--tick-ms", "20"]);
        args.extend(extra);
        Proc::start(&args, &dir().join(format!("{name}.log"))).await
    }

    pub async fn gateway(upstream: SocketAddr, name: &str) -> Proc {
        let url = format!("postgres://materialize@{upstream}/materialize");
        Proc::start(&gateway_args(&url), &dir().join(format!("{name}.log"))).await
    }

    pub fn log(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        read(&self.log) + &read(&self.log.with_extension("out"))
    }

    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// The flags of a gateway following `totals` at `url`, with the local view of [`GATEWAY_SQL`].
pub fn gateway_args(url: &str) -> Vec<String> {
    let sql = dir().join("gateway.sql");
    std::fs::write(&sql, GATEWAY_SQL).unwrap();
    let sql = sql.to_str().unwrap();
    let args = ["gateway", "--upstream", url, "--view", "totals", "--sql", sql, "--listen", "127.0.0.1:0"];
    args.iter().chain(&["--pgwire-listen", "127.0.0.1:0", "--tick-ms", "20"]).map(|a| a.to_string()).collect()
}

pub async fn pg(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={} port={} user=materialize", addr.ip(), addr.port()),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

pub fn key(k: &str, total: i64, c: i64) -> String {
    json!([k, total, c]).to_string()
}

/// The upstream's `totals` as `SELECT` returns it now.
pub async fn upstream_contents(addr: SocketAddr) -> Contents {
    let client = pg(addr).await.unwrap();
    let mut m = Contents::new();
    for msg in client.simple_query("SELECT k, total, c FROM totals").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
            let num = |i| r.get(i).unwrap().parse::<i64>().unwrap();
            *m.entry(key(r.get(0).unwrap(), num(1), num(2))).or_default() += 1;
        }
    }
    m
}

/// A WebSocket client of one gateway view, keeping its replica and every state it was sent.
#[derive(Default)]
pub struct Client {
    pub state: Contents,
    /// (ts, contents) after each snapshot or update message.
    pub seen: Vec<(u64, Contents)>,
    /// Every message's ts, in arrival order.
    pub ts_order: Vec<u64>,
    pub snapshots: usize,
    pub resyncs: usize,
}

impl Client {
    pub fn start(http: SocketAddr, view: &str) -> Arc<Mutex<Client>> {
        let client = Arc::new(Mutex::new(Client::default()));
        let c = client.clone();
        let url = format!("ws://{http}/api/v1/stream/{view}");
        tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            while let Some(Ok(msg)) = ws.next().await {
                let tokio_tungstenite::tungstenite::Message::Text(text) = msg else { continue };
                let m: Value = serde_json::from_str(&text).unwrap();
                let mut c = c.lock().unwrap();
                let ts = m["ts"].as_u64();
                match m["type"].as_str().unwrap() {
                    "snapshot" => {
                        c.snapshots += 1;
                        c.state.clear();
                        c.apply(&m["rows"]);
                    }
                    "update" => c.apply(&m["rows"]),
                    "resync" => c.resyncs += 1,
                    _ => {}
                }
                if let Some(ts) = ts {
                    c.ts_order.push(ts);
                    if m["type"] != "progress" {
                        let state = c.state.clone();
                        c.seen.push((ts, state));
                    }
                }
            }
        });
        client
    }

    pub fn apply(&mut self, rows: &Value) {
        for r in rows.as_array().unwrap() {
            let k = r["row"].to_string();
            let e = self.state.entry(k.clone()).or_default();
            *e += r["diff"].as_i64().unwrap();
            if *e == 0 {
                self.state.remove(&k);
            }
        }
    }
}

/// Inserts and deletes random rows of the upstream's table until stopped, reconnecting when the
/// upstream goes away.
pub fn start_writer(addr: Arc<Mutex<SocketAddr>>) -> Writer {
    start_writer_every(addr, Duration::from_millis(7))
}

/// A writer that changes the upstream's table about every `every` (plus the write's own time).
pub fn start_writer_every(addr: Arc<Mutex<SocketAddr>>, every: Duration) -> Writer {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut live: Vec<(String, i64)> = Vec::new();
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(every).await;
            if client.is_none() {
                let a = *addr.lock().unwrap();
                client = pg(a).await.ok();
                live.clear();
                continue;
            }
            let sql = {
                let mut rng = rand::thread_rng();
                if !live.is_empty() && rng.gen_bool(0.3) {
                    let (k, n) = live.swap_remove(rng.gen_range(0..live.len()));
                    format!("DELETE FROM t WHERE k = '{k}' AND n = {n}")
                } else {
                    let (k, n) = (format!("k{}", rng.gen_range(0..6)), rng.gen_range(1..10));
                    live.push((k.clone(), n));
                    format!("INSERT INTO t VALUES ('{k}', {n})")
                }
            };
            if client.as_ref().unwrap().simple_query(&sql).await.is_err() {
                client = None;
            }
        }
    });
    Writer { stop, task }
}

pub struct Writer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Stops writing and returns once the last write is done.
    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap();
    }
}

/// A TCP proxy whose connections can be cut, to lose the upstream without restarting it.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the gateway client to equal the upstream's current contents (writer stopped).
pub async fn settle(client: &Arc<Mutex<Client>>, upstream: SocketAddr) -> Contents {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let expected = upstream_contents(upstream).await;
        if client.lock().unwrap().state == expected {
            return expected;
        }
        assert!(Instant::now() < deadline, "gateway client never matched the upstream: {expected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a `viewcast` process expected to stop by itself (within 60 s): its exit status and
/// everything it printed.
pub async fn run_to_exit(args: &[impl AsRef<std::ffi::OsStr>], name: &str) -> (std::process::ExitStatus, String) {
    let log = dir().join(format!("{name}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_viewcast"))
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status =
        tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("the process to stop").unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&log) + &read(&log.with_extension("err")))
}

/// A certificate authority made for one test; its certificate and those it signs are PEM files
/// under [`dir`].
pub struct TestCa {
    name: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA's certificate: what clients' `sslrootcert` names.
    pub cert: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("viewcast test CA {name}"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let cert = dir().join(format!("{name}-ca.pem"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        TestCa { name: name.to_string(), issuer, cert: cert.to_str().unwrap().to_string() }
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA: the paths
    /// of its certificate and key.
    pub fn server_cert(&self, names: &[&str]) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let base = dir().join(format!("{}-{}", self.name, names[0]));
        let (cert_path, key_path) = (base.with_extension("crt"), base.with_extension("key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path.to_str().unwrap().to_string(), key_path.to_str().unwrap().to_string())
    }
}

/// GET over HTTP/1.0 and parse the body as JSON (the tests have no HTTP client crate).
pub async fn http_get_json(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}
