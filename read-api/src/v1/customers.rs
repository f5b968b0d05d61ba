//! `/v1/customers`.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::execute::ExecuteError;
use commands::idempotency::IdempotencyError;
use commands::{ids, CommandError};
use domain::customer::{Customer, CustomerCommand, CustomerError, CustomerFields};
use projections::stripe;

use super::read_model::{self, ListFilter};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::ListParams;

fn fields_from(params: &mut Params) -> Result<CustomerFields, ApiError> {
    let mut fields = CustomerFields {
        email: params.take_optional_string("email")?,
        name: params.take_optional_string("name")?,
        description: params.take_optional_string("description")?,
        phone: params.take_optional_string("phone")?,
        ..CustomerFields::default()
    };
    if let Some(mut settings) = params.take_object("invoice_settings")? {
        fields.default_payment_method = settings.take_optional_string("default_payment_method")?;
        settings.reject_unknown()?;
    }
    match params.take_metadata("metadata")? {
        Some(MapUpdate::Clear) => fields.clear_metadata = true,
        Some(MapUpdate::Merge(changes)) => fields.metadata = changes,
        None => {}
    }
    Ok(fields)
}

pub(crate) fn customer_error(
    id: &str,
    error: ExecuteError<CustomerError, IdempotencyError>,
) -> ApiError {
    match error {
        ExecuteError::Command(CommandError::Rejected(CustomerError::NotFound)) => {
            ApiError::missing("customer", id)
        }
        ExecuteError::Command(CommandError::Rejected(rule)) => {
            ApiError::invalid_request(rule.to_string())
        }
        ExecuteError::Command(other) => ApiError::internal(other),
        ExecuteError::Extra(error) => commands::payments::FinalStepError::Step(error).into(),
    }
}

/// A customer's default payment method must be one of its own.
async fn check_default_payment_method(
    state: &ApiState,
    request: &WriteRequest,
    customer_id: &str,
    fields: &CustomerFields,
) -> Result<(), ApiError> {
    if let Some(Some(method_id)) = &fields.default_payment_method {
        let method =
            read_model::get_object(&state.pool, &request.scope(), "payment_method", method_id)
                .await?;
        let attached_here = method
            .as_ref()
            .and_then(|method| method.get("customer"))
            .and_then(|customer| customer.as_str())
            == Some(customer_id);
        if !attached_here {
            return Err(ApiError::invalid_param(
                "invoice_settings[default_payment_method]",
                format!(
                    "The payment method {method_id} is not attached to customer {customer_id}."
                ),
            ));
        }
    }
    Ok(())
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let mut fields = fields_from(&mut request.params)?;
            let test_clock = request.params.take_string("test_clock")?;
            request.reject_unknown_params()?;
            if let Some(clock) = test_clock {
                if request.key.mode.is_live() {
                    return Err(ApiError::invalid_param(
                        "test_clock",
                        "Test clocks exist in test mode only.",
                    ));
                }
                inner
                    .payments
                    .load_owned::<domain::test_clock::TestClock>(
                        &request.actor(),
                        "test_clock",
                        &clock,
                    )
                    .await?;
                fields.test_clock = Some(clock);
            }
            let customer_id = ids::new_id("cus");
            check_default_payment_method(&inner, &request, &customer_id, &fields).await?;
            let livemode = request.key.mode.is_live();
            let executed = inner
                .payments
                .bus()
                .execute_with::<Customer, _>(
                    &customer_id,
                    CustomerCommand::Create {
                        customer_id: customer_id.clone(),
                        fields,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, |customer: &Customer| {
                        json_response(200, &stripe::customer(customer, livemode))
                    }),
                )
                .await
                .map_err(|error| customer_error(&customer_id, error))?;
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
            let fields = fields_from(&mut request.params)?;
            request.reject_unknown_params()?;
            inner
                .payments
                .load_owned::<Customer>(&request.actor(), "customer", &id)
                .await?;
            check_default_payment_method(&inner, &request, &id, &fields).await?;
            let livemode = request.key.mode.is_live();
            let executed = inner
                .payments
                .bus()
                .execute_with::<Customer, _>(
                    &id,
                    CustomerCommand::Update {
                        fields,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, |customer: &Customer| {
                        json_response(200, &stripe::customer(customer, livemode))
                    }),
                )
                .await
                .map_err(|error| customer_error(&id, error))?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

pub async fn delete(
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
                .load_owned::<Customer>(&request.actor(), "customer", &id)
                .await?;
            let livemode = request.key.mode.is_live();
            let executed = inner
                .payments
                .bus()
                .execute_with::<Customer, _>(
                    &id,
                    CustomerCommand::Delete {
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, |customer: &Customer| {
                        json_response(200, &stripe::customer(customer, livemode))
                    }),
                )
                .await
                .map_err(|error| customer_error(&id, error))?;
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
    super::retrieve_object(&state, &key, "customer", &id, uri.query(), &[]).await
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let expand = params.take_expand()?;
    let email = params.take_string("email")?;
    params.reject_unknown()?;
    let scope = scope(&key);
    // Stripe matches email exactly (case-sensitively).
    let filter = email.map_or(ListFilter::None, ListFilter::Email);
    let list = read_model::list_objects(
        &state.pool,
        &scope,
        "customer",
        &filter,
        &page,
        "/v1/customers",
    )
    .await?;
    let mut body = serde_json::to_value(&list).map_err(ApiError::internal)?;
    read_model::expand(&state.pool, &scope, &mut body, &expand).await?;
    Ok(Json(body).into_response())
}

pub async fn list_payment_methods(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let _card_only = params.take_string("type")?;
    params.reject_unknown()?;
    let scope = scope(&key);
    read_model::require_object(&state.pool, &scope, "customer", &id).await?;
    let list = read_model::list_objects(
        &state.pool,
        &scope,
        "payment_method",
        &ListFilter::Customer(id.clone()),
        &page,
        &format!("/v1/customers/{id}/payment_methods"),
    )
    .await?;
    Ok(Json(
        serde_json::to_value(&list).map_err(ApiError::internal)?,
    ))
}
