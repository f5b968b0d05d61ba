//! The billing run's batches: a project's due renewals are opened in one transaction,
//! charged side by side and settled in another; a batch that cannot commit as a whole falls
//! back to renewing each subscription alone. In-process (the billing service and runner of
//! `calmony serve`) on a fresh database, the Cardstream simulator on loopback.

use std::sync::Arc;

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
use scheduler::billing::{BillingRunner, RunReport, Scope};

const DAY: i64 = 86_400;
const PROJECT: &str = "proj_batches";

struct World {
    _db: TestDatabase,
    pool: sqlx::PgPool,
    bus: CommandBus,
    payments: PaymentService,
    runner: BillingRunner,
    runtime: ProjectionRuntime,
    _simulator: cardstream::simulator::RunningSimulator,
    metadata: EventMetadata,
    anchor: i64,
}

async fn world() -> World {
    let db = TestDatabase::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&db.url)
        .await
        .expect("pool");
    let simulator = cardstream::simulator::spawn(cardstream::simulator::SimulatorConfig::demo())
        .await
        .expect("simulator");
    let gateways = Gateways {
        test: cardstream::Client::new(simulator.client_config("100001", "Circle4Take40Idea"))
            .expect("client"),
        live: None,
        public_url: "http://127.0.0.1:0".into(),
        crash_after_approval: false,
        crash_in_checkout_return: None,
    };
    let bus = CommandBus::new(EventStore::new(pool.clone()), domain::upcasters::all());
    let payments = PaymentService::new(bus.clone(), gateways);
    let runtime = ProjectionRuntime::new(pool.clone());
    for projection in projections::all("http://127.0.0.1:0") {
        runtime
            .ensure_created(projection.as_ref())
            .await
            .expect("projection");
    }
    let anchor = chrono::Utc::now().timestamp() - 38 * DAY;
    let metadata = EventMetadata::new(PROJECT, Mode::Test, "system:test");
    bus.execute::<Project>(
        PROJECT,
        ProjectCommand::Create {
            project_id: PROJECT.into(),
            name: "Batches".into(),
            at: anchor,
        },
        &(),
        &metadata,
    )
    .await
    .expect("project");
    let runner = BillingRunner::new(
        pool.clone(),
        BillingService::new(payments.clone()),
        runtime.clone(),
        Arc::new(scheduler::SystemClock),
        32,
    );
    World {
        _db: db,
        pool,
        bus,
        payments,
        runner,
        runtime,
        _simulator: simulator,
        metadata,
        anchor,
    }
}

/// The test's actor in the project, test mode.
fn actor() -> Actor {
    Actor {
        project: PROJECT.into(),
        livemode: false,
        actor: "system:test".into(),
        request_id: "req_test".into(),
        idempotency_key: None,
    }
}

impl World {
    /// A customer with a card tokenised by the simulator from a `pm_card_*` test token.
    async fn customer_with_card(&self, token: &str) -> (String, String) {
        let actor = actor();
        let method = self
            .payments
            .create_card_payment_method(
                &actor,
                CardInput::TestToken(token.into()),
                BillingDetails::default(),
                Metadata::new(),
                commands::execute::NoExtraWork,
            )
            .await
            .expect("tokenised")
            .aggregate
            .id;
        let customer = commands::ids::new_id("cus");
        self.bus
            .execute::<Customer>(
                &customer,
                CustomerCommand::Create {
                    customer_id: customer.clone(),
                    fields: CustomerFields::default(),
                    at: self.anchor,
                },
                &(),
                &self.metadata,
            )
            .await
            .expect("customer");
        self.bus
            .execute::<PaymentMethod>(
                &method,
                PaymentMethodCommand::Attach {
                    customer_id: customer.clone(),
                    at: self.anchor,
                },
                &(),
                &self.metadata,
            )
            .await
            .expect("attached");
        (customer, method)
    }

