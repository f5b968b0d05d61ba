//! `calmony projects create | configure | show` and `calmony keys create | list | revoke`.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use commands::project_settings::{billing_settings, configure_billing};
use commands::{ids, CommandBus};
use domain::project::{BillingChanges, BillingSettings, Project, ProjectCommand};
use domain::settlement::FeeRule;
use event_store::database::Database;
use event_store::store::AsOf;
use event_store::{EventMetadata, EventStore, Mode};
use projections::api_keys::ApiKeys;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project; prints its id alone on stdout.
    Create {
        #[arg(long)]
        name: String,
    },
    /// Set a project's billing settings; only the settings named change, and an empty value
    /// ("") clears an optional one. Prints the settings as JSON.
    Configure {
        #[arg(long)]
        project: String,
        /// Invoice numbers are PREFIX-0001, …: 3 to 12 characters of A-Z and 0-9.
        #[arg(long)]
        invoice_prefix: Option<String>,
        /// A tax rate of this project (txr_…) applied to invoice lines that name none.
        #[arg(long)]
        default_tax_rate: Option<String>,
        #[arg(long)]
        seller_name: Option<String>,
        /// One line of the seller's address; repeat for each line (replaces every line).
        #[arg(long = "seller-address", value_name = "LINE")]
        seller_address: Vec<String>,
        #[arg(long)]
        seller_email: Option<String>,
        /// The seller's VAT (or other tax) registration number.
        #[arg(long)]
        seller_tax_id: Option<String>,
        /// #rrggbb, for invoices and hosted pages.
        #[arg(long)]
        brand_color: Option<String>,
        /// Days before each retry of a failed renewal charge, e.g. 1,1,1 (the default);
        /// "none" for no retries.
        #[arg(long, value_parser = parse_retry_days)]
        dunning_retry_days: Option<RetryDays>,
        /// What the acquirer keeps of each capture before settling, e.g. 1.4%+20 (percent
        /// plus minor units), 1.4%, 20, or "none" (the default): settlements expected from
        /// now on are net of it.
        #[arg(long, value_parser = parse_acquirer_fee)]
        acquirer_fee: Option<AcquirerFee>,
    },
    /// Print a project and its billing settings as JSON.
    Show {
        #[arg(long)]
        project: String,
    },
}

/// `--acquirer-fee`: a fee rule, or `none`.
#[derive(Debug, Clone)]
pub struct AcquirerFee(Option<FeeRule>);

fn parse_acquirer_fee(text: &str) -> Result<AcquirerFee, String> {
    FeeRule::parse(text)
        .map(AcquirerFee)
        .map_err(|error| error.to_string())
}

/// `--dunning-retry-days`: a comma-separated list of days, or `none`.
#[derive(Debug, Clone)]
pub struct RetryDays(Vec<u32>);

fn parse_retry_days(text: &str) -> Result<RetryDays, String> {
    let text = text.trim();
    if text.is_empty() || text == "none" {
        return Ok(RetryDays(Vec::new()));
    }
    text.split(',')
        .map(|day| {
            day.trim()
                .parse::<u32>()
                .map_err(|_| format!("{day:?} is not a number of days"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(RetryDays)
}

/// A flag's value as a change: absent leaves the setting, "" clears it.
fn change(value: Option<String>) -> Option<Option<String>> {
    value.map(|value| {
        let value = value.trim().to_string();
        (!value.is_empty()).then_some(value)
    })
}

fn project_json(project: &Project, settings: &BillingSettings) -> serde_json::Value {
    serde_json::json!({
        "id": project.id,
        "name": project.name,
        "created": project.created,
        "billing": settings,
    })
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
    runtime.ensure_current(&ApiKeys, |_, _| {}).await?;
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
        ProjectsCommand::Configure {
            project,
            invoice_prefix,
            default_tax_rate,
            seller_name,
            seller_address,
            seller_email,
            seller_tax_id,
            brand_color,
            dunning_retry_days,
            acquirer_fee,
        } => {
            let changes = BillingChanges {
                invoice_prefix: invoice_prefix.map(|prefix| prefix.trim().to_string()),
                default_tax_rate: change(default_tax_rate),
                seller_name: change(seller_name),
                seller_address_lines: (!seller_address.is_empty()).then(|| {
                    seller_address
                        .into_iter()
                        .map(|line| line.trim().to_string())
                        .filter(|line| !line.is_empty())
                        .collect()
                }),
                seller_email: change(seller_email),
                seller_tax_id: change(seller_tax_id),
                brand_color: change(brand_color),
                dunning_retry_days: dunning_retry_days.map(|RetryDays(days)| days),
                acquirer_fee: acquirer_fee.map(|AcquirerFee(fee)| fee),
            };
            let bus = bus(database);
            let settings =
                configure_billing(&bus, &project, changes, &operator_metadata(&project)).await?;
            let (stored, _) = bus.load::<Project>(&project, AsOf::Now).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&project_json(&stored, &settings))?
            );
        }
        ProjectsCommand::Show { project } => {
            let bus = bus(database);
            let settings = billing_settings(&bus, &project).await?;
            let (stored, _) = bus.load::<Project>(&project, AsOf::Now).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&project_json(&stored, &settings))?
            );
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
