//! Delivery workers: lease due deliveries, sign and send them, record every attempt, and
//! schedule the next one ([`crate::schedule`]) or finish the delivery.
//!
//! Any number of workers, in any number of processes, share the work: a claim is one
//! statement that leases due deliveries (`FOR UPDATE SKIP LOCKED`, so two claims never take
//! the same one) until the database's clock passes `leased_until`. A worker sends only while
//! its lease outlasts the request's total timeout, so one delivery is never attempted by
//! two workers at once; a worker that dies mid-delivery leaves its lease to run out, and
//! another sends the same event (same id, same body) again: at least once, never lost.
//! Recording checks the lease, so a worker that lost its lease records its attempt but
//! does not move the delivery.
//!
//! No database transaction is open while a request is in flight (see ARCHITECTURE.md: an
//! open writing transaction holds every log reader back).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use commands::execute::CommandError;
use commands::CommandBus;
use domain::webhook_endpoint::{WebhookEndpoint, WebhookEndpointCommand, WebhookEndpointError};
use event_store::{EventMetadata, EventStore, Mode};
use futures::StreamExt;
use rand::Rng;
use scheduler::Clock;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::schedule::RetrySchedule;
use crate::signature;
use crate::url_guard::{refusal_in, UrlGuard};

/// Fan-outs and redeliveries notify this channel when they add deliveries.
pub const DELIVERIES_CHANNEL: &str = "calmony_webhook_deliveries";
/// Some receivers check that the User-Agent names Stripe (STRIPE-CONVENTIONS.md §3).
pub const USER_AGENT: &str = "Stripe/1.0 (+https://stripe.com/docs/webhooks) Calmony";
pub const CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// How much of a response body is kept for the deliveries log.
pub const RESPONSE_EXCERPT_BYTES: usize = 1_024;
/// How much of a failure's description is kept.
const ERROR_CHARS: usize = 500;
/// Most attempts recorded in one transaction.
const RECORD_BATCH: usize = 1_000;
/// An endpoint that failed for this long without a single success is disabled.
pub const DISABLE_AFTER_FAILING_SECONDS: i64 = 3 * 24 * 60 * 60;

#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// Bound on connecting (DNS excluded).
    pub connect_timeout_ms: u64,
    /// Bound on a whole attempt: connect, send, and read the response's start.
    pub timeout_ms: u64,
    /// How long a claim keeps a delivery from other workers. Longer than `timeout_ms`: a
    /// worker sends only while its lease outlasts the timeout.
    pub lease_ms: u64,
    /// Requests in flight per worker.
    pub concurrency: usize,
    /// Deliveries per claim statement.
    pub claim_batch: usize,
    /// How often the worker looks for retries that became due and leases that ran out
    /// (new deliveries wake it at once).
    pub poll_interval_ms: u64,
    pub schedule: RetrySchedule,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            timeout_ms: 15_000,
            lease_ms: 60_000,
            concurrency: 64,
            claim_batch: 100,
            poll_interval_ms: 500,
            schedule: RetrySchedule::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Projection(#[from] projections::ProjectionError),
    #[error("the webhook HTTP client could not be built: {0}")]
    Client(#[from] reqwest::Error),
    #[error("invalid webhook relay settings: {0}")]
    Settings(String),
}

/// A leased delivery with what sending it needs. No `Debug`: it holds the secret.
struct Claimed {
    id: String,
    lease_id: Uuid,
    claimed_at: Instant,
    endpoint_id: String,
    livemode: bool,
    url: String,
    secret: String,
    body: String,
    /// Attempts made before this one.
    attempts: i32,
    created_at: DateTime<Utc>,
}

/// How one attempt went.
struct Outcome {
    delivery: Claimed,
    attempted_at: DateTime<Utc>,
    latency_ms: i32,
    status_code: Option<i32>,
    error: Option<String>,
    response_excerpt: Option<String>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status_code
            .is_some_and(|status| (200..300).contains(&status))
    }
}

struct Inner {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    bus: CommandBus,
    settings: DeliverySettings,
    test_client: reqwest::Client,
    live_client: reqwest::Client,
}

/// Sends due deliveries. Cheap to clone; clones share their HTTP clients.
#[derive(Clone)]
pub struct DeliveryWorker {
    inner: Arc<Inner>,
}

