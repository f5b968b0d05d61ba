//! Billing on the write side: subscriptions, invoices, renewals and dunning.
//!
//! Every step that touches more than one stream runs as one [`UnitOfWork`]:
//!
//! - **Opening an invoice** (subscription create, renewal, a manual finalize): the
//!   subscription's decision, the invoice's lines, its number from the project's numbering
//!   stream, and — when money is due — the payment intent with its charge attempt, all in
//!   one transaction. The gateway is called only after that commits.
//! - **Settling** ([`react_to_intent`]): a charge's outcome is recorded on the payment
//!   intent together with what it means for the invoice (paid, or a failed attempt with the
//!   next retry) and the subscription (active, or `past_due` when the rule is spent); a
//!   one-off payment gets its paid receipt invoice in the same transaction.
//!
//! Exactly once: a renewal names the period it renews and a retry names the attempt time it
//! was scheduled for, so a second scheduler, a retried job or a crash can only ever find
//! the work already done. Charging goes through the payment service's exactly-once path
//! (attempt recorded before the gateway call, looked up before any resend).

use chrono::Utc;
use domain::customer::{Customer, Metadata};
use domain::invoice::{
    self, BillingReason, Invoice, InvoiceCommand, InvoiceLine, NewInvoice, NumberingEvent,
};
use domain::invoice_item::{InvoiceItem, InvoiceItemCommand, NewInvoiceItem};
use domain::money::Money;
use domain::payment_intent::{
    CaptureMethod, ChargeOutcome, IntentStatus, NewIntent, PaymentIntent, PaymentIntentCommand,
    PaymentIntentEvent,
};
use domain::payment_method::PaymentMethod;
use domain::price::Price;
use domain::product::Product;
use domain::project::{BillingSettings, Project};
use domain::recurring::{self, Cadence, Interval};
use domain::subscription::{
    self, NewSubscription, PlanPrice, Subscription, SubscriptionChanges, SubscriptionCommand,
    SubscriptionItem, SubscriptionStatus,
};
use domain::tax::AppliedRate;
use domain::tax_rate::TaxRate;
use domain::test_clock::TestClock;
use event_store::store::Appended;

use crate::idempotency::{ClaimToken, IdempotencyStore, StoredResponse};
use crate::ids;
use crate::payments::{Actor, PaymentError, PaymentService};
use crate::unit::{back_off, Known, UnitError, UnitOfWork, MAX_UNIT_ATTEMPTS};

impl From<UnitError> for PaymentError {
    fn from(error: UnitError) -> Self {
        PaymentError::Internal(error.to_string())
    }
}

fn rule(error: impl std::fmt::Display) -> PaymentError {
    PaymentError::InvalidRequest(error.to_string())
}

/// Decides `command` on `A` in the unit; a refusal becomes a 400-style error.
async fn decide<A>(
    unit: &mut UnitOfWork,
    id: &str,
    command: A::Command,
) -> Result<Vec<A::Event>, PaymentError>
where
    A: cqrs_es::Aggregate<Services = ()> + Send + 'static,
{
    unit.decide::<A>(id, command).await?.map_err(rule)
}

/// Loads `A` in the unit if it belongs to the actor's project and mode.
async fn load_owned<A>(
    unit: &mut UnitOfWork,
    actor: &Actor,
    kind: &'static str,
    id: &str,
) -> Result<A, PaymentError>
where
    A: cqrs_es::Aggregate + Send + Clone + 'static,
{
    let owned = unit
        .owner::<A>(id)
        .await?
        .is_some_and(|owner| owner.project == actor.project && owner.livemode == actor.livemode);
    if !owned {
        return Err(PaymentError::NotFound {
            kind,
            id: id.to_string(),
        });
    }
    Ok(unit.load::<A>(id).await?.clone())
}

/// "Now" for work on a test clock: the clock's frozen time; otherwise the wall clock.
async fn now_on(unit: &mut UnitOfWork, test_clock: Option<&str>) -> Result<i64, PaymentError> {
    match test_clock {
        Some(clock) => Ok(unit.load::<TestClock>(clock).await?.frozen_time),
        None => Ok(Utc::now().timestamp()),
    }
}

fn cadence_of(price: &Price) -> Option<Cadence> {
    price.recurring.map(|recurring| Cadence {
        interval: match recurring.interval {
            domain::price::Interval::Day => Interval::Day,
            domain::price::Interval::Week => Interval::Week,
            domain::price::Interval::Month => Interval::Month,
            domain::price::Interval::Year => Interval::Year,
        },
        count: recurring.interval_count,
    })
}

async fn settings(unit: &mut UnitOfWork, project: &str) -> Result<BillingSettings, PaymentError> {
    Ok(unit.load::<Project>(project).await?.billing_settings())
}

/// The tax rates a line gets: those named, else the project's default (when it is a rate
/// of this mode), else none.
async fn tax_rates(
    unit: &mut UnitOfWork,
    actor: &Actor,
    named: Option<&[String]>,
    default_rate: Option<&str>,
) -> Result<Vec<AppliedRate>, PaymentError> {
    let ids: Vec<String> = match named {
        Some(named) => named.to_vec(),
        None => default_rate.map(str::to_string).into_iter().collect(),
    };
    let explicit = named.is_some();
    let mut rates = Vec::with_capacity(ids.len());
    for id in ids {
        let rate = match load_owned::<TaxRate>(unit, actor, "tax_rate", &id).await {
            Ok(rate) => rate,
            // The project default may be a rate of the other mode: it does not apply here.
            Err(PaymentError::NotFound { .. }) if !explicit => continue,
            Err(error) => return Err(error),
        };
        if explicit && !rate.active {
            return Err(PaymentError::InvalidRequest(format!(
                "Tax rate {id} is archived and cannot be applied."
            )));
        }
        rates.push(AppliedRate {
            tax_rate: rate.id.clone(),
            percentage: rate.percentage,
            inclusive: rate.inclusive,
        });
    }
    Ok(rates)
}

/// Numbers and finalizes a draft invoice in the unit.
async fn finalize(
    unit: &mut UnitOfWork,
    actor: &Actor,
    invoice_id: &str,
    at: i64,
) -> Result<(), PaymentError> {
    let settings = settings(unit, &actor.project).await?;
    let stream_id = invoice::numbering_stream_id(&actor.project, actor.livemode);
    let prefix = settings.invoice_prefix.clone();
    let mut number = String::new();
    unit.next_in_sequence(invoice::NUMBERING_STREAM, &stream_id, |sequence| {
        number = invoice::format_number(&prefix, sequence);
        NumberingEvent::InvoiceNumberIssued {
            invoice: invoice_id.to_string(),
            number: number.clone(),
        }
    })
    .await?;
    decide::<Invoice>(
        unit,
        invoice_id,
        InvoiceCommand::Finalize {
            number,
            access_token: ids::new_token("invtok"),
            retry_days: settings.dunning_retry_days.clone(),
            at,
        },
    )
    .await?;
    Ok(())
}

/// Opens the payment for an invoice's remaining amount: a payment intent (new, or the
/// invoice's own again after a decline) confirmed with `payment_method`, and the attempt on
/// the invoice. Returns the intent id when a charge is now pending.
async fn start_invoice_payment(
    unit: &mut UnitOfWork,
    actor: &Actor,
    invoice_id: &str,
    payment_method: Option<&str>,
    automatic: bool,
    scheduled_for: Option<i64>,
    at: i64,
) -> Result<Option<String>, PaymentError> {
    let invoice = unit.load::<Invoice>(invoice_id).await?.clone();
    let amount = invoice.amount_remaining();
    if amount <= 0 {
        return Ok(None);
    }
    let currency = invoice
        .currency
        .ok_or_else(|| PaymentError::Internal("invoice without a currency".into()))?;
    let intent_id = match invoice.payment_intent.clone() {
        Some(existing) => {
            let intent = unit.load::<PaymentIntent>(&existing).await?;
            if matches!(
                intent.status,
                IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation
            ) {
                existing
            } else {
                new_intent(unit, actor, &invoice, currency, amount, at).await?
            }
        }
        None => new_intent(unit, actor, &invoice, currency, amount, at).await?,
    };
    decide::<Invoice>(
        unit,
        invoice_id,
        InvoiceCommand::StartAttempt {
            payment_intent: intent_id.clone(),
            automatic,
            scheduled_for,
            at,
        },
    )
    .await?;
    let Some(method_id) = payment_method else {
        // Nothing to charge: the attempt fails at once and the rule schedules the next.
        decide::<Invoice>(
            unit,
            invoice_id,
            InvoiceCommand::RecordFailedAttempt {
                payment_intent: intent_id,
                at,
            },
        )
        .await?;
        after_failed_attempt(unit, invoice_id, at).await?;
        return Ok(None);
    };
    let method = load_owned::<PaymentMethod>(unit, actor, "payment_method", method_id).await?;
    if !method.usable() || method.customer.as_deref() != Some(invoice.customer.as_str()) {
        return Err(PaymentError::InvalidRequest(format!(
            "The payment method {method_id} is not attached to customer {}.",
            invoice.customer
        )));
    }
    decide::<PaymentIntent>(
        unit,
        &intent_id,
        PaymentIntentCommand::Confirm {
            payment_method: Some(method.id.clone()),
            charge_id: ids::new_id("ch"),
            transaction_unique: ids::new_id("tu"),
            at,
        },
    )
    .await?;
    Ok(Some(intent_id))
}

