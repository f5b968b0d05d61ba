//! Settlement to Griffin end to end: the real `calmony` binary (serve charging the Cardstream
//! simulator as a process; `settlements reconcile|list` as CLI runs) and `calmony
//! griffin-sim` as the bank, with credits booked through its `/_simulator/` control.

use calmony_tests::griffin::{book_credit, griffin, griffin_env, GRIFFIN_KEY};
use calmony_tests::{calmony, journal_balance, run, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use serde_json::{json, Value};

/// `calmony settlements <args>` with the Griffin settings; asserts success, answers stdout.
fn settlements(
    database_url: &str,
    simulator: &Server,
    extra: &[(&str, &str)],
    args: &[&str],
) -> String {
    let mut command = calmony(database_url);
    command.arg("settlements").args(args);
    for (name, value) in griffin_env(simulator) {
        command.env(name, value);
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    let output = command.output().expect("run calmony settlements");
    assert!(output.status.success(), "{}", stderr_of(&output));
    stdout_of(&output)
}

/// The reconcile pass's report (printed as JSON on stderr).
fn reconcile_report(database_url: &str, simulator: &Server, extra: &[(&str, &str)]) -> Value {
    let mut command = calmony(database_url);
    command.args(["settlements", "reconcile"]);
    for (name, value) in griffin_env(simulator) {
        command.env(name, value);
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    let output = command.output().expect("run calmony settlements reconcile");
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    let line = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no report in {stderr}"));
    serde_json::from_str(line).expect("report JSON")
}

/// A project with a test key: (project id, secret key).
fn new_project(database_url: &str, name: &str) -> (String, String) {
    let output = run(database_url, &["projects", "create", "--name", name]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    (project, stdout_of(&output).trim().to_string())
}

async fn post(server: &Server, key: &str, path: &str, form: &[(&str, &str)]) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base_url))
        .basic_auth(key, Some(""))
        .form(form)
        .send()
        .await
        .expect("reach calmony");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Charges each amount (pence) on a new customer's visa card; answers the intents' ids.
async fn charge(server: &Server, key: &str, amounts: &[&str]) -> Vec<String> {
    let customer = post(
        server,
        key,
        "/v1/customers",
        &[("email", "payer@example.com")],
    )
    .await;
    let customer = customer["id"].as_str().unwrap().to_string();
    let method = post(
        server,
        key,
        "/v1/payment_methods/pm_card_visa/attach",
        &[("customer", &customer)],
    )
    .await;
    let method = method["id"].as_str().unwrap().to_string();
    let mut intents = Vec::new();
    for amount in amounts {
        let intent = post(
            server,
            key,
            "/v1/payment_intents",
            &[
                ("amount", amount),
                ("currency", "gbp"),
                ("customer", &customer),
                ("payment_method", &method),
                ("confirm", "true"),
            ],
        )
        .await;
        assert_eq!(intent["status"], "succeeded", "{intent}");
        intents.push(intent["id"].as_str().unwrap().to_string());
    }
    intents
}

fn today_reference(project: &str) -> String {
    domain::settlement::settlement_reference(project, false, chrono::Utc::now().date_naive())
}

/// The CSV row (as fields) whose first or last column is `id`.
fn csv_row(csv: &str, id: &str) -> Vec<String> {
    csv.lines()
        .find(|line| line.starts_with(&format!("{id},")) || line.ends_with(&format!(",{id}")))
        .unwrap_or_else(|| panic!("no row for {id} in\n{csv}"))
        .split(',')
        .map(str::to_string)
        .collect()
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
async fn credits_are_matched_short_unexpected_or_matched_by_amount_and_recorded_once() {
    let db = TestDatabase::new().await;
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let (simulator, account) = griffin().await;
    let (acme, acme_key) = new_project(&db.url, "Acme");
    let (bolt, bolt_key) = new_project(&db.url, "Bolt");
    let (cog, cog_key) = new_project(&db.url, "Cog");

    // Acme: 20.00 + 15.00 captured, 5.00 refunded: 30.00 expected.
    let intents = charge(&server, &acme_key, &["2000", "1500"]).await;
    let refund = post(
        &server,
        &acme_key,
        "/v1/refunds",
        &[("payment_intent", &intents[0]), ("amount", "500")],
    )
    .await;
    assert_eq!(refund["status"], "succeeded", "{refund}");
    // Bolt: 10.00 expected; Cog: 7.77 expected.
    charge(&server, &bolt_key, &["1000"]).await;
    charge(&server, &cog_key, &["777"]).await;

    let day = chrono::Utc::now().date_naive().format("%Y%m%d").to_string();
    let acme_settlement = format!("stl_{acme}_test_gbp_{day}");
    let bolt_settlement = format!("stl_{bolt}_test_gbp_{day}");
    let cog_settlement = format!("stl_{cog}_test_gbp_{day}");
    let listed = settlements(&db.url, &simulator, &[], &["list", "--format", "csv"]);
    assert!(listed.starts_with("settlement,project,mode,day,currency,expected,received,difference,status,transaction\n"), "{listed}");
    let acme_row = csv_row(&listed, &acme_settlement);
    assert_eq!(acme_row[5], "30.00", "{listed}");
    assert_eq!(acme_row[8], "awaiting", "{listed}");

    // Acme paid in full by reference; Bolt short by 1.00; an unknown payment; Cog's paid
    // without a settlement reference, found by amount and day.
    let acme_credit = book_credit(&simulator, &account, 3000, &today_reference(&acme)).await;
    let bolt_credit = book_credit(&simulator, &account, 900, &today_reference(&bolt)).await;
    let stray_credit = book_credit(&simulator, &account, 1234, "INVOICE 42 THANK YOU").await;
    let cog_credit = book_credit(&simulator, &account, 777, "ACQUIRER PAYOUT").await;

    let report = reconcile_report(&db.url, &simulator, &[]);
    assert_eq!(report["expectations_recorded"], 3, "{report}");
    assert_eq!(report["matched"], 2, "{report}");
    assert_eq!(report["shortfall"], 1, "{report}");
    assert_eq!(report["unexpected"], 1, "{report}");
    assert_eq!(report["credits_seen"], 4, "{report}");

    let listed = settlements(&db.url, &simulator, &[], &["list", "--format", "csv"]);
    let acme_row = csv_row(&listed, &acme_settlement);
    assert_eq!(
        acme_row[5..],
        ["30.00", "30.00", "0.00", "matched", acme_credit.as_str()],
        "{listed}"
    );
    let bolt_row = csv_row(&listed, &bolt_settlement);
    assert_eq!(
        bolt_row[5..],
        ["10.00", "9.00", "-1.00", "shortfall", bolt_credit.as_str()],
        "{listed}"
    );
    let cog_row = csv_row(&listed, &cog_settlement);
    assert_eq!(cog_row[8], "matched", "{listed}");
    assert_eq!(cog_row[9], cog_credit, "{listed}");
    let stray_row = csv_row(&listed, &stray_credit);
    assert_eq!(stray_row[6], "12.34", "{listed}");
    assert_eq!(stray_row[8], "unexpected", "{listed}");

    // The events say the same.
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let shortfall: Value = sqlx::query_scalar(
        "SELECT payload::jsonb -> 'SettlementShortfall' FROM events \
         WHERE aggregate_type = 'settlement' AND event_type = 'SettlementShortfall'",
    )
    .fetch_one(&pool)
    .await
    .expect("one shortfall");
    assert_eq!(shortfall["expected"], 1000, "{shortfall}");
    assert_eq!(shortfall["received"], 900, "{shortfall}");
    assert_eq!(shortfall["difference"], 100, "{shortfall}");
    assert_eq!(shortfall["griffin_transaction"], bolt_credit.as_str());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_type = 'UnexpectedCredit'"
        )
        .await,
        1
    );

    // A second pass records nothing again. (Only the reconciler's streams count: the
    // server goes on issuing the charges' receipt invoices meanwhile.)
    const RECONCILED: &str =
        "SELECT count(*) FROM events WHERE aggregate_type IN ('settlement', 'bank_credit')";
    let events_before = count(&pool, RECONCILED).await;
    let again = reconcile_report(&db.url, &simulator, &[]);
    assert_eq!(again["matched"], 0, "{again}");
    assert_eq!(again["shortfall"], 0, "{again}");
    assert_eq!(again["unexpected"], 0, "{again}");
    assert_eq!(again["expectations_recorded"], 0, "{again}");
    assert_eq!(again["already_recorded"], 4, "{again}");
    assert_eq!(count(&pool, RECONCILED).await, events_before);

    // The table, scoped to a project.
    let table = settlements(&db.url, &simulator, &[], &["reconcile", "--project", &acme]);
    assert!(table.starts_with("settlement"), "{table}");
    assert!(
        table.contains(&acme_settlement) && table.contains("matched"),
        "{table}"
    );
    assert!(!table.contains(&bolt_settlement), "{table}");

    // Bolt's missing 1.00 arrives: matched.
    book_credit(&simulator, &account, 100, &today_reference(&bolt)).await;
    let report = reconcile_report(&db.url, &simulator, &[]);
    assert_eq!(report["matched"], 1, "{report}");
    let listed = settlements(&db.url, &simulator, &[], &["list", "--format", "csv"]);
    assert_eq!(
        csv_row(&listed, &bolt_settlement)[5..9],
        ["10.00", "10.00", "0.00", "matched"]
    );
}

#[tokio::test]
async fn concurrent_reconcilers_record_each_griffin_transaction_once() {
    let db = TestDatabase::new().await;
    let migrated = run(&db.url, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr_of(&migrated));
    let (simulator, account) = griffin().await;
    let mut booked = Vec::new();
    for index in 0..12 {
        booked.push(
            book_credit(
                &simulator,
                &account,
                100 + index,
                &format!("PAYMENT {index}"),
            )
            .await,
        );
    }
    let children: Vec<_> = (0..3)
        .map(|_| {
            let mut command = calmony(&db.url);
            command
                .args(["settlements", "reconcile"])
                .env("CALMONY_GRIFFIN_PAGE_SIZE", "5")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            for (name, value) in griffin_env(&simulator) {
                command.env(name, value);
            }
            command.spawn().expect("spawn a reconciler")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success(), "{}", stderr_of(&output));
    }
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let per_transaction: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events WHERE aggregate_type = 'bank_credit' \
         GROUP BY aggregate_id ORDER BY aggregate_id",
    )
    .fetch_all(&pool)
    .await
    .expect("query");
    assert_eq!(per_transaction.len(), booked.len(), "{per_transaction:?}");
    assert!(
        per_transaction.iter().all(|(_, events)| *events == 1),
        "{per_transaction:?}"
    );
    for id in &booked {
        assert!(
            per_transaction.iter().any(|(stream, _)| stream == id),
            "{id} missing"
        );
    }
}

