//! Per-view change log: the consolidated contents at the last sealed timestamp, plus a bounded
//! history of recent sealed timestamps for resuming subscribers.
//!
//! Owns: turning sealed `(row, time, diff)` updates into one consolidated [`Batch`] per timestamp,
//! the current contents, and history retention. Pure and synchronous.
//! Never touches: threads, channels, sockets, serialization formats, dataflow.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::hash_table::{Entry, HashTable};

use viewcast_repr::{consolidate_timed, consolidate_updates, Diff, RelationDesc, Row, Timestamp, Update};

/// All changes of one view at one timestamp, consolidated (no row twice, no zero diff). The
/// updates are shared: the log's history and every reader of a batch hold the same allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub ts: Timestamp,
    pub updates: Arc<Vec<(Row, Diff)>>,
}

impl Batch {
    /// Rough heap size, for history limits.
    pub fn approx_bytes(&self) -> usize {
        self.updates.iter().map(|(r, _)| approx_row_bytes(r)).sum::<usize>() + 32
    }
}

fn approx_row_bytes(r: &Row) -> usize {
    use viewcast_repr::Datum;
    r.datums()
        .iter()
        .map(|d| match d {
            // Short text is inline; longer text is an `Arc<str>` (two counts and the bytes).
            Datum::Text(t) if !t.is_heap_allocated() => 24,
            Datum::Text(t) => 24 + 16 + t.len(),
            Datum::Jsonb(_) => 256,
            _ => 24,
        })
        .sum::<usize>()
        + 24
}

/// How much history a log keeps for resuming subscribers.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Keep batches whose timestamp is within this many ms of the newest sealed time.
    pub max_age_ms: u64,
    /// And at most this many bytes of them (oldest dropped first).
    pub max_bytes: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_ms: 60_000, max_bytes: 16 << 20 }
    }
}

/// Where a subscriber that last saw timestamp `since` can resume.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume<'a> {
    /// Every batch after `since`, in order (possibly none).
    Replay(Vec<&'a Batch>),
    /// History after `since` is no longer retained: a fresh snapshot is needed.
    TooOld,
}

/// The change log of one view.
#[derive(Debug)]
pub struct ViewLog {
    desc: RelationDesc,
    /// Contents through every time below `frontier`: each row with its multiplicity (never
    /// zero) and its hash. The hash is kept so that growing the table moves entries without
    /// hashing any row again: rehashing a million wide rows took the apply thread 0.5-0.9 s at a
    /// time (a `recentchanges` of the demo at 50,000 events/s), and took the engine's core with it.
    state: Contents,
    /// The sum of `state`'s multiplicities (the row count), kept as rows come and go.
    rows: i64,
    /// Every time below this is sealed and applied.
    frontier: Timestamp,
    /// Sealed batches, oldest first, each with a distinct increasing `ts`.
    history: VecDeque<Batch>,
    history_bytes: usize,
    /// The oldest time after which history is complete: batches with ts > `history_since` are all kept.
    history_since: Timestamp,
    retention: Retention,
}

/// A view's rows with their multiplicities and hashes, in [`Contents::SHARDS`] hash tables.
///
/// A hash table grows by moving every entry at once: one table of a million rows held the apply
/// thread 50-60 ms at each doubling (and on two cores took a core from the engine for as long).
/// Shards of equal size would all double at about the same moment, one after another within a few
/// ticks, which costs the same in all. So the shards take unequal shares of the rows, spread
/// geometrically over one octave (shard `i` gets a share proportional to `2^(i/64)`): while the
/// row count doubles, each shard doubles once, each at its own point of the octave. At most a
/// forty-fifth of the rows move at a time, and growths are spread evenly as the view grows.
#[derive(Debug)]
struct Contents {
    shards: Vec<HashTable<(u64, Row, Diff)>>,
}

/// `SHARD_BOUNDS[i]` is the least 32-bit hash slice (see [`Contents::shard`]) of shard `i + 1`:
/// the cumulative shares `2^(j/64)`, normalized, of the shards before it. The same for every view.
static SHARD_BOUNDS: std::sync::LazyLock<Vec<u32>> = std::sync::LazyLock::new(|| {
    let weights: Vec<f64> = (0..Contents::SHARDS).map(|i| (i as f64 / Contents::SHARDS as f64).exp2()).collect();
    let total: f64 = weights.iter().sum();
    let mut sum = 0.0;
    weights[..Contents::SHARDS - 1]
        .iter()
        .map(|w| {
            sum += w;
            (sum / total * 4_294_967_296.0) as u32
        })
        .collect()
});

