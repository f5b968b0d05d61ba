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

/// Aggregates as a committed unit left them: the next unit of a batch (its outcomes after
/// its opening) is [seeded](UnitOfWork::seed) with them instead of reading them again.
#[derive(Default)]
pub struct Known {
    streams: HashMap<(&'static str, String), Loaded>,
}

impl Known {
    /// Splits off the aggregates of one type, for another unit.
    pub fn take_type(&mut self, aggregate_type: &str) -> Known {
        let keys: Vec<(&'static str, String)> = self
            .streams
            .keys()
            .filter(|(kind, _)| *kind == aggregate_type)
            .cloned()
            .collect();
        let mut taken = Known::default();
        for key in keys {
            if let Some(loaded) = self.streams.remove(&key) {
                taken.streams.insert(key, loaded);
            }
        }
        taken
    }
}

pub struct UnitOfWork {
    bus: CommandBus,
    transaction: Transaction<'static, Postgres>,
    metadata: EventMetadata,
    streams: HashMap<(&'static str, String), Loaded>,
    /// Counter streams this unit holds the lock of, with the version it has staged up to.
    counters: HashMap<(&'static str, String), i64>,
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
            counters: HashMap::new(),
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
        let key = (stream_type, stream_id.to_string());
        let next = match self.counters.get(&key) {
            // Locked and read earlier in this unit: the lock is still held.
            Some(version) => version + 1,
            None => {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
                    .bind(format!("{stream_type}/{stream_id}"))
                    .execute(&mut *self.transaction)
                    .await?;
                EventStore::stream_version_in(&mut self.transaction, stream_type, stream_id).await?
                    + 1
            }
        };
        self.counters.insert(key, next);
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

    /// Appends everything staged and commits, handing back the aggregates as this unit
    /// leaves them (see [`Known`]).
    pub async fn commit_keeping(mut self) -> Result<(Vec<Appended>, Known), UnitError> {
        let owner = Owner {
            project: self.metadata.project.clone(),
            livemode: self.metadata.mode.is_some_and(|mode| mode.is_live()),
        };
        let mut streams = std::mem::take(&mut self.streams);
        let appended = self.commit().await?;
        for loaded in streams.values_mut() {
            // A stream this unit began is now owned as its first event says.
            if loaded.owner.is_none() && loaded.version > 0 {
                loaded.owner = Some(owner.clone());
            }
        }
        Ok((appended, Known { streams }))
    }

    /// Takes in aggregates an earlier unit committed (those this unit has not read yet), so
    /// that deciding on them again reads nothing. Should any of their streams have moved on
    /// since, this unit's commit fails with [`UnitError::Conflict`] like any other race.
    pub fn seed(&mut self, known: Known) {
        for (key, loaded) in known.streams {
            self.streams.entry(key).or_insert(loaded);
        }
    }

    /// Reads the streams of many aggregates of one type in one query, so that a batch
    /// deciding on all of them does not pay a round trip for each. Streams already loaded
    /// keep what the unit knows of them.
    pub async fn preload<A>(&mut self, ids: &[&str]) -> Result<(), UnitError>
    where
        A: Aggregate + Send + 'static,
    {
        let mut wanted: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !self.streams.contains_key(&(A::TYPE, (*id).to_string())))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let events = EventStore::load_streams_in(&mut self.transaction, A::TYPE, &wanted).await?;
        let mut rest = events.as_slice();
        for id in wanted {
            let count = rest
                .iter()
                .take_while(|event| event.aggregate_id == id)
                .count();
            let (stream, after) = rest.split_at(count);
            rest = after;
            let loaded = self.loaded_from::<A>(stream)?;
            self.streams.insert((A::TYPE, id.to_string()), loaded);
        }
        Ok(())
    }

    /// Registers a stream this process has just named (a fresh random id) as empty, without
    /// reading it. Should it exist after all, the commit's insert collides with its first
    /// event and the unit fails with [`UnitError::Conflict`]: nothing is overwritten.
    pub fn begin_new<A>(&mut self, id: &str) -> Result<(), UnitError>
    where
        A: Aggregate + Send + 'static,
    {
        let key = (A::TYPE, id.to_string());
        if !self.streams.contains_key(&key) {
            let loaded = self.loaded_from::<A>(&[])?;
            self.streams.insert(key, loaded);
        }
        Ok(())
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
        let loaded = self.loaded_from::<A>(&events)?;
        self.streams.insert(key, loaded);
        Ok(())
    }

    fn loaded_from<A>(&self, events: &[event_store::RecordedEvent]) -> Result<Loaded, UnitError>
    where
        A: Aggregate + Send + 'static,
    {
        let owner = events
            .first()
            .and_then(|event| event.metadata().ok())
            .map(|metadata| Owner {
                project: metadata.project,
                livemode: metadata.mode.is_some_and(|mode| mode.is_live()),
            });
        let (state, version) = self.bus.fold::<A>(events).map_err(|error| match error {
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
        Ok(Loaded {
            state: Box::new(state),
            version,
            owner,
        })
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
