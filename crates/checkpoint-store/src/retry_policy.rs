//! How long a job waits before its next attempt after a retryable failure.
//!
//! This is the one place that knows the `backoff` crate: the policy is exponential with jitter,
//! computed with `backoff`'s [`ExponentialBackoff`](backoff::ExponentialBackoff). Moving to another
//! backoff crate touches only this file.

use std::time::Duration;

use backoff::backoff::Backoff;

/// Exponential backoff with jitter between attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt, before jitter.
    pub initial_delay: Duration,
    /// Factor by which the delay grows with each further attempt.
    pub multiplier: f64,
    /// Upper bound on the delay, before jitter.
    pub max_delay: Duration,
    /// Jitter: the delay is drawn from `delay × (1 ± randomization_factor)`.
    pub randomization_factor: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_secs(10),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30 * 60),
            randomization_factor: 0.25,
        }
    }
}

impl RetryPolicy {
    /// A policy without jitter or growth: every retry waits exactly `delay`. For tests and
    /// for operators who want predictable schedules.
    pub fn fixed(delay: Duration) -> RetryPolicy {
        RetryPolicy { initial_delay: delay, multiplier: 1.0, max_delay: delay, randomization_factor: 0.0 }
    }

    /// The delay before the attempt that follows failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let mut policy = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial_delay)
            .with_multiplier(self.multiplier.max(1.0))
            .with_max_interval(self.max_delay)
            .with_randomization_factor(self.randomization_factor.clamp(0.0, 1.0))
            .with_max_elapsed_time(None)
            .build();
        // Attempts are bounded by max_attempts; cap the walk anyway so a corrupt count costs
        // nothing. The interval stops growing at max_delay long before 64 steps.
        let steps = attempt.clamp(1, 64);
        let mut delay = self.initial_delay;
        for _ in 0..steps {
            // With no max_elapsed_time, next_backoff always yields a delay.
            delay = policy.next_backoff().unwrap_or(self.max_delay);
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(5),
            randomization_factor: 0.0,
        };
        let delays: Vec<u64> = (1..=5).map(|a| policy.delay_after(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let policy = RetryPolicy { randomization_factor: 0.5, ..RetryPolicy::default() };
        for _ in 0..200 {
            let delay = policy.delay_after(1).as_secs_f64();
            assert!((5.0..=15.0 + 1e-6).contains(&delay), "{delay}");
        }
    }
}