fn client(
    guard: &UrlGuard,
    livemode: bool,
    settings: &DeliverySettings,
) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .timeout(Duration::from_millis(settings.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve and connect on our behalf, past the address checks.
        .no_proxy()
        .dns_resolver(Arc::new(guard.resolver(livemode)))
        .user_agent(USER_AGENT)
        .tcp_nodelay(true);
    if livemode {
        // No idle connections: every live delivery resolves, and so is checked, afresh.
        builder.pool_max_idle_per_host(0).build()
    } else {
        builder.build()
    }
}

impl DeliveryWorker {
    pub fn new(
        pool: PgPool,
        clock: Arc<dyn Clock>,
        guard: &UrlGuard,
        settings: DeliverySettings,
    ) -> Result<Self, RelayError> {
        if settings.lease_ms <= settings.timeout_ms {
            return Err(RelayError::Settings(format!(
                "the lease ({} ms) must be longer than the request timeout ({} ms)",
                settings.lease_ms, settings.timeout_ms
            )));
        }
        if settings.concurrency == 0 || settings.claim_batch == 0 {
            return Err(RelayError::Settings(
                "concurrency and claim batch must be at least 1".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                bus: CommandBus::new(EventStore::new(pool.clone()), domain::upcasters::all()),
                pool,
                clock,
                test_client: client(guard, false, &settings)?,
                live_client: client(guard, true, &settings)?,
                settings,
            }),
        })
    }

    /// Sends everything due now, retries that fail again included only once they are due
    /// again, and returns how many attempts were made. For tests that move a clock; `run`
    /// is the long-lived loop.
    pub async fn deliver_due(&self) -> Result<usize, RelayError> {
        let mut attempts = 0;
        loop {
            let claimed = self.claim(self.inner.settings.claim_batch).await?;
            if claimed.is_empty() {
                return Ok(attempts);
            }
            let outcomes: Vec<Option<Outcome>> = futures::stream::iter(claimed)
                .map(|delivery| attempt(self.inner.clone(), delivery))
                .buffer_unordered(self.inner.settings.concurrency)
                .collect()
                .await;
            let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
            attempts += outcomes.len();
            self.record(outcomes).await?;
        }
    }

    /// Delivers for ever: claims while there is room and work, sends concurrently (at most
    /// `concurrency` requests in flight), and hands what finished to a recorder task that
    /// writes whatever has piled up in one transaction, so claiming never waits on
    /// recording. New deliveries wake it (a notification); retries that fall due and leases
    /// that run out are found by polling. Database errors are logged and retried.
    pub async fn run(&self) -> Result<(), RelayError> {
        let settings = self.inner.settings;
        let mut listener = PgListener::connect_with(&self.inner.pool).await?;
        listener.listen(DELIVERIES_CHANNEL).await?;
        let mut ticker = tokio::time::interval(Duration::from_millis(settings.poll_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let permits = Arc::new(tokio::sync::Semaphore::new(settings.concurrency));
        let (finished, mut to_record) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
        let recorder = {
            let worker = self.clone();
            tokio::spawn(async move {
                while let Some(first) = to_record.recv().await {
                    let mut outcomes = vec![first];
                    while outcomes.len() < RECORD_BATCH {
                        match to_record.try_recv() {
                            Ok(outcome) => outcomes.push(outcome),
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = worker.record(outcomes).await {
                        // Unrecorded attempts are sent again once their leases run out.
                        tracing::warn!(%error, "recording webhook attempts failed");
                    }
                }
            })
        };
        // The recorder stops with this loop.
        let _recorder = AbortOnDrop(recorder);
        let mut look = true;
        loop {
            let room = permits.available_permits().min(settings.claim_batch);
            if look && room > 0 {
                match self.claim(room).await {
                    Ok(claimed) => {
                        look = claimed.len() == room;
                        for delivery in claimed {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                // Only this loop takes permits, and it claimed no more than
                                // were free.
                                break;
                            };
                            let inner = self.inner.clone();
                            let finished = finished.clone();
                            tokio::spawn(async move {
                                let outcome = attempt(inner, delivery).await;
                                drop(permit);
                                if let Some(outcome) = outcome {
                                    let _ = finished.send(outcome);
                                }
                            });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "claiming webhook deliveries failed; retrying");
                        look = false;
                    }
                }
                continue;
            }
            tokio::select! {
                // Room again for work that is waiting.
                permit = permits.acquire(), if look => drop(permit),
                notification = listener.recv() => {
                    if let Err(error) = notification {
                        tracing::warn!(%error, "webhook delivery listener failed; polling");
                    }
                    while listener.next_buffered().is_some() {}
                    look = true;
                }
                _ = ticker.tick() => look = true,
            }
        }
    }

    /// Leases up to `limit` due deliveries.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, RelayError> {
        let lease_id = Uuid::new_v4();
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "WITH due AS ( \
                 SELECT id FROM webhook_deliveries \
                 WHERE state = 'pending' AND next_attempt_at <= $1 \
                   AND (leased_until IS NULL OR leased_until < clock_timestamp()) \
                 ORDER BY next_attempt_at \
                 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE webhook_deliveries AS d \
             SET lease_id = $3, leased_until = clock_timestamp() + $4 * interval '1 millisecond' \
             FROM due, webhook_endpoints AS e, webhook_events AS v \
             WHERE d.id = due.id AND e.id = d.endpoint_id AND v.id = d.event_id \
             RETURNING d.id, d.endpoint_id, d.livemode, e.url, e.secret, v.body, \
                       d.attempts, d.created_at",
        )
        .bind(self.inner.clock.now())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(lease_id)
        .bind(self.inner.settings.lease_ms as f64)
        .fetch_all(&self.inner.pool)
        .await?;
        let claimed_at = Instant::now();
        Ok(rows
            .into_iter()
            .map(|row| Claimed {
                id: row.id,
                lease_id,
                claimed_at,
                endpoint_id: row.endpoint_id,
                livemode: row.livemode,
                url: row.url,
                secret: row.secret,
                body: row.body,
                attempts: row.attempts,
                created_at: row.created_at,
            })
            .collect())
    }

    /// Records attempts, moves their deliveries on, and keeps each endpoint's failure
    /// streak; then disables endpoints that failed for three days without a success.
    async fn record(&self, outcomes: Vec<Outcome>) -> Result<(), RelayError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let schedule = self.inner.settings.schedule;
        let mut attempts = AttemptColumns::default();
        let mut deliveries = DeliveryColumns::default();
        let mut streaks: HashMap<&str, Streak> = HashMap::new();
        for outcome in &outcomes {
            let number = outcome.delivery.attempts + 1;
            let succeeded = outcome.succeeded();
            let next = if succeeded {
                None
            } else {
                schedule.next_attempt(
                    outcome.delivery.created_at,
                    u32::try_from(number).unwrap_or(u32::MAX),
                    outcome.attempted_at,
                    rand::rng().random_range(-1.0..=1.0),
                )
            };
            let state = match (succeeded, next) {
                (true, _) => "succeeded",
                (false, Some(_)) => "pending",
                (false, None) => "failed",
            };
            attempts.push(outcome, number, succeeded);
            deliveries.push(outcome, number, state, next);
            let streak = streaks
                .entry(outcome.delivery.endpoint_id.as_str())
                .or_default();
            if succeeded {
                streak.succeeded_at = streak.succeeded_at.max(Some(outcome.attempted_at));
            } else {
                streak.failed_at = Some(streak.failed_at.map_or(outcome.attempted_at, |first| {
                    first.min(outcome.attempted_at)
                }));
            }
        }

        let mut transaction = self.inner.pool.begin().await?;
        // Losing this commit to a database crash only means the attempt is made again once
        // its lease runs out (the lease itself was committed durably by the claim), so it
        // need not wait for the disk.
        sqlx::query("SET LOCAL synchronous_commit TO off")
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, succeeded, \
                 status_code, latency_ms, error, response_excerpt) \
             SELECT * FROM UNNEST($1::text[], $2::int4[], $3::timestamptz[], $4::boolean[], \
                                  $5::int4[], $6::int4[], $7::text[], $8::text[])",
        )
        .bind(&attempts.delivery_ids)
        .bind(&attempts.numbers)
        .bind(&attempts.attempted_at)
        .bind(&attempts.succeeded)
        .bind(&attempts.status_codes)
        .bind(&attempts.latencies_ms)
        .bind(&attempts.errors)
        .bind(&attempts.excerpts)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries AS d \
             SET state = u.state, attempts = u.attempts, last_attempt_at = u.attempted_at, \
                 next_attempt_at = u.next_attempt_at, \
                 finished_at = CASE WHEN u.state = 'pending' THEN NULL ELSE u.attempted_at END, \
                 lease_id = NULL, leased_until = NULL \
             FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::int4[], $5::timestamptz[], \
                         $6::timestamptz[]) \
                  AS u(id, lease_id, state, attempts, attempted_at, next_attempt_at) \
             WHERE d.id = u.id AND d.lease_id = u.lease_id AND d.state = 'pending'",
        )
        .bind(&deliveries.ids)
        .bind(&deliveries.lease_ids)
        .bind(&deliveries.states)
        .bind(&deliveries.attempts)
        .bind(&deliveries.attempted_at)
        .bind(&deliveries.next_attempt_at)
        .execute(&mut *transaction)
        .await?;
        let mut endpoint_ids = Vec::new();
        let mut succeeded_at = Vec::new();
        let mut failed_at = Vec::new();
        for (endpoint, streak) in &streaks {
            endpoint_ids.push(*endpoint);
            succeeded_at.push(streak.succeeded_at);
            failed_at.push(streak.failed_at);
        }
        let failing: Vec<(String, String, bool, DateTime<Utc>)> = sqlx::query_as(
            "WITH updated AS ( \
                 UPDATE webhook_endpoints AS e \
                 SET last_success_at = greatest(e.last_success_at, u.succeeded_at), \
                     failing_since = CASE WHEN u.succeeded_at IS NOT NULL THEN NULL \
                                          ELSE coalesce(e.failing_since, u.failed_at) END \
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[]) \
                      AS u(id, succeeded_at, failed_at) \
                 WHERE e.id = u.id \
                 RETURNING e.id, e.project, e.livemode, e.status, e.deleted, e.failing_since) \
             SELECT id, project, livemode, failing_since FROM updated \
             WHERE failing_since IS NOT NULL AND status = 'enabled' AND NOT deleted",
        )
        .bind(&endpoint_ids)
        .bind(&succeeded_at)
        .bind(&failed_at)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;

        for (endpoint_id, project, livemode, since) in failing {
            let now = streaks
                .get(endpoint_id.as_str())
                .and_then(|streak| streak.failed_at)
                .unwrap_or(since);
            if (now - since).num_seconds() >= DISABLE_AFTER_FAILING_SECONDS {
                self.disable(&endpoint_id, &project, livemode, since, now)
                    .await;
            }
        }
        Ok(())
    }

    /// Records the endpoint's disabling in the log (the fan-out then cancels its pending
    /// deliveries). Disabling twice is a no-op in the aggregate, so racing workers are fine.
    async fn disable(
        &self,
        endpoint_id: &str,
        project: &str,
        livemode: bool,
        failing_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let mode = if livemode { Mode::Live } else { Mode::Test };
        let metadata = EventMetadata::new(project, mode, "system:webhook-relay");
        let command = WebhookEndpointCommand::Disable {
            reason: format!(
                "every delivery failed from {} to {} without a success",
                failing_since.to_rfc3339(),
                now.to_rfc3339()
            ),
            at: now.timestamp(),
        };
        match self
            .inner
            .bus
            .execute::<WebhookEndpoint>(endpoint_id, command, &(), &metadata)
            .await
        {
            Ok(executed) if !executed.events.is_empty() => {
                tracing::warn!(
                    endpoint = endpoint_id,
                    project,
                    livemode,
                    "disabled a webhook endpoint that failed for three days"
                );
            }
            Ok(_) | Err(CommandError::Rejected(WebhookEndpointError::NotFound)) => {}
            Err(error) => {
                tracing::warn!(endpoint = endpoint_id, %error, "could not disable a failing webhook endpoint")
            }
        }
    }
}

