//! The dashboard benchmark: server time of the overview and of a customer's page over a
//! project with 100,000 payments.
//!
//! `cargo bench -p calmony-tests --bench dashboard` (`CALMONY_BENCH_PAYMENTS=20000` for a
//! shorter run). Set-up, not measured: a fresh migrated database; a project and an operator
//! through the CLI; 2,000 customers and 100,000 payment intents appended as events in bulk
//! (`EventStore::append`, ~1,000 events per transaction) over the last 60 days — 85 %
//! succeeded, 5 % declined, 10 % succeeded then partly refunded, one in seven in EUR; then
//! every projection caught up. Measured: `calmony serve` (the release binary) signed in to
//! over HTTP, each page requested 200 times after 20 warm-ups, one at a time; the figure is
//! the server's own `Server-Timing` (from the dashboard's first layer to its response:
//! session lookup, queries, rendering), beside the client's round trip on loopback.
//!
//! The synthetic payments would each be owed a receipt invoice; those jobs are dropped
//! before the server starts (and the webhook relay and sealer are off) so that nothing but
//! the requests runs while measuring.

use std::error::Error;
use std::time::{Duration, Instant};

use calmony_tests::{calmony, stderr_of, stdout_of, Server};
use domain::customer::{CustomerEvent, Metadata};
use domain::money::{Currency, Money};
use domain::payment_intent::{CaptureMethod, PaymentError, PaymentIntentEvent};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, Mode, NewEvent};
use hdrhistogram::Histogram;
use projections::runtime::REBUILD_BATCH_EVENTS;
use projections::ProjectionRuntime;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BENCH_COMMAND: &str = "cargo bench -p calmony-tests --bench dashboard";
const CUSTOMERS: usize = 2_000;
/// Intents per append: at most 6 events each, under the 1,000-event bound.
const INTENTS_PER_APPEND: usize = 160;
const SPREAD_SECONDS: i64 = 60 * 86_400;
const WARM_UP_REQUESTS: usize = 20;
const MEASURED_REQUESTS: usize = 200;
const TARGET_MS: f64 = 10.0;
const PASSWORD: &str = "benchmark operator password";

