//! Idempotency keys (Stripe's `Idempotency-Key`, STRIPE-CONVENTIONS.md §1.3): the first
//! response to a key is stored and replayed to every retry that carries the same key.
//!
//! Keys are scoped to (project, mode, key). A request first *claims* its key
//! ([`IdempotencyStore::claim`]), one statement on the hot path of every POST, which either
//! makes it the owner of a fresh `in_flight` record with a lease, or answers at once: a
//! stored response to replay, 409 `idempotency_key_in_use` while another request with the
//! key is running, 400 `idempotency_error` when the key was used with other parameters.
//! The owner then does exactly one of:
//!
//! - runs its command with [`CompleteIdempotency`] as the [`InTransaction`] step, so the
//!   stored response commits in the same transaction as the command's events: there is no
//!   moment at which the events exist but a retry with the key would run the command again;
//! - stores a response on its own ([`IdempotencyStore::complete`]) when execution began but
//!   committed nothing (a 402 decline, a rejected command, a 500: Stripe replays those too);
//! - gives the key back ([`IdempotencyStore::release`]) when the request failed validation
//!   before execution began, so that nothing is saved and a retry runs afresh.
//!
//! An owner that crashes leaves its record `in_flight`; once the lease runs out a retry takes
//! the claim over with the next generation and a new claim id. Every write by an owner
//! compares its token's claim id, so an owner whose claim was taken over is refused
//! ([`IdempotencyError::ClaimLost`]); inside a command's transaction that refusal rolls its
//! events back. The lease must therefore outlast the longest request (the HTTP timeout).
//!
//! A handler, in outline:
//!
//! ```no_run
//! # use commands::idempotency::*;
//! # use commands::execute::ExecuteError;
//! # use commands::CommandBus;
//! # use domain::customer::{Customer, CustomerCommand};
//! # use event_store::EventMetadata;
//! # async fn handler(store: &IdempotencyStore, bus: &CommandBus, identity: RequestIdentity,
//! #     command: CustomerCommand, metadata: EventMetadata) -> Result<StoredResponse, IdempotencyError> {
//! let token = match store.claim(&identity).await? {
//!     Claim::Replay(response) => return Ok(response), // + `Idempotent-Replayed: true`
//!     Claim::Fresh(token) => token,
//! };
//! let render = |customer: &Customer| StoredResponse::json(200, customer);
//! let completer = CompleteIdempotency::new(&token, render);
//! match bus.execute_with("cus_123", command, &(), &metadata, completer).await {
//!     Ok(executed) => Ok(executed.output), // events and response committed together
//!     Err(ExecuteError::Extra(error)) => Err(error), // ClaimLost: answer 409, save nothing
//!     Err(ExecuteError::Command(error)) => {
//!         // Execution began and committed nothing: store what we answer (Stripe replays
//!         // errors and 500s alike).
//!         let response = StoredResponse::json(400, &serde_json::json!({
//!             "error": {"type": "invalid_request_error", "message": error.to_string()}
//!         }));
//!         store.complete(&token, &response).await?;
//!         Ok(response)
//!     }
//! }
//! # }
//! ```

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use event_store::Mode;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::types::Uuid;
use sqlx::{PgConnection, PgPool};

use crate::execute::InTransaction;

/// Stripe's limit on an idempotency key, in characters.
pub const MAX_KEY_CHARS: usize = 255;

/// No record is pruned before it is this old, whatever cutoff `prune` is given.
pub const MIN_RETENTION_HOURS: i32 = 24;

/// A sensible lease: longer than any request may take.
pub const DEFAULT_LEASE_MS: u64 = 60_000;

/// How many records one `prune` statement deletes, so that no statement holds locks on an
/// unbounded number of rows.
pub const PRUNE_BATCH_ROWS: i64 = 5_000;

/// How many times `claim` re-reads a record that changed under its statement before it
/// answers "in use": each repetition needs another request to have touched the key.
const MAX_CLAIM_STATEMENTS: u32 = 3;

/// What identifies a request for idempotency: where the key is scoped, and what it was
/// used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdentity {
    pub project: String,
    pub mode: Mode,
    pub key: String,
    /// [`fingerprint`] of the request.
    pub fingerprint: [u8; 32],
}

impl RequestIdentity {
    pub fn new(
        project: impl Into<String>,
        mode: Mode,
        key: impl Into<String>,
        method: &str,
        path: &str,
        canonical_params: &[u8],
    ) -> Self {
        Self {
            project: project.into(),
            mode,
            key: key.into(),
            fingerprint: fingerprint(method, path, canonical_params),
        }
    }
}

