//! What the API reads and asks of the relay's tables: an endpoint's deliveries with their
//! attempts (`GET /v1/webhook_endpoints/{id}/deliveries`), each event's pending webhooks,
//! and redelivery (`POST /v1/events/{id}/redeliver`). Every query is scoped by project and
//! mode.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::delivery::DELIVERIES_CHANNEL;
use crate::DELIVERY_ID_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("no such webhook delivery: {0}")]
    UnknownDelivery(String),
    #[error("no such event: {0}")]
    UnknownEvent(String),
    #[error("no such webhook endpoint: {0}")]
    UnknownEndpoint(String),
    #[error("webhook endpoint {0} is disabled")]
    DisabledEndpoint(String),
    #[error(
        "event {0} was not sent to any webhook endpoint that is still enabled; name one with \
         webhook_endpoint"
    )]
    NoEndpoint(String),
}

/// Whose deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub project: &'a str,
    pub livemode: bool,
}

/// Which page of a newest-first list.
#[derive(Debug, Clone, Copy)]
pub enum Page<'a> {
    First,
    /// Older than this delivery.
    After(&'a str),
    /// Newer than this delivery (fetched oldest first).
    Before(&'a str),
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    created: i64,
    redelivery: bool,
    state: String,
    attempts: i32,
    next_attempt: Option<i64>,
    attempt_list: Value,
}

impl DeliveryRow {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "webhook_delivery",
            "webhook_endpoint": self.endpoint_id,
            "event": self.event_id,
            "event_type": self.event_type,
            "created": self.created,
            "redelivery": self.redelivery,
            "status": self.state,
            "attempt_count": self.attempts,
            "next_attempt": self.next_attempt,
            "attempts": self.attempt_list,
        })
    }
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.event_id, v.type AS event_type, \
    extract(epoch FROM d.created_at)::bigint AS created, d.redelivery, d.state, d.attempts, \
    extract(epoch FROM d.next_attempt_at)::bigint AS next_attempt, \
    coalesce((SELECT jsonb_agg(jsonb_build_object( \
                  'attempt', a.attempt, \
                  'created', extract(epoch FROM a.attempted_at)::bigint, \
                  'succeeded', a.succeeded, \
                  'status_code', a.status_code, \
                  'latency_ms', a.latency_ms, \
                  'error', a.error, \
                  'response_excerpt', a.response_excerpt) ORDER BY a.id) \
              FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempt_list";

/// Up to `limit` deliveries to `endpoint_id` (of one event, if given), newest first as the
/// page asks (an `ending_before` page comes oldest first, as the list contract wants).
pub async fn list_deliveries(
    pool: &PgPool,
    scope: Scope<'_>,
    endpoint_id: &str,
    event_id: Option<&str>,
    page: Page<'_>,
    limit: i64,
) -> Result<Vec<Value>, StoreError> {
    let cursor_id = match page {
        Page::First => None,
        Page::After(id) | Page::Before(id) => Some(id),
    };
    let cursor: Option<(DateTime<Utc>, String)> = match cursor_id {
        Some(id) => Some(
            sqlx::query_as(
                "SELECT created_at, id FROM webhook_deliveries \
                 WHERE id = $1 AND endpoint_id = $2 AND project = $3 AND livemode = $4",
            )
            .bind(id)
            .bind(endpoint_id)
            .bind(scope.project)
            .bind(scope.livemode)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::UnknownDelivery(id.to_string()))?,
        ),
        None => None,
    };
    let (comparison, order) = match page {
        Page::Before(_) => (">", "ASC"),
        Page::First | Page::After(_) => ("<", "DESC"),
    };
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
         JOIN webhook_events v ON v.id = d.event_id \
         WHERE d.endpoint_id = $1 AND d.project = $2 AND d.livemode = $3 \
           AND ($4::text IS NULL OR d.event_id = $4) \
           AND ($5::timestamptz IS NULL OR (d.created_at, d.id) {comparison} ($5, $6)) \
         ORDER BY d.created_at {order}, d.id {order} LIMIT $7"
    );
    let rows: Vec<DeliveryRow> = sqlx::query_as(&sql)
        .bind(endpoint_id)
        .bind(scope.project)
        .bind(scope.livemode)
        .bind(event_id)
        .bind(cursor.as_ref().map(|(created, _)| *created))
        .bind(cursor.as_ref().map(|(_, id)| id.clone()))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(DeliveryRow::to_json).collect())
}

