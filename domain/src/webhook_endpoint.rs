//! A webhook endpoint: a URL a project's events are delivered to, with the event types it
//! wants, and the secret its deliveries are signed with. Created, updated, disabled (by its
//! owner through an update, or by the webhook relay after three days without a successful
//! delivery), deleted.
//!
//! The signing secret travels in the created event (the relay signs with it, so it cannot
//! be stored only as a hash) and nowhere else: the aggregate does not keep it, so neither
//! the read model's aggregate state nor a replay shows it, and [`SigningSecret`] never
//! prints it.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::{
    apply_metadata_changes, validate_metadata, Metadata, MetadataError, MAX_TEXT_CHARS,
};

/// Stripe's limit on an endpoint URL, in characters.
pub const MAX_URL_CHARS: usize = 5_000;
/// Bound on `enabled_events`.
pub const MAX_ENABLED_EVENTS: usize = 250;
/// Every event type, in `enabled_events`.
pub const ALL_EVENTS: &str = "*";
/// What every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// The `whsec_…` string deliveries are signed with (HMAC-SHA256 keyed by the whole string).
/// Its `Debug` shows the prefix only, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SigningSecret(String);

impl SigningSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: for signing, and for the one response that shows it (create).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SigningSecret(whsec_<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    #[default]
    Enabled,
    Disabled,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Enabled => "enabled",
            EndpointStatus::Disabled => "disabled",
        }
    }
}