/// sha256 over the method, the path and the canonical parameters (the caller's canonical
/// encoding: the same request must give the same bytes), each prefixed by its length so
/// that no two different requests share a preimage.
pub fn fingerprint(method: &str, path: &str, canonical_params: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), canonical_params] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The response stored for a key: its status and its body, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The JSON body as it was sent.
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// `value` serialised as the JSON body.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self { status, body },
            Err(error) => {
                // Our response types always serialise; if one does not, answer a 500 rather
                // than lose the response.
                tracing::error!(%error, "a response could not be serialised");
                Self {
                    status: 500,
                    body: br#"{"error":{"type":"api_error","message":"The response could not be serialised."}}"#
                        .to_vec(),
                }
            }
        }
    }
}

/// Proof of owning a claim: needed to complete or release it.
#[derive(Debug, Clone)]
pub struct ClaimToken {
    project: String,
    mode: Mode,
    key: String,
    generation: i64,
    claim_id: Uuid,
}

impl ClaimToken {
    /// 1 for the first claimant; more when this claim took over from owners whose lease ran
    /// out.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The answer to a claim that the request may proceed with.
#[derive(Debug)]
#[must_use]
pub enum Claim {
    /// The key is this request's: run it, then complete or release the claim.
    Fresh(ClaimToken),
    /// The key was completed before: answer with this (`Idempotent-Replayed: true`, and
    /// `Stripe-Should-Retry: false` when it is a 5xx).
    Replay(StoredResponse),
}

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// 409 `idempotency_key_in_use`: another request with this key is running (the SDKs
    /// retry it).
    #[error("another request with this idempotency key is in progress")]
    KeyInUse,
    /// 400 `idempotency_error`: the key was used for a request with other parameters.
    #[error("this idempotency key was used with different request parameters")]
    Mismatch,
    /// 400 `invalid_request_error`.
    #[error("the idempotency key is empty")]
    EmptyKey,
    /// 400 `invalid_request_error`.
    #[error("the idempotency key has {chars} characters (at most {MAX_KEY_CHARS})")]
    KeyTooLong { chars: usize },
    /// This claim is no longer the owner's: its lease ran out and another request took the
    /// key over (answer 409: that request is the one running), or it was already completed,
    /// released or pruned. Nothing was written.
    #[error("the claim on this idempotency key was lost (taken over, completed or pruned)")]
    ClaimLost,
    #[error("idempotency store error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// The idempotency records of every project, in the `idempotency_keys` table.
#[derive(Clone)]
pub struct IdempotencyStore {
    pool: PgPool,
    lease_ms: u64,
}

/// One row of the claim statement: either the claim it made, or the record it found.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    claimed: bool,
    generation: i64,
    claim_id: Uuid,
    fingerprint: Option<Vec<u8>>,
    state: Option<String>,
    leased: Option<bool>,
    response_status: Option<i32>,
    response_body: Option<Vec<u8>>,
}

/// Inserts a fresh claim, or takes over one whose lease ran out (same parameters only);
/// otherwise returns the record as it stands. A row inserted by a concurrent claim after
/// this statement's snapshot is not returned (no row at all): the caller asks again.
///
/// The claim's commit does not wait for the disk (`synchronous_commit` off for this
/// statement's transaction): other requests see it at once, which is all a claim is for.
/// Should the database crash before the claim is flushed, the request that made it failed
/// with it, and nothing it did can outlive the claim: the command's transaction (events
/// and stored answer) waits for the disk, and the log is flushed in order, so whatever of
/// it is durable has the claim durable before it.
const CLAIM_SQL: &str = "\
WITH relaxed AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
),
claimed AS (
    INSERT INTO idempotency_keys AS k
        (project, mode, idempotency_key, fingerprint, claim_id, locked_until)
    VALUES ($1, $2, $3, $4, gen_random_uuid(), now() + $5::float8 * interval '1 millisecond')
    ON CONFLICT (project, mode, idempotency_key) DO UPDATE
        SET generation = k.generation + 1,
            claim_id = excluded.claim_id,
            locked_until = excluded.locked_until
        WHERE k.state = 'in_flight'
          AND k.locked_until <= now()
          AND k.fingerprint = excluded.fingerprint
    RETURNING k.generation, k.claim_id
)
SELECT true AS claimed, generation, claim_id, NULL::bytea AS fingerprint, NULL::text AS state,
       NULL::bool AS leased, NULL::int4 AS response_status, NULL::bytea AS response_body
