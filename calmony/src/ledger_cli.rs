//! `calmony ledger export | verify | replay | seal | streams | trial-balance`: the auditor's
//! and finance's tools.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;
use commands::CommandBus;
use event_store::database::Database;
use event_store::seal::{Sealer, MAX_SEAL_EVENTS};
use event_store::store::AsOf;
use event_store::{EventStore, LogCursor, LogReader, RecordedEvent};
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Every event as NDJSON on stdout, in log order (see README: "Export format").
    Export {
        /// Only events at or after this global position.
        #[arg(long)]
        from: Option<i64>,
        /// Only events at or before this global position.
        #[arg(long)]
        to: Option<i64>,
    },
    /// Check every stream's versions and hash chain and every seal. Exits 1 on the first
    /// bad event, naming it.
    Verify,
    /// Print one aggregate's state as of a time or a position.
    Replay {
        /// An RFC 3339 time (2026-11-25T14:00:00Z) or a global position.
        #[arg(long)]
        as_of: String,
        /// The stream, as <type>/<id> (customer/cus_…).
        #[arg(long)]
        stream: String,
    },
    /// Seal everything final now (the server also seals on an interval).
    Seal,
    /// List streams from the stream index, most recently changed first.
    Streams {
        #[arg(long)]
        project: Option<String>,
        /// Stream type: customer, payment_intent, payment_method, project, …
        #[arg(long = "type")]
        stream_type: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Balances per account and currency from the double-entry journal, with a check that
    /// debits equal credits. Exits 1 if they do not.
    TrialBalance {
        /// Only this project (default: every project).
        #[arg(long)]
        project: Option<String>,
        /// Live-mode books (default: test mode).
        #[arg(long)]
        live: bool,
        /// An RFC 3339 time (events recorded at or before it) or a global position.
        #[arg(long)]
        as_of: Option<String>,
    },
}

/// One exported event. Field order and names are the documented, stable export format;
/// `payload` and `metadata` are the exact stored JSON text, so the hashes can be
/// recomputed offline from the export alone.
#[derive(Serialize)]
struct ExportedEvent<'a> {
    position: i64,
    txid: i64,
    stream_type: &'a str,
    stream_id: &'a str,
    version: i64,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: &'a str,
    recorded_at: String,
    payload: &'a RawValue,
    metadata: &'a RawValue,
    prev_hash: String,
    hash: String,
}

fn export_line(event: &RecordedEvent) -> anyhow::Result<String> {
    let payload: &RawValue = serde_json::from_str(&event.payload)?;
    let metadata: &RawValue = serde_json::from_str(&event.metadata)?;
    Ok(serde_json::to_string(&ExportedEvent {
        position: event.position,
        txid: event.txid,
        stream_type: &event.aggregate_type,
        stream_id: &event.aggregate_id,
        version: event.sequence,
        event_type: &event.event_type,
        schema_version: &event.event_version,
        recorded_at: event
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        payload,
        metadata,
        prev_hash: hex::encode(&event.prev_hash),
        hash: hex::encode(&event.hash),
    })?)
}

