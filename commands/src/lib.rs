//! The write side: load an aggregate from its stream, let it decide, append what it
//! decided, all-or-nothing, retrying on a concurrent writer.
//!
//! Owns command execution ([`execute`]) and, with the payment API, idempotency. Depends on
//! `domain` (the rules) and `event-store` (the storage); must never depend on projections
//! or HTTP: a command is decided on the stream's own events, never on a read model.

pub mod billing;
pub mod checkout;
pub mod execute;
pub mod idempotency;
pub mod ids;
pub mod operators;
pub mod payments;
pub mod project_settings;
pub mod replay;
pub mod settlements;
pub mod unit;

pub use execute::{CommandBus, CommandError, Executed};
