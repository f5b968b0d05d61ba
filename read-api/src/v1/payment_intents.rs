//! `/v1/payment_intents`: create, update, confirm (charging through the gateway), capture,
//! cancel; reads from the read model.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Json;
use commands::execute::ExecuteError;
use commands::idempotency::{IdempotencyError, StoredResponse};
use commands::payments::{Actor, FinalStepError, Together};
use commands::{ids, CommandError};
use domain::customer::{Customer, Metadata};
use domain::money::{Currency, Money};
use domain::payment_intent::{
    CaptureMethod, IntentChanges, IntentStatus, NewIntent, PaymentIntent, PaymentIntentCommand,
    PaymentIntentError,
};
use projections::stripe;

use super::read_model::{self, ListFilter};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::ListParams;

fn intent_error(id: &str, error: ExecuteError<PaymentIntentError, IdempotencyError>) -> ApiError {
    match error {
        ExecuteError::Command(CommandError::Rejected(PaymentIntentError::NotFound)) => {
            ApiError::missing("payment_intent", id)
        }
        ExecuteError::Command(CommandError::Rejected(PaymentIntentError::InvalidAmount)) => {
            ApiError::invalid_param("amount", PaymentIntentError::InvalidAmount.to_string())
        }
        ExecuteError::Command(CommandError::Rejected(rule)) => {
            ApiError::invalid_request(rule.to_string()).with_code("payment_intent_unexpected_state")
        }
        ExecuteError::Command(other) => ApiError::internal(other),
        ExecuteError::Extra(error) => FinalStepError::Step(error).into(),
    }
}

/// The intent, or, after a declined confirmation, Stripe's 402 card error carrying it.
pub fn render(intent: &PaymentIntent) -> StoredResponse {
    let body = stripe::payment_intent(intent);
    match (&intent.status, &intent.last_payment_error) {
        (IntentStatus::RequiresPaymentMethod, Some(error)) => StoredResponse::json(
            402,
            &serde_json::json!({"error": {
                "type": "card_error",
                "code": error.code,
                "decline_code": error.decline_code,
                "message": error.message,
                "charge": error.charge,
                "doc_url": format!("https://docs.stripe.com/error-codes/{}", error.code.replace('_', "-")),
                "payment_intent": body,
                "payment_method": {"id": error.payment_method, "object": "payment_method", "type": "card"},
            }}),
        ),
        _ => json_response(200, &body),
    }
}

fn render_ok(intent: &PaymentIntent) -> StoredResponse {
    json_response(200, &stripe::payment_intent(intent))
}

fn capture_method(params: &mut Params) -> Result<Option<CaptureMethod>, ApiError> {
    params.take_enum(
        "capture_method",
        &[
            ("automatic", CaptureMethod::Automatic),
            ("automatic_async", CaptureMethod::Automatic),
            ("manual", CaptureMethod::Manual),
        ],
    )
}

/// Parameters Stripe sends that change nothing for card payments here.
fn accept_card_only_options(params: &mut Params) -> Result<(), ApiError> {
    if let Some(types) = params.take_list("payment_method_types")? {
        if types.iter().any(|kind| kind != "card") {
            return Err(ApiError::invalid_param(
                "payment_method_types",
                "Only card payment methods are supported.",
            ));
        }
    }
    if let Some(mut automatic) = params.take_object("automatic_payment_methods")? {
        let _ = automatic.take_bool("enabled")?;
        let _ = automatic.take_string("allow_redirects")?;
        automatic.reject_unknown()?;
    }
    let _ = params.take_string("return_url")?;
    let _ = params.take_string("confirmation_method")?;
    Ok(())
}

async fn check_customer(
    state: &ApiState,
    actor: &Actor,
    customer: &Option<String>,
) -> Result<(), ApiError> {
    if let Some(customer) = customer {
        let (found, _) = state
            .payments
            .load_owned::<Customer>(actor, "customer", customer)
            .await?;
        if !found.exists() {
            return Err(ApiError::missing("customer", customer));
        }
    }
    Ok(())
}

