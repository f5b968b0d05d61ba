//! Subscriptions end to end: real server processes, a real database, the Cardstream
//! simulator as its own process, and time moved by test clocks (never by sleeping through
//! it).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use calmony_tests::api::{id, project_key, Api};
use calmony_tests::Server;
use event_store::test_harness::TestDatabase;
use serde_json::Value;

const DAY: i64 = 86_400;
// 2026-01-31T12:00:00Z: month ends make the calendar arithmetic visible.
const START: i64 = 1_769_860_800;

/// A monthly £10 price.
async fn monthly_price(api: &Api) -> String {
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

/// A customer on `clock` whose default payment method is `card` (a test token).
async fn customer_with_card(api: &Api, clock: &str, card: &str) -> (String, String) {
    let customer = api
        .ok(
            "/v1/customers",
            &[("email", "payer@example.com"), ("test_clock", clock)],
        )
        .await;
    let customer = id(&customer);
    let method = api
        .ok(
            &format!("/v1/payment_methods/{card}/attach"),
            &[("customer", &customer)],
        )
        .await;
    let method = id(&method);
    api.ok(
        &format!("/v1/customers/{customer}"),
        &[("invoice_settings[default_payment_method]", &method)],
    )
    .await;
    (customer, method)
}

fn numbers_are_gapless(numbers: &[String]) {
    let mut sequence: Vec<i64> = numbers
        .iter()
        .map(|number| {
            number
                .rsplit('-')
                .next()
                .and_then(|digits| digits.parse().ok())
                .unwrap_or_else(|| panic!("bad invoice number {number}"))
        })
        .collect();
    sequence.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(numbers.len()).unwrap()).collect();
    assert_eq!(
        sequence, expected,
        "invoice numbers must be 1..n without gaps or repeats"
    );
    let prefixes: BTreeSet<&str> = numbers
        .iter()
        .filter_map(|number| number.rsplit_once('-').map(|(prefix, _)| prefix))
        .collect();
    assert_eq!(prefixes.len(), 1, "one prefix per project: {prefixes:?}");
}

#[tokio::test]
async fn a_year_of_monthly_renewals_on_a_test_clock() {
    let db = TestDatabase::new().await;
    let key = project_key(&db.url, "Billing Co", "test");
    let (server, _gateway) =
        Server::start_with_gateway(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let api = Api::new(&server, &key);
    let price = monthly_price(&api).await;
    let clock = api
        .ok(
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &START.to_string()), ("name", "year")],
        )
        .await;
    let clock = id(&clock);

    let mut subscriptions = Vec::new();
    for _ in 0..4 {
        let (customer, _) = customer_with_card(&api, &clock, "pm_card_visa").await;
        let subscription = api
            .ok(
                "/v1/subscriptions",
                &[("customer", &customer), ("items[0][price]", &price)],
            )
            .await;
        assert_eq!(subscription["status"], "active", "{subscription}");
        let item = &subscription["items"]["data"][0];
        assert_eq!(item["current_period_start"], START);
        // 31 January + 1 month = 28 February (clamped), as at Stripe.
        assert_eq!(item["current_period_end"], START + 28 * DAY);
        subscriptions.push((customer, id(&subscription)));
    }

    // Twelve months, one advance per month: each period is billed exactly once.
    let mut now = START;
    for month in 1..=12 {
        let subscription = api
            .fetch(&format!("/v1/subscriptions/{}", subscriptions[0].1))
            .await;
        let period_end = subscription["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap();
        assert!(period_end > now, "month {month}: {subscription}");
        now = period_end;
        api.advance(&clock, now).await;
    }

    let mut numbers = Vec::new();
    for (customer, subscription_id) in &subscriptions {
        let subscription = api
            .fetch(&format!("/v1/subscriptions/{subscription_id}"))
            .await;
        assert_eq!(subscription["status"], "active");
        let item = &subscription["items"]["data"][0];
        assert_eq!(item["current_period_start"], now, "{subscription}");
        let invoices = api.invoices_of(customer).await;
        assert_eq!(invoices.len(), 13, "the first invoice and twelve renewals");
        let mut periods = BTreeSet::new();
        for invoice in &invoices {
            assert_eq!(invoice["status"], "paid", "{invoice}");
            assert_eq!(invoice["amount_paid"], 1000);
            assert!(periods.insert(invoice["period_start"].as_i64().unwrap()));
            numbers.push(invoice["number"].as_str().unwrap().to_string());
        }
        assert_eq!(periods.len(), 13, "thirteen distinct periods");
    }
    numbers_are_gapless(&numbers);
}

