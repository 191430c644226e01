//! Ingest through webhooks: a `viewcast serve` process with the demo's views over a webhook source
//! (`CREATE SOURCE wikirecent FROM WEBHOOK BODY FORMAT JSON`), fed N pre-generated recentchange
//! events as NDJSON, B events a request, from K keep-alive HTTP clients on loopback. Each request
//! is answered once its rows are in a sealed timestamp. events/s = N / (time from the first POST
//! until `SELECT * FROM counter` over `POST /api/sql` reads N).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde_json::{json, Value};
use viewcast_sources::WikipediaGenerator;

use crate::proc::Server;

/// Most events one webhook run pre-generates (they are held in memory as NDJSON).
pub const MAX_EVENTS: u64 = 5_000_000;
/// How long one webhook run may take, whatever the event count.
const MAX_RUN: Duration = Duration::from_secs(180);
/// The server's default request body limit (`GatewayConfig::max_body_bytes`).
const BODY_LIMIT: usize = 1 << 20;
/// Most concurrent HTTP clients.
pub const MAX_CLIENTS: usize = 64;

pub struct Spec {
    pub events: u64,
    pub workers: usize,
    pub tick_ms: u64,
    /// Events per request.
    pub batch: usize,
    /// Concurrent HTTP clients (connections).
    pub clients: usize,
    pub viewcast_bin: std::path::PathBuf,
}

