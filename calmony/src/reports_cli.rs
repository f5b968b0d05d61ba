//! `calmony reports revenue`: finance's reports, replayed from the event log itself (never
//! from a projection's tables; see `projections::revenue` for the definition).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Subcommand;
use event_store::database::Database;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use projections::revenue::{revenue_report, GroupBy, RevenueQuery, RevenueRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grouping {
    Day,
    Month,
    Product,
    Customer,
}

#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Revenue per currency: net amounts of invoices paid in the period minus refunds that
    /// succeeded in it (README: "Finance").
    Revenue {
        /// First UTC day included (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// Last UTC day included (YYYY-MM-DD).
        #[arg(long)]
        to: NaiveDate,
        /// Only this project (default: every project).
        #[arg(long)]
        project: Option<String>,
        /// Live-mode events (default: test mode).
        #[arg(long)]
        live: bool,
        #[arg(long, value_enum, default_value_t = Grouping::Month)]
        group_by: Grouping,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub async fn run(database: &Database, command: ReportsCommand) -> anyhow::Result<ExitCode> {
    let ReportsCommand::Revenue {
        from,
        to,
        project,
        live,
        group_by,
        format,
    } = command;
    if to < from {
        anyhow::bail!("--to ({to}) is before --from ({from})");
    }
    let query = RevenueQuery {
        from,
        to,
        project,
        livemode: live,
        group_by: match group_by {
            Grouping::Day => GroupBy::Day,
            Grouping::Month => GroupBy::Month,
            Grouping::Product => GroupBy::Product,
            Grouping::Customer => GroupBy::Customer,
        },
    };
    // The bar draws on stderr, and only when a person is watching stdout.
    let bar = if std::io::stdout().is_terminal() {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "replaying the log [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    crate::ledger_cli::wait_for_committed_events(&database.pool).await?;
    let report = revenue_report(&database.pool, query, |read, total| {
        bar.set_length(total);
        bar.set_position(read);
    })
    .await?;
    bar.finish_and_clear();

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Csv => {
            writeln!(
                out,
                "group,currency,invoiced_net_minor,refunded_minor,revenue_minor"
            )?;
            for row in report.rows.iter().chain(report.totals.iter()) {
                writeln!(
                    out,
                    "{},{},{},{},{}",
                    csv_field(&row.group),
                    row.currency,
                    row.invoiced_net_minor,
                    row.refunded_minor,
                    row.revenue_minor()
                )?;
            }
        }
        Format::Table => {
            writeln!(
                out,
                "{:<32} {:<8} {:>16} {:>16} {:>16}",
                "group", "currency", "invoiced net", "refunded", "revenue"
            )?;
            let print = |out: &mut dyn Write, row: &RevenueRow| {
                writeln!(
                    out,
                    "{:<32} {:<8} {:>16} {:>16} {:>16}",
                    row.group,
                    row.currency,
                    major(row.invoiced_net_minor, &row.currency),
                    major(row.refunded_minor, &row.currency),
                    major(row.revenue_minor(), &row.currency)
                )
            };
            for row in &report.rows {
                print(&mut out, row)?;
            }
            for row in &report.totals {
                print(&mut out, row)?;
            }
            writeln!(out, "({} events replayed)", report.events_read)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Minor units in the currency's major unit (`1234` GBP → `12.34`).
fn major(minor: i64, currency: &str) -> String {
    let exponent = domain::money::Currency::parse(currency)
        .map(|currency| currency.minor_unit_exponent())
        .unwrap_or(2) as u32;
    if exponent == 0 {
        return minor.to_string();
    }
    let scale = 10i64.pow(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale as u64,
        magnitude % scale as u64,
        width = exponent as usize
    )
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
