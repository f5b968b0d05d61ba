//! `/v1/webhook_endpoints`: where a project's events are delivered (by the webhook relay),
//! and `GET /v1/webhook_endpoints/{id}/deliveries`, our documented extension: every delivery
//! to the endpoint with every attempt.
//!
//! The `whsec_…` signing secret is made here and shown once, in the create response. URLs
//! are checked against the address rules of `webhook_relay::url_guard` (live mode: public
//! addresses only) when they are set; every delivery checks again.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::Json;
use commands::execute::ExecuteError;
use commands::idempotency::IdempotencyError;
use commands::payments::FinalStepError;
use commands::{ids, CommandError};
use domain::customer::Metadata;
use domain::webhook_endpoint::{
    SigningSecret, WebhookEndpoint, WebhookEndpointChanges, WebhookEndpointCommand,
    WebhookEndpointError, ALL_EVENTS,
};
use projections::stripe;
use webhook_relay::store::{self, Page};

use super::read_model::{self, ListFilter};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::{Cursor, List, ListParams};

const KIND: &str = "webhook_endpoint";

fn endpoint_error(
    id: &str,
    error: ExecuteError<WebhookEndpointError, IdempotencyError>,
) -> ApiError {
    match error {
        ExecuteError::Command(CommandError::Rejected(WebhookEndpointError::NotFound)) => {
            ApiError::missing(KIND, id)
        }
        ExecuteError::Command(CommandError::Rejected(rule)) => {
            ApiError::invalid_request(rule.to_string())
        }
        ExecuteError::Command(other) => ApiError::internal(other),
        ExecuteError::Extra(error) => FinalStepError::Step(error).into(),
    }
}

