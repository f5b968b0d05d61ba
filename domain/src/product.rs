//! A product: what a merchant sells, priced by one or more [`crate::price::Price`]s.
//! Created, updated field by field, archived (`active: false`) and reactivated, deleted (a
//! tombstone: its history stays in the log).
//!
//! Rules that span aggregates are checked by the caller before the command: a product's
//! `default_price` must be an active price of this product, and a product with prices
//! cannot be deleted (Stripe's rule; the HTTP layer checks the read model).

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::{
    apply_metadata_changes, validate_metadata, Metadata, MetadataError, MAX_TEXT_CHARS,
};

/// Stripe's limit on `unit_label`, in characters.
pub const MAX_UNIT_LABEL_CHARS: usize = 12;

/// What a new product holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub unit_label: Option<String>,
    pub metadata: Metadata,
}

/// What an update may change. `None` leaves a field alone; `Some(None)` clears it
/// (Stripe's "empty string unsets").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub default_price: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub unit_label: Option<Option<String>>,
    /// Keys to set (`Some`) or remove (`None`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Option<String>>,
    /// Removes every metadata key before `metadata` applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_metadata: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    Create {
        product_id: String,
        product: NewProduct,
        at: i64,
    },
    Update {
        changes: ProductChanges,
        at: i64,
    },
    Delete {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductCreated {
        product_id: String,
        name: String,
        description: Option<String>,
        active: bool,
        unit_label: Option<String>,
        metadata: Metadata,
        created: i64,
    },
    ProductUpdated {
        changes: ProductChanges,
        at: i64,
    },
    ProductDeleted {
        at: i64,
    },
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            ProductEvent::ProductCreated { .. } => "ProductCreated",
            ProductEvent::ProductUpdated { .. } => "ProductUpdated",
            ProductEvent::ProductDeleted { .. } => "ProductDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product already exists")]
    AlreadyExists,
    #[error("no such product")]
    NotFound,
    #[error("a product needs a name")]
    MissingName,
    #[error("{field} is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("metadata may hold at most 50 keys")]
    TooManyMetadataKeys,
}

impl ProductError {
    /// The request parameter the error is about, as Stripe names it.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ProductError::MissingName => Some("name"),
            ProductError::TooLong { field, .. } if field.starts_with("metadata") => {
                Some("metadata")
            }
            ProductError::TooLong { field, .. } => Some(field),
            ProductError::TooManyMetadataKeys => Some("metadata"),
            ProductError::AlreadyExists | ProductError::NotFound => None,
        }
    }
}

