//! Finance end to end: the revenue report replayed from the log, the double-entry journal's
//! revenue accounts and the dashboard projection's net revenue agree to the penny on a
//! scenario run through the real server (`money_scenario`).

mod money_scenario;

use std::time::Duration;

use calmony_tests::{run, stderr_of, stdout_of};
use event_store::LogReader;
use projections::dashboard::Dashboard;
use projections::journal::Journal;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;

/// The `total,gbp` row of a CSV revenue report: (invoiced net, refunded, revenue).
fn csv_total(csv: &str) -> (i64, i64, i64) {
    let line = csv
        .lines()
        .find(|line| line.starts_with("total,gbp,"))
        .unwrap_or_else(|| panic!("no gbp total in:\n{csv}"));
    let fields: Vec<i64> = line
        .split(',')
        .skip(2)
        .map(|field| field.parse().unwrap())
        .collect();
    (fields[0], fields[1], fields[2])
}

#[tokio::test]
async fn the_revenue_report_the_journal_and_the_dashboard_agree_to_the_penny() {
    let money_scenario::Scenario {
        db,
        mut server,
        gateway: _gateway,
        project,
        expected_revenue_minor,
        ..
    } = money_scenario::run_scenario(false).await;
    // Nothing more is written; the read models are brought to the log's end.
    server.kill();
    let pool = db.pool.clone();
    assert!(LogReader::new(pool.clone())
        .wait_until_final(Duration::from_secs(10))
        .await
        .unwrap());
    let runtime = ProjectionRuntime::new(pool.clone());
    runtime
        .catch_up(&Dashboard::default(), DEFAULT_BATCH_EVENTS)
        .await
        .unwrap();
    runtime
        .catch_up(&Journal::default(), DEFAULT_BATCH_EVENTS)
        .await
        .unwrap();

    // 1. The report, replayed from the log.
    let everything = [
        "reports",
        "revenue",
        "--from",
        "2000-01-01",
        "--to",
        "2100-12-31",
        "--project",
        &project,
        "--format",
        "csv",
    ];
    let output = run(&db.url, &everything);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let csv = stdout_of(&output);
    let (invoiced, refunded, report_revenue) = csv_total(&csv);
    assert_eq!(refunded, 700, "{csv}");
    assert_eq!(invoiced - refunded, report_revenue);
    // Grouped by month (payments today, renewals on the test clock), the rows add up.
    let mut by_month = everything.to_vec();
    by_month.extend(["--group-by", "month"]);
    let monthly = stdout_of(&run(&db.url, &by_month));
    let sum: i64 = monthly
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with("total,"))
        .map(|line| line.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(sum, report_revenue, "{monthly}");
    assert!(monthly.lines().count() >= 5, "several months: {monthly}");
    // A period before anything happened is empty.
    let output = run(
        &db.url,
        &[
            "reports",
            "revenue",
            "--from",
            "2001-01-01",
            "--to",
            "2001-12-31",
            "--format",
            "csv",
        ],
    );
    assert_eq!(stdout_of(&output).lines().count(), 1, "only the header");

    // 2. The journal: revenue less refunds, and the books balance.
    let (revenue_credit, refunds_debit): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(credit_minor - debit_minor) FILTER (WHERE account = 'revenue'), 0)::bigint, \
                coalesce(sum(debit_minor - credit_minor) FILTER (WHERE account = 'refunds'), 0)::bigint \
         FROM journal.balances WHERE project = $1 AND NOT livemode AND currency = 'gbp'",
    )
    .bind(&project)
    .fetch_one(&pool)
    .await
    .unwrap();
    let journal_revenue = revenue_credit - refunds_debit;
    let output = run(&db.url, &["ledger", "trial-balance", "--project", &project]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let trial = stdout_of(&output);
    assert!(
        trial.contains("check: debits equal credits in every currency"),
        "{trial}"
    );
    for account in ["cardstream_clearing", "revenue", "refunds"] {
        assert!(trial.contains(account), "{account} missing:\n{trial}");
    }
    // As of a time after everything: the same balances, summed from the lines.
    let output = run(
        &db.url,
        &[
            "ledger",
            "trial-balance",
            "--project",
            &project,
            "--as-of",
            "2100-01-01T00:00:00Z",
        ],
    );
    assert_eq!(stdout_of(&output), trial);
    // As of before the first event: nothing.
    let output = run(
        &db.url,
        &["ledger", "trial-balance", "--as-of", "2001-01-01T00:00:00Z"],
    );
    assert!(stdout_of(&output).contains("check: no entries"));

    // 3. The dashboard's net revenue (captured − refunded).
    let dashboard_revenue: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(gross_minor - refunded_minor), 0)::bigint FROM dashboard.daily_totals \
         WHERE project = $1 AND NOT livemode AND currency = 'gbp'",
    )
    .bind(&project)
    .fetch_one(&pool)
    .await
    .unwrap();

    assert_eq!(
        (report_revenue, journal_revenue, dashboard_revenue),
        (
            expected_revenue_minor,
            expected_revenue_minor,
            expected_revenue_minor
        ),
        "report, journal and dashboard must agree:\n{csv}\n{trial}"
    );
}
