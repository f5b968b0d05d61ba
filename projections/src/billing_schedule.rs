//! The billing scheduler's read model: what is due, and when, per subscription, invoice
//! and test clock. The scheduler finds work here (never by scanning the log) and then lets
//! the aggregates decide, so a stale row can only ever lead to work found already done.
//!
//! - `subscriptions`: status and the end of the current period (renewal, or expiry of an
//!   `incomplete` one 23 h after creation).
//! - `invoices`: the next automatic payment attempt of open invoices (dunning).
//! - `pending_items`: invoice items waiting for their customer's next invoice.
//! - `test_clocks`: frozen time and status; work on a clock is due by the clock's time.
//! - `receipts_due`: succeeded payments whose receipt invoice is not issued yet (a row per
//!   success; the invoice paid with that intent removes it — an invoice billing opened is
//!   paid in the same transaction as its charge, so its row never outlives the batch).
//! - `checkout_sessions`: open Checkout Sessions with their expiry (by the customer's test
//!   clock when the session has one) and, once the gateway's result was accepted, when
//!   (wall clock): a session accepted but not completed for a while was cut short by a
//!   crash, and the recovery worker finishes it. Completed and expired sessions leave.
//! - `leases`: which worker holds which job (not derived from events; rebuilt empty).

use std::collections::HashMap;

use event_store::{EventMetadata, RecordedEvent};
use serde_json::Value;
use sqlx::PgConnection;

use crate::runtime::{Projection, ProjectionError};

pub const NAME: &str = "billing";

pub struct BillingSchedule;

#[derive(Default)]
struct SubscriptionRow {
    project: String,
    livemode: bool,
    test_clock: Option<String>,
    customer: Option<String>,
    status: Option<String>,
    period_end: Option<i64>,
    created: Option<i64>,
}

#[derive(Default)]
struct InvoiceRow {
    project: String,
    livemode: bool,
    test_clock: Option<String>,
    /// `Some(None)` clears the next attempt.
    next_attempt: Option<Option<i64>>,
}

#[derive(Default)]
struct ClockRow {
    project: String,
    livemode: bool,
    frozen_time: Option<i64>,
    status: Option<String>,
    deleted: bool,
}

#[derive(Default)]
struct CheckoutRow {
    project: String,
    livemode: bool,
    test_clock: Option<String>,
    expires_at: Option<i64>,
    /// The wall-clock time the gateway's result was accepted.
    accepted_at: Option<chrono::DateTime<chrono::Utc>>,
    closed: bool,
}

#[derive(Default)]
struct ItemRow {
    project: String,
    livemode: bool,
    customer: Option<String>,
    subscription: Option<String>,
    pending: bool,
}

fn field<'a>(payload: &'a Value, event_type: &str, name: &str) -> &'a Value {
    &payload[event_type][name]
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

#[async_trait::async_trait]
impl Projection for BillingSchedule {
    /// Background: the billing run catches it up before it claims.
    fn batching_delay(&self) -> std::time::Duration {
        crate::runtime::BACKGROUND_BATCHING_DELAY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE subscriptions (
            id                 text PRIMARY KEY,
            project            text    NOT NULL,
            livemode           boolean NOT NULL,
            test_clock         text,
            customer           text,
            status             text    NOT NULL,
            current_period_end bigint  NOT NULL,
            created            bigint  NOT NULL
        );
        CREATE TABLE invoices (
            id                   text PRIMARY KEY,
            project              text    NOT NULL,
            livemode             boolean NOT NULL,
            test_clock           text,
            next_payment_attempt bigint
        );
        CREATE TABLE pending_items (
            id           text PRIMARY KEY,
            project      text    NOT NULL,
            livemode     boolean NOT NULL,
            customer     text    NOT NULL,
            subscription text
        );
        CREATE TABLE test_clocks (
            id          text PRIMARY KEY,
            project     text    NOT NULL,
            livemode    boolean NOT NULL,
            frozen_time bigint  NOT NULL,
            status      text    NOT NULL
        );
        CREATE TABLE receipts_due (
            payment_intent text PRIMARY KEY,
            project        text    NOT NULL,
            livemode       boolean NOT NULL
        );
        CREATE TABLE checkout_sessions (
            id                 text PRIMARY KEY,
            project            text    NOT NULL,
            livemode           boolean NOT NULL,
            test_clock         text,
            expires_at         bigint  NOT NULL,
            return_accepted_at timestamptz
        );
        CREATE TABLE leases (
            job          text PRIMARY KEY,
            holder       text        NOT NULL,
            leased_until timestamptz NOT NULL
        );"
    }

