//! `viewcast-slt <file-or-folder>...`: runs sqllogictest files against viewcast and prints pass
//! rates per folder (markdown). Flags: `--engine NAME` (default `postgresql`), `--one-shot-only`,
//! `--timeout-secs N` (per file, default 600), `--failures FILE` (one line per failed record).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use viewcast_slt::{collect_files, folder_of, run_file, summarize, Options};

fn main() {
    let mut opts = Options::default();
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut failures_path: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--engine" => opts.engine = args.next().expect("--engine NAME"),
            "--one-shot-only" => opts.maintained = false,
            "--timeout-secs" => {
                opts.file_timeout =
                    Duration::from_secs(args.next().and_then(|s| s.parse().ok()).expect("--timeout-secs N"))
            }
            "--failures" => failures_path = Some(args.next().expect("--failures FILE").into()),
            _ => roots.push(a.into()),
        }
    }
    if roots.is_empty() {
        eprintln!("usage: viewcast-slt [--engine NAME] [--one-shot-only] [--timeout-secs N] [--failures FILE] <file-or-folder>...");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mut failures = failures_path.map(|p| std::fs::File::create(p).expect("failures file"));
    let mut reports = Vec::new();
    for root in &roots {
        let base = if root.is_dir() { root.clone() } else { root.parent().map(PathBuf::from).unwrap_or_default() };
        for file in collect_files(root) {
            let report = runtime.block_on(run_file(&file, &opts));
            eprintln!(
                "{}: one-shot {}/{} (skipped {}), maintained {}/{}, re-checks {}{} in {:.1?}",
                file.display(),
                report.one_shot.passed,
                report.one_shot.run,
                report.one_shot.skipped,
                report.maintained.passed,
                report.maintained.run,
                report.rechecks,
                if report.timed_out { ", TIMED OUT" } else { "" },
                report.elapsed
            );
            if let Some(f) = failures.as_mut() {
                for fail in &report.failures {
                    let sql = fail.sql.replace('\n', " ");
                    let _ = writeln!(f, "{}\t{:?}\t{}\t{}\t{}", fail.location, fail.mode, fail.class, sql, fail.detail);
                }
            }
            reports.push((folder_of(&base, &file), report));
        }
    }
    println!("{}", summarize(&reports));
}