#[tokio::test]
async fn reconcile_follows_griffin_pagination_past_the_first_page() {
    let db = TestDatabase::new().await;
    let migrated = run(&db.url, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr_of(&migrated));
    let (simulator, account) = griffin().await;
    for index in 0..7 {
        book_credit(
            &simulator,
            &account,
            500 + index,
            &format!("PAYOUT {index}"),
        )
        .await;
    }
    // Two per page: the opening deposit and seven credits take four pages.
    let page_size = [("CALMONY_GRIFFIN_PAGE_SIZE", "2")];
    let report = reconcile_report(&db.url, &simulator, &page_size);
    assert_eq!(report["transactions_read"], 8, "{report}");
    assert_eq!(report["credits_seen"], 7, "{report}");
    assert_eq!(report["unexpected"], 7, "{report}");
    let listed = settlements(
        &db.url,
        &simulator,
        &page_size,
        &["list", "--format", "csv"],
    );
    assert_eq!(
        listed
            .lines()
            .filter(|line| line.contains(",unexpected,"))
            .count(),
        7,
        "{listed}"
    );
    // Later credits are read from the watermark on, across pages again.
    for index in 0..3 {
        book_credit(&simulator, &account, 900 + index, &format!("LATER {index}")).await;
    }
    let report = reconcile_report(&db.url, &simulator, &page_size);
    assert_eq!(report["unexpected"], 3, "{report}");
    assert_eq!(report["already_recorded"], 7, "{report}");
}

