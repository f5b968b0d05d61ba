//! `/v1/payment_methods`: cards tokenised at the gateway, attached to customers.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Json;
use commands::execute::ExecuteError;
use commands::idempotency::IdempotencyError;
use commands::payments::{CardInput, FinalStepError};
use commands::CommandError;
use domain::customer::{Customer, Metadata};
use domain::payment_method::{
    BillingDetails, PaymentMethod, PaymentMethodCommand, PaymentMethodError,
};
use projections::stripe;

use super::read_model::{self, ListFilter};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::ListParams;

fn method_error(id: &str, error: ExecuteError<PaymentMethodError, IdempotencyError>) -> ApiError {
    match error {
        ExecuteError::Command(CommandError::Rejected(PaymentMethodError::NotFound)) => {
            ApiError::missing("payment_method", id)
        }
        ExecuteError::Command(CommandError::Rejected(rule)) => {
            ApiError::invalid_request(rule.to_string())
        }
        ExecuteError::Command(other) => ApiError::internal(other),
        ExecuteError::Extra(error) => FinalStepError::Step(error).into(),
    }
}

fn billing_details(params: &mut Params) -> Result<BillingDetails, ApiError> {
    let mut details = BillingDetails::default();
    if let Some(mut billing) = params.take_object("billing_details")? {
        details.name = billing.take_string("name")?;
        details.email = billing.take_string("email")?;
        details.phone = billing.take_string("phone")?;
        if let Some(mut address) = billing.take_object("address")? {
            details.postal_code = address.take_string("postal_code")?;
            for ignored in ["city", "country", "line1", "line2", "state"] {
                let _ = address.take_string(ignored)?;
            }
            address.reject_unknown()?;
        }
        billing.reject_unknown()?;
    }
    Ok(details)
}

fn metadata(params: &mut Params) -> Result<Metadata, ApiError> {
    let mut metadata = Metadata::new();
    if let Some(update) = params.take_metadata("metadata")? {
        update.apply_to(&mut metadata);
    }
    Ok(metadata)
}

fn render(method: &PaymentMethod) -> commands::idempotency::StoredResponse {
    json_response(200, &stripe::payment_method(method))
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let kind = request.params.take_string("type")?;
            if kind.as_deref() != Some("card") {
                return Err(ApiError::invalid_param(
                    "type",
                    "Only type=card is supported.",
                ));
            }
            let mut card = request
                .params
                .take_object("card")?
                .ok_or_else(|| ApiError::missing_param("card"))?;
            let input = if let Some(token) = card.take_string("token")? {
                CardInput::TestToken(token)
            } else {
                let number = card
                    .take_string("number")?
                    .ok_or_else(|| ApiError::missing_param("card[number]"))?;
                let exp_month = card
                    .take_i64("exp_month")?
                    .ok_or_else(|| ApiError::missing_param("card[exp_month]"))?;
                let exp_year = card
                    .take_i64("exp_year")?
                    .ok_or_else(|| ApiError::missing_param("card[exp_year]"))?;
                let cvc = card.take_string("cvc")?;
                CardInput::Number {
                    number,
                    exp_month: u8::try_from(exp_month).map_err(|_| {
                        ApiError::invalid_param(
                            "card[exp_month]",
                            "Your card's expiration month is invalid.",
                        )
                    })?,
                    exp_year: u16::try_from(exp_year).map_err(|_| {
                        ApiError::invalid_param(
                            "card[exp_year]",
                            "Your card's expiration year is invalid.",
                        )
                    })?,
                    cvc,
                }
            };
            card.reject_unknown()?;
            let billing = billing_details(&mut request.params)?;
            let metadata = metadata(&mut request.params)?;
            request.reject_unknown_params()?;
            let executed = inner
                .payments
                .create_card_payment_method(
                    &request.actor(),
                    input,
                    billing,
                    metadata,
                    Respond::new(token, render),
                )
                .await?;
            Ok(Written::from_executed(executed, token))
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
            let changes = match request.params.take_metadata("metadata")? {
                Some(MapUpdate::Merge(changes)) => changes,
                Some(MapUpdate::Clear) => {
                    let (method, _) = inner
                        .payments
                        .load_owned::<PaymentMethod>(&request.actor(), "payment_method", &id)
                        .await?;
                    method
                        .metadata
                        .keys()
                        .map(|key| (key.clone(), None))
                        .collect()
                }
                None => Default::default(),
            };
            request.reject_unknown_params()?;
            inner
                .payments
                .load_owned::<PaymentMethod>(&request.actor(), "payment_method", &id)
                .await?;
            let executed = inner
                .payments
                .bus()
                .execute_with::<PaymentMethod, _>(
                    &id,
                    PaymentMethodCommand::UpdateMetadata {
                        changes,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, render),
                )
                .await
                .map_err(|error| method_error(&id, error))?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

/// `attach`: `pm_card_visa` (test) becomes a new payment method first, as at Stripe.
pub async fn attach(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let customer_id = request
                .params
                .take_string("customer")?
                .ok_or_else(|| ApiError::missing_param("customer"))?;
            request.reject_unknown_params()?;
            let actor = request.actor();
            inner
                .payments
                .load_owned::<Customer>(&actor, "customer", &customer_id)
                .await?;
            let method = inner.payments.resolve_payment_method(&actor, &id).await?;
            let executed = inner
                .payments
                .bus()
                .execute_with::<PaymentMethod, _>(
                    &method.id,
                    PaymentMethodCommand::Attach {
                        customer_id,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                    Respond::new(token, render),
                )
                .await
                .map_err(|error| method_error(&id, error))?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

pub async fn detach(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            request.reject_unknown_params()?;
            inner
                .payments
                .load_owned::<PaymentMethod>(&request.actor(), "payment_method", &id)
                .await?;
            let executed = inner
                .payments
                .bus()
                .execute_with::<PaymentMethod, _>(
                    &id,
                    PaymentMethodCommand::Detach {
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, render),
                )
                .await
                .map_err(|error| method_error(&id, error))?;
            Ok(Written::from_executed(executed, token))
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
    super::retrieve_object(&state, &key, "payment_method", &id, uri.query(), &[]).await
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let customer = params.take_string("customer")?;
    let _card_only = params.take_string("type")?;
    params.reject_unknown()?;
    let filter = customer.map_or(ListFilter::None, ListFilter::Customer);
    let list = read_model::list_objects(
        &state.pool,
        &scope(&key),
        "payment_method",
        &filter,
        &page,
        "/v1/payment_methods",
    )
    .await?;
    Ok(Json(
        serde_json::to_value(&list).map_err(ApiError::internal)?,
    ))
}
