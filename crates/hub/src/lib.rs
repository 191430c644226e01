//! The hub: every published view's change log, and the subscriptions that stream it.
//!
//! Owns: applying sealed engine output to each view's [`ViewLog`], serializing each timestamp's
//! message once, and handing subscribers a snapshot at `t` followed by every complete timestamp
//! after `t`, atomically (nothing missed, nothing repeated).
//!
//! Clocks: most views follow the engine's one frontier ([`Hub::apply`] seals every such view to
//! the same `upto`). A view registered with [`Hub::register_own_clock`] (an upstream view of
//! gateway mode) has its own frontier instead, advanced only by [`Hub::apply_view`] with the
//! upstream's timestamps; `apply` never touches it. Every guarantee (complete timestamps, in
//! order, snapshot then exactly the later ones) holds per view, whichever clock drives it.
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

pub mod timeline;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, watch};
use viewcast_changelog::{Retention, ViewLog};
use viewcast_plan::GlobalId;
use viewcast_repr::{Diff, RelationDesc, Row, Timestamp, Update};

pub use timeline::HubTimeline;
pub use wire::{Frame, FrameKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("unknown view \"{0}\"")]
    UnknownView(String),
    #[error("view \"{0}\" is not ready yet")]
    NotReady(String),
}

/// Why [`Hub::apply_view`] refused a step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyViewError {
    #[error("unknown view #{0}")]
    UnknownView(GlobalId),
    #[error("view \"{0}\" is driven by the engine's clock, not its own")]
    NotOwnClock(String),
    #[error("view \"{view}\": {source}")]
    Seal {
        view: String,
        #[source]
        source: viewcast_changelog::SealError,
    },
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
    /// Sealed by [`Hub::apply_view`] with its own timestamps rather than by the engine's steps.
    own_clock: bool,
}

#[derive(Default)]
struct HubState {
    /// Every time below this is applied to every view.
    frontier: Timestamp,
    views: HashMap<GlobalId, ViewEntry>,
    by_name: HashMap<String, GlobalId>,
}

impl ViewEntry {
    /// Seals the log through `upto` and broadcasts the frames (only if someone listens): one
    /// update per changed timestamp, and a progress frame at `upto - 1` if that time had no change
    /// and at least `progress_interval_ms` passed since the last frame.
    ///
    /// `consolidated`: `updates` are sorted by time and consolidated within each time (the
    /// engine's output), so the log does not consolidate them again.
    fn seal(
        &mut self,
        upto: Timestamp,
        updates: Vec<Update>,
        consolidated: bool,
        progress_interval_ms: Timestamp,
    ) -> Result<(), viewcast_changelog::SealError> {
        let batches =
            if consolidated { self.log.seal_consolidated(upto, updates)? } else { self.log.seal(upto, updates)? };
        *self.snapshot_cache.lock().expect("cache lock") = None;
        let last_ts = batches.last().map(|b| b.ts);
        if self.tx.receiver_count() == 0 {
            return Ok(());
        }
        for b in batches {
            let _ = self.tx.send(wire::update(&self.name, b.ts, b.updates));
        }
        let through = upto - 1;
        if let Some(t) = last_ts {
            self.last_frame_ts = t;
        }
        if last_ts != Some(through) && through >= self.last_frame_ts.saturating_add(progress_interval_ms) {
            let _ = self.tx.send(wire::progress(&self.name, through));
            self.last_frame_ts = through;
        }
        Ok(())
    }
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
    /// Bumped after every seal of any view (either clock), to wake [`Hub::wait_for_view`].
    sealed_epoch: watch::Sender<u64>,
    timeline: HubTimeline,
}

impl Hub {
    pub fn new(config: HubConfig) -> Hub {
        Hub {
            config,
            state: RwLock::new(HubState::default()),
            frontier_tx: watch::channel(0).0,
            sealed_epoch: watch::channel(0).0,
            timeline: HubTimeline::default(),
        }
    }

    /// How long steps took to reach the hub and to be applied (see [`timeline`]).
    pub fn timeline(&self) -> &HubTimeline {
        &self.timeline
    }

    /// Records a step through `upto` (timestamps are wall-clock ms) as it starts to be applied.
    fn step_started(&self, upto: Timestamp) -> std::time::Instant {
        let closed_us = upto.saturating_sub(1).saturating_mul(1000);
        self.timeline.close_to_apply.record_us(timeline::wall_us().saturating_sub(closed_us));
        std::time::Instant::now()
    }

    /// Publishes a view whose contents start at `as_of` (its first sealed changes are its initial contents).
    pub fn register(&self, id: GlobalId, name: &str, desc: RelationDesc, as_of: Timestamp) {
        self.insert(id, name, desc, as_of, false);
    }

