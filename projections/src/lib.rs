//! Read models: everything people see is built here from the global log.
//!
//! A projection is a name, a handler and a checkpoint ([`runtime`]). Each owns one
//! PostgreSQL schema named after it, holding its tables; it consumes the log in batches and
//! commits each batch's effect together with its checkpoint, so its tables always equal
//! "the log up to the checkpoint", whatever crashes. Any projection can be rebuilt from zero
//! into a fresh schema and swapped in while reads continue.
//!
//! Depends on `event-store` (the log) and `domain` (event shapes). Must never write events
//! and never be read by the write side.

pub mod api_keys;
pub mod api_objects;
pub mod billing_schedule;
pub mod copy;
pub mod dashboard;
pub mod journal;
pub mod operators;
pub mod revenue;
pub mod runtime;
pub mod settlements;
pub mod stream_index;
pub mod stripe;

use std::sync::Arc;

pub use runtime::{Projection, ProjectionError, ProjectionRuntime, ProjectionStatus};

/// Every projection the system runs, in the order they are created. `public_url` is where
/// browsers reach the server (the `api` read model renders invoices' hosted URLs with it).
pub fn all(public_url: &str) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(stream_index::StreamIndex),
        Arc::new(api_keys::ApiKeys),
        Arc::new(api_objects::ApiObjects::new(public_url)),
        Arc::new(billing_schedule::BillingSchedule),
        Arc::new(operators::Operators),
        Arc::new(dashboard::Dashboard::default()),
        Arc::new(settlements::Settlements::default()),
        Arc::new(journal::Journal::default()),
    ]
}

/// The projection called `name`.
pub fn by_name(name: &str, public_url: &str) -> Option<Arc<dyn Projection>> {
    all(public_url)
        .into_iter()
        .find(|projection| projection.name() == name)
}