/// `enabled_events[]`: `*` or the event types we render.
fn take_enabled_events(params: &mut Params) -> Result<Option<Vec<String>>, ApiError> {
    let param = params.param_name("enabled_events");
    let Some(events) = params.take_list("enabled_events")? else {
        return Ok(None);
    };
    if events.is_empty() {
        return Err(ApiError::empty_param(param));
    }
    for (index, event) in events.iter().enumerate() {
        if event != ALL_EVENTS && !stripe::EVENT_TYPES.contains(&event.as_str()) {
            return Err(ApiError::invalid_param(
                format!("{param}[{index}]"),
                format!(
                    "Invalid {param}[{index}]: '{event}' is not an event type. Use * or one of: {}.",
                    stripe::EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(Some(events))
}

/// A URL that the address rules allow for this key's mode.
async fn checked_url(
    state: &ApiState,
    params: &mut Params,
    livemode: bool,
) -> Result<Option<String>, ApiError> {
    let Some(url) = params.take_string("url")? else {
        return Ok(None);
    };
    state
        .url_guard
        .check(&url, livemode)
        .await
        .map_err(|refused| ApiError::invalid_param("url", format!("Invalid URL: {refused}.")))?;
    Ok(Some(url))
}

fn render(endpoint: &WebhookEndpoint, livemode: bool) -> commands::idempotency::StoredResponse {
    json_response(200, &stripe::webhook_endpoint(endpoint, livemode))
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let livemode = request.key.mode.is_live();
            let enabled_events = take_enabled_events(&mut request.params)?
                .ok_or_else(|| ApiError::missing_param("enabled_events"))?;
            let api_version = request.params.take_string("api_version")?;
            if let Some(version) = &api_version {
                if version != stripe::API_VERSION {
                    return Err(ApiError::invalid_param(
                        "api_version",
                        format!(
                            "Invalid api_version: events are rendered in {} only.",
                            stripe::API_VERSION
                        ),
                    ));
                }
            }
            let description = request.params.take_string("description")?;
            let mut metadata = Metadata::new();
            if let Some(update) = request.params.take_metadata("metadata")? {
                update.apply_to(&mut metadata);
            }
            let url = checked_url(&inner, &mut request.params, livemode)
                .await?
                .ok_or_else(|| ApiError::missing_param("url"))?;
            request.reject_unknown_params()?;
            let endpoint_id = ids::new_id("we");
            let secret = ids::new_signing_secret();
            let shown = secret.clone();
            let executed = inner
                .payments
                .bus()
                .execute_with::<WebhookEndpoint, _>(
                    &endpoint_id,
                    WebhookEndpointCommand::Create {
                        endpoint_id: endpoint_id.clone(),
                        url,
                        enabled_events,
                        api_version,
                        description,
                        metadata,
                        secret: SigningSecret::new(secret),
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, move |endpoint: &WebhookEndpoint| {
                        // The only answer that shows the secret.
                        let mut body = stripe::webhook_endpoint(endpoint, livemode);
                        body["secret"] = serde_json::Value::from(shown.as_str());
                        json_response(200, &body)
                    }),
                )
                .await
                .map_err(|error| endpoint_error(&endpoint_id, error))?;
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
            let livemode = request.key.mode.is_live();
            inner
                .payments
                .load_owned::<WebhookEndpoint>(&request.actor(), KIND, &id)
                .await?;
            let mut changes = WebhookEndpointChanges {
                enabled_events: take_enabled_events(&mut request.params)?,
                description: request.params.take_optional_string("description")?,
                disabled: request.params.take_bool("disabled")?,
                ..WebhookEndpointChanges::default()
            };
            match request.params.take_metadata("metadata")? {
                Some(MapUpdate::Clear) => changes.clear_metadata = true,
                Some(MapUpdate::Merge(metadata)) => changes.metadata = metadata,
                None => {}
            }
            changes.url = checked_url(&inner, &mut request.params, livemode).await?;
            request.reject_unknown_params()?;
            let executed = inner
                .payments
                .bus()
                .execute_with::<WebhookEndpoint, _>(
                    &id,
                    WebhookEndpointCommand::Update {
                        changes,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, |endpoint: &WebhookEndpoint| {
                        render(endpoint, livemode)
                    }),
                )
                .await
                .map_err(|error| endpoint_error(&id, error))?;
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
            let livemode = request.key.mode.is_live();
            inner
                .payments
                .load_owned::<WebhookEndpoint>(&request.actor(), KIND, &id)
                .await?;
            let executed = inner
                .payments
                .bus()
                .execute_with::<WebhookEndpoint, _>(
                    &id,
                    WebhookEndpointCommand::Delete {
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, |endpoint: &WebhookEndpoint| {
                        render(endpoint, livemode)
                    }),
                )
                .await
                .map_err(|error| endpoint_error(&id, error))?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

/// The endpoint of this scope, unless it does not exist or was deleted.
async fn require_endpoint(
    state: &ApiState,
    key: &AuthenticatedKey,
    id: &str,
) -> Result<serde_json::Value, ApiError> {
    let endpoint = read_model::require_object(&state.pool, &scope(key), KIND, id).await?;
    if endpoint["deleted"] == true {
        return Err(ApiError::missing(KIND, id));
    }
    Ok(endpoint)
}

pub async fn retrieve(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let _expand = params.take_expand()?;
    params.reject_unknown()?;
    Ok(Json(require_endpoint(&state, &key, &id).await?))
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let _expand = params.take_expand()?;
    params.reject_unknown()?;
    let list = read_model::list_objects(
        &state.pool,
        &scope(&key),
        KIND,
        &ListFilter::None,
        &page,
        "/v1/webhook_endpoints",
    )
    .await?;
    Ok(Json(
        serde_json::to_value(&list).map_err(ApiError::internal)?,
    ))
}

/// `GET /v1/webhook_endpoints/{id}/deliveries` (extension): the endpoint's deliveries,
/// newest first, each with its attempts (time, status code, latency, response excerpt or
/// error). Filter with `event=evt_…`; page like any list.
pub async fn deliveries(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let event = params.take_string("event")?;
    params.reject_unknown()?;
    require_endpoint(&state, &key, &id).await?;
    let position = match &page.cursor {
        None => Page::First,
        Some(Cursor::StartingAfter(delivery)) => Page::After(delivery),
        Some(Cursor::EndingBefore(delivery)) => Page::Before(delivery),
    };
    let scope = scope(&key);
    let rows = store::list_deliveries(
        &state.pool,
        store::Scope {
            project: &scope.project,
            livemode: scope.livemode,
        },
        &id,
        event.as_deref(),
        position,
        page.fetch_limit(),
    )
    .await
    .map_err(store_error)?;
    let list = List::from_page(
        format!("/v1/webhook_endpoints/{id}/deliveries"),
        &page,
        rows,
    );
    Ok(Json(
        serde_json::to_value(&list).map_err(ApiError::internal)?,
    ))
}

pub(crate) fn store_error(error: store::StoreError) -> ApiError {
    match error {
        store::StoreError::UnknownDelivery(id) => ApiError::missing("webhook_delivery", &id),
        store::StoreError::UnknownEvent(id) => ApiError::missing("event", &id),
        store::StoreError::UnknownEndpoint(id) => {
            ApiError::missing(KIND, &id).with_param("webhook_endpoint")
        }
        error @ store::StoreError::DisabledEndpoint(_) => {
            ApiError::invalid_param("webhook_endpoint", error.to_string())
        }
        error @ store::StoreError::NoEndpoint(_) => ApiError::invalid_request(error.to_string()),
        store::StoreError::Sql(error) => ApiError::internal(error),
    }
}
