//! A unit of work: decisions on several aggregates, committed together or not at all.
//!
//! Billing needs this: finalizing an invoice takes the project's next invoice number (a
//! stream of its own), renewing a subscription opens its invoice and payment intent, and a
//! charge's outcome settles the invoice and the subscription's status. Each aggregate still
//! decides alone, on its own stream's events; the unit only makes their events commit in
//! one transaction.
//!
//! Streams are read inside the unit's transaction and appended with the versions they were
//! read at, so a concurrent writer of any of them makes [`UnitOfWork::commit`] fail with
//! [`UnitError::Conflict`]; the caller starts a new unit and decides again (see
//! [`crate::CommandBus::unit`] and the retry loop in `billing`). Gateway calls never happen
//! inside a unit: a transaction is never held open across the network.

use std::any::Any;
use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use event_store::store::Appended;
use event_store::{AppendError, EventMetadata, EventStore, NewEvent, StoreError};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::execute::CommandBus;

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// Another writer changed a stream this unit decided on: decide again on fresh state.
    #[error("a stream changed under the unit of work")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("stored event {stream} v{sequence} does not load: {reason}")]
    Corrupt {
        stream: String,
        sequence: i64,
        reason: String,
    },
    #[error("event store refused the append: {0}")]
    Append(String),
}

/// Who owns a stream: the project and mode of its first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub project: String,
    pub livemode: bool,
}

struct Loaded {
    state: Box<dyn Any + Send>,
    /// The version the stream had when read, plus what this unit staged since.
    version: i64,
    owner: Option<Owner>,
}

pub struct UnitOfWork {
    bus: CommandBus,
    transaction: Transaction<'static, Postgres>,
    metadata: EventMetadata,
    streams: HashMap<(&'static str, String), Loaded>,
    staged: Vec<NewEvent>,
}

impl CommandBus {
    /// Starts a unit of work whose events will carry `metadata`.
    pub async fn unit(&self, metadata: &EventMetadata) -> Result<UnitOfWork, UnitError> {
        Ok(UnitOfWork {
            bus: self.clone(),
            transaction: self.store().pool().begin().await?,
            metadata: metadata.clone(),
            streams: HashMap::new(),
            staged: Vec::new(),
        })
    }
}

impl UnitOfWork {
    /// The aggregate as this unit sees it: as read from its stream, plus what the unit has
    /// already decided on it. A stream with no events is the aggregate's default.
    pub async fn load<A>(&mut self, id: &str) -> Result<&A, UnitError>
    where
        A: Aggregate + Send + 'static,
    {
        self.ensure_loaded::<A>(id).await?;
        self.state::<A>(id)
    }

    /// The owner of a stream (from its first event), if the stream exists.
    pub async fn owner<A>(&mut self, id: &str) -> Result<Option<Owner>, UnitError>
    where
        A: Aggregate + Send + 'static,
    {
        self.ensure_loaded::<A>(id).await?;
        Ok(self
            .streams
            .get(&(A::TYPE, id.to_string()))
            .and_then(|loaded| loaded.owner.clone()))
    }

    /// Lets `A` decide on `command`; its events are staged for the commit and applied to the
    /// unit's copy of the aggregate. `Ok(Err(rule))` is the aggregate refusing.
    pub async fn decide<A>(
        &mut self,
        id: &str,
        command: A::Command,
    ) -> Result<Result<Vec<A::Event>, A::Error>, UnitError>
    where
        A: Aggregate<Services = ()> + Send + 'static,
    {
        self.ensure_loaded::<A>(id).await?;
        let loaded = self
            .streams
            .get_mut(&(A::TYPE, id.to_string()))
            .ok_or(UnitError::Conflict)?;
        let state = loaded
            .state
            .downcast_mut::<A>()
            .ok_or_else(|| UnitError::Append(format!("{} loaded as another type", A::TYPE)))?;
        let sink = EventSink::default();
        if let Err(rule) = state.handle(command, &(), &sink).await {
            return Ok(Err(rule));
        }
        // The sink has applied each event to `state` already.
        let events = sink.collect().await;
        for event in &events {
            loaded.version += 1;
            self.staged.push(NewEvent {
                aggregate_type: A::TYPE.to_string(),
                aggregate_id: id.to_string(),
                sequence: loaded.version,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_value(event).map_err(|error| UnitError::Corrupt {
                    stream: format!("{}/{id}", A::TYPE),
                    sequence: loaded.version,
                    reason: error.to_string(),
                })?,
                metadata: self.metadata.clone(),
            });
        }
        Ok(Ok(events))
    }

