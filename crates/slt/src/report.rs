//! Pass rates per folder and failure classes, as the markdown tables `docs/sqllogictest.md` shows.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::runner::{Counts, FileReport, Mode};

/// Totals of one folder.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub one_shot: Counts,
    pub maintained: Counts,
    pub rechecks: u64,
    pub timed_out: u64,
}

/// The row a file is counted in: its folder relative to `root`, or its own name for files
/// directly in `root` (so `select1.test` and `select2.test` get rows of their own).
pub fn folder_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ => rel.display().to_string(),
    }
}

/// Markdown: a pass-rate table per folder, then failure classes with counts.
pub fn summarize(reports: &[(String, FileReport)]) -> String {
    let mut folders: BTreeMap<&str, Summary> = BTreeMap::new();
    let mut total = Summary::default();
    let mut classes: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let mut wrong_for_engine = Vec::new();
    for (folder, r) in reports {
        for s in [folders.entry(folder).or_default(), &mut total] {
            s.files += 1;
            s.one_shot.add(r.one_shot);
            s.maintained.add(r.maintained);
            s.rechecks += r.rechecks;
            s.timed_out += u64::from(r.timed_out);
        }
        wrong_for_engine.extend(r.wrong_for_engine.iter().cloned());
        for f in &r.failures {
            let mode = match f.mode {
                Mode::OneShot => "one-shot",
                Mode::Maintained => "maintained",
                Mode::Recheck => "re-check",
            };
            *classes.entry((f.class.clone(), mode)).or_default() += 1;
        }
    }
    let mut out = String::new();
    out.push_str("| folder | files | one-shot run | passed | skipped | rate | maintained run | passed | rate | re-checks | timed out |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut row = |name: &str, s: &Summary| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {:.2}% | {} | {} | {:.2}% | {} | {} |",
            s.files,
            s.one_shot.run,
            s.one_shot.passed,
            s.one_shot.skipped,
            s.one_shot.rate(),
            s.maintained.run,
            s.maintained.passed,
            s.maintained.rate(),
            s.rechecks,
            s.timed_out
        );
    };
    for (name, s) in &folders {
        row(name, s);
    }
    row("**total**", &total);
    let mut classes: Vec<_> = classes.into_iter().collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.push_str("\n| failures | mode | class |\n|---:|---|---|\n");
    for ((class, mode), n) in classes {
        let _ = writeln!(out, "| {n} | {mode} | {} |", class.replace('|', "\\|"));
    }
    if !wrong_for_engine.is_empty() {
        out.push_str("\n| skipped as wrong for the engine name | why |\n|---|---|\n");
        for (location, why) in wrong_for_engine {
            let _ = writeln!(out, "| {location} | {why} |");
        }
    }
    out
}
