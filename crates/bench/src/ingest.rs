//! Ingest throughput: the demo's four views fed by the load generator as fast as it can go, in
//! process (no HTTP): events/s = N / (time from `CREATE SOURCE` until `SELECT * FROM counter` = N).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult};

use crate::proc::ProcSample;

/// How long one ingest run may take, whatever the event count.
const MAX_RUN: Duration = Duration::from_secs(180);
pub const MAX_EVENTS: u64 = 50_000_000;

pub async fn run(events: u64, workers: usize, tick_ms: u64) -> anyhow::Result<Value> {
    anyhow::ensure!(events <= MAX_EVENTS, "at most {MAX_EVENTS} events");
    let coord = Coordinator::start(CoordConfig { workers, tick_ms, ..CoordConfig::default() })?;
    let sql = include_str!("../../viewcast/src/demo.sql")
        .replace("EVENTS PER SECOND 200, SEED 7", &format!("EVENTS PER SECOND 0, SEED 7, MAX EVENTS {events}"));
    let me0 = ProcSample::of(std::process::id());
    let start = Instant::now();
    for r in coord.execute(&sql).await {
        if let ExecuteResult::Error(e) = r {
            anyhow::bail!("setup failed: {e}");
        }
    }
    let mut seen = 0;
    while start.elapsed() < MAX_RUN {
        seen = crate::counter(&coord).await;
        if seen as u64 >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let me1 = ProcSample::of(std::process::id());
    let lat = {
        let mut l = coord.take_tick_latencies();
        l.sort_unstable();
        l
    };
    Ok(json!({
        "bench": "ingest",
        "source": "loadgen",
        "workers": workers,
        "tick_ms": tick_ms,
        "events": events,
        "counted": seen,
        "complete": seen as u64 >= events,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "events_per_s": (seen as f64 / secs).round(),
        "cpu_pct": (me1.cpu_percent_since(&me0) * 10.0).round() / 10.0,
        "rss_mib": me1.rss_kib / 1024,
        "tick_to_sealed_p50_ms": crate::percentile(&lat, 0.5),
        "tick_to_sealed_p99_ms": crate::percentile(&lat, 0.99),
        "loadavg_1m_end": crate::fanout::loadavg_1m(),
    }))
}
