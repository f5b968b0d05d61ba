//! Checkout in a real browser: headless Chromium, driven through chromedriver (WebDriver),
//! pays a Checkout Session on our hosted page and the Cardstream simulator's hosted card
//! form, and lands on the merchant's `success_url`; then the API shows what was recorded.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`, which
//! `.ci/run` installs). Without them the tests fail, unless `CALMONY_SKIP_BROWSER=1` is set,
//! in which case they say so loudly and pass.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calmony_tests::{run, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Cardstream's published Visa test card (approves).
const CARD_NUMBER: &str = "4929421234600821";
const CARD_CVV: &str = "356";

/// `Some(reason)` when the browser tests may be skipped (and should be).
fn skip_reason() -> Option<String> {
    let missing = [CHROMEDRIVER, CHROMIUM]
        .into_iter()
        .filter(|program| {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|status| !status.success())
                .unwrap_or(true)
        })
        .collect::<Vec<_>>();
    if missing.is_empty() {
        return None;
    }
    let reason =
        format!("{missing:?} not runnable (install Debian's chromium and chromium-driver)");
    if std::env::var("CALMONY_SKIP_BROWSER").as_deref() == Ok("1") {
        Some(reason)
    } else {
        panic!("the checkout browser tests need a browser: {reason}; set CALMONY_SKIP_BROWSER=1 to skip them");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url }
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1000,1200"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The merchant's shop: `success_url` and `cancel_url` land here.
async fn shop() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/thanks",
        axum::routing::get(|| async { axum::response::Html("<h1>Thank you for your order</h1>") }),
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

/// No `alert()` is open: a script injected into the page would have opened one.
async fn assert_no_alert(browser: &Client) {
    assert!(
        browser.get_alert_text().await.is_err(),
        "an alert opened: injected script ran"
    );
}

/// On the session's page: click pay, fill the simulator's card form, submit, and wait to
/// land on the shop's success page. Returns the URL landed on.
async fn pay(browser: &Client, world: &World, session: &Value) -> String {
    browser
        .goto(session["url"].as_str().expect("session url"))
        .await
        .unwrap();
    assert_no_alert(browser).await;
    browser
        .find(Locator::Id("pay-button"))
        .await
        .expect("the pay button")
        .click()
        .await
        .unwrap();
    let number = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("cardNumber"))
        .await
        .expect("the simulator's card form");
    number.send_keys(CARD_NUMBER).await.unwrap();
    browser
        .find(Locator::Id("cardExpiryMonth"))
        .await
        .unwrap()
        .select_by_value("12")
        .await
        .unwrap();
    let year = (chrono::Utc::now()
        .format("%y")
        .to_string()
        .parse::<u32>()
        .unwrap()
        + 3)
        % 100;
    browser
        .find(Locator::Id("cardExpiryYear"))
        .await
        .unwrap()
        .select_by_value(&format!("{year:02}"))
        .await
        .unwrap();
    browser
        .find(Locator::Id("cardCVV"))
        .await
        .unwrap()
        .send_keys(CARD_CVV)
        .await
        .unwrap();
    browser
        .find(Locator::XPath("//button[normalize-space(.)='Pay']"))
        .await
        .expect("the simulator's Pay button")
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = browser.current_url().await.unwrap().to_string();
        if url.starts_with(&world.shop) {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the shop; at {url}: {}",
            browser.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_customer_pays_a_payment_session_in_the_browser_and_injected_markup_stays_inert() {
    if let Some(reason) = skip_reason() {
        eprintln!("\n\n!!!!!!!! SKIPPED THE CHECKOUT BROWSER TEST: {reason} !!!!!!!!\n\n");
        return;
    }
    let world = World::new().await;
    let driver = Driver::start();
    let browser = driver.browser().await;
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
        .goto(session["url"].as_str().unwrap())
        .await
        .unwrap();
    assert_no_alert(&browser).await;
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

    let landed = pay(&browser, &world, &session).await;
    assert_eq!(landed, format!("{}/thanks?session={id}", world.shop));
    browser.close().await.unwrap();

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

#[tokio::test]
async fn a_customer_subscribes_in_the_browser() {
    if let Some(reason) = skip_reason() {
        eprintln!("\n\n!!!!!!!! SKIPPED THE CHECKOUT BROWSER TEST: {reason} !!!!!!!!\n\n");
        return;
    }
    let world = World::new().await;
    let driver = Driver::start();
    let browser = driver.browser().await;
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
    let landed = pay(&browser, &world, &session).await;
    assert_eq!(landed, format!("{}/thanks?session={id}", world.shop));
    browser.close().await.unwrap();

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
