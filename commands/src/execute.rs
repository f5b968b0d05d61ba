//! Running one command against one aggregate.

use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::{Aggregate, DomainEvent};
use event_store::store::{Appended, AsOf};
use event_store::upcast::to_current_shape;
use event_store::{AppendError, EventMetadata, EventStore, NewEvent, RecordedEvent, StoreError};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// How many times a command is re-decided on fresh state after losing a race to another
/// writer of the same stream, before the conflict is reported.
pub const MAX_CONFLICT_RETRIES: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a business rule.
    #[error(transparent)]
    Rejected(E),
    #[error("the stream kept changing under the command ({attempts} attempts)")]
    Conflict { attempts: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Append(AppendError),
    #[error("stored event {stream} v{sequence} does not load: {reason}")]
    Corrupt {
        stream: String,
        sequence: i64,
        reason: String,
    },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// The outcome of a command that was decided and committed.
#[derive(Debug)]
pub struct Executed<A: Aggregate, T> {
    pub aggregate: A,
    pub events: Vec<A::Event>,
    pub appended: Vec<Appended>,
    /// The stream version after the command.
    pub version: i64,
    /// What the in-transaction step returned.
    pub output: T,
}

/// Work that must commit in the same transaction as the command's events (an idempotency
/// record, a uniqueness claim). It sees the aggregate after the command; it may run more
/// than once if the command is retried after a conflict, each time in a fresh transaction.
pub trait InTransaction<A: Aggregate>: Send {
    type Output: Send;
    type Error: From<sqlx::Error> + Send;

    fn run<'a>(
        &'a mut self,
        connection: &'a mut PgConnection,
        aggregate: &'a A,
        events: &'a [A::Event],
    ) -> BoxFuture<'a, Result<Self::Output, Self::Error>>;
}

/// Nothing else to write.
pub struct NoExtraWork;

impl<A: Aggregate> InTransaction<A> for NoExtraWork {
    type Output = ();
    type Error = sqlx::Error;

    fn run<'a>(
        &'a mut self,
        _connection: &'a mut PgConnection,
        _aggregate: &'a A,
        _events: &'a [A::Event],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(Clone)]
pub struct CommandBus {
    store: EventStore,
    upcasters: std::sync::Arc<Vec<Box<dyn EventUpcaster>>>,
}

impl CommandBus {
    pub fn new(store: EventStore, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        Self {
            store,
            upcasters: std::sync::Arc::new(upcasters),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Loads the aggregate as of now (or an earlier point) from its stream.
    pub async fn load<A: Aggregate>(
        &self,
        aggregate_id: &str,
        as_of: AsOf,
    ) -> Result<(A, i64), CommandError<A::Error>> {
        let events = self.store.load_stream(A::TYPE, aggregate_id, as_of).await?;
        self.fold(&events)
    }

    /// The aggregate a loaded stream describes, with its version: for callers that need
    /// the stored events themselves too (their metadata, say) without reading them twice.
    pub fn fold<A: Aggregate>(
        &self,
        events: &[RecordedEvent],
    ) -> Result<(A, i64), CommandError<A::Error>> {
        let mut aggregate = A::default();
        let mut version = 0;
        for recorded in events {
            aggregate.apply(self.decode::<A>(recorded)?);
            version = recorded.sequence;
        }
        Ok((aggregate, version))
    }

    fn decode<A: Aggregate>(
        &self,
        recorded: &RecordedEvent,
    ) -> Result<A::Event, CommandError<A::Error>> {
        let corrupt = |reason: String| CommandError::Corrupt {
            stream: recorded.stream_name(),
            sequence: recorded.sequence,
            reason,
        };
        let current = to_current_shape(recorded, &self.upcasters)
            .map_err(|error| corrupt(error.to_string()))?;
        serde_json::from_value(current.payload).map_err(|error| corrupt(error.to_string()))
    }

    /// Runs `command` and commits its events; nothing else.
    pub async fn execute<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: &EventMetadata,
    ) -> Result<Executed<A, ()>, CommandError<A::Error>>
    where
        A: Aggregate,
        A::Command: Clone,
    {
        self.execute_with(aggregate_id, command, services, metadata, NoExtraWork)
            .await
            .map_err(|error| match error {
                ExecuteError::Command(error) => error,
                ExecuteError::Extra(error) => CommandError::Sql(error),
            })
    }

    /// Runs `command`, then `extra` in the same transaction as the events.
    pub async fn execute_with<A, W>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: &EventMetadata,
        mut extra: W,
    ) -> Result<Executed<A, W::Output>, ExecuteError<A::Error, W::Error>>
    where
        A: Aggregate,
        A::Command: Clone,
        W: InTransaction<A>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut aggregate, version) = self.load::<A>(aggregate_id, AsOf::Now).await?;
            let sink = EventSink::default();
            aggregate
                .handle(command.clone(), services, &sink)
                .await
                .map_err(CommandError::Rejected)?;
            let events = sink.collect().await;
            let new_events = events
                .iter()
                .enumerate()
                .map(|(index, event)| {
                    Ok(NewEvent {
                        aggregate_type: A::TYPE.to_string(),
                        aggregate_id: aggregate_id.to_string(),
                        sequence: version + 1 + i64::try_from(index).unwrap_or(i64::MAX),
                        event_type: event.event_type(),
                        event_version: event.event_version(),
                        payload: serde_json::to_value(event).map_err(|error| {
                            CommandError::Corrupt {
                                stream: format!("{}/{aggregate_id}", A::TYPE),
                                sequence: version + 1,
                                reason: error.to_string(),
                            }
                        })?,
                        metadata: metadata.clone(),
                    })
                })
                .collect::<Result<Vec<_>, CommandError<A::Error>>>()?;

            let mut transaction = self.store.pool().begin().await.map_err(CommandError::Sql)?;
            let appended = match EventStore::append(&mut transaction, &new_events).await {
                Ok(appended) => appended,
                Err(AppendError::Conflict { .. }) if attempt <= MAX_CONFLICT_RETRIES => {
                    drop(transaction);
                    // A little jitter, so two losers do not collide again in lockstep.
                    let pause_us = 200 * u64::from(attempt) + u64::from(rand_jitter_us());
                    tokio::time::sleep(Duration::from_micros(pause_us)).await;
                    continue;
                }
                Err(AppendError::Conflict { .. }) => {
                    return Err(CommandError::Conflict { attempts: attempt }.into())
                }
                Err(error) => return Err(CommandError::Append(error).into()),
            };
            let output = extra
                .run(&mut transaction, &aggregate, &events)
                .await
                .map_err(ExecuteError::Extra)?;
            transaction.commit().await.map_err(CommandError::Sql)?;
            return Ok(Executed {
                aggregate,
                version: version + i64::try_from(events.len()).unwrap_or(0),
                events,
                appended,
                output,
            });
        }
    }
}

/// Cheap jitter without a random-number dependency: the sub-microsecond clock digits.
fn rand_jitter_us() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos() % 500)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error, X> {
    #[error(transparent)]
    Command(#[from] CommandError<E>),
    #[error("the in-transaction step failed")]
    Extra(X),
}

impl<E: std::error::Error, X> From<StoreError> for ExecuteError<E, X> {
    fn from(error: StoreError) -> Self {
        ExecuteError::Command(CommandError::Store(error))
    }
}
