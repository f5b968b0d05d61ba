//! The API's read model: every Stripe object (customers, payment methods, payment intents,
//! charges, refunds, webhook endpoints, the billing catalog in [`catalog`], invoices,
//! invoice items, subscriptions and test clocks in [`billing`], checkout sessions in [`checkout`]) as it is now, and every Stripe event with `data.object` as it was at
//! that event. `/v1` reads answer from here, never from the log.
//!
//! It folds each stream's events through the domain aggregate's own `apply` (the state is
//! kept per stream in `aggregates`), renders the Stripe shapes with [`crate::stripe`], and
//! writes objects and events set-wise per batch.

mod billing;
mod catalog;
mod checkout;

use std::collections::{HashMap, HashSet};

use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use domain::checkout_session::CheckoutSession;
use domain::customer::{Customer, CustomerEvent};
use domain::invoice::Invoice;
use domain::invoice_item::InvoiceItem;
use domain::payment_intent::{PaymentIntent, PaymentIntentEvent};
use domain::payment_method::{PaymentMethod, PaymentMethodEvent};
use domain::price::Price;
use domain::product::Product;
use domain::subscription::Subscription;
use domain::tax_rate::TaxRate;
use domain::test_clock::TestClock;
use domain::webhook_endpoint::{WebhookEndpoint, WebhookEndpointEvent};
use event_store::{EventMetadata, Mode, RecordedEvent};
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::runtime::{decode, Projection, ProjectionError};
use crate::stripe;

pub const NAME: &str = "api";

/// The public URL `calmony serve` has by default (`http://` + its default address).
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

pub struct ApiObjects {
    upcasters: Vec<Box<dyn EventUpcaster>>,
    /// Where browsers reach this server: the base of invoices' hosted pages and PDFs.
    public_url: String,
}

impl ApiObjects {
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            upcasters: domain::upcasters::all(),
            public_url: public_url.into(),
        }
    }
}

impl Default for ApiObjects {
    fn default() -> Self {
        Self::new(DEFAULT_PUBLIC_URL)
    }
}

/// One row of `objects`.
#[derive(Debug, Clone)]
struct ObjectRow {
    id: String,
    project: String,
    livemode: bool,
    object: &'static str,
    customer: Option<String>,
    payment_intent: Option<String>,
    created: i64,
    deleted: bool,
    body: Value,
}

/// One row of `events`.
#[derive(Debug, Clone)]
struct EventRow {
    id: String,
    project: String,
    livemode: bool,
    event_type: &'static str,
    created: i64,
    position: i64,
    ordinal: i64,
    body: Value,
}

/// The aggregates this read model follows, with their state during a batch.
enum State {
    Customer(Customer),
    PaymentMethod(PaymentMethod),
    PaymentIntent(PaymentIntent),
    WebhookEndpoint(WebhookEndpoint),
    Product(Product),
    Price(Price),
    TaxRate(TaxRate),
    Invoice(Invoice),
    InvoiceItem(InvoiceItem),
    Subscription(Subscription),
    TestClock(TestClock),
    CheckoutSession(CheckoutSession),
}

impl State {
    fn new(aggregate_type: &str) -> Option<State> {
        match aggregate_type {
            Customer::TYPE => Some(State::Customer(Customer::default())),
            PaymentMethod::TYPE => Some(State::PaymentMethod(PaymentMethod::default())),
            PaymentIntent::TYPE => Some(State::PaymentIntent(PaymentIntent::default())),
            WebhookEndpoint::TYPE => Some(State::WebhookEndpoint(WebhookEndpoint::default())),
            Product::TYPE => Some(State::Product(Product::default())),
            Price::TYPE => Some(State::Price(Price::default())),
            TaxRate::TYPE => Some(State::TaxRate(TaxRate::default())),
            Invoice::TYPE => Some(State::Invoice(Invoice::default())),
            InvoiceItem::TYPE => Some(State::InvoiceItem(InvoiceItem::default())),
            Subscription::TYPE => Some(State::Subscription(Subscription::default())),
            TestClock::TYPE => Some(State::TestClock(TestClock::default())),
            CheckoutSession::TYPE => Some(State::CheckoutSession(CheckoutSession::default())),
            _ => None,
        }
    }