async fn new_intent(
    unit: &mut UnitOfWork,
    actor: &Actor,
    invoice: &Invoice,
    currency: domain::Currency,
    amount: i64,
    at: i64,
) -> Result<String, PaymentError> {
    let intent_id = ids::new_id("pi");
    unit.begin_new::<PaymentIntent>(&intent_id)?;
    let description = match invoice.billing_reason {
        BillingReason::SubscriptionCreate => "Subscription creation".to_string(),
        BillingReason::SubscriptionCycle | BillingReason::SubscriptionUpdate => {
            "Subscription update".to_string()
        }
        _ => format!(
            "Payment for Invoice {}",
            invoice.number.clone().unwrap_or_default()
        ),
    };
    decide::<PaymentIntent>(
        unit,
        &intent_id,
        PaymentIntentCommand::Create(NewIntent {
            payment_intent_id: intent_id.clone(),
            livemode: actor.livemode,
            amount: Money::new(amount, currency).map_err(rule)?,
            customer: Some(invoice.customer.clone()),
            payment_method: None,
            capture_method: CaptureMethod::Automatic,
            description: Some(description),
            receipt_email: None,
            metadata: Metadata::new(),
            invoice: Some(invoice.id.clone()),
            at,
        }),
    )
    .await?;
    Ok(intent_id)
}

/// After a failed automatic attempt: when the invoice's rule is spent, its subscription
/// moves to `past_due`.
async fn after_failed_attempt(
    unit: &mut UnitOfWork,
    invoice_id: &str,
    at: i64,
) -> Result<(), PaymentError> {
    let invoice = unit.load::<Invoice>(invoice_id).await?.clone();
    let spent = invoice.auto_advance
        && invoice.billing_reason != BillingReason::SubscriptionCreate
        && invoice.next_payment_attempt.is_none()
        && invoice.attempt_count as usize > invoice.retry_days.len();
    if let (true, Some(subscription)) = (spent, &invoice.subscription) {
        decide::<Subscription>(
            unit,
            subscription,
            SubscriptionCommand::RecordRetriesExhausted {
                invoice: invoice.id.clone(),
                at,
            },
        )
        .await?;
    }
    Ok(())
}

/// What a payment intent's new events mean for billing, decided in the same unit: an
/// invoice's payment or failed attempt (and its subscription's status). (A one-off
/// payment's receipt invoice comes after, from `BillingService::issue_receipt`.)
pub(crate) async fn react_to_intent(
    unit: &mut UnitOfWork,
    intent: &PaymentIntent,
    events: &[PaymentIntentEvent],
) -> Result<(), PaymentError> {
    let succeeded = intent.status == IntentStatus::Succeeded
        && events.iter().any(|event| {
            matches!(
                event,
                PaymentIntentEvent::ChargeSucceeded { .. }
                    | PaymentIntentEvent::PaymentIntentCaptured { .. }
            )
        });
    let failed = events
        .iter()
        .any(|event| matches!(event, PaymentIntentEvent::ChargeFailed { .. }));
    match (&intent.invoice, succeeded, failed) {
        (Some(invoice_id), true, _) => {
            let invoice = unit.load::<Invoice>(invoice_id).await?.clone();
            let at = now_on(unit, invoice.test_clock.as_deref()).await?;
            if invoice.payable() {
                decide::<Invoice>(
                    unit,
                    invoice_id,
                    InvoiceCommand::RecordPayment {
                        payment_intent: Some(intent.id.clone()),
                        amount: intent.amount_received,
                        at,
                    },
                )
                .await?;
                if let Some(subscription) = &invoice.subscription {
                    decide::<Subscription>(
                        unit,
                        subscription,
                        SubscriptionCommand::RecordInvoicePaid {
                            invoice: invoice_id.clone(),
                            at,
                        },
                    )
                    .await?;
                }
            }
        }
        (Some(invoice_id), false, true) => {
            let invoice = unit.load::<Invoice>(invoice_id).await?.clone();
            let at = now_on(unit, invoice.test_clock.as_deref()).await?;
            if invoice.payable() {
                decide::<Invoice>(
                    unit,
                    invoice_id,
                    InvoiceCommand::RecordFailedAttempt {
                        payment_intent: intent.id.clone(),
                        at,
                    },
                )
                .await?;
                after_failed_attempt(unit, invoice_id, at).await?;
            }
        }
        // A one-off payment's receipt invoice is issued just after, off the payment's path
        // (see `BillingService::issue_receipt`): numbering would serialise every payment.
        _ => {}
    }
    Ok(())
}

/// Decides, in `unit`, the receipt invoice of a one-off payment, unless it has one already
/// or needs none (a guest payment, an invoice's own intent, one not succeeded).
async fn receipt_in(
    unit: &mut UnitOfWork,
    actor: &Actor,
    intent_id: &str,
) -> Result<JobOutcome, PaymentError> {
    let invoice_id = receipt_invoice_id(intent_id);
    let intent = load_owned::<PaymentIntent>(unit, actor, "payment_intent", intent_id).await?;
    let already = unit.load::<Invoice>(&invoice_id).await?.exists();
    let needs_receipt = intent.invoice.is_none()
        && intent.customer.is_some()
        && intent.status == IntentStatus::Succeeded;
    if already || !needs_receipt {
        return Ok(JobOutcome::AlreadyDone);
    }
    receipt_invoice(unit, actor, &intent, &invoice_id).await?;
    Ok(JobOutcome::Done)
}

/// Every successful one-off payment gets a paid invoice: one line for what was received,
/// numbered like any other. A project default rate applies only if it is inclusive (the
/// amount charged is fixed; tax can only be read out of it, never added on top).
async fn receipt_invoice(
    unit: &mut UnitOfWork,
    actor: &Actor,
    intent: &PaymentIntent,
    invoice_id: &str,
) -> Result<(), PaymentError> {
    let Some(customer_id) = intent.customer.clone() else {
        // Stripe invoices need a customer; a guest payment gets no invoice.
        return Ok(());
    };
    let customer = unit.load::<Customer>(&customer_id).await?.clone();
    let at = now_on(unit, customer.test_clock.as_deref()).await?;
    let settings = settings(unit, &actor.project).await?;
    let rates: Vec<AppliedRate> =
        tax_rates(unit, actor, None, settings.default_tax_rate.as_deref())
            .await?
            .into_iter()
            .filter(|rate| rate.inclusive)
            .collect();
    let line = InvoiceLine {
        id: ids::new_id("il"),
        description: intent
            .description
            .clone()
            .unwrap_or_else(|| "Payment".to_string()),
        price: None,
        product: None,
        quantity: 1,
        unit_amount: Some(intent.amount_received),
        amount: intent.amount_received,
        period_start: at,
        period_end: at,
        proration: false,
        invoice_item: None,
        subscription: None,
        subscription_item: None,
        tax_rates: rates,
        taxes: Vec::new(),
        metadata: Metadata::new(),
    };
    decide::<Invoice>(
        unit,
        invoice_id,
        InvoiceCommand::Create {
            invoice: Box::new(NewInvoice {
                invoice_id: invoice_id.to_string(),
                customer: customer_id,
                currency: intent.amount.currency,
                billing_reason: BillingReason::Payment,
                subscription: None,
                lines: vec![line],
                auto_advance: false,
                description: intent.description.clone(),
                footer: None,
                metadata: Metadata::new(),
                default_payment_method: None,
                period_start: at,
                period_end: at,
                test_clock: customer.test_clock.clone(),
            }),
            at,
        },
    )
    .await?;
    finalize(unit, actor, invoice_id, at).await?;
    decide::<Invoice>(
        unit,
        invoice_id,
        InvoiceCommand::RecordPayment {
            payment_intent: Some(intent.id.clone()),
            amount: intent.amount_received,
            at,
        },
    )
    .await?;
    Ok(())
}

