//! The hub: every published view's change log, and the subscriptions that stream it.
//!
//! Owns: applying sealed engine output to each view's [`ViewLog`], serializing each timestamp's
//! message once, and handing subscribers a snapshot at `t` followed by every complete timestamp
//! after `t`, atomically (nothing missed, nothing repeated).
//! Never touches: sockets, HTTP, SQL, dataflow. Overflow policy: each view's broadcast queue holds
//! at most [`HubConfig::queue_frames`] frames; a subscriber that falls further behind is told to
//! resync and gets a fresh snapshot (its backlog is dropped, so memory stays bounded).
//!
//! Progress: a view without changes gets a `progress` frame at most once per
//! [`HubConfig::progress_interval_ms`] of timestamp time (wall-clock ms), not at every tick, so an
//! unchanging view costs its subscribers about one frame a second instead of twenty. Updates are
//! never delayed by this (an update is itself progress through its timestamp). Readers that need
//! every advance of time (pgwire `SUBSCRIBE ... WITH (PROGRESS)`, sinks) wait on the hub's frontier
//! ([`Hub::wait_for`]) as well as on frames.

pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, watch};
use viewcast_changelog::{Retention, ViewLog};
use viewcast_plan::GlobalId;
use viewcast_repr::{Diff, RelationDesc, Row, Timestamp, Update};

pub use wire::{Frame, FrameKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("unknown view \"{0}\"")]
    UnknownView(String),
    #[error("view \"{0}\" is not ready yet")]
    NotReady(String),
}

#[derive(Clone, Copy, Debug)]
pub struct HubConfig {
    /// Frames buffered per view for subscribers that are behind (see the crate's overflow policy).
    pub queue_frames: usize,
    pub retention: Retention,
    /// Most timestamp time (ms) between two frames of an unchanging view: its subscribers get a
    /// `progress` frame once this much time has passed since the view's last frame. 0: every tick.
    pub progress_interval_ms: Timestamp,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig { queue_frames: 1024, retention: Retention::default(), progress_interval_ms: 1000 }
    }
}

struct ViewEntry {
    name: String,
    /// Its first sealed changes are at this time; it is readable once the log is past it.
    as_of: Timestamp,
    log: ViewLog,
    tx: broadcast::Sender<Frame>,
    /// The snapshot frame of the current sealed time, built once for every subscriber that joins then.
    snapshot_cache: Mutex<Option<Frame>>,
    /// The `ts` of the last update or progress frame sent to `tx` (progress throttling).
    last_frame_ts: Timestamp,
}

#[derive(Default)]
struct HubState {
    /// Every time below this is applied to every view.
    frontier: Timestamp,
    views: HashMap<GlobalId, ViewEntry>,
    by_name: HashMap<String, GlobalId>,
}

/// What a new subscriber is sent first.
#[derive(Debug)]
pub enum Start {
    /// The view's contents at the last sealed time.
    Snapshot(Frame),
    /// Resuming: every retained timestamp after `since` (possibly none), no snapshot.
    Replay(Vec<Frame>),
    /// History after `since` is gone: discard the replica; the snapshot follows.
    Resync(Frame),
}

/// What a new subscriber gets: how to start, then the frames of every later timestamp.
pub struct Subscription {
    pub view: String,
    pub id: GlobalId,
    pub desc: RelationDesc,
    pub start: Start,
    /// The last sealed timestamp included in `start`.
    pub start_ts: Timestamp,
    pub updates: broadcast::Receiver<Frame>,
}

/// A summary of one view, for listings.
#[derive(Clone, Debug)]
pub struct ViewSummary {
    pub id: GlobalId,
    pub name: String,
    pub desc: RelationDesc,
    pub rows: i64,
    pub sealed_ts: Timestamp,
}

