//! `/v1/subscriptions`: create (the first invoice charged at once), retrieve, update (flags,
//! default payment method, items with daily prorations), cancel, list.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::billing::{
    ItemChange, ItemRequest, PaymentBehavior, ProrationBehavior, SubscriptionRequest,
    SubscriptionUpdate, Written as BillingWritten,
};
use commands::payments::PaymentError;
use domain::customer::Metadata;
use domain::subscription::SubscriptionChanges;
use serde_json::json;

use super::read_model::{self, BodyFilter, ListFilter};
use super::write::{idempotent, WriteRequest};
use super::{billing_write, query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::ListParams;

const KIND: &str = "subscription";

fn metadata_on_create(params: &mut Params) -> Result<Metadata, ApiError> {
    let mut metadata = Metadata::new();
    if let Some(update) = params.take_metadata("metadata")? {
        update.apply_to(&mut metadata);
    }
    Ok(metadata)
}

/// Stripe answers an object named by a parameter that does not exist with a 400
/// `resource_missing` naming the parameter; only the subscription in the URL is a 404.
/// `param_of` names the parameter that carried `kind` `id`.
fn refused(error: PaymentError, param_of: impl Fn(&str, &str) -> Option<String>) -> ApiError {
    match error {
        PaymentError::NotFound { kind, id } => match param_of(kind, &id) {
            Some(param) => ApiError::missing_reference(param, kind, &id),
            None => ApiError::missing(kind, &id),
        },
        other => other.into(),
    }
}

fn items_from(params: &mut Params) -> Result<Vec<ItemRequest>, ApiError> {
    let Some(items) = params.take_object_list("items")? else {
        return Err(ApiError::missing_param("items"));
    };
    let mut requests = Vec::with_capacity(items.len());
    for mut item in items {
        let price = item
            .take_string("price")?
            .ok_or_else(|| ApiError::missing_param(item.param_name("price")))?;
        let quantity = item.take_i64("quantity")?.unwrap_or(1);
        if quantity < 1 {
            return Err(ApiError::invalid_param(
                item.param_name("quantity"),
                "Quantity must be at least 1.",
            ));
        }
        let metadata = metadata_on_create(&mut item)?;
        item.reject_unknown()?;
        requests.push(ItemRequest {
            price,
            quantity,
            metadata,
        });
    }
    if requests.is_empty() {
        return Err(ApiError::missing_param("items"));
    }
    Ok(requests)
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let customer = params
                .take_string("customer")?
                .ok_or_else(|| ApiError::missing_param("customer"))?;
            let items = items_from(params)?;
            let trial_end = match params.take_string("trial_end")?.as_deref() {
                None => None,
                Some("now") => None,
                Some(value) => Some(value.parse::<i64>().map_err(|_| {
                    ApiError::invalid_param(
                        "trial_end",
                        "trial_end must be a unix timestamp or `now`.",
                    )
                })?),
            };
            let trial_period_days = params
                .take_i64("trial_period_days")?
                .map(|days| {
                    u32::try_from(days)
                        .ok()
                        .filter(|days| *days <= 730)
                        .ok_or_else(|| {
                            ApiError::invalid_param(
                                "trial_period_days",
                                "trial_period_days must be between 0 and 730.",
                            )
                        })
                })
                .transpose()?
                .filter(|days| *days > 0);
            let payment_behavior = params
                .take_enum(
                    "payment_behavior",
                    &[
                        ("allow_incomplete", PaymentBehavior::AllowIncomplete),
                        ("default_incomplete", PaymentBehavior::DefaultIncomplete),
                        ("error_if_incomplete", PaymentBehavior::ErrorIfIncomplete),
                    ],
                )?
                .unwrap_or_default();
            params.take_enum("collection_method", &[("charge_automatically", ())])?;
            params.take_bool("off_session")?;
            params.take_enum(
                "proration_behavior",
                &[
                    ("create_prorations", ()),
                    ("none", ()),
                    ("always_invoice", ()),
                ],
            )?;
            let subscription = SubscriptionRequest {
                customer,
                items,
                default_payment_method: params.take_string("default_payment_method")?,
                default_tax_rates: params.take_list("default_tax_rates")?,
                trial_period_days,
                trial_end,
                payment_behavior,
                cancel_at_period_end: params.take_bool("cancel_at_period_end")?.unwrap_or(false),
                metadata: metadata_on_create(params)?,
                description: params.take_string("description")?,
                ..SubscriptionRequest::default()
            };
            request.reject_unknown_params()?;
            let prices: Vec<String> = subscription
                .items
                .iter()
                .map(|item| item.price.clone())
                .collect();
            let param_of = |kind: &str, id: &str| match kind {
                "customer" => Some("customer".to_string()),
                "payment_method" => Some("default_payment_method".to_string()),
                "tax_rate" => Some("default_tax_rates".to_string()),
                "price" => prices
                    .iter()
                    .position(|price| price == id)
                    .map(|index| format!("items[{index}][price]")),
                _ => None,
            };
            let mut written = BillingWritten::new(token.cloned());
            let created = inner
                .billing
                .create_subscription(&request.actor(), subscription, &mut written)
                .await;
            match created {
                Ok(id) => billing_write::answer(&inner, &request, KIND, &id, written).await,
                Err(error) => {
                    let error = refused(error, param_of);
                    Err(billing_write::failed(&inner, &written, error).await)
                }
            }
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
            let params = &mut request.params;
            let mut changes = SubscriptionChanges {
                cancel_at_period_end: params.take_bool("cancel_at_period_end")?,
                default_payment_method: params.take_optional_string("default_payment_method")?,
                description: params.take_optional_string("description")?,
                ..SubscriptionChanges::default()
            };
            match params.take_metadata("metadata")? {
                Some(MapUpdate::Merge(update)) => {
                    changes.metadata = update
                        .into_iter()
                        .map(|(key, value)| (key, value.unwrap_or_default()))
                        .collect();
                }
                Some(MapUpdate::Clear) => {
                    return Err(ApiError::invalid_param(
                        "metadata",
                        "Unset metadata keys one by one (metadata[key]=).",
                    ))
                }
                None => {}
            }
            let mut items = Vec::new();
            for mut item in params.take_object_list("items")?.unwrap_or_default() {
                let change = ItemChange {
                    id: item.take_string("id")?,
                    price: item.take_string("price")?,
                    quantity: item.take_i64("quantity")?,
                    deleted: item.take_bool("deleted")?.unwrap_or(false),
                };
                if change.quantity.is_some_and(|quantity| quantity < 1) {
                    return Err(ApiError::invalid_param(
                        item.param_name("quantity"),
                        "Quantity must be at least 1.",
                    ));
                }
                item.reject_unknown()?;
                items.push(change);
            }
            let proration_behavior = params
                .take_enum(
                    "proration_behavior",
                    &[
                        ("create_prorations", ProrationBehavior::CreateProrations),
                        ("none", ProrationBehavior::None),
                    ],
                )?
                .unwrap_or_default();
            params.take_enum(
                "payment_behavior",
                &[
                    ("allow_incomplete", ()),
                    ("default_incomplete", ()),
                    ("error_if_incomplete", ()),
                    ("pending_if_incomplete", ()),
                ],
            )?;
            request.reject_unknown_params()?;
            let item_ids: Vec<Option<String>> = items.iter().map(|item| item.id.clone()).collect();
            let prices: Vec<Option<String>> = items.iter().map(|item| item.price.clone()).collect();
            let param_of = |kind: &str, id: &str| {
                let named = |values: &[Option<String>], field: &str| {
                    values
                        .iter()
                        .position(|value| value.as_deref() == Some(id))
                        .map(|index| format!("items[{index}][{field}]"))
                };
                match kind {
                    "payment_method" => Some("default_payment_method".to_string()),
                    "subscription_item" => named(&item_ids, "id"),
                    "price" => named(&prices, "price"),
                    _ => None,
                }
            };
            let mut written = BillingWritten::new(token.cloned());
            let updated = inner
                .billing
                .update_subscription(
                    &request.actor(),
                    &id,
                    SubscriptionUpdate {
                        changes,
                        items,
                        proration_behavior,
                    },
                    &mut written,
                )
                .await;
            match updated {
                Ok(()) => billing_write::answer(&inner, &request, KIND, &id, written).await,
                Err(error) => {
                    let error = refused(error, param_of);
                    Err(billing_write::failed(&inner, &written, error).await)
                }
            }
        })
    })
    .await
}