    fn load(aggregate_type: &str, state: Value) -> Result<Option<State>, serde_json::Error> {
        Ok(match aggregate_type {
            Customer::TYPE => Some(State::Customer(serde_json::from_value(state)?)),
            PaymentMethod::TYPE => Some(State::PaymentMethod(serde_json::from_value(state)?)),
            PaymentIntent::TYPE => Some(State::PaymentIntent(serde_json::from_value(state)?)),
            WebhookEndpoint::TYPE => Some(State::WebhookEndpoint(serde_json::from_value(state)?)),
            Product::TYPE => Some(State::Product(serde_json::from_value(state)?)),
            Price::TYPE => Some(State::Price(serde_json::from_value(state)?)),
            TaxRate::TYPE => Some(State::TaxRate(serde_json::from_value(state)?)),
            Invoice::TYPE => Some(State::Invoice(serde_json::from_value(state)?)),
            InvoiceItem::TYPE => Some(State::InvoiceItem(serde_json::from_value(state)?)),
            Subscription::TYPE => Some(State::Subscription(serde_json::from_value(state)?)),
            TestClock::TYPE => Some(State::TestClock(serde_json::from_value(state)?)),
            CheckoutSession::TYPE => Some(State::CheckoutSession(serde_json::from_value(state)?)),
            _ => None,
        })
    }

    fn to_json(&self) -> Result<Value, serde_json::Error> {
        match self {
            State::Customer(state) => serde_json::to_value(state),
            State::PaymentMethod(state) => serde_json::to_value(state),
            State::PaymentIntent(state) => serde_json::to_value(state),
            State::WebhookEndpoint(state) => serde_json::to_value(state),
            State::Product(state) => serde_json::to_value(state),
            State::Price(state) => serde_json::to_value(state),
            State::TaxRate(state) => serde_json::to_value(state),
            State::Invoice(state) => serde_json::to_value(state),
            State::InvoiceItem(state) => serde_json::to_value(state),
            State::Subscription(state) => serde_json::to_value(state),
            State::TestClock(state) => serde_json::to_value(state),
            State::CheckoutSession(state) => serde_json::to_value(state),
        }
    }
}

/// Collects a batch's writes; later writes to the same object win.
#[derive(Default)]
struct Changes {
    objects: HashMap<String, ObjectRow>,
    events: Vec<EventRow>,
    invoice_tokens: Vec<billing::InvoiceToken>,
}

struct Context<'a> {
    project: &'a str,
    livemode: bool,
    position: i64,
    request: Value,
    public_url: &'a str,
}

impl Changes {
    fn object(&mut self, row: ObjectRow) {
        self.objects.insert(row.id.clone(), row);
    }

    fn event(
        &mut self,
        context: &Context<'_>,
        event_type: &'static str,
        created: i64,
        object: Value,
        previous: Option<Value>,
    ) {
        // Events are pushed in log order, so this event's siblings are the last ones.
        let index = self
            .events
            .iter()
            .rev()
            .take_while(|event| event.position == context.position)
            .count();
        let id = stripe::event_id(context.position, index);
        let mut data = json!({"object": object});
        if let Some(previous) = previous {
            data["previous_attributes"] = previous;
        }
        self.events.push(EventRow {
            body: json!({
                "id": id,
                "object": "event",
                "api_version": stripe::API_VERSION,
                "created": created,
                "data": data,
                "livemode": context.livemode,
                "pending_webhooks": 0,
                "request": context.request,
                "type": event_type,
            }),
            id,
            project: context.project.to_string(),
            livemode: context.livemode,
            event_type,
            created,
            position: context.position,
            ordinal: context.position * 16 + i64::try_from(index).unwrap_or(15).min(15),
        });
    }
}