#[tokio::test]
async fn a_verified_griffin_webhook_starts_a_pass_in_serve() {
    let db = TestDatabase::new().await;
    let (simulator, account) = griffin().await;
    let env = griffin_env(&simulator);
    let mut server_env: Vec<(&str, &str)> =
        env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    server_env.push(("CALMONY_SETTLEMENT_INTERVAL_SECONDS", "3600"));
    let (server, _gateway) = Server::start_with_gateway(&db.url, &server_env);

    // Unsigned webhooks are refused.
    let refused = reqwest::Client::new()
        .post(format!("{}/webhooks/griffin", server.base_url))
        .json(&json!({"event-type": "transaction-created"}))
        .send()
        .await
        .expect("reach calmony");
    assert_eq!(refused.status(), 401);

    // Register serve as the organisation's webhook, as an operator would at Griffin.
    let client = reqwest::Client::new();
    let auth = format!("GriffinAPIKey {GRIFFIN_KEY}");
    let index: Value = client
        .get(format!("{}/v0/index", simulator.base_url))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let organization: Value = client
        .get(format!(
            "{}{}",
            simulator.base_url,
            index["organization-url"].as_str().unwrap()
        ))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = client
        .post(format!(
            "{}{}",
            simulator.base_url,
            organization["organization-webhooks-url"].as_str().unwrap()
        ))
        .header("Authorization", &auth)
        .json(&json!({
            "webhook-destination-url": format!("{}/webhooks/griffin", server.base_url),
            "webhook-description": "calmony settlements",
        }))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );

    // serve's first pass ran at start; only the webhook can start another within the hour.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let credit = book_credit(&simulator, &account, 4242, "SOMETHING ELSE").await;
    let mut listed = String::new();
    for _ in 0..100 {
        let output = run(&db.url, &["settlements", "list", "--format", "csv"]);
        listed = stdout_of(&output);
        if listed.contains(&credit) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let row = csv_row(&listed, &credit);
    assert_eq!(row[8], "unexpected", "{listed}");
    assert_eq!(row[6], "42.42", "{listed}");
}