/// `DELETE /v1/subscriptions/{id}`: cancels at once.
pub async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let reason = match request.params.take_object("cancellation_details")? {
                Some(mut details) => {
                    let feedback = details.take_string("feedback")?;
                    details.take_string("comment")?;
                    details.reject_unknown()?;
                    feedback
                }
                None => None,
            };
            request.params.take_bool("invoice_now")?;
            request.params.take_bool("prorate")?;
            request.reject_unknown_params()?;
            let mut written = BillingWritten::new(token.cloned());
            let canceled = inner
                .billing
                .cancel_subscription(
                    &request.actor(),
                    &id,
                    Some(reason.unwrap_or_else(|| "cancellation_requested".into())),
                    &mut written,
                )
                .await;
            match canceled {
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
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let status = params.take_string("status")?;
    let price = params.take_string("price")?;
    params.take_string("test_clock")?;
    params.reject_unknown()?;
    let mut contains = serde_json::Map::new();
    if let Some(customer) = customer {
        contains.insert("customer".into(), json!(customer));
    }
    let mut excludes = None;
    match status.as_deref() {
        // Stripe lists everything but canceled subscriptions by default.
        None => excludes = Some(json!({"status": "canceled"})),
        Some("all") => {}
        Some(status) => {
            if domain::subscription::SubscriptionStatus::parse(status).is_none() {
                return Err(ApiError::invalid_param(
                    "status",
                    format!("Invalid status: {status}"),
                ));
            }
            contains.insert("status".into(), json!(status));
        }
    }
    if let Some(price) = price {
        contains.insert("items".into(), json!({"data": [{"price": {"id": price}}]}));
    }
    let filter = if contains.is_empty() && excludes.is_none() {
        ListFilter::None
    } else {
        ListFilter::Body(BodyFilter {
            contains: (!contains.is_empty()).then_some(serde_json::Value::Object(contains)),
            excludes,
            ..BodyFilter::default()
        })
    };
    let scope = scope(&key);
    let list = read_model::list_objects(
        &state.pool,
        &scope,
        KIND,
        &filter,
        &page,
        "/v1/subscriptions",
    )
    .await?;
    let mut body = serde_json::to_value(&list).map_err(ApiError::internal)?;
    read_model::expand(&state.pool, &scope, &mut body, &expand).await?;
    Ok(Json(body).into_response())
}
