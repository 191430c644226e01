//! `SUBSCRIBE` as Materialize defines it, fed from the hub's shared change log.
//!
//! A [`SubscribeStream`] turns a [`ViewFollower`]'s batches into output rows:
//! `mz_timestamp`, then `mz_progressed` (with `PROGRESS`), then `mz_diff` (or `mz_state` and the
//! key columns first, with `ENVELOPE UPSERT`), then the view's columns. Rows come out in
//! timestamp order; a progress row with timestamp `t` means no later row has a timestamp below `t`.
//! A `(query)` target (or an unpublished relation) is maintained as a transient hidden view, dropped
//! when the stream is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use viewcast_coord::{Coordinator, FollowError, StatementError, ViewFollower};
use viewcast_plan::{GlobalId, RelExpr};
use viewcast_repr::{ColumnType, Datum, Diff, RelationDesc, Row, ScalarType, Timestamp};
use viewcast_sql::{Subscribe, SubscribeTarget};

pub struct SubscribeStream {
    coord: Arc<Coordinator>,
    follower: ViewFollower,
    transient: Option<GlobalId>,
    desc: RelationDesc,
    progress: bool,
    upsert_key: Option<Vec<usize>>,
    up_to: Option<Timestamp>,
    ready: VecDeque<Row>,
    finished: bool,
}

fn follow_error(e: FollowError) -> StatementError {
    match e {
        FollowError::NotRetained { .. } => StatementError::new(e.to_string(), "22000", None),
        FollowError::Lagged { .. } => StatementError::new(format!("subscription {e}"), "53000", None),
        FollowError::Dropped(_) | FollowError::NotReady => StatementError::new(e.to_string(), "XX000", None),
    }
}

impl SubscribeStream {
    pub async fn start(coord: Arc<Coordinator>, sub: Subscribe) -> Result<SubscribeStream, StatementError> {
        let (id, transient) = match &sub.target {
            SubscribeTarget::Item(id) if coord.hub().is_published(*id) => (*id, None),
            SubscribeTarget::Item(id) => {
                let plan = RelExpr::Get { id: *id, arity: sub.desc.arity() };
                let t = coord.create_transient_view(plan, sub.desc.clone()).await?;
                (t, Some(t))
            }
            SubscribeTarget::Query(plan) => {
                let t = coord.create_transient_view(plan.clone(), sub.desc.clone()).await?;
                (t, Some(t))
            }
        };
        let started = ViewFollower::start(coord.hub().clone(), id, sub.as_of).await;
        let (follower, start, snapshot) = match started {
            Ok(s) => s,
            Err(e) => {
                if let Some(t) = transient {
                    let _ = coord.drop_transient_view(t);
                }
                return Err(follow_error(e));
            }
        };
        let mut stream = SubscribeStream {
            desc: output_desc(&sub),
            coord,
            follower,
            transient,
            progress: sub.progress,
            upsert_key: sub.upsert_key.clone(),
            up_to: sub.up_to,
            ready: VecDeque::new(),
            finished: false,
        };
        if sub.up_to.is_some_and(|u| start >= u) {
            stream.finished = true;
            return Ok(stream);
        }
        if sub.snapshot {
            stream.push_changes(start, &snapshot);
        }
        stream.push_progress(start + 1);
        Ok(stream)
    }

    /// The output columns.
    pub fn desc(&self) -> &RelationDesc {
        &self.desc
    }

