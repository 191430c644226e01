//! Following a view's change log from outside the hub, and the HTTP POST (webhook) sinks built on it.
//!
//! [`ViewFollower`] is how every long-lived reader of a view (pgwire `SUBSCRIBE`, sinks) gets its
//! changes without a dataflow of its own: it takes the view's contents at a start time from the
//! hub's [`ViewLog`](viewcast_changelog::ViewLog), then uses the view's broadcast frames and the
//! hub's frontier only as wake-ups and reads each newly sealed [`Batch`] back from the shared log (`ViewLog::resume`).
//! A thousand followers of one view share one log.
//!
//! A webhook sink POSTs each completed timestamp's changes, in order, as
//! `{"view":V,"ts":T,"rows":[{"row":[..],"diff":n}]}` with `Idempotency-Key: V-T`. A request is
//! retried (exponential backoff) until it is answered 2xx; the next one is never sent before.
//! Timestamps that complete while a request is outstanding wait in one consolidated batch, keyed
//! by the latest of them, so memory stays bounded by the view's churn, not by the outage's length.
//! Never touches: dataflow, SQL planning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, Notify};
use tracing::Instrument;
use viewcast_changelog::{Batch, Resume};
use viewcast_hub::{Frame, Hub, HubError};
use viewcast_plan::GlobalId;
use viewcast_repr::{consolidate_updates, Diff, JsonRow, Row, Timestamp};

/// Why a [`ViewFollower`] stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// The view was dropped (or never existed).
    #[error("{0}")]
    Dropped(String),
    /// The follower fell further behind than the view's retained history.
    #[error("fell behind the view's retained history (since {since})")]
    Lagged { since: Timestamp },
    /// `AS OF` a time the log no longer has history for.
    #[error("Timestamp ({ts}) is not valid for all inputs: the view's retained history starts later")]
    NotRetained { ts: Timestamp },
    #[error("view is not ready yet")]
    NotReady,
}

/// Reads one view's sealed changes in order, from a start time, out of the hub's shared log.
pub struct ViewFollower {
    hub: Arc<Hub>,
    id: GlobalId,
    wake: broadcast::Receiver<Frame>,
    /// Everything through this time has been handed out.
    since: Timestamp,
}

impl ViewFollower {
    /// Starts following view `id` (it must be published). Returns the follower, the start time
    /// and the contents at it. With `as_of`, waits until `as_of` is sealed and starts there (its
    /// history must still be retained); otherwise starts at the view's last sealed time.
    pub async fn start(
        hub: Arc<Hub>,
        id: GlobalId,
        as_of: Option<Timestamp>,
    ) -> Result<(ViewFollower, Timestamp, Vec<(Row, Diff)>), FollowError> {
        if let Some(t) = as_of {
            hub.wait_for_view(id, t.saturating_add(1)).await;
        }
        let ((start, snapshot), wake) = hub
            .subscribe_log(id, |log| {
                match as_of {
                    // The current contents need no rewinding (nor sorting).
                    None => (log.sealed_ts(), Some(log.rows().map(|(r, d)| (r.clone(), d)).collect())),
                    Some(ts) => (ts, log.snapshot_at(ts)),
                }
            })
            .map_err(|e| match e {
                HubError::NotReady(_) => FollowError::NotReady,
                other => FollowError::Dropped(other.to_string()),
            })?;
        let snapshot = snapshot.ok_or(FollowError::NotRetained { ts: start })?;
        Ok((ViewFollower { hub, id, wake, since: start }, start, snapshot))
    }

    /// Everything through this time has been handed out.
    pub fn since(&self) -> Timestamp {
        self.since
    }

    /// The batches sealed since the last call, if the view has completed a later time already
    /// (never waits). `None`: nothing new yet.
    pub fn try_next(&mut self) -> Option<Result<(Vec<Batch>, Timestamp), FollowError>> {
        let since = self.since;
        let ready = self.hub.with_log(self.id, |log| {
            if log.sealed_ts() <= since {
                return None;
            }
            Some(match log.resume(since) {
                Resume::Replay(batches) => Ok((batches.into_iter().cloned().collect::<Vec<_>>(), log.sealed_ts())),
                Resume::TooOld => Err(FollowError::Lagged { since }),
            })
        });
        match ready {
            Err(_) => Some(Err(FollowError::Dropped("view was dropped".into()))),
            Ok(None) => None,
            Ok(Some(r)) => {
                if let Ok((_, through)) = &r {
                    self.since = *through;
                }
                Some(r)
            }
        }
    }

