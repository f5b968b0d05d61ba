//! The webhook benchmark: how many deliveries per second the relay makes to a local receiver,
//! and how long after an event's commit its webhook arrives, under load.
//!
//! `cargo bench -p calmony-tests --bench webhooks` runs both sections; name one after `--`
//! to run only it (`… -- throughput`, `… -- lag`). Everything runs in this process on a fresh
//! migrated database: a writer appending `CustomerCreated` events (one stream each, several
//! per transaction), the `api` projection that renders them as Stripe events, the relay
//! (fan-out and one delivery worker, default settings) and an axum receiver on loopback that
//! answers 200 and notes when each event arrived.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use commands::CommandBus;
use domain::customer::CustomerEvent;
use domain::webhook_endpoint::{SigningSecret, WebhookEndpoint, WebhookEndpointCommand};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, Mode, NewEvent};
use hdrhistogram::Histogram;
use projections::api_objects::ApiObjects;
use projections::ProjectionRuntime;
use webhook_relay::{RelaySettings, UrlGuard};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BENCH_COMMAND: &str = "cargo bench -p calmony-tests --bench webhooks";
const PROJECT: &str = "proj_bench";

/// Throughput: this many events are written before the relay starts, to this many
/// endpoints; the relay then delivers the backlog as fast as it can.
const BACKLOG_EVENTS: usize = 10_000;
const BACKLOG_ENDPOINTS: usize = 2;
/// Lag: (endpoints, events per second) — 2,000 deliveries/s either way.
const LAG_RUNS: [(usize, u64); 2] = [(1, 2_000), (4, 500)];
const LAG_WARMUP_SECONDS: u64 = 2;
const LAG_MEASURE_SECONDS: u64 = 10;
const EVENTS_PER_TRANSACTION: usize = 10;
const DRAIN_TIMEOUT_SECONDS: u64 = 60;

const TARGET_DELIVERIES_PER_SECOND: f64 = 2_000.0;
const TARGET_P99_MS: f64 = 100.0;
/// Histogram bounds, in microseconds: 1 µs to 10 minutes.
const HISTOGRAM_MAX_MICROS: u64 = 600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Throughput,
    Lag,
}

impl Section {
    const ALL: [Section; 2] = [Section::Throughput, Section::Lag];

    fn name(self) -> &'static str {
        match self {
            Section::Throughput => "throughput",
            Section::Lag => "lag",
        }
    }
}

fn main() -> BenchResult<()> {
    // cargo passes `--bench` to a harness-less bench; every other word names a section.
    let requested: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with("--"))
        .collect();
    if let Some(unknown) = requested
        .iter()
        .find(|name| !Section::ALL.iter().any(|section| section.name() == *name))
    {
        return Err(format!("unknown section {unknown:?}: choose from throughput, lag").into());
    }
    let sections: Vec<Section> = Section::ALL
        .into_iter()
        .filter(|section| {
            requested.is_empty() || requested.iter().any(|name| name == section.name())
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&sections))
}

