//! New ids and secrets. Stripe-style: a type prefix and 24 random base62 characters
//! (`cus_…`, `pi_…`); secrets are longer. Randomness lives here, not in `domain`.

use rand::distr::{Alphanumeric, SampleString};

/// Random characters after the prefix of an id.
pub const ID_RANDOM_CHARS: usize = 24;
/// Random characters of an API key secret (~190 bits).
pub const SECRET_RANDOM_CHARS: usize = 32;

pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        Alphanumeric.sample_string(&mut rand::rng(), ID_RANDOM_CHARS)
    )
}

/// A new secret API key for `livemode`: `sk_live_…` or `sk_test_…`.
pub fn new_secret_key(livemode: bool) -> String {
    let mode = if livemode { "live" } else { "test" };
    format!(
        "sk_{mode}_{}",
        Alphanumeric.sample_string(&mut rand::rng(), SECRET_RANDOM_CHARS)
    )
}

/// A long random token for capability URLs (a hosted invoice page, its PDF): `<prefix>_…`.
pub fn new_token(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        Alphanumeric.sample_string(&mut rand::rng(), SECRET_RANDOM_CHARS)
    )
}

/// A new webhook signing secret: `whsec_…`. Deliveries are signed with the whole string.
pub fn new_signing_secret() -> String {
    format!(
        "whsec_{}",
        Alphanumeric.sample_string(&mut rand::rng(), SECRET_RANDOM_CHARS)
    )
}

/// How a secret is stored and looked up: lowercase hex SHA-256. Secrets are long and
/// random, so a fast hash is enough (no password stretching needed).
pub fn secret_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What operators see of a key: its mode prefix and last four characters.
pub fn secret_display(secret: &str) -> String {
    let prefix = secret.get(..8).unwrap_or("sk_");
    let last4 = secret
        .char_indices()
        .rev()
        .nth(3)
        .map_or(secret, |(index, _)| &secret[index..]);
    format!("{prefix}…{last4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_have_their_prefix_and_length() {
        let id = new_id("cus");
        assert!(id.starts_with("cus_") && id.len() == 4 + ID_RANDOM_CHARS);
        assert_ne!(new_id("cus"), new_id("cus"));
        let secret = new_secret_key(false);
        assert!(secret.starts_with("sk_test_"));
        assert!(new_secret_key(true).starts_with("sk_live_"));
        assert!(new_signing_secret().starts_with("whsec_"));
        assert_ne!(new_signing_secret(), new_signing_secret());
        assert_eq!(secret_hash(&secret).len(), 64);
        assert_ne!(secret_hash(&secret), secret_hash(&new_secret_key(false)));
    }

    #[test]
    fn the_display_shows_mode_and_last_four_only() {
        assert_eq!(secret_display("sk_test_abcdefgh1234"), "sk_test_…1234");
    }
}
