//! A tax rate: a percentage, inclusive or exclusive, that invoice lines apply (the
//! arithmetic is [`crate::tax`]'s). Created, then only its descriptive fields and `active`
//! change: `percentage` and `inclusive` are fixed for life, as at Stripe, so every amount
//! ever taxed at a rate can be recomputed from it. No delete: archive with `active: false`.

use std::collections::BTreeMap;
use std::str::FromStr;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::customer::{
    apply_metadata_changes, validate_metadata, Metadata, MetadataError, MAX_TEXT_CHARS,
};
use crate::tax::{check_percentage, AppliedRate};

/// Stripe's limits, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 50;
pub const MAX_JURISDICTION_CHARS: usize = 50;

/// Stripe's `tax_type` values.
pub const TAX_TYPES: &[&str] = &[
    "admissions_tax",
    "amusement_tax",
    "attendance_tax",
    "communications_tax",
    "digital_excise_tax",
    "entertainment_tax",
    "get_fund",
    "gross_receipts_tax",
    "gst",
    "hospitality_tax",
    "hst",
    "igst",
    "jct",
    "lease_tax",
    "luxury_tax",
    "mass_transit_parking_tax",
    "nhil",
    "parking_tax",
    "pst",
    "qst",
    "resort_tax",
    "retail_delivery_fee",
    "rst",
    "sales_tax",
    "service_tax",
    "tourism_tax",
    "utility_users_tax",
    "vat",
];

/// What a new tax rate holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTaxRate {
    pub display_name: String,
    /// Percent, 0 to 100 (`20` or `17.5`).
    pub percentage: Decimal,
    pub inclusive: bool,
    pub active: bool,
    /// ISO 3166-1 alpha-2, uppercase.
    pub country: Option<String>,
    /// ISO 3166-2 subdivision code without the country prefix (`NY`).
    pub state: Option<String>,
    pub jurisdiction: Option<String>,
    pub description: Option<String>,
    pub tax_type: Option<String>,
    pub metadata: Metadata,
}

