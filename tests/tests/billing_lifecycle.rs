//! A subscription's life end to end: trials, cancellation (at period end and at once),
//! mid-period changes with prorations, the first invoice's payment behaviours, validation
//! and idempotent creation. Real server processes, a real database, the Cardstream
//! simulator, and time moved by test clocks only.

use calmony_tests::api::{id, project_key, Api};
use calmony_tests::{run, stdout_of, Server};
use chrono::{DateTime, Months};
use event_store::test_harness::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
// 2026-01-31T12:00:00Z.
const START: i64 = 1_769_860_800;
// 2026-03-01T12:00:00Z: the first period runs to 1 April, 31 days.
const MARCH_1: i64 = START + 29 * DAY;

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// `at` plus one calendar month (clamped to the month's end), as Stripe bills a month.
fn one_month_after(at: i64) -> i64 {
    DateTime::from_timestamp(at, 0)
        .and_then(|time| time.checked_add_months(Months::new(1)))
        .expect("a valid date")
        .timestamp()
}

/// `amount × remaining / total`, rounded half away from zero (the product's proration rule,
/// by whole days).
fn prorated(amount: i64, remaining_days: i64, total_days: i64) -> i64 {
    let numerator = amount * remaining_days;
    let rounded = (2 * numerator.abs() + total_days) / (2 * total_days);
    rounded * numerator.signum()
}

/// A server with its gateway, a test key, a monthly £10 price and a test clock at `start`.
struct World {
    api: Api,
    price: String,
    clock: String,
    // Dropped in this order: the server stops before its database goes.
    _server: Server,
    _gateway: Server,
    db: TestDatabase,
}

async fn world(start: i64) -> World {
    let db = TestDatabase::new().await;
    let key = project_key(&db.url, "Billing Co", "test");
    let (server, gateway) =
        Server::start_with_gateway(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let api = Api::new(&server, &key);
    let price = monthly_price(&api).await;
    let clock = id(&api
        .ok(
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &start.to_string())],
        )
        .await);
    World {
        api,
        price,
        clock,
        _server: server,
        _gateway: gateway,
        db,
    }
}

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

/// `calmony ledger replay` of `stream` as of `as_of` (a position or a time): its state.
fn replay(db: &TestDatabase, stream: &str, as_of: &str) -> Value {
    let output = run(
        &db.url,
        &["ledger", "replay", "--as-of", as_of, "--stream", stream],
    );
    assert!(output.status.success(), "replay {stream}: {output:?}");
    let replayed: Value = serde_json::from_str(&stdout_of(&output)).expect("JSON");
    replayed["state"].clone()
}

/// The position of a stream's first event.
async fn first_position(db: &TestDatabase, aggregate_id: &str) -> i64 {
    sqlx::query_scalar("SELECT min(position) FROM events WHERE aggregate_id = $1")
        .bind(aggregate_id)
        .fetch_one(&db.pool)
        .await
        .expect("a position")
}

fn assert_invalid_request(status: StatusCode, body: &Value, param: Option<&str>) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    if let Some(param) = param {
        assert_eq!(body["error"]["param"], param, "{body}");
    }
}

