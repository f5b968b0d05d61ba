//! Running projections: batches with checkpoints, live following, rebuild and swap.
//!
//! Exactly-once effect: a batch is one transaction that takes the projection's advisory
//! lock, reads its checkpoint, reads the next events after it, applies them and moves the
//! checkpoint. Kill the process anywhere and the transaction either committed (effect and
//! checkpoint) or did not (neither). The lock makes any number of runner processes safe:
//! only one applies a given projection's batch at a time, and each starts from the
//! checkpoint the previous one committed.
//!
//! Versions: every projection's tables are stamped with a fingerprint of what built them
//! (its name, [`Projection::version`], schema and index SQL). [`ProjectionRuntime::ensure_current`]
//! rebuilds a projection whose stamp differs (new columns, new posting rules) before it
//! follows again, so a deployment never applies new code to tables the old code built.
//!
//! Rebuild: the projection's tables are built from zero in a second schema
//! (`<name>__rebuild`) while the live one keeps serving and advancing; then, in one
//! transaction holding the projection's lock, the rebuild catches up to the horizon and the
//! schemas are renamed. Readers name tables by schema, so their next statement reads the new
//! tables; statements in flight finish on the old ones.
//!
//! A consumer may read what another one built (the webhook relay reads the `api`
//! projection's Stripe events): it names that one in [`Projection::reads_after`], its
//! batches stop at that one's checkpoint, and it wakes on that one's commits (every batch
//! notifies [`CHECKPOINT_CHANNEL`] with the projection's name) instead of the log's. A
//! runtime's followers all listen through one connection ([`Notifications`]): PostgreSQL
//! signals every listening backend on every notification, so one per follower would cost a
//! wake-up per follower per commit.
//!
//! In-process hand-offs: every batch publishes the checkpoint it committed (or found) on a
//! `tokio::sync::watch` channel of its runtime (clones share them), so a request waiting to
//! read its own write ([`ProjectionRuntime::wait_until_applied`]) and a downstream consumer
//! in the same process are woken by the commit itself, not by polling the checkpoint table.
//! Both keep a database check as the fallback for batches applied by another process.

use std::collections::HashMap;

use futures::TryStreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_store::log::{
    read_batch_after, read_consumer_batch, read_unhashed_after, LogBatch, NOTIFY_CHANNEL,
};
use event_store::notifications::Notifications;
use event_store::{LogCursor, RecordedEvent, StoreError};
use sqlx::{PgConnection, PgPool};

use crate::copy::BinaryCopy;

/// Bound on the events of one live batch.
pub const DEFAULT_BATCH_EVENTS: i64 = 1_000;
/// Bound on the events of one rebuild batch (larger: nobody waits on a rebuild's batch).
pub const REBUILD_BATCH_EVENTS: i64 = 20_000;
/// What a background read model's follower waits after a commit before reading
/// ([`Projection::batching_delay`]).
pub const BACKGROUND_BATCHING_DELAY: Duration = Duration::from_millis(200);
/// Every committed batch notifies this channel with its projection's name.
pub const CHECKPOINT_CHANNEL: &str = "calmony_checkpoints";

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {stream} v{sequence} cannot be projected: {reason}")]
    BadEvent {
        stream: String,
        sequence: i64,
        reason: String,
    },
    /// An invariant of the read model broke (for example debits ≠ credits). The projection
    /// stops rather than serve wrong numbers.
    #[error("projection {projection} invariant violated: {reason}")]
    Invariant {
        projection: &'static str,
        reason: String,
    },
    #[error("no projection named {0:?}")]
    Unknown(String),
}

/// An event's payload as `E`, through the upcasters only when one applies to it (most
/// events are current: they are read straight from the stored text, with no detour through
/// a JSON tree).
pub fn decode<E: serde::de::DeserializeOwned>(
    event: &RecordedEvent,
    upcasters: &[Box<dyn cqrs_es::persist::EventUpcaster>],
) -> Result<E, ProjectionError> {
    if upcasters
        .iter()
        .any(|upcaster| upcaster.can_upcast(&event.event_type, &event.event_version))
    {
        let current = event_store::upcast::to_current_shape(event, upcasters)
            .map_err(|error| ProjectionError::bad_event(event, error))?;
        return serde_json::from_value(current.payload)
            .map_err(|error| ProjectionError::bad_event(event, error));
    }
    serde_json::from_str(&event.payload).map_err(|error| ProjectionError::bad_event(event, error))
}

impl ProjectionError {
    pub fn bad_event(event: &RecordedEvent, reason: impl ToString) -> Self {
        ProjectionError::BadEvent {
            stream: event.stream_name(),
            sequence: event.sequence,
            reason: reason.to_string(),
        }
    }
}

