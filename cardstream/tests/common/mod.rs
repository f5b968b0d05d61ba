//! Helpers shared by the integration tests: a simulator with a client, test cards by
//! Stripe id, a tiny "merchant site" that records what browsers and callbacks post to it,
//! and a reader for the hidden inputs of the simulator's pages.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use cardstream::simulator::{self, RunningSimulator, SimulatorConfig, DEMO_SECRET};
use cardstream::{
    test_cards, CaptureMode, CardDetails, Client, CustomerDetails, Fields, PaymentSource,
    SaleRequest, ThreeDSecure,
};
use tokio::sync::mpsc;

pub const MERCHANT_ID: &str = "100001";
pub const SECRET: &str = DEMO_SECRET;

pub struct Harness {
    pub simulator: RunningSimulator,
    pub client: Client,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(SimulatorConfig::demo()).await
    }

    pub async fn start_with(config: SimulatorConfig) -> Self {
        let simulator = simulator::spawn(config)
            .await
            .expect("the simulator binds a loopback port");
        let client = Client::new(simulator.client_config(MERCHANT_ID, SECRET))
            .expect("a valid client config");
        Self {
            simulator,
            client,
            http: reqwest::Client::new(),
        }
    }

    /// Runs the simulator's settlement now.
    pub async fn settle(&self) -> u64 {
        let answer = self.post_admin("/admin/settle", "").await;
        answer
            .get("settled")
            .and_then(|count| count.parse().ok())
            .unwrap_or(0)
    }

    pub async fn advance_clock(&self, seconds: i64) {
        self.post_admin("/admin/clock/advance", &format!("seconds={seconds}"))
            .await;
    }

    async fn post_admin(&self, path: &str, body: &str) -> Fields {
        let answer = self
            .http
            .post(format!("{}{path}", self.simulator.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .expect("the admin endpoint answers");
        assert!(
            answer.status().is_success(),
            "{path} answered {}",
            answer.status()
        );
        Fields::parse(&answer.bytes().await.expect("a body"))
    }

    /// POSTs raw fields to the Direct endpoint and parses the answer without verifying it.
    pub async fn post_direct_raw(&self, fields: &Fields) -> Fields {
        let answer = self
            .http
            .post(self.simulator.direct_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fields.to_form_body())
            .send()
            .await
            .expect("the simulator answers");
        Fields::parse(&answer.bytes().await.expect("a body"))
    }

    /// POSTs a form as a browser would and returns the status, CSP header and HTML.
    pub async fn browser_post(&self, url: &str, fields: &[(String, String)]) -> BrowserPage {
        let body: Fields = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let answer = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_form_body())
            .send()
            .await
            .expect("the page answers");
        let status = answer.status().as_u16();
        let content_security_policy = answer
            .headers()
            .get("content-security-policy")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let html = answer.text().await.expect("an HTML body");
        BrowserPage {
            status,
            content_security_policy,
            html,
        }
    }

    /// Resolves a form action (the simulator's own are relative) against the simulator.
    pub fn absolute(&self, action: &str) -> String {
        if action.starts_with("http") {
            action.to_string()
        } else {
            format!("{}{action}", self.simulator.base_url())
        }
    }
}

pub struct BrowserPage {
    pub status: u16,
    pub content_security_policy: Option<String>,
    pub html: String,
}

impl BrowserPage {
    pub fn hidden_inputs(&self) -> Vec<(String, String)> {
        hidden_inputs(&self.html)
    }

    pub fn hidden(&self, name: &str) -> Option<String> {
        self.hidden_inputs()
            .into_iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value)
    }

    pub fn form_action(&self) -> Option<String> {
        let form = self.html.find("<form")?;
        attribute(&self.html[form..], "action")
    }

    pub fn has_input(&self, name: &str) -> bool {
        self.html.contains(&format!("name=\"{name}\""))
    }
}

/// A unique id per call, for `transactionUnique`.
pub fn unique(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!("{label}-{nanos}-{count}")
}

/// The card standing for a Stripe test payment method, with an expiry in January three
/// years ahead (January: strict mode's 3-D Secure authenticates without a challenge).
pub fn card(payment_method: &str) -> CardDetails {
    let test_card =
        test_cards::for_payment_method(payment_method).expect("a mapped test payment method");
    card_number(test_card.number, test_card.cvv)
}

pub fn card_number(number: &str, cvv: &str) -> CardDetails {
    CardDetails::new(number, 1, expiry_year(), Some(cvv)).expect("a valid test card")
}

pub fn expiry_year() -> u16 {
    use chrono::Datelike;
    u16::try_from(chrono::Utc::now().year() + 3).unwrap_or(2030)
}

pub fn sale(source: PaymentSource, amount_minor: u64, capture: CaptureMode) -> SaleRequest {
    SaleRequest {
        source,
        amount_minor,
        currency_code: "gbp".to_string(),
        transaction_unique: unique("sale"),
        order_ref: Some("Calmony test".to_string()),
        capture,
        three_d_secure: ThreeDSecure::Skip,
        customer: CustomerDetails::default(),
        agreement: None,
        duplicate_delay_seconds: None,
    }
}

/// A stand-in merchant site: records every POST (path and body) it receives.
pub struct MerchantSite {
    pub base_url: String,
    received: mpsc::UnboundedReceiver<(String, Bytes)>,
    _task: tokio::task::JoinHandle<()>,
}

impl MerchantSite {
    pub async fn start() -> Self {
        let (sender, received) = mpsc::unbounded_channel();
        let router = Router::new()
            .route("/{*path}", post(record))
            .with_state(sender);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("the merchant site binds");
        let address = listener.local_addr().expect("a local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            base_url: format!("http://{address}"),
            received,
            _task: task,
        }
    }

    /// The next POST to `path`, waiting up to five seconds.
    pub async fn next_post(&mut self, path: &str) -> Bytes {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let received = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .expect("a POST arrives in time")
                .expect("the site is running");
            if received.0 == path {
                return received.1;
            }
        }
    }
}

async fn record(
    State(sender): State<mpsc::UnboundedSender<(String, Bytes)>>,
    Path(path): Path<String>,
    body: Bytes,
) -> &'static str {
    let _ = sender.send((format!("/{path}"), body));
    "OK"
}

/// The `<input type="hidden">` fields of a page, in order, HTML entities decoded.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut inputs = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<input") {
        let tag_end = rest[start..]
            .find('>')
            .map_or(rest.len(), |end| start + end);
        let tag = &rest[start..tag_end];
        if attribute(tag, "type").as_deref() == Some("hidden") {
            if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
                inputs.push((name, value));
            }
        }
        rest = &rest[tag_end..];
    }
    inputs
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(decode_entities(&tag[start..end]))
}

fn decode_entities(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