    /// A monthly subscription whose first period ended a week ago.
    async fn due_subscription(&self, customer: &str, method: &str, cancel_at_end: bool) -> String {
        let cadence = Cadence {
            interval: Interval::Month,
            count: 1,
        };
        let id = commands::ids::new_id("sub");
        let event = SubscriptionEvent::SubscriptionCreated {
            subscription: Box::new(NewSubscription {
                subscription_id: id.clone(),
                customer: customer.into(),
                items: vec![SubscriptionItem {
                    id: commands::ids::new_id("si"),
                    price: PlanPrice {
                        price: "price_batches".into(),
                        product: "prod_batches".into(),
                        description: "Plan".into(),
                        unit_amount: 1_500,
                        currency: Currency::GBP,
                        cadence,
                    },
                    quantity: 1,
                    created: self.anchor,
                    metadata: Metadata::new(),
                }],
                default_payment_method: Some(method.into()),
                default_tax_rates: Vec::new(),
                trial_end: None,
                cancel_at_period_end: cancel_at_end,
                metadata: Metadata::new(),
                description: None,
                test_clock: None,
                first_invoice: "in_seeded".into(),
            }),
            status: SubscriptionStatus::Active,
            billing_cycle_anchor: self.anchor,
            current_period_start: self.anchor,
            current_period_end: cadence.period_end(self.anchor, 0),
            next_period_index: 1,
            created: self.anchor,
        };
        let mut transaction = self.pool.begin().await.expect("begin");
        EventStore::append(
            &mut transaction,
            &[NewEvent {
                aggregate_type: Subscription::TYPE.to_string(),
                aggregate_id: id.clone(),
                sequence: 1,
                event_type: cqrs_es::DomainEvent::event_type(&event),
                event_version: cqrs_es::DomainEvent::event_version(&event),
                payload: serde_json::to_value(&event).expect("payload"),
                metadata: self.metadata.clone(),
            }],
        )
        .await
        .expect("seeded");
        transaction.commit().await.expect("commit");
        id
    }

    /// A billing run, on a read model that shows everything seeded (so that the first
    /// claim finds every due subscription at once); then the read model settled again for
    /// the assertions on it (the run's own last catch-up may have found the run's last
    /// commit behind the horizon, held back by another test's transaction).
    async fn run(&self) -> RunReport {
        self.settle().await;
        let report = self.runner.run_due(Scope::All).await.expect("billing run");
        self.settle().await;
        report
    }

    /// The billing read model showing everything committed so far. First the log's horizon
    /// must pass it: a transaction open anywhere on the server (another test creating its
    /// database) keeps later commits out of every read of the log until it ends.
    async fn settle(&self) {
        assert!(event_store::LogReader::new(self.pool.clone())
            .wait_until_final(std::time::Duration::from_secs(30))
            .await
            .expect("horizon"));
        self.runtime
            .catch_up(&projections::billing_schedule::BillingSchedule, 10_000)
            .await
            .expect("caught up");
    }

    /// How many events of `event_type` the stream has.
    async fn count(&self, stream: &str, event_type: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = $2",
        )
        .bind(stream)
        .bind(event_type)
        .fetch_one(&self.pool)
        .await
        .expect("count")
    }

    /// In how many transactions events of `event_type` were written to `streams` (all
    /// streams when empty).
    /// A one-off payment created, confirmed and charged in one step, as `confirm=true` does;
    /// its intent's id.
    async fn pay_at_once(&self, customer: Option<String>, card: &str, amount: i64) -> String {
        use commands::payments::Together;
        use domain::money::Money;
        use domain::payment_intent::{CaptureMethod, NewIntent};
        let id = commands::ids::new_id("pi");
        let new = NewIntent {
            payment_intent_id: id.clone(),
            livemode: false,
            amount: Money::new(amount, Currency::GBP).expect("money"),
            customer,
            payment_method: Some(card.to_string()),
            capture_method: CaptureMethod::Automatic,
            description: None,
            receipt_email: None,
            metadata: Metadata::new(),
            invoice: None,
            at: chrono::Utc::now().timestamp(),
        };
        let together = self
            .payments
            .create_and_confirm(&actor(), new, true, commands::execute::NoExtraWork)
            .await
            .map_err(|error| error.into_payment_error())
            .expect("charged");
        assert!(matches!(together, Together::Done(_)), "in one step");
        id
    }

    /// The read models settled, one receipts run.
    async fn issue_due_receipts(&self) -> RunReport {
        self.settle().await;
        self.runner
            .run_due(Scope::Receipts)
            .await
            .expect("receipts")
    }

    async fn transactions_writing(&self, streams: &[String], event_type: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(DISTINCT txid) FROM events \
             WHERE (cardinality($1::text[]) = 0 OR aggregate_id = ANY($1::text[])) \
               AND event_type = $2",
        )
        .bind(streams)
        .bind(event_type)
        .fetch_one(&self.pool)
        .await
        .expect("transactions")
    }

    async fn subscription(&self, id: &str) -> Subscription {
        self.bus
            .load::<Subscription>(id, event_store::store::AsOf::Now)
            .await
            .expect("subscription")
            .0
    }

    /// Invoice numbers issued in the project, in order.
    async fn numbers(&self) -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT sequence FROM events WHERE aggregate_type = 'invoice_numbering' ORDER BY sequence",
        )
        .fetch_all(&self.pool)
        .await
        .expect("numbers")
    }
}