#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    /// Unique; also the name of the schema holding its tables.
    fn name(&self) -> &'static str;

    /// Creates its tables, with unqualified names: it runs with `search_path` set to the
    /// schema being built.
    fn schema_sql(&self) -> &'static str;

    /// Secondary (non-unique) indexes, unqualified like `schema_sql`. Created with the
    /// tables for a new projection, but only after loading during a rebuild.
    fn index_sql(&self) -> &'static str {
        ""
    }

    /// Bump when `apply` changes what it writes without the SQL changing (a new rule): the
    /// projection is then rebuilt on its next start.
    fn version(&self) -> u32 {
        1
    }

    /// Whether `apply` reads event payloads. Projections that do not (the stream index) are
    /// fed events without them, which makes rebuilds much faster.
    fn needs_payload(&self) -> bool {
        true
    }

    /// The projection whose tables `apply` reads, if any: batches never go past its
    /// checkpoint (so what they read is there), and `follow` wakes on its commits. Such a
    /// consumer is not rebuilt by this runtime.
    fn reads_after(&self) -> Option<&'static str> {
        None
    }

    /// For a read model that requests wait on (the `api` projection): when a commit wakes
    /// its follower while no request of this process waits for it, how long the follower
    /// may wait for one to start waiting before it reads. A charge's first commit (its
    /// intent and attempt, which nobody waits on: the request is at the gateway) then
    /// shares a batch with its second (the outcome, which the request waits on) instead of
    /// costing a batch of its own. Zero (the default): read at once. It bounds how stale
    /// the model may be for writes nobody waits on (a billing run's, another process's).
    fn gathering_until_awaited(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether, reading after another consumer ([`Projection::reads_after`]), it may be
    /// applied inside that one's batches: when its checkpoint is level with that one's, a
    /// batch of the upstream followed in this process applies it to the same events in the
    /// same transaction (under a savepoint, with its own lock and checkpoint), which spares
    /// it a transaction of its own per upstream commit. Its own follower still catches up
    /// whatever was not carried (it fell behind, another process holds its lock, its apply
    /// failed there).
    fn rides_along(&self) -> bool {
        false
    }

    /// Whether a live batch's commit may return before it is on disk: for a consumer whose
    /// batch, lost with its checkpoint to a database crash, is simply done again.
    fn commits_asynchronously(&self) -> bool {
        false
    }

    /// How long a follower woken by a commit waits before reading, so that the commits
    /// arriving meanwhile share its batch. Zero for a read model that requests wait on (the
    /// `api` projection, read back by every write): each commit is applied at once. A
    /// background read model (the dashboard's totals, the journal) takes
    /// [`BACKGROUND_BATCHING_DELAY`]: a moment's staleness for a transaction per batch of
    /// commits instead of one per commit (with eight followers, most of a charge's database
    /// work was theirs). Anything that needs such a model current catches it up itself.
    fn batching_delay(&self) -> Duration {
        Duration::ZERO
    }

    /// A fast path for rebuilds from zero, if the projection has one ([`Rebuilder`]).
    fn rebuilder(&self) -> Option<Box<dyn Rebuilder>> {
        None
    }

    /// Applies one batch, in log order, inside the batch transaction (`search_path` is the
    /// projection's schema, then `public`).
    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;
}

/// A projection's fast path for a rebuild from zero. Nothing else writes the schema being
/// built, so what later events need (which `apply` reads back from its tables, batch by
/// batch) can stay in memory for the whole rebuild; and turning events into rows (CPU) is
/// split from writing them (the database), so the runtime overlaps the two: while batch
/// `n` is written, batch `n + 1` is prepared and batch `n + 2` read.
pub trait Rebuilder: Send {
    /// The rows one batch adds, in log order. Called for every batch, in order; no I/O.
    fn prepare(&mut self, events: &[RecordedEvent]) -> Result<Vec<BinaryCopy>, ProjectionError>;

    /// After the last batch: the rest of the tables (what was kept in memory), so that live
    /// batches (`apply`) go on from them.
    fn finish(self: Box<Self>) -> Result<Vec<BinaryCopy>, ProjectionError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: LogCursor,
    pub events_applied: i64,
    /// Events in the log after the checkpoint.
    pub lag_events: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// How often a waiter looks at the checkpoint table while the projection it waits for is
/// followed in this process (a safety net: this process's follower publishes every
/// checkpoint it commits or finds, another process's batches included).
const APPLIED_FALLBACK_CHECK_MS: u64 = 50;
/// While committed events wait behind an older open transaction, look again this often:
/// that transaction's commit may not write events, so no notification comes.
const HIDDEN_RETRY_MS: u64 = 2;

#[derive(Clone)]
pub struct ProjectionRuntime {
    pool: PgPool,
    published: Arc<Published>,
    slots: Arc<Slots>,
    /// The one connection on which this runtime's followers (clones share it) listen for
    /// the log's and the checkpoints' notifications; opened by the first follower.
    notifications: Arc<tokio::sync::OnceCell<Notifications>>,
}

/// When this runtime's background followers read: each its own phase of its batching delay,
/// so that their batches (each a burst of database work) take turns instead of arriving
/// together after the commit that woke them all.
struct Slots {
    epoch: tokio::time::Instant,
    started: std::sync::atomic::AtomicUsize,
}

impl Slots {
    fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            started: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The phase of the next follower with a delay: the k-th at frac(k·φ) of its period,
    /// which spreads any number of them evenly.
    fn next_phase(&self, period: Duration) -> Duration {
        const GOLDEN_RATIO_FRACTION: f64 = 0.618_033_988_749_895;
        let k = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        period.mul_f64((k as f64 * GOLDEN_RATIO_FRACTION).fract())
    }

    /// The first of the follower's slots (`epoch + phase + n·period`) at least half a
    /// period from `now`: a woken follower gathers commits for at least half its delay and
    /// on average for its delay, as it did when each slept its delay from its wake-up.
    fn next_slot(
        &self,
        now: tokio::time::Instant,
        phase: Duration,
        period: Duration,
    ) -> tokio::time::Instant {
        if period.is_zero() {
            return now;
        }
        let earliest = now + period / 2;
        let first = self.epoch + phase;
        if earliest <= first {
            return first;
        }
        let since = earliest.duration_since(first).as_nanos();
        let ahead = since.div_ceil(period.as_nanos()) * period.as_nanos();
        first + Duration::from_nanos(u64::try_from(ahead).unwrap_or(u64::MAX))
    }
}

/// The checkpoints this process's batches committed or found, by projection.
#[derive(Default)]
struct Published {
    projections: Mutex<HashMap<String, PublishedProjection>>,
}

struct PublishedProjection {
    checkpoint: tokio::sync::watch::Sender<LogCursor>,
    /// Followers of it running in this process.
    followers: usize,
    /// Consumers that ride along in its batches ([`Projection::rides_along`]), while their
    /// followers run in this process.
    riders: Vec<Arc<dyn Projection>>,
    /// Requests of this process waiting for it ([`ProjectionRuntime::wait_until_applied`]),
    /// and the signal that one started waiting.
    waiters: usize,
    waiter_arrived: Arc<tokio::sync::Notify>,
    /// The furthest commit a request of this process waits for: its follower reads as soon
    /// as it moves past the checkpoint, without waiting for that commit's notification to
    /// come back through the database.
    wanted: tokio::sync::watch::Sender<LogCursor>,
}

impl Published {
    fn with<T>(&self, name: &str, action: impl FnOnce(&mut PublishedProjection) -> T) -> T {
        let mut projections = self
            .projections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = projections
            .entry(name.to_string())
            .or_insert_with(|| PublishedProjection {
                checkpoint: tokio::sync::watch::Sender::new(LogCursor::START),
                followers: 0,
                riders: Vec::new(),
                waiters: 0,
                waiter_arrived: Arc::default(),
                wanted: tokio::sync::watch::Sender::new(LogCursor::START),
            });
        action(entry)
    }

