//! Payments through the card gateway: tokenising cards, charging with exactly-once
//! semantics, capture, cancel, refund, and resolving attempts a crash left open.
//!
//! The rule that makes charging exactly-once: the attempt (with the gateway's
//! `transactionUnique`) is committed as an event *before* the gateway is called, no database
//! transaction is open while the gateway works, and the outcome is committed after. Any
//! later caller (a retried request, the recovery worker) that finds the attempt open asks the
//! gateway what happened to that `transactionUnique` instead of charging again. Recording an
//! outcome twice is a no-op in the aggregate.

use cardstream::{
    CaptureMode, CardDetails, Client, ClientError, CustomerDetails, GatewayResponse, Outcome,
    PaymentSource, SaleRequest, StoredCardAgreement, ThreeDSecure, VerifyRequest,
};
use cqrs_es::Aggregate;
use domain::customer::Metadata;
use domain::payment_intent::{
    CaptureMethod, ChargeOutcome, IntentStatus, NewIntent, PaymentIntent, PaymentIntentCommand,
    PaymentIntentError,
};
use domain::payment_method::{
    BillingDetails, CardSummary, PaymentMethod, PaymentMethodCommand, PaymentMethodError,
};
use event_store::store::AsOf;
use event_store::{EventMetadata, Mode};

use crate::execute::{
    CommandBus, CommandError, ExecuteError, Executed, InTransaction, NoExtraWork,
};
use crate::ids;
use crate::unit::{back_off, Known, UnitError, MAX_UNIT_ATTEMPTS};

/// The gateway clients by mode. Test keys never reach the live gateway: the test client
/// points at the simulator (or Cardstream's test account), the live one is optional.
#[derive(Clone)]
pub struct Gateways {
    pub test: Client,
    pub live: Option<Client>,
    /// Where the cardholder's browser comes back to us (3-D Secure), e.g.
    /// `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Test-only fault injection: abort the process right after the gateway approved a
    /// charge and before the outcome is recorded (the exactly-once crash test).
    pub crash_after_approval: bool,
    /// Test-only fault injection: abort the process at this point of a hosted checkout's
    /// return (the checkout crash test).
    pub crash_in_checkout_return: Option<CheckoutFault>,
}

/// Where a hosted checkout's return may be made to crash (tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutFault {
    /// The gateway's result is accepted (committed); nothing else is recorded.
    AfterAccept,
    /// The payment (or the card and subscription) is recorded; the session is not complete.
    BeforeComplete,
}

impl Gateways {
    fn for_mode(&self, livemode: bool) -> Result<&Client, PaymentError> {
        if livemode {
            self.live.as_ref().ok_or(PaymentError::LiveNotConfigured)
        } else {
            Ok(&self.test)
        }
    }
}

/// Who is acting, for the events' metadata and for scoping.
#[derive(Debug, Clone)]
pub struct Actor {
    pub project: String,
    pub livemode: bool,
    pub actor: String,
    pub request_id: String,
    pub idempotency_key: Option<String>,
}

impl Actor {
    pub fn metadata(&self) -> EventMetadata {
        let mode = if self.livemode {
            Mode::Live
        } else {
            Mode::Test
        };
        EventMetadata::new(&self.project, mode, &self.actor)
            .with_request(&self.request_id)
            .with_idempotency_key(self.idempotency_key.clone())
    }
}

/// Card details as they arrive: typed by a customer, or one of Stripe's test tokens.
pub enum CardInput {
    Number {
        number: String,
        exp_month: u8,
        exp_year: u16,
        cvc: Option<String>,
    },
    /// `pm_card_visa` and friends (test mode only).
    TestToken(String),
}

impl std::fmt::Debug for CardInput {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print a card number or CVC, not even in a debug log.
            CardInput::Number { .. } => formatter.write_str("CardInput::Number(<redacted>)"),
            CardInput::TestToken(token) => write!(formatter, "CardInput::TestToken({token})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("No such {kind}: '{id}'")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    InvalidCard(String),
    #[error("{message}")]
    CardDeclined {
        code: String,
        decline_code: Option<String>,
        message: String,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("live mode has no gateway credentials configured; refusing to charge")]
    LiveNotConfigured,
    #[error("the card gateway failed: {0}")]
    Gateway(String),
    /// The gateway may have acted but we could not learn the outcome; the attempt stays
    /// open and the recovery worker resolves it.
    #[error("the outcome of the gateway request is not known yet")]
    OutcomeUnknown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl<E: std::error::Error> From<CommandError<E>> for PaymentError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(rule) => PaymentError::InvalidRequest(rule.to_string()),
            other => PaymentError::Internal(other.to_string()),
        }
    }
}

/// What [`PaymentService::create_and_confirm`] did.
pub enum Together<T, W> {
    /// Created, confirmed, charged and the outcome recorded.
    Done(Box<Executed<PaymentIntent, T>>),
    /// Nothing written: create, then confirm with this card (resolved, if it could be) and
    /// this final step.
    Separately {
        final_step: W,
        payment_method: Option<String>,
    },
}

/// The final step's own failure (an idempotency record that could not be written, say).
#[derive(Debug, thiserror::Error)]
pub enum FinalStepError<X> {
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error("the step committed with the command failed")]
    Step(X),
}

impl<X: std::fmt::Display> FinalStepError<X> {
    /// The error as a payment error, the step's own failure counting as internal (for
    /// callers with no step of their own, or none the client could act on).
    pub fn into_payment_error(self) -> PaymentError {
        match self {
            FinalStepError::Payment(error) => error,
            FinalStepError::Step(error) => PaymentError::Internal(error.to_string()),
        }
    }
}

