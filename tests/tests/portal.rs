//! The customer portal end to end: a session made through the API, its URL driven as a
//! browser without script would drive it (forms, no redirects followed), against the real
//! server and the Cardstream simulator on a fresh database.

use calmony_tests::{run, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, REFERRER_POLICY};
use reqwest::StatusCode;
use serde_json::Value;

const XSS: &str = "<script>alert(1)</script>";

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

    async fn fetch(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// A browser: no cookies needed, redirects not followed.
struct Browser {
    client: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let location = headers
            .get(LOCATION)
            .map(|value| value.to_str().unwrap().to_string());
        Answer {
            status,
            location,
            headers,
            body: response.text().await.unwrap_or_default(),
        }
    }

    async fn get(&self, url: &str) -> Answer {
        Self::answer(self.client.get(url).send().await.expect("GET")).await
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Answer {
        Self::answer(self.client.post(url).form(form).send().await.expect("POST")).await
    }
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

/// The value of the hidden `csrf_token` field of the page.
fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.find(marker).expect("a csrf_token field") + marker.len();
    page[start..]
        .split('"')
        .next()
        .expect("a value")
        .to_string()
}

struct World {
    api: Api,
    price: String,
    base: String,
    // Dropped in this order: the server stops before its database goes.
    _server: Server,
    _gateway: Server,
    db: TestDatabase,
}

async fn world(extra_env: &[(&str, &str)]) -> World {
    let db = TestDatabase::new().await;
    let output = run(&db.url, &["projects", "create", "--name", "Acme <b>Co</b>"]);
    assert!(output.status.success());
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        &db.url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success());
    let key = stdout_of(&output).trim().to_string();
    let mut env = vec![("CALMONY_RATE_LIMIT_TEST", "10000")];
    env.extend_from_slice(extra_env);
    let (server, gateway) = Server::start_with_gateway(&db.url, &env);
    let api = Api {
        client: reqwest::Client::new(),
        base: server.base_url.clone(),
        key,
    };
    let product = api.ok("/v1/products", &[("name", "Pro plan")]).await;
    let price = id(&api
        .ok(
            "/v1/prices",
            &[
                ("product", &id(&product)),
                ("currency", "gbp"),
                ("unit_amount", "1000"),
                ("recurring[interval]", "month"),
            ],
        )
        .await);
    World {
        base: server.base_url.clone(),
        api,
        price,
        db,
        _server: server,
        _gateway: gateway,
    }
}

impl World {
    /// A customer with a default Visa and an active monthly subscription:
    /// (customer, card, subscription).
    async fn subscriber(&self, name: &str) -> (String, String, String) {
        let customer = id(&self
            .api
            .ok(
                "/v1/customers",
                &[
                    ("name", name),
                    ("email", "payer@example.com"),
                    ("metadata[note]", XSS),
                ],
            )
            .await);
        let card = id(&self
            .api
            .ok(
                "/v1/payment_methods/pm_card_visa/attach",
                &[("customer", &customer)],
            )
            .await);
        self.api
            .ok(
                &format!("/v1/customers/{customer}"),
                &[("invoice_settings[default_payment_method]", &card)],
            )
            .await;
        let subscription = self
            .api
            .ok(
                "/v1/subscriptions",
                &[
                    ("customer", &customer),
                    ("items[0][price]", &self.price),
                    ("description", &format!("Plan {XSS}")),
                ],
            )
            .await;
        assert_eq!(subscription["status"], "active", "{subscription}");
        (customer, card, id(&subscription))
    }

    /// A portal session's URL for `customer`.
    async fn portal(&self, customer: &str) -> String {
        let session = self
            .api
            .ok(
                "/v1/billing_portal/sessions",
                &[
                    ("customer", customer),
                    ("return_url", "https://shop.example/account"),
                ],
            )
            .await;
        session["url"].as_str().expect("a url").to_string()
    }

    async fn subscription(&self, id: &str) -> Value {
        self.api.fetch(&format!("/v1/subscriptions/{id}")).await
    }