fn customer_row(context: &Context<'_>, customer: &Customer) -> ObjectRow {
    ObjectRow {
        id: customer.id.clone(),
        project: context.project.to_string(),
        livemode: context.livemode,
        object: "customer",
        customer: Some(customer.id.clone()),
        payment_intent: None,
        created: customer.created,
        deleted: customer.deleted,
        body: stripe::customer(customer, context.livemode),
    }
}

fn project_customer(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut Customer,
    event: CustomerEvent,
) {
    let before = stripe::customer(state, context.livemode);
    state.apply(event.clone());
    let row = customer_row(context, state);
    let after = row.body.clone();
    changes.object(row);
    match event {
        CustomerEvent::CustomerCreated { created, .. } => {
            changes.event(context, "customer.created", created, after, None)
        }
        CustomerEvent::CustomerUpdated { at, .. } => {
            let previous = stripe::previous_attributes(&before, &after);
            changes.event(context, "customer.updated", at, after, Some(previous))
        }
        CustomerEvent::CustomerDeleted { at } => {
            changes.event(context, "customer.deleted", at, before, None)
        }
    }
}

fn project_payment_method(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut PaymentMethod,
    event: PaymentMethodEvent,
) {
    let before = stripe::payment_method(state);
    state.apply(event.clone());
    let body = stripe::payment_method(state);
    changes.object(ObjectRow {
        id: state.id.clone(),
        project: context.project.to_string(),
        livemode: context.livemode,
        object: "payment_method",
        customer: state.customer.clone(),
        payment_intent: None,
        created: state.created,
        deleted: false,
        body: body.clone(),
    });
    match event {
        PaymentMethodEvent::PaymentMethodAttached { at, .. } => {
            changes.event(context, "payment_method.attached", at, body, None)
        }
        PaymentMethodEvent::PaymentMethodDetached { at, .. } => {
            changes.event(context, "payment_method.detached", at, body, None)
        }
        PaymentMethodEvent::PaymentMethodUpdated { at, .. } => {
            let previous = stripe::previous_attributes(&before, &body);
            changes.event(context, "payment_method.updated", at, body, Some(previous))
        }
        PaymentMethodEvent::PaymentMethodCreated { .. }
        | PaymentMethodEvent::PaymentMethodTokenRefreshed { .. } => {}
    }
}

/// Endpoints are objects (listable, retrievable) with no Stripe events of their own. The
/// signing secret in the created event is never read here: the body is Stripe's shape
/// without it, and the aggregate does not keep it.
fn project_webhook_endpoint(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut WebhookEndpoint,
    event: WebhookEndpointEvent,
) {
    state.apply(event);
    changes.object(ObjectRow {
        id: state.id.clone(),
        project: context.project.to_string(),
        livemode: context.livemode,
        object: "webhook_endpoint",
        customer: None,
        payment_intent: None,
        created: state.created,
        deleted: state.deleted,
        body: stripe::webhook_endpoint(state, context.livemode),
    });
}

