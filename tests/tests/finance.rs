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

/// Two £12.00 payments with 20% VAT inside (the project's default rate, carved out of each
/// receipt): one refunded whole in two parts, one refunded £4.00. Refunds give back their
/// share of the VAT: the report and the journal both count them net of it.
#[tokio::test]
async fn refunds_give_back_their_share_of_vat_in_the_journal_and_the_report() {
    use money_scenario::{create_project, customer_with_card, id, Api};
    let db = event_store::test_harness::TestDatabase::new().await;
    let (project, key) = create_project(&db.url);
    let (mut server, _gateway) =
        calmony_tests::Server::start_with_gateway(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let api = Api::new(&server, &key);
    let vat = id(&api
        .ok(
            "/v1/tax_rates",
            &[
                ("display_name", "VAT"),
                ("percentage", "20"),
                ("inclusive", "true"),
            ],
        )
        .await);
    let configured = run(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--default-tax-rate",
            &vat,
        ],
    );
    assert!(configured.status.success(), "{}", stderr_of(&configured));
    let (customer, method) = customer_with_card(&api, None, "pm_card_visa").await;
    let mut intents = Vec::new();
    for _ in 0..2 {
        let intent = api
            .ok(
                "/v1/payment_intents",
                &[
                    ("amount", "1200"),
                    ("currency", "gbp"),
                    ("customer", &customer),
                    ("payment_method", &method),
                    ("confirm", "true"),
                ],
            )
            .await;
        assert_eq!(intent["status"], "succeeded", "{intent}");
        intents.push(id(&intent));
    }
    // The receipts (issued just after each payment) carve £2.00 of VAT out of £12.00.
    for intent in &intents {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let receipt_id = commands::billing::receipt_invoice_id(intent);
            let (status, receipt) = api.get(&format!("/v1/invoices/{receipt_id}")).await;
            if status.is_success() && receipt["status"] == "paid" {
                assert_eq!(receipt["total_excluding_tax"], 1000, "{receipt}");
                assert_eq!(receipt["total"], 1200, "{receipt}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no receipt for {intent}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (intent, amount) in [
        (&intents[0], "400"),
        (&intents[0], "800"),
        (&intents[1], "400"),
    ] {
        let refund = api
            .ok(
                "/v1/refunds",
                &[("payment_intent", intent), ("amount", amount)],
            )
            .await;
        assert_eq!(refund["status"], "succeeded", "{refund}");
    }
    server.kill();
    let pool = db.pool.clone();
    assert!(LogReader::new(pool.clone())
        .wait_until_final(Duration::from_secs(10))
        .await
        .unwrap());
    let output = run(&db.url, &["ledger", "trial-balance", "--project", &project]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let trial = stdout_of(&output);
    let balance = |account: &'static str| calmony_tests::journal_balance(&pool, &project, account);
    // £20.00 of revenue and £4.00 of VAT booked; the first payment's refunds give back all
    // its £2.00 (67p, then 133p), the second's £4.00 a third of its £2.00 (67p).
    assert_eq!(balance("revenue").await, -2_000, "{trial}");
    assert_eq!(
        balance("refunds").await,
        (400 - 67) + (800 - 133) + (400 - 67),
        "{trial}"
    );
    assert_eq!(balance("vat_payable").await, -400 + 200 + 67, "{trial}");
    assert_eq!(
        balance("cardstream_clearing").await,
        2_400 - 1_600,
        "{trial}"
    );
    // Each line names its event; the view shows which: three refunds of three lines each.
    let refund_lines: Vec<(String, String)> = sqlx::query_as(
        "SELECT source_stream, account FROM journal.lines_with_source \
         WHERE project = $1 AND source_event = 'RefundSucceeded' ORDER BY entry, line",
    )
    .bind(&project)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(refund_lines.len(), 9, "{refund_lines:?}");
    // An event is booked once: booking one again (its first line again) is refused.
    let again =
        sqlx::query("INSERT INTO journal.lines SELECT * FROM journal.lines WHERE line = 1 LIMIT 1")
            .execute(&pool)
            .await;
    assert!(again.is_err(), "an entry booked twice was accepted");
    assert!(refund_lines
        .iter()
        .all(|(stream, _)| stream.starts_with("payment_intent/pi_")));

    let output = run(
        &db.url,
        &[
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
        ],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let csv = stdout_of(&output);
    assert_eq!(csv_total(&csv), (2_000, 1_333, 667), "{csv}");
}
