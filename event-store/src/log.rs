//! The global log: every event of every stream in one order that readers can follow
//! without ever skipping an event or seeing one twice.
//!
//! Positions come from an identity column, so they are handed out at insert time, not at
//! commit time: a transaction holding position 10 may commit after one holding 11. A reader
//! that remembered "I have read up to 11" would never see 10. So the log is ordered by
//! (writing transaction id, position) instead, and a reader only looks at events of
//! transactions older than the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`). Every transaction below that horizon has
//! finished, so no event can ever appear behind a cursor taken from this order.
//!
//! Writers are never serialised for this; a long-running writing transaction holds the
//! horizon back, which is why commands never keep a transaction open across a gateway call.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};

use crate::record::{RecordedEvent, RECORDED_EVENT_COLUMNS};
use crate::store::StoreError;

/// The channel the insert trigger notifies on every commit that wrote events.
pub const NOTIFY_CHANNEL: &str = "calmony_events";

/// Upper bound on one read of the log.
pub const MAX_BATCH_EVENTS: i64 = 100_000;

/// A place in the global log: after the event with this (txid, position). The start of the
/// log is `LogCursor::START`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogCursor {
    pub txid: i64,
    pub position: i64,
}

impl LogCursor {
    pub const START: LogCursor = LogCursor {
        txid: 0,
        position: 0,
    };
}

impl std::fmt::Display for LogCursor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}", self.txid, self.position)
    }
}

/// Reads the global log in order, only below the horizon of finished transactions.
#[derive(Clone)]
pub struct LogReader {
    pool: PgPool,
}

impl LogReader {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Up to `limit` events after `after`, in log order. An empty answer means "nothing
    /// readable yet", not "nothing will ever come".
    pub async fn read_all(
        &self,
        after: LogCursor,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        read_after(&mut connection, after, limit).await
    }

    /// Whether events exist after `after` that the horizon still hides (their transaction
    /// committed, but an older transaction is still running).
    pub async fn has_hidden_events(&self, after: LogCursor) -> Result<bool, StoreError> {
        let mut connection = self.pool.acquire().await?;
        has_hidden_events(&mut connection, after).await
    }

    /// Waits until every event committed so far is below the horizon (no older transaction
    /// anywhere on the server is still running), up to `timeout`. Returns whether it got
    /// there. The horizon is server-wide: a transaction open in another database holds it
    /// back too.
    pub async fn wait_until_final(&self, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.has_hidden_events(LogCursor::START).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A live subscription from `after`: batches as soon as they are readable.
    pub async fn subscribe(
        &self,
        after: LogCursor,
        settings: SubscriptionSettings,
    ) -> Result<Subscription, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(Subscription {
            reader: self.clone(),
            listener,
            cursor: after,
            settings,
        })
    }
}

/// Reads on the caller's connection, so a projection can read and write in one transaction.
///
/// The ORDER BY names `events.txid`: a bare `txid` would mean the output column (cast to
/// bigint for sqlx), which no index serves, and every read would sort the rest of the log.
pub async fn read_after(
    connection: &mut PgConnection,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read_columns_after(connection, RECORDED_EVENT_COLUMNS, after, limit).await
}

/// [`read_after`], selecting `columns` (one of the column lists that build a
/// [`RecordedEvent`]).
async fn read_columns_after(
    connection: &mut PgConnection,
    columns: &str,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let events = sqlx::query_as(&format!(
        "SELECT {columns} FROM public.events \
         WHERE (txid, position) > ($1::text::xid8, $2) \
           AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.txid, events.position \
         LIMIT $3"
    ))
    .bind(after.txid)
    .bind(after.position)
    .bind(limit.clamp(1, MAX_BATCH_EVENTS))
    .fetch_all(connection)
    .await?;
    Ok(events)
}

/// One read of the log for a consumer that follows it: the readable events, and whether
/// committed events after them are still hidden by the horizon (so the consumer should look
/// again soon rather than wait for a notification).
#[derive(Debug, Clone, Default)]
pub struct LogBatch {
    pub events: Vec<RecordedEvent>,
    pub hidden: bool,
}

