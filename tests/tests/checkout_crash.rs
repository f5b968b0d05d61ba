//! A crash between the gateway's signed result and the session's completion: the server is
//! killed (an env-controlled abort, as in `exactly_once.rs`) after the result was accepted,
//! and the session must still complete, exactly once — through the browser's retry of the
//! same result, or, when nobody retries, through the recovery worker — also when the crash
//! came between the gateway's approval of a subscription's first charge and its recording.

use std::time::{Duration, Instant};

use calmony_tests::api::{project_key, Api};
use calmony_tests::hosted_checkout::{browser, hosted_result, post_return};
use calmony_tests::Server;
use event_store::test_harness::TestDatabase;
use reqwest::StatusCode;

const SUCCESS_URL: &str = "https://shop.example/thanks?session={CHECKOUT_SESSION_ID}";
const CARD: &str = "4929421234600821";
const CVV: &str = "356";

async fn event_count(db: &TestDatabase, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&db.pool)
        .await
        .expect("count events")
}

/// `calmony serve` against the shared simulator, with extra settings.
fn serve(db: &TestDatabase, gateway: &Server, extra: &[(&str, &str)]) -> Server {
    let direct = format!("{}/direct/", gateway.base_url);
    let mut env = vec![
        ("CALMONY_CARDSTREAM_TEST_URL", direct.as_str()),
        ("CALMONY_RATE_LIMIT_TEST", "10000"),
    ];
    env.extend_from_slice(extra);
    Server::start(&db.url, &env)
}

