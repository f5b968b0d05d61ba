//! The fan-out: a consumer of the log with its own checkpoint (`webhook_relay`), run by the
//! projection runtime, so each batch's effect commits with its checkpoint and every event
//! is fanned out exactly once whatever crashes, with any number of relays running.
//!
//! It reads after the `api` projection: the Stripe events it sends are the ones that
//! projection rendered into `api.stripe_events` (never rendered twice), so its batches stop
//! at that projection's checkpoint. Walking its batch in log order it
//!
//! - folds webhook endpoint events into `webhook_endpoints` (with the signing secret from the
//!   created event; disabling or deleting an endpoint cancels its pending deliveries);
//! - for every other event, sends each Stripe event rendered from it to the endpoints of
//!   its project and mode that were enabled and wanted its type at that point of the log:
//!   one `webhook_events` row with the body to send (`pending_webhooks` = how many endpoints
//!   it goes to) and one pending `webhook_deliveries` row per endpoint, due now;
//!
//! then notifies the delivery workers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cqrs_es::Aggregate;
use domain::webhook_endpoint::{wants, WebhookEndpoint, WebhookEndpointEvent};
use event_store::{EventMetadata, Mode, RecordedEvent};
use projections::{Projection, ProjectionError};
use scheduler::Clock;
use serde_json::Value;
use sqlx::PgConnection;

use crate::delivery::DELIVERIES_CHANNEL;

/// The consumer's name: its checkpoint's, and its (empty) schema's.
pub const NAME: &str = "webhook_relay";

pub struct FanOut {
    clock: Arc<dyn Clock>,
}

impl FanOut {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

/// An endpoint as the fan-out sees it.
#[derive(Debug, Clone)]
struct Endpoint {
    id: String,
    project: String,
    livemode: bool,
    url: String,
    enabled_events: Vec<String>,
    enabled: bool,
    deleted: bool,
    /// Only for endpoints created in this batch (stored ones keep theirs).
    secret: Option<String>,
    /// Changed in this batch: written back.
    changed: bool,
}

impl Endpoint {
    fn receiving(&self) -> bool {
        self.enabled && !self.deleted
    }

    fn receives(&self, project: &str, livemode: bool, event_type: &str) -> bool {
        self.receiving()
            && self.project == project
            && self.livemode == livemode
            && wants(&self.enabled_events, event_type)
    }
}

/// A delivery the batch makes.
struct NewDelivery {
    event_id: String,
    endpoint_id: String,
    /// Its endpoint stopped receiving later in the same batch.
    canceled: bool,
}

/// A Stripe event of the `api` read model. Its body stays in the database: the fan-out
/// copies it from there.
struct StripeEvent {
    id: String,
    event_type: String,
}

fn scope_of(event: &RecordedEvent) -> Result<(String, bool), ProjectionError> {
    let metadata: EventMetadata = event
        .metadata()
        .map_err(|error| ProjectionError::bad_event(event, error))?;
    Ok((metadata.project, metadata.mode == Some(Mode::Live)))
}

#[async_trait::async_trait]
impl Projection for FanOut {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Its tables are durable work, not a read model: they live in `public`
    /// (migrations/0004_webhooks.sql) and are never rebuilt.
    fn schema_sql(&self) -> &'static str {
        ""
    }