/// Signs the finance operator in to the dashboard and fetches `path`: (status, body).
async fn dashboard_page(server: &Server, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut cookies: Vec<String> = Vec::new();
    let keep = |response: &reqwest::Response, cookies: &mut Vec<String>| {
        for line in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let pair = line
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let name = pair.split('=').next().unwrap().to_string();
            cookies.retain(|cookie| !cookie.starts_with(&format!("{name}=")));
            cookies.push(pair);
        }
    };
    let form = client
        .get(format!("{}/dashboard/login", server.base_url))
        .send()
        .await
        .expect("login form");
    keep(&form, &mut cookies);
    let html = form.text().await.unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let start = html.find(marker).expect("a csrf field") + marker.len();
    let csrf = html[start..].split('"').next().unwrap().to_string();
    let signed_in = client
        .post(format!("{}/dashboard/login", server.base_url))
        .header(reqwest::header::COOKIE, cookies.join("; "))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "finance@example.com"),
            ("password", "a long passphrase"),
        ])
        .send()
        .await
        .expect("sign in");
    assert!(
        signed_in.status().is_redirection(),
        "{}",
        signed_in.status()
    );
    keep(&signed_in, &mut cookies);
    let page = client
        .get(format!("{}{path}", server.base_url))
        .header(reqwest::header::COOKIE, cookies.join("; "))
        .send()
        .await
        .expect("page");
    (page.status().as_u16(), page.text().await.unwrap())
}

