//! How every `/v1` POST and DELETE runs: Stripe's idempotency around the command, the
//! response stored with the command's events, and read-your-writes before answering.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use commands::execute::InTransaction;
use commands::idempotency::{
    Claim, ClaimToken, IdempotencyError, IdempotencyStore, RequestIdentity, StoredResponse,
};
use commands::payments::{Actor, FinalStepError, PaymentError};
use commands::Executed;
use cqrs_es::Aggregate;
use event_store::LogCursor;
use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::http::auth::AuthenticatedKey;
use crate::http::error::{ApiError, CardError};
use crate::http::form::Params;
use crate::v1::read_model::{expand, Scope};
use crate::v1::ApiState;

/// How long a write waits for the read model to show its effect before answering anyway.
pub const READ_YOUR_WRITES_TIMEOUT_MS: u64 = 3_000;

/// Everything a write handler needs from its request.
pub struct WriteRequest {
    pub key: AuthenticatedKey,
    /// `expand[]` of the request, applied to the answer (fresh or replayed).
    pub expand: Vec<String>,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub method: &'static str,
    pub path: String,
    pub params: Params,
    canonical_params: Vec<u8>,
}

impl WriteRequest {
    pub fn new(
        key: AuthenticatedKey,
        request_id: String,
        headers: &HeaderMap,
        method: &'static str,
        path: String,
        query: Option<&str>,
        body: &Bytes,
    ) -> Result<Self, ApiError> {
        let query = query.unwrap_or("").as_bytes();
        let mut params = Params::parse(&[query, body])?;
        let expand = params.take_expand()?;
        let idempotency_key = headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        Ok(Self {
            key,
            expand,
            request_id,
            idempotency_key,
            method,
            path,
            params,
            canonical_params: canonical(&[query, body]),
        })
    }

    /// After the handler took every parameter it knows: 400 naming the first unknown one.
    pub fn reject_unknown_params(&mut self) -> Result<(), ApiError> {
        std::mem::replace(&mut self.params, Params::from_tree(Default::default())).reject_unknown()
    }