/// A row of the log with the horizon of the statement that read it.
struct WithHorizon {
    event: RecordedEvent,
    horizon: i64,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for WithHorizon {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            event: RecordedEvent::from_row(row)?,
            horizon: row.try_get("horizon")?,
        })
    }
}

/// As [`read_after`] (or [`read_headers_after`] with `headers_only`), and in the same
/// statement whether committed events after the readable ones are hidden: one round trip
/// where a read and a [`has_hidden_events`] took two.
///
/// The statement reads past the horizon and stops at the first event at or above it; every
/// row carries the same horizon (`pg_current_snapshot()` is the statement's snapshot, the
/// one that decides which rows it sees), and rows come in (txid, position) order, so what
/// it keeps is exactly what the horizon-filtered read returns.
pub async fn read_batch_after(
    connection: &mut PgConnection,
    after: LogCursor,
    limit: i64,
    headers_only: bool,
) -> Result<LogBatch, StoreError> {
    let columns = if headers_only {
        HEADER_COLUMNS
    } else {
        RECORDED_EVENT_COLUMNS
    };
    let rows: Vec<WithHorizon> = sqlx::query_as(&format!(
        "SELECT {columns}, pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon \
         FROM public.events \
         WHERE (txid, position) > ($1::text::xid8, $2) \
         ORDER BY events.txid, events.position \
         LIMIT $3"
    ))
    .bind(after.txid)
    .bind(after.position)
    .bind(limit.clamp(1, MAX_BATCH_EVENTS))
    .fetch_all(connection)
    .await?;
    let readable = rows
        .iter()
        .take_while(|row| row.event.txid < row.horizon)
        .count();
    let hidden = readable < rows.len();
    let mut events: Vec<RecordedEvent> = rows.into_iter().map(|row| row.event).collect();
    events.truncate(readable);
    Ok(LogBatch { events, hidden })
}

/// A consumer's next batch, read with its checkpoint: see [`read_consumer_batch`].
#[derive(Debug, Clone)]
pub struct ConsumerBatch {
    /// The consumer's checkpoint as this statement found it.
    pub checkpoint: LogCursor,
    /// The checkpoint of the consumer it reads after, if any.
    pub upstream: Option<LogCursor>,
    pub batch: LogBatch,
}

/// A consumer's checkpoint (a row of `projection_checkpoints`) and the events after it, in
/// one statement: what a follower's batch otherwise reads in two round trips. With
/// `upstream` (the consumer reads what another one built) that one's checkpoint too, and the
/// events stop there; `hidden` is then always false (the upstream looks again for those).
/// `None` when the consumer has no checkpoint row yet.
///
/// The events come from a lateral subquery ordered by the log's index, once per checkpoint
/// row (one: `name` is the key); they are sorted again here, which costs nothing on rows
/// already in order and keeps the log order from depending on the plan.
pub async fn read_consumer_batch(
    connection: &mut PgConnection,
    name: &str,
    upstream: Option<&str>,
    limit: i64,
    headers_only: bool,
) -> Result<Option<ConsumerBatch>, StoreError> {
    let columns = if headers_only && upstream.is_none() {
        HEADER_COLUMNS
    } else {
        RECORDED_EVENT_COLUMNS
    };
    let (upstream_join, upstream_columns, upstream_bound) = match upstream {
        Some(_) => (
            "LEFT JOIN public.projection_checkpoints u ON u.name = $3",
            "u.txid::text::bigint AS upstream_txid, u.position AS upstream_position",
            "AND (events.txid, events.position) <= (u.txid, u.position) \
             AND events.txid < pg_snapshot_xmin(pg_current_snapshot())",
        ),
        None => (
            "",
            "NULL::bigint AS upstream_txid, NULL::bigint AS upstream_position",
            "",
        ),
    };
    let query = format!(
        "SELECT e.*, pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon, \
             c.txid::text::bigint AS checkpoint_txid, c.position AS checkpoint_position, \
             {upstream_columns} \
         FROM public.projection_checkpoints c {upstream_join} \
         LEFT JOIN LATERAL ( \
             SELECT {columns} FROM public.events \
             WHERE (events.txid, events.position) > (c.txid, c.position) {upstream_bound} \
             ORDER BY events.txid, events.position \
             LIMIT $2 \
         ) e ON true \
         WHERE c.name = $1"
    );
    let mut statement = sqlx::query_as::<_, ConsumerRow>(&query)
        .bind(name)
        .bind(limit.clamp(1, MAX_BATCH_EVENTS));
    if let Some(upstream) = upstream {
        statement = statement.bind(upstream);
    }
    let rows = statement.fetch_all(connection).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let checkpoint = first.checkpoint;
    let upstream_cursor = upstream.map(|_| first.upstream.unwrap_or(LogCursor::START));
    let horizon = first.horizon;
    let mut events: Vec<RecordedEvent> = rows.into_iter().filter_map(|row| row.event).collect();
    events.sort_by_key(|event| (event.txid, event.position));
    let readable = events
        .iter()
        .take_while(|event| event.txid < horizon)
        .count();
    let hidden = upstream.is_none() && readable < events.len();
    events.truncate(readable);
    Ok(Some(ConsumerBatch {
        checkpoint,
        upstream: upstream_cursor,
        batch: LogBatch { events, hidden },
    }))
}

