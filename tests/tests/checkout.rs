//! Checkout Sessions end to end without a browser: the API (create, retrieve, list,
//! line items, expire, `expires_at` bounds), the test helper that completes a session, and
//! the hosted return — the gateway's signed result, driven here through the Cardstream
//! simulator's hosted page with plain HTTP — refused when forged, altered or replayed.

use calmony_tests::hosted_checkout::{hosted_result, post_return};
use calmony_tests::{run, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
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

    async fn ok(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self.post(path, form).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    async fn fetch(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }
}

struct World {
    api: Api,
    /// A browser-like client that does not follow redirects.
    browser: reqwest::Client,
    _server: Server,
    _database: TestDatabase,
}

async fn world() -> World {
    let database = TestDatabase::new().await;
    let output = run(&database.url, &["projects", "create", "--name", "Shop"]);
    assert!(output.status.success());
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        &database.url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success());
    let key = stdout_of(&output).trim().to_string();
    let server = Server::start(&database.url, &[]);
    World {
        api: Api {
            client: reqwest::Client::new(),
            base: server.base_url.clone(),
            key,
        },
        browser: calmony_tests::hosted_checkout::browser(),
        _server: server,
        _database: database,
    }
}

const SUCCESS_URL: &str = "https://shop.example/thanks?session={CHECKOUT_SESSION_ID}";

async fn payment_session(api: &Api) -> Value {
    api.ok(
        "/v1/checkout/sessions",
        &[
            ("mode", "payment"),
            ("success_url", SUCCESS_URL),
            ("cancel_url", "https://shop.example/cart"),
            ("line_items[0][price_data][currency]", "gbp"),
            ("line_items[0][price_data][unit_amount]", "1250"),
            ("line_items[0][price_data][product_data][name]", "Tea towel"),
            ("line_items[0][quantity]", "2"),
            ("metadata[order]", "A-17"),
        ],
    )
    .await
}

fn with_field(fields: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(key, old)| {
            let value = if key == name { value } else { old.as_str() };
            (key.clone(), value.to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_session_is_created_listed_and_shows_its_line_items() {
    let world = world().await;
    let session = payment_session(&world.api).await;
    let id = session["id"].as_str().unwrap();
    assert!(id.starts_with("cs_test_"), "{id}");
    assert_eq!(session["object"], "checkout.session");
    assert_eq!(session["status"], "open");
    assert_eq!(session["payment_status"], "unpaid");
    assert_eq!(session["amount_total"], 2500);
    assert_eq!(session["currency"], "gbp");
    assert_eq!(session["url"], format!("{}/checkout/{id}", world.api.base));
    assert!(session.get("line_items").is_none());
    let created = session["created"].as_i64().unwrap();
    assert_eq!(session["expires_at"].as_i64().unwrap(), created + 86_400);

    let fetched = world
        .api
        .fetch(&format!("/v1/checkout/sessions/{id}"))
        .await;
    assert_eq!(fetched["metadata"]["order"], "A-17");
    let lines = world
        .api
        .fetch(&format!("/v1/checkout/sessions/{id}/line_items"))
        .await;
    assert_eq!(lines["object"], "list");
    assert_eq!(lines["data"][0]["description"], "Tea towel");
    assert_eq!(lines["data"][0]["quantity"], 2);
    assert_eq!(lines["data"][0]["amount_total"], 2500);
    let list = world.api.fetch("/v1/checkout/sessions").await;
    assert_eq!(list["data"][0]["id"], id);
}

#[tokio::test]
async fn expires_at_must_be_between_30_minutes_and_24_hours_away() {
    let world = world().await;
    let now = chrono::Utc::now().timestamp();
    for (offset, allowed) in [
        (29 * 60, false),
        (31 * 60, true),
        (23 * 3_600, true),
        (25 * 3_600, false),
    ] {
        let expires_at = (now + offset).to_string();
        let (status, body) = world
            .api
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "payment"),
                    ("success_url", SUCCESS_URL),
                    ("line_items[0][price_data][currency]", "gbp"),
                    ("line_items[0][price_data][unit_amount]", "500"),
                    ("line_items[0][price_data][product_data][name]", "Mug"),
                    ("expires_at", &expires_at),
                ],
            )
            .await;
        if allowed {
            assert_eq!(status, 200, "{offset}: {body}");
            assert_eq!(body["expires_at"].as_i64(), Some(now + offset));
        } else {
            assert_eq!(status, 400, "{offset}: {body}");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expires_at"));
        }
    }
    let (status, _) = world
        .api
        .post(
            "/v1/checkout/sessions",
            &[("mode", "payment"), ("success_url", SUCCESS_URL)],
        )
        .await;
    assert_eq!(status, 400, "payment mode needs line items");
}

