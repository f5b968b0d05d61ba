//! The invoice: what a customer owes and how collecting it went.
//!
//! `draft` → `open` (finalized: numbered, its amounts fixed) → `paid`, `void` or
//! `uncollectible` (which may still be paid or voided). Automatic collection counts its
//! attempts and schedules the next one on the project's dunning rule (one day apart, three
//! retries, by default); the schedule is fixed at finalization, so a later settings change
//! never rewrites an open invoice's promises.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::Metadata;
use crate::money::Currency;
use crate::recurring;
use crate::tax::{self, AppliedRate, TaxAmount, TaxError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    #[default]
    Draft,
    Open,
    Paid,
    Uncollectible,
    Void,
}

impl InvoiceStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Uncollectible => "uncollectible",
            InvoiceStatus::Void => "void",
        }
    }
}

/// Why an invoice exists (Stripe's `billing_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingReason {
    #[default]
    Manual,
    SubscriptionCreate,
    SubscriptionCycle,
    SubscriptionUpdate,
    /// A one-off payment's receipt invoice (Stripe: `manual`; kept distinct for reports).
    Payment,
}

impl BillingReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            BillingReason::Manual | BillingReason::Payment => "manual",
            BillingReason::SubscriptionCreate => "subscription_create",
            BillingReason::SubscriptionCycle => "subscription_cycle",
            BillingReason::SubscriptionUpdate => "subscription_update",
        }
    }
}

/// One line, as the customer reads it. Amounts are fixed when the line is added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// `il_…`.
    pub id: String,
    pub description: String,
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    pub quantity: i64,
    #[serde(default)]
    pub unit_amount: Option<i64>,
    /// Quantity × unit amount, as priced (inclusive taxes are inside it, exclusive ones not).
    pub amount: i64,
    pub period_start: i64,
    pub period_end: i64,
    #[serde(default)]
    pub proration: bool,
    /// The pending invoice item this line came from (`ii_…`).
    #[serde(default)]
    pub invoice_item: Option<String>,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub subscription_item: Option<String>,
    #[serde(default)]
    pub tax_rates: Vec<AppliedRate>,
    /// Computed from `tax_rates` by [`InvoiceLine::priced`].
    #[serde(default)]
    pub taxes: Vec<TaxAmount>,
    #[serde(default)]
    pub metadata: Metadata,
}

impl InvoiceLine {
    /// Fills in the taxes from the rates, by the rule in [`crate::tax`].
    pub fn priced(mut self) -> Result<Self, TaxError> {
        self.taxes = tax::tax_line(self.amount, &self.tax_rates)?.taxes;
        Ok(self)
    }

    fn exclusive_tax(&self) -> i64 {
        self.taxes
            .iter()
            .filter(|tax| !tax.inclusive)
            .map(|tax| tax.amount)
            .sum()
    }

    fn inclusive_tax(&self) -> i64 {
        self.taxes
            .iter()
            .filter(|tax| tax.inclusive)
            .map(|tax| tax.amount)
            .sum()
    }
}

/// An invoice's amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Sum of the lines as priced (before exclusive tax).
    pub subtotal: i64,
    /// Sum of the lines without any tax.
    pub subtotal_excluding_tax: i64,
    pub tax: i64,
    /// What the customer pays: subtotal plus exclusive tax.
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInvoice {
    pub invoice_id: String,
    pub customer: String,
    pub currency: Currency,
    pub billing_reason: BillingReason,
    #[serde(default)]
    pub subscription: Option<String>,
    pub lines: Vec<InvoiceLine>,
    pub auto_advance: bool,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub footer: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub default_payment_method: Option<String>,
    pub period_start: i64,
    pub period_end: i64,
    #[serde(default)]
    pub test_clock: Option<String>,
}

