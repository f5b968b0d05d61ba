//! Appending to streams and loading them back.

use sqlx::{PgConnection, PgPool};

use crate::record::{NewEvent, RecordedEvent, RECORDED_EVENT_COLUMNS};

/// Bound on the events one command may append: a command that wants more is a bug.
pub const MAX_EVENTS_PER_APPEND: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to one of the streams since it was loaded. The command layer
    /// reloads and retries.
    #[error("stream {stream} was changed concurrently (version {sequence} is taken)")]
    Conflict { stream: String, sequence: i64 },
    #[error("refusing to append {count} events at once (at most {MAX_EVENTS_PER_APPEND})")]
    TooMany { count: usize },
    #[error("event store error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("event metadata could not be serialised: {0}")]
    Metadata(#[from] serde_json::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Where each appended event landed: its place in the log and its stream version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub txid: i64,
    pub position: i64,
    pub sequence: i64,
}

impl Appended {
    pub fn cursor(&self) -> crate::log::LogCursor {
        crate::log::LogCursor {
            txid: self.txid,
            position: self.position,
        }
    }
}

/// How far into a stream's history to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Now,
    /// Events at or before this global position.
    Position(i64),
    /// Events recorded at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
}

#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends `events` inside the caller's transaction, so that whatever else the caller
    /// writes there (an idempotency record, say) commits with them or not at all. The
    /// insert trigger checks version continuity and fills in the hash chain.
    pub async fn append(
        connection: &mut PgConnection,
        events: &[NewEvent],
    ) -> Result<Vec<Appended>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(AppendError::TooMany {
                count: events.len(),
            });
        }
        let mut aggregate_types = Vec::with_capacity(events.len());
        let mut aggregate_ids = Vec::with_capacity(events.len());
        let mut sequences = Vec::with_capacity(events.len());
        let mut event_types = Vec::with_capacity(events.len());
        let mut event_versions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        let mut metadata = Vec::with_capacity(events.len());
        for event in events {
            aggregate_types.push(event.aggregate_type.as_str());
            aggregate_ids.push(event.aggregate_id.as_str());
            sequences.push(event.sequence);
            event_types.push(event.event_type.as_str());
            event_versions.push(event.event_version.as_str());
            payloads.push(event.payload.to_string());
            metadata.push(serde_json::to_string(&event.metadata)?);
        }
        let inserted: Result<Vec<(i64, i64, i64)>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT t, i, s, e, v, p::json, m::json \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) \
                  WITH ORDINALITY AS batch(t, i, s, e, v, p, m, n) \
             ORDER BY n \
             RETURNING txid::text::bigint, position, sequence",
        )
        .bind(&aggregate_types)
        .bind(&aggregate_ids)
        .bind(&sequences)
        .bind(&event_types)
        .bind(&event_versions)
        .bind(&payloads)
        .bind(&metadata)
        .fetch_all(&mut *connection)
        .await;
        match inserted {
            Ok(rows) => Ok(rows
                .into_iter()
                .map(|(txid, position, sequence)| Appended {
                    txid,
                    position,
                    sequence,
                })
                .collect()),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
                let first = &events[0];
                Err(AppendError::Conflict {
                    stream: format!("{}/{}", first.aggregate_type, first.aggregate_id),
                    sequence: first.sequence,
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A stream's events as the caller's transaction sees them (for a unit of work that
    /// decides on several streams and appends to them in the same transaction).
    pub async fn load_stream_in(
        connection: &mut PgConnection,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = sqlx::query_as(&format!(
            "SELECT {RECORDED_EVENT_COLUMNS} FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&mut *connection)
        .await?;
        Ok(events)
    }

    /// The events of many streams of one type as the caller's transaction sees them, in
    /// (id, version) order: a batch about to decide on all of them reads them in one query.
    pub async fn load_streams_in(
        connection: &mut PgConnection,
        aggregate_type: &str,
        aggregate_ids: &[&str],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if aggregate_ids.is_empty() {
            return Ok(Vec::new());
        }
        let events = sqlx::query_as(&format!(
            "SELECT {RECORDED_EVENT_COLUMNS} FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = ANY($2::text[]) \
             ORDER BY aggregate_id, sequence"
        ))
        .bind(aggregate_type)
        .bind(aggregate_ids)
        .fetch_all(&mut *connection)
        .await?;
        Ok(events)
    }

    /// The version of a stream (0 when it has no events), without reading its events.
    pub async fn stream_version_in(
        connection: &mut PgConnection,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<i64, StoreError> {
        // The newest row by the primary key, whatever the planner thinks of the table's
        // size (a `max()` over a long counter stream was seen scanning all of it).
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&mut *connection)
        .await?;
        Ok(version.unwrap_or(0))
    }

    /// Every event of one stream, in version order, as stored (not upcast).
    pub async fn load_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        as_of: AsOf,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (position_limit, time_limit) = match as_of {
            AsOf::Now => (None, None),
            AsOf::Position(position) => (Some(position), None),
            AsOf::Time(time) => (None, Some(time)),
        };
        let events = sqlx::query_as(&format!(
            "SELECT {RECORDED_EVENT_COLUMNS} FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 \
               AND ($3::bigint IS NULL OR position <= $3) \
               AND ($4::timestamptz IS NULL OR recorded_at <= $4) \
             ORDER BY sequence"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(position_limit)
        .bind(time_limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }
}