    /// Records a committed checkpoint; checkpoints only move forward.
    fn publish(&self, name: &str, checkpoint: LogCursor) {
        self.with(name, |projection| {
            projection.checkpoint.send_if_modified(|current| {
                let newer = checkpoint > *current;
                if newer {
                    *current = checkpoint;
                }
                newer
            })
        });
    }

    fn subscribe(&self, name: &str) -> tokio::sync::watch::Receiver<LogCursor> {
        self.with(name, |projection| projection.checkpoint.subscribe())
    }

    fn wanted(&self, name: &str) -> tokio::sync::watch::Receiver<LogCursor> {
        self.with(name, |projection| projection.wanted.subscribe())
    }

    fn followed_here(&self, name: &str) -> bool {
        self.with(name, |projection| projection.followers > 0)
    }

    fn current(&self, name: &str) -> LogCursor {
        self.with(name, |projection| *projection.checkpoint.borrow())
    }

    fn riders(&self, name: &str) -> Vec<Arc<dyn Projection>> {
        self.with(name, |projection| projection.riders.clone())
    }

    /// The signal a waiter gives when it starts waiting, if none waits now.
    fn unawaited(&self, name: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.with(name, |projection| {
            (projection.waiters == 0).then(|| projection.waiter_arrived.clone())
        })
    }
}

/// Counts a request waiting for a projection while it waits, and wakes a follower that is
/// gathering commits until someone waits ([`Projection::gathering_until_awaited`]).
struct Waiting {
    published: Arc<Published>,
    name: String,
}

impl Waiting {
    /// A request starts waiting for `cursor`, a commit it knows of (its own).
    fn start(published: &Arc<Published>, name: &str, cursor: LogCursor) -> Self {
        published.with(name, |projection| {
            projection.waiters += 1;
            // A permit if the follower is not listening yet: its next gathering ends at once.
            projection.waiter_arrived.notify_one();
            projection.wanted.send_if_modified(|wanted| {
                let further = cursor > *wanted;
                if further {
                    *wanted = cursor;
                }
                further
            });
        });
        Self {
            published: published.clone(),
            name: name.to_string(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.published
            .with(&self.name, |projection| projection.waiters -= 1);
    }
}

/// Registers a follower's projection as a rider of its upstream while the follower runs.
struct Riding {
    published: Arc<Published>,
    upstream: &'static str,
    rider: &'static str,
}

impl Riding {
    fn start(published: &Arc<Published>, projection: &Arc<dyn Projection>) -> Option<Self> {
        let upstream = projection
            .reads_after()
            .filter(|_| projection.rides_along())?;
        published.with(upstream, |leader| leader.riders.push(projection.clone()));
        Some(Self {
            published: published.clone(),
            upstream,
            rider: projection.name(),
        })
    }
}

impl Drop for Riding {
    fn drop(&mut self) {
        self.published.with(self.upstream, |leader| {
            if let Some(index) = leader
                .riders
                .iter()
                .position(|rider| rider.name() == self.rider)
            {
                leader.riders.remove(index);
            }
        });
    }
}

/// Counts a follower while it runs.
struct Following {
    published: Arc<Published>,
    name: &'static str,
}

impl Following {
    fn start(published: &Arc<Published>, name: &'static str) -> Self {
        published.with(name, |projection| projection.followers += 1);
        Self {
            published: published.clone(),
            name,
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.published
            .with(self.name, |projection| projection.followers -= 1);
    }
}

/// What one batch did.
struct Batch {
    applied: usize,
    /// The checkpoint after it.
    checkpoint: LogCursor,
    /// Whether committed events after it are still hidden by an older open transaction
    /// (only asked of projections that read the log directly).
    hidden: bool,
}

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended('projection:' || $1, 0))";

/// `BEGIN`, [`LOCK_SQL`] and the batch's settings (the projection's schema first on the
/// search path, for `apply`; what the runtime reads itself names its schema) as one simple
/// query: a live batch starts in one round trip.
fn begin_locked_sql(projection: &dyn Projection) -> String {
    let mut sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({}); SET LOCAL search_path TO {}",
        lock_key_sql(projection.name()),
        search_path_sql(projection.name())
    );
    if projection.commits_asynchronously() {
        sql.push_str("; SET LOCAL synchronous_commit TO off");
    }
    sql
}

/// A projection's advisory lock key ([`LOCK_SQL`]'s) with its name inlined, for the simple
/// queries that take it (they cannot bind parameters).
fn lock_key_sql(name: &str) -> String {
    format!(
        "hashtextextended('projection:' || '{}', 0)",
        name.replace('\'', "''")
    )
}

/// The search path of a batch in `schema`: its tables first, then `public`.
fn search_path_sql(schema: &str) -> String {
    format!("{}, public", quoted(schema))
}

/// Whether a projection's tables were built by the code running now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// Built by another version (or before versions were stamped).
    Stale,
}

/// What built a projection's tables: its name, version, schema and indexes, hashed.
pub fn fingerprint(projection: &dyn Projection) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [
        projection.name().as_bytes(),
        projection.version().to_string().as_bytes(),
        projection.schema_sql().as_bytes(),
        projection.index_sql().as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

fn rebuild_schema(name: &str) -> String {
    format!("{name}__rebuild")
}

async fn set_search_path(connection: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "SET LOCAL search_path TO {}",
        search_path_sql(schema)
    ))
    .execute(connection)
    .await
    .map(|_| ())
}

/// The next events for `projection` after `after` (never past `upstream`, the checkpoint of
/// the projection it reads after, if any), and (for a projection reading the log directly)
/// whether committed events after them are still hidden by the horizon.
async fn read_batch(
    connection: &mut PgConnection,
    projection: &dyn Projection,
    after: LogCursor,
    upstream: Option<LogCursor>,
    limit: i64,
) -> Result<LogBatch, ProjectionError> {
    if let Some(until) = upstream {
        return Ok(LogBatch {
            events: event_store::log::read_after_until(connection, after, until, limit).await?,
            // Its upstream looks again for those; this one wakes on its upstream's commits.
            hidden: false,
        });
    }
    Ok(read_batch_after(connection, after, limit, !projection.needs_payload()).await?)
}

