//! Where a frame's time goes between its timestamp closing and its bytes reaching a socket.
//!
//! One [`StageHistogram`] per stage: lock-free log-linear buckets (12.5% wide), a few atomic adds
//! per record, so the stages stay measured in production. `/api/v1/stats` reports them, with the
//! raw buckets so a reader can subtract two reports and get the stages of one measurement window
//! (the fan-out bench does).
//!
//! The hub's stages (see [`HubTimeline`]): `close_to_apply`, from the wall-clock millisecond a
//! timestamp names (a tick's close, for the engine's clock; the upstream's time, in gateway mode)
//! to the hub starting to apply it; `apply`, the hub's seal of every view, serialization and
//! broadcast of one step. The gateway adds its own stages after these.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Values below this many microseconds get a bucket each.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two above [`LINEAR`] (3 bits: 12.5% wide).
const SUB_BITS: u32 = 3;
const BUCKETS: usize = LINEAR as usize + (64 - 4) * (1 << SUB_BITS);

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= 4
    let sub = (us >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    LINEAR as usize + (exp as usize - 4) * (1 << SUB_BITS) + sub as usize
}

/// The largest value (µs) that falls into bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let j = i - LINEAR as usize;
    let exp = (j >> SUB_BITS) as u32 + 4;
    let sub = (j & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    ((1u64 << SUB_BITS) + sub + 1).saturating_mul(width) - 1
}

/// A histogram of one stage's durations in microseconds.
pub struct StageHistogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
}

impl Default for StageHistogram {
    fn default() -> Self {
        StageHistogram { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), max_us: AtomicU64::new(0) }
    }
}

impl std::fmt::Debug for StageHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.snapshot();
        f.debug_struct("StageHistogram").field("n", &snap.count()).field("max_us", &snap.max_us).finish()
    }
}

impl StageHistogram {
    pub fn record(&self, d: Duration) {
        self.record_us(d.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn record_us(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The counts so far (each bucket read once; concurrent records may or may not be in).
    pub fn snapshot(&self) -> StageSnapshot {
        StageSnapshot {
            counts: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram kept by one task for a shared [`StageHistogram`]: plain counts, added to the shared
/// one by [`LocalHistogram::flush_into`], so a loop that records once per delivery pays no
/// contended atomic per record.
pub struct LocalHistogram {
    counts: Box<[u64]>,
    max_us: u64,
    recorded: u64,
}

impl Default for LocalHistogram {
    fn default() -> Self {
        LocalHistogram { counts: vec![0; BUCKETS].into_boxed_slice(), max_us: 0, recorded: 0 }
    }
}

impl LocalHistogram {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.counts[bucket_of(us)] += 1;
        self.max_us = self.max_us.max(us);
        self.recorded += 1;
    }

    /// Adds what was recorded since the last flush to `shared`.
    pub fn flush_into(&mut self, shared: &StageHistogram) {
        if self.recorded == 0 {
            return;
        }
        for (i, c) in self.counts.iter_mut().enumerate().filter(|(_, c)| **c > 0) {
            shared.buckets[i].fetch_add(std::mem::take(c), Ordering::Relaxed);
        }
        shared.max_us.fetch_max(std::mem::take(&mut self.max_us), Ordering::Relaxed);
        self.recorded = 0;
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSnapshot {
    counts: Vec<u64>,
    max_us: u64,
}

impl StageSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound (µs) of the bucket holding quantile `q` (0..=1); 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper(i).min(self.max_us);
            }
        }
        self.max_us
    }

    /// `{"n", "p50_us", "p90_us", "p99_us", "max_us", "buckets": [[upper_us, count], ..]}` (non-empty buckets).
    pub fn to_json(&self) -> Value {
        let buckets: Vec<Value> =
            self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| json!([bucket_upper(i), c])).collect();
        json!({
            "n": self.count(),
            "p50_us": self.quantile_us(0.50),
            "p90_us": self.quantile_us(0.90),
            "p99_us": self.quantile_us(0.99),
            "max_us": self.max_us,
            "buckets": buckets,
        })
    }
}

/// The hub's stages of every applied step (both clocks).
#[derive(Default)]
pub struct HubTimeline {
    /// From the wall-clock time a step's last timestamp names to the hub starting to apply it.
    pub close_to_apply: StageHistogram,
    /// Applying one step: the hub's lock, every view's seal, serialization, broadcast.
    pub apply: StageHistogram,
}

impl HubTimeline {
    pub fn to_json(&self) -> Value {
        json!({ "close_to_apply": self.close_to_apply.snapshot().to_json(), "apply": self.apply.snapshot().to_json() })
    }
}

/// Microseconds since the Unix epoch (timestamps name wall-clock milliseconds).
pub fn wall_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_and_are_at_most_an_eighth_wide() {
        let mut last = 0;
        for i in 0..BUCKETS - 1 {
            let upper = bucket_upper(i);
            assert!(i == 0 || upper > last, "bucket {i} upper {upper} after {last}");
            assert_eq!(bucket_of(upper), i, "upper bound of {i} is in it");
            assert_eq!(bucket_of(upper + 1), i + 1, "the next value starts bucket {}", i + 1);
            if upper > LINEAR {
                assert!((upper - last) as f64 <= upper as f64 / 8.0 + 1.0, "bucket {i} too wide");
            }
            last = upper;
        }
    }

    #[test]
    fn quantiles_against_a_sorted_oracle() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let h = StageHistogram::default();
        let mut all: Vec<u64> = (0..20_000).map(|_| rng.gen_range(0..2_000_000u64) >> rng.gen_range(0..12)).collect();
        for v in &all {
            h.record_us(*v);
        }
        all.sort_unstable();
        let snap = h.snapshot();
        assert_eq!(snap.count(), 20_000);
        for q in [0.5, 0.9, 0.99, 1.0] {
            let exact = all[((q * all.len() as f64).ceil() as usize).max(1) - 1];
            let got = snap.quantile_us(q);
            assert!(got >= exact && got as f64 <= exact as f64 * 1.125 + 1.0, "q{q}: {got} vs exact {exact}");
        }
        assert_eq!(snap.quantile_us(1.0), *all.last().unwrap());
        assert_eq!(StageHistogram::default().snapshot().quantile_us(0.99), 0);
        // Recorded locally and flushed in parts: the same counts as recorded directly.
        let shared = StageHistogram::default();
        let mut local = LocalHistogram::default();
        for (i, v) in all.iter().enumerate() {
            local.record(Duration::from_micros(*v));
            if i % 7_000 == 0 {
                local.flush_into(&shared);
            }
        }
        local.flush_into(&shared);
        local.flush_into(&shared);
        assert_eq!(shared.snapshot(), snap);
    }
}