    fn reads_after(&self) -> Option<&'static str> {
        Some(projections::api_objects::NAME)
    }

    /// Applied inside the `api` projection's batches when level with it (the usual case in
    /// `calmony serve`, which follows both): the Stripe events it sends are the ones that
    /// batch has just written, and a charge costs one transaction less per commit.
    fn rides_along(&self) -> bool {
        true
    }

    /// A batch lost to a database crash is lost with its checkpoint and fanned out again: at
    /// worst its deliveries are sent twice, which receivers must tolerate anyway. So its
    /// commit need not wait for the disk (the log and the api projection's do).
    fn commits_asynchronously(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let now = self.clock.now();
        let mut scopes: Vec<(String, bool)> = Vec::new();
        let mut scoped = Vec::with_capacity(events.len());
        for event in events {
            let scope = scope_of(event)?;
            if !scopes.contains(&scope) {
                scopes.push(scope.clone());
            }
            scoped.push((event, scope));
        }
        let mut endpoints = load_endpoints(connection, &scopes).await?;

        // Which events may have something to send: those of a scope with an endpoint at
        // some point of the batch. Most batches of a project without endpoints stop here.
        let mut scopes_with_endpoints: HashSet<(String, bool)> = endpoints
            .iter()
            .map(|endpoint| (endpoint.project.clone(), endpoint.livemode))
            .collect();
        for (event, scope) in &scoped {
            if event.aggregate_type == WebhookEndpoint::TYPE {
                scopes_with_endpoints.insert(scope.clone());
            }
        }
        let positions: Vec<i64> = scoped
            .iter()
            .filter(|(event, scope)| {
                event.aggregate_type != WebhookEndpoint::TYPE
                    && scopes_with_endpoints.contains(scope)
            })
            .map(|(event, _)| event.position)
            .collect();
        let mut stripe_events = load_stripe_events(connection, &positions).await?;

        let mut sent_events: Vec<(StripeEvent, (String, bool), usize)> = Vec::new();
        let mut deliveries: Vec<NewDelivery> = Vec::new();
        let mut stopped: Vec<String> = Vec::new();
        for (event, (project, livemode)) in &scoped {
            if event.aggregate_type == WebhookEndpoint::TYPE {
                let change: WebhookEndpointEvent = event
                    .payload_as()
                    .map_err(|error| ProjectionError::bad_event(event, error))?;
                if let Some(stopped_id) =
                    fold_endpoint(&mut endpoints, event, project, *livemode, change)
                {
                    // What this batch made for it before it stopped is canceled too.
                    for delivery in &mut deliveries {
                        delivery.canceled |= delivery.endpoint_id == stopped_id;
                    }
                    stopped.push(stopped_id);
                }
                continue;
            }
            let Some(rendered) = stripe_events.remove(&event.position) else {
                continue;
            };
            for stripe_event in rendered {
                let receivers: Vec<&Endpoint> = endpoints
                    .iter()
                    .filter(|endpoint| {
                        endpoint.receives(project, *livemode, &stripe_event.event_type)
                    })
                    .collect();
                if receivers.is_empty() {
                    continue;
                }
                for endpoint in &receivers {
                    deliveries.push(NewDelivery {
                        event_id: stripe_event.id.clone(),
                        endpoint_id: endpoint.id.clone(),
                        canceled: false,
                    });
                }
                let count = receivers.len();
                sent_events.push((stripe_event, (project.clone(), *livemode), count));
            }
        }

        write_endpoints(connection, &endpoints).await?;
        if !stopped.is_empty() {
            cancel_pending(connection, &stopped, now).await?;
        }
        if !deliveries.is_empty() {
            write_deliveries(connection, sent_events, &deliveries, now).await?;
        }
        Ok(())
    }
}

/// Applies one endpoint event; returns the endpoint's id when it stopped receiving
/// (disabled or deleted), so its pending deliveries are canceled.
fn fold_endpoint(
    endpoints: &mut Vec<Endpoint>,
    event: &RecordedEvent,
    project: &str,
    livemode: bool,
    change: WebhookEndpointEvent,
) -> Option<String> {
    let id = event.aggregate_id.clone();
    if let WebhookEndpointEvent::WebhookEndpointCreated {
        url,
        enabled_events,
        secret,
        ..
    } = change
    {
        endpoints.push(Endpoint {
            id,
            project: project.to_string(),
            livemode,
            url,
            enabled_events,
            enabled: true,
            deleted: false,
            secret: Some(secret.expose().to_string()),
            changed: true,
        });
        return None;
    }
    let endpoint = endpoints.iter_mut().find(|endpoint| endpoint.id == id)?;
    endpoint.changed = true;
    let was_receiving = endpoint.receiving();
    match change {
        WebhookEndpointEvent::WebhookEndpointCreated { .. } => {}
        WebhookEndpointEvent::WebhookEndpointUpdated { changes, .. } => {
            if let Some(url) = changes.url {
                endpoint.url = url;
            }
            if let Some(events) = changes.enabled_events {
                endpoint.enabled_events = events;
            }
            if let Some(disabled) = changes.disabled {
                endpoint.enabled = !disabled;
            }
        }
        WebhookEndpointEvent::WebhookEndpointDisabled { .. } => endpoint.enabled = false,
        WebhookEndpointEvent::WebhookEndpointDeleted { .. } => endpoint.deleted = true,
    }
    let stopped = was_receiving && !endpoint.receiving();
    stopped.then(|| endpoint.id.clone())
}