/// How the first invoice of a new subscription is collected (Stripe's `payment_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaymentBehavior {
    #[default]
    AllowIncomplete,
    DefaultIncomplete,
    ErrorIfIncomplete,
}

impl PaymentBehavior {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allow_incomplete" => Some(PaymentBehavior::AllowIncomplete),
            "default_incomplete" => Some(PaymentBehavior::DefaultIncomplete),
            "error_if_incomplete" => Some(PaymentBehavior::ErrorIfIncomplete),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ItemRequest {
    pub price: String,
    pub quantity: i64,
    pub metadata: Metadata,
}

/// A one-time line for a subscription's first invoice (Stripe's `add_invoice_items`; a
/// Checkout Session's one-time prices in subscription mode): an invoice item on that
/// invoice.
#[derive(Debug, Clone)]
pub struct OneTimeItem {
    /// The catalog price, when the line named one.
    pub price: Option<String>,
    pub product: Option<String>,
    pub description: String,
    pub currency: domain::Currency,
    pub unit_amount: i64,
    pub quantity: i64,
}

#[derive(Debug, Clone, Default)]
pub struct SubscriptionRequest {
    /// The subscription's id; a new one when `None`. A caller that must be able to resume
    /// after a crash (a Checkout Session's return) names it, so a second attempt finds the
    /// subscription instead of making another.
    pub subscription_id: Option<String>,
    pub customer: String,
    pub items: Vec<ItemRequest>,
    /// One-time lines added to the first invoice.
    pub add_invoice_items: Vec<OneTimeItem>,
    pub default_payment_method: Option<String>,
    pub default_tax_rates: Option<Vec<String>>,
    pub trial_period_days: Option<u32>,
    pub trial_end: Option<i64>,
    pub payment_behavior: PaymentBehavior,
    pub cancel_at_period_end: bool,
    pub metadata: Metadata,
    pub description: Option<String>,
}

/// An item change on update: `id` names an existing item; without it, a new item.
#[derive(Debug, Clone, Default)]
pub struct ItemChange {
    pub id: Option<String>,
    pub price: Option<String>,
    pub quantity: Option<i64>,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProrationBehavior {
    #[default]
    CreateProrations,
    None,
}

#[derive(Debug, Clone, Default)]
pub struct SubscriptionUpdate {
    pub changes: SubscriptionChanges,
    pub items: Vec<ItemChange>,
    pub proration_behavior: ProrationBehavior,
}

/// What a billing write wrote (for read-your-writes), and the request's idempotency claim.
///
/// A billing write may take several transactions (open the invoice, then charge, then
/// settle). Its first commit stores a recovery point with its events — the new or changed
/// object's id — so a retry after a crash replays instead of running the write again; the
/// handler then [amends](crate::idempotency::IdempotencyStore::amend) it with the full answer.
#[derive(Debug, Default)]
pub struct Written {
    pub appended: Vec<Appended>,
    pub token: Option<ClaimToken>,
    checkpointed: bool,
}

impl Written {
    pub fn new(token: Option<ClaimToken>) -> Self {
        Self {
            appended: Vec::new(),
            token,
            checkpointed: false,
        }
    }

    /// Whether a response is already stored for the claim.
    pub fn checkpointed(&self) -> bool {
        self.checkpointed
    }

    fn add(&mut self, appended: Vec<Appended>) {
        self.appended.extend(appended);
        if self.token.is_some() {
            self.checkpointed = true;
        }
    }
}

/// Stores the recovery point of a write in its first unit.
async fn checkpoint(
    unit: &mut UnitOfWork,
    written: &Written,
    object: &'static str,
    id: &str,
) -> Result<(), PaymentError> {
    if let (Some(token), false) = (&written.token, written.checkpointed) {
        let response = StoredResponse::json(200, &serde_json::json!({"id": id, "object": object}));
        IdempotencyStore::complete_in(unit.connection(), token, &response)
            .await
            .map_err(|error| PaymentError::Internal(error.to_string()))?;
    }
    Ok(())
}

/// One subscription due for renewal: the period end it renews and the pending invoice
/// items (prorations) its invoice takes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRenewal {
    pub subscription: String,
    pub period_end: i64,
    pub pending_items: Vec<String>,
}

pub type RenewalResult = Result<JobOutcome, PaymentError>;

/// What the opening transaction of a batch left for one renewal.
enum Opened {
    Nothing(JobOutcome),
    Charge(Box<PaymentIntent>, Box<PaymentMethod>),
}

/// The outcome of one scheduled job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    /// Another worker did it first, or it is no longer due.
    AlreadyDone,
}

#[derive(Clone)]
pub struct BillingService {
    payments: PaymentService,
}

/// Runs `work` in a fresh unit until it commits, deciding again after each conflict.
macro_rules! in_unit {
    ($bus:expr, $actor:expr, |$unit:ident| $body:block) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut $unit = $bus.unit(&$actor.metadata()).await?;
            let result: Result<_, PaymentError> = async { $body }.await;
            let value = result?;
            match $unit.commit().await {
                Ok(appended) => break Ok::<_, PaymentError>((value, appended)),
                Err(UnitError::Conflict) if attempt < MAX_UNIT_ATTEMPTS => {
                    back_off(attempt).await;
                }
                Err(error) => break Err(error.into()),
            }
        }
    }};
}

impl BillingService {
    pub fn new(payments: PaymentService) -> Self {
        Self { payments }
    }

    pub fn payments(&self) -> &PaymentService {
        &self.payments
    }

    /// Creates a subscription and its first invoice, and collects that invoice unless
    /// `payment_behavior` says not to. Returns the subscription id.
    pub async fn create_subscription(
        &self,
        actor: &Actor,
        request: SubscriptionRequest,
        written: &mut Written,
    ) -> Result<String, PaymentError> {
        let subscription_id = request
            .subscription_id
            .clone()
            .unwrap_or_else(|| ids::new_id("sub"));
        let invoice_id = ids::new_id("in");
        let bus = self.payments.bus().clone();
        let (pending, appended) = in_unit!(bus, actor, |unit| {
            let customer =
                load_owned::<Customer>(&mut unit, actor, "customer", &request.customer).await?;
            if customer.deleted {
                return Err(PaymentError::NotFound {
                    kind: "customer",
                    id: request.customer.clone(),
                });
            }
            if let Some(method_id) = &request.default_payment_method {
                // Checked here, not only when charged: a trial or `default_incomplete`
                // charges nothing now and would keep someone else's card for later.
                let method =
                    load_owned::<PaymentMethod>(&mut unit, actor, "payment_method", method_id)
                        .await?;
                if !method.usable() || method.customer.as_deref() != Some(customer.id.as_str()) {
                    return Err(PaymentError::InvalidRequest(format!(
                        "The payment method {method_id} is not attached to customer {}.",
                        customer.id
                    )));
                }
            }
            let at = now_on(&mut unit, customer.test_clock.as_deref()).await?;
            let mut items = Vec::with_capacity(request.items.len());
            for item in &request.items {
                let plan = plan_price(&mut unit, actor, &item.price).await?;
                items.push(SubscriptionItem {
                    id: ids::new_id("si"),
                    price: plan,
                    quantity: item.quantity,
                    created: at,
                    metadata: item.metadata.clone(),
                });
            }
            let settings = settings(&mut unit, &actor.project).await?;
            let rates = tax_rates(
                &mut unit,
                actor,
                request.default_tax_rates.as_deref(),
                settings.default_tax_rate.as_deref(),
            )
            .await?;
            let trial_end = request.trial_end.or_else(|| {
                request
                    .trial_period_days
                    .map(|days| at + recurring::days(days))
            });
            let payment_method = request
                .default_payment_method
                .clone()
                .or_else(|| customer.default_payment_method.clone());
            decide::<Subscription>(
                &mut unit,
                &subscription_id,
                SubscriptionCommand::Create {
                    subscription: Box::new(NewSubscription {
                        subscription_id: subscription_id.clone(),
                        customer: customer.id.clone(),
                        items,
                        default_payment_method: request.default_payment_method.clone(),
                        default_tax_rates: rates,
                        trial_end,
                        cancel_at_period_end: request.cancel_at_period_end,
                        metadata: request.metadata.clone(),
                        description: request.description.clone(),
                        test_clock: customer.test_clock.clone(),
                        first_invoice: invoice_id.clone(),
                    }),
                    at,
                },
            )
            .await?;
            let subscription = unit.load::<Subscription>(&subscription_id).await?.clone();
            open_period_invoice(
                &mut unit,
                actor,
                &subscription,
                &invoice_id,
                BillingReason::SubscriptionCreate,
                trial_end.is_some(),
                &request.add_invoice_items,
                at,
            )
            .await?;
            checkpoint(&mut unit, written, "subscription", &subscription_id).await?;
            if request.payment_behavior == PaymentBehavior::DefaultIncomplete {
                return Ok(None);
            }
            match payment_method {
                Some(method) => {
                    start_invoice_payment(
                        &mut unit,
                        actor,
                        &invoice_id,
                        Some(&method),
                        true,
                        None,
                        at,
                    )
                    .await
                }
                None if unit.load::<Invoice>(&invoice_id).await?.amount_remaining() > 0 => {
                    Err(PaymentError::InvalidRequest(
                        "This customer has no attached payment source or default payment method. Please consider adding a default payment method."
                            .into(),
                    ))
                }
                None => Ok(None),
            }
        })?;
        written.add(appended);
        if let Some(intent_id) = pending {
            let outcome = self
                .payments
                .charge_and_settle(actor, &intent_id, false)
                .await;
            match outcome {
                Ok(appended) => written.add(appended),
                Err(error) => return Err(error),
            }
            if request.payment_behavior == PaymentBehavior::ErrorIfIncomplete {
                self.fail_if_incomplete(actor, &subscription_id, &intent_id, written)
                    .await?;
            }
        }
        Ok(subscription_id)
    }