    /// Whether `UP TO` was reached (no rows beyond those ready will come).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Takes up to `n` ready rows.
    pub fn take(&mut self, n: usize) -> impl Iterator<Item = Row> + '_ {
        let n = n.min(self.ready.len());
        self.ready.drain(..n)
    }

    /// Waits for the view to complete more timestamps and queues their rows. Returns without
    /// waiting once finished. Cancel-safe: dropping the future loses nothing.
    pub async fn advance(&mut self) -> Result<(), StatementError> {
        if self.finished {
            return Ok(());
        }
        let next = self.follower.next().await.map_err(follow_error)?;
        self.push_step(next);
        Ok(())
    }

    /// Queues whatever the view has already completed, without waiting.
    pub fn advance_ready(&mut self) -> Result<(), StatementError> {
        if self.finished {
            return Ok(());
        }
        if let Some(next) = self.follower.try_next() {
            self.push_step(next.map_err(follow_error)?);
        }
        Ok(())
    }

    fn push_step(&mut self, (batches, through): (Vec<viewcast_changelog::Batch>, Timestamp)) {
        for b in batches {
            if self.up_to.is_some_and(|u| b.ts >= u) {
                break;
            }
            self.push_changes(b.ts, &b.updates);
        }
        match self.up_to {
            Some(u) if through + 1 >= u => {
                self.push_progress(u);
                self.finished = true;
            }
            _ => self.push_progress(through + 1),
        }
    }

    fn push_progress(&mut self, ts: Timestamp) {
        if !self.progress {
            return;
        }
        let mut row = vec![Datum::Int(ts as i64), Datum::Bool(true)];
        row.resize(self.desc.arity(), Datum::Null);
        self.ready.push_back(Row::new(row));
    }

    /// Queues one timestamp's changes as output rows; reads `updates` in place (they are shared with
    /// the view's log), cloning only the datums each output row holds.
    fn push_changes(&mut self, ts: Timestamp, updates: &[(Row, Diff)]) {
        let mut prefix = vec![Datum::Int(ts as i64)];
        if self.progress {
            prefix.push(Datum::Bool(false));
        }
        let Some(key) = self.upsert_key.clone() else {
            for (row, diff) in updates {
                let mut out = prefix.clone();
                out.push(Datum::Int(*diff));
                out.extend(row.datums().iter().cloned());
                self.ready.push_back(Row::new(out));
            }
            return;
        };
        // Per changed key: the rows it gained at this timestamp (none: it was deleted).
        let mut by_key: BTreeMap<Vec<Datum>, Vec<(&Row, Diff)>> = BTreeMap::new();
        for (row, diff) in updates {
            let k: Vec<Datum> = key.iter().map(|&i| row.get(i).clone()).collect();
            let gained = by_key.entry(k).or_default();
            if *diff > 0 {
                gained.push((row, *diff));
            }
        }
        let values: Vec<usize> = (0..self.desc.arity() - prefix.len() - 1 - key.len())
            .scan(0usize, |next, _| {
                while key.contains(next) {
                    *next += 1;
                }
                let v = *next;
                *next += 1;
                Some(v)
            })
            .collect();
        for (k, inserted) in by_key {
            let mut out = prefix.clone();
            match inserted.as_slice() {
                [] => {
                    out.push(Datum::text("delete"));
                    out.extend(k);
                    out.extend(values.iter().map(|_| Datum::Null));
                }
                [(row, 1)] => {
                    out.push(Datum::text("upsert"));
                    out.extend(k);
                    out.extend(values.iter().map(|&i| row.get(i).clone()));
                }
                _ => {
                    out.push(Datum::text("key_violation"));
                    out.extend(k);
                    out.extend(values.iter().map(|_| Datum::Null));
                }
            }
            self.ready.push_back(Row::new(out));
        }
    }
}

impl Drop for SubscribeStream {
    fn drop(&mut self) {
        if let Some(t) = self.transient.take() {
            if let Err(e) = self.coord.drop_transient_view(t) {
                tracing::warn!(error = %e, "could not drop a subscription's transient view");
            }
        }
    }
}

/// The columns `SUBSCRIBE` outputs for `sub`.
pub fn output_desc(sub: &Subscribe) -> RelationDesc {
    let mut cols = vec![("mz_timestamp".to_string(), ColumnType::new(ScalarType::Numeric, false))];
    if sub.progress {
        cols.push(("mz_progressed".to_string(), ColumnType::new(ScalarType::Bool, false)));
    }
    let named = |i: usize| (sub.desc.names[i].clone(), ColumnType::new(sub.desc.types[i].scalar, true));
    match &sub.upsert_key {
        None => {
            cols.push(("mz_diff".to_string(), ColumnType::new(ScalarType::Int64, true)));
            cols.extend((0..sub.desc.arity()).map(named));
        }
        Some(key) => {
            cols.push(("mz_state".to_string(), ColumnType::new(ScalarType::Text, true)));
            cols.extend(key.iter().map(|&i| named(i)));
            cols.extend((0..sub.desc.arity()).filter(|i| !key.contains(i)).map(named));
        }
    }
    RelationDesc::new(cols)
}