async fn load_endpoints(
    connection: &mut PgConnection,
    scopes: &[(String, bool)],
) -> Result<Vec<Endpoint>, ProjectionError> {
    let projects: Vec<&str> = scopes.iter().map(|(project, _)| project.as_str()).collect();
    let livemodes: Vec<bool> = scopes.iter().map(|(_, livemode)| *livemode).collect();
    let rows: Vec<(String, String, bool, String, Vec<String>, String)> = sqlx::query_as(
        "SELECT e.id, e.project, e.livemode, e.url, e.enabled_events, e.status \
         FROM webhook_endpoints e \
         JOIN UNNEST($1::text[], $2::boolean[]) AS s(project, livemode) \
           ON e.project = s.project AND e.livemode = s.livemode \
         WHERE NOT e.deleted",
    )
    .bind(&projects)
    .bind(&livemodes)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, project, livemode, url, enabled_events, status)| Endpoint {
                id,
                project,
                livemode,
                url,
                enabled_events,
                enabled: status == "enabled",
                deleted: false,
                secret: None,
                changed: false,
            },
        )
        .collect())
}

/// The Stripe events rendered from the ledger events at `positions` (ids and types: what
/// choosing endpoints needs), by position, each position's in the order they happened.
async fn load_stripe_events(
    connection: &mut PgConnection,
    positions: &[i64],
) -> Result<HashMap<i64, Vec<StripeEvent>>, ProjectionError> {
    let mut by_position: HashMap<i64, Vec<StripeEvent>> = HashMap::new();
    if positions.is_empty() {
        return Ok(by_position);
    }
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT id, position, type FROM api.stripe_events \
         WHERE position = ANY($1) ORDER BY ordinal",
    )
    .bind(positions)
    .fetch_all(connection)
    .await?;
    for (id, position, event_type) in rows {
        by_position
            .entry(position)
            .or_default()
            .push(StripeEvent { id, event_type });
    }
    Ok(by_position)
}