#[tokio::test]
async fn a_trial_costs_nothing_then_the_first_period_is_charged_from_trial_end() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;

    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", &world.price),
                ("trial_period_days", "14"),
            ],
        )
        .await;
    let trial_end = START + 14 * DAY;
    assert_eq!(subscription["status"], "trialing", "{subscription}");
    assert_eq!(subscription["trial_start"], START);
    assert_eq!(subscription["trial_end"], trial_end);
    let item = &subscription["items"]["data"][0];
    assert_eq!(item["current_period_start"], START);
    assert_eq!(item["current_period_end"], trial_end);
    let first = api
        .invoice(subscription["latest_invoice"].as_str().unwrap())
        .await;
    assert_eq!(first["total"], 0, "{first}");
    assert_eq!(first["status"], "paid", "{first}");
    assert_eq!(first["billing_reason"], "subscription_create");
    assert!(
        api.succeeded_charges_of(&customer).await.is_empty(),
        "a trial charges nothing"
    );
    let subscription = id(&subscription);

    // The day before the trial ends nothing happens.
    api.advance(&world.clock, trial_end - DAY).await;
    assert_eq!(api.subscription(&subscription).await["status"], "trialing");
    assert_eq!(api.invoices_of(&customer).await.len(), 1);

    api.advance(&world.clock, trial_end + HOUR).await;
    let after = api.subscription(&subscription).await;
    assert_eq!(after["status"], "active", "{after}");
    let item = &after["items"]["data"][0];
    assert_eq!(item["current_period_start"], trial_end, "{after}");
    assert_eq!(item["current_period_end"], one_month_after(trial_end));
    let renewal = api.invoice(after["latest_invoice"].as_str().unwrap()).await;
    assert_eq!(renewal["billing_reason"], "subscription_cycle", "{renewal}");
    assert_eq!(renewal["status"], "paid", "{renewal}");
    assert_eq!(renewal["total"], 1000);
    assert_eq!(renewal["amount_paid"], 1000);
    assert_eq!(renewal["period_start"], trial_end);
    assert_eq!(renewal["period_end"], one_month_after(trial_end));
    let charges = api.succeeded_charges_of(&customer).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["amount"], 1000);
    assert_eq!(charges[0]["currency"], "gbp");

    // The ledger replays the billing aggregates, then and now.
    let created_at = first_position(&world.db, &subscription).await.to_string();
    let then = replay(
        &world.db,
        &format!("subscription/{subscription}"),
        &created_at,
    );
    assert_eq!(then["status"], "trialing", "{then}");
    let now = replay(
        &world.db,
        &format!("subscription/{subscription}"),
        "2999-01-01T00:00:00Z",
    );
    assert_eq!(now["status"], "active", "{now}");
    assert_eq!(now["current_period_start"], trial_end);
    let invoice = replay(
        &world.db,
        &format!("invoice/{}", id(&renewal)),
        "2999-01-01T00:00:00Z",
    );
    assert_eq!(invoice["status"], "paid", "{invoice}");
    assert_eq!(invoice["amount_paid"], 1000);
    let clock = replay(
        &world.db,
        &format!("test_clock/{}", world.clock),
        "2999-01-01T00:00:00Z",
    );
    assert_eq!(clock["frozen_time"], trial_end + HOUR, "{clock}");
}

#[tokio::test]
async fn cancel_at_period_end_ends_the_subscription_without_a_new_invoice() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;
    let subscription = id(&api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &world.price)],
        )
        .await);
    let path = format!("/v1/subscriptions/{subscription}");
    // Asked for, withdrawn, asked for again: `canceled_at` is the latest request's time.
    let updated = api.ok(&path, &[("cancel_at_period_end", "true")]).await;
    assert_eq!(updated["canceled_at"], START, "{updated}");
    api.advance(&world.clock, START + 2 * DAY).await;
    let withdrawn = api.ok(&path, &[("cancel_at_period_end", "false")]).await;
    assert_eq!(withdrawn["cancel_at_period_end"], false, "{withdrawn}");
    assert_eq!(withdrawn["canceled_at"], Value::Null, "{withdrawn}");
    assert_eq!(withdrawn["cancel_at"], Value::Null, "{withdrawn}");
    api.advance(&world.clock, START + 3 * DAY).await;
    let updated = api.ok(&path, &[("cancel_at_period_end", "true")]).await;
    assert_eq!(updated["cancel_at_period_end"], true, "{updated}");
    assert_eq!(updated["status"], "active");
    assert_eq!(updated["canceled_at"], START + 3 * DAY, "{updated}");
    assert_eq!(updated["ended_at"], Value::Null, "{updated}");
    let period_end = int(&updated["items"]["data"][0]["current_period_end"]);
    assert_eq!(updated["cancel_at"], period_end, "{updated}");

    api.advance(&world.clock, period_end + HOUR).await;
    let ended = api.subscription(&subscription).await;
    assert_eq!(ended["status"], "canceled", "{ended}");
    assert_eq!(ended["ended_at"], period_end, "{ended}");
    assert_eq!(
        ended["canceled_at"],
        START + 3 * DAY,
        "when the cancellation was asked for, as at Stripe: {ended}"
    );
    assert_eq!(
        ended["cancellation_details"]["reason"],
        "cancellation_requested"
    );
    let invoices = api.invoices_of(&customer).await;
    assert_eq!(invoices.len(), 1, "no invoice after the end: {invoices:?}");
    assert_eq!(api.succeeded_charges_of(&customer).await.len(), 1);

    let deleted = api
        .list("/v1/events?type=customer.subscription.deleted&limit=100")
        .await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["data"]["object"]["id"], subscription.as_str());
    assert_eq!(deleted[0]["data"]["object"]["status"], "canceled");

    // A month later nothing has renewed it.
    api.advance(&world.clock, one_month_after(period_end) + HOUR)
        .await;
    assert_eq!(api.invoices_of(&customer).await.len(), 1);
    assert_eq!(api.subscription(&subscription).await["status"], "canceled");
}

