//! The Direct Integration client: builds each request as a field list, signs it, POSTs it,
//! verifies the signed answer and hands back a typed [`GatewayResponse`].

use std::fmt;
use std::time::Duration;

use tracing::instrument;

use crate::card::{CardDetails, Cvv};
use crate::codes::TransactionState;
use crate::fields::Fields;
use crate::hosted::{HostedPaymentForm, HostedPaymentRequest};
use crate::response::{GatewayResponse, MalformedResponse};
use crate::signature::{self, SignatureError, SIGNATURE_FIELD};

/// The merchant account's signature secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct MerchantSecret(String);

impl MerchantSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MerchantSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MerchantSecret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// How long to wait for the TCP/TLS connection. A request that fails here was never sent.
    pub connect_timeout_ms: u64,
    /// The whole request, from connecting to the last byte of the answer.
    pub request_timeout_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// How to reach and authenticate to one Cardstream merchant account. The URLs are
/// configurable because white labels and accounts get their own hosts (§1.1). Deserialisable
/// so that the binary can read it with the rest of its configuration; `Client::new`
/// validates it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Config {
    /// e.g. `https://gateway.cardstream.com/direct/`
    pub direct_url: String,
    /// e.g. `https://gateway.cardstream.com/hosted/`
    pub hosted_url: String,
    pub merchant_id: String,
    pub secret: MerchantSecret,
    /// The merchant's location (`countryCode`), ISO-3166 numeric or alpha; `826` is the UK.
    pub country_code: String,
    #[serde(default)]
    pub timeouts: Timeouts,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Cardstream client configuration: {0}")]
    Configuration(String),
    /// The connection was never made, so the gateway cannot have acted on the request.
    #[error("could not connect to the Cardstream gateway")]
    Unreachable(#[source] reqwest::Error),
    /// The request may have reached the gateway and been processed; resolve it with
    /// [`Client::query_by_transaction_unique`] before retrying.
    #[error("the Cardstream gateway's answer was lost; the request may have been processed")]
    OutcomeUnknown(#[source] reqwest::Error),
    /// Errors come back as HTTP 200; any other status means the gateway (or a proxy in front of
    /// it) is down or in maintenance (§0.5).
    #[error("the Cardstream gateway answered HTTP {status}")]
    HttpStatus { status: u16 },
    #[error("the Cardstream response's signature was refused: {0}")]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Malformed(#[from] MalformedResponse),
    /// A correctly signed hosted result that belongs to another payment (a replay).
    #[error("the hosted result is for transactionUnique {received:?}, not {expected:?}")]
    UnexpectedTransaction {
        expected: String,
        received: Option<String>,
    },
    /// [`Client::refund`] found the transaction in a state that cannot be refunded.
    #[error("transaction {xref} is {state:?} and cannot be refunded")]
    NotRefundable {
        xref: String,
        state: Option<TransactionState>,
    },
}

impl ClientError {
    /// True when the gateway may have acted on the request although we did not get (or could
    /// not trust) its answer. The caller must QUERY before trying again.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Self::OutcomeUnknown(_) | Self::Signature(_) | Self::Malformed(_) => true,
            // 503 is the documented maintenance answer, given before any processing.
            Self::HttpStatus { status } => *status != 503,
            Self::Configuration(_)
            | Self::Unreachable(_)
            | Self::UnexpectedTransaction { .. }
            | Self::NotRefundable { .. } => false,
        }
    }
}

/// Whether an authorisation is captured at once or held for a later `CAPTURE` or `CANCEL`
/// (Stripe's `capture_method=manual`). `PREAUTH` is not a hold (§0.1); a held payment is a
/// `SALE` with `captureDelay=-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    Automatic,
    Manual,
}

/// How an initial customer-initiated transaction deals with 3-D Secure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreeDSecure {
    /// `threeDSRequired=N`: no authentication (e.g. a MOTO-like flow, or tests).
    Skip,
    /// Whatever the merchant account is configured to do.
    AccountDefault,
    /// Authenticate the cardholder in this browser; a challenge comes back as 65802.
    Browser(BrowserDetails),
}

/// The cardholder's browser, for 3-D Secure v2 (§1.7 step 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrowserDetails {
    /// Where the ACS posts its answer (`threeDSRedirectURL`).
    pub redirect_url: String,
    /// The cardholder's IP address (`remoteAddress`).
    pub remote_address: String,
    pub user_agent: String,
    pub accept_header: String,
    pub accept_language: String,
    /// `Date.getTimezoneOffset()` in minutes.
    pub time_zone_offset_minutes: i32,
    /// `WxHxDepth`, e.g. `1920x1080x24`.
    pub screen_resolution: String,
    /// `javascript` or `javascript,java`.
    pub capabilities: String,
}