    /// `error_if_incomplete`: a first payment that did not succeed ends the subscription
    /// (expired, its invoice void) and answers with the card error.
    async fn fail_if_incomplete(
        &self,
        actor: &Actor,
        subscription_id: &str,
        intent_id: &str,
        written: &mut Written,
    ) -> Result<(), PaymentError> {
        let bus = self.payments.bus().clone();
        let (error, appended) = in_unit!(bus, actor, |unit| {
            let subscription = unit.load::<Subscription>(subscription_id).await?.clone();
            if subscription.status != SubscriptionStatus::Incomplete {
                return Ok(None);
            }
            let intent = unit.load::<PaymentIntent>(intent_id).await?.clone();
            let at = now_on(&mut unit, subscription.test_clock.as_deref()).await?;
            decide::<Subscription>(
                &mut unit,
                subscription_id,
                SubscriptionCommand::ExpireIncomplete { at },
            )
            .await?;
            if let Some(invoice) = &subscription.latest_invoice {
                decide::<Invoice>(&mut unit, invoice, InvoiceCommand::Void { at }).await?;
            }
            let error = intent.last_payment_error.clone();
            Ok(Some(match error {
                Some(error) => PaymentError::CardDeclined {
                    code: error.code,
                    decline_code: error.decline_code,
                    message: error.message,
                },
                None => PaymentError::CardDeclined {
                    code: "subscription_payment_intent_requires_action".into(),
                    decline_code: None,
                    message: "Payment for this subscription requires additional user action before it can be completed successfully.".into(),
                },
            }))
        })?;
        written.add(appended);
        match error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Changes a subscription: flags, default payment method, and items (with daily
    /// prorations as pending invoice items for the next invoice).
    pub async fn update_subscription(
        &self,
        actor: &Actor,
        subscription_id: &str,
        update: SubscriptionUpdate,
        written: &mut Written,
    ) -> Result<(), PaymentError> {
        let bus = self.payments.bus().clone();
        let ((), appended) = in_unit!(bus, actor, |unit| {
            let subscription =
                load_owned::<Subscription>(&mut unit, actor, "subscription", subscription_id)
                    .await?;
            let at = now_on(&mut unit, subscription.test_clock.as_deref()).await?;
            if let Some(Some(method_id)) = &update.changes.default_payment_method {
                let method =
                    load_owned::<PaymentMethod>(&mut unit, actor, "payment_method", method_id)
                        .await?;
                if method.customer.as_deref() != Some(subscription.customer.as_str()) {
                    return Err(PaymentError::InvalidRequest(format!(
                        "The payment method {method_id} is not attached to customer {}.",
                        subscription.customer
                    )));
                }
            }
            if !update.changes.is_empty() {
                decide::<Subscription>(
                    &mut unit,
                    subscription_id,
                    SubscriptionCommand::Update {
                        changes: update.changes.clone(),
                        at,
                    },
                )
                .await?;
            }
            if !update.items.is_empty() {
                let new_items =
                    apply_item_changes(&mut unit, actor, &subscription, &update.items, at).await?;
                if update.proration_behavior == ProrationBehavior::CreateProrations {
                    for proration in subscription::prorations(&subscription, &new_items, at) {
                        let item_id = ids::new_id("ii");
                        decide::<InvoiceItem>(
                            &mut unit,
                            &item_id,
                            InvoiceItemCommand::Create {
                                item: Box::new(NewInvoiceItem {
                                    invoice_item_id: item_id.clone(),
                                    customer: subscription.customer.clone(),
                                    currency: proration.price.currency,
                                    amount: proration.amount,
                                    quantity: proration.quantity,
                                    unit_amount: None,
                                    description: proration.description,
                                    price: Some(proration.price.price.clone()),
                                    product: Some(proration.price.product.clone()),
                                    subscription: Some(subscription.id.clone()),
                                    subscription_item: Some(proration.subscription_item),
                                    proration: true,
                                    period_start: proration.period_start,
                                    period_end: proration.period_end,
                                    tax_rates: subscription.default_tax_rates.clone(),
                                    metadata: Metadata::new(),
                                    invoice: None,
                                    line_id: ids::new_id("il"),
                                }),
                                at,
                            },
                        )
                        .await?;
                    }
                }
                decide::<Subscription>(
                    &mut unit,
                    subscription_id,
                    SubscriptionCommand::ChangeItems {
                        items: new_items,
                        at,
                    },
                )
                .await?;
            }
            checkpoint(&mut unit, written, "subscription", subscription_id).await?;
            Ok(())
        })?;
        written.add(appended);
        Ok(())
    }

    /// Cancels now, without a final invoice (Stripe's default).
    pub async fn cancel_subscription(
        &self,
        actor: &Actor,
        subscription_id: &str,
        reason: Option<String>,
        written: &mut Written,
    ) -> Result<(), PaymentError> {
        let bus = self.payments.bus().clone();
        let ((), appended) = in_unit!(bus, actor, |unit| {
            let subscription =
                load_owned::<Subscription>(&mut unit, actor, "subscription", subscription_id)
                    .await?;
            let at = now_on(&mut unit, subscription.test_clock.as_deref()).await?;
            decide::<Subscription>(
                &mut unit,
                subscription_id,
                SubscriptionCommand::Cancel {
                    reason: reason.clone(),
                    at,
                },
            )
            .await?;
            checkpoint(&mut unit, written, "subscription", subscription_id).await?;
            Ok(())
        })?;
        written.add(appended);
        Ok(())
    }

    /// The scheduler's renewal of the period ending at `period_end`: a new period, its
    /// invoice, and the charge. Or, for `cancel_at_period_end`, the cancellation.
    pub async fn renew(
        &self,
        actor: &Actor,
        subscription_id: &str,
        period_end: i64,
        pending_items: &[String],
    ) -> Result<JobOutcome, PaymentError> {
        let bus = self.payments.bus().clone();
        let invoice_id = ids::new_id("in");
        let (pending, _appended) = in_unit!(bus, actor, |unit| {
            open_renewal(
                &mut unit,
                actor,
                subscription_id,
                period_end,
                pending_items,
                &invoice_id,
            )
            .await
        })?;
        match pending {
            Err(outcome) => Ok(outcome),
            Ok(None) => Ok(JobOutcome::Done),
            Ok(Some(intent_id)) => {
                self.payments
                    .charge_and_settle(actor, &intent_id, true)
                    .await?;
                Ok(JobOutcome::Done)
            }
        }
    }

    /// Renews many due subscriptions of the actor's project and mode together, making the
    /// same decisions as [`Self::renew`] with far fewer commits: one transaction opens every
    /// period, invoice and attempt; the gateway calls run side by side; one transaction
    /// records every outcome. If the opening transaction cannot commit as a whole (a
    /// subscription changed meanwhile, one renewal refused), nothing of it is kept and each
    /// renewal runs alone through [`Self::renew`]. Exactly once as before: every attempt is
    /// committed before its gateway call, and a renewal names the period it renews.
    pub async fn renew_batch(&self, actor: &Actor, due: &[DueRenewal]) -> Vec<RenewalResult> {
        match self.open_renewals(actor, due).await {
            Ok((opened, known)) => {
                let mut results: Vec<RenewalResult> = Vec::with_capacity(due.len());
                let mut charges = Vec::new();
                for (index, opened) in opened.into_iter().enumerate() {
                    match opened {
                        Opened::Nothing(outcome) => results.push(Ok(outcome)),
                        Opened::Charge(intent, method) => {
                            charges.push((index, intent, method));
                            results.push(Ok(JobOutcome::Done));
                        }
                    }
                }
                let sent: Vec<(usize, PaymentIntent, Result<ChargeOutcome, PaymentError>)> =
                    futures::future::join_all(charges.into_iter().map(
                        |(index, intent, method)| async move {
                            let outcome = self
                                .payments
                                .charge_new_attempt(actor, &intent, &method)
                                .await;
                            (index, *intent, outcome)
                        },
                    ))
                    .await;
                let mut to_record = Vec::with_capacity(sent.len());
                let mut recorded_for = Vec::with_capacity(sent.len());
                for (index, intent, outcome) in sent {
                    match outcome {
                        Ok(outcome) => {
                            to_record.push((intent, outcome));
                            recorded_for.push(index);
                        }
                        // The attempt stays open; the recovery worker asks the gateway.
                        Err(error) => results[index] = Err(error),
                    }
                }
                let recorded = self.payments.record_outcomes(actor, to_record, known).await;
                for (index, result) in recorded_for.into_iter().zip(recorded) {
                    if let Err(error) = result {
                        results[index] = Err(error);
                    }
                }
                results
            }
            Err(error) => {
                tracing::debug!(%error, "a batch of renewals did not open together; renewing each alone");
                let mut results = Vec::with_capacity(due.len());
                for renewal in due {
                    results.push(
                        self.renew(
                            actor,
                            &renewal.subscription,
                            renewal.period_end,
                            &renewal.pending_items,
                        )
                        .await,
                    );
                }
                results
            }
        }
    }

    /// The opening transaction of [`Self::renew_batch`]: every stream the renewals read is
    /// fetched in a few queries, every decision made, and everything committed at once.
    async fn open_renewals(
        &self,
        actor: &Actor,
        due: &[DueRenewal],
    ) -> Result<(Vec<Opened>, Known), PaymentError> {
        let mut unit = self.payments.bus().unit(&actor.metadata()).await?;
        let subscriptions: Vec<&str> = due
            .iter()
            .map(|renewal| renewal.subscription.as_str())
            .collect();
        unit.preload::<Subscription>(&subscriptions).await?;
        let mut customers = Vec::with_capacity(due.len());
        let mut methods = Vec::with_capacity(due.len());
        for id in &subscriptions {
            let subscription = unit.load::<Subscription>(id).await?;
            customers.push(subscription.customer.clone());
            methods.extend(subscription.default_payment_method.clone());
        }
        let customer_ids: Vec<&str> = customers.iter().map(String::as_str).collect();
        unit.preload::<Customer>(&customer_ids).await?;
        for id in &customer_ids {
            methods.extend(
                unit.load::<Customer>(id)
                    .await?
                    .default_payment_method
                    .clone(),
            );
        }
        let method_ids: Vec<&str> = methods.iter().map(String::as_str).collect();
        unit.preload::<PaymentMethod>(&method_ids).await?;

        let mut opened = Vec::with_capacity(due.len());
        for renewal in due {
            let invoice_id = ids::new_id("in");
            let decided = open_renewal(
                &mut unit,
                actor,
                &renewal.subscription,
                renewal.period_end,
                &renewal.pending_items,
                &invoice_id,
            )
            .await?;
            opened.push(match decided {
                Err(outcome) => Opened::Nothing(outcome),
                Ok(None) => Opened::Nothing(JobOutcome::Done),
                Ok(Some(intent_id)) => {
                    let intent = unit.load::<PaymentIntent>(&intent_id).await?.clone();
                    let method_id = intent
                        .pending_charge()
                        .map(|charge| charge.payment_method.clone())
                        .ok_or_else(|| PaymentError::Internal("no pending attempt".into()))?;
                    let method = unit.load::<PaymentMethod>(&method_id).await?.clone();
                    Opened::Charge(Box::new(intent), Box::new(method))
                }
            });
        }
        let (_, known) = unit.commit_keeping().await?;
        Ok((opened, known))
    }

    /// The scheduler's dunning retry of an invoice whose next attempt was due at `due_at`.
    pub async fn retry_invoice(
        &self,
        actor: &Actor,
        invoice_id: &str,
        due_at: i64,
    ) -> Result<JobOutcome, PaymentError> {
        let bus = self.payments.bus().clone();
        let (pending, _appended) = in_unit!(bus, actor, |unit| {
            let invoice = load_owned::<Invoice>(&mut unit, actor, "invoice", invoice_id).await?;
            if !invoice.payable() || invoice.next_payment_attempt != Some(due_at) {
                return Ok(Err(JobOutcome::AlreadyDone));
            }
            let at = now_on(&mut unit, invoice.test_clock.as_deref()).await?;
            if at < due_at {
                return Ok(Err(JobOutcome::AlreadyDone));
            }
            let method = match (&invoice.default_payment_method, &invoice.subscription) {
                (Some(method), _) => Some(method.clone()),
                (None, Some(subscription)) => {
                    let subscription = unit.load::<Subscription>(subscription).await?.clone();
                    payment_method_for(&mut unit, &subscription).await?
                }
                (None, None) => customer_default_method(&mut unit, &invoice.customer).await?,
            };
            start_invoice_payment(
                &mut unit,
                actor,
                invoice_id,
                method.as_deref(),
                true,
                Some(due_at),
                at,
            )
            .await
            .map(Ok)
        })?;
        match pending {
            Err(outcome) => Ok(outcome),
            Ok(None) => Ok(JobOutcome::Done),
            Ok(Some(intent_id)) => {
                self.payments
                    .charge_and_settle(actor, &intent_id, true)
                    .await?;
                Ok(JobOutcome::Done)
            }
        }
    }

    /// The scheduler's expiry of a subscription whose first invoice went unpaid for 23 h.
    pub async fn expire_incomplete(
        &self,
        actor: &Actor,
        subscription_id: &str,
    ) -> Result<JobOutcome, PaymentError> {
        let bus = self.payments.bus().clone();
        let (outcome, _appended) = in_unit!(bus, actor, |unit| {
            let subscription =
                load_owned::<Subscription>(&mut unit, actor, "subscription", subscription_id)
                    .await?;
            if subscription.status != SubscriptionStatus::Incomplete {
                return Ok(JobOutcome::AlreadyDone);
            }
            let at = now_on(&mut unit, subscription.test_clock.as_deref()).await?;
            if at < subscription.created + subscription::INCOMPLETE_EXPIRY_SECONDS {
                return Ok(JobOutcome::AlreadyDone);
            }
            decide::<Subscription>(
                &mut unit,
                subscription_id,
                SubscriptionCommand::ExpireIncomplete { at },
            )
            .await?;
            if let Some(invoice_id) = &subscription.latest_invoice {
                if unit.load::<Invoice>(invoice_id).await?.payable() {
                    decide::<Invoice>(&mut unit, invoice_id, InvoiceCommand::Void { at }).await?;
                }
            }
            Ok(JobOutcome::Done)
        })?;
        Ok(outcome)
    }

    /// `POST /v1/invoices/{id}/pay`: pays now with `payment_method` (or the invoice's,
    /// subscription's or customer's default), or marks it paid out of band.
    pub async fn pay_invoice(
        &self,
        actor: &Actor,
        invoice_id: &str,
        payment_method: Option<String>,
        paid_out_of_band: bool,
        written: &mut Written,
    ) -> Result<(), PaymentError> {
        let bus = self.payments.bus().clone();
        let (pending, appended) = in_unit!(bus, actor, |unit| {
            let invoice = load_owned::<Invoice>(&mut unit, actor, "invoice", invoice_id).await?;
            checkpoint(&mut unit, written, "invoice", invoice_id).await?;
            let at = now_on(&mut unit, invoice.test_clock.as_deref()).await?;
            if invoice.status == domain::invoice::InvoiceStatus::Draft {
                finalize(&mut unit, actor, invoice_id, at).await?;
            }
            if paid_out_of_band {
                decide::<Invoice>(
                    &mut unit,
                    invoice_id,
                    InvoiceCommand::MarkPaidOutOfBand { at },
                )
                .await?;
                if let Some(subscription) = &invoice.subscription {
                    decide::<Subscription>(
                        &mut unit,
                        subscription,
                        SubscriptionCommand::RecordInvoicePaid {
                            invoice: invoice_id.to_string(),
                            at,
                        },
                    )
                    .await?;
                }
                return Ok(None);
            }
            let invoice = unit.load::<Invoice>(invoice_id).await?.clone();
            if !invoice.payable() {
                return Err(PaymentError::InvalidRequest(format!(
                    "Invoice is already {}.",
                    invoice.status.as_str()
                )));
            }
            let method = match payment_method
                .clone()
                .or(invoice.default_payment_method.clone())
            {
                Some(method) => Some(method),
                None => match &invoice.subscription {
                    Some(subscription) => {
                        let subscription = unit.load::<Subscription>(subscription).await?.clone();
                        payment_method_for(&mut unit, &subscription).await?
                    }
                    None => customer_default_method(&mut unit, &invoice.customer).await?,
                },
            };
            let Some(method) = method else {
                return Err(PaymentError::InvalidRequest(
                    "There is no payment method to pay this invoice with: pass payment_method or set a default."
                        .into(),
                ));
            };
            start_invoice_payment(&mut unit, actor, invoice_id, Some(&method), false, None, at)
                .await
        })?;
        written.add(appended);
        if let Some(intent_id) = pending {
            let appended = self
                .payments
                .charge_and_settle(actor, &intent_id, true)
                .await?;
            written.add(appended);
            let intent = self
                .payments
                .load_owned::<PaymentIntent>(actor, "payment_intent", &intent_id)
                .await?
                .0;
            if intent.status != IntentStatus::Succeeded {
                if let Some(error) = intent.last_payment_error {
                    return Err(PaymentError::CardDeclined {
                        code: error.code,
                        decline_code: error.decline_code,
                        message: error.message,
                    });
                }
            }
        }
        Ok(())
    }

    /// The receipt invoice of a successful one-off payment (an intent billing did not open):
    /// paid, numbered like any other. Its id is derived from the intent's, so issuing it
    /// twice — two runners, a retried job — finds it already there.
    pub async fn issue_receipt(
        &self,
        actor: &Actor,
        intent_id: &str,
    ) -> Result<JobOutcome, PaymentError> {
        let bus = self.payments.bus().clone();
        let (outcome, _appended) = in_unit!(bus, actor, |unit| {
            receipt_in(&mut unit, actor, intent_id).await
        })?;
        Ok(outcome)
    }

    /// The receipt invoices of many one-off payments of one project and mode, in one
    /// transaction (the project's invoice counter locked once, every stream read in a query
    /// per kind). Should the batch not commit (a stream changed under it, one payment not
    /// this project's), nothing of it is kept and each receipt is issued alone
    /// ([`Self::issue_receipt`], with its retries). One result per intent, in order.
    pub async fn issue_receipts(
        &self,
        actor: &Actor,
        intent_ids: &[String],
    ) -> Vec<Result<JobOutcome, PaymentError>> {
        let bus = self.payments.bus().clone();
        let together = async {
            let mut unit = bus.unit(&actor.metadata()).await?;
            let intents: Vec<&str> = intent_ids.iter().map(String::as_str).collect();
            unit.preload::<PaymentIntent>(&intents).await?;
            let invoice_ids: Vec<String> = intent_ids
                .iter()
                .map(|intent| receipt_invoice_id(intent))
                .collect();
            let invoices: Vec<&str> = invoice_ids.iter().map(String::as_str).collect();
            unit.preload::<Invoice>(&invoices).await?;
            let mut customers = Vec::new();
            for intent in &intents {
                if let Some(customer) = unit.load::<PaymentIntent>(intent).await?.customer.clone() {
                    customers.push(customer);
                }
            }
            let customers: Vec<&str> = customers.iter().map(String::as_str).collect();
            unit.preload::<Customer>(&customers).await?;
            let mut outcomes = Vec::with_capacity(intent_ids.len());
            for intent_id in intent_ids {
                outcomes.push(receipt_in(&mut unit, actor, intent_id).await?);
            }
            unit.commit().await?;
            Ok::<_, PaymentError>(outcomes)
        };
        match together.await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(error) => {
                tracing::debug!(%error, "a batch of receipts did not commit; issuing them one by one");
                let mut results = Vec::with_capacity(intent_ids.len());
                for intent_id in intent_ids {
                    results.push(self.issue_receipt(actor, intent_id).await);
                }
                results
            }
        }
    }

    /// Manual invoices: a draft for `customer`, optionally pulling in its pending items.
    pub async fn create_invoice(
        &self,
        actor: &Actor,
        request: InvoiceRequest,
        pending_items: &[String],
        written: &mut Written,
    ) -> Result<String, PaymentError> {
        let bus = self.payments.bus().clone();
        let invoice_id = ids::new_id("in");
        let ((), appended) = in_unit!(bus, actor, |unit| {
            let customer =
                load_owned::<Customer>(&mut unit, actor, "customer", &request.customer).await?;
            if customer.deleted {
                return Err(PaymentError::NotFound {
                    kind: "customer",
                    id: request.customer.clone(),
                });
            }
            let at = now_on(&mut unit, customer.test_clock.as_deref()).await?;
            decide::<Invoice>(
                &mut unit,
                &invoice_id,
                InvoiceCommand::Create {
                    invoice: Box::new(NewInvoice {
                        invoice_id: invoice_id.clone(),
                        customer: customer.id.clone(),
                        currency: request.currency,
                        billing_reason: BillingReason::Manual,
                        subscription: None,
                        lines: Vec::new(),
                        auto_advance: request.auto_advance,
                        description: request.description.clone(),
                        footer: request.footer.clone(),
                        metadata: request.metadata.clone(),
                        default_payment_method: request.default_payment_method.clone(),
                        period_start: at,
                        period_end: at,
                        test_clock: customer.test_clock.clone(),
                    }),
                    at,
                },
            )
            .await?;
            for item_id in pending_items {
                let item = unit.load::<InvoiceItem>(item_id).await?.clone();
                let same_currency = item
                    .item
                    .as_ref()
                    .is_some_and(|item| item.currency == request.currency);
                if same_currency {
                    add_pending_item(&mut unit, &invoice_id, item_id, "", at).await?;
                }
            }
            checkpoint(&mut unit, written, "invoice", &invoice_id).await?;
            Ok(())
        })?;
        written.add(appended);
        Ok(invoice_id)
    }

    pub async fn finalize_invoice(
        &self,
        actor: &Actor,
        invoice_id: &str,
        written: &mut Written,
    ) -> Result<(), PaymentError> {
        let bus = self.payments.bus().clone();
        let ((), appended) = in_unit!(bus, actor, |unit| {
            let invoice = load_owned::<Invoice>(&mut unit, actor, "invoice", invoice_id).await?;
            let at = now_on(&mut unit, invoice.test_clock.as_deref()).await?;
            checkpoint(&mut unit, written, "invoice", invoice_id).await?;
            finalize(&mut unit, actor, invoice_id, at).await
        })?;
        written.add(appended);
        Ok(())
    }

    /// A plain invoice command (void, mark uncollectible, draft update or delete) on an
    /// invoice of the actor's project.
    pub async fn invoice_command(
        &self,
        actor: &Actor,
        invoice_id: &str,
        command: impl Fn(i64) -> InvoiceCommand,
        written: &mut Written,
    ) -> Result<(), PaymentError> {
        let bus = self.payments.bus().clone();
        let ((), appended) = in_unit!(bus, actor, |unit| {
            let invoice = load_owned::<Invoice>(&mut unit, actor, "invoice", invoice_id).await?;
            let at = now_on(&mut unit, invoice.test_clock.as_deref()).await?;
            decide::<Invoice>(&mut unit, invoice_id, command(at)).await?;
            checkpoint(&mut unit, written, "invoice", invoice_id).await?;
            Ok(())
        })?;
        written.add(appended);
        Ok(())
    }

    /// `POST /v1/invoiceitems`: on a draft invoice at once, or pending.
    pub async fn create_invoice_item(
        &self,
        actor: &Actor,
        request: InvoiceItemRequest,
        written: &mut Written,
    ) -> Result<String, PaymentError> {
        let bus = self.payments.bus().clone();
        let item_id = ids::new_id("ii");
        let ((), appended) = in_unit!(bus, actor, |unit| {
            let customer =
                load_owned::<Customer>(&mut unit, actor, "customer", &request.customer).await?;
            let at = now_on(&mut unit, customer.test_clock.as_deref()).await?;
            let (amount, unit_amount, currency, price, product, description) = match &request.price
            {
                Some(price_id) => {
                    let price = load_owned::<Price>(&mut unit, actor, "price", price_id).await?;
                    let product = unit.load::<Product>(&price.product).await?.clone();
                    (
                        price.unit_amount.saturating_mul(request.quantity),
                        Some(price.unit_amount),
                        price.currency,
                        Some(price.id.clone()),
                        Some(price.product.clone()),
                        request.description.clone().unwrap_or(product.name),
                    )
                }
                None => {
                    let currency = request.currency.ok_or_else(|| {
                        PaymentError::InvalidRequest("Missing required param: currency.".into())
                    })?;
                    let amount = request.amount.or_else(|| {
                        request
                            .unit_amount
                            .map(|unit_amount| unit_amount.saturating_mul(request.quantity))
                    });
                    (
                        amount.ok_or_else(|| {
                            PaymentError::InvalidRequest(
                                "Missing required param: amount or price.".into(),
                            )
                        })?,
                        request.unit_amount,
                        currency,
                        None,
                        None,
                        request.description.clone().unwrap_or_default(),
                    )
                }
            };
            let settings = settings(&mut unit, &actor.project).await?;
            let rates = tax_rates(
                &mut unit,
                actor,
                request.tax_rates.as_deref(),
                settings.default_tax_rate.as_deref(),
            )
            .await?;
            if let Some(invoice_id) = &request.invoice {
                let invoice =
                    load_owned::<Invoice>(&mut unit, actor, "invoice", invoice_id).await?;
                if invoice.customer != customer.id {
                    return Err(PaymentError::InvalidRequest(
                        "The invoice belongs to another customer.".into(),
                    ));
                }
                if invoice.currency != Some(currency) {
                    return Err(PaymentError::InvalidRequest(
                        "The invoice item's currency must match the invoice's.".into(),
                    ));
                }
            }
            let line_id = ids::new_id("il");
            decide::<InvoiceItem>(
                &mut unit,
                &item_id,
                InvoiceItemCommand::Create {
                    item: Box::new(NewInvoiceItem {
                        invoice_item_id: item_id.clone(),
                        customer: customer.id.clone(),
                        currency,
                        amount,
                        quantity: request.quantity,
                        unit_amount,
                        description,
                        price,
                        product,
                        subscription: None,
                        subscription_item: None,
                        proration: false,
                        period_start: at,
                        period_end: at,
                        tax_rates: rates,
                        metadata: request.metadata.clone(),
                        invoice: request.invoice.clone(),
                        line_id,
                    }),
                    at,
                },
            )
            .await?;
            if let Some(invoice_id) = &request.invoice {
                let item = unit.load::<InvoiceItem>(&item_id).await?.clone();
                if let Some(new) = &item.item {
                    decide::<Invoice>(
                        &mut unit,
                        invoice_id,
                        InvoiceCommand::AddLine {
                            line: line_for(new),
                            at,
                        },
                    )
                    .await?;
                }
            }
            checkpoint(&mut unit, written, "invoiceitem", &item_id).await?;
            Ok(())
        })?;
        written.add(appended);
        Ok(item_id)
    }

    pub async fn delete_invoice_item(
        &self,
        actor: &Actor,
        item_id: &str,
        written: &mut Written,
    ) -> Result<(), PaymentError> {
        let bus = self.payments.bus().clone();
        let ((), appended) = in_unit!(bus, actor, |unit| {
            load_owned::<InvoiceItem>(&mut unit, actor, "invoiceitem", item_id).await?;
            decide::<InvoiceItem>(
                &mut unit,
                item_id,
                InvoiceItemCommand::Delete {
                    at: Utc::now().timestamp(),
                },
            )
            .await?;
            checkpoint(&mut unit, written, "invoiceitem", item_id).await?;
            Ok(())
        })?;
        written.add(appended);
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct InvoiceRequest {
    pub customer: String,
    pub currency: domain::Currency,
    pub auto_advance: bool,
    pub description: Option<String>,
    pub footer: Option<String>,
    pub metadata: Metadata,
    pub default_payment_method: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct InvoiceItemRequest {
    pub customer: String,
    pub invoice: Option<String>,
    pub price: Option<String>,
    pub amount: Option<i64>,
    pub unit_amount: Option<i64>,
    pub quantity: i64,
    pub currency: Option<domain::Currency>,
    pub description: Option<String>,
    pub tax_rates: Option<Vec<String>>,
    pub metadata: Metadata,
}

/// The receipt invoice of payment intent `pi_X` is `in_rcpt_X`: one per payment, whoever
/// issues it.
pub fn receipt_invoice_id(intent_id: &str) -> String {
    format!(
        "in_rcpt_{}",
        intent_id.strip_prefix("pi_").unwrap_or(intent_id)
    )
}

fn line_for(item: &NewInvoiceItem) -> InvoiceLine {
    InvoiceLine {
        id: item.line_id.clone(),
        description: item.description.clone(),
        price: item.price.clone(),
        product: item.product.clone(),
        quantity: item.quantity,
        unit_amount: item.unit_amount,
        amount: item.amount,
        period_start: item.period_start,
        period_end: item.period_end,
        proration: item.proration,
        invoice_item: Some(item.invoice_item_id.clone()),
        subscription: item.subscription.clone(),
        subscription_item: item.subscription_item.clone(),
        tax_rates: item.tax_rates.clone(),
        taxes: Vec::new(),
        metadata: item.metadata.clone(),
    }
}

/// Moves a pending invoice item onto a draft invoice (only an item of `subscription`, when
/// one is named). An item another invoice took first is skipped.
async fn add_pending_item(
    unit: &mut UnitOfWork,
    invoice_id: &str,
    item_id: &str,
    subscription: &str,
    at: i64,
) -> Result<(), PaymentError> {
    let item = unit.load::<InvoiceItem>(item_id).await?.clone();
    let Some(new) = item.item.clone() else {
        return Ok(());
    };
    let belongs = subscription.is_empty() || new.subscription.as_deref() == Some(subscription);
    if !item.exists() || item.invoice.is_some() || !belongs {
        return Ok(());
    }
    decide::<InvoiceItem>(
        unit,
        item_id,
        InvoiceItemCommand::Invoice {
            invoice: invoice_id.to_string(),
            at,
        },
    )
    .await?;
    decide::<Invoice>(
        unit,
        invoice_id,
        InvoiceCommand::AddLine {
            line: line_for(&new),
            at,
        },
    )
    .await?;
    Ok(())
}

async fn plan_price(
    unit: &mut UnitOfWork,
    actor: &Actor,
    price_id: &str,
) -> Result<PlanPrice, PaymentError> {
    let price = load_owned::<Price>(unit, actor, "price", price_id).await?;
    if !price.active {
        return Err(PaymentError::InvalidRequest(format!(
            "The price specified ({price_id}) is inactive. This field only accepts active prices."
        )));
    }
    let cadence = cadence_of(&price).ok_or_else(|| {
        PaymentError::InvalidRequest(format!(
            "The price specified ({price_id}) is a one-time price; subscriptions accept recurring prices only."
        ))
    })?;
    let product = unit.load::<Product>(&price.product).await?.clone();
    Ok(PlanPrice {
        price: price.id.clone(),
        product: price.product.clone(),
        description: product.name,
        unit_amount: price.unit_amount,
        currency: price.currency,
        cadence,
    })
}

async fn apply_item_changes(
    unit: &mut UnitOfWork,
    actor: &Actor,
    subscription: &Subscription,
    changes: &[ItemChange],
    at: i64,
) -> Result<Vec<SubscriptionItem>, PaymentError> {
    let mut items = subscription.items.clone();
    for change in changes {
        match &change.id {
            Some(id) => {
                let position = items
                    .iter()
                    .position(|item| &item.id == id)
                    .ok_or_else(|| PaymentError::NotFound {
                        kind: "subscription_item",
                        id: id.clone(),
                    })?;
                if change.deleted {
                    items.remove(position);
                    continue;
                }
                if let Some(price) = &change.price {
                    items[position].price = plan_price(unit, actor, price).await?;
                }
                if let Some(quantity) = change.quantity {
                    items[position].quantity = quantity;
                }
            }
            None => {
                let price = change.price.as_deref().ok_or_else(|| {
                    PaymentError::InvalidRequest("A new item needs a price.".into())
                })?;
                items.push(SubscriptionItem {
                    id: ids::new_id("si"),
                    price: plan_price(unit, actor, price).await?,
                    quantity: change.quantity.unwrap_or(1),
                    created: at,
                    metadata: Metadata::new(),
                });
            }
        }
    }
    Ok(items)
}

/// Opens the invoice for the subscription's current period (a trial's invoice is for
/// nothing), with the one-time items a new subscription adds to it. Subscription-create
/// invoices are finalized here; renewal invoices after their pending items join.
#[allow(clippy::too_many_arguments)]
async fn open_period_invoice(
    unit: &mut UnitOfWork,
    actor: &Actor,
    subscription: &Subscription,
    invoice_id: &str,
    reason: BillingReason,
    trial: bool,
    one_time: &[OneTimeItem],
    at: i64,
) -> Result<(), PaymentError> {
    let currency = subscription
        .currency()
        .ok_or_else(|| PaymentError::Internal("subscription without items".into()))?;
    let lines = subscription
        .items
        .iter()
        .map(|item| InvoiceLine {
            id: ids::new_id("il"),
            description: if trial {
                format!("Trial period for {}", item.price.description)
            } else {
                format!("{} × {}", item.quantity, item.price.description)
            },
            price: Some(item.price.price.clone()),
            product: Some(item.price.product.clone()),
            quantity: item.quantity,
            unit_amount: Some(if trial { 0 } else { item.price.unit_amount }),
            amount: if trial { 0 } else { item.amount() },
            period_start: subscription.current_period_start,
            period_end: subscription.current_period_end,
            proration: false,
            invoice_item: None,
            subscription: Some(subscription.id.clone()),
            subscription_item: Some(item.id.clone()),
            tax_rates: subscription.default_tax_rates.clone(),
            taxes: Vec::new(),
            metadata: Metadata::new(),
        })
        .collect();
    decide::<Invoice>(
        unit,
        invoice_id,
        InvoiceCommand::Create {
            invoice: Box::new(NewInvoice {
                invoice_id: invoice_id.to_string(),
                customer: subscription.customer.clone(),
                currency,
                billing_reason: reason,
                subscription: Some(subscription.id.clone()),
                lines,
                auto_advance: true,
                description: None,
                footer: None,
                metadata: Metadata::new(),
                default_payment_method: None,
                period_start: subscription.current_period_start,
                period_end: subscription.current_period_end,
                test_clock: subscription.test_clock.clone(),
            }),
            at,
        },
    )
    .await?;
    for line in one_time {
        if line.currency != currency {
            return Err(PaymentError::InvalidRequest(
                "One-time items must use the subscription's currency.".into(),
            ));
        }
        let item_id = ids::new_id("ii");
        let item = NewInvoiceItem {
            invoice_item_id: item_id.clone(),
            customer: subscription.customer.clone(),
            currency: line.currency,
            amount: line.unit_amount.saturating_mul(line.quantity),
            quantity: line.quantity,
            unit_amount: Some(line.unit_amount),
            description: line.description.clone(),
            price: line.price.clone(),
            product: line.product.clone(),
            subscription: Some(subscription.id.clone()),
            subscription_item: None,
            proration: false,
            period_start: at,
            period_end: at,
            tax_rates: subscription.default_tax_rates.clone(),
            metadata: Metadata::new(),
            invoice: Some(invoice_id.to_string()),
            line_id: ids::new_id("il"),
        };
        let line = line_for(&item);
        decide::<InvoiceItem>(
            unit,
            &item_id,
            InvoiceItemCommand::Create {
                item: Box::new(item),
                at,
            },
        )
        .await?;
        decide::<Invoice>(unit, invoice_id, InvoiceCommand::AddLine { line, at }).await?;
    }
    if reason == BillingReason::SubscriptionCreate {
        finalize(unit, actor, invoice_id, at).await?;
    }
    Ok(())
}

/// What a renewal decides in its unit: the subscription's new period, its invoice (numbered)
/// and the payment intent with its attempt; or, for `cancel_at_period_end`, the
/// cancellation. `Ok(Err(outcome))`: nothing to do. `Ok(Ok(Some(intent)))`: a charge is
/// pending once the unit commits.
async fn open_renewal(
    unit: &mut UnitOfWork,
    actor: &Actor,
    subscription_id: &str,
    period_end: i64,
    pending_items: &[String],
    invoice_id: &str,
) -> Result<Result<Option<String>, JobOutcome>, PaymentError> {
    unit.begin_new::<Invoice>(invoice_id)?;
    let subscription =
        load_owned::<Subscription>(unit, actor, "subscription", subscription_id).await?;
    if subscription.status.is_final() || subscription.current_period_end != period_end {
        return Ok(Err(JobOutcome::AlreadyDone));
    }
    let at = now_on(unit, subscription.test_clock.as_deref()).await?;
    if at < period_end {
        return Ok(Err(JobOutcome::AlreadyDone));
    }
    if subscription.cancel_at_period_end {
        decide::<Subscription>(
            unit,
            subscription_id,
            SubscriptionCommand::Cancel {
                reason: Some("cancellation_requested".into()),
                at: period_end,
            },
        )
        .await?;
        return Ok(Ok(None));
    }
    if !matches!(
        subscription.status,
        SubscriptionStatus::Active | SubscriptionStatus::PastDue | SubscriptionStatus::Trialing
    ) {
        return Ok(Err(JobOutcome::AlreadyDone));
    }
    decide::<Subscription>(
        unit,
        subscription_id,
        SubscriptionCommand::Renew {
            from_period_end: period_end,
            invoice: invoice_id.to_string(),
            at,
        },
    )
    .await?;
    let renewed = unit.load::<Subscription>(subscription_id).await?.clone();
    open_period_invoice(
        unit,
        actor,
        &renewed,
        invoice_id,
        BillingReason::SubscriptionCycle,
        false,
        &[],
        at,
    )
    .await?;
    for item_id in pending_items {
        add_pending_item(unit, invoice_id, item_id, subscription_id, at).await?;
    }
    finalize(unit, actor, invoice_id, at).await?;
    let method = payment_method_for(unit, &renewed).await?;
    start_invoice_payment(unit, actor, invoice_id, method.as_deref(), true, None, at)
        .await
        .map(Ok)
}

/// Which card a subscription's invoice is charged to: the subscription's default, else the
/// customer's (Stripe's order).
async fn payment_method_for(
    unit: &mut UnitOfWork,
    subscription: &Subscription,
) -> Result<Option<String>, PaymentError> {
    match &subscription.default_payment_method {
        Some(method) => Ok(Some(method.clone())),
        None => customer_default_method(unit, &subscription.customer).await,
    }
}

async fn customer_default_method(
    unit: &mut UnitOfWork,
    customer: &str,
) -> Result<Option<String>, PaymentError> {
    Ok(unit
        .load::<Customer>(customer)
        .await?
        .default_payment_method
        .clone())
}
