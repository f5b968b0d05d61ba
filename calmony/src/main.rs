//! `calmony`: the server, the workers and the operator and auditor tools, in one command.
//! Without arguments it serves (what `cargo run` does).

mod billing_cli;
mod config;
mod gateway_config;
mod ledger_cli;
mod operators_cli;
mod projections_cli;
mod projects_cli;
mod reports_cli;
mod serve;
mod settlements_cli;
mod webhooks_cli;

use clap::{Parser, Subcommand};
use event_store::database::Database;

use crate::config::DatabaseArgs;

/// mimalloc: the server allocates and frees many small objects per request (JSON, events,
/// gateway fields); glibc's allocator cost a billing run about a seventh of its throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "calmony",
    version,
    about = "Calmony Pay: an event-sourced payment layer"
)]
struct Cli {
    #[command(flatten)]
    database: DatabaseArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server with its projections and workers (the default).
    Serve(Box<serve::ServeArgs>),
    /// The Cardstream simulator alone (test cards, 3-D Secure, hosted page), as a process.
    CardstreamSim {
        #[arg(
            long,
            env = "CALMONY_CARDSTREAM_SIM_ADDR",
            default_value = "127.0.0.1:8081"
        )]
        addr: std::net::SocketAddr,
    },
    /// The Griffin simulator alone (accounts, transactions, webhooks, `/_simulator/` credits),
    /// as a process. Prints its account URLs and API key, then `listening on <url>`.
    GriffinSim {
        #[arg(
            long,
            env = "CALMONY_GRIFFIN_SIM_ADDR",
            default_value = "127.0.0.1:8082"
        )]
        addr: std::net::SocketAddr,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Read models: status, rebuild, or run them without the HTTP server.
    Projections(projections_cli::ProjectionsArgs),
    /// Merchant projects.
    #[command(subcommand)]
    Projects(projects_cli::ProjectsCommand),
    /// Dashboard operators: create (password from stdin), list, disable.
    #[command(subcommand)]
    Operators(operators_cli::OperatorsCommand),
    /// Secret API keys of a project.
    #[command(subcommand)]
    Keys(projects_cli::KeysCommand),
    /// The auditor's tools over the event log.
    #[command(subcommand)]
    Ledger(ledger_cli::LedgerCommand),
    /// The webhook relay: run one without the HTTP server, or see how it is doing.
    #[command(subcommand)]
    Webhooks(webhooks_cli::WebhooksCommand),
    /// Finance reports computed by replaying the event log.
    #[command(subcommand)]
    Reports(reports_cli::ReportsCommand),
    /// Subscriptions' timed work: renewals, dunning retries, expiries.
    #[command(subcommand)]
    Billing(billing_cli::BillingCommand),
    /// Settlement to Griffin: reconcile now, or list settlements and unexpected credits.
    #[command(subcommand)]
    Settlements(settlements_cli::SettlementsCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CALMONY_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::new(serve::ServeArgs::from_env())));
    // The simulator needs no database.
    if let Command::CardstreamSim { addr } = command {
        return serve::cardstream_simulator(addr).await;
    }
    if let Command::GriffinSim { addr } = command {
        return settlements_cli::griffin_simulator(addr).await;
    }
    let database = Database::open(&cli.database.settings()).await?;
    let outcome = match command {
        Command::Serve(args) => serve::serve(&database, *args).await,
        Command::CardstreamSim { .. } | Command::GriffinSim { .. } => {
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Migrate => {
            eprintln!("migrations applied");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Projections(command) => projections_cli::run(&database, command).await,
        Command::Ledger(command) => ledger_cli::run(&database, command).await,
        Command::Projects(command) => projects_cli::run_projects(&database, command).await,
        Command::Operators(command) => operators_cli::run(&database, command).await,
        Command::Keys(command) => projects_cli::run_keys(&database, command).await,
        Command::Webhooks(command) => webhooks_cli::run(&database, command).await,
        Command::Billing(command) => billing_cli::run(&database, command).await,
        Command::Settlements(command) => settlements_cli::run(&database, command).await,
        Command::Reports(command) => reports_cli::run(&database, command).await,
    };
    // A managed server stops with us; an external one is left alone.
    if let Err(error) = database.close().await {
        tracing::warn!(%error, "stopping the managed database failed");
    }
    outcome
}
