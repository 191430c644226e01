//! Runs one sqllogictest file against a fresh in-process [`Coordinator`], each query two ways.
//!
//! * **one-shot**: the query as a `SELECT` (answered by the reference interpreter over the hub's
//!   maintained table contents), compared with the expected results;
//! * **maintained**: `CREATE VIEW __slt_N AS <query>` when the record is seen; the view's contents
//!   (computed by the dataflow engine) are compared with the expected results, and after every
//!   later successful write (`INSERT`/`UPDATE`/`DELETE`) of the file they are compared with a fresh
//!   one-shot evaluation of the query.
//!
//! Views are only kept while a later write could change them, and at most `max_live_views` at once
//! (the oldest is dropped first); every `DROP` statement of the file first drops the live views,
//! since a view would otherwise block `DROP TABLE` of what it reads. Consecutive queries with no
//! statement between them create their views concurrently: they share one timestamp, so the
//! coordinator seals them together instead of one tick each.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqllogictest::{Condition, DefaultColumnType, QueryExpect, Record, SortMode, StatementExpect};
use viewcast_coord::{CoordConfig, Coordinator, ExecuteResult, StatementError};
use viewcast_repr::Row;

use crate::format::{describe, flatten, format_rows, matches_expected};

/// How files are run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The engine name `skipif`/`onlyif` lines are matched against.
    pub engine: String,
    /// Also run every query as a maintained view.
    pub maintained: bool,
    /// Views kept alive for re-checking after writes, at most.
    pub max_live_views: usize,
    /// Queries whose views are created together, at most.
    pub batch: usize,
    pub tick_ms: u64,
    /// A file still running after this long is abandoned; its remaining records count as failed.
    pub file_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engine: "postgresql".into(),
            maintained: true,
            max_live_views: 64,
            batch: 32,
            tick_ms: 5,
            file_timeout: Duration::from_secs(600),
        }
    }
}

/// Records run, passed and skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub run: u64,
    pub passed: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.run += other.run;
        self.passed += other.passed;
        self.skipped += other.skipped;
    }

    /// Passed over run, in percent (100 when nothing ran).
    pub fn rate(&self) -> f64 {
        if self.run == 0 {
            100.0
        } else {
            100.0 * self.passed as f64 / self.run as f64
        }
    }
}

/// Which way a record failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    OneShot,
    /// The view's contents at creation.
    Maintained,
    /// The view's contents after a later write.
    Recheck,
}

#[derive(Clone, Debug)]
pub struct Failure {
    /// `file:line` of the record.
    pub location: String,
    pub mode: Mode,
    pub sql: String,
    /// A short grouping key: the error message with literals blanked, or `wrong result`.
    pub class: String,
    pub detail: String,
}