#[tokio::test]
async fn a_crash_after_the_gateways_result_completes_the_session_exactly_once() {
    let db = TestDatabase::new().await;
    let key = project_key(&db.url, "Crashy shop", "test");
    // The gateway outlives the server, as the real one would.
    let gateway = Server::cardstream_simulator();
    let client = browser();

    // 1. Payment mode, killed after the sale was recorded and before the session completed;
    //    the customer's browser posts the same result again.
    let server = serve(
        &db,
        &gateway,
        &[("CALMONY_FAULT_CRASH_IN_CHECKOUT_RETURN", "recorded")],
    );
    let api = Api::new(&server, &key);
    let session = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("success_url", SUCCESS_URL),
                ("line_items[0][price_data][currency]", "gbp"),
                ("line_items[0][price_data][unit_amount]", "1250"),
                ("line_items[0][price_data][product_data][name]", "Tea towel"),
                ("line_items[0][quantity]", "2"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    let (_, fields) = hosted_result(&client, &session, CARD, CVV).await;
    let return_path = format!("/checkout/{id}/return");
    let crashed = client
        .post(format!("{}{return_path}", server.base_url))
        .form(&fields)
        .send()
        .await;
    assert!(crashed.is_err(), "the server must die mid-request");
    drop(server);
    assert_eq!(event_count(&db, "CheckoutSessionReturnAccepted").await, 1);
    assert_eq!(event_count(&db, "ChargeSucceeded").await, 1, "recorded");
    assert_eq!(event_count(&db, "CheckoutSessionCompleted").await, 0);

    // Restarted (the recovery worker kept out of the way), the retried return finishes it.
    let server = serve(&db, &gateway, &[("CALMONY_RECOVERY_AFTER_MS", "600000")]);
    let api = Api::new(&server, &key);
    let open = api.fetch(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(open["status"], "open");
    let retried = post_return(
        &client,
        &format!("{}{return_path}", server.base_url),
        &fields,
    )
    .await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        retried.headers()["location"],
        format!("https://shop.example/thanks?session={id}").as_str()
    );
    let complete = api.fetch(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(complete["status"], "complete", "{complete}");
    assert_eq!(complete["payment_status"], "paid");
    let intents = api.list("/v1/payment_intents?limit=100").await;
    assert_eq!(intents.len(), 1, "one payment: {intents:?}");
    assert_eq!(intents[0]["id"], complete["payment_intent"]);
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(intents[0]["amount"], 2500);
    assert_eq!(event_count(&db, "ChargeSucceeded").await, 1);
    assert_eq!(event_count(&db, "PaymentMethodCreated").await, 1);
    assert_eq!(event_count(&db, "CheckoutSessionCompleted").await, 1);
    // Once complete, the same result is a replay.
    let replay = post_return(
        &client,
        &format!("{}{return_path}", server.base_url),
        &fields,
    )
    .await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    drop(server);

    // 2. Subscription mode, killed right after the result was accepted (nothing else made);
    //    nobody retries: the recovery worker finishes it.
    let server = serve(
        &db,
        &gateway,
        &[("CALMONY_FAULT_CRASH_IN_CHECKOUT_RETURN", "accepted")],
    );
    let api = Api::new(&server, &key);
    let product = api.ok("/v1/products", &[("name", "Tea club")]).await;
    let price = api
        .ok(
            "/v1/prices",
            &[
                ("product", product["id"].as_str().unwrap()),
                ("currency", "gbp"),
                ("unit_amount", "900"),
                ("recurring[interval]", "month"),
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
                ("line_items[0][price]", price["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    let (_, fields) = hosted_result(&client, &session, CARD, CVV).await;
    let return_path = format!("/checkout/{id}/return");
    let crashed = client
        .post(format!("{}{return_path}", server.base_url))
        .form(&fields)
        .send()
        .await;
    assert!(crashed.is_err(), "the server must die mid-request");
    drop(server);
    assert_eq!(event_count(&db, "CheckoutSessionReturnAccepted").await, 2);
    assert_eq!(event_count(&db, "SubscriptionCreated").await, 0);
    assert_eq!(event_count(&db, "PaymentMethodCreated").await, 1);

    let server = serve(&db, &gateway, &[("CALMONY_RECOVERY_AFTER_MS", "1000")]);
    let api = Api::new(&server, &key);
    let deadline = Instant::now() + Duration::from_secs(60);
    let complete = loop {
        let session = api.fetch(&format!("/v1/checkout/sessions/{id}")).await;
        if session["status"] == "complete" {
            break session;
        }
        assert!(
            Instant::now() < deadline,
            "the recovery worker never finished the session: {session}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(complete["payment_status"], "paid", "{complete}");
    let subscription = api
        .subscription(complete["subscription"].as_str().expect("a subscription"))
        .await;
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["customer"], complete["customer"]);
    let customers = api.list("/v1/customers?limit=100").await;
    assert_eq!(customers.len(), 1, "one customer: {customers:?}");
    assert_eq!(customers[0]["email"], "member@example.com");
    // The browser's late retry changes nothing.
    let late = post_return(
        &client,
        &format!("{}{return_path}", server.base_url),
        &fields,
    )
    .await;
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
    // Let the worker pass again: still once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(event_count(&db, "SubscriptionCreated").await, 1);
    assert_eq!(event_count(&db, "CheckoutSessionCompleted").await, 2);
    assert_eq!(event_count(&db, "PaymentMethodCreated").await, 2);
    assert_eq!(event_count(&db, "ChargeSucceeded").await, 2);
    drop(server);

    // 3. Subscription mode for an existing customer, killed after the gateway approved the
    //    first invoice's charge and before it was recorded; the retried return asks the
    //    gateway, records the approval, and charges nothing again.
    let server = serve(
        &db,
        &gateway,
        &[("CALMONY_FAULT_CRASH_AFTER_APPROVAL", "true")],
    );
    let api = Api::new(&server, &key);
    let customer = api
        .ok("/v1/customers", &[("email", "regular@example.com")])
        .await;
    let session = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("success_url", SUCCESS_URL),
                ("customer", customer["id"].as_str().unwrap()),
                ("line_items[0][price]", price["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    let (_, fields) = hosted_result(&client, &session, CARD, CVV).await;
    let return_path = format!("/checkout/{id}/return");
    let crashed = client
        .post(format!("{}{return_path}", server.base_url))
        .form(&fields)
        .send()
        .await;
    assert!(crashed.is_err(), "the server must die mid-request");
    drop(server);
    assert_eq!(event_count(&db, "SubscriptionCreated").await, 2);
    // One attempt each: the hosted sale, the first subscription's charge, this one.
    assert_eq!(event_count(&db, "ChargeAttemptStarted").await, 3);
    assert_eq!(event_count(&db, "ChargeSucceeded").await, 2, "not recorded");

    let server = serve(&db, &gateway, &[("CALMONY_RECOVERY_AFTER_MS", "600000")]);
    let api = Api::new(&server, &key);
    let retried = post_return(
        &client,
        &format!("{}{return_path}", server.base_url),
        &fields,
    )
    .await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    let complete = api.fetch(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(complete["status"], "complete", "{complete}");
    assert_eq!(complete["payment_status"], "paid", "{complete}");
    let subscription = api
        .subscription(complete["subscription"].as_str().expect("a subscription"))
        .await;
    assert_eq!(subscription["status"], "active", "{subscription}");
    assert_eq!(event_count(&db, "SubscriptionCreated").await, 2);
    assert_eq!(
        event_count(&db, "ChargeAttemptStarted").await,
        3,
        "no new attempt"
    );
    assert_eq!(event_count(&db, "ChargeSucceeded").await, 3);
    // The gateway knows one approved sale for that attempt.
    let unique: String = sqlx::query_scalar(
        "SELECT payload->'ChargeAttemptStarted'->>'transaction_unique' FROM events \
         WHERE event_type = 'ChargeAttemptStarted' ORDER BY position DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the attempt");
    let gateway_client = cardstream::Client::new(cardstream::Config {
        direct_url: format!("{}/direct/", gateway.base_url),
        hosted_url: format!("{}/hosted/", gateway.base_url),
        merchant_id: "100001".into(),
        secret: cardstream::MerchantSecret::new("Circle4Take40Idea"),
        country_code: "826".into(),
        timeouts: cardstream::Timeouts::default(),
    })
    .expect("a gateway client");
    let answer = gateway_client
        .query_by_transaction_unique(&unique)
        .await
        .expect("the gateway's answer");
    assert_eq!(answer.amount_minor(), Some(900), "one approved sale");
}
