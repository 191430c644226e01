//! How fast the SSE client ingests: a local server on port 0 streams N recentchange events (the
//! fixture's, with distinct ids) as fast as the socket takes them; the client parses them into
//! `data jsonb` rows. Prints events per second received.
//!
//! `cargo run --release -p viewcast-sources --example sse_throughput -- [N]`

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use viewcast_sources::{SseConfig, SseSource};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURE: &str = include_str!("../tests/fixtures/recentchange-sample.sse");

fn main() {
    let total: u64 = std::env::args().nth(1).map(|n| n.parse().unwrap()).unwrap_or(500_000);
    let templates: Vec<serde_json::Value> =
        FIXTURE.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    // Pre-rendered, so the server costs little next to the client.
    let mut body = Vec::new();
    for i in 0..total {
        let mut e = templates[(i % templates.len() as u64) as usize].clone();
        e["meta"]["offset"] = i.into();
        e["user"] = format!("user-{}", i % 1000).into();
        body.extend(format!("event: message\nid: {i}\ndata: {}\n\n", serde_json::to_string(&e).unwrap()).into_bytes());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let body_len = body.len();
    runtime.spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        for chunk in body.chunks(64 * 1024) {
            socket.write_all(chunk).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
    let (tx, rx) = crossbeam_channel::bounded(64);
    let start = Instant::now();
    let handle = SseSource::spawn(SseConfig::new(format!("http://{addr}/")), tx).unwrap();
    let mut rows = 0u64;
    while rows < total {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(batch) => rows += batch.len() as u64,
            Err(_) => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(handle);
    println!(
        "{rows} of {total} events in {secs:.2} s: {:.0} events/s, {:.1} MB/s on the wire",
        rows as f64 / secs,
        body_len as f64 / secs / 1e6
    );
}
