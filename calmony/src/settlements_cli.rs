//! Settlement to Griffin: the deployment's Griffin settings (shared with `serve`),
//! `calmony settlements reconcile | list`, `calmony griffin-sim`, and the
//! `POST /webhooks/griffin` receiver that wakes `serve`'s reconciler.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use clap::{Args, Subcommand, ValueEnum};
use commands::settlements::SettlementService;
use commands::CommandBus;
use event_store::database::Database;
use event_store::EventStore;
use projections::settlements::{SettlementRow, Settlements};
use projections::ProjectionRuntime;
use scheduler::settlements::{Reconciler, ReconcilerSettings};

#[derive(Debug, Clone, Args)]
pub struct GriffinArgs {
    /// Griffin's API origin (https://api.griffin.com, or a `calmony griffin-sim`). Unset: no
    /// reconciliation.
    #[arg(long, env = "CALMONY_GRIFFIN_URL")]
    pub griffin_url: Option<String>,

    /// The Griffin API key (`g-test-…` in sandbox).
    #[arg(long, env = "CALMONY_GRIFFIN_API_KEY", hide_env_values = true)]
    pub griffin_api_key: Option<String>,

    /// The account settlements land in: its URL (`/v0/bank/accounts/ba.…`) or id. Unset: the
    /// organisation's primary account, else its first open one.
    #[arg(long, env = "CALMONY_GRIFFIN_ACCOUNT")]
    pub griffin_account: Option<String>,

    /// `page[size]` of Griffin transaction lists (1–200).
    #[arg(long, env = "CALMONY_GRIFFIN_PAGE_SIZE", default_value_t = 100)]
    pub griffin_page_size: u16,

    /// How far before the latest recorded credit each pass reads again (late bookings).
    #[arg(
        long,
        env = "CALMONY_GRIFFIN_OVERLAP_SECONDS",
        default_value_t = 86_400
    )]
    pub griffin_overlap_seconds: i64,

    /// Seconds between `serve`'s reconciliation passes (a verified Griffin webhook starts
    /// one at once).
    #[arg(
        long,
        env = "CALMONY_SETTLEMENT_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    pub settlement_interval_seconds: u64,
}

impl GriffinArgs {
    /// The Griffin client, when both the URL and the key are set.
    pub fn client(&self) -> anyhow::Result<Option<griffin::Client>> {
        match (&self.griffin_url, &self.griffin_api_key) {
            (Some(url), Some(key)) => Ok(Some(griffin::Client::new(griffin::Config::new(
                url.as_str(),
                griffin::ApiKey::new(key.as_str()),
            ))?)),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "set both CALMONY_GRIFFIN_URL and CALMONY_GRIFFIN_API_KEY, or neither"
            ),
        }
    }

    pub fn settings(&self) -> ReconcilerSettings {
        ReconcilerSettings {
            account: self.griffin_account.clone(),
            page_size: self.griffin_page_size.clamp(1, griffin::MAX_PAGE_SIZE),
            overlap_seconds: self.griffin_overlap_seconds.max(0),
        }
    }
}