FROM claimed, relaxed
UNION ALL
SELECT false, generation, claim_id, fingerprint, state, locked_until > now(),
       response_status::int4, response_body
FROM idempotency_keys, relaxed
WHERE project = $1 AND mode = $2 AND idempotency_key = $3
  AND NOT EXISTS (SELECT 1 FROM claimed)";

/// Completes a claim if it is still this owner's.
const COMPLETE_SQL: &str = "\
UPDATE idempotency_keys
SET state = 'completed', locked_until = NULL, response_status = $6, response_body = $7,
    completed_at = now()
WHERE project = $1 AND mode = $2 AND idempotency_key = $3
  AND generation = $4 AND claim_id = $5 AND state = 'in_flight'";

impl IdempotencyStore {
    /// `lease_ms`: how long a claim keeps other requests with its key out (409) before a
    /// retry may take it over. Must outlast the longest request.
    pub fn new(pool: PgPool, lease_ms: u64) -> Self {
        Self {
            pool,
            lease_ms: lease_ms.max(1),
        }
    }

    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Claims the key of `identity`, in one statement unless a concurrent request with the
    /// same key changes the record under it.
    pub async fn claim(&self, identity: &RequestIdentity) -> Result<Claim, IdempotencyError> {
        validate_key(&identity.key)?;
        for _ in 0..MAX_CLAIM_STATEMENTS {
            let row: Option<ClaimRow> = sqlx::query_as(CLAIM_SQL)
                .bind(&identity.project)
                .bind(identity.mode.as_str())
                .bind(&identity.key)
                .bind(identity.fingerprint.as_slice())
                .bind(self.lease_ms as f64)
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else {
                // Inserted by a claim that committed after our snapshot (or just deleted).
                continue;
            };
            if row.claimed {
                if row.generation > 1 {
                    tracing::warn!(
                        project = %identity.project,
                        mode = identity.mode.as_str(),
                        generation = row.generation,
                        "took over an idempotency key whose lease ran out"
                    );
                }
                return Ok(Claim::Fresh(ClaimToken {
                    project: identity.project.clone(),
                    mode: identity.mode,
                    key: identity.key.clone(),
                    generation: row.generation,
                    claim_id: row.claim_id,
                }));
            }
            if row.fingerprint.as_deref() != Some(identity.fingerprint.as_slice()) {
                return Err(IdempotencyError::Mismatch);
            }
            match (
                row.state.as_deref(),
                row.leased,
                row.response_status,
                row.response_body,
            ) {
                (Some("completed"), _, Some(status), Some(body)) => {
                    let status = u16::try_from(status).map_err(|_| {
                        sqlx::Error::Decode(format!("stored status {status} is not HTTP").into())
                    })?;
                    return Ok(Claim::Replay(StoredResponse { status, body }));
                }
                (Some("in_flight"), Some(true), _, _) => return Err(IdempotencyError::KeyInUse),
                // In flight with a lapsed lease, yet not taken over by our statement: another
                // claim took it over after our snapshot. Look again.
                _ => continue,
            }
        }
        Err(IdempotencyError::KeyInUse)
    }

    /// Stores `response` for the claim inside the caller's transaction (the one holding
    /// the command's events). [`IdempotencyError::ClaimLost`] if the claim is no longer
    /// this owner's: the caller must then roll back.
    pub async fn complete_in(
        connection: &mut PgConnection,
        token: &ClaimToken,
        response: &StoredResponse,
    ) -> Result<(), IdempotencyError> {
        let completed = sqlx::query(COMPLETE_SQL)
            .bind(&token.project)
            .bind(token.mode.as_str())
            .bind(&token.key)
            .bind(token.generation)
            .bind(token.claim_id)
            .bind(i32::from(response.status))
            .bind(response.body.as_slice())
            .execute(connection)
            .await?;
        match completed.rows_affected() {
            1 => Ok(()),
            _ => Err(IdempotencyError::ClaimLost),
        }
    }

