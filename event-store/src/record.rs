//! Events on their way into the store and as they come back out of it.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::log::LogCursor;
use crate::metadata::EventMetadata;

/// One event to append. `sequence` is the stream version this event will have: the
/// aggregate's version when it was loaded, plus its index in the command's events, plus one.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: EventMetadata,
}

/// An event as stored. `payload` and `metadata` keep their exact stored JSON text, because
/// the hash chain is computed over those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: i64,
    pub txid: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl RecordedEvent {
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            txid: self.txid,
            position: self.position,
        }
    }

    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    pub fn metadata(&self) -> Result<EventMetadata, serde_json::Error> {
        serde_json::from_str(&self.metadata)
    }

    /// `"<aggregate_type>/<aggregate_id>"`, how auditors name a stream.
    pub fn stream_name(&self) -> String {
        format!("{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

/// The columns of [`RecordedEvent`], in its field order, for every query that builds one
/// (its `FromRow` reads them by position, not by name: rebuilds decode millions of rows).
pub(crate) const RECORDED_EVENT_COLUMNS: &str = "position, txid::text::bigint AS txid, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, payload::text AS payload, \
     metadata::text AS metadata, recorded_at, prev_hash, hash";

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for RecordedEvent {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            position: row.try_get(0)?,
            txid: row.try_get(1)?,
            aggregate_type: row.try_get(2)?,
            aggregate_id: row.try_get(3)?,
            sequence: row.try_get(4)?,
            event_type: row.try_get(5)?,
            event_version: row.try_get(6)?,
            payload: row.try_get(7)?,
            metadata: row.try_get(8)?,
            recorded_at: row.try_get(9)?,
            prev_hash: row.try_get(10)?,
            hash: row.try_get(11)?,
        })
    }
}
