//! The relay in-process against a real PostgreSQL and a real HTTP receiver that verifies
//! signatures, with a clock the tests move: the retry schedule, the end of the window and
//! the endpoint's disabling, fan-out rules, refusals at delivery time, several workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use commands::CommandBus;
use domain::customer::{Customer, CustomerCommand, CustomerFields};
use domain::webhook_endpoint::{
    SigningSecret, WebhookEndpoint, WebhookEndpointChanges, WebhookEndpointCommand,
};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, LogReader, Mode};
use futures::future::BoxFuture;
use projections::api_objects::ApiObjects;
use projections::ProjectionRuntime;
use scheduler::ManualClock;
use serde_json::Value;
use webhook_relay::store::{self, Scope};
use webhook_relay::url_guard::HostLookup;
use webhook_relay::{signature, DeliverySettings, DeliveryWorker, FanOut, UrlGuard};

const PROJECT: &str = "proj_relay";

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

/// What the receiver saw of one request.
#[derive(Debug, Clone)]
struct Received {
    event_id: String,
    event_type: String,
    body: String,
    signed_at: i64,
    content_type: String,
    user_agent: String,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Answer 500 to this many requests first.
    failures_left: usize,
    /// Requests whose signature did not verify with `secret`.
    bad_signatures: usize,
    secret: String,
    delay_ms: u64,
    in_flight: HashMap<String, usize>,
    overlaps: usize,
}

#[derive(Clone)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    url: String,
}

async fn hook(
    State(state): State<Arc<Mutex<ReceiverState>>>,
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
    let delay_ms = {
        let mut state = state.lock().unwrap();
        let count = state.in_flight.entry(event_id.clone()).or_default();
        *count += 1;
        if *count > 1 {
            state.overlaps += 1;
        }
        state.delay_ms
    };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let mut state = state.lock().unwrap();
    if let Some(count) = state.in_flight.get_mut(&event_id) {
        *count -= 1;
    }
    let signed_at = signature::verify(&header("stripe-signature"), &body, &state.secret);
    if signed_at.is_none() {
        state.bad_signatures += 1;
    }
    state.received.push(Received {
        event_id,
        event_type: event["type"].as_str().unwrap_or_default().to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
        signed_at: signed_at.unwrap_or_default(),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
    });
    if state.failures_left > 0 {
        state.failures_left -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { state, url }
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn set(&self, change: impl FnOnce(&mut ReceiverState)) {
        change(&mut self.state.lock().unwrap());
    }
}

/// A host table standing in for DNS; it can change between two lookups.
#[derive(Default)]
struct TableLookup(Mutex<HashMap<String, Vec<IpAddr>>>);

impl HostLookup for TableLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        let found = self.0.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
        })
    }
}

struct Relay {
    db: TestDatabase,
    bus: CommandBus,
    runtime: ProjectionRuntime,
    clock: ManualClock,
    fan_out: FanOut,
    guard: UrlGuard,
}

impl Relay {
    async fn new() -> Relay {
        Self::with_guard(UrlGuard::default()).await
    }

    async fn with_guard(guard: UrlGuard) -> Relay {
        let db = TestDatabase::new().await;
        let runtime = ProjectionRuntime::new(db.pool.clone());
        let clock = ManualClock::starting_at(start_time());
        let fan_out = FanOut::new(Arc::new(clock.clone()));
        runtime
            .ensure_created(&ApiObjects::default())
            .await
            .unwrap();
        runtime.ensure_created(&fan_out).await.unwrap();
        Relay {
            bus: CommandBus::new(EventStore::new(db.pool.clone()), domain::upcasters::all()),
            db,
            runtime,
            clock,
            fan_out,
            guard,
        }
    }

    fn worker(&self) -> DeliveryWorker {
        let settings = DeliverySettings {
            timeout_ms: 5_000,
            lease_ms: 30_000,
            schedule: webhook_relay::RetrySchedule::default().without_jitter(),
            ..DeliverySettings::default()
        };
        DeliveryWorker::new(
            self.db.pool.clone(),
            Arc::new(self.clock.clone()),
            &self.guard,
            settings,
        )
        .unwrap()
    }

    fn metadata(mode: Mode) -> EventMetadata {
        EventMetadata::new(PROJECT, mode, "key:test")
    }

    async fn create_endpoint(&self, mode: Mode, url: &str, events: &[&str]) -> (String, String) {
        let id = commands::ids::new_id("we");
        let secret = commands::ids::new_signing_secret();
        self.bus
            .execute::<WebhookEndpoint>(
                &id,
                WebhookEndpointCommand::Create {
                    endpoint_id: id.clone(),
                    url: url.to_string(),
                    enabled_events: events.iter().map(|event| event.to_string()).collect(),
                    api_version: None,
                    description: None,
                    metadata: Default::default(),
                    secret: SigningSecret::new(secret.clone()),
                    at: self.clock.now_seconds(),
                },
                &(),
                &Self::metadata(mode),
            )
            .await
            .unwrap();
        (id, secret)
    }

