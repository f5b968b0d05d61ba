//! The subscription: a customer paying for prices on a cadence.
//!
//! Statuses as at Stripe: `incomplete` until the first invoice is paid (then `active`, or
//! `incomplete_expired` after 23 hours), `trialing` until the trial ends, `past_due` once a
//! renewal's retries are spent (back to `active` when it is paid), `canceled` at the end.
//!
//! A renewal names the period it renews (`from_period_end`), so renewing the same period
//! twice — two schedulers, a retried job, a crash between deciding and answering — is
//! refused by the aggregate itself: every period is billed exactly once.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::Metadata;
use crate::money::Currency;
use crate::recurring::{self, Cadence};
use crate::tax::AppliedRate;

/// How long a first invoice may stay unpaid before the subscription expires.
pub const INCOMPLETE_EXPIRY_SECONDS: i64 = 23 * 3_600;
/// Stripe's limit on items per subscription.
pub const MAX_ITEMS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    #[default]
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            SubscriptionStatus::Incomplete,
            SubscriptionStatus::IncompleteExpired,
            SubscriptionStatus::Trialing,
            SubscriptionStatus::Active,
            SubscriptionStatus::PastDue,
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Unpaid,
            SubscriptionStatus::Paused,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether the subscription has ended for good.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
        )
    }
}

/// A recurring price as the subscription bills it (a copy: later price changes never
/// rewrite what a subscription agreed to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPrice {
    pub price: String,
    pub product: String,
    /// The product's name, for invoice lines.
    pub description: String,
    pub unit_amount: i64,
    pub currency: Currency,
    pub cadence: Cadence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionItem {
    /// `si_…`.
    pub id: String,
    pub price: PlanPrice,
    pub quantity: i64,
    pub created: i64,
    #[serde(default)]
    pub metadata: Metadata,
}

