//! A histogram with fixed buckets, counted with atomics: observing a value is two
//! relaxed additions (its bucket and the sum) and a search of at most 24 bounds,
//! with no lock, so any thread may observe on the write path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use litebroker_protocol::HistogramValue;

/// Most buckets a histogram has (its bounds, plus the one above the highest).
const MAX_BUCKETS: usize = 24;

/// Bounds of the durations (in µs): 5 µs to 10 s in 1-2.5-5 steps. A one-row
/// write through the broker takes tens of microseconds; a lock wait, seconds.
pub const LATENCY_US: &[u64] = &[
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Bounds of a write session's hold (in µs): 1 ms to a minute (the lease is 30 s
/// by default).
pub const HOLD_US: &[u64] =
    &[1_000, 10_000, 100_000, 1_000_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000];

/// Bounds of a group's size (requests per transaction): powers of two up to the
/// default `--max-group-requests`.
pub const GROUP_SIZE: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Observations counted per bucket (a value falls into the first bucket whose
/// bound is at least the value), with their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram with `bounds` (ascending, at most 23).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.len() < MAX_BUCKETS && bounds.windows(2).all(|w| w[0] < w[1]), "bad bounds");
        Histogram { bounds, buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0) }
    }

    /// Counts one observation of `v` (in the histogram's unit).
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Counts one duration, in microseconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Observations so far (the sum of the buckets, so that it always equals the
    /// `+Inf` bucket of the exposition).
    pub fn count(&self) -> u64 {
        self.buckets[..=self.bounds.len()].iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations, in the histogram's unit.
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// The figures for the wire, each bound and the sum divided by `per_unit` (1e6
    /// for microseconds into seconds, the base unit). Dividing keeps `5 µs` the
    /// double nearest 0.000005, which prints as such; multiplying by 1e-6 would not.
    pub fn value(&self, per_unit: f64) -> HistogramValue {
        HistogramValue {
            bounds: self.bounds.iter().map(|&b| b as f64 / per_unit).collect(),
            counts: self.buckets[..=self.bounds.len()].iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            sum: self.sum() as f64 / per_unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_falls_into_the_first_bucket_whose_bound_is_at_least_it() {
        let h = Histogram::new(&[10, 100]);
        for v in [0, 10, 11, 100, 101, u64::MAX / 4] {
            h.observe(v);
        }
        let v = h.value(1.0);
        assert_eq!(v.counts, [2, 2, 2]);
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum(), 10 + 11 + 100 + 101 + u64::MAX / 4);
        assert_eq!(v.bounds, [10.0, 100.0]);
        let s = Histogram::new(LATENCY_US);
        s.observe_duration(Duration::from_micros(7));
        let v = s.value(1e6);
        assert_eq!((v.counts[1], v.bounds[1], v.sum), (1, 0.00001, 0.000007));
        assert_eq!(format!("{}", v.bounds[0]), "0.000005");
    }
}
