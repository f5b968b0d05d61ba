//! `/v1/tax_rates`: create, retrieve, update, list (`active`, `inclusive`). `percentage`
//! and `inclusive` are fixed at creation: an update naming them is refused as an unknown
//! parameter, as at Stripe. No delete: archive with `active=false`.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::execute::ExecuteError;
use commands::idempotency::{IdempotencyError, StoredResponse};
use commands::payments::FinalStepError;
use commands::{ids, CommandError};
use domain::customer::Metadata;
use domain::tax_rate::{
    parse_percentage, NewTaxRate, TaxRate, TaxRateChanges, TaxRateCommand, TaxRateError,
};
use projections::stripe;
use serde_json::{Map, Value};

use super::read_model::{self, BodyFilter, ListFilter};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::ListParams;

const KIND: &str = "tax_rate";

fn rule_error(rule: TaxRateError) -> ApiError {
    let error = ApiError::invalid_request(rule.to_string());
    match rule.param() {
        Some(param) => error.with_param(param),
        None => error,
    }
}

fn tax_rate_error(id: &str, error: ExecuteError<TaxRateError, IdempotencyError>) -> ApiError {
    match error {
        ExecuteError::Command(CommandError::Rejected(TaxRateError::NotFound)) => {
            ApiError::missing(KIND, id)
        }
        ExecuteError::Command(CommandError::Rejected(rule)) => rule_error(rule),
        ExecuteError::Command(other) => ApiError::internal(other),
        ExecuteError::Extra(error) => FinalStepError::Step(error).into(),
    }
}

fn render(rate: &TaxRate, livemode: bool) -> StoredResponse {
    json_response(200, &stripe::tax_rate(rate, livemode))
}

/// Country and state codes are uppercase at Stripe; `gb` is taken as `GB`.
fn uppercase(value: Option<Option<String>>) -> Option<Option<String>> {
    value.map(|value| value.map(|code| code.to_ascii_uppercase()))
}

/// The descriptive fields that both create and update take (`Some(None)` unsets).
fn take_details(params: &mut Params) -> Result<TaxRateChanges, ApiError> {
    let mut changes = TaxRateChanges {
        active: params.take_bool("active")?,
        display_name: params.take_string("display_name")?,
        description: params.take_optional_string("description")?,
        jurisdiction: params.take_optional_string("jurisdiction")?,
        country: uppercase(params.take_optional_string("country")?),
        state: uppercase(params.take_optional_string("state")?),
        tax_type: params.take_optional_string("tax_type")?,
        ..TaxRateChanges::default()
    };
    match params.take_metadata("metadata")? {
        Some(MapUpdate::Clear) => changes.clear_metadata = true,
        Some(MapUpdate::Merge(metadata)) => changes.metadata = metadata,
        None => {}
    }
    Ok(changes)
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let percentage = params
                .take_string("percentage")?
                .ok_or_else(|| ApiError::missing_param("percentage"))?;
            let percentage = parse_percentage(&percentage).map_err(rule_error)?;
            let inclusive = params
                .take_bool("inclusive")?
                .ok_or_else(|| ApiError::missing_param("inclusive"))?;
            let details = take_details(params)?;
            request.reject_unknown_params()?;
            let display_name = details
                .display_name
                .ok_or_else(|| ApiError::missing_param("display_name"))?;
            let mut metadata = Metadata::new();
            MapUpdate::Merge(details.metadata).apply_to(&mut metadata);
            let tax_rate = NewTaxRate {
                display_name,
                percentage,
                inclusive,
                active: details.active.unwrap_or(true),
                country: details.country.flatten(),
                state: details.state.flatten(),
                jurisdiction: details.jurisdiction.flatten(),
                description: details.description.flatten(),
                tax_type: details.tax_type.flatten(),
                metadata,
            };
            let livemode = request.key.mode.is_live();
            let tax_rate_id = ids::new_id("txr");
            let executed = inner
                .payments
                .bus()
                .execute_with::<TaxRate, _>(
                    &tax_rate_id,
                    TaxRateCommand::Create {
                        tax_rate_id: tax_rate_id.clone(),
                        tax_rate,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &request.actor().metadata(),
                    Respond::new(token, |rate: &TaxRate| render(rate, livemode)),
                )
                .await
                .map_err(|error| tax_rate_error(&tax_rate_id, error))?;
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
            let changes = take_details(&mut request.params)?;
            request.reject_unknown_params()?;
            let actor = request.actor();
            inner
                .payments
                .load_owned::<TaxRate>(&actor, KIND, &id)
                .await?;
            let livemode = request.key.mode.is_live();
            let executed = inner
                .payments
                .bus()
                .execute_with::<TaxRate, _>(
                    &id,
                    TaxRateCommand::Update {
                        changes,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                    Respond::new(token, |rate: &TaxRate| render(rate, livemode)),
                )
                .await
                .map_err(|error| tax_rate_error(&id, error))?;
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
    let mut contains = Map::new();
    for name in ["active", "inclusive"] {
        if let Some(wanted) = params.take_bool(name)? {
            contains.insert(name.into(), Value::Bool(wanted));
        }
    }
    params.reject_unknown()?;
    let scope = scope(&key);
    let filter = ListFilter::Body(BodyFilter {
        contains: (!contains.is_empty()).then_some(Value::Object(contains)),
        ..BodyFilter::default()
    });
    let list = read_model::list_objects(&state.pool, &scope, KIND, &filter, &page, "/v1/tax_rates")
        .await?;
    let mut body = serde_json::to_value(&list).map_err(ApiError::internal)?;
    read_model::expand(&state.pool, &scope, &mut body, &expand).await?;
    Ok(Json(body).into_response())
}
