//! Dashboard operators: creating and disabling them, and their passwords (argon2id, the
//! crate's defaults: 19 MiB, 2 passes, 1 lane — OWASP's recommendation).
//!
//! An operator's stream id is derived from its normalized email ([`operator_id_for`]), so two
//! operators with one email land on one stream and the aggregate refuses the second: email
//! uniqueness without reading a read model.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash as Phc, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use domain::operator::{normalize_email, Operator, OperatorCommand, OperatorError, PasswordHash};
use event_store::EventMetadata;

use crate::execute::{CommandBus, CommandError, Executed};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bounds the work one login attempt can ask for).
pub const MAX_PASSWORD_CHARS: usize = 1_024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    BadLength,
    #[error("the password could not be hashed: {0}")]
    Hashing(String),
}

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<PasswordHash, PasswordError> {
    let length = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&length) {
        return Err(PasswordError::BadLength);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| PasswordHash::new(hash.to_string()))
        .map_err(|error| PasswordError::Hashing(error.to_string()))
}

/// Whether `password` matches the PHC string `stored` (argon2's comparison is constant-time).
/// A malformed `stored` matches nothing. CPU-heavy (tens of milliseconds): call it off the
/// async executor.
pub fn verify_password(stored: &str, password: &str) -> bool {
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return false;
    }
    let Ok(parsed) = Phc::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A hash of a random password nobody knows, made with the same parameters: a login for an
/// unknown email is checked against it, so that it takes as long as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let password = crate::ids::new_token("decoy");
        hash_password(&password)
            .map(|hash| hash.as_str().to_string())
            // Unreachable with a 38-character password; a malformed decoy would still
            // answer "no", only faster.
            .unwrap_or_default()
    })
}

/// The operator stream of `email`: `op_` and 24 hex characters of its SHA-256.
pub fn operator_id_for(email: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("operator:{}", normalize_email(email)).as_bytes());
    format!("op_{}", &hex::encode(digest)[..24])
}

/// Operators belong to no project: their events carry an empty project and no mode.
pub fn operator_metadata(actor: &str, request_id: String) -> EventMetadata {
    EventMetadata {
        actor: actor.to_string(),
        ..EventMetadata::default()
    }
    .with_request(request_id)
}

#[derive(Debug, thiserror::Error)]
pub enum CreateOperatorError {
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Command(#[from] CommandError<OperatorError>),
}

/// Hashes `password` and creates the operator.
pub async fn create_operator(
    bus: &CommandBus,
    email: &str,
    display_name: Option<String>,
    password: &str,
    metadata: &EventMetadata,
    at: i64,
) -> Result<Executed<Operator, ()>, CreateOperatorError> {
    let password_hash = hash_password(password)?;
    let operator_id = operator_id_for(email);
    Ok(bus
        .execute::<Operator>(
            &operator_id,
            OperatorCommand::Create {
                operator_id: operator_id.clone(),
                email: email.to_string(),
                display_name,
                password_hash,
                at,
            },
            &(),
            metadata,
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let first = hash_password("correct horse battery").unwrap();
        let second = hash_password("correct horse battery").unwrap();
        assert!(first
            .as_str()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_ne!(first, second);
        assert!(verify_password(first.as_str(), "correct horse battery"));
        assert!(!verify_password(first.as_str(), "correct horse battery!"));
        assert!(!verify_password("not a hash", "correct horse battery"));
        assert!(!verify_password(decoy_hash(), "correct horse battery"));
    }

    #[test]
    fn refuses_short_and_huge_passwords() {
        assert_eq!(hash_password("short"), Err(PasswordError::BadLength));
        let huge = "x".repeat(MAX_PASSWORD_CHARS + 1);
        assert_eq!(hash_password(&huge), Err(PasswordError::BadLength));
    }

    #[test]
    fn one_email_one_stream() {
        assert_eq!(
            operator_id_for(" Ada@Example.com"),
            operator_id_for("ada@example.com")
        );
        assert_ne!(
            operator_id_for("ada@example.com"),
            operator_id_for("grace@example.com")
        );
        assert_eq!(operator_id_for("ada@example.com").len(), 3 + 24);
    }
}
