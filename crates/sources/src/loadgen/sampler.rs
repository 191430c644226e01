//! Samplers for skewed distributions, built once so each draw is O(1).

use super::rng::Rng;

/// Walker/Vose alias table: draws index `i` with probability `weights[i] / sum(weights)` using
/// one random word.
#[derive(Clone, Debug)]
pub(crate) struct AliasTable {
    /// Per column: the probability (scaled to `u32::MAX`) of keeping the column's own index.
    keep: Vec<u32>,
    alias: Vec<u32>,
}

impl AliasTable {
    pub(crate) fn new(weights: &[f64]) -> AliasTable {
        let n = weights.len();
        assert!(n > 0 && n < u32::MAX as usize, "alias table needs 1..2^32 weights");
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut keep = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * u32::MAX as f64) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1.0 up to rounding: always keep.
        AliasTable { keep, alias }
    }

    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let r = rng.next_u64();
        let column = (((r >> 32) * self.keep.len() as u64) >> 32) as usize;
        if (r as u32) < self.keep[column] {
            column
        } else {
            self.alias[column] as usize
        }
    }
}

/// Zipf weights `1 / k^s` for ranks `k = 1..=n`, normalized.
pub(crate) fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    let raw: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / total).collect()
}

/// A continuous power law over ranks `1..=n` (density ∝ x^-s), sampled by inverting its CDF:
/// Zipf-like without a table, for populations too large to tabulate (pages).
#[derive(Clone, Debug)]
pub(crate) struct PowerLaw {
    n: u64,
    one_minus_s: f64,
    span: f64,
}

impl PowerLaw {
    pub(crate) fn new(n: u64, s: f64) -> PowerLaw {
        assert!(s != 1.0 && n >= 1);
        let one_minus_s = 1.0 - s;
        PowerLaw { n, one_minus_s, span: ((n as f64 + 1.0).powf(one_minus_s)) - 1.0 }
    }

    /// A rank in `0..n`, 0 the most frequent.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> u64 {
        let x = (self.span * rng.unit() + 1.0).powf(1.0 / self.one_minus_s);
        (x as u64).saturating_sub(1).min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_table_matches_weights() {
        let w = [0.5, 0.25, 0.125, 0.125, 0.0];
        let t = AliasTable::new(&w);
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 5];
        let draws = 400_000;
        for _ in 0..draws {
            counts[t.sample(&mut rng)] += 1;
        }
        for (c, p) in counts.iter().zip(w) {
            let f = *c as f64 / draws as f64;
            assert!((f - p).abs() < 0.005, "{counts:?}");
        }
    }

    #[test]
    fn power_law_is_skewed_and_in_range() {
        let p = PowerLaw::new(1000, 1.2);
        let mut rng = Rng::new(1);
        let mut top = 0;
        for _ in 0..100_000 {
            let r = p.sample(&mut rng);
            assert!(r < 1000);
            top += (r == 0) as u32;
        }
        // Rank 1 holds ∫_1^2 x^-1.2 / ∫_1^1001 x^-1.2 ≈ 0.17 of the mass.
        assert!((12_000..22_000).contains(&top), "{top}");
    }
}
