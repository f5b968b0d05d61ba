//! Webhooks end to end: the real server (and real relay processes) on a fresh database,
//! delivering to a real HTTP receiver in this test that checks every signature itself
//! (HMAC-SHA256 of "t.body" keyed by the whole whsec string, computed here, not by the
//! relay's code).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use calmony_tests::{run, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

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
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
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
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
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
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn create_key(database_url: &str, project: Option<&str>, mode: &str) -> (String, String) {
    let project = match project {
        Some(project) => project.to_string(),
        None => {
            let output = run(database_url, &["projects", "create", "--name", "Hooks"]);
            assert!(output.status.success());
            stdout_of(&output).trim().to_string()
        }
    };
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", mode],
    );
    assert!(output.status.success());
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

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event: Value,
    body: String,
    signature: String,
    content_type: String,
    user_agent: String,
}

#[derive(Default)]
struct ReceiverState {
    /// Every request that arrived, when it arrived (a request cut off by a killed relay
    /// included).
    received: Vec<Received>,
    /// Requests answered 2xx, by event id.
    answered: HashMap<String, usize>,
    in_flight: HashMap<String, usize>,
    /// Times a request arrived while another of the same event to the same path was in
    /// flight.
    overlaps: usize,
    delay_ms: u64,
}

type Shared = Arc<Mutex<ReceiverState>>;

/// Counts a request out of flight even when its connection is dropped mid-way.
struct InFlight {
    state: Shared,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        if let Some(count) = state.in_flight.get_mut(&self.key) {
            *count -= 1;
        }
    }
}

async fn receive(
    State(state): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let event_id = event["id"].as_str().unwrap_or_default().to_string();
    let key = format!("{} {event_id}", uri.path());
    let delay_ms = {
        let mut state = state.lock().unwrap();
        state.received.push(Received {
            path: uri.path().to_string(),
            event: event.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            signature: header("stripe-signature"),
            content_type: header("content-type"),
            user_agent: header("user-agent"),
        });
        let count = state.in_flight.entry(key.clone()).or_default();
        *count += 1;
        if *count > 1 {
            state.overlaps += 1;
        }
        state.delay_ms
    };
    let _in_flight = InFlight {
        state: state.clone(),
        key,
    };
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    *state.lock().unwrap().answered.entry(event_id).or_default() += 1;
    StatusCode::OK
}