#[tokio::test]
async fn cancel_now_is_final() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;
    let subscription = id(&api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &world.price)],
        )
        .await);
    api.advance(&world.clock, START + 3 * DAY).await;

    let (status, canceled) = api
        .delete(&format!("/v1/subscriptions/{subscription}"))
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(
        canceled["canceled_at"],
        START + 3 * DAY,
        "on the clock's time"
    );
    assert_eq!(canceled["ended_at"], START + 3 * DAY);
    let deleted = api
        .list("/v1/events?type=customer.subscription.deleted")
        .await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    // Stripe lists canceled subscriptions only when asked for them.
    let listed = |status: &str| format!("/v1/subscriptions?customer={customer}{status}");
    assert!(api.list(&listed("")).await.is_empty());
    assert_eq!(api.list(&listed("&status=all")).await.len(), 1);
    assert_eq!(api.list(&listed("&status=canceled")).await.len(), 1);
    assert!(api.list(&listed("&status=active")).await.is_empty());

    let (status, body) = api
        .post(
            &format!("/v1/subscriptions/{subscription}"),
            &[("metadata[after]", "end")],
        )
        .await;
    assert_invalid_request(status, &body, None);
    let (status, body) = api
        .delete(&format!("/v1/subscriptions/{subscription}"))
        .await;
    assert_invalid_request(status, &body, None);

    // The canceled period is not renewed.
    api.advance(&world.clock, START + 40 * DAY).await;
    assert_eq!(api.invoices_of(&customer).await.len(), 1);
}