/// Credentials-on-file agreement for an initial transaction (`rtAgreementType`, §1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredCardAgreement {
    CardOnFile,
    Recurring,
    Instalment,
}

impl StoredCardAgreement {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::CardOnFile => "cardonfile",
            Self::Recurring => "recurring",
            Self::Instalment => "instalment",
        }
    }
}

/// Billing details, used by AVS. All optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Newlines separate lines.
    pub address: Option<String>,
    pub postcode: Option<String>,
    pub town: Option<String>,
    pub country_code: Option<String>,
}

impl CustomerDetails {
    pub(crate) fn add_to(&self, fields: &mut Fields) {
        fields.set_optional("customerName", self.name.clone());
        fields.set_optional("customerEmail", self.email.clone());
        fields.set_optional("customerPhone", self.phone.clone());
        fields.set_optional("customerAddress", self.address.clone());
        // The guide's error table spells it `customerPostcode`; Cardstream's own samples send
        // `customerPostCode` (§1.1). We follow the guide; the simulator accepts both.
        fields.set_optional("customerPostcode", self.postcode.clone());
        fields.set_optional("customerTown", self.town.clone());
        fields.set_optional("customerCountryCode", self.country_code.clone());
    }
}

/// A zero-amount account check that tokenises a card: card details in, `xref` out.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub card: CardDetails,
    pub currency_code: String,
    pub transaction_unique: String,
    pub order_ref: Option<String>,
    pub customer: CustomerDetails,
    pub three_d_secure: ThreeDSecure,
    /// Set when the card is being stored for later use (it usually is).
    pub agreement: Option<StoredCardAgreement>,
}

/// What pays for a `SALE`.
#[derive(Debug, Clone)]
pub enum PaymentSource {
    /// A card typed by the customer now (customer-initiated, `type=1`).
    Card(CardDetails),
    /// The customer is present and pays with a stored card: `xref` plus a fresh CVV, because
    /// the gateway never stores CVVs (`type=1`).
    StoredCardCustomerPresent { xref: String, cvv: Option<Cvv> },
    /// A merchant-initiated recurring or instalment payment (a renewal): continuous authority,
    /// `type=9`, `rtAgreementType=recurring`. `xref` may be the initial CIT or the latest MIT;
    /// always store the newest xref the response returns.
    StoredCardRecurring { xref: String },
    /// A merchant-initiated payment outside a schedule (`type=2`, `rtAgreementType=unscheduled`).
    StoredCardUnscheduled { xref: String },
}

#[derive(Debug, Clone)]
pub struct SaleRequest {
    pub source: PaymentSource,
    pub amount_minor: u64,
    pub currency_code: String,
    /// Our id for this attempt: part of the gateway's duplicate check and the key a recovery
    /// worker queries by, so it must be unique per attempt and recorded before sending.
    pub transaction_unique: String,
    pub order_ref: Option<String>,
    pub capture: CaptureMode,
    /// Only used for customer-initiated sources.
    pub three_d_secure: ThreeDSecure,
    pub customer: CustomerDetails,
    /// Set on an initial CIT that stores the card for later MITs.
    pub agreement: Option<StoredCardAgreement>,
    /// `duplicateDelay` in seconds (gateway default 300).
    pub duplicate_delay_seconds: Option<u32>,
}

/// How [`Client::refund`] carried out a refund, which depends on the settlement state (§0.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundMethod {
    /// Full refund before settlement: the transaction was cancelled.
    Cancelled,
    /// Partial refund before settlement: the transaction was re-captured for less.
    CaptureReduced,
    /// After settlement: a `REFUND_SALE` transaction (it has its own xref).
    RefundSale,
}

#[derive(Debug, Clone)]
pub struct RefundResult {
    pub method: RefundMethod,
    pub response: GatewayResponse,
}

/// A Cardstream Direct Integration client for one merchant account.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Config,
}

