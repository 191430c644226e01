//! Resident memory one load-generator event costs when kept as a `data jsonb` row (as the engine
//! keeps a source's history), with the `viewcast` binary's allocator: RSS growth over `events` rows.
//!
//! `cargo run --release -p viewcast-sources --example jsonb_bytes [events]`

use viewcast_sources::{jsonb_row, WikipediaGenerator};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This process's resident set in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    // Builds the shared editor table before measuring.
    WikipediaGenerator::new(0).next_event();
    let mut generator = WikipediaGenerator::new(1);
    let mut rows = Vec::with_capacity(n);
    let mut text = 0;
    let before = rss();
    for _ in 0..n {
        let e = generator.next_event();
        text += e.json().text_len();
        rows.push(jsonb_row(e));
    }
    let after = rss();
    println!(
        "{n} events kept as jsonb rows: {:.0} bytes of RSS per event; their JSON text is {:.0} bytes per event",
        (after - before) as f64 / n as f64,
        text as f64 / n as f64
    );
    drop(rows);
}
