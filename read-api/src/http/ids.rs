//! Stripe-shaped object ids: a prefix and 24 random base62 characters (about 143 bits,
//! from the thread-local CSPRNG), e.g. `cus_4QbXq1dZk0w9YbGm3TnVc2Lr`. Unguessable, so an
//! id can appear in a URL without revealing how many objects exist.
//!
//! The prefixes of STRIPE-CONVENTIONS.md §1.6 that the API hands out are constants here;
//! a resource with another prefix passes its own to [`new_id`].

use rand::distr::{Alphanumeric, SampleString};

/// Random characters after the prefix.
pub const ID_RANDOM_CHARS: usize = 24;

pub const CUSTOMER: &str = "cus_";
pub const PAYMENT_METHOD: &str = "pm_";
pub const PAYMENT_INTENT: &str = "pi_";
pub const CHARGE: &str = "ch_";
pub const REFUND: &str = "re_";
pub const EVENT: &str = "evt_";
pub const REQUEST: &str = "req_";

/// A new id: `prefix` (which ends with `_`) followed by [`ID_RANDOM_CHARS`] base62
/// characters.
pub fn new_id(prefix: &str) -> String {
    debug_assert!(
        prefix.ends_with('_'),
        "id prefix {prefix:?} must end with '_'"
    );
    let mut id = String::with_capacity(prefix.len() + ID_RANDOM_CHARS);
    id.push_str(prefix);
    Alphanumeric.append_string(&mut rand::rng(), &mut id, ID_RANDOM_CHARS);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_prefix_and_24_base62_characters() {
        for prefix in [
            CUSTOMER,
            PAYMENT_METHOD,
            PAYMENT_INTENT,
            CHARGE,
            REFUND,
            EVENT,
            REQUEST,
        ] {
            let id = new_id(prefix);
            let random = id.strip_prefix(prefix).unwrap();
            assert_eq!(random.len(), ID_RANDOM_CHARS, "{id}");
            assert!(random.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
        }
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_id(CUSTOMER)).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
