//! A `viewcast` process on free ports, and a JSON GET without an HTTP client crate.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// This test process's scratch directory (SQL files, logs).
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
    pub async fn start(args: &[&str], log: &Path) -> Proc {
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

    pub fn log(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        read(&self.log) + &read(&self.log.with_extension("out"))
    }

    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
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