/// The reconciler for `database`, ready to run.
pub fn reconciler(pool: sqlx::PgPool, client: griffin::Client, args: &GriffinArgs) -> Reconciler {
    let bus = CommandBus::new(EventStore::new(pool.clone()), domain::upcasters::all());
    Reconciler::new(
        pool.clone(),
        ProjectionRuntime::new(pool),
        SettlementService::new(bus),
        client,
        Arc::new(scheduler::SystemClock),
        args.settings(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum SettlementsCommand {
    /// One reconciliation pass now: record the days' expectations, read the Griffin
    /// account's credits and record each once; then print the settlements.
    Reconcile {
        #[command(flatten)]
        griffin: GriffinArgs,
        /// Only this project's expectations, and only its settlements printed (credits are
        /// always read for the whole account).
        #[arg(long)]
        project: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The settlements and unexpected credits as the read model has them.
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub async fn run(database: &Database, command: SettlementsCommand) -> anyhow::Result<ExitCode> {
    let pool = database.pool.clone();
    let runtime = ProjectionRuntime::new(pool.clone());
    let projection = Settlements::default();
    runtime.ensure_current(&projection, |_, _| {}).await?;
    let (project, format) = match command {
        SettlementsCommand::Reconcile {
            griffin,
            project,
            format,
        } => {
            let Some(client) = griffin.client()? else {
                anyhow::bail!("set CALMONY_GRIFFIN_URL and CALMONY_GRIFFIN_API_KEY (or --griffin-url and --griffin-api-key)");
            };
            crate::ledger_cli::wait_for_committed_events(&pool).await?;
            let report = reconciler(pool.clone(), client, &griffin)
                .run_once(project.as_deref())
                .await?;
            eprintln!("{}", serde_json::to_string(&report)?);
            (project, format)
        }
        SettlementsCommand::List { project, format } => {
            crate::ledger_cli::wait_for_committed_events(&pool).await?;
            runtime
                .catch_up(&projection, projections::runtime::DEFAULT_BATCH_EVENTS)
                .await?;
            (project, format)
        }
    };
    let rows = projections::settlements::list(&pool, project.as_deref()).await?;
    print!("{}", render(&rows, format));
    Ok(ExitCode::SUCCESS)
}

fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:02}",
        minor.unsigned_abs() / 100,
        minor.unsigned_abs() % 100
    )
}

/// The settlements (and unexpected credits) as a table or as CSV, amounts in major units.
fn render(rows: &[SettlementRow], format: Format) -> String {
    const HEADER: [&str; 10] = [
        "settlement",
        "project",
        "mode",
        "day",
        "currency",
        "expected",
        "received",
        "difference",
        "status",
        "transaction",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|row| {
            [
                row.id.clone(),
                row.project.clone(),
                domain::settlement::mode_word(row.livemode).to_string(),
                row.day.map(|day| day.to_string()).unwrap_or_default(),
                row.currency.clone(),
                row.expected_net_minor.map(money).unwrap_or_default(),
                money(row.received_minor),
                money(row.difference_minor),
                row.status.clone(),
                row.transaction.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = String::new();
    match format {
        Format::Csv => {
            let quote = |cell: &str| {
                if cell.contains([',', '"', '\n']) {
                    format!("\"{}\"", cell.replace('"', "\"\""))
                } else {
                    cell.to_string()
                }
            };
            out.push_str(&HEADER.join(","));
            out.push('\n');
            for row in &cells {
                out.push_str(
                    &row.iter()
                        .map(|cell| quote(cell))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push('\n');
            }
        }
        Format::Table => {
            let mut widths = HEADER.map(str::len);
            for row in &cells {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            let line = |cells: Vec<&str>| {
                cells
                    .iter()
                    .zip(widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            out.push_str(&line(HEADER.to_vec()));
            out.push('\n');
            for row in &cells {
                out.push_str(&line(row.iter().map(String::as_str).collect()));
                out.push('\n');
            }
        }
    }
    out
}

/// `calmony griffin-sim`: Griffin's simulator alone, as its own process. Prints its base URL,
/// then its settlement account's URL and API key, one per line, for scripts and tests.
pub async fn griffin_simulator(addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let config = griffin::simulator::SimulatorConfig::default();
    let api_key = config.api_keys.first().cloned().unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = tokio::spawn(griffin::simulator::serve(listener, config));
    let base_url = format!("http://{local}");
    let client = griffin::Client::new(griffin::Config::new(
        base_url.as_str(),
        griffin::ApiKey::new(api_key.as_str()),
    ))?;
    let organization = client.organization().await?;
    let accounts = client.bank_accounts(&organization).await?;
    for account in &accounts {
        println!("account {}", account.account_url);
    }
    println!("api-key {api_key}");
    // Tests and scripts wait for this line.
    println!("listening on {base_url}");
    tokio::select! {
        served = server => served??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone)]
struct WebhookState {
    verifier: Arc<griffin::WebhookVerifier>,
    wake: Arc<tokio::sync::Notify>,
}

/// `POST /webhooks/griffin`: a webhook from Griffin, verified with its published keys
/// (RFC 9421, ES512). A `transaction-created` starts a reconciliation pass; the answer is
/// 204 at once either way (Griffin advises answering quickly), 401 when the signature does
/// not verify.
pub fn webhook_router(
    verifier: Arc<griffin::WebhookVerifier>,
    wake: Arc<tokio::sync::Notify>,
) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/griffin", post(receive_webhook))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(WebhookState { verifier, wake })
}

async fn receive_webhook(
    State(state): State<WebhookState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let target = uri
        .path_and_query()
        .map(|target| target.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let incoming = griffin::IncomingWebhook::from_parts("POST", &target, &headers, &body);
    if let Err(error) = state.verifier.verify(&incoming, chrono::Utc::now()).await {
        tracing::warn!(%error, "refused a Griffin webhook");
        return StatusCode::UNAUTHORIZED;
    }
    let event_type = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|event| event.get("event-type")?.as_str().map(str::to_string));
    if event_type.as_deref() == Some(griffin::resources::event_types::TRANSACTION_CREATED) {
        state.wake.notify_one();
    }
    StatusCode::NO_CONTENT
}
