//! `/v1/checkout/sessions`: create, retrieve, list, expire, line items, and the test helper
//! `POST /v1/test_helpers/checkout/sessions/{id}/complete` (test mode only), which
//! completes a session as if the customer had paid on the hosted page.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::checkout::{CheckoutService, LineRequest, SessionRequest};
use commands::payments::PaymentError;
use domain::checkout_session::{CheckoutSession, SessionMode, MAX_LINE_ITEMS};
use domain::customer::Metadata;
use serde_json::Value;

use super::prices::{take_currency, take_recurring};
use super::read_model::{self, ListFilter};
use super::write::{
    idempotent, json_response, Respond, WriteRequest, Written, READ_YOUR_WRITES_TIMEOUT_MS,
};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::Params;
use crate::http::list::ListParams;

pub const KIND: &str = projections::stripe::CHECKOUT_SESSION_OBJECT;
/// Longest `success_url`/`cancel_url` accepted (Stripe's limit).
const MAX_URL_CHARS: usize = 5_000;
/// Longest `customer_email` and product name accepted.
const MAX_TEXT_CHARS: usize = 512;

pub fn service(state: &ApiState) -> CheckoutService {
    CheckoutService::new(state.billing.clone())
}

fn render(session: &CheckoutSession, livemode: bool, public_url: &str) -> Value {
    projections::stripe::checkout_session(session, livemode, public_url)
}

/// Stripe shows `line_items` only when expanded.
fn without_line_items(mut object: Value, expand: &[String]) -> Value {
    if !expand.iter().any(|path| path == "line_items") {
        if let Some(map) = object.as_object_mut() {
            map.remove("line_items");
        }
    }
    object
}

fn refused(error: PaymentError) -> ApiError {
    match error {
        PaymentError::NotFound { kind, id } => match kind {
            "customer" => ApiError::missing_reference("customer", kind, &id),
            "price" | "product" => ApiError::missing_reference("line_items", kind, &id),
            "payment_method" => ApiError::missing_reference("payment_method", kind, &id),
            _ => ApiError::missing(kind, &id),
        },
        other => other.into(),
    }
}

fn url_param(params: &mut Params, name: &str) -> Result<Option<String>, ApiError> {
    let Some(url) = params.take_string(name)? else {
        return Ok(None);
    };
    let absolute = ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
            && url.len() > scheme.len()
    });
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if url.len() > MAX_URL_CHARS || !absolute || !clean {
        return Err(ApiError::invalid_param(
            name,
            format!("Not a valid URL: {name} must be an absolute http(s) URL."),
        ));
    }
    Ok(Some(url))
}

