//! `/v1/test_helpers/test_clocks`: frozen time for test-mode billing. `advance` moves the
//! time and answers `advancing`; the billing runner then does the work due up to it and
//! marks the clock `ready`.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::ids;
use domain::test_clock::{TestClock, TestClockCommand, TestClockError};

use super::read_model::{self, ListFilter};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::list::ListParams;

pub const KIND: &str = "test_helpers.test_clock";

fn render(clock: &TestClock, livemode: bool) -> serde_json::Value {
    projections::stripe::test_clock(clock, livemode)
}

fn clock_error(
    id: &str,
    error: commands::execute::ExecuteError<TestClockError, commands::idempotency::IdempotencyError>,
) -> ApiError {
    use commands::execute::ExecuteError;
    use commands::CommandError;
    match error {
        ExecuteError::Command(CommandError::Rejected(TestClockError::NotFound)) => {
            ApiError::missing("test_clock", id)
        }
        ExecuteError::Command(CommandError::Rejected(rule)) => {
            ApiError::invalid_request(rule.to_string())
        }
        ExecuteError::Command(other) => ApiError::internal(other),
        ExecuteError::Extra(error) => commands::payments::FinalStepError::Step(error).into(),
    }
}

fn test_mode_only(request: &WriteRequest) -> Result<(), ApiError> {
    if request.key.mode.is_live() {
        return Err(ApiError::invalid_request(
            "Test clocks exist in test mode only; use a test key (sk_test_…).",
        ));
    }
    Ok(())
}

async fn run(
    state: &ApiState,
    request: &WriteRequest,
    token: Option<&commands::idempotency::ClaimToken>,
    id: &str,
    command: TestClockCommand,
) -> Result<Written, ApiError> {
    let livemode = request.key.mode.is_live();
    let executed = state
        .payments
        .bus()
        .execute_with::<TestClock, _>(
            id,
            command,
            &(),
            &request.actor().metadata(),
            Respond::new(token, |clock: &TestClock| {
                json_response(200, &render(clock, livemode))
            }),
        )
        .await
        .map_err(|error| clock_error(id, error))?;
    Ok(Written::from_executed(executed, token))
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            test_mode_only(&request)?;
            let frozen_time = request
                .params
                .take_i64("frozen_time")?
                .ok_or_else(|| ApiError::missing_param("frozen_time"))?;
            let name = request.params.take_string("name")?;
            request.reject_unknown_params()?;
            let id = ids::new_id("clock");
            run(
                &inner,
                &request,
                token,
                &id.clone(),
                TestClockCommand::Create {
                    clock_id: id,
                    frozen_time,
                    name,
                    at: chrono::Utc::now().timestamp(),
                },
            )
            .await
        })
    })
    .await
}

pub async fn advance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            test_mode_only(&request)?;
            let frozen_time = request
                .params
                .take_i64("frozen_time")?
                .ok_or_else(|| ApiError::missing_param("frozen_time"))?;
            request.reject_unknown_params()?;
            inner
                .payments
                .load_owned::<TestClock>(&request.actor(), "test_clock", &id)
                .await?;
            let written = run(
                &inner,
                &request,
                token,
                &id,
                TestClockCommand::Advance {
                    frozen_time,
                    at: chrono::Utc::now().timestamp(),
                },
            )
            .await?;
            inner.billing_wake.notify_one();
            Ok(written)
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
                .load_owned::<TestClock>(&request.actor(), "test_clock", &id)
                .await?;
            run(
                &inner,
                &request,
                token,
                &id,
                TestClockCommand::Delete {
                    at: chrono::Utc::now().timestamp(),
                },
            )
            .await
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
    params.reject_unknown()?;
    let list = read_model::list_objects(
        &state.pool,
        &scope(&key),
        KIND,
        &ListFilter::None,
        &page,
        "/v1/test_helpers/test_clocks",
    )
    .await?;
    Ok(Json(serde_json::to_value(&list).map_err(ApiError::internal)?).into_response())
}
