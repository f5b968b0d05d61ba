//! The stream index: one row per stream (type, id, project, version, event count, first and
//! last position and time). The auditor tools list and find streams with it.
//!
//! `event_count` is incremented per event while `version` is the highest version seen, so
//! an event applied twice (or skipped) shows as `event_count != version`: the exactly-once
//! property of the runtime is visible in this table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use event_store::{EventMetadata, RecordedEvent};
use sqlx::PgConnection;

use crate::runtime::{Projection, ProjectionError};

pub struct StreamIndex;

pub const NAME: &str = "stream_index";

struct StreamSummary {
    project: Option<String>,
    version: i64,
    event_count: i64,
    first_position: i64,
    last_position: i64,
    first_recorded_at: DateTime<Utc>,
    last_recorded_at: DateTime<Utc>,
}

#[async_trait::async_trait]
impl Projection for StreamIndex {
    /// Background: read by `calmony ledger`, which catches it up first.
    fn batching_delay(&self) -> std::time::Duration {
        crate::runtime::BACKGROUND_BATCHING_DELAY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE streams (
            aggregate_type    text        NOT NULL,
            aggregate_id      text        NOT NULL,
            project           text,
            version           bigint      NOT NULL,
            event_count       bigint      NOT NULL,
            first_position    bigint      NOT NULL,
            last_position     bigint      NOT NULL,
            first_recorded_at timestamptz NOT NULL,
            last_recorded_at  timestamptz NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id)
        );"
    }

    fn index_sql(&self) -> &'static str {
        "CREATE INDEX streams_by_project ON streams (project, aggregate_type);"
    }

    fn needs_payload(&self) -> bool {
        false
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // Fold the batch per stream first: one upsert row per stream, not per event.
        let mut summaries: HashMap<(&str, &str), StreamSummary> = HashMap::new();
        for event in events {
            let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
            let summary = summaries.entry(key).or_insert_with(|| StreamSummary {
                project: None,
                version: 0,
                event_count: 0,
                first_position: event.position,
                last_position: event.position,
                first_recorded_at: event.recorded_at,
                last_recorded_at: event.recorded_at,
            });
            if event.sequence == 1 {
                let metadata: EventMetadata = event
                    .metadata()
                    .map_err(|error| ProjectionError::bad_event(event, error))?;
                summary.project = Some(metadata.project);
            }
            summary.version = summary.version.max(event.sequence);
            summary.event_count += 1;
            summary.first_position = summary.first_position.min(event.position);
            summary.last_position = summary.last_position.max(event.position);
            summary.first_recorded_at = summary.first_recorded_at.min(event.recorded_at);
            summary.last_recorded_at = summary.last_recorded_at.max(event.recorded_at);
        }
        let count = summaries.len();
        let mut types = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        let mut projects = Vec::with_capacity(count);
        let mut versions = Vec::with_capacity(count);
        let mut counts = Vec::with_capacity(count);
        let mut first_positions = Vec::with_capacity(count);
        let mut last_positions = Vec::with_capacity(count);
        let mut first_times = Vec::with_capacity(count);
        let mut last_times = Vec::with_capacity(count);
        for ((aggregate_type, aggregate_id), summary) in summaries {
            types.push(aggregate_type);
            ids.push(aggregate_id);
            projects.push(summary.project);
            versions.push(summary.version);
            counts.push(summary.event_count);
            first_positions.push(summary.first_position);
            last_positions.push(summary.last_position);
            first_times.push(summary.first_recorded_at);
            last_times.push(summary.last_recorded_at);
        }
        sqlx::query(
            "INSERT INTO streams AS s (aggregate_type, aggregate_id, project, version, event_count, \
                 first_position, last_position, first_recorded_at, last_recorded_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
                 $6::bigint[], $7::bigint[], $8::timestamptz[], $9::timestamptz[]) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                 project = COALESCE(s.project, EXCLUDED.project), \
                 version = GREATEST(s.version, EXCLUDED.version), \
                 event_count = s.event_count + EXCLUDED.event_count, \
                 first_position = LEAST(s.first_position, EXCLUDED.first_position), \
                 last_position = GREATEST(s.last_position, EXCLUDED.last_position), \
                 first_recorded_at = LEAST(s.first_recorded_at, EXCLUDED.first_recorded_at), \
                 last_recorded_at = GREATEST(s.last_recorded_at, EXCLUDED.last_recorded_at)",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&projects)
        .bind(&versions)
        .bind(&counts)
        .bind(&first_positions)
        .bind(&last_positions)
        .bind(&first_times)
        .bind(&last_times)
        .execute(connection)
        .await?;
        Ok(())
    }
}

/// A stream whose index remembers more events than the log now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VanishedEvents {
    pub stream: String,
    pub indexed_version: i64,
    pub stored_version: i64,
}

/// Streams whose indexed version is above their stored one: events that were in the log
/// when the index applied them and are gone now. This catches a deleted tail event even
/// before the sealer has sealed it (the index is built independently, as the log grows).
pub async fn vanished_events(pool: &sqlx::PgPool) -> Result<Vec<VanishedEvents>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT s.aggregate_type, s.aggregate_id, s.version, \
                coalesce((SELECT max(e.sequence) FROM events e \
                          WHERE e.aggregate_type = s.aggregate_type AND e.aggregate_id = s.aggregate_id), 0) AS stored \
         FROM stream_index.streams s \
         WHERE s.version > coalesce((SELECT max(e.sequence) FROM events e \
                          WHERE e.aggregate_type = s.aggregate_type AND e.aggregate_id = s.aggregate_id), 0) \
         ORDER BY s.last_position",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(aggregate_type, aggregate_id, indexed_version, stored_version)| VanishedEvents {
                stream: format!("{aggregate_type}/{aggregate_id}"),
                indexed_version,
                stored_version,
            },
        )
        .collect())
}

/// One stream as the auditor lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StreamRow {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub project: Option<String>,
    pub version: i64,
    pub first_recorded_at: DateTime<Utc>,
    pub last_recorded_at: DateTime<Utc>,
}

/// Streams, optionally of one project and one type, most recently changed first.
pub async fn list_streams(
    pool: &sqlx::PgPool,
    project: Option<&str>,
    aggregate_type: Option<&str>,
    limit: i64,
) -> Result<Vec<StreamRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, project, version, first_recorded_at, last_recorded_at \
         FROM stream_index.streams \
         WHERE ($1::text IS NULL OR project = $1) AND ($2::text IS NULL OR aggregate_type = $2) \
         ORDER BY last_position DESC LIMIT $3",
    )
    .bind(project)
    .bind(aggregate_type)
    .bind(limit.clamp(1, 100_000))
    .fetch_all(pool)
    .await
}