impl ProjectionRuntime {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            published: Arc::default(),
            slots: Arc::new(Slots::new()),
            notifications: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The runtime's listener, listening on the log's and the checkpoints' channels.
    async fn notifications(&self) -> Result<&Notifications, ProjectionError> {
        Ok(self
            .notifications
            .get_or_try_init(|| {
                Notifications::listen(&self.pool, &[NOTIFY_CHANNEL, CHECKPOINT_CHANNEL])
            })
            .await?)
    }

    /// Creates the projection's schema, tables and checkpoint unless they exist; says whether
    /// existing tables were built by this version of the projection.
    pub async fn ensure_created(
        &self,
        projection: &dyn Projection,
    ) -> Result<Freshness, ProjectionError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(LOCK_SQL)
            .bind(projection.name())
            .execute(&mut *transaction)
            .await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(projection.name())
                .fetch_one(&mut *transaction)
                .await?;
        let fingerprint = fingerprint(projection);
        let freshness = if exists {
            let stamped: Option<Option<String>> = sqlx::query_scalar(
                "SELECT schema_fingerprint FROM public.projection_checkpoints WHERE name = $1",
            )
            .bind(projection.name())
            .fetch_optional(&mut *transaction)
            .await?;
            if stamped.flatten().as_deref() == Some(fingerprint.as_str()) {
                Freshness::Current
            } else {
                Freshness::Stale
            }
        } else {
            create_schema(&mut transaction, projection, projection.name()).await?;
            set_search_path(&mut transaction, projection.name()).await?;
            sqlx::raw_sql(projection.index_sql())
                .execute(&mut *transaction)
                .await?;
            sqlx::query("SET LOCAL search_path TO public")
                .execute(&mut *transaction)
                .await?;
            // New tables start from the beginning of the log, whatever a dropped schema's
            // checkpoint said.
            sqlx::query("DELETE FROM public.projection_checkpoints WHERE name = $1")
                .bind(projection.name())
                .execute(&mut *transaction)
                .await?;
            Freshness::Current
        };
        sqlx::query(
            "INSERT INTO public.projection_checkpoints (name, schema_fingerprint) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(projection.name())
        .bind(&fingerprint)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(freshness)
    }

    /// [`Self::ensure_created`], then a rebuild from the log if the tables were built by
    /// another version of the projection. A projection that reads another's tables cannot be
    /// rebuilt: its stamp is renewed instead (its tables change through migrations).
    pub async fn ensure_current(
        &self,
        projection: &dyn Projection,
        on_progress: impl FnMut(u64, u64),
    ) -> Result<Freshness, ProjectionError> {
        let freshness = self.ensure_created(projection).await?;
        if freshness == Freshness::Current {
            return Ok(freshness);
        }
        if projection.reads_after().is_some() {
            sqlx::query(
                "UPDATE public.projection_checkpoints SET schema_fingerprint = $2 WHERE name = $1",
            )
            .bind(projection.name())
            .bind(fingerprint(projection))
            .execute(&self.pool)
            .await?;
            return Ok(freshness);
        }
        // One rebuild at a time (another process starting beside this one may have found it
        // stale too): the first rebuilds, the others find it current when they get the lock.
        let _lock = self.rebuild_lock(projection).await?;
        if self.ensure_created(projection).await? == Freshness::Current {
            return Ok(freshness);
        }
        tracing::warn!(
            projection = projection.name(),
            "its tables were built by another version: rebuilding it from the log"
        );
        self.rebuild_locked(projection, on_progress).await?;
        Ok(freshness)
    }

