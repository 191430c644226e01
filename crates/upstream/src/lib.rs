//! Gateway mode's source stage: follows one view of an upstream (Materialize, or another
//! viewcast) over `COPY (SUBSCRIBE view WITH (PROGRESS)) TO STDOUT`, on one fully async
//! tokio-postgres connection per view, and hands it on as complete timestamps.
//!
//! Owns: the upstream connection and its reconnection (exponential backoff with full jitter),
//! decoding the SUBSCRIBE rows, buffering them until each progress row so only complete
//! timestamps leave this crate, and the choice on reconnect between resuming `AS OF` the last
//! complete timestamp (`SNAPSHOT = false`) and a fresh snapshot published as its difference from
//! the old contents. Never touches: the hub, the engine, the catalog (the caller's
//! [`UpstreamSink`] does), sockets of clients.
//!
//! Overflow policy: rows of timestamps that are not yet complete are buffered; when the buffer
//! passes [`UpstreamConfig::consolidate_rows`] it is consolidated in place (per timestamp), so its
//! size is bounded by the distinct changes of the incomplete timestamps. The upstream's COPY
//! stream is only read as fast as the sink accepts sealed timestamps (TCP backpressure).

mod conninfo;
mod copy;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use viewcast_repr::{
    consolidate_updates, error_chain, ColumnType, Diff, RelationDesc, Row, ScalarType, Timestamp, Update,
};

pub use conninfo::redact_password;
pub use copy::scalar_type_of;
use copy::{decode_row, SubscribeRow};
pub use tls::{MakeRustlsConnect, SslMode};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection string or its TLS settings (never shows the string: it may hold a password).
    #[error("upstream connection settings: {0}")]
    Config(String),
    /// TLS failed (a certificate not trusted, TLS refused), authentication, or the server refused
    /// the session.
    #[error("connecting to the upstream: {0}")]
    Connect(String),
    /// Nothing answered: the connection was refused, reset or timed out (the upstream is down or
    /// not started yet).
    #[error("connecting to the upstream: {0}")]
    Unreachable(String),
    #[error("upstream: {}", error_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The upstream no longer has the history to resume from (Materialize and viewcast:
    /// "Timestamp (t) is not valid for all inputs").
    #[error("upstream cannot resume: {0}")]
    HistoryGone(String),
    #[error("upstream sent an unexpected row: {0}")]
    Protocol(String),
    #[error("upstream view's columns changed: was {was}, now {now}")]
    SchemaChanged { was: String, now: String },
    #[error("no row from the upstream for {0:?}")]
    Idle(Duration),
    #[error("the upstream ended the SUBSCRIBE")]
    Ended,
    #[error("sealing: {0}")]
    Sink(String),
}