#[tokio::test]
async fn a_projects_renewals_open_and_settle_together_each_exactly_once() {
    let world = world().await;
    let (good_customer, good_card) = world.customer_with_card("pm_card_visa").await;
    let (bad_customer, bad_card) = world.customer_with_card("pm_card_chargeCustomerFail").await;
    let mut paying = Vec::new();
    for _ in 0..6 {
        paying.push(
            world
                .due_subscription(&good_customer, &good_card, false)
                .await,
        );
    }
    let declined = world
        .due_subscription(&bad_customer, &bad_card, false)
        .await;
    let ending = world
        .due_subscription(&good_customer, &good_card, true)
        .await;

    let report = world.run().await;
    assert_eq!(report.renewed, 8, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");

    // One opening transaction renewed every paying subscription, one settled them all.
    let mut renewed = paying.clone();
    renewed.push(declined.clone());
    assert_eq!(
        world
            .transactions_writing(&renewed, "SubscriptionRenewed")
            .await,
        1
    );
    assert_eq!(world.transactions_writing(&[], "InvoicePaid").await, 1);
    let paid: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'InvoicePaid'")
            .fetch_one(&world.pool)
            .await
            .expect("paid");
    assert_eq!(paid, 6);
    for id in &paying {
        assert_eq!(world.count(id, "SubscriptionRenewed").await, 1, "{id}");
        let subscription = world.subscription(id).await;
        assert_eq!(subscription.status, SubscriptionStatus::Active);
        assert!(subscription.current_period_end > chrono::Utc::now().timestamp());
    }
    // The declined renewal follows the dunning rule: renewed once, its invoice waiting
    // for the next attempt, the subscription not yet past due.
    assert_eq!(world.count(&declined, "SubscriptionRenewed").await, 1);
    assert_eq!(
        world.subscription(&declined).await.status,
        SubscriptionStatus::Active
    );
    let retries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM billing.invoices WHERE next_payment_attempt IS NOT NULL",
    )
    .fetch_one(&world.pool)
    .await
    .expect("retries");
    assert_eq!(
        retries, 1,
        "the declined invoice waits for its next attempt"
    );
    // cancel_at_period_end: cancelled, no invoice.
    assert_eq!(world.count(&ending, "SubscriptionRenewed").await, 0);
    assert_eq!(
        world.subscription(&ending).await.status,
        SubscriptionStatus::Canceled
    );
    // Seven invoices, numbered 1..=7 without a gap.
    assert_eq!(world.numbers().await, (1..=7).collect::<Vec<i64>>());
    // Six approvals on one card in one run: its token is kept, not refreshed six times.
    assert_eq!(
        world.count(&good_card, "PaymentMethodTokenRefreshed").await,
        0
    );

    // A second run finds nothing due but the declined invoice's retry (a day away).
    let again = world.run().await;
    assert_eq!(again.renewed, 0, "{again:?}");
    assert_eq!(again.failed, 0, "{again:?}");
    assert_eq!(world.numbers().await.len(), 7);
}