async fn write_endpoints(
    connection: &mut PgConnection,
    endpoints: &[Endpoint],
) -> Result<(), ProjectionError> {
    // Endpoints created in this batch are inserted (with their secret) as they stand at its
    // end; the others that changed are updated (their secret stays as stored).
    let (created, updated): (Vec<&Endpoint>, Vec<&Endpoint>) = endpoints
        .iter()
        .filter(|endpoint| endpoint.changed)
        .partition(|endpoint| endpoint.secret.is_some());
    if !created.is_empty() {
        let rows = EndpointRows::of(&created);
        sqlx::query(
            "INSERT INTO webhook_endpoints \
                 (id, project, livemode, url, enabled_events, secret, status, deleted) \
             SELECT u.id, u.project, u.livemode, u.url, \
                    ARRAY(SELECT jsonb_array_elements_text(u.enabled_events)), \
                    u.secret, u.status, u.deleted \
             FROM UNNEST($1::text[], $2::text[], $3::boolean[], $4::text[], $5::jsonb[], \
                         $6::text[], $7::text[], $8::boolean[]) \
                  AS u(id, project, livemode, url, enabled_events, secret, status, deleted)",
        )
        .bind(&rows.ids)
        .bind(&rows.projects)
        .bind(&rows.livemodes)
        .bind(&rows.urls)
        .bind(&rows.enabled_events)
        .bind(&rows.secrets)
        .bind(&rows.statuses)
        .bind(&rows.deleted)
        .execute(&mut *connection)
        .await?;
    }
    if !updated.is_empty() {
        let rows = EndpointRows::of(&updated);
        // Enabled again: its failure streak starts over.
        sqlx::query(
            "UPDATE webhook_endpoints AS e \
             SET url = u.url, \
                 enabled_events = ARRAY(SELECT jsonb_array_elements_text(u.enabled_events)), \
                 status = u.status, deleted = u.deleted, \
                 failing_since = CASE WHEN u.status = 'enabled' AND e.status = 'disabled' \
                                      THEN NULL ELSE e.failing_since END \
             FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::boolean[]) \
                  AS u(id, url, enabled_events, status, deleted) \
             WHERE e.id = u.id",
        )
        .bind(&rows.ids)
        .bind(&rows.urls)
        .bind(&rows.enabled_events)
        .bind(&rows.statuses)
        .bind(&rows.deleted)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Endpoints as columns, for `UNNEST`.
struct EndpointRows<'a> {
    ids: Vec<&'a str>,
    projects: Vec<&'a str>,
    livemodes: Vec<bool>,
    urls: Vec<&'a str>,
    /// `text[][]` must be rectangular, so each endpoint's list travels as a JSON array.
    enabled_events: Vec<Value>,
    secrets: Vec<Option<&'a str>>,
    statuses: Vec<&'static str>,
    deleted: Vec<bool>,
}

impl<'a> EndpointRows<'a> {
    fn of(endpoints: &[&'a Endpoint]) -> Self {
        let mut rows = EndpointRows {
            ids: Vec::new(),
            projects: Vec::new(),
            livemodes: Vec::new(),
            urls: Vec::new(),
            enabled_events: Vec::new(),
            secrets: Vec::new(),
            statuses: Vec::new(),
            deleted: Vec::new(),
        };
        for endpoint in endpoints {
            rows.ids.push(&endpoint.id);
            rows.projects.push(&endpoint.project);
            rows.livemodes.push(endpoint.livemode);
            rows.urls.push(&endpoint.url);
            rows.enabled_events
                .push(Value::from(endpoint.enabled_events.clone()));
            rows.secrets.push(endpoint.secret.as_deref());
            rows.statuses.push(if endpoint.enabled {
                "enabled"
            } else {
                "disabled"
            });
            rows.deleted.push(endpoint.deleted);
        }
        rows
    }
}

async fn cancel_pending(
    connection: &mut PgConnection,
    endpoint_ids: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'canceled', next_attempt_at = NULL, \
             finished_at = $2, lease_id = NULL, leased_until = NULL \
         WHERE endpoint_id = ANY($1) AND state = 'pending'",
    )
    .bind(endpoint_ids)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(())
}

/// Stores the body every attempt sends (the read model's event with `pending_webhooks` set
/// to the number of endpoints it goes to, copied within the database) and a delivery per
/// endpoint, then wakes the delivery workers: one statement, so one round trip.
async fn write_deliveries(
    connection: &mut PgConnection,
    events: Vec<(StripeEvent, (String, bool), usize)>,
    deliveries: &[NewDelivery],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ProjectionError> {
    let mut event_ids = Vec::with_capacity(events.len());
    let mut projects = Vec::with_capacity(events.len());
    let mut livemodes = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut counts = Vec::with_capacity(events.len());
    for (event, (project, livemode), endpoints) in events {
        event_ids.push(event.id);
        projects.push(project);
        livemodes.push(livemode);
        types.push(event.event_type);
        counts.push(i64::try_from(endpoints).unwrap_or(i64::MAX));
    }
    let ids: Vec<String> = deliveries
        .iter()
        .map(|_| commands::ids::new_id(crate::DELIVERY_ID_PREFIX))
        .collect();
    let delivered: Vec<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
    let endpoints: Vec<&str> = deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
    let canceled: Vec<bool> = deliveries.iter().map(|d| d.canceled).collect();
    sqlx::query(
        "WITH events AS ( \
             INSERT INTO webhook_events (id, project, livemode, type, body) \
             SELECT u.id, u.project, u.livemode, u.type, \
                    jsonb_set(s.body, '{pending_webhooks}', to_jsonb(u.endpoints))::text \
             FROM UNNEST($1::text[], $2::text[], $3::boolean[], $4::text[], $5::bigint[]) \
                  AS u(id, project, livemode, type, endpoints) \
             JOIN api.stripe_events s ON s.id = u.id \
             ON CONFLICT (id) DO NOTHING \
         ), deliveries AS ( \
             INSERT INTO webhook_deliveries (id, event_id, endpoint_id, project, livemode, \
                 state, created_at, next_attempt_at, finished_at) \
             SELECT d.id, d.event_id, d.endpoint_id, e.project, e.livemode, \
                    CASE WHEN d.canceled THEN 'canceled' ELSE 'pending' END, $10, \
                    CASE WHEN d.canceled THEN NULL ELSE $10 END, \
                    CASE WHEN d.canceled THEN $10 END \
             FROM UNNEST($6::text[], $7::text[], $8::text[], $9::boolean[]) \
                  AS d(id, event_id, endpoint_id, canceled) \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             ON CONFLICT (event_id, endpoint_id) WHERE NOT redelivery DO NOTHING \
         ) \
         SELECT pg_notify($11, '')",
    )
    .bind(&event_ids)
    .bind(&projects)
    .bind(&livemodes)
    .bind(&types)
    .bind(&counts)
    .bind(&ids)
    .bind(&delivered)
    .bind(&endpoints)
    .bind(&canceled)
    .bind(now)
    .bind(DELIVERIES_CHANNEL)
    .execute(connection)
    .await?;
    Ok(())
}