    /// Replaces the response stored by this claim's own earlier [`Self::complete_in`]: for
    /// writes of several transactions, whose first commit stores a recovery point (the new
    /// object's id) with its events and whose last step stores the full answer.
    pub async fn amend(
        &self,
        token: &ClaimToken,
        response: &StoredResponse,
    ) -> Result<(), IdempotencyError> {
        let amended = sqlx::query(
            "UPDATE idempotency_keys SET response_status = $6, response_body = $7 \
             WHERE project = $1 AND mode = $2 AND idempotency_key = $3 \
               AND generation = $4 AND claim_id = $5 AND state = 'completed'",
        )
        .bind(&token.project)
        .bind(token.mode.as_str())
        .bind(&token.key)
        .bind(token.generation)
        .bind(token.claim_id)
        .bind(i32::from(response.status))
        .bind(response.body.as_slice())
        .execute(&self.pool)
        .await?;
        match amended.rows_affected() {
            1 => Ok(()),
            _ => Err(IdempotencyError::ClaimLost),
        }
    }

    /// Stores `response` for the claim on its own: for requests whose execution began but
    /// committed nothing (a decline, a rejected command, a 500).
    pub async fn complete(
        &self,
        token: &ClaimToken,
        response: &StoredResponse,
    ) -> Result<(), IdempotencyError> {
        let mut connection = self.pool.acquire().await?;
        Self::complete_in(&mut connection, token, response).await
    }

    /// Gives the key back, saving nothing: for requests that failed validation before
    /// execution began. A retry with the key then runs afresh.
    pub async fn release(&self, token: ClaimToken) -> Result<(), IdempotencyError> {
        let released = sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE project = $1 AND mode = $2 AND idempotency_key = $3 \
               AND generation = $4 AND claim_id = $5 AND state = 'in_flight'",
        )
        .bind(&token.project)
        .bind(token.mode.as_str())
        .bind(&token.key)
        .bind(token.generation)
        .bind(token.claim_id)
        .execute(&self.pool)
        .await?;
        match released.rows_affected() {
            1 => Ok(()),
            _ => Err(IdempotencyError::ClaimLost),
        }
    }

    /// Deletes the records first claimed before `older_than` (never one younger than
    /// [`MIN_RETENTION_HOURS`], nor a claim whose lease still runs), in batches of
    /// [`PRUNE_BATCH_ROWS`]. Returns how many were deleted. A key reused after pruning is a
    /// new request, as at Stripe.
    pub async fn prune(&self, older_than: DateTime<Utc>) -> Result<u64, IdempotencyError> {
        let mut pruned = 0;
        loop {
            let deleted = sqlx::query(
                "WITH doomed AS ( \
                     SELECT project, mode, idempotency_key FROM idempotency_keys \
                     WHERE created_at < least($1, now() - make_interval(hours => $2)) \
                       AND (state = 'completed' OR locked_until <= now()) \
                     ORDER BY created_at \
                     LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) \
                 DELETE FROM idempotency_keys AS k USING doomed \
                 WHERE k.project = doomed.project AND k.mode = doomed.mode \
                   AND k.idempotency_key = doomed.idempotency_key",
            )
            .bind(older_than)
            .bind(MIN_RETENTION_HOURS)
            .bind(PRUNE_BATCH_ROWS)
            .execute(&self.pool)
            .await?
            .rows_affected();
            pruned += deleted;
            if deleted < PRUNE_BATCH_ROWS.unsigned_abs() {
                return Ok(pruned);
            }
        }
    }
}

fn validate_key(key: &str) -> Result<(), IdempotencyError> {
    if key.is_empty() {
        return Err(IdempotencyError::EmptyKey);
    }
    let chars = key.chars().count();
    if chars > MAX_KEY_CHARS {
        return Err(IdempotencyError::KeyTooLong { chars });
    }
    Ok(())
}

/// The [`InTransaction`] step that stores a command's response with its events: `render`
/// turns the aggregate after the command into the response. On a conflict retry it runs
/// again in the new transaction. Its output is the stored response, to send.
pub struct CompleteIdempotency<'t, F> {
    token: &'t ClaimToken,
    render: F,
}

impl<'t, F> CompleteIdempotency<'t, F> {
    pub fn new(token: &'t ClaimToken, render: F) -> Self {
        Self { token, render }
    }
}

impl<A, F> InTransaction<A> for CompleteIdempotency<'_, F>
where
    A: Aggregate,
    F: FnMut(&A) -> StoredResponse + Send,
{
    type Output = StoredResponse;
    type Error = IdempotencyError;

    fn run<'a>(
        &'a mut self,
        connection: &'a mut PgConnection,
        aggregate: &'a A,
        _events: &'a [A::Event],
    ) -> BoxFuture<'a, Result<StoredResponse, IdempotencyError>> {
        let response = (self.render)(aggregate);
        let token = self.token;
        Box::pin(async move {
            IdempotencyStore::complete_in(connection, token, &response).await?;
            Ok(response)
        })
    }
}
