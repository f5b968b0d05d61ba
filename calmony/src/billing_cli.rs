//! `calmony billing run`: one billing run now (renewals, dunning retries, expiries due by
//! the wall clock, and work on test clocks due by theirs), beside or instead of the runs
//! `calmony serve` makes every `--billing-interval-seconds`. Safe next to running servers:
//! jobs are leased and each is exactly-once in its aggregate.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use commands::billing::BillingService;
use commands::payments::{Gateways, PaymentService};
use commands::CommandBus;
use event_store::database::Database;
use event_store::EventStore;
use projections::ProjectionRuntime;
use scheduler::billing::{BillingRunner, Scope};

use crate::gateway_config::{client_config, GatewayArgs};

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Do everything due now, then exit (prints what was done as JSON).
    Run {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Jobs worked on at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

pub async fn run(database: &Database, command: BillingCommand) -> anyhow::Result<ExitCode> {
    let BillingCommand::Run {
        gateway,
        concurrency,
    } = command;
    let pool = database.pool.clone();
    let runtime = ProjectionRuntime::new(pool.clone());
    runtime
        .ensure_current(&projections::billing_schedule::BillingSchedule, |_, _| {})
        .await?;
    let Some(test_url) = gateway.cardstream_test_url.as_deref() else {
        anyhow::bail!(
            "set --cardstream-test-url (CALMONY_CARDSTREAM_TEST_URL): renewals charge stored cards, which only the gateway that tokenised them knows"
        );
    };
    let gateways = Gateways {
        test: cardstream::Client::new(client_config(
            test_url,
            &gateway.cardstream_test_merchant_id,
            &gateway.cardstream_test_secret,
        ))?,
        live: gateway
            .live_config()
            .map(cardstream::Client::new)
            .transpose()?,
        public_url: String::new(),
        crash_after_approval: false,
        crash_in_checkout_return: None,
    };
    let bus = CommandBus::new(EventStore::new(pool.clone()), domain::upcasters::all());
    let billing = BillingService::new(PaymentService::new(bus, gateways));
    let runner = BillingRunner::new(
        pool,
        billing,
        runtime,
        Arc::new(scheduler::SystemClock),
        concurrency,
    );
    let report = runner.run_due(Scope::All).await?;
    println!(
        "{}",
        serde_json::json!({
            "renewed": report.renewed,
            "retried": report.retried,
            "expired": report.expired,
            "already_done": report.already_done,
            "failed": report.failed,
        })
    );
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
