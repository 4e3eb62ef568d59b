//! A lock-free duration histogram with fixed buckets, for the Prometheus endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of every duration histogram's buckets: from a tenth of a second (a
/// small book's stage) to the 30-minute job timeout.
pub const DURATION_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// Counts of observed durations per bucket, their number and their sum.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Observations at most each bound (not cumulative; [`DurationHistogram::cumulative`] adds up).
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl DurationHistogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// `(bound, observations at most bound)` for every bucket, as Prometheus wants them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        DURATION_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect()
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let histogram = DurationHistogram::default();
        for millis in [50, 300, 300, 4_000, 7_200_000] {
            histogram.observe(Duration::from_millis(millis));
        }
        let cumulative = histogram.cumulative();
        assert_eq!(cumulative[0], (0.1, 1));
        assert_eq!(cumulative[2], (0.5, 3));
        assert_eq!(cumulative[5], (5.0, 4));
        assert_eq!(cumulative.last().unwrap().1, 4, "two hours is past every bound");
        assert_eq!(histogram.count(), 5);
        assert!((histogram.sum_seconds() - 7_204.65).abs() < 1e-6);
    }
}