/// The outcome of one file.
#[derive(Clone, Debug, Default)]
pub struct FileReport {
    pub path: PathBuf,
    /// Statements and queries, run the one-shot way.
    pub one_shot: Counts,
    /// Queries, run as maintained views (failing at creation or at any re-check counts as failed).
    pub maintained: Counts,
    /// Comparisons of a live view with a one-shot evaluation after a write.
    pub rechecks: u64,
    pub failures: Vec<Failure>,
    /// Queries counted as skipped because their expected results are wrong for the engine name
    /// (`file:line`, why), though the file does not mark them.
    pub wrong_for_engine: Vec<(String, &'static str)>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Runs `path` with a fresh coordinator. Never panics on a bad file: problems become failures.
pub async fn run_file(path: &Path, opts: &Options) -> FileReport {
    let started = Instant::now();
    let mut report = FileReport { path: path.to_path_buf(), ..FileReport::default() };
    let records = match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|text| {
        sqllogictest::parse_with_name::<DefaultColumnType>(&strip_control_comments(&text), path.display().to_string())
            .map_err(|e| e.to_string())
    }) {
        Ok(r) => r,
        Err(e) => {
            report.failures.push(Failure {
                location: path.display().to_string(),
                mode: Mode::OneShot,
                sql: String::new(),
                class: "slt parse error".into(),
                detail: e.to_string(),
            });
            report.one_shot.run += 1;
            return report;
        }
    };
    let coord = match Coordinator::start(CoordConfig { tick_ms: opts.tick_ms, ..CoordConfig::default() }) {
        Ok(c) => c,
        Err(e) => {
            report.failures.push(Failure {
                location: path.display().to_string(),
                mode: Mode::OneShot,
                sql: String::new(),
                class: "coordinator did not start".into(),
                detail: e.to_string(),
            });
            return report;
        }
    };
    let total_runnable = records.iter().filter(|r| runnable(r, &opts.engine)).count() as u64;
    let mut file =
        FileRun { coord: &coord, opts, report: &mut report, hash_threshold: 0, live: VecDeque::new(), next_view: 0 };
    let timed_out = tokio::time::timeout(opts.file_timeout, file.run(&records)).await.is_err();
    if timed_out {
        // Whatever did not finish counts as run and failed, so a slow file cannot raise a pass rate.
        let done = report.one_shot.run + report.one_shot.skipped;
        report.one_shot.run += total_runnable.saturating_sub(done);
        report.timed_out = true;
        report.failures.push(Failure {
            location: path.display().to_string(),
            mode: Mode::OneShot,
            sql: String::new(),
            class: "file timed out".into(),
            detail: format!("after {:?}", opts.file_timeout),
        });
    }
    drop(coord);
    report.elapsed = started.elapsed();
    report
}

/// SQLite's harness allows a `# comment` after `skipif`/`onlyif`/`halt`/`hash-threshold`; the
/// `sqllogictest` crate's parser does not, so such comments are removed before parsing.
fn strip_control_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let control = ["skipif ", "onlyif ", "halt", "hash-threshold "].iter().any(|k| line.starts_with(k));
        match line.find('#') {
            Some(i) if control => out.push_str(line[..i].trim_end()),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether a record is a statement or query (skipped or not).
fn runnable(r: &Record<DefaultColumnType>, _engine: &str) -> bool {
    matches!(r, Record::Statement { .. } | Record::Query { .. })
}

/// Queries of the corpus whose expected results are wrong for the engine name `postgresql`
/// although no `skipif postgresql` marks them: Postgres itself rejects them, so they are counted
/// as skipped (and listed in [`FileReport::wrong_for_engine`]) rather than run. Each entry is the
/// query's exact text and why Postgres rejects it.
const WRONG_FOR_POSTGRESQL: &[(&str, &str)] = &[
    (
        "SELECT x'303132' IN (SELECT * FROM t1)",
        "in Postgres x'303132' is a bit string; bit = integer does not exist (42883)",
    ),
    (
        "SELECT x'303132' NOT IN (SELECT * FROM t1)",
        "in Postgres x'303132' is a bit string; bit <> integer does not exist (42883)",
    ),
];

/// Why `sql` is wrong for `engine`, if it is one of the known records.
fn wrong_for_engine(sql: &str, engine: &str) -> Option<&'static str> {
    if engine != "postgresql" {
        return None;
    }
    WRONG_FOR_POSTGRESQL.iter().find(|(q, _)| *q == sql.trim()).map(|(_, why)| *why)
}

fn skipped(conditions: &[Condition], engine: &str) -> bool {
    conditions.iter().any(|c| match c {
        Condition::OnlyIf { label } => label != engine,
        Condition::SkipIf { label } => label == engine,
    })
}

/// A query kept alive as a view so later writes can be checked against it.
struct LiveView {
    name: String,
    /// The query it maintains, re-evaluated one-shot after every write.
    record: QueryRecord,
}

#[derive(Clone)]
struct QueryRecord {
    location: String,
    sql: String,
    types: Vec<char>,
}

struct FileRun<'a> {
    coord: &'a Coordinator,
    opts: &'a Options,
    report: &'a mut FileReport,
    hash_threshold: u64,
    live: VecDeque<LiveView>,
    next_view: u64,
}

/// The query of one record, ready to run.
struct PendingQuery {
    record: QueryRecord,
    sort: SortMode,
    expected: Vec<String>,
}

