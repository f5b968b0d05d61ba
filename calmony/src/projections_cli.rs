//! `calmony projections status | rebuild | run`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use event_store::database::Database;
use indicatif::{ProgressBar, ProgressStyle};
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::{Projection, ProjectionRuntime};

#[derive(Debug, clap::Args)]
pub struct ProjectionsArgs {
    /// The address browsers reach the server on, as `calmony serve --public-url` has it:
    /// the API read model renders invoices' hosted URLs with it.
    #[arg(long, env = "CALMONY_PUBLIC_URL", global = true,
          default_value = projections::api_objects::DEFAULT_PUBLIC_URL)]
    pub public_url: String,

    #[command(subcommand)]
    pub command: ProjectionsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpoint and how far behind the log it is.
    Status,
    /// Rebuild from zero into fresh tables and swap them in, without stopping reads.
    Rebuild {
        /// The projection to rebuild.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projection.
        #[arg(long)]
        all: bool,
    },
    /// Run the projections (follow the log) without the HTTP server.
    Run {
        /// Events per batch (and per transaction).
        #[arg(long, default_value_t = DEFAULT_BATCH_EVENTS)]
        batch_events: i64,
        /// Only this projection.
        #[arg(long)]
        only: Option<String>,
    },
}

fn selected(name: Option<&str>, public_url: &str) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    match name {
        None => Ok(projections::all(public_url)),
        Some(name) => projections::by_name(name, public_url)
            .map(|projection| vec![projection])
            .ok_or_else(|| {
                let known: Vec<_> = projections::all(public_url)
                    .iter()
                    .map(|p| p.name())
                    .collect();
                anyhow::anyhow!("no projection named {name:?} (known: {})", known.join(", "))
            }),
    }
}

pub async fn run(database: &Database, args: ProjectionsArgs) -> anyhow::Result<ExitCode> {
    let runtime = ProjectionRuntime::new(database.pool.clone());
    let public_url = args.public_url.as_str();
    match args.command {
        ProjectionsCommand::Status => {
            println!(
                "{:<24} {:>20} {:>12} {:>10}  updated",
                "projection", "checkpoint", "applied", "lag"
            );
            for projection in projections::all(public_url) {
                runtime.ensure_created(projection.as_ref()).await?;
                let status = runtime.status(projection.as_ref()).await?;
                println!(
                    "{:<24} {:>20} {:>12} {:>10}  {}",
                    status.name,
                    status.checkpoint.to_string(),
                    status.events_applied,
                    status.lag_events,
                    status.updated_at.to_rfc3339()
                );
            }
        }
        ProjectionsCommand::Rebuild { name, all: _ } => {
            for projection in selected(name.as_deref(), public_url)? {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>16} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
                    )?
                    .progress_chars("=> "),
                );
                bar.set_message(projection.name());
                let started = std::time::Instant::now();
                let applied = runtime
                    .rebuild(projection.as_ref(), |done, total| {
                        bar.set_length(total);
                        bar.set_position(done);
                    })
                    .await?;
                bar.finish();
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "rebuilt {} from {applied} events in {seconds:.2}s ({:.0} events/s)",
                    projection.name(),
                    applied as f64 / seconds.max(1e-9)
                );
            }
        }
        ProjectionsCommand::Run { batch_events, only } => {
            let mut tasks = tokio::task::JoinSet::new();
            for projection in selected(only.as_deref(), public_url)? {
                runtime.ensure_created(projection.as_ref()).await?;
                let runtime = runtime.clone();
                tasks.spawn(async move { runtime.follow(projection, batch_events, 250).await });
            }
            tokio::select! {
                finished = tasks.join_next() => {
                    if let Some(result) = finished {
                        result??;
                    }
                }
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