#[tokio::test]
async fn a_mid_period_upgrade_prorates_by_day_onto_the_next_invoice() {
    let world = world(MARCH_1).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;
    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &world.price)],
        )
        .await;
    let item = subscription["items"]["data"][0].clone();
    let item_id = id(&item);
    let period_start = int(&item["current_period_start"]);
    let period_end = int(&item["current_period_end"]);
    assert_eq!(period_end, one_month_after(period_start));
    let subscription = id(&subscription);

    let changed_at = period_start + 10 * DAY;
    api.advance(&world.clock, changed_at).await;
    let updated = api
        .ok(
            &format!("/v1/subscriptions/{subscription}"),
            &[("items[0][id]", &item_id), ("items[0][quantity]", "2")],
        )
        .await;
    assert_eq!(updated["items"]["data"][0]["quantity"], 2, "{updated}");
    assert_eq!(updated["items"]["data"][0]["id"], item_id.as_str());

    let total_days = (period_end - period_start) / DAY;
    let remaining_days = (period_end - changed_at) / DAY;
    assert_eq!(total_days, 31);
    assert_eq!(remaining_days, 21);
    let credit = -prorated(1000, remaining_days, total_days);
    let charge = prorated(2000, remaining_days, total_days);
    let mut pending = api
        .list(&format!(
            "/v1/invoiceitems?customer={customer}&pending=true"
        ))
        .await;
    pending.sort_by_key(|item| int(&item["amount"]));
    let amounts: Vec<i64> = pending.iter().map(|item| int(&item["amount"])).collect();
    assert_eq!(amounts, vec![credit, charge], "{pending:?}");
    for item in &pending {
        assert_eq!(item["proration"], true, "{item}");
        assert_eq!(item["invoice"], Value::Null, "{item}");
        assert_eq!(item["period"]["start"], changed_at, "{item}");
        assert_eq!(item["period"]["end"], period_end, "{item}");
        assert_eq!(
            item["parent"]["subscription_details"]["subscription"],
            subscription.as_str()
        );
    }
    // Nothing is charged for the change until the next invoice.
    assert_eq!(api.succeeded_charges_of(&customer).await.len(), 1);

    api.advance(&world.clock, period_end).await;
    let after = api.subscription(&subscription).await;
    let renewal = api.invoice(after["latest_invoice"].as_str().unwrap()).await;
    assert_eq!(renewal["billing_reason"], "subscription_cycle", "{renewal}");
    let lines = api
        .list(&format!("/v1/invoices/{}/lines?limit=100", id(&renewal)))
        .await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let cycle: Vec<&Value> = lines
        .iter()
        .filter(|line| line["parent"]["type"] == "subscription_item_details")
        .collect();
    assert_eq!(cycle.len(), 1, "{lines:?}");
    assert_eq!(cycle[0]["quantity"], 2);
    assert_eq!(cycle[0]["amount"], 2000);
    assert_eq!(cycle[0]["period"]["start"], period_end);
    let mut prorations: Vec<i64> = lines
        .iter()
        .filter(|line| line["parent"]["type"] == "invoice_item_details")
        .map(|line| int(&line["amount"]))
        .collect();
    prorations.sort_unstable();
    assert_eq!(prorations, vec![credit, charge], "{lines:?}");
    assert_eq!(renewal["total"], 2000 + credit + charge, "{renewal}");
    assert_eq!(renewal["status"], "paid", "{renewal}");
    assert_eq!(renewal["amount_paid"], 2000 + credit + charge);

    let pending = api
        .list(&format!(
            "/v1/invoiceitems?customer={customer}&pending=true"
        ))
        .await;
    assert!(
        pending.is_empty(),
        "the prorations were invoiced: {pending:?}"
    );
    let items = api
        .list(&format!("/v1/invoiceitems?customer={customer}"))
        .await;
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_eq!(item["invoice"], id(&renewal).as_str(), "{item}");
        let replayed = replay(
            &world.db,
            &format!("invoice_item/{}", id(item)),
            "2999-01-01T00:00:00Z",
        );
        assert_eq!(replayed["invoice"], id(&renewal).as_str(), "{replayed}");
    }

    // The next renewal bills quantity 2 alone.
    let next_end = one_month_after(period_end);
    api.advance(&world.clock, next_end).await;
    let after = api.subscription(&subscription).await;
    let next = api.invoice(after["latest_invoice"].as_str().unwrap()).await;
    assert_eq!(next["total"], 2000, "{next}");
}

#[tokio::test]
async fn a_change_without_prorations_creates_no_invoice_items() {
    let world = world(MARCH_1).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;
    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &world.price)],
        )
        .await;
    let item_id = id(&subscription["items"]["data"][0]);
    let period_end = int(&subscription["items"]["data"][0]["current_period_end"]);
    let subscription = id(&subscription);
    api.advance(&world.clock, MARCH_1 + 10 * DAY).await;
    let updated = api
        .ok(
            &format!("/v1/subscriptions/{subscription}"),
            &[
                ("items[0][id]", &item_id),
                ("items[0][quantity]", "3"),
                ("proration_behavior", "none"),
            ],
        )
        .await;
    assert_eq!(updated["items"]["data"][0]["quantity"], 3, "{updated}");
    let items = api
        .list(&format!("/v1/invoiceitems?customer={customer}"))
        .await;
    assert!(items.is_empty(), "{items:?}");
    // Unknown items and prices are named by their parameter, as Stripe does.
    let (status, body) = api
        .post(
            &format!("/v1/subscriptions/{subscription}"),
            &[
                ("items[0][id]", "si_doesnotexist"),
                ("items[0][quantity]", "2"),
            ],
        )
        .await;
    assert_invalid_request(status, &body, Some("items[0][id]"));
    let (status, body) = api
        .post(
            &format!("/v1/subscriptions/{subscription}"),
            &[
                ("items[0][id]", &item_id),
                ("items[0][price]", "price_doesnotexist"),
            ],
        )
        .await;
    assert_invalid_request(status, &body, Some("items[0][price]"));
    assert_eq!(body["error"]["code"], "resource_missing", "{body}");

    api.advance(&world.clock, period_end).await;
    let after = api.subscription(&subscription).await;
    let renewal = api.invoice(after["latest_invoice"].as_str().unwrap()).await;
    assert_eq!(renewal["total"], 3000, "{renewal}");
}

