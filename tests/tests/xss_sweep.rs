//! The XSS sweep: every text a merchant, a customer or a webhook receiver can put into our
//! objects holds script payloads, and then every HTML page the server renders is fetched
//! — the hosted checkout page and its return, the hosted invoice page, the 3-D Secure
//! hand-off, the customer portal and its forms' answers, every dashboard page, the API
//! reference — and checked three ways:
//!
//! 1. the raw HTTP body never holds a payload unescaped, every `<script>` carries the
//!    page's nonce, and no `href`/`src`/`action` is a `javascript:` URL;
//! 2. in headless Chromium, no `alert()` opens and the console stays clean (a CSP
//!    violation is a console error);
//! 3. the routes the sweep covers are every page route in the router's source
//!    (`read-api/src/lib.rs`, `pages/…`, `docs/mod.rs`), so a new page cannot be missed.
//!
//! URL fields (`success_url`, `cancel_url`, `return_url`, webhook `url`) refuse
//! `javascript:` at the API, which is checked too.

use std::collections::BTreeSet;

use calmony_tests::api::{id, Api};
use calmony_tests::browser::{skip_reason, Driver};
use calmony_tests::{create_operator, run, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use fantoccini::Locator;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

/// Script payloads; each field gets one with a tag naming the field, so a failure says
/// where the payload came from.
const PAYLOADS: [&str; 4] = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "'><svg onload=alert(1)>",
    "</textarea></title></style><script>alert(1)</script>",
];

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// Every value planted, to look for in every page.
#[derive(Default)]
struct Planted(Vec<String>);

impl Planted {
    /// A payload for `field` (payloads taken in turn).
    fn value(&mut self, field: &str) -> String {
        let payload = PAYLOADS[self.0.len() % PAYLOADS.len()];
        let value = format!("{field}{payload}");
        self.0.push(value.clone());
        value
    }

    /// A payload that still passes for an email address where one is checked.
    fn email(&mut self, field: &str) -> String {
        let value = format!("{field}\"><img src=x onerror=alert(1)>@example.com");
        self.0.push(value.clone());
        value
    }
}

