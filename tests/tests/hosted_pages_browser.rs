//! The customer portal and the admin dashboard in a real browser (headless Chromium through
//! chromedriver): every step is clicked as a person would, screenshotted, and checked for
//! console errors (a CSP violation is one); what the clicks did is then read back through
//! the API.
//!
//! The browser, its screenshots and console checks: `calmony_tests::browser` (needs
//! chromium and chromedriver; `CALMONY_SKIP_BROWSER=1` skips when they are missing).

use calmony_tests::api::{id, project_key, Api};
use calmony_tests::browser::{skip_reason, Driver};
use calmony_tests::{create_operator, Server};
use event_store::test_harness::TestDatabase;
use fantoccini::Locator;

/// A customer with a default card (`pm_card_visa`, last4 4242) and an active monthly
/// subscription: (customer, card, subscription).
async fn subscriber(api: &Api, name: &str, email: &str) -> (String, String, String) {
    let product = api.ok("/v1/products", &[("name", "Tea club")]).await;
    let price = api
        .ok(
            "/v1/prices",
            &[
                ("product", &id(&product)),
                ("currency", "gbp"),
                ("unit_amount", "900"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    let customer = id(&api
        .ok("/v1/customers", &[("name", name), ("email", email)])
        .await);
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
    let subscription = api
        .ok(
            "/v1/subscriptions",
            &[("customer", &customer), ("items[0][price]", &id(&price))],
        )
        .await;
    assert_eq!(subscription["status"], "active", "{subscription}");
    (customer, card, id(&subscription))
}

/// The XPath of a subscription's button in the portal.
fn subscription_button(subscription: &str, label: &str) -> String {
    format!("//article[@data-subscription='{subscription}']//button[normalize-space(.)='{label}']")
}

#[tokio::test]
async fn a_customer_manages_subscriptions_and_cards_in_the_portal() {
    if skip_reason().is_some() {
        return;
    }
    let db = TestDatabase::new().await;
    let key = project_key(&db.url, "Tea Shop", "test");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let api = Api::new(&server, &key);
    let (customer, first_card, subscription) =
        subscriber(&api, "Grace Hopper", "grace@example.com").await;
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

    let driver = Driver::start();
    let mut browser = driver
        .browser("a_customer_manages_subscriptions_and_cards_in_the_portal")
        .await;
    browser.open(&portal_url, "portal").await;
    assert_eq!(
        browser.text_of(Locator::Id("customer-name")).await,
        "Grace Hopper"
    );

    // Cancel at the end of the period, then change one's mind.
    browser
        .click(Locator::XPath(&subscription_button(
            &subscription,
            "Cancel at period end",
        )))
        .await;
    browser.wait_for_url(&format!("{portal_url}?done=")).await;
    browser.step("cancel-scheduled").await;
    assert!(browser
        .text_of(Locator::Id("notice"))
        .await
        .contains("end of its current period"));
    let scheduled = api.subscription(&subscription).await;
    assert_eq!(scheduled["cancel_at_period_end"], true, "{scheduled}");
    assert_eq!(scheduled["status"], "active");

    browser
        .click(Locator::XPath(&subscription_button(
            &subscription,
            "Keep my subscription",
        )))
        .await;
    browser
        .wait_for_url(&format!("{portal_url}?done=resumed"))
        .await;
    browser.step("cancel-withdrawn").await;
    let resumed = api.subscription(&subscription).await;
    assert_eq!(resumed["cancel_at_period_end"], false, "{resumed}");

    // Add a card on the gateway's hosted page; the portal shows it; make it the default.
    browser.click(Locator::Id("add-card")).await;
    browser
        .wait_for_url(&format!("{}/checkout/cs_test_", server.base_url))
        .await;
    browser.step("add-card-checkout").await;
    browser.click(Locator::Id("pay-button")).await;
    browser.pay_on_the_gateway_page().await;
    // Back in the portal (its URL is the setup session's success_url).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while browser
        .find_all(Locator::Css("li[data-payment-method]"))
        .await
        .map(|cards| cards.len())
        .unwrap_or(0)
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the portal never listed the new card; at {}",
            browser.current_url().await.unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&portal_url));
    browser.step("card-added").await;
    let methods = api
        .list(&format!(
            "/v1/payment_methods?customer={customer}&type=card"
        ))
        .await;
    assert_eq!(methods.len(), 2, "{methods:?}");
    let saved = methods
        .iter()
        .find(|method| id(method) != first_card)
        .unwrap_or_else(|| panic!("the hosted page's card is saved: {methods:?}"));
    // The card typed on the gateway's page (the harness picks December, three years on).
    assert_eq!(saved["card"]["last4"], "0821", "{saved}");
    assert_eq!(saved["card"]["exp_month"], 12, "{saved}");
    assert_ne!(saved["card"]["exp_year"], 2034, "{saved}");
    let new_card = id(saved);
    browser
        .click(Locator::XPath(&format!(
            "//li[@data-payment-method='{new_card}']//button[normalize-space(.)='Make default']"
        )))
        .await;
    browser
        .wait_for_url(&format!("{portal_url}?done=default_method"))
        .await;
    browser.step("card-made-default").await;
    assert!(browser
        .text_of(Locator::Css(&format!(
            "li[data-payment-method='{new_card}']"
        )))
        .await
        .contains("Default"));
    let customer_now = api.fetch(&format!("/v1/customers/{customer}")).await;
    assert_eq!(
        customer_now["invoice_settings"]["default_payment_method"], new_card,
        "{customer_now}"
    );

    // Cancel now.
    browser
        .click(Locator::XPath(&subscription_button(
            &subscription,
            "Cancel now",
        )))
        .await;
    browser
        .wait_for_url(&format!("{portal_url}?done=canceled"))
        .await;
    browser.step("canceled").await;
    let canceled = api.subscription(&subscription).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert!(canceled["ended_at"].is_i64(), "{canceled}");

    // The way back to the merchant.
    assert_eq!(
        browser
            .find(Locator::Id("return"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .as_deref(),
        Some("https://shop.example/account")
    );
    browser.finish("done").await;
}

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn an_operator_signs_in_browses_customers_and_signs_out() {
    if skip_reason().is_some() {
        return;
    }
    let db = TestDatabase::new().await;
    create_operator(&db.url, EMAIL, "Ada", PASSWORD);
    let key = project_key(&db.url, "Teapots", "test");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "10000")]);
    let api = Api::new(&server, &key);
    // Two customers, one of whom paid today (the chart's last bar).
    for (name, email) in [
        ("Eve Example", "eve@example.com"),
        ("Bob Builder", "bob@example.com"),
    ] {
        let customer = api
            .ok("/v1/customers", &[("name", name), ("email", email)])
            .await;
        if name.starts_with("Eve") {
            let intent = api
                .ok(
                    "/v1/payment_intents",
                    &[
                        ("amount", "2500"),
                        ("currency", "gbp"),
                        ("customer", &id(&customer)),
                        ("payment_method", "pm_card_visa"),
                        ("confirm", "true"),
                    ],
                )
                .await;
            assert_eq!(intent["status"], "succeeded", "{intent}");
        }
    }

    let driver = Driver::start();
    let mut browser = driver
        .browser("an_operator_signs_in_browses_customers_and_signs_out")
        .await;
    let base = server.base_url.clone();
    browser
        .open(&format!("{base}/dashboard"), "sign-in-form")
        .await;
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&format!("{base}/dashboard/login")));
    browser
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(EMAIL)
        .await
        .unwrap();
    browser
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    browser
        .click(Locator::XPath("//button[normalize-space(.)='Sign in']"))
        .await;
    browser.wait_for_url(&format!("{base}/dashboard")).await;
    browser.step("projects").await;
    assert!(browser.source().await.unwrap().contains("Teapots"));

    // The project's overview in test mode: figures and the 30-day SVG chart.
    browser
        .click(Locator::XPath("//a[normalize-space(.)='Test mode']"))
        .await;
    browser
        .wait_for_url(&format!("{base}/dashboard/projects/"))
        .await;
    browser.step("overview").await;
    let chart = browser
        .find(Locator::Css("figure svg[role='img']"))
        .await
        .expect("the revenue chart is an inline SVG");
    let title = chart
        .find(Locator::Css("title"))
        .await
        .expect("the chart's title")
        .html(true)
        .await
        .expect("its text");
    assert!(title.contains("last 30 days, GBP"), "{title}");
    let bars = chart
        .find_all(Locator::Css("rect"))
        .await
        .expect("the chart's bars");
    assert!(bars.len() >= 30, "{} rects", bars.len());
    assert!(browser.source().await.unwrap().contains("25.00"));

    // Customers, a search, a customer.
    browser
        .click(Locator::XPath("//nav//a[normalize-space(.)='Customers']"))
        .await;
    browser.step("customers").await;
    let listed = browser.source().await.unwrap();
    assert!(listed.contains("Eve Example") && listed.contains("Bob Builder"));
    browser
        .find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys("eve")
        .await
        .unwrap();
    browser
        .click(Locator::XPath("//button[normalize-space(.)='Search']"))
        .await;
    browser
        .wait_for_url(&format!("{base}/dashboard/projects/"))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !browser
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("q=eve")
    {
        assert!(std::time::Instant::now() < deadline, "the search never ran");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    browser.step("customers-search").await;
    let found = browser.source().await.unwrap();
    assert!(found.contains("Eve Example") && !found.contains("Bob Builder"));
    browser
        .click(Locator::XPath(
            "//table//a[contains(@href, '/customers/cus_')]",
        ))
        .await;
    browser.step("customer").await;
    let page = browser.source().await.unwrap();
    assert!(page.contains("Eve Example") && page.contains("eve@example.com"));
    assert!(page.contains("25.00"), "the customer's payment");

    browser
        .click(Locator::XPath("//button[normalize-space(.)='Sign out']"))
        .await;
    browser
        .wait_for_url(&format!("{base}/dashboard/login"))
        .await;
    browser.step("signed-out").await;
    // Signed out: the dashboard sends the browser back to sign in.
    browser
        .open(&format!("{base}/dashboard"), "after-sign-out")
        .await;
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&format!("{base}/dashboard/login")));
    browser.finish("done").await;
}

/// The console check itself: a page whose inline script its CSP refuses shows up as a
/// console error (so a clean console in the tests above means something).
#[tokio::test]
async fn the_console_check_sees_a_csp_violation() {
    if skip_reason().is_some() {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new()
        .route(
            "/violation",
            axum::routing::get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; script-src 'nonce-abc'",
                    )],
                    axum::response::Html(
                        "<!DOCTYPE html><title>x</title><script>document.title='ran'</script>",
                    ),
                )
            }),
        )
        .route(
            "/favicon.ico",
            axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
        );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let driver = Driver::start();
    let browser = driver
        .browser("the_console_check_sees_a_csp_violation")
        .await;
    browser
        .goto(&format!("{base}/violation"))
        .await
        .expect("open");
    let errors = browser.console_errors().await;
    assert!(
        errors
            .iter()
            .any(|error| error.contains("Content Security Policy")),
        "{errors:#?}"
    );
    assert_eq!(
        browser.title().await.unwrap(),
        "x",
        "the script did not run"
    );
    browser.client.clone().close().await.expect("close");
    server.abort();
}
