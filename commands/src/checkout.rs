//! Checkout Sessions on the write side: creating a session (catalog prices resolved and
//! copied in), the signed form that sends the customer to the gateway's hosted payment
//! page, the gateway's signed result coming back, the test helper that completes a session
//! with a payment method, and expiry.
//!
//! A hosted result is trusted only when (1) its signature verifies with the merchant
//! secret, (2) its `transactionUnique` is the session's one-time `return_nonce`, (3) its
//! action, amount and currency are the session's, and (4) the session accepts it
//! (`AcceptReturn`, which consumes the nonce in the session's stream, so of two identical
//! results only the first is recorded). Anything else records nothing.

use cardstream::{
    CaptureMode, CardBrand, CustomerDetails, GatewayResponse, HostedAction, HostedPaymentForm,
    HostedPaymentRequest, Outcome, StoredCardAgreement,
};
use domain::checkout_session::{
    AcceptedResult, CheckoutSession, CheckoutSessionCommand, CheckoutSessionError, Completion,
    LineItem, NewSession, PaymentStatus, SessionMode, SessionStatus, MAX_LIFETIME_SECONDS,
};
use domain::customer::{Customer, CustomerCommand, CustomerFields, Metadata};
use domain::invoice::Invoice;
use domain::money::{Currency, Money};
use domain::payment_intent::{
    CaptureMethod, ChargeOutcome, IntentStatus, NewIntent, PaymentIntent, PaymentIntentCommand,
};
use domain::payment_method::{BillingDetails, CardSummary, PaymentMethod, PaymentMethodCommand};
use domain::price::{NewPrice, Price, PriceCommand, Recurring, TaxBehavior};
use domain::product::{NewProduct, Product, ProductCommand};
use domain::subscription::{Subscription, SubscriptionStatus};
use domain::test_clock::TestClock;
use event_store::store::Appended;

use crate::billing::{
    BillingService, ItemRequest, JobOutcome, OneTimeItem, PaymentBehavior, SubscriptionRequest,
    Written,
};
use crate::execute::{CommandError, ExecuteError, Executed, InTransaction, NoExtraWork};
use crate::ids;
use crate::payments::{Actor, CheckoutFault, FinalStepError, PaymentError};

/// A line as the API receives it.
#[derive(Debug, Clone)]
pub enum LineRequest {
    Price {
        price: String,
        quantity: i64,
    },
    PriceData {
        currency: Currency,
        unit_amount: i64,
        product_name: String,
        recurring: Option<Recurring>,
        quantity: i64,
    },
}

#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub mode: SessionMode,
    pub line_items: Vec<LineRequest>,
    pub currency: Option<Currency>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub expires_at: Option<i64>,
    pub metadata: Metadata,
}

/// Why a hosted result was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReturnError {
    #[error("no such checkout session")]
    NotFound,
    /// The signature does not verify, or the result belongs to another payment.
    #[error("the payment result is not genuine: {0}")]
    Forged(String),
    /// Genuine, but not for what this session asked (action, amount, currency).
    #[error("the payment result does not match the session: {0}")]
    Mismatch(String),
    /// Already received, or the session is no longer open.
    #[error("the payment result cannot be used again: {0}")]
    Replayed(String),
    /// The gateway declined or could not take the card; nothing is recorded and the
    /// customer may try again.
    #[error("{0}")]
    Declined(String),
    #[error(transparent)]
    Payment(#[from] PaymentError),
}

/// The ids an accepted result fixed for the objects subscription and setup mode make
/// (none for the test helper, which makes them fresh).
#[derive(Debug, Clone, Default)]
struct SavedCardIds {
    customer: Option<String>,
    subscription: Option<String>,
}

/// A completed session: where to send the customer, and what was appended (for
/// read-your-writes).
#[derive(Debug)]
pub struct Completed {
    pub redirect_url: String,
    pub appended: Vec<Appended>,
}

fn rule(error: impl std::fmt::Display) -> PaymentError {
    PaymentError::InvalidRequest(error.to_string())
}

fn from_command<E: std::error::Error>(error: CommandError<E>) -> PaymentError {
    PaymentError::from(error)
}

#[derive(Clone)]
pub struct CheckoutService {
    billing: BillingService,
}