#[tokio::test]
async fn default_incomplete_opens_the_invoice_without_charging() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;
    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", &world.price),
                ("payment_behavior", "default_incomplete"),
            ],
        )
        .await;
    assert_eq!(subscription["status"], "incomplete", "{subscription}");
    let invoice = api
        .invoice(subscription["latest_invoice"].as_str().unwrap())
        .await;
    assert_eq!(invoice["status"], "open", "{invoice}");
    assert_eq!(invoice["attempt_count"], 0, "{invoice}");
    assert_eq!(invoice["amount_due"], 1000);
    assert!(api
        .list(&format!("/v1/payment_intents?customer={customer}"))
        .await
        .iter()
        .all(|intent| intent["status"] != "succeeded" && intent["status"] != "processing"));

    // Paying the invoice makes the subscription active.
    let paid = api
        .ok(&format!("/v1/invoices/{}/pay", id(&invoice)), &[])
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(
        api.subscription(&id(&subscription)).await["status"],
        "active"
    );
}

#[tokio::test]
async fn error_if_incomplete_declines_and_expires_the_subscription() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_chargeCustomerFail").await;
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", &world.price),
                ("payment_behavior", "error_if_incomplete"),
            ],
        )
        .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["type"], "card_error", "{body}");
    assert!(body["error"]["decline_code"].is_string(), "{body}");

    let subscriptions = api
        .list(&format!("/v1/subscriptions?customer={customer}&status=all"))
        .await;
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
    let subscription = &subscriptions[0];
    assert_eq!(
        subscription["status"], "incomplete_expired",
        "{subscription}"
    );
    let invoice = api
        .invoice(subscription["latest_invoice"].as_str().unwrap())
        .await;
    assert_eq!(invoice["status"], "void", "{invoice}");
    assert!(api.succeeded_charges_of(&customer).await.is_empty());
}

#[tokio::test]
async fn allow_incomplete_keeps_the_first_invoice_open_then_expires_after_23_hours() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_chargeCustomerFail").await;
    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &world.price)],
        )
        .await;
    assert_eq!(subscription["status"], "incomplete", "{subscription}");
    let invoice_id = subscription["latest_invoice"].as_str().unwrap().to_string();
    let invoice = api.invoice(&invoice_id).await;
    assert_eq!(invoice["status"], "open", "{invoice}");
    assert_eq!(invoice["attempt_count"], 1, "{invoice}");
    assert_eq!(
        invoice["next_payment_attempt"],
        Value::Null,
        "a first invoice is not retried: {invoice}"
    );
    let subscription = id(&subscription);

    api.advance(&world.clock, START + 22 * HOUR).await;
    assert_eq!(
        api.subscription(&subscription).await["status"],
        "incomplete"
    );
    assert_eq!(api.invoice(&invoice_id).await["attempt_count"], 1);

    api.advance(&world.clock, START + 23 * HOUR + 60).await;
    let expired = api.subscription(&subscription).await;
    assert_eq!(expired["status"], "incomplete_expired", "{expired}");
    let invoice = api.invoice(&invoice_id).await;
    assert_eq!(invoice["status"], "void", "{invoice}");
    assert!(api.succeeded_charges_of(&customer).await.is_empty());

    // Expired is final: the period end passes without a renewal.
    api.advance(&world.clock, START + 40 * DAY).await;
    assert_eq!(api.invoices_of(&customer).await.len(), 1);
}

