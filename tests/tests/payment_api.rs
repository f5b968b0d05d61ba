//! The payment API end to end: the real server process on a fresh database, the Cardstream
//! simulator behind it, driven over HTTP the way the Stripe SDKs drive it.

use std::collections::HashSet;

use calmony_tests::{run, stderr_of, stdout_of, Server};
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
        self.post_with_key(path, form, None).await
    }

    async fn post_with_key(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .form(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
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

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("DELETE");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn create_key(database_url: &str, project: Option<&str>, mode: &str) -> (String, String) {
    let project = match project {
        Some(project) => project.to_string(),
        None => {
            let output = run(
                database_url,
                &["projects", "create", "--name", "Test Merchant"],
            );
            assert!(output.status.success());
            stdout_of(&output).trim().to_string()
        }
    };
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", mode],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (project, stdout_of(&output).trim().to_string())
}

fn api(server: &Server, key: &str) -> Api {
    Api {
        client: reqwest::Client::new(),
        base: server.base_url.clone(),
        key: key.to_string(),
    }
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

#[tokio::test]
async fn a_customer_pays_with_a_saved_card_and_gets_refunded() {
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let api = api(&server, &key);

    let (status, customer) = api
        .post(
            "/v1/customers",
            &[
                ("email", "ada@example.com"),
                ("name", "Ada"),
                ("metadata[tier]", "gold"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{customer}");
    assert!(id(&customer).starts_with("cus_"));
    assert_eq!(customer["object"], "customer");
    assert_eq!(customer["metadata"]["tier"], "gold");
    assert_eq!(customer["livemode"], false);

    let (status, method) = api
        .post(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", &id(&customer))],
        )
        .await;
    assert_eq!(status, 200, "{method}");
    assert!(
        id(&method).starts_with("pm_") && id(&method) != "pm_card_visa",
        "a new payment method, as at Stripe"
    );
    assert_eq!(method["card"]["brand"], "visa");
    assert_eq!(method["card"]["last4"], "0821");
    assert_eq!(method["customer"], id(&customer));

    let (status, intent) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "gbp"),
                ("customer", &id(&customer)),
                ("payment_method", &id(&method)),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{intent}");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], 2500);
    let charge_id = intent["latest_charge"].as_str().unwrap().to_string();
    // Created, confirmed and its attempt recorded in one transaction before the gateway was
    // called; the outcome in a second one after.
    let transactions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT string_agg(event_type, ',' ORDER BY sequence), count(*) FROM events \
         WHERE aggregate_type = 'payment_intent' AND aggregate_id = $1 \
         GROUP BY txid ORDER BY min(sequence)",
    )
    .bind(id(&intent))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        transactions,
        [
            (
                "PaymentIntentCreated,PaymentIntentConfirmed,ChargeAttemptStarted".to_string(),
                3
            ),
            ("ChargeSucceeded".to_string(), 1)
        ]
    );

    // Reads see the write at once (read-your-writes), with expansion.
    let (status, read) = api
        .get(&format!(
            "/v1/payment_intents/{}?expand[]=latest_charge",
            id(&intent)
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(read["latest_charge"]["id"], charge_id);
    assert_eq!(read["latest_charge"]["paid"], true);

    let (status, refund) = api
        .post(
            "/v1/refunds",
            &[("payment_intent", &id(&intent)), ("amount", "1000")],
        )
        .await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["status"], "succeeded");
    assert_eq!(refund["amount"], 1000);
    let (status, over) = api
        .post(
            "/v1/refunds",
            &[("payment_intent", &id(&intent)), ("amount", "1501")],
        )
        .await;
    assert_eq!(status, 400, "over-refund: {over}");
    assert_eq!(over["error"]["type"], "invalid_request_error");
    let (status, rest) = api.post("/v1/refunds", &[("charge", &charge_id)]).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["amount"], 1500);
    let (_, charge) = api.get(&format!("/v1/charges/{charge_id}")).await;
    assert_eq!(charge["amount_refunded"], 2500);
    assert_eq!(charge["refunded"], true);

    let (_, events) = api.get("/v1/events?limit=100").await;
    let types: HashSet<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    for expected in [
        "customer.created",
        "payment_method.attached",
        "payment_intent.created",
        "payment_intent.succeeded",
        "charge.succeeded",
        "refund.created",
        "charge.refunded",
    ] {
        assert!(types.contains(expected), "missing {expected} in {types:?}");
    }
    let (_, succeeded) = api.get("/v1/events?type=payment_intent.succeeded").await;
    let event = &succeeded["data"][0];
    assert_eq!(event["data"]["object"]["id"], id(&intent));
    assert_eq!(
        event["data"]["object"]["status"], "succeeded",
        "data.object as it was at that event"
    );
    let (status, same) = api.get(&format!("/v1/events/{}", id(event))).await;
    assert_eq!(status, 200);
    assert_eq!(same["id"], event["id"]);
}

#[tokio::test]
async fn declines_manual_capture_and_cancel_follow_stripes_state_machine() {
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let api = api(&server, &key);

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
    assert_eq!(declined["error"]["type"], "card_error");
    assert_eq!(declined["error"]["decline_code"], "insufficient_funds");
    let intent = &declined["error"]["payment_intent"];
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(
        intent["last_payment_error"]["decline_code"],
        "insufficient_funds"
    );
    // The customer retries with another card and it goes through.
    let (status, retried) = api
        .post(
            &format!("/v1/payment_intents/{}/confirm", id(intent)),
            &[("payment_method", "pm_card_mastercard")],
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["status"], "succeeded");
    assert_eq!(retried["last_payment_error"], Value::Null);

    let (_, held) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "5000"),
                ("currency", "gbp"),
                ("payment_method", "pm_card_visa"),
                ("capture_method", "manual"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(held["status"], "requires_capture", "{held}");
    assert_eq!(held["amount_capturable"], 5000);
    let (status, captured) = api
        .post(
            &format!("/v1/payment_intents/{}/capture", id(&held)),
            &[("amount_to_capture", "3000")],
        )
        .await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(captured["amount_received"], 3000);

    let (_, held) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "700"),
                ("currency", "gbp"),
                ("payment_method", "pm_card_visa"),
                ("capture_method", "manual"),
                ("confirm", "true"),
            ],
        )
        .await;
    let (status, canceled) = api
        .post(
            &format!("/v1/payment_intents/{}/cancel", id(&held)),
            &[("cancellation_reason", "requested_by_customer")],
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["cancellation_reason"], "requested_by_customer");
    let (status, again) = api
        .post(&format!("/v1/payment_intents/{}/capture", id(&held)), &[])
        .await;
    assert_eq!(status, 400, "{again}");

    let (status, unconfirmed) = api
        .post(
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "gbp")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(unconfirmed["status"], "requires_payment_method");
    let (status, missing) = api
        .post(
            &format!("/v1/payment_intents/{}/confirm", id(&unconfirmed)),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{missing}");
}

#[tokio::test]
async fn http_conventions_errors_and_authentication() {
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let api = api(&server, &key);

    let (status, unknown) = api
        .post(
            "/v1/customers",
            &[("email", "x@example.com"), ("favourite_colour", "blue")],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(unknown["error"]["param"], "favourite_colour");
    assert_eq!(unknown["error"]["type"], "invalid_request_error");

    let (status, missing) = api.get("/v1/customers/cus_doesnotexist").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "resource_missing");

    // Empty string unsets; metadata keys are removed with an empty value.
    let (_, customer) = api
        .post(
            "/v1/customers",
            &[
                ("email", "x@example.com"),
                ("metadata[a]", "1"),
                ("metadata[b]", "2"),
            ],
        )
        .await;
    let (_, updated) = api
        .post(
            &format!("/v1/customers/{}", id(&customer)),
            &[("email", ""), ("metadata[a]", "")],
        )
        .await;
    assert_eq!(updated["email"], Value::Null);
    assert_eq!(updated["metadata"], serde_json::json!({"b": "2"}));

    // Lists page newest first with has_more and starting_after.
    for index in 0..3 {
        api.post("/v1/customers", &[("name", &format!("n{index}"))])
            .await;
    }
    let (_, first) = api.get("/v1/customers?limit=2").await;
    assert_eq!(first["object"], "list");
    assert_eq!(first["url"], "/v1/customers");
    assert_eq!(first["has_more"], true);
    let last = id(&first["data"][1]);
    let (_, second) = api
        .get(&format!("/v1/customers?limit=2&starting_after={last}"))
        .await;
    assert_eq!(second["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(second["has_more"], false);
    let (status, _) = api.get("/v1/customers?limit=101").await;
    assert_eq!(status, 400);

    let (status, deleted) = api
        .delete(&format!("/v1/customers/{}", id(&customer)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deleted"], true);

    let client = reqwest::Client::new();
    let no_key = client
        .get(format!("{}/v1/customers", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    assert!(no_key.headers().contains_key("request-id"));
    let bad_key = client
        .get(format!("{}/v1/customers", server.base_url))
        .bearer_auth("sk_test_notarealkey0000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), 401);
    let body: Value = bad_key.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let basic = client
        .get(format!("{}/v1/customers", server.base_url))
        .basic_auth(&key, Some(""))
        .header("Stripe-Version", "2026-10-28.endive")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    assert_eq!(basic.headers()["stripe-version"], "2026-10-28.endive");
}

/// Keys change under a running server: a key created while it runs works at once, and a
/// revoked one is refused from then on (polled for up to 2 s, so that a server which
/// remembered keys would have to forget them in time) while the project's other key works.
#[tokio::test]
async fn a_key_revoked_while_the_server_runs_is_refused_from_then_on() {
    let db = TestDatabase::new().await;
    let (project, key) = create_key(&db.url, None, "test");
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let api = api(&server, &key);
    for _ in 0..3 {
        let (status, body) = api.get("/v1/customers").await;
        assert_eq!(status, 200, "{body}");
    }
    // The key in use is the project's only key so far (`created` is in whole seconds: after
    // the second key exists it no longer tells them apart).
    let key_id: String = sqlx::query_scalar("SELECT key_id FROM api_keys.keys WHERE project = $1")
        .bind(&project)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let (_, second_key) = create_key(&db.url, Some(&project), "test");
    let second = self::api(&server, &second_key);
    let (status, body) = second.get("/v1/customers").await;
    assert_eq!(status, 200, "a key created while the server runs: {body}");

    let (status, _) = api.get("/v1/customers").await;
    assert_eq!(status, 200);
    let revoked = run(&db.url, &["keys", "revoke", &key_id]);
    assert!(revoked.status.success(), "{}", stderr_of(&revoked));

    // Asked every 50 ms, under the test key's 25 requests a second (a 429 would still mean
    // the key was accepted: the limit is counted after the key is found).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let (status, body) = api.get("/v1/customers").await;
        if status == 401 {
            assert_eq!(body["error"]["type"], "invalid_request_error");
            break;
        }
        assert!(status == 200 || status == 429, "{status}: {body}");
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key still works 2 s after its revocation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let (status, _) = api.get("/v1/customers").await;
        assert_eq!(status, 401, "a revoked key worked again");
    }
    let (status, _) = second.get("/v1/customers").await;
    assert_eq!(status, 200, "revoking one key refused another");
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_mismatches_and_allow_one_effect() {
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    let (server, _gateway) =
        Server::start_with_gateway(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "1000")]);
    let api = api(&server, &key);

    let (status, first) = api
        .post_with_key(
            "/v1/customers",
            &[("email", "i@example.com")],
            Some("key-1"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, again) = api
        .post_with_key(
            "/v1/customers",
            &[("email", "i@example.com")],
            Some("key-1"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, first, "the replay is the stored response");
    let (status, mismatch) = api
        .post_with_key(
            "/v1/customers",
            &[("email", "other@example.com")],
            Some("key-1"),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(mismatch["error"]["type"], "idempotency_error");

    // A confirmation retried with its key never charges twice.
    let form = [
        ("amount", "1234"),
        ("currency", "gbp"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
    ];
    let (_, paid) = api
        .post_with_key("/v1/payment_intents", &form, Some("pay-1"))
        .await;
    let (_, replayed) = api
        .post_with_key("/v1/payment_intents", &form, Some("pay-1"))
        .await;
    assert_eq!(paid["id"], replayed["id"]);

    // 50 concurrent requests with one key: exactly one effect.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = api.client.clone();
        let url = format!("{}/v1/customers", api.base);
        let secret = key.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(secret)
                .header("Idempotency-Key", "burst-1")
                .form(&[("email", "burst@example.com")])
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status.as_u16() {
            200 => {
                ids.insert(id(&body));
            }
            409 => assert_eq!(body["error"]["code"], "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "every success is the same customer");
    let (_, listed) = api
        .get("/v1/customers?email=burst@example.com&limit=100")
        .await;
    assert_eq!(
        listed["data"].as_array().map(Vec::len),
        Some(1),
        "exactly one customer was created"
    );
}

#[tokio::test]
async fn projects_and_modes_never_see_each_other() {
    let db = TestDatabase::new().await;
    let (project_a, key_a) = create_key(&db.url, None, "test");
    let (_, key_b) = create_key(&db.url, None, "test");
    let (_, live_a) = create_key(&db.url, Some(&project_a), "live");
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let a = api(&server, &key_a);
    let b = api(&server, &key_b);
    let live = api(&server, &live_a);

    let (_, customer) = a.post("/v1/customers", &[("email", "a@example.com")]).await;
    let (_, method) = a
        .post(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", &id(&customer))],
        )
        .await;
    let (_, intent) = a
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "gbp"),
                ("customer", &id(&customer)),
                ("payment_method", &id(&method)),
                ("confirm", "true"),
            ],
        )
        .await;
    let (_, refund) = a
        .post(
            "/v1/refunds",
            &[("payment_intent", &id(&intent)), ("amount", "100")],
        )
        .await;
    let charge = intent["latest_charge"].as_str().unwrap().to_string();
    let (_, events) = a.get("/v1/events?limit=1").await;
    let event = id(&events["data"][0]);

    for outsider in [&b, &live] {
        for path in [
            format!("/v1/customers/{}", id(&customer)),
            format!("/v1/customers/{}/payment_methods", id(&customer)),
            format!("/v1/payment_methods/{}", id(&method)),
            format!("/v1/payment_intents/{}", id(&intent)),
            format!("/v1/charges/{charge}"),
            format!("/v1/refunds/{}", id(&refund)),
            format!("/v1/events/{event}"),
        ] {
            let (status, body) = outsider.get(&path).await;
            assert_eq!(status, 404, "GET {path}: {body}");
        }
        for (path, form) in [
            (
                format!("/v1/customers/{}", id(&customer)),
                vec![("name", "taken over")],
            ),
            (
                format!("/v1/payment_methods/{}/detach", id(&method)),
                vec![],
            ),
            (
                format!("/v1/payment_intents/{}/confirm", id(&intent)),
                vec![],
            ),
            (
                format!("/v1/payment_intents/{}/cancel", id(&intent)),
                vec![],
            ),
            (
                "/v1/refunds".to_string(),
                vec![("payment_intent", id(&intent).leak() as &str)],
            ),
        ] {
            let (status, body) = outsider.post(&path, &form).await;
            assert_eq!(status, 404, "POST {path}: {body}");
        }
        let (status, _) = outsider
            .delete(&format!("/v1/customers/{}", id(&customer)))
            .await;
        assert_eq!(status, 404);
        for list in [
            "/v1/customers",
            "/v1/payment_intents",
            "/v1/payment_methods",
            "/v1/charges",
            "/v1/refunds",
            "/v1/events",
        ] {
            let (status, body) = outsider.get(list).await;
            assert_eq!(status, 200);
            assert_eq!(
                body["data"].as_array().map(Vec::len),
                Some(0),
                "{list} leaks: {body}"
            );
        }
    }
    // And A still sees everything.
    let (status, _) = a.get(&format!("/v1/payment_intents/{}", id(&intent))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn live_keys_refuse_to_charge_without_live_credentials() {
    let db = TestDatabase::new().await;
    let (_, live_key) = create_key(&db.url, None, "live");
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let live = api(&server, &live_key);
    let (status, body) = live
        .post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4929421234600821"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "356"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Live mode"));
    let (status, _) = live
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "100"),
                ("currency", "gbp"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(status, 404, "test tokens do not exist in live mode");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    let (server, _gateway) =
        Server::start_with_gateway(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "5")]);
    let client = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..40 {
        let response = client
            .get(format!("{}/v1/customers", server.base_url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("a burst over the limit is refused");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit");
}

/// The form a page auto-submits: its action and hidden fields (maud escapes `&` as `&amp;`).
fn form_of(html: &str) -> (String, Vec<(String, String)>) {
    let unescape = |text: &str| text.replace("&amp;", "&").replace("&quot;", "\"");
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(unescape)
        .unwrap_or_else(|| panic!("no form in {html}"));
    let fields = html
        .split("<input ")
        .skip(1)
        .filter_map(|input| {
            let attribute = |name: &str| {
                input
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .map(unescape)
            };
            Some((attribute("name")?, attribute("value").unwrap_or_default()))
        })
        .collect();
    (action, fields)
}

#[tokio::test]
async fn three_d_secure_requires_action_then_completes_in_the_browser() {
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    let (server, _gateway) = Server::start_with_gateway(&db.url, &[]);
    let api = api(&server, &key);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    for (outcome, expected) in [("pass", "succeeded"), ("fail", "requires_payment_method")] {
        let (status, intent) = api
            .post(
                "/v1/payment_intents",
                &[
                    ("amount", "3100"),
                    ("currency", "gbp"),
                    ("payment_method", "pm_card_authenticationRequired"),
                    ("confirm", "true"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{intent}");
        assert_eq!(intent["status"], "requires_action");
        assert_eq!(intent["next_action"]["type"], "redirect_to_url");
        let url = intent["next_action"]["redirect_to_url"]["url"]
            .as_str()
            .unwrap()
            .to_string();

        // Our page hands the browser to the issuer's challenge…
        let page = browser.get(&url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("nonce-"));
        let (acs, fields) = form_of(&page.text().await.unwrap());
        let challenge = browser
            .post(&acs)
            .form(&fields)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let creq = form_of(&challenge)
            .1
            .into_iter()
            .find(|(name, _)| name == "creq")
            .unwrap()
            .1;
        // …the cardholder answers it…
        let result_url = acs.replace("/acs/challenge", "/acs/challenge/result");
        let back = browser
            .post(&result_url)
            .form(&[("creq", creq.as_str()), ("outcome", outcome)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // …and the ACS posts the result back to us.
        let (return_url, fields) = form_of(&back);
        assert!(return_url.starts_with(&server.base_url), "{return_url}");
        let done = browser
            .post(&return_url)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 200);

        let (_, after) = api
            .get(&format!("/v1/payment_intents/{}", id(&intent)))
            .await;
        assert_eq!(after["status"], expected, "after {outcome}: {after}");
    }
}
