//! `calmony projects create` and `calmony keys create | list | revoke`.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use commands::{ids, CommandBus};
use domain::project::{Project, ProjectCommand};
use event_store::database::Database;
use event_store::{EventMetadata, EventStore, Mode};
use projections::api_keys::ApiKeys;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project; prints its id alone on stdout.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyMode {
    Test,
    Live,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a secret API key; prints it alone on stdout. It is shown this once: only its
    /// hash is stored.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long, value_enum)]
        mode: KeyMode,
    },
    /// List keys (id, project, mode, display, created, revoked).
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Revoke a key by its id (`key_…`); requests with it fail from then on.
    Revoke { key_id: String },
}

fn bus(database: &Database) -> CommandBus {
    CommandBus::new(
        EventStore::new(database.pool.clone()),
        domain::upcasters::all(),
    )
}

fn operator_metadata(project: &str) -> EventMetadata {
    EventMetadata::new(project, Mode::Test, "operator:cli").with_request(ids::new_id("req"))
}

/// Makes the change visible to authentication before the command returns.
async fn refresh_keys(database: &Database) -> anyhow::Result<()> {
    let runtime = ProjectionRuntime::new(database.pool.clone());
    runtime.ensure_created(&ApiKeys).await?;
    let reader = event_store::LogReader::new(database.pool.clone());
    reader
        .wait_until_final(std::time::Duration::from_secs(10))
        .await?;
    runtime.catch_up(&ApiKeys, DEFAULT_BATCH_EVENTS).await?;
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub async fn run_projects(
    database: &Database,
    command: ProjectsCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ProjectsCommand::Create { name } => {
            let project_id = ids::new_id("proj");
            bus(database)
                .execute::<Project>(
                    &project_id,
                    ProjectCommand::Create {
                        project_id: project_id.clone(),
                        name,
                        at: now(),
                    },
                    &(),
                    &operator_metadata(&project_id),
                )
                .await?;
            refresh_keys(database).await?;
            println!("{project_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_keys(database: &Database, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create { project, mode } => {
            let livemode = matches!(mode, KeyMode::Live);
            let secret = ids::new_secret_key(livemode);
            bus(database)
                .execute::<Project>(
                    &project,
                    ProjectCommand::CreateApiKey {
                        key_id: ids::new_id("key"),
                        livemode,
                        secret_hash: ids::secret_hash(&secret),
                        display: ids::secret_display(&secret),
                        at: now(),
                    },
                    &(),
                    &operator_metadata(&project),
                )
                .await?;
            refresh_keys(database).await?;
            println!("{secret}");
        }
        KeysCommand::List { project } => {
            refresh_keys(database).await?;
            let rows: Vec<(String, String, bool, String, i64, Option<i64>)> = sqlx::query_as(
                "SELECT key_id, project, livemode, display, created, revoked_at FROM api_keys.keys \
                 WHERE $1::text IS NULL OR project = $1 ORDER BY created, key_id",
            )
            .bind(project)
            .fetch_all(&database.pool)
            .await?;
            println!(
                "{:<30} {:<30} {:<5} {:<16} {:<20} revoked",
                "key", "project", "mode", "display", "created"
            );
            for (key_id, project, livemode, display, created, revoked_at) in rows {
                let when = |at: i64| {
                    chrono::DateTime::from_timestamp(at, 0)
                        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default()
                };
                println!(
                    "{key_id:<30} {project:<30} {:<5} {display:<16} {:<20} {}",
                    if livemode { "live" } else { "test" },
                    when(created),
                    revoked_at.map(when).unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            refresh_keys(database).await?;
            let project: String =
                sqlx::query_scalar("SELECT project FROM api_keys.keys WHERE key_id = $1")
                    .bind(&key_id)
                    .fetch_optional(&database.pool)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no API key {key_id:?}"))?;
            bus(database)
                .execute::<Project>(
                    &project,
                    ProjectCommand::RevokeApiKey {
                        key_id: key_id.clone(),
                        at: now(),
                    },
                    &(),
                    &operator_metadata(&project),
                )
                .await?;
            refresh_keys(database).await?;
            eprintln!("revoked {key_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