    pub fn scope(&self) -> Scope {
        Scope {
            project: self.key.project_id.clone(),
            livemode: self.key.mode.is_live(),
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            project: self.key.project_id.clone(),
            livemode: self.key.mode.is_live(),
            actor: format!("key:{}", self.key.key_id),
            request_id: self.request_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

/// The parameters as sorted `name=value` pairs: the same request gives the same bytes
/// whatever order its fields were sent in.
fn canonical(inputs: &[&[u8]]) -> Vec<u8> {
    let mut pairs: Vec<(String, String)> = inputs
        .iter()
        .flat_map(|input| form_urlencoded::parse(input).into_owned())
        .collect();
    pairs.sort();
    let mut out = Vec::new();
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// What a write handler produced.
pub struct Written {
    pub response: StoredResponse,
    /// Already stored with the command's events (in its transaction).
    pub stored: bool,
    /// The last event the write appended: the answer waits until reads see it.
    pub cursor: Option<LogCursor>,
}

impl Written {
    pub fn from_executed<A: Aggregate>(
        executed: Executed<A, StoredResponse>,
        token: Option<&ClaimToken>,
    ) -> Self {
        Self {
            cursor: executed.appended.last().map(|appended| appended.cursor()),
            response: executed.output,
            stored: token.is_some(),
        }
    }
}

/// The in-transaction step of every write: renders the response from the aggregate after
/// the command and, when the request carries an idempotency key, stores it with the events.
pub struct Respond<'t, F> {
    token: Option<&'t ClaimToken>,
    render: F,
}

impl<'t, F> Respond<'t, F> {
    pub fn new(token: Option<&'t ClaimToken>, render: F) -> Self {
        Self { token, render }
    }
}

impl<A, F> InTransaction<A> for Respond<'_, F>
where
    A: Aggregate,
    F: FnMut(&A) -> StoredResponse + Send,
{
    type Output = StoredResponse;
    type Error = IdempotencyError;

    fn run<'a>(
        &'a mut self,
        connection: &'a mut PgConnection,
        aggregate: &'a A,
        _events: &'a [A::Event],
    ) -> BoxFuture<'a, Result<StoredResponse, IdempotencyError>> {
        let response = (self.render)(aggregate);
        let token = self.token;
        Box::pin(async move {
            if let Some(token) = token {
                IdempotencyStore::complete_in(connection, token, &response).await?;
            }
            Ok(response)
        })
    }
}

pub fn json_response(status: u16, value: &serde_json::Value) -> StoredResponse {
    StoredResponse::json(status, value)
}

/// An [`ApiError`] as a stored response (for errors that happen after execution began).
pub fn error_response(error: &ApiError) -> StoredResponse {
    StoredResponse::json(
        error.status().as_u16(),
        &serde_json::json!({"error": error.object()}),
    )
}

impl From<PaymentError> for ApiError {
    fn from(error: PaymentError) -> Self {
        match error {
            PaymentError::NotFound { kind, id } => ApiError::missing(kind, &id),
            PaymentError::InvalidCard(message) => {
                ApiError::card_error(CardError::new("invalid_number", &message))
            }
            PaymentError::CardDeclined {
                code,
                decline_code,
                message,
            } => {
                let mut card = CardError::declined(decline_code.as_deref().unwrap_or("generic_decline"));
                if code != "card_declined" {
                    card = CardError::new(&code, &message);
                }
                ApiError::card_error(card)
            }
            PaymentError::InvalidRequest(message) => ApiError::invalid_request(message),
            PaymentError::LiveNotConfigured => ApiError::invalid_request(
                "Live mode is not configured with gateway credentials on this server.",
            ),
            PaymentError::Gateway(message) => ApiError::internal(message),
            PaymentError::OutcomeUnknown => ApiError::internal(
                "The card network did not confirm the outcome yet; it will be resolved automatically.",
            ),
            PaymentError::Internal(message) => ApiError::internal(message),
        }
    }
}

impl From<FinalStepError<IdempotencyError>> for ApiError {
    fn from(error: FinalStepError<IdempotencyError>) -> Self {
        match error {
            FinalStepError::Payment(error) => error.into(),
            FinalStepError::Step(error) => idempotency_error(error, ""),
        }
    }
}

fn idempotency_error(error: IdempotencyError, key: &str) -> ApiError {
    match error {
        IdempotencyError::KeyInUse | IdempotencyError::ClaimLost => {
            ApiError::idempotency_key_in_use(key)
        }
        IdempotencyError::Mismatch => ApiError::idempotency_params_mismatch(key),
        IdempotencyError::EmptyKey | IdempotencyError::KeyTooLong { .. } => {
            ApiError::invalid_request(error.to_string()).with_param("Idempotency-Key")
        }
        IdempotencyError::Sql(error) => ApiError::internal(error),
    }
}

/// Whether Stripe would keep this failure's response for replays: only failures after the
/// endpoint began executing (card errors, server errors); validation errors are not saved.
fn saved_on_failure(error: &ApiError) -> bool {
    error.status() == StatusCode::PAYMENT_REQUIRED || error.status().is_server_error()
}

fn send(response: &StoredResponse, replayed: bool, idempotency_key: Option<&str>) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut http = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        response.body.clone(),
    )
        .into_response();
    let headers = http.headers_mut();
    if let Some(key) = idempotency_key.and_then(|key| HeaderValue::from_str(key).ok()) {
        headers.insert("idempotency-key", key);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if status.is_server_error() {
        headers.insert("stripe-should-retry", HeaderValue::from_static("false"));
    }
    http
}