#[tokio::test]
async fn a_batch_that_cannot_commit_whole_renews_each_alone() {
    let world = world().await;
    let (customer, card) = world.customer_with_card("pm_card_visa").await;
    let (other_customer, detached_card) = world.customer_with_card("pm_card_visa").await;
    let mut paying = Vec::new();
    for _ in 0..4 {
        paying.push(world.due_subscription(&customer, &card, false).await);
    }
    // Its card is detached after the subscription named it: that renewal is refused, so
    // the batch does not commit and every renewal runs alone.
    let refused = world
        .due_subscription(&other_customer, &detached_card, false)
        .await;
    world
        .bus
        .execute::<PaymentMethod>(
            &detached_card,
            PaymentMethodCommand::Detach {
                at: world.anchor + DAY,
            },
            &(),
            &world.metadata,
        )
        .await
        .expect("detached");

    let report = world.run().await;
    assert_eq!(report.renewed, 4, "{report:?}");
    assert!(report.failed >= 1, "{report:?}");
    // Alone: one transaction each.
    assert_eq!(
        world
            .transactions_writing(&paying, "SubscriptionRenewed")
            .await,
        4
    );
    for id in &paying {
        assert_eq!(world.count(id, "SubscriptionRenewed").await, 1, "{id}");
    }
    assert_eq!(world.transactions_writing(&[], "InvoicePaid").await, 4);
    // Nothing of the refused renewal was written, and no number was spent on it.
    assert_eq!(world.count(&refused, "SubscriptionRenewed").await, 0);
    assert_eq!(world.numbers().await, (1..=4).collect::<Vec<i64>>());
}

#[tokio::test]
async fn one_off_payments_get_their_receipt_invoices_in_one_transaction() {
    let world = world().await;
    let (customer, card) = world.customer_with_card("pm_card_visa").await;
    let actor = actor();
    let mut paid = Vec::new();
    for n in 0..6 {
        // The last one is a guest payment: no customer, so no invoice.
        let customer = (n < 5).then(|| customer.clone());
        paid.push(world.pay_at_once(customer, &card, 1_000 + n).await);
    }
    // One receipt issued beforehand (as by another runner): its payment is not due any more.
    let billing = BillingService::new(world.payments.clone());
    billing
        .issue_receipt(&actor, &paid[0])
        .await
        .expect("receipt");

    let report = world.issue_due_receipts().await;
    assert_eq!(report.receipts, 4, "{report:?}");
    // The guest payment: looked at, nothing to issue.
    assert_eq!(report.already_done, 1, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");

    let receipts: Vec<String> = paid
        .iter()
        .map(|intent| commands::billing::receipt_invoice_id(intent))
        .collect();
    for (n, receipt) in receipts.iter().enumerate() {
        let expected = i64::from(n < 5);
        assert_eq!(
            world.count(receipt, "InvoicePaid").await,
            expected,
            "{receipt}"
        );
    }
    // The four the run issued: one transaction; the numbers gapless.
    assert_eq!(
        world
            .transactions_writing(&receipts[1..5], "InvoiceFinalized")
            .await,
        1
    );
    assert_eq!(world.numbers().await, (1..=5).collect::<Vec<i64>>());
    // Nothing is left due.
    let again = world
        .runner
        .run_due(Scope::Receipts)
        .await
        .expect("receipts");
    assert_eq!(again.done() + again.already_done, 0, "{again:?}");
}

#[tokio::test]
async fn receipt_invoices_go_out_in_small_transactions() {
    // A transaction of many receipts is one long batch for every read model, and the
    // charges committed after it wait for the `api` projection to get through it.
    let world = world().await;
    let (customer, card) = world.customer_with_card("pm_card_visa").await;
    let payments = scheduler::billing::RECEIPTS_PER_BATCH + 2;
    let mut paid = Vec::new();
    for n in 0..payments {
        let amount = 500 + i64::try_from(n).expect("small");
        paid.push(
            world
                .pay_at_once(Some(customer.clone()), &card, amount)
                .await,
        );
    }
    let report = world.issue_due_receipts().await;
    assert_eq!(report.receipts, payments as u64, "{report:?}");
    let receipts: Vec<String> = paid
        .iter()
        .map(|intent| commands::billing::receipt_invoice_id(intent))
        .collect();
    assert_eq!(
        world
            .transactions_writing(&receipts, "InvoiceFinalized")
            .await,
        2,
        "{} receipts: one full batch and the rest",
        payments
    );
    let numbers: Vec<i64> = (1..=i64::try_from(payments).expect("small")).collect();
    assert_eq!(world.numbers().await, numbers);
}