impl From<MetadataError> for ProductError {
    fn from(error: MetadataError) -> Self {
        match error {
            MetadataError::TooLong { field, max } => ProductError::TooLong { field, max },
            MetadataError::TooManyKeys => ProductError::TooManyMetadataKeys,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub default_price: Option<String>,
    pub unit_label: Option<String>,
    pub metadata: Metadata,
    pub created: i64,
    /// When it last changed (`created` until its first update).
    pub updated: i64,
    pub deleted: bool,
}

impl Product {
    pub fn exists(&self) -> bool {
        !self.id.is_empty() && !self.deleted
    }
}

fn validate_name(name: &str) -> Result<(), ProductError> {
    if name.trim().is_empty() {
        return Err(ProductError::MissingName);
    }
    validate_text("name", Some(name), MAX_TEXT_CHARS)
}

fn validate_text(field: &'static str, text: Option<&str>, max: usize) -> Result<(), ProductError> {
    if text.is_some_and(|text| text.chars().count() > max) {
        return Err(ProductError::TooLong { field, max });
    }
    Ok(())
}

impl Aggregate for Product {
    const TYPE: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            ProductCommand::Create {
                product_id,
                product,
                at,
            } => {
                if !self.id.is_empty() {
                    return Err(ProductError::AlreadyExists);
                }
                validate_name(&product.name)?;
                validate_text(
                    "description",
                    product.description.as_deref(),
                    MAX_TEXT_CHARS,
                )?;
                validate_text(
                    "unit_label",
                    product.unit_label.as_deref(),
                    MAX_UNIT_LABEL_CHARS,
                )?;
                let changes = product
                    .metadata
                    .iter()
                    .map(|(key, value)| (key.clone(), Some(value.clone())))
                    .collect();
                validate_metadata(&Metadata::new(), &changes, false)?;
                ProductEvent::ProductCreated {
                    product_id,
                    name: product.name,
                    description: product.description,
                    active: product.active,
                    unit_label: product.unit_label,
                    metadata: product.metadata,
                    created: at,
                }
            }
            ProductCommand::Update { changes, at } => {
                if !self.exists() {
                    return Err(ProductError::NotFound);
                }
                if let Some(name) = &changes.name {
                    validate_name(name)?;
                }
                if let Some(description) = &changes.description {
                    validate_text("description", description.as_deref(), MAX_TEXT_CHARS)?;
                }
                if let Some(unit_label) = &changes.unit_label {
                    validate_text("unit_label", unit_label.as_deref(), MAX_UNIT_LABEL_CHARS)?;
                }
                validate_metadata(&self.metadata, &changes.metadata, changes.clear_metadata)?;
                ProductEvent::ProductUpdated { changes, at }
            }
            ProductCommand::Delete { at } => {
                if !self.exists() {
                    return Err(ProductError::NotFound);
                }
                ProductEvent::ProductDeleted { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProductEvent::ProductCreated {
                product_id,
                name,
                description,
                active,
                unit_label,
                metadata,
                created,
            } => {
                self.id = product_id;
                self.name = name;
                self.description = description;
                self.active = active;
                self.unit_label = unit_label;
                self.metadata = metadata;
                self.created = created;
                self.updated = created;
            }
            ProductEvent::ProductUpdated { changes, at } => {
                if let Some(name) = changes.name {
                    self.name = name;
                }
                if let Some(active) = changes.active {
                    self.active = active;
                }
                for (target, change) in [
                    (&mut self.description, changes.description),
                    (&mut self.default_price, changes.default_price),
                    (&mut self.unit_label, changes.unit_label),
                ] {
                    if let Some(value) = change {
                        *target = value;
                    }
                }
                apply_metadata_changes(
                    &mut self.metadata,
                    &changes.metadata,
                    changes.clear_metadata,
                );
                self.updated = at;
            }
            ProductEvent::ProductDeleted { at } => {
                self.deleted = true;
                self.updated = at;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type ProductTest = TestFramework<Product>;

    fn new_product() -> NewProduct {
        NewProduct {
            name: "Gold plan".into(),
            description: None,
            active: true,
            unit_label: Some("seat".into()),
            metadata: Metadata::from([("tier".to_string(), "gold".to_string())]),
        }
    }

    fn created() -> ProductEvent {
        ProductEvent::ProductCreated {
            product_id: "prod_1".into(),
            name: "Gold plan".into(),
            description: None,
            active: true,
            unit_label: Some("seat".into()),
            metadata: Metadata::from([("tier".to_string(), "gold".to_string())]),
            created: 100,
        }
    }

    fn update(changes: ProductChanges, at: i64) -> ProductEvent {
        ProductEvent::ProductUpdated { changes, at }
    }

    #[test]
    fn create_records_the_product_once() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Create {
                product_id: "prod_1".into(),
                product: new_product(),
                at: 100,
            })
            .then_expect_events(vec![created()]);
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Create {
                product_id: "prod_1".into(),
                product: new_product(),
                at: 101,
            })
            .then_expect_error(ProductError::AlreadyExists);
    }

    #[test]
    fn a_product_needs_a_name_and_a_short_unit_label() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Create {
                product_id: "prod_1".into(),
                product: NewProduct {
                    name: "  ".into(),
                    ..new_product()
                },
                at: 100,
            })
            .then_expect_error(ProductError::MissingName);
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Update {
                changes: ProductChanges {
                    unit_label: Some(Some("thirteen char".into())),
                    ..Default::default()
                },
                at: 101,
            })
            .then_expect_error(ProductError::TooLong {
                field: "unit_label",
                max: MAX_UNIT_LABEL_CHARS,
            });
        assert_eq!(ProductError::MissingName.param(), Some("name"));
    }

    #[test]
    fn an_archived_product_stays_archived_until_reactivated() {
        let mut product = Product::default();
        product.apply(created());
        product.apply(update(
            ProductChanges {
                active: Some(false),
                ..Default::default()
            },
            200,
        ));
        assert!(!product.active);
        product.apply(update(
            ProductChanges {
                name: Some("Gold".into()),
                description: Some(Some("The best".into())),
                ..Default::default()
            },
            300,
        ));
        assert!(!product.active, "an unrelated update does not reactivate");
        assert_eq!(product.updated, 300);
        product.apply(update(
            ProductChanges {
                active: Some(true),
                description: Some(None),
                unit_label: Some(None),
                ..Default::default()
            },
            400,
        ));
        assert!(product.active);
        assert_eq!((product.description, product.unit_label), (None, None));
        assert_eq!(product.created, 100);
    }

    #[test]
    fn a_deleted_product_cannot_be_changed_or_deleted_again() {
        let deleted = ProductEvent::ProductDeleted { at: 200 };
        ProductTest::with(())
            .given(vec![created()])
            .when(ProductCommand::Delete { at: 200 })
            .then_expect_events(vec![deleted.clone()]);
        ProductTest::with(())
            .given(vec![created(), deleted.clone()])
            .when(ProductCommand::Update {
                changes: ProductChanges::default(),
                at: 300,
            })
            .then_expect_error(ProductError::NotFound);
        ProductTest::with(())
            .given(vec![created(), deleted])
            .when(ProductCommand::Delete { at: 300 })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn default_price_is_set_and_cleared() {
        let mut product = Product::default();
        product.apply(created());
        product.apply(update(
            ProductChanges {
                default_price: Some(Some("price_1".into())),
                ..Default::default()
            },
            200,
        ));
        assert_eq!(product.default_price.as_deref(), Some("price_1"));
        product.apply(update(
            ProductChanges {
                default_price: Some(None),
                ..Default::default()
            },
            300,
        ));
        assert_eq!(product.default_price, None);
    }

    #[test]
    fn a_stored_clear_is_still_a_clear_when_loaded() {
        let event = update(
            ProductChanges {
                description: Some(None),
                default_price: Some(None),
                ..Default::default()
            },
            200,
        );
        let stored = serde_json::to_value(&event).unwrap();
        assert_eq!(
            serde_json::from_value::<ProductEvent>(stored).unwrap(),
            event
        );
    }
}