/// Runs a write with Stripe's idempotency semantics.
///
/// `run` receives the claim (when the request has a key) to pass to [`Respond`]; it returns
/// what it wrote. Validation errors release the claim (a retry may run); card and server
/// errors are stored and replayed, as at Stripe.
pub async fn idempotent<F>(state: &ApiState, request: WriteRequest, run: F) -> Response
where
    F: for<'t> FnOnce(
        WriteRequest,
        Option<&'t ClaimToken>,
    ) -> BoxFuture<'t, Result<Written, ApiError>>,
{
    let paths = request.expand.clone();
    let scope = request.scope();
    let expansion = Expansion {
        paths: &paths,
        scope: &scope,
    };
    let Some(key) = request.idempotency_key.clone() else {
        return match run(request, None).await {
            Ok(written) => finish(state, written, None, &expansion).await,
            Err(error) => error.into_response(),
        };
    };
    let identity = RequestIdentity {
        project: request.key.project_id.clone(),
        mode: request.key.mode,
        key: key.clone(),
        fingerprint: commands::idempotency::fingerprint(
            request.method,
            &request.path,
            &request.canonical_params,
        ),
    };
    let token = match state.idempotency.claim(&identity).await {
        Ok(Claim::Replay(stored)) => {
            let stored = expansion.apply(state, stored).await;
            return send(&stored, true, Some(&key));
        }
        Ok(Claim::Fresh(token)) => token,
        Err(error) => return idempotency_error(error, &key).into_response(),
    };
    let outcome = run(request, Some(&token)).await;
    match outcome {
        Ok(written) => {
            if !written.stored {
                if let Err(error) = state.idempotency.complete(&token, &written.response).await {
                    return idempotency_error(error, &key).into_response();
                }
            }
            finish(state, written, Some(&key), &expansion).await
        }
        Err(error) if saved_on_failure(&error) => {
            let stored = error_response(&error);
            if let Err(store_error) = state.idempotency.complete(&token, &stored).await {
                tracing::warn!(error = %store_error, "could not store a failed response for replay");
            }
            send(&stored, false, Some(&key))
        }
        Err(error) => {
            if let Err(release_error) = state.idempotency.release(token).await {
                tracing::warn!(error = %release_error, "could not release an idempotency claim");
            }
            let mut response = error.into_response();
            if let Ok(value) = HeaderValue::from_str(&key) {
                response.headers_mut().insert("idempotency-key", value);
            }
            response
        }
    }
}

/// `expand[]` applied to a successful JSON answer, from the read model.
struct Expansion<'a> {
    paths: &'a [String],
    scope: &'a Scope,
}

impl Expansion<'_> {
    async fn apply(&self, state: &ApiState, response: StoredResponse) -> StoredResponse {
        if self.paths.is_empty() || response.status != 200 {
            return response;
        }
        let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return response;
        };
        match expand(&state.pool, self.scope, &mut body, self.paths).await {
            Ok(()) => StoredResponse::json(200, &body),
            Err(error) => error_response(&error),
        }
    }
}

async fn finish(
    state: &ApiState,
    written: Written,
    key: Option<&str>,
    expansion: &Expansion<'_>,
) -> Response {
    if let Some(cursor) = written.cursor {
        let waited = state
            .projections
            .wait_until_applied(
                projections::api_objects::NAME,
                cursor,
                std::time::Duration::from_millis(READ_YOUR_WRITES_TIMEOUT_MS),
            )
            .await;
        if !matches!(waited, Ok(true)) {
            tracing::warn!("the read model did not catch up with a write in time");
        }
    }
    let response = expansion.apply(state, written.response).await;
    send(&response, false, key)
}

impl axum::extract::FromRequest<ApiState> for WriteRequest {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &ApiState,
    ) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let key =
            <AuthenticatedKey as axum::extract::FromRequestParts<ApiState>>::from_request_parts(
                &mut parts, state,
            )
            .await?;
        let crate::http::middleware::RequestId(request_id) =
            <crate::http::middleware::RequestId as axum::extract::FromRequestParts<ApiState>>::from_request_parts(&mut parts, state)
                .await?;
        let method = match parts.method.as_str() {
            "DELETE" => "DELETE",
            _ => "POST",
        };
        let body = axum::body::to_bytes(body, crate::http::form::MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::payload_too_large(crate::http::form::MAX_BODY_BYTES))?;
        WriteRequest::new(
            key,
            request_id,
            &parts.headers,
            method,
            parts.uri.path().to_string(),
            parts.uri.query(),
            &body,
        )
    }
}