    /// Holds the projection's rebuild lock until the returned connection is dropped (it is
    /// detached from the pool, so dropping it closes it and the server releases the lock,
    /// whatever happened meanwhile).
    async fn rebuild_lock(
        &self,
        projection: &dyn Projection,
    ) -> Result<PgConnection, ProjectionError> {
        let mut connection = self.pool.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('projection-rebuild:' || $1, 0))")
            .bind(projection.name())
            .execute(&mut connection)
            .await?;
        Ok(connection)
    }

    /// Applies the next batch of up to `limit` events; returns how many it applied.
    pub async fn run_batch(
        &self,
        projection: &dyn Projection,
        limit: i64,
    ) -> Result<usize, ProjectionError> {
        Ok(self.batch(projection, limit).await?.applied)
    }

    /// One batch, and whether committed events after it are hidden behind the horizon.
    async fn batch(
        &self,
        projection: &dyn Projection,
        limit: i64,
    ) -> Result<Batch, ProjectionError> {
        let mut transaction = self.pool.begin_with(begin_locked_sql(projection)).await?;
        let (checkpoint, LogBatch { events, hidden }) = match read_consumer_batch(
            &mut transaction,
            projection.name(),
            projection.reads_after(),
            limit,
            !projection.needs_payload(),
        )
        .await?
        {
            Some(found) => (found.checkpoint, found.batch),
            // No checkpoint row yet (a projection never created): from the start.
            None => {
                let (checkpoint, upstream) = read_checkpoints(&mut transaction, projection).await?;
                let batch =
                    read_batch(&mut transaction, projection, checkpoint, upstream, limit).await?;
                (checkpoint, batch)
            }
        };
        // Committed already (perhaps by another process): a waiter here may stop waiting.
        self.published.publish(projection.name(), checkpoint);
        let Some(last) = events.last() else {
            transaction.rollback().await?;
            return Ok(Batch {
                applied: 0,
                checkpoint,
                hidden,
            });
        };
        let last = last.cursor();
        projection.apply(&mut transaction, &events).await?;
        let mut moved = vec![projection.name()];
        for rider in self.published.riders(projection.name()) {
            if carry(
                &mut transaction,
                projection,
                rider.as_ref(),
                checkpoint,
                &events,
            )
            .await?
            {
                moved.push(rider.name());
            }
        }
        write_checkpoints_and_notify(&mut transaction, &moved, last, events.len()).await?;
        transaction.commit().await?;
        // Riders first: a rider's follower woken by this batch finds itself level already.
        for name in moved.iter().rev() {
            self.published.publish(name, last);
        }
        Ok(Batch {
            applied: events.len(),
            checkpoint: last,
            hidden,
        })
    }

    /// Applies batches until the projection has caught up with the readable log.
    pub async fn catch_up(
        &self,
        projection: &dyn Projection,
        limit: i64,
    ) -> Result<u64, ProjectionError> {
        let mut total = 0u64;
        loop {
            let applied = self.run_batch(projection, limit).await?;
            total += applied as u64;
            if applied == 0 {
                return Ok(total);
            }
        }
    }

    /// Follows the log for ever: batches while there is work, then waits for a commit
    /// notification (or the poll interval). Returns only on error.
    ///
    /// A full batch is followed at once by the next; a short one means it caught up, so it
    /// waits. Notifications that arrived before a read are covered by it and dropped, so a
    /// burst of commits costs one read, not one each. A downstream consumer also wakes on
    /// its upstream's checkpoint published in this process.
    pub async fn follow(
        &self,
        projection: Arc<dyn Projection>,
        batch_events: i64,
        poll_interval_ms: u64,
    ) -> Result<(), ProjectionError> {
        let _following = Following::start(&self.published, projection.name());
        let _riding = Riding::start(&self.published, &projection);
        let upstream = projection.reads_after();
        let batching_delay = projection.batching_delay();
        let gathering = projection.gathering_until_awaited();
        let phase = if batching_delay.is_zero() {
            Duration::ZERO
        } else {
            self.slots.next_phase(batching_delay)
        };
        let mut upstream_checkpoint = upstream.map(|name| self.published.subscribe(name));
        // Woken by the log's commits, or by its upstream's (any process's) batches.
        let (channel, payload) = match upstream {
            Some(name) => (CHECKPOINT_CHANNEL, Some(name)),
            None => (NOTIFY_CHANNEL, None),
        };
        let mut notified = self.notifications().await?.watch(channel, payload);
        // A request of this process waiting for a commit it made wakes it at once.
        let mut wanted = self.published.wanted(projection.name());
        loop {
            notified.mark_unchanged();
            wanted.mark_unchanged();
            if let Some(checkpoint) = upstream_checkpoint.as_mut() {
                checkpoint.mark_unchanged();
            }
            let batch = self.batch(projection.as_ref(), batch_events).await?;
            if i64::try_from(batch.applied).unwrap_or(i64::MAX) >= batch_events {
                continue;
            }
            tracing::trace!(
                projection = projection.name(),
                checkpoint = %batch.checkpoint,
                applied = batch.applied,
                "caught up"
            );
            let wait = Duration::from_millis(if batch.hidden {
                HIDDEN_RETRY_MS
            } else {
                poll_interval_ms
            });
            let deadline = tokio::time::Instant::now() + wait;
            let woken = loop {
                let published = async {
                    match upstream_checkpoint.as_mut() {
                        Some(checkpoint) => {
                            if checkpoint.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    changed = notified.changed() => match changed {
                        // Its upstream's commit, when this process follows that too:
                        // `published` wakes it (this process's follower publishes any
                        // process's commits).
                        Ok(()) if upstream.is_some_and(|name| self.published.followed_here(name)) => {}
                        Ok(()) => break true,
                        // The listener is gone (the runtime is being dropped): poll.
                        Err(_) => {
                            tokio::time::sleep_until(deadline).await;
                            break false;
                        }
                    },
                    // A commit a request here waits for, beyond this checkpoint: read it now.
                    changed = wanted.changed() => match changed {
                        Ok(()) => {
                            // Copied out before the runtime's lock is taken: a borrow holds
                            // the channel's lock, and `Waiting::start` sends on this channel
                            // inside the runtime's lock (holding both the other way round
                            // deadlocked two threads).
                            let wanted_cursor = *wanted.borrow_and_update();
                            if wanted_cursor > self.published.current(projection.name()) {
                                break true;
                            }
                        }
                        // The runtime holds the sender while it follows: not reached. Poll.
                        Err(_) => {
                            tokio::time::sleep_until(deadline).await;
                            break false;
                        }
                    },
                    // Unless that batch carried this one along: nothing to read then.
                    () = published => {
                        if self.carried_level(projection.name(), upstream) {
                            continue;
                        }
                        break true;
                    }
                    () = tokio::time::sleep_until(deadline) => break false,
                }
            };
            if woken && !gathering.is_zero() {
                if let Some(arrived) = self.published.unawaited(projection.name()) {
                    tokio::select! {
                        () = arrived.notified() => {}
                        () = tokio::time::sleep(gathering) => {}
                    }
                }
            }
            if woken && !batching_delay.is_zero() {
                let slot = self
                    .slots
                    .next_slot(tokio::time::Instant::now(), phase, batching_delay);
                tokio::time::sleep_until(slot).await;
            }
        }
    }

    /// Whether `name`, reading after `upstream`, was carried to that one's checkpoint by its
    /// batches in this process.
    fn carried_level(&self, name: &str, upstream: Option<&str>) -> bool {
        upstream.is_some_and(|upstream| {
            self.published.followed_here(upstream)
                && self.published.current(name) >= self.published.current(upstream)
        })
    }

    /// Rebuilds from zero into a fresh schema and swaps it in. `on_progress(done, total)`
    /// reports events applied out of those readable when the rebuild started.
    pub async fn rebuild(
        &self,
        projection: &dyn Projection,
        on_progress: impl FnMut(u64, u64),
    ) -> Result<u64, ProjectionError> {
        let _lock = self.rebuild_lock(projection).await?;
        self.rebuild_locked(projection, on_progress).await
    }

    async fn rebuild_locked(
        &self,
        projection: &dyn Projection,
        mut on_progress: impl FnMut(u64, u64),
    ) -> Result<u64, ProjectionError> {
        if let Some(upstream) = projection.reads_after() {
            return Err(ProjectionError::Invariant {
                projection: projection.name(),
                reason: format!("it reads what {upstream} built and is not rebuilt"),
            });
        }
        self.ensure_created(projection).await?;
        let target = rebuild_schema(projection.name());
        {
            let mut transaction = self.pool.begin().await?;
            sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quoted(&target)
            ))
            .execute(&mut *transaction)
            .await?;
            create_schema(&mut transaction, projection, &target).await?;
            transaction.commit().await?;
        }
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE txid < pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&self.pool)
        .await?;
        let total = u64::try_from(total).unwrap_or(0);

        let mut cursor = LogCursor::START;
        let mut applied = 0u64;
        // Build while live reads and the live projection go on. A reader task fetches the
        // next batch while this one is applied (they need not share a transaction: nothing
        // here is visible until the swap).
        let (batches, mut incoming) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(1);
        let reader = {
            let pool = self.pool.clone();
            let payloads = projection.needs_payload();
            tokio::spawn(async move {
                let mut batches_read = std::pin::pin!(read_ahead(pool, payloads));
                let mut cursor = LogCursor::START;
                while let Some(events) = batches_read.try_next().await? {
                    let Some(last) = events.last() else { continue };
                    cursor = last.cursor();
                    if batches.send(events).await.is_err() {
                        break;
                    }
                }
                Ok::<LogCursor, ProjectionError>(cursor)
            })
        };
        if let Some(mut rebuilder) = projection.rebuilder() {
            // Prepared here, written by writer tasks, each batch in its own transaction (the
            // batches' rows are independent: the order they land in does not matter).
            let (to_writer, writes) = tokio::sync::mpsc::channel::<Vec<BinaryCopy>>(2);
            let writes = Arc::new(tokio::sync::Mutex::new(writes));
            let writer = {
                let mut writers = tokio::task::JoinSet::new();
                for _ in 0..REBUILD_WRITERS {
                    let pool = self.pool.clone();
                    let target = target.clone();
                    let writes = writes.clone();
                    writers.spawn(async move {
                        loop {
                            let next = writes.lock().await.recv().await;
                            let Some(copies) = next else { break };
                            write_rebuild_batch(&pool, &target, copies).await?;
                        }
                        Ok::<(), ProjectionError>(())
                    });
                }
                tokio::spawn(async move {
                    while let Some(written) = writers.join_next().await {
                        written.map_err(|error| ProjectionError::Invariant {
                            projection: "rebuild",
                            reason: format!("a rebuild writer task failed: {error}"),
                        })??;
                    }
                    Ok::<(), ProjectionError>(())
                })
            };
            let mut prepared = Ok(());
            while let Some(events) = incoming.recv().await {
                let Some(last) = events.last() else { continue };
                let last_cursor = last.cursor();
                let copies = match rebuilder.prepare(&events) {
                    Ok(copies) => copies,
                    Err(error) => {
                        prepared = Err(error);
                        break;
                    }
                };
                if to_writer.send(copies).await.is_err() {
                    break; // the writer failed: its error is reported below
                }
                cursor = last_cursor;
                applied += events.len() as u64;
                on_progress(applied, total.max(applied));
            }
            if prepared.is_ok() {
                match rebuilder.finish() {
                    Ok(copies) => {
                        let _ = to_writer.send(copies).await;
                    }
                    Err(error) => prepared = Err(error),
                }
            }
            drop(to_writer);
            drop(incoming);
            let written = writer.await.map_err(|error| ProjectionError::Invariant {
                projection: "rebuild",
                reason: format!("the rebuild's writer task failed: {error}"),
            })?;
            prepared?;
            written?;
        } else {
            while let Some(events) = incoming.recv().await {
                let Some(last) = events.last() else { continue };
                let last_cursor = last.cursor();
                let mut transaction = self.pool.begin().await?;
                // A crash loses the rebuild, never data: it restarts from zero into a fresh
                // schema, so these commits need not wait for the disk.
                sqlx::query("SET LOCAL synchronous_commit TO off")
                    .execute(&mut *transaction)
                    .await?;
                set_search_path(&mut transaction, &target).await?;
                projection.apply(&mut transaction, &events).await?;
                transaction.commit().await?;
                cursor = last_cursor;
                applied += events.len() as u64;
                on_progress(applied, total.max(applied));
            }
        }
        let read_to = reader.await.map_err(|error| ProjectionError::Invariant {
            projection: "rebuild",
            reason: format!("the rebuild's reader task failed: {error}"),
        })??;
        debug_assert_eq!(read_to, cursor, "the rebuild applied exactly what it read");
        // Secondary indexes are built once over the loaded tables, not row by row: each on
        // its own connection, all at once, with room to sort in memory.
        futures::future::try_join_all(
            projection
                .index_sql()
                .split(';')
                .map(str::trim)
                .filter(|statement| !statement.is_empty())
                .map(|statement| {
                    let target = &target;
                    async move {
                        let mut transaction = self.pool.begin().await?;
                        sqlx::query("SET LOCAL maintenance_work_mem TO '256MB'")
                            .execute(&mut *transaction)
                            .await?;
                        set_search_path(&mut transaction, target).await?;
                        sqlx::raw_sql(statement).execute(&mut *transaction).await?;
                        transaction.commit().await?;
                        Ok::<(), ProjectionError>(())
                    }
                }),
        )
        .await?;
        // Swap: hold the live projection's lock, catch up the last events, rename.
        let mut transaction = self.pool.begin().await?;
        sqlx::query(LOCK_SQL)
            .bind(projection.name())
            .execute(&mut *transaction)
            .await?;
        let upstream = match projection.reads_after() {
            Some(upstream) => Some(read_checkpoint(&mut transaction, upstream).await?),
            None => None,
        };
        loop {
            let events = read_batch(
                &mut transaction,
                projection,
                cursor,
                upstream,
                REBUILD_BATCH_EVENTS,
            )
            .await?
            .events;
            let Some(last) = events.last() else {
                break;
            };
            set_search_path(&mut transaction, &target).await?;
            projection.apply(&mut transaction, &events).await?;
            // The next read names `events`: back to the default path first.
            sqlx::query("SET LOCAL search_path TO public")
                .execute(&mut *transaction)
                .await?;
            cursor = last.cursor();
            applied += events.len() as u64;
        }
        let live = quoted(projection.name());
        let old = quoted(&format!("{}__old", projection.name()));
        for statement in [
            format!("DROP SCHEMA IF EXISTS {old} CASCADE"),
            format!("ALTER SCHEMA {live} RENAME TO {old}"),
            format!("ALTER SCHEMA {} RENAME TO {live}", quoted(&target)),
            format!("DROP SCHEMA {old} CASCADE"),
        ] {
            sqlx::query(&statement).execute(&mut *transaction).await?;
        }
        sqlx::query(
            "UPDATE public.projection_checkpoints \
             SET txid = $2::text::xid8, position = $3, events = $4, updated_at = now(), \
                 schema_fingerprint = $5 \
             WHERE name = $1",
        )
        .bind(projection.name())
        .bind(cursor.txid)
        .bind(cursor.position)
        .bind(i64::try_from(applied).unwrap_or(i64::MAX))
        .bind(fingerprint(projection))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        on_progress(applied, total.max(applied));
        Ok(applied)
    }

    /// Waits until `name` has applied the event at `cursor` (read-your-writes for the API:
    /// a write answers once a read would see it). Returns whether it did within `timeout`.
    ///
    /// When this process follows `name`, its batches' commits wake the waiter (the table is
    /// checked every [`APPLIED_FALLBACK_CHECK_MS`] as well); otherwise the checkpoint table
    /// is polled.
    pub async fn wait_until_applied(
        &self,
        name: &str,
        cursor: LogCursor,
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut published = self.published.subscribe(name);
        if *published.borrow_and_update() >= cursor {
            return Ok(true);
        }
        let _waiting = Waiting::start(&self.published, name, cursor);
        if self.published.followed_here(name) {
            loop {
                let check_at = deadline.min(
                    tokio::time::Instant::now() + Duration::from_millis(APPLIED_FALLBACK_CHECK_MS),
                );
                let woken = tokio::time::timeout_at(
                    check_at,
                    published.wait_for(|applied| *applied >= cursor),
                )
                .await
                // The borrowed value holds the channel's lock: release it at once.
                .is_ok_and(|waited| waited.is_ok());
                if woken {
                    return Ok(true);
                }
                if self.applied_in_table(name, cursor).await? {
                    return Ok(true);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
            }
        }
        let mut pause = Duration::from_millis(1);
        loop {
            if self.applied_in_table(name, cursor).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn applied_in_table(
        &self,
        name: &str,
        cursor: LogCursor,
    ) -> Result<bool, ProjectionError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM public.projection_checkpoints \
             WHERE name = $1 AND (txid, position) >= ($2::text::xid8, $3))",
        )
        .bind(name)
        .bind(cursor.txid)
        .bind(cursor.position)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn status(
        &self,
        projection: &dyn Projection,
    ) -> Result<ProjectionStatus, ProjectionError> {
        let row: Option<(i64, i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT txid::text::bigint, position, events, updated_at \
             FROM public.projection_checkpoints WHERE name = $1",
        )
        .bind(projection.name())
        .fetch_optional(&self.pool)
        .await?;
        let (txid, position, events_applied, updated_at) =
            row.unwrap_or((0, 0, 0, chrono::DateTime::<chrono::Utc>::UNIX_EPOCH));
        let checkpoint = LogCursor { txid, position };
        let lag_events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE (txid, position) > ($1::text::xid8, $2)",
        )
        .bind(checkpoint.txid)
        .bind(checkpoint.position)
        .fetch_one(&self.pool)
        .await?;
        Ok(ProjectionStatus {
            name: projection.name().to_string(),
            checkpoint,
            events_applied,
            lag_events,
            updated_at,
        })
    }
}

