//! `calmony serve`: the HTTP API, every projection following the log, the sealer, the
//! recovery of charges left open by a crash, the webhook relay, and (unless configured
//! otherwise) the Cardstream simulator on loopback for test mode.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use commands::billing::BillingService;
use commands::idempotency::{IdempotencyStore, DEFAULT_LEASE_MS};
use commands::payments::{Gateways, PaymentService};
use commands::CommandBus;
use event_store::database::Database;
use event_store::seal::Sealer;
use event_store::EventStore;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;
use read_api::http::rate_limit::RateLimitDefaults;
use scheduler::sealer::SealerSettings;

use crate::gateway_config::{client_config, GatewayArgs};
use crate::settlements_cli::GriffinArgs;
use crate::webhooks_cli::RelayArgs;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CALMONY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// The address browsers reach this server on (3-D Secure returns, hosted pages).
    /// Default: http://<addr>.
    #[arg(long, env = "CALMONY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// How often the sealer seals the log.
    #[arg(long, env = "CALMONY_SEAL_INTERVAL_MS", default_value_t = 5_000)]
    pub seal_interval_ms: u64,

    /// Requests per second per live key.
    #[arg(long, env = "CALMONY_RATE_LIMIT_LIVE", default_value_t = 100)]
    pub rate_limit_live: u32,

    /// Requests per second per test key.
    #[arg(long, env = "CALMONY_RATE_LIMIT_TEST", default_value_t = 25)]
    pub rate_limit_test: u32,

    /// How long charge attempts may stay open before the recovery worker asks the gateway.
    #[arg(long, env = "CALMONY_RECOVERY_AFTER_MS", default_value_t = 10_000)]
    pub recovery_after_ms: u64,

    /// How long an idempotency key stays claimed by a request that never finished (a
    /// crash) before a retry may take it over. Longer than any request may run.
    #[arg(long, env = "CALMONY_IDEMPOTENCY_LEASE_MS", default_value_t = DEFAULT_LEASE_MS)]
    pub idempotency_lease_ms: u64,

    /// Run a webhook relay in this process (more can run with `calmony webhooks run`).
    #[arg(
        long,
        env = "CALMONY_WEBHOOKS_RELAY",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub webhooks_relay: bool,

    #[command(flatten)]
    pub relay: RelayArgs,

    /// Seconds between billing runs (renewals, dunning retries, expiries).
    #[arg(
        long,
        env = "CALMONY_BILLING_INTERVAL_SECONDS",
        default_value_t = 3_600
    )]
    pub billing_interval_seconds: u64,

    /// How long a customer portal link (`billing_portal.session.url`) works, in seconds.
    #[arg(
        long,
        env = "CALMONY_PORTAL_SESSION_SECONDS",
        default_value_t = read_api::pages::portal::session::DEFAULT_SESSION_SECONDS,
        value_parser = clap::value_parser!(i64).range(1..=86_400)
    )]
    pub portal_session_seconds: i64,

    /// Billing jobs worked on at once by this process.
    #[arg(long, env = "CALMONY_BILLING_CONCURRENCY", default_value_t = 8)]
    pub billing_concurrency: usize,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// Griffin (settlement reconciliation, and `POST /webhooks/griffin`), when configured.
    #[command(flatten)]
    pub griffin: GriffinArgs,
}