    /// Waits for the view to complete a later time, then returns the batches after the last call
    /// (possibly none: time passed without changes) and the time they are complete through.
    pub async fn next(&mut self) -> Result<(Vec<Batch>, Timestamp), FollowError> {
        loop {
            if let Some(r) = self.try_next() {
                return r;
            }
            // Frames wake on changes (and throttled progress); the hub's frontier on every
            // advance of time, so a quiet view still reports each sealed step.
            let next_step = self.hub.frontier().max(self.since.saturating_add(1)).saturating_add(1);
            let woken = tokio::select! {
                r = self.wake.recv() => r,
                _ = self.hub.wait_for(next_step) => continue,
            };
            match woken {
                Ok(frame) if frame.ts.is_none() => {
                    // An error frame: the view is gone. (Re-check the log in case it is a resync.)
                    if self.hub.with_log(self.id, |_| ()).is_err() {
                        return Err(FollowError::Dropped("view was dropped".into()));
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(FollowError::Dropped("view was dropped".into()));
                }
            }
        }
    }
}

/// What one sink is doing, as `SHOW SINKS` and [`crate::Coordinator::sink_statuses`] report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkStatus {
    pub name: String,
    pub view: String,
    pub url: String,
    /// `starting`, `running` (caught up), `retrying` (the receiver is failing) or `failed`.
    pub state: &'static str,
    /// The latest timestamp whose POST was answered 2xx.
    pub last_acked_ts: Option<Timestamp>,
    /// Changes not yet acknowledged (in flight plus waiting).
    pub pending_rows: u64,
    /// Requests answered 2xx.
    pub posts: u64,
    /// Failed attempts (connection errors and non-2xx answers).
    pub errors: u64,
    pub last_error: Option<String>,
}

/// How a webhook sink delivers (`CREATE SINK ... WITH (...)`).
pub(crate) struct WebhookOptions {
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`; never logged or shown.
    pub token: Option<String>,
    /// Per-request timeout (default [`REQUEST_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// POST the view's contents at the start time first.
    pub snapshot: bool,
}

/// Backoff between attempts of one request: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Changes waiting behind the request in flight: one consolidated batch keyed by the latest time.
#[derive(Default)]
struct Queue {
    waiting: Option<Batch>,
    /// Set when the follower stopped: nothing more will be queued.
    closed: Option<String>,
}

struct SinkShared {
    status: Mutex<SinkStatus>,
    queue: Mutex<Queue>,
    notify: Notify,
}

