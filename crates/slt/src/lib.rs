//! A sqllogictest harness for viewcast: every query is checked one-shot and as a maintained view.
//!
//! Owns: reading `.test` files (with the `sqllogictest` crate's parser), printing results the way
//! SQLite's harness prints them ([`format`]), running a file against a fresh in-process
//! coordinator ([`runner`]) and summarising pass rates per folder ([`report`]).
//! Never touches: SQL semantics (they live in `sql` and `plan`); it only observes them.
//!
//! Engine name: `skipif`/`onlyif` lines match `postgresql` (see `docs/sqllogictest.md`).

pub mod format;
pub mod report;
pub mod runner;

pub use report::{folder_of, summarize, Summary};
pub use runner::{run_file, Counts, Failure, FileReport, Mode, Options};

use std::path::{Path, PathBuf};

/// Every `.test`/`.slt` file under `path` (or `path` itself), sorted.
pub fn collect_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        entries.sort();
        for e in entries {
            out.extend(collect_files(&e));
        }
    } else if path.extension().is_some_and(|e| e == "test" || e == "slt") {
        out.push(path.to_path_buf());
    }
    out
}
