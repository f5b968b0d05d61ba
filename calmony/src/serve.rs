//! `calmony serve`: the HTTP API, every projection following the log, and the sealer.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use event_store::database::Database;
use event_store::seal::Sealer;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;
use scheduler::sealer::SealerSettings;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CALMONY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// How often the sealer seals the log.
    #[arg(long, env = "CALMONY_SEAL_INTERVAL_MS", default_value_t = 5_000)]
    pub seal_interval_ms: u64,
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
    let mut workers = tokio::task::JoinSet::new();
    for projection in projections::all() {
        runtime.ensure_created(projection.as_ref()).await?;
        let runtime = runtime.clone();
        workers.spawn(async move {
            let name = projection.name();
            if let Err(error) = runtime.follow(projection, DEFAULT_BATCH_EVENTS, 250).await {
                tracing::error!(projection = name, %error, "projection stopped");
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

    let app = read_api::router(read_api::AppState { pool });
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "calmony listening");
    // Tests and scripts read this line to find the port when --addr ends in :0.
    println!("listening on http://{local}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    workers.shutdown().await;
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
