//! `/v1/invoices`: manual invoices (draft → finalize → pay, void, mark uncollectible, draft
//! update and delete), retrieve, list, and an invoice's lines. Subscription invoices and
//! one-off payments' receipt invoices are created by billing itself and read here.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::billing::{InvoiceRequest, Written as BillingWritten};
use commands::payments::Actor;
use domain::customer::Metadata;
use domain::invoice::{DraftChanges, InvoiceCommand, InvoiceStatus};
use domain::Currency;
use serde_json::{json, Value};

use super::read_model::{self, BodyFilter, ListFilter, Scope};
use super::write::{idempotent, WriteRequest, Written};
use super::{billing_write, query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::{Cursor, List, ListParams};

const KIND: &str = "invoice";

/// Most pending invoice items one new invoice takes in (Stripe's limit on an invoice's
/// invoice items is 250).
const MAX_PENDING_ITEMS: i64 = 250;

/// The currency of an invoice created without one.
const DEFAULT_CURRENCY: Currency = Currency::GBP;

fn currency_from(params: &mut Params) -> Result<Option<Currency>, ApiError> {
    let Some(code) = params.take_string("currency")? else {
        return Ok(None);
    };
    Currency::parse(&code)
        .map(Some)
        .map_err(|_| ApiError::invalid_param("currency", format!("Invalid currency: {code}")))
}

/// The customer's pending invoice items (on no invoice yet, not deleted) in `currency`,
/// oldest first.
async fn pending_items(
    state: &ApiState,
    scope: &Scope,
    customer: &str,
    currency: Currency,
) -> Result<Vec<String>, ApiError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM api.objects \
         WHERE project = $1 AND livemode = $2 AND object = 'invoiceitem' AND customer = $3 \
           AND NOT deleted AND body->'invoice' = 'null'::jsonb AND body->>'currency' = $4 \
         ORDER BY created, id LIMIT $5",
    )
    .bind(&scope.project)
    .bind(scope.livemode)
    .bind(customer)
    .bind(currency.to_string())
    .bind(MAX_PENDING_ITEMS)
    .fetch_all(&state.pool)
    .await?;
    Ok(ids)
}

/// Runs a billing write on invoice `id` and answers with the invoice as it then is.
async fn answer_with_invoice(
    state: &ApiState,
    request: &WriteRequest,
    id: &str,
    written: BillingWritten,
    outcome: Result<(), commands::payments::PaymentError>,
) -> Result<Written, ApiError> {
    match outcome {
        Ok(()) => billing_write::answer(state, request, KIND, id, written).await,
        Err(error) => Err(billing_write::failed(state, &written, error.into()).await),
    }
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let customer = params
                .take_string("customer")?
                .ok_or_else(|| ApiError::missing_param("customer"))?;
            let currency = currency_from(params)?.unwrap_or(DEFAULT_CURRENCY);
            let auto_advance = params.take_bool("auto_advance")?.unwrap_or(false);
            let description = params.take_string("description")?;
            let footer = params.take_string("footer")?;
            let default_payment_method = params.take_string("default_payment_method")?;
            let mut metadata = Metadata::new();
            if let Some(update) = params.take_metadata("metadata")? {
                update.apply_to(&mut metadata);
            }
            let include = params
                .take_enum(
                    "pending_invoice_items_behavior",
                    &[("include", true), ("exclude", false)],
                )?
                .unwrap_or(false);
            params
                .take_string("collection_method")
                .and_then(|method| match method.as_deref() {
                    None | Some("charge_automatically") => Ok(()),
                    Some(_) => Err(ApiError::invalid_param(
                        "collection_method",
                        "Only charge_automatically is supported.",
                    )),
                })?;
            request.reject_unknown_params()?;
            let pending = if include {
                pending_items(&inner, &request.scope(), &customer, currency).await?
            } else {
                Vec::new()
            };
            let invoice = InvoiceRequest {
                customer,
                currency,
                auto_advance,
                description,
                footer,
                metadata,
                default_payment_method,
            };
            let mut written = BillingWritten::new(token.cloned());
            let created = inner
                .billing
                .create_invoice(&request.actor(), invoice, &pending, &mut written)
                .await;
            match created {
                Ok(id) => billing_write::answer(&inner, &request, KIND, &id, written).await,
                Err(error) => Err(billing_write::failed(&inner, &written, error.into()).await),
            }
        })
    })
    .await
}

/// `POST /v1/invoices/{id}`: changes a draft.
pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let mut changes = DraftChanges {
                description: params.take_optional_string("description")?,
                footer: params.take_optional_string("footer")?,
                auto_advance: params.take_bool("auto_advance")?,
                default_payment_method: params.take_optional_string("default_payment_method")?,
                ..DraftChanges::default()
            };
            let metadata = params.take_metadata("metadata")?;
            request.reject_unknown_params()?;
            let current =
                read_model::require_object(&inner.pool, &request.scope(), KIND, &id).await?;
            // The draft's changes set keys and remove them with an empty value.
            match metadata {
                Some(MapUpdate::Merge(update)) => {
                    for (key, value) in update {
                        changes.metadata.insert(key, value.unwrap_or_default());
                    }
                }
                Some(MapUpdate::Clear) => {
                    if let Some(keys) = current["metadata"].as_object() {
                        for key in keys.keys() {
                            changes.metadata.insert(key.clone(), String::new());
                        }
                    }
                }
                None => {}
            }
            invoice_command(&inner, &request, token, &id, move |at| {
                InvoiceCommand::UpdateDraft {
                    changes: changes.clone(),
                    at,
                }
            })
            .await
        })
    })
    .await
}

