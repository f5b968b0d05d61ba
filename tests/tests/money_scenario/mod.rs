//! A money-moving scenario through the real server, shared by the finance and the
//! rebuild-equals-live tests: one-off payments (one captured manually), a partial refund, a
//! declined guest payment, three subscriptions renewed over three months on a test clock,
//! one renewal declined and paid on retry with a new card; optionally (`write_offs`) a
//! subscription that goes `past_due` through the whole dunning schedule, its invoice marked
//! uncollectible, and a manual invoice voided.
//!
//! Helpers copied from `billing_subscriptions.rs` (each test file is its own crate).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use calmony_tests::{run, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

pub const DAY: i64 = 86_400;
// 2026-01-31T12:00:00Z.
pub const START: i64 = 1_769_860_800;

pub struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    pub fn new(server: &Server, key: &str) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: server.base_url.clone(),
            key: key.to_string(),
        }
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .form(form)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn ok(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self.post(path, form).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    pub async fn fetch(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Moves the clock and waits until the work due by then is done.
    pub async fn advance(&self, clock: &str, to: i64) {
        let body = self
            .ok(
                &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
                &[("frozen_time", &to.to_string())],
            )
            .await;
        assert_eq!(body["status"], "advancing", "{body}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let clock = self
                .fetch(&format!("/v1/test_helpers/test_clocks/{clock}"))
                .await;
            if clock["status"] == "ready" && clock["frozen_time"] == to {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the clock never became ready: {clock}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn invoices_of(&self, customer: &str) -> Vec<Value> {
        let list = self
            .fetch(&format!("/v1/invoices?customer={customer}&limit=100"))
            .await;
        list["data"].as_array().cloned().unwrap_or_default()
    }
}

/// A project and its test key: (project, key).
pub fn create_project(database_url: &str) -> (String, String) {
    let output = run(
        database_url,
        &["projects", "create", "--name", "Finance Co"],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    (project, stdout_of(&output).trim().to_string())
}

pub fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

/// A monthly £10 price.
pub async fn monthly_price(api: &Api) -> String {
    let product = api.ok("/v1/products", &[("name", "Pro plan")]).await;
    let price = api
        .ok(
            "/v1/prices",
            &[
                ("product", &id(&product)),
                ("currency", "gbp"),
                ("unit_amount", "1000"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    id(&price)
}

/// A customer (on `clock`, if any) whose default payment method is `card`.
pub async fn customer_with_card(api: &Api, clock: Option<&str>, card: &str) -> (String, String) {
    let mut form = vec![("email", "payer@example.com")];
    if let Some(clock) = clock {
        form.push(("test_clock", clock));
    }
    let customer = id(&api.ok("/v1/customers", &form).await);
    let method = id(&api
        .ok(
            &format!("/v1/payment_methods/{card}/attach"),
            &[("customer", &customer)],
        )
        .await);
    api.ok(
        &format!("/v1/customers/{customer}"),
        &[("invoice_settings[default_payment_method]", &method)],
    )
    .await;
    (customer, method)
}

pub struct Scenario {
    pub db: TestDatabase,
    pub server: Server,
    pub gateway: Server,
    pub project: String,
    pub api: Api,
    /// What the scenario should come to: net revenue in pence (no tax anywhere).
    pub expected_revenue_minor: i64,
}

/// One-off payments (`amounts`) by one customer; the second is partially refunded and the
/// last is captured manually. Returns the revenue they make.
async fn one_off_payments(api: &Api) -> i64 {
    let (buyer, method) = customer_with_card(api, None, "pm_card_visa").await;
    let mut intents = Vec::new();
    for amount in ["1000", "2500", "4000"] {
        let intent = api
            .ok(
                "/v1/payment_intents",
                &[
                    ("amount", amount),
                    ("currency", "gbp"),
                    ("customer", &buyer),
                    ("payment_method", &method),
                    ("confirm", "true"),
                ],
            )
            .await;
        assert_eq!(intent["status"], "succeeded", "{intent}");
        intents.push(id(&intent));
    }
    let manual = api
        .ok(
            "/v1/payment_intents",
            &[
                ("amount", "1500"),
                ("currency", "gbp"),
                ("customer", &buyer),
                ("payment_method", &method),
                ("capture_method", "manual"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(manual["status"], "requires_capture", "{manual}");
    let captured = api
        .ok(&format!("/v1/payment_intents/{}/capture", id(&manual)), &[])
        .await;
    assert_eq!(captured["status"], "succeeded", "{captured}");
    let (status, declined) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "999"),
                ("currency", "gbp"),
                ("payment_method", "pm_card_chargeDeclinedInsufficientFunds"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(status, 402, "{declined}");
    let refund = api
        .ok(
            "/v1/refunds",
            &[("payment_intent", &intents[1]), ("amount", "700")],
        )
        .await;
    assert_eq!(refund["status"], "succeeded", "{refund}");
    // The receipt invoices come from the billing runner within about a second.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let invoices = api.invoices_of(&buyer).await;
        let paid = invoices
            .iter()
            .filter(|invoice| invoice["status"] == "paid")
            .count();
        if paid == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the receipts never came: {invoices:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    1000 + 2500 + 4000 + 1500 - 700
}

pub async fn run_scenario(write_offs: bool) -> Scenario {
    let db = TestDatabase::new().await;
    let (project, key) = create_project(&db.url);
    // The acquirer keeps a fee of each capture (settlements come net of it; revenue does not
    // change).
    let configured = run(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--acquirer-fee",
            "1.4%+20",
        ],
    );
    assert!(configured.status.success(), "{}", stderr_of(&configured));
    let (server, gateway) =
        Server::start_with_gateway(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let api = Api::new(&server, &key);
    let mut expected = one_off_payments(&api).await;

    let price = monthly_price(&api).await;
    let clock = id(&api
        .ok(
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &START.to_string()), ("name", "quarter")],
        )
        .await);
    let mut subscriptions = Vec::new();
    for card in ["pm_card_visa", "pm_card_visa", "pm_card_visa"] {
        let (customer, _) = customer_with_card(&api, Some(&clock), card).await;
        let subscription = api
            .ok(
                "/v1/subscriptions",
                &[("customer", &customer), ("items[0][price]", &price)],
            )
            .await;
        assert_eq!(subscription["status"], "active", "{subscription}");
        subscriptions.push((customer, id(&subscription)));
    }
    // The third customer's card starts failing before the first renewal.
    let (failing_customer, failing_subscription) = subscriptions[2].clone();
    let failing = id(&api
        .ok(
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", &failing_customer)],
        )
        .await);
    api.ok(
        &format!("/v1/subscriptions/{failing_subscription}"),
        &[("default_payment_method", &failing)],
    )
    .await;
    let mut past_due = None;
    if write_offs {
        let (customer, _) = customer_with_card(&api, Some(&clock), "pm_card_visa").await;
        let subscription = id(&api
            .ok(
                "/v1/subscriptions",
                &[("customer", &customer), ("items[0][price]", &price)],
            )
            .await);
        let bad = id(&api
            .ok(
                "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
                &[("customer", &customer)],
            )
            .await);
        api.ok(
            &format!("/v1/subscriptions/{subscription}"),
            &[("default_payment_method", &bad)],
        )
        .await;
        past_due = Some((customer, subscription));
    }

    let mut now = START;
    for month in 1..=3 {
        let subscription = api
            .fetch(&format!("/v1/subscriptions/{}", subscriptions[0].1))
            .await;
        let period_end = subscription["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap();
        assert!(period_end > now, "month {month}: {subscription}");
        now = period_end;
        api.advance(&clock, now).await;
        if month == 1 {
            // One dunning failure: the renewal is declined, then paid with a new card,
            // which also pays the later renewals.
            let open = api
                .invoices_of(&failing_customer)
                .await
                .into_iter()
                .find(|invoice| invoice["status"] == "open")
                .expect("the declined renewal is open");
            assert_eq!(open["attempt_count"], 1, "{open}");
            let good = id(&api
                .ok(
                    "/v1/payment_methods/pm_card_mastercard/attach",
                    &[("customer", &failing_customer)],
                )
                .await);
            let paid = api
                .ok(
                    &format!("/v1/invoices/{}/pay", id(&open)),
                    &[("payment_method", &good)],
                )
                .await;
            assert_eq!(paid["status"], "paid", "{paid}");
            api.ok(
                &format!("/v1/subscriptions/{failing_subscription}"),
                &[("default_payment_method", &good)],
            )
            .await;
        }
    }
    for (customer, _) in &subscriptions {
        let invoices = api.invoices_of(customer).await;
        assert_eq!(invoices.len(), 4, "the first invoice and three renewals");
        for invoice in &invoices {
            assert_eq!(invoice["status"], "paid", "{invoice}");
        }
    }
    expected += 3 * 4 * 1000;

    if let Some((customer, _)) = past_due {
        // The first renewal failed and retries ran out over the months: past_due, and its
        // open invoices are written off.
        for invoice in api.invoices_of(&customer).await {
            if invoice["status"] == "open" {
                api.ok(
                    &format!("/v1/invoices/{}/mark_uncollectible", id(&invoice)),
                    &[],
                )
                .await;
            }
        }
        let draft = api.ok("/v1/invoices", &[("customer", &customer)]).await;
        api.ok(
            "/v1/invoiceitems",
            &[
                ("customer", &customer),
                ("invoice", &id(&draft)),
                ("amount", "1234"),
                ("currency", "gbp"),
                ("description", "Consulting"),
            ],
        )
        .await;
        let finalized = api
            .ok(&format!("/v1/invoices/{}/finalize", id(&draft)), &[])
            .await;
        assert_eq!(finalized["status"], "open", "{finalized}");
        let voided = api
            .ok(&format!("/v1/invoices/{}/void", id(&draft)), &[])
            .await;
        assert_eq!(voided["status"], "void", "{voided}");
    }

    Scenario {
        db,
        server,
        gateway,
        project,
        api,
        expected_revenue_minor: expected,
    }
}
