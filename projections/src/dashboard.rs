//! The admin dashboard's numbers and its customer search, folded from the log.
//!
//! `daily_totals`: per project, mode, currency and UTC day (of the event's own time): money
//! captured (`ChargeSucceeded`, and `PaymentIntentCaptured` for manual capture), money
//! refunded (`RefundSucceeded`), and how many payments succeeded and failed (`ChargeFailed`).
//! Net revenue is captured − refunded. The overview and its 30-day chart sum a few rows of
//! it; nothing the dashboard shows scans the log or every payment.
//!
//! Later events of an intent do not repeat what they need (a capture has no currency, a
//! refund's success no amount), so `intents` and `refunds` remember it. `customers` holds
//! lowercased emails and names with prefix indexes for the dashboard's customer search; the
//! customers themselves are read from the `api` read model.

use std::collections::HashMap;

use chrono::NaiveDate;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use domain::customer::{Customer, CustomerEvent};
use domain::payment_intent::{PaymentIntent, PaymentIntentEvent};
use event_store::{EventMetadata, Mode, RecordedEvent};
use sqlx::PgConnection;

use crate::runtime::{decode, Projection, ProjectionError};

pub const NAME: &str = "dashboard";

/// The PaymentIntent events that move a total (or that later ones need).
const INTENT_EVENTS: [&str; 6] = [
    "PaymentIntentCreated",
    "ChargeSucceeded",
    "PaymentIntentCaptured",
    "ChargeFailed",
    "RefundStarted",
    "RefundSucceeded",
];

pub struct Dashboard {
    upcasters: Vec<Box<dyn EventUpcaster>>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self {
            upcasters: domain::upcasters::all(),
        }
    }
}