fn line_items_from(params: &mut Params) -> Result<Vec<LineRequest>, ApiError> {
    let Some(items) = params.take_object_list("line_items")? else {
        return Ok(Vec::new());
    };
    if items.len() > MAX_LINE_ITEMS {
        return Err(ApiError::invalid_param(
            "line_items",
            format!("A session may have at most {MAX_LINE_ITEMS} line items."),
        ));
    }
    let mut lines = Vec::with_capacity(items.len());
    for mut item in items {
        let quantity = item.take_i64("quantity")?.unwrap_or(1);
        if quantity < 1 {
            return Err(ApiError::invalid_param(
                item.param_name("quantity"),
                "Quantity must be at least 1.",
            ));
        }
        let price = item.take_string("price")?;
        let price_data = item.take_object("price_data")?;
        let line = match (price, price_data) {
            (Some(_), Some(_)) => {
                return Err(ApiError::exclusive_params(
                    &item.param_name("price"),
                    &item.param_name("price_data"),
                ))
            }
            (None, None) => return Err(ApiError::missing_param(item.param_name("price"))),
            (Some(price), None) => LineRequest::Price { price, quantity },
            (None, Some(mut data)) => {
                let currency = take_currency(&mut data)?
                    .ok_or_else(|| ApiError::missing_param(data.param_name("currency")))?;
                let unit_amount = data
                    .take_i64("unit_amount")?
                    .ok_or_else(|| ApiError::missing_param(data.param_name("unit_amount")))?;
                if unit_amount < 0 {
                    return Err(ApiError::invalid_param(
                        data.param_name("unit_amount"),
                        "unit_amount may not be negative.",
                    ));
                }
                let mut product = data
                    .take_object("product_data")?
                    .ok_or_else(|| ApiError::missing_param(data.param_name("product_data")))?;
                let name = product
                    .take_string("name")?
                    .filter(|name| !name.trim().is_empty())
                    .ok_or_else(|| ApiError::missing_param(product.param_name("name")))?;
                if name.chars().count() > MAX_TEXT_CHARS {
                    return Err(ApiError::invalid_param(
                        product.param_name("name"),
                        "The product name is too long.",
                    ));
                }
                product.reject_unknown()?;
                let recurring = take_recurring(&mut data)?;
                data.take_enum(
                    "tax_behavior",
                    &[("unspecified", ()), ("exclusive", ()), ("inclusive", ())],
                )?;
                data.reject_unknown()?;
                LineRequest::PriceData {
                    currency,
                    unit_amount,
                    product_name: name,
                    recurring,
                    quantity,
                }
            }
        };
        item.reject_unknown()?;
        lines.push(line);
    }
    Ok(lines)
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let mode = params
                .take_enum(
                    "mode",
                    &[
                        ("payment", SessionMode::Payment),
                        ("subscription", SessionMode::Subscription),
                        ("setup", SessionMode::Setup),
                    ],
                )?
                .unwrap_or_default();
            let line_items = line_items_from(params)?;
            let currency = take_currency(params)?;
            let customer = params.take_string("customer")?;
            let customer_email = params.take_string("customer_email")?;
            if customer.is_some() && customer_email.is_some() {
                return Err(ApiError::exclusive_params("customer", "customer_email"));
            }
            if let Some(email) = &customer_email {
                if email.chars().count() > MAX_TEXT_CHARS || !email.contains('@') {
                    return Err(ApiError::invalid_param(
                        "customer_email",
                        "Invalid email address.",
                    ));
                }
            }
            let success_url = url_param(params, "success_url")?
                .ok_or_else(|| ApiError::missing_param("success_url"))?;
            let cancel_url = url_param(params, "cancel_url")?;
            let expires_at = params.take_i64("expires_at")?;
            let mut metadata = Metadata::new();
            if let Some(update) = params.take_metadata("metadata")? {
                update.apply_to(&mut metadata);
            }
            if let Some(types) = params.take_list("payment_method_types")? {
                if types.iter().any(|kind| kind != "card") {
                    return Err(ApiError::invalid_param(
                        "payment_method_types",
                        "Only card payments are supported.",
                    ));
                }
            }
            params.take_enum("ui_mode", &[("hosted_page", ()), ("hosted", ())])?;
            request.reject_unknown_params()?;
            let livemode = request.key.mode.is_live();
            let public_url = inner.payments.public_url().to_string();
            let executed = service(&inner)
                .create(
                    &request.actor(),
                    SessionRequest {
                        mode,
                        line_items,
                        currency,
                        customer,
                        customer_email,
                        success_url,
                        cancel_url,
                        expires_at,
                        metadata,
                    },
                    Respond::new(token, |session: &CheckoutSession| {
                        json_response(200, &render(session, livemode, &public_url))
                    }),
                )
                .await
                .map_err(|error| match error {
                    commands::payments::FinalStepError::Payment(error) => refused(error),
                    other => other.into(),
                })?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

pub async fn expire(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            request.reject_unknown_params()?;
            let livemode = request.key.mode.is_live();
            let public_url = inner.payments.public_url().to_string();
            let executed = service(&inner)
                .expire(
                    &request.actor(),
                    &id,
                    Respond::new(token, |session: &CheckoutSession| {
                        json_response(200, &render(session, livemode, &public_url))
                    }),
                )
                .await?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

/// The test helper: completes the session with `payment_method` (test mode only).
pub async fn complete_for_test(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, _token| {
        Box::pin(async move {
            if request.key.mode.is_live() {
                return Err(ApiError::invalid_request(
                    "This test helper exists in test mode only; use a test key (sk_test_…).",
                ));
            }
            let payment_method = request
                .params
                .take_string("payment_method")?
                .ok_or_else(|| ApiError::missing_param("payment_method"))?;
            request.reject_unknown_params()?;
            let completed = service(&inner)
                .complete_with_payment_method(&request.actor(), &id, &payment_method)
                .await
                .map_err(refused)?;
            let cursor = completed.appended.last().map(|appended| appended.cursor());
            if let Some(cursor) = cursor {
                inner
                    .projections
                    .wait_until_applied(
                        projections::api_objects::NAME,
                        cursor,
                        Duration::from_millis(READ_YOUR_WRITES_TIMEOUT_MS),
                    )
                    .await
                    .map_err(ApiError::internal)?;
            }
            let object =
                read_model::require_object(&inner.pool, &request.scope(), KIND, &id).await?;
            Ok(Written {
                response: json_response(200, &without_line_items(object, &[])),
                stored: false,
                cursor,
            })
        })
    })
    .await
}

pub async fn retrieve(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let expand = params.take_expand()?;
    params.reject_unknown()?;
    let scope = scope(&key);
    let object = read_model::require_object(&state.pool, &scope, KIND, &id).await?;
    let mut object = without_line_items(object, &expand);
    let others: Vec<String> = expand
        .into_iter()
        .filter(|path| path != "line_items")
        .collect();
    read_model::expand(&state.pool, &scope, &mut object, &others).await?;
    Ok(Json(object))
}

pub async fn line_items(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    ListParams::take_from(&mut params)?;
    params.reject_unknown()?;
    let object = read_model::require_object(&state.pool, &scope(&key), KIND, &id).await?;
    Ok(Json(object["line_items"].clone()))
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let filter = match (
        params.take_string("customer")?,
        params.take_string("payment_intent")?,
    ) {
        (Some(customer), _) => ListFilter::Customer(customer),
        (None, Some(intent)) => ListFilter::PaymentIntent(intent),
        (None, None) => ListFilter::None,
    };
    params.reject_unknown()?;
    let mut list = read_model::list_objects(
        &state.pool,
        &scope(&key),
        KIND,
        &filter,
        &page,
        "/v1/checkout/sessions",
    )
    .await?;
    list.data = list
        .data
        .into_iter()
        .map(|object| without_line_items(object, &[]))
        .collect();
    Ok(Json(serde_json::to_value(&list).map_err(ApiError::internal)?).into_response())
}
