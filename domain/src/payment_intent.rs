//! A payment intent: Stripe's state machine for one payment, with its charge attempts and
//! refunds.
//!
//! ```text
//! requires_payment_method ─(payment method)→ requires_confirmation ─confirm→ processing
//! processing ─approved, automatic capture→ succeeded
//! processing ─approved, manual capture→ requires_capture ─capture→ succeeded
//! processing ─3-D Secure→ requires_action ─authenticated→ (approved…) / (declined…)
//! processing ─declined→ requires_payment_method (with last_payment_error)
//! any state but processing/succeeded/canceled ─cancel→ canceled
//! ```
//!
//! Exactly-once charging: confirming records `ChargeAttemptStarted` (with the gateway's
//! `transactionUnique`) *before* the gateway is called, and the outcome after. An attempt
//! left open by a crash is resolved by asking the gateway about that `transactionUnique`;
//! recording the same outcome twice is a no-op, so the request and the recovery worker may
//! race safely.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::Metadata;
use crate::money::Money;

/// Stripe's maximum amount (eight digits of the minor unit).
pub const MAX_AMOUNT_MINOR: i64 = 99_999_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
}

impl IntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::RequiresConfirmation => "requires_confirmation",
            IntentStatus::RequiresAction => "requires_action",
            IntentStatus::Processing => "processing",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::Canceled => "canceled",
            IntentStatus::Succeeded => "succeeded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    #[default]
    Automatic,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChargeOutcome {
    Approved {
        gateway_token: String,
        authorization_code: Option<String>,
    },
    Declined {
        /// Stripe's `code` (`card_declined`, `authentication_required`, …).
        code: String,
        decline_code: Option<String>,
        message: String,
    },
    RequiresAction {
        redirect_url: String,
        /// The gateway's reference for continuing the authentication.
        authentication_reference: String,
        /// Where the cardholder's browser must post `challenge_fields` (the issuer's ACS).
        challenge_url: String,
        challenge_fields: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub transaction_unique: String,
    pub amount: Money,
    pub payment_method: String,
    pub status: AttemptStatus,
    pub captured: bool,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub gateway_token: Option<String>,
    pub authorization_code: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub decline_code: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentError {
    pub code: String,
    pub decline_code: Option<String>,
    pub message: String,
    pub charge: String,
    pub payment_method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAction {
    pub redirect_url: String,
    pub authentication_reference: String,
    #[serde(default)]
    pub challenge_url: String,
    #[serde(default)]
    pub challenge_fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub charge: String,
    pub amount: i64,
    pub status: AttemptStatus,
    pub reason: Option<String>,
    pub transaction_unique: String,
    pub failure_reason: Option<String>,
    pub metadata: Metadata,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntent {
    pub payment_intent_id: String,
    pub livemode: bool,
    pub amount: Money,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub capture_method: CaptureMethod,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub metadata: Metadata,
    /// The invoice this intent collects, when billing opened it.
    pub invoice: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub customer: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::clearable::deserialize"
    )]
    pub payment_method: Option<Option<String>>,
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
    pub receipt_email: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_method: Option<CaptureMethod>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentIntentCommand {
    Create(NewIntent),
    Update {
        changes: IntentChanges,
        at: i64,
    },
    /// Confirm: records the attempt before the gateway is called.
    Confirm {
        payment_method: Option<String>,
        charge_id: String,
        transaction_unique: String,
        at: i64,
    },
    RecordChargeOutcome {
        charge_id: String,
        outcome: ChargeOutcome,
        at: i64,
    },
    /// The gateway captured `amount` of the authorisation (the rest is released).
    Capture {
        amount: i64,
        at: i64,
    },
    Cancel {
        reason: Option<String>,
        at: i64,
    },
    StartRefund {
        refund_id: String,
        amount: Option<i64>,
        reason: Option<String>,
        transaction_unique: String,
        metadata: Metadata,
        at: i64,
    },
    RecordRefundOutcome {
        refund_id: String,
        succeeded: bool,
        failure_reason: Option<String>,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentIntentEvent {
    PaymentIntentCreated {
        payment_intent_id: String,
        livemode: bool,
        amount: Money,
        customer: Option<String>,
        payment_method: Option<String>,
        capture_method: CaptureMethod,
        description: Option<String>,
        receipt_email: Option<String>,
        metadata: Metadata,
        created: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invoice: Option<String>,
    },
    PaymentIntentUpdated {
        changes: IntentChanges,
        at: i64,
    },
    PaymentIntentConfirmed {
        payment_method: String,
        at: i64,
    },
    ChargeAttemptStarted {
        charge_id: String,
        transaction_unique: String,
        amount: Money,
        payment_method: String,
        at: i64,
    },
    ChargeRequiresAction {
        charge_id: String,
        next_action: NextAction,
        at: i64,
    },
    /// Approved and captured (automatic capture).
    ChargeSucceeded {
        charge_id: String,
        gateway_token: String,
        authorization_code: Option<String>,
        amount: Money,
        at: i64,
    },
    /// Approved and held for a later capture (manual capture).
    ChargeAuthorized {
        charge_id: String,
        gateway_token: String,
        authorization_code: Option<String>,
        amount: Money,
        at: i64,
    },
    ChargeFailed {
        charge_id: String,
        error: PaymentError,
        at: i64,
    },
    PaymentIntentCaptured {
        charge_id: String,
        amount_captured: i64,
        at: i64,
    },
    PaymentIntentCanceled {
        reason: Option<String>,
        at: i64,
    },
    RefundStarted {
        refund_id: String,
        charge_id: String,
        amount: i64,
        reason: Option<String>,
        transaction_unique: String,
        metadata: Metadata,
        at: i64,
    },
    RefundSucceeded {
        refund_id: String,
        at: i64,
    },
    RefundFailed {
        refund_id: String,
        failure_reason: Option<String>,
        at: i64,
    },
}

impl DomainEvent for PaymentIntentEvent {
    fn event_type(&self) -> String {
        match self {
            PaymentIntentEvent::PaymentIntentCreated { .. } => "PaymentIntentCreated",
            PaymentIntentEvent::PaymentIntentUpdated { .. } => "PaymentIntentUpdated",
            PaymentIntentEvent::PaymentIntentConfirmed { .. } => "PaymentIntentConfirmed",
            PaymentIntentEvent::ChargeAttemptStarted { .. } => "ChargeAttemptStarted",
            PaymentIntentEvent::ChargeRequiresAction { .. } => "ChargeRequiresAction",
            PaymentIntentEvent::ChargeSucceeded { .. } => "ChargeSucceeded",
            PaymentIntentEvent::ChargeAuthorized { .. } => "ChargeAuthorized",
            PaymentIntentEvent::ChargeFailed { .. } => "ChargeFailed",
            PaymentIntentEvent::PaymentIntentCaptured { .. } => "PaymentIntentCaptured",
            PaymentIntentEvent::PaymentIntentCanceled { .. } => "PaymentIntentCanceled",
            PaymentIntentEvent::RefundStarted { .. } => "RefundStarted",
            PaymentIntentEvent::RefundSucceeded { .. } => "RefundSucceeded",
            PaymentIntentEvent::RefundFailed { .. } => "RefundFailed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentIntentError {
    #[error("payment intent already exists")]
    AlreadyExists,
    #[error("no such payment intent")]
    NotFound,
    #[error("amount must be between 1 and {MAX_AMOUNT_MINOR}")]
    InvalidAmount,
    #[error("You cannot {action} this PaymentIntent because it has a status of {status}.")]
    UnexpectedState {
        action: &'static str,
        status: &'static str,
    },
    #[error("You cannot confirm this PaymentIntent because it's missing a payment method.")]
    MissingPaymentMethod,
    #[error("no pending charge {0}")]
    UnknownCharge(String),
    #[error("amount_to_capture must be between 1 and the authorized amount ({authorized})")]
    InvalidCaptureAmount { authorized: i64 },
    #[error(
        "Refund amount ({requested}) is greater than unrefunded amount on charge ({available})"
    )]
    OverRefund { requested: i64, available: i64 },
    #[error("no pending refund {0}")]
    UnknownRefund(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub livemode: bool,
    pub amount: Money,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub capture_method: CaptureMethod,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub metadata: Metadata,
    pub status: IntentStatus,
    pub created: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub charges: Vec<Charge>,
    pub refunds: Vec<Refund>,
    pub last_payment_error: Option<PaymentError>,
    pub next_action: Option<NextAction>,
    pub canceled_at: Option<i64>,
    pub cancellation_reason: Option<String>,
    #[serde(default)]
    pub invoice: Option<String>,
}

impl Default for PaymentIntent {
    fn default() -> Self {
        Self {
            id: String::new(),
            livemode: false,
            amount: Money::zero(crate::money::Currency::GBP),
            customer: None,
            payment_method: None,
            capture_method: CaptureMethod::Automatic,
            description: None,
            receipt_email: None,
            metadata: Metadata::new(),
            status: IntentStatus::RequiresPaymentMethod,
            created: 0,
            amount_capturable: 0,
            amount_received: 0,
            charges: Vec::new(),
            refunds: Vec::new(),
            last_payment_error: None,
            next_action: None,
            canceled_at: None,
            cancellation_reason: None,
            invoice: None,
        }
    }
}

impl PaymentIntent {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    pub fn latest_charge(&self) -> Option<&Charge> {
        self.charges.last()
    }

    /// The attempt confirmed but not yet resolved, if any.
    pub fn pending_charge(&self) -> Option<&Charge> {
        self.charges
            .iter()
            .rev()
            .find(|charge| charge.status == AttemptStatus::Pending)
    }

    /// The charge that took the money, if any.
    pub fn successful_charge(&self) -> Option<&Charge> {
        self.charges
            .iter()
            .find(|charge| charge.status == AttemptStatus::Succeeded)
    }

    /// Captured minus refunded and refunds in flight.
    pub fn refundable(&self) -> i64 {
        let committed: i64 = self
            .refunds
            .iter()
            .filter(|refund| refund.status != AttemptStatus::Failed)
            .map(|refund| refund.amount)
            .sum();
        self.amount_received - committed
    }

    fn status_without_payment_method(&self) -> IntentStatus {
        if self.payment_method.is_some() {
            IntentStatus::RequiresConfirmation
        } else {
            IntentStatus::RequiresPaymentMethod
        }
    }

    fn charge_mut(&mut self, charge_id: &str) -> Option<&mut Charge> {
        self.charges
            .iter_mut()
            .find(|charge| charge.id == charge_id)
    }

    fn refund_mut(&mut self, refund_id: &str) -> Option<&mut Refund> {
        self.refunds
            .iter_mut()
            .find(|refund| refund.id == refund_id)
    }

    fn unexpected(&self, action: &'static str) -> PaymentIntentError {
        PaymentIntentError::UnexpectedState {
            action,
            status: self.status.as_str(),
        }
    }
}

fn valid_amount(money: &Money) -> Result<(), PaymentIntentError> {
    if money.amount_minor < 1 || money.amount_minor > MAX_AMOUNT_MINOR {
        return Err(PaymentIntentError::InvalidAmount);
    }
    Ok(())
}

impl Aggregate for PaymentIntent {
    const TYPE: &'static str = "payment_intent";
    type Command = PaymentIntentCommand;
    type Event = PaymentIntentEvent;
    type Error = PaymentIntentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use PaymentIntentEvent as Event;
        if !matches!(command, PaymentIntentCommand::Create(_)) && !self.exists() {
            return Err(PaymentIntentError::NotFound);
        }
        match command {
            PaymentIntentCommand::Create(new) => {
                if self.exists() {
                    return Err(PaymentIntentError::AlreadyExists);
                }
                valid_amount(&new.amount)?;
                sink.write(
                    Event::PaymentIntentCreated {
                        payment_intent_id: new.payment_intent_id,
                        livemode: new.livemode,
                        amount: new.amount,
                        customer: new.customer,
                        payment_method: new.payment_method,
                        capture_method: new.capture_method,
                        description: new.description,
                        receipt_email: new.receipt_email,
                        metadata: new.metadata,
                        created: new.at,
                        invoice: new.invoice,
                    },
                    self,
                )
                .await;
            }
            PaymentIntentCommand::Update { changes, at } => {
                if !matches!(
                    self.status,
                    IntentStatus::RequiresPaymentMethod
                        | IntentStatus::RequiresConfirmation
                        | IntentStatus::RequiresAction
                ) && (changes.amount.is_some()
                    || changes.payment_method.is_some()
                    || changes.capture_method.is_some())
                {
                    return Err(self.unexpected("update"));
                }
                if let Some(amount) = &changes.amount {
                    valid_amount(amount)?;
                }
                sink.write(Event::PaymentIntentUpdated { changes, at }, self)
                    .await;
            }
            PaymentIntentCommand::Confirm {
                payment_method,
                charge_id,
                transaction_unique,
                at,
            } => {
                if !matches!(
                    self.status,
                    IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation
                ) {
                    return Err(self.unexpected("confirm"));
                }
                let payment_method = payment_method
                    .or_else(|| self.payment_method.clone())
                    .ok_or(PaymentIntentError::MissingPaymentMethod)?;
                let amount = self.amount;
                sink.write(
                    Event::PaymentIntentConfirmed {
                        payment_method: payment_method.clone(),
                        at,
                    },
                    self,
                )
                .await;
                sink.write(
                    Event::ChargeAttemptStarted {
                        charge_id,
                        transaction_unique,
                        amount,
                        payment_method,
                        at,
                    },
                    self,
                )
                .await;
            }
            PaymentIntentCommand::RecordChargeOutcome {
                charge_id,
                outcome,
                at,
            } => {
                let charge = self
                    .charges
                    .iter()
                    .find(|charge| charge.id == charge_id)
                    .ok_or_else(|| PaymentIntentError::UnknownCharge(charge_id.clone()))?;
                if charge.status != AttemptStatus::Pending {
                    // Already resolved (by the request or by recovery): recording it again
                    // is a no-op, never a second effect.
                    return Ok(());
                }
                let amount = charge.amount;
                let payment_method = charge.payment_method.clone();
                let event = match outcome {
                    ChargeOutcome::Approved {
                        gateway_token,
                        authorization_code,
                    } => match self.capture_method {
                        CaptureMethod::Automatic => Event::ChargeSucceeded {
                            charge_id,
                            gateway_token,
                            authorization_code,
                            amount,
                            at,
                        },
                        CaptureMethod::Manual => Event::ChargeAuthorized {
                            charge_id,
                            gateway_token,
                            authorization_code,
                            amount,
                            at,
                        },
                    },
                    ChargeOutcome::Declined {
                        code,
                        decline_code,
                        message,
                    } => Event::ChargeFailed {
                        error: PaymentError {
                            code,
                            decline_code,
                            message,
                            charge: charge_id.clone(),
                            payment_method,
                        },
                        charge_id,
                        at,
                    },
                    ChargeOutcome::RequiresAction {
                        redirect_url,
                        authentication_reference,
                        challenge_url,
                        challenge_fields,
                    } => {
                        if self.status == IntentStatus::RequiresAction {
                            return Ok(());
                        }
                        Event::ChargeRequiresAction {
                            charge_id,
                            next_action: NextAction {
                                redirect_url,
                                authentication_reference,
                                challenge_url,
                                challenge_fields,
                            },
                            at,
                        }
                    }
                };
                sink.write(event, self).await;
            }
            PaymentIntentCommand::Capture { amount, at } => {
                if self.status != IntentStatus::RequiresCapture {
                    return Err(self.unexpected("capture"));
                }
                if amount < 1 || amount > self.amount_capturable {
                    return Err(PaymentIntentError::InvalidCaptureAmount {
                        authorized: self.amount_capturable,
                    });
                }
                let charge_id = self
                    .successful_charge()
                    .map(|charge| charge.id.clone())
                    .ok_or_else(|| self.unexpected("capture"))?;
                sink.write(
                    Event::PaymentIntentCaptured {
                        charge_id,
                        amount_captured: amount,
                        at,
                    },
                    self,
                )
                .await;
            }
            PaymentIntentCommand::Cancel { reason, at } => {
                if matches!(
                    self.status,
                    IntentStatus::Processing | IntentStatus::Succeeded | IntentStatus::Canceled
                ) {
                    return Err(self.unexpected("cancel"));
                }
                sink.write(Event::PaymentIntentCanceled { reason, at }, self)
                    .await;
            }
            PaymentIntentCommand::StartRefund {
                refund_id,
                amount,
                reason,
                transaction_unique,
                metadata,
                at,
            } => {
                let charge_id = match (self.status, self.successful_charge()) {
                    (IntentStatus::Succeeded, Some(charge)) => charge.id.clone(),
                    _ => return Err(self.unexpected("refund")),
                };
                let available = self.refundable();
                let amount = amount.unwrap_or(available);
                if amount < 1 || amount > available {
                    return Err(PaymentIntentError::OverRefund {
                        requested: amount,
                        available,
                    });
                }
                sink.write(
                    Event::RefundStarted {
                        refund_id,
                        charge_id,
                        amount,
                        reason,
                        transaction_unique,
                        metadata,
                        at,
                    },
                    self,
                )
                .await;
            }
            PaymentIntentCommand::RecordRefundOutcome {
                refund_id,
                succeeded,
                failure_reason,
                at,
            } => {
                let refund = self
                    .refunds
                    .iter()
                    .find(|refund| refund.id == refund_id)
                    .ok_or_else(|| PaymentIntentError::UnknownRefund(refund_id.clone()))?;
                if refund.status != AttemptStatus::Pending {
                    return Ok(());
                }
                let event = if succeeded {
                    Event::RefundSucceeded { refund_id, at }
                } else {
                    Event::RefundFailed {
                        refund_id,
                        failure_reason,
                        at,
                    }
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use PaymentIntentEvent as Event;
        match event {
            Event::PaymentIntentCreated {
                payment_intent_id,
                livemode,
                amount,
                customer,
                payment_method,
                capture_method,
                description,
                receipt_email,
                metadata,
                created,
                invoice,
            } => {
                self.id = payment_intent_id;
                self.invoice = invoice;
                self.livemode = livemode;
                self.amount = amount;
                self.customer = customer;
                self.payment_method = payment_method;
                self.capture_method = capture_method;
                self.description = description;
                self.receipt_email = receipt_email;
                self.metadata = metadata;
                self.created = created;
                self.status = self.status_without_payment_method();
            }
            Event::PaymentIntentUpdated { changes, .. } => {
                if let Some(amount) = changes.amount {
                    self.amount = amount;
                }
                if let Some(customer) = changes.customer {
                    self.customer = customer;
                }
                if let Some(payment_method) = changes.payment_method {
                    self.payment_method = payment_method;
                }
                if let Some(description) = changes.description {
                    self.description = description;
                }
                if let Some(receipt_email) = changes.receipt_email {
                    self.receipt_email = receipt_email;
                }
                if let Some(capture_method) = changes.capture_method {
                    self.capture_method = capture_method;
                }
                crate::customer::apply_metadata_changes(
                    &mut self.metadata,
                    &changes.metadata,
                    false,
                );
                if matches!(
                    self.status,
                    IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation
                ) {
                    self.status = self.status_without_payment_method();
                }
            }
            Event::PaymentIntentConfirmed { payment_method, .. } => {
                self.payment_method = Some(payment_method);
                self.last_payment_error = None;
            }
            Event::ChargeAttemptStarted {
                charge_id,
                transaction_unique,
                amount,
                payment_method,
                at,
            } => {
                self.charges.push(Charge {
                    id: charge_id,
                    transaction_unique,
                    amount,
                    payment_method,
                    status: AttemptStatus::Pending,
                    captured: false,
                    amount_captured: 0,
                    amount_refunded: 0,
                    gateway_token: None,
                    authorization_code: None,
                    failure_code: None,
                    failure_message: None,
                    decline_code: None,
                    created: at,
                });
                self.status = IntentStatus::Processing;
            }
            Event::ChargeRequiresAction { next_action, .. } => {
                self.next_action = Some(next_action);
                self.status = IntentStatus::RequiresAction;
            }
            Event::ChargeSucceeded {
                charge_id,
                gateway_token,
                authorization_code,
                amount,
                ..
            } => {
                if let Some(charge) = self.charge_mut(&charge_id) {
                    charge.status = AttemptStatus::Succeeded;
                    charge.captured = true;
                    charge.amount_captured = amount.amount_minor;
                    charge.gateway_token = Some(gateway_token);
                    charge.authorization_code = authorization_code;
                }
                self.amount_received = amount.amount_minor;
                self.amount_capturable = 0;
                self.next_action = None;
                self.status = IntentStatus::Succeeded;
            }
            Event::ChargeAuthorized {
                charge_id,
                gateway_token,
                authorization_code,
                amount,
                ..
            } => {
                if let Some(charge) = self.charge_mut(&charge_id) {
                    charge.status = AttemptStatus::Succeeded;
                    charge.gateway_token = Some(gateway_token);
                    charge.authorization_code = authorization_code;
                }
                self.amount_capturable = amount.amount_minor;
                self.next_action = None;
                self.status = IntentStatus::RequiresCapture;
            }
            Event::ChargeFailed {
                charge_id, error, ..
            } => {
                if let Some(charge) = self.charge_mut(&charge_id) {
                    charge.status = AttemptStatus::Failed;
                    charge.failure_code = Some(error.code.clone());
                    charge.failure_message = Some(error.message.clone());
                    charge.decline_code = error.decline_code.clone();
                }
                self.last_payment_error = Some(error);
                self.next_action = None;
                self.payment_method = None;
                self.status = IntentStatus::RequiresPaymentMethod;
            }
            Event::PaymentIntentCaptured {
                charge_id,
                amount_captured,
                ..
            } => {
                if let Some(charge) = self.charge_mut(&charge_id) {
                    charge.captured = true;
                    charge.amount_captured = amount_captured;
                }
                self.amount_received = amount_captured;
                self.amount_capturable = 0;
                self.status = IntentStatus::Succeeded;
            }
            Event::PaymentIntentCanceled { reason, at } => {
                self.canceled_at = Some(at);
                self.cancellation_reason = reason;
                self.amount_capturable = 0;
                self.next_action = None;
                self.status = IntentStatus::Canceled;
            }
            Event::RefundStarted {
                refund_id,
                charge_id,
                amount,
                reason,
                transaction_unique,
                metadata,
                at,
            } => self.refunds.push(Refund {
                id: refund_id,
                charge: charge_id,
                amount,
                status: AttemptStatus::Pending,
                reason,
                transaction_unique,
                failure_reason: None,
                metadata,
                created: at,
            }),
            Event::RefundSucceeded { refund_id, .. } => {
                let mut refunded = None;
                if let Some(refund) = self.refund_mut(&refund_id) {
                    refund.status = AttemptStatus::Succeeded;
                    refunded = Some((refund.charge.clone(), refund.amount));
                }
                if let Some((charge_id, amount)) = refunded {
                    if let Some(charge) = self.charge_mut(&charge_id) {
                        charge.amount_refunded += amount;
                    }
                }
            }
            Event::RefundFailed {
                refund_id,
                failure_reason,
                ..
            } => {
                if let Some(refund) = self.refund_mut(&refund_id) {
                    refund.status = AttemptStatus::Failed;
                    refund.failure_reason = failure_reason;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use cqrs_es::test::TestFramework;

    type IntentTest = TestFramework<PaymentIntent>;

    fn gbp(amount: i64) -> Money {
        Money::new(amount, Currency::GBP).unwrap()
    }

    fn created(capture_method: CaptureMethod) -> PaymentIntentEvent {
        PaymentIntentEvent::PaymentIntentCreated {
            payment_intent_id: "pi_1".into(),
            livemode: false,
            amount: gbp(2_000),
            customer: Some("cus_1".into()),
            payment_method: Some("pm_1".into()),
            capture_method,
            description: None,
            receipt_email: None,
            metadata: Metadata::new(),
            created: 1,
            invoice: None,
        }
    }

    fn confirmed() -> Vec<PaymentIntentEvent> {
        vec![
            PaymentIntentEvent::PaymentIntentConfirmed {
                payment_method: "pm_1".into(),
                at: 2,
            },
            PaymentIntentEvent::ChargeAttemptStarted {
                charge_id: "ch_1".into(),
                transaction_unique: "tu_1".into(),
                amount: gbp(2_000),
                payment_method: "pm_1".into(),
                at: 2,
            },
        ]
    }

    fn succeeded() -> PaymentIntentEvent {
        PaymentIntentEvent::ChargeSucceeded {
            charge_id: "ch_1".into(),
            gateway_token: "xref".into(),
            authorization_code: None,
            amount: gbp(2_000),
            at: 3,
        }
    }

    fn history(extra: Vec<PaymentIntentEvent>) -> Vec<PaymentIntentEvent> {
        let mut events = vec![created(CaptureMethod::Automatic)];
        events.extend(confirmed());
        events.extend(extra);
        events
    }

    #[test]
    fn confirm_records_the_attempt_before_any_outcome() {
        IntentTest::with(())
            .given(vec![created(CaptureMethod::Automatic)])
            .when(PaymentIntentCommand::Confirm {
                payment_method: None,
                charge_id: "ch_1".into(),
                transaction_unique: "tu_1".into(),
                at: 2,
            })
            .then_expect_events(confirmed());
    }

    #[test]
    fn an_outcome_recorded_twice_has_one_effect() {
        IntentTest::with(())
            .given(history(vec![succeeded()]))
            .when(PaymentIntentCommand::RecordChargeOutcome {
                charge_id: "ch_1".into(),
                outcome: ChargeOutcome::Approved {
                    gateway_token: "xref".into(),
                    authorization_code: None,
                },
                at: 4,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_processing_or_succeeded_intent_cannot_be_confirmed_again() {
        IntentTest::with(())
            .given(history(vec![]))
            .when(PaymentIntentCommand::Confirm {
                payment_method: None,
                charge_id: "ch_2".into(),
                transaction_unique: "tu_2".into(),
                at: 3,
            })
            .then_expect_error(PaymentIntentError::UnexpectedState {
                action: "confirm",
                status: "processing",
            });
    }

    #[test]
    fn a_decline_returns_to_requires_payment_method_with_the_error() {
        let mut intent = PaymentIntent::default();
        for event in history(vec![PaymentIntentEvent::ChargeFailed {
            charge_id: "ch_1".into(),
            error: PaymentError {
                code: "card_declined".into(),
                decline_code: Some("insufficient_funds".into()),
                message: "Your card has insufficient funds.".into(),
                charge: "ch_1".into(),
                payment_method: "pm_1".into(),
            },
            at: 3,
        }]) {
            intent.apply(event);
        }
        assert_eq!(intent.status, IntentStatus::RequiresPaymentMethod);
        assert_eq!(
            intent
                .last_payment_error
                .as_ref()
                .and_then(|e| e.decline_code.as_deref()),
            Some("insufficient_funds")
        );
        assert_eq!(intent.payment_method, None);
    }

    #[test]
    fn manual_capture_holds_then_captures_partially() {
        let mut events = vec![created(CaptureMethod::Manual)];
        events.extend(confirmed());
        events.push(PaymentIntentEvent::ChargeAuthorized {
            charge_id: "ch_1".into(),
            gateway_token: "xref".into(),
            authorization_code: None,
            amount: gbp(2_000),
            at: 3,
        });
        IntentTest::with(())
            .given(events.clone())
            .when(PaymentIntentCommand::Capture {
                amount: 2_001,
                at: 4,
            })
            .then_expect_error(PaymentIntentError::InvalidCaptureAmount { authorized: 2_000 });
        let mut intent = PaymentIntent::default();
        events.push(PaymentIntentEvent::PaymentIntentCaptured {
            charge_id: "ch_1".into(),
            amount_captured: 1_500,
            at: 4,
        });
        for event in events {
            intent.apply(event);
        }
        assert_eq!(intent.status, IntentStatus::Succeeded);
        assert_eq!(intent.amount_received, 1_500);
        assert_eq!(intent.amount_capturable, 0);
    }

    #[test]
    fn refunds_never_exceed_what_was_received() {
        let refund_started = PaymentIntentEvent::RefundStarted {
            refund_id: "re_1".into(),
            charge_id: "ch_1".into(),
            amount: 1_500,
            reason: None,
            transaction_unique: "tu_r1".into(),
            metadata: Metadata::new(),
            at: 5,
        };
        IntentTest::with(())
            .given(history(vec![succeeded(), refund_started]))
            .when(PaymentIntentCommand::StartRefund {
                refund_id: "re_2".into(),
                amount: Some(501),
                reason: None,
                transaction_unique: "tu_r2".into(),
                metadata: Metadata::new(),
                at: 6,
            })
            .then_expect_error(PaymentIntentError::OverRefund {
                requested: 501,
                available: 500,
            });
        IntentTest::with(())
            .given(history(vec![]))
            .when(PaymentIntentCommand::StartRefund {
                refund_id: "re_1".into(),
                amount: None,
                reason: None,
                transaction_unique: "tu_r1".into(),
                metadata: Metadata::new(),
                at: 6,
            })
            .then_expect_error(PaymentIntentError::UnexpectedState {
                action: "refund",
                status: "processing",
            });
    }

    #[test]
    fn a_failed_refund_frees_its_amount_again() {
        let mut intent = PaymentIntent::default();
        for event in history(vec![
            succeeded(),
            PaymentIntentEvent::RefundStarted {
                refund_id: "re_1".into(),
                charge_id: "ch_1".into(),
                amount: 2_000,
                reason: None,
                transaction_unique: "tu_r1".into(),
                metadata: Metadata::new(),
                at: 5,
            },
        ]) {
            intent.apply(event);
        }
        assert_eq!(intent.refundable(), 0);
        intent.apply(PaymentIntentEvent::RefundFailed {
            refund_id: "re_1".into(),
            failure_reason: None,
            at: 6,
        });
        assert_eq!(intent.refundable(), 2_000);
    }
}