/// The demo's SQL with its load generator replaced by a webhook source of the same name.
pub fn demo_sql() -> String {
    let demo = include_str!("../../viewcast/src/demo.sql");
    demo.lines()
        .map(|l| {
            if l.starts_with("CREATE SOURCE wikirecent ") {
                "CREATE SOURCE wikirecent FROM WEBHOOK BODY FORMAT JSON;"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `events` recentchange events of the load generator (seed 7, as the demo), as NDJSON bodies of
/// `batch` events each; errors if a body passes the server's limit.
pub fn bodies(events: u64, batch: usize) -> anyhow::Result<Vec<Bytes>> {
    anyhow::ensure!(batch >= 1, "a batch holds at least one event");
    let mut generator = WikipediaGenerator::new(7);
    let mut out = Vec::with_capacity((events as usize).div_ceil(batch));
    let mut left = events;
    while left > 0 {
        let n = left.min(batch as u64);
        let mut body = String::with_capacity(n as usize * 1024);
        for _ in 0..n {
            body.push_str(&generator.next_event().to_string());
            body.push('\n');
        }
        anyhow::ensure!(
            body.len() <= BODY_LIMIT,
            "a batch of {batch} events is {} bytes, over the server's {BODY_LIMIT}-byte body limit: use a smaller --batch",
            body.len()
        );
        out.push(Bytes::from(body));
        left -= n;
    }
    Ok(out)
}

/// `SELECT * FROM counter` over the SQL API (0 until the view has a row).
async fn counter(http: &reqwest::Client, addr: std::net::SocketAddr) -> anyhow::Result<i64> {
    let body = json!({ "query": "SELECT * FROM counter" }).to_string();
    let answer = http
        .post(format!("http://{addr}/api/sql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?
        .bytes()
        .await?;
    let r: Value = serde_json::from_slice(&answer).context("the SQL API's answer")?;
    if let Some(e) = r.pointer("/results/0/error") {
        anyhow::bail!("SELECT * FROM counter: {e}");
    }
    Ok(r.pointer("/results/0/rows/0/0").and_then(Value::as_i64).unwrap_or(0))
}

pub async fn run(spec: &Spec) -> anyhow::Result<Value> {
    anyhow::ensure!(spec.events <= MAX_EVENTS, "at most {MAX_EVENTS} events through webhooks");
    anyhow::ensure!((1..=MAX_CLIENTS).contains(&spec.clients), "1 to {MAX_CLIENTS} HTTP clients");
    anyhow::ensure!(
        spec.viewcast_bin.exists(),
        "{} not found: cargo build --release -p viewcast",
        spec.viewcast_bin.display()
    );
    let (events, batch) = (spec.events, spec.batch);
    let bodies = Arc::new(tokio::task::spawn_blocking(move || bodies(events, batch)).await??);
    let body_bytes: usize = bodies.iter().map(Bytes::len).sum();

    let sql = std::env::temp_dir().join(format!("viewcast-bench-webhook-{}.sql", std::process::id()));
    std::fs::write(&sql, demo_sql())?;
    let mut cmd = Command::new(&spec.viewcast_bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--pgwire-listen", "127.0.0.1:0"])
        .args(["--tick-ms", &spec.tick_ms.to_string(), "--workers", &spec.workers.to_string()])
        .arg("--sql")
        .arg(&sql)
        .env("RUST_LOG", "warn");
    let server = Server::spawn("viewcast", cmd, "open ")?;
    let addr = server.addr;
    let http = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(spec.clients)
        .build()
        .context("http client")?;
    anyhow::ensure!(counter(&http, addr).await? == 0, "the webhook source is not empty at the start");

    let url = format!("http://{addr}/api/webhook/wikirecent");
    let next = Arc::new(AtomicUsize::new(0));
    let s0 = server.sample();
    let start = Instant::now();
    let deadline = start + MAX_RUN;
    // Each client takes the next body, POSTs it and waits for the answer (sealed), until none are
    // left. A 503 (the server's backlog is full) is retried after a pause.
    let tasks: Vec<_> = (0..spec.clients)
        .map(|_| {
            let (http, url, bodies, next) = (http.clone(), url.clone(), bodies.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat_us = Vec::new();
                let mut retries = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    loop {
                        anyhow::ensure!(Instant::now() < deadline, "the run passed {MAX_RUN:?}");
                        let t = Instant::now();
                        let r = http
                            .post(&url)
                            .header("content-type", "application/x-ndjson")
                            .body(body.clone())
                            .send()
                            .await?;
                        let status = r.status();
                        let answer = r.bytes().await?;
                        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        anyhow::ensure!(
                            status.is_success(),
                            "webhook POST: {status} {}",
                            String::from_utf8_lossy(&answer)
                        );
                        lat_us.push(t.elapsed().as_micros() as u64);
                        break;
                    }
                }
                anyhow::Ok((lat_us, retries))
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut retries = 0;
    for t in tasks {
        let (l, r) = t.await??;
        lat.extend(l);
        retries += r;
    }
    let posted_secs = start.elapsed().as_secs_f64();
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = counter(&http, addr).await?;
        if seen as u64 >= spec.events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let s1 = server.sample();
    drop(server);
    let _ = std::fs::remove_file(&sql);
    lat.sort_unstable();
    Ok(json!({
        "bench": "ingest",
        "source": "webhook",
        "workers": spec.workers,
        "tick_ms": spec.tick_ms,
        "events": spec.events,
        "batch": spec.batch,
        "http_clients": spec.clients,
        "requests": lat.len(),
        "retries_503": retries,
        "body_bytes_mean": body_bytes / bodies.len().max(1),
        "counted": seen,
        "complete": seen as u64 >= spec.events,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "posted_seconds": (posted_secs * 1000.0).round() / 1000.0,
        "events_per_s": (seen as f64 / secs).round(),
        "request_p50_ms": crate::percentile(&lat, 0.5),
        "request_p99_ms": crate::percentile(&lat, 0.99),
        "server_cpu_pct": (s1.cpu_percent_since(&s0) * 10.0).round() / 10.0,
        "server_rss_mib": s1.rss_kib / 1024,
        "loadavg_1m_end": crate::fanout::loadavg_1m(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_reads_a_webhook_source_and_keeps_its_views() {
        let sql = demo_sql();
        assert!(sql.contains("CREATE SOURCE wikirecent FROM WEBHOOK BODY FORMAT JSON;"));
        assert!(!sql.contains("LOAD GENERATOR"));
        let demo = include_str!("../../viewcast/src/demo.sql");
        assert_eq!(sql.matches("CREATE MATERIALIZED VIEW").count(), demo.matches("CREATE MATERIALIZED VIEW").count());
    }

    #[test]
    fn bodies_hold_every_event_once_as_ndjson_within_the_limit() {
        let b = bodies(1001, 100).unwrap();
        assert_eq!(b.len(), 11);
        let lines: Vec<&str> = b.iter().flat_map(|b| std::str::from_utf8(b).unwrap().lines()).collect();
        assert_eq!(lines.len(), 1001);
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v.get("user").is_some() && v.get("wiki").is_some(), "{l}");
        }
        assert!(bodies(10_000, 10_000).is_err(), "10,000 events pass 1 MiB");
    }
}