/// With an idempotency key, the intent's id is derived from it: a retry after a crash
/// between creating and confirming finds the same intent instead of making another.
fn intent_id_for(request: &WriteRequest) -> String {
    match &request.idempotency_key {
        Some(key) => {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(format!(
                "{}\0{}\0{key}",
                request.key.project_id,
                request.key.mode.as_str()
            ));
            const ALPHABET: &[u8] =
                b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            let suffix: String = digest
                .iter()
                .take(24)
                .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
                .collect();
            format!("pi_{suffix}")
        }
        None => ids::new_id("pi"),
    }
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let amount = params
                .take_i64("amount")?
                .ok_or_else(|| ApiError::missing_param("amount"))?;
            let currency_code = params
                .take_string("currency")?
                .ok_or_else(|| ApiError::missing_param("currency"))?;
            let currency = Currency::parse(&currency_code)
                .map_err(|error| ApiError::invalid_param("currency", error.to_string()))?;
            let money = Money::new(amount, currency)
                .map_err(|error| ApiError::invalid_param("amount", error.to_string()))?;
            let customer = params.take_string("customer")?;
            let payment_method = params.take_string("payment_method")?;
            let capture = capture_method(params)?.unwrap_or_default();
            let confirm = params.take_bool("confirm")?.unwrap_or(false);
            let off_session = params.take_bool("off_session")?.unwrap_or(false);
            let description = params.take_string("description")?;
            let receipt_email = params.take_string("receipt_email")?;
            let mut metadata = Metadata::new();
            if let Some(update) = params.take_metadata("metadata")? {
                update.apply_to(&mut metadata);
            }
            let _ = params.take_string("setup_future_usage")?;
            accept_card_only_options(params)?;
            request.reject_unknown_params()?;
            let actor = request.actor();
            check_customer(&inner, &actor, &customer).await?;
            let intent_id = intent_id_for(&request);
            let new = NewIntent {
                payment_intent_id: intent_id.clone(),
                livemode: actor.livemode,
                amount: money,
                customer,
                payment_method,
                capture_method: capture,
                description,
                receipt_email,
                metadata,
                invoice: None,
                at: chrono::Utc::now().timestamp(),
            };
            // Created, confirmed and charged with one commit before the gateway, when
            // nothing stands in the way; otherwise in two steps, below.
            let (final_step, payment_method) = if confirm {
                match inner
                    .payments
                    .create_and_confirm(
                        &actor,
                        new.clone(),
                        off_session,
                        Respond::new(token, render),
                    )
                    .await?
                {
                    Together::Done(confirmed) => {
                        return Ok(Written::from_executed(*confirmed, token))
                    }
                    Together::Separately {
                        final_step,
                        payment_method,
                    } => (Some(final_step), payment_method),
                }
            } else {
                (None, new.payment_method.clone())
            };
            let created = inner
                .payments
                .bus()
                .execute_with::<PaymentIntent, _>(
                    &intent_id,
                    PaymentIntentCommand::Create(new),
                    &(),
                    &actor.metadata(),
                    Respond::new(if confirm { None } else { token }, render_ok),
                )
                .await;
            let created = match created {
                Ok(created) => Some(created),
                // Made by this key's earlier attempt, which crashed before it answered.
                Err(ExecuteError::Command(CommandError::Rejected(
                    PaymentIntentError::AlreadyExists,
                ))) if confirm => {
                    let (existing, _) = inner
                        .payments
                        .load_owned::<PaymentIntent>(&actor, "payment_intent", &intent_id)
                        .await?;
                    if !matches!(
                        existing.status,
                        IntentStatus::RequiresPaymentMethod
                            | IntentStatus::RequiresConfirmation
                            | IntentStatus::Processing
                    ) {
                        // Already resolved (by the recovery worker): answer with it.
                        let response = render(&existing);
                        return Ok(Written {
                            response,
                            stored: false,
                            cursor: None,
                        });
                    }
                    None
                }
                Err(error) => return Err(intent_error(&intent_id, error)),
            };
            let Some(final_step) = final_step else {
                return created
                    .map(|created| Written::from_executed(created, token))
                    .ok_or_else(|| ApiError::internal("intent already exists"));
            };
            let confirmed = inner
                .payments
                .confirm(&actor, &intent_id, payment_method, off_session, final_step)
                .await?;
            Ok(Written::from_executed(confirmed, token))
        })
    })
    .await
}

pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let actor = request.actor();
            let (current, _) = inner
                .payments
                .load_owned::<PaymentIntent>(&actor, "payment_intent", &id)
                .await?;
            let params = &mut request.params;
            let mut changes = IntentChanges::default();
            let amount = params.take_i64("amount")?;
            let currency = params
                .take_string("currency")?
                .map(|code| {
                    Currency::parse(&code)
                        .map_err(|error| ApiError::invalid_param("currency", error.to_string()))
                })
                .transpose()?;
            if amount.is_some() || currency.is_some() {
                let money = Money::new(
                    amount.unwrap_or(current.amount.amount_minor),
                    currency.unwrap_or(current.amount.currency),
                )
                .map_err(|error| ApiError::invalid_param("amount", error.to_string()))?;
                changes.amount = Some(money);
            }
            changes.customer = params.take_optional_string("customer")?;
            changes.payment_method = params.take_optional_string("payment_method")?;
            changes.description = params.take_optional_string("description")?;
            changes.receipt_email = params.take_optional_string("receipt_email")?;
            changes.capture_method = capture_method(params)?;
            match params.take_metadata("metadata")? {
                Some(MapUpdate::Merge(merge)) => changes.metadata = merge,
                Some(MapUpdate::Clear) => {
                    changes.metadata = current
                        .metadata
                        .keys()
                        .map(|key| (key.clone(), None))
                        .collect()
                }
                None => {}
            }
            let _ = params.take_string("setup_future_usage")?;
            accept_card_only_options(params)?;
            request.reject_unknown_params()?;
            if let Some(customer) = &changes.customer {
                check_customer(&inner, &actor, customer).await?;
            }
            let executed = inner
                .payments
                .bus()
                .execute_with::<PaymentIntent, _>(
                    &id,
                    PaymentIntentCommand::Update {
                        changes,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                    Respond::new(token, render_ok),
                )
                .await
                .map_err(|error| intent_error(&id, error))?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

pub async fn confirm(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let payment_method = request.params.take_string("payment_method")?;
            let off_session = request.params.take_bool("off_session")?.unwrap_or(false);
            let _ = request.params.take_string("setup_future_usage")?;
            accept_card_only_options(&mut request.params)?;
            request.reject_unknown_params()?;
            let confirmed = inner
                .payments
                .confirm(
                    &request.actor(),
                    &id,
                    payment_method,
                    off_session,
                    Respond::new(token, render),
                )
                .await?;
            Ok(Written::from_executed(confirmed, token))
        })
    })
    .await
}

pub async fn capture(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let amount = request.params.take_i64("amount_to_capture")?;
            request.reject_unknown_params()?;
            let captured = inner
                .payments
                .capture(
                    &request.actor(),
                    &id,
                    amount,
                    Respond::new(token, render_ok),
                )
                .await?;
            Ok(Written::from_executed(captured, token))
        })
    })
    .await
}

pub async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let reason = request.params.take_enum(
                "cancellation_reason",
                &[
                    ("duplicate", "duplicate"),
                    ("fraudulent", "fraudulent"),
                    ("requested_by_customer", "requested_by_customer"),
                    ("abandoned", "abandoned"),
                ],
            )?;
            request.reject_unknown_params()?;
            let canceled = inner
                .payments
                .cancel(
                    &request.actor(),
                    &id,
                    reason.map(str::to_string),
                    Respond::new(token, render_ok),
                )
                .await?;
            Ok(Written::from_executed(canceled, token))
        })
    })
    .await
}

pub async fn retrieve(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    super::retrieve_object(
        &state,
        &key,
        "payment_intent",
        &id,
        uri.query(),
        &["client_secret"],
    )
    .await
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let expand = params.take_expand()?;
    let customer = params.take_string("customer")?;
    params.reject_unknown()?;
    let scope = scope(&key);
    let filter = customer.map_or(ListFilter::None, ListFilter::Customer);
    let list = read_model::list_objects(
        &state.pool,
        &scope,
        "payment_intent",
        &filter,
        &page,
        "/v1/payment_intents",
    )
    .await?;
    let mut body = serde_json::to_value(&list).map_err(ApiError::internal)?;
    read_model::expand(&state.pool, &scope, &mut body, &expand).await?;
    Ok(Json(body))
}
