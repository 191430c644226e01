//! Measures how fast the Wikipedia load generator makes events, three ways:
//! bare `jsonb` documents, `data jsonb` rows, and rows through the threaded runner and a channel.
//!
//! `cargo run --release -p viewcast-sources --example loadgen_speed [events]`

use std::time::Instant;

use viewcast_sources::{jsonb_row, EventClock, LoadGenConfig, LoadGenerator, SseParser, WikipediaGenerator};

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);

    // Builds the shared editor table outside the timed loops.
    WikipediaGenerator::new(0).next_event();

    let mut generator = WikipediaGenerator::new(1);
    let clock = start();
    let mut bytes = 0;
    for _ in 0..n {
        let e = generator.next_event();
        bytes += e.json().text_len();
    }
    report("documents (virtual clock)", n, clock, bytes);

    let mut generator = WikipediaGenerator::new(1).with_clock(EventClock::Wall);
    let clock = start();
    let mut rows = 0;
    for _ in 0..n {
        rows += jsonb_row(generator.next_event()).len();
    }
    report("jsonb rows (wall clock)", rows as u64, clock, 0);

    let (tx, rx) = crossbeam_channel::bounded(64);
    let config = LoadGenConfig { seed: 1, max_events: Some(n), ..LoadGenConfig::default() };
    // Wall time only: the generator runs on another thread.
    let clock = Clock { wall: Instant::now(), cpu: None };
    let handle = LoadGenerator::spawn(config, tx).expect("spawn");
    let received: usize = rx.iter().map(|b| b.len()).sum();
    let stats = handle.stats().snapshot();
    handle.join().expect("generator");
    report("runner -> channel", received as u64, clock, stats.bytes_in as usize);

    // The SSE parser on the same events, framed as the real stream frames them.
    let mut wire = Vec::new();
    let events = n.min(200_000);
    for (i, e) in WikipediaGenerator::new(2).take(events as usize).enumerate() {
        wire.extend_from_slice(format!("event: message\nid: [{{\"offset\":{i}}}]\ndata: {e}\n\n").as_bytes());
    }
    let clock = start();
    let mut parser = SseParser::new();
    let mut parsed = 0u64;
    for chunk in wire.chunks(16 * 1024) {
        parser.feed(chunk, &mut |e| parsed += e.is_ok() as u64);
    }
    report("SSE parse (framing only)", parsed, clock, wire.len());
}

/// Nanoseconds this thread has run on a CPU (Linux), so a busy machine doesn't skew the rate.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

struct Clock {
    wall: Instant,
    cpu: Option<u64>,
}

fn start() -> Clock {
    Clock { wall: Instant::now(), cpu: thread_cpu_ns() }
}

fn report(what: &str, n: u64, clock: Clock, bytes: usize) {
    let wall = clock.wall.elapsed().as_secs_f64();
    let cpu = clock.cpu.zip(thread_cpu_ns()).map(|(a, b)| (b - a) as f64 / 1e9);
    let mut line = format!("{what:>26}: {n} events, wall {wall:.2} s = {:>9.0} events/s", n as f64 / wall);
    if let Some(cpu) = cpu {
        line += &format!(", this thread's CPU {cpu:.2} s = {:>9.0} events/s per core", n as f64 / cpu);
    }
    if bytes > 0 {
        line += &format!(", {:.0} bytes/event", bytes as f64 / n as f64);
    }
    println!("{line}");
}
