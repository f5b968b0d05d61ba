//! Rebuild equals live: after a scenario through the real server (charges, a manual
//! capture, a refund, subscriptions renewed on a test clock, dunning to `past_due`, a
//! write-off and a voided invoice, an acquirer fee on every capture, and the day settled
//! through the Griffin simulator 1p short, beside a stray credit), every projection in `projections::all` is rebuilt from
//! zero by the runtime's own rebuild (fresh schema, swap) and every table of it must equal
//! what the live follower had built, row for row (as multisets: `EXCEPT ALL` both ways).
//!
//! Excluded, because they are not derived from the log:
//! - `billing.leases`: which worker holds which billing job until when (process-local
//!   coordination; a rebuild starts it empty by design).
//!
//! Not covered: the webhook relay's fan-out. It is not in `projections::all` (it reads
//! after `api` and the runtime refuses to rebuild it): its tables record deliveries made to
//! the outside world (attempts, times, leases), which a rebuild must never redo.

mod money_scenario;

use std::time::Duration;

use calmony_tests::{stderr_of, stdout_of};
use event_store::LogReader;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;
use sqlx::PgPool;

/// (schema, table) pairs not compared, with the reason in the module's documentation.
const EXCLUDED_TABLES: [(&str, &str); 1] = [("billing", "leases")];

async fn tables_of(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Rows of `left` missing from `right` (as JSON), counting duplicates, at most 5.
async fn missing(pool: &PgPool, left: &str, right: &str) -> (i64, Vec<String>) {
    let sql = format!(
        "SELECT to_jsonb(t)::text FROM {left} t EXCEPT ALL SELECT to_jsonb(t)::text FROM {right} t"
    );
    let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT * FROM ({sql}) d LIMIT 5"))
        .fetch_all(pool)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({sql}) d"))
        .fetch_one(pool)
        .await
        .unwrap();
    (count, rows)
}

/// Settles the scenario's day through the Griffin simulator: the acquirer pays 1p short of
/// what was expected, and a stray credit arrives; the reconciler records both.
async fn settle(database_url: &str, project: &str) {
    use calmony_tests::griffin::{book_credit, griffin, griffin_env};
    let (simulator, account) = griffin().await;
    let settlements = |args: &[&str]| {
        let mut command = calmony_tests::calmony(database_url);
        command.arg("settlements").args(args);
        for (name, value) in griffin_env(&simulator) {
            command.env(name, value);
        }
        let output = command.output().expect("run calmony settlements");
        assert!(output.status.success(), "{}", stderr_of(&output));
        stdout_of(&output)
    };
    let listed = settlements(&["list", "--project", project, "--format", "csv"]);
    let row: Vec<&str> = listed
        .lines()
        .find(|line| line.contains(project) && line.contains(",test,"))
        .unwrap_or_else(|| panic!("no settlement expected for {project}:\n{listed}"))
        .split(',')
        .collect();
    // Pounds with two decimals, as listed.
    let pence: i64 = row[5].replace('.', "").parse().expect("an amount");
    assert!(pence > 100, "{listed}");
    let reference = domain::settlement::settlement_reference(
        project,
        false,
        chrono::NaiveDate::parse_from_str(row[3], "%Y-%m-%d").expect("a day"),
    );
    book_credit(&simulator, &account, pence - 1, &reference).await;
    book_credit(&simulator, &account, 4_321, "NOBODY KNOWS").await;
    settlements(&["reconcile"]);
    let listed = settlements(&["list", "--format", "csv"]);
    assert!(listed.contains("shortfall"), "{listed}");
    assert!(listed.contains("unexpected"), "{listed}");
}

#[tokio::test]
async fn every_projection_rebuilt_from_zero_equals_the_live_one_row_for_row() {
    let money_scenario::Scenario {
        db,
        mut server,
        gateway: _gateway,
        project,
        ..
    } = money_scenario::run_scenario(true).await;
    // The api read model renders hosted URLs with the server's public URL.
    let public_url = server.base_url.clone();
    server.kill();
    settle(&db.url, &project).await;
    let pool = db.pool.clone();
    assert!(LogReader::new(pool.clone())
        .wait_until_final(Duration::from_secs(10))
        .await
        .unwrap());
    let runtime = ProjectionRuntime::new(pool.clone());
    let mut failures = Vec::new();
    let mut compared = Vec::new();
    for projection in projections::all(&public_url) {
        let name = projection.name();
        runtime
            .catch_up(projection.as_ref(), DEFAULT_BATCH_EVENTS)
            .await
            .unwrap();
        let snapshot = format!("{name}__live_snapshot");
        sqlx::query(&format!("CREATE SCHEMA \"{snapshot}\""))
            .execute(&pool)
            .await
            .unwrap();
        let live_tables = tables_of(&pool, name).await;
        for table in &live_tables {
            sqlx::query(&format!(
                "CREATE TABLE \"{snapshot}\".\"{table}\" AS SELECT * FROM \"{name}\".\"{table}\""
            ))
            .execute(&pool)
            .await
            .unwrap();
        }
        let applied = runtime
            .rebuild(projection.as_ref(), |_, _| {})
            .await
            .unwrap();
        assert!(applied > 0, "{name} rebuilt from nothing");
        let rebuilt_tables = tables_of(&pool, name).await;
        assert_eq!(live_tables, rebuilt_tables, "{name}: the same tables");
        for table in &live_tables {
            if EXCLUDED_TABLES.contains(&(name, table.as_str())) {
                continue;
            }
            let live = format!("\"{snapshot}\".\"{table}\"");
            let rebuilt = format!("\"{name}\".\"{table}\"");
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {live}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            let (only_live, live_examples) = missing(&pool, &live, &rebuilt).await;
            let (only_rebuilt, rebuilt_examples) = missing(&pool, &rebuilt, &live).await;
            if only_live > 0 || only_rebuilt > 0 {
                failures.push(format!(
                    "{name}.{table}: {only_live} live rows not rebuilt, e.g. {live_examples:#?}\n\
                     {only_rebuilt} rebuilt rows not live, e.g. {rebuilt_examples:#?}"
                ));
            }
            compared.push(format!("{name}.{table} ({rows} rows)"));
        }
    }
    assert!(
        failures.is_empty(),
        "rebuilt projections differ from live ones:\n{}",
        failures.join("\n")
    );
    // The scenario reached the tables that matter.
    for table in [
        "journal.lines",
        "journal.settlements",
        "settlements.settlements",
        "settlements.credits",
        "dashboard.daily_totals",
        "api.objects",
        "billing.invoices",
    ] {
        assert!(
            compared.iter().any(
                |entry| entry.starts_with(&format!("{table} (")) && !entry.contains("(0 rows)")
            ),
            "{table} empty or not compared: {compared:?}"
        );
    }
    // The journal saw the write-off and the void.
    let written_off: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(debit_minor), 0)::bigint FROM journal.lines WHERE account = 'bad_debt'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(written_off > 0, "a write-off was booked");
    eprintln!("compared: {}", compared.join(", "));
}