    async fn change_endpoint(&self, id: &str, mode: Mode, command: WebhookEndpointCommand) {
        self.bus
            .execute::<WebhookEndpoint>(id, command, &(), &Self::metadata(mode))
            .await
            .unwrap();
    }

    async fn create_customer(&self, mode: Mode) -> String {
        let id = commands::ids::new_id("cus");
        self.bus
            .execute::<Customer>(
                &id,
                CustomerCommand::Create {
                    customer_id: id.clone(),
                    fields: CustomerFields {
                        email: Some(Some("relay@example.com".into())),
                        ..Default::default()
                    },
                    at: self.clock.now_seconds(),
                },
                &(),
                &Self::metadata(mode),
            )
            .await
            .unwrap();
        id
    }

    /// Projects and fans out everything written so far.
    async fn settle(&self) {
        assert!(LogReader::new(self.db.pool.clone())
            .wait_until_final(Duration::from_secs(30))
            .await
            .unwrap());
        self.runtime
            .catch_up(&ApiObjects::default(), 1_000)
            .await
            .unwrap();
        self.runtime.catch_up(&self.fan_out, 1_000).await.unwrap();
    }

    async fn deliveries(&self, endpoint: &str, mode: Mode) -> Vec<Value> {
        store::list_deliveries(
            &self.db.pool,
            Scope {
                project: PROJECT,
                livemode: mode == Mode::Live,
            },
            endpoint,
            None,
            store::Page::First,
            100,
        )
        .await
        .unwrap()
    }

    async fn customer_created_event(&self, customer: &str) -> String {
        sqlx::query_scalar(
            "SELECT id FROM api.stripe_events \
             WHERE type = 'customer.created' AND body->'data'->'object'->>'id' = $1",
        )
        .bind(customer)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

trait Seconds {
    fn now_seconds(&self) -> i64;
}

impl Seconds for ManualClock {
    fn now_seconds(&self) -> i64 {
        scheduler::Clock::now(self).timestamp()
    }
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_exactly_the_documented_retries() {
    let relay = Relay::new().await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = relay
        .create_endpoint(Mode::Test, &receiver.url, &["customer.created"])
        .await;
    receiver.set(|state| {
        state.secret = secret;
        state.failures_left = 3;
    });
    let customer = relay.create_customer(Mode::Test).await;
    relay.settle().await;
    let event_id = relay.customer_created_event(&customer).await;
    let worker = relay.worker();
    let scope = Scope {
        project: PROJECT,
        livemode: false,
    };

    // Attempts at 0, 1, 3 and 7 minutes: the first fails, the schedule waits 1, 2, 4 min.
    let mut expected_times = Vec::new();
    for (at_seconds, attempts) in [
        (0, 1),
        (59, 0),
        (60, 1),
        (179, 0),
        (180, 1),
        (419, 0),
        (420, 1),
        (100_000, 0),
    ] {
        relay
            .clock
            .set(start_time() + chrono::Duration::seconds(at_seconds));
        assert_eq!(
            worker.deliver_due().await.unwrap(),
            attempts,
            "at {at_seconds}s"
        );
        if attempts > 0 {
            expected_times.push(start_time().timestamp() + at_seconds);
        }
        if at_seconds == 60 {
            let pending =
                store::pending_webhooks(&relay.db.pool, scope, std::slice::from_ref(&event_id))
                    .await
                    .unwrap();
            assert_eq!(pending.get(&event_id), Some(&1), "still being delivered");
        }
    }

    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert_eq!(receiver.state.lock().unwrap().bad_signatures, 0);
    assert_eq!(
        received.iter().map(|r| r.signed_at).collect::<Vec<_>>(),
        expected_times,
        "each attempt is signed with its own send time"
    );
    for request in &received {
        assert_eq!(request.event_id, event_id, "the event id never changes");
        assert_eq!(
            request.body, received[0].body,
            "the body is identical across attempts"
        );
        assert_eq!(request.event_type, "customer.created");
        assert_eq!(request.content_type, "application/json; charset=utf-8");
        assert!(request.user_agent.contains("Stripe"));
    }
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["pending_webhooks"], 1);
    assert_eq!(body["data"]["object"]["id"], customer.as_str());

    let deliveries = relay.deliveries(&endpoint, Mode::Test).await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attempt_count"], 4);
    assert_eq!(delivery["next_attempt"], Value::Null);
    let codes: Vec<i64> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| attempt["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 500, 200]);
    let created: Vec<i64> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| attempt["created"].as_i64().unwrap())
        .collect();
    assert_eq!(created, expected_times);
    let pending = store::pending_webhooks(&relay.db.pool, scope, std::slice::from_ref(&event_id))
        .await
        .unwrap();
    assert!(pending.is_empty(), "delivered: nothing pending");
}

#[tokio::test]
async fn a_delivery_failing_for_three_days_fails_and_its_endpoint_is_disabled() {
    let relay = Relay::new().await;
    // Nothing listens on this port: every attempt is a refused connection.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let (endpoint, _) = relay.create_endpoint(Mode::Test, &url, &["*"]).await;
    relay.create_customer(Mode::Test).await;
    relay.settle().await;
    let worker = relay.worker();

    let plan = webhook_relay::RetrySchedule::default().plan(start_time());
    assert_eq!(plan.len(), 16);
    for (index, at) in plan.iter().enumerate() {
        relay.clock.set(*at - chrono::Duration::seconds(1));
        assert_eq!(worker.deliver_due().await.unwrap(), 0, "not before {at}");
        relay.clock.set(*at);
        assert_eq!(
            worker.deliver_due().await.unwrap(),
            1,
            "attempt {} at {at}",
            index + 1
        );
    }
    relay.clock.set(start_time() + chrono::Duration::days(10));
    assert_eq!(
        worker.deliver_due().await.unwrap(),
        0,
        "no attempt after the last"
    );

    let deliveries = relay.deliveries(&endpoint, Mode::Test).await;
    assert_eq!(deliveries[0]["status"], "failed");
    assert_eq!(deliveries[0]["attempt_count"], 16);
    let undelivered: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM api.stripe_events WHERE {}",
        store::undelivered_condition("stripe_events.id")
    ))
    .fetch_one(&relay.db.pool)
    .await
    .unwrap();
    assert_eq!(
        undelivered, 1,
        "delivery_success=false finds the failed event"
    );
    let first_error = deliveries[0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first_error.contains("connect"), "{first_error}");