/// One endpoint's attempts in a batch being recorded: the latest success, the earliest
/// failure.
#[derive(Default)]
struct Streak {
    succeeded_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: String,
    endpoint_id: String,
    livemode: bool,
    url: String,
    secret: String,
    body: String,
    attempts: i32,
    created_at: DateTime<Utc>,
}

#[derive(Default)]
struct AttemptColumns {
    delivery_ids: Vec<String>,
    numbers: Vec<i32>,
    attempted_at: Vec<DateTime<Utc>>,
    succeeded: Vec<bool>,
    status_codes: Vec<Option<i32>>,
    latencies_ms: Vec<i32>,
    errors: Vec<Option<String>>,
    excerpts: Vec<Option<String>>,
}

impl AttemptColumns {
    fn push(&mut self, outcome: &Outcome, number: i32, succeeded: bool) {
        self.delivery_ids.push(outcome.delivery.id.clone());
        self.numbers.push(number);
        self.attempted_at.push(outcome.attempted_at);
        self.succeeded.push(succeeded);
        self.status_codes.push(outcome.status_code);
        self.latencies_ms.push(outcome.latency_ms);
        self.errors.push(outcome.error.clone());
        self.excerpts.push(outcome.response_excerpt.clone());
    }
}

#[derive(Default)]
struct DeliveryColumns {
    ids: Vec<String>,
    lease_ids: Vec<Uuid>,
    states: Vec<&'static str>,
    attempts: Vec<i32>,
    attempted_at: Vec<DateTime<Utc>>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
}

