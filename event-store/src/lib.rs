//! The event store: PostgreSQL as an append-only, hash-chained log of every state change.
//!
//! Owns the `events`, `ledger_seals` and `projection_checkpoints` tables (see
//! `migrations/`), appending to streams with optimistic concurrency, loading streams (with
//! upcasting), reading the global log in a gap-free order ([`log`]), sealing it ([`seal`]),
//! verifying it ([`verify`]), and starting the database itself ([`database`],
//! [`managed_postgres`]).
//!
//! It must never depend on `domain` or any business crate: it stores serialized events and
//! knows nothing of what they mean.

pub mod chain;
pub mod database;
pub mod log;
pub mod managed_postgres;
pub mod metadata;
pub mod notifications;
pub mod record;
pub mod repository;
pub mod seal;
pub mod store;
#[cfg(feature = "test-harness")]
pub mod test_harness;
pub mod upcast;
pub mod verify;

pub use log::{LogCursor, LogReader, Subscription};
pub use metadata::{EventMetadata, Mode};
pub use record::{NewEvent, RecordedEvent};
pub use store::{AppendError, EventStore, StoreError};