#[tokio::test]
async fn the_test_helper_completes_a_payment_session() {
    let world = world().await;
    let session = payment_session(&world.api).await;
    let id = session["id"].as_str().unwrap();
    let completed = world
        .api
        .ok(
            &format!("/v1/test_helpers/checkout/sessions/{id}/complete"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(completed["status"], "complete");
    assert_eq!(completed["payment_status"], "paid");
    assert!(completed["url"].is_null());
    let intent_id = completed["payment_intent"]
        .as_str()
        .expect("payment intent");
    let intent = world
        .api
        .fetch(&format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 2500);
    let events = world
        .api
        .fetch("/v1/events?type=checkout.session.completed")
        .await;
    assert_eq!(events["data"][0]["data"]["object"]["id"], id);
    // A complete session cannot be completed again or expired.
    let (status, _) = world
        .api
        .post(
            &format!("/v1/test_helpers/checkout/sessions/{id}/complete"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = world
        .api
        .post(&format!("/v1/checkout/sessions/{id}/expire"), &[])
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_expired_session_cannot_be_paid() {
    let world = world().await;
    let session = payment_session(&world.api).await;
    let id = session["id"].as_str().unwrap();
    let expired = world
        .api
        .ok(&format!("/v1/checkout/sessions/{id}/expire"), &[])
        .await;
    assert_eq!(expired["status"], "expired");
    assert!(expired["url"].is_null());
    let events = world
        .api
        .fetch("/v1/events?type=checkout.session.expired")
        .await;
    assert_eq!(events["data"][0]["data"]["object"]["id"], id);
    let (status, _) = world
        .api
        .post(
            &format!("/v1/test_helpers/checkout/sessions/{id}/complete"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(status, 400);
    let page = world
        .browser
        .get(session["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
}

#[tokio::test]
async fn forged_altered_and_replayed_returns_are_refused() {
    let world = world().await;
    let session = payment_session(&world.api).await;
    let id = session["id"].as_str().unwrap();
    let (return_url, fields) =
        hosted_result(&world.browser, &session, "4929421234600821", "356").await;
    assert_eq!(
        return_url,
        format!("{}/checkout/{id}/return", world.api.base)
    );

    // A bad signature.
    let forged = with_field(&fields, "signature", &"0".repeat(128));
    let response = post_return(&world.browser, &return_url, &forged).await;
    assert_eq!(response.status(), 400);
    // An altered amount under the genuine signature.
    let altered = with_field(&fields, "amount", "1");
    let response = post_return(&world.browser, &return_url, &altered).await;
    assert_eq!(response.status(), 400);
    // Nothing was recorded.
    let open = world
        .api
        .fetch(&format!("/v1/checkout/sessions/{id}"))
        .await;
    assert_eq!(open["status"], "open");
    let intents = world.api.fetch("/v1/payment_intents").await;
    assert_eq!(intents["data"].as_array().unwrap().len(), 0);

    // The genuine result completes the session and sends the customer to success_url.
    let response = post_return(&world.browser, &return_url, &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        format!("https://shop.example/thanks?session={id}").as_str()
    );
    let complete = world
        .api
        .fetch(&format!("/v1/checkout/sessions/{id}"))
        .await;
    assert_eq!(complete["status"], "complete");
    assert_eq!(complete["payment_status"], "paid");

    // The same result again is a replay.
    let response = post_return(&world.browser, &return_url, &fields).await;
    assert_eq!(response.status(), 400);
    let intents = world.api.fetch("/v1/payment_intents").await;
    assert_eq!(intents["data"].as_array().unwrap().len(), 1);
    let intent = &intents["data"][0];
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 2500);
    let method = world
        .api
        .fetch(&format!(
            "/v1/payment_methods/{}",
            intent["payment_method"].as_str().unwrap()
        ))
        .await;
    assert_eq!(method["card"]["last4"], "0821");
    assert_eq!(method["card"]["brand"], "visa");

    // Another session's genuine result does not complete this one.
    let other = payment_session(&world.api).await;
    let other_id = other["id"].as_str().unwrap();
    let response = post_return(
        &world.browser,
        &format!("{}/checkout/{other_id}/return", world.api.base),
        &fields,
    )
    .await;
    assert_eq!(response.status(), 400);
    let other = world
        .api
        .fetch(&format!("/v1/checkout/sessions/{other_id}"))
        .await;
    assert_eq!(other["status"], "open");
}

/// A monthly price of 9.00 and one-time prices in subscription mode: Stripe puts the
/// one-time lines on the subscription's first invoice, as invoice items.
#[tokio::test]
async fn one_time_prices_in_a_subscription_session_go_on_the_first_invoice() {
    let world = world().await;
    let api = &world.api;
    let product = api.ok("/v1/products", &[("name", "Tea club")]).await;
    let product = product["id"].as_str().unwrap().to_string();
    let monthly = api
        .ok(
            "/v1/prices",
            &[
                ("product", &product),
                ("currency", "gbp"),
                ("unit_amount", "900"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let kit = api.ok("/v1/products", &[("name", "Starter kit")]).await;
    let one_time = api
        .ok(
            "/v1/prices",
            &[
                ("product", kit["id"].as_str().unwrap()),
                ("currency", "gbp"),
                ("unit_amount", "500"),
            ],
        )
        .await;
    let session = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("success_url", SUCCESS_URL),
                ("customer_email", "member@example.com"),
                ("line_items[0][price]", monthly["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
                ("line_items[1][price]", one_time["id"].as_str().unwrap()),
                ("line_items[1][quantity]", "2"),
                ("line_items[2][price_data][currency]", "gbp"),
                ("line_items[2][price_data][unit_amount]", "250"),
                (
                    "line_items[2][price_data][product_data][name]",
                    "Welcome card",
                ),
                ("line_items[2][quantity]", "1"),
            ],
        )
        .await;
    assert_eq!(session["amount_total"], 900 + 1000 + 250, "{session}");
    let id = session["id"].as_str().unwrap().to_string();

    // Through the gateway's hosted page, as a customer would.
    let (return_url, fields) =
        hosted_result(&world.browser, &session, "4929421234600821", "356").await;
    let response = post_return(&world.browser, &return_url, &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let complete = api.fetch(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(complete["status"], "complete", "{complete}");
    assert_eq!(complete["payment_status"], "paid", "{complete}");
    let subscription = api
        .fetch(&format!(
            "/v1/subscriptions/{}",
            complete["subscription"].as_str().expect("a subscription")
        ))
        .await;
    assert_eq!(subscription["status"], "active");
    // Only the recurring price is an item of the subscription.
    let items = subscription["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{subscription}");
    assert_eq!(items[0]["price"]["id"], monthly["id"]);
    // The first invoice has all three lines and was paid in full.
    let invoice = api
        .fetch(&format!(
            "/v1/invoices/{}",
            subscription["latest_invoice"].as_str().unwrap()
        ))
        .await;
    assert_eq!(invoice["status"], "paid", "{invoice}");
    assert_eq!(invoice["total"], 2150, "{invoice}");
    assert_eq!(invoice["amount_paid"], 2150, "{invoice}");
    let lines = invoice["lines"]["data"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{invoice}");
    let descriptions: Vec<&str> = lines
        .iter()
        .map(|line| line["description"].as_str().unwrap_or(""))
        .collect();
    assert!(descriptions.contains(&"Starter kit"), "{descriptions:?}");
    assert!(descriptions.contains(&"Welcome card"), "{descriptions:?}");
    // The one-time lines are invoice items of that invoice, not pending for the next one.
    let customer = complete["customer"].as_str().unwrap();
    let invoice_items = api
        .fetch(&format!("/v1/invoiceitems?customer={customer}"))
        .await;
    let invoice_items = invoice_items["data"].as_array().unwrap();
    assert_eq!(invoice_items.len(), 2, "{invoice_items:?}");
    for item in invoice_items {
        assert_eq!(item["invoice"], invoice["id"], "{item}");
    }
    // Renewals bill the monthly price only: nothing is pending.
    let pending = api
        .fetch(&format!(
            "/v1/invoiceitems?customer={customer}&pending=true"
        ))
        .await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 0);

    // The test helper takes the same path.
    let again = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("success_url", SUCCESS_URL),
                ("customer_email", "second@example.com"),
                ("line_items[0][price]", monthly["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
                ("line_items[1][price]", one_time["id"].as_str().unwrap()),
                ("line_items[1][quantity]", "1"),
            ],
        )
        .await;
    let completed = api
        .ok(
            &format!(
                "/v1/test_helpers/checkout/sessions/{}/complete",
                again["id"].as_str().unwrap()
            ),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(completed["payment_status"], "paid", "{completed}");
    let subscription = api
        .fetch(&format!(
            "/v1/subscriptions/{}",
            completed["subscription"].as_str().unwrap()
        ))
        .await;
    let invoice = api
        .fetch(&format!(
            "/v1/invoices/{}",
            subscription["latest_invoice"].as_str().unwrap()
        ))
        .await;
    assert_eq!(invoice["amount_paid"], 1400, "{invoice}");
}

/// A session for a customer on a test clock expires when the clock passes `expires_at`,
/// not by the wall clock.
#[tokio::test]
async fn a_session_on_a_test_clock_expires_by_that_clock() {
    let world = world().await;
    let api = &world.api;
    // The clock is a week behind: by the wall clock the session is long past expiry.
    let start = chrono::Utc::now().timestamp() - 7 * 24 * 3600;
    let clock = api
        .ok(
            "/v1/test_helpers/test_clocks",
            &[("frozen_time", &start.to_string())],
        )
        .await;
    let clock = clock["id"].as_str().unwrap().to_string();
    let customer = api
        .ok(
            "/v1/customers",
            &[("email", "clocked@example.com"), ("test_clock", &clock)],
        )
        .await;
    let session = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "setup"),
                ("currency", "gbp"),
                ("success_url", SUCCESS_URL),
                ("customer", customer["id"].as_str().unwrap()),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    assert_eq!(session["expires_at"], start + 24 * 3600, "{session}");

    // Moving the clock to just before expiry leaves it open.
    let advance = |to: i64| {
        let clock = clock.clone();
        async move {
            api.ok(
                &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
                &[("frozen_time", &to.to_string())],
            )
            .await;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let state = api
                    .fetch(&format!("/v1/test_helpers/test_clocks/{clock}"))
                    .await;
                if state["status"] == "ready" && state["frozen_time"] == to {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "{state}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    advance(start + 24 * 3600 - 60).await;
    let open = api.fetch(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(open["status"], "open", "{open}");

    // Past it: the clock's advance expires the session.
    advance(start + 24 * 3600 + 60).await;
    let expired = api.fetch(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    let page = world
        .browser
        .get(session["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
}
