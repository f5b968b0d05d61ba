//! When a failed delivery is tried again.
//!
//! The first attempt is made as soon as the event is fanned out. After a failed attempt
//! number `n` (1, 2, …) the next comes `min(1 min × 2^(n-1), 12 h)` later, times a jitter
//! factor drawn uniformly from `[1 - j, 1 + j]` (`j` = 10 % by default), so that endpoints
//! that failed together are not retried in lockstep. Retries stop three days after the
//! first attempt: a retry that would fall later is made at the three-day mark instead, and
//! a failure at or after that mark fails the delivery for good.
//!
//! Without jitter, attempts are made at 0, 1 min, 3 min, 7 min, 15 min, 31 min, 1 h 03,
//! 2 h 07, 4 h 15, 8 h 31, 17 h 03, 29 h 03, 41 h 03, 53 h 03, 65 h 03 and 72 h: sixteen in
//! all ([`RetrySchedule::plan`]).

use chrono::{DateTime, Duration, Utc};

/// The wait after the first failure.
pub const FIRST_RETRY_SECONDS: i64 = 60;
/// The longest wait between two attempts.
pub const MAX_RETRY_INTERVAL_SECONDS: i64 = 12 * 60 * 60;
/// How long after its first attempt a delivery is given up.
pub const RETRY_WINDOW_SECONDS: i64 = 3 * 24 * 60 * 60;
/// Each wait is stretched or shrunk by up to this much, at random.
pub const DEFAULT_JITTER_PERCENT: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    pub first_retry_seconds: i64,
    pub max_interval_seconds: i64,
    pub window_seconds: i64,
    /// 0 to 100.
    pub jitter_percent: u32,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self {
            first_retry_seconds: FIRST_RETRY_SECONDS,
            max_interval_seconds: MAX_RETRY_INTERVAL_SECONDS,
            window_seconds: RETRY_WINDOW_SECONDS,
            jitter_percent: DEFAULT_JITTER_PERCENT,
        }
    }
}

impl RetrySchedule {
    /// The same schedule without jitter (tests that assert exact times).
    pub fn without_jitter(self) -> Self {
        Self {
            jitter_percent: 0,
            ..self
        }
    }

    /// The wait after failed attempt number `attempt` (from 1), before jitter.
    pub fn interval(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(40);
        let seconds = self
            .first_retry_seconds
            .saturating_mul(1_i64 << doublings)
            .min(self.max_interval_seconds);
        Duration::seconds(seconds)
    }

    /// When to try again after attempt number `attempt` failed at `attempted_at`, for a
    /// delivery first tried at `first_attempt_at`; `None` when that was the last attempt.
    /// `jitter` is a sample from [-1, 1] (0 for none).
    pub fn next_attempt(
        &self,
        first_attempt_at: DateTime<Utc>,
        attempt: u32,
        attempted_at: DateTime<Utc>,
        jitter: f64,
    ) -> Option<DateTime<Utc>> {
        let deadline = first_attempt_at + Duration::seconds(self.window_seconds);
        if attempted_at >= deadline {
            return None;
        }
        let interval = self.interval(attempt);
        let stretch = f64::from(self.jitter_percent.min(100)) / 100.0 * jitter.clamp(-1.0, 1.0);
        // Milliseconds fit an f64 exactly for any interval we use (at most 12 h).
        let jittered_ms = (interval.num_milliseconds() as f64 * (1.0 + stretch)).round() as i64;
        Some((attempted_at + Duration::milliseconds(jittered_ms.max(0))).min(deadline))
    }

    /// The times of every attempt of a delivery that always fails, without jitter.
    pub fn plan(&self, first_attempt_at: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut times = vec![first_attempt_at];
        let mut attempt = 1;
        while let Some(next) =
            self.next_attempt(first_attempt_at, attempt, times[times.len() - 1], 0.0)
        {
            times.push(next);
            attempt += 1;
        }
        times
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_plan() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let minutes: Vec<i64> = RetrySchedule::default()
            .plan(start)
            .iter()
            .map(|time| (*time - start).num_minutes())
            .collect();
        assert_eq!(
            minutes,
            [0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 1743, 2463, 3183, 3903, 4320]
        );
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_the_window() {
        let schedule = RetrySchedule::default();
        let start = DateTime::<Utc>::UNIX_EPOCH;
        for (jitter, expected_seconds) in [(-1.0, 54), (0.0, 60), (1.0, 66), (7.0, 66)] {
            let next = schedule.next_attempt(start, 1, start, jitter).unwrap();
            assert_eq!((next - start).num_seconds(), expected_seconds);
        }
        let late = start + Duration::hours(71);
        assert_eq!(
            schedule.next_attempt(start, 15, late, 1.0),
            Some(start + Duration::hours(72))
        );
        assert_eq!(
            schedule.next_attempt(start, 16, start + Duration::hours(72), 0.0),
            None
        );
    }
}
