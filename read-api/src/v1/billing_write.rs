//! How billing writes answer: a billing write may commit several transactions (open an
//! invoice, charge, settle), so it answers from the read model once it shows the last of
//! them, and replaces the recovery point its first commit stored for the idempotency key
//! with that full answer (see `commands::billing::Written`).

use std::time::Duration;

use commands::billing::Written as BillingWritten;
use commands::idempotency::StoredResponse;

use super::read_model;
use super::write::{
    error_response, json_response, WriteRequest, Written, READ_YOUR_WRITES_TIMEOUT_MS,
};
use super::ApiState;
use crate::http::error::ApiError;

/// The answer of a billing write that changed `kind` `id`.
pub async fn answer(
    state: &ApiState,
    request: &WriteRequest,
    kind: &'static str,
    id: &str,
    written: BillingWritten,
) -> Result<Written, ApiError> {
    let cursor = read_your_writes(state, &written).await?;
    let object = read_model::require_object(&state.pool, &request.scope(), kind, id).await?;
    let response = json_response(200, &object);
    amend(state, &written, &response).await;
    Ok(Written {
        response,
        stored: written.checkpointed(),
        cursor,
    })
}

/// A billing write that failed after it had committed something: its stored answer becomes
/// the error, so a retry replays the failure instead of the recovery point. What it did
/// commit (an `error_if_incomplete` subscription expired, its invoice void) is in the read
/// model before the error is answered, as a success's changes are.
pub async fn failed(state: &ApiState, written: &BillingWritten, error: ApiError) -> ApiError {
    amend(state, written, &error_response(&error)).await;
    if let Err(wait) = read_your_writes(state, written).await {
        tracing::warn!(error = ?wait, "a failed billing write's changes are not readable yet");
    }
    error
}

/// Waits until the read model shows the last event the write appended; returns its cursor.
async fn read_your_writes(
    state: &ApiState,
    written: &BillingWritten,
) -> Result<Option<event_store::log::LogCursor>, ApiError> {
    let cursor = written.appended.last().map(|appended| appended.cursor());
    if let Some(cursor) = cursor {
        state
            .projections
            .wait_until_applied(
                projections::api_objects::NAME,
                cursor,
                Duration::from_millis(READ_YOUR_WRITES_TIMEOUT_MS),
            )
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(cursor)
}

async fn amend(state: &ApiState, written: &BillingWritten, response: &StoredResponse) {
    if let (Some(token), true) = (&written.token, written.checkpointed()) {
        if let Err(error) = state.idempotency.amend(token, response).await {
            tracing::warn!(%error, "could not store a billing write's final answer");
        }
    }
}
