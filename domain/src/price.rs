//! A price: how much a product costs and how often, in one currency. Created, then only
//! its bookkeeping fields change (`active`, `nickname`, `lookup_key`, `metadata`, and
//! `tax_behavior` while it is still `unspecified`); the amount, currency, product and
//! interval never change, as at Stripe, so anything billed on a price can be read back
//! from it. There is no delete: a price is archived with `active: false`.
//!
//! Rules that span aggregates are the caller's: the product must exist in the same project
//! and mode, and a lookup key is unique among a project's prices (Stripe's
//! `transfer_lookup_key` moves it).

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::{
    apply_metadata_changes, validate_metadata, Metadata, MetadataError, MAX_TEXT_CHARS,
};
use crate::money::Currency;

/// The largest `unit_amount`, in minor units (Stripe's eight digits).
pub const MAX_UNIT_AMOUNT: i64 = 99_999_999;
/// Stripe's limit on `lookup_key`, in characters.
pub const MAX_LOOKUP_KEY_CHARS: usize = 200;

/// How often a recurring price bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub const ALL: [Interval; 4] = [
        Interval::Day,
        Interval::Week,
        Interval::Month,
        Interval::Year,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    /// The largest `interval_count`: one year between bills at most (365 days, 52 weeks,
    /// 12 months, 1 year). Stricter than the three years the endive SDK documents, on
    /// purpose: loosening a limit later breaks no one, tightening it would.
    pub fn max_count(self) -> u32 {
        match self {
            Interval::Day => 365,
            Interval::Week => 52,
            Interval::Month => 12,
            Interval::Year => 1,
        }
    }
}

/// `recurring` of a recurring price: billed every `interval_count` `interval`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurring {
    pub interval: Interval,
    pub interval_count: u32,
}

/// Stripe's `tax_behavior`: whether `unit_amount` includes tax. Once `inclusive` or
/// `exclusive`, it is fixed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaxBehavior {
    Inclusive,
    Exclusive,
    #[default]
    Unspecified,
}

impl TaxBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            TaxBehavior::Inclusive => "inclusive",
            TaxBehavior::Exclusive => "exclusive",
            TaxBehavior::Unspecified => "unspecified",
        }
    }
}

/// Stripe's `type`: decided by whether the price recurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceType {
    OneTime,
    Recurring,
}

impl PriceType {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceType::OneTime => "one_time",
            PriceType::Recurring => "recurring",
        }
    }
}

/// What a new price holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPrice {
    pub product: String,
    pub currency: Currency,
    /// Minor units per unit; zero is allowed (a free tier).
    pub unit_amount: i64,
    pub recurring: Option<Recurring>,
    pub tax_behavior: TaxBehavior,
    pub nickname: Option<String>,
    pub lookup_key: Option<String>,
    pub active: bool,
    pub metadata: Metadata,
}

impl NewPrice {
    /// The rules a new price must satisfy (also run by `handle`): callers that do other
    /// work first, such as creating the product of `product_data`, check here beforehand.
    pub fn validate(&self) -> Result<(), PriceError> {
        if self.unit_amount < 0 {
            return Err(PriceError::NegativeAmount);
        }
        if self.unit_amount > MAX_UNIT_AMOUNT {
            return Err(PriceError::AmountTooLarge {
                max: MAX_UNIT_AMOUNT,
            });
        }
        if let Some(recurring) = self.recurring {
            let max = recurring.interval.max_count();
            if recurring.interval_count < 1 || recurring.interval_count > max {
                return Err(PriceError::IntervalCountOutOfRange {
                    interval: recurring.interval.as_str(),
                    max,
                });
            }
        }
        validate_texts(self.nickname.as_deref(), self.lookup_key.as_deref())?;
        let changes = self
            .metadata
            .iter()
            .map(|(key, value)| (key.clone(), Some(value.clone())))
            .collect();
        validate_metadata(&Metadata::new(), &changes, false)?;
        Ok(())
    }
}