impl Client {
    pub fn new(config: Config) -> Result<Self, ClientError> {
        if config.merchant_id.is_empty() {
            return Err(ClientError::Configuration(
                "merchant_id is empty".to_string(),
            ));
        }
        if config.secret.expose().is_empty() {
            // Calmony always signs: an unsigned account would let anyone forge results.
            return Err(ClientError::Configuration("secret is empty".to_string()));
        }
        for (name, url) in [
            ("direct_url", &config.direct_url),
            ("hosted_url", &config.hosted_url),
        ] {
            if reqwest::Url::parse(url).is_err() {
                return Err(ClientError::Configuration(format!(
                    "{name} {url:?} is not a URL"
                )));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.timeouts.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeouts.request_timeout_ms))
            .build()
            .map_err(|error| ClientError::Configuration(format!("HTTP client: {error}")))?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `VERIFY`: checks the card with a zero amount and returns its `xref` for later sales.
    #[instrument(skip(self, request), fields(transaction_unique = %request.transaction_unique))]
    pub async fn verify(&self, request: &VerifyRequest) -> Result<GatewayResponse, ClientError> {
        let mut fields = self.new_request("VERIFY");
        fields.set("type", "1");
        fields.set("amount", "0");
        fields.set("currencyCode", request.currency_code.to_ascii_uppercase());
        fields.set("countryCode", self.config.country_code.clone());
        fields.set("transactionUnique", request.transaction_unique.clone());
        fields.set_optional("orderRef", request.order_ref.clone());
        add_card(&mut fields, &request.card);
        request.customer.add_to(&mut fields);
        add_three_d_secure(&mut fields, &request.three_d_secure);
        fields.set_optional(
            "rtAgreementType",
            request.agreement.map(StoredCardAgreement::as_str),
        );
        self.send(fields).await
    }

    /// `SALE`, with a new card or a stored one (`xref`), captured at once or held.
    #[instrument(skip(self, request), fields(transaction_unique = %request.transaction_unique, amount_minor = request.amount_minor))]
    pub async fn sale(&self, request: &SaleRequest) -> Result<GatewayResponse, ClientError> {
        let mut fields = self.new_request("SALE");
        let customer_initiated = matches!(
            request.source,
            PaymentSource::Card(_) | PaymentSource::StoredCardCustomerPresent { .. }
        );
        match &request.source {
            PaymentSource::Card(card) => {
                fields.set("type", "1");
                add_card(&mut fields, card);
            }
            PaymentSource::StoredCardCustomerPresent { xref, cvv } => {
                fields.set("type", "1");
                fields.set("xref", xref.clone());
                fields.set_optional("cardCVV", cvv.as_ref().map(|cvv| cvv.expose().to_string()));
            }
            PaymentSource::StoredCardRecurring { xref } => {
                fields.set("type", "9");
                fields.set("xref", xref.clone());
                fields.set("rtAgreementType", "recurring");
                // No CVV exists for a renewal; Cardstream's own renewal code turns the check off.
                fields.set("avscv2CheckRequired", "N");
            }
            PaymentSource::StoredCardUnscheduled { xref } => {
                fields.set("type", "2");
                fields.set("xref", xref.clone());
                fields.set("rtAgreementType", "unscheduled");
                fields.set("avscv2CheckRequired", "N");
            }
        }
        fields.set("amount", request.amount_minor.to_string());
        fields.set("currencyCode", request.currency_code.to_ascii_uppercase());
        fields.set("countryCode", self.config.country_code.clone());
        fields.set("transactionUnique", request.transaction_unique.clone());
        fields.set_optional("orderRef", request.order_ref.clone());
        // Sent explicitly either way: a repeat on an xref clones every field it does not
        // send, so leaving it out would copy a held original's `-1` into a renewal.
        fields.set(
            "captureDelay",
            match request.capture {
                CaptureMode::Automatic => "0",
                CaptureMode::Manual => "-1",
            },
        );
        if customer_initiated {
            add_three_d_secure(&mut fields, &request.three_d_secure);
            fields.set_optional(
                "rtAgreementType",
                request.agreement.map(StoredCardAgreement::as_str),
            );
        }
        request.customer.add_to(&mut fields);
        fields.set_optional(
            "duplicateDelay",
            request
                .duplicate_delay_seconds
                .map(|seconds| seconds.to_string()),
        );
        self.send(fields).await
    }

    /// `CAPTURE` a held authorisation, in full (`None`) or for a lower amount.
    #[instrument(skip(self))]
    pub async fn capture(
        &self,
        xref: &str,
        amount_minor: Option<u64>,
    ) -> Result<GatewayResponse, ClientError> {
        let mut fields = self.new_request("CAPTURE");
        fields.set("xref", xref);
        fields.set_optional("amount", amount_minor.map(|amount| amount.to_string()));
        self.send(fields).await
    }

    /// `CANCEL` an authorised, unsettled transaction. Irreversible.
    #[instrument(skip(self))]
    pub async fn cancel(&self, xref: &str) -> Result<GatewayResponse, ClientError> {
        let mut fields = self.new_request("CANCEL");
        fields.set("xref", xref);
        self.send(fields).await
    }

    /// `REFUND_SALE` of a settled sale, in full (`None`) or in part. Only valid once the sale
    /// is `accepted`; see [`Client::refund`] for the state-aware refund. `transaction_unique`
    /// keeps two equal partial refunds from being taken for a duplicate.
    #[instrument(skip(self))]
    pub async fn refund_sale(
        &self,
        xref: &str,
        amount_minor: Option<u64>,
        transaction_unique: &str,
    ) -> Result<GatewayResponse, ClientError> {
        let mut fields = self.new_request("REFUND_SALE");
        fields.set("xref", xref);
        fields.set_optional("amount", amount_minor.map(|amount| amount.to_string()));
        fields.set("transactionUnique", transaction_unique);
        self.send(fields).await
    }

    /// Refunds `amount_minor` of a sale the way Cardstream's own WooCommerce plugin does:
    /// QUERY the state first; before settlement a full refund is a `CANCEL` and a partial one
    /// a `CAPTURE` of the remainder; after settlement it is a `REFUND_SALE` (§0.2).
    #[instrument(skip(self))]
    pub async fn refund(
        &self,
        xref: &str,
        amount_minor: u64,
        transaction_unique: &str,
    ) -> Result<RefundResult, ClientError> {
        let query = self.query_by_xref(xref).await?;
        let received_minor = query
            .amount_received_minor()
            .or_else(|| query.amount_minor())
            .unwrap_or(0);
        match query.state() {
            Some(TransactionState::Approved | TransactionState::Captured) => {
                if amount_minor >= received_minor {
                    let response = self.cancel(xref).await?;
                    Ok(RefundResult {
                        method: RefundMethod::Cancelled,
                        response,
                    })
                } else {
                    let response = self
                        .capture(xref, Some(received_minor - amount_minor))
                        .await?;
                    Ok(RefundResult {
                        method: RefundMethod::CaptureReduced,
                        response,
                    })
                }
            }
            Some(TransactionState::Accepted) => {
                let response = self
                    .refund_sale(xref, Some(amount_minor), transaction_unique)
                    .await?;
                Ok(RefundResult {
                    method: RefundMethod::RefundSale,
                    response,
                })
            }
            state => Err(ClientError::NotRefundable {
                xref: xref.to_string(),
                state,
            }),
        }
    }

    /// `QUERY`: the stored transaction as if just performed, including its `state`.
    #[instrument(skip(self))]
    pub async fn query_by_xref(&self, xref: &str) -> Result<GatewayResponse, ClientError> {
        let mut fields = self.new_request("QUERY");
        fields.set("xref", xref);
        self.send(fields).await
    }

    /// `QUERY` by our own `transactionUnique`, for a recovery worker whose request's answer
    /// was lost (so it has no xref). The simulator supports this; the public guide documents
    /// QUERY by xref only, so against the real gateway this is UNCONFIRMED.
    #[instrument(skip(self))]
    pub async fn query_by_transaction_unique(
        &self,
        transaction_unique: &str,
    ) -> Result<GatewayResponse, ClientError> {
        let mut fields = self.new_request("QUERY");
        fields.set("transactionUnique", transaction_unique);
        self.send(fields).await
    }

    /// The 3-D Secure continuation (§1.7 step 4): `threeDSRef` plus every field the ACS
    /// posted to our `threeDSRedirectURL`, in the order posted. The answer may ask for
    /// another step (65802 again) or be final.
    #[instrument(skip(self, acs_fields))]
    pub async fn continue_three_d_secure(
        &self,
        three_ds_ref: &str,
        acs_fields: &[(String, String)],
    ) -> Result<GatewayResponse, ClientError> {
        let mut fields = Fields::new();
        fields.set("merchantID", self.config.merchant_id.clone());
        fields.set("threeDSRef", three_ds_ref);
        for (name, value) in acs_fields {
            fields.set(format!("threeDSResponse[{name}]"), value.clone());
        }
        self.send(fields).await
    }

    /// A signed form for the Hosted payment page: render `fields` as hidden inputs of a form
    /// that POSTs to `action_url`.
    pub fn hosted_payment_form(&self, request: &HostedPaymentRequest) -> HostedPaymentForm {
        let mut fields = Fields::new();
        fields.set("merchantID", self.config.merchant_id.clone());
        fields.set("countryCode", self.config.country_code.clone());
        request.add_to(&mut fields);
        let signature = signature::sign(&fields, self.config.secret.expose());
        fields.set(SIGNATURE_FIELD, signature);
        HostedPaymentForm {
            action_url: self.config.hosted_url.clone(),
            fields,
        }
    }

    /// Verifies the signed result the browser POSTs to `redirectURL` (or the gateway POSTs to
    /// `callbackURL`) and checks it belongs to the payment we started: a genuine result of
    /// another payment, replayed, is refused.
    pub fn verify_hosted_response(
        &self,
        body: &[u8],
        expected_transaction_unique: &str,
    ) -> Result<GatewayResponse, ClientError> {
        let response = self.verify_message(&Fields::parse(body))?;
        if response.transaction_unique() != Some(expected_transaction_unique) {
            return Err(ClientError::UnexpectedTransaction {
                expected: expected_transaction_unique.to_string(),
                received: response.transaction_unique().map(str::to_string),
            });
        }
        Ok(response)
    }

    /// Signs and sends any Direct request (the operations above are built on this). Card
    /// data in `fields` is never logged: `Fields`' `Debug` redacts it.
    #[instrument(skip(self, fields), fields(action = fields.get("action").unwrap_or("")))]
    pub async fn send(&self, mut fields: Fields) -> Result<GatewayResponse, ClientError> {
        // As the SDKs do: a re-sent response must not smuggle result fields into a request.
        for name in [
            "responseCode",
            "responseMessage",
            "responseStatus",
            "state",
            SIGNATURE_FIELD,
            "merchantAlias",
            "merchantID2",
        ] {
            fields.remove(name);
        }
        let signature = signature::sign(&fields, self.config.secret.expose());
        fields.set(SIGNATURE_FIELD, signature);
        let answer = self
            .http
            .post(&self.config.direct_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(fields.to_form_body())
            .send()
            .await
            .map_err(classify_transport_error)?;
        let status = answer.status();
        if !status.is_success() {
            return Err(ClientError::HttpStatus {
                status: status.as_u16(),
            });
        }
        // The example answer says `text/html` while the body is form-urlencoded (§1.1), so the
        // Content-Type is ignored.
        let body = answer.bytes().await.map_err(ClientError::OutcomeUnknown)?;
        let response = self.verify_message(&Fields::parse(&body))?;
        tracing::debug!(
            response_code = %response.response_code(),
            state = response.state().map(TransactionState::as_str).unwrap_or(""),
            "Cardstream answered"
        );
        Ok(response)
    }

    fn verify_message(&self, fields: &Fields) -> Result<GatewayResponse, ClientError> {
        let verified = signature::verify(fields, Some(self.config.secret.expose()))?;
        Ok(GatewayResponse::from_verified_fields(verified)?)
    }

    fn new_request(&self, action: &str) -> Fields {
        let mut fields = Fields::new();
        fields.set("merchantID", self.config.merchant_id.clone());
        fields.set("action", action);
        fields
    }
}

fn classify_transport_error(error: reqwest::Error) -> ClientError {
    if error.is_connect() || error.is_builder() {
        ClientError::Unreachable(error)
    } else {
        ClientError::OutcomeUnknown(error)
    }
}

fn add_card(fields: &mut Fields, card: &CardDetails) {
    fields.set("cardNumber", card.number());
    fields.set("cardExpiryMonth", card.expiry_month().to_string());
    fields.set(
        "cardExpiryYear",
        format!("{:02}", card.expiry_year_two_digits()),
    );
    fields.set_optional("cardCVV", card.cvv());
}

fn add_three_d_secure(fields: &mut Fields, three_d_secure: &ThreeDSecure) {
    match three_d_secure {
        ThreeDSecure::Skip => fields.set("threeDSRequired", "N"),
        ThreeDSecure::AccountDefault => {}
        ThreeDSecure::Browser(browser) => {
            // Explicit, so that a `threeDSRequired=N` cloned from an xref cannot switch it off.
            fields.set("threeDSRequired", "Y");
            fields.set("threeDSRedirectURL", browser.redirect_url.clone());
            fields.set("remoteAddress", browser.remote_address.clone());
            fields.set("deviceChannel", "browser");
            fields.set("deviceIdentity", browser.user_agent.clone());
            fields.set(
                "deviceTimeZone",
                browser.time_zone_offset_minutes.to_string(),
            );
            fields.set("deviceCapabilities", browser.capabilities.clone());
            fields.set("deviceScreenResolution", browser.screen_resolution.clone());
            fields.set("deviceAcceptContent", browser.accept_header.clone());
            fields.set("deviceAcceptLanguage", browser.accept_language.clone());
        }
    }
}
