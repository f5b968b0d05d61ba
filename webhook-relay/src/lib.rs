//! The webhook relay: turns the log's Stripe events into signed HTTP deliveries to the
//! webhook endpoints of each project and mode, with retries.
//!
//! - [`fan_out`]: a consumer of the log with its own checkpoint (run by the projection
//!   runtime, after the `api` projection whose Stripe events it sends), which turns each
//!   event into durable delivery jobs in the same transaction as its checkpoint;
//! - [`delivery`]: workers that lease due jobs, sign ([`signature`]) and send them, record
//!   every attempt, and retry on a schedule ([`schedule`]);
//! - [`url_guard`]: where webhooks may go (no server-side request forgery);
//! - [`store`]: what the API reads and asks (deliveries log, pending webhooks, redelivery).
//!
//! Time comes from a [`scheduler::Clock`], so schedules are tested by moving a clock. Its
//! tables are `migrations/0004_webhooks.sql`. Depends on `event-store`, `projections` (the
//! runtime, and the `api` read model's Stripe events), `domain` (endpoint events) and
//! `commands` (to record an endpoint's disabling); never on HTTP.

pub mod delivery;
pub mod fan_out;
pub mod schedule;
pub mod signature;
pub mod store;
pub mod url_guard;

use std::sync::Arc;

use projections::ProjectionRuntime;
use scheduler::Clock;
use sqlx::PgPool;

pub use delivery::{DeliverySettings, DeliveryWorker, RelayError};
pub use fan_out::FanOut;
pub use schedule::RetrySchedule;
pub use url_guard::UrlGuard;

/// The prefix of delivery ids (`whdel_…`).
pub const DELIVERY_ID_PREFIX: &str = "whdel";

/// Everything a relay process runs with.
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    /// Log events per fan-out batch (and transaction).
    pub fan_out_batch_events: i64,
    /// How often the fan-out looks without a notification.
    pub fan_out_poll_interval_ms: u64,
    pub delivery: DeliverySettings,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            fan_out_batch_events: 1_000,
            fan_out_poll_interval_ms: 250,
            delivery: DeliverySettings::default(),
        }
    }
}

/// Creates the fan-out's checkpoint unless it exists: before [`run`], once per process.
pub async fn prepare(pool: PgPool) -> Result<(), RelayError> {
    let fan_out = FanOut::new(Arc::new(scheduler::SystemClock));
    ProjectionRuntime::new(pool)
        .ensure_created(&fan_out)
        .await?;
    Ok(())
}

/// Runs a relay for ever: the fan-out (one batch at a time across every relay, under its
/// lock) and a delivery worker. Returns only on error. Call [`prepare`] first. The `api`
/// projection must run somewhere (in `serve`, or `calmony projections run`).
pub async fn run(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    guard: UrlGuard,
    settings: RelaySettings,
) -> Result<(), RelayError> {
    run_beside(&ProjectionRuntime::new(pool), clock, guard, settings).await
}

/// As [`run`], on the runtime that follows the `api` projection in this process: the
/// fan-out then wakes as soon as an `api` batch commits, without a round trip through the
/// database's notifications.
pub async fn run_beside(
    runtime: &ProjectionRuntime,
    clock: Arc<dyn Clock>,
    guard: UrlGuard,
    settings: RelaySettings,
) -> Result<(), RelayError> {
    let fan_out = Arc::new(FanOut::new(clock.clone()));
    let worker = DeliveryWorker::new(runtime.pool().clone(), clock, &guard, settings.delivery)?;
    let following = async {
        runtime
            .follow(
                fan_out,
                settings.fan_out_batch_events,
                settings.fan_out_poll_interval_ms,
            )
            .await
            .map_err(RelayError::from)
    };
    tokio::try_join!(following, worker.run())?;
    Ok(())
}
