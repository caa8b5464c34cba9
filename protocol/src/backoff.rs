//! How long to wait before trying again: one doubling schedule with a cap, and
//! one jitter, for every retry loop of both ends (the broker waiting out another
//! process's lock, a client retrying a locked write, reconnecting to a restarting
//! broker, or polling for a broker it started).

use std::time::Duration;

/// A doubling delay schedule: `base` before the first retry, twice as long before
/// each next one, never longer than `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub base: Duration,
    /// Longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// A schedule starting at `base`, doubling, capped at `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The delay before retry number `retry`, counted from 0: `base`, `2 × base`,
    /// `4 × base`, … up to `cap`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.base.saturating_mul(1u32 << retry.min(31)).min(self.cap)
    }
}

/// `d` scaled by a random factor in `[low, high)`: spreads the retries of many
/// processes that failed at the same moment, so they do not knock again in step.
/// Without OS randomness the factor is the middle of the range.
pub fn jitter(d: Duration, low: f64, high: f64) -> Duration {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    let unit = f64::from(r) / (f64::from(u32::MAX) + 1.0);
    d.mul_f64(low + (high - low) * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_doubles_up_to_its_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let got: Vec<u128> = (0..6).map(|r| b.delay(r).as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(b.delay(40), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_its_range() {
        let d = Duration::from_millis(100);
        for _ in 0..1000 {
            let j = jitter(d, 0.5, 1.5);
            assert!(j >= Duration::from_millis(50) && j < Duration::from_millis(150), "{j:?}");
            let j = jitter(d, 0.5, 1.0);
            assert!(j >= Duration::from_millis(50) && j < Duration::from_millis(100), "{j:?}");
        }
    }
}
