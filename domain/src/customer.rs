//! The customer: who pays. Created, updated field by field, deleted (a tombstone: its
//! history stays in the log).

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

pub type Metadata = BTreeMap<String, String>;

/// What a create or update may set. `None` leaves a field alone; on update,
/// `Some(None)` clears it (Stripe's "empty string unsets").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerFields {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub email: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub name: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub description: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub phone: Option<Option<String>>,
    /// `invoice_settings.default_payment_method`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub default_payment_method: Option<Option<String>>,
    /// Keys to set (`Some`) or remove (`None`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Option<String>>,
    /// `Some(None)` removes every metadata key before `metadata` applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_metadata: bool,
    /// The test clock the customer lives on (create only, test mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_clock: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    Create {
        customer_id: String,
        fields: CustomerFields,
        at: i64,
    },
    Update {
        fields: CustomerFields,
        at: i64,
    },
    Delete {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerEvent {
    CustomerCreated {
        customer_id: String,
        email: Option<String>,
        name: Option<String>,
        description: Option<String>,
        phone: Option<String>,
        #[serde(default)]
        default_payment_method: Option<String>,
        metadata: Metadata,
        created: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test_clock: Option<String>,
    },
    CustomerUpdated {
        changes: CustomerFields,
        at: i64,
    },
    CustomerDeleted {
        at: i64,
    },
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        match self {
            CustomerEvent::CustomerCreated { .. } => "CustomerCreated",
            CustomerEvent::CustomerUpdated { .. } => "CustomerUpdated",
            CustomerEvent::CustomerDeleted { .. } => "CustomerDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        match self {
            // 2.0: `full_name` became `name`, Stripe's field (see upcasters.rs).
            CustomerEvent::CustomerCreated { .. } => "2.0",
            _ => "1.0",
        }
        .to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("customer already exists")]
    AlreadyExists,
    #[error("no such customer")]
    NotFound,
    #[error("{field} is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("metadata may hold at most 50 keys")]
    TooManyMetadataKeys,
}

/// Stripe's limits on metadata: 50 keys, keys up to 40 characters, values up to 500.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_CHARS: usize = 40;
const MAX_METADATA_VALUE_CHARS: usize = 500;
pub(crate) const MAX_TEXT_CHARS: usize = 5_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub default_payment_method: Option<String>,
    pub metadata: Metadata,
    pub created: i64,
    pub deleted: bool,
    #[serde(default)]
    pub test_clock: Option<String>,
}

impl Customer {
    pub fn exists(&self) -> bool {
        !self.id.is_empty() && !self.deleted
    }
}

fn validate(fields: &CustomerFields, current: &Metadata) -> Result<(), CustomerError> {
    for (field, value) in [
        ("email", &fields.email),
        ("name", &fields.name),
        ("description", &fields.description),
        ("phone", &fields.phone),
    ] {
        if let Some(Some(text)) = value {
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(CustomerError::TooLong {
                    field,
                    max: MAX_TEXT_CHARS,
                });
            }
        }
    }
    validate_metadata(current, &fields.metadata, fields.clear_metadata)?;
    Ok(())
}

/// Metadata beyond Stripe's limits (shared by every resource that has `metadata`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("{field} is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("metadata may hold at most 50 keys")]
    TooManyKeys,
}

impl From<MetadataError> for CustomerError {
    fn from(error: MetadataError) -> Self {
        match error {
            MetadataError::TooLong { field, max } => CustomerError::TooLong { field, max },
            MetadataError::TooManyKeys => CustomerError::TooManyMetadataKeys,
        }
    }
}

/// Checks `changes` (keys to set or remove, after removing every key when `clear`) against
/// Stripe's limits, given the `current` metadata.
pub fn validate_metadata(
    current: &Metadata,
    changes: &BTreeMap<String, Option<String>>,
    clear: bool,
) -> Result<(), MetadataError> {
    let mut keys: std::collections::BTreeSet<&String> = if clear {
        Default::default()
    } else {
        current.keys().collect()
    };
    for (key, value) in changes {
        if key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(MetadataError::TooLong {
                field: "metadata key",
                max: MAX_METADATA_KEY_CHARS,
            });
        }
        match value {
            Some(value) if value.chars().count() > MAX_METADATA_VALUE_CHARS => {
                return Err(MetadataError::TooLong {
                    field: "metadata value",
                    max: MAX_METADATA_VALUE_CHARS,
                })
            }
            Some(_) => {
                keys.insert(key);
            }
            None => {
                keys.remove(key);
            }
        }
    }
    if keys.len() > MAX_METADATA_KEYS {
        return Err(MetadataError::TooManyKeys);
    }
    Ok(())
}

/// Applies metadata changes: every key removed first when `clear`, then each key set
/// (`Some`) or removed (`None`).
pub fn apply_metadata_changes(
    metadata: &mut Metadata,
    changes: &BTreeMap<String, Option<String>>,
    clear: bool,
) {
    if clear {
        metadata.clear();
    }
    for (key, value) in changes {
        match value {
            Some(value) => {
                metadata.insert(key.clone(), value.clone());
            }
            None => {
                metadata.remove(key);
            }
        }
    }
}

fn apply_metadata(metadata: &mut Metadata, fields: &CustomerFields) {
    apply_metadata_changes(metadata, &fields.metadata, fields.clear_metadata);
}