#[tokio::test]
async fn invalid_subscriptions_are_refused_in_the_stripe_envelope() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;

    let (status, body) = api
        .post("/v1/subscriptions", &[("items[0][price]", &world.price)])
        .await;
    assert_invalid_request(status, &body, Some("customer"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("customer"),
        "{body}"
    );

    let product = id(&api.ok("/v1/products", &[("name", "Setup fee")]).await);
    let one_time = id(&api
        .ok(
            "/v1/prices",
            &[
                ("product", &product),
                ("currency", "gbp"),
                ("unit_amount", "500"),
            ],
        )
        .await);
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &one_time)],
        )
        .await;
    assert_invalid_request(status, &body, None);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recurring"),
        "{body}"
    );

    let archived = monthly_price(api).await;
    api.ok(&format!("/v1/prices/{archived}"), &[("active", "false")])
        .await;
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &archived)],
        )
        .await;
    assert_invalid_request(status, &body, None);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inactive"),
        "{body}"
    );

    // Stripe: a parameter naming an object that does not exist is a 400 `resource_missing`
    // naming the parameter (a 404 is for the object in the URL).
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", &world.price),
                ("items[1][price]", "price_doesnotexist"),
            ],
        )
        .await;
    assert_invalid_request(status, &body, Some("items[1][price]"));
    assert_eq!(body["error"]["code"], "resource_missing", "{body}");
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[
                ("customer", "cus_doesnotexist"),
                ("items[0][price]", &world.price),
            ],
        )
        .await;
    assert_invalid_request(status, &body, Some("customer"));
    assert_eq!(body["error"]["code"], "resource_missing", "{body}");

    let bare = id(&api
        .ok(
            "/v1/customers",
            &[("email", "bare@example.com"), ("test_clock", &world.clock)],
        )
        .await);
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[("customer", &bare), ("items[0][price]", &world.price)],
        )
        .await;
    assert_invalid_request(status, &body, None);
    assert!(
        api.list(&format!("/v1/subscriptions?customer={bare}&status=all"))
            .await
            .is_empty(),
        "a refused subscription leaves nothing behind"
    );
    assert!(api.invoices_of(&bare).await.is_empty());

    // Another customer's card is refused even when nothing is charged now (a trial).
    let (_, someone_elses) = customer_with_card(api, &world.clock, "pm_card_visa").await;
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", &world.price),
                ("trial_period_days", "7"),
                ("default_payment_method", &someone_elses),
            ],
        )
        .await;
    assert_invalid_request(status, &body, None);
    let (status, body) = api
        .post(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", &world.price),
                ("trial_period_days", "7"),
                ("default_payment_method", "pm_doesnotexist"),
            ],
        )
        .await;
    assert_invalid_request(status, &body, Some("default_payment_method"));
    assert_eq!(body["error"]["code"], "resource_missing", "{body}");

    // Every refusal above left the good customer without subscriptions or invoices.
    assert!(api
        .list(&format!("/v1/subscriptions?customer={customer}&status=all"))
        .await
        .is_empty());

    // Another project's key sees none of this project's subscriptions.
    let subscription = id(&api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &world.price)],
        )
        .await);
    let other = api.with_key(&project_key(&world.db.url, "Other Co", "test"));
    let path = format!("/v1/subscriptions/{subscription}");
    let (status, body) = other.get(&path).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "resource_missing", "{body}");
    let (status, body) = other.post(&path, &[("cancel_at_period_end", "true")]).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = other.delete(&path).await;
    assert_eq!(status, 404, "{body}");
    assert!(other.list("/v1/subscriptions").await.is_empty());
    assert_eq!(api.subscription(&subscription).await["status"], "active");
}

#[tokio::test]
async fn the_same_idempotency_key_creates_one_subscription() {
    let world = world(START).await;
    let api = &world.api;
    let (customer, _) = customer_with_card(api, &world.clock, "pm_card_visa").await;
    let form = [
        ("customer", customer.as_str()),
        ("items[0][price]", world.price.as_str()),
    ];
    let (status, replayed, first) = api
        .post_idempotent("/v1/subscriptions", "sub-once", &form)
        .await;
    assert_eq!(status, 200, "{first}");
    assert!(!replayed);
    assert_eq!(first["status"], "active", "{first}");
    let (status, replayed, second) = api
        .post_idempotent("/v1/subscriptions", "sub-once", &form)
        .await;
    assert_eq!(status, 200, "{second}");
    assert!(replayed, "the second answer is a replay");
    assert_eq!(second, first, "the full object, not a stub");
    assert_eq!(second["object"], "subscription");
    assert!(second["items"]["data"].is_array(), "{second}");

    let subscriptions = api
        .list(&format!("/v1/subscriptions?customer={customer}&status=all"))
        .await;
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
    assert_eq!(api.invoices_of(&customer).await.len(), 1);
    assert_eq!(api.succeeded_charges_of(&customer).await.len(), 1);

    // Other parameters under the same key are an idempotency error, not a new subscription.
    let (status, _, body) = api
        .post_idempotent(
            "/v1/subscriptions",
            "sub-once",
            &[
                ("customer", customer.as_str()),
                ("items[0][price]", world.price.as_str()),
                ("items[0][quantity]", "2"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "idempotency_error", "{body}");
}