fn from_execute<E: std::error::Error, X>(error: ExecuteError<E, X>) -> FinalStepError<X> {
    match error {
        ExecuteError::Command(command) => FinalStepError::Payment(command.into()),
        ExecuteError::Extra(extra) => FinalStepError::Step(extra),
    }
}

fn gateway_error(error: ClientError) -> PaymentError {
    if error.is_outcome_unknown() {
        PaymentError::OutcomeUnknown
    } else {
        PaymentError::Gateway(error.to_string())
    }
}

/// Cardstream's numeric currency code (`currencyCode=826`).
fn currency_code(intent: &PaymentIntent) -> String {
    intent.amount.currency.numeric_code().to_string()
}

fn non_negative(amount: i64) -> u64 {
    u64::try_from(amount).unwrap_or(0)
}

/// What a refund asks for; `refund_id` is chosen by the caller so it can render the
/// refund in the same transaction as its outcome.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub refund_id: String,
    /// `None`: everything still refundable.
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub metadata: Metadata,
}

#[derive(Clone)]
pub struct PaymentService {
    bus: CommandBus,
    gateways: Gateways,
}

impl PaymentService {
    pub fn new(bus: CommandBus, gateways: Gateways) -> Self {
        Self { bus, gateways }
    }

    pub fn bus(&self) -> &CommandBus {
        &self.bus
    }

    /// Where browsers reach this server (hosted pages, 3-D Secure returns).
    pub fn public_url(&self) -> &str {
        &self.gateways.public_url
    }

    /// The gateway client of a mode (the hosted checkout builds its signed forms with it).
    pub fn gateway(&self, livemode: bool) -> Result<&Client, PaymentError> {
        self.gateways.for_mode(livemode)
    }

    /// Test-only: aborts the process if it was told to crash at `point` of a hosted
    /// checkout's return.
    pub fn fault_point(&self, point: CheckoutFault) {
        if self.gateways.crash_in_checkout_return == Some(point) {
            tracing::error!(?point, "fault injection: aborting in a checkout return");
            std::process::abort();
        }
    }