pub struct Hub {
    config: HubConfig,
    state: RwLock<HubState>,
    frontier_tx: watch::Sender<Timestamp>,
}

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        Hub { config, state: RwLock::new(HubState::default()), frontier_tx: watch::channel(0).0 }
    }

    /// Publishes a view whose contents start at `as_of` (its first sealed changes are its initial contents).
    pub fn register(&self, id: GlobalId, name: &str, desc: RelationDesc, as_of: Timestamp) {
        let mut st = self.state.write().expect("hub lock");
        let (tx, _) = broadcast::channel(self.config.queue_frames);
        let log = ViewLog::new(desc, as_of, self.config.retention);
        let entry =
            ViewEntry { name: name.to_string(), as_of, log, tx, snapshot_cache: Mutex::new(None), last_frame_ts: 0 };
        st.views.insert(id, entry);
        st.by_name.insert(name.to_string(), id);
    }

    /// Stops publishing a view; its subscribers' streams end.
    pub fn unregister(&self, id: GlobalId) {
        let mut st = self.state.write().expect("hub lock");
        if let Some(v) = st.views.remove(&id) {
            st.by_name.remove(&v.name);
            let _ = v.tx.send(wire::error(Some(&v.name), "view was dropped"));
        }
    }

    /// Applies one sealed step of the engine: all changes at times below `upto`, per view.
    /// Views without changes get a progress frame when [`HubConfig::progress_interval_ms`] has
    /// passed since their last frame. Frames are built only for views with subscribers.
    pub fn apply(&self, upto: Timestamp, changes: Vec<(GlobalId, Vec<Update>)>) {
        let mut st = self.state.write().expect("hub lock");
        let mut changed: HashMap<GlobalId, Vec<Update>> = changes.into_iter().collect();
        for (id, view) in st.views.iter_mut() {
            if upto <= view.log.frontier() {
                continue; // Not yet live: registered after this step was sealed.
            }
            let updates = changed.remove(id).unwrap_or_default();
            let batches = match view.log.seal(upto, updates) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(view = %view.name, error = %e, "engine output out of order; dropping it");
                    continue;
                }
            };
            *view.snapshot_cache.lock().expect("cache lock") = None;
            let last_ts = batches.last().map(|b| b.ts);
            if view.tx.receiver_count() == 0 {
                continue;
            }
            for b in batches {
                let _ = view.tx.send(wire::update(&view.name, b.ts, Arc::new(b.updates)));
            }
            let through = upto - 1;
            if let Some(t) = last_ts {
                view.last_frame_ts = t;
            }
            if last_ts != Some(through)
                && through >= view.last_frame_ts.saturating_add(self.config.progress_interval_ms)
            {
                let _ = view.tx.send(wire::progress(&view.name, through));
                view.last_frame_ts = through;
            }
        }
        for id in changed.keys() {
            tracing::debug!(id, "sealed changes for an unregistered view ignored");
        }
        st.frontier = st.frontier.max(upto);
        drop(st);
        self.frontier_tx.send_replace(upto);
    }

    /// Subscribes to `view`: its snapshot at the current sealed time (or, with `since`, the retained
    /// timestamps after it, then a progress frame at the sealed time if the last of them is
    /// earlier) and then every later timestamp, with nothing missed or repeated.
    pub fn subscribe(&self, view: &str, since: Option<Timestamp>) -> Result<Subscription, HubError> {
        let st = self.state.read().expect("hub lock");
        let id = st.by_name.get(view).ok_or_else(|| HubError::UnknownView(view.to_string()))?;
        let entry = &st.views[id];
        if entry.log.frontier() <= entry.as_of {
            return Err(HubError::NotReady(view.to_string()));
        }
        let snapshot = || {
            let mut cache = entry.snapshot_cache.lock().expect("cache lock");
            cache
                .get_or_insert_with(|| {
                    let rows = Arc::new(entry.log.snapshot());
                    wire::snapshot(&entry.name, entry.log.sealed_ts(), entry.log.desc(), rows)
                })
                .clone()
        };
        let start = match since {
            None => Start::Snapshot(snapshot()),
            Some(since) => match entry.log.resume(since) {
                viewcast_changelog::Resume::Replay(batches) => {
                    let mut frames: Vec<Frame> = batches
                        .into_iter()
                        .map(|b| wire::update(&entry.name, b.ts, Arc::new(b.updates.clone())))
                        .collect();
                    // A resuming client learns at once how far the view is complete, without
                    // waiting for the next (throttled) progress frame.
                    let sealed = entry.log.sealed_ts();
                    if frames.last().and_then(|f| f.ts).unwrap_or(since) < sealed {
                        frames.push(wire::progress(&entry.name, sealed));
                    }
                    Start::Replay(frames)
                }
                viewcast_changelog::Resume::TooOld => Start::Resync(snapshot()),
            },
        };
        Ok(Subscription {
            view: entry.name.clone(),
            id: *id,
            desc: entry.log.desc().clone(),
            start,
            start_ts: entry.log.sealed_ts(),
            updates: entry.tx.subscribe(),
        })
    }

    /// Runs `f` over the contents of the given views at one common sealed timestamp.
    pub fn read<T>(&self, f: impl FnOnce(Timestamp, &dyn Fn(GlobalId) -> Option<Vec<(Row, Diff)>>) -> T) -> T {
        let st = self.state.read().expect("hub lock");
        let get = |id: GlobalId| st.views.get(&id).map(|v| v.log.rows().map(|(r, d)| (r.clone(), d)).collect());
        f(st.frontier.saturating_sub(1), &get)
    }

    pub fn is_published(&self, id: GlobalId) -> bool {
        self.state.read().expect("hub lock").views.contains_key(&id)
    }

    /// Whether `id` is published and its initial contents are sealed.
    pub fn is_ready(&self, id: GlobalId) -> bool {
        self.state.read().expect("hub lock").views.get(&id).is_some_and(|v| v.log.frontier() > v.as_of)
    }

    /// Every time below the returned one is applied to every view.
    pub fn frontier(&self) -> Timestamp {
        *self.frontier_tx.borrow()
    }

    /// Resolves once every time below `ts` is applied.
    pub async fn wait_for(&self, ts: Timestamp) {
        let mut rx = self.frontier_tx.subscribe();
        let _ = rx.wait_for(|f| *f >= ts).await;
    }

    pub fn summaries(&self) -> Vec<ViewSummary> {
        let st = self.state.read().expect("hub lock");
        let mut out: Vec<ViewSummary> = st
            .views
            .iter()
            .map(|(id, v)| ViewSummary {
                id: *id,
                name: v.name.clone(),
                desc: v.log.desc().clone(),
                rows: v.log.len(),
                sealed_ts: v.log.sealed_ts(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Subscribes to view `id` without serializing anything for it: runs `f` over the view's log
    /// under the same lock that takes the receiver, so the receiver carries exactly the timestamps
    /// after `f` saw the log's sealed time. Frames serve as wake-ups (their `ts` says how far the
    /// view is complete; progress frames are throttled, so wait on [`Hub::wait_for`] too to see
    /// every advance of time); typed changes are read back with [`Hub::with_log`] (`ViewLog::resume`),
    /// so every subscriber of a view shares its one log (pgwire `SUBSCRIBE`, sinks).
    pub fn subscribe_log<T>(
        &self,
        id: GlobalId,
        f: impl FnOnce(&ViewLog) -> T,
    ) -> Result<(T, broadcast::Receiver<Frame>), HubError> {
        let st = self.state.read().expect("hub lock");
        let entry = st.views.get(&id).ok_or_else(|| HubError::UnknownView(format!("#{id}")))?;
        if entry.log.frontier() <= entry.as_of {
            return Err(HubError::NotReady(entry.name.clone()));
        }
        Ok((f(&entry.log), entry.tx.subscribe()))
    }

    /// Runs `f` over view `id`'s log (contents, history, frontier) under the hub's read lock.
    pub fn with_log<T>(&self, id: GlobalId, f: impl FnOnce(&ViewLog) -> T) -> Result<T, HubError> {
        let st = self.state.read().expect("hub lock");
        let entry = st.views.get(&id).ok_or_else(|| HubError::UnknownView(format!("#{id}")))?;
        Ok(f(&entry.log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viewcast_repr::{ColumnType, Datum, ScalarType};

    fn desc() -> RelationDesc {
        RelationDesc::new([("n".to_string(), ColumnType::new(ScalarType::Int64, false))])
    }

    fn r(i: i64) -> Row {
        Row::new(vec![Datum::Int(i)])
    }

    fn json(f: &Frame) -> serde_json::Value {
        serde_json::from_slice(&f.bytes).unwrap()
    }

    #[test]
    fn late_subscriber_gets_snapshot_then_only_later_timestamps() {
        let hub = Hub::new(HubConfig::default());
        hub.register(1, "v", desc(), 100);
        assert!(matches!(hub.subscribe("v", None), Err(HubError::NotReady(_))));
        hub.apply(101, vec![(1, vec![(r(1), 100, 1), (r(2), 100, 1)])]);
        let mut sub = hub.subscribe("v", None).unwrap();
        let Start::Snapshot(snap) = &sub.start else { panic!("snapshot first") };
        let snap = json(snap);
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["ts"], 100);
        assert_eq!(snap["rows"].as_array().unwrap().len(), 2);
        hub.apply(105, vec![(1, vec![(r(1), 103, -1), (r(3), 103, 1), (r(3), 104, 1)])]);
        hub.apply(106, vec![]);
        let kinds: Vec<(String, u64)> = std::iter::from_fn(|| sub.updates.try_recv().ok())
            .map(|f| {
                let v = json(&f);
                (v["type"].as_str().unwrap().to_string(), v["ts"].as_u64().unwrap())
            })
            .collect();
        // No progress at 105: 104's update was sent less than a progress interval before.
        assert_eq!(kinds, vec![("update".into(), 103), ("update".into(), 104)]);
        assert!(matches!(hub.subscribe("nope", None), Err(HubError::UnknownView(_))));
        // Resuming from 100 replays 103 and 104, then says at once that 105 is complete.
        let resumed = hub.subscribe("v", Some(100)).unwrap();
        let Start::Replay(frames) = resumed.start else { panic!("replay") };
        assert_eq!(
            frames.iter().map(|f| (f.kind, f.ts.unwrap())).collect::<Vec<_>>(),
            vec![(FrameKind::Update, 103), (FrameKind::Update, 104), (FrameKind::Progress, 105)]
        );
        assert!(matches!(hub.subscribe("v", Some(105)).unwrap().start, Start::Replay(ref f) if f.is_empty()));
    }

    #[test]
    fn lagging_subscriber_is_detected_not_buffered_forever() {
        let hub = Hub::new(HubConfig { queue_frames: 4, ..HubConfig::default() });
        hub.register(1, "v", desc(), 0);
        hub.apply(1, vec![]);
        let mut sub = hub.subscribe("v", None).unwrap();
        for t in 1..20 {
            hub.apply(t + 1, vec![(1, vec![(r(t as i64), t, 1)])]);
        }
        assert!(matches!(sub.updates.try_recv(), Err(broadcast::error::TryRecvError::Lagged(_))));
        // A fresh subscription sees the full contents.
        let Start::Snapshot(snap) = hub.subscribe("v", None).unwrap().start else { panic!() };
        let snap = json(&snap);
        assert_eq!(snap["rows"].as_array().unwrap().len(), 19);
    }

    /// Random changes over 50 ms ticks: every changed timestamp arrives as an update at its own
    /// tick (never delayed), progress frames are at least the interval apart, and a subscriber
    /// never goes longer than the interval plus one tick without a frame telling it time passed.
    #[test]
    fn progress_is_throttled_but_updates_are_not_and_time_keeps_passing() {
        use rand::{Rng, SeedableRng};
        let interval = 1000;
        let hub = Hub::new(HubConfig { progress_interval_ms: interval, ..HubConfig::default() });
        hub.register(1, "v", desc(), 0);
        hub.apply(50, vec![]);
        let mut sub = hub.subscribe("v", None).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (mut last_seen, mut last_progress) = (sub.start_ts, None::<Timestamp>);
        let mut progress_frames = 0;
        for tick in 2..2_000u64 {
            let upto = tick * 50;
            let changed = rng.gen_bool(0.05);
            let changes = if changed { vec![(1, vec![(r(tick as i64), upto - 1, 1)])] } else { vec![] };
            hub.apply(upto, changes);
            let frames: Vec<Frame> = std::iter::from_fn(|| sub.updates.try_recv().ok()).collect();
            if changed {
                assert!(
                    frames.iter().any(|f| f.kind == FrameKind::Update && f.ts == Some(upto - 1)),
                    "update sent at once"
                );
            }
            for f in &frames {
                let ts = f.ts.unwrap();
                assert!(ts > last_seen, "frames go forward");
                last_seen = ts;
                if f.kind == FrameKind::Progress {
                    progress_frames += 1;
                    assert!(last_progress.is_none_or(|p| ts >= p + interval), "progress at most once per interval");
                    last_progress = Some(ts);
                }
            }
            assert!(upto - 1 - last_seen < interval + 50, "time passed unannounced: {last_seen} at {upto}");
        }
        assert!(progress_frames > 50 && progress_frames <= 100, "{progress_frames} progress frames in 100 s");
        // Interval 0 restores a progress frame at every tick without changes.
        let hub = Hub::new(HubConfig { progress_interval_ms: 0, ..HubConfig::default() });
        hub.register(1, "v", desc(), 0);
        hub.apply(1, vec![]);
        let mut sub = hub.subscribe("v", None).unwrap();
        for upto in 2..12 {
            hub.apply(upto, vec![]);
        }
        assert_eq!(std::iter::from_fn(|| sub.updates.try_recv().ok()).count(), 10);
    }
}
