//! The layers every response goes through, applied once to the whole app by
//! [`apply_conventions`]. From the outside in:
//!
//! 1. **Request-Id**: a fresh `req_…` id, stored in the request's extensions (extract it
//!    with [`RequestId`]) and set as the `Request-Id` header of every response, errors and
//!    panics included.
//! 2. **Tracing**: one `http_request` span per request with `request_id`, `method`, `path`
//!    (without the query string) and, once authenticated, `key_id`, `project`, `mode`;
//!    never the body or the `Authorization` header. The outcome is logged with `status`
//!    and `latency_ms`.
//! 3. **Stripe-Version**: the request's header (any value) or [`DEFAULT_STRIPE_VERSION`],
//!    stored as [`StripeVersion`] and echoed in the response; a request's
//!    `Idempotency-Key` is echoed too (STRIPE-CONVENTIONS.md §1.2, §7).
//! 4. **Error envelope for everything**: an error response that is not already JSON or a
//!    page's own HTML (a 404 or 405 from the router, an extractor's plain-text rejection)
//!    is rewritten into Stripe's envelope, so the SDKs always find one. A bare 404/405 becomes Stripe's
//!    "Unrecognized request URL": a missing object must use `ApiError::missing`.
//! 5. **Catch panic**: a panicking handler answers the 500 envelope (the panic is logged),
//!    not a dropped connection.
//! 6. **Body limit**: a `Content-Length` over the limit is refused with 413 before the
//!    handler runs; bodies without one are cut at the same limit when read.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Response};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use super::error::{ApiError, ErrorType};
use super::form::MAX_BODY_BYTES;

/// The API version whose shapes we render (the one the official SDKs pin).
pub const DEFAULT_STRIPE_VERSION: &str = "2026-10-28.endive";

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("request-id");
pub const STRIPE_VERSION_HEADER: HeaderName = HeaderName::from_static("stripe-version");
pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// Most bytes of a plain-text error body carried into the envelope's message.
const MAX_PLAIN_ERROR_BYTES: usize = 1_024;

/// Settings of [`apply_conventions`].
#[derive(Debug, Clone)]
pub struct ConventionsConfig {
    /// Largest request body accepted, in bytes. [`super::Params`] never reads more than
    /// [`MAX_BODY_BYTES`] whatever this says: raise both together.
    pub max_body_bytes: usize,
}

impl Default for ConventionsConfig {
    fn default() -> ConventionsConfig {
        ConventionsConfig {
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// This request's id (`req_…`), as sent in the `Request-Id` response header. Record it
/// in event metadata (`request_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The `Stripe-Version` this request asked for, or [`DEFAULT_STRIPE_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeVersion(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<RequestId, ApiError> {
        parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .ok_or_else(|| ApiError::internal("RequestId extracted without apply_conventions"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StripeVersion {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<StripeVersion, ApiError> {
        parts
            .extensions
            .get::<StripeVersion>()
            .cloned()
            .ok_or_else(|| ApiError::internal("StripeVersion extracted without apply_conventions"))
    }
}

/// Wraps `router` (the whole app: `/v1`, pages, health) in the layers above. Apply it
/// last, after `with_state`, so that it is outermost.
pub fn apply_conventions<S>(router: Router<S>, config: &ConventionsConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // `layer` wraps what is already there: the last one added runs first.
    router
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(from_fn_with_state(
            config.max_body_bytes,
            refuse_oversized_body,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(
            config.max_body_bytes,
            envelope_plain_errors,
        ))
        .layer(from_fn(stripe_headers))
        .layer(from_fn(trace_request))
        .layer(from_fn(assign_request_id))
}

async fn assign_request_id(mut request: Request, next: Next) -> Response<Body> {
    let id = commands::ids::new_id("req");
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    match HeaderValue::from_str(&id) {
        Ok(value) => {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        // Ids are base62: this cannot happen, and a response without the header is better
        // than no response.
        Err(error) => tracing::error!(%error, "request id is not a header value"),
    }
    response
}

async fn trace_request(request: Request, next: Next) -> Response<Body> {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http_request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        key_id = tracing::field::Empty,
        project = tracing::field::Empty,
        mode = tracing::field::Empty,
    );
    let started = Instant::now();
    async move {
        let response = next.run(request).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let status = response.status().as_u16();
        if response.status().is_server_error() {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
        response
    }
    .instrument(span)
    .await
}

async fn stripe_headers(mut request: Request, next: Next) -> Response<Body> {
    let version = request
        .headers()
        .get(STRIPE_VERSION_HEADER)
        .filter(|value| !value.is_empty())
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_STRIPE_VERSION));
    let idempotency_key = request.headers().get(IDEMPOTENCY_KEY_HEADER).cloned();
    // A header that is not text is still echoed as sent, but handlers see the default.
    let version_text = version
        .to_str()
        .unwrap_or(DEFAULT_STRIPE_VERSION)
        .to_owned();
    request.extensions_mut().insert(StripeVersion(version_text));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(STRIPE_VERSION_HEADER, version);
    if let Some(key) = idempotency_key {
        if !headers.contains_key(IDEMPOTENCY_KEY_HEADER) {
            headers.insert(IDEMPOTENCY_KEY_HEADER, key);
        }
    }
    response
}

async fn envelope_plain_errors(
    State(max_body_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    // JSON is already an envelope; HTML is a page's own error page (hosted invoices, the
    // dashboard), written for the person reading it.
    let has_own_body = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.starts_with("application/json") || value.starts_with("text/html")
        });
    if !is_error || has_own_body {
        return response;
    }
    let (parts, body) = response.into_parts();
    let error = match status.as_u16() {
        404 | 405 => ApiError::unrecognized_url(&method, &path),
        413 => ApiError::payload_too_large(max_body_bytes),
        _ if status.is_server_error() => {
            ApiError::internal(format!("{status} answered without an error envelope"))
        }
        _ => {
            let text = match axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES).await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
                Err(_) => String::new(),
            };
            let message = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("Invalid request")
                    .to_owned()
            } else {
                text
            };
            ApiError::new(status, ErrorType::InvalidRequestError, message)
        }
    };
    let mut enveloped = error.into_response();
    // Keep what the original said besides its body (Allow, Retry-After, …).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            enveloped
                .headers_mut()
                .entry(name)
                .or_insert_with(|| value.clone());
        }
    }
    enveloped
}

async fn refuse_oversized_body(
    State(max_body_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body_bytes as u64) {
        return ApiError::payload_too_large(max_body_bytes).into_response();
    }
    next.run(request).await
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    ApiError::internal(format!("handler panicked: {message}")).into_response()
}
