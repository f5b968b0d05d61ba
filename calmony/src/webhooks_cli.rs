//! `calmony webhooks run | status`, and the relay's settings (shared with `serve`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use event_store::database::Database;
use projections::ProjectionRuntime;
use webhook_relay::{DeliverySettings, FanOut, RelaySettings, UrlGuard};

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Bound on connecting to a webhook endpoint.
    #[arg(
        long,
        env = "CALMONY_WEBHOOK_CONNECT_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub webhook_connect_timeout_ms: u64,

    /// Bound on a whole delivery attempt (connect, send, read the response's start).
    #[arg(long, env = "CALMONY_WEBHOOK_TIMEOUT_MS", default_value_t = 15_000)]
    pub webhook_timeout_ms: u64,

    /// How long a relay holds a delivery it is sending; a crashed relay's deliveries are
    /// taken over after this. Must exceed the timeout.
    #[arg(long, env = "CALMONY_WEBHOOK_LEASE_MS", default_value_t = 60_000)]
    pub webhook_lease_ms: u64,

    /// Webhook requests in flight per relay.
    #[arg(long, env = "CALMONY_WEBHOOK_CONCURRENCY", default_value_t = 64)]
    pub webhook_concurrency: usize,

    /// How often a relay looks for retries that fell due.
    #[arg(long, env = "CALMONY_WEBHOOK_POLL_MS", default_value_t = 500)]
    pub webhook_poll_ms: u64,
}

impl RelayArgs {
    pub fn settings(&self) -> RelaySettings {
        RelaySettings {
            delivery: DeliverySettings {
                connect_timeout_ms: self.webhook_connect_timeout_ms,
                timeout_ms: self.webhook_timeout_ms,
                lease_ms: self.webhook_lease_ms,
                concurrency: self.webhook_concurrency.clamp(1, 1_024),
                poll_interval_ms: self.webhook_poll_ms.max(10),
                ..DeliverySettings::default()
            },
            ..RelaySettings::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Run a webhook relay (fan-out and delivery) without the HTTP server. Any number may
    /// run beside `serve` and each other.
    Run {
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// The relay's checkpoint and lag, and deliveries by state.
    Status,
}

pub async fn run(database: &Database, command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::Run { relay } => {
            let settings = relay.settings();
            let pool = database.pool.clone();
            webhook_relay::prepare(pool.clone()).await?;
            // Tests and scripts wait for this line.
            println!("webhook relay running");
            tokio::select! {
                ran = webhook_relay::run(pool, Arc::new(scheduler::SystemClock), UrlGuard::default(), settings) => ran?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        WebhooksCommand::Status => {
            let runtime = ProjectionRuntime::new(database.pool.clone());
            let fan_out = FanOut::new(Arc::new(scheduler::SystemClock));
            runtime.ensure_created(&fan_out).await?;
            let status = runtime.status(&fan_out).await?;
            println!(
                "fan-out checkpoint {} ({} events fanned out, {} behind the log)",
                status.checkpoint, status.events_applied, status.lag_events
            );
            let counts: Vec<(String, i64)> = sqlx::query_as(
                "SELECT state, count(*) FROM webhook_deliveries GROUP BY state ORDER BY state",
            )
            .fetch_all(&database.pool)
            .await?;
            for (state, count) in counts {
                println!("{state:<10} {count:>12}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