    fn index_sql(&self) -> &'static str {
        "CREATE INDEX subscriptions_due ON subscriptions (current_period_end)
             WHERE status IN ('active', 'past_due', 'trialing', 'incomplete');
         CREATE INDEX subscriptions_by_clock ON subscriptions (test_clock) WHERE test_clock IS NOT NULL;
         CREATE INDEX invoices_due ON invoices (next_payment_attempt)
             WHERE next_payment_attempt IS NOT NULL;
         CREATE INDEX pending_items_by_customer ON pending_items (customer);
         CREATE INDEX checkout_sessions_due ON checkout_sessions (expires_at);
         CREATE INDEX checkout_sessions_accepted ON checkout_sessions (return_accepted_at)
             WHERE return_accepted_at IS NOT NULL;"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut subscriptions: HashMap<String, SubscriptionRow> = HashMap::new();
        let mut invoices: HashMap<String, InvoiceRow> = HashMap::new();
        let mut clocks: HashMap<String, ClockRow> = HashMap::new();
        let mut items: HashMap<String, ItemRow> = HashMap::new();
        let mut checkouts: HashMap<String, CheckoutRow> = HashMap::new();
        // Payment intent → Some((project, livemode)) when a receipt is due, None once issued.
        let mut receipts: HashMap<String, Option<(String, bool)>> = HashMap::new();
        for event in events {
            if event.aggregate_type == "payment_intent" {
                if matches!(
                    event.event_type.as_str(),
                    "ChargeSucceeded" | "PaymentIntentCaptured"
                ) {
                    let metadata: EventMetadata = event
                        .metadata()
                        .map_err(|error| ProjectionError::bad_event(event, error))?;
                    let livemode = metadata.mode.is_some_and(|mode| mode.is_live());
                    receipts.insert(
                        event.aggregate_id.clone(),
                        Some((metadata.project, livemode)),
                    );
                }
                continue;
            }
            if event.event_type == "InvoicePaid" {
                let payload: Value = serde_json::from_str(&event.payload)
                    .map_err(|error| ProjectionError::bad_event(event, error))?;
                if let Some(intent) = text(field(&payload, "InvoicePaid", "payment_intent")) {
                    receipts.insert(intent, None);
                }
            }
            let relevant = matches!(
                event.aggregate_type.as_str(),
                "subscription" | "invoice" | "test_clock" | "invoice_item" | "checkout_session"
            );
            if !relevant {
                continue;
            }
            let metadata: EventMetadata = event
                .metadata()
                .map_err(|error| ProjectionError::bad_event(event, error))?;
            let livemode = metadata.mode.is_some_and(|mode| mode.is_live());
            let payload: Value = serde_json::from_str(&event.payload)
                .map_err(|error| ProjectionError::bad_event(event, error))?;
            let kind = event.event_type.as_str();
            let id = event.aggregate_id.clone();
            match event.aggregate_type.as_str() {
                "subscription" => {
                    let row = subscriptions.entry(id).or_insert_with(|| SubscriptionRow {
                        project: metadata.project.clone(),
                        livemode,
                        ..SubscriptionRow::default()
                    });
                    match kind {
                        "SubscriptionCreated" => {
                            let new = field(&payload, kind, "subscription");
                            row.test_clock = text(&new["test_clock"]);
                            row.customer = text(&new["customer"]);
                            row.status = text(field(&payload, kind, "status"));
                            row.period_end = field(&payload, kind, "current_period_end").as_i64();
                            row.created = field(&payload, kind, "created").as_i64();
                        }
                        "SubscriptionRenewed" => {
                            row.status = text(field(&payload, kind, "status"));
                            row.period_end = field(&payload, kind, "current_period_end").as_i64();
                        }
                        "SubscriptionStatusChanged" => {
                            row.status = text(field(&payload, kind, "status"));
                        }
                        "SubscriptionCanceled" => row.status = Some("canceled".into()),
                        _ => {}
                    }
                }
                "invoice" => {
                    let row = invoices.entry(id).or_insert_with(|| InvoiceRow {
                        project: metadata.project.clone(),
                        livemode,
                        ..InvoiceRow::default()
                    });
                    match kind {
                        "InvoiceCreated" => {
                            row.test_clock = text(&field(&payload, kind, "invoice")["test_clock"]);
                            row.next_attempt = Some(None);
                        }
                        "InvoicePaymentFailed" => {
                            row.next_attempt =
                                Some(field(&payload, kind, "next_payment_attempt").as_i64());
                        }
                        "InvoicePaymentAttempted"
                        | "InvoicePaid"
                        | "InvoiceVoided"
                        | "InvoiceMarkedUncollectible"
                        | "InvoiceDeleted" => {
                            row.next_attempt = Some(None);
                        }
                        _ => {}
                    }
                }
                "test_clock" => {
                    let row = clocks.entry(id).or_insert_with(|| ClockRow {
                        project: metadata.project.clone(),
                        livemode,
                        ..ClockRow::default()
                    });
                    match kind {
                        "TestClockCreated" => {
                            row.frozen_time = field(&payload, kind, "frozen_time").as_i64();
                            row.status = Some("ready".into());
                        }
                        "TestClockAdvancing" => {
                            row.frozen_time = field(&payload, kind, "frozen_time").as_i64();
                            row.status = Some("advancing".into());
                        }
                        "TestClockReady" => row.status = Some("ready".into()),
                        "TestClockDeleted" => row.deleted = true,
                        _ => {}
                    }
                }
                "checkout_session" => {
                    let row = checkouts.entry(id).or_insert_with(|| CheckoutRow {
                        project: metadata.project.clone(),
                        livemode,
                        ..CheckoutRow::default()
                    });
                    match kind {
                        "CheckoutSessionCreated" => {
                            row.test_clock = text(field(&payload, kind, "test_clock"));
                            row.expires_at = field(&payload, kind, "expires_at").as_i64();
                        }
                        "CheckoutSessionReturnAccepted" => {
                            row.accepted_at = Some(event.recorded_at);
                        }
                        _ => row.closed = true,
                    }
                }
                _ => {
                    let row = items.entry(id).or_insert_with(|| ItemRow {
                        project: metadata.project.clone(),
                        livemode,
                        ..ItemRow::default()
                    });
                    match kind {
                        "InvoiceItemCreated" => {
                            let item = field(&payload, kind, "item");
                            row.customer = text(&item["customer"]);
                            row.subscription = text(&item["subscription"]);
                            row.pending = item["invoice"].is_null();
                        }
                        _ => row.pending = false,
                    }
                }
            }
        }