struct Receiver {
    state: Shared,
    base: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Shared::default();
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { state, base }
    }

    fn received(&self, path: &str) -> Vec<Received> {
        let state = self.state.lock().unwrap();
        state
            .received
            .iter()
            .filter(|request| request.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `done` holds of what `path` received.
    async fn wait_for(&self, path: &str, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let received = self.received(path);
            if done(&received) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: received {:?}",
                received
                    .iter()
                    .map(|r| &r.event["type"])
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The signature check, written here from Stripe's documentation rather than taken from the
/// relay: `t=<unix>,v1=<hex HMAC-SHA256("<t>.<body>", whole secret)>`.
fn signature_is_valid(header: &str, body: &str, secret: &str) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for pair in header.split(',') {
        match pair.split_once('=') {
            Some(("t", value)) => timestamp = Some(value.to_string()),
            Some(("v1", value)) => signatures.push(value.to_string()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap_or(0);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    (-5..300).contains(&age) && signatures.contains(&expected)
}

#[tokio::test]
async fn endpoints_are_managed_and_receive_signed_events_that_match_the_events_api() {
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_TEST", "1000")]);
    let api = api(&server, &key);
    let receiver = Receiver::start().await;

    let (status, endpoint) = api
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", &format!("{}/all", receiver.base)),
                ("enabled_events[]", "*"),
                ("description", "everything"),
                ("metadata[team]", "ops"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{endpoint}");
    let endpoint_id = id(&endpoint);
    assert!(endpoint_id.starts_with("we_"));
    assert_eq!(endpoint["object"], "webhook_endpoint");
    assert_eq!(endpoint["status"], "enabled");
    assert_eq!(endpoint["enabled_events"], serde_json::json!(["*"]));
    assert_eq!(endpoint["livemode"], false);
    assert_eq!(endpoint["metadata"]["team"], "ops");
    assert_eq!(endpoint["api_version"], Value::Null);
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let (status, retrieved) = api
        .get(&format!("/v1/webhook_endpoints/{endpoint_id}"))
        .await;
    assert_eq!(status, 200);
    assert!(
        retrieved.get("secret").is_none(),
        "the secret is shown on create only"
    );
    assert_eq!(retrieved["description"], "everything");
    let (_, listed) = api.get("/v1/webhook_endpoints").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["data"][0].get("secret").is_none());

    let (_, narrow) = api
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", &format!("{}/succeeded", receiver.base)),
                ("enabled_events[0]", "payment_intent.succeeded"),
                ("api_version", "2026-10-28.endive"),
            ],
        )
        .await;
    assert_eq!(narrow["api_version"], "2026-10-28.endive");
    let narrow_secret = narrow["secret"].as_str().unwrap().to_string();

    // Refusals.
    let (status, error) = api
        .post("/v1/webhook_endpoints", &[("enabled_events[]", "*")])
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "url");
    let (status, error) = api
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", "https://example.com/x"),
                ("enabled_events[]", "customer.exploded"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "enabled_events[0]");
    let (status, _) = api
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", "https://example.com/x"),
                ("enabled_events[]", "*"),
                ("api_version", "2020-08-27"),
            ],
        )
        .await;
    assert_eq!(status, 400);

    // A customer pays and is refunded.
    let (_, customer) = api
        .post("/v1/customers", &[("email", "hooks@example.com")])
        .await;
    let (_, method) = api
        .post(
            "/v1/payment_methods/pm_card_visa/attach",
            &[("customer", &id(&customer))],
        )
        .await;
    let (status, intent) = api
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1500"),
                ("currency", "gbp"),
                ("customer", &id(&customer)),
                ("payment_method", &id(&method)),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{intent}");
    let (status, refund) = api
        .post(
            "/v1/refunds",
            &[("payment_intent", &id(&intent)), ("amount", "500")],
        )
        .await;
    assert_eq!(status, 200, "{refund}");

    let expected = [
        "customer.created",
        "payment_method.attached",
        "payment_intent.created",
        "payment_intent.succeeded",
        "refund.created",
        "charge.refunded",
    ];
    receiver
        .wait_for("/all", "every event type", |received| {
            expected
                .iter()
                .all(|wanted| received.iter().any(|r| r.event["type"] == *wanted))
        })
        .await;
    receiver
        .wait_for("/succeeded", "the succeeded event", |received| {
            !received.is_empty()
        })
        .await;

    for request in receiver.received("/all") {
        assert!(
            signature_is_valid(&request.signature, &request.body, &secret),
            "{} {}",
            request.signature,
            request.event["type"]
        );
        assert!(!signature_is_valid(
            &request.signature,
            &request.body,
            &narrow_secret
        ));
        assert_eq!(request.content_type, "application/json; charset=utf-8");
        assert!(
            request.user_agent.contains("Stripe"),
            "{}",
            request.user_agent
        );
        assert_eq!(request.event["object"], "event");
        let endpoints = if request.event["type"] == "payment_intent.succeeded" {
            2
        } else {
            1
        };
        assert_eq!(
            request.event["pending_webhooks"], endpoints,
            "to how many it went"
        );
        assert_eq!(request.event["livemode"], false);
        // The event delivered is the event the API shows.
        let event_id = request.event["id"].as_str().unwrap();
        let (status, shown) = api.get(&format!("/v1/events/{event_id}")).await;
        assert_eq!(status, 200);
        assert_eq!(shown["type"], request.event["type"]);
        assert_eq!(shown["data"], request.event["data"]);
    }
    let narrow_received = receiver.received("/succeeded");
    assert!(narrow_received
        .iter()
        .all(|r| r.event["type"] == "payment_intent.succeeded"));
    assert!(signature_is_valid(
        &narrow_received[0].signature,
        &narrow_received[0].body,
        &narrow_secret
    ));
    // Sent to both endpoints: its body says so.
    assert_eq!(narrow_received[0].event["pending_webhooks"], 2);

    // Once delivered, nothing is pending; the deliveries log shows each attempt. (The
    // charge's receipt invoice comes from the billing loop a moment later: its events are
    // awaited too, so that no event arrives between the lists compared below.)
    let succeeded_id = narrow_received[0].event["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, events) = api.get("/v1/events?limit=100").await;
        let events = events["data"].as_array().unwrap();
        let pending: i64 = events
            .iter()
            .map(|event| event["pending_webhooks"].as_i64().unwrap())
            .sum();
        let receipt_paid = events.iter().any(|event| event["type"] == "invoice.paid");
        if pending == 0 && receipt_paid {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {pending}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, all_events) = api.get("/v1/events?limit=100").await;
    let (_, undelivered) = api.get("/v1/events?limit=100&delivery_success=false").await;
    let (_, delivered) = api.get("/v1/events?limit=100&delivery_success=true").await;
    assert_eq!(undelivered["data"].as_array().unwrap().len(), 0);
    assert_eq!(delivered["data"], all_events["data"]);
    let (status, deliveries) = api
        .get(&format!(
            "/v1/webhook_endpoints/{}/deliveries?event={succeeded_id}",
            id(&narrow)
        ))
        .await;
    assert_eq!(status, 200, "{deliveries}");
    let delivery = &deliveries["data"][0];
    assert_eq!(delivery["object"], "webhook_delivery");
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["event"], succeeded_id.as_str());
    let attempt = &delivery["attempts"][0];
    assert_eq!(attempt["status_code"], 200);
    assert!(attempt["latency_ms"].as_i64().unwrap() >= 0);
    let (_, all) = api
        .get(&format!(
            "/v1/webhook_endpoints/{endpoint_id}/deliveries?limit=2"
        ))
        .await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    assert_eq!(all["has_more"], true);
    let (_, next) = api
        .get(&format!(
            "/v1/webhook_endpoints/{endpoint_id}/deliveries?limit=100&starting_after={}",
            id(&all["data"][1])
        ))
        .await;
    assert_eq!(
        next["data"].as_array().unwrap().len() + 2,
        receiver.received("/all").len()
    );

    // Redelivery: the same event (id and body) again.
    let before = receiver.received("/succeeded").len();
    let (status, redelivered) = api
        .post(&format!("/v1/events/{succeeded_id}/redeliver"), &[])
        .await;
    assert_eq!(status, 200, "{redelivered}");
    assert_eq!(redelivered["deliveries"].as_array().unwrap().len(), 2);
    receiver
        .wait_for("/succeeded", "the redelivery", |received| {
            received.len() == before + 1
        })
        .await;
    let again = receiver.received("/succeeded");
    assert_eq!(again[before].body, again[0].body);
    let (status, _) = api.post("/v1/events/evt_missing/redeliver", &[]).await;
    assert_eq!(status, 404);

    // Update, disable, delete.
    let (status, updated) = api
        .post(
            &format!("/v1/webhook_endpoints/{endpoint_id}"),
            &[
                ("enabled_events[]", "customer.updated"),
                ("description", ""),
                ("disabled", "true"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], "disabled");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(
        updated["enabled_events"],
        serde_json::json!(["customer.updated"])
    );
    assert!(updated.get("secret").is_none());
    let (status, deleted) = api
        .delete(&format!("/v1/webhook_endpoints/{endpoint_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deleted"], true);
    let (status, _) = api
        .get(&format!("/v1/webhook_endpoints/{endpoint_id}"))
        .await;
    assert_eq!(status, 404);
    let (_, listed) = api.get("/v1/webhook_endpoints").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn urls_that_reach_inside_are_refused_in_live_mode_and_metadata_in_both() {
    let db = TestDatabase::new().await;
    let (project, test_key) = create_key(&db.url, None, "test");
    let (_, live_key) = create_key(&db.url, Some(&project), "live");
    let server = Server::start(&db.url, &[("CALMONY_RATE_LIMIT_LIVE", "1000")]);
    let live = api(&server, &live_key);
    let test = api(&server, &test_key);

    for url in [
        "http://127.0.0.1:9/hook",
        "https://localhost/hook",
        "http://2130706433/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let (status, error) = live
            .post(
                "/v1/webhook_endpoints",
                &[("url", url), ("enabled_events[]", "*")],
            )
            .await;
        assert_eq!(status, 400, "{url}: {error}");
        assert_eq!(error["error"]["param"], "url", "{url}");
    }
    let (status, public) = live
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", "https://93.184.216.34/hook"),
                ("enabled_events[]", "*"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{public}");
    let (status, _) = live
        .post(
            &format!("/v1/webhook_endpoints/{}", id(&public)),
            &[("url", "http://10.0.0.1/")],
        )
        .await;
    assert_eq!(status, 400, "an update is checked too");

    // Test mode: the developer's own machine and network are fine; metadata never is.
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/",
    ] {
        let (status, body) = test
            .post(
                "/v1/webhook_endpoints",
                &[("url", url), ("enabled_events[]", "*")],
            )
            .await;
        assert_eq!(status, 200, "{url}: {body}");
    }
    let (status, _) = test
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", "http://169.254.169.254/"),
                ("enabled_events[]", "*"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    // Another mode's endpoint does not exist for this key.
    let (status, _) = test
        .get(&format!("/v1/webhook_endpoints/{}", id(&public)))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_and_a_killed_one_deliver_every_event_at_least_once_never_concurrently() {
    const EVENTS: usize = 30;
    let db = TestDatabase::new().await;
    let (_, key) = create_key(&db.url, None, "test");
    // The server runs the API and the projections; the relays run apart.
    let server = Server::start(
        &db.url,
        &[
            ("CALMONY_WEBHOOKS_RELAY", "false"),
            ("CALMONY_RATE_LIMIT_TEST", "1000"),
        ],
    );
    let api = api(&server, &key);
    let receiver = Receiver::start().await;
    receiver.state.lock().unwrap().delay_ms = 300;
    let relay_env = [
        ("CALMONY_WEBHOOK_TIMEOUT_MS", "2000"),
        ("CALMONY_WEBHOOK_LEASE_MS", "3000"),
        ("CALMONY_WEBHOOK_CONCURRENCY", "4"),
        ("CALMONY_WEBHOOK_POLL_MS", "100"),
    ];

    let (_, endpoint) = api
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", &format!("{}/hook", receiver.base)),
                ("enabled_events[]", "customer.created"),
            ],
        )
        .await;
    let mut customers = Vec::new();
    for index in 0..EVENTS {
        let (status, customer) = api
            .post("/v1/customers", &[("name", &format!("c{index}"))])
            .await;
        assert_eq!(status, 200);
        customers.push(id(&customer));
    }

    // One relay starts, takes deliveries, and is killed while the receiver holds them.
    let mut doomed = Server::webhook_relay(&db.url, &relay_env);
    receiver
        .wait_for("/hook", "the first relay's requests", |received| {
            !received.is_empty()
        })
        .await;
    let cut_off: Vec<String> = {
        let state = receiver.state.lock().unwrap();
        state
            .in_flight
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(key, _)| key.trim_start_matches("/hook ").to_string())
            .collect()
    };
    doomed.kill();
    assert!(!cut_off.is_empty(), "the relay was killed mid-delivery");

    let _first = Server::webhook_relay(&db.url, &relay_env);
    let _second = Server::webhook_relay(&db.url, &relay_env);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let state = receiver.state.lock().unwrap();
            customers.len() == EVENTS
                && state.answered.len() >= EVENTS
                && cut_off
                    .iter()
                    .all(|event| state.answered.get(event).copied().unwrap_or(0) >= 1)
        };
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not every event was delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    {
        let state = receiver.state.lock().unwrap();
        assert_eq!(state.overlaps, 0, "a delivery was attempted twice at once");
        let delivered_customers: std::collections::HashSet<String> = state
            .received
            .iter()
            .map(|r| {
                r.event["data"]["object"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for customer in &customers {
            assert!(
                delivered_customers.contains(customer),
                "{customer} never arrived"
            );
        }
        for event in &cut_off {
            let arrivals = state
                .received
                .iter()
                .filter(|r| r.event["id"] == event.as_str())
                .count();
            assert!(arrivals >= 2, "{event} was cut off and must be sent again");
        }
        eprintln!(
            "{} requests for {EVENTS} events; {} cut off by the kill and sent again",
            state.received.len(),
            cut_off.len()
        );
    }
    let (_, deliveries) = api
        .get(&format!(
            "/v1/webhook_endpoints/{}/deliveries?limit=100",
            id(&endpoint)
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut deliveries = deliveries;
    while deliveries["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|delivery| delivery["status"] != "succeeded")
    {
        assert!(Instant::now() < deadline, "{deliveries}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        deliveries = api
            .get(&format!(
                "/v1/webhook_endpoints/{}/deliveries?limit=100",
                id(&endpoint)
            ))
            .await
            .1;
    }
    assert_eq!(deliveries["data"].as_array().unwrap().len(), EVENTS);
}
