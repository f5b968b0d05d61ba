//! A Checkout Session: an order a customer pays for (or a card they save) on our hosted
//! checkout page, which hands them to the card gateway's hosted payment page.
//!
//! The session is `open` until it is completed (the gateway's signed result came back, or
//! the test helper completed it) or it expires. Each session carries a one-time
//! `return_nonce`: it is the gateway transaction's `transactionUnique`, so a signed result
//! names the session it belongs to, and [`CheckoutSessionCommand::AcceptReturn`] consumes
//! it, so the same result posted twice is refused the second time.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::Metadata;
use crate::money::Currency;
use crate::payment_method::CardSummary;
use crate::price::Recurring;

/// The shortest and longest lifetime a session may be given (Stripe's bounds), and the
/// default.
pub const MIN_LIFETIME_SECONDS: i64 = 30 * 60;
pub const MAX_LIFETIME_SECONDS: i64 = 24 * 60 * 60;
/// Line items a session may carry.
pub const MAX_LINE_ITEMS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    #[default]
    Payment,
    Subscription,
    Setup,
}

impl SessionMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionMode::Payment => "payment",
            SessionMode::Subscription => "subscription",
            SessionMode::Setup => "setup",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    #[default]
    Open,
    Complete,
    Expired,
}

impl SessionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Complete => "complete",
            SessionStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    Unpaid,
    Paid,
    NoPaymentRequired,
}

impl PaymentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Unpaid => "unpaid",
            PaymentStatus::Paid => "paid",
            PaymentStatus::NoPaymentRequired => "no_payment_required",
        }
    }
}

/// One line of the order, resolved when the session is created: a catalog price's
/// amounts are copied in, so the order cannot change under the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// `li_…`
    pub id: String,
    /// The catalog price, when the line named one (`price`), not `price_data`.
    pub price: Option<String>,
    /// The catalog product, when the price belongs to one.
    pub product: Option<String>,
    pub product_name: String,
    pub currency: Currency,
    pub unit_amount: i64,
    pub quantity: i64,
    pub recurring: Option<Recurring>,
}