/// What a draft's update may change. `Some(None)` clears.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DraftChanges {
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
    pub footer: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_advance: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub default_payment_method: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "crate::customer::Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceCommand {
    Create {
        invoice: Box<NewInvoice>,
        at: i64,
    },
    AddLine {
        line: InvoiceLine,
        at: i64,
    },
    UpdateDraft {
        changes: DraftChanges,
        at: i64,
    },
    DeleteDraft {
        at: i64,
    },
    /// `number` comes from the project's numbering stream, `access_token` makes the hosted
    /// URLs unguessable, `retry_days` is the dunning rule to follow.
    Finalize {
        number: String,
        access_token: String,
        retry_days: Vec<u32>,
        at: i64,
    },
    /// A payment attempt begins with `payment_intent`; `automatic` attempts count.
    StartAttempt {
        payment_intent: String,
        automatic: bool,
        /// A scheduled retry names the attempt time it was due at; once started (by any
        /// worker) the invoice no longer shows that time, so a second start is refused.
        scheduled_for: Option<i64>,
        at: i64,
    },
    RecordFailedAttempt {
        payment_intent: String,
        at: i64,
    },
    RecordPayment {
        payment_intent: Option<String>,
        amount: i64,
        at: i64,
    },
    /// `paid_out_of_band`: settled outside Calmony.
    MarkPaidOutOfBand {
        at: i64,
    },
    Void {
        at: i64,
    },
    MarkUncollectible {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceEvent {
    InvoiceCreated {
        invoice: Box<NewInvoice>,
        created: i64,
    },
    InvoiceLineAdded {
        line: InvoiceLine,
        at: i64,
    },
    InvoiceDraftUpdated {
        changes: DraftChanges,
        at: i64,
    },
    InvoiceDeleted {
        at: i64,
    },
    InvoiceFinalized {
        number: String,
        access_token: String,
        retry_days: Vec<u32>,
        totals: Totals,
        at: i64,
    },
    InvoicePaymentAttempted {
        payment_intent: String,
        automatic: bool,
        at: i64,
    },
    InvoicePaymentFailed {
        payment_intent: String,
        /// When the next automatic attempt is due; `None` once the schedule is spent.
        next_payment_attempt: Option<i64>,
        at: i64,
    },
    InvoicePaid {
        payment_intent: Option<String>,
        amount_paid: i64,
        out_of_band: bool,
        at: i64,
    },
    InvoiceVoided {
        at: i64,
    },
    InvoiceMarkedUncollectible {
        at: i64,
    },
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> String {
        match self {
            InvoiceEvent::InvoiceCreated { .. } => "InvoiceCreated",
            InvoiceEvent::InvoiceLineAdded { .. } => "InvoiceLineAdded",
            InvoiceEvent::InvoiceDraftUpdated { .. } => "InvoiceDraftUpdated",
            InvoiceEvent::InvoiceDeleted { .. } => "InvoiceDeleted",
            InvoiceEvent::InvoiceFinalized { .. } => "InvoiceFinalized",
            InvoiceEvent::InvoicePaymentAttempted { .. } => "InvoicePaymentAttempted",
            InvoiceEvent::InvoicePaymentFailed { .. } => "InvoicePaymentFailed",
            InvoiceEvent::InvoicePaid { .. } => "InvoicePaid",
            InvoiceEvent::InvoiceVoided { .. } => "InvoiceVoided",
            InvoiceEvent::InvoiceMarkedUncollectible { .. } => "InvoiceMarkedUncollectible",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error("invoice already exists")]
    AlreadyExists,
    #[error("no such invoice")]
    NotFound,
    #[error("This invoice is no longer editable: its status is {0}.")]
    NotDraft(&'static str),
    #[error("You can only pay an invoice whose status is open or uncollectible; this one is {0}.")]
    NotPayable(&'static str),
    #[error(
        "You can only void an invoice whose status is open or uncollectible; this one is {0}."
    )]
    NotVoidable(&'static str),
    #[error("You can only mark an open invoice uncollectible; this one is {0}.")]
    NotOpen(&'static str),
    #[error("Invoice lines must all be in the invoice's currency.")]
    CurrencyMismatch,
    #[error("An invoice's total may not be negative.")]
    NegativeTotal,
    #[error(transparent)]
    Tax(#[from] TaxError),
    #[error("Invoice number must not be empty.")]
    EmptyNumber,
    #[error("No payment attempt is due on this invoice at that time.")]
    AttemptNotDue,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusTransitions {
    pub finalized_at: Option<i64>,
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub marked_uncollectible_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub customer: String,
    pub currency: Option<Currency>,
    pub status: InvoiceStatus,
    pub billing_reason: BillingReason,
    pub subscription: Option<String>,
    pub lines: Vec<InvoiceLine>,
    pub number: Option<String>,
    pub access_token: Option<String>,
    pub auto_advance: bool,
    pub description: Option<String>,
    pub footer: Option<String>,
    pub metadata: Metadata,
    pub default_payment_method: Option<String>,
    pub payment_intent: Option<String>,
    pub attempt_count: u32,
    pub attempted: bool,
    pub next_payment_attempt: Option<i64>,
    pub retry_days: Vec<u32>,
    pub amount_paid: i64,
    pub paid_out_of_band: bool,
    /// Fixed at finalization; computed from the lines while a draft.
    pub finalized_totals: Option<Totals>,
    pub period_start: i64,
    pub period_end: i64,
    pub test_clock: Option<String>,
    pub status_transitions: StatusTransitions,
    pub created: i64,
    pub deleted: bool,
}

impl Invoice {
    pub fn exists(&self) -> bool {
        !self.id.is_empty() && !self.deleted
    }

    pub fn totals(&self) -> Totals {
        if let Some(totals) = self.finalized_totals {
            return totals;
        }
        compute_totals(&self.lines)
    }

    pub fn amount_due(&self) -> i64 {
        self.totals().total
    }

    pub fn amount_remaining(&self) -> i64 {
        match self.status {
            InvoiceStatus::Void => 0,
            _ => (self.amount_due() - self.amount_paid).max(0),
        }
    }

    /// Whether a payment may be taken now.
    pub fn payable(&self) -> bool {
        matches!(
            self.status,
            InvoiceStatus::Open | InvoiceStatus::Uncollectible
        )
    }
}

pub fn compute_totals(lines: &[InvoiceLine]) -> Totals {
    let subtotal: i64 = lines.iter().map(|line| line.amount).sum();
    let inclusive: i64 = lines.iter().map(InvoiceLine::inclusive_tax).sum();
    let exclusive: i64 = lines.iter().map(InvoiceLine::exclusive_tax).sum();
    Totals {
        subtotal,
        subtotal_excluding_tax: subtotal - inclusive,
        tax: inclusive + exclusive,
        total: subtotal + exclusive,
    }
}

impl Aggregate for Invoice {
    const TYPE: &'static str = "invoice";
    type Command = InvoiceCommand;
    type Event = InvoiceEvent;
    type Error = InvoiceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            InvoiceCommand::Create { mut invoice, at } => {
                if !self.id.is_empty() {
                    return Err(InvoiceError::AlreadyExists);
                }
                invoice.lines = invoice
                    .lines
                    .into_iter()
                    .map(InvoiceLine::priced)
                    .collect::<Result<_, _>>()?;
                sink.write(
                    InvoiceEvent::InvoiceCreated {
                        invoice,
                        created: at,
                    },
                    self,
                )
                .await;
            }
            InvoiceCommand::AddLine { line, at } => {
                self.require_draft()?;
                let line = line.priced()?;
                sink.write(InvoiceEvent::InvoiceLineAdded { line, at }, self)
                    .await;
            }
            InvoiceCommand::UpdateDraft { changes, at } => {
                self.require_draft()?;
                sink.write(InvoiceEvent::InvoiceDraftUpdated { changes, at }, self)
                    .await;
            }
            InvoiceCommand::DeleteDraft { at } => {
                self.require_draft()?;
                sink.write(InvoiceEvent::InvoiceDeleted { at }, self).await;
            }
            InvoiceCommand::Finalize {
                number,
                access_token,
                retry_days,
                at,
            } => {
                self.require_draft()?;
                if number.trim().is_empty() {
                    return Err(InvoiceError::EmptyNumber);
                }
                let totals = self.totals();
                if totals.total < 0 {
                    return Err(InvoiceError::NegativeTotal);
                }
                sink.write(
                    InvoiceEvent::InvoiceFinalized {
                        number,
                        access_token,
                        retry_days,
                        totals,
                        at,
                    },
                    self,
                )
                .await;
                // Nothing to collect: paid on finalization, as at Stripe.
                if totals.total == 0 {
                    sink.write(
                        InvoiceEvent::InvoicePaid {
                            payment_intent: None,
                            amount_paid: 0,
                            out_of_band: false,
                            at,
                        },
                        self,
                    )
                    .await;
                }
            }
            InvoiceCommand::StartAttempt {
                payment_intent,
                automatic,
                scheduled_for,
                at,
            } => {
                self.require_payable()?;
                if scheduled_for.is_some() && scheduled_for != self.next_payment_attempt {
                    return Err(InvoiceError::AttemptNotDue);
                }
                sink.write(
                    InvoiceEvent::InvoicePaymentAttempted {
                        payment_intent,
                        automatic,
                        at,
                    },
                    self,
                )
                .await;
            }
            InvoiceCommand::RecordFailedAttempt { payment_intent, at } => {
                self.require_payable()?;
                // Retries follow automatic attempts only: after the n-th automatic attempt
                // fails, the next is `retry_days[n - 1]` days later, until the rule is spent.
                // A subscription's first invoice is not retried: the customer is present and
                // the subscription stays `incomplete` until they pay (or it expires).
                let retries =
                    self.auto_advance && self.billing_reason != BillingReason::SubscriptionCreate;
                let next_payment_attempt = if retries && self.attempt_count > 0 {
                    usize::try_from(self.attempt_count - 1)
                        .ok()
                        .and_then(|index| self.retry_days.get(index))
                        .map(|days| at + recurring::days(*days))
                } else {
                    None
                };
                sink.write(
                    InvoiceEvent::InvoicePaymentFailed {
                        payment_intent,
                        next_payment_attempt,
                        at,
                    },
                    self,
                )
                .await;
            }
            InvoiceCommand::RecordPayment {
                payment_intent,
                amount,
                at,
            } => {
                self.require_payable()?;
                sink.write(
                    InvoiceEvent::InvoicePaid {
                        payment_intent,
                        amount_paid: amount,
                        out_of_band: false,
                        at,
                    },
                    self,
                )
                .await;
            }
            InvoiceCommand::MarkPaidOutOfBand { at } => {
                self.require_payable()?;
                sink.write(
                    InvoiceEvent::InvoicePaid {
                        payment_intent: None,
                        amount_paid: self.amount_remaining(),
                        out_of_band: true,
                        at,
                    },
                    self,
                )
                .await;
            }
            InvoiceCommand::Void { at } => {
                self.require_exists()?;
                if !self.payable() {
                    return Err(InvoiceError::NotVoidable(self.status.as_str()));
                }
                sink.write(InvoiceEvent::InvoiceVoided { at }, self).await;
            }
            InvoiceCommand::MarkUncollectible { at } => {
                self.require_exists()?;
                if self.status != InvoiceStatus::Open {
                    return Err(InvoiceError::NotOpen(self.status.as_str()));
                }
                sink.write(InvoiceEvent::InvoiceMarkedUncollectible { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InvoiceEvent::InvoiceCreated { invoice, created } => {
                let invoice = *invoice;
                self.id = invoice.invoice_id;
                self.customer = invoice.customer;
                self.currency = Some(invoice.currency);
                self.billing_reason = invoice.billing_reason;
                self.subscription = invoice.subscription;
                self.lines = invoice.lines;
                self.auto_advance = invoice.auto_advance;
                self.description = invoice.description;
                self.footer = invoice.footer;
                self.metadata = invoice.metadata;
                self.default_payment_method = invoice.default_payment_method;
                self.period_start = invoice.period_start;
                self.period_end = invoice.period_end;
                self.test_clock = invoice.test_clock;
                self.created = created;
            }
            InvoiceEvent::InvoiceLineAdded { line, .. } => self.lines.push(line),
            InvoiceEvent::InvoiceDraftUpdated { changes, .. } => {
                if let Some(description) = changes.description {
                    self.description = description;
                }
                if let Some(footer) = changes.footer {
                    self.footer = footer;
                }
                if let Some(auto_advance) = changes.auto_advance {
                    self.auto_advance = auto_advance;
                }
                if let Some(method) = changes.default_payment_method {
                    self.default_payment_method = method;
                }
                for (key, value) in changes.metadata {
                    if value.is_empty() {
                        self.metadata.remove(&key);
                    } else {
                        self.metadata.insert(key, value);
                    }
                }
            }
            InvoiceEvent::InvoiceDeleted { .. } => self.deleted = true,
            InvoiceEvent::InvoiceFinalized {
                number,
                access_token,
                retry_days,
                totals,
                at,
            } => {
                self.status = InvoiceStatus::Open;
                self.number = Some(number);
                self.access_token = Some(access_token);
                self.retry_days = retry_days;
                self.finalized_totals = Some(totals);
                self.status_transitions.finalized_at = Some(at);
            }
            InvoiceEvent::InvoicePaymentAttempted {
                payment_intent,
                automatic,
                ..
            } => {
                self.payment_intent = Some(payment_intent);
                self.attempted = true;
                if automatic {
                    self.attempt_count += 1;
                }
                self.next_payment_attempt = None;
            }
            InvoiceEvent::InvoicePaymentFailed {
                next_payment_attempt,
                ..
            } => {
                self.next_payment_attempt = next_payment_attempt;
            }
            InvoiceEvent::InvoicePaid {
                payment_intent,
                amount_paid,
                out_of_band,
                at,
            } => {
                self.status = InvoiceStatus::Paid;
                if payment_intent.is_some() {
                    self.payment_intent = payment_intent;
                }
                self.amount_paid += amount_paid;
                self.paid_out_of_band = out_of_band;
                self.next_payment_attempt = None;
                self.status_transitions.paid_at = Some(at);
            }
            InvoiceEvent::InvoiceVoided { at } => {
                self.status = InvoiceStatus::Void;
                self.next_payment_attempt = None;
                self.status_transitions.voided_at = Some(at);
            }
            InvoiceEvent::InvoiceMarkedUncollectible { at } => {
                self.status = InvoiceStatus::Uncollectible;
                self.next_payment_attempt = None;
                self.status_transitions.marked_uncollectible_at = Some(at);
            }
        }
    }
}

impl Invoice {
    fn require_exists(&self) -> Result<(), InvoiceError> {
        if !self.exists() {
            return Err(InvoiceError::NotFound);
        }
        Ok(())
    }

    fn require_draft(&self) -> Result<(), InvoiceError> {
        self.require_exists()?;
        if self.status != InvoiceStatus::Draft {
            return Err(InvoiceError::NotDraft(self.status.as_str()));
        }
        Ok(())
    }

    fn require_payable(&self) -> Result<(), InvoiceError> {
        self.require_exists()?;
        if !self.payable() {
            return Err(InvoiceError::NotPayable(self.status.as_str()));
        }
        Ok(())
    }
}

/// The numbering stream of a project and mode: event `n` issues number `n`.
pub const NUMBERING_STREAM: &str = "invoice_numbering";

pub fn numbering_stream_id(project: &str, livemode: bool) -> String {
    format!("{project}:{}", if livemode { "live" } else { "test" })
}

/// `PREFIX-NNNN` (at least four digits, more when needed).
pub fn format_number(prefix: &str, sequence: i64) -> String {
    format!("{prefix}-{sequence:04}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NumberingEvent {
    InvoiceNumberIssued { invoice: String, number: String },
}

impl DomainEvent for NumberingEvent {
    fn event_type(&self) -> String {
        "InvoiceNumberIssued".to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn line(amount: i64, rates: Vec<AppliedRate>) -> InvoiceLine {
        InvoiceLine {
            id: format!("il_{amount}"),
            description: "Pro plan".into(),
            price: None,
            product: None,
            quantity: 1,
            unit_amount: Some(amount),
            amount,
            period_start: 0,
            period_end: 0,
            proration: false,
            invoice_item: None,
            subscription: None,
            subscription_item: None,
            tax_rates: rates,
            taxes: Vec::new(),
            metadata: Metadata::new(),
        }
    }

    fn vat(inclusive: bool) -> AppliedRate {
        AppliedRate {
            tax_rate: "txr_vat".into(),
            percentage: Decimal::from(20),
            inclusive,
        }
    }

    async fn run(
        invoice: &mut Invoice,
        command: InvoiceCommand,
    ) -> Result<Vec<InvoiceEvent>, InvoiceError> {
        let sink = EventSink::default();
        invoice.handle(command, &(), &sink).await?;
        Ok(sink.collect().await)
    }

    fn new_invoice(lines: Vec<InvoiceLine>) -> InvoiceCommand {
        InvoiceCommand::Create {
            invoice: Box::new(NewInvoice {
                invoice_id: "in_1".into(),
                customer: "cus_1".into(),
                currency: Currency::GBP,
                billing_reason: BillingReason::SubscriptionCycle,
                subscription: Some("sub_1".into()),
                lines,
                auto_advance: true,
                description: None,
                footer: None,
                metadata: Metadata::new(),
                default_payment_method: None,
                period_start: 0,
                period_end: 0,
                test_clock: None,
            }),
            at: 100,
        }
    }

    fn finalize() -> InvoiceCommand {
        InvoiceCommand::Finalize {
            number: "ACME-0001".into(),
            access_token: "tok".into(),
            retry_days: vec![1, 1, 1],
            at: 200,
        }
    }

    #[tokio::test]
    async fn totals_with_exclusive_and_inclusive_vat() {
        let mut invoice = Invoice::default();
        run(
            &mut invoice,
            new_invoice(vec![
                line(1_000, vec![vat(false)]),
                line(1_200, vec![vat(true)]),
            ]),
        )
        .await
        .unwrap();
        let totals = invoice.totals();
        assert_eq!(totals.subtotal, 2_200);
        assert_eq!(totals.tax, 400);
        assert_eq!(totals.subtotal_excluding_tax, 2_000);
        assert_eq!(totals.total, 2_400);
    }

    #[tokio::test]
    async fn finalizing_fixes_number_and_amounts_and_locks_the_draft() {
        let mut invoice = Invoice::default();
        run(&mut invoice, new_invoice(vec![line(1_000, vec![])]))
            .await
            .unwrap();
        run(&mut invoice, finalize()).await.unwrap();
        assert_eq!(invoice.status, InvoiceStatus::Open);
        assert_eq!(invoice.number.as_deref(), Some("ACME-0001"));
        assert_eq!(invoice.amount_remaining(), 1_000);
        let refused = run(
            &mut invoice,
            InvoiceCommand::AddLine {
                line: line(5, vec![]),
                at: 300,
            },
        )
        .await;
        assert_eq!(refused, Err(InvoiceError::NotDraft("open")));
        assert_eq!(
            run(&mut invoice, finalize()).await,
            Err(InvoiceError::NotDraft("open"))
        );
    }

    #[tokio::test]
    async fn a_zero_invoice_is_paid_on_finalization() {
        let mut invoice = Invoice::default();
        run(&mut invoice, new_invoice(vec![line(0, vec![])]))
            .await
            .unwrap();
        let events = run(&mut invoice, finalize()).await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(invoice.status, InvoiceStatus::Paid);
    }

    #[tokio::test]
    async fn dunning_schedule_counts_automatic_attempts_only() {
        let mut invoice = Invoice::default();
        run(&mut invoice, new_invoice(vec![line(1_000, vec![])]))
            .await
            .unwrap();
        run(&mut invoice, finalize()).await.unwrap();
        let day = 86_400;
        let mut now = 1_000;
        for attempt in 1..=4 {
            run(
                &mut invoice,
                InvoiceCommand::StartAttempt {
                    payment_intent: "pi_1".into(),
                    automatic: true,
                    scheduled_for: None,
                    at: now,
                },
            )
            .await
            .unwrap();
            run(
                &mut invoice,
                InvoiceCommand::RecordFailedAttempt {
                    payment_intent: "pi_1".into(),
                    at: now,
                },
            )
            .await
            .unwrap();
            assert_eq!(invoice.attempt_count, attempt);
            if attempt < 4 {
                assert_eq!(invoice.next_payment_attempt, Some(now + day));
            } else {
                assert_eq!(invoice.next_payment_attempt, None, "the schedule is spent");
            }
            now += day;
        }
        // A manual attempt does not count, and leaves the schedule alone.
        run(
            &mut invoice,
            InvoiceCommand::StartAttempt {
                payment_intent: "pi_1".into(),
                automatic: false,
                scheduled_for: None,
                at: now,
            },
        )
        .await
        .unwrap();
        assert_eq!(invoice.attempt_count, 4);
        run(
            &mut invoice,
            InvoiceCommand::RecordPayment {
                payment_intent: Some("pi_1".into()),
                amount: 1_000,
                at: now,
            },
        )
        .await
        .unwrap();
        assert_eq!(invoice.status, InvoiceStatus::Paid);
        assert_eq!(invoice.amount_remaining(), 0);
        assert_eq!(
            run(&mut invoice, InvoiceCommand::Void { at: now }).await,
            Err(InvoiceError::NotVoidable("paid"))
        );
    }

    #[tokio::test]
    async fn uncollectible_can_still_be_paid_or_voided() {
        let mut invoice = Invoice::default();
        run(&mut invoice, new_invoice(vec![line(1_000, vec![])]))
            .await
            .unwrap();
        assert_eq!(
            run(&mut invoice, InvoiceCommand::MarkUncollectible { at: 1 }).await,
            Err(InvoiceError::NotOpen("draft"))
        );
        run(&mut invoice, finalize()).await.unwrap();
        run(&mut invoice, InvoiceCommand::MarkUncollectible { at: 2 })
            .await
            .unwrap();
        assert_eq!(invoice.status, InvoiceStatus::Uncollectible);
        run(&mut invoice, InvoiceCommand::MarkPaidOutOfBand { at: 3 })
            .await
            .unwrap();
        assert_eq!(
            (invoice.status, invoice.amount_paid),
            (InvoiceStatus::Paid, 1_000)
        );
    }

    #[test]
    fn numbers_have_at_least_four_digits() {
        assert_eq!(format_number("ACME", 7), "ACME-0007");
        assert_eq!(format_number("ACME", 12_345), "ACME-12345");
    }
}