fn project_payment_intent(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut PaymentIntent,
    event: PaymentIntentEvent,
) {
    use PaymentIntentEvent as Event;
    state.apply(event.clone());
    let intent_body = stripe::payment_intent(state);
    // The intent and every charge and refund it holds: one row each, filed under the intent.
    let owned_row = |id: &str, object: &'static str, created: i64, body: Value| ObjectRow {
        id: id.to_string(),
        project: context.project.to_string(),
        livemode: context.livemode,
        object,
        customer: state.customer.clone(),
        payment_intent: Some(state.id.clone()),
        created,
        deleted: false,
        body,
    };
    changes.object(owned_row(
        &state.id,
        "payment_intent",
        state.created,
        intent_body.clone(),
    ));
    for charge in &state.charges {
        changes.object(owned_row(
            &charge.id,
            "charge",
            charge.created,
            stripe::charge(state, charge),
        ));
    }
    for refund in &state.refunds {
        changes.object(owned_row(
            &refund.id,
            "refund",
            refund.created,
            stripe::refund(state, refund),
        ));
    }
    let charge_body = |charge_id: &str| {
        state
            .charges
            .iter()
            .find(|charge| charge.id == charge_id)
            .map(|charge| stripe::charge(state, charge))
            .unwrap_or(Value::Null)
    };
    let refund_body = |refund_id: &str| {
        state
            .refunds
            .iter()
            .find(|refund| refund.id == refund_id)
            .map(|refund| stripe::refund(state, refund))
            .unwrap_or(Value::Null)
    };
    match event {
        Event::PaymentIntentCreated { created, .. } => changes.event(
            context,
            "payment_intent.created",
            created,
            intent_body,
            None,
        ),
        Event::ChargeRequiresAction { at, .. } => changes.event(
            context,
            "payment_intent.requires_action",
            at,
            intent_body,
            None,
        ),
        Event::ChargeSucceeded { charge_id, at, .. } => {
            changes.event(
                context,
                "charge.succeeded",
                at,
                charge_body(&charge_id),
                None,
            );
            changes.event(context, "payment_intent.succeeded", at, intent_body, None);
        }
        Event::ChargeAuthorized { charge_id, at, .. } => {
            changes.event(
                context,
                "charge.succeeded",
                at,
                charge_body(&charge_id),
                None,
            );
            changes.event(
                context,
                "payment_intent.amount_capturable_updated",
                at,
                intent_body,
                None,
            );
        }
        Event::ChargeFailed { charge_id, at, .. } => {
            changes.event(context, "charge.failed", at, charge_body(&charge_id), None);
            changes.event(
                context,
                "payment_intent.payment_failed",
                at,
                intent_body,
                None,
            );
        }
        Event::PaymentIntentCaptured { charge_id, at, .. } => {
            changes.event(
                context,
                "charge.captured",
                at,
                charge_body(&charge_id),
                None,
            );
            changes.event(context, "payment_intent.succeeded", at, intent_body, None);
        }
        Event::PaymentIntentCanceled { at, .. } => {
            changes.event(context, "payment_intent.canceled", at, intent_body, None)
        }
        Event::RefundStarted { refund_id, at, .. } => {
            changes.event(context, "refund.created", at, refund_body(&refund_id), None)
        }
        Event::RefundSucceeded { refund_id, at } => {
            let charge_id = state
                .refunds
                .iter()
                .find(|refund| refund.id == refund_id)
                .map(|refund| refund.charge.clone())
                .unwrap_or_default();
            changes.event(
                context,
                "charge.refunded",
                at,
                charge_body(&charge_id),
                None,
            );
            changes.event(context, "refund.updated", at, refund_body(&refund_id), None);
        }
        Event::RefundFailed { refund_id, at, .. } => {
            changes.event(context, "refund.failed", at, refund_body(&refund_id), None)
        }
        Event::PaymentIntentUpdated { .. }
        | Event::PaymentIntentConfirmed { .. }
        | Event::ChargeAttemptStarted { .. } => {}
    }
}

/// How long the follower waits for a request to wait on it before reading a commit nobody
/// waits on yet ([`Projection::gathering_until_awaited`]).
pub const GATHERING_UNTIL_AWAITED: std::time::Duration = std::time::Duration::from_millis(20);

#[async_trait::async_trait]
impl Projection for ApiObjects {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Writes wait on this model, so a commit one waits on is read at once; a commit nobody
    /// waits on yet (a charge's attempt, while its request is at the gateway) waits up to
    /// [`GATHERING_UNTIL_AWAITED`] to share a batch with the commit that will be.
    fn gathering_until_awaited(&self) -> std::time::Duration {
        GATHERING_UNTIL_AWAITED
    }

