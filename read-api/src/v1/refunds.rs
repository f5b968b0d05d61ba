//! `/v1/refunds` and `/v1/charges` (charges are read-only: they are made by confirming
//! payment intents).

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Json;
use commands::ids;
use commands::payments::RefundRequest;
use domain::customer::Metadata;
use domain::payment_intent::{AttemptStatus, PaymentIntent};
use projections::stripe;

use super::read_model::{self, ListFilter};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::list::ListParams;

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let intent = params.take_string("payment_intent")?;
            let charge = params.take_string("charge")?;
            let amount = params.take_i64("amount")?;
            let reason = params.take_enum(
                "reason",
                &[
                    ("duplicate", "duplicate"),
                    ("fraudulent", "fraudulent"),
                    ("requested_by_customer", "requested_by_customer"),
                ],
            )?;
            let mut metadata = Metadata::new();
            if let Some(update) = params.take_metadata("metadata")? {
                update.apply_to(&mut metadata);
            }
            request.reject_unknown_params()?;
            let scope = request.scope();
            let intent_id = match (intent, charge) {
                (Some(intent), _) => intent,
                (None, Some(charge)) => {
                    let charge_object = read_model::require_object(&inner.pool, &scope, "charge", &charge).await?;
                    charge_object
                        .get("payment_intent")
                        .and_then(|value| value.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::missing("charge", &charge))?
                }
                (None, None) => return Err(ApiError::missing_param("payment_intent")),
            };
            if amount.is_some_and(|amount| amount < 1) {
                return Err(ApiError::invalid_param("amount", "Refund amount must be positive."));
            }
            let refund_id = ids::new_id("re");
            let rendered_id = refund_id.clone();
            let render = move |intent: &PaymentIntent| match intent.refunds.iter().find(|refund| refund.id == rendered_id) {
                Some(refund) if refund.status == AttemptStatus::Failed => json_response(
                    402,
                    &serde_json::json!({"error": {
                        "type": "card_error", "code": "refund_failed",
                        "message": refund.failure_reason.clone().unwrap_or_else(|| "The refund failed.".into()),
                        "charge": refund.charge,
                    }}),
                ),
                Some(refund) => json_response(200, &stripe::refund(intent, refund)),
                None => json_response(500, &serde_json::json!({"error": {"type": "api_error", "message": "refund missing"}})),
            };
            let executed = inner
                .payments
                .refund(
                    &request.actor(),
                    &intent_id,
                    RefundRequest {
                        refund_id,
                        amount,
                        reason: reason.map(str::to_string),
                        metadata,
                    },
                    Respond::new(token, render),
                )
                .await?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

async fn list_kind(
    state: &ApiState,
    key: &AuthenticatedKey,
    kind: &'static str,
    url: &str,
    uri: &Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let intent = params.take_string("payment_intent")?;
    let charge = params.take_string("charge")?;
    let customer = if kind == "charge" {
        params.take_string("customer")?
    } else {
        None
    };
    params.reject_unknown()?;
    let scope = scope(key);
    let filter = match (intent, charge, customer) {
        (Some(intent), _, _) => ListFilter::PaymentIntent(intent),
        (None, Some(charge), _) => {
            let charge_object =
                read_model::require_object(&state.pool, &scope, "charge", &charge).await?;
            match charge_object
                .get("payment_intent")
                .and_then(|value| value.as_str())
            {
                Some(intent) => ListFilter::PaymentIntent(intent.to_string()),
                None => return Err(ApiError::missing("charge", &charge)),
            }
        }
        (None, None, Some(customer)) => ListFilter::Customer(customer),
        (None, None, None) => ListFilter::None,
    };
    let list = read_model::list_objects(&state.pool, &scope, kind, &filter, &page, url).await?;
    Ok(Json(
        serde_json::to_value(&list).map_err(ApiError::internal)?,
    ))
}

pub async fn retrieve(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    super::retrieve_object(&state, &key, "refund", &id, uri.query(), &[]).await
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    list_kind(&state, &key, "refund", "/v1/refunds", &uri).await
}

pub async fn retrieve_charge(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    super::retrieve_object(&state, &key, "charge", &id, uri.query(), &[]).await
}

pub async fn list_charges(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    list_kind(&state, &key, "charge", "/v1/charges", &uri).await
}
