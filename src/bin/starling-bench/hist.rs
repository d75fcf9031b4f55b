//! A log-linear latency histogram (HdrHistogram's layout, reduced to what the bench needs).
//!
//! Values are nanoseconds. Below 128 every value has its own bucket; above, each power of two is
//! split into 128 equal sub-buckets, so a bucket is at most 1/128 (0.78%) of its value wide.
//! Recording is a leading-zero count, a shift and one increment: no allocation, no branches that
//! depend on the data beyond one comparison.

/// Sub-buckets per power of two (2^SUB_BITS).
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for any `u64`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
    min: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
            min: u64::MAX,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let mantissa = (v >> shift) as usize; // in [SUB, 2*SUB)
    (shift as usize + 1) * SUB + (mantissa - SUB)
}

/// The lowest value that falls in bucket `i`, and the bucket's width.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, 1);
    }
    let shift = (i / SUB - 1) as u32;
    let mantissa = (i % SUB + SUB) as u64;
    (mantissa << shift, 1u64 << shift)
}

impl Histogram {
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += *b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.min = self.min.min(other.min);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the midpoint of the bucket holding the
    /// `ceil(q * n)`-th smallest sample, clamped to the recorded min and max (the max itself for
    /// the last sample). 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bucket_range(i);
                return (lo + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        let mut prev_end = 0u64;
        for i in 0..(40 * SUB) {
            let (lo, w) = bucket_range(i);
            assert_eq!(lo, prev_end, "bucket {i}");
            assert_eq!(index(lo), i);
            assert_eq!(index(lo + w - 1), i);
            if lo >= SUB as u64 {
                assert!((w as f64) / (lo as f64) <= 1.0 / 128.0 + 1e-12);
            }
            prev_end = lo + w;
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, want) in [
            (0.5, 50_000_000f64),
            (0.99, 99_000_000.0),
            (0.999, 99_900_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!(
                (got - want).abs() / want < 0.01,
                "q={q} got={got} want={want}"
            );
        }
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.min(), 1000);
        let mut h2 = Histogram::default();
        h2.record(7);
        h.merge(&h2);
        assert_eq!(h.count(), 100_001);
        assert_eq!(h.quantile(0.0), 7);
    }
}