/// Batches of a rebuild read ahead.
const REBUILD_READS_IN_FLIGHT: usize = 3;
/// Connections writing a rebuild's batches at once.
const REBUILD_WRITERS: usize = 2;

/// The log from the start, in batches of [`REBUILD_BATCH_EVENTS`], in order, with up to
/// [`REBUILD_READS_IN_FLIGHT`] batches being read at once: where each batch ends is found
/// first from the log's index ([`event_store::log::cursor_after`]), so consecutive batches
/// can be fetched by several connections together. The last batch is whatever follows the
/// last full one.
fn read_ahead(
    pool: PgPool,
    payloads: bool,
) -> impl futures::Stream<Item = Result<Vec<RecordedEvent>, ProjectionError>> {
    use futures::{StreamExt, TryStreamExt};
    let ranges = {
        let pool = pool.clone();
        futures::stream::try_unfold(Some(LogCursor::START), move |from| {
            let pool = pool.clone();
            async move {
                let Some(from) = from else {
                    return Ok::<_, ProjectionError>(None);
                };
                let mut connection = pool.acquire().await?;
                let until =
                    event_store::log::cursor_after(&mut connection, from, REBUILD_BATCH_EVENTS)
                        .await?;
                Ok(Some(((from, until), until)))
            }
        })
    };
    ranges
        .map_ok(move |(from, until)| {
            let pool = pool.clone();
            async move {
                let mut connection = pool.acquire().await?;
                let events = match (until, payloads) {
                    (Some(until), _) => {
                        event_store::log::read_range_unhashed(
                            &mut connection,
                            from,
                            until,
                            REBUILD_BATCH_EVENTS,
                            payloads,
                        )
                        .await?
                    }
                    (None, true) => {
                        read_unhashed_after(&mut connection, from, REBUILD_BATCH_EVENTS).await?
                    }
                    (None, false) => {
                        event_store::log::read_headers_after(
                            &mut connection,
                            from,
                            REBUILD_BATCH_EVENTS,
                        )
                        .await?
                    }
                };
                Ok::<_, ProjectionError>(events)
            }
        })
        .try_buffered(REBUILD_READS_IN_FLIGHT)
        .boxed()
}