    // Three days of failures and no success: the endpoint is disabled, in the log.
    let disabled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'WebhookEndpointDisabled'",
    )
    .bind(&endpoint)
    .fetch_one(&relay.db.pool)
    .await
    .unwrap();
    assert_eq!(disabled, 1);
    relay.settle().await;
    let status: String =
        sqlx::query_scalar("SELECT body->>'status' FROM api.objects WHERE id = $1")
            .bind(&endpoint)
            .fetch_one(&relay.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "disabled");

    // A disabled endpoint receives nothing more.
    relay.create_customer(Mode::Test).await;
    relay.settle().await;
    assert_eq!(relay.deliveries(&endpoint, Mode::Test).await.len(), 1);
}

#[tokio::test]
async fn fan_out_follows_event_types_project_mode_and_the_endpoints_state_at_each_event() {
    let relay = Relay::new().await;
    let receiver = Receiver::start().await;
    let (everything, _) = relay
        .create_endpoint(Mode::Test, &receiver.url, &["*"])
        .await;
    let (attached_only, _) = relay
        .create_endpoint(Mode::Test, &receiver.url, &["payment_method.attached"])
        .await;
    let (live, _) = relay
        .create_endpoint(Mode::Live, "https://example.com/hook", &["*"])
        .await;
    let first = relay.create_customer(Mode::Test).await;
    relay
        .change_endpoint(
            &everything,
            Mode::Test,
            WebhookEndpointCommand::Update {
                changes: WebhookEndpointChanges {
                    disabled: Some(true),
                    ..Default::default()
                },
                at: 1,
            },
        )
        .await;
    relay.create_customer(Mode::Test).await;
    // All of it in one batch: the fan-out sees each endpoint as it was at each event.
    relay.settle().await;

    let to_everything = relay.deliveries(&everything, Mode::Test).await;
    assert_eq!(
        to_everything.len(),
        1,
        "only the event before the disabling"
    );
    assert_eq!(
        to_everything[0]["status"], "canceled",
        "disabling cancels what is pending"
    );
    assert_eq!(
        to_everything[0]["event"],
        relay.customer_created_event(&first).await.as_str()
    );
    assert!(relay
        .deliveries(&attached_only, Mode::Test)
        .await
        .is_empty());
    assert!(
        relay.deliveries(&live, Mode::Live).await.is_empty(),
        "no test event goes to live"
    );
    assert!(
        relay.deliveries(&live, Mode::Test).await.is_empty(),
        "deliveries are read within a mode"
    );

    // Disabling cancels what is pending; redelivery needs an enabled endpoint.
    relay
        .change_endpoint(
            &everything,
            Mode::Test,
            WebhookEndpointCommand::Update {
                changes: WebhookEndpointChanges {
                    disabled: Some(false),
                    ..Default::default()
                },
                at: 2,
            },
        )
        .await;
    relay.create_customer(Mode::Test).await;
    relay.settle().await;
    relay
        .change_endpoint(
            &everything,
            Mode::Test,
            WebhookEndpointCommand::Delete { at: 3 },
        )
        .await;
    relay.settle().await;
    let statuses: Vec<String> = relay
        .deliveries(&everything, Mode::Test)
        .await
        .iter()
        .map(|delivery| delivery["status"].as_str().unwrap().to_string())
        .collect();
    // The first was canceled by the disabling, the one after re-enabling by the deletion.
    assert_eq!(statuses, ["canceled", "canceled"]);
}

