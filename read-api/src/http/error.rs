//! The one error type of the HTTP edge: every failure a handler or middleware can report,
//! rendered as Stripe's error envelope `{"error": {"type", "code", "message", "param", …}}`
//! with the status the official SDKs expect (they choose the exception class from the
//! status: 400/404 `InvalidRequestError`, 401 `AuthenticationError`, 402 `CardError`,
//! 409 and 5xx retried, 429 `RateLimitError`).
//!
//! Constructors are named by meaning (`ApiError::missing("customer", id)`), so a handler
//! never picks a status or a `type` by hand. Internal errors log their cause with
//! `tracing` (inside the request span, so with the request id) and answer a generic
//! message: the cause never reaches the client.

use std::fmt;
use std::time::Duration;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Stripe's `error.type` (the values of the current spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    ApiError,
    CardError,
    IdempotencyError,
    InvalidRequestError,
}

/// The object under `"error"` in the envelope. Absent fields are omitted, as Stripe does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice_code: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    /// The PaymentIntent as rendered by its resource (card errors on confirm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ErrorObject,
}

/// A failure answered in Stripe's envelope. Handlers return `Result<_, ApiError>`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    // Boxed: handlers return `Result<_, ApiError>` everywhere, so the error stays small.
    object: Box<ErrorObject>,
    retry_after_seconds: Option<u64>,
}

/// A card failure (HTTP 402, `type=card_error`): a decline, an expired card, a wrong CVC,
/// or a payment that needs authentication. Build with [`CardError::declined`] or
/// [`CardError::new`], then attach what the client needs to recover.
#[derive(Debug, Clone, PartialEq)]
pub struct CardError {
    /// `card_declined`, `expired_card`, `incorrect_cvc`, `authentication_required`, …
    pub code: String,
    /// The issuer's reason when `code` is `card_declined`: `generic_decline`,
    /// `insufficient_funds`, `do_not_honor`, …
    pub decline_code: Option<String>,
    pub advice_code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    pub charge: Option<String>,
    pub payment_intent: Option<serde_json::Value>,
    pub payment_method: Option<serde_json::Value>,
}

impl CardError {
    /// A decline (`code=card_declined`) with the issuer's `decline_code` and Stripe's
    /// customer-facing message for it.
    pub fn declined(decline_code: &str) -> CardError {
        let message = match decline_code {
            "insufficient_funds" => "Your card has insufficient funds.",
            "lost_card" | "stolen_card" | "generic_decline" | "do_not_honor" => {
                "Your card was declined."
            }
            "expired_card" => "Your card has expired.",
            "incorrect_cvc" => "Your card's security code is incorrect.",
            "processing_error" => {
                "An error occurred while processing your card. Try again in a little bit."
            }
            _ => "Your card was declined.",
        };
        CardError {
            decline_code: Some(decline_code.to_owned()),
            ..CardError::new("card_declined", message)
        }
    }

    /// Any other card failure, e.g. `CardError::new("expired_card", "Your card has expired.")`.
    pub fn new(code: &str, message: &str) -> CardError {
        CardError {
            code: code.to_owned(),
            decline_code: None,
            advice_code: None,
            message: message.to_owned(),
            param: None,
            charge: None,
            payment_intent: None,
            payment_method: None,
        }
    }

    pub fn with_charge(mut self, charge_id: impl Into<String>) -> CardError {
        self.charge = Some(charge_id.into());
        self
    }

    /// The PaymentIntent object, as its resource renders it (Stripe embeds it whole).
    pub fn with_payment_intent(mut self, payment_intent: serde_json::Value) -> CardError {
        self.payment_intent = Some(payment_intent);
        self
    }

    pub fn with_payment_method(mut self, payment_method: serde_json::Value) -> CardError {
        self.payment_method = Some(payment_method);
        self
    }
}