impl FileRun<'_> {
    async fn run(&mut self, records: &[Record<DefaultColumnType>]) {
        // Index of the last write statement: views of queries after it are never re-checked.
        let last_write = records
            .iter()
            .rposition(|r| matches!(r, Record::Statement { sql, conditions, .. } if is_write(sql) && !skipped(conditions, &self.opts.engine)));
        let mut pending_conditions: Vec<Condition> = Vec::new();
        let mut batch: Vec<PendingQuery> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let keep_views = last_write.is_some_and(|w| w > i);
            match record {
                Record::Condition(c) => {
                    pending_conditions.push(c.clone());
                    continue;
                }
                Record::Comment(_) | Record::Newline => continue,
                Record::Halt { .. } => {
                    let skip = skipped(&pending_conditions, &self.opts.engine);
                    pending_conditions.clear();
                    if !skip {
                        self.flush(&mut batch, keep_views).await;
                        return;
                    }
                    continue;
                }
                Record::HashThreshold { threshold, .. } => self.hash_threshold = *threshold,
                Record::Query { loc, conditions, sql, expected, .. } => {
                    let wrong = wrong_for_engine(sql, &self.opts.engine);
                    if let Some(why) = wrong {
                        let location = format!("{}:{}", loc.file(), loc.line());
                        self.report.wrong_for_engine.push((location, why));
                    }
                    if skipped(conditions, &self.opts.engine) || wrong.is_some() {
                        self.report.one_shot.skipped += 1;
                        self.report.maintained.skipped += 1;
                    } else {
                        let location = format!("{}:{}", loc.file(), loc.line());
                        match expected {
                            QueryExpect::Results { types, sort_mode, results, .. } => {
                                let types = types.iter().map(sqllogictest::ColumnType::to_char).collect();
                                let record = QueryRecord { location, sql: sql.clone(), types };
                                batch.push(PendingQuery {
                                    record,
                                    sort: sort_mode.unwrap_or(SortMode::NoSort),
                                    expected: results.clone(),
                                });
                                if batch.len() >= self.opts.batch {
                                    self.flush(&mut batch, keep_views).await;
                                }
                            }
                            QueryExpect::Error(_) => {
                                self.flush(&mut batch, keep_views).await;
                                let r = self.coord.execute(sql).await;
                                self.report.one_shot.run += 1;
                                if r.iter().any(|r| matches!(r, ExecuteResult::Error(_))) {
                                    self.report.one_shot.passed += 1;
                                } else {
                                    self.fail(&location, Mode::OneShot, sql, "expected an error".into(), String::new());
                                }
                            }
                        }
                    }
                }
                Record::Statement { loc, conditions, sql, expected, .. } => {
                    self.flush(&mut batch, keep_views).await;
                    if skipped(conditions, &self.opts.engine) {
                        self.report.one_shot.skipped += 1;
                    } else {
                        let location = format!("{}:{}", loc.file(), loc.line());
                        self.statement(&location, sql, expected).await;
                    }
                }
                _ => {}
            }
            pending_conditions.clear();
        }
        self.flush(&mut batch, false).await;
    }

    fn fail(&mut self, location: &str, mode: Mode, sql: &str, class: String, detail: String) {
        self.report.failures.push(Failure {
            location: location.to_string(),
            mode,
            sql: sql.to_string(),
            class,
            detail,
        });
    }

    async fn statement(&mut self, location: &str, sql: &str, expected: &StatementExpect) {
        let write = is_write(sql);
        if first_word(sql) == "DROP" {
            self.drop_live_views().await;
        }
        let results = self.coord.execute(sql).await;
        let error = results.into_iter().find_map(|r| match r {
            ExecuteResult::Error(e) => Some(e),
            _ => None,
        });
        self.report.one_shot.run += 1;
        match (expected, error) {
            (StatementExpect::Error(_), Some(_)) | (StatementExpect::Ok | StatementExpect::Count(_), None) => {
                self.report.one_shot.passed += 1;
            }
            (StatementExpect::Error(_), None) => {
                self.fail(location, Mode::OneShot, sql, "statement succeeded, error expected".into(), String::new())
            }
            (_, Some(e)) => self.fail(location, Mode::OneShot, sql, classify(&e), e.message.clone()),
        }
        if write {
            self.recheck().await;
        }
    }

    /// Runs the batched queries: one-shot, then (together) as views.
    async fn flush(&mut self, batch: &mut Vec<PendingQuery>, keep_views: bool) {
        if batch.is_empty() {
            return;
        }
        let queries = std::mem::take(batch);
        let mut arities = Vec::with_capacity(queries.len());
        for q in &queries {
            self.report.one_shot.run += 1;
            let result = self.coord.query(&q.record.sql).await;
            arities.push(result.as_ref().map(|(desc, _)| desc.arity()).unwrap_or(q.record.types.len()));
            match result {
                Ok((_, rows)) => {
                    let values = flatten(format_rows(&rows, &q.record.types), q.sort);
                    if matches_expected(&values, q.record.types.len(), &q.expected) {
                        self.report.one_shot.passed += 1;
                    } else {
                        let detail = format!("expected {} got {}", describe_expected(&q.expected), describe(&values));
                        self.fail(&q.record.location, Mode::OneShot, &q.record.sql, "wrong result".into(), detail);
                    }
                }
                Err(e) => self.fail(&q.record.location, Mode::OneShot, &q.record.sql, classify(&e), e.message.clone()),
            }
        }
        if !self.opts.maintained {
            return;
        }
        let names: Vec<String> = queries
            .iter()
            .map(|_| {
                self.next_view += 1;
                format!("__slt_{}", self.next_view)
            })
            .collect();
        let coord = self.coord;
        let creates = queries.iter().zip(&names).zip(&arities).map(|((q, name), arity)| {
            let body = q.record.sql.trim().trim_end_matches(';');
            // Output columns are named explicitly: a query may repeat a name (`SELECT a, a`), which
            // a view, unlike a query, does not allow.
            let columns: Vec<String> = (1..=*arity).map(|i| format!("c{i}")).collect();
            let sql = format!("CREATE VIEW {name} ({}) AS {body}", columns.join(", "));
            async move { last_error(coord.execute(&sql).await) }
        });
        let created: Vec<Option<StatementError>> = futures::future::join_all(creates).await;
        let mut to_drop = Vec::new();
        for ((q, name), error) in queries.into_iter().zip(names).zip(created) {
            self.report.maintained.run += 1;
            if let Some(e) = error {
                self.fail(&q.record.location, Mode::Maintained, &q.record.sql, classify(&e), e.message.clone());
                continue;
            }
            match self.view_rows(&name).await {
                Ok(rows) => {
                    let ok = self.view_matches(&q, &rows).await;
                    if ok {
                        self.report.maintained.passed += 1;
                        if keep_views {
                            self.live.push_back(LiveView { name, record: q.record });
                            continue;
                        }
                    } else {
                        let values = flatten(format_rows(&rows, &q.record.types), SortMode::RowSort);
                        let detail =
                            format!("expected {} view has {}", describe_expected(&q.expected), describe(&values));
                        self.fail(&q.record.location, Mode::Maintained, &q.record.sql, "wrong result".into(), detail);
                    }
                }
                Err(e) => {
                    self.fail(&q.record.location, Mode::Maintained, &q.record.sql, classify(&e), e.message.clone())
                }
            }
            to_drop.push(name);
        }
        while self.live.len() > self.opts.max_live_views {
            let v = self.live.pop_front().expect("non-empty");
            to_drop.push(v.name);
        }
        self.drop_views(&to_drop).await;
    }

    /// Whether a view's rows match a query's expected results. Views have no order (an `ORDER BY`
    /// without `LIMIT` is dropped), so rows are compared sorted; a hashed `nosort` result, which
    /// depends on order, is matched through the one-shot result the view must equal as a multiset.
    async fn view_matches(&self, q: &PendingQuery, rows: &[Row]) -> bool {
        let view = format_rows(rows, &q.record.types);
        let hashed = matches!(&q.expected[..], [line] if line.contains(" values hashing to "));
        if q.sort != SortMode::NoSort || !hashed {
            let sort = if q.sort == SortMode::ValueSort { SortMode::ValueSort } else { SortMode::RowSort };
            let values = flatten(view, sort);
            if matches_expected(&values, q.record.types.len(), &q.expected) {
                return true;
            }
            if q.sort != SortMode::NoSort {
                return false;
            }
            // Unsorted expected values: compare the expected rows as a multiset.
            let cols = q.record.types.len().max(1);
            if q.expected.len() != values.len() {
                return false;
            }
            let mut expected: Vec<Vec<String>> = q.expected.chunks(cols).map(|c| c.to_vec()).collect();
            expected.sort();
            let expected: Vec<String> = expected.into_iter().flatten().collect();
            return expected.iter().zip(&values).all(|(e, v)| e.trim_end() == v);
        }
        let Ok((_, oneshot)) = self.coord.query(&q.record.sql).await else { return false };
        let oneshot_rows = format_rows(&oneshot, &q.record.types);
        let mut a = view;
        a.sort();
        let mut b = oneshot_rows.clone();
        b.sort();
        a == b && matches_expected(&flatten(oneshot_rows, SortMode::NoSort), q.record.types.len(), &q.expected)
    }

    async fn view_rows(&self, name: &str) -> Result<Vec<Row>, StatementError> {
        self.coord.query(&format!("SELECT * FROM {name}")).await.map(|(_, rows)| rows)
    }

    /// After a write: every live view must equal a fresh one-shot evaluation of its query.
    async fn recheck(&mut self) {
        let mut still_live = VecDeque::new();
        let mut to_drop = Vec::new();
        for v in std::mem::take(&mut self.live) {
            self.report.rechecks += 1;
            let view = self.view_rows(&v.name).await;
            let oneshot = self.coord.query(&v.record.sql).await.map(|(_, rows)| rows);
            let outcome = match (view, oneshot) {
                (Ok(view), Ok(oneshot)) => {
                    let mut a = format_rows(&view, &v.record.types);
                    let mut b = format_rows(&oneshot, &v.record.types);
                    a.sort();
                    b.sort();
                    if a == b {
                        Ok(())
                    } else {
                        Err((
                            "wrong result after write".to_string(),
                            format!(
                                "one-shot {} view {}",
                                describe(&b.into_iter().flatten().collect::<Vec<_>>()),
                                describe(&a.into_iter().flatten().collect::<Vec<_>>())
                            ),
                        ))
                    }
                }
                // The query itself fails now (e.g. division by zero): nothing to compare.
                (_, Err(_)) => Ok(()),
                (Err(e), _) => Err((classify(&e), e.message.clone())),
            };
            match outcome {
                Ok(()) => still_live.push_back(v),
                Err((class, detail)) => {
                    // The record passed at creation; it fails now.
                    self.report.maintained.passed = self.report.maintained.passed.saturating_sub(1);
                    self.fail(&v.record.location, Mode::Recheck, &v.record.sql, class, detail);
                    to_drop.push(v.name);
                }
            }
        }
        self.live = still_live;
        self.drop_views(&to_drop).await;
    }

    async fn drop_live_views(&mut self) {
        let names: Vec<String> = self.live.drain(..).map(|v| v.name).collect();
        self.drop_views(&names).await;
    }

    async fn drop_views(&self, names: &[String]) {
        if !names.is_empty() {
            let _ = self.coord.execute(&format!("DROP VIEW IF EXISTS {}", names.join(", "))).await;
        }
    }
}

fn last_error(results: Vec<ExecuteResult>) -> Option<StatementError> {
    results.into_iter().find_map(|r| match r {
        ExecuteResult::Error(e) => Some(e),
        _ => None,
    })
}

fn describe_expected(expected: &[String]) -> String {
    describe(expected)
}

fn first_word(sql: &str) -> String {
    sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase()
}

fn is_write(sql: &str) -> bool {
    matches!(first_word(sql).as_str(), "INSERT" | "UPDATE" | "DELETE")
}

/// Groups an error by its message with quoted names and numbers blanked out.
pub fn classify(e: &StatementError) -> String {
    let mut out = String::new();
    let mut chars = e.message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                out.push('_');
            }
            c if c.is_ascii_digit() => {
                while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    chars.next();
                }
                out.push('N');
            }
            c => out.push(c),
        }
    }
    let mut class: String = out.chars().take(80).collect();
    class.insert_str(0, &format!("[{}] ", e.code));
    class
}