async fn run(sections: &[Section]) -> BenchResult<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    println!(
        "webhook benchmark: writer, api projection, relay, receiver and PostgreSQL sharing \
         {cores} cores; load average {}",
        load_average()
    );
    let mut summary: Vec<(String, String, String, bool)> = Vec::new();
    for section in sections {
        match section {
            Section::Throughput => throughput_section(&mut summary).await?,
            Section::Lag => lag_section(&mut summary).await?,
        }
    }
    println!("\n== Summary");
    for (measure, figure, target, met) in &summary {
        println!(
            "   {measure:<58} {figure:<34} {target:<14} {}",
            if *met { "met" } else { "NOT MET" }
        );
    }
    println!(
        "\nwhole run: {:.0} s; reproduce: {BENCH_COMMAND}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// What the receiver saw.
struct Arrivals {
    /// When each customer's event was committed (set by the writer).
    committed: Mutex<HashMap<String, (Instant, bool)>>,
    lag_micros: Mutex<Histogram<u64>>,
    received: AtomicU64,
    measured: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

impl Arrivals {
    fn new() -> BenchResult<Arc<Arrivals>> {
        Ok(Arc::new(Arrivals {
            committed: Mutex::new(HashMap::new()),
            lag_micros: Mutex::new(Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?),
            received: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            first: Mutex::new(None),
            last: Mutex::new(None),
        }))
    }
}

async fn receive(State(arrivals): State<Arc<Arrivals>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let customer = event["data"]["object"]["id"].as_str().unwrap_or_default();
    let committed = arrivals.committed.lock().unwrap().get(customer).copied();
    if let Some((at, measured)) = committed {
        if measured {
            let micros = u64::try_from(now.saturating_duration_since(at).as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, HISTOGRAM_MAX_MICROS);
            let _ = arrivals.lag_micros.lock().unwrap().record(micros);
            arrivals.measured.fetch_add(1, Ordering::Relaxed);
        }
    }
    arrivals.received.fetch_add(1, Ordering::Relaxed);
    arrivals.first.lock().unwrap().get_or_insert(now);
    *arrivals.last.lock().unwrap() = Some(now);
    StatusCode::OK
}

async fn start_receiver(arrivals: Arc<Arrivals>) -> BenchResult<String> {
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(arrivals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

/// A fresh database with the `api` projection and `endpoints` endpoints to `receiver`.
async fn prepare(receiver: &str, endpoints: usize) -> BenchResult<TestDatabase> {
    let database = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(database.pool.clone());
    runtime.ensure_created(&ApiObjects::default()).await?;
    webhook_relay::prepare(database.pool.clone()).await?;
    let bus = CommandBus::new(
        EventStore::new(database.pool.clone()),
        domain::upcasters::all(),
    );
    for index in 0..endpoints {
        let id = commands::ids::new_id("we");
        bus.execute::<WebhookEndpoint>(
            &id,
            WebhookEndpointCommand::Create {
                endpoint_id: id.clone(),
                url: format!("{receiver}/endpoint-{index}"),
                enabled_events: vec!["customer.created".into()],
                api_version: None,
                description: None,
                metadata: Default::default(),
                secret: SigningSecret::new(commands::ids::new_signing_secret()),
                at: chrono::Utc::now().timestamp(),
            },
            &(),
            &EventMetadata::new(PROJECT, Mode::Test, "system:bench"),
        )
        .await
        .map_err(|error| error.to_string())?;
    }
    Ok(database)
}

/// Runs the api projection and a relay until dropped.
struct Pipeline {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    /// As `calmony serve` runs them: on one runtime, so the fan-out wakes on the api
    /// projection's commits in-process.
    fn start(database: &TestDatabase) -> Pipeline {
        let runtime = ProjectionRuntime::new(database.pool.clone());
        let projection = {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                if let Err(error) = runtime
                    .follow(Arc::new(ApiObjects::default()), 1_000, 250)
                    .await
                {
                    eprintln!("api projection stopped: {error}");
                }
            })
        };
        let relay = tokio::spawn(async move {
            if let Err(error) = webhook_relay::run_beside(
                &runtime,
                Arc::new(scheduler::SystemClock),
                UrlGuard::default(),
                RelaySettings::default(),
            )
            .await
            {
                eprintln!("relay stopped: {error}");
            }
        });
        Pipeline {
            tasks: vec![projection, relay],
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Appends `count` customers, `EVENTS_PER_TRANSACTION` per transaction, and notes each
/// one's commit time (`measured`: whether its lag counts).
async fn write_customers(
    store_pool: &sqlx::PgPool,
    arrivals: &Arrivals,
    count: usize,
    measured: bool,
) -> BenchResult<()> {
    let metadata = EventMetadata::new(PROJECT, Mode::Test, "system:bench");
    let now = chrono::Utc::now().timestamp();
    let mut ids = Vec::with_capacity(count);
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let id = commands::ids::new_id("cus");
        let payload = serde_json::to_value(CustomerEvent::CustomerCreated {
            customer_id: id.clone(),
            email: Some("bench@example.com".into()),
            name: None,
            description: None,
            phone: None,
            default_payment_method: None,
            metadata: Default::default(),
            created: now,
            test_clock: None,
        })?;
        events.push(NewEvent {
            aggregate_type: "customer".into(),
            aggregate_id: id.clone(),
            sequence: 1,
            event_type: "CustomerCreated".into(),
            event_version: "2.0".into(),
            payload,
            metadata: metadata.clone(),
        });
        ids.push(id);
    }
    let mut transaction = store_pool.begin().await?;
    EventStore::append(&mut transaction, &events).await?;
    transaction.commit().await?;
    let committed_at = Instant::now();
    let mut committed = arrivals.committed.lock().unwrap();
    for id in ids {
        committed.insert(id, (committed_at, measured));
    }
    Ok(())
}

/// Where work waits, sampled while a run goes on: the largest backlog seen at each stage.
#[derive(Debug, Default, Clone, Copy)]
struct Backlogs {
    /// Events in the log not yet applied by the api projection.
    api_events: i64,
    /// Events the api projection applied that the fan-out has not.
    fan_out_events: i64,
    /// Deliveries made and not yet attempted.
    pending_deliveries: i64,
}

/// Samples until aborted; the worst so far is in `worst`.
fn sample_backlogs(
    database: &TestDatabase,
    worst: Arc<Mutex<Backlogs>>,
) -> tokio::task::JoinHandle<()> {
    let pool = database.pool.clone();
    tokio::spawn(async move {
        loop {
            let sample: Result<(i64, i64, i64), sqlx::Error> = sqlx::query_as(
                "WITH c AS (SELECT name, txid, position FROM projection_checkpoints) \
                 SELECT \
                   (SELECT count(*) FROM events e, c WHERE c.name = 'api' \
                      AND (e.txid, e.position) > (c.txid, c.position)), \
                   (SELECT count(*) FROM events e, c a, c r \
                      WHERE a.name = 'api' AND r.name = 'webhook_relay' \
                      AND (e.txid, e.position) > (r.txid, r.position) \
                      AND (e.txid, e.position) <= (a.txid, a.position)), \
                   (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending' AND attempts = 0)",
            )
            .fetch_one(&pool)
            .await;
            match sample {
                Ok((api, fan_out, pending)) => {
                    let mut worst = worst.lock().unwrap();
                    worst.api_events = worst.api_events.max(api);
                    worst.fan_out_events = worst.fan_out_events.max(fan_out);
                    worst.pending_deliveries = worst.pending_deliveries.max(pending);
                }
                Err(error) => {
                    eprintln!("   backlog sampling stopped: {error}");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Waits until `expected` deliveries arrived; false if they did not in time.
async fn drain(arrivals: &Arrivals, expected: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(DRAIN_TIMEOUT_SECONDS);
    while arrivals.received.load(Ordering::Relaxed) < expected {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

async fn count_succeeded(database: &TestDatabase) -> BenchResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded'")
            .fetch_one(&database.pool)
            .await?,
    )
}

async fn throughput_section(summary: &mut Vec<(String, String, String, bool)>) -> BenchResult<()> {
    let deliveries = (BACKLOG_EVENTS * BACKLOG_ENDPOINTS) as u64;
    println!(
        "\n== 1. Throughput: {BACKLOG_EVENTS} events written first, to {BACKLOG_ENDPOINTS} \
         endpoints ({deliveries} deliveries), then the relay starts and drains them"
    );
    println!("   reproduce: {BENCH_COMMAND} -- throughput");
    let arrivals = Arrivals::new()?;
    let receiver = start_receiver(arrivals.clone()).await?;
    let database = prepare(&receiver, BACKLOG_ENDPOINTS).await?;
    for _ in 0..BACKLOG_EVENTS / 500 {
        write_customers(&database.pool, &arrivals, 500, false).await?;
    }
    // The api projection renders the backlog first, so that what is timed is the relay.
    let runtime = ProjectionRuntime::new(database.pool.clone());
    event_store::LogReader::new(database.pool.clone())
        .wait_until_final(Duration::from_secs(30))
        .await?;
    runtime.catch_up(&ApiObjects::default(), 1_000).await?;

    let started = Instant::now();
    let pipeline = Pipeline::start(&database);
    let drained = drain(&arrivals, deliveries).await;
    let received_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(DRAIN_TIMEOUT_SECONDS);
    while count_succeeded(&database).await? < deliveries as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recorded_in = started.elapsed();
    drop(pipeline);
    let succeeded = count_succeeded(&database).await?;
    let received = arrivals.received.load(Ordering::Relaxed);
    let rate = received as f64 / received_in.as_secs_f64();
    let first_to_last = match (
        *arrivals.first.lock().unwrap(),
        *arrivals.last.lock().unwrap(),
    ) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    };
    println!(
        "   received {received} of {deliveries} in {:.2} s from the relay's start \
         ({rate:.0} deliveries/s; first to last arrival {:.2} s); {succeeded} recorded as \
         succeeded after {:.2} s{}",
        received_in.as_secs_f64(),
        first_to_last.as_secs_f64(),
        recorded_in.as_secs_f64(),
        if drained { "" } else { " (TIMED OUT)" }
    );
    summary.push((
        format!("deliveries/s, backlog of {deliveries} to {BACKLOG_ENDPOINTS} endpoints"),
        format!("{rate:.0}/s"),
        format!("≥ {TARGET_DELIVERIES_PER_SECOND:.0}/s"),
        drained && rate >= TARGET_DELIVERIES_PER_SECOND,
    ));
    database.pool.close().await;
    Ok(())
}

async fn lag_section(summary: &mut Vec<(String, String, String, bool)>) -> BenchResult<()> {
    for (endpoints, events_per_second) in LAG_RUNS {
        let deliveries_per_second = events_per_second * endpoints as u64;
        println!(
            "\n== 2. Lag: {events_per_second} events/s to {endpoints} endpoint(s) = \
             {deliveries_per_second} deliveries/s for {LAG_MEASURE_SECONDS} s (after \
             {LAG_WARMUP_SECONDS} s of warm-up), commit → arrival at the receiver"
        );
        println!("   reproduce: {BENCH_COMMAND} -- lag");
        let arrivals = Arrivals::new()?;
        let receiver = start_receiver(arrivals.clone()).await?;
        let database = prepare(&receiver, endpoints).await?;
        let pipeline = Pipeline::start(&database);
        let worst = Arc::new(Mutex::new(Backlogs::default()));
        let sampler = sample_backlogs(&database, worst.clone());
        // Open loop: transactions on a fixed schedule, whatever the relay does.
        let transactions_per_second = events_per_second / EVENTS_PER_TRANSACTION as u64;
        let interval = Duration::from_secs_f64(1.0 / transactions_per_second as f64);
        let total_seconds = LAG_WARMUP_SECONDS + LAG_MEASURE_SECONDS;
        let total_transactions = transactions_per_second * total_seconds;
        let warmup_transactions = transactions_per_second * LAG_WARMUP_SECONDS;
        let started = tokio::time::Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        let mut late = 0u64;
        for index in 0..total_transactions {
            let due = started + interval.mul_f64(index as f64);
            if tokio::time::Instant::now() > due + Duration::from_millis(50) {
                late += 1;
            }
            tokio::time::sleep_until(due).await;
            let pool = database.pool.clone();
            let arrivals = arrivals.clone();
            let measured = index >= warmup_transactions;
            writers.spawn(async move {
                write_customers(&pool, &arrivals, EVENTS_PER_TRANSACTION, measured).await
            });
            while let Some(done) = writers.try_join_next() {
                done??;
            }
        }
        while let Some(done) = writers.join_next().await {
            done??;
        }
        let writing = started.elapsed();
        let expected = total_transactions * EVENTS_PER_TRANSACTION as u64 * endpoints as u64;
        let drained = drain(&arrivals, expected).await;
        drop(pipeline);
        sampler.abort();
        let backlogs = *worst.lock().unwrap();
        let histogram = arrivals.lag_micros.lock().unwrap().clone();
        let (p50, p99, max) = (
            histogram.value_at_quantile(0.50) as f64 / 1_000.0,
            histogram.value_at_quantile(0.99) as f64 / 1_000.0,
            histogram.max() as f64 / 1_000.0,
        );
        let offered = (total_transactions * EVENTS_PER_TRANSACTION as u64) as f64
            / writing.as_secs_f64()
            * endpoints as f64;
        println!(
            "   wrote for {:.2} s ({offered:.0} deliveries/s offered; {late} transactions \
             started >50 ms late); received {} of {expected}{}",
            writing.as_secs_f64(),
            arrivals.received.load(Ordering::Relaxed),
            if drained { "" } else { " (TIMED OUT)" }
        );
        println!(
            "   lag over {} measured deliveries: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            arrivals.measured.load(Ordering::Relaxed)
        );
        println!(
            "   largest backlogs seen (sampled every 100 ms): api projection {} events, \
             fan-out {} events, deliveries not yet attempted {}",
            backlogs.api_events, backlogs.fan_out_events, backlogs.pending_deliveries
        );
        summary.push((
            format!("commit → delivery lag, {deliveries_per_second}/s to {endpoints} endpoint(s)"),
            format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
            format!("p99 < {TARGET_P99_MS:.0} ms"),
            drained && p99 < TARGET_P99_MS,
        ));
        database.pool.close().await;
    }
    Ok(())
}