/// A row of [`read_consumer_batch`]: the checkpoints, and an event unless there is none.
struct ConsumerRow {
    event: Option<RecordedEvent>,
    horizon: i64,
    checkpoint: LogCursor,
    upstream: Option<LogCursor>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ConsumerRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        // The lateral join's columns are all NULL when no event follows the checkpoint.
        let position: Option<i64> = row.try_get(0)?;
        let cursor = |txid: &str, position: &str| -> Result<Option<LogCursor>, sqlx::Error> {
            let txid: Option<i64> = row.try_get(txid)?;
            let position: Option<i64> = row.try_get(position)?;
            Ok(txid
                .zip(position)
                .map(|(txid, position)| LogCursor { txid, position }))
        };
        Ok(Self {
            event: match position {
                Some(_) => Some(RecordedEvent::from_row(row)?),
                None => None,
            },
            horizon: row.try_get("horizon")?,
            checkpoint: cursor("checkpoint_txid", "checkpoint_position")?
                .unwrap_or(LogCursor::START),
            upstream: cursor("upstream_txid", "upstream_position")?,
        })
    }
}

/// Whether events exist after `after` that the horizon still hides (their transaction
/// committed, but an older transaction is still running), on the caller's connection.
pub async fn has_hidden_events(
    connection: &mut PgConnection,
    after: LogCursor,
) -> Result<bool, StoreError> {
    let hidden: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM public.events \
         WHERE (txid, position) > ($1::text::xid8, $2) \
           AND txid >= pg_snapshot_xmin(pg_current_snapshot()))",
    )
    .bind(after.txid)
    .bind(after.position)
    .fetch_one(connection)
    .await?;
    Ok(hidden)
}

/// As [`read_after`], but never past `until` (inclusive): for a consumer that reads what
/// another consumer built from the log, and so must not run ahead of that one's checkpoint.
pub async fn read_after_until(
    connection: &mut PgConnection,
    after: LogCursor,
    until: LogCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let events = sqlx::query_as(&format!(
        "SELECT {RECORDED_EVENT_COLUMNS} FROM public.events \
         WHERE (txid, position) > ($1::text::xid8, $2) \
           AND (txid, position) <= ($3::text::xid8, $4) \
           AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.txid, events.position \
         LIMIT $5"
    ))
    .bind(after.txid)
    .bind(after.position)
    .bind(until.txid)
    .bind(until.position)
    .bind(limit.clamp(1, MAX_BATCH_EVENTS))
    .fetch_all(connection)
    .await?;
    Ok(events)
}

#[derive(Debug, Clone, Copy)]
pub struct SubscriptionSettings {
    pub batch_events: i64,
    /// Read again after this long even without a notification (a lost notification, a
    /// dropped listener connection).
    pub poll_interval_ms: u64,
    /// While committed events wait behind an older running transaction, look again this
    /// often: that transaction's commit may not write events, so no notification comes.
    pub hidden_retry_ms: u64,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Self {
            batch_events: 1_000,
            poll_interval_ms: 250,
            hidden_retry_ms: 2,
        }
    }
}

/// Follows the log live: LISTEN/NOTIFY wakes it, polling covers anything missed.
pub struct Subscription {
    reader: LogReader,
    listener: PgListener,
    cursor: LogCursor,
    settings: SubscriptionSettings,
}

