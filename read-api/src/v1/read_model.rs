//! Reads from the API read model (`api.objects`, `api.stripe_events`), always scoped by the
//! caller's project and mode: another project's object is simply "not found".

use serde_json::Value;
use sqlx::PgPool;

use crate::http::error::ApiError;
use crate::http::list::{Cursor, Direction, List, ListParams};

/// Bound on the ids one `expand[]` may resolve.
const MAX_EXPAND_PATHS: usize = 20;

/// Whose objects a read may see.
#[derive(Debug, Clone)]
pub struct Scope {
    pub project: String,
    pub livemode: bool,
}

/// One object of `kind` (`customer`, `payment_intent`, …) by id.
pub async fn get_object(
    pool: &PgPool,
    scope: &Scope,
    kind: &str,
    id: &str,
) -> Result<Option<Value>, ApiError> {
    let body: Option<Value> = sqlx::query_scalar(
        "SELECT body FROM api.objects WHERE id = $1 AND project = $2 AND livemode = $3 AND object = $4",
    )
    .bind(id)
    .bind(&scope.project)
    .bind(scope.livemode)
    .bind(kind)
    .fetch_optional(pool)
    .await?;
    Ok(body)
}

pub async fn require_object(
    pool: &PgPool,
    scope: &Scope,
    kind: &'static str,
    id: &str,
) -> Result<Value, ApiError> {
    get_object(pool, scope, kind, id)
        .await?
        .ok_or_else(|| ApiError::missing(kind, id))
}

/// The filter a list may apply besides project and mode.
#[derive(Debug, Clone)]
pub enum ListFilter {
    None,
    Customer(String),
    PaymentIntent(String),
    Email(String),
    /// Conditions on the rendered object (the billing catalog's filters).
    Body(BodyFilter),
}

/// Conditions on an object's rendered body, all of which must hold; empty ones filter
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct BodyFilter {
    /// Fields the body must hold with these values (`body @> contains`), nested objects
    /// included: `{"active": true, "recurring": {"interval": "month"}}`.
    pub contains: Option<Value>,
    /// `body->>'product'` equals this (indexed by `objects_by_product`).
    pub product: Option<String>,
    /// The id is one of these (Stripe's `ids[]`).
    pub ids: Vec<String>,
    /// `body->>'lookup_key'` is one of these (Stripe's `lookup_keys[]`).
    pub lookup_keys: Vec<String>,
    /// Fields the body must not hold with these values (`NOT body @> excludes`).
    pub excludes: Option<Value>,
}

/// A page of `kind` objects, newest first, by the keyset (created, id).
pub async fn list_objects(
    pool: &PgPool,
    scope: &Scope,
    kind: &'static str,
    filter: &ListFilter,
    params: &ListParams,
    url: &str,
) -> Result<List<Value>, ApiError> {
    let (customer, payment_intent, email) = match filter {
        ListFilter::None | ListFilter::Body(_) => (None, None, None),
        ListFilter::Customer(customer) => (Some(customer.as_str()), None, None),
        ListFilter::PaymentIntent(intent) => (None, Some(intent.as_str()), None),
        ListFilter::Email(email) => (None, None, Some(email.as_str())),
    };
    let no_body_filter = BodyFilter::default();
    let body = match filter {
        ListFilter::Body(body) => body,
        _ => &no_body_filter,
    };
    let cursor_id = match &params.cursor {
        Some(Cursor::StartingAfter(id)) | Some(Cursor::EndingBefore(id)) => Some(id.as_str()),
        None => None,
    };
    let cursor: Option<(i64, String)> = match cursor_id {
        Some(id) => Some(
            sqlx::query_as(
                "SELECT created, id FROM api.objects \
                 WHERE id = $1 AND project = $2 AND livemode = $3 AND object = $4",
            )
            .bind(id)
            .bind(&scope.project)
            .bind(scope.livemode)
            .bind(kind)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| ApiError::missing(kind, id))?,
        ),
        None => None,
    };
    let (comparison, order) = match params.direction() {
        Direction::NewestFirst => ("<", "DESC"),
        Direction::OldestFirst => (">", "ASC"),
    };
    let sql = format!(
        "SELECT body FROM api.objects \
         WHERE project = $1 AND livemode = $2 AND object = $3 AND NOT deleted \
           AND ($4::text IS NULL OR customer = $4) \
           AND ($5::text IS NULL OR payment_intent = $5) \
           AND ($6::bigint IS NULL OR (created, id) {comparison} ($6, $7)) \
           AND ($9::text IS NULL OR body->>'email' = $9) \
           AND ($10::jsonb IS NULL OR body @> $10) \
           AND ($11::text IS NULL OR body->>'product' = $11) \
           AND (cardinality($12::text[]) = 0 OR id = ANY($12)) \
           AND (cardinality($13::text[]) = 0 OR body->>'lookup_key' = ANY($13)) \
           AND ($14::jsonb IS NULL OR NOT body @> $14) \
         ORDER BY created {order}, id {order} LIMIT $8"
    );
    let rows: Vec<Value> = sqlx::query_scalar(&sql)
        .bind(&scope.project)
        .bind(scope.livemode)
        .bind(kind)
        .bind(customer)
        .bind(payment_intent)
        .bind(cursor.as_ref().map(|(created, _)| *created))
        .bind(cursor.as_ref().map(|(_, id)| id.clone()))
        .bind(params.fetch_limit())
        .bind(email)
        .bind(&body.contains)
        .bind(&body.product)
        .bind(&body.ids)
        .bind(&body.lookup_keys)
        .bind(&body.excludes)
        .fetch_all(pool)
        .await?;
    Ok(List::from_page(url, params, rows))
}