    /// Records a sale the cardholder already made on the gateway's hosted payment page: the
    /// intent, its attempt (named by the hosted request's `transactionUnique`) and the
    /// approved outcome, with what it means for billing, in one transaction.
    pub async fn record_hosted_sale(
        &self,
        actor: &Actor,
        intent: NewIntent,
        transaction_unique: &str,
        outcome: ChargeOutcome,
    ) -> Result<Vec<event_store::store::Appended>, PaymentError> {
        let intent_id = intent.payment_intent_id.clone();
        let charge_id = ids::new_id("ch");
        let at = intent.at;
        let rule = |error: PaymentIntentError| PaymentError::InvalidRequest(error.to_string());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut unit = self.bus.unit(&actor.metadata()).await?;
            unit.decide::<PaymentIntent>(&intent_id, PaymentIntentCommand::Create(intent.clone()))
                .await?
                .map_err(rule)?;
            unit.decide::<PaymentIntent>(
                &intent_id,
                PaymentIntentCommand::Confirm {
                    payment_method: intent.payment_method.clone(),
                    charge_id: charge_id.clone(),
                    transaction_unique: transaction_unique.to_string(),
                    at,
                },
            )
            .await?
            .map_err(rule)?;
            let events = unit
                .decide::<PaymentIntent>(
                    &intent_id,
                    PaymentIntentCommand::RecordChargeOutcome {
                        charge_id: charge_id.clone(),
                        outcome: outcome.clone(),
                        at,
                    },
                )
                .await?
                .map_err(rule)?;
            let state = unit.load::<PaymentIntent>(&intent_id).await?.clone();
            crate::billing::react_to_intent(&mut unit, &state, &events).await?;
            match unit.commit().await {
                Ok(appended) => return Ok(appended),
                Err(UnitError::Conflict) if attempt < MAX_UNIT_ATTEMPTS => back_off(attempt).await,
                Err(error) => return Err(PaymentError::from(error)),
            }
        }
    }

    /// Loads an aggregate of this project and mode; anything else is "not found", so one
    /// project can never see or touch another's.
    pub async fn load_owned<A: Aggregate>(
        &self,
        actor: &Actor,
        kind: &'static str,
        id: &str,
    ) -> Result<(A, i64), PaymentError> {
        let events = self
            .bus
            .store()
            .load_stream(A::TYPE, id, AsOf::Now)
            .await
            .map_err(|error| PaymentError::Internal(error.to_string()))?;
        let owner = events
            .first()
            .and_then(|event| event.metadata().ok())
            .filter(|metadata| {
                metadata.project == actor.project
                    && metadata
                        .mode
                        .is_some_and(|mode| mode.is_live() == actor.livemode)
            });
        if owner.is_none() {
            return Err(PaymentError::NotFound {
                kind,
                id: id.to_string(),
            });
        }
        Ok(self.bus.fold::<A>(&events)?)
    }

    /// The project and mode that own a stream (from its first event), if it exists. For
    /// browser-facing pages, which reach an object by its unguessable id instead of a key.
    pub async fn owner_of<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Option<(String, bool)>, PaymentError> {
        let events = self
            .bus
            .store()
            .load_stream(A::TYPE, id, AsOf::Now)
            .await
            .map_err(|error| PaymentError::Internal(error.to_string()))?;
        Ok(events
            .first()
            .and_then(|event| event.metadata().ok())
            .map(|metadata| (metadata.project, metadata.mode.is_some_and(Mode::is_live))))
    }

    /// Tokenises a card with the gateway (`VERIFY`) and records the payment method. Only
    /// brand, last 4, expiry and a fingerprint are kept.
    pub async fn create_card_payment_method<W>(
        &self,
        actor: &Actor,
        card: CardInput,
        billing_details: BillingDetails,
        metadata: Metadata,
        final_step: W,
    ) -> Result<Executed<PaymentMethod, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentMethod>,
    {
        let (details, fingerprint) = match card {
            CardInput::Number {
                number,
                exp_month,
                exp_year,
                cvc,
            } => (
                CardDetails::new(&number, exp_month, exp_year, cvc.as_deref())
                    .map_err(|error| PaymentError::InvalidCard(error.to_string()))?,
                card_fingerprint(&actor.project, &number),
            ),
            CardInput::TestToken(token) => {
                if actor.livemode {
                    return Err(PaymentError::NotFound {
                        kind: "payment_method",
                        id: token,
                    }
                    .into());
                }
                let test_card = cardstream::test_cards::for_payment_method(&token).ok_or(
                    PaymentError::NotFound {
                        kind: "payment_method",
                        id: token.clone(),
                    },
                )?;
                (
                    CardDetails::new(test_card.number, 12, 2034, Some(test_card.cvv))
                        .map_err(|error| PaymentError::InvalidCard(error.to_string()))?,
                    card_fingerprint(&actor.project, test_card.number),
                )
            }
        };
        let gateway = self.gateways.for_mode(actor.livemode)?;
        let response = gateway
            .verify(&VerifyRequest {
                card: details.clone(),
                currency_code: "826".into(),
                transaction_unique: ids::new_id("tu"),
                order_ref: None,
                customer: CustomerDetails {
                    name: billing_details.name.clone(),
                    email: billing_details.email.clone(),
                    phone: billing_details.phone.clone(),
                    postcode: billing_details.postal_code.clone(),
                    ..CustomerDetails::default()
                },
                three_d_secure: ThreeDSecure::Skip,
                agreement: Some(StoredCardAgreement::CardOnFile),
            })
            .await
            .map_err(gateway_error)?;
        let token = match response.outcome() {
            Outcome::Approved => response
                .xref()
                .map(str::to_string)
                .ok_or_else(|| PaymentError::Gateway("VERIFY approved without an xref".into()))?,
            Outcome::Declined(decline) => {
                return Err(PaymentError::CardDeclined {
                    code: "card_declined".into(),
                    decline_code: Some(decline.decline_code.to_string()),
                    message: "Your card was declined.".into(),
                }
                .into())
            }
            other => return Err(PaymentError::Gateway(format!("VERIFY answered {other:?}")).into()),
        };
        let card = CardSummary {
            brand: details.brand().stripe_brand().to_string(),
            last4: details.last4().to_string(),
            exp_month: details.expiry_month(),
            exp_year: 2000 + u16::from(details.expiry_year_two_digits()),
            funding: "credit".into(),
            fingerprint,
        };
        let payment_method_id = ids::new_id("pm");
        self.bus
            .execute_with::<PaymentMethod, W>(
                &payment_method_id,
                PaymentMethodCommand::Create {
                    payment_method_id: payment_method_id.clone(),
                    livemode: actor.livemode,
                    card,
                    gateway_token: token,
                    billing_details,
                    metadata,
                    at: chrono::Utc::now().timestamp(),
                },
                &(),
                &actor.metadata(),
                final_step,
            )
            .await
            .map_err(from_execute)
    }

    /// A payment method id as the API receives it: an existing `pm_…` of this project, or
    /// (test mode) a Stripe test token, which becomes a new payment method as at Stripe.
    pub async fn resolve_payment_method(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<PaymentMethod, PaymentError> {
        if id.starts_with("pm_card_") && !actor.livemode {
            let created = self
                .create_card_payment_method(
                    actor,
                    CardInput::TestToken(id.to_string()),
                    BillingDetails::default(),
                    Metadata::new(),
                    NoExtraWork,
                )
                .await
                .map_err(FinalStepError::into_payment_error)?;
            return Ok(created.aggregate);
        }
        let (method, _) = self
            .load_owned::<PaymentMethod>(actor, "payment_method", id)
            .await?;
        Ok(method)
    }

    /// Creates an intent and confirms it (`confirm=true` on create) with the intent's
    /// creation, confirmation and attempt in one transaction: one commit fewer than
    /// [`Self::confirm`] after a separate create, and no stream read twice. Only the plain
    /// case is taken together: when the card cannot be resolved or used as asked, or the
    /// intent exists already (a retry of a request that crashed half-way), nothing is written
    /// and the caller creates and confirms in two steps ([`Together::Separately`]), which
    /// answers those cases as it always has.
    pub async fn create_and_confirm<W>(
        &self,
        actor: &Actor,
        new: NewIntent,
        off_session: bool,
        final_step: W,
    ) -> Result<Together<W::Output, W>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        let requested = new.payment_method.clone();
        let Some(method) = requested.as_deref() else {
            return Ok(Together::Separately {
                final_step,
                payment_method: requested,
            });
        };
        let Ok(method) = self.resolve_payment_method(actor, method).await else {
            return Ok(Together::Separately {
                final_step,
                payment_method: requested,
            });
        };
        let separately = |final_step| {
            Ok(Together::Separately {
                final_step,
                payment_method: Some(method.id.clone()),
            })
        };
        let belongs_elsewhere = matches!(
            (&method.customer, &new.customer),
            (Some(owner), Some(customer)) if owner != customer
        );
        if !method.usable() || belongs_elsewhere {
            return separately(final_step);
        }
        let intent_id = new.payment_intent_id.clone();
        let at = new.at;
        let mut unit = self
            .bus
            .unit(&actor.metadata())
            .await
            .map_err(PaymentError::from)?;
        unit.begin_new::<PaymentIntent>(&intent_id)
            .map_err(PaymentError::from)?;
        let confirm = PaymentIntentCommand::Confirm {
            payment_method: Some(method.id.clone()),
            charge_id: ids::new_id("ch"),
            transaction_unique: ids::new_id("tu"),
            at,
        };
        for command in [PaymentIntentCommand::Create(new), confirm] {
            let decided = unit
                .decide::<PaymentIntent>(&intent_id, command)
                .await
                .map_err(PaymentError::from)?;
            if decided.is_err() {
                return separately(final_step);
            }
        }
        let intent = unit
            .load::<PaymentIntent>(&intent_id)
            .await
            .map_err(PaymentError::from)?
            .clone();
        let known = match unit.commit_keeping().await {
            Ok((_, known)) => known,
            // The stream exists already: a retry of this key's request.
            Err(UnitError::Conflict) => return separately(final_step),
            Err(error) => return Err(PaymentError::from(error).into()),
        };
        let gateway = self.gateways.for_mode(actor.livemode)?;
        let outcome = self
            .send_attempt(gateway, &intent, &method, off_session)
            .await?;
        self.record_outcome_knowing(actor, &intent, outcome, final_step, known, Some(&method))
            .await
            .map(|executed| Together::Done(Box::new(executed)))
    }

    /// Confirms an intent: records the attempt, charges, records the outcome (with
    /// `final_step` in the outcome's transaction). An intent already processing an attempt
    /// resumes that attempt instead of starting another.
    pub async fn confirm<W>(
        &self,
        actor: &Actor,
        intent_id: &str,
        payment_method: Option<String>,
        off_session: bool,
        final_step: W,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        let (mut intent, _) = self
            .load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        // An attempt this call starts cannot have reached the gateway yet; one it resumes may.
        let resumed = intent.status == IntentStatus::Processing;
        if !resumed {
            let method_id = payment_method
                .or_else(|| intent.payment_method.clone())
                .ok_or(PaymentError::InvalidRequest(
                    PaymentIntentError::MissingPaymentMethod.to_string(),
                ))?;
            let method = self.resolve_payment_method(actor, &method_id).await?;
            if !method.usable() {
                return Err(
                    PaymentError::InvalidRequest(PaymentMethodError::Detached.to_string()).into(),
                );
            }
            if let (Some(owner), Some(customer)) = (&method.customer, &intent.customer) {
                if owner != customer {
                    return Err(PaymentError::InvalidRequest(format!(
                        "The provided PaymentMethod belongs to another customer ({owner})."
                    ))
                    .into());
                }
            }
            let confirmed = self
                .bus
                .execute::<PaymentIntent>(
                    intent_id,
                    PaymentIntentCommand::Confirm {
                        payment_method: Some(method.id.clone()),
                        charge_id: ids::new_id("ch"),
                        transaction_unique: ids::new_id("tu"),
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                )
                .await
                .map_err(PaymentError::from)?;
            intent = confirmed.aggregate;
        }
        let outcome = self
            .charge_pending_attempt(actor, &intent, off_session, resumed)
            .await?;
        self.record_outcome(actor, &intent, outcome, final_step)
            .await
    }

    /// Sends (or, when it may already have been sent, looks up) the pending attempt.
    /// `may_have_been_sent`: the attempt was started earlier (by a request or a job that may
    /// have died after sending it), so the gateway is asked about it before anything is sent.
    async fn charge_pending_attempt(
        &self,
        actor: &Actor,
        intent: &PaymentIntent,
        off_session: bool,
        may_have_been_sent: bool,
    ) -> Result<ChargeOutcome, PaymentError> {
        let charge = intent
            .pending_charge()
            .ok_or_else(|| PaymentError::Internal("no pending attempt to charge".into()))?;
        let gateway = self.gateways.for_mode(actor.livemode)?;
        // An attempt that may have reached the gateway before: ask first, never resend blind.
        if may_have_been_sent {
            if let Some(outcome) = self
                .look_up(gateway, intent, &charge.transaction_unique)
                .await?
            {
                return Ok(outcome);
            }
        }
        let (method, _) = self
            .load_owned::<PaymentMethod>(actor, "payment_method", &charge.payment_method)
            .await?;
        self.send_attempt(gateway, intent, &method, off_session)
            .await
    }

    /// Charges a renewal's attempt that this process committed moments ago (so it was never
    /// sent), with the card the attempt names as the caller already read it.
    pub(crate) async fn charge_new_attempt(
        &self,
        actor: &Actor,
        intent: &PaymentIntent,
        method: &PaymentMethod,
    ) -> Result<ChargeOutcome, PaymentError> {
        let gateway = self.gateways.for_mode(actor.livemode)?;
        let charge = intent
            .pending_charge()
            .ok_or_else(|| PaymentError::Internal("no pending attempt to charge".into()))?;
        if charge.payment_method != method.id {
            return Err(PaymentError::Internal(
                "the attempt names another payment method".into(),
            ));
        }
        self.send_attempt(gateway, intent, method, true).await
    }

    /// Sends the intent's pending attempt to the gateway with `method`'s token.
    async fn send_attempt(
        &self,
        gateway: &Client,
        intent: &PaymentIntent,
        method: &PaymentMethod,
        off_session: bool,
    ) -> Result<ChargeOutcome, PaymentError> {
        let charge = intent
            .pending_charge()
            .ok_or_else(|| PaymentError::Internal("no pending attempt to charge".into()))?;
        let source = if off_session {
            PaymentSource::StoredCardUnscheduled {
                xref: method.gateway_token.clone(),
            }
        } else {
            PaymentSource::StoredCardCustomerPresent {
                xref: method.gateway_token.clone(),
                cvv: None,
            }
        };
        let three_d_secure = if off_session {
            ThreeDSecure::Skip
        } else {
            ThreeDSecure::Browser(cardstream::BrowserDetails {
                redirect_url: format!(
                    "{}/v1/payment_intents/{}/authenticate/return",
                    self.gateways.public_url, intent.id
                ),
                remote_address: "127.0.0.1".into(),
                user_agent: "Calmony".into(),
                accept_header: "text/html".into(),
                accept_language: "en-GB".into(),
                time_zone_offset_minutes: 0,
                screen_resolution: "1920x1080x24".into(),
                capabilities: "javascript".into(),
            })
        };
        let response = gateway
            .sale(&SaleRequest {
                source,
                amount_minor: non_negative(charge.amount.amount_minor),
                currency_code: currency_code(intent),
                transaction_unique: charge.transaction_unique.clone(),
                order_ref: Some(intent.id.clone()),
                capture: match intent.capture_method {
                    CaptureMethod::Automatic => CaptureMode::Automatic,
                    CaptureMethod::Manual => CaptureMode::Manual,
                },
                three_d_secure,
                customer: CustomerDetails::default(),
                agreement: None,
                duplicate_delay_seconds: None,
            })
            .await
            .map_err(gateway_error)?;
        let outcome = self.outcome_of(intent, &response);
        if self.gateways.crash_after_approval
            && matches!(outcome, Some(ChargeOutcome::Approved { .. }))
        {
            tracing::error!("fault injection: aborting after the gateway approved");
            std::process::abort();
        }
        match outcome {
            Some(outcome) => Ok(outcome),
            // A duplicate: the first request got through; its outcome is the answer.
            None => self
                .look_up(gateway, intent, &charge.transaction_unique)
                .await?
                .ok_or(PaymentError::OutcomeUnknown),
        }
    }

    /// The outcome of a transaction the gateway has seen, or `None` if it has not.
    async fn look_up(
        &self,
        gateway: &Client,
        intent: &PaymentIntent,
        transaction_unique: &str,
    ) -> Result<Option<ChargeOutcome>, PaymentError> {
        let response = match gateway
            .query_by_transaction_unique(transaction_unique)
            .await
        {
            Ok(response) => response,
            Err(error) => return Err(gateway_error(error)),
        };
        if matches!(response.outcome(), Outcome::Rejected { .. }) {
            // Not found: the gateway never processed it.
            return Ok(None);
        }
        Ok(self.outcome_of(intent, &response))
    }

    fn outcome_of(
        &self,
        intent: &PaymentIntent,
        response: &GatewayResponse,
    ) -> Option<ChargeOutcome> {
        match response.outcome() {
            Outcome::Approved => Some(ChargeOutcome::Approved {
                gateway_token: response.xref().unwrap_or_default().to_string(),
                authorization_code: response.authorisation_code().map(str::to_string),
            }),
            Outcome::Declined(decline) => {
                let authentication = decline.decline_code == "authentication_required";
                Some(ChargeOutcome::Declined {
                    code: if authentication {
                        "authentication_required".into()
                    } else {
                        "card_declined".into()
                    },
                    decline_code: Some(decline.decline_code.to_string()),
                    message: decline_message(decline.decline_code),
                })
            }
            Outcome::ThreeDSecureRequired(challenge) => Some(ChargeOutcome::RequiresAction {
                redirect_url: format!(
                    "{}/v1/payment_intents/{}/authenticate",
                    self.gateways.public_url, intent.id
                ),
                authentication_reference: challenge.three_ds_ref,
                challenge_url: challenge.url,
                challenge_fields: challenge.request_fields,
            }),
            Outcome::Duplicate => None,
            Outcome::Rejected { message, .. } => Some(ChargeOutcome::Declined {
                code: "processing_error".into(),
                decline_code: None,
                message: format!("An error occurred while processing your card: {message}"),
            }),
        }
    }

    async fn record_outcome<W>(
        &self,
        actor: &Actor,
        intent: &PaymentIntent,
        outcome: ChargeOutcome,
        final_step: W,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        self.record_outcome_knowing(actor, intent, outcome, final_step, Known::default(), None)
            .await
    }

    /// [`Self::record_outcome`] for a caller that committed the attempt itself moments ago:
    /// `known` holds the intent as that unit left it (not read again unless a race makes the
    /// commit retry) and `method` the card as read then (its token is refreshed only if the
    /// card would take the new one).
    async fn record_outcome_knowing<W>(
        &self,
        actor: &Actor,
        intent: &PaymentIntent,
        outcome: ChargeOutcome,
        final_step: W,
        known: Known,
        method: Option<&PaymentMethod>,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        let charge = intent
            .pending_charge()
            .ok_or_else(|| PaymentError::Internal("no pending attempt".into()))?;
        let new_token = match &outcome {
            ChargeOutcome::Approved { gateway_token, .. } if !gateway_token.is_empty() => {
                Some(gateway_token.clone())
            }
            _ => None,
        };
        let payment_method = charge.payment_method.clone();
        let at = chrono::Utc::now().timestamp();
        let executed = self
            .decide_intent_knowing(
                actor,
                &intent.id,
                PaymentIntentCommand::RecordChargeOutcome {
                    charge_id: charge.id.clone(),
                    outcome,
                    at,
                },
                final_step,
                known,
            )
            .await?;
        let new_token = new_token.filter(|token| {
            !method
                .is_some_and(|method| method.id == payment_method && method.keeps_token(token, at))
        });
        if let Some(gateway_token) = new_token {
            // Keep the newest token (Cardstream chains repeat payments through it). Best
            // effort: the charge is recorded either way.
            let refreshed = self
                .bus
                .execute::<PaymentMethod>(
                    &payment_method,
                    PaymentMethodCommand::RefreshToken {
                        gateway_token,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                )
                .await;
            if let Err(error) = refreshed {
                tracing::warn!(%error, "could not record the payment method's new token");
            }
        }
        Ok(executed)
    }

    /// Records many charges' outcomes (a billing batch's) with their billing effects in one
    /// transaction, then the cards' newest tokens in another (best effort, as in
    /// [`Self::charge_and_settle`]). Should the batch not commit (a stream changed under it,
    /// an outcome refused), nothing of it is kept and each outcome is recorded alone, with
    /// the usual retries.
    pub(crate) async fn record_outcomes(
        &self,
        actor: &Actor,
        outcomes: Vec<(PaymentIntent, ChargeOutcome)>,
        mut known: Known,
    ) -> Vec<Result<(), PaymentError>> {
        if outcomes.is_empty() {
            return Vec::new();
        }
        let at = chrono::Utc::now().timestamp();
        let cards = known.take_type(PaymentMethod::TYPE);
        let together = async {
            let mut unit = self.bus.unit(&actor.metadata()).await?;
            unit.seed(known);
            let intents: Vec<&str> = outcomes
                .iter()
                .map(|(intent, _)| intent.id.as_str())
                .collect();
            unit.preload::<PaymentIntent>(&intents).await?;
            let invoices: Vec<&str> = outcomes
                .iter()
                .filter_map(|(intent, _)| intent.invoice.as_deref())
                .collect();
            unit.preload::<domain::invoice::Invoice>(&invoices).await?;
            let mut subscriptions = Vec::with_capacity(invoices.len());
            for invoice in &invoices {
                if let Some(subscription) = unit
                    .load::<domain::invoice::Invoice>(invoice)
                    .await?
                    .subscription
                    .clone()
                {
                    subscriptions.push(subscription);
                }
            }
            let subscriptions: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
            unit.preload::<domain::subscription::Subscription>(&subscriptions)
                .await?;
            for (intent, outcome) in &outcomes {
                let charge = intent
                    .pending_charge()
                    .ok_or_else(|| PaymentError::Internal("no pending attempt".into()))?;
                let events = unit
                    .decide::<PaymentIntent>(
                        &intent.id,
                        PaymentIntentCommand::RecordChargeOutcome {
                            charge_id: charge.id.clone(),
                            outcome: outcome.clone(),
                            at,
                        },
                    )
                    .await?
                    .map_err(|rule| PaymentError::InvalidRequest(rule.to_string()))?;
                let decided = unit.load::<PaymentIntent>(&intent.id).await?.clone();
                crate::billing::react_to_intent(&mut unit, &decided, &events).await?;
            }
            unit.commit().await?;
            Ok::<(), PaymentError>(())
        };
        let batch = together.await;
        if let Err(error) = batch {
            tracing::debug!(%error, "a batch of outcomes did not commit together; recording each alone");
            let mut results = Vec::with_capacity(outcomes.len());
            for (intent, outcome) in outcomes {
                let recorded = self
                    .record_outcome(actor, &intent, outcome, NoExtraWork)
                    .await
                    .map(|_| ())
                    .map_err(FinalStepError::into_payment_error);
                results.push(recorded);
            }
            return results;
        }
        self.refresh_tokens(actor, &outcomes, cards).await;
        outcomes.iter().map(|_| Ok(())).collect()
    }

    /// Keeps each card's newest token after a batch of approvals (Cardstream chains repeat
    /// payments through it): one event per card, whatever the number of its charges.
    async fn refresh_tokens(
        &self,
        actor: &Actor,
        outcomes: &[(PaymentIntent, ChargeOutcome)],
        cards: Known,
    ) {
        let mut newest: Vec<(String, String)> = Vec::new();
        for (intent, outcome) in outcomes {
            let (ChargeOutcome::Approved { gateway_token, .. }, Some(charge)) =
                (outcome, intent.pending_charge())
            else {
                continue;
            };
            if gateway_token.is_empty() {
                continue;
            }
            match newest
                .iter_mut()
                .find(|(method, _)| *method == charge.payment_method)
            {
                Some(entry) => entry.1 = gateway_token.clone(),
                None => newest.push((charge.payment_method.clone(), gateway_token.clone())),
            }
        }
        if newest.is_empty() {
            return;
        }
        let at = chrono::Utc::now().timestamp();
        let mut cards = Some(cards);
        for attempt in 1..=MAX_UNIT_ATTEMPTS {
            // The cards as the batch read them, at first; read afresh after a race.
            let seeded = cards.take();
            let together = async {
                let mut unit = self.bus.unit(&actor.metadata()).await?;
                if let Some(seeded) = seeded {
                    unit.seed(seeded);
                }
                let methods: Vec<&str> = newest.iter().map(|(method, _)| method.as_str()).collect();
                unit.preload::<PaymentMethod>(&methods).await?;
                for (method, gateway_token) in &newest {
                    // A card detached meanwhile refuses: its token no longer matters.
                    let _ = unit
                        .decide::<PaymentMethod>(
                            method,
                            PaymentMethodCommand::RefreshToken {
                                gateway_token: gateway_token.clone(),
                                at,
                            },
                        )
                        .await?;
                }
                unit.commit().await
            };
            let batch = together.await;
            match batch {
                Ok(_) => return,
                Err(UnitError::Conflict) if attempt < MAX_UNIT_ATTEMPTS => back_off(attempt).await,
                Err(error) => {
                    tracing::warn!(%error, "could not record the cards' new tokens");
                    return;
                }
            }
        }
    }

    /// Completes 3-D Secure: the ACS posted `acs_fields` back to us.
    pub async fn complete_authentication<W>(
        &self,
        actor: &Actor,
        intent_id: &str,
        acs_fields: &[(String, String)],
        final_step: W,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        let (intent, _) = self
            .load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        let reference = match (&intent.status, &intent.next_action) {
            (IntentStatus::RequiresAction, Some(action)) => action.authentication_reference.clone(),
            _ => {
                return Err(PaymentError::InvalidRequest(
                    "This PaymentIntent is not awaiting authentication.".into(),
                )
                .into())
            }
        };
        let gateway = self.gateways.for_mode(actor.livemode)?;
        let response = gateway
            .continue_three_d_secure(&reference, acs_fields)
            .await
            .map_err(gateway_error)?;
        let outcome = self
            .outcome_of(&intent, &response)
            .ok_or(PaymentError::OutcomeUnknown)?;
        self.record_outcome(actor, &intent, outcome, final_step)
            .await
    }

    /// Captures a held authorisation, in full or in part.
    pub async fn capture<W>(
        &self,
        actor: &Actor,
        intent_id: &str,
        amount: Option<i64>,
        final_step: W,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        let (intent, _) = self
            .load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        if intent.status != IntentStatus::RequiresCapture {
            return Err(PaymentError::InvalidRequest(format!(
                "This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
                intent.status.as_str()
            ))
            .into());
        }
        let amount = amount.unwrap_or(intent.amount_capturable);
        if amount < 1 || amount > intent.amount_capturable {
            return Err(PaymentError::InvalidRequest(
                PaymentIntentError::InvalidCaptureAmount {
                    authorized: intent.amount_capturable,
                }
                .to_string(),
            )
            .into());
        }
        let token = intent
            .successful_charge()
            .and_then(|charge| charge.gateway_token.clone())
            .ok_or_else(|| PaymentError::Internal("authorised charge without a token".into()))?;
        let gateway = self.gateways.for_mode(actor.livemode)?;
        let response = gateway
            .capture(&token, Some(non_negative(amount)))
            .await
            .map_err(gateway_error)?;
        if !matches!(response.outcome(), Outcome::Approved) {
            return Err(
                PaymentError::Gateway(format!("capture refused: {}", response.message())).into(),
            );
        }
        self.decide_intent(
            actor,
            intent_id,
            PaymentIntentCommand::Capture {
                amount,
                at: chrono::Utc::now().timestamp(),
            },
            final_step,
        )
        .await
    }

    /// Cancels an intent; a held authorisation is released at the gateway first.
    pub async fn cancel<W>(
        &self,
        actor: &Actor,
        intent_id: &str,
        reason: Option<String>,
        final_step: W,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        let (intent, _) = self
            .load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        if intent.status == IntentStatus::RequiresCapture {
            if let Some(token) = intent
                .successful_charge()
                .and_then(|charge| charge.gateway_token.clone())
            {
                let gateway = self.gateways.for_mode(actor.livemode)?;
                let response = gateway.cancel(&token).await.map_err(gateway_error)?;
                if !matches!(response.outcome(), Outcome::Approved) {
                    return Err(PaymentError::Gateway(format!(
                        "cancel refused: {}",
                        response.message()
                    ))
                    .into());
                }
            }
        }
        self.bus
            .execute_with::<PaymentIntent, W>(
                intent_id,
                PaymentIntentCommand::Cancel {
                    reason,
                    at: chrono::Utc::now().timestamp(),
                },
                &(),
                &actor.metadata(),
                final_step,
            )
            .await
            .map_err(from_execute)
    }

    /// Refunds all or part of a succeeded intent: the refund is recorded before the gateway
    /// is asked, and its outcome after.
    pub async fn refund<W>(
        &self,
        actor: &Actor,
        intent_id: &str,
        request: RefundRequest,
        final_step: W,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        self.load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        let RefundRequest {
            refund_id,
            amount,
            reason,
            metadata,
        } = request;
        let started = self
            .bus
            .execute::<PaymentIntent>(
                intent_id,
                PaymentIntentCommand::StartRefund {
                    refund_id: refund_id.clone(),
                    amount,
                    reason,
                    transaction_unique: ids::new_id("tu"),
                    metadata,
                    at: chrono::Utc::now().timestamp(),
                },
                &(),
                &actor.metadata(),
            )
            .await
            .map_err(PaymentError::from)?;
        let intent = started.aggregate;
        let refund = intent
            .refunds
            .iter()
            .find(|refund| refund.id == refund_id)
            .ok_or_else(|| PaymentError::Internal("refund not recorded".into()))?;
        let token = intent
            .successful_charge()
            .and_then(|charge| charge.gateway_token.clone())
            .ok_or_else(|| PaymentError::Internal("charge without a token".into()))?;
        let gateway = self.gateways.for_mode(actor.livemode)?;
        let (succeeded, failure_reason) = match gateway
            .refund(
                &token,
                non_negative(refund.amount),
                &refund.transaction_unique,
            )
            .await
        {
            Ok(result) => match result.response.outcome() {
                Outcome::Approved => (true, None),
                _ => (false, Some(result.response.message().to_string())),
            },
            Err(error) if error.is_outcome_unknown() => {
                return Err(PaymentError::OutcomeUnknown.into())
            }
            Err(error) => (false, Some(error.to_string())),
        };
        self.bus
            .execute_with::<PaymentIntent, W>(
                intent_id,
                PaymentIntentCommand::RecordRefundOutcome {
                    refund_id: refund_id.clone(),
                    succeeded,
                    failure_reason,
                    at: chrono::Utc::now().timestamp(),
                },
                &(),
                &actor.metadata(),
                final_step,
            )
            .await
            .map_err(from_execute)
    }

    /// Decides `command` on a payment intent together with what it means for billing (an
    /// invoice paid or its attempt failed, a subscription's status, a one-off payment's
    /// receipt invoice) and `final_step`, all in one transaction; decided again on conflict.
    async fn decide_intent<W>(
        &self,
        actor: &Actor,
        intent_id: &str,
        command: PaymentIntentCommand,
        final_step: W,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        self.decide_intent_knowing(actor, intent_id, command, final_step, Known::default())
            .await
    }

    /// [`Self::decide_intent`], the first attempt seeded with aggregates an earlier unit of
    /// this caller's committed (a retry after a race reads them afresh).
    async fn decide_intent_knowing<W>(
        &self,
        actor: &Actor,
        intent_id: &str,
        command: PaymentIntentCommand,
        mut final_step: W,
        known: Known,
    ) -> Result<Executed<PaymentIntent, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<PaymentIntent>,
    {
        let mut attempt = 0;
        let mut known = Some(known);
        loop {
            attempt += 1;
            let mut unit = self
                .bus
                .unit(&actor.metadata())
                .await
                .map_err(PaymentError::from)?;
            if let Some(known) = known.take() {
                unit.seed(known);
            }
            let events = unit
                .decide::<PaymentIntent>(intent_id, command.clone())
                .await
                .map_err(PaymentError::from)?
                .map_err(|rule| PaymentError::InvalidRequest(rule.to_string()))?;
            let intent = unit
                .load::<PaymentIntent>(intent_id)
                .await
                .map_err(PaymentError::from)?
                .clone();
            crate::billing::react_to_intent(&mut unit, &intent, &events).await?;
            let version = unit.version::<PaymentIntent>(intent_id);
            let output = final_step
                .run(unit.connection(), &intent, &events)
                .await
                .map_err(FinalStepError::Step)?;
            match unit.commit().await {
                Ok(appended) => {
                    return Ok(Executed {
                        aggregate: intent,
                        events,
                        appended,
                        version,
                        output,
                    })
                }
                Err(UnitError::Conflict) if attempt < MAX_UNIT_ATTEMPTS => back_off(attempt).await,
                Err(error) => return Err(PaymentError::from(error).into()),
            }
        }
    }

    /// Charges an intent's pending attempt off the request path (billing: a subscription's
    /// first invoice, a renewal, a retry) and records the outcome with its billing effects.
    pub async fn charge_and_settle(
        &self,
        actor: &Actor,
        intent_id: &str,
        off_session: bool,
    ) -> Result<Vec<event_store::store::Appended>, PaymentError> {
        let (intent, _) = self
            .load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        // Billing calls this right after committing the attempt: it was never sent.
        let outcome = self
            .charge_pending_attempt(actor, &intent, off_session, false)
            .await?;
        let executed = self
            .record_outcome(actor, &intent, outcome, NoExtraWork)
            .await
            .map_err(FinalStepError::into_payment_error)?;
        Ok(executed.appended)
    }

    /// Continues an intent's attempt that an interrupted process committed and may or may
    /// not have sent: asks the gateway about it first (never resends blind), charges only
    /// if the gateway never saw it, and records the outcome. Nothing to do without an open
    /// attempt (or one waiting for the cardholder).
    pub async fn resume_open_attempt(
        &self,
        actor: &Actor,
        intent_id: &str,
        off_session: bool,
    ) -> Result<Vec<event_store::store::Appended>, PaymentError> {
        let (intent, _) = self
            .load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        if intent.pending_charge().is_none() || intent.status == IntentStatus::RequiresAction {
            return Ok(Vec::new());
        }
        let outcome = self
            .charge_pending_attempt(actor, &intent, off_session, true)
            .await?;
        let executed = self
            .record_outcome(actor, &intent, outcome, NoExtraWork)
            .await
            .map_err(FinalStepError::into_payment_error)?;
        Ok(executed.appended)
    }

    /// Resolves one intent's attempt left open (a crash between the gateway's answer and
    /// recording it): asks the gateway about its `transactionUnique` and records what it
    /// says; an attempt the gateway never saw is recorded as failed so it can be retried.
    pub async fn resolve_open_attempt(
        &self,
        actor: &Actor,
        intent_id: &str,
    ) -> Result<IntentStatus, PaymentError> {
        let (intent, _) = self
            .load_owned::<PaymentIntent>(actor, "payment_intent", intent_id)
            .await?;
        let Some(charge) = intent.pending_charge() else {
            return Ok(intent.status);
        };
        if intent.status == IntentStatus::RequiresAction {
            return Ok(intent.status);
        }
        let gateway = self.gateways.for_mode(actor.livemode)?;
        let outcome = self
            .look_up(gateway, &intent, &charge.transaction_unique)
            .await?
            .unwrap_or(ChargeOutcome::Declined {
                code: "processing_error".into(),
                decline_code: None,
                message: "The payment was interrupted before it reached the card network; please try again.".into(),
            });
        let executed = self
            .record_outcome(actor, &intent, outcome, NoExtraWork)
            .await
            .map_err(FinalStepError::into_payment_error)?;
        Ok(executed.aggregate.status)
    }
}

/// Stripe's customer-facing messages for the common decline codes.
fn decline_message(decline_code: &str) -> String {
    match decline_code {
        "insufficient_funds" => "Your card has insufficient funds.",
        "expired_card" => "Your card has expired.",
        "incorrect_cvc" => "Your card's security code is incorrect.",
        "lost_card" | "stolen_card" | "pickup_card" => "Your card was declined.",
        "authentication_required" => {
            "Your card was declined. This transaction requires authentication."
        }
        "processing_error" => {
            "An error occurred while processing your card. Try again in a little bit."
        }
        _ => "Your card was declined.",
    }
    .to_string()
}

/// A per-project card fingerprint: the same card gives the same value within a project, and
/// nothing that leads back to the number.
fn card_fingerprint(project: &str, number: &str) -> String {
    use sha2::{Digest, Sha256};
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let digest = Sha256::digest(format!("calmony-card-fingerprint\0{project}\0{digits}"));
    hex::encode(&digest[..8])
}