/// For each of `event_ids` with deliveries still being attempted: to how many endpoints
/// (Stripe's `pending_webhooks`). Events not in the answer have none.
pub async fn pending_webhooks(
    pool: &PgPool,
    scope: Scope<'_>,
    event_ids: &[String],
) -> Result<HashMap<String, i64>, StoreError> {
    if event_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_id, count(DISTINCT endpoint_id) FROM webhook_deliveries \
         WHERE event_id = ANY($1) AND project = $2 AND livemode = $3 AND state = 'pending' \
         GROUP BY event_id",
    )
    .bind(event_ids)
    .bind(scope.project)
    .bind(scope.livemode)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// An SQL condition, true when the event whose id is the column `event_id_column` has an
/// endpoint that it was sent to and that has not had it successfully (a delivery pending or
/// failed, and no success to that endpoint): Stripe's `delivery_success=false`.
pub fn undelivered_condition(event_id_column: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM webhook_deliveries d \
                 WHERE d.event_id = {event_id_column} AND d.state IN ('pending', 'failed') \
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries s \
                                   WHERE s.event_id = d.event_id \
                                     AND s.endpoint_id = d.endpoint_id \
                                     AND s.state = 'succeeded'))"
    )
}

/// Sends `event_id` again, as a new delivery due now, to `endpoint_id` (any enabled
/// endpoint of the scope) or else to every still-enabled endpoint it was sent to. Returns
/// the new deliveries.
pub async fn redeliver(
    pool: &PgPool,
    scope: Scope<'_>,
    event_id: &str,
    endpoint_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Value>, StoreError> {
    let mut transaction = pool.begin().await?;
    let targets: Vec<String> = match endpoint_id {
        Some(endpoint_id) => {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM webhook_endpoints \
                 WHERE id = $1 AND project = $2 AND livemode = $3 AND NOT deleted",
            )
            .bind(endpoint_id)
            .bind(scope.project)
            .bind(scope.livemode)
            .fetch_optional(&mut *transaction)
            .await?;
            match status.as_deref() {
                None => return Err(StoreError::UnknownEndpoint(endpoint_id.to_string())),
                Some("enabled") => vec![endpoint_id.to_string()],
                Some(_) => return Err(StoreError::DisabledEndpoint(endpoint_id.to_string())),
            }
        }
        None => {
            sqlx::query_scalar(
                "SELECT DISTINCT e.id FROM webhook_deliveries d \
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                 WHERE d.event_id = $1 AND d.project = $2 AND d.livemode = $3 \
                   AND e.status = 'enabled' AND NOT e.deleted \
                 ORDER BY e.id",
            )
            .bind(event_id)
            .bind(scope.project)
            .bind(scope.livemode)
            .fetch_all(&mut *transaction)
            .await?
        }
    };
    if targets.is_empty() {
        return Err(StoreError::NoEndpoint(event_id.to_string()));
    }
    // An event never sent before gets its body now, as the fan-out would have made it.
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhook_events \
                        WHERE id = $1 AND project = $2 AND livemode = $3)",
    )
    .bind(event_id)
    .bind(scope.project)
    .bind(scope.livemode)
    .fetch_one(&mut *transaction)
    .await?;
    if !known {
        let found: bool = sqlx::query_scalar(
            "WITH source AS ( \
                 SELECT id, project, livemode, type, body FROM api.stripe_events \
                 WHERE id = $1 AND project = $2 AND livemode = $3 \
             ), stored AS ( \
                 INSERT INTO webhook_events (id, project, livemode, type, body) \
                 SELECT id, project, livemode, type, \
                        jsonb_set(body, '{pending_webhooks}', to_jsonb($4::bigint))::text \
                 FROM source \
                 ON CONFLICT (id) DO NOTHING \
             ) \
             SELECT EXISTS (SELECT 1 FROM source)",
        )
        .bind(event_id)
        .bind(scope.project)
        .bind(scope.livemode)
        .bind(i64::try_from(targets.len()).unwrap_or(i64::MAX))
        .fetch_one(&mut *transaction)
        .await?;
        if !found {
            return Err(StoreError::UnknownEvent(event_id.to_string()));
        }
    }
    let ids: Vec<String> = targets
        .iter()
        .map(|_| commands::ids::new_id(DELIVERY_ID_PREFIX))
        .collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, project, livemode, \
             redelivery, created_at, next_attempt_at) \
         SELECT d.id, $3, d.endpoint_id, $4, $5, true, $6, $6 \
         FROM UNNEST($1::text[], $2::text[]) AS d(id, endpoint_id)",
    )
    .bind(&ids)
    .bind(&targets)
    .bind(event_id)
    .bind(scope.project)
    .bind(scope.livemode)
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(DELIVERIES_CHANNEL)
        .execute(&mut *transaction)
        .await?;
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
         JOIN webhook_events v ON v.id = d.event_id \
         WHERE d.id = ANY($1) ORDER BY d.endpoint_id"
    );
    let rows: Vec<DeliveryRow> = sqlx::query_as(&sql)
        .bind(&ids)
        .fetch_all(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(rows.iter().map(DeliveryRow::to_json).collect())
}