    /// Appends `make(n)` as event `n` of a counter stream, where `n` is one more than the
    /// stream's version, holding the stream's lock until commit. Concurrent units therefore
    /// take the counter in turn instead of failing on it, and a unit that does not commit
    /// leaves no gap: the number and whatever it was issued for commit together.
    pub async fn next_in_sequence<E: DomainEvent>(
        &mut self,
        stream_type: &'static str,
        stream_id: &str,
        make: impl FnOnce(i64) -> E,
    ) -> Result<i64, UnitError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(format!("{stream_type}/{stream_id}"))
            .execute(&mut *self.transaction)
            .await?;
        let already_staged = self
            .staged
            .iter()
            .filter(|event| event.aggregate_type == stream_type && event.aggregate_id == stream_id)
            .count();
        let version =
            EventStore::stream_version_in(&mut self.transaction, stream_type, stream_id).await?;
        let next = version + i64::try_from(already_staged).unwrap_or(0) + 1;
        let event = make(next);
        self.staged.push(NewEvent {
            aggregate_type: stream_type.to_string(),
            aggregate_id: stream_id.to_string(),
            sequence: next,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(&event).map_err(|error| UnitError::Corrupt {
                stream: format!("{stream_type}/{stream_id}"),
                sequence: next,
                reason: error.to_string(),
            })?,
            metadata: self.metadata.clone(),
        });
        Ok(next)
    }

    /// The unit's transaction, for what must commit with the events (an idempotency
    /// record). Call after the decisions.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.transaction
    }

    /// A loaded stream's version, counting what this unit staged on it.
    pub fn version<A: Aggregate>(&self, id: &str) -> i64 {
        self.streams
            .get(&(A::TYPE, id.to_string()))
            .map_or(0, |loaded| loaded.version)
    }

    pub fn has_changes(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Appends everything staged and commits.
    pub async fn commit(mut self) -> Result<Vec<Appended>, UnitError> {
        let appended = if self.staged.is_empty() {
            Vec::new()
        } else {
            match EventStore::append(&mut self.transaction, &self.staged).await {
                Ok(appended) => appended,
                Err(AppendError::Conflict { .. }) => return Err(UnitError::Conflict),
                Err(AppendError::Sql(error)) => return Err(UnitError::Sql(error)),
                Err(other) => return Err(UnitError::Append(other.to_string())),
            }
        };
        self.transaction.commit().await?;
        Ok(appended)
    }

    async fn ensure_loaded<A>(&mut self, id: &str) -> Result<(), UnitError>
    where
        A: Aggregate + Send + 'static,
    {
        let key = (A::TYPE, id.to_string());
        if self.streams.contains_key(&key) {
            return Ok(());
        }
        let events = EventStore::load_stream_in(&mut self.transaction, A::TYPE, id).await?;
        let owner = events
            .first()
            .and_then(|event| event.metadata().ok())
            .map(|metadata| Owner {
                project: metadata.project,
                livemode: metadata.mode.is_some_and(|mode| mode.is_live()),
            });
        let (state, version) = self.bus.fold::<A>(&events).map_err(|error| match error {
            crate::CommandError::Corrupt {
                stream,
                sequence,
                reason,
            } => UnitError::Corrupt {
                stream,
                sequence,
                reason,
            },
            other => UnitError::Append(other.to_string()),
        })?;
        self.streams.insert(
            key,
            Loaded {
                state: Box::new(state),
                version,
                owner,
            },
        );
        Ok(())
    }

    fn state<A: Aggregate + 'static>(&self, id: &str) -> Result<&A, UnitError> {
        self.streams
            .get(&(A::TYPE, id.to_string()))
            .and_then(|loaded| loaded.state.downcast_ref::<A>())
            .ok_or_else(|| UnitError::Append(format!("{} {id} is not loaded", A::TYPE)))
    }
}

/// How many times a unit is decided again after losing a race.
pub const MAX_UNIT_ATTEMPTS: u32 = 12;

/// A short, growing pause before deciding again after a conflict.
pub async fn back_off(attempt: u32) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos() % 700)
        .unwrap_or(0);
    let pause_us = 300 * u64::from(attempt) + u64::from(jitter);
    tokio::time::sleep(std::time::Duration::from_micros(pause_us)).await;
}
