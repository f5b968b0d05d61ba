//! `/v1/events`: Stripe events rendered from the ledger, with `data.object` as it was at
//! each event. Filter with `type` or `types[]` (exact type names).

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;

use super::read_model;
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::list::ListParams;

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let single = params.take_string("type")?;
    let many = params.take_list("types")?;
    let _delivery_success = params.take_bool("delivery_success")?;
    params.reject_unknown()?;
    if single.is_some() && many.is_some() {
        return Err(ApiError::exclusive_params("type", "types"));
    }
    let types: Vec<String> = many.unwrap_or_else(|| single.into_iter().collect());
    let scope = scope(&key);
    let list = read_model::list_events(&state.pool, &scope, &types, &page).await?;
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
    let params = query_params(uri.query())?;
    params.reject_unknown()?;
    Ok(Json(
        read_model::get_event(&state.pool, &scope(&key), &id).await?,
    ))
}