impl DeliveryColumns {
    fn push(
        &mut self,
        outcome: &Outcome,
        number: i32,
        state: &'static str,
        next: Option<DateTime<Utc>>,
    ) {
        self.ids.push(outcome.delivery.id.clone());
        self.lease_ids.push(outcome.delivery.lease_id);
        self.states.push(state);
        self.attempts.push(number);
        self.attempted_at.push(outcome.attempted_at);
        self.next_attempt_at.push(next);
    }
}

/// One attempt, or `None` when the lease no longer outlasts a request (the worker was held
/// up): then nothing is sent, and the delivery waits for its lease to run out.
async fn attempt(inner: Arc<Inner>, delivery: Claimed) -> Option<Outcome> {
    let settings = &inner.settings;
    let left_ms =
        u128::from(settings.lease_ms).saturating_sub(delivery.claimed_at.elapsed().as_millis());
    if left_ms <= u128::from(settings.timeout_ms) {
        tracing::warn!(delivery = %delivery.id, "a webhook lease ran short before sending; leaving it to another attempt");
        return None;
    }
    let attempted_at = inner.clock.now();
    let started = Instant::now();
    let result = send(&inner, &delivery, attempted_at.timestamp()).await;
    let latency_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let (status_code, response_excerpt, error) = match result {
        Ok((status, excerpt)) => (Some(i32::from(status)), Some(excerpt), None),
        Err(error) => (None, None, Some(error)),
    };
    Some(Outcome {
        delivery,
        attempted_at,
        latency_ms,
        status_code,
        error,
        response_excerpt,
    })
}

