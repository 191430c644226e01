//! Decoding throughput of the file source alone (no engine): reads FILE once in FORMAT JSON (or
//! `text`/`regex` as the second argument) and reports events per second.
//!
//! `cargo run --release -p viewcast-sources --example file_throughput -- FILE [json|text|regex]`

use std::time::Instant;

use viewcast_sources::{FileConfig, FileSource, RecordFormat};

// As the viewcast binary: rows are allocated on the source's thread and freed on another.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: file_throughput FILE [json|text|regex]");
    let format = match args.next().as_deref() {
        None | Some("json") => RecordFormat::Json,
        Some("text") => RecordFormat::Text,
        Some("regex") => RecordFormat::regex("^data: (?P<data>.*)").unwrap(),
        Some(other) => panic!("unknown format {other}"),
    };
    let (tx, rx) = crossbeam_channel::bounded(64);
    let start = Instant::now();
    let handle = FileSource::spawn(FileConfig::new(path, format), tx).unwrap();
    let mut rows = 0usize;
    for batch in rx {
        rows += batch.len();
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = handle.stats().snapshot();
    handle.join().unwrap();
    println!(
        "{rows} rows in {secs:.2} s: {:.0} events/s, {:.1} MB/s ({} errors, {} skipped)",
        rows as f64 / secs,
        stats.bytes_in as f64 / secs / 1e6,
        stats.errors,
        stats.skipped
    );
}