#[tokio::test]
async fn live_deliveries_are_refused_when_the_host_turns_private_or_is_loopback() {
    let lookup = Arc::new(TableLookup::default());
    lookup.0.lock().unwrap().insert(
        "hooks.example".into(),
        vec!["93.184.216.34".parse().unwrap()],
    );
    let guard = UrlGuard::new(lookup.clone());
    let relay = Relay::with_guard(guard.clone()).await;
    let receiver = Receiver::start().await;

    // Public when the endpoint is created, private by the time it is delivered to.
    let url = "http://hooks.example/hook";
    assert!(guard.check(url, true).await.is_ok());
    let (rebound, _) = relay.create_endpoint(Mode::Live, url, &["*"]).await;
    lookup
        .0
        .lock()
        .unwrap()
        .insert("hooks.example".into(), vec!["10.0.0.7".parse().unwrap()]);
    assert!(
        guard.check(url, true).await.is_err(),
        "refused at creation now"
    );
    // And a loopback literal, which no resolver sees.
    let (loopback, _) = relay
        .create_endpoint(Mode::Live, &receiver.url, &["*"])
        .await;
    relay.create_customer(Mode::Live).await;
    relay.settle().await;
    assert_eq!(relay.worker().deliver_due().await.unwrap(), 2);

    assert!(
        receiver.received().is_empty(),
        "nothing reached the loopback receiver"
    );
    for (endpoint, expected) in [(&rebound, "10.0.0.7"), (&loopback, "127.0.0.1")] {
        let deliveries = relay.deliveries(endpoint, Mode::Live).await;
        let attempt = &deliveries[0]["attempts"][0];
        let error = attempt["error"].as_str().unwrap();
        assert!(
            error.starts_with("refused:") && error.contains(expected),
            "{error}"
        );
        assert_eq!(attempt["status_code"], Value::Null);
        assert_eq!(
            deliveries[0]["status"], "pending",
            "retried later: DNS may change back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_workers_share_deliveries_and_never_send_one_twice_at_once() {
    let relay = Relay::new().await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = relay
        .create_endpoint(Mode::Test, &receiver.url, &["customer.created"])
        .await;
    receiver.set(|state| {
        state.secret = secret;
        state.delay_ms = 5;
    });
    for _ in 0..60 {
        relay.create_customer(Mode::Test).await;
    }
    relay.settle().await;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let worker = relay.worker();
            tokio::spawn(async move { worker.deliver_due().await.unwrap() })
        })
        .collect();
    let mut attempts = 0;
    for worker in workers {
        attempts += worker.await.unwrap();
    }
    assert_eq!(attempts, 60, "each delivery attempted once");
    let received = receiver.received();
    let mut ids: Vec<&str> = received.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 60);
    {
        let state = receiver.state.lock().unwrap();
        assert_eq!(state.overlaps, 0);
        assert_eq!(state.bad_signatures, 0);
    }
    assert!(relay
        .deliveries(&endpoint, Mode::Test)
        .await
        .iter()
        .all(|delivery| delivery["status"] == "succeeded"));
}

#[tokio::test]
async fn redelivery_sends_the_same_event_again_to_its_endpoints() {
    let relay = Relay::new().await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = relay
        .create_endpoint(Mode::Test, &receiver.url, &["customer.created"])
        .await;
    receiver.set(|state| state.secret = secret);
    let customer = relay.create_customer(Mode::Test).await;
    relay.settle().await;
    let worker = relay.worker();
    assert_eq!(worker.deliver_due().await.unwrap(), 1);
    let event_id = relay.customer_created_event(&customer).await;
    let scope = Scope {
        project: PROJECT,
        livemode: false,
    };
    let again = store::redeliver(&relay.db.pool, scope, &event_id, None, start_time())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["webhook_endpoint"], endpoint.as_str());
    assert_eq!(again[0]["redelivery"], true);
    assert_eq!(worker.deliver_due().await.unwrap(), 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, received[1].body);
    // Another project cannot redeliver it.
    let other = Scope {
        project: "proj_other",
        livemode: false,
    };
    assert!(
        store::redeliver(&relay.db.pool, other, &event_id, None, start_time())
            .await
            .is_err()
    );
}