/// What an update may change. `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub nickname: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub lookup_key: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_behavior: Option<TaxBehavior>,
    /// Keys to set (`Some`) or remove (`None`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Option<String>>,
    /// Removes every metadata key before `metadata` applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_metadata: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceCommand {
    Create {
        price_id: String,
        price: NewPrice,
        at: i64,
    },
    Update {
        changes: PriceChanges,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriceEvent {
    PriceCreated {
        price_id: String,
        product: String,
        currency: Currency,
        unit_amount: i64,
        recurring: Option<Recurring>,
        tax_behavior: TaxBehavior,
        nickname: Option<String>,
        lookup_key: Option<String>,
        active: bool,
        metadata: Metadata,
        created: i64,
    },
    PriceUpdated {
        changes: PriceChanges,
        at: i64,
    },
}

impl DomainEvent for PriceEvent {
    fn event_type(&self) -> String {
        match self {
            PriceEvent::PriceCreated { .. } => "PriceCreated",
            PriceEvent::PriceUpdated { .. } => "PriceUpdated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("price already exists")]
    AlreadyExists,
    #[error("no such price")]
    NotFound,
    #[error("unit_amount must be greater than or equal to 0")]
    NegativeAmount,
    #[error("unit_amount must be less than or equal to {max}")]
    AmountTooLarge { max: i64 },
    #[error("interval_count for interval={interval} must be between 1 and {max} (at most one year between bills)")]
    IntervalCountOutOfRange { interval: &'static str, max: u32 },
    #[error("tax_behavior cannot be changed once it is inclusive or exclusive")]
    TaxBehaviorFixed,
    #[error("{field} is too long (at most {max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("metadata may hold at most 50 keys")]
    TooManyMetadataKeys,
}

impl PriceError {
    /// The request parameter the error is about, as Stripe names it.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            PriceError::NegativeAmount | PriceError::AmountTooLarge { .. } => Some("unit_amount"),
            PriceError::IntervalCountOutOfRange { .. } => Some("recurring[interval_count]"),
            PriceError::TaxBehaviorFixed => Some("tax_behavior"),
            PriceError::TooLong { field, .. } if field.starts_with("metadata") => Some("metadata"),
            PriceError::TooLong { field, .. } => Some(field),
            PriceError::TooManyMetadataKeys => Some("metadata"),
            PriceError::AlreadyExists | PriceError::NotFound => None,
        }
    }
}

impl From<MetadataError> for PriceError {
    fn from(error: MetadataError) -> Self {
        match error {
            MetadataError::TooLong { field, max } => PriceError::TooLong { field, max },
            MetadataError::TooManyKeys => PriceError::TooManyMetadataKeys,
        }
    }
}

fn validate_texts(nickname: Option<&str>, lookup_key: Option<&str>) -> Result<(), PriceError> {
    if nickname.is_some_and(|text| text.chars().count() > MAX_TEXT_CHARS) {
        return Err(PriceError::TooLong {
            field: "nickname",
            max: MAX_TEXT_CHARS,
        });
    }
    if lookup_key.is_some_and(|key| key.chars().count() > MAX_LOOKUP_KEY_CHARS) {
        return Err(PriceError::TooLong {
            field: "lookup_key",
            max: MAX_LOOKUP_KEY_CHARS,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub id: String,
    pub product: String,
    pub currency: Currency,
    pub unit_amount: i64,
    pub recurring: Option<Recurring>,
    pub tax_behavior: TaxBehavior,
    pub nickname: Option<String>,
    pub lookup_key: Option<String>,
    pub active: bool,
    pub metadata: Metadata,
    pub created: i64,
}

/// Before its created event; `currency` is a placeholder until then.
impl Default for Price {
    fn default() -> Self {
        Self {
            id: String::new(),
            product: String::new(),
            currency: Currency::USD,
            unit_amount: 0,
            recurring: None,
            tax_behavior: TaxBehavior::Unspecified,
            nickname: None,
            lookup_key: None,
            active: false,
            metadata: Metadata::new(),
            created: 0,
        }
    }
}

impl Price {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    pub fn price_type(&self) -> PriceType {
        if self.recurring.is_some() {
            PriceType::Recurring
        } else {
            PriceType::OneTime
        }
    }
}

impl Aggregate for Price {
    const TYPE: &'static str = "price";
    type Command = PriceCommand;
    type Event = PriceEvent;
    type Error = PriceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            PriceCommand::Create {
                price_id,
                price,
                at,
            } => {
                if self.exists() {
                    return Err(PriceError::AlreadyExists);
                }
                price.validate()?;
                PriceEvent::PriceCreated {
                    price_id,
                    product: price.product,
                    currency: price.currency,
                    unit_amount: price.unit_amount,
                    recurring: price.recurring,
                    tax_behavior: price.tax_behavior,
                    nickname: price.nickname,
                    lookup_key: price.lookup_key,
                    active: price.active,
                    metadata: price.metadata,
                    created: at,
                }
            }
            PriceCommand::Update { changes, at } => {
                if !self.exists() {
                    return Err(PriceError::NotFound);
                }
                if let Some(wanted) = changes.tax_behavior {
                    if self.tax_behavior != TaxBehavior::Unspecified && wanted != self.tax_behavior
                    {
                        return Err(PriceError::TaxBehaviorFixed);
                    }
                }
                validate_texts(
                    changes.nickname.as_ref().and_then(Option::as_deref),
                    changes.lookup_key.as_ref().and_then(Option::as_deref),
                )?;
                validate_metadata(&self.metadata, &changes.metadata, changes.clear_metadata)?;
                PriceEvent::PriceUpdated { changes, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PriceEvent::PriceCreated {
                price_id,
                product,
                currency,
                unit_amount,
                recurring,
                tax_behavior,
                nickname,
                lookup_key,
                active,
                metadata,
                created,
            } => {
                *self = Price {
                    id: price_id,
                    product,
                    currency,
                    unit_amount,
                    recurring,
                    tax_behavior,
                    nickname,
                    lookup_key,
                    active,
                    metadata,
                    created,
                };
            }
            PriceEvent::PriceUpdated { changes, .. } => {
                if let Some(active) = changes.active {
                    self.active = active;
                }
                if let Some(tax_behavior) = changes.tax_behavior {
                    self.tax_behavior = tax_behavior;
                }
                if let Some(nickname) = changes.nickname {
                    self.nickname = nickname;
                }
                if let Some(lookup_key) = changes.lookup_key {
                    self.lookup_key = lookup_key;
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

    type PriceTest = TestFramework<Price>;

    fn monthly() -> NewPrice {
        NewPrice {
            product: "prod_1".into(),
            currency: Currency::GBP,
            unit_amount: 1_500,
            recurring: Some(MONTHLY),
            tax_behavior: TaxBehavior::Unspecified,
            nickname: None,
            lookup_key: Some("gold_monthly".into()),
            active: true,
            metadata: Metadata::new(),
        }
    }

    const MONTHLY: Recurring = Recurring {
        interval: Interval::Month,
        interval_count: 1,
    };

    fn created_with(recurring: Option<Recurring>) -> PriceEvent {
        PriceEvent::PriceCreated {
            price_id: "price_1".into(),
            product: "prod_1".into(),
            currency: Currency::GBP,
            unit_amount: 1_500,
            recurring,
            tax_behavior: TaxBehavior::Unspecified,
            nickname: None,
            lookup_key: Some("gold_monthly".into()),
            active: true,
            metadata: Metadata::new(),
            created: 100,
        }
    }

    fn created() -> PriceEvent {
        created_with(Some(MONTHLY))
    }

    fn create(price: NewPrice) -> PriceCommand {
        PriceCommand::Create {
            price_id: "price_1".into(),
            price,
            at: 100,
        }
    }

    fn update(changes: PriceChanges) -> PriceCommand {
        PriceCommand::Update { changes, at: 200 }
    }

    #[test]
    fn create_records_the_price_once() {
        PriceTest::with(())
            .given_no_previous_events()
            .when(create(monthly()))
            .then_expect_events(vec![created()]);
        PriceTest::with(())
            .given(vec![created()])
            .when(create(monthly()))
            .then_expect_error(PriceError::AlreadyExists);
    }

    #[test]
    fn negative_and_oversized_amounts_are_refused_and_zero_is_free() {
        for (amount, error) in [
            (-1, Some(PriceError::NegativeAmount)),
            (
                MAX_UNIT_AMOUNT + 1,
                Some(PriceError::AmountTooLarge {
                    max: MAX_UNIT_AMOUNT,
                }),
            ),
            (0, None),
            (MAX_UNIT_AMOUNT, None),
        ] {
            let price = NewPrice {
                unit_amount: amount,
                ..monthly()
            };
            assert_eq!(price.validate().err(), error, "{amount}");
        }
        assert_eq!(PriceError::NegativeAmount.param(), Some("unit_amount"));
    }

    #[test]
    fn intervals_bill_at_most_once_a_year_and_at_least_once_an_interval() {
        for interval in Interval::ALL {
            let with_count = |interval_count| NewPrice {
                recurring: Some(Recurring {
                    interval,
                    interval_count,
                }),
                ..monthly()
            };
            assert_eq!(with_count(interval.max_count()).validate(), Ok(()));
            for count in [0, interval.max_count() + 1] {
                assert_eq!(
                    with_count(count).validate(),
                    Err(PriceError::IntervalCountOutOfRange {
                        interval: interval.as_str(),
                        max: interval.max_count(),
                    }),
                    "{interval:?} × {count}"
                );
            }
        }
        assert_eq!(
            (Interval::Month.max_count(), Interval::Week.max_count()),
            (12, 52)
        );
        assert_eq!(
            (Interval::Day.max_count(), Interval::Year.max_count()),
            (365, 1)
        );
    }

    #[test]
    fn the_type_follows_whether_the_price_recurs() {
        let mut recurring = Price::default();
        recurring.apply(created());
        assert_eq!(recurring.price_type(), PriceType::Recurring);
        let mut one_time = Price::default();
        one_time.apply(created_with(None));
        assert_eq!(one_time.price_type(), PriceType::OneTime);
    }

    #[test]
    fn an_archived_price_stays_archived_until_reactivated() {
        let mut price = Price::default();
        price.apply(created());
        price.apply(PriceEvent::PriceUpdated {
            changes: PriceChanges {
                active: Some(false),
                ..Default::default()
            },
            at: 200,
        });
        assert!(!price.active);
        price.apply(PriceEvent::PriceUpdated {
            changes: PriceChanges {
                nickname: Some(Some("Old gold".into())),
                lookup_key: Some(None),
                ..Default::default()
            },
            at: 300,
        });
        assert!(!price.active, "an unrelated update does not reactivate");
        assert_eq!(price.lookup_key, None);
        price.apply(PriceEvent::PriceUpdated {
            changes: PriceChanges {
                active: Some(true),
                ..Default::default()
            },
            at: 400,
        });
        assert!(price.active);
        assert_eq!(price.unit_amount, 1_500, "the amount never changes");
    }

    #[test]
    fn tax_behavior_is_set_once() {
        let set_inclusive = PriceChanges {
            tax_behavior: Some(TaxBehavior::Inclusive),
            ..Default::default()
        };
        let set = PriceEvent::PriceUpdated {
            changes: set_inclusive.clone(),
            at: 200,
        };
        PriceTest::with(())
            .given(vec![created()])
            .when(update(set_inclusive.clone()))
            .then_expect_events(vec![set.clone()]);
        // The same value again is no change; another one is refused.
        PriceTest::with(())
            .given(vec![created(), set.clone()])
            .when(update(set_inclusive))
            .then_expect_events(vec![set.clone()]);
        for other in [TaxBehavior::Exclusive, TaxBehavior::Unspecified] {
            PriceTest::with(())
                .given(vec![created(), set.clone()])
                .when(update(PriceChanges {
                    tax_behavior: Some(other),
                    ..Default::default()
                }))
                .then_expect_error(PriceError::TaxBehaviorFixed);
        }
    }

    #[test]
    fn updates_need_a_price_and_respect_limits() {
        PriceTest::with(())
            .given_no_previous_events()
            .when(update(PriceChanges::default()))
            .then_expect_error(PriceError::NotFound);
        PriceTest::with(())
            .given(vec![created()])
            .when(update(PriceChanges {
                lookup_key: Some(Some("k".repeat(MAX_LOOKUP_KEY_CHARS + 1))),
                ..Default::default()
            }))
            .then_expect_error(PriceError::TooLong {
                field: "lookup_key",
                max: MAX_LOOKUP_KEY_CHARS,
            });
    }

    #[test]
    fn events_serialise_currency_and_interval_as_stripe_writes_them() {
        let json = serde_json::to_value(created()).unwrap();
        let body = &json["PriceCreated"];
        assert_eq!(body["currency"], "gbp");
        assert_eq!(body["recurring"]["interval"], "month");
        assert_eq!(body["tax_behavior"], "unspecified");
    }

    #[test]
    fn a_stored_clear_is_still_a_clear_when_loaded() {
        let event = PriceEvent::PriceUpdated {
            changes: PriceChanges {
                lookup_key: Some(None),
                nickname: Some(None),
                ..Default::default()
            },
            at: 200,
        };
        let stored = serde_json::to_value(&event).unwrap();
        assert_eq!(serde_json::from_value::<PriceEvent>(stored).unwrap(), event);
    }
}
