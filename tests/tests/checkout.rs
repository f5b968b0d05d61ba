//! Checkout Sessions end to end without a browser: the API (create, retrieve, list,
//! line items, expire, `expires_at` bounds), the test helper that completes a session, and
//! the hosted return — the gateway's signed result, driven here through the Cardstream
//! simulator's hosted page with plain HTTP — refused when forged, altered or replayed.

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
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
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

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `action` of the page's form with `form_id` (or its only form) and its hidden fields.
fn form_of(html: &str, form_id: Option<&str>) -> (String, Vec<(String, String)>) {
    let start = match form_id {
        Some(id) => html
            .find(&format!("id=\"{id}\""))
            .and_then(|at| html[..at].rfind("<form"))
            .expect("the form"),
        None => html.find("<form").expect("a form"),
    };
    let form = &html[start..start + html[start..].find("</form>").expect("form end")];
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let marker = format!(" {name}=\"");
        let at = tag.find(&marker)? + marker.len();
        let end = tag[at..].find('"')?;
        Some(unescape(&tag[at..at + end]))
    };
    let action = attribute(&form[..form.find('>').expect("tag end")], "action").expect("action");
    let mut fields = Vec::new();
    for piece in form.split("<input").skip(1) {
        let tag = &piece[..piece.find('>').unwrap_or(piece.len())];
        if attribute(tag, "type").as_deref() != Some("hidden") {
            continue;
        }
        if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
            fields.push((name, value));
        }
    }
    (action, fields)
}

/// Pays `session`'s hosted page with `card` as a browser would, up to the signed result
/// the simulator posts back: returns where it goes and its fields.
async fn hosted_result(
    world: &World,
    session: &Value,
    card: &str,
    cvv: &str,
) -> (String, Vec<(String, String)>) {
    let url = session["url"].as_str().expect("session url");
    let page = world.browser.get(url).send().await.expect("checkout page");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"));
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("referrer-policy"));
    let html = page.text().await.unwrap();
    let (gateway_url, fields) = form_of(&html, Some("pay"));
    let card_page = world
        .browser
        .post(&gateway_url)
        .form(&fields)
        .send()
        .await
        .expect("hosted page");
    assert_eq!(card_page.status(), 200);
    let card_html = card_page.text().await.unwrap();
    assert!(
        card_html.contains("name=\"cardNumber\""),
        "a real card form"
    );
    let (_, hosted) = form_of(&card_html, None);
    let pay_url = gateway_url.replace("/hosted/", "/hosted/pay");
    let mut form = hosted;
    form.extend([
        ("cardNumber".to_string(), card.to_string()),
        ("cardExpiryMonth".to_string(), "12".to_string()),
        ("cardExpiryYear".to_string(), "34".to_string()),
        ("cardCVV".to_string(), cvv.to_string()),
    ]);
    let result = world
        .browser
        .post(&pay_url)
        .form(&form)
        .send()
        .await
        .expect("pay");
    let result_html = result.text().await.unwrap();
    form_of(&result_html, Some("autosubmit"))
}

async fn post_return(world: &World, url: &str, fields: &[(String, String)]) -> reqwest::Response {
    world
        .browser
        .post(url)
        .form(fields)
        .send()
        .await
        .expect("return")
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
    let (return_url, fields) = hosted_result(&world, &session, "4929421234600821", "356").await;
    assert_eq!(
        return_url,
        format!("{}/checkout/{id}/return", world.api.base)
    );

    // A bad signature.
    let forged = with_field(&fields, "signature", &"0".repeat(128));
    let response = post_return(&world, &return_url, &forged).await;
    assert_eq!(response.status(), 400);
    // An altered amount under the genuine signature.
    let altered = with_field(&fields, "amount", "1");
    let response = post_return(&world, &return_url, &altered).await;
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
    let response = post_return(&world, &return_url, &fields).await;
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
    let response = post_return(&world, &return_url, &fields).await;
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
        &world,
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