async fn invoice_command(
    state: &ApiState,
    request: &WriteRequest,
    token: Option<&commands::idempotency::ClaimToken>,
    id: &str,
    command: impl Fn(i64) -> InvoiceCommand,
) -> Result<Written, ApiError> {
    let mut written = BillingWritten::new(token.cloned());
    let outcome = state
        .billing
        .invoice_command(&request.actor(), id, command, &mut written)
        .await;
    answer_with_invoice(state, request, id, written, outcome).await
}

/// A write on one invoice that takes no parameters: `command` at the invoice's time.
async fn simple_command(
    state: ApiState,
    request: WriteRequest,
    id: String,
    command: fn(i64) -> InvoiceCommand,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            request.reject_unknown_params()?;
            invoice_command(&inner, &request, token, &id, command).await
        })
    })
    .await
}

/// `DELETE /v1/invoices/{id}`: drafts only.
pub async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    simple_command(state, request, id, |at| InvoiceCommand::DeleteDraft { at }).await
}

pub async fn void(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    simple_command(state, request, id, |at| InvoiceCommand::Void { at }).await
}

pub async fn mark_uncollectible(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    simple_command(state, request, id, |at| InvoiceCommand::MarkUncollectible {
        at,
    })
    .await
}

pub async fn finalize(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            // Stripe's `auto_advance` here changes nothing of ours: finalizing is immediate.
            request.params.take_bool("auto_advance")?;
            request.reject_unknown_params()?;
            let mut written = BillingWritten::new(token.cloned());
            let outcome = inner
                .billing
                .finalize_invoice(&request.actor(), &id, &mut written)
                .await;
            answer_with_invoice(&inner, &request, &id, written, outcome).await
        })
    })
    .await
}

/// `POST /v1/invoices/{id}/pay`: with `payment_method` (or the defaults), or
/// `paid_out_of_band=true`. A declined card answers 402 and leaves the invoice open.
pub async fn pay(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let payment_method = request.params.take_string("payment_method")?;
            let paid_out_of_band = request
                .params
                .take_bool("paid_out_of_band")?
                .unwrap_or(false);
            // Accepted as Stripe does; every payment here is off session.
            request.params.take_bool("off_session")?;
            request.reject_unknown_params()?;
            let actor: Actor = request.actor();
            let mut written = BillingWritten::new(token.cloned());
            let outcome = inner
                .billing
                .pay_invoice(&actor, &id, payment_method, paid_out_of_band, &mut written)
                .await;
            answer_with_invoice(&inner, &request, &id, written, outcome).await
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

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let expand = params.take_expand()?;
    let customer = params.take_string("customer")?;
    let subscription = params.take_string("subscription")?;
    let status = params.take_string("status")?;
    params.take_string("collection_method")?;
    params.reject_unknown()?;
    let mut contains = serde_json::Map::new();
    if let Some(status) = status {
        let known = [
            InvoiceStatus::Draft,
            InvoiceStatus::Open,
            InvoiceStatus::Paid,
            InvoiceStatus::Uncollectible,
            InvoiceStatus::Void,
        ]
        .iter()
        .any(|known| known.as_str() == status);
        if !known {
            return Err(ApiError::invalid_param(
                "status",
                format!("Invalid status: must be one of draft, open, paid, uncollectible, or void ({status})"),
            ));
        }
        contains.insert("status".into(), json!(status));
    }
    if let Some(subscription) = subscription {
        contains.insert(
            "parent".into(),
            json!({"subscription_details": {"subscription": subscription}}),
        );
    }
    let filter = match (customer, contains.is_empty()) {
        (None, true) => ListFilter::None,
        // The customer alone uses the `customer` column's index.
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
    let list =
        read_model::list_objects(&state.pool, &scope, KIND, &filter, &page, "/v1/invoices").await?;
    let mut body = serde_json::to_value(&list).map_err(ApiError::internal)?;
    read_model::expand(&state.pool, &scope, &mut body, &expand).await?;
    Ok(Json(body).into_response())
}

/// `GET /v1/invoices/{id}/lines`: the invoice's lines, paged in their order.
pub async fn lines(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    params.reject_unknown()?;
    let invoice = read_model::require_object(&state.pool, &scope(&key), KIND, &id).await?;
    let lines: Vec<Value> = invoice["lines"]["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let position = |line_id: &str| {
        lines
            .iter()
            .position(|line| line["id"] == line_id)
            .ok_or_else(|| ApiError::missing("line_item", line_id))
    };
    // Lines have an order of their own; the page is taken in it.
    let (rows, has_more) = match &page.cursor {
        None => {
            let rows: Vec<Value> = lines.iter().take(page.limit).cloned().collect();
            (rows, lines.len() > page.limit)
        }
        Some(Cursor::StartingAfter(line_id)) => {
            let start = position(line_id)? + 1;
            let rows: Vec<Value> = lines.iter().skip(start).take(page.limit).cloned().collect();
            (rows, lines.len() > start + page.limit)
        }
        Some(Cursor::EndingBefore(line_id)) => {
            let end = position(line_id)?;
            let start = end.saturating_sub(page.limit);
            (lines[start..end].to_vec(), start > 0)
        }
    };
    let mut list = List::from_page(
        format!("/v1/invoices/{id}/lines"),
        &ListParams {
            limit: page.limit,
            cursor: None,
        },
        rows,
    );
    list.has_more = has_more;
    Ok(Json(
        serde_json::to_value(&list).map_err(ApiError::internal)?,
    ))
}