/// A page of Stripe events, newest first, optionally of some types only, and (with
/// `delivery_success`) only those whose webhooks all succeeded, or only those with a webhook
/// still pending or failed.
pub async fn list_events(
    pool: &PgPool,
    scope: &Scope,
    types: &[String],
    delivery_success: Option<bool>,
    params: &ListParams,
) -> Result<List<Value>, ApiError> {
    let cursor: Option<(i64, i64)> = match &params.cursor {
        Some(Cursor::StartingAfter(id)) | Some(Cursor::EndingBefore(id)) => Some(
            sqlx::query_as(
                "SELECT created, ordinal FROM api.stripe_events WHERE id = $1 AND project = $2 AND livemode = $3",
            )
            .bind(id)
            .bind(&scope.project)
            .bind(scope.livemode)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| ApiError::missing("event", id))?,
        ),
        None => None,
    };
    let (comparison, order) = match params.direction() {
        Direction::NewestFirst => ("<", "DESC"),
        Direction::OldestFirst => (">", "ASC"),
    };
    // Events of one second are ordered by their place in the log (`ordinal`), so "newest
    // first" is the order they happened in, reversed.
    let undelivered = webhook_relay::store::undelivered_condition("stripe_events.id");
    let sql = format!(
        "SELECT body FROM api.stripe_events \
         WHERE project = $1 AND livemode = $2 \
           AND (cardinality($3::text[]) = 0 OR type = ANY($3)) \
           AND ($4::bigint IS NULL OR (created, ordinal) {comparison} ($4, $5)) \
           AND ($7::boolean IS NULL OR $7 = NOT {undelivered}) \
         ORDER BY created {order}, ordinal {order} LIMIT $6"
    );
    let rows: Vec<Value> = sqlx::query_scalar(&sql)
        .bind(&scope.project)
        .bind(scope.livemode)
        .bind(types)
        .bind(cursor.as_ref().map(|(created, _)| *created))
        .bind(cursor.as_ref().map(|(_, ordinal)| *ordinal))
        .bind(params.fetch_limit())
        .bind(delivery_success)
        .fetch_all(pool)
        .await?;
    Ok(List::from_page("/v1/events", params, rows))
}

pub async fn get_event(pool: &PgPool, scope: &Scope, id: &str) -> Result<Value, ApiError> {
    let body: Option<Value> = sqlx::query_scalar(
        "SELECT body FROM api.stripe_events WHERE id = $1 AND project = $2 AND livemode = $3",
    )
    .bind(id)
    .bind(&scope.project)
    .bind(scope.livemode)
    .fetch_optional(pool)
    .await?;
    body.ok_or_else(|| ApiError::missing("event", id))
}

/// `expand[]`: replaces id strings at the given paths (`customer`, `latest_charge`,
/// `data.payment_method` in lists) with the objects, from this scope only.
pub async fn expand(
    pool: &PgPool,
    scope: &Scope,
    object: &mut Value,
    paths: &[String],
) -> Result<(), ApiError> {
    if paths.len() > MAX_EXPAND_PATHS {
        return Err(ApiError::invalid_param(
            "expand",
            "You cannot expand more than 20 fields.",
        ));
    }
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        expand_path(pool, scope, object, &segments, path).await?;
    }
    Ok(())
}

fn expand_path<'a>(
    pool: &'a PgPool,
    scope: &'a Scope,
    value: &'a mut Value,
    segments: &'a [&'a str],
    path: &'a str,
) -> futures::future::BoxFuture<'a, Result<(), ApiError>> {
    Box::pin(async move {
        let Some((first, rest)) = segments.split_first() else {
            return Ok(());
        };
        if *first == "data" {
            if let Some(items) = value.get_mut("data").and_then(Value::as_array_mut) {
                for item in items {
                    expand_path(pool, scope, item, rest, path).await?;
                }
                return Ok(());
            }
        }
        let Some(field) = value.get_mut(*first) else {
            return Err(ApiError::invalid_param(
                "expand",
                format!("This property cannot be expanded ({path})."),
            ));
        };
        if rest.is_empty() {
            if let Some(id) = field.as_str().map(str::to_string) {
                let found: Option<Value> = sqlx::query_scalar(
                    "SELECT body FROM api.objects WHERE id = $1 AND project = $2 AND livemode = $3",
                )
                .bind(&id)
                .bind(&scope.project)
                .bind(scope.livemode)
                .fetch_optional(pool)
                .await?;
                if let Some(found) = found {
                    *field = found;
                }
            }
            return Ok(());
        }
        expand_path(pool, scope, field, rest, path).await
    })
}