/// The UTC day of a Unix time.
pub fn day_of(at: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(at, 0)
        .unwrap_or_default()
        .date_naive()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DayKey {
    project: String,
    livemode: bool,
    currency: String,
    day: NaiveDate,
}

#[derive(Debug, Default, Clone, Copy)]
struct DayTotals {
    gross_minor: i64,
    refunded_minor: i64,
    succeeded_count: i64,
    failed_count: i64,
}

/// A customer as the search sees it; `None` fields are left as they are.
#[derive(Debug, Default)]
struct CustomerChange {
    id: String,
    project: String,
    livemode: bool,
    created: Option<i64>,
    email: Option<Option<String>>,
    name: Option<Option<String>>,
    deleted: bool,
}

enum Decoded {
    Customer(CustomerEvent),
    Intent(PaymentIntentEvent),
}

/// What one batch changes.
#[derive(Default)]
struct Changes {
    totals: HashMap<DayKey, DayTotals>,
    /// Intents first seen in this batch: id → currency.
    new_intents: Vec<(String, String)>,
    /// Refunds started in this batch: id → amount.
    new_refunds: Vec<(String, i64)>,
    /// Refunds that finished (succeeded or failed): no longer needed.
    finished_refunds: Vec<String>,
    customers: Vec<CustomerChange>,
}

impl Changes {
    fn add(&mut self, key: DayKey, change: impl FnOnce(&mut DayTotals)) {
        change(self.totals.entry(key).or_default());
    }
}

#[async_trait::async_trait]
impl Projection for Dashboard {
    /// Background: the dashboard's totals, read a moment later.
    fn batching_delay(&self) -> std::time::Duration {
        crate::runtime::BACKGROUND_BATCHING_DELAY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE daily_totals (
            project         text    NOT NULL,
            livemode        boolean NOT NULL,
            currency        text    NOT NULL,
            day             date    NOT NULL,
            gross_minor     bigint  NOT NULL,
            refunded_minor  bigint  NOT NULL,
            succeeded_count bigint  NOT NULL,
            failed_count    bigint  NOT NULL,
            PRIMARY KEY (project, livemode, day, currency)
        );
        -- what an intent's later events need: its currency
        CREATE TABLE intents (
            id       text PRIMARY KEY,
            currency text NOT NULL
        );
        -- refunds started and not yet finished: their amounts
        CREATE TABLE refunds (
            id           text   PRIMARY KEY,
            amount_minor bigint NOT NULL
        );
        CREATE TABLE customers (
            id          text    PRIMARY KEY,
            project     text    NOT NULL,
            livemode    boolean NOT NULL,
            created     bigint  NOT NULL,
            email_lower text,
            name_lower  text,
            deleted     boolean NOT NULL DEFAULT false
        );"
    }

    fn index_sql(&self) -> &'static str {
        "CREATE INDEX customers_by_email ON customers (project, livemode, email_lower text_pattern_ops) WHERE NOT deleted;
CREATE INDEX customers_by_name ON customers (project, livemode, name_lower text_pattern_ops) WHERE NOT deleted;"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let relevant: Vec<&RecordedEvent> = events
            .iter()
            .filter(|event| {
                (event.aggregate_type == PaymentIntent::TYPE
                    && INTENT_EVENTS.contains(&event.event_type.as_str()))
                    || event.aggregate_type == Customer::TYPE
            })
            .collect();
        if relevant.is_empty() {
            return Ok(());
        }

        let mut decoded = Vec::with_capacity(relevant.len());
        for event in relevant {
            let metadata: EventMetadata = event
                .metadata()
                .map_err(|error| ProjectionError::bad_event(event, error))?;
            let decoded_event = if event.aggregate_type == Customer::TYPE {
                Decoded::Customer(decode(event, &self.upcasters)?)
            } else {
                Decoded::Intent(decode(event, &self.upcasters)?)
            };
            decoded.push((event, metadata, decoded_event));
        }

        // What earlier batches remembered, for the intents and refunds of this one.
        let intent_ids: Vec<&str> = decoded
            .iter()
            .filter(|(_, _, decoded)| matches!(decoded, Decoded::Intent(_)))
            .map(|(event, _, _)| event.aggregate_id.as_str())
            .collect();
        let mut currencies: HashMap<String, String> =
            sqlx::query_as("SELECT id, currency FROM intents WHERE id = ANY($1)")
                .bind(&intent_ids)
                .fetch_all(&mut *connection)
                .await?
                .into_iter()
                .collect();
        let finishing_refunds: Vec<&str> = decoded
            .iter()
            .filter_map(|(_, _, decoded)| match decoded {
                Decoded::Intent(PaymentIntentEvent::RefundSucceeded { refund_id, .. }) => {
                    Some(refund_id.as_str())
                }
                _ => None,
            })
            .collect();
        let mut refund_amounts: HashMap<String, i64> = if finishing_refunds.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as("SELECT id, amount_minor FROM refunds WHERE id = ANY($1)")
                .bind(&finishing_refunds)
                .fetch_all(&mut *connection)
                .await?
                .into_iter()
                .collect()
        };

        let mut changes = Changes::default();
        for (event, metadata, decoded_event) in decoded {
            let project = metadata.project;
            let livemode = metadata.mode == Some(Mode::Live);
            let intent_event = match decoded_event {
                Decoded::Intent(intent_event) => intent_event,
                Decoded::Customer(customer_event) => {
                    let mut change = CustomerChange {
                        id: event.aggregate_id.clone(),
                        project,
                        livemode,
                        ..CustomerChange::default()
                    };
                    match customer_event {
                        CustomerEvent::CustomerCreated {
                            email,
                            name,
                            created,
                            ..
                        } => {
                            change.created = Some(created);
                            change.email = Some(email);
                            change.name = Some(name);
                        }
                        CustomerEvent::CustomerUpdated {
                            changes: fields, ..
                        } => {
                            change.email = fields.email;
                            change.name = fields.name;
                        }
                        CustomerEvent::CustomerDeleted { .. } => change.deleted = true,
                    }
                    changes.customers.push(change);
                    continue;
                }
            };
            let intent = &event.aggregate_id;
            let key = |currency: &str, at: i64| DayKey {
                project: project.clone(),
                livemode,
                currency: currency.to_string(),
                day: day_of(at),
            };
            let currency_of = |currencies: &HashMap<String, String>| {
                currencies.get(intent).cloned().ok_or_else(|| {
                    ProjectionError::bad_event(event, "the intent's creation was never seen")
                })
            };
            match intent_event {
                PaymentIntentEvent::PaymentIntentCreated { amount, .. } => {
                    let currency = amount.currency.as_str().to_string();
                    currencies.insert(intent.clone(), currency.clone());
                    changes.new_intents.push((intent.clone(), currency));
                }
                PaymentIntentEvent::ChargeSucceeded { amount, at, .. } => {
                    changes.add(key(amount.currency.as_str(), at), |totals| {
                        totals.gross_minor += amount.amount_minor;
                        totals.succeeded_count += 1;
                    });
                }
                PaymentIntentEvent::PaymentIntentCaptured {
                    amount_captured,
                    at,
                    ..
                } => {
                    let currency = currency_of(&currencies)?;
                    changes.add(key(&currency, at), |totals| {
                        totals.gross_minor += amount_captured;
                        totals.succeeded_count += 1;
                    });
                }
                PaymentIntentEvent::ChargeFailed { at, .. } => {
                    let currency = currency_of(&currencies)?;
                    changes.add(key(&currency, at), |totals| totals.failed_count += 1);
                }
                PaymentIntentEvent::RefundStarted {
                    refund_id, amount, ..
                } => {
                    refund_amounts.insert(refund_id.clone(), amount);
                    changes.new_refunds.push((refund_id, amount));
                }
                PaymentIntentEvent::RefundSucceeded { refund_id, at } => {
                    let currency = currency_of(&currencies)?;
                    let amount = refund_amounts.remove(&refund_id).ok_or_else(|| {
                        ProjectionError::bad_event(event, "the refund's start was never seen")
                    })?;
                    changes.add(key(&currency, at), |totals| totals.refunded_minor += amount);
                    changes.finished_refunds.push(refund_id);
                }
                _ => {}
            }
        }
        write(connection, changes).await
    }
}