impl ApiError {
    /// Any status, type and message. Prefer a named constructor below.
    pub fn new(status: StatusCode, error_type: ErrorType, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            object: Box::new(ErrorObject {
                error_type,
                code: None,
                decline_code: None,
                advice_code: None,
                message: message.into(),
                param: None,
                doc_url: None,
                charge: None,
                payment_intent: None,
                payment_method: None,
            }),
            retry_after_seconds: None,
        }
    }

    /// 400 `invalid_request_error` with no parameter to blame.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequestError,
            message,
        )
    }

    /// 400 `invalid_request_error` about one parameter (`param` is its full bracketed
    /// name, e.g. `items[0][price]`).
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::invalid_request(message).with_param(param)
    }

    /// 400 `parameter_missing`: "Missing required param: amount."
    pub fn missing_param(param: impl Into<String>) -> ApiError {
        let param = param.into();
        ApiError::invalid_param(param.clone(), format!("Missing required param: {param}."))
            .with_code("parameter_missing")
    }

    /// 400 `parameter_unknown`: "Received unknown parameter: foo[bar]"
    pub fn unknown_param(param: impl Into<String>) -> ApiError {
        let param = param.into();
        ApiError::invalid_param(
            param.clone(),
            format!("Received unknown parameter: {param}"),
        )
        .with_code("parameter_unknown")
    }

    /// 400 `parameter_invalid_empty`: an empty string (which means "unset") was sent for a
    /// parameter that cannot be unset.
    pub fn empty_param(param: impl Into<String>) -> ApiError {
        let param = param.into();
        ApiError::invalid_param(
            param.clone(),
            format!(
                "You passed an empty string for '{param}'. We assume empty values are an \
                 attempt to unset a parameter; however '{param}' cannot be unset. You should \
                 remove '{param}' from your request or supply a non-empty value."
            ),
        )
        .with_code("parameter_invalid_empty")
    }

    /// 400 `parameter_invalid_integer`: "Invalid integer: abc"
    pub fn invalid_integer(param: impl Into<String>, value: &str) -> ApiError {
        ApiError::invalid_param(param, format!("Invalid integer: {}", shorten(value)))
            .with_code("parameter_invalid_integer")
    }

    /// 400 `parameters_exclusive`: two parameters that may not be sent together.
    pub fn exclusive_params(first: &str, second: &str) -> ApiError {
        ApiError::invalid_param(
            first.to_owned(),
            format!("You may only specify one of these parameters: {first}, {second}."),
        )
        .with_code("parameters_exclusive")
    }

    /// 401: no `Authorization` header, or one without a key in it.
    pub fn no_api_key() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::InvalidRequestError,
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY').",
        )
    }

    /// 401: a key we do not know. The message shows only the mode prefix and the last four
    /// characters: "Invalid API Key provided: sk_test_****abcd".
    pub fn invalid_api_key(secret: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::InvalidRequestError,
            format!("Invalid API Key provided: {}", redact_api_key(secret)),
        )
    }

    /// 402 `card_error`.
    pub fn card_error(card: CardError) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            ErrorType::CardError,
            card.message,
        )
        .with_code(card.code);
        error.object.decline_code = card.decline_code;
        error.object.advice_code = card.advice_code;
        error.object.param = card.param;
        error.object.charge = card.charge;
        error.object.payment_intent = card.payment_intent;
        error.object.payment_method = card.payment_method;
        error
    }

    /// 404 `resource_missing`: "No such customer: 'cus_x'" with `param=id`. `kind` is
    /// written as Stripe writes it for that resource (`customer`, `payment_intent`, …).
    pub fn missing(kind: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequestError,
            format!("No such {kind}: '{}'", shorten(id)),
        )
        .with_code("resource_missing")
        .with_param("id")
    }

    /// 400 `resource_missing` about a parameter that names an object this project and mode
    /// do not have: "No such product: 'prod_x'" with `param=product`.
    pub fn missing_reference(param: impl Into<String>, kind: &str, id: &str) -> ApiError {
        ApiError::invalid_param(param, format!("No such {kind}: '{}'", shorten(id)))
            .with_code("resource_missing")
    }

    /// 404 for a path or method we do not serve, worded as Stripe's.
    pub fn unrecognized_url(method: &Method, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequestError,
            format!("Unrecognized request URL ({method}: {}).", shorten(path)),
        )
    }

    /// 409 `idempotency_key_in_use`: another request with this key is still running. The
    /// SDKs retry it with the same key.
    pub fn idempotency_key_in_use(key: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::InvalidRequestError,
            format!(
                "There is currently another in-progress request using this idempotent key \
                 (that probably means you submitted twice, and the other request is still \
                 going through): {}. Please try again later.",
                shorten(key)
            ),
        )
        .with_code("idempotency_key_in_use")
    }

    /// 400 `idempotency_error`: the key was first used with other parameters.
    pub fn idempotency_params_mismatch(key: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::IdempotencyError,
            format!(
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with. Try using a key other than '{}' if you meant to execute \
                 a different request.",
                shorten(key)
            ),
        )
    }

    /// 413: the body is larger than `limit_bytes`.
    pub fn payload_too_large(limit_bytes: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequestError,
            format!("The request body is larger than the limit of {limit_bytes} bytes."),
        )
    }

    /// 429 with `code=rate_limit` and a `Retry-After` header of `retry_after` rounded up
    /// to whole seconds (at least 1).
    pub fn rate_limited(retry_after: Duration) -> ApiError {
        let seconds = retry_after
            .as_secs()
            .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
            .max(1);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::InvalidRequestError,
            format!(
                "Request rate limit exceeded. Retry after {seconds} second{}.",
                if seconds == 1 { "" } else { "s" }
            ),
        )
        .with_code("rate_limit");
        error.retry_after_seconds = Some(seconds);
        error
    }

    /// 500 `api_error`. The cause is logged (error level, in the current span) and never
    /// sent: the client reads "An unknown error occurred" and the `Request-Id`.
    pub fn internal(cause: impl fmt::Display) -> ApiError {
        tracing::error!(cause = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ApiError,
            "An unknown error occurred. Try again later, or contact support with the \
             Request-Id of this response.",
        )
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.object.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> ApiError {
        self.object.code = Some(code.into());
        self
    }

    pub fn with_doc_url(mut self, doc_url: impl Into<String>) -> ApiError {
        self.object.doc_url = Some(doc_url.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What goes under `"error"`.
    pub fn object(&self) -> &ErrorObject {
        &self.object
    }

    /// `Retry-After` in seconds, for 429s.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after_seconds
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {}",
            self.status.as_u16(),
            self.object.message
        )?;
        if let Some(param) = &self.object.param {
            write!(formatter, " (param {param})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Envelope {
                error: &self.object,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A database failure is ours, not the client's.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        ApiError::internal(error)
    }
}

/// `sk_test_****abcd`: the mode prefix and the last four characters, only when the key is
/// long enough that four characters give nothing away.
fn redact_api_key(secret: &str) -> String {
    const PREFIXES: [&str; 6] = [
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_",
    ];
    let prefix = PREFIXES
        .iter()
        .copied()
        .find(|prefix| secret.starts_with(prefix))
        .unwrap_or("");
    let rest = &secret[prefix.len()..];
    let tail_shown = rest.len() >= 12 && rest.chars().all(|c| c.is_ascii_alphanumeric());
    if tail_shown {
        format!("{prefix}****{}", &rest[rest.len() - 4..])
    } else {
        format!("{prefix}****")
    }
}

/// Client-supplied text echoed in a message is cut, so an error can never be made large.
fn shorten(text: &str) -> String {
    const MAX_ECHO_CHARS: usize = 200;
    if text.chars().count() <= MAX_ECHO_CHARS {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX_ECHO_CHARS).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(error: ApiError) -> (StatusCode, serde_json::Value) {
        let status = error.status();
        let body = serde_json::to_value(Envelope {
            error: error.object(),
        })
        .unwrap();
        (status, body)
    }

    #[test]
    fn missing_resource_is_a_404_naming_the_id() {
        let (status, body) = rendered(ApiError::missing("customer", "cus_x"));
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "message": "No such customer: 'cus_x'",
                "param": "id",
            }})
        );
    }

    #[test]
    fn card_error_is_a_402_with_decline_code_and_payment_intent() {
        let card = CardError::declined("insufficient_funds")
            .with_charge("ch_1")
            .with_payment_intent(json!({"id": "pi_1", "object": "payment_intent"}));
        let (status, body) = rendered(ApiError::card_error(card));
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(
            body,
            json!({"error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "charge": "ch_1",
                "payment_intent": {"id": "pi_1", "object": "payment_intent"},
            }})
        );
    }

    #[test]
    fn statuses_and_types_follow_stripe() {
        let cases = [
            (
                ApiError::missing_param("amount"),
                400,
                "invalid_request_error",
            ),
            (ApiError::no_api_key(), 401, "invalid_request_error"),
            (
                ApiError::idempotency_key_in_use("k"),
                409,
                "invalid_request_error",
            ),
            (
                ApiError::idempotency_params_mismatch("k"),
                400,
                "idempotency_error",
            ),
            (
                ApiError::rate_limited(Duration::from_millis(10)),
                429,
                "invalid_request_error",
            ),
            (ApiError::internal("boom"), 500, "api_error"),
        ];
        for (error, status, error_type) in cases {
            let (actual_status, body) = rendered(error);
            assert_eq!(actual_status.as_u16(), status, "{body}");
            assert_eq!(body["error"]["type"], error_type, "{body}");
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let (_, body) = rendered(ApiError::internal("password=hunter2 at db.internal"));
        let text = body.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("db.internal"), "{text}");
    }

    #[test]
    fn rate_limit_rounds_retry_after_up_to_whole_seconds() {
        assert_eq!(
            ApiError::rate_limited(Duration::from_millis(1)).retry_after_seconds(),
            Some(1)
        );
        assert_eq!(
            ApiError::rate_limited(Duration::from_millis(1_001)).retry_after_seconds(),
            Some(2)
        );
        assert_eq!(
            ApiError::rate_limited(Duration::from_secs(3)).retry_after_seconds(),
            Some(3)
        );
        assert_eq!(
            ApiError::rate_limited(Duration::ZERO).retry_after_seconds(),
            Some(1)
        );
    }

    #[test]
    fn api_keys_are_redacted_to_prefix_and_last_four() {
        assert_eq!(
            redact_api_key("sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
            "sk_test_****p7dc"
        );
        assert_eq!(redact_api_key("sk_live_short"), "sk_live_****");
        assert_eq!(redact_api_key("whatever"), "****");
        assert_eq!(redact_api_key("sk_test_ééééééééééééééé"), "sk_test_****");
    }

    #[test]
    fn echoed_client_text_is_bounded() {
        let long = "x".repeat(10_000);
        let error = ApiError::missing("customer", &long);
        assert!(error.object().message.len() < 300);
    }
}