/// What an update may change (never `percentage` or `inclusive`). `None` leaves a field
/// alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRateChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
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
    pub jurisdiction: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub country: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub state: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub tax_type: Option<Option<String>>,
    /// Keys to set (`Some`) or remove (`None`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Option<String>>,
    /// Removes every metadata key before `metadata` applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_metadata: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaxRateCommand {
    Create {
        tax_rate_id: String,
        tax_rate: NewTaxRate,
        at: i64,
    },
    Update {
        changes: TaxRateChanges,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaxRateEvent {
    TaxRateCreated {
        tax_rate_id: String,
        display_name: String,
        percentage: Decimal,
        inclusive: bool,
        active: bool,
        country: Option<String>,
        state: Option<String>,
        jurisdiction: Option<String>,
        description: Option<String>,
        tax_type: Option<String>,
        metadata: Metadata,
        created: i64,
    },
    TaxRateUpdated {
        changes: TaxRateChanges,
        at: i64,
    },
}

impl DomainEvent for TaxRateEvent {
    fn event_type(&self) -> String {
        match self {
            TaxRateEvent::TaxRateCreated { .. } => "TaxRateCreated",
            TaxRateEvent::TaxRateUpdated { .. } => "TaxRateUpdated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxRateError {
    #[error("tax rate already exists")]
    AlreadyExists,
    #[error("no such tax rate")]
    NotFound,
    #[error("a tax rate needs a display_name")]
    MissingDisplayName,
    #[error("percentage must be a decimal number, e.g. 20 or 17.5")]
    InvalidPercentage,
    #[error("percentage must be between 0 and 100")]
    PercentageOutOfRange,
    #[error("country must be a two-letter ISO 3166-1 code, e.g. GB")]
    InvalidCountry,
    #[error("state must be an ISO 3166-2 subdivision code without the country prefix, e.g. NY")]
    InvalidState,
    #[error("{0:?} is not a tax type (e.g. vat, sales_tax, gst)")]
    UnknownTaxType(String),
    #[error("{field} is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("metadata may hold at most 50 keys")]
    TooManyMetadataKeys,
}

impl TaxRateError {
    /// The request parameter the error is about, as Stripe names it.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            TaxRateError::MissingDisplayName => Some("display_name"),
            TaxRateError::InvalidPercentage | TaxRateError::PercentageOutOfRange => {
                Some("percentage")
            }
            TaxRateError::InvalidCountry => Some("country"),
            TaxRateError::InvalidState => Some("state"),
            TaxRateError::UnknownTaxType(_) => Some("tax_type"),
            TaxRateError::TooLong { field, .. } if field.starts_with("metadata") => {
                Some("metadata")
            }
            TaxRateError::TooLong { field, .. } => Some(field),
            TaxRateError::TooManyMetadataKeys => Some("metadata"),
            TaxRateError::AlreadyExists | TaxRateError::NotFound => None,
        }
    }
}

impl From<MetadataError> for TaxRateError {
    fn from(error: MetadataError) -> Self {
        match error {
            MetadataError::TooLong { field, max } => TaxRateError::TooLong { field, max },
            MetadataError::TooManyKeys => TaxRateError::TooManyMetadataKeys,
        }
    }
}

/// A percentage as a request writes it (`20`, `17.5`, `20.0` from a float), checked to be
/// within 0 to 100.
pub fn parse_percentage(text: &str) -> Result<Decimal, TaxRateError> {
    let percentage = Decimal::from_str(text.trim()).map_err(|_| TaxRateError::InvalidPercentage)?;
    check_percentage(percentage).map_err(|_| TaxRateError::PercentageOutOfRange)?;
    Ok(percentage.normalize())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRate {
    pub id: String,
    pub display_name: String,
    pub percentage: Decimal,
    pub inclusive: bool,
    pub active: bool,
    pub country: Option<String>,
    pub state: Option<String>,
    pub jurisdiction: Option<String>,
    pub description: Option<String>,
    pub tax_type: Option<String>,
    pub metadata: Metadata,
    pub created: i64,
}

impl TaxRate {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// The rate as an invoice line applies it.
    pub fn applied(&self) -> AppliedRate {
        AppliedRate {
            tax_rate: self.id.clone(),
            percentage: self.percentage,
            inclusive: self.inclusive,
        }
    }
}

fn validate_display_name(name: &str) -> Result<(), TaxRateError> {
    if name.trim().is_empty() {
        return Err(TaxRateError::MissingDisplayName);
    }
    validate_length("display_name", Some(name), MAX_DISPLAY_NAME_CHARS)
}

fn validate_length(
    field: &'static str,
    text: Option<&str>,
    max: usize,
) -> Result<(), TaxRateError> {
    if text.is_some_and(|text| text.chars().count() > max) {
        return Err(TaxRateError::TooLong { field, max });
    }
    Ok(())
}

fn validate_country(country: Option<&str>) -> Result<(), TaxRateError> {
    match country {
        Some(code) if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) => {
            Err(TaxRateError::InvalidCountry)
        }
        _ => Ok(()),
    }
}

fn validate_state(state: Option<&str>) -> Result<(), TaxRateError> {
    match state {
        Some(code)
            if code.is_empty()
                || code.len() > 3
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
        {
            Err(TaxRateError::InvalidState)
        }
        _ => Ok(()),
    }
}

fn validate_tax_type(tax_type: Option<&str>) -> Result<(), TaxRateError> {
    match tax_type {
        Some(tax_type) if !TAX_TYPES.contains(&tax_type) => {
            Err(TaxRateError::UnknownTaxType(tax_type.to_string()))
        }
        _ => Ok(()),
    }
}

/// The optional descriptive fields, as they will be after a create or an update.
fn validate_details(
    country: Option<&str>,
    state: Option<&str>,
    jurisdiction: Option<&str>,
    description: Option<&str>,
    tax_type: Option<&str>,
) -> Result<(), TaxRateError> {
    validate_country(country)?;
    validate_state(state)?;
    validate_length("jurisdiction", jurisdiction, MAX_JURISDICTION_CHARS)?;
    validate_length("description", description, MAX_TEXT_CHARS)?;
    validate_tax_type(tax_type)
}

/// `Some(Some(text))` of a change as `Some(text)`, anything else as `None`.
fn set_to(change: &Option<Option<String>>) -> Option<&str> {
    change.as_ref().and_then(Option::as_deref)
}

impl Aggregate for TaxRate {
    const TYPE: &'static str = "tax_rate";
    type Command = TaxRateCommand;
    type Event = TaxRateEvent;
    type Error = TaxRateError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            TaxRateCommand::Create {
                tax_rate_id,
                tax_rate,
                at,
            } => {
                if self.exists() {
                    return Err(TaxRateError::AlreadyExists);
                }
                validate_display_name(&tax_rate.display_name)?;
                check_percentage(tax_rate.percentage)
                    .map_err(|_| TaxRateError::PercentageOutOfRange)?;
                validate_details(
                    tax_rate.country.as_deref(),
                    tax_rate.state.as_deref(),
                    tax_rate.jurisdiction.as_deref(),
                    tax_rate.description.as_deref(),
                    tax_rate.tax_type.as_deref(),
                )?;
                let changes = tax_rate
                    .metadata
                    .iter()
                    .map(|(key, value)| (key.clone(), Some(value.clone())))
                    .collect();
                validate_metadata(&Metadata::new(), &changes, false)?;
                TaxRateEvent::TaxRateCreated {
                    tax_rate_id,
                    display_name: tax_rate.display_name,
                    percentage: tax_rate.percentage,
                    inclusive: tax_rate.inclusive,
                    active: tax_rate.active,
                    country: tax_rate.country,
                    state: tax_rate.state,
                    jurisdiction: tax_rate.jurisdiction,
                    description: tax_rate.description,
                    tax_type: tax_rate.tax_type,
                    metadata: tax_rate.metadata,
                    created: at,
                }
            }
            TaxRateCommand::Update { changes, at } => {
                if !self.exists() {
                    return Err(TaxRateError::NotFound);
                }
                if let Some(name) = &changes.display_name {
                    validate_display_name(name)?;
                }
                validate_details(
                    set_to(&changes.country),
                    set_to(&changes.state),
                    set_to(&changes.jurisdiction),
                    set_to(&changes.description),
                    set_to(&changes.tax_type),
                )?;
                validate_metadata(&self.metadata, &changes.metadata, changes.clear_metadata)?;
                TaxRateEvent::TaxRateUpdated { changes, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TaxRateEvent::TaxRateCreated {
                tax_rate_id,
                display_name,
                percentage,
                inclusive,
                active,
                country,
                state,
                jurisdiction,
                description,
                tax_type,
                metadata,
                created,
            } => {
                *self = TaxRate {
                    id: tax_rate_id,
                    display_name,
                    percentage,
                    inclusive,
                    active,
                    country,
                    state,
                    jurisdiction,
                    description,
                    tax_type,
                    metadata,
                    created,
                };
            }
            TaxRateEvent::TaxRateUpdated { changes, .. } => {
                if let Some(active) = changes.active {
                    self.active = active;
                }
                if let Some(display_name) = changes.display_name {
                    self.display_name = display_name;
                }
                for (target, change) in [
                    (&mut self.description, changes.description),
                    (&mut self.jurisdiction, changes.jurisdiction),
                    (&mut self.country, changes.country),
                    (&mut self.state, changes.state),
                    (&mut self.tax_type, changes.tax_type),
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
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type TaxRateTest = TestFramework<TaxRate>;

    fn vat() -> NewTaxRate {
        NewTaxRate {
            display_name: "VAT".into(),
            percentage: Decimal::from(20),
            inclusive: false,
            active: true,
            country: Some("GB".into()),
            state: None,
            jurisdiction: Some("UK".into()),
            description: None,
            tax_type: Some("vat".into()),
            metadata: Metadata::new(),
        }
    }

    fn created() -> TaxRateEvent {
        TaxRateEvent::TaxRateCreated {
            tax_rate_id: "txr_1".into(),
            display_name: "VAT".into(),
            percentage: Decimal::from(20),
            inclusive: false,
            active: true,
            country: Some("GB".into()),
            state: None,
            jurisdiction: Some("UK".into()),
            description: None,
            tax_type: Some("vat".into()),
            metadata: Metadata::new(),
            created: 100,
        }
    }

    fn create(tax_rate: NewTaxRate) -> TaxRateCommand {
        TaxRateCommand::Create {
            tax_rate_id: "txr_1".into(),
            tax_rate,
            at: 100,
        }
    }

    #[test]
    fn create_records_the_rate_once() {
        TaxRateTest::with(())
            .given_no_previous_events()
            .when(create(vat()))
            .then_expect_events(vec![created()]);
        TaxRateTest::with(())
            .given(vec![created()])
            .when(create(vat()))
            .then_expect_error(TaxRateError::AlreadyExists);
    }

    #[test]
    fn percentages_are_parsed_exactly_and_kept_within_0_to_100() {
        assert_eq!(parse_percentage("17.5"), Ok(Decimal::new(175, 1)));
        assert_eq!(
            parse_percentage("20.0").map(|p| p.to_string()),
            Ok("20".into())
        );
        assert_eq!(parse_percentage("0"), Ok(Decimal::ZERO));
        assert_eq!(parse_percentage("100"), Ok(Decimal::ONE_HUNDRED));
        assert_eq!(
            parse_percentage("100.01"),
            Err(TaxRateError::PercentageOutOfRange)
        );
        assert_eq!(
            parse_percentage("-1"),
            Err(TaxRateError::PercentageOutOfRange)
        );
        assert_eq!(
            parse_percentage("twenty"),
            Err(TaxRateError::InvalidPercentage)
        );
        TaxRateTest::with(())
            .given_no_previous_events()
            .when(create(NewTaxRate {
                percentage: Decimal::from(101),
                ..vat()
            }))
            .then_expect_error(TaxRateError::PercentageOutOfRange);
    }

    #[test]
    fn descriptive_fields_are_checked() {
        for (tax_rate, error) in [
            (
                NewTaxRate {
                    display_name: " ".into(),
                    ..vat()
                },
                TaxRateError::MissingDisplayName,
            ),
            (
                NewTaxRate {
                    country: Some("gbr".into()),
                    ..vat()
                },
                TaxRateError::InvalidCountry,
            ),
            (
                NewTaxRate {
                    state: Some("US-NY".into()),
                    ..vat()
                },
                TaxRateError::InvalidState,
            ),
            (
                NewTaxRate {
                    tax_type: Some("poll_tax".into()),
                    ..vat()
                },
                TaxRateError::UnknownTaxType("poll_tax".into()),
            ),
        ] {
            TaxRateTest::with(())
                .given_no_previous_events()
                .when(create(tax_rate))
                .then_expect_error(error);
        }
        assert_eq!(TaxRateError::InvalidCountry.param(), Some("country"));
    }

    #[test]
    fn updates_change_descriptions_never_the_rate() {
        let mut rate = TaxRate::default();
        rate.apply(created());
        rate.apply(TaxRateEvent::TaxRateUpdated {
            changes: TaxRateChanges {
                display_name: Some("UK VAT".into()),
                jurisdiction: Some(None),
                state: Some(Some("ENG".into())),
                ..Default::default()
            },
            at: 200,
        });
        assert_eq!(rate.display_name, "UK VAT");
        assert_eq!(rate.jurisdiction, None);
        assert_eq!(rate.state.as_deref(), Some("ENG"));
        assert_eq!(
            rate.applied(),
            AppliedRate {
                tax_rate: "txr_1".into(),
                percentage: Decimal::from(20),
                inclusive: false,
            }
        );
    }

    #[test]
    fn an_archived_rate_stays_archived_until_reactivated() {
        let archive = TaxRateEvent::TaxRateUpdated {
            changes: TaxRateChanges {
                active: Some(false),
                ..Default::default()
            },
            at: 200,
        };
        let mut rate = TaxRate::default();
        rate.apply(created());
        rate.apply(archive);
        rate.apply(TaxRateEvent::TaxRateUpdated {
            changes: TaxRateChanges {
                description: Some(Some("Standard rate".into())),
                ..Default::default()
            },
            at: 300,
        });
        assert!(!rate.active);
        rate.apply(TaxRateEvent::TaxRateUpdated {
            changes: TaxRateChanges {
                active: Some(true),
                ..Default::default()
            },
            at: 400,
        });
        assert!(rate.active);
    }

    #[test]
    fn updates_need_a_rate_and_valid_fields() {
        TaxRateTest::with(())
            .given_no_previous_events()
            .when(TaxRateCommand::Update {
                changes: TaxRateChanges::default(),
                at: 200,
            })
            .then_expect_error(TaxRateError::NotFound);
        TaxRateTest::with(())
            .given(vec![created()])
            .when(TaxRateCommand::Update {
                changes: TaxRateChanges {
                    tax_type: Some(Some("tithe".into())),
                    ..Default::default()
                },
                at: 200,
            })
            .then_expect_error(TaxRateError::UnknownTaxType("tithe".into()));
    }

    #[test]
    fn the_percentage_is_stored_as_an_exact_decimal_string() {
        let json = serde_json::to_value(created()).unwrap();
        assert_eq!(json["TaxRateCreated"]["percentage"], "20");
    }

    #[test]
    fn a_stored_clear_is_still_a_clear_when_loaded() {
        let event = TaxRateEvent::TaxRateUpdated {
            changes: TaxRateChanges {
                jurisdiction: Some(None),
                country: Some(None),
                ..Default::default()
            },
            at: 200,
        };
        let stored = serde_json::to_value(&event).unwrap();
        assert_eq!(
            serde_json::from_value::<TaxRateEvent>(stored).unwrap(),
            event
        );
    }
}