pub async fn run(database: &Database, command: LedgerCommand) -> anyhow::Result<ExitCode> {
    let pool = database.pool.clone();
    match command {
        LedgerCommand::Export { from, to } => {
            let reader = LogReader::new(pool);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut cursor = LogCursor::START;
            loop {
                let events = reader.read_all(cursor, 5_000).await?;
                let Some(last) = events.last() else { break };
                cursor = last.cursor();
                for event in &events {
                    let in_range = from.is_none_or(|from| event.position >= from)
                        && to.is_none_or(|to| event.position <= to);
                    if in_range {
                        writeln!(out, "{}", export_line(event)?)?;
                    }
                }
            }
            out.flush()?;
        }
        LedgerCommand::Verify => {
            let bar = ProgressBar::new_spinner();
            let report = event_store::verify::verify_ledger(&pool, |checked| {
                bar.set_message(format!("{checked} events checked"));
                bar.tick();
            })
            .await?;
            bar.finish_and_clear();
            // The stream index was built as the log grew: a stream it remembers longer than
            // the log now is has lost events, sealed or not.
            let runtime = projections::ProjectionRuntime::new(pool.clone());
            runtime
                .ensure_current(&projections::stream_index::StreamIndex, |_, _| {})
                .await?;
            let vanished = projections::stream_index::vanished_events(&pool).await?;
            if let Some(first) = vanished.first() {
                eprintln!(
                    "ledger verification FAILED: {} had version {} when indexed, only {} now (events were removed)",
                    first.stream, first.indexed_version, first.stored_version
                );
                for other in report.problems.iter() {
                    eprintln!("  also: {other}");
                }
                return Ok(ExitCode::FAILURE);
            }
            if let Some(problem) = report.first_problem() {
                eprintln!("ledger verification FAILED: {problem}");
                for other in report.problems.iter().skip(1) {
                    eprintln!("  also: {other}");
                }
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "ledger verified: {} events in {} streams, {} seals",
                report.events_checked, report.streams_checked, report.seals_checked
            );
        }
        LedgerCommand::Replay { as_of, stream } => {
            let (aggregate_type, aggregate_id) = stream
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("--stream must be <type>/<id>, got {stream:?}"))?;
            let as_of = parse_as_of(&as_of)?;
            let bus = CommandBus::new(EventStore::new(pool), domain::upcasters::all());
            let (state, version) =
                commands::replay::replay(&bus, aggregate_type, aggregate_id, as_of).await?;
            if version == 0 {
                eprintln!("{stream} had no events as of then");
                return Ok(ExitCode::FAILURE);
            }
            let output = serde_json::json!({
                "stream": stream,
                "version": version,
                "state": state,
            });
            println!("{}", serde_json::to_string_pretty(&output)?);
        }
        LedgerCommand::Streams {
            project,
            stream_type,
            limit,
        } => {
            let runtime = projections::ProjectionRuntime::new(pool.clone());
            runtime
                .ensure_current(&projections::stream_index::StreamIndex, |_, _| {})
                .await?;
            wait_for_committed_events(&pool).await?;
            runtime
                .catch_up(
                    &projections::stream_index::StreamIndex,
                    projections::runtime::DEFAULT_BATCH_EVENTS,
                )
                .await?;
            let rows = projections::stream_index::list_streams(
                &pool,
                project.as_deref(),
                stream_type.as_deref(),
                limit,
            )
            .await?;
            println!(
                "{:<48} {:<30} {:>8}  last change",
                "stream", "project", "version"
            );
            for row in rows {
                println!(
                    "{:<48} {:<30} {:>8}  {}",
                    format!("{}/{}", row.aggregate_type, row.aggregate_id),
                    row.project.unwrap_or_default(),
                    row.version,
                    row.last_recorded_at.to_rfc3339()
                );
            }
        }
        LedgerCommand::TrialBalance {
            project,
            live,
            as_of,
        } => return trial_balance(&pool, project.as_deref(), live, as_of.as_deref()).await,
        LedgerCommand::Seal => {
            let seals = Sealer::new(pool).seal_all(MAX_SEAL_EVENTS).await?;
            match seals.last() {
                Some(last) => println!(
                    "sealed {} range(s); latest seal {} ends at {}:{}",
                    seals.len(),
                    last.seal_number,
                    last.to_txid,
                    last.to_position
                ),
                None => println!("nothing new to seal"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_as_of(text: &str) -> anyhow::Result<AsOf> {
    if let Ok(position) = text.parse::<i64>() {
        return Ok(AsOf::Position(position));
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|error| {
        anyhow::anyhow!("--as-of must be an RFC 3339 time or a position ({error})")
    })?;
    Ok(AsOf::Time(time.with_timezone(&chrono::Utc)))
}

/// Waits (up to 10 s) until every event committed so far can be read: the log is read below
/// the server-wide horizon, so a transaction still open anywhere (another database's
/// included) would hide events committed after it began. Commands that answer from the log
/// or bring a read model up to date call this first, so their answer includes every write
/// that finished before they started.
pub(crate) async fn wait_for_committed_events(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let reader = event_store::LogReader::new(pool.clone());
    if !reader
        .wait_until_final(std::time::Duration::from_secs(10))
        .await?
    {
        tracing::warn!(
            "a long transaction holds back the log's horizon: the latest events may be missing"
        );
    }
    Ok(())
}

/// Prints the trial balance; brings the journal up to the log's end first.
async fn trial_balance(
    pool: &sqlx::PgPool,
    project: Option<&str>,
    live: bool,
    as_of: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use projections::journal::{self, Journal};
    let runtime = projections::ProjectionRuntime::new(pool.clone());
    let projection = Journal::default();
    runtime.ensure_current(&projection, |_, _| {}).await?;
    wait_for_committed_events(pool).await?;
    runtime
        .catch_up(&projection, projections::runtime::DEFAULT_BATCH_EVENTS)
        .await?;
    let as_of = match as_of.map(parse_as_of).transpose()? {
        None | Some(AsOf::Now) => journal::AsOf::Now,
        Some(AsOf::Position(position)) => journal::AsOf::Position(position),
        Some(AsOf::Time(time)) => journal::AsOf::Time(time),
    };
    let rows = journal::trial_balance(pool, project, live, as_of).await?;
    println!(
        "{:<22} {:<8} {:>16} {:>16} {:>16}",
        "account", "currency", "debit", "credit", "balance"
    );
    let mut totals: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
    for row in &rows {
        println!(
            "{:<22} {:<8} {:>16} {:>16} {:>16}",
            row.account,
            row.currency,
            row.debit_minor,
            row.credit_minor,
            row.balance_minor()
        );
        let total = totals.entry(row.currency.as_str()).or_default();
        total.0 += row.debit_minor;
        total.1 += row.credit_minor;
    }
    let mut balanced = true;
    for (currency, (debits, credits)) in &totals {
        let ok = debits == credits;
        balanced &= ok;
        println!(
            "{:<22} {:<8} {:>16} {:>16} {:>16}  {}",
            "total",
            currency,
            debits,
            credits,
            debits - credits,
            if ok { "balanced" } else { "UNBALANCED" }
        );
    }
    if totals.is_empty() {
        println!("check: no entries");
    } else if balanced {
        println!("check: debits equal credits in every currency (amounts in minor units)");
    } else {
        println!("check FAILED: debits differ from credits");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