impl Default for Contents {
    fn default() -> Self {
        Contents { shards: (0..Self::SHARDS).map(|_| HashTable::new()).collect() }
    }
}

impl Contents {
    const SHARDS: usize = 64;

    /// The shard of a hash, by its bits 24-55, which neither a shard's bucket index (the low bits,
    /// up to 16M buckets) nor hashbrown's control tag (the top seven) uses.
    fn shard(hash: u64) -> usize {
        let slice = (hash >> 24) as u32;
        SHARD_BOUNDS.partition_point(|&b| b <= slice)
    }

    /// Adds `diff` to `row`'s multiplicity, removing the row at zero.
    fn add(&mut self, row: &Row, diff: Diff) {
        let hash = row.fx_hash();
        let shard = Self::shard(hash);
        match self.shards[shard].entry(hash, |e| e.1 == *row, |e| e.0) {
            Entry::Occupied(mut o) => {
                o.get_mut().2 += diff;
                if o.get().2 == 0 {
                    o.remove();
                }
            }
            Entry::Vacant(v) => {
                v.insert((hash, row.clone(), diff));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(HashTable::is_empty)
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, Row, Diff)> {
        self.shards.iter().flat_map(HashTable::iter)
    }
}

impl ViewLog {
    /// An empty log whose first sealed time will be at or after `as_of`.
    pub fn new(desc: RelationDesc, as_of: Timestamp, retention: Retention) -> ViewLog {
        ViewLog {
            desc,
            state: Contents::default(),
            rows: 0,
            frontier: as_of,
            history: VecDeque::new(),
            history_bytes: 0,
            history_since: as_of.saturating_sub(1),
            retention,
        }
    }

    pub fn desc(&self) -> &RelationDesc {
        &self.desc
    }

    /// Every time below this is applied.
    pub fn frontier(&self) -> Timestamp {
        self.frontier
    }

    /// The last complete timestamp the contents reflect.
    pub fn sealed_ts(&self) -> Timestamp {
        self.frontier.saturating_sub(1)
    }

    /// Number of rows (with multiplicity) in the current contents.
    pub fn len(&self) -> i64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Applies sealed updates at times in `[frontier, upto)` and returns one batch per changed timestamp,
    /// in order. Updates at times outside that range are a caller bug and are rejected.
    pub fn seal(&mut self, upto: Timestamp, mut updates: Vec<Update>) -> Result<Vec<Batch>, SealError> {
        // Sorted by time, each time's rows consolidated (by a hash of each row: no string
        // comparisons of wide rows).
        consolidate_timed(&mut updates);
        self.seal_consolidated(upto, updates)
    }

    /// [`ViewLog::seal`] for updates already sorted by time and consolidated within each time, as
    /// the engine's `Sealed` events are: they are not consolidated again. (Checked in debug builds.)
    pub fn seal_consolidated(&mut self, upto: Timestamp, updates: Vec<Update>) -> Result<Vec<Batch>, SealError> {
        if upto < self.frontier {
            return Err(SealError::Regress { frontier: self.frontier, upto });
        }
        if let Some((_, t, _)) = updates.iter().find(|(_, t, _)| *t < self.frontier || *t >= upto) {
            return Err(SealError::OutOfRange { ts: *t, frontier: self.frontier, upto });
        }
        debug_assert!(
            {
                let mut seen = std::collections::HashSet::new();
                updates.windows(2).all(|w| w[0].1 <= w[1].1)
                    && updates.iter().all(|(row, t, d)| *d != 0 && seen.insert((row, *t)))
            },
            "seal_consolidated: updates sorted by time and consolidated"
        );
        let mut batches = Vec::new();
        let mut iter = updates.into_iter().peekable();
        while let Some((row, ts, diff)) = iter.next() {
            let mut group = vec![(row, diff)];
            while let Some((r, d)) = iter.next_if(|(_, t, _)| *t == ts).map(|(r, _, d)| (r, d)) {
                group.push((r, d));
            }
            for (row, diff) in &group {
                self.rows += diff;
                self.state.add(row, *diff);
            }
            batches.push(Batch { ts, updates: Arc::new(group) });
        }
        self.frontier = upto;
        for b in &batches {
            self.history_bytes += b.approx_bytes();
            self.history.push_back(b.clone());
        }
        self.compact();
        Ok(batches)
    }

    fn compact(&mut self) {
        let newest = self.sealed_ts();
        while let Some(front) = self.history.front() {
            let too_old = front.ts + self.retention.max_age_ms < newest;
            let too_big = self.history_bytes > self.retention.max_bytes;
            if !(too_old || too_big) {
                break;
            }
            let b = self.history.pop_front().expect("front exists");
            self.history_bytes -= b.approx_bytes();
            self.history_since = b.ts;
        }
        // Without retained batches, history is complete only after the current sealed time.
        if self.retention.max_age_ms == 0 || self.retention.max_bytes == 0 {
            self.history_since = newest;
        }
    }

    /// The current contents, sorted by row (deterministic), each row with its multiplicity.
    pub fn snapshot(&self) -> Vec<(Row, Diff)> {
        let mut rows: Vec<(Row, Diff)> = self.state.iter().map(|(_, r, d)| (r.clone(), *d)).collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// Iterates the contents without copying.
    pub fn rows(&self) -> impl Iterator<Item = (&Row, Diff)> {
        self.state.iter().map(|(_, r, d)| (r, *d))
    }

    /// The contents as of `ts` (at or after the oldest retained history), rewinding retained batches.
    pub fn snapshot_at(&self, ts: Timestamp) -> Option<Vec<(Row, Diff)>> {
        if ts >= self.sealed_ts() {
            return Some(self.snapshot());
        }
        if ts < self.history_since {
            return None;
        }
        let mut rows = self.snapshot();
        for b in self.history.iter().filter(|b| b.ts > ts) {
            rows.extend(b.updates.iter().map(|(r, d)| (r.clone(), -d)));
        }
        consolidate_updates(&mut rows);
        Some(rows)
    }

    /// What a subscriber that has everything through `since` needs next.
    pub fn resume(&self, since: Timestamp) -> Resume<'_> {
        if since >= self.sealed_ts() {
            return Resume::Replay(Vec::new());
        }
        if since < self.history_since {
            return Resume::TooOld;
        }
        Resume::Replay(self.history.iter().filter(|b| b.ts > since).collect())
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("seal to {upto} would move the frontier back from {frontier}")]
    Regress { frontier: Timestamp, upto: Timestamp },
    #[error("update at {ts} outside the sealable range [{frontier}, {upto})")]
    OutOfRange { ts: Timestamp, frontier: Timestamp, upto: Timestamp },
}

#[cfg(test)]
mod tests {
    use super::*;
    use viewcast_repr::Datum;

    fn r(i: i64) -> Row {
        Row::new(vec![Datum::Int(i)])
    }

    fn log() -> ViewLog {
        ViewLog::new(RelationDesc::default(), 10, Retention { max_age_ms: 100, max_bytes: 1 << 20 })
    }

    #[test]
    fn seal_groups_by_time_and_consolidates() {
        let mut l = log();
        let b = l.seal(20, vec![(r(1), 12, 1), (r(2), 11, 1), (r(1), 12, 1), (r(3), 15, 1), (r(3), 15, -1)]).unwrap();
        assert_eq!(
            b,
            vec![
                Batch { ts: 11, updates: Arc::new(vec![(r(2), 1)]) },
                Batch { ts: 12, updates: Arc::new(vec![(r(1), 2)]) }
            ]
        );
        assert_eq!(l.snapshot(), vec![(r(1), 2), (r(2), 1)]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.sealed_ts(), 19);
        assert!(l.seal(25, vec![(r(1), 19, 1)]).is_err(), "time below frontier is rejected");
        assert!(l.seal(15, vec![]).is_err(), "frontier never regresses");
    }

    /// Already consolidated input (the engine's) gives the same batches and contents either way.
    #[test]
    fn sealing_consolidated_input_matches_sealing_it_raw() {
        let steps: Vec<(Timestamp, Vec<Update>)> = vec![
            (20, vec![(r(2), 11, 1), (r(1), 12, 2), (r(4), 12, 1)]),
            (30, vec![(r(1), 20, -1), (r(3), 20, 1), (r(4), 25, -1), (r(5), 29, 3)]),
            (31, vec![]),
        ];
        let (mut raw, mut trusted) = (log(), log());
        for (upto, updates) in steps {
            // The order within a timestamp is unspecified: compare each batch sorted.
            let sorted = |batches: Vec<Batch>| -> Vec<(Timestamp, Vec<(Row, Diff)>)> {
                batches
                    .into_iter()
                    .map(|b| {
                        let mut u = b.updates.to_vec();
                        u.sort();
                        (b.ts, u)
                    })
                    .collect()
            };
            let a = sorted(raw.seal(upto, updates.clone()).unwrap());
            let b = sorted(trusted.seal_consolidated(upto, updates).unwrap());
            assert_eq!(a, b);
            assert_eq!(raw.snapshot(), trusted.snapshot());
            assert_eq!(trusted.len(), trusted.snapshot().iter().map(|(_, d)| d).sum::<Diff>(), "the kept row count");
        }
        assert!(trusted.seal_consolidated(35, vec![(r(1), 29, 1)]).is_err(), "time below frontier is rejected");
    }

    /// Shards take geometric shares of the rows (so they do not all grow at once): the last
    /// shard about twice the first, for sequential integers as for text rows.
    #[test]
    fn shards_take_geometric_shares() {
        for text in [false, true] {
            let mut c = Contents::default();
            for i in 0..256_000i64 {
                let row = if text { Row::new(vec![Datum::text(&format!("user{i}"))]) } else { r(i) };
                c.add(&row, 1);
            }
            let sizes: Vec<f64> = c.shards.iter().map(|s| s.len() as f64).collect();
            let (first, last) = (sizes[..8].iter().sum::<f64>(), sizes[56..].iter().sum::<f64>());
            let ratio = last / first;
            // Expected 2^(56/64) = 1.83 between the two groups of eight.
            assert!((1.6..2.1).contains(&ratio), "text {text}: last/first shards {ratio:.2}: {sizes:?}");
            assert!(sizes.iter().all(|&n| n > 2_000.0), "text {text}: every shard used: {sizes:?}");
        }
    }

    /// The sharded contents hold exactly the sum of every sealed update, row by row, while rows
    /// come and go across all shards and the shards grow and shrink.
    #[test]
    fn contents_equal_the_sum_of_sealed_updates() {
        use std::collections::BTreeMap;
        let mut l = log();
        let mut oracle: BTreeMap<Row, Diff> = BTreeMap::new();
        // A small deterministic generator: no dependency for one test.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..40u64 {
            let ts = 10 + step;
            let mut updates: BTreeMap<Row, Diff> = BTreeMap::new();
            for _ in 0..2_000 {
                let row = Row::new(vec![Datum::Int((next() % 20_000) as i64), Datum::text("w")]);
                let present = oracle.get(&row).copied().unwrap_or(0) + updates.get(&row).copied().unwrap_or(0);
                // Retract present rows often, so shards also empty out.
                let diff = if present > 0 && next() % 3 != 0 { -1 } else { 1 };
                *updates.entry(row).or_insert(0) += diff;
            }
            let updates: Vec<Update> =
                updates.into_iter().filter(|(_, d)| *d != 0).map(|(row, d)| (row, ts, d)).collect();
            for (row, _, d) in &updates {
                let n = oracle.entry(row.clone()).or_insert(0);
                *n += d;
                if *n == 0 {
                    oracle.remove(row);
                }
            }
            l.seal_consolidated(ts + 1, updates).unwrap();
            let want: Vec<(Row, Diff)> = oracle.iter().map(|(r, d)| (r.clone(), *d)).collect();
            assert_eq!(l.snapshot(), want, "contents after step {step}");
            assert_eq!(l.len(), oracle.values().sum::<Diff>());
            assert_eq!(l.is_empty(), oracle.is_empty());
        }
        assert!(oracle.len() > 1_000, "enough rows to fill every shard");
    }

    #[test]
    fn resume_replays_after_since_or_reports_too_old() {
        let mut l = log();
        l.seal(20, vec![(r(1), 11, 1)]).unwrap();
        l.seal(30, vec![(r(1), 25, -1), (r(2), 25, 1)]).unwrap();
        match l.resume(11) {
            Resume::Replay(b) => assert_eq!(b.iter().map(|b| b.ts).collect::<Vec<_>>(), vec![25]),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.snapshot_at(20).unwrap(), vec![(r(1), 1)]);
        // Age out the batch at 11: resuming from before it is impossible.
        l.seal(200, vec![(r(3), 150, 1)]).unwrap();
        assert_eq!(l.resume(5), Resume::TooOld);
        assert!(matches!(l.resume(150), Resume::Replay(ref b) if b.is_empty()));
        assert_eq!(l.snapshot_at(199).unwrap().len(), 2);
    }
}