/// Signs and posts the body; the status and the start of the response, or why there was
/// none.
async fn send(inner: &Inner, delivery: &Claimed, timestamp: i64) -> Result<(u16, String), String> {
    let url = UrlGuard::check_literal(&delivery.url, delivery.livemode)
        .map_err(|refused| format!("refused: {refused}"))?;
    let client = if delivery.livemode {
        &inner.live_client
    } else {
        &inner.test_client
    };
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(reqwest::header::CACHE_CONTROL, "no-cache")
        .header(
            signature::HEADER,
            signature::header_value(&delivery.secret, timestamp, delivery.body.as_bytes()),
        )
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    Ok((status, excerpt(response).await))
}

async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < RESPONSE_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(RESPONSE_EXCERPT_BYTES - bytes.len());
                bytes.extend_from_slice(&chunk[..take]);
            }
            // The status counts; a body cut short or slow is only less to show.
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Why a request got no response, in words (without the URL, which may hold credentials).
fn describe(error: reqwest::Error) -> String {
    if let Some(refused) = refusal_in(&error) {
        return format!("refused: {refused}");
    }
    let error = error.without_url();
    let mut words = if error.is_timeout() {
        String::from("timed out")
    } else if error.is_connect() {
        String::from("could not connect")
    } else {
        String::from("request failed")
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !words.contains(&text) {
            words.push_str(": ");
            words.push_str(&text);
        }
        source = cause.source();
    }
    words.chars().take(ERROR_CHARS).collect()
}
