//! `calmony operators create | list | disable`: the people who sign in to the dashboard.
//!
//! The password is read from `CALMONY_OPERATOR_PASSWORD` when set (scripts), else from
//! standard input: typed twice without echo on a terminal, or the first line of a pipe. It
//! is never a flag (flags show in `ps`), never printed and never logged; only its argon2id
//! hash leaves this process.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use commands::operators::{create_operator, operator_id_for, operator_metadata};
use commands::{ids, CommandBus};
use domain::operator::{Operator, OperatorCommand};
use event_store::database::Database;
use event_store::EventStore;
use projections::operators::Operators;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;

/// Where scripts put the new operator's password.
const PASSWORD_VARIABLE: &str = "CALMONY_OPERATOR_PASSWORD";

#[derive(Debug, Subcommand)]
pub enum OperatorsCommand {
    /// Create an operator; prints its id alone on stdout. The password comes from
    /// CALMONY_OPERATOR_PASSWORD or standard input (at least 12 characters).
    Create {
        #[arg(long)]
        email: String,
        /// Shown in the dashboard; the part of the email before @ when not given.
        #[arg(long)]
        name: Option<String>,
    },
    /// List operators (id, email, name, created, disabled).
    List,
    /// Disable an operator: no more sign-ins, and its sessions end at once.
    Disable {
        #[arg(long)]
        email: String,
    },
}

fn bus(database: &Database) -> CommandBus {
    CommandBus::new(
        EventStore::new(database.pool.clone()),
        domain::upcasters::all(),
    )
}

/// Makes the change visible to the dashboard's sign-in before the command returns.
async fn refresh_operators(database: &Database) -> anyhow::Result<()> {
    let runtime = ProjectionRuntime::new(database.pool.clone());
    runtime.ensure_current(&Operators, |_, _| {}).await?;
    let reader = event_store::LogReader::new(database.pool.clone());
    reader
        .wait_until_final(std::time::Duration::from_secs(10))
        .await?;
    runtime.catch_up(&Operators, DEFAULT_BATCH_EVENTS).await?;
    Ok(())
}

/// A terminal line read with echo off (restored afterwards, whatever happens).
fn read_hidden_line(prompt: &str) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    // SAFETY: termios calls on standard input with a zeroed struct they fill in.
    let saved = unsafe {
        let mut saved: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
            anyhow::bail!("cannot read the terminal's settings");
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
        saved
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe {
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved);
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_password() -> anyhow::Result<String> {
    if let Some(password) = std::env::var_os(PASSWORD_VARIABLE) {
        return password
            .into_string()
            .map_err(|_| anyhow::anyhow!("{PASSWORD_VARIABLE} is not UTF-8"));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let password = read_hidden_line("Password: ")?;
        let again = read_hidden_line("Password again: ")?;
        anyhow::ensure!(password == again, "the two passwords differ");
        return Ok(password);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn run(database: &Database, command: OperatorsCommand) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now().timestamp();
    match command {
        OperatorsCommand::Create { email, name } => {
            let password = read_password()?;
            let created = create_operator(
                &bus(database),
                &email,
                name,
                &password,
                &operator_metadata("operator:cli", ids::new_id("req")),
                now,
            )
            .await?;
            refresh_operators(database).await?;
            println!("{}", created.aggregate.id);
        }
        OperatorsCommand::List => {
            refresh_operators(database).await?;
            let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
                "SELECT id, email, display_name, created, disabled_at FROM operators.operators \
                 ORDER BY email",
            )
            .fetch_all(&database.pool)
            .await?;
            let when = |at: i64| {
                chrono::DateTime::from_timestamp(at, 0)
                    .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default()
            };
            println!(
                "{:<28} {:<32} {:<24} {:<20} disabled",
                "operator", "email", "name", "created"
            );
            for (id, email, name, created, disabled_at) in rows {
                println!(
                    "{id:<28} {email:<32} {name:<24} {:<20} {}",
                    when(created),
                    disabled_at.map(when).unwrap_or_else(|| "-".into())
                );
            }
        }
        OperatorsCommand::Disable { email } => {
            let operator_id = operator_id_for(&email);
            bus(database)
                .execute::<Operator>(
                    &operator_id,
                    OperatorCommand::Disable { at: now },
                    &(),
                    &operator_metadata("operator:cli", ids::new_id("req")),
                )
                .await?;
            refresh_operators(database).await?;
            eprintln!("disabled {operator_id} ({email})");
        }
    }
    Ok(ExitCode::SUCCESS)
}