/// What an update may change. `None` leaves a field alone; `description: Some(None)`
/// clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_events: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub description: Option<Option<String>>,
    /// Keys to set (`Some`) or remove (`None`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Option<String>>,
    /// Removes every metadata key before `metadata` applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_metadata: bool,
    /// Stripe's `disabled` parameter: `true` disables, `false` enables again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEndpointCommand {
    Create {
        endpoint_id: String,
        url: String,
        enabled_events: Vec<String>,
        api_version: Option<String>,
        description: Option<String>,
        metadata: Metadata,
        secret: SigningSecret,
        at: i64,
    },
    Update {
        changes: WebhookEndpointChanges,
        at: i64,
    },
    /// The relay's decision: deliveries kept failing (`reason` says how).
    Disable {
        reason: String,
        at: i64,
    },
    Delete {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookEndpointEvent {
    WebhookEndpointCreated {
        endpoint_id: String,
        url: String,
        enabled_events: Vec<String>,
        api_version: Option<String>,
        description: Option<String>,
        metadata: Metadata,
        secret: SigningSecret,
        created: i64,
    },
    WebhookEndpointUpdated {
        changes: WebhookEndpointChanges,
        at: i64,
    },
    WebhookEndpointDisabled {
        reason: String,
        at: i64,
    },
    WebhookEndpointDeleted {
        at: i64,
    },
}

impl DomainEvent for WebhookEndpointEvent {
    fn event_type(&self) -> String {
        match self {
            WebhookEndpointEvent::WebhookEndpointCreated { .. } => "WebhookEndpointCreated",
            WebhookEndpointEvent::WebhookEndpointUpdated { .. } => "WebhookEndpointUpdated",
            WebhookEndpointEvent::WebhookEndpointDisabled { .. } => "WebhookEndpointDisabled",
            WebhookEndpointEvent::WebhookEndpointDeleted { .. } => "WebhookEndpointDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookEndpointError {
    #[error("webhook endpoint already exists")]
    AlreadyExists,
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("url must not be empty")]
    EmptyUrl,
    #[error("enabled_events must name at least one event type (or \"*\")")]
    NoEnabledEvents,
    #[error("enabled_events may name at most {MAX_ENABLED_EVENTS} event types")]
    TooManyEnabledEvents,
    #[error("{field} is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("metadata may hold at most 50 keys")]
    TooManyMetadataKeys,
    #[error("a webhook signing secret must start with {SECRET_PREFIX}")]
    MalformedSecret,
}

impl From<MetadataError> for WebhookEndpointError {
    fn from(error: MetadataError) -> Self {
        match error {
            MetadataError::TooLong { field, max } => WebhookEndpointError::TooLong { field, max },
            MetadataError::TooManyKeys => WebhookEndpointError::TooManyMetadataKeys,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub api_version: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub status: EndpointStatus,
    pub created: i64,
    pub deleted: bool,
}

impl WebhookEndpoint {
    pub fn exists(&self) -> bool {
        !self.id.is_empty() && !self.deleted
    }

    /// Whether an event of `event_type` is sent here (when enabled).
    pub fn wants(&self, event_type: &str) -> bool {
        wants(&self.enabled_events, event_type)
    }
}

/// Whether `enabled_events` selects `event_type`.
pub fn wants(enabled_events: &[String], event_type: &str) -> bool {
    enabled_events
        .iter()
        .any(|enabled| enabled == ALL_EVENTS || enabled == event_type)
}

fn validate_url(url: &str) -> Result<(), WebhookEndpointError> {
    if url.trim().is_empty() {
        return Err(WebhookEndpointError::EmptyUrl);
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(WebhookEndpointError::TooLong {
            field: "url",
            max: MAX_URL_CHARS,
        });
    }
    Ok(())
}

fn validate_enabled_events(events: &[String]) -> Result<(), WebhookEndpointError> {
    if events.is_empty() || events.iter().any(|event| event.is_empty()) {
        return Err(WebhookEndpointError::NoEnabledEvents);
    }
    if events.len() > MAX_ENABLED_EVENTS {
        return Err(WebhookEndpointError::TooManyEnabledEvents);
    }
    Ok(())
}

fn validate_description(description: Option<&str>) -> Result<(), WebhookEndpointError> {
    if description.is_some_and(|text| text.chars().count() > MAX_TEXT_CHARS) {
        return Err(WebhookEndpointError::TooLong {
            field: "description",
            max: MAX_TEXT_CHARS,
        });
    }
    Ok(())
}

/// The list without repeats, in first-seen order (Stripe answers each type once).
fn deduplicated(events: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    events
        .into_iter()
        .filter(|event| seen.insert(event.clone()))
        .collect()
}

impl Aggregate for WebhookEndpoint {
    const TYPE: &'static str = "webhook_endpoint";
    type Command = WebhookEndpointCommand;
    type Event = WebhookEndpointEvent;
    type Error = WebhookEndpointError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            WebhookEndpointCommand::Create {
                endpoint_id,
                url,
                enabled_events,
                api_version,
                description,
                metadata,
                secret,
                at,
            } => {
                if !self.id.is_empty() {
                    return Err(WebhookEndpointError::AlreadyExists);
                }
                validate_url(&url)?;
                validate_enabled_events(&enabled_events)?;
                validate_description(description.as_deref())?;
                let changes = metadata
                    .iter()
                    .map(|(key, value)| (key.clone(), Some(value.clone())))
                    .collect();
                validate_metadata(&Metadata::new(), &changes, false)?;
                if !secret.expose().starts_with(SECRET_PREFIX) {
                    return Err(WebhookEndpointError::MalformedSecret);
                }
                WebhookEndpointEvent::WebhookEndpointCreated {
                    endpoint_id,
                    url,
                    enabled_events: deduplicated(enabled_events),
                    api_version,
                    description,
                    metadata,
                    secret,
                    created: at,
                }
            }
            WebhookEndpointCommand::Update { mut changes, at } => {
                if !self.exists() {
                    return Err(WebhookEndpointError::NotFound);
                }
                if let Some(url) = &changes.url {
                    validate_url(url)?;
                }
                if let Some(events) = changes.enabled_events.take() {
                    validate_enabled_events(&events)?;
                    changes.enabled_events = Some(deduplicated(events));
                }
                if let Some(description) = &changes.description {
                    validate_description(description.as_deref())?;
                }
                validate_metadata(&self.metadata, &changes.metadata, changes.clear_metadata)?;
                WebhookEndpointEvent::WebhookEndpointUpdated { changes, at }
            }
            WebhookEndpointCommand::Disable { reason, at } => {
                if !self.exists() {
                    return Err(WebhookEndpointError::NotFound);
                }
                if self.status == EndpointStatus::Disabled {
                    // Already disabled (by its owner, or by another relay): nothing to do.
                    return Ok(());
                }
                WebhookEndpointEvent::WebhookEndpointDisabled { reason, at }
            }
            WebhookEndpointCommand::Delete { at } => {
                if !self.exists() {
                    return Err(WebhookEndpointError::NotFound);
                }
                WebhookEndpointEvent::WebhookEndpointDeleted { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WebhookEndpointEvent::WebhookEndpointCreated {
                endpoint_id,
                url,
                enabled_events,
                api_version,
                description,
                metadata,
                // Deliberately not kept: see the module's doc.
                secret: _,
                created,
            } => {
                self.id = endpoint_id;
                self.url = url;
                self.enabled_events = enabled_events;
                self.api_version = api_version;
                self.description = description;
                self.metadata = metadata;
                self.status = EndpointStatus::Enabled;
                self.created = created;
            }
            WebhookEndpointEvent::WebhookEndpointUpdated { changes, .. } => {
                if let Some(url) = changes.url {
                    self.url = url;
                }
                if let Some(events) = changes.enabled_events {
                    self.enabled_events = events;
                }
                if let Some(description) = changes.description {
                    self.description = description;
                }
                apply_metadata_changes(
                    &mut self.metadata,
                    &changes.metadata,
                    changes.clear_metadata,
                );
                match changes.disabled {
                    Some(true) => self.status = EndpointStatus::Disabled,
                    Some(false) => self.status = EndpointStatus::Enabled,
                    None => {}
                }
            }
            WebhookEndpointEvent::WebhookEndpointDisabled { .. } => {
                self.status = EndpointStatus::Disabled;
            }
            WebhookEndpointEvent::WebhookEndpointDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type EndpointTest = TestFramework<WebhookEndpoint>;

    fn created() -> WebhookEndpointEvent {
        WebhookEndpointEvent::WebhookEndpointCreated {
            endpoint_id: "we_1".into(),
            url: "https://example.com/hook".into(),
            enabled_events: vec!["customer.created".into()],
            api_version: None,
            description: None,
            metadata: Metadata::new(),
            secret: SigningSecret::new("whsec_abc"),
            created: 100,
        }
    }

    fn create_command(enabled_events: Vec<String>) -> WebhookEndpointCommand {
        WebhookEndpointCommand::Create {
            endpoint_id: "we_1".into(),
            url: "https://example.com/hook".into(),
            enabled_events,
            api_version: None,
            description: None,
            metadata: Metadata::new(),
            secret: SigningSecret::new("whsec_abc"),
            at: 100,
        }
    }

    #[test]
    fn create_records_the_endpoint_with_each_event_type_once() {
        EndpointTest::with(())
            .given_no_previous_events()
            .when(create_command(vec![
                "customer.created".into(),
                "customer.created".into(),
            ]))
            .then_expect_events(vec![created()]);
        EndpointTest::with(())
            .given_no_previous_events()
            .when(create_command(vec![]))
            .then_expect_error(WebhookEndpointError::NoEnabledEvents);
    }

    #[test]
    fn the_aggregate_never_keeps_the_secret() {
        let mut endpoint = WebhookEndpoint::default();
        endpoint.apply(created());
        let state = serde_json::to_string(&endpoint).unwrap();
        assert!(!state.contains("whsec_"), "{state}");
        assert_eq!(
            format!("{:?}", SigningSecret::new("whsec_abc")),
            "SigningSecret(whsec_<redacted>)"
        );
    }

    #[test]
    fn disabling_is_idempotent_and_an_update_enables_again() {
        let disabled = WebhookEndpointEvent::WebhookEndpointDisabled {
            reason: "failing".into(),
            at: 200,
        };
        EndpointTest::with(())
            .given(vec![created()])
            .when(WebhookEndpointCommand::Disable {
                reason: "failing".into(),
                at: 200,
            })
            .then_expect_events(vec![disabled.clone()]);
        EndpointTest::with(())
            .given(vec![created(), disabled.clone()])
            .when(WebhookEndpointCommand::Disable {
                reason: "failing".into(),
                at: 300,
            })
            .then_expect_events(vec![]);
        let mut endpoint = WebhookEndpoint::default();
        endpoint.apply(created());
        endpoint.apply(disabled);
        assert_eq!(endpoint.status, EndpointStatus::Disabled);
        endpoint.apply(WebhookEndpointEvent::WebhookEndpointUpdated {
            changes: WebhookEndpointChanges {
                disabled: Some(false),
                enabled_events: Some(vec![ALL_EVENTS.into()]),
                ..Default::default()
            },
            at: 400,
        });
        assert_eq!(endpoint.status, EndpointStatus::Enabled);
        assert!(endpoint.wants("payment_intent.succeeded"));
    }

    #[test]
    fn a_deleted_endpoint_cannot_be_changed() {
        EndpointTest::with(())
            .given(vec![
                created(),
                WebhookEndpointEvent::WebhookEndpointDeleted { at: 2 },
            ])
            .when(WebhookEndpointCommand::Update {
                changes: WebhookEndpointChanges::default(),
                at: 3,
            })
            .then_expect_error(WebhookEndpointError::NotFound);
    }

    #[test]
    fn metadata_limits_are_those_of_customers() {
        EndpointTest::with(())
            .given(vec![created()])
            .when(WebhookEndpointCommand::Update {
                changes: WebhookEndpointChanges {
                    metadata: (0..51)
                        .map(|index| (format!("k{index}"), Some("v".to_string())))
                        .collect(),
                    ..Default::default()
                },
                at: 3,
            })
            .then_expect_error(WebhookEndpointError::TooManyMetadataKeys);
    }
}
