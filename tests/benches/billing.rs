//! The billing benchmark: one billing run renewing many due subscriptions, charging each
//! through the Cardstream simulator, then a check that every period was billed exactly once.
//!
//! `cargo bench -p calmony-tests --bench billing` (default 100,000 subscriptions;
//! `CALMONY_BENCH_SUBSCRIPTIONS=20000` for a shorter run). In-process: the billing service
//! and runner of `calmony serve` on a fresh migrated database, the simulator on loopback.
//!
//! Set-up is not measured: projects (one per 10,000 subscriptions: invoice numbers are
//! gapless per project, so one project's finalizations take its counter in turn), customers
//! with a card tokenised by the simulator, and subscriptions whose first period ended a week
//! ago, appended as events in bulk. Measured: `BillingRunner::run_due` over all of them
//! (each renewal: a unit of work with the subscription's new period, the invoice and its
//! number, the payment intent and its attempt; the gateway SALE; a unit with the outcome,
//! the invoice paid and the subscription settled).

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use commands::billing::BillingService;
use commands::payments::{Actor, CardInput, Gateways, PaymentService};
use commands::CommandBus;
use cqrs_es::Aggregate;
use domain::customer::{Customer, CustomerCommand, CustomerFields, Metadata};
use domain::money::Currency;
use domain::payment_method::{BillingDetails, PaymentMethod, PaymentMethodCommand};
use domain::project::{Project, ProjectCommand};
use domain::recurring::{Cadence, Interval};
use domain::subscription::{
    NewSubscription, PlanPrice, Subscription, SubscriptionEvent, SubscriptionItem,
    SubscriptionStatus,
};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, Mode, NewEvent};
use projections::ProjectionRuntime;
use scheduler::billing::{BillingRunner, Scope};
use sqlx::postgres::PgPoolOptions;

/// The allocator `calmony serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BENCH_COMMAND: &str = "cargo bench -p calmony-tests --bench billing";
const SUBSCRIPTIONS_PER_PROJECT: usize = 10_000;
/// Customers (each with its own card) per project; subscriptions are spread over them.
const CUSTOMERS_PER_PROJECT: usize = 100;
const CONCURRENCY: usize = 32;
const DAY: i64 = 86_400;

#[tokio::main]
async fn main() -> BenchResult<()> {
    let total: usize = std::env::var("CALMONY_BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let projects = total.div_ceil(SUBSCRIPTIONS_PER_PROJECT).max(1);
    println!("# {BENCH_COMMAND}: {total} due subscriptions in {projects} projects");

    let db = TestDatabase::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(48)
        .connect(&db.url)
        .await?;
    let simulator =
        cardstream::simulator::spawn(cardstream::simulator::SimulatorConfig::demo()).await?;
    let gateways = Gateways {
        test: cardstream::Client::new(simulator.client_config("100001", "Circle4Take40Idea"))?,
        live: None,
        public_url: "http://127.0.0.1:0".into(),
        crash_after_approval: false,
        crash_in_checkout_return: None,
    };
    let bus = CommandBus::new(EventStore::new(pool.clone()), domain::upcasters::all());
    let payments = PaymentService::new(bus.clone(), gateways);
    let billing = BillingService::new(payments.clone());
    let runtime = ProjectionRuntime::new(pool.clone());
    for projection in projections::all("http://127.0.0.1:0") {
        runtime.ensure_created(projection.as_ref()).await?;
    }

    let now = chrono::Utc::now().timestamp();
    let anchor = now - 38 * DAY;
    let cadence = Cadence {
        interval: Interval::Month,
        count: 1,
    };
    let set_up = Instant::now();
    for project in 0..projects {
        let count = SUBSCRIPTIONS_PER_PROJECT.min(total - project * SUBSCRIPTIONS_PER_PROJECT);
        seed_project(&bus, &payments, &pool, project, count, anchor, cadence).await?;
    }
    // Only the scheduler's read model matters here; the API read model is not needed.
    runtime
        .catch_up(&projections::billing_schedule::BillingSchedule, 10_000)
        .await?;
    println!(
        "set-up: {total} subscriptions in {:.1} s (not measured)",
        set_up.elapsed().as_secs_f64()
    );

    let runner = BillingRunner::new(
        pool.clone(),
        billing,
        runtime.clone(),
        Arc::new(scheduler::SystemClock),
        CONCURRENCY,
    );
    let started = Instant::now();
    let report = runner.run_due(Scope::All).await?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "billing run: {} renewed, {} already done, {} failed in {elapsed:.1} s = {:.0} renewals/s (target: {total} in under 60 s)",
        report.renewed,
        report.already_done,
        report.failed,
        report.renewed as f64 / elapsed
    );

    // Exactly once: one renewal per subscription, one cycle invoice per renewal, every
    // cycle invoice numbered without gaps per project, one successful charge each.
    let renewals: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SubscriptionRenewed'")
            .fetch_one(&pool)
            .await?;
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT aggregate_id FROM events \
         WHERE event_type = 'SubscriptionRenewed' GROUP BY aggregate_id HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await?;
    let numbered: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(last), 0)::bigint FROM (SELECT max(sequence) AS last FROM events \
         WHERE aggregate_type = 'invoice_numbering' GROUP BY aggregate_id) n",
    )
    .fetch_one(&pool)
    .await?;
    let charged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ChargeSucceeded'")
            .fetch_one(&pool)
            .await?;
    println!(
        "check: {renewals} renewals for {total} subscriptions, {doubled} renewed twice, {numbered} invoice numbers issued, {charged} successful charges"
    );
    let exact =
        renewals == total as i64 && doubled == 0 && numbered == renewals && charged == renewals;
    println!("exactly once: {}", if exact { "yes" } else { "NO" });
    drop(simulator);
    if !exact {
        return Err("renewals were not exactly once".into());
    }
    Ok(())
}

