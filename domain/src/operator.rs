//! An operator: a person who signs in to the admin dashboard. Operators belong to the
//! installation, not to a project: they see every project.
//!
//! The password arrives already hashed (an argon2id PHC string made by `commands::operators`;
//! this crate does no hashing). The hash travels in the created event and is kept by the
//! `operators` read model, which the login reads; the aggregate does not keep it, so neither
//! a replay nor anything printing the aggregate shows it, and [`PasswordHash`] never prints
//! it.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Bound on an email address (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Bound on a display name.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Bound on a stored password hash (argon2id PHC strings are about 100 characters).
pub const MAX_PASSWORD_HASH_CHARS: usize = 512;
/// Every accepted password hash starts with this: argon2id, PHC string format.
pub const PASSWORD_HASH_PREFIX: &str = "$argon2id$";

/// An argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PasswordHash(…)")
    }
}

/// An email as operators are found by it: trimmed and lowercased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    Create {
        operator_id: String,
        email: String,
        display_name: Option<String>,
        password_hash: PasswordHash,
        at: i64,
    },
    Disable {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorEvent {
    OperatorCreated {
        operator_id: String,
        /// Normalized ([`normalize_email`]).
        email: String,
        display_name: String,
        password_hash: PasswordHash,
        created: i64,
    },
    OperatorDisabled {
        at: i64,
    },
}

impl DomainEvent for OperatorEvent {
    fn event_type(&self) -> String {
        match self {
            OperatorEvent::OperatorCreated { .. } => "OperatorCreated",
            OperatorEvent::OperatorDisabled { .. } => "OperatorDisabled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("an operator with this email already exists")]
    AlreadyExists,
    #[error("no such operator")]
    NotFound,
    #[error("the operator is already disabled")]
    AlreadyDisabled,
    #[error("{0:?} is not an email address")]
    BadEmail(String),
    #[error("the display name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters")]
    BadDisplayName,
    #[error("the password hash must be an argon2id PHC string")]
    BadPasswordHash,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub created: i64,
    pub disabled_at: Option<i64>,
}

impl Operator {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }
}

fn valid_email(email: &str) -> bool {
    email.chars().count() <= MAX_EMAIL_CHARS
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
}

impl Aggregate for Operator {
    const TYPE: &'static str = "operator";
    type Command = OperatorCommand;
    type Event = OperatorEvent;
    type Error = OperatorError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            OperatorCommand::Create {
                operator_id,
                email,
                display_name,
                password_hash,
                at,
            } => {
                if self.exists() {
                    return Err(OperatorError::AlreadyExists);
                }
                let email = normalize_email(&email);
                if !valid_email(&email) {
                    return Err(OperatorError::BadEmail(email));
                }
                let display_name = match display_name {
                    Some(name) => name.trim().to_string(),
                    // The part before the @ is a fair name until someone gives one.
                    None => email.split('@').next().unwrap_or_default().to_string(),
                };
                if display_name.is_empty()
                    || display_name.chars().count() > MAX_DISPLAY_NAME_CHARS
                    || display_name.chars().any(char::is_control)
                {
                    return Err(OperatorError::BadDisplayName);
                }
                let phc = password_hash.as_str();
                if !phc.starts_with(PASSWORD_HASH_PREFIX) || phc.len() > MAX_PASSWORD_HASH_CHARS {
                    return Err(OperatorError::BadPasswordHash);
                }
                sink.write(
                    OperatorEvent::OperatorCreated {
                        operator_id,
                        email,
                        display_name,
                        password_hash,
                        created: at,
                    },
                    self,
                )
                .await;
            }
            OperatorCommand::Disable { at } => {
                if !self.exists() {
                    return Err(OperatorError::NotFound);
                }
                if self.disabled_at.is_some() {
                    return Err(OperatorError::AlreadyDisabled);
                }
                sink.write(OperatorEvent::OperatorDisabled { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OperatorEvent::OperatorCreated {
                operator_id,
                email,
                display_name,
                created,
                // Kept by the `operators` read model only.
                password_hash: _,
            } => {
                self.id = operator_id;
                self.email = email;
                self.display_name = display_name;
                self.created = created;
            }
            OperatorEvent::OperatorDisabled { at } => self.disabled_at = Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    fn create(email: &str, name: Option<&str>) -> OperatorCommand {
        OperatorCommand::Create {
            operator_id: "op_1".into(),
            email: email.into(),
            display_name: name.map(str::to_string),
            password_hash: PasswordHash::new(HASH),
            at: 10,
        }
    }

    fn created() -> OperatorEvent {
        OperatorEvent::OperatorCreated {
            operator_id: "op_1".into(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            password_hash: PasswordHash::new(HASH),
            created: 10,
        }
    }

    #[test]
    fn creates_with_a_normalized_email_once() {
        TestFramework::<Operator>::with(())
            .given_no_previous_events()
            .when(create("  Ada@Example.COM ", Some(" Ada ")))
            .then_expect_events(vec![created()]);
        TestFramework::<Operator>::with(())
            .given(vec![created()])
            .when(create("ada@example.com", None))
            .then_expect_error(OperatorError::AlreadyExists);
    }

    #[test]
    fn the_name_defaults_to_the_local_part() {
        TestFramework::<Operator>::with(())
            .given_no_previous_events()
            .when(create("grace@example.com", None))
            .then_expect_events(vec![OperatorEvent::OperatorCreated {
                operator_id: "op_1".into(),
                email: "grace@example.com".into(),
                display_name: "grace".into(),
                password_hash: PasswordHash::new(HASH),
                created: 10,
            }]);
    }

    #[test]
    fn refuses_bad_emails_names_and_hashes() {
        for email in [
            "",
            "ada",
            "ada@localhost",
            "a da@example.com",
            "@example.com",
        ] {
            TestFramework::<Operator>::with(())
                .given_no_previous_events()
                .when(create(email, None))
                .then_expect_error(OperatorError::BadEmail(normalize_email(email)));
        }
        TestFramework::<Operator>::with(())
            .given_no_previous_events()
            .when(create("ada@example.com", Some("  ")))
            .then_expect_error(OperatorError::BadDisplayName);
        TestFramework::<Operator>::with(())
            .given_no_previous_events()
            .when(OperatorCommand::Create {
                operator_id: "op_1".into(),
                email: "ada@example.com".into(),
                display_name: None,
                password_hash: PasswordHash::new("plaintext-password"),
                at: 10,
            })
            .then_expect_error(OperatorError::BadPasswordHash);
    }

    #[test]
    fn disables_once() {
        TestFramework::<Operator>::with(())
            .given_no_previous_events()
            .when(OperatorCommand::Disable { at: 11 })
            .then_expect_error(OperatorError::NotFound);
        TestFramework::<Operator>::with(())
            .given(vec![created()])
            .when(OperatorCommand::Disable { at: 11 })
            .then_expect_events(vec![OperatorEvent::OperatorDisabled { at: 11 }]);
        TestFramework::<Operator>::with(())
            .given(vec![created(), OperatorEvent::OperatorDisabled { at: 11 }])
            .when(OperatorCommand::Disable { at: 12 })
            .then_expect_error(OperatorError::AlreadyDisabled);
    }

    #[test]
    fn the_aggregate_and_the_hash_never_print_the_hash() {
        let mut operator = Operator::default();
        operator.apply(created());
        assert!(!serde_json::to_string(&operator).unwrap().contains("argon2"));
        assert!(!format!("{:?}", created()).contains("argon2"));
    }
}