    /// Publishes a view with its own clock: it is sealed only by [`Hub::apply_view`], whose first
    /// call (at any `upto` above `as_of`) carries its initial contents.
    pub fn register_own_clock(&self, id: GlobalId, name: &str, desc: RelationDesc, as_of: Timestamp) {
        self.insert(id, name, desc, as_of, true);
    }

    fn insert(&self, id: GlobalId, name: &str, desc: RelationDesc, as_of: Timestamp, own_clock: bool) {
        let mut st = self.state.write().expect("hub lock");
        let (tx, _) = broadcast::channel(self.config.queue_frames);
        let log = ViewLog::new(desc, as_of, self.config.retention);
        let entry = ViewEntry {
            name: name.to_string(),
            as_of,
            log,
            tx,
            snapshot_cache: Mutex::new(None),
            last_frame_ts: 0,
            own_clock,
        };
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
        drop(st);
        self.sealed_epoch.send_modify(|e| *e += 1);
    }

    /// Applies one sealed step of the engine: all changes at times below `upto`, per view, each
    /// view's sorted by time and consolidated within each time (as `EngineEvent::Sealed` carries them).
    /// Views without changes get a progress frame when [`HubConfig::progress_interval_ms`] has
    /// passed since their last frame. Frames are built only for views with subscribers.
    pub fn apply(&self, upto: Timestamp, changes: Vec<(GlobalId, Vec<Update>)>) {
        let started = self.step_started(upto);
        let mut st = self.state.write().expect("hub lock");
        let mut changed: HashMap<GlobalId, Vec<Update>> = changes.into_iter().collect();
        for (id, view) in st.views.iter_mut() {
            if view.own_clock || upto <= view.log.frontier() {
                continue; // Its own clock, or not yet live: registered after this step was sealed.
            }
            let updates = changed.remove(id).unwrap_or_default();
            if let Err(e) = view.seal(upto, updates, true, self.config.progress_interval_ms) {
                tracing::error!(view = %view.name, error = %e, "engine output out of order; dropping it");
            }
        }
        for id in changed.keys() {
            tracing::debug!(id, "sealed changes for an unregistered view ignored");
        }
        st.frontier = st.frontier.max(upto);
        // Published before the lock is released: whoever read the views at this frontier (a
        // SELECT) and then asks for the frontier must not get an older one, or it would take a
        // timestamp before what it saw as "everything sealed" (the late-joiner test's flake).
        self.frontier_tx.send_replace(st.frontier);
        drop(st);
        self.sealed_epoch.send_modify(|e| *e += 1);
        self.timeline.apply.record(started.elapsed());
    }

    /// Seals an own-clock view (see [`Hub::register_own_clock`]) through every time below `upto`:
    /// `updates` are all its changes at times in `[frontier, upto)`. Subscribers get one update
    /// frame per changed timestamp, then a progress frame at `upto - 1` if that time had none
    /// (throttled like the engine's views, see [`HubConfig::progress_interval_ms`]).
    /// A call with `upto` at or below the view's frontier and no updates is a no-op.
    pub fn apply_view(&self, id: GlobalId, upto: Timestamp, updates: Vec<Update>) -> Result<(), ApplyViewError> {
        let mut st = self.state.write().expect("hub lock");
        let view = st.views.get_mut(&id).ok_or(ApplyViewError::UnknownView(id))?;
        if !view.own_clock {
            return Err(ApplyViewError::NotOwnClock(view.name.clone()));
        }
        if upto <= view.log.frontier() && updates.is_empty() {
            return Ok(());
        }
        let started = self.step_started(upto);
        view.seal(upto, updates, false, self.config.progress_interval_ms)
            .map_err(|source| ApplyViewError::Seal { view: view.name.clone(), source })?;
        drop(st);
        self.sealed_epoch.send_modify(|e| *e += 1);
        self.timeline.apply.record(started.elapsed());
        Ok(())
    }

    /// Every time below the returned one is sealed in view `id`'s log (its own frontier).
    pub fn view_frontier(&self, id: GlobalId) -> Option<Timestamp> {
        self.state.read().expect("hub lock").views.get(&id).map(|v| v.log.frontier())
    }