impl Aggregate for Customer {
    const TYPE: &'static str = "customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            CustomerCommand::Create {
                customer_id,
                fields,
                at,
            } => {
                if !self.id.is_empty() {
                    return Err(CustomerError::AlreadyExists);
                }
                validate(&fields, &Metadata::new())?;
                let mut metadata = Metadata::new();
                apply_metadata(&mut metadata, &fields);
                let event = CustomerEvent::CustomerCreated {
                    customer_id,
                    email: fields.email.flatten(),
                    name: fields.name.flatten(),
                    description: fields.description.flatten(),
                    phone: fields.phone.flatten(),
                    default_payment_method: fields.default_payment_method.flatten(),
                    metadata,
                    created: at,
                    test_clock: fields.test_clock,
                };
                sink.write(event, self).await;
            }
            CustomerCommand::Update { fields, at } => {
                if !self.exists() {
                    return Err(CustomerError::NotFound);
                }
                validate(&fields, &self.metadata)?;
                sink.write(
                    CustomerEvent::CustomerUpdated {
                        changes: fields,
                        at,
                    },
                    self,
                )
                .await;
            }
            CustomerCommand::Delete { at } => {
                if !self.exists() {
                    return Err(CustomerError::NotFound);
                }
                sink.write(CustomerEvent::CustomerDeleted { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CustomerEvent::CustomerCreated {
                customer_id,
                email,
                name,
                description,
                phone,
                default_payment_method,
                metadata,
                created,
                test_clock,
            } => {
                self.id = customer_id;
                self.test_clock = test_clock;
                self.default_payment_method = default_payment_method;
                self.email = email;
                self.name = name;
                self.description = description;
                self.phone = phone;
                self.metadata = metadata;
                self.created = created;
            }
            CustomerEvent::CustomerUpdated { changes, .. } => {
                for (target, change) in [
                    (&mut self.email, &changes.email),
                    (&mut self.name, &changes.name),
                    (&mut self.description, &changes.description),
                    (&mut self.phone, &changes.phone),
                    (
                        &mut self.default_payment_method,
                        &changes.default_payment_method,
                    ),
                ] {
                    if let Some(value) = change {
                        *target = value.clone();
                    }
                }
                apply_metadata(&mut self.metadata, &changes);
            }
            CustomerEvent::CustomerDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type CustomerTest = TestFramework<Customer>;

    fn created() -> CustomerEvent {
        CustomerEvent::CustomerCreated {
            customer_id: "cus_1".into(),
            email: Some("a@example.com".into()),
            name: None,
            description: None,
            phone: None,
            default_payment_method: None,
            metadata: Metadata::from([("plan".to_string(), "pro".to_string())]),
            created: 100,
            test_clock: None,
        }
    }

    /// A stored "clear this field" must still clear when the event is loaded again.
    #[test]
    fn a_cleared_field_stays_cleared_after_the_event_is_reloaded() {
        let updated = CustomerEvent::CustomerUpdated {
            changes: CustomerFields {
                email: Some(None),
                default_payment_method: Some(None),
                ..Default::default()
            },
            at: 200,
        };
        let stored = serde_json::to_string(&updated).unwrap();
        let reloaded: CustomerEvent = serde_json::from_str(&stored).unwrap();
        assert_eq!(reloaded, updated, "{stored}");
        let mut customer = Customer::default();
        customer.apply(created());
        customer.default_payment_method = Some("pm_1".into());
        customer.apply(reloaded);
        assert_eq!(customer.email, None);
        assert_eq!(customer.default_payment_method, None);
    }

    #[test]
    fn create_records_the_fields() {
        let fields = CustomerFields {
            email: Some(Some("a@example.com".into())),
            metadata: BTreeMap::from([("plan".to_string(), Some("pro".to_string()))]),
            ..Default::default()
        };
        CustomerTest::with(())
            .given_no_previous_events()
            .when(CustomerCommand::Create {
                customer_id: "cus_1".into(),
                fields,
                at: 100,
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn cannot_create_twice_or_touch_a_deleted_customer() {
        CustomerTest::with(())
            .given(vec![created()])
            .when(CustomerCommand::Create {
                customer_id: "cus_1".into(),
                fields: CustomerFields::default(),
                at: 1,
            })
            .then_expect_error(CustomerError::AlreadyExists);
        CustomerTest::with(())
            .given(vec![created(), CustomerEvent::CustomerDeleted { at: 2 }])
            .when(CustomerCommand::Update {
                fields: CustomerFields::default(),
                at: 3,
            })
            .then_expect_error(CustomerError::NotFound);
    }

    #[test]
    fn update_unsets_and_removes_metadata_keys() {
        let mut customer = Customer::default();
        customer.apply(created());
        customer.apply(CustomerEvent::CustomerUpdated {
            changes: CustomerFields {
                email: Some(None),
                name: Some(Some("Ada".into())),
                metadata: BTreeMap::from([("plan".to_string(), None)]),
                ..Default::default()
            },
            at: 5,
        });
        assert_eq!(customer.email, None);
        assert_eq!(customer.name.as_deref(), Some("Ada"));
        assert!(customer.metadata.is_empty());
    }

    #[test]
    fn metadata_limits_are_enforced() {
        let fields = CustomerFields {
            metadata: (0..51)
                .map(|index| (format!("k{index}"), Some("v".to_string())))
                .collect(),
            ..Default::default()
        };
        CustomerTest::with(())
            .given_no_previous_events()
            .when(CustomerCommand::Create {
                customer_id: "cus_1".into(),
                fields,
                at: 1,
            })
            .then_expect_error(CustomerError::TooManyMetadataKeys);
    }
}