async fn write(connection: &mut PgConnection, changes: Changes) -> Result<(), ProjectionError> {
    if !changes.new_intents.is_empty() {
        let (ids, currencies): (Vec<String>, Vec<String>) = changes.new_intents.into_iter().unzip();
        sqlx::query(
            "INSERT INTO intents (id, currency) SELECT * FROM UNNEST($1::text[], $2::text[]) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&currencies)
        .execute(&mut *connection)
        .await?;
    }
    if !changes.new_refunds.is_empty() {
        let (ids, amounts): (Vec<String>, Vec<i64>) = changes.new_refunds.into_iter().unzip();
        sqlx::query(
            "INSERT INTO refunds (id, amount_minor) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&amounts)
        .execute(&mut *connection)
        .await?;
    }
    if !changes.finished_refunds.is_empty() {
        sqlx::query("DELETE FROM refunds WHERE id = ANY($1)")
            .bind(&changes.finished_refunds)
            .execute(&mut *connection)
            .await?;
    }
    if !changes.totals.is_empty() {
        let mut projects = Vec::new();
        let mut livemodes = Vec::new();
        let mut currencies = Vec::new();
        let mut days = Vec::new();
        let mut gross = Vec::new();
        let mut refunded = Vec::new();
        let mut succeeded = Vec::new();
        let mut failed = Vec::new();
        for (key, totals) in changes.totals {
            if totals.gross_minor < 0 || totals.refunded_minor < 0 {
                return Err(ProjectionError::Invariant {
                    projection: NAME,
                    reason: format!("a negative amount on {} {}", key.project, key.day),
                });
            }
            projects.push(key.project);
            livemodes.push(key.livemode);
            currencies.push(key.currency);
            days.push(key.day);
            gross.push(totals.gross_minor);
            refunded.push(totals.refunded_minor);
            succeeded.push(totals.succeeded_count);
            failed.push(totals.failed_count);
        }
        sqlx::query(
            "INSERT INTO daily_totals AS t (project, livemode, currency, day, gross_minor, \
                 refunded_minor, succeeded_count, failed_count) \
             SELECT * FROM UNNEST($1::text[], $2::boolean[], $3::text[], $4::date[], \
                 $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[]) \
             ON CONFLICT (project, livemode, day, currency) DO UPDATE SET \
                 gross_minor = t.gross_minor + EXCLUDED.gross_minor, \
                 refunded_minor = t.refunded_minor + EXCLUDED.refunded_minor, \
                 succeeded_count = t.succeeded_count + EXCLUDED.succeeded_count, \
                 failed_count = t.failed_count + EXCLUDED.failed_count",
        )
        .bind(&projects)
        .bind(&livemodes)
        .bind(&currencies)
        .bind(&days)
        .bind(&gross)
        .bind(&refunded)
        .bind(&succeeded)
        .bind(&failed)
        .execute(&mut *connection)
        .await?;
    }
    // In log order: an update may follow its customer's creation in the same batch.
    for customer in changes.customers {
        let lower =
            |value: Option<Option<String>>| value.map(|value| value.map(|v| v.to_lowercase()));
        let (email, name) = (lower(customer.email), lower(customer.name));
        match customer.created {
            Some(created) => {
                sqlx::query(
                    "INSERT INTO customers (id, project, livemode, created, email_lower, name_lower) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&customer.id)
                .bind(&customer.project)
                .bind(customer.livemode)
                .bind(created)
                .bind(email.flatten())
                .bind(name.flatten())
                .execute(&mut *connection)
                .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE customers SET \
                         email_lower = CASE WHEN $2 THEN $3 ELSE email_lower END, \
                         name_lower = CASE WHEN $4 THEN $5 ELSE name_lower END, \
                         deleted = deleted OR $6 \
                     WHERE id = $1",
                )
                .bind(&customer.id)
                .bind(email.is_some())
                .bind(email.flatten())
                .bind(name.is_some())
                .bind(name.flatten())
                .bind(customer.deleted)
                .execute(&mut *connection)
                .await?;
            }
        }
    }
    Ok(())
}