        // Set-wise: a batch's subscriptions, invoices and receipts in a statement each
        // (a billing run's batch touches thousands of each). One follower runs at a time,
        // so updating the known rows and then inserting the rest does not race.
        if !subscriptions.is_empty() {
            let mut ids = Vec::with_capacity(subscriptions.len());
            let mut projects = Vec::with_capacity(subscriptions.len());
            let mut livemodes = Vec::with_capacity(subscriptions.len());
            let mut test_clocks = Vec::with_capacity(subscriptions.len());
            let mut customers = Vec::with_capacity(subscriptions.len());
            let mut statuses = Vec::with_capacity(subscriptions.len());
            let mut period_ends = Vec::with_capacity(subscriptions.len());
            let mut created = Vec::with_capacity(subscriptions.len());
            for (id, row) in subscriptions {
                ids.push(id);
                projects.push(row.project);
                livemodes.push(row.livemode);
                test_clocks.push(row.test_clock);
                customers.push(row.customer);
                statuses.push(row.status);
                period_ends.push(row.period_end);
                created.push(row.created);
            }
            sqlx::query(
                "WITH r AS ( \
                   SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], \
                                        $6::text[], $7::bigint[], $8::bigint[]) \
                     AS r(id, project, livemode, test_clock, customer, status, period_end, created) \
                 ), known AS ( \
                   UPDATE subscriptions s SET \
                       status = COALESCE(r.status, s.status), \
                       current_period_end = COALESCE(r.period_end, s.current_period_end) \
                   FROM r WHERE s.id = r.id RETURNING s.id \
                 ) \
                 INSERT INTO subscriptions (id, project, livemode, test_clock, customer, status, \
                     current_period_end, created) \
                 SELECT id, project, livemode, test_clock, customer, COALESCE(status, 'incomplete'), \
                        COALESCE(period_end, 0), COALESCE(created, 0) \
                 FROM r WHERE id NOT IN (SELECT id FROM known) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&projects)
            .bind(&livemodes)
            .bind(&test_clocks)
            .bind(&customers)
            .bind(&statuses)
            .bind(&period_ends)
            .bind(&created)
            .execute(&mut *connection)
            .await?;
        }
        if !invoices.is_empty() {
            let mut ids = Vec::with_capacity(invoices.len());
            let mut projects = Vec::with_capacity(invoices.len());
            let mut livemodes = Vec::with_capacity(invoices.len());
            let mut test_clocks = Vec::with_capacity(invoices.len());
            let mut set_next = Vec::with_capacity(invoices.len());
            let mut next = Vec::with_capacity(invoices.len());
            for (id, row) in invoices {
                ids.push(id);
                projects.push(row.project);
                livemodes.push(row.livemode);
                test_clocks.push(row.test_clock);
                set_next.push(row.next_attempt.is_some());
                next.push(row.next_attempt.flatten());
            }
            sqlx::query(
                "WITH r AS ( \
                   SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::text[], $5::bool[], \
                                        $6::bigint[]) \
                     AS r(id, project, livemode, test_clock, set_next, next) \
                 ), known AS ( \
                   UPDATE invoices i SET next_payment_attempt = \
                       CASE WHEN r.set_next THEN r.next ELSE i.next_payment_attempt END \
                   FROM r WHERE i.id = r.id RETURNING i.id \
                 ) \
                 INSERT INTO invoices (id, project, livemode, test_clock, next_payment_attempt) \
                 SELECT id, project, livemode, test_clock, next FROM r \
                 WHERE id NOT IN (SELECT id FROM known) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&projects)
            .bind(&livemodes)
            .bind(&test_clocks)
            .bind(&set_next)
            .bind(&next)
            .execute(&mut *connection)
            .await?;
        }
        let mut due_intents = Vec::new();
        let mut due_projects = Vec::new();
        let mut due_livemodes = Vec::new();
        let mut issued = Vec::new();
        for (intent, due) in receipts {
            match due {
                Some((project, livemode)) => {
                    due_intents.push(intent);
                    due_projects.push(project);
                    due_livemodes.push(livemode);
                }
                None => issued.push(intent),
            }
        }
        if !due_intents.is_empty() {
            sqlx::query(
                "INSERT INTO receipts_due (payment_intent, project, livemode) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[]) \
                 ON CONFLICT (payment_intent) DO NOTHING",
            )
            .bind(&due_intents)
            .bind(&due_projects)
            .bind(&due_livemodes)
            .execute(&mut *connection)
            .await?;
        }
        if !issued.is_empty() {
            sqlx::query("DELETE FROM receipts_due WHERE payment_intent = ANY($1::text[])")
                .bind(&issued)
                .execute(&mut *connection)
                .await?;
        }
        for (id, row) in clocks {
            if row.deleted {
                sqlx::query("DELETE FROM test_clocks WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *connection)
                    .await?;
                continue;
            }
            sqlx::query(
                "INSERT INTO test_clocks AS c (id, project, livemode, frozen_time, status) \
                 VALUES ($1, $2, $3, COALESCE($4, 0), COALESCE($5, 'ready')) \
                 ON CONFLICT (id) DO UPDATE SET \
                     frozen_time = COALESCE($4, c.frozen_time), status = COALESCE($5, c.status)",
            )
            .bind(&id)
            .bind(&row.project)
            .bind(row.livemode)
            .bind(row.frozen_time)
            .bind(&row.status)
            .execute(&mut *connection)
            .await?;
        }
        for (id, row) in checkouts {
            if row.closed {
                sqlx::query("DELETE FROM checkout_sessions WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *connection)
                    .await?;
                continue;
            }
            sqlx::query(
                "INSERT INTO checkout_sessions AS c \
                     (id, project, livemode, test_clock, expires_at, return_accepted_at) \
                 VALUES ($1, $2, $3, $4, COALESCE($5, 0), $6) \
                 ON CONFLICT (id) DO UPDATE SET \
                     return_accepted_at = COALESCE($6, c.return_accepted_at)",
            )
            .bind(&id)
            .bind(&row.project)
            .bind(row.livemode)
            .bind(&row.test_clock)
            .bind(row.expires_at)
            .bind(row.accepted_at)
            .execute(&mut *connection)
            .await?;
        }
        for (id, row) in items {
            match (&row.customer, row.pending) {
                (Some(customer), true) => {
                    sqlx::query(
                        "INSERT INTO pending_items (id, project, livemode, customer, subscription) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&id)
                    .bind(&row.project)
                    .bind(row.livemode)
                    .bind(customer)
                    .bind(&row.subscription)
                    .execute(&mut *connection)
                    .await?;
                }
                _ => {
                    sqlx::query("DELETE FROM pending_items WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *connection)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
