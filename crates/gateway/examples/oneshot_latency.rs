//! Latency of a one-shot `SELECT * FROM top10` over a maintained 10-row view, two ways: through
//! `Coordinator::query` (parse, plan, read the hub's contents, interpret) and through
//! `POST /api/sql` on a real server bound to port 0 (one keep-alive HTTP client, JSON encoding
//! included). Prints one JSON line per path with p50/p99/max in microseconds (BENCHMARKS.md).
//!
//! `cargo run --release -p viewcast-gateway --example oneshot_latency -- [RUNS]` (default 5000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};
use viewcast_gateway::GatewayConfig;

/// Users the `edits` table spreads its rows over, and rows inserted.
const USERS: usize = 500;
const ROWS: usize = 5000;
/// The whole run's bound.
const MAX_RUN: Duration = Duration::from_secs(300);

const SETUP: &str = "CREATE TABLE edits (usr text, n integer);
CREATE VIEW useredits AS SELECT usr, count(*) AS edits FROM edits GROUP BY usr;
CREATE VIEW top10 AS SELECT usr, edits FROM useredits ORDER BY edits DESC, usr LIMIT 10;";

const QUERY: &str = "SELECT * FROM top10";

/// Errors as text: an example needs no error type of its own.
type Outcome = Result<(), String>;

fn percentiles(name: &str, mut us: Vec<u64>) {
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "path": name, "runs": us.len(), "p50_us": at(0.5), "p90_us": at(0.9), "p99_us": at(0.99),
            "max_us": us[us.len() - 1],
        })
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Outcome {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    tokio::time::timeout(MAX_RUN, run(runs)).await.map_err(|_| "timed out".to_string())?
}

async fn run(runs: usize) -> Outcome {
    let coord =
        Arc::new(Coordinator::start(CoordConfig { tick_ms: 5, ..CoordConfig::default() }).map_err(|e| e.to_string())?);
    let values: Vec<String> = (0..ROWS).map(|i| format!("('u{}', {i})", (i * i) % USERS)).collect();
    let setup = format!("{SETUP}\nINSERT INTO edits VALUES {};", values.join(","));
    for r in coord.execute(&setup).await {
        if let ExecuteResult::Error(e) = r {
            return Err(format!("setup: {e}"));
        }
    }
    let (_, rows) = coord.query(QUERY).await.map_err(|e| e.to_string())?;
    if rows.len() != 10 {
        return Err(format!("top10 has {} rows", rows.len()));
    }

    // Through the coordinator.
    for _ in 0..runs / 10 {
        coord.query(QUERY).await.map_err(|e| e.to_string())?;
    }
    let mut direct = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let (_, rows) = coord.query(QUERY).await.map_err(|e| e.to_string())?;
        direct.push(start.elapsed().as_micros() as u64);
        assert_eq!(rows.len(), 10);
    }
    percentiles("Coordinator::query", direct);

    // Through HTTP.
    let listener = viewcast_gateway::bind("127.0.0.1:0".parse().expect("address"), Default::default())
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(viewcast_gateway::serve(listener, coord.clone(), GatewayConfig::default(), async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/sql");
    let body = serde_json::json!({ "query": QUERY }).to_string();
    let mut http = Vec::with_capacity(runs);
    for i in 0..runs + runs / 10 {
        let start = Instant::now();
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let elapsed = start.elapsed().as_micros() as u64;
        if i == 0 {
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let n = v["results"][0]["rows"].as_array().map(Vec::len);
            if n != Some(10) {
                return Err(format!("POST /api/sql answered {v}"));
            }
        }
        if i >= runs / 10 {
            http.push(elapsed);
        }
    }
    percentiles("POST /api/sql", http);
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}