/// A project with its customers, cards and `count` subscriptions due since a week.
async fn seed_project(
    bus: &CommandBus,
    payments: &PaymentService,
    pool: &sqlx::PgPool,
    index: usize,
    count: usize,
    anchor: i64,
    cadence: Cadence,
) -> BenchResult<()> {
    let project_id = format!("proj_bench{index:04}");
    let metadata = EventMetadata::new(&project_id, Mode::Test, "system:bench");
    bus.execute::<Project>(
        &project_id,
        ProjectCommand::Create {
            project_id: project_id.clone(),
            name: format!("Bench {index}"),
            at: anchor,
        },
        &(),
        &metadata,
    )
    .await?;
    let actor = Actor {
        project: project_id.clone(),
        livemode: false,
        actor: "system:bench".into(),
        request_id: "req_bench".into(),
        idempotency_key: None,
    };
    let mut customers = Vec::with_capacity(CUSTOMERS_PER_PROJECT);
    for _ in 0..CUSTOMERS_PER_PROJECT.min(count.max(1)) {
        let customer_id = commands::ids::new_id("cus");
        let method = payments
            .create_card_payment_method(
                &actor,
                CardInput::TestToken("pm_card_visa".into()),
                BillingDetails::default(),
                Metadata::new(),
                commands::execute::NoExtraWork,
            )
            .await
            .map_err(|error| format!("tokenising: {error}"))?
            .aggregate
            .id;
        bus.execute::<Customer>(
            &customer_id,
            CustomerCommand::Create {
                customer_id: customer_id.clone(),
                fields: CustomerFields::default(),
                at: anchor,
            },
            &(),
            &metadata,
        )
        .await?;
        bus.execute::<PaymentMethod>(
            &method,
            PaymentMethodCommand::Attach {
                customer_id: customer_id.clone(),
                at: anchor,
            },
            &(),
            &metadata,
        )
        .await?;
        customers.push((customer_id, method));
    }
    let plan = PlanPrice {
        price: format!("price_bench{index:04}"),
        product: format!("prod_bench{index:04}"),
        description: "Bench plan".into(),
        unit_amount: 1_000,
        currency: Currency::GBP,
        cadence,
    };
    let mut batch = Vec::with_capacity(1_000);
    for number in 0..count {
        let (customer, method) = &customers[number % customers.len()];
        let subscription_id = commands::ids::new_id("sub");
        let event = SubscriptionEvent::SubscriptionCreated {
            subscription: Box::new(NewSubscription {
                subscription_id: subscription_id.clone(),
                customer: customer.clone(),
                items: vec![SubscriptionItem {
                    id: commands::ids::new_id("si"),
                    price: plan.clone(),
                    quantity: 1,
                    created: anchor,
                    metadata: Metadata::new(),
                }],
                default_payment_method: Some(method.clone()),
                default_tax_rates: Vec::new(),
                trial_end: None,
                cancel_at_period_end: false,
                metadata: Metadata::new(),
                description: None,
                test_clock: None,
                first_invoice: "in_seeded".into(),
            }),
            status: SubscriptionStatus::Active,
            billing_cycle_anchor: anchor,
            current_period_start: anchor,
            current_period_end: cadence.period_end(anchor, 0),
            next_period_index: 1,
            created: anchor,
        };
        batch.push(NewEvent {
            aggregate_type: Subscription::TYPE.to_string(),
            aggregate_id: subscription_id,
            sequence: 1,
            event_type: cqrs_es::DomainEvent::event_type(&event),
            event_version: cqrs_es::DomainEvent::event_version(&event),
            payload: serde_json::to_value(&event)?,
            metadata: metadata.clone(),
        });
        if batch.len() == 1_000 || number + 1 == count {
            let mut transaction = pool.begin().await?;
            EventStore::append(&mut transaction, &batch).await?;
            transaction.commit().await?;
            batch.clear();
        }
    }
    Ok(())
}