    /// Resolves once every time below `ts` is sealed in view `id` (whichever clock drives it), or
    /// once the view is dropped.
    pub async fn wait_for_view(&self, id: GlobalId, ts: Timestamp) {
        let mut rx = self.sealed_epoch.subscribe();
        let _ = rx.wait_for(|_| self.view_frontier(id).is_none_or(|f| f >= ts)).await;
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
                    let mut frames: Vec<Frame> =
                        batches.into_iter().map(|b| wire::update(&entry.name, b.ts, b.updates.clone())).collect();
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

    /// Runs `f` over the contents of the given views at one common sealed timestamp of the engine's
    /// clock (the `Timestamp` passed). Own-clock views are read at their own last sealed time: their
    /// timestamps belong to another clock, so no common time with the engine's views exists.
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

    /// Every time below the returned one is applied to every view. Never older than the time
    /// any earlier [`Hub::read`] saw (both come from the same locked state).
    pub fn frontier(&self) -> Timestamp {
        self.state.read().expect("hub lock").frontier
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
    fn own_clock_views_keep_their_frontier_apart_from_the_engine() {
        // Unthrottled progress, to see every step's frame (throttling is tested on its own).
        let hub = Hub::new(HubConfig { progress_interval_ms: 0, ..HubConfig::default() });
        hub.register(1, "local", desc(), 0);
        hub.register_own_clock(2, "up", desc(), 0);
        assert!(matches!(hub.apply_view(1, 5, vec![]), Err(ApplyViewError::NotOwnClock(_))));
        hub.apply(10, vec![(1, vec![(r(1), 3, 1)]), (2, vec![(r(9), 3, 1)])]);
        assert_eq!(hub.view_frontier(1), Some(10));
        assert_eq!(hub.view_frontier(2), Some(0), "the engine's step does not seal an own-clock view");
        assert!(matches!(hub.subscribe("up", None), Err(HubError::NotReady(_))));
        // The upstream's clock is far ahead of the engine's: 1000 is its first complete time.
        hub.apply_view(2, 1001, vec![(r(7), 1000, 1), (r(8), 1000, 1)]).unwrap();
        let mut sub = hub.subscribe("up", None).unwrap();
        assert_eq!(sub.start_ts, 1000);
        hub.apply(20, vec![]);
        hub.apply_view(2, 1001, vec![]).unwrap();
        hub.apply_view(2, 1006, vec![(r(7), 1003, -1)]).unwrap();
        hub.apply_view(2, 1007, vec![]).unwrap();
        let frames: Vec<(String, u64)> = std::iter::from_fn(|| sub.updates.try_recv().ok())
            .map(|f| {
                let v = json(&f);
                (v["type"].as_str().unwrap().to_string(), v["ts"].as_u64().unwrap())
            })
            .collect();
        assert_eq!(frames, vec![("update".into(), 1003), ("progress".into(), 1005), ("progress".into(), 1006)]);
        assert!(hub.apply_view(2, 1010, vec![(r(1), 1002, 1)]).is_err(), "a time already sealed is refused");
        assert_eq!(hub.view_frontier(2), Some(1007));
        assert_eq!(hub.view_frontier(1), Some(20));
        let summaries = hub.summaries();
        assert_eq!(summaries.iter().map(|s| s.sealed_ts).collect::<Vec<_>>(), vec![19, 1006]);
    }

    #[tokio::test]
    async fn wait_for_view_follows_the_views_own_frontier() {
        let hub = Arc::new(Hub::new(HubConfig::default()));
        hub.register_own_clock(2, "up", desc(), 0);
        let waiter = tokio::spawn({
            let hub = hub.clone();
            async move { hub.wait_for_view(2, 500).await }
        });
        hub.apply(600, vec![]);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the engine's frontier says nothing about an own-clock view");
        hub.apply_view(2, 500, vec![]).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        // A dropped view does not leave its waiters hanging.
        let waiter = tokio::spawn({
            let hub = hub.clone();
            async move { hub.wait_for_view(2, 10_000).await }
        });
        hub.unregister(2);
        hub.apply(700, vec![]);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    /// The late-joiner flake: a test read the views (a SELECT, at the hub's frontier), then took
    /// `frontier()` as "everything sealed", and followed a stream until that time. The frontier
    /// was published after the lock was released, so under load it could be older than what the
    /// read had seen, and the follower stopped a timestamp short. Whatever a read saw, a later
    /// `frontier()` and `wait_for` must be past it, while another thread keeps applying.
    #[test]
    fn frontier_is_never_older_than_what_a_read_saw() {
        let hub = Arc::new(Hub::new(HubConfig::default()));
        hub.register(1, "v", desc(), 0);
        hub.apply(1, vec![]);
        let applier = std::thread::spawn({
            let hub = hub.clone();
            move || {
                for upto in 2..=20_000u64 {
                    hub.apply(upto, vec![(1, vec![(r(upto as i64), upto - 1, 1)])]);
                }
            }
        });
        let mut checks = 0u64;
        while !applier.is_finished() {
            let (seen, rows) = hub.read(|ts, get| (ts, get(1).map_or(0, |rows| rows.len())));
            let frontier = hub.frontier();
            assert!(frontier > seen, "read saw time {seen} ({rows} rows), then frontier() said {frontier}");
            checks += 1;
        }
        applier.join().unwrap();
        assert!(checks > 0);
        assert_eq!(hub.frontier(), 20_000);
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