/// One batch of a rebuild's fast path, in its own transaction (not waiting for the disk: a
/// crash loses the rebuild, which starts again from zero, never data).
async fn write_rebuild_batch(
    pool: &PgPool,
    schema: &str,
    copies: Vec<BinaryCopy>,
) -> Result<(), ProjectionError> {
    if copies.iter().all(BinaryCopy::is_empty) {
        return Ok(());
    }
    let mut transaction = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit TO off")
        .execute(&mut *transaction)
        .await?;
    set_search_path(&mut transaction, schema).await?;
    for copy in copies {
        copy.send(&mut transaction).await?;
    }
    transaction.commit().await?;
    Ok(())
}

async fn create_schema(
    connection: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!("CREATE SCHEMA {}", quoted(schema)))
        .execute(&mut *connection)
        .await?;
    set_search_path(connection, schema).await?;
    sqlx::raw_sql(projection.schema_sql())
        .execute(&mut *connection)
        .await?;
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// The projection's checkpoint and, if it reads after another, that one's: one query.
async fn read_checkpoints(
    connection: &mut PgConnection,
    projection: &dyn Projection,
) -> Result<(LogCursor, Option<LogCursor>), ProjectionError> {
    let upstream = projection.reads_after();
    let names: Vec<&str> = std::iter::once(projection.name()).chain(upstream).collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT name, txid::text::bigint, position FROM public.projection_checkpoints \
         WHERE name = ANY($1)",
    )
    .bind(&names)
    .fetch_all(connection)
    .await?;
    let cursor_of = |name: &str| {
        rows.iter()
            .find(|(row_name, _, _)| row_name == name)
            .map_or(LogCursor::START, |(_, txid, position)| LogCursor {
                txid: *txid,
                position: *position,
            })
    };
    Ok((cursor_of(projection.name()), upstream.map(cursor_of)))
}

