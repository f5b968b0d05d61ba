//! Requests per second per API key (Stripe: 100 in live mode, 25 in test mode), with
//! `governor`'s GCRA keyed limiters. Checked by [`super::auth::require_api_key`] right
//! after the key is known, so an unauthenticated flood costs one hash lookup each and never
//! spends a real key's budget. Over the limit: 429 `rate_limit` with `Retry-After`.
//!
//! The limit is the key's own [`AuthenticatedKey::rate_limit_per_second`], or this
//! limiter's default for the key's mode when that is 0. The burst equals the per-second
//! rate. State lives in memory, per process.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use event_store::Mode;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::auth::AuthenticatedKey;
use super::error::ApiError;

/// Default limits by mode, in requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitDefaults {
    pub live_per_second: u32,
    pub test_per_second: u32,
}

impl Default for RateLimitDefaults {
    fn default() -> RateLimitDefaults {
        RateLimitDefaults {
            live_per_second: 100,
            test_per_second: 25,
        }
    }
}

impl RateLimitDefaults {
    pub fn per_second(&self, mode: Mode) -> u32 {
        match mode {
            Mode::Live => self.live_per_second,
            Mode::Test => self.test_per_second,
        }
    }
}

/// Forget idle keys' state every this many checks, so memory follows the active keys.
const RETAIN_EVERY_CHECKS: u64 = 4_096;

/// One keyed limiter per distinct rate (a handful: the two defaults and any per-key
/// overrides), each keyed by `key_id`.
pub struct KeyRateLimiter {
    defaults: RateLimitDefaults,
    limiters: Mutex<HashMap<NonZeroU32, Arc<DefaultKeyedRateLimiter<String>>>>,
    checks: AtomicU64,
}

impl KeyRateLimiter {
    pub fn new(defaults: RateLimitDefaults) -> KeyRateLimiter {
        KeyRateLimiter {
            defaults,
            limiters: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request for `key`: `Ok` if within its limit, else the 429 to answer.
    pub fn check(&self, key: &AuthenticatedKey) -> Result<(), ApiError> {
        let rate = NonZeroU32::new(key.rate_limit_per_second)
            .or_else(|| NonZeroU32::new(self.defaults.per_second(key.mode)))
            .unwrap_or(NonZeroU32::MIN);
        let limiter = {
            let mut limiters = self
                .limiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(
                limiters
                    .entry(rate)
                    .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_second(rate)))),
            )
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY_CHECKS
            == RETAIN_EVERY_CHECKS - 1
        {
            limiter.retain_recent();
        }
        limiter.check_key(&key.key_id).map_err(|not_until| {
            ApiError::rate_limited(not_until.wait_time_from(limiter.clock().now()))
        })
    }
}

impl Default for KeyRateLimiter {
    fn default() -> KeyRateLimiter {
        KeyRateLimiter::new(RateLimitDefaults::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key_id: &str, mode: Mode, rate_limit_per_second: u32) -> AuthenticatedKey {
        AuthenticatedKey {
            key_id: key_id.to_owned(),
            project_id: "proj_1".to_owned(),
            mode,
            rate_limit_per_second,
        }
    }

    fn allowed_in_a_burst(limiter: &KeyRateLimiter, key: &AuthenticatedKey) -> usize {
        (0..1_000)
            .take_while(|_| limiter.check(key).is_ok())
            .count()
    }

    #[test]
    fn the_burst_is_the_rate_then_429_with_retry_after() {
        let limiter = KeyRateLimiter::default();
        let key = key("key_a", Mode::Test, 3);
        assert_eq!(allowed_in_a_burst(&limiter, &key), 3);
        let error = limiter.check(&key).unwrap_err();
        assert_eq!(error.status().as_u16(), 429);
        assert_eq!(error.retry_after_seconds(), Some(1));
    }

    #[test]
    fn defaults_apply_by_mode_when_the_key_has_none() {
        let limiter = KeyRateLimiter::new(RateLimitDefaults {
            live_per_second: 7,
            test_per_second: 4,
        });
        assert_eq!(allowed_in_a_burst(&limiter, &key("live", Mode::Live, 0)), 7);
        assert_eq!(allowed_in_a_burst(&limiter, &key("test", Mode::Test, 0)), 4);
        assert_eq!(RateLimitDefaults::default().per_second(Mode::Live), 100);
        assert_eq!(RateLimitDefaults::default().per_second(Mode::Test), 25);
    }

    #[test]
    fn keys_do_not_share_a_budget() {
        let limiter = KeyRateLimiter::default();
        let first = key("key_1", Mode::Live, 2);
        let second = key("key_2", Mode::Live, 2);
        assert_eq!(allowed_in_a_burst(&limiter, &first), 2);
        assert!(limiter.check(&second).is_ok());
    }
}