/// A running sink: its tasks stop when this is dropped.
pub(crate) struct SinkHandle {
    shared: Arc<SinkShared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Every running sink, by catalog id.
#[derive(Default)]
pub(crate) struct Sinks {
    running: Mutex<HashMap<GlobalId, SinkHandle>>,
}

impl Sinks {
    pub fn statuses(&self) -> Vec<SinkStatus> {
        let running = self.running.lock().expect("sinks lock");
        let mut out: Vec<SinkStatus> =
            running.values().map(|h| h.shared.status.lock().expect("status lock").clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Starts POSTing view `view_id`'s changes to `url`. Must be called inside a tokio runtime.
    pub fn start(
        &self,
        id: GlobalId,
        name: &str,
        hub: Arc<Hub>,
        view_id: GlobalId,
        view: &str,
        options: WebhookOptions,
    ) {
        let shared = Arc::new(SinkShared {
            status: Mutex::new(SinkStatus {
                name: name.to_string(),
                view: view.to_string(),
                url: options.url.clone(),
                state: "starting",
                last_acked_ts: None,
                pending_rows: 0,
                posts: 0,
                errors: 0,
                last_error: None,
            }),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
        });
        let reader = tokio::spawn(
            follow(shared.clone(), hub, view_id, options.snapshot)
                .instrument(tracing::info_span!("sink-follow", sink = %name)),
        );
        let sender = tokio::spawn(
            post_loop(shared.clone(), view.to_string(), options)
                .instrument(tracing::info_span!("sink-post", sink = %name)),
        );
        self.running.lock().expect("sinks lock").insert(id, SinkHandle { shared, tasks: vec![reader, sender] });
    }

    /// Stops a sink (its outstanding request is abandoned).
    pub fn stop(&self, id: GlobalId) {
        self.running.lock().expect("sinks lock").remove(&id);
    }
}

fn enqueue(shared: &SinkShared, batch: Batch) {
    let mut q = shared.queue.lock().expect("queue lock");
    match q.waiting.as_mut() {
        None => q.waiting = Some(batch),
        Some(w) => {
            let waiting = std::sync::Arc::make_mut(&mut w.updates);
            waiting.extend(batch.updates.iter().cloned());
            consolidate_updates(waiting);
            w.ts = batch.ts;
        }
    }
    let waiting = q.waiting.as_ref().map_or(0, |w| w.updates.len() as u64);
    drop(q);
    shared.status.lock().expect("status lock").pending_rows = waiting;
    shared.notify.notify_one();
}

async fn follow(shared: Arc<SinkShared>, hub: Arc<Hub>, view_id: GlobalId, send_snapshot: bool) {
    let mut follower = loop {
        match ViewFollower::start(hub.clone(), view_id, None).await {
            Ok((follower, ts, snapshot)) => {
                if send_snapshot {
                    enqueue(&shared, Batch { ts, updates: snapshot.into() });
                } else {
                    // Nothing to send until the view changes: caught up as of the start time.
                    let mut st = shared.status.lock().expect("status lock");
                    st.state = "running";
                    st.last_acked_ts = Some(ts);
                }
                break follower;
            }
            Err(FollowError::NotReady) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return close(&shared, e.to_string()),
        }
    };
    loop {
        match follower.next().await {
            Ok((batches, _)) => {
                for b in batches {
                    enqueue(&shared, b);
                }
            }
            Err(e) => return close(&shared, e.to_string()),
        }
    }
}

fn close(shared: &SinkShared, why: String) {
    shared.queue.lock().expect("queue lock").closed = Some(why.clone());
    let mut st = shared.status.lock().expect("status lock");
    st.state = "failed";
    st.last_error = Some(why);
    shared.notify.notify_one();
}

#[derive(Serialize)]
struct Body<'a> {
    view: &'a str,
    ts: Timestamp,
    rows: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    row: JsonRow<'a>,
    diff: Diff,
}

async fn post_loop(shared: Arc<SinkShared>, view: String, options: WebhookOptions) {
    let WebhookOptions { url, token, timeout, .. } = options;
    let authorization = token.map(|t| format!("Bearer {t}"));
    let client = match reqwest::Client::builder().timeout(timeout.unwrap_or(REQUEST_TIMEOUT)).build() {
        Ok(c) => c,
        Err(e) => return close(&shared, format!("http client: {e}")),
    };
    loop {
        let batch = loop {
            let taken = {
                let mut q = shared.queue.lock().expect("queue lock");
                match q.waiting.take() {
                    Some(b) => Some(Ok(b)),
                    None => q.closed.clone().map(Err),
                }
            };
            match taken {
                Some(Ok(b)) => break b,
                Some(Err(_)) => return,
                None => {
                    {
                        let mut st = shared.status.lock().expect("status lock");
                        if st.state != "failed" && st.last_acked_ts.is_some() {
                            st.state = "running";
                        }
                    }
                    shared.notify.notified().await;
                }
            }
        };
        // Once taken, this batch's content and key are fixed until it is acknowledged: a receiver
        // that applied it but whose answer was lost sees the same key again and skips it.
        let body = serde_json::to_vec(&Body {
            view: &view,
            ts: batch.ts,
            rows: batch.updates.iter().map(|(row, diff)| Entry { row: JsonRow(row), diff: *diff }).collect(),
        })
        .expect("rows serialize");
        let key = format!("{view}-{}", batch.ts);
        let in_flight = batch.updates.len() as u64;
        let mut backoff = BACKOFF_FIRST;
        loop {
            let mut request = client
                .post(&url)
                .header("content-type", "application/json")
                .header("idempotency-key", &key)
                .body(body.clone());
            if let Some(auth) = &authorization {
                request = request.header("authorization", auth);
            }
            let result = request.send().await;
            let failure = match result {
                Ok(resp) if resp.status().is_success() => None,
                Ok(resp) => Some(format!("HTTP {}", resp.status())),
                Err(e) => Some(format!("request failed: {e}")),
            };
            let waiting = shared.queue.lock().expect("queue lock").waiting.as_ref().map_or(0, |w| w.updates.len());
            let acked = {
                let mut st = shared.status.lock().expect("status lock");
                match failure {
                    None => {
                        st.posts += 1;
                        st.last_acked_ts = Some(batch.ts);
                        st.pending_rows = waiting as u64;
                        st.state = "running";
                        true
                    }
                    Some(err) => {
                        tracing::debug!(%err, ts = batch.ts, "sink POST failed; retrying");
                        st.errors += 1;
                        st.last_error = Some(err);
                        st.state = "retrying";
                        st.pending_rows = in_flight + waiting as u64;
                        false
                    }
                }
            };
            if acked {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}
