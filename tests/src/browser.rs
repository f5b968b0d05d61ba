//! A real browser for the end-to-end tests: headless Chromium driven through chromedriver
//! (W3C WebDriver, with fantoccini).
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`, which
//! `.ci/run` installs). Without them the browser tests fail, unless `CALMONY_SKIP_BROWSER=1`
//! is set, in which case [`skip_reason`] says so and the tests pass.
//!
//! Every [`Browser`] reads the browser's console log after each step and fails the test on
//! any error there (a CSP violation, a failed load, a script error), and saves a PNG
//! screenshot of each step under `<target>/screenshots/<test>/` ([`screenshot_dir`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Cardstream's published Visa test card (approves).
pub const CARD_NUMBER: &str = "4929421234600821";
pub const CARD_CVV: &str = "356";

/// `Some(reason)` when the browser tests may be skipped (and should be): chromium or
/// chromedriver is missing and `CALMONY_SKIP_BROWSER=1`. Missing without it: a panic.
pub fn skip_reason() -> Option<String> {
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
        eprintln!("\n\n!!!!!!!! SKIPPED A BROWSER TEST: {reason} !!!!!!!!\n\n");
        Some(reason)
    } else {
        panic!(
            "the browser tests need a browser: {reason}; set CALMONY_SKIP_BROWSER=1 to skip them"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Where a test's screenshots go: `<target>/screenshots/<test>/` (the target directory of
/// this build: the test executable is `<target>/<profile>/deps/<name>`).
pub fn screenshot_dir(test: &str) -> PathBuf {
    let executable = std::env::current_exe().expect("test executable path");
    let target = executable
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("the target directory");
    target.join("screenshots").join(test)
}

/// chromedriver on a free port, killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub fn start() -> Driver {
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

    /// A new headless browser whose screenshots go to [`screenshot_dir`]`(test)` (emptied
    /// first, so what is there is this run's).
    pub async fn browser(&self, test: &str) -> Browser {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1000,1200"],
            }),
        );
        // The console log, read through chromedriver's log endpoint.
        capabilities.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a WebDriver session");
        let screenshots = screenshot_dir(test);
        let _ = std::fs::remove_dir_all(&screenshots);
        std::fs::create_dir_all(&screenshots).expect("create the screenshot directory");
        Browser {
            client,
            screenshots,
            shots: 0,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver's `POST /session/{id}/se/log` (`{"type": "browser"}`): the console entries
/// since the last read. Not in the W3C standard; chromedriver keeps it.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// A browser session with its screenshots and console checks.
pub struct Browser {
    pub client: Client,
    screenshots: PathBuf,
    shots: usize,
}

impl std::ops::Deref for Browser {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Browser {
    /// The console's error entries since the last read (`SEVERE`: script errors, CSP
    /// violations, failed loads).
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("read the browser log");
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|entry| entry["level"] == "SEVERE")
                    .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a screenshot of the page as `<NN>-<step>.png`; returns its path.
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.shots += 1;
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let path = self
            .screenshots
            .join(format!("{:02}-{step}.png", self.shots));
        std::fs::write(&path, png).expect("save the screenshot");
        path
    }

    /// After a step: a screenshot, no `alert()` open (an injected script would have opened
    /// one), and nothing in the console.
    pub async fn step(&mut self, step: &str) {
        self.screenshot(step).await;
        assert_no_alert(&self.client).await;
        let errors = self.console_errors().await;
        assert!(
            errors.is_empty(),
            "console errors at step {step} ({}): {errors:#?}",
            self.current_url()
                .await
                .map(|url| url.to_string())
                .unwrap_or_default()
        );
    }

    /// Opens `url` and checks it as a [`Browser::step`].
    pub async fn open(&mut self, url: &str, step: &str) {
        self.client.goto(url).await.expect("open the page");
        self.step(step).await;
    }

    /// Clicks the element and waits for the next page to load.
    pub async fn click(&self, locator: Locator<'_>) {
        self.client
            .find(locator)
            .await
            .unwrap_or_else(|error| panic!("no element {locator:?}: {error}"))
            .click()
            .await
            .expect("click");
    }

    /// The text of the element.
    pub async fn text_of(&self, locator: Locator<'_>) -> String {
        self.client
            .find(locator)
            .await
            .unwrap_or_else(|error| panic!("no element {locator:?}: {error}"))
            .text()
            .await
            .expect("text")
    }

    /// Waits until the page's URL starts with `prefix`; returns it.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = self.client.current_url().await.expect("url").to_string();
            if url.starts_with(prefix) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "never reached {prefix}; at {url}: {}",
                self.client.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fills the Cardstream simulator's hosted card form with the approving Visa and
    /// submits it (the page must be the simulator's form, or about to be).
    pub async fn pay_on_the_gateway_page(&mut self) {
        self.pay_on_the_gateway_page_with(CARD_NUMBER, CARD_CVV)
            .await;
    }

    /// As [`Self::pay_on_the_gateway_page`], with another card.
    pub async fn pay_on_the_gateway_page_with(&mut self, card_number: &str, cvv: &str) {
        let number = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Id("cardNumber"))
            .await
            .expect("the simulator's card form");
        self.step("gateway-card-form").await;
        number.send_keys(card_number).await.expect("type");
        self.client
            .find(Locator::Id("cardExpiryMonth"))
            .await
            .expect("expiry month")
            .select_by_value("12")
            .await
            .expect("select");
        let year = (chrono::Utc::now()
            .format("%y")
            .to_string()
            .parse::<u32>()
            .unwrap_or(26)
            + 3)
            % 100;
        self.client
            .find(Locator::Id("cardExpiryYear"))
            .await
            .expect("expiry year")
            .select_by_value(&format!("{year:02}"))
            .await
            .expect("select");
        self.client
            .find(Locator::Id("cardCVV"))
            .await
            .expect("cvv")
            .send_keys(cvv)
            .await
            .expect("type");
        self.click(Locator::XPath("//button[normalize-space(.)='Pay']"))
            .await;
    }

    /// Closes the session after a last check of the console.
    pub async fn finish(mut self, step: &str) {
        self.step(step).await;
        self.client.close().await.expect("close the browser");
    }
}

/// No `alert()` is open: a script injected into the page would have opened one.
pub async fn assert_no_alert(browser: &Client) {
    if let Ok(text) = browser.get_alert_text().await {
        panic!("an alert opened ({text:?}): injected script ran");
    }
}