impl CheckoutService {
    pub fn new(billing: BillingService) -> Self {
        Self { billing }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// Creates a session: catalog prices are resolved and copied in; inline recurring
    /// `price_data` becomes a product and a price, since a subscription bills prices.
    pub async fn create<W>(
        &self,
        actor: &Actor,
        request: SessionRequest,
        final_step: W,
    ) -> Result<Executed<CheckoutSession, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<CheckoutSession>,
    {
        let payments = self.billing.payments();
        let mut test_clock = None;
        let mut at = Self::now();
        if let Some(customer_id) = &request.customer {
            let (customer, _) = payments
                .load_owned::<Customer>(actor, "customer", customer_id)
                .await?;
            if customer.deleted {
                return Err(PaymentError::NotFound {
                    kind: "customer",
                    id: customer_id.clone(),
                }
                .into());
            }
            if let Some(clock) = &customer.test_clock {
                let (clock_state, _) = payments
                    .load_owned::<TestClock>(actor, "test_clock", clock)
                    .await?;
                at = clock_state.frozen_time;
                test_clock = Some(clock.clone());
            }
        }
        let mut line_items = Vec::with_capacity(request.line_items.len());
        for line in &request.line_items {
            line_items.push(self.resolve_line(actor, request.mode, line).await?);
        }
        let session_id = format!(
            "cs_{}_{}",
            if actor.livemode { "live" } else { "test" },
            ids::new_id("a").trim_start_matches("a_")
        );
        let session = NewSession {
            session_id: session_id.clone(),
            livemode: actor.livemode,
            mode: request.mode,
            line_items,
            currency: request.currency,
            customer: request.customer,
            customer_email: request.customer_email,
            success_url: request.success_url,
            cancel_url: request.cancel_url,
            expires_at: request.expires_at.unwrap_or(at + MAX_LIFETIME_SECONDS),
            return_nonce: ids::new_id("csn"),
            test_clock,
            metadata: request.metadata,
            at,
        };
        payments
            .bus()
            .execute_with::<CheckoutSession, W>(
                &session_id,
                CheckoutSessionCommand::Create(Box::new(session)),
                &(),
                &actor.metadata(),
                final_step,
            )
            .await
            .map_err(|error| match error {
                ExecuteError::Command(command) => FinalStepError::Payment(from_command(command)),
                ExecuteError::Extra(extra) => FinalStepError::Step(extra),
            })
    }

    async fn resolve_line(
        &self,
        actor: &Actor,
        mode: SessionMode,
        line: &LineRequest,
    ) -> Result<LineItem, PaymentError> {
        let payments = self.billing.payments();
        let id = ids::new_id("li");
        match line {
            LineRequest::Price { price, quantity } => {
                let (price, _) = payments.load_owned::<Price>(actor, "price", price).await?;
                if !price.active {
                    return Err(PaymentError::InvalidRequest(format!(
                        "The price specified ({}) is inactive. This field only accepts active prices.",
                        price.id
                    )));
                }
                let (product, _) = payments
                    .load_owned::<Product>(actor, "product", &price.product)
                    .await?;
                Ok(LineItem {
                    id,
                    price: Some(price.id.clone()),
                    product: Some(price.product.clone()),
                    product_name: product.name,
                    currency: price.currency,
                    unit_amount: price.unit_amount,
                    quantity: *quantity,
                    recurring: price.recurring,
                })
            }
            LineRequest::PriceData {
                currency,
                unit_amount,
                product_name,
                recurring,
                quantity,
            } => {
                let (price, product) = if mode == SessionMode::Subscription && recurring.is_some() {
                    let (product, price) = self
                        .inline_price(actor, *currency, *unit_amount, product_name, *recurring)
                        .await?;
                    (Some(price), Some(product))
                } else {
                    (None, None)
                };
                Ok(LineItem {
                    id,
                    price,
                    product,
                    product_name: product_name.clone(),
                    currency: *currency,
                    unit_amount: *unit_amount,
                    quantity: *quantity,
                    recurring: *recurring,
                })
            }
        }
    }

    /// A product and a price for an inline recurring line (a subscription bills prices).
    async fn inline_price(
        &self,
        actor: &Actor,
        currency: Currency,
        unit_amount: i64,
        product_name: &str,
        recurring: Option<Recurring>,
    ) -> Result<(String, String), PaymentError> {
        let bus = self.billing.payments().bus();
        let product_id = ids::new_id("prod");
        let price_id = ids::new_id("price");
        let at = Self::now();
        bus.execute::<Product>(
            &product_id,
            ProductCommand::Create {
                product_id: product_id.clone(),
                product: NewProduct {
                    name: product_name.to_string(),
                    description: None,
                    active: true,
                    unit_label: None,
                    metadata: Metadata::new(),
                },
                at,
            },
            &(),
            &actor.metadata(),
        )
        .await
        .map_err(from_command)?;
        bus.execute::<Price>(
            &price_id,
            PriceCommand::Create {
                price_id: price_id.clone(),
                price: NewPrice {
                    product: product_id.clone(),
                    currency,
                    unit_amount,
                    recurring,
                    tax_behavior: TaxBehavior::Unspecified,
                    nickname: None,
                    lookup_key: None,
                    active: true,
                    metadata: Metadata::new(),
                },
                at,
            },
            &(),
            &actor.metadata(),
        )
        .await
        .map_err(from_command)?;
        Ok((product_id, price_id))
    }

    /// Expires an open session (the API's `expire`, and the scheduled expiry).
    pub async fn expire<W>(
        &self,
        actor: &Actor,
        session_id: &str,
        final_step: W,
    ) -> Result<Executed<CheckoutSession, W::Output>, FinalStepError<W::Error>>
    where
        W: InTransaction<CheckoutSession>,
    {
        let payments = self.billing.payments();
        let (session, _) = payments
            .load_owned::<CheckoutSession>(actor, "checkout.session", session_id)
            .await?;
        let at = self.now_for(actor, &session).await?;
        payments
            .bus()
            .execute_with::<CheckoutSession, W>(
                session_id,
                CheckoutSessionCommand::Expire { at },
                &(),
                &actor.metadata(),
                final_step,
            )
            .await
            .map_err(|error| match error {
                ExecuteError::Command(command) => FinalStepError::Payment(from_command(command)),
                ExecuteError::Extra(extra) => FinalStepError::Step(extra),
            })
    }

    /// The scheduled expiry of a session whose `expires_at` has passed.
    pub async fn expire_due(
        &self,
        actor: &Actor,
        session_id: &str,
    ) -> Result<JobOutcome, PaymentError> {
        let payments = self.billing.payments();
        let (session, _) = payments
            .load_owned::<CheckoutSession>(actor, "checkout.session", session_id)
            .await?;
        let now = self.now_for(actor, &session).await?;
        if session.status != SessionStatus::Open
            || session.return_accepted
            || now < session.expires_at
        {
            return Ok(JobOutcome::AlreadyDone);
        }
        match self.expire(actor, session_id, NoExtraWork).await {
            Ok(_) => Ok(JobOutcome::Done),
            Err(FinalStepError::Payment(PaymentError::InvalidRequest(_))) => {
                Ok(JobOutcome::AlreadyDone)
            }
            Err(FinalStepError::Payment(error)) => Err(error),
            Err(FinalStepError::Step(error)) => Err(PaymentError::Internal(error.to_string())),
        }
    }

    /// "Now" for a session: its customer's test clock's time, or the wall clock.
    async fn now_for(&self, actor: &Actor, session: &CheckoutSession) -> Result<i64, PaymentError> {
        match &session.test_clock {
            Some(clock) => Ok(self
                .billing
                .payments()
                .load_owned::<TestClock>(actor, "test_clock", clock)
                .await?
                .0
                .frozen_time),
            None => Ok(Self::now()),
        }
    }

    /// An open session of any project, found by its unguessable id (the hosted page is
    /// reached without an API key), with the actor that acts for its customer.
    pub async fn session_for_browser(
        &self,
        session_id: &str,
    ) -> Result<Option<(CheckoutSession, Actor)>, PaymentError> {
        let payments = self.billing.payments();
        let Some((project, livemode)) = payments.owner_of::<CheckoutSession>(session_id).await?
        else {
            return Ok(None);
        };
        let actor = Actor {
            project,
            livemode,
            actor: "customer:browser".into(),
            request_id: ids::new_id("req"),
            idempotency_key: None,
        };
        let (session, _) = payments
            .load_owned::<CheckoutSession>(&actor, "checkout.session", session_id)
            .await?;
        Ok(Some((session, actor)))
    }

    /// The signed form that takes the customer to the gateway's hosted payment page: a
    /// `SALE` of the order in payment mode, a zero-amount `VERIFY` that stores the card
    /// otherwise. Its `transactionUnique` is the session's one-time nonce.
    pub fn hosted_form(
        &self,
        actor: &Actor,
        session: &CheckoutSession,
    ) -> Result<HostedPaymentForm, PaymentError> {
        let payments = self.billing.payments();
        let gateway = payments.gateway(actor.livemode)?;
        let currency = session.currency().unwrap_or(Currency::GBP);
        let (action, agreement) = match session.mode {
            SessionMode::Payment => (HostedAction::Sale, None),
            SessionMode::Subscription => {
                (HostedAction::Verify, Some(StoredCardAgreement::Recurring))
            }
            SessionMode::Setup => (HostedAction::Verify, Some(StoredCardAgreement::CardOnFile)),
        };
        let base = payments.public_url().trim_end_matches('/');
        Ok(gateway.hosted_payment_form(&HostedPaymentRequest {
            action,
            amount_minor: u64::try_from(session.amount_total()).unwrap_or(0),
            currency_code: currency.numeric_code().to_string(),
            transaction_unique: session.return_nonce.clone(),
            order_ref: Some(session.id.clone()),
            redirect_url: format!("{base}/checkout/{}/return", session.id),
            callback_url: None,
            capture: CaptureMode::Automatic,
            customer: CustomerDetails {
                email: session.customer_email.clone(),
                ..CustomerDetails::default()
            },
            agreement,
        }))
    }

    /// The gateway's signed result came back through the browser: check it, accept it
    /// (which fixes the card and the ids of everything completing makes), then finish.
    ///
    /// A genuine result for a session whose result was accepted but not finished (the
    /// server died in between) finishes it: the browser's retry does what the first
    /// request could not, with the same ids, so nothing is made twice.
    pub async fn complete_from_hosted_return(
        &self,
        actor: &Actor,
        session_id: &str,
        body: &[u8],
    ) -> Result<Completed, ReturnError> {
        let payments = self.billing.payments();
        let (session, _) = payments
            .load_owned::<CheckoutSession>(actor, "checkout.session", session_id)
            .await
            .map_err(|_| ReturnError::NotFound)?;
        let gateway = payments.gateway(actor.livemode)?;
        let response = gateway
            .verify_hosted_response(body, &session.return_nonce)
            .map_err(|error| ReturnError::Forged(error.to_string()))?;
        check_matches(&session, &response)?;
        if session.status != SessionStatus::Open {
            return Err(ReturnError::Replayed(format!(
                "the session is {}",
                session.status.as_str()
            )));
        }
        if !matches!(response.outcome(), Outcome::Approved) {
            return Err(ReturnError::Declined(response.message().to_string()));
        }
        if session.return_accepted {
            return Ok(self.finish_accepted(actor, session_id).await?);
        }
        let xref = response
            .xref()
            .filter(|xref| !xref.is_empty())
            .ok_or_else(|| ReturnError::Mismatch("no xref in an approved result".into()))?
            .to_string();
        let at = self.now_for(actor, &session).await?;
        let result = AcceptedResult {
            gateway_token: xref,
            authorization_code: response.authorisation_code().map(str::to_string),
            card: card_from_response(&actor.project, &response),
            payment_method: ids::new_id("pm"),
            payment_intent: (session.mode == SessionMode::Payment).then(|| ids::new_id("pi")),
            customer: (session.mode == SessionMode::Subscription && session.customer.is_none())
                .then(|| ids::new_id("cus")),
            subscription: (session.mode == SessionMode::Subscription).then(|| ids::new_id("sub")),
        };
        let accepted = payments
            .bus()
            .execute::<CheckoutSession>(
                session_id,
                CheckoutSessionCommand::AcceptReturn {
                    nonce: response.transaction_unique().unwrap_or("").to_string(),
                    result: Box::new(result),
                    at,
                },
                &(),
                &actor.metadata(),
            )
            .await;
        let mut appended = match accepted {
            Ok(executed) => executed.appended,
            Err(CommandError::Rejected(refused)) => {
                return Err(ReturnError::Replayed(refused.to_string()))
            }
            Err(other) => return Err(PaymentError::from(other).into()),
        };
        payments.fault_point(CheckoutFault::AfterAccept);
        let mut finished = self.finish_accepted(actor, session_id).await?;
        appended.append(&mut finished.appended);
        finished.appended = appended;
        Ok(finished)
    }

    /// Finishes a session whose gateway result was accepted: the payment method, then the
    /// payment (payment mode) or the customer's card and subscription, then `Complete`.
    /// Each step first looks for what an earlier, interrupted attempt made (the ids were
    /// fixed at acceptance), so running this twice, or after a crash anywhere in it, makes
    /// everything once. Used by the return, its retry, and the recovery worker.
    pub async fn finish_accepted(
        &self,
        actor: &Actor,
        session_id: &str,
    ) -> Result<Completed, PaymentError> {
        let payments = self.billing.payments();
        let (session, _) = payments
            .load_owned::<CheckoutSession>(actor, "checkout.session", session_id)
            .await?;
        if session.status == SessionStatus::Complete {
            return Ok(Completed {
                redirect_url: session.success_url_for_redirect(),
                appended: Vec::new(),
            });
        }
        if session.status != SessionStatus::Open {
            return Err(rule(CheckoutSessionError::NotOpen(session.status.as_str())));
        }
        let result = session.accepted.clone().ok_or_else(|| {
            PaymentError::InvalidRequest(
                "This Checkout Session's payment result was accepted without what finishing it needs (an event of version 1.0).".into(),
            )
        })?;
        let at = self.now_for(actor, &session).await?;
        let mut appended = Vec::new();
        let method_id = result.payment_method.clone();
        if !self.exists::<PaymentMethod>(actor, &method_id).await? {
            let created = payments
                .bus()
                .execute::<PaymentMethod>(
                    &method_id,
                    PaymentMethodCommand::Create {
                        payment_method_id: method_id.clone(),
                        livemode: actor.livemode,
                        card: result.card.clone(),
                        gateway_token: result.gateway_token.clone(),
                        billing_details: BillingDetails {
                            email: session.customer_email.clone(),
                            ..BillingDetails::default()
                        },
                        metadata: Metadata::new(),
                        at,
                    },
                    &(),
                    &actor.metadata(),
                )
                .await;
            match created {
                Ok(executed) => appended.extend(executed.appended),
                // Another finisher made it first.
                Err(_) if self.exists::<PaymentMethod>(actor, &method_id).await? => {}
                Err(error) => return Err(PaymentError::from(error)),
            }
        }
        let completion = match session.mode {
            SessionMode::Payment => {
                let intent_id = result
                    .payment_intent
                    .clone()
                    .ok_or_else(|| PaymentError::Internal("no payment intent id".into()))?;
                if !self.exists::<PaymentIntent>(actor, &intent_id).await? {
                    let amount = Money::new(
                        session.amount_total(),
                        session.currency().unwrap_or(Currency::GBP),
                    )
                    .map_err(rule)?;
                    let recorded = payments
                        .record_hosted_sale(
                            actor,
                            NewIntent {
                                payment_intent_id: intent_id.clone(),
                                livemode: actor.livemode,
                                amount,
                                customer: session.customer.clone(),
                                payment_method: Some(method_id.clone()),
                                capture_method: CaptureMethod::Automatic,
                                description: None,
                                receipt_email: session.customer_email.clone(),
                                metadata: session.metadata.clone(),
                                invoice: None,
                                at,
                            },
                            &session.return_nonce,
                            ChargeOutcome::Approved {
                                gateway_token: result.gateway_token.clone(),
                                authorization_code: result.authorization_code.clone(),
                            },
                        )
                        .await;
                    match recorded {
                        Ok(recorded) => appended.extend(recorded),
                        Err(_) if self.exists::<PaymentIntent>(actor, &intent_id).await? => {}
                        Err(error) => return Err(error),
                    }
                }
                Completion {
                    customer: session.customer.clone(),
                    payment_intent: Some(intent_id),
                    subscription: None,
                    payment_method: Some(method_id.clone()),
                    payment_status: PaymentStatus::Paid,
                }
            }
            SessionMode::Subscription | SessionMode::Setup => {
                self.finish_with_saved_card(
                    actor,
                    &session,
                    &method_id,
                    SavedCardIds {
                        customer: result.customer.clone(),
                        subscription: result.subscription.clone(),
                    },
                    &mut appended,
                )
                .await?
            }
        };
        payments.fault_point(CheckoutFault::BeforeComplete);
        match self.complete(actor, &session, completion, at).await {
            Ok(completed) => appended.extend(completed),
            Err(error) => {
                // Completed meanwhile by another finisher: done all the same.
                let (now, _) = payments
                    .load_owned::<CheckoutSession>(actor, "checkout.session", session_id)
                    .await?;
                if now.status != SessionStatus::Complete {
                    return Err(error);
                }
            }
        }
        Ok(Completed {
            redirect_url: session.success_url_for_redirect(),
            appended,
        })
    }

    /// Whether a stream of `A` with this id exists in the actor's project and mode.
    async fn exists<A: cqrs_es::Aggregate>(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<bool, PaymentError> {
        match self
            .billing
            .payments()
            .load_owned::<A>(actor, "object", id)
            .await
        {
            Ok(_) => Ok(true),
            Err(PaymentError::NotFound { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The test helper: completes an open session as if the customer had paid on the
    /// hosted page with `payment_method` (a `pm_…` of the project, or a test token).
    pub async fn complete_with_payment_method(
        &self,
        actor: &Actor,
        session_id: &str,
        payment_method: &str,
    ) -> Result<Completed, PaymentError> {
        let payments = self.billing.payments();
        let (session, _) = payments
            .load_owned::<CheckoutSession>(actor, "checkout.session", session_id)
            .await?;
        if session.status != SessionStatus::Open {
            return Err(rule(CheckoutSessionError::NotOpen(session.status.as_str())));
        }
        if session.return_accepted {
            return Err(rule(CheckoutSessionError::ReturnAlreadyAccepted));
        }
        let at = self.now_for(actor, &session).await?;
        if at >= session.expires_at {
            return Err(rule(CheckoutSessionError::PastExpiry));
        }
        let method = payments
            .resolve_payment_method(actor, payment_method)
            .await?;
        let mut appended = Vec::new();
        let completion = match session.mode {
            SessionMode::Payment => {
                let intent_id = ids::new_id("pi");
                let amount = Money::new(
                    session.amount_total(),
                    session.currency().unwrap_or(Currency::GBP),
                )
                .map_err(rule)?;
                let created = payments
                    .bus()
                    .execute::<PaymentIntent>(
                        &intent_id,
                        PaymentIntentCommand::Create(NewIntent {
                            payment_intent_id: intent_id.clone(),
                            livemode: actor.livemode,
                            amount,
                            customer: session.customer.clone(),
                            payment_method: None,
                            capture_method: CaptureMethod::Automatic,
                            description: None,
                            receipt_email: session.customer_email.clone(),
                            metadata: session.metadata.clone(),
                            invoice: None,
                            at,
                        }),
                        &(),
                        &actor.metadata(),
                    )
                    .await
                    .map_err(PaymentError::from)?;
                appended.extend(created.appended);
                let confirmed = payments
                    .confirm(
                        actor,
                        &intent_id,
                        Some(method.id.clone()),
                        false,
                        NoExtraWork,
                    )
                    .await
                    .map_err(FinalStepError::into_payment_error)?;
                appended.extend(confirmed.appended);
                let intent = confirmed.aggregate;
                if intent.status != IntentStatus::Succeeded {
                    let error = intent.last_payment_error.clone();
                    return Err(PaymentError::CardDeclined {
                        code: error
                            .as_ref()
                            .map(|error| error.code.clone())
                            .unwrap_or_else(|| "card_declined".into()),
                        decline_code: error.as_ref().and_then(|error| error.decline_code.clone()),
                        message: error
                            .map(|error| error.message)
                            .unwrap_or_else(|| "Your card was declined.".into()),
                    });
                }
                Completion {
                    customer: session.customer.clone(),
                    payment_intent: Some(intent_id),
                    subscription: None,
                    payment_method: Some(method.id.clone()),
                    payment_status: PaymentStatus::Paid,
                }
            }
            SessionMode::Subscription | SessionMode::Setup => {
                self.finish_with_saved_card(
                    actor,
                    &session,
                    &method.id,
                    SavedCardIds::default(),
                    &mut appended,
                )
                .await?
            }
        };
        appended.extend(self.complete(actor, &session, completion, at).await?);
        Ok(Completed {
            redirect_url: session.success_url_for_redirect(),
            appended,
        })
    }

    /// Subscription and setup mode: the card is saved to the customer (created from
    /// `customer_email` when the session has none, in subscription mode); in subscription
    /// mode the subscription is created and its first invoice charged, with the session's
    /// one-time lines on that invoice (as Stripe does). With `fixed` ids, what exists
    /// already (an interrupted attempt's work) is used, not made again.
    async fn finish_with_saved_card(
        &self,
        actor: &Actor,
        session: &CheckoutSession,
        method_id: &str,
        fixed: SavedCardIds,
        appended: &mut Vec<Appended>,
    ) -> Result<Completion, PaymentError> {
        let payments = self.billing.payments();
        let bus = payments.bus();
        let customer = match (&session.customer, session.mode) {
            (Some(customer), _) => Some(customer.clone()),
            (None, SessionMode::Subscription) => {
                let customer_id = fixed.customer.clone().unwrap_or_else(|| ids::new_id("cus"));
                if !self.exists::<Customer>(actor, &customer_id).await? {
                    let created = bus
                        .execute::<Customer>(
                            &customer_id,
                            CustomerCommand::Create {
                                customer_id: customer_id.clone(),
                                fields: CustomerFields {
                                    email: session.customer_email.clone().map(Some),
                                    ..CustomerFields::default()
                                },
                                at: Self::now(),
                            },
                            &(),
                            &actor.metadata(),
                        )
                        .await;
                    match created {
                        Ok(executed) => appended.extend(executed.appended),
                        Err(_) if self.exists::<Customer>(actor, &customer_id).await? => {}
                        Err(error) => return Err(PaymentError::from(error)),
                    }
                }
                Some(customer_id)
            }
            (None, _) => None,
        };
        if let Some(customer) = &customer {
            let (method, _) = payments
                .load_owned::<PaymentMethod>(actor, "payment_method", method_id)
                .await?;
            if method.customer.as_deref() != Some(customer.as_str()) {
                let attached = bus
                    .execute::<PaymentMethod>(
                        method_id,
                        PaymentMethodCommand::Attach {
                            customer_id: customer.clone(),
                            at: Self::now(),
                        },
                        &(),
                        &actor.metadata(),
                    )
                    .await
                    .map_err(PaymentError::from)?;
                appended.extend(attached.appended);
            }
        }
        if session.mode == SessionMode::Setup {
            return Ok(Completion {
                customer,
                payment_intent: None,
                subscription: None,
                payment_method: Some(method_id.to_string()),
                payment_status: PaymentStatus::NoPaymentRequired,
            });
        }
        let customer = customer.ok_or_else(|| PaymentError::Internal("no customer".into()))?;
        let subscription_id = match &fixed.subscription {
            Some(id) if self.exists::<Subscription>(actor, id).await? => {
                // Made by an interrupted attempt, which may have died before its first
                // invoice's charge was sent or recorded: finish that charge (once).
                self.resume_first_charge(actor, id, appended).await?;
                id.clone()
            }
            _ => {
                let mut items = Vec::new();
                let mut one_time = Vec::new();
                for line in &session.line_items {
                    match (&line.price, line.recurring) {
                        (Some(price), Some(_)) => items.push(ItemRequest {
                            price: price.clone(),
                            quantity: line.quantity,
                            metadata: Metadata::new(),
                        }),
                        (Some(_), None) | (None, None) => one_time.push(OneTimeItem {
                            price: line.price.clone(),
                            product: line.product.clone(),
                            description: line.product_name.clone(),
                            currency: line.currency,
                            unit_amount: line.unit_amount,
                            quantity: line.quantity,
                        }),
                        (None, Some(_)) => {
                            return Err(PaymentError::Internal(
                                "a recurring subscription line without a price".into(),
                            ))
                        }
                    }
                }
                let mut written = Written::new(None);
                let created = self
                    .billing
                    .create_subscription(
                        actor,
                        SubscriptionRequest {
                            subscription_id: fixed.subscription.clone(),
                            customer: customer.clone(),
                            items,
                            add_invoice_items: one_time,
                            default_payment_method: Some(method_id.to_string()),
                            payment_behavior: PaymentBehavior::AllowIncomplete,
                            metadata: session.metadata.clone(),
                            ..SubscriptionRequest::default()
                        },
                        &mut written,
                    )
                    .await;
                appended.extend(written.appended);
                match (created, &fixed.subscription) {
                    (Ok(id), _) => id,
                    // Another finisher made it first.
                    (Err(_), Some(id)) if self.exists::<Subscription>(actor, id).await? => {
                        id.clone()
                    }
                    (Err(error), _) => return Err(error),
                }
            }
        };
        let (subscription, _) = payments
            .load_owned::<Subscription>(actor, "subscription", &subscription_id)
            .await?;
        let payment_status = match subscription.status {
            SubscriptionStatus::Active => PaymentStatus::Paid,
            SubscriptionStatus::Trialing => PaymentStatus::NoPaymentRequired,
            _ => PaymentStatus::Unpaid,
        };
        Ok(Completion {
            customer: Some(customer),
            payment_intent: None,
            subscription: Some(subscription_id),
            payment_method: Some(method_id.to_string()),
            payment_status,
        })
    }

    /// The open attempt of a subscription's first invoice, continued: the gateway is asked
    /// first, so a charge it approved is recorded, not sent again.
    async fn resume_first_charge(
        &self,
        actor: &Actor,
        subscription_id: &str,
        appended: &mut Vec<Appended>,
    ) -> Result<(), PaymentError> {
        let payments = self.billing.payments();
        let (subscription, _) = payments
            .load_owned::<Subscription>(actor, "subscription", subscription_id)
            .await?;
        let Some(invoice_id) = &subscription.latest_invoice else {
            return Ok(());
        };
        let (invoice, _) = payments
            .load_owned::<Invoice>(actor, "invoice", invoice_id)
            .await?;
        if let Some(intent_id) = &invoice.payment_intent {
            appended.extend(
                payments
                    .resume_open_attempt(actor, intent_id, false)
                    .await?,
            );
        }
        Ok(())
    }

    async fn complete(
        &self,
        actor: &Actor,
        session: &CheckoutSession,
        completion: Completion,
        at: i64,
    ) -> Result<Vec<Appended>, PaymentError> {
        let executed = self
            .billing
            .payments()
            .bus()
            .execute::<CheckoutSession>(
                &session.id,
                CheckoutSessionCommand::Complete { completion, at },
                &(),
                &actor.metadata(),
            )
            .await
            .map_err(PaymentError::from)?;
        Ok(executed.appended)
    }
}

/// A genuine result must still be for what this session asked: the action, the amount and
/// the currency (all inside the signature, so only a mix-up or a leaked secret gets here).
fn check_matches(session: &CheckoutSession, response: &GatewayResponse) -> Result<(), ReturnError> {
    let (action, amount) = match session.mode {
        SessionMode::Payment => ("SALE", session.amount_total()),
        SessionMode::Subscription | SessionMode::Setup => ("VERIFY", 0),
    };
    if response.action() != Some(action) {
        return Err(ReturnError::Mismatch(format!(
            "action {:?}, expected {action}",
            response.action()
        )));
    }
    let returned = response.amount_minor();
    if returned != u64::try_from(amount).ok() {
        return Err(ReturnError::Mismatch(format!(
            "amount {returned:?}, expected {amount}"
        )));
    }
    let currency = session.currency().unwrap_or(Currency::GBP);
    let returned_currency = response.get("currencyCode").unwrap_or("");
    if returned_currency != currency.numeric_code().to_string()
        && !returned_currency.eq_ignore_ascii_case(currency.as_str())
    {
        return Err(ReturnError::Mismatch(format!(
            "currency {returned_currency:?}, expected {currency}"
        )));
    }
    Ok(())
}

/// What Stripe shows of the card, from the gateway's result: the hosted page took the
/// number, so we only ever see the mask, the scheme and the expiry.
fn card_from_response(project: &str, response: &GatewayResponse) -> CardSummary {
    use sha2::{Digest, Sha256};
    let brand = response
        .card_scheme()
        .map(CardBrand::from_scheme_name)
        .unwrap_or(CardBrand::Unknown);
    let exp_month = response
        .get("cardExpiryMonth")
        .and_then(|month| month.parse::<u8>().ok())
        .unwrap_or(12);
    let exp_year = response
        .get("cardExpiryYear")
        .and_then(|year| year.parse::<u16>().ok())
        .map(|year| if year < 100 { 2000 + year } else { year })
        .unwrap_or(2034);
    let mask = response.card_number_mask().unwrap_or("");
    let digest = Sha256::digest(format!(
        "calmony-hosted-card\0{project}\0{mask}\0{exp_month}\0{exp_year}"
    ));
    CardSummary {
        brand: brand.stripe_brand().to_string(),
        last4: response.card_last4().unwrap_or("0000").to_string(),
        exp_month,
        exp_year,
        funding: "credit".into(),
        fingerprint: hex::encode(&digest[..8]),
    }
}