    /// Everything it writes is a function of the log (its Stripe events' ids are the
    /// events' positions), and the log's commits are durable before it reads them: a batch
    /// lost to a database crash is applied again, the same, from the durable checkpoint. A
    /// commit after it (a request's next write, a downstream consumer's batch) flushes it
    /// with its own, the WAL being one sequence. So a request waiting to read its write does
    /// not also wait for this batch's flush.
    fn commits_asynchronously(&self) -> bool {
        true
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE aggregates (
            aggregate_type text  NOT NULL,
            aggregate_id   text  NOT NULL,
            state          jsonb NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id)
        );
        CREATE TABLE objects (
            id             text    PRIMARY KEY,
            project        text    NOT NULL,
            livemode       boolean NOT NULL,
            object         text    NOT NULL,
            customer       text,
            payment_intent text,
            created        bigint  NOT NULL,
            deleted        boolean NOT NULL,
            body           jsonb   NOT NULL
        );
        CREATE TABLE stripe_events (
            id        text    PRIMARY KEY,
            project   text    NOT NULL,
            livemode  boolean NOT NULL,
            type      text    NOT NULL,
            created   bigint  NOT NULL,
            position  bigint  NOT NULL,
            -- position * 16 + index among the Stripe events of one ledger event: the order
            -- in which they happened
            ordinal   bigint  NOT NULL,
            body      jsonb   NOT NULL
        );
        -- a finalized invoice's unguessable token: its hosted page and PDF
        CREATE TABLE invoice_access_tokens (
            token    text    PRIMARY KEY,
            invoice  text    NOT NULL,
            project  text    NOT NULL,
            livemode boolean NOT NULL
        );"
    }

    fn index_sql(&self) -> &'static str {
        // The indexes on what only some objects have are partial: every row written costs
        // an entry only in the indexes that can find it (a lookup by equality implies the
        // predicate, so it still uses them).
        "CREATE INDEX objects_list ON objects (project, livemode, object, created DESC, id DESC);