    /// The `actor` of the newest event of a stream.
    async fn last_actor(&self, stream: &str) -> String {
        let pool = sqlx::PgPool::connect(&self.db.url).await.expect("connect");
        let actor: String = sqlx::query_scalar(
            "SELECT metadata->>'actor' FROM events WHERE aggregate_id = $1 \
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(stream)
        .fetch_one(&pool)
        .await
        .expect("an event");
        pool.close().await;
        actor
    }
}

#[tokio::test]
async fn a_session_opens_the_portal_and_nothing_else_does() {
    let world = world(&[]).await;
    let (customer, _card, subscription) = world.subscriber("Ada Lovelace").await;

    let (status, session) = world
        .api
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", customer.as_str()),
                ("return_url", "https://shop.example/account"),
                ("locale", "en"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert!(id(&session).starts_with("bps_"), "{session}");
    assert_eq!(session["object"], "billing_portal.session");
    assert_eq!(session["customer"], customer.as_str());
    assert_eq!(session["return_url"], "https://shop.example/account");
    assert_eq!(session["livemode"], false);
    assert_eq!(session["locale"], "en");
    let created = session["created"].as_i64().unwrap();
    let expires_at = session["expires_at"].as_i64().unwrap();
    assert!(
        (3_500..=3_700).contains(&(expires_at - created)),
        "{session}"
    );
    let url = session["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/portal/", world.base)), "{url}");

    let browser = Browser::new();
    let page = browser.get(url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers[CACHE_CONTROL], "no-store");
    assert_eq!(page.headers[REFERRER_POLICY], "no-referrer");
    let policy = page.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("'nonce-"), "{policy}");
    assert!(page.body.contains("Ada Lovelace"));
    assert!(page
        .body
        .contains(&format!("data-subscription=\"{subscription}\"")));
    assert!(page.body.contains("href=\"https://shop.example/account\""));
    let invoices = world
        .api
        .fetch(&format!("/v1/invoices?customer={customer}"))
        .await;
    let invoice = &invoices["data"][0];
    assert!(page
        .body
        .contains(invoice["hosted_invoice_url"].as_str().unwrap()));
    assert!(page.body.contains(invoice["invoice_pdf"].as_str().unwrap()));
    // Escaped everywhere: the project's name, the subscription's description.
    assert!(!page.body.contains(XSS), "{}", page.body);
    assert!(!page.body.contains("<b>Co</b>"));
    assert!(page.body.contains("&lt;script&gt;"));

    // A forged token, a token one character off, or no token: not found.
    let forged = browser
        .get(&format!("{}/portal/{}", world.base, "A".repeat(43)))
        .await;
    assert_eq!(forged.status, 404);
    let mut altered = url.to_string();
    let last = altered.pop().unwrap();
    altered.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(browser.get(&altered).await.status, 404);
    let forged_post = browser
        .post(
            &format!("{}/portal/{}/subscription", world.base, "A".repeat(43)),
            &[("subscription", &subscription), ("action", "cancel_now")],
        )
        .await;
    assert_eq!(forged_post.status, 404);

    // The API: a customer is required and must be this project's; no retrieve or list.
    let (status, error) = world
        .api
        .post("/v1/billing_portal/sessions", &[("customer", "cus_nope")])
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "resource_missing");
    let (status, _) = world.api.post("/v1/billing_portal/sessions", &[]).await;
    assert_eq!(status, 400);
    let (status, error) = world
        .api
        .post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", customer.as_str()),
                ("return_url", "javascript:alert(1)"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{error}");
    let (status, _) = world
        .api
        .get(&format!("/v1/billing_portal/sessions/{}", id(&session)))
        .await;
    assert_eq!(status, 404);
    assert_eq!(world.subscription(&subscription).await["status"], "active");
}

