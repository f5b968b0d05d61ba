//! cqrs-es's `PersistedEventRepository` over our events table, so that cqrs-es's own
//! `PersistedEventStore` and `CqrsFramework` can run aggregates on this store too.
//!
//! The write side of Calmony does not go through here: its commands append inside a
//! transaction that also holds the idempotency record (see the `commands` crate), which
//! neither this trait nor postgres-es's repository can express. This adapter exists for
//! tooling and for compatibility, and it writes the same rows the same way (through
//! [`EventStore::append`], so the trigger still chains hashes and checks versions).

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::PgPool;

use crate::metadata::EventMetadata;
use crate::record::{NewEvent, RecordedEvent, RECORDED_EVENT_COLUMNS};
use crate::store::{AppendError, AsOf, EventStore, StoreError};

#[derive(Clone)]
pub struct CqrsRepository {
    store: EventStore,
}

impl CqrsRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: EventStore::new(pool),
        }
    }
}

fn to_serialized(event: RecordedEvent) -> Result<SerializedEvent, PersistenceError> {
    let payload: Value = serde_json::from_str(&event.payload)
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    let metadata: Value = serde_json::from_str(&event.metadata)
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    Ok(SerializedEvent::new(
        event.aggregate_id,
        usize::try_from(event.sequence).unwrap_or(0),
        event.aggregate_type,
        event.event_type,
        event.event_version,
        payload,
        metadata,
    ))
}

fn store_error(error: StoreError) -> PersistenceError {
    match error {
        StoreError::Sql(error) => PersistenceError::ConnectionError(Box::new(error)),
    }
}

impl PersistedEventRepository for CqrsRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.store
            .load_stream(A::TYPE, aggregate_id, AsOf::Now)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(to_serialized)
            .collect()
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        Ok(events
            .into_iter()
            .filter(|event| event.sequence > last_sequence)
            .collect())
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let new_events = events
            .iter()
            .map(|event| {
                let metadata: EventMetadata = serde_json::from_value(event.metadata.clone())
                    .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
                Ok(NewEvent {
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
                    event_type: event.event_type.clone(),
                    event_version: event.event_version.clone(),
                    payload: event.payload.clone(),
                    metadata,
                })
            })
            .collect::<Result<Vec<_>, PersistenceError>>()?;
        let mut transaction = self
            .store
            .pool()
            .begin()
            .await
            .map_err(|error| PersistenceError::ConnectionError(Box::new(error)))?;
        match EventStore::append(&mut transaction, &new_events).await {
            Ok(_) => {}
            Err(AppendError::Conflict { .. }) => return Err(PersistenceError::OptimisticLockError),
            Err(error) => return Err(PersistenceError::UnknownError(Box::new(error))),
        }
        transaction
            .commit()
            .await
            .map_err(|error| PersistenceError::ConnectionError(Box::new(error)))
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        feed(events).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let events: Vec<RecordedEvent> = sqlx::query_as(&format!(
            "SELECT {RECORDED_EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 \
             ORDER BY aggregate_id, sequence"
        ))
        .bind(A::TYPE)
        .fetch_all(self.store.pool())
        .await
        .map_err(|error| PersistenceError::ConnectionError(Box::new(error)))?;
        let events = events
            .into_iter()
            .map(to_serialized)
            .collect::<Result<Vec<_>, _>>()?;
        feed(events).await
    }
}

async fn feed(events: Vec<SerializedEvent>) -> Result<ReplayStream, PersistenceError> {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        feed.push(Ok(event)).await?;
    }
    Ok(stream)
}
