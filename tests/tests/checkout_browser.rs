//! Checkout in a real browser: headless Chromium, driven through chromedriver (WebDriver),
//! pays a Checkout Session on our hosted page and the Cardstream simulator's hosted card
//! form, and lands on the merchant's `success_url`; then the API shows what was recorded.
//!
//! The browser, its screenshots and console checks: `calmony_tests::browser` (needs
//! chromium and chromedriver; `CALMONY_SKIP_BROWSER=1` skips when they are missing).

use calmony_tests::browser::{skip_reason, Browser, Driver};
use calmony_tests::{run, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use fantoccini::Locator;
use serde_json::Value;

/// The merchant's shop: `success_url` and `cancel_url` land here.
async fn shop() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/thanks",
            axum::routing::get(|| async {
                axum::response::Html("<h1>Thank you for your order</h1>")
            }),
        )
        .route(
            "/favicon.ico",
            axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

struct World {
    client: reqwest::Client,
    base: String,
    key: String,
    shop: String,
    _shop_task: tokio::task::JoinHandle<()>,
    _server: Server,
    _database: TestDatabase,
}

impl World {
    async fn new() -> World {
        let database = TestDatabase::new().await;
        let output = run(&database.url, &["projects", "create", "--name", "Shop"]);
        assert!(output.status.success());
        let project = stdout_of(&output).trim().to_string();
        let output = run(
            &database.url,
            &["keys", "create", "--project", &project, "--mode", "test"],
        );
        assert!(output.status.success());
        let server = Server::start(&database.url, &[]);
        let (shop, shop_task) = shop().await;
        World {
            client: reqwest::Client::new(),
            base: server.base_url.clone(),
            key: stdout_of(&output).trim().to_string(),
            shop,
            _shop_task: shop_task,
            _server: server,
            _database: database,
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .form(form)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
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

    fn success_url(&self) -> String {
        format!("{}/thanks?session={{CHECKOUT_SESSION_ID}}", self.shop)
    }
}

/// On the session's page: click pay, fill the simulator's card form, submit, and wait to
/// land on the shop's success page. Returns the URL landed on.
async fn pay(browser: &mut Browser, world: &World, session: &Value) -> String {
    browser
        .open(
            session["url"].as_str().expect("session url"),
            "checkout-page",
        )
        .await;
    browser.click(Locator::Id("pay-button")).await;
    browser.pay_on_the_gateway_page().await;
    let landed = browser.wait_for_url(&world.shop).await;
    browser.step("success-page").await;
    landed
}

#[tokio::test]
async fn a_customer_pays_a_payment_session_in_the_browser_and_injected_markup_stays_inert() {
    if skip_reason().is_some() {
        return;
    }
    let world = World::new().await;
    let driver = Driver::start();
    let mut browser = driver
        .browser("a_customer_pays_a_payment_session_in_the_browser")
        .await;
    let product_name = "<script>alert('xss')</script><img src=x onerror=\"alert(1)\">Tea & towel";
    let email = "\"><img src=x onerror=alert(2)>@example.com";
    let success_url = world.success_url();
    let session = world
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("success_url", &success_url),
                ("customer_email", email),
                ("line_items[0][price_data][currency]", "gbp"),
                ("line_items[0][price_data][unit_amount]", "1250"),
                (
                    "line_items[0][price_data][product_data][name]",
                    product_name,
                ),
                ("line_items[0][quantity]", "2"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();

    // The order page shows the payloads as text and runs none of them.
    browser
        .open(
            session["url"].as_str().unwrap(),
            "order-with-injected-markup",
        )
        .await;
    let shown = browser
        .find(Locator::Css("td.product-name"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, product_name);
    let shown_email = browser
        .find(Locator::Id("customer-email"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown_email, email);
    assert!(browser
        .find_all(Locator::Css("main img"))
        .await
        .unwrap()
        .is_empty());
    let total = browser
        .find(Locator::Id("total"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(total.contains("25.00"), "{total}");

    let landed = pay(&mut browser, &world, &session).await;
    assert_eq!(landed, format!("{}/thanks?session={id}", world.shop));
    browser.finish("done").await;

    let session = world.get(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(session["status"], "complete");
    assert_eq!(session["payment_status"], "paid");
    let intent = world
        .get(&format!(
            "/v1/payment_intents/{}",
            session["payment_intent"]
                .as_str()
                .expect("a payment intent")
        ))
        .await;
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 2500);
    let method = world
        .get(&format!(
            "/v1/payment_methods/{}",
            intent["payment_method"].as_str().expect("a payment method")
        ))
        .await;
    assert_eq!(method["card"]["last4"], "0821");
    assert_eq!(method["card"]["brand"], "visa");
}

/// Cardstream's simulator declines this card (do not honour); Stripe's `4000000000000002`.
const DECLINED_CARD: (&str, &str) = ("4000000000000002", "123");

#[tokio::test]
async fn a_declined_card_shows_an_error_and_the_customer_pays_on_retry() {
    if skip_reason().is_some() {
        return;
    }
    let world = World::new().await;
    let driver = Driver::start();
    let mut browser = driver
        .browser("a_declined_card_shows_an_error_and_the_customer_pays_on_retry")
        .await;
    let success_url = world.success_url();
    let session = world
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("success_url", &success_url),
                ("line_items[0][price_data][currency]", "gbp"),
                ("line_items[0][price_data][unit_amount]", "1800"),
                ("line_items[0][price_data][product_data][name]", "Kettle"),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();

    // The declined card: back on our page, told so, with a way back to checkout.
    browser
        .open(session["url"].as_str().unwrap(), "checkout-page")
        .await;
    browser.click(Locator::Id("pay-button")).await;
    browser
        .pay_on_the_gateway_page_with(DECLINED_CARD.0, DECLINED_CARD.1)
        .await;
    let retry = browser
        .wait()
        .at_most(std::time::Duration::from_secs(20))
        .for_element(Locator::Id("retry"))
        .await
        .expect("the decline page's way back");
    browser.step("declined").await;
    let page = browser.source().await.unwrap();
    assert!(page.contains("Your card was not charged"), "{page}");
    let open = world.get(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(open["status"], "open", "a decline leaves the session open");
    assert_eq!(open["payment_status"], "unpaid");

    // Retry with a good card: paid, once.
    retry.click().await.expect("retry");
    browser.wait_for_url(session["url"].as_str().unwrap()).await;
    let landed = pay(&mut browser, &world, &session).await;
    assert_eq!(landed, format!("{}/thanks?session={id}", world.shop));
    browser.finish("done").await;
    let session = world.get(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(session["status"], "complete");
    assert_eq!(session["payment_status"], "paid");
    let intents = world.get("/v1/payment_intents?limit=10").await;
    let succeeded: Vec<&Value> = intents["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|intent| intent["status"] == "succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "{intents}");
    assert_eq!(succeeded[0]["amount"], 1800);
}

#[tokio::test]
async fn a_customer_subscribes_in_the_browser() {
    if skip_reason().is_some() {
        return;
    }
    let world = World::new().await;
    let driver = Driver::start();
    let mut browser = driver.browser("a_customer_subscribes_in_the_browser").await;
    let product = world.post("/v1/products", &[("name", "Tea club")]).await;
    let price = world
        .post(
            "/v1/prices",
            &[
                ("product", product["id"].as_str().unwrap()),
                ("currency", "gbp"),
                ("unit_amount", "900"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let success_url = world.success_url();
    let session = world
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("success_url", &success_url),
                ("customer_email", "member@example.com"),
                ("line_items[0][price]", price["id"].as_str().unwrap()),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    let landed = pay(&mut browser, &world, &session).await;
    assert_eq!(landed, format!("{}/thanks?session={id}", world.shop));
    browser.finish("done").await;

    let session = world.get(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(session["status"], "complete");
    assert_eq!(session["payment_status"], "paid");
    let subscription = world
        .get(&format!(
            "/v1/subscriptions/{}",
            session["subscription"].as_str().expect("a subscription")
        ))
        .await;
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["customer"], session["customer"]);
    let customer = world
        .get(&format!(
            "/v1/customers/{}",
            session["customer"].as_str().unwrap()
        ))
        .await;
    assert_eq!(customer["email"], "member@example.com");
}
