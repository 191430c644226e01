//! `viewcast-bench`: measurements behind BENCHMARKS.md. Every run is bounded in time and count and
//! talks to loopback only.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use viewcast_coord::{CoordConfig, Coordinator};

#[derive(Parser)]
#[command(name = "viewcast-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Latency from a tick closing to its sealed update leaving the engine, the demo's four views
    /// fed by the load generator at a fixed rate.
    TickLatency {
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    match Cli::parse().command {
        Command::TickLatency { rate, seconds, tick_ms, workers } => {
            let coord = Coordinator::start(CoordConfig { workers, tick_ms, ..CoordConfig::default() })
                .context("starting the engine")?;
            let sql = include_str!("../../viewcast/src/demo.sql")
                .replace("EVENTS PER SECOND 200", &format!("EVENTS PER SECOND {rate}"));
            for r in coord.execute(&sql).await {
                if let viewcast_coord::ExecuteResult::Error(e) = r {
                    anyhow::bail!("setup failed: {e}");
                }
            }
            // Warm up, then measure.
            tokio::time::sleep(Duration::from_secs(2)).await;
            coord.take_tick_latencies();
            let start_count = counter(&coord).await;
            let start = Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let end_count = counter(&coord).await;
            let elapsed = start.elapsed().as_secs_f64();
            let mut lat = coord.take_tick_latencies();
            lat.sort_unstable();
            let out = serde_json::json!({
                "bench": "tick-latency",
                "rate_target": rate,
                "events_per_s_measured": ((end_count - start_count) as f64 / elapsed).round(),
                "tick_ms": tick_ms,
                "workers": workers,
                "ticks": lat.len(),
                "p50_ms": percentile(&lat, 0.50),
                "p99_ms": percentile(&lat, 0.99),
                "max_ms": percentile(&lat, 1.0),
            });
            println!("{out}");
        }
    }
    Ok(())
}

async fn counter(coord: &Coordinator) -> i64 {
    match coord.query("SELECT * FROM counter").await {
        Ok((_, rows)) => match rows.first().map(|r| r.get(0)) {
            Some(viewcast_repr::Datum::Int(n)) => *n,
            _ => 0,
        },
        Err(_) => 0,
    }
}