impl SubscriptionItem {
    pub fn amount(&self) -> i64 {
        self.price.unit_amount.saturating_mul(self.quantity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSubscription {
    pub subscription_id: String,
    pub customer: String,
    pub items: Vec<SubscriptionItem>,
    #[serde(default)]
    pub default_payment_method: Option<String>,
    #[serde(default)]
    pub default_tax_rates: Vec<AppliedRate>,
    #[serde(default)]
    pub trial_end: Option<i64>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub test_clock: Option<String>,
    /// The first invoice, opened in the same unit of work.
    pub first_invoice: String,
}

/// What an update may change. `Some(None)` clears.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SubscriptionChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_at_period_end: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub default_payment_method: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub description: Option<Option<String>>,
    /// Keys to set; an empty value removes the key.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

impl SubscriptionChanges {
    pub fn is_empty(&self) -> bool {
        self == &SubscriptionChanges::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionCommand {
    Create {
        subscription: Box<NewSubscription>,
        at: i64,
    },
    Update {
        changes: SubscriptionChanges,
        at: i64,
    },
    /// Replaces the items (price or quantity changes); prorations are separate invoice items.
    ChangeItems {
        items: Vec<SubscriptionItem>,
        at: i64,
    },
    /// Starts the period after the one ending at `from_period_end`, billed by `invoice`.
    Renew {
        from_period_end: i64,
        invoice: String,
        at: i64,
    },
    /// An invoice of this subscription was paid.
    RecordInvoicePaid {
        invoice: String,
        at: i64,
    },
    /// The dunning rule is spent for `invoice`.
    RecordRetriesExhausted {
        invoice: String,
        at: i64,
    },
    ExpireIncomplete {
        at: i64,
    },
    Cancel {
        reason: Option<String>,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    SubscriptionCreated {
        subscription: Box<NewSubscription>,
        status: SubscriptionStatus,
        billing_cycle_anchor: i64,
        current_period_start: i64,
        current_period_end: i64,
        /// Which period of the cycle the next renewal starts (the trial is not one).
        next_period_index: u32,
        created: i64,
    },
    SubscriptionUpdated {
        changes: SubscriptionChanges,
        at: i64,
    },
    SubscriptionItemsChanged {
        items: Vec<SubscriptionItem>,
        at: i64,
    },
    SubscriptionRenewed {
        current_period_start: i64,
        current_period_end: i64,
        next_period_index: u32,
        invoice: String,
        status: SubscriptionStatus,
        at: i64,
    },
    SubscriptionStatusChanged {
        status: SubscriptionStatus,
        at: i64,
    },
    SubscriptionCanceled {
        reason: Option<String>,
        at: i64,
    },
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        match self {
            SubscriptionEvent::SubscriptionCreated { .. } => "SubscriptionCreated",
            SubscriptionEvent::SubscriptionUpdated { .. } => "SubscriptionUpdated",
            SubscriptionEvent::SubscriptionItemsChanged { .. } => "SubscriptionItemsChanged",
            SubscriptionEvent::SubscriptionRenewed { .. } => "SubscriptionRenewed",
            SubscriptionEvent::SubscriptionStatusChanged { .. } => "SubscriptionStatusChanged",
            SubscriptionEvent::SubscriptionCanceled { .. } => "SubscriptionCanceled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription already exists")]
    AlreadyExists,
    #[error("no such subscription")]
    NotFound,
    #[error("A subscription needs at least one item.")]
    NoItems,
    #[error("A subscription may have at most {MAX_ITEMS} items.")]
    TooManyItems,
    #[error("All prices on a subscription must have the same currency and billing interval.")]
    MixedCadence,
    #[error("Quantity must be at least 1.")]
    BadQuantity,
    #[error("trial_end must be in the future.")]
    TrialInPast,
    #[error("This subscription was canceled or has expired; it can no longer be changed.")]
    Ended,
    #[error("The period ending at {0} was already renewed.")]
    AlreadyRenewed(i64),
    #[error("This subscription is not due for renewal in its current status ({0}).")]
    NotRenewable(&'static str),
    #[error("This subscription ends at the end of its period instead of renewing.")]
    CancelsAtPeriodEnd,
    #[error("The subscription is not incomplete.")]
    NotIncomplete,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: SubscriptionStatus,
    pub items: Vec<SubscriptionItem>,
    pub default_payment_method: Option<String>,
    pub default_tax_rates: Vec<AppliedRate>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    pub start_date: i64,
    pub billing_cycle_anchor: i64,
    pub current_period_start: i64,
    pub current_period_end: i64,
    pub next_period_index: u32,
    pub latest_invoice: Option<String>,
    pub metadata: Metadata,
    pub description: Option<String>,
    pub test_clock: Option<String>,
    pub created: i64,
}

impl Subscription {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    pub fn currency(&self) -> Option<Currency> {
        self.items.first().map(|item| item.price.currency)
    }

    pub fn cadence(&self) -> Option<Cadence> {
        self.items.first().map(|item| item.price.cadence)
    }

    /// The period after the current one.
    pub fn next_period(&self) -> Option<(i64, i64)> {
        let cadence = self.cadence()?;
        Some((
            self.current_period_end,
            cadence.period_end(self.billing_cycle_anchor, self.next_period_index),
        ))
    }

    fn require_live(&self) -> Result<(), SubscriptionError> {
        if !self.exists() {
            return Err(SubscriptionError::NotFound);
        }
        if self.status.is_final() {
            return Err(SubscriptionError::Ended);
        }
        Ok(())
    }
}

pub fn validate_items(items: &[SubscriptionItem]) -> Result<(), SubscriptionError> {
    let first = items.first().ok_or(SubscriptionError::NoItems)?;
    if items.len() > MAX_ITEMS {
        return Err(SubscriptionError::TooManyItems);
    }
    for item in items {
        if item.quantity < 1 {
            return Err(SubscriptionError::BadQuantity);
        }
        if item.price.currency != first.price.currency || item.price.cadence != first.price.cadence
        {
            return Err(SubscriptionError::MixedCadence);
        }
    }
    Ok(())
}

impl Aggregate for Subscription {
    const TYPE: &'static str = "subscription";
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            SubscriptionCommand::Create { subscription, at } => {
                if self.exists() {
                    return Err(SubscriptionError::AlreadyExists);
                }
                validate_items(&subscription.items)?;
                let cadence = subscription.items[0].price.cadence;
                let event = match subscription.trial_end {
                    Some(trial_end) if trial_end <= at => {
                        return Err(SubscriptionError::TrialInPast)
                    }
                    Some(trial_end) => SubscriptionEvent::SubscriptionCreated {
                        subscription,
                        status: SubscriptionStatus::Trialing,
                        billing_cycle_anchor: trial_end,
                        current_period_start: at,
                        current_period_end: trial_end,
                        next_period_index: 0,
                        created: at,
                    },
                    None => SubscriptionEvent::SubscriptionCreated {
                        subscription,
                        status: SubscriptionStatus::Incomplete,
                        billing_cycle_anchor: at,
                        current_period_start: at,
                        current_period_end: cadence.period_end(at, 0),
                        next_period_index: 1,
                        created: at,
                    },
                };
                sink.write(event, self).await;
            }
            SubscriptionCommand::Update { changes, at } => {
                self.require_live()?;
                sink.write(SubscriptionEvent::SubscriptionUpdated { changes, at }, self)
                    .await;
            }
            SubscriptionCommand::ChangeItems { items, at } => {
                self.require_live()?;
                validate_items(&items)?;
                if Some(items[0].price.cadence) != self.cadence()
                    || Some(items[0].price.currency) != self.currency()
                {
                    return Err(SubscriptionError::MixedCadence);
                }
                sink.write(
                    SubscriptionEvent::SubscriptionItemsChanged { items, at },
                    self,
                )
                .await;
            }
            SubscriptionCommand::Renew {
                from_period_end,
                invoice,
                at,
            } => {
                self.require_live()?;
                if from_period_end != self.current_period_end {
                    return Err(SubscriptionError::AlreadyRenewed(from_period_end));
                }
                if self.cancel_at_period_end {
                    return Err(SubscriptionError::CancelsAtPeriodEnd);
                }
                let status = match self.status {
                    SubscriptionStatus::Trialing => SubscriptionStatus::Active,
                    SubscriptionStatus::Active | SubscriptionStatus::PastDue => self.status,
                    other => return Err(SubscriptionError::NotRenewable(other.as_str())),
                };
                let (start, end) = self.next_period().ok_or(SubscriptionError::NoItems)?;
                sink.write(
                    SubscriptionEvent::SubscriptionRenewed {
                        current_period_start: start,
                        current_period_end: end,
                        next_period_index: self.next_period_index.saturating_add(1),
                        invoice,
                        status,
                        at,
                    },
                    self,
                )
                .await;
            }
            SubscriptionCommand::RecordInvoicePaid { invoice, at } => {
                self.require_live()?;
                let recovers = match self.status {
                    SubscriptionStatus::Incomplete => true,
                    SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid => {
                        self.latest_invoice.as_deref() == Some(invoice.as_str())
                    }
                    _ => false,
                };
                if recovers {
                    sink.write(
                        SubscriptionEvent::SubscriptionStatusChanged {
                            status: SubscriptionStatus::Active,
                            at,
                        },
                        self,
                    )
                    .await;
                }
            }
            SubscriptionCommand::RecordRetriesExhausted { invoice: _, at } => {
                self.require_live()?;
                if matches!(
                    self.status,
                    SubscriptionStatus::Active | SubscriptionStatus::Trialing
                ) {
                    sink.write(
                        SubscriptionEvent::SubscriptionStatusChanged {
                            status: SubscriptionStatus::PastDue,
                            at,
                        },
                        self,
                    )
                    .await;
                }
            }
            SubscriptionCommand::ExpireIncomplete { at } => {
                self.require_live()?;
                if self.status != SubscriptionStatus::Incomplete {
                    return Err(SubscriptionError::NotIncomplete);
                }
                sink.write(
                    SubscriptionEvent::SubscriptionStatusChanged {
                        status: SubscriptionStatus::IncompleteExpired,
                        at,
                    },
                    self,
                )
                .await;
            }
            SubscriptionCommand::Cancel { reason, at } => {
                self.require_live()?;
                sink.write(SubscriptionEvent::SubscriptionCanceled { reason, at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SubscriptionEvent::SubscriptionCreated {
                subscription,
                status,
                billing_cycle_anchor,
                current_period_start,
                current_period_end,
                next_period_index,
                created,
            } => {
                let subscription = *subscription;
                self.id = subscription.subscription_id;
                self.customer = subscription.customer;
                self.items = subscription.items;
                self.default_payment_method = subscription.default_payment_method;
                self.default_tax_rates = subscription.default_tax_rates;
                self.cancel_at_period_end = subscription.cancel_at_period_end;
                self.metadata = subscription.metadata;
                self.description = subscription.description;
                self.test_clock = subscription.test_clock;
                self.latest_invoice = Some(subscription.first_invoice);
                if let Some(trial_end) = subscription.trial_end {
                    self.trial_start = Some(created);
                    self.trial_end = Some(trial_end);
                }
                self.status = status;
                self.billing_cycle_anchor = billing_cycle_anchor;
                self.current_period_start = current_period_start;
                self.current_period_end = current_period_end;
                self.next_period_index = next_period_index;
                self.start_date = created;
                self.created = created;
            }
            SubscriptionEvent::SubscriptionUpdated { changes, at } => {
                if let Some(flag) = changes.cancel_at_period_end {
                    // As at Stripe: `canceled_at` is when the cancellation was asked for
                    // (set at once, cleared when it is withdrawn); `ended_at` when it ends.
                    if flag != self.cancel_at_period_end {
                        self.canceled_at = flag.then_some(at);
                    }
                    self.cancel_at_period_end = flag;
                }
                if let Some(method) = changes.default_payment_method {
                    self.default_payment_method = method;
                }
                if let Some(description) = changes.description {
                    self.description = description;
                }
                for (key, value) in changes.metadata {
                    if value.is_empty() {
                        self.metadata.remove(&key);
                    } else {
                        self.metadata.insert(key, value);
                    }
                }
            }
            SubscriptionEvent::SubscriptionItemsChanged { items, .. } => self.items = items,
            SubscriptionEvent::SubscriptionRenewed {
                current_period_start,
                current_period_end,
                next_period_index,
                invoice,
                status,
                ..
            } => {
                self.current_period_start = current_period_start;
                self.current_period_end = current_period_end;
                self.next_period_index = next_period_index;
                self.latest_invoice = Some(invoice);
                self.status = status;
            }
            SubscriptionEvent::SubscriptionStatusChanged { status, .. } => self.status = status,
            SubscriptionEvent::SubscriptionCanceled { reason, at } => {
                let scheduled_end = self.cancel_at_period_end && at == self.current_period_end;
                if !scheduled_end || self.canceled_at.is_none() {
                    self.canceled_at = Some(at);
                }
                self.status = SubscriptionStatus::Canceled;
                self.ended_at = Some(at);
                self.cancellation_reason = reason;
            }
        }
    }
}

/// The proration of moving from `old` to `new` items at `at`, within the current period:
/// for each item whose amount changed, a credit for the unused part of the old amount and
/// a charge for the remaining part of the new one (daily, see [`recurring::prorate`]).
/// Returns (description, amount, price, subscription item) per proration line.
pub fn prorations(
    subscription: &Subscription,
    new_items: &[SubscriptionItem],
    at: i64,
) -> Vec<Proration> {
    let start = subscription.current_period_start;
    let end = subscription.current_period_end;
    let mut lines = Vec::new();
    for old in &subscription.items {
        let replacement = new_items.iter().find(|item| item.id == old.id);
        let unchanged =
            replacement.is_some_and(|new| new.price == old.price && new.quantity == old.quantity);
        if unchanged {
            continue;
        }
        lines.push(Proration {
            description: format!(
                "Unused time on {} × {}",
                old.quantity, old.price.description
            ),
            amount: -recurring::prorate(old.amount(), start, end, at),
            quantity: old.quantity,
            price: old.price.clone(),
            subscription_item: old.id.clone(),
            period_start: at,
            period_end: end,
        });
    }
    for new in new_items {
        let previous = subscription.items.iter().find(|item| item.id == new.id);
        let unchanged =
            previous.is_some_and(|old| new.price == old.price && new.quantity == old.quantity);
        if unchanged {
            continue;
        }
        lines.push(Proration {
            description: format!(
                "Remaining time on {} × {}",
                new.quantity, new.price.description
            ),
            amount: recurring::prorate(new.amount(), start, end, at),
            quantity: new.quantity,
            price: new.price.clone(),
            subscription_item: new.id.clone(),
            period_start: at,
            period_end: end,
        });
    }
    lines.retain(|line| line.amount != 0);
    lines
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proration {
    pub description: String,
    pub amount: i64,
    pub quantity: i64,
    pub price: PlanPrice,
    pub subscription_item: String,
    pub period_start: i64,
    pub period_end: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recurring::Interval;

    const DAY: i64 = 86_400;
    // 2026-11-01T00:00:00Z
    const NOV_1: i64 = 1_793_491_200;

    fn price(amount: i64) -> PlanPrice {
        PlanPrice {
            price: format!("price_{amount}"),
            product: "prod_1".into(),
            description: "Pro".into(),
            unit_amount: amount,
            currency: Currency::GBP,
            cadence: Cadence {
                interval: Interval::Month,
                count: 1,
            },
        }
    }

    fn item(amount: i64, quantity: i64) -> SubscriptionItem {
        SubscriptionItem {
            id: "si_1".into(),
            price: price(amount),
            quantity,
            created: NOV_1,
            metadata: Metadata::new(),
        }
    }

    async fn run(
        subscription: &mut Subscription,
        command: SubscriptionCommand,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let sink = EventSink::default();
        subscription.handle(command, &(), &sink).await?;
        Ok(sink.collect().await)
    }

    fn create(trial_end: Option<i64>) -> SubscriptionCommand {
        SubscriptionCommand::Create {
            subscription: Box::new(NewSubscription {
                subscription_id: "sub_1".into(),
                customer: "cus_1".into(),
                items: vec![item(3_000, 1)],
                default_payment_method: None,
                default_tax_rates: Vec::new(),
                trial_end,
                cancel_at_period_end: false,
                metadata: Metadata::new(),
                description: None,
                test_clock: None,
                first_invoice: "in_1".into(),
            }),
            at: NOV_1,
        }
    }

    #[tokio::test]
    async fn renews_each_period_exactly_once() {
        let mut subscription = Subscription::default();
        run(&mut subscription, create(None)).await.unwrap();
        assert_eq!(subscription.status, SubscriptionStatus::Incomplete);
        run(
            &mut subscription,
            SubscriptionCommand::RecordInvoicePaid {
                invoice: "in_1".into(),
                at: NOV_1,
            },
        )
        .await
        .unwrap();
        assert_eq!(subscription.status, SubscriptionStatus::Active);
        let first_end = subscription.current_period_end;
        assert_eq!(first_end, NOV_1 + 30 * DAY);
        let renew = SubscriptionCommand::Renew {
            from_period_end: first_end,
            invoice: "in_2".into(),
            at: first_end,
        };
        run(&mut subscription, renew.clone()).await.unwrap();
        assert_eq!(subscription.current_period_start, first_end);
        assert_eq!(subscription.current_period_end, first_end + 31 * DAY);
        assert_eq!(
            run(&mut subscription, renew).await,
            Err(SubscriptionError::AlreadyRenewed(first_end))
        );
    }

    #[tokio::test]
    async fn trial_then_active_on_the_trial_anchor() {
        let mut subscription = Subscription::default();
        let trial_end = NOV_1 + 14 * DAY;
        run(&mut subscription, create(Some(trial_end)))
            .await
            .unwrap();
        assert_eq!(subscription.status, SubscriptionStatus::Trialing);
        assert_eq!(subscription.current_period_end, trial_end);
        run(
            &mut subscription,
            SubscriptionCommand::Renew {
                from_period_end: trial_end,
                invoice: "in_2".into(),
                at: trial_end,
            },
        )
        .await
        .unwrap();
        assert_eq!(subscription.status, SubscriptionStatus::Active);
        assert_eq!(subscription.current_period_start, trial_end);
        assert_eq!(subscription.current_period_end, trial_end + 30 * DAY);
    }

    #[tokio::test]
    async fn past_due_after_retries_and_back_when_the_latest_invoice_is_paid() {
        let mut subscription = Subscription::default();
        run(&mut subscription, create(None)).await.unwrap();
        run(
            &mut subscription,
            SubscriptionCommand::RecordInvoicePaid {
                invoice: "in_1".into(),
                at: NOV_1,
            },
        )
        .await
        .unwrap();
        let end = subscription.current_period_end;
        run(
            &mut subscription,
            SubscriptionCommand::Renew {
                from_period_end: end,
                invoice: "in_2".into(),
                at: end,
            },
        )
        .await
        .unwrap();
        run(
            &mut subscription,
            SubscriptionCommand::RecordRetriesExhausted {
                invoice: "in_2".into(),
                at: end + 3 * DAY,
            },
        )
        .await
        .unwrap();
        assert_eq!(subscription.status, SubscriptionStatus::PastDue);
        // Paying an older invoice does not recover; paying the latest does.
        let events = run(
            &mut subscription,
            SubscriptionCommand::RecordInvoicePaid {
                invoice: "in_1".into(),
                at: end + 4 * DAY,
            },
        )
        .await
        .unwrap();
        assert!(events.is_empty());
        run(
            &mut subscription,
            SubscriptionCommand::RecordInvoicePaid {
                invoice: "in_2".into(),
                at: end + 4 * DAY,
            },
        )
        .await
        .unwrap();
        assert_eq!(subscription.status, SubscriptionStatus::Active);
    }

    #[tokio::test]
    async fn cancel_at_period_end_refuses_renewal_and_canceled_is_final() {
        let mut subscription = Subscription::default();
        run(&mut subscription, create(None)).await.unwrap();
        run(
            &mut subscription,
            SubscriptionCommand::Update {
                changes: SubscriptionChanges {
                    cancel_at_period_end: Some(true),
                    ..SubscriptionChanges::default()
                },
                at: NOV_1,
            },
        )
        .await
        .unwrap();
        assert_eq!(subscription.canceled_at, Some(NOV_1), "asked for now");
        let end = subscription.current_period_end;
        assert_eq!(
            run(
                &mut subscription,
                SubscriptionCommand::Renew {
                    from_period_end: end,
                    invoice: "in_2".into(),
                    at: end
                }
            )
            .await,
            Err(SubscriptionError::CancelsAtPeriodEnd)
        );
        run(
            &mut subscription,
            SubscriptionCommand::Cancel {
                reason: None,
                at: end,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            subscription.canceled_at,
            Some(NOV_1),
            "when it was asked for"
        );
        assert_eq!(subscription.ended_at, Some(end));
        assert_eq!(
            run(
                &mut subscription,
                SubscriptionCommand::Cancel {
                    reason: None,
                    at: end
                }
            )
            .await,
            Err(SubscriptionError::Ended)
        );
    }

    #[tokio::test]
    async fn canceled_at_follows_the_request_and_an_immediate_cancel() {
        let mut subscription = Subscription::default();
        run(&mut subscription, create(None)).await.unwrap();
        let flag = |value: bool, at: i64| SubscriptionCommand::Update {
            changes: SubscriptionChanges {
                cancel_at_period_end: Some(value),
                ..SubscriptionChanges::default()
            },
            at,
        };
        run(&mut subscription, flag(true, NOV_1 + DAY))
            .await
            .unwrap();
        assert_eq!(subscription.canceled_at, Some(NOV_1 + DAY));
        run(&mut subscription, flag(false, NOV_1 + 2 * DAY))
            .await
            .unwrap();
        assert_eq!(subscription.canceled_at, None, "withdrawn");
        run(&mut subscription, flag(true, NOV_1 + 3 * DAY))
            .await
            .unwrap();
        // Canceled at once before the period ends: that is when it was canceled.
        run(
            &mut subscription,
            SubscriptionCommand::Cancel {
                reason: None,
                at: NOV_1 + 5 * DAY,
            },
        )
        .await
        .unwrap();
        assert_eq!(subscription.canceled_at, Some(NOV_1 + 5 * DAY));
        assert_eq!(subscription.ended_at, Some(NOV_1 + 5 * DAY));
    }

    #[test]
    fn upgrade_prorates_by_day() {
        let subscription = Subscription {
            id: "sub_1".into(),
            items: vec![item(3_000, 1)],
            current_period_start: NOV_1,
            current_period_end: NOV_1 + 30 * DAY,
            ..Subscription::default()
        };
        // Ten days left of thirty: credit a third of £30, charge a third of £60.
        let lines = prorations(&subscription, &[item(3_000, 2)], NOV_1 + 20 * DAY);
        let amounts: Vec<i64> = lines.iter().map(|line| line.amount).collect();
        assert_eq!(amounts, vec![-1_000, 2_000]);
        assert!(prorations(&subscription, &[item(3_000, 1)], NOV_1 + 20 * DAY).is_empty());
    }
}