async fn read_checkpoint(
    connection: &mut PgConnection,
    name: &str,
) -> Result<LogCursor, ProjectionError> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT txid::text::bigint, position FROM public.projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(connection)
    .await?;
    Ok(row.map_or(LogCursor::START, |(txid, position)| LogCursor {
        txid,
        position,
    }))
}

/// Applies `rider` to `leader`'s batch in its transaction when the rider's checkpoint is
/// level with the one the batch started from and its lock is free; says whether it did.
/// Under a savepoint: a rider that cannot take the batch leaves it as it was, and its own
/// follower meets the trouble instead.
async fn carry(
    connection: &mut PgConnection,
    leader: &dyn Projection,
    rider: &dyn Projection,
    from: LogCursor,
    events: &[RecordedEvent],
) -> Result<bool, ProjectionError> {
    use sqlx::Row;
    if rider.needs_payload() && !leader.needs_payload() {
        return Ok(false);
    }
    // One simple query: the savepoint, then (level first, then the lock) the rider's schema
    // on the search path for its apply. The leader's statements after this one name theirs.
    let check = format!(
        "SAVEPOINT rider; \
         SELECT CASE WHEN txid = '{txid}'::xid8 AND position = {position} THEN \
             CASE WHEN pg_try_advisory_xact_lock({lock_key}) \
             THEN set_config('search_path', '{search_path}', true) IS NOT NULL ELSE false END \
         ELSE false END AS ready \
         FROM public.projection_checkpoints WHERE name = '{name}'",
        txid = from.txid,
        position = from.position,
        lock_key = lock_key_sql(rider.name()),
        search_path = search_path_sql(rider.name()).replace('\'', "''"),
        name = rider.name().replace('\'', "''"),
    );
    // Without arguments a query goes out as one simple query, several statements allowed.
    let rows = sqlx::Executor::fetch_all(&mut *connection, check.as_str()).await?;
    let ready = match rows.first() {
        Some(row) => row.try_get::<bool, _>("ready")?,
        None => false,
    };
    if !ready {
        return Ok(false);
    }
    match rider.apply(&mut *connection, events).await {
        Ok(()) => Ok(true),
        Err(error) => {
            tracing::warn!(
                projection = rider.name(),
                upstream = leader.name(),
                %error,
                "could not ride along; its own follower will apply the batch"
            );
            sqlx::Executor::execute(&mut *connection, "ROLLBACK TO SAVEPOINT rider").await?;
            Ok(false)
        }
    }
}

/// A live batch's checkpoints (its projection's and its riders') and their notifications on
/// [`CHECKPOINT_CHANNEL`], in one round trip.
async fn write_checkpoints_and_notify(
    connection: &mut PgConnection,
    names: &[&str],
    cursor: LogCursor,
    applied: usize,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "WITH checkpoint AS ( \
             INSERT INTO public.projection_checkpoints (name, txid, position, events, updated_at) \
             SELECT name, $2::text::xid8, $3, $4, now() FROM UNNEST($1::text[]) AS name \
             ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, \
                 position = EXCLUDED.position, \
                 events = projection_checkpoints.events + EXCLUDED.events, updated_at = now() \
         ) \
         SELECT pg_notify($5, name) FROM UNNEST($1::text[]) AS name",
    )
    .bind(names)
    .bind(cursor.txid)
    .bind(cursor.position)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .bind(CHECKPOINT_CHANNEL)
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn followers_take_distinct_phases_spread_over_the_period() {
        let slots = Slots::new();
        let mut phases: Vec<Duration> = (0..7).map(|_| slots.next_phase(PERIOD)).collect();
        phases.sort();
        let gaps: Vec<Duration> = phases.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let smallest = gaps.iter().min().copied().unwrap_or_default();
        // Seven followers at golden-ratio phases: evenly spread would be 1/7 of the period
        // apart; none is closer than 1/20 (the same phase for all would be 0).
        assert!(
            smallest >= PERIOD / 20,
            "phases {phases:?} crowd together (gap {smallest:?})"
        );
        assert!(phases.iter().all(|phase| *phase < PERIOD));
    }

    #[tokio::test]
    async fn a_slot_is_at_least_half_a_period_away_and_on_the_followers_phase() {
        let slots = Slots::new();
        let phase = Duration::from_millis(70);
        for offset_ms in [0u64, 1, 69, 70, 71, 169, 170, 171, 199, 200, 1_234] {
            let now = slots.epoch + Duration::from_millis(offset_ms);
            let slot = slots.next_slot(now, phase, PERIOD);
            let wait = slot.duration_since(now);
            assert!(
                wait >= PERIOD / 2 && wait < PERIOD + PERIOD / 2,
                "woken at {offset_ms} ms, waits {wait:?}"
            );
            let since_epoch = slot.duration_since(slots.epoch).as_millis();
            assert_eq!(
                since_epoch % PERIOD.as_millis(),
                70,
                "woken at {offset_ms} ms"
            );
        }
        assert_eq!(
            slots.next_slot(slots.epoch, phase, Duration::ZERO),
            slots.epoch
        );
    }
}