#[tokio::test]
async fn dunning_retries_three_times_then_past_due_and_a_new_card_recovers() {
    let db = TestDatabase::new().await;
    let key = project_key(&db.url, "Billing Co", "test");
    let (server, _gateway) =
        Server::start_with_gateway(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let api = Api::new(&server, &key);
    let price = monthly_price(&api).await;
    let clock = id(&api
        .ok(
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &START.to_string())],
        )
        .await);
    let (customer, _) = customer_with_card(&api, &clock, "pm_card_visa").await;
    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &price)],
        )
        .await;
    assert_eq!(subscription["status"], "active");
    let subscription = id(&subscription);

    // The card on file starts failing (it attaches fine; every charge is declined).
    let failing = id(&api
        .ok(
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", &customer)],
        )
        .await);
    api.ok(
        &format!("/v1/subscriptions/{subscription}"),
        &[("default_payment_method", &failing)],
    )
    .await;

    let renewal_at = START + 28 * DAY;
    api.advance(&clock, renewal_at).await;
    let open = |invoices: Vec<Value>| {
        invoices
            .into_iter()
            .find(|invoice| invoice["status"] == "open")
            .expect("an open renewal invoice")
    };
    let invoice = open(api.invoices_of(&customer).await);
    assert_eq!(invoice["attempt_count"], 1, "{invoice}");
    assert_eq!(invoice["next_payment_attempt"], renewal_at + DAY);
    let status = api
        .fetch(&format!("/v1/subscriptions/{subscription}"))
        .await["status"]
        .clone();
    assert_eq!(status, "active", "still active while retrying");

    // Three retries, one day apart; the third failure makes it past_due.
    for retry in 1..=3 {
        api.advance(&clock, renewal_at + retry * DAY).await;
        let invoice = open(api.invoices_of(&customer).await);
        assert_eq!(invoice["attempt_count"], retry + 1, "{invoice}");
        let status = api
            .fetch(&format!("/v1/subscriptions/{subscription}"))
            .await["status"]
            .clone();
        if retry < 3 {
            assert_eq!(
                invoice["next_payment_attempt"],
                renewal_at + (retry + 1) * DAY
            );
            assert_eq!(status, "active");
        } else {
            assert_eq!(invoice["next_payment_attempt"], Value::Null);
            assert_eq!(status, "past_due");
        }
    }
    // Nothing more happens on its own.
    api.advance(&clock, renewal_at + 6 * DAY).await;
    let invoice = open(api.invoices_of(&customer).await);
    assert_eq!(invoice["attempt_count"], 4);

    // A new card pays the invoice; the subscription is active again.
    let good = id(&api
        .ok(
            "/v1/payment_methods/pm_card_mastercard/attach",
            &[("customer", &customer)],
        )
        .await);
    let paid = api
        .ok(
            &format!("/v1/invoices/{}/pay", id(&invoice)),
            &[("payment_method", &good)],
        )
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(
        paid["attempt_count"], 4,
        "a manual payment is not an automatic attempt"
    );
    let subscription = api
        .fetch(&format!("/v1/subscriptions/{subscription}"))
        .await;
    assert_eq!(subscription["status"], "active", "{subscription}");
}

#[tokio::test]
async fn two_servers_and_a_killed_one_renew_every_period_exactly_once() {
    let db = TestDatabase::new().await;
    let key = project_key(&db.url, "Billing Co", "test");
    let gateway = Server::cardstream_simulator();
    let direct_url = format!("{}/direct/", gateway.base_url);
    let env = [
        ("CALMONY_CARDSTREAM_TEST_URL", direct_url.as_str()),
        ("CALMONY_RATE_LIMIT_TEST", "10000"),
        // Three servers share PostgreSQL's 100 connections with the test itself.
        ("CALMONY_DB_MAX_CONNECTIONS", "20"),
    ];
    let first = Server::start(&db.url, &env);
    let second = Server::start(&db.url, &env);
    let mut doomed = Server::start(&db.url, &env);
    let api = Api::new(&first, &key);
    let price = monthly_price(&api).await;
    let clock = id(&api
        .ok(
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &START.to_string())],
        )
        .await);
    let mut customers = Vec::new();
    for _ in 0..24 {
        let (customer, _) = customer_with_card(&api, &clock, "pm_card_visa").await;
        let subscription = api
            .ok(
                "/v1/subscriptions",
                &[("customer", &customer), ("items[0][price]", &price)],
            )
            .await;
        assert_eq!(subscription["status"], "active");
        customers.push(customer);
    }

    // Ask the doomed server to advance (so it starts on the work), then kill it mid-run.
    let doomed_api = Api::new(&doomed, &key);
    doomed_api
        .ok(
            &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
            &[("frozen_time", &(START + 28 * DAY).to_string())],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    doomed.kill();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = Api::new(&second, &key)
            .fetch(&format!("/v1/test_helpers/test_clocks/{clock}"))
            .await;
        if state["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut numbers = Vec::new();
    let mut per_period: HashMap<(String, i64), usize> = HashMap::new();
    for customer in &customers {
        let invoices = api.invoices_of(customer).await;
        assert_eq!(invoices.len(), 2, "one invoice per period: {invoices:?}");
        for invoice in invoices {
            *per_period
                .entry((customer.clone(), invoice["period_start"].as_i64().unwrap()))
                .or_default() += 1;
            numbers.push(invoice["number"].as_str().unwrap().to_string());
        }
        let charges = api
            .fetch(&format!(
                "/v1/payment_intents?customer={customer}&limit=100"
            ))
            .await;
        let succeeded = charges["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|intent| intent["status"] == "succeeded")
            .count();
        assert!(succeeded <= 2, "never charged twice for a period");
    }
    assert!(per_period.values().all(|count| *count == 1));
    numbers_are_gapless(&numbers);
}