impl LineItem {
    pub fn amount(&self) -> i64 {
        self.unit_amount.saturating_mul(self.quantity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub session_id: String,
    pub livemode: bool,
    pub mode: SessionMode,
    pub line_items: Vec<LineItem>,
    /// Setup mode's currency (for the card check); otherwise the line items'.
    pub currency: Option<Currency>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub expires_at: i64,
    pub return_nonce: String,
    /// The customer's test clock: expiry follows it.
    pub test_clock: Option<String>,
    pub metadata: Metadata,
    pub at: i64,
}

/// What completing a session produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub customer: Option<String>,
    pub payment_intent: Option<String>,
    pub subscription: Option<String>,
    pub payment_method: Option<String>,
    pub payment_status: PaymentStatus,
}

/// What an accepted gateway result means, fixed when it is accepted: the card, and the ids
/// of everything completing the session will make. Kept in the session's stream so that a
/// completion cut short by a crash is finished later (a retried return, or the recovery
/// worker) with the same ids, so each object is made once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedResult {
    /// The gateway's token for the card (`xref`).
    pub gateway_token: String,
    pub authorization_code: Option<String>,
    pub card: CardSummary,
    /// `pm_…` to create for the card.
    pub payment_method: String,
    /// Payment mode: the `pi_…` that records the sale.
    pub payment_intent: Option<String>,
    /// Subscription mode without a customer: the `cus_…` to create.
    pub customer: Option<String>,
    /// Subscription mode: the `sub_…` to create.
    pub subscription: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutSessionCommand {
    Create(Box<NewSession>),
    /// The gateway's signed result came back with `nonce` as its `transactionUnique`.
    AcceptReturn {
        nonce: String,
        result: Box<AcceptedResult>,
        at: i64,
    },
    Complete {
        completion: Completion,
        at: i64,
    },
    Expire {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckoutSessionEvent {
    CheckoutSessionCreated {
        session_id: String,
        livemode: bool,
        mode: SessionMode,
        line_items: Vec<LineItem>,
        currency: Option<Currency>,
        customer: Option<String>,
        customer_email: Option<String>,
        success_url: String,
        cancel_url: Option<String>,
        expires_at: i64,
        return_nonce: String,
        test_clock: Option<String>,
        metadata: Metadata,
        created: i64,
    },
    CheckoutSessionReturnAccepted {
        at: i64,
        /// Absent from events of version 1.0 (before 1.1 a crash left such a session to
        /// expire); see `upcasters`.
        #[serde(default)]
        result: Option<Box<AcceptedResult>>,
    },
    CheckoutSessionCompleted {
        completion: Completion,
        at: i64,
    },
    CheckoutSessionExpired {
        at: i64,
    },
}

impl DomainEvent for CheckoutSessionEvent {
    fn event_type(&self) -> String {
        match self {
            CheckoutSessionEvent::CheckoutSessionCreated { .. } => "CheckoutSessionCreated",
            CheckoutSessionEvent::CheckoutSessionReturnAccepted { .. } => {
                "CheckoutSessionReturnAccepted"
            }
            CheckoutSessionEvent::CheckoutSessionCompleted { .. } => "CheckoutSessionCompleted",
            CheckoutSessionEvent::CheckoutSessionExpired { .. } => "CheckoutSessionExpired",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        match self {
            CheckoutSessionEvent::CheckoutSessionReturnAccepted { .. } => "1.1",
            _ => "1.0",
        }
        .to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutSessionError {
    #[error("checkout session already exists")]
    AlreadyExists,
    #[error("no such checkout session")]
    NotFound,
    #[error("line_items is required in {0} mode.")]
    LineItemsRequired(&'static str),
    #[error("line_items cannot be used in setup mode.")]
    LineItemsInSetupMode,
    #[error("A session may have at most {MAX_LINE_ITEMS} line items.")]
    TooManyLineItems,
    #[error("All line items must use the same currency.")]
    MixedCurrencies,
    #[error("Quantity must be at least 1 and the amount may not be negative.")]
    InvalidLine,
    #[error("You must provide at least one recurring price in subscription mode.")]
    NoRecurringPrice,
    #[error("Recurring prices can only be used in subscription mode.")]
    RecurringInPaymentMode,
    #[error("The total of a payment-mode session must be greater than zero.")]
    NothingToPay,
    #[error("expires_at must be between 30 minutes and 24 hours after the session is created.")]
    ExpiresAtOutOfRange,
    #[error("This Checkout Session is {0}; it can no longer be completed.")]
    NotOpen(&'static str),
    #[error("This Checkout Session has expired.")]
    PastExpiry,
    #[error("This payment result does not belong to this Checkout Session.")]
    NonceMismatch,
    #[error("This payment result was already received.")]
    ReturnAlreadyAccepted,
    #[error("This Checkout Session is finishing a payment and cannot be expired.")]
    FinishingPayment,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub livemode: bool,
    pub mode: SessionMode,
    pub line_items: Vec<LineItem>,
    pub currency: Option<Currency>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub expires_at: i64,
    pub return_nonce: String,
    pub return_accepted: bool,
    /// The accepted result's card and ids (`None` also for a 1.0 event).
    pub accepted: Option<AcceptedResult>,
    pub test_clock: Option<String>,
    pub status: SessionStatus,
    pub payment_status: PaymentStatus,
    pub payment_intent: Option<String>,
    pub subscription: Option<String>,
    pub payment_method: Option<String>,
    pub metadata: Metadata,
    pub created: i64,
    pub completed_at: Option<i64>,
}

impl CheckoutSession {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// The order's currency: the line items' (they share one), or setup mode's.
    pub fn currency(&self) -> Option<Currency> {
        self.line_items
            .first()
            .map(|line| line.currency)
            .or(self.currency)
    }

    /// What the customer pays now: every line in payment mode; in subscription mode, the
    /// first period of the recurring lines (the subscription's first invoice).
    pub fn amount_total(&self) -> i64 {
        match self.mode {
            SessionMode::Setup => 0,
            SessionMode::Payment | SessionMode::Subscription => self
                .line_items
                .iter()
                .map(LineItem::amount)
                .fold(0i64, i64::saturating_add),
        }
    }

    /// `success_url` with Stripe's `{CHECKOUT_SESSION_ID}` template filled in.
    pub fn success_url_for_redirect(&self) -> String {
        self.success_url.replace("{CHECKOUT_SESSION_ID}", &self.id)
    }
}

fn validate(session: &NewSession) -> Result<(), CheckoutSessionError> {
    use CheckoutSessionError as Error;
    let lifetime = session.expires_at - session.at;
    if !(MIN_LIFETIME_SECONDS..=MAX_LIFETIME_SECONDS).contains(&lifetime) {
        return Err(Error::ExpiresAtOutOfRange);
    }
    if session.line_items.len() > MAX_LINE_ITEMS {
        return Err(Error::TooManyLineItems);
    }
    if session
        .line_items
        .iter()
        .any(|line| line.quantity < 1 || line.unit_amount < 0)
    {
        return Err(Error::InvalidLine);
    }
    if let Some(first) = session.line_items.first() {
        if session
            .line_items
            .iter()
            .any(|line| line.currency != first.currency)
        {
            return Err(Error::MixedCurrencies);
        }
    }
    let recurring = session
        .line_items
        .iter()
        .any(|line| line.recurring.is_some());
    match session.mode {
        SessionMode::Setup if !session.line_items.is_empty() => Err(Error::LineItemsInSetupMode),
        SessionMode::Setup => Ok(()),
        SessionMode::Payment | SessionMode::Subscription if session.line_items.is_empty() => {
            Err(Error::LineItemsRequired(session.mode.as_str()))
        }
        SessionMode::Payment if recurring => Err(Error::RecurringInPaymentMode),
        SessionMode::Payment
            if session.line_items.iter().map(LineItem::amount).sum::<i64>() <= 0 =>
        {
            Err(Error::NothingToPay)
        }
        SessionMode::Subscription if !recurring => Err(Error::NoRecurringPrice),
        SessionMode::Payment | SessionMode::Subscription => Ok(()),
    }
}

impl Aggregate for CheckoutSession {
    const TYPE: &'static str = "checkout_session";
    type Command = CheckoutSessionCommand;
    type Event = CheckoutSessionEvent;
    type Error = CheckoutSessionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use CheckoutSessionError as Error;
        match command {
            CheckoutSessionCommand::Create(session) => {
                if self.exists() {
                    return Err(Error::AlreadyExists);
                }
                validate(&session)?;
                let session = *session;
                sink.write(
                    CheckoutSessionEvent::CheckoutSessionCreated {
                        session_id: session.session_id,
                        livemode: session.livemode,
                        mode: session.mode,
                        line_items: session.line_items,
                        currency: session.currency,
                        customer: session.customer,
                        customer_email: session.customer_email,
                        success_url: session.success_url,
                        cancel_url: session.cancel_url,
                        expires_at: session.expires_at,
                        return_nonce: session.return_nonce,
                        test_clock: session.test_clock,
                        metadata: session.metadata,
                        created: session.at,
                    },
                    self,
                )
                .await;
            }
            CheckoutSessionCommand::AcceptReturn { nonce, result, at } => {
                self.require_open()?;
                if at >= self.expires_at {
                    return Err(Error::PastExpiry);
                }
                if nonce != self.return_nonce {
                    return Err(Error::NonceMismatch);
                }
                if self.return_accepted {
                    return Err(Error::ReturnAlreadyAccepted);
                }
                sink.write(
                    CheckoutSessionEvent::CheckoutSessionReturnAccepted {
                        at,
                        result: Some(result),
                    },
                    self,
                )
                .await;
            }
            CheckoutSessionCommand::Complete { completion, at } => {
                self.require_open()?;
                sink.write(
                    CheckoutSessionEvent::CheckoutSessionCompleted { completion, at },
                    self,
                )
                .await;
            }
            CheckoutSessionCommand::Expire { at } => {
                self.require_open()?;
                // A result the gateway already approved is being recorded: let it finish.
                if self.return_accepted {
                    return Err(Error::FinishingPayment);
                }
                sink.write(CheckoutSessionEvent::CheckoutSessionExpired { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CheckoutSessionEvent::CheckoutSessionCreated {
                session_id,
                livemode,
                mode,
                line_items,
                currency,
                customer,
                customer_email,
                success_url,
                cancel_url,
                expires_at,
                return_nonce,
                test_clock,
                metadata,
                created,
            } => {
                self.id = session_id;
                self.livemode = livemode;
                self.mode = mode;
                self.line_items = line_items;
                self.currency = currency;
                self.customer = customer;
                self.customer_email = customer_email;
                self.success_url = success_url;
                self.cancel_url = cancel_url;
                self.expires_at = expires_at;
                self.return_nonce = return_nonce;
                self.test_clock = test_clock;
                self.metadata = metadata;
                self.created = created;
                self.status = SessionStatus::Open;
                self.payment_status = if mode == SessionMode::Setup {
                    PaymentStatus::NoPaymentRequired
                } else {
                    PaymentStatus::Unpaid
                };
            }
            CheckoutSessionEvent::CheckoutSessionReturnAccepted { result, .. } => {
                self.return_accepted = true;
                self.accepted = result.map(|result| *result);
            }
            CheckoutSessionEvent::CheckoutSessionCompleted { completion, at } => {
                self.status = SessionStatus::Complete;
                self.payment_status = completion.payment_status;
                if completion.customer.is_some() {
                    self.customer = completion.customer;
                }
                self.payment_intent = completion.payment_intent;
                self.subscription = completion.subscription;
                self.payment_method = completion.payment_method;
                self.completed_at = Some(at);
            }
            CheckoutSessionEvent::CheckoutSessionExpired { .. } => {
                self.status = SessionStatus::Expired;
            }
        }
    }
}

impl CheckoutSession {
    fn require_open(&self) -> Result<(), CheckoutSessionError> {
        if !self.exists() {
            return Err(CheckoutSessionError::NotFound);
        }
        if self.status != SessionStatus::Open {
            return Err(CheckoutSessionError::NotOpen(self.status.as_str()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Framework = TestFramework<CheckoutSession>;

    const NOW: i64 = 1_700_000_000;

    fn line(amount: i64, recurring: bool) -> LineItem {
        LineItem {
            id: "li_1".into(),
            price: None,
            product: None,
            product_name: "T-shirt".into(),
            currency: Currency::GBP,
            unit_amount: amount,
            quantity: 2,
            recurring: recurring.then_some(Recurring {
                interval: crate::price::Interval::Month,
                interval_count: 1,
            }),
        }
    }

    fn new_session(mode: SessionMode, lines: Vec<LineItem>) -> NewSession {
        NewSession {
            session_id: "cs_test_1".into(),
            livemode: false,
            mode,
            line_items: lines,
            currency: None,
            customer: None,
            customer_email: None,
            success_url: "https://example.com/ok?session={CHECKOUT_SESSION_ID}".into(),
            cancel_url: None,
            expires_at: NOW + MAX_LIFETIME_SECONDS,
            return_nonce: "csn_1".into(),
            test_clock: None,
            metadata: Metadata::new(),
            at: NOW,
        }
    }

    fn created(session: NewSession) -> CheckoutSessionEvent {
        CheckoutSessionEvent::CheckoutSessionCreated {
            session_id: session.session_id,
            livemode: session.livemode,
            mode: session.mode,
            line_items: session.line_items,
            currency: session.currency,
            customer: session.customer,
            customer_email: session.customer_email,
            success_url: session.success_url,
            cancel_url: session.cancel_url,
            expires_at: session.expires_at,
            return_nonce: session.return_nonce,
            test_clock: session.test_clock,
            metadata: session.metadata,
            created: session.at,
        }
    }

    #[test]
    fn expires_at_must_be_between_30_minutes_and_24_hours() {
        for (lifetime, allowed) in [
            (MIN_LIFETIME_SECONDS - 1, false),
            (MIN_LIFETIME_SECONDS, true),
            (MAX_LIFETIME_SECONDS, true),
            (MAX_LIFETIME_SECONDS + 1, false),
        ] {
            let mut session = new_session(SessionMode::Payment, vec![line(500, false)]);
            session.expires_at = NOW + lifetime;
            let result = Framework::with(())
                .given_no_previous_events()
                .when(CheckoutSessionCommand::Create(Box::new(session.clone())));
            if allowed {
                result.then_expect_events(vec![created(session)]);
            } else {
                result.then_expect_error(CheckoutSessionError::ExpiresAtOutOfRange);
            }
        }
    }

    #[test]
    fn modes_check_their_line_items() {
        Framework::with(())
            .given_no_previous_events()
            .when(CheckoutSessionCommand::Create(Box::new(new_session(
                SessionMode::Subscription,
                vec![line(500, false)],
            ))))
            .then_expect_error(CheckoutSessionError::NoRecurringPrice);
        Framework::with(())
            .given_no_previous_events()
            .when(CheckoutSessionCommand::Create(Box::new(new_session(
                SessionMode::Payment,
                vec![line(500, true)],
            ))))
            .then_expect_error(CheckoutSessionError::RecurringInPaymentMode);
        Framework::with(())
            .given_no_previous_events()
            .when(CheckoutSessionCommand::Create(Box::new(new_session(
                SessionMode::Payment,
                vec![],
            ))))
            .then_expect_error(CheckoutSessionError::LineItemsRequired("payment"));
    }

    fn accepted() -> AcceptedResult {
        AcceptedResult {
            gateway_token: "xref_1".into(),
            authorization_code: Some("12345".into()),
            card: CardSummary {
                brand: "visa".into(),
                last4: "0821".into(),
                exp_month: 12,
                exp_year: 2034,
                funding: "credit".into(),
                fingerprint: "f1".into(),
            },
            payment_method: "pm_1".into(),
            payment_intent: Some("pi_1".into()),
            customer: None,
            subscription: None,
        }
    }

    #[test]
    fn an_accepted_result_is_kept_for_finishing_later() {
        let session = new_session(SessionMode::Payment, vec![line(500, false)]);
        Framework::with(())
            .given(vec![created(session.clone())])
            .when(CheckoutSessionCommand::AcceptReturn {
                nonce: "csn_1".into(),
                result: Box::new(accepted()),
                at: NOW + 10,
            })
            .then_expect_events(vec![CheckoutSessionEvent::CheckoutSessionReturnAccepted {
                at: NOW + 10,
                result: Some(Box::new(accepted())),
            }]);
        let mut state = CheckoutSession::default();
        state.apply(created(session));
        // A 1.0 event (no result) still reads, as accepted without what finishing needs.
        let old: CheckoutSessionEvent =
            serde_json::from_str(r#"{"CheckoutSessionReturnAccepted":{"at":1700000010}}"#)
                .expect("a 1.0 event");
        state.apply(old);
        assert!(state.return_accepted && state.accepted.is_none());
        state.apply(CheckoutSessionEvent::CheckoutSessionReturnAccepted {
            at: NOW + 10,
            result: Some(Box::new(accepted())),
        });
        assert_eq!(state.accepted, Some(accepted()));
    }

    #[test]
    fn a_return_is_accepted_once_and_only_with_the_sessions_nonce() {
        let session = new_session(SessionMode::Payment, vec![line(500, false)]);
        Framework::with(())
            .given(vec![created(session.clone())])
            .when(CheckoutSessionCommand::AcceptReturn {
                nonce: "csn_other".into(),
                result: Box::new(accepted()),
                at: NOW + 10,
            })
            .then_expect_error(CheckoutSessionError::NonceMismatch);
        Framework::with(())
            .given(vec![
                created(session.clone()),
                CheckoutSessionEvent::CheckoutSessionReturnAccepted {
                    at: NOW + 10,
                    result: Some(Box::new(accepted())),
                },
            ])
            .when(CheckoutSessionCommand::AcceptReturn {
                nonce: "csn_1".into(),
                result: Box::new(accepted()),
                at: NOW + 11,
            })
            .then_expect_error(CheckoutSessionError::ReturnAlreadyAccepted);
        Framework::with(())
            .given(vec![
                created(session),
                CheckoutSessionEvent::CheckoutSessionExpired { at: NOW + 10 },
            ])
            .when(CheckoutSessionCommand::AcceptReturn {
                nonce: "csn_1".into(),
                result: Box::new(accepted()),
                at: NOW + 11,
            })
            .then_expect_error(CheckoutSessionError::NotOpen("expired"));
    }

    #[test]
    fn the_success_url_names_the_session() {
        let mut state = CheckoutSession::default();
        state.apply(created(new_session(
            SessionMode::Payment,
            vec![line(500, false)],
        )));
        assert_eq!(
            state.success_url_for_redirect(),
            "https://example.com/ok?session=cs_test_1"
        );
        assert_eq!(state.amount_total(), 1000);
    }
}