impl ServeArgs {
    /// The settings a bare `calmony` (no subcommand) serves with: flags' defaults and
    /// their environment variables.
    pub fn from_env() -> Self {
        use clap::FromArgMatches;
        let command = <Self as clap::Args>::augment_args(clap::Command::new("serve"));
        let matches = command.get_matches_from(["serve"]);
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

pub async fn serve(database: &Database, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let pool = database.pool.clone();
    let runtime = ProjectionRuntime::new(pool.clone());
    // Bound first: the default public URL is the address actually bound (`--addr …:0`), and
    // the API read model renders invoices' hosted URLs with it.
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let mut workers = tokio::task::JoinSet::new();
    for projection in projections::all(&public_url) {
        runtime
            .ensure_current(projection.as_ref(), |_, _| {})
            .await?;
        let runtime = runtime.clone();
        workers.spawn(async move {
            let name = projection.name();
            // A follower that fails (the database restarting, the pool exhausted for a
            // moment) starts again from its checkpoint: nothing is lost or applied twice.
            let mut pause = std::time::Duration::from_millis(100);
            loop {
                match runtime
                    .follow(projection.clone(), DEFAULT_BATCH_EVENTS, 250)
                    .await
                {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::error!(projection = name, %error, "projection failed; restarting it");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            }
        });
    }
    let url_guard = webhook_relay::UrlGuard::default();
    if args.webhooks_relay {
        webhook_relay::prepare(pool.clone()).await?;
        let runtime = runtime.clone();
        let guard = url_guard.clone();
        let settings = args.relay.settings();
        workers.spawn(async move {
            let clock = std::sync::Arc::new(scheduler::SystemClock);
            // Beside the projections: the fan-out wakes on the api projection's commits.
            // Restarted after a failure, from its checkpoint and its leases.
            let mut pause = std::time::Duration::from_millis(100);
            loop {
                let result =
                    webhook_relay::run_beside(&runtime, clock.clone(), guard.clone(), settings)
                        .await;
                match result {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::error!(%error, "webhook relay failed; restarting it");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            }
        });
    }
    workers.spawn(scheduler::sealer::run(
        Sealer::new(pool.clone()),
        SealerSettings {
            interval_ms: args.seal_interval_ms,
            ..SealerSettings::default()
        },
    ));

    // Test mode charges the simulator unless a test gateway is configured.
    let (_simulator, test_config) = match &args.gateway.cardstream_test_url {
        Some(url) => (
            None,
            client_config(
                url,
                &args.gateway.cardstream_test_merchant_id,
                &args.gateway.cardstream_test_secret,
            ),
        ),
        None => {
            let simulator =
                cardstream::simulator::spawn(cardstream::simulator::SimulatorConfig::demo())
                    .await?;
            tracing::info!(url = %simulator.direct_url(), "Cardstream simulator started for test mode");
            let config = simulator.client_config(
                &args.gateway.cardstream_test_merchant_id,
                &args.gateway.cardstream_test_secret,
            );
            (Some(simulator), config)
        }
    };
    let gateways = Gateways {
        test: cardstream::Client::new(test_config)?,
        live: args
            .gateway
            .live_config()
            .map(cardstream::Client::new)
            .transpose()?,
        public_url: public_url.clone(),
        crash_after_approval: args.gateway.fault_crash_after_approval,
        crash_in_checkout_return: args.gateway.fault_crash_in_checkout_return,
    };
    let bus = CommandBus::new(EventStore::new(pool.clone()), domain::upcasters::all());
    let payments = PaymentService::new(bus, gateways);
    let billing = BillingService::new(payments.clone());
    let billing_wake = std::sync::Arc::new(tokio::sync::Notify::new());
    workers.spawn(scheduler::billing::run(
        scheduler::billing::BillingRunner::new(
            pool.clone(),
            billing.clone(),
            runtime.clone(),
            std::sync::Arc::new(scheduler::SystemClock),
            args.billing_concurrency,
        ),
        std::time::Duration::from_secs(args.billing_interval_seconds),
        billing_wake.clone(),
    ));
    workers.spawn(scheduler::recovery::run(
        pool.clone(),
        payments.clone(),
        args.recovery_after_ms,
    ));
    let state = read_api::ApiState {
        pool: pool.clone(),
        payments,
        idempotency: IdempotencyStore::new(pool.clone(), args.idempotency_lease_ms),
        projections: runtime.clone(),
        url_guard,
        billing,
        billing_wake,
    };
    let app = read_api::router(
        state,
        read_api::ServerSettings {
            rate_limits: RateLimitDefaults {
                live_per_second: args.rate_limit_live,
                test_per_second: args.rate_limit_test,
            },
            public_url: public_url.clone(),
            portal: read_api::pages::portal::session::PortalSettings {
                session_seconds: args.portal_session_seconds,
            },
        },
    );
    // Settlements: a reconciliation pass every interval, and at once on a verified Griffin
    // webhook announcing a transaction.
    let app = match args.griffin.client()? {
        Some(client) => {
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            workers.spawn(scheduler::settlements::run(
                crate::settlements_cli::reconciler(pool.clone(), client.clone(), &args.griffin),
                std::time::Duration::from_secs(args.griffin.settlement_interval_seconds),
                wake.clone(),
            ));
            let verifier = std::sync::Arc::new(griffin::WebhookVerifier::new(client));
            app.merge(crate::settlements_cli::webhook_router(verifier, wake))
        }
        None => app,
    };
    tracing::info!(addr = %local, "calmony listening");
    // Tests and scripts read this line to find the port when --addr ends in :0.
    println!("listening on http://{local}");
    // The peer address is what the dashboard's sign-in limits count.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    workers.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `calmony cardstream-sim`: the simulator alone, as its own process.
pub async fn cardstream_simulator(addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    tokio::select! {
        served = cardstream::simulator::serve(listener, cardstream::simulator::SimulatorConfig::demo()) => served?,
        _ = shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}
