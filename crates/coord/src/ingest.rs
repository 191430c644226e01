//! Ingestion: starting sources from their connectors, rows pushed by webhooks, and the rows of
//! the `viewcast_source_stats` system view (published by [`crate::system`]).
//!
//! Webhook rows do not go through a source queue: each request becomes one pending write of the
//! next tick (the mechanism table writes use), so a request's rows land in one timestamp, all or
//! nothing, and the caller learns when that timestamp is sealed.

use std::sync::Arc;

use viewcast_plan::GlobalId;
use viewcast_repr::{Datum, Row, Timestamp};
use viewcast_sources::{
    FileConfig, FileSource, LoadGenConfig, LoadGenerator, RecordFormat, SourceHandle, SourceStats, SseConfig, SseSource,
};
use viewcast_sql::{Format, LoadGenerator as LoadGenSpec, SourceConnector};

use crate::clock::PendingWrite;
use crate::execute::StatementError;
use crate::Shared;

/// A started source: its producer (a thread, or nothing for a webhook) and, for a webhook, how
/// request bodies decode.
pub(crate) struct Started {
    pub handle: SourceHandle,
    pub webhook: Option<RecordFormat>,
}

fn config_error(e: impl std::fmt::Display) -> StatementError {
    StatementError::new(e.to_string(), "22023", None)
}

fn record_format(format: &Format) -> Result<RecordFormat, StatementError> {
    Ok(match format {
        Format::Json => RecordFormat::Json,
        Format::Text => RecordFormat::Text,
        Format::Regex { pattern } => RecordFormat::regex(pattern).map_err(config_error)?,
    })
}

/// Starts the producer of `connector`, sending batches of rows of `arity` columns to `tx`.
pub(crate) fn start_source(
    name: &str,
    connector: SourceConnector,
    arity: usize,
    tx: crossbeam_channel::Sender<Vec<Row>>,
) -> Result<Started, StatementError> {
    let handle = match connector {
        SourceConnector::LoadGenerator(LoadGenSpec { events_per_second, seed, max_events, .. }) => {
            let config = LoadGenConfig {
                seed: seed.unwrap_or(0),
                events_per_second: match events_per_second {
                    None => Some(100.0),
                    Some(r) if r <= 0.0 => None,
                    Some(r) => Some(r),
                },
                max_events,
                ..LoadGenConfig::default()
            };
            LoadGenerator::spawn(config, tx)
        }
        SourceConnector::Sse { url, include_metadata } => {
            let mut config = SseConfig::new(url);
            config.include_metadata = include_metadata;
            SseSource::spawn(config, tx)
        }
        SourceConnector::File { path, tail, format } => {
            let format = record_format(&format)?;
            check_arity(&format, arity)?;
            let mut config = FileConfig::new(path, format);
            config.tail = tail;
            FileSource::spawn(config, tx)
        }
        SourceConnector::Webhook { format } => {
            let format = record_format(&format)?;
            check_arity(&format, arity)?;
            let handle = SourceHandle::passive(name, Arc::new(SourceStats::new()));
            return Ok(Started { handle, webhook: Some(format) });
        }
        SourceConnector::Upstream { .. } => {
            return Err(config_error("an upstream view is not a row source (see coord::upstream)"));
        }
    };
    Ok(Started { handle: handle.map_err(config_error)?, webhook: None })
}

fn check_arity(format: &RecordFormat, arity: usize) -> Result<(), StatementError> {
    if format.arity() != arity {
        return Err(config_error(format!(
            "the pattern has {} named capture groups but the source {arity} columns",
            format.arity()
        )));
    }
    Ok(())
}

/// Rows of webhook requests waiting for the next tick, at most; past it requests are refused
/// (SQLSTATE 53400) until the engine catches up.
const MAX_PENDING_INGEST_ROWS: usize = 1_000_000;

/// Decodes a webhook body for source `name` (all or nothing) and ingests its rows; returns how
/// many rows and the sealed timestamp they are in.
pub(crate) async fn ingest_body(
    shared: &Shared,
    name: &str,
    body: &[u8],
) -> Result<(usize, Timestamp), StatementError> {
    let (id, format, stats) = webhook_source(shared, name)?;
    let rows = match format.decode_body(body) {
        Ok(rows) => rows,
        Err(e) => {
            stats.record_error(&e);
            return Err(StatementError::new(format!("invalid request body: {e}"), "22P02", None));
        }
    };
    let n = rows.len();
    let ts = ingest_rows(shared, id, &stats, rows, body.len() as u64).await?;
    Ok((n, ts))
}

/// Ingests already decoded rows into webhook source `name`; returns the sealed timestamp they are in.
pub(crate) async fn ingest(shared: &Shared, name: &str, rows: Vec<Row>) -> Result<Timestamp, StatementError> {
    let (id, format, stats) = webhook_source(shared, name)?;
    if let Some(bad) = rows.iter().find(|r| r.len() != format.arity()) {
        return Err(StatementError::new(
            format!("a row of {} columns for a source of {}", bad.len(), format.arity()),
            "22023",
            None,
        ));
    }
    ingest_rows(shared, id, &stats, rows, 0).await
}

fn webhook_source(shared: &Shared, name: &str) -> Result<(GlobalId, RecordFormat, Arc<SourceStats>), StatementError> {
    let cat = shared.catalog.lock().expect("catalog lock");
    let (id, item) =
        cat.resolve(name).ok_or_else(|| StatementError::new(format!("unknown source '{name}'"), "42P01", None))?;
    match item.source.as_ref() {
        Some(src) if src.webhook.is_some() => {
            Ok((id, src.webhook.clone().expect("checked"), Arc::clone(src.handle.stats())))
        }
        _ => Err(StatementError::new(
            format!("\"{name}\" is a {}, not a webhook source", item.kind.name()),
            "42809",
            None,
        )),
    }
}

async fn ingest_rows(
    shared: &Shared,
    id: GlobalId,
    stats: &SourceStats,
    rows: Vec<Row>,
    bytes: u64,
) -> Result<Timestamp, StatementError> {
    let n = rows.len() as u64;
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut clock = shared.clock.lock().expect("clock lock");
        let pending: usize = clock.pending.iter().map(|w| w.updates.len()).sum();
        if pending + rows.len() > MAX_PENDING_INGEST_ROWS && pending > 0 {
            return Err(StatementError::new("too many rows waiting for the next tick; retry later", "53400", None));
        }
        clock.pending.push(PendingWrite { id, updates: rows.into_iter().map(|r| (r, 1)).collect(), done: Some(tx) });
    }
    let ts = rx.await.map_err(|_| StatementError::new("server is shutting down", "57P01", None))?;
    stats.record_events(n, bytes, crate::clock::now_ms());
    shared.hub.wait_for(ts + 1).await;
    Ok(ts)
}

/// One row of `viewcast_source_stats` for a source.
pub(crate) fn stats_row(name: &str, handle: &SourceHandle, now: Timestamp) -> Row {
    let s = handle.stats().snapshot();
    let int = |v: u64| Datum::Int(i64::try_from(v).unwrap_or(i64::MAX));
    Row::new(vec![
        Datum::text(name),
        int(s.events_in),
        int(s.bytes_in),
        int(s.errors),
        int(s.skipped),
        s.last_error.as_deref().map_or(Datum::Null, Datum::text),
        s.last_event_time.map_or(Datum::Null, |t| Datum::Timestamp(t as i64 * 1000)),
        s.last_event_time.map_or(Datum::Null, |t| int(now.saturating_sub(t))),
    ])
}
