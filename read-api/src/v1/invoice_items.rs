//! `/v1/invoiceitems`: charges and credits for a customer, on a draft invoice at once or
//! pending until the customer's next invoice takes them in.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::billing::{InvoiceItemRequest, Written as BillingWritten};
use domain::customer::Metadata;
use domain::Currency;
use serde_json::{json, Value};

use super::read_model::{self, BodyFilter, ListFilter};
use super::write::{idempotent, WriteRequest};
use super::{billing_write, query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::Params;
use crate::http::list::ListParams;

const KIND: &str = "invoiceitem";

/// An integer amount given as Stripe's `*_decimal` string (we have no fractional minor units).
fn whole_decimal(params: &mut Params, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(text) = params.take_string(name)? else {
        return Ok(None);
    };
    text.parse::<i64>().map(Some).map_err(|_| {
        ApiError::invalid_param(
            name,
            format!(
                "Invalid {name}: only whole amounts in the currency's minor unit are supported."
            ),
        )
    })
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let customer = params
                .take_string("customer")?
                .ok_or_else(|| ApiError::missing_param("customer"))?;
            let invoice = params.take_string("invoice")?;
            // Endive names the price under `pricing`; older versions at the top level.
            let mut price = params.take_string("price")?;
            if let Some(mut pricing) = params.take_object("pricing")? {
                price = price.or(pricing.take_string("price")?);
                pricing.reject_unknown()?;
            }
            let amount = params.take_i64("amount")?;
            let unit_amount = match params.take_i64("unit_amount")? {
                Some(amount) => Some(amount),
                None => whole_decimal(params, "unit_amount_decimal")?,
            };
            let quantity = params.take_i64("quantity")?.unwrap_or(1);
            if quantity < 1 {
                return Err(ApiError::invalid_param(
                    "quantity",
                    "Invalid quantity: must be at least 1.",
                ));
            }
            let currency = match params.take_string("currency")? {
                Some(code) => Some(Currency::parse(&code).map_err(|_| {
                    ApiError::invalid_param("currency", format!("Invalid currency: {code}"))
                })?),
                None => None,
            };
            let description = params.take_string("description")?;
            let tax_rates = params.take_list("tax_rates")?;
            let mut metadata = Metadata::new();
            if let Some(update) = params.take_metadata("metadata")? {
                update.apply_to(&mut metadata);
            }
            request.reject_unknown_params()?;
            if price.is_some() && (amount.is_some() || unit_amount.is_some()) {
                return Err(ApiError::exclusive_params("price", "amount"));
            }
            let item = InvoiceItemRequest {
                customer,
                invoice,
                price,
                amount,
                unit_amount,
                quantity,
                currency,
                description,
                tax_rates,
                metadata,
            };
            let mut written = BillingWritten::new(token.cloned());
            let created = inner
                .billing
                .create_invoice_item(&request.actor(), item, &mut written)
                .await;
            match created {
                Ok(id) => billing_write::answer(&inner, &request, KIND, &id, written).await,
                Err(error) => Err(billing_write::failed(&inner, &written, error.into()).await),
            }
        })
    })
    .await
}

/// `DELETE /v1/invoiceitems/{id}`: an item not yet on a finalized invoice.
pub async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            request.reject_unknown_params()?;
            let mut written = BillingWritten::new(token.cloned());
            let deleted = inner
                .billing
                .delete_invoice_item(&request.actor(), &id, &mut written)
                .await;
            match deleted {
                Ok(()) => billing_write::answer(&inner, &request, KIND, &id, written).await,
                Err(error) => Err(billing_write::failed(&inner, &written, error.into()).await),
            }
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
    super::retrieve_object(&state, &key, KIND, &id, uri.query(), &[]).await
}

/// `GET /v1/invoiceitems`: by `customer`, `invoice`, `pending`.
pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let expand = params.take_expand()?;
    let customer = params.take_string("customer")?;
    let invoice = params.take_string("invoice")?;
    let pending = params.take_bool("pending")?;
    params.reject_unknown()?;
    let mut contains = serde_json::Map::new();
    if let Some(invoice) = invoice {
        contains.insert("invoice".into(), json!(invoice));
    }
    if pending == Some(true) {
        contains.insert("invoice".into(), Value::Null);
    }
    let filter = match (customer, contains.is_empty()) {
        (None, true) => ListFilter::None,
        (Some(customer), true) => ListFilter::Customer(customer),
        (customer, false) => {
            if let Some(customer) = customer {
                contains.insert("customer".into(), json!(customer));
            }
            ListFilter::Body(BodyFilter {
                contains: Some(Value::Object(contains)),
                ..BodyFilter::default()
            })
        }
    };
    let scope = scope(&key);
    let list = read_model::list_objects(
        &state.pool,
        &scope,
        KIND,
        &filter,
        &page,
        "/v1/invoiceitems",
    )
    .await?;
    let mut body = serde_json::to_value(&list).map_err(ApiError::internal)?;
    read_model::expand(&state.pool, &scope, &mut body, &expand).await?;
    Ok(Json(body).into_response())
}