impl Subscription {
    pub fn cursor(&self) -> LogCursor {
        self.cursor
    }

    /// The next non-empty batch, in log order; waits until there is one.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            let events = self
                .reader
                .read_all(self.cursor, self.settings.batch_events)
                .await?;
            if let Some(last) = events.last() {
                self.cursor = last.cursor();
                return Ok(events);
            }
            let wait = if self.reader.has_hidden_events(self.cursor).await? {
                Duration::from_millis(self.settings.hidden_retry_ms)
            } else {
                Duration::from_millis(self.settings.poll_interval_ms)
            };
            // A notification, a timeout and a listener error all lead to the same place: read
            // again. PgListener reconnects by itself on the next recv.
            match tokio::time::timeout(wait, self.listener.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "log listener failed; falling back to polling");
                    tokio::time::sleep(wait).await;
                }
            }
            // Drain notifications that piled up, so one read answers them all.
            while self.listener.next_buffered().is_some() {}
        }
    }
}

/// As [`read_after`], but without payloads and hashes (returned empty): for consumers that
/// only need to know which streams changed, when and by whom.
pub async fn read_headers_after(
    connection: &mut PgConnection,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read_columns_after(connection, HEADER_COLUMNS, after, limit).await
}

/// As [`read_after`], but without the hashes (returned empty): for consumers that read
/// payloads and leave the chain to the verifier (a projection's rebuild).
pub async fn read_unhashed_after(
    connection: &mut PgConnection,
    after: LogCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read_columns_after(connection, UNHASHED_COLUMNS, after, limit).await
}

/// The cursor of the `n`th readable event after `after`, if there are that many: where a
/// batch of `n` would end, found from the log's index alone (no rows are read), so that
/// several readers can fetch consecutive batches at once ([`read_range_unhashed`]).
pub async fn cursor_after(
    connection: &mut PgConnection,
    after: LogCursor,
    n: i64,
) -> Result<Option<LogCursor>, StoreError> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT txid::text::bigint, position FROM public.events \
         WHERE (txid, position) > ($1::text::xid8, $2) \
           AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.txid, events.position \
         OFFSET $3 LIMIT 1",
    )
    .bind(after.txid)
    .bind(after.position)
    .bind(n.max(1) - 1)
    .fetch_optional(connection)
    .await?;
    Ok(row.map(|(txid, position)| LogCursor { txid, position }))
}

/// The readable events after `after` up to `until` (inclusive; every event up to a cursor
/// [`cursor_after`] found stays readable), at most `limit` of them, without hashes, and
/// without payloads unless `payloads`.
pub async fn read_range_unhashed(
    connection: &mut PgConnection,
    after: LogCursor,
    until: LogCursor,
    limit: i64,
    payloads: bool,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let columns = if payloads {
        UNHASHED_COLUMNS
    } else {
        HEADER_COLUMNS
    };
    let events = sqlx::query_as(&format!(
        "SELECT {columns} FROM public.events \
         WHERE (txid, position) > ($1::text::xid8, $2) \
           AND (txid, position) <= ($3::text::xid8, $4) \
         ORDER BY events.txid, events.position \
         LIMIT $5"
    ))
    .bind(after.txid)
    .bind(after.position)
    .bind(until.txid)
    .bind(until.position)
    // The range holds at most `limit` events; saying so also makes the planner walk the
    // log's index rather than sort the table.
    .bind(limit.clamp(1, MAX_BATCH_EVENTS))
    .fetch_all(connection)
    .await?;
    Ok(events)
}

/// [`crate::record::RECORDED_EVENT_COLUMNS`] without hashes (returned empty).
const UNHASHED_COLUMNS: &str = "position, txid::text::bigint AS txid, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload::text AS payload, \
     metadata::text AS metadata, recorded_at, '\\x'::bytea AS prev_hash, '\\x'::bytea AS hash";

/// [`crate::record::RECORDED_EVENT_COLUMNS`] without payloads and hashes (returned empty).
const HEADER_COLUMNS: &str = "position, txid::text::bigint AS txid, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, '' AS payload, \
     metadata::text AS metadata, recorded_at, '\\x'::bytea AS prev_hash, '\\x'::bytea AS hash";