/// Where one upstream view comes from, and how to keep following it. Its `Debug` hides the
/// password.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// A libpq-style connection string or URL, e.g. `postgres://materialize@host:6875/materialize`,
    /// with libpq's `sslmode` (default `prefer`) and `sslrootcert` (see [`SslMode`]).
    /// It may hold a password: show it only through [`redact_password`].
    pub url: String,
    /// The upstream relation, as SQL names it there (`counter`, `materialize.public.counter`).
    pub view: String,
    pub connect_timeout: Duration,
    /// Reconnect when nothing (not even a progress row) arrives for this long.
    pub idle_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max` (full jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Consolidate the buffer of incomplete timestamps when it passes this many rows.
    pub consolidate_rows: usize,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &redact_password(&self.url))
            .field("view", &self.view)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("consolidate_rows", &self.consolidate_rows)
            .finish()
    }
}

impl UpstreamConfig {
    pub fn new(url: &str, view: &str) -> UpstreamConfig {
        UpstreamConfig {
            url: url.to_string(),
            view: view.to_string(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            consolidate_rows: 100_000,
        }
    }
}

/// What receives an upstream view's complete timestamps (in viewcast: the hub's own-clock view
/// plus the engine input that local views read). Owns the contents; this crate keeps none.
pub trait UpstreamSink: Send + Sync + 'static {
    /// Every upstream time below this is sealed; `None` before the first seal.
    fn frontier(&self) -> Option<Timestamp>;
    /// The sealed contents (at `frontier - 1`), each row with its multiplicity.
    fn contents(&self) -> Vec<(Row, Diff)>;
    /// Seals every time below `upto`: `updates` are all changes at times in `[frontier, upto)`.
    fn seal(&self, upto: Timestamp, updates: Vec<Update>) -> Result<(), String>;
}

/// Connects once and reads the upstream view's column names and types (by describing
/// `SELECT * FROM view`). Every column is nullable: the wire protocol does not say otherwise.
pub async fn describe(config: &UpstreamConfig) -> Result<RelationDesc, UpstreamError> {
    let client = connect(config).await?;
    describe_with(&client, &config.view).await
}

async fn describe_with(client: &tokio_postgres::Client, view: &str) -> Result<RelationDesc, UpstreamError> {
    let stmt = client.prepare(&format!("SELECT * FROM {view}")).await?;
    Ok(RelationDesc::new(
        stmt.columns().iter().map(|c| (c.name().to_string(), ColumnType::new(scalar_type_of(c.type_()), true))),
    ))
}

/// Waits until the upstream accepts a connection, retrying with the reconnection backoff while
/// it is [`UpstreamError::Unreachable`] (refused, reset, timed out), for at most `limit` (`None`:
/// for as long as it takes). Each failure is logged with the next delay. Any other error (bad
/// settings, an untrusted certificate, failed authentication) and the last failure once `limit`
/// has passed are returned.
pub async fn wait_until_reachable(config: &UpstreamConfig, limit: Option<Duration>) -> Result<(), UpstreamError> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut attempt: u32 = 0;
    loop {
        let error = match connect(config).await {
            Ok(_client) => return Ok(()),
            Err(e @ UpstreamError::Unreachable(_)) => e,
            Err(other) => return Err(other),
        };
        attempt = attempt.saturating_add(1);
        let mut delay = backoff(config, attempt);
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(error);
            }
            delay = delay.min(left);
        }
        tracing::warn!(%error, attempt, ?delay, "upstream not reachable yet; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The wait before reconnect attempt `attempt` (from 1): full jitter under a cap that starts at
/// `backoff_min` and doubles per attempt up to `backoff_max`.
fn backoff(config: &UpstreamConfig, attempt: u32) -> Duration {
    let cap = config.backoff_min.saturating_mul(1 << attempt.min(16)).min(config.backoff_max);
    rand::thread_rng().gen_range(Duration::ZERO..=cap)
}

/// Opens one connection to the upstream, with TLS as the connection string's `sslmode` says.
/// The connection runs on its own task until the client is dropped.
pub async fn connect(config: &UpstreamConfig) -> Result<tokio_postgres::Client, UpstreamError> {
    let split = conninfo::split_tls_params(&config.url);
    let mode = split.sslmode.as_deref().map_or(Ok(SslMode::Prefer), SslMode::parse)?;
    let mut pg: tokio_postgres::Config =
        split.rest.parse().map_err(|e: tokio_postgres::Error| UpstreamError::Config(error_chain(&e)))?;
    pg.ssl_mode(mode.negotiation());
    let tls = MakeRustlsConnect::new(mode, split.sslrootcert.as_deref().map(std::path::Path::new))?;
    let (client, connection) = tokio::time::timeout(config.connect_timeout, pg.connect(tls))
        .await
        .map_err(|_| UpstreamError::Unreachable(format!("timed out after {:?}", config.connect_timeout)))?
        .map_err(|e| {
            // Nobody listening (yet), or the path to it down; a TLS failure is an I/O error of
            // another kind (invalid data).
            use std::io::ErrorKind::*;
            let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
            let unreachable = io.is_some_and(|io| {
                matches!(
                    io.kind(),
                    ConnectionRefused
                        | ConnectionReset
                        | ConnectionAborted
                        | TimedOut
                        | HostUnreachable
                        | NetworkUnreachable
                        | AddrNotAvailable
                        | NotConnected
                )
            });
            if unreachable {
                UpstreamError::Unreachable(error_chain(&e))
            } else {
                UpstreamError::Connect(error_chain(&e))
            }
        })?;
    // The connection task ends when the client is dropped (or the socket fails).
    let view = config.view.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%view, error = %error_chain(&e), "upstream connection closed");
        }
    });
    Ok(client)
}

/// Follows the upstream view forever, reconnecting after every loss; sealed timestamps go to
/// `sink`. `desc` is the shape the sink was created with: an upstream whose columns changed is
/// not followed (the error is logged at each retry). Ends only when the task is dropped/aborted.
pub async fn run(config: UpstreamConfig, desc: RelationDesc, sink: Arc<dyn UpstreamSink>) {
    let mut attempt: u32 = 0;
    let mut force_snapshot = false;
    loop {
        let snapshot = force_snapshot || sink.frontier().is_none();
        let mut progressed = false;
        let result = follow_once(&config, &desc, &*sink, snapshot, &mut progressed).await;
        let error = result.err().unwrap_or(UpstreamError::Ended);
        if progressed {
            attempt = 0;
        }
        match &error {
            UpstreamError::HistoryGone(_) | UpstreamError::Sink(_) | UpstreamError::Protocol(_) => {
                // Resuming cannot give an exact continuation: take a fresh snapshot, now.
                tracing::warn!(view = %config.view, %error, "upstream: taking a new snapshot");
                force_snapshot = true;
                continue;
            }
            _ => {}
        }
        force_snapshot = false;
        attempt = attempt.saturating_add(1);
        let delay = backoff(&config, attempt);
        tracing::warn!(view = %config.view, %error, attempt, ?delay, "upstream lost; reconnecting");
        tokio::time::sleep(delay).await;
    }
}

/// One connection: SUBSCRIBE (resuming `AS OF` the last complete timestamp unless `snapshot`)
/// and seal each complete timestamp until the stream fails. Sets `progressed` once it sealed one.
async fn follow_once(
    config: &UpstreamConfig,
    desc: &RelationDesc,
    sink: &dyn UpstreamSink,
    snapshot: bool,
    progressed: &mut bool,
) -> Result<(), UpstreamError> {
    let client = connect(config).await?;
    let now = describe_with(&client, &config.view).await?;
    if now.names != desc.names || now.types != desc.types {
        let show = |d: &RelationDesc| {
            d.names.iter().zip(&d.types).map(|(n, t)| format!("{n} {}", t.scalar.name())).collect::<Vec<_>>().join(", ")
        };
        return Err(UpstreamError::SchemaChanged { was: show(desc), now: show(&now) });
    }
    let view = &config.view;
    let resume_from = if snapshot { None } else { sink.frontier() };
    let sql = match resume_from {
        Some(f) => {
            format!("COPY (SUBSCRIBE {view} WITH (PROGRESS, SNAPSHOT = false) AS OF {}) TO STDOUT", f.saturating_sub(1))
        }
        None => format!("COPY (SUBSCRIBE {view} WITH (PROGRESS)) TO STDOUT"),
    };
    tracing::info!(%view, %sql, "upstream: subscribing");
    let stream = client.copy_out(&sql).await.map_err(|e| classify(e, resume_from.is_some()))?;
    futures::pin_mut!(stream);
    let types: Vec<ScalarType> = desc.types.iter().map(|t| t.scalar).collect();
    let mut session = Session::new(resume_from.is_none(), config.consolidate_rows);
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(config.idle_timeout, stream.next()).await {
            Err(_) => return Err(UpstreamError::Idle(config.idle_timeout)),
            Ok(None) => return Err(UpstreamError::Ended),
            Ok(Some(chunk)) => chunk.map_err(|e| classify(e, resume_from.is_some()))?,
        };
        // COPY data need not be split at line ends.
        partial.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
            let line = &partial[start..start + nl];
            start += nl + 1;
            match decode_row(line, &types)? {
                SubscribeRow::Data { ts, diff, row } => session.push(row, ts, diff),
                SubscribeRow::Progress(p) => {
                    if let Some((upto, updates)) = session.progress(p, sink.frontier(), || sink.contents())? {
                        sink.seal(upto, updates).map_err(UpstreamError::Sink)?;
                        *progressed = true;
                    }
                }
            }
        }
        partial.drain(..start);
    }
}

/// A failed SUBSCRIBE while resuming with a database error about the timestamp means the
/// upstream lacks the history; anything else is a plain loss.
fn classify(e: tokio_postgres::Error, resuming: bool) -> UpstreamError {
    if let Some(db) = e.as_db_error() {
        let history = db.message().contains("not valid for all inputs") || db.code().code() == "22000";
        if resuming && history {
            return UpstreamError::HistoryGone(db.message().to_string());
        }
    }
    UpstreamError::Postgres(e)
}

/// The rows of one SUBSCRIBE between progress rows, and what each progress row seals.
struct Session {
    /// Until the first progress row: the rows are a snapshot to be published as its difference
    /// from the sink's contents, not changes to append.
    replacing: bool,
    pending: Vec<Update>,
    consolidate_at: usize,
    consolidate_rows: usize,
}

impl Session {
    fn new(replacing: bool, consolidate_rows: usize) -> Session {
        Session { replacing, pending: Vec::new(), consolidate_at: consolidate_rows, consolidate_rows }
    }

    fn push(&mut self, row: Row, ts: Timestamp, diff: Diff) {
        self.pending.push((row, ts, diff));
        if self.pending.len() >= self.consolidate_at {
            let mut keyed: Vec<((Row, Timestamp), Diff)> =
                self.pending.drain(..).map(|(r, t, d)| ((r, t), d)).collect();
            keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            keyed.dedup_by(|later, earlier| {
                if later.0 == earlier.0 {
                    earlier.1 += later.1;
                    true
                } else {
                    false
                }
            });
            self.pending = keyed.into_iter().filter(|(_, d)| *d != 0).map(|((r, t), d)| (r, t, d)).collect();
            self.consolidate_at = (self.pending.len() * 2).max(self.consolidate_rows);
        }
    }

    /// A progress row at `p`: every buffered row is at a time below `p`. Returns what to seal
    /// (through `upto`), given the sink's current `frontier`. While replacing, the buffered rows
    /// are the upstream's contents at `p - 1`; they are published as one update at `p - 1` that
    /// turns the sink's contents into them, once `p` is past the sink's frontier (until then the
    /// upstream is behind our clients, and its rows wait, consolidated).
    fn progress(
        &mut self,
        p: Timestamp,
        frontier: Option<Timestamp>,
        contents: impl FnOnce() -> Vec<(Row, Diff)>,
    ) -> Result<Option<(Timestamp, Vec<Update>)>, UpstreamError> {
        if frontier.is_some_and(|f| p <= f) {
            if self.replacing {
                return Ok(None);
            }
            if self.pending.is_empty() {
                return Ok(None); // A progress row we have already passed (resuming at f - 1).
            }
            return Err(UpstreamError::Protocol(format!(
                "rows before progress {p}, at or below the sealed frontier {}",
                frontier.unwrap_or(0)
            )));
        }
        let pending = std::mem::take(&mut self.pending);
        self.consolidate_at = self.consolidate_rows;
        if !self.replacing {
            return Ok(Some((p, pending)));
        }
        self.replacing = false;
        let at = p - 1;
        let mut diff: Vec<(Row, Diff)> = pending.into_iter().map(|(r, _, d)| (r, d)).collect();
        if frontier.is_some() {
            diff.extend(contents().into_iter().map(|(r, d)| (r, -d)));
        }
        consolidate_updates(&mut diff);
        Ok(Some((p, diff.into_iter().map(|(r, d)| (r, at, d)).collect())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viewcast_repr::Datum;

    fn r(i: i64) -> Row {
        Row::new(vec![Datum::Int(i)])
    }

    #[test]
    fn config_debug_hides_the_password() {
        let shown = format!("{:?}", UpstreamConfig::new("postgres://u:s3cret@h:6875/mz?sslmode=require", "v"));
        assert!(shown.contains("postgres://u:<redacted>@h:6875/mz?sslmode=require"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn resumed_session_seals_each_progress() {
        let mut s = Session::new(false, 1000);
        assert_eq!(s.progress(10, Some(10), Vec::new).unwrap(), None, "the resume point's own progress");
        s.push(r(1), 10, 1);
        s.push(r(2), 12, 1);
        assert_eq!(s.progress(13, Some(10), Vec::new).unwrap(), Some((13, vec![(r(1), 10, 1), (r(2), 12, 1)])));
        assert_eq!(s.progress(14, Some(13), Vec::new).unwrap(), Some((14, vec![])));
        s.push(r(3), 12, 1);
        assert!(s.progress(14, Some(14), Vec::new).is_err(), "rows below the sealed frontier");
    }

    #[test]
    fn new_snapshot_is_published_as_its_difference() {
        let mut s = Session::new(true, 1000);
        for (row, d) in [(r(1), 1), (r(2), 2), (r(4), 1)] {
            s.push(row, 500, d);
        }
        // The upstream is behind what clients have (frontier 600): wait.
        assert_eq!(s.progress(501, Some(600), || unreachable!()).unwrap(), None);
        s.push(r(4), 620, -1);
        let old = vec![(r(1), 1), (r(2), 1), (r(3), 1)];
        let (upto, updates) = s.progress(700, Some(600), || old).unwrap().unwrap();
        assert_eq!(upto, 700);
        assert_eq!(updates, vec![(r(2), 699, 1), (r(3), 699, -1)]);
        // Then it behaves like a resumed session.
        s.push(r(5), 700, 1);
        assert_eq!(s.progress(701, Some(700), Vec::new).unwrap(), Some((701, vec![(r(5), 700, 1)])));
    }

    #[test]
    fn buffer_consolidates_past_its_bound() {
        let mut s = Session::new(false, 10);
        for i in 0..1000 {
            s.push(r(i % 3), 5, if i % 2 == 0 { 1 } else { -1 });
        }
        assert!(s.pending.len() <= 20, "{} rows buffered", s.pending.len());
        let (_, mut updates) = s.progress(6, Some(5), Vec::new).unwrap().unwrap();
        updates.sort();
        let mut expected: Vec<(Row, Diff)> = (0..1000).map(|i| (r(i % 3), if i % 2 == 0 { 1 } else { -1 })).collect();
        consolidate_updates(&mut expected);
        let got: Vec<(Row, Diff)> = {
            let mut g: Vec<(Row, Diff)> = updates.into_iter().map(|(r, _, d)| (r, d)).collect();
            consolidate_updates(&mut g);
            g
        };
        assert_eq!(got, expected);
    }
}
