//! A project: one merchant's account. Owns its API keys (stored as hashes only).

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectCommand {
    Create {
        project_id: String,
        name: String,
        at: i64,
    },
    CreateApiKey {
        key_id: String,
        livemode: bool,
        /// Lowercase hex SHA-256 of the whole secret; the secret itself never arrives here.
        secret_hash: String,
        /// What operators see to tell keys apart: `sk_test_…abcd`.
        display: String,
        at: i64,
    },
    RevokeApiKey {
        key_id: String,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectEvent {
    ProjectCreated {
        project_id: String,
        name: String,
        created: i64,
    },
    ApiKeyCreated {
        key_id: String,
        livemode: bool,
        secret_hash: String,
        display: String,
        created: i64,
    },
    ApiKeyRevoked {
        key_id: String,
        at: i64,
    },
}

impl DomainEvent for ProjectEvent {
    fn event_type(&self) -> String {
        match self {
            ProjectEvent::ProjectCreated { .. } => "ProjectCreated",
            ProjectEvent::ApiKeyCreated { .. } => "ApiKeyCreated",
            ProjectEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    #[error("project already exists")]
    AlreadyExists,
    #[error("no such project")]
    NotFound,
    #[error("project name must be 1 to 200 characters")]
    BadName,
    #[error("no such API key: {0}")]
    UnknownKey(String),
    #[error("API key {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("API key {0} already exists")]
    DuplicateKey(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: String,
    pub livemode: bool,
    pub display: String,
    pub created: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created: i64,
    pub keys: Vec<ApiKey>,
}

impl Aggregate for Project {
    const TYPE: &'static str = "project";
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = ProjectError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ProjectCommand::Create {
                project_id,
                name,
                at,
            } => {
                if !self.id.is_empty() {
                    return Err(ProjectError::AlreadyExists);
                }
                let name = name.trim().to_string();
                if name.is_empty() || name.chars().count() > 200 {
                    return Err(ProjectError::BadName);
                }
                sink.write(
                    ProjectEvent::ProjectCreated {
                        project_id,
                        name,
                        created: at,
                    },
                    self,
                )
                .await;
            }
            ProjectCommand::CreateApiKey {
                key_id,
                livemode,
                secret_hash,
                display,
                at,
            } => {
                if self.id.is_empty() {
                    return Err(ProjectError::NotFound);
                }
                if self.keys.iter().any(|key| key.key_id == key_id) {
                    return Err(ProjectError::DuplicateKey(key_id));
                }
                sink.write(
                    ProjectEvent::ApiKeyCreated {
                        key_id,
                        livemode,
                        secret_hash,
                        display,
                        created: at,
                    },
                    self,
                )
                .await;
            }
            ProjectCommand::RevokeApiKey { key_id, at } => {
                let key = self
                    .keys
                    .iter()
                    .find(|key| key.key_id == key_id)
                    .ok_or_else(|| ProjectError::UnknownKey(key_id.clone()))?;
                if key.revoked_at.is_some() {
                    return Err(ProjectError::AlreadyRevoked(key_id));
                }
                sink.write(ProjectEvent::ApiKeyRevoked { key_id, at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProjectEvent::ProjectCreated {
                project_id,
                name,
                created,
            } => {
                self.id = project_id;
                self.name = name;
                self.created = created;
            }
            ProjectEvent::ApiKeyCreated {
                key_id,
                livemode,
                display,
                created,
                ..
            } => self.keys.push(ApiKey {
                key_id,
                livemode,
                display,
                created,
                revoked_at: None,
            }),
            ProjectEvent::ApiKeyRevoked { key_id, at } => {
                if let Some(key) = self.keys.iter_mut().find(|key| key.key_id == key_id) {
                    key.revoked_at = Some(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn created() -> ProjectEvent {
        ProjectEvent::ProjectCreated {
            project_id: "proj_1".into(),
            name: "Acme".into(),
            created: 1,
        }
    }

    fn key_created() -> ProjectEvent {
        ProjectEvent::ApiKeyCreated {
            key_id: "key_1".into(),
            livemode: false,
            secret_hash: "ab".into(),
            display: "sk_test_…abcd".into(),
            created: 2,
        }
    }

    #[test]
    fn keys_need_a_project_and_revoke_once() {
        TestFramework::<Project>::with(())
            .given_no_previous_events()
            .when(ProjectCommand::RevokeApiKey {
                key_id: "key_1".into(),
                at: 3,
            })
            .then_expect_error(ProjectError::UnknownKey("key_1".into()));
        TestFramework::<Project>::with(())
            .given(vec![created(), key_created()])
            .when(ProjectCommand::RevokeApiKey {
                key_id: "key_1".into(),
                at: 3,
            })
            .then_expect_events(vec![ProjectEvent::ApiKeyRevoked {
                key_id: "key_1".into(),
                at: 3,
            }]);
        TestFramework::<Project>::with(())
            .given(vec![
                created(),
                key_created(),
                ProjectEvent::ApiKeyRevoked {
                    key_id: "key_1".into(),
                    at: 3,
                },
            ])
            .when(ProjectCommand::RevokeApiKey {
                key_id: "key_1".into(),
                at: 4,
            })
            .then_expect_error(ProjectError::AlreadyRevoked("key_1".into()));
    }

    #[test]
    fn a_project_needs_a_name() {
        TestFramework::<Project>::with(())
            .given_no_previous_events()
            .when(ProjectCommand::Create {
                project_id: "proj_1".into(),
                name: "  ".into(),
                at: 1,
            })
            .then_expect_error(ProjectError::BadName);
    }
}
