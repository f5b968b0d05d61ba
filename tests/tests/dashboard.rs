//! The admin dashboard end to end: the real server process on a fresh database, an operator
//! made with `calmony operators create`, driven as a browser without script would drive it
//! (forms, cookies, redirects not followed so that each can be checked).

use calmony_tests::{create_operator, run, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
const WRONG_CREDENTIALS: &str = "That email and password do not match an operator.";

/// A project with a test key: (project id, secret key).
fn new_project(database_url: &str, name: &str) -> (String, String) {
    let output = run(database_url, &["projects", "create", "--name", name]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    (project, stdout_of(&output).trim().to_string())
}

/// A browser: cookies by name, no redirects followed.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
}

/// What a response said, with the cookies it set (name → the whole `Set-Cookie` line).
struct Answer {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Answer {
    fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .find(|line| line.starts_with(&format!("{name}=")))
            .map(String::as_str)
    }
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: server.base_url.clone(),
            cookies: Default::default(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookie_header: String = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookie_header.is_empty() {
            request
        } else {
            request.header(COOKIE, cookie_header)
        };
        let response = request.send().await.expect("request");
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|value| value.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap().to_string())
            .collect();
        for line in &set_cookies {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || line.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Answer {
            status,
            location,
            set_cookies,
            body: response.text().await.unwrap_or_default(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    /// Opens the sign-in page and submits it.
    async fn sign_in(&mut self, email: &str, password: &str) -> Answer {
        let form = self.get("/dashboard/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = hidden_csrf(&form.body);
        self.post(
            "/dashboard/login",
            &[
                ("csrf_token", &csrf),
                ("email", email),
                ("password", password),
            ],
        )
        .await
    }
}

/// The `csrf_token` hidden field of a page's first form.
fn hidden_csrf(html: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let start = html.find(marker).expect("a csrf_token field") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// The value of `attribute` on the first element that has `anchor` in its tag.
fn attribute(html: &str, anchor: &str, attribute: &str) -> Option<String> {
    let at = html.find(anchor)?;
    let tag_end = at + html[at..].find('>')?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_end];
    let marker = format!(r#"{attribute}=""#);
    let start = tag.find(&marker)? + marker.len();
    Some(tag[start..].split('"').next()?.to_string())
}

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
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_get_one_answer_and_five_failures_lock_the_email() {
    let db = TestDatabase::new().await;
    let operator = create_operator(&db.url, EMAIL, "Ada", PASSWORD);
    assert!(operator.starts_with("op_"), "{operator}");
    let listed = run(&db.url, &["operators", "list"]);
    assert!(stdout_of(&listed).contains(EMAIL), "{}", stdout_of(&listed));
    assert!(!stdout_of(&listed).contains("argon2"));
    let server = Server::start(&db.url, &[]);
    let mut browser = Browser::new(&server);

    // Signed out, every page sends the browser to the sign-in page.
    let redirected = browser.get("/dashboard").await;
    assert_eq!(redirected.status, StatusCode::SEE_OTHER);
    assert_eq!(redirected.location.as_deref(), Some("/dashboard/login"));

    let wrong = browser.sign_in(EMAIL, "not the password at all").await;
    let unknown = browser
        .sign_in("nobody@example.com", "not the password at all")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    assert!(wrong.body.contains(WRONG_CREDENTIALS), "{}", wrong.body);
    assert!(unknown.body.contains(WRONG_CREDENTIALS), "{}", unknown.body);
    assert!(wrong.set_cookie("calmony_session").is_none());
    assert!(unknown.set_cookie("calmony_session").is_none());
    // Apart from the email typed back and the fresh form token, the pages are the same.
    let strip = |answer: &Answer, email: &str| {
        let body = answer.body.replace(email, "EMAIL");
        let csrf = hidden_csrf(&body);
        let nonce = attribute(&body, "<style", "nonce").unwrap();
        body.replace(&csrf, "CSRF").replace(&nonce, "NONCE")
    };
    assert_eq!(strip(&wrong, EMAIL), strip(&unknown, "nobody@example.com"));

    // Mixed case is the same email: four more failures make five.
    for _ in 0..4 {
        let failed = browser
            .sign_in("ADA@example.com", "wrong password again")
            .await;
        assert_eq!(failed.status, StatusCode::UNAUTHORIZED, "{}", failed.body);
    }
    // The sixth attempt is refused, even with the right password.
    let locked = browser.sign_in(EMAIL, PASSWORD).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        locked.body
    );
    assert!(locked.body.contains("Too many failed sign-ins"));
    assert!(locked.set_cookie("calmony_session").is_none());
    // Another operator's email is not locked by Ada's failures.
    create_operator(&db.url, "grace@example.com", "Grace", PASSWORD);
    let grace = browser.sign_in("grace@example.com", PASSWORD).await;
    assert_eq!(grace.status, StatusCode::SEE_OTHER, "{}", grace.body);
}

#[tokio::test]
async fn twenty_failures_from_one_address_lock_every_email_from_it() {
    let db = TestDatabase::new().await;
    create_operator(&db.url, EMAIL, "Ada", PASSWORD);
    let server = Server::start(&db.url, &[]);
    let mut browser = Browser::new(&server);
    for attempt in 0..20 {
        let failed = browser
            .sign_in(&format!("guess{attempt}@example.com"), "a guessed password")
            .await;
        assert_eq!(failed.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let locked = browser.sign_in(EMAIL, PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_operator_signs_in_sees_revenue_and_escaped_customers_and_signs_out() {
    let db = TestDatabase::new().await;
    create_operator(&db.url, EMAIL, "Ada <Operator>", PASSWORD);
    let (project, key) = new_project(&db.url, "Teapots");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "1000")]);
    let api = Api {
        client: reqwest::Client::new(),
        base: server.base_url.clone(),
        key,
    };
    let mut browser = Browser::new(&server);

    // A POST without the form's token is refused.
    browser.get("/dashboard/login").await;
    let forged = browser
        .post(
            "/dashboard/login",
            &[("email", EMAIL), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.set_cookie("calmony_session").is_none());

    let signed_in = browser.sign_in(EMAIL, PASSWORD).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location.as_deref(), Some("/dashboard"));
    let cookie = signed_in.set_cookie("calmony_session").expect("a session");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/dashboard"), "{cookie}");
    // The public URL is http here: no Secure flag (a browser would drop the cookie).
    assert!(!cookie.contains("Secure"), "{cookie}");
    let token = browser.cookies["calmony_session"].clone();
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dashboard_sessions WHERE token_hash = sha256($1::bytea)",
    )
    .bind(token.as_bytes())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "the session is stored by the token's SHA-256");

    let home = browser.get("/dashboard").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Teapots"));
    assert!(home.body.contains("Ada &lt;Operator&gt;"), "{}", home.body);
    assert!(!home.body.contains("<Operator>"));

    // Payments: three of 10.00, 20.00 and 30.00; one declined; 5.00 of the second refunded.
    let script = "<script>alert(1)</script>";
    let customer = api
        .ok(
            "/v1/customers",
            &[
                ("name", &format!("Eve {script}")),
                ("email", "eve@example.com"),
                (
                    "metadata[note]",
                    &format!("\"><img src=x onerror=alert(2)>{script}"),
                ),
            ],
        )
        .await;
    let customer_id = customer["id"].as_str().unwrap().to_string();
    let method = api
        .ok(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", &customer_id)],
        )
        .await;
    let method_id = method["id"].as_str().unwrap().to_string();
    let mut intents = Vec::new();
    for amount in ["1000", "2000", "3000"] {
        let intent = api
            .ok(
                "/v1/payment_intents",
                &[
                    ("amount", amount),
                    ("currency", "gbp"),
                    ("customer", &customer_id),
                    ("payment_method", &method_id),
                    ("confirm", "true"),
                ],
            )
            .await;
        assert_eq!(intent["status"], "succeeded", "{intent}");
        intents.push(intent["id"].as_str().unwrap().to_string());
    }
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
    let refund = api
        .ok(
            "/v1/refunds",
            &[("payment_intent", &intents[1]), ("amount", "500")],
        )
        .await;
    assert_eq!(refund["status"], "succeeded", "{refund}");
    api.ok(
        "/v1/customers",
        &[("name", "Zed Other"), ("email", "zed@example.com")],
    )
    .await;

    // The overview: net 55.00 of 60.00 captured, 3 succeeded, 1 failed (the dashboard
    // projection follows the log a moment after the API answers).
    let overview_path = format!("/dashboard/projects/{project}/test");
    let mut overview = browser.get(&overview_path).await;
    for _ in 0..100 {
        if attribute(&overview.body, r#"data-currency="gbp""#, "data-net-minor").as_deref()
            == Some("5500")
            && attribute(&overview.body, "data-failed-count", "data-failed-count").as_deref()
                == Some("1")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        overview = browser.get(&overview_path).await;
    }
    assert_eq!(overview.status, 200);
    let row = |name: &str| attribute(&overview.body, r#"data-currency="gbp""#, name);
    assert_eq!(
        row("data-gross-minor").as_deref(),
        Some("6000"),
        "{}",
        overview.body
    );
    assert_eq!(row("data-refunded-minor").as_deref(), Some("500"));
    assert_eq!(row("data-net-minor").as_deref(), Some("5500"));
    assert_eq!(
        attribute(
            &overview.body,
            "data-succeeded-count",
            "data-succeeded-count"
        )
        .as_deref(),
        Some("3")
    );
    assert_eq!(
        attribute(&overview.body, "data-failed-count", "data-failed-count").as_deref(),
        Some("1")
    );
    assert!(overview.body.contains("£55.00"));
    // The chart: an SVG with its accessible title, 30 bars, and the table fallback.
    assert!(overview.body.contains("<svg"), "{}", overview.body);
    assert!(overview
        .body
        .contains("Net revenue per day, last 30 days, GBP"));
    assert_eq!(overview.body.matches("<rect").count(), 30);
    // The latest payments, the declined one among them.
    for intent in &intents {
        assert!(overview.body.contains(intent.as_str()));
    }
    let declined_id = declined["error"]["payment_intent"]["id"].as_str().unwrap();
    assert!(overview.body.contains(declined_id));

    // The other mode of the same project has nothing; an unknown project is not found.
    let live = browser
        .get(&format!("/dashboard/projects/{project}/live"))
        .await;
    assert_eq!(live.status, 200);
    assert!(live.body.contains("No revenue yet."));
    let missing = browser.get("/dashboard/projects/proj_nope/test").await;
    assert_eq!(missing.status, 404);

    // Customers: the payload is text everywhere, never markup.
    let customers_path = format!("/dashboard/projects/{project}/test/customers");
    let list = browser.get(&customers_path).await;
    assert_eq!(list.status, 200);
    assert!(
        list.body
            .contains("Eve &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        list.body
    );
    assert!(!list.body.contains(script));
    assert!(list.body.contains("Zed Other"));
    // Search by the start of an email or a name, case-insensitively.
    let mut found = browser.get(&format!("{customers_path}?q=EVE%40ex")).await;
    for _ in 0..50 {
        if found.body.contains(&customer_id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        found = browser.get(&format!("{customers_path}?q=EVE%40ex")).await;
    }
    assert!(found.body.contains(&customer_id), "{}", found.body);
    assert!(!found.body.contains("Zed Other"));
    let by_name = browser.get(&format!("{customers_path}?q=zed")).await;
    assert!(by_name.body.contains("Zed Other"));
    assert!(!by_name.body.contains(&customer_id));
    let odd = browser.get(&format!("{customers_path}?q=%25")).await;
    assert_eq!(odd.status, 200);
    assert!(
        odd.body.contains("No customers found."),
        "a % is a character, not a wildcard"
    );

    let page = browser
        .get(&format!("{customers_path}/{customer_id}"))
        .await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(script), "{}", page.body);
    assert!(!page.body.contains("<img"), "{}", page.body);
    assert!(
        page.body.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{}",
        page.body
    );
    for intent in &intents {
        assert!(page.body.contains(intent.as_str()));
    }
    assert!(
        !page.body.contains(declined_id),
        "another customer's payment"
    );
    // Each one-off payment gets a receipt invoice, issued just after it (off its path).
    let mut page = page;
    for _ in 0..150 {
        if page.body.matches("data-invoice=").count() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        page = browser
            .get(&format!("{customers_path}/{customer_id}"))
            .await;
    }
    assert_eq!(
        page.body.matches("data-invoice=").count(),
        3,
        "{}",
        page.body
    );
    let hosted = attribute(&page.body, ">Invoice page<", "href").expect("an invoice link");
    assert!(hosted.contains("/invoices/"), "{hosted}");
    let pdf = attribute(&page.body, ">PDF<", "href").expect("a PDF link");
    assert!(pdf.ends_with("/pdf"), "{pdf}");
    let hosted_page = reqwest::get(&hosted).await.unwrap();
    assert_eq!(hosted_page.status(), 200);

    // Another project's customer is not found under this project.
    let (other_project, _) = new_project(&db.url, "Other");
    let elsewhere = browser
        .get(&format!(
            "/dashboard/projects/{other_project}/test/customers/{customer_id}"
        ))
        .await;
    assert_eq!(elsewhere.status, 404);

    // Every page is uncacheable and under the nonce CSP.
    let headers = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{overview_path}", server.base_url))
        .header(COOKIE, format!("calmony_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(headers.headers()["cache-control"], "no-store");
    assert!(headers.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'nonce-"));
    assert!(headers.headers().contains_key("server-timing"));

    // Signing out needs the session's form token; then the session is gone for good.
    let forged_out = browser.post("/dashboard/logout", &[]).await;
    assert_eq!(forged_out.status, StatusCode::FORBIDDEN);
    let forged_out = browser
        .post("/dashboard/logout", &[("csrf_token", "guess")])
        .await;
    assert_eq!(forged_out.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get("/dashboard").await.status, 200);
    let csrf = hidden_csrf(&browser.get("/dashboard").await.body);
    let out = browser
        .post("/dashboard/logout", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location.as_deref(), Some("/dashboard/login"));
    assert!(!browser.cookies.contains_key("calmony_session"));
    // The old cookie, replayed, signs nobody in.
    browser.cookies.insert("calmony_session".into(), token);
    let replayed = browser.get(&overview_path).await;
    assert_eq!(replayed.status, StatusCode::SEE_OTHER);
    assert_eq!(replayed.location.as_deref(), Some("/dashboard/login"));
}