CREATE INDEX objects_by_customer ON objects (project, livemode, object, customer, created DESC, id DESC);
CREATE INDEX objects_by_intent ON objects (project, livemode, object, payment_intent, created DESC, id DESC) WHERE payment_intent IS NOT NULL;
CREATE INDEX objects_by_product ON objects (project, livemode, object, (body->>'product'), created DESC, id DESC) WHERE (body->>'product') IS NOT NULL;
CREATE INDEX objects_by_status ON objects (project, livemode, object, (body->>'status'), created DESC, id DESC) WHERE (body->>'status') IS NOT NULL;
CREATE INDEX objects_by_subscription ON objects (project, livemode, object, (body #>> '{parent,subscription_details,subscription}'), created DESC, id DESC) WHERE (body #>> '{parent,subscription_details,subscription}') IS NOT NULL;
CREATE INDEX stripe_events_list ON stripe_events (project, livemode, created DESC, ordinal DESC);
CREATE INDEX stripe_events_by_type ON stripe_events (project, livemode, type, created DESC, ordinal DESC);
CREATE INDEX stripe_events_by_position ON stripe_events (position);"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let relevant: Vec<&RecordedEvent> = events
            .iter()
            .filter(|event| State::new(&event.aggregate_type).is_some())
            .collect();
        if relevant.is_empty() {
            return Ok(());
        }
        let mut states: HashMap<(String, String), State> = HashMap::new();
        let stored = load_states(connection, &relevant).await?;
        for (aggregate_type, aggregate_id, state) in stored {
            let loaded =
                State::load(&aggregate_type, state).map_err(|error| ProjectionError::BadEvent {
                    stream: format!("{aggregate_type}/{aggregate_id}"),
                    sequence: 0,
                    reason: format!("stored state does not load: {error}"),
                })?;
            if let Some(loaded) = loaded {
                states.insert((aggregate_type, aggregate_id), loaded);
            }
        }

        let mut changes = Changes::default();
        for event in relevant {
            let metadata: EventMetadata = event
                .metadata()
                .map_err(|error| ProjectionError::bad_event(event, error))?;
            let context = Context {
                project: &metadata.project,
                livemode: metadata.mode == Some(Mode::Live),
                position: event.position,
                request: json!({"id": metadata.request_id, "idempotency_key": metadata.idempotency_key}),
                public_url: &self.public_url,
            };
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            if !states.contains_key(&key) {
                let Some(fresh) = State::new(&event.aggregate_type) else {
                    continue;
                };
                states.insert(key.clone(), fresh);
            }
            let Some(state) = states.get_mut(&key) else {
                continue;
            };
            match state {
                State::Customer(state) => project_customer(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::PaymentMethod(state) => project_payment_method(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::PaymentIntent(state) => project_payment_intent(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::WebhookEndpoint(state) => project_webhook_endpoint(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::Product(state) => catalog::project_product(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::Price(state) => catalog::project_price(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::TaxRate(state) => catalog::project_tax_rate(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::Invoice(state) => billing::project_invoice(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::InvoiceItem(state) => billing::project_invoice_item(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::Subscription(state) => billing::project_subscription(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::TestClock(state) => billing::project_test_clock(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
                State::CheckoutSession(state) => checkout::project_checkout_session(
                    &mut changes,
                    &context,
                    state,
                    decode(event, &self.upcasters)?,
                ),
            }
        }
        write_changes(
            connection,
            &states,
            changes.objects.into_values().collect(),
            changes.events,
        )
        .await?;
        billing::write_invoice_tokens(connection, changes.invoice_tokens).await?;
        Ok(())
    }
}

/// The stored state of every stream the batch continues. A stream whose first event in the
/// batch is its first event ever (sequence 1) has none, so a batch of new streams (most
/// live batches: objects being created) does not ask.
async fn load_states(
    connection: &mut PgConnection,
    relevant: &[&RecordedEvent],
) -> Result<Vec<(String, String, Value)>, ProjectionError> {
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(relevant.len());
    let mut keys_types: Vec<&str> = Vec::new();
    let mut keys_ids: Vec<&str> = Vec::new();
    for event in relevant {
        let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
        if seen.insert(key) && event.sequence > 1 {
            keys_types.push(key.0);
            keys_ids.push(key.1);
        }
    }
    if keys_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(
        "SELECT a.aggregate_type, a.aggregate_id, a.state FROM aggregates a \
         JOIN UNNEST($1::text[], $2::text[]) AS keys(t, i) \
           ON a.aggregate_type = keys.t AND a.aggregate_id = keys.i",
    )
    .bind(&keys_types)
    .bind(&keys_ids)
    .fetch_all(&mut *connection)
    .await?)
}

/// Writes a batch's states, objects and Stripe events in one statement (one round trip: a
/// batch's cost under load is mostly waiting for the database's turns, not its work).
async fn write_changes(
    connection: &mut PgConnection,
    states: &HashMap<(String, String), State>,
    objects: Vec<ObjectRow>,
    events: Vec<EventRow>,
) -> Result<(), ProjectionError> {
    let states = StateColumns::of(states)?;
    let objects = ObjectColumns::of(objects);
    let events = EventColumns::of(events);
    sqlx::query(
        "WITH states AS ( \
             INSERT INTO aggregates (aggregate_type, aggregate_id, state) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[]) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET state = EXCLUDED.state \
         ), objects AS ( \
             INSERT INTO objects (id, project, livemode, object, customer, payment_intent, \
                                  created, deleted, body) \
             SELECT * FROM UNNEST($4::text[], $5::text[], $6::boolean[], $7::text[], $8::text[], \
                                  $9::text[], $10::bigint[], $11::boolean[], $12::jsonb[]) \
             ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, \
                 payment_intent = EXCLUDED.payment_intent, deleted = EXCLUDED.deleted, \
                 body = EXCLUDED.body \
         ) \
         INSERT INTO stripe_events (id, project, livemode, type, created, position, ordinal, body) \
         SELECT * FROM UNNEST($13::text[], $14::text[], $15::boolean[], $16::text[], \
                              $17::bigint[], $18::bigint[], $19::bigint[], $20::jsonb[])",
    )
    .bind(&states.types)
    .bind(&states.ids)
    .bind(&states.bodies)
    .bind(&objects.ids)
    .bind(&objects.projects)
    .bind(&objects.livemodes)
    .bind(&objects.objects)
    .bind(&objects.customers)
    .bind(&objects.intents)
    .bind(&objects.created)
    .bind(&objects.deleted)
    .bind(&objects.bodies)
    .bind(&events.ids)
    .bind(&events.projects)
    .bind(&events.livemodes)
    .bind(&events.types)
    .bind(&events.created)
    .bind(&events.positions)
    .bind(&events.ordinals)
    .bind(&events.bodies)
    .execute(connection)
    .await?;
    Ok(())
}

/// `aggregates` rows as columns, for `UNNEST`.
struct StateColumns<'a> {
    types: Vec<&'a str>,
    ids: Vec<&'a str>,
    bodies: Vec<Value>,
}

impl<'a> StateColumns<'a> {
    fn of(states: &'a HashMap<(String, String), State>) -> Result<Self, ProjectionError> {
        let mut columns = StateColumns {
            types: Vec::with_capacity(states.len()),
            ids: Vec::with_capacity(states.len()),
            bodies: Vec::with_capacity(states.len()),
        };
        for ((aggregate_type, aggregate_id), state) in states {
            columns.types.push(aggregate_type);
            columns.ids.push(aggregate_id);
            columns
                .bodies
                .push(state.to_json().map_err(|error| ProjectionError::BadEvent {
                    stream: format!("{aggregate_type}/{aggregate_id}"),
                    sequence: 0,
                    reason: error.to_string(),
                })?);
        }
        Ok(columns)
    }
}

/// `objects` rows as columns, for `UNNEST`.
#[derive(Default)]
struct ObjectColumns {
    ids: Vec<String>,
    projects: Vec<String>,
    livemodes: Vec<bool>,
    objects: Vec<&'static str>,
    customers: Vec<Option<String>>,
    intents: Vec<Option<String>>,
    created: Vec<i64>,
    deleted: Vec<bool>,
    bodies: Vec<Value>,
}

impl ObjectColumns {
    fn of(rows: Vec<ObjectRow>) -> Self {
        let mut columns = ObjectColumns::default();
        for row in rows {
            columns.ids.push(row.id);
            columns.projects.push(row.project);
            columns.livemodes.push(row.livemode);
            columns.objects.push(row.object);
            columns.customers.push(row.customer);
            columns.intents.push(row.payment_intent);
            columns.created.push(row.created);
            columns.deleted.push(row.deleted);
            columns.bodies.push(row.body);
        }
        columns
    }
}

/// `stripe_events` rows as columns, for `UNNEST`.
#[derive(Default)]
struct EventColumns {
    ids: Vec<String>,
    projects: Vec<String>,
    livemodes: Vec<bool>,
    types: Vec<&'static str>,
    created: Vec<i64>,
    positions: Vec<i64>,
    ordinals: Vec<i64>,
    bodies: Vec<Value>,
}

impl EventColumns {
    fn of(rows: Vec<EventRow>) -> Self {
        let mut columns = EventColumns::default();
        for row in rows {
            columns.ids.push(row.id);
            columns.projects.push(row.project);
            columns.livemodes.push(row.livemode);
            columns.types.push(row.event_type);
            columns.created.push(row.created);
            columns.positions.push(row.position);
            columns.ordinals.push(row.ordinal);
            columns.bodies.push(row.body);
        }
        columns
    }
}