#[tokio::test]
async fn subscriptions_are_canceled_and_kept_with_csrf_and_only_the_customers_own() {
    let world = world(&[]).await;
    let (customer, _, subscription) = world.subscriber("Ada").await;
    let (_, _, others) = world.subscriber("Bob").await;
    let url = world.portal(&customer).await;
    let browser = Browser::new();
    let page = browser.get(&url).await;
    let csrf = csrf_of(&page.body);
    let action_url = format!("{url}/subscription");

    // Without the CSRF token, or with a wrong one: 403, nothing changes.
    for form in [
        vec![
            ("subscription", subscription.as_str()),
            ("action", "cancel_now"),
        ],
        vec![
            ("csrf_token", "wrong"),
            ("subscription", subscription.as_str()),
            ("action", "cancel_now"),
        ],
        vec![
            ("csrf_token", ""),
            ("subscription", subscription.as_str()),
            ("action", "cancel_now"),
        ],
    ] {
        let refused = browser.post(&action_url, &form).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
    }
    // Another portal session's CSRF token is not this one's.
    let other_page = browser.get(&world.portal(&customer).await).await;
    let refused = browser
        .post(
            &action_url,
            &[
                ("csrf_token", &csrf_of(&other_page.body)),
                ("subscription", &subscription),
                ("action", "cancel_now"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);
    let unchanged = world.subscription(&subscription).await;
    assert_eq!(unchanged["status"], "active");
    assert_eq!(unchanged["cancel_at_period_end"], false);

    // The form tampered to name another customer's subscription: refused, untouched.
    let tampered = browser
        .post(
            &action_url,
            &[
                ("csrf_token", &csrf),
                ("subscription", &others),
                ("action", "cancel_now"),
            ],
        )
        .await;
    assert_eq!(tampered.status, 404, "{}", tampered.body);
    assert_eq!(world.subscription(&others).await["status"], "active");

    // Cancel at period end, then undo it.
    let scheduled = browser
        .post(
            &action_url,
            &[
                ("csrf_token", &csrf),
                ("subscription", &subscription),
                ("action", "cancel_at_period_end"),
            ],
        )
        .await;
    assert_eq!(scheduled.status, 303, "{}", scheduled.body);
    let location = scheduled.location.expect("a redirect");
    assert!(location.ends_with("?done=cancel_scheduled"), "{location}");
    let after = world.subscription(&subscription).await;
    assert_eq!(after["cancel_at_period_end"], true);
    assert_eq!(after["status"], "active");
    assert!(world
        .last_actor(&subscription)
        .await
        .starts_with("portal:bps_"));
    let page = browser.get(&format!("{}{location}", world.base)).await;
    assert!(page.body.contains("Keep my subscription"));
    assert!(page
        .body
        .contains("will end at the end of its current period"));

    let resumed = browser
        .post(
            &action_url,
            &[
                ("csrf_token", &csrf),
                ("subscription", &subscription),
                ("action", "resume"),
            ],
        )
        .await;
    assert_eq!(resumed.status, 303, "{}", resumed.body);
    assert_eq!(
        world.subscription(&subscription).await["cancel_at_period_end"],
        false
    );

    // Cancel now.
    let canceled = browser
        .post(
            &action_url,
            &[
                ("csrf_token", &csrf),
                ("subscription", &subscription),
                ("action", "cancel_now"),
            ],
        )
        .await;
    assert_eq!(canceled.status, 303, "{}", canceled.body);
    let after = world.subscription(&subscription).await;
    assert_eq!(after["status"], "canceled");
    assert_eq!(
        after["cancellation_details"]["reason"], "cancellation_requested",
        "{after}"
    );
    let page = browser.get(&url).await;
    assert!(!page.body.contains("Cancel now"), "{}", page.body);
    // Canceling again is refused by the rules, with a page saying so.
    let again = browser
        .post(
            &action_url,
            &[
                ("csrf_token", &csrf),
                ("subscription", &subscription),
                ("action", "cancel_now"),
            ],
        )
        .await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(world.subscription(&others).await["status"], "active");
}

#[tokio::test]
async fn details_and_the_default_card_change_and_every_value_is_escaped() {
    let world = world(&[]).await;
    let (customer, first_card, _) = world.subscriber(XSS).await;
    let (other, other_card, _) = world.subscriber("Bob").await;
    let second_card = id(&world
        .api
        .ok(
            "/v1/payment_methods/pm_card_mastercard/attach",
            &[("customer", &customer)],
        )
        .await);
    let url = world.portal(&customer).await;
    let browser = Browser::new();
    let page = browser.get(&url).await;
    assert!(!page.body.contains(XSS), "{}", page.body);
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let csrf = csrf_of(&page.body);

    // Details: name, email and phone, through the customer's commands.
    let saved = browser
        .post(
            &format!("{url}/customer"),
            &[
                ("csrf_token", &csrf),
                ("name", &format!("Ada \"{XSS}")),
                ("email", "ada@example.com"),
                ("phone", "+44 20 7946 0000"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let updated = world.api.fetch(&format!("/v1/customers/{customer}")).await;
    assert_eq!(updated["name"], format!("Ada \"{XSS}"));
    assert_eq!(updated["email"], "ada@example.com");
    assert_eq!(updated["phone"], "+44 20 7946 0000");
    assert!(world.last_actor(&customer).await.starts_with("portal:bps_"));
    let page = browser.get(&url).await;
    assert!(!page.body.contains(XSS), "{}", page.body);
    assert!(page.body.contains("Ada &quot;&lt;script&gt;"));
    // Without the CSRF token: refused, unchanged.
    let refused = browser
        .post(&format!("{url}/customer"), &[("name", "Mallory")])
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        world.api.fetch(&format!("/v1/customers/{customer}")).await["name"],
        format!("Ada \"{XSS}")
    );

    // The default card: one of the customer's own only.
    assert!(page
        .body
        .contains(&format!("data-payment-method=\"{second_card}\"")));
    let tampered = browser
        .post(
            &format!("{url}/payment_method"),
            &[
                ("csrf_token", &csrf),
                ("payment_method", &other_card),
                ("action", "set_default"),
            ],
        )
        .await;
    assert_eq!(tampered.status, 404);
    let set = browser
        .post(
            &format!("{url}/payment_method"),
            &[
                ("csrf_token", &csrf),
                ("payment_method", &second_card),
                ("action", "set_default"),
            ],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.body);
    let updated = world.api.fetch(&format!("/v1/customers/{customer}")).await;
    assert_eq!(
        updated["invoice_settings"]["default_payment_method"],
        second_card.as_str()
    );
    assert_ne!(first_card, second_card);
    let other = world.api.fetch(&format!("/v1/customers/{other}")).await;
    assert_eq!(
        other["invoice_settings"]["default_payment_method"],
        other_card.as_str()
    );

    // Adding a card: a hosted checkout session in setup mode for this customer, back here.
    let add = browser
        .post(&format!("{url}/card"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(add.status, 303, "{}", add.body);
    let location = add.location.expect("a redirect");
    let checkout_id = location
        .strip_prefix("/checkout/")
        .unwrap_or_else(|| panic!("{location}"));
    let checkout = world
        .api
        .fetch(&format!("/v1/checkout/sessions/{checkout_id}"))
        .await;
    assert_eq!(checkout["mode"], "setup", "{checkout}");
    assert_eq!(checkout["customer"], customer.as_str());
    assert_eq!(checkout["success_url"], url.as_str());
    let hosted = browser.get(&format!("{}{location}", world.base)).await;
    assert_eq!(hosted.status, 200, "{}", hosted.body);
    world
        .api
        .ok(
            &format!("/v1/test_helpers/checkout/sessions/{checkout_id}/complete"),
            &[("payment_method", "pm_card_amex")],
        )
        .await;
    let page = browser.get(&url).await;
    assert!(page.body.contains("amex"), "{}", page.body);
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let world = world(&[("CALMONY_PORTAL_SESSION_SECONDS", "1")]).await;
    let (customer, _, subscription) = world.subscriber("Ada").await;
    let url = world.portal(&customer).await;
    let browser = Browser::new();
    let page = browser.get(&url).await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let expired = browser.get(&url).await;
    assert_eq!(expired.status, 410, "{}", expired.body);
    assert!(expired.body.contains("expired"));
    let refused = browser
        .post(
            &format!("{url}/subscription"),
            &[
                ("csrf_token", &csrf),
                ("subscription", &subscription),
                ("action", "cancel_now"),
            ],
        )
        .await;
    assert_eq!(refused.status, 410);
    assert_eq!(world.subscription(&subscription).await["status"], "active");
}
