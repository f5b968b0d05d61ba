//! `/v1/events`: Stripe events rendered from the ledger, with `data.object` as it was at
//! each event. Filter with `type` or `types[]` (exact type names) and `delivery_success`. `pending_webhooks` is
//! read from the webhook relay: to how many endpoints the event is still being delivered.
//!
//! `POST /v1/events/{id}/redeliver` (our documented extension) sends an event again: to
//! `webhook_endpoint` if given, else to every still-enabled endpoint it was sent to.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use webhook_relay::store;

use super::read_model::{self, Scope};
use super::webhook_endpoints::store_error;
use super::write::{idempotent, json_response, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::list::ListParams;

fn relay_scope(scope: &Scope) -> store::Scope<'_> {
    store::Scope {
        project: &scope.project,
        livemode: scope.livemode,
    }
}

/// Sets each event's `pending_webhooks` from the relay's deliveries.
async fn with_pending_webhooks(
    state: &ApiState,
    scope: &Scope,
    events: &mut [Value],
) -> Result<(), ApiError> {
    let ids: Vec<String> = events
        .iter()
        .filter_map(|event| event["id"].as_str().map(str::to_string))
        .collect();
    let pending = store::pending_webhooks(&state.pool, relay_scope(scope), &ids)
        .await
        .map_err(store_error)?;
    for event in events {
        let count = event["id"]
            .as_str()
            .and_then(|id| pending.get(id))
            .copied()
            .unwrap_or(0);
        event["pending_webhooks"] = Value::from(count);
    }
    Ok(())
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let single = params.take_string("type")?;
    let many = params.take_list("types")?;
    let delivery_success = params.take_bool("delivery_success")?;
    params.reject_unknown()?;
    if single.is_some() && many.is_some() {
        return Err(ApiError::exclusive_params("type", "types"));
    }
    let types: Vec<String> = many.unwrap_or_else(|| single.into_iter().collect());
    let scope = scope(&key);
    let mut list =
        read_model::list_events(&state.pool, &scope, &types, delivery_success, &page).await?;
    with_pending_webhooks(&state, &scope, &mut list.data).await?;
    Ok(Json(
        serde_json::to_value(&list).map_err(ApiError::internal)?,
    ))
}

pub async fn retrieve(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let params = query_params(uri.query())?;
    params.reject_unknown()?;
    let scope = scope(&key);
    let mut event = [read_model::get_event(&state.pool, &scope, &id).await?];
    with_pending_webhooks(&state, &scope, &mut event).await?;
    let [event] = event;
    Ok(Json(event))
}

pub async fn redeliver(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, _token| {
        Box::pin(async move {
            let endpoint = request.params.take_string("webhook_endpoint")?;
            request.reject_unknown_params()?;
            let scope = request.scope();
            read_model::get_event(&inner.pool, &scope, &id).await?;
            let deliveries = store::redeliver(
                &inner.pool,
                relay_scope(&scope),
                &id,
                endpoint.as_deref(),
                chrono::Utc::now(),
            )
            .await
            .map_err(store_error)?;
            Ok(Written {
                response: json_response(
                    200,
                    &json!({"object": "event_redelivery", "event": id, "deliveries": deliveries}),
                ),
                stored: false,
                cursor: None,
            })
        })
    })
    .await
}