#[tokio::main]
async fn main() -> BenchResult<()> {
    let payments: usize = std::env::var("CALMONY_BENCH_PAYMENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    println!("# {BENCH_COMMAND}: {payments} payments, {CUSTOMERS} customers");
    let db = TestDatabase::new().await;

    let output = calmony(&db.url)
        .args(["projects", "create", "--name", "Bench"])
        .output()?;
    assert!(output.status.success(), "{}", stderr_of(&output));
    let project = stdout_of(&output).trim().to_string();
    let output = calmony(&db.url)
        .args(["operators", "create", "--email", "bench@example.com"])
        .env("CALMONY_OPERATOR_PASSWORD", PASSWORD)
        .output()?;
    assert!(output.status.success(), "{}", stderr_of(&output));

    let started = Instant::now();
    let events = append_history(&db.pool, &project, payments).await?;
    println!(
        "appended {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let runtime = ProjectionRuntime::new(db.pool.clone());
    event_store::LogReader::new(db.pool.clone())
        .wait_until_final(Duration::from_secs(30))
        .await?;
    for projection in projections::all(projections::api_objects::DEFAULT_PUBLIC_URL) {
        runtime.ensure_created(projection.as_ref()).await?;
        let step = Instant::now();
        let applied = runtime
            .catch_up(projection.as_ref(), REBUILD_BATCH_EVENTS)
            .await?;
        println!(
            "  projection {:<16} {applied:>8} events in {:>6.1} s",
            projection.name(),
            step.elapsed().as_secs_f64()
        );
    }
    println!(
        "projections caught up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    sqlx::query("DELETE FROM billing.receipts_due")
        .execute(&db.pool)
        .await?;
    sqlx::query("VACUUM ANALYZE").execute(&db.pool).await?;

    let server = Server::start(
        &db.url,
        &[
            ("CALMONY_WEBHOOKS_RELAY", "false"),
            ("CALMONY_SEAL_INTERVAL_MS", "86400000"),
        ],
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let session = sign_in(&client, &server.base_url).await?;

    // The customer with the most payments (all have payments / 2,000 of them).
    let customer: String = sqlx::query_scalar(
        "SELECT id FROM api.objects WHERE project = $1 AND livemode = false AND object = 'customer' \
         ORDER BY created, id LIMIT 1",
    )
    .bind(&project)
    .fetch_one(&db.pool)
    .await?;
    let pages = [
        ("overview", format!("/dashboard/projects/{project}/test")),
        (
            "customer page",
            format!("/dashboard/projects/{project}/test/customers/{customer}"),
        ),
        (
            "customer search",
            format!("/dashboard/projects/{project}/test/customers?q=customer1"),
        ),
    ];
    println!(
        "\n| page | server p50 | server p99 | server max | round trip p50 | round trip p99 | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, path) in &pages {
        let url = format!("{}{path}", server.base_url);
        let (server_time, round_trip) = measure(&client, &url, &session).await?;
        let ms = |histogram: &Histogram<u64>, quantile: f64| {
            histogram.value_at_quantile(quantile) as f64 / 1_000.0
        };
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | p99 < {TARGET_MS} ms: {} |",
            ms(&server_time, 0.5),
            ms(&server_time, 0.99),
            server_time.max() as f64 / 1_000.0,
            ms(&round_trip, 0.5),
            ms(&round_trip, 0.99),
            if ms(&server_time, 0.99) < TARGET_MS { "met" } else { "NOT met" },
        );
    }
    drop(server);
    Ok(())
}

/// Signs in through the form; the session cookie's value.
async fn sign_in(client: &reqwest::Client, base: &str) -> BenchResult<String> {
    let form = client.get(format!("{base}/dashboard/login")).send().await?;
    let csrf_cookie = cookie_value(&form, "calmony_login_csrf").ok_or("no form cookie")?;
    let answer = client
        .post(format!("{base}/dashboard/login"))
        .header(
            reqwest::header::COOKIE,
            format!("calmony_login_csrf={csrf_cookie}"),
        )
        .form(&[
            ("csrf_token", csrf_cookie.as_str()),
            ("email", "bench@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await?;
    assert_eq!(answer.status(), 303, "sign-in failed");
    Ok(cookie_value(&answer, "calmony_session").ok_or("no session cookie")?)
}

fn cookie_value(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|line| line.split(';').next()?.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// (server time, round trip) in microseconds over the measured requests.
async fn measure(
    client: &reqwest::Client,
    url: &str,
    session: &str,
) -> BenchResult<(Histogram<u64>, Histogram<u64>)> {
    let mut server_time = Histogram::<u64>::new(3)?;
    let mut round_trip = Histogram::<u64>::new(3)?;
    for request in 0..WARM_UP_REQUESTS + MEASURED_REQUESTS {
        let sent = Instant::now();
        let response = client
            .get(url)
            .header(
                reqwest::header::COOKIE,
                format!("calmony_session={session}"),
            )
            .send()
            .await?;
        let status = response.status();
        let timing = response
            .headers()
            .get("server-timing")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("app;dur="))
            .and_then(|value| value.parse::<f64>().ok())
            .ok_or("no Server-Timing header")?;
        let body = response.text().await?;
        let elapsed = sent.elapsed();
        assert_eq!(status, 200, "{url}: {body}");
        if request >= WARM_UP_REQUESTS {
            server_time.record((timing * 1_000.0) as u64)?;
            round_trip.record(elapsed.as_micros() as u64)?;
        }
    }
    Ok((server_time, round_trip))
}

/// Appends the customers and payments; the number of events.
async fn append_history(pool: &sqlx::PgPool, project: &str, payments: usize) -> BenchResult<usize> {
    let metadata = EventMetadata::new(project, Mode::Test, "system:bench");
    let now = chrono::Utc::now().timestamp();
    let event = |stream_type: &str, id: &str, sequence: i64, payload: serde_json::Value| {
        // Externally tagged: the payload's one key is the event type.
        let event_type = payload
            .as_object()
            .and_then(|object| object.keys().next().cloned())
            .unwrap_or_default();
        // CustomerCreated is at 2.0 (see domain::upcasters); the rest at 1.0.
        let version = if stream_type == "customer" {
            "2.0"
        } else {
            "1.0"
        };
        NewEvent {
            aggregate_type: stream_type.to_string(),
            aggregate_id: id.to_string(),
            sequence,
            event_type,
            event_version: version.to_string(),
            payload,
            metadata: metadata.clone(),
        }
    };
    let mut total = 0;
    let customers: Vec<String> = (0..CUSTOMERS).map(|n| format!("cus_bench{n:06}")).collect();
    for chunk in customers.chunks(1_000) {
        let mut batch = Vec::new();
        for id in chunk {
            let n = &id[9..];
            batch.push(event(
                "customer",
                id,
                1,
                serde_json::to_value(CustomerEvent::CustomerCreated {
                    customer_id: id.clone(),
                    email: Some(format!("customer{n}@example.com")),
                    name: Some(format!("Customer {n}")),
                    description: None,
                    phone: None,
                    default_payment_method: None,
                    metadata: Metadata::new(),
                    created: now - SPREAD_SECONDS - 86_400,
                    test_clock: None,
                })?,
            ));
        }
        total += append(pool, &batch).await?;
    }

    let mut batch = Vec::new();
    for index in 0..payments {
        let id = format!("pi_bench{index:08}");
        let charge = format!("ch_bench{index:08}");
        let customer = &customers[index % CUSTOMERS];
        let currency = if index % 7 == 0 {
            Currency::EUR
        } else {
            Currency::GBP
        };
        let amount = Money::new(500 + (index as i64 * 37) % 10_000, currency)?;
        // Spread over the last 60 days, newest last.
        let at = now - SPREAD_SECONDS + (index as i64 * SPREAD_SECONDS) / payments as i64;
        let declined = index % 20 == 0;
        let refunded = index % 10 == 1;
        let mut events = vec![
            PaymentIntentEvent::PaymentIntentCreated {
                payment_intent_id: id.clone(),
                livemode: false,
                amount,
                customer: Some(customer.clone()),
                payment_method: Some("pm_bench".into()),
                capture_method: CaptureMethod::Automatic,
                description: Some(format!("Order {index}")),
                receipt_email: None,
                metadata: Metadata::new(),
                created: at,
                invoice: None,
            },
            PaymentIntentEvent::PaymentIntentConfirmed {
                payment_method: "pm_bench".into(),
                at,
            },
            PaymentIntentEvent::ChargeAttemptStarted {
                charge_id: charge.clone(),
                transaction_unique: format!("tu_{index}"),
                amount,
                payment_method: "pm_bench".into(),
                at,
            },
        ];
        if declined {
            events.push(PaymentIntentEvent::ChargeFailed {
                charge_id: charge.clone(),
                error: PaymentError {
                    code: "card_declined".into(),
                    decline_code: Some("insufficient_funds".into()),
                    message: "Your card has insufficient funds.".into(),
                    charge: charge.clone(),
                    payment_method: "pm_bench".into(),
                },
                at,
            });
        } else {
            events.push(PaymentIntentEvent::ChargeSucceeded {
                charge_id: charge.clone(),
                gateway_token: format!("xref_{index}"),
                authorization_code: Some("12345".into()),
                amount,
                at,
            });
        }
        if refunded {
            let refund = format!("re_bench{index:08}");
            events.push(PaymentIntentEvent::RefundStarted {
                refund_id: refund.clone(),
                charge_id: charge.clone(),
                amount: amount.amount_minor / 2,
                reason: None,
                transaction_unique: format!("tu_re_{index}"),
                metadata: Metadata::new(),
                at: at + 60,
            });
            events.push(PaymentIntentEvent::RefundSucceeded {
                refund_id: refund,
                at: at + 60,
            });
        }
        for (sequence, intent_event) in events.into_iter().enumerate() {
            batch.push(event(
                "payment_intent",
                &id,
                sequence as i64 + 1,
                serde_json::to_value(intent_event)?,
            ));
        }
        if (index + 1) % INTENTS_PER_APPEND == 0 {
            total += append(pool, &batch).await?;
            batch.clear();
        }
    }
    total += append(pool, &batch).await?;
    Ok(total)
}

async fn append(pool: &sqlx::PgPool, events: &[NewEvent]) -> BenchResult<usize> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut transaction = pool.begin().await?;
    EventStore::append(&mut transaction, events).await?;
    transaction.commit().await?;
    Ok(events.len())
}