/// A posted form's fields.
type Form = Vec<(&'static str, String)>;

/// A browser without script: cookies kept by name, redirects not followed.
struct Http {
    client: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Http {
    fn new() -> Http {
        Http {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: Default::default(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let header: Vec<String> = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let request = if header.is_empty() {
            request
        } else {
            request.header(COOKIE, header.join("; "))
        };
        let response = request.send().await.expect("request");
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        for line in response.headers().get_all(SET_COOKIE) {
            let line = line.to_str().unwrap_or_default();
            let pair = line.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || line.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        Answer {
            status,
            location,
            body: response.text().await.unwrap_or_default(),
        }
    }

    async fn get(&mut self, url: &str) -> Answer {
        let request = self.client.get(url);
        self.send(request).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.client.post(url).form(form);
        self.send(request).await
    }
}

/// The value of the first hidden `csrf_token` field.
fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.find(marker).expect("a csrf_token field") + marker.len();
    page[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `text` as maud writes it into HTML.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What must hold of every page's raw HTML.
fn assert_inert(page: &str, html: &str, planted: &Planted) {
    for value in &planted.0 {
        assert!(
            !html.contains(value.as_str()),
            "{page}: the payload {value:?} is in the page unescaped:\n{html}"
        );
    }
    for payload in PAYLOADS {
        assert!(
            !html.contains(payload),
            "{page}: a payload ({payload:?}) is in the page unescaped"
        );
    }
    let lower = html.to_ascii_lowercase();
    let scripts = lower.matches("<script").count();
    let with_nonce = lower.matches("<script nonce=\"").count();
    assert_eq!(scripts, with_nonce, "{page}: a script without the nonce");
    for attribute in ["href", "src", "action", "formaction"] {
        for quote in ["\"", "'"] {
            assert!(
                !lower.contains(&format!("{attribute}={quote}javascript:")),
                "{page}: a javascript: URL in {attribute}"
            );
        }
    }
    assert!(!lower.contains("<img"), "{page}: an <img> element");
    assert!(!lower.contains("<svg onload"), "{page}: an injected <svg>");
}

/// A webhook receiver that answers 500 with a payload in its body (what a hostile or
/// broken receiver says may end up in the delivery log).
async fn hostile_receiver() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "<script>alert('receiver')</script>",
            )
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// The page routes in the router's source: every `.route("/…"` in the files that build the
/// app's routes, minus `/v1/…` API routes (JSON) other than the browser's own.
fn page_routes_in_source() -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../read-api/src");
    let files = [
        "lib.rs",
        "docs/mod.rs",
        "pages/dashboard/mod.rs",
        "pages/portal/mod.rs",
    ];
    let mut routes = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(root.join(file)).expect("read the router's source");
        for piece in source.split(".route(").skip(1) {
            let Some(start) = piece.find('"') else {
                continue;
            };
            let Some(length) = piece[start + 1..].find('"') else {
                continue;
            };
            routes.insert(piece[start + 1..start + 1 + length].to_string());
        }
    }
    routes
}

/// Routes that answer something other than HTML, and why they are not swept.
const NOT_HTML: [&str; 4] = [
    "/healthz",      // JSON
    "/favicon.ico",  // 204, no body
    "/openapi.json", // JSON (generated from the code's table; no stored text)
    "/invoices/{token}/pdf",
];

#[tokio::test]
async fn no_page_renders_a_planted_script() {
    let browser_available = skip_reason().is_none();
    let db = TestDatabase::new().await;
    let mut planted = Planted::default();

    // The project, its seller details, an operator: all named with payloads.
    let project_name = planted.value("project");
    let output = run(&db.url, &["projects", "create", "--name", &project_name]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        &db.url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success());
    let key = stdout_of(&output).trim().to_string();
    let (seller_name, seller_address, seller_email, seller_tax_id) = (
        planted.value("seller.name"),
        planted.value("seller.address"),
        // Checked as an address by `configure`.
        "billing@example.com".to_string(),
        planted.value("seller.tax_id"),
    );
    let output = run(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--seller-name",
            &seller_name,
            "--seller-address",
            &seller_address,
            "--seller-email",
            &seller_email,
            "--seller-tax-id",
            &seller_tax_id,
        ],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let operator_name = planted.value("operator.name");
    create_operator(&db.url, EMAIL, &operator_name, PASSWORD);

    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let base = server.base_url.clone();
    let api = Api::new(&server, &key);

    // URL fields refuse javascript: (and data:) URLs.
    for (path, form) in [
        (
            "/v1/checkout/sessions",
            vec![
                ("mode", "setup"),
                ("currency", "gbp"),
                ("success_url", "javascript:alert(1)"),
            ],
        ),
        (
            "/v1/checkout/sessions",
            vec![
                ("mode", "setup"),
                ("currency", "gbp"),
                ("success_url", "https://shop.example/ok"),
                ("cancel_url", "javascript:alert(1)//https://x"),
            ],
        ),
        (
            "/v1/webhook_endpoints",
            vec![("url", "javascript:alert(1)"), ("enabled_events[]", "*")],
        ),
    ] {
        let (status, body) = api.post(path, &form).await;
        assert_eq!(status, 400, "{path} accepted a javascript: URL: {body}");
    }

    // A customer whose every text is a payload, with a card and a subscription to a
    // product named with one.
    let customer_name = planted.value("customer.name");
    let customer = api
        .ok(
            "/v1/customers",
            &[
                ("name", &customer_name),
                ("email", &planted.value("customer.email")),
                ("phone", &planted.value("customer.phone")),
                ("description", &planted.value("customer.description")),
                ("metadata[note]", &planted.value("customer.metadata")),
            ],
        )
        .await;
    let customer = id(&customer);
    let card = id(&api
        .ok(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", &customer)],
        )
        .await);
    api.ok(
        &format!("/v1/customers/{customer}"),
        &[("invoice_settings[default_payment_method]", &card)],
    )
    .await;
    let product = api
        .ok(
            "/v1/products",
            &[
                ("name", &planted.value("product.name")),
                ("description", &planted.value("product.description")),
            ],
        )
        .await;
    let price = api
        .ok(
            "/v1/prices",
            &[
                ("product", &id(&product)),
                ("currency", "gbp"),
                ("unit_amount", "1500"),
                ("recurring[interval]", "month"),
                ("nickname", &planted.value("price.nickname")),
            ],
        )
        .await;
    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[
                ("customer", &customer),
                ("items[0][price]", &id(&price)),
                ("description", &planted.value("subscription.description")),
                ("metadata[note]", &planted.value("subscription.metadata")),
            ],
        )
        .await;
    assert_eq!(subscription["status"], "active", "{subscription}");
    // A one-off payment with a description, and an invoice with an item, a description and
    // a footer, finalized so that it has a hosted page.
    let intent = api
        .ok(
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "gbp"),
                ("customer", &customer),
                ("payment_method", &card),
                ("confirm", "true"),
                ("description", &planted.value("payment_intent.description")),
                ("metadata[note]", &planted.value("payment_intent.metadata")),
            ],
        )
        .await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    let invoice = api
        .ok(
            "/v1/invoices",
            &[
                ("customer", &customer),
                ("currency", "gbp"),
                ("auto_advance", "false"),
                ("description", &planted.value("invoice.description")),
                ("footer", &planted.value("invoice.footer")),
                ("metadata[note]", &planted.value("invoice.metadata")),
            ],
        )
        .await;
    let invoice = id(&invoice);
    api.ok(
        "/v1/invoiceitems",
        &[
            ("customer", &customer),
            ("invoice", &invoice),
            ("amount", "700"),
            ("currency", "gbp"),
            ("description", &planted.value("invoice_item.description")),
            ("metadata[note]", &planted.value("invoice_item.metadata")),
        ],
    )
    .await;
    let finalized = api
        .ok(&format!("/v1/invoices/{invoice}/finalize"), &[])
        .await;
    let hosted_invoice = finalized["hosted_invoice_url"]
        .as_str()
        .expect("a hosted invoice page")
        .to_string();
    // The subscription's first invoice (its lines name the product).
    let first_invoice = api
        .invoice(subscription["latest_invoice"].as_str().expect("an invoice"))
        .await;
    let hosted_first_invoice = first_invoice["hosted_invoice_url"]
        .as_str()
        .expect("a hosted invoice page")
        .to_string();

    // Checkout sessions: payment mode (an inline product name, the email), subscription
    // mode (the catalog product), setup mode; metadata everywhere.
    let checkout_payment = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("success_url", "https://shop.example/thanks"),
                ("cancel_url", "https://shop.example/cart"),
                ("customer_email", &planted.email("checkout.customer_email")),
                ("line_items[0][price_data][currency]", "gbp"),
                ("line_items[0][price_data][unit_amount]", "1250"),
                (
                    "line_items[0][price_data][product_data][name]",
                    &planted.value("checkout.product_name"),
                ),
                ("line_items[0][quantity]", "2"),
                ("metadata[note]", &planted.value("checkout.metadata")),
            ],
        )
        .await;
    let checkout_subscription = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("success_url", "https://shop.example/thanks"),
                ("customer", &customer),
                ("line_items[0][price]", &id(&price)),
                ("line_items[0][quantity]", "1"),
            ],
        )
        .await;
    let checkout_setup = api
        .ok(
            "/v1/checkout/sessions",
            &[
                ("mode", "setup"),
                ("currency", "gbp"),
                ("success_url", "https://shop.example/thanks"),
                ("customer", &customer),
            ],
        )
        .await;

    // A webhook endpoint described with a payload, whose receiver answers with one.
    let (receiver, _receiver_task) = hostile_receiver().await;
    let endpoint = api
        .ok(
            "/v1/webhook_endpoints",
            &[
                ("url", &receiver),
                ("enabled_events[]", "*"),
                ("description", &planted.value("webhook.description")),
                ("metadata[note]", &planted.value("webhook.metadata")),
            ],
        )
        .await;
    let endpoint = id(&endpoint);
    // Something to deliver, after the endpoint exists.
    api.ok(
        &format!("/v1/customers/{customer}"),
        &[("metadata[again]", &planted.value("customer.metadata2"))],
    )
    .await;

    // The portal.
    let portal = api
        .ok(
            "/v1/billing_portal/sessions",
            &[
                ("customer", &customer),
                ("return_url", "https://shop.example/account"),
            ],
        )
        .await;
    let portal_url = portal["url"].as_str().expect("a portal url").to_string();
    let portal_path = portal_url
        .strip_prefix(&base)
        .expect("the portal is ours")
        .to_string();

    // Signed in to the dashboard (the cookie is kept by `http`).
    let mut http = Http::new();
    let form = http.get(&format!("{base}/dashboard/login")).await;
    // A failed sign-in echoes the typed email back into the form.
    let typed = planted.value("login.email");
    let failed = http
        .post(
            &format!("{base}/dashboard/login"),
            &[
                ("csrf_token", &csrf_of(&form.body)),
                ("email", &typed),
                ("password", "wrong"),
            ],
        )
        .await;
    assert_inert("POST /dashboard/login (failed)", &failed.body, &planted);
    let form = http.get(&format!("{base}/dashboard/login")).await;
    assert_inert("GET /dashboard/login", &form.body, &planted);
    let signed_in = http
        .post(
            &format!("{base}/dashboard/login"),
            &[
                ("csrf_token", &csrf_of(&form.body)),
                ("email", EMAIL),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert!(
        http.cookies.contains_key("calmony_session"),
        "a dashboard session"
    );

    // Wait until the relay has tried the hostile receiver.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let deliveries = api
            .list(&format!("/v1/webhook_endpoints/{endpoint}/deliveries"))
            .await;
        if deliveries
            .iter()
            .any(|delivery| delivery["attempt_count"].as_i64().unwrap_or(0) > 0)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery was attempted: {deliveries:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let project_base = format!("/dashboard/projects/{project}/test");
    let search = planted.value("dashboard.search");
    let search_query: String = url::form_urlencoded::byte_serialize(search.as_bytes()).collect();
    // Every GET page: (route pattern, path, expected status).
    // A credit at Griffin that matches nothing, its reference and payer name (both the
    // payer's to choose) holding payloads, recorded by a reconciliation pass.
    let (griffin, account) = calmony_tests::griffin::griffin().await;
    let (reference, payer) = (PAYLOADS[0].to_string(), PAYLOADS[1].to_string());
    planted.0.extend([reference.clone(), payer.clone()]);
    calmony_tests::griffin::book_credit_from(&griffin, &account, 1_234, &reference, &payer).await;
    let mut reconcile = calmony_tests::calmony(&db.url);
    reconcile.args(["settlements", "reconcile"]);
    for (name, value) in calmony_tests::griffin::griffin_env(&griffin) {
        reconcile.env(name, value);
    }
    let reconciled = reconcile
        .output()
        .expect("run calmony settlements reconcile");
    assert!(reconciled.status.success(), "{}", stderr_of(&reconciled));

    let pages: Vec<(&str, String, u16)> = vec![
        ("/docs", "/docs".into(), 200),
        (
            "/checkout/{id}",
            format!("/checkout/{}", id(&checkout_payment)),
            200,
        ),
        (
            "/checkout/{id}",
            format!("/checkout/{}", id(&checkout_subscription)),
            200,
        ),
        (
            "/checkout/{id}",
            format!("/checkout/{}", id(&checkout_setup)),
            200,
        ),
        (
            "/checkout/{id}/return",
            format!(
                "/checkout/{}/return?responseCode=0&orderRef={}",
                id(&checkout_payment),
                url::form_urlencoded::byte_serialize(PAYLOADS[0].as_bytes()).collect::<String>()
            ),
            400,
        ),
        (
            "/invoices/{token}",
            hosted_invoice
                .strip_prefix(&base)
                .unwrap_or_default()
                .into(),
            200,
        ),
        (
            "/invoices/{token}",
            hosted_first_invoice
                .strip_prefix(&base)
                .unwrap_or_default()
                .into(),
            200,
        ),
        (
            "/v1/payment_intents/{id}/authenticate",
            format!("/v1/payment_intents/{}/authenticate", id(&intent)),
            409,
        ),
        ("/portal/{token}", portal_path.clone(), 200),
        ("/dashboard", "/dashboard".into(), 200),
        (
            "/dashboard/bank-credits",
            "/dashboard/bank-credits".into(),
            200,
        ),
        (
            "/dashboard/projects/{project}/{mode}",
            project_base.clone(),
            200,
        ),
        (
            "/dashboard/projects/{project}/{mode}/customers",
            format!("{project_base}/customers"),
            200,
        ),
        (
            "/dashboard/projects/{project}/{mode}/customers",
            format!("{project_base}/customers?q={search_query}"),
            200,
        ),
        (
            "/dashboard/projects/{project}/{mode}/customers/{customer}",
            format!("{project_base}/customers/{customer}"),
            200,
        ),
        (
            "/dashboard/projects/{project}/{mode}/webhooks",
            format!("{project_base}/webhooks"),
            200,
        ),
        (
            "/dashboard/projects/{project}/{mode}/settlements",
            format!("{project_base}/settlements"),
            200,
        ),
        (
            "/dashboard/projects/{project}/{mode}/webhooks/{endpoint}",
            format!("{project_base}/webhooks/{endpoint}"),
            200,
        ),
    ];
    let mut covered: BTreeSet<String> = BTreeSet::new();
    for (route, path, status) in &pages {
        let answer = http.get(&format!("{base}{path}")).await;
        assert_eq!(
            answer.status.as_u16(),
            *status,
            "GET {path}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("<html"),
            "GET {path} is not an HTML page"
        );
        assert_inert(&format!("GET {path}"), &answer.body, &planted);
        covered.insert(route.to_string());
    }
    // The planted text is on the pages, escaped (so the sweep looked where it is shown).
    let customer_page = http
        .get(&format!("{base}{project_base}/customers/{customer}"))
        .await;
    assert!(
        customer_page.body.contains(&escaped(&customer_name)),
        "the customer page shows the (escaped) name"
    );
    let credits_page = http.get(&format!("{base}/dashboard/bank-credits")).await;
    assert!(
        credits_page.body.contains(&escaped(&reference))
            && credits_page.body.contains(&escaped(&payer)),
        "the bank credits page shows the (escaped) reference and payer: {}",
        credits_page.body
    );

    // The portal's forms, posted with payloads: their answers (a redirect, or a page).
    let portal_page = http.get(&portal_url).await;
    let csrf = csrf_of(&portal_page.body);
    let portal_name = planted.value("portal.name");
    let posts: Vec<(&str, String, Form)> = vec![
        (
            "/portal/{token}/customer",
            format!("{portal_path}/customer"),
            vec![
                ("csrf_token", csrf.clone()),
                ("name", portal_name.clone()),
                ("email", planted.value("portal.email")),
                ("phone", planted.value("portal.phone")),
            ],
        ),
        (
            "/portal/{token}/subscription",
            format!("{portal_path}/subscription"),
            vec![
                ("csrf_token", csrf.clone()),
                ("subscription", planted.value("portal.subscription")),
                ("action", planted.value("portal.action")),
            ],
        ),
        (
            "/portal/{token}/payment_method",
            format!("{portal_path}/payment_method"),
            vec![
                ("csrf_token", csrf.clone()),
                ("payment_method", planted.value("portal.payment_method")),
                ("action", "set_default".into()),
            ],
        ),
        (
            "/portal/{token}/card",
            format!("{portal_path}/card"),
            vec![("csrf_token", planted.value("portal.csrf"))],
        ),
        (
            "/checkout/{id}/return",
            format!("/checkout/{}/return", id(&checkout_payment)),
            vec![
                ("responseCode", "0".into()),
                ("transactionUnique", planted.value("return.unique")),
                ("signature", planted.value("return.signature")),
            ],
        ),
        (
            "/v1/payment_intents/{id}/authenticate/return",
            format!("/v1/payment_intents/{}/authenticate/return", id(&intent)),
            vec![("threeDSResponse[cres]", planted.value("acs.cres"))],
        ),
    ];
    for (route, path, form) in &posts {
        let form: Vec<(&str, &str)> = form
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let answer = http.post(&format!("{base}{path}"), &form).await;
        assert_inert(&format!("POST {path}"), &answer.body, &planted);
        if let Some(location) = &answer.location {
            let landed = http.get(&format!("{base}{location}")).await;
            assert_inert(&format!("GET {location}"), &landed.body, &planted);
        }
        covered.insert(route.to_string());
    }
    // The portal now shows the details posted above, escaped.
    let portal_page = http.get(&portal_url).await;
    assert!(
        portal_page.body.contains(&escaped(&portal_name)),
        "the portal shows the (escaped) new name"
    );
    assert_inert("GET portal after the update", &portal_page.body, &planted);
    covered.insert("/dashboard/login".into());
    // Every page again, now that the portal's forms wrote their payloads too.
    for (_, path, _) in &pages {
        let answer = http.get(&format!("{base}{path}")).await;
        assert_inert(&format!("GET {path} (again)"), &answer.body, &planted);
    }

    // In the browser: every page again, no alert, no console error (the 200 pages).
    if browser_available {
        let driver = Driver::start();
        let mut browser = driver.browser("no_page_renders_a_planted_script").await;
        browser
            .open(&format!("{base}/dashboard/login"), "login")
            .await;
        // The browser signs in with its own session (the sign-in form).
        browser
            .find(Locator::Id("email"))
            .await
            .expect("the email field")
            .send_keys(EMAIL)
            .await
            .expect("type");
        browser
            .find(Locator::Id("password"))
            .await
            .expect("the password field")
            .send_keys(PASSWORD)
            .await
            .expect("type");
        browser
            .click(Locator::XPath("//button[normalize-space(.)='Sign in']"))
            .await;
        browser.wait_for_url(&format!("{base}/dashboard")).await;
        browser.step("signed-in").await;
        for (route, path, status) in &pages {
            // The route as a file name: `/dashboard/projects/{project}` → `dashboard-projects-project`.
            let step = route
                .split(|character: char| !character.is_ascii_alphanumeric() && character != '_')
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            if *status == 200 {
                browser.open(&format!("{base}{path}"), &step).await;
                assert!(
                    browser
                        .find_all(Locator::Css("main img, body > img, svg[onload]"))
                        .await
                        .unwrap_or_default()
                        .is_empty(),
                    "{path}: an injected element"
                );
            } else {
                browser.goto(&format!("{base}{path}")).await.expect("open");
                browser.screenshot(&step).await;
                calmony_tests::browser::assert_no_alert(&browser).await;
                // The page's own status is logged as a failed load; nothing else may be.
                let errors: Vec<String> = browser
                    .console_errors()
                    .await
                    .into_iter()
                    .filter(|error| !error.contains("the server responded with a status of"))
                    .collect();
                assert!(errors.is_empty(), "{path}: {errors:#?}");
            }
        }
        browser.finish("done").await;
    }

    // Signing out answers with a redirect to the sign-in page.
    let dashboard = http.get(&format!("{base}/dashboard")).await;
    let signed_out = http
        .post(
            &format!("{base}/dashboard/logout"),
            &[("csrf_token", &csrf_of(&dashboard.body))],
        )
        .await;
    assert_eq!(signed_out.location.as_deref(), Some("/dashboard/login"));
    assert_inert("POST /dashboard/logout", &signed_out.body, &planted);
    covered.insert("/dashboard/logout".into());

    // Every page route in the router is swept (or named as not HTML).
    let in_source = page_routes_in_source();
    assert!(
        in_source.len() >= 20 && in_source.contains("/portal/{token}/card"),
        "the router's source was not read: {in_source:?}"
    );
    let missing: Vec<&String> = in_source
        .iter()
        .filter(|route| !covered.contains(route.as_str()) && !NOT_HTML.contains(&route.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "page routes the sweep does not fetch: {missing:?}"
    );

    drop(server);
}