#[tokio::test]
async fn fees_come_off_the_expectation_and_the_journal_books_fees_and_bank_credits() {
    let db = TestDatabase::new().await;
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let (simulator, account) = griffin().await;
    let (dyn_project, dyn_key) = new_project(&db.url, "Dyn");
    let configured = run(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &dyn_project,
            "--acquirer-fee",
            "1.4%+20",
        ],
    );
    assert!(configured.status.success(), "{}", stderr_of(&configured));
    let shown: Value = serde_json::from_str(&stdout_of(&configured)).expect("JSON");
    assert_eq!(
        shown["billing"]["acquirer_fee"],
        json!({"percent": "1.4", "fixed_minor": 20}),
        "{shown}"
    );
    // A bad rule is refused and changes nothing.
    let refused = run(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &dyn_project,
            "--acquirer-fee",
            "25%",
        ],
    );
    assert!(!refused.status.success());

    // 20.00 and 10.00 captured: fees 0.28 + 0.20 and 0.14 + 0.20 = 0.82; 5.00 refunded
    // (refunds give no fee back): 30.00 − 5.00 − 0.82 = 24.18 expected.
    let intents = charge(&server, &dyn_key, &["2000", "1000"]).await;
    post(
        &server,
        &dyn_key,
        "/v1/refunds",
        &[("payment_intent", &intents[0]), ("amount", "500")],
    )
    .await;
    let day = chrono::Utc::now().date_naive().format("%Y%m%d").to_string();
    let settlement = format!("stl_{dyn_project}_test_gbp_{day}");
    let listed = settlements(&db.url, &simulator, &[], &["list", "--format", "csv"]);
    assert_eq!(csv_row(&listed, &settlement)[5], "24.18", "{listed}");

    let credit = book_credit(&simulator, &account, 2418, &today_reference(&dyn_project)).await;
    let stray = book_credit(&simulator, &account, 999, "NOT OURS").await;
    let report = reconcile_report(&db.url, &simulator, &[]);
    assert_eq!(report["matched"], 1, "{report}");
    assert_eq!(report["unexpected"], 1, "{report}");

    // The journal: fees and the bank credit take the clearing account to zero.
    let trial = run(
        &db.url,
        &["ledger", "trial-balance", "--project", &dyn_project],
    );
    assert!(trial.status.success(), "{}", stderr_of(&trial));
    let trial = stdout_of(&trial);
    assert!(
        trial.contains("check: debits equal credits in every currency"),
        "{trial}"
    );
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    assert_eq!(
        journal_balance(&pool, &dyn_project, "fees").await,
        82,
        "{trial}"
    );
    assert_eq!(
        journal_balance(&pool, &dyn_project, "griffin_bank").await,
        2418,
        "{trial}"
    );
    assert_eq!(
        journal_balance(&pool, &dyn_project, "cardstream_clearing").await,
        0,
        "{trial}"
    );
    // The stray credit is the platform's (no project) until someone finds whose it is.
    assert_eq!(journal_balance(&pool, "", "griffin_bank").await, 999);
    assert_eq!(
        journal_balance(&pool, "", "unidentified_receipts").await,
        -999
    );

    // The dashboard's settlements page shows the day, its fees and the match.
    calmony_tests::create_operator(&db.url, "finance@example.com", "Fin", "a long passphrase");
    let (status, html) = dashboard_page(
        &server,
        &format!("/dashboard/projects/{dyn_project}/test/settlements"),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    for shown in [
        "£30.00",
        "£5.00",
        "£0.82",
        "£24.18",
        "data-status=\"matched\"",
        credit.as_str(),
    ] {
        assert!(html.contains(shown), "{shown} missing from\n{html}");
    }
    assert!(
        !html.contains(&stray),
        "another project's (no one's) credit shown"
    );
    // The stray credit is on the deployment's unexpected credits page.
    let (status, credits) = dashboard_page(&server, "/dashboard/bank-credits").await;
    assert_eq!(status, 200, "{credits}");
    assert!(
        credits.contains(&stray) && credits.contains("NOT OURS"),
        "{credits}"
    );
    assert!(credits.contains("£9.99"), "{credits}");
    assert!(
        !credits.contains(&credit),
        "a matched credit is not unexpected"
    );
    // The other mode has none.
    let (_, live) = dashboard_page(
        &server,
        &format!("/dashboard/projects/{dyn_project}/live/settlements"),
    )
    .await;
    assert!(live.contains("No settlements expected yet"), "{live}");

    // The settlement and the credit replay from their streams.
    let replayed = run(
        &db.url,
        &[
            "ledger",
            "replay",
            "--as-of",
            "2100-01-01T00:00:00Z",
            "--stream",
            &format!("settlement/{settlement}"),
        ],
    );
    assert!(replayed.status.success(), "{}", stderr_of(&replayed));
    let replayed: Value = serde_json::from_str(&stdout_of(&replayed)).expect("JSON");
    assert_eq!(replayed["state"]["expected_net"], 2418, "{replayed}");
    assert_eq!(replayed["state"]["totals"]["fees"], 82, "{replayed}");
    assert_eq!(replayed["state"]["credits"], json!([credit]), "{replayed}");
    let replayed = run(
        &db.url,
        &[
            "ledger",
            "replay",
            "--as-of",
            "2100-01-01T00:00:00Z",
            "--stream",
            &format!("bank_credit/{stray}"),
        ],
    );
    assert!(replayed.status.success(), "{}", stderr_of(&replayed));
}
