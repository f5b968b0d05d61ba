//! Settlements: what each project should receive from the acquirer per day, and what the
//! reconciler found in the Griffin account for it.
//!
//! - `expected`: per project, mode, currency and UTC day of the event's *recorded* time, the
//!   money captured (`ChargeSucceeded`, and `PaymentIntentCaptured` for manual capture), the
//!   money refunded (`RefundSucceeded`) and the acquirer's fees (each capture's fee under the
//!   project's fee rule in force when it was recorded: `BillingConfigured`'s
//!   `acquirer_fee`, none by default), with the day's settlement reference ([`domain::settlement::settlement_reference`]). This is the figure
//!   the reconciler records on the `Settlement` aggregate.
//! - `settlements`: the reconciliation state, from the `Settlement` events: expectation,
//!   received, status (`awaiting`, `matched`, `shortfall`, `surplus`), the latest Griffin
//!   transaction recorded on it and the difference (received − expected).
//! - `credits`: every Griffin credit recorded (`BankCredit` events), allocated or unexpected,
//!   with its `processed-at`: the reconciler's watermark is the latest one per account.
//!
//! Later events of an intent do not repeat what they need (a capture has no currency, a
//! refund's success no amount), so `intents` and `refunds` remember it, as in `dashboard`.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use domain::payment_intent::{PaymentIntent, PaymentIntentEvent};
use domain::project::{Project, ProjectEvent};
use domain::settlement::{
    settlement_reference, BankCredit, BankCreditEvent, CreditDetails, FeeRule, MatchedBy,
    Settlement, SettlementEvent,
};
use event_store::{EventMetadata, Mode, RecordedEvent};
use sqlx::PgConnection;

use crate::runtime::{decode, Projection, ProjectionError};

pub const NAME: &str = "settlements";

/// The PaymentIntent events that move a day's figures (or that later ones need).
const INTENT_EVENTS: [&str; 5] = [
    "PaymentIntentCreated",
    "ChargeSucceeded",
    "PaymentIntentCaptured",
    "RefundStarted",
    "RefundSucceeded",
];

/// The SQL that turns a settlement row's figures into its status.
const STATUS_SQL: &str = "UPDATE settlements SET status = CASE \
         WHEN credits = 0 THEN 'awaiting' \
         WHEN received_minor = expected_net_minor THEN 'matched' \
         WHEN received_minor < expected_net_minor THEN 'shortfall' \
         ELSE 'surplus' END, \
     difference_minor = CASE WHEN credits = 0 THEN 0 ELSE received_minor - expected_net_minor END \
     WHERE id = $1";

pub struct Settlements {
    upcasters: Vec<Box<dyn EventUpcaster>>,
}

impl Default for Settlements {
    fn default() -> Self {
        Self {
            upcasters: domain::upcasters::all(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DayKey {
    project: String,
    livemode: bool,
    currency: String,
    day: NaiveDate,
}

#[derive(Debug, Default, Clone, Copy)]
struct DayFigures {
    gross_minor: i64,
    refunded_minor: i64,
    fees_minor: i64,
}

fn matched_by_word(matched_by: MatchedBy) -> &'static str {
    match matched_by {
        MatchedBy::Reference => "reference",
        MatchedBy::AmountAndDay => "amount_and_day",
    }
}

fn processed_at(credit: &CreditDetails) -> DateTime<Utc> {
    DateTime::from_timestamp(credit.processed_at, 0).unwrap_or_default()
}

#[async_trait::async_trait]
impl Projection for Settlements {
    /// Background: the reconciler catches it up before each pass.
    fn batching_delay(&self) -> std::time::Duration {
        crate::runtime::BACKGROUND_BATCHING_DELAY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE expected (
            project        text    NOT NULL,
            livemode       boolean NOT NULL,
            currency       text    NOT NULL,
            day            date    NOT NULL,
            reference      text    NOT NULL,
            gross_minor    bigint  NOT NULL,
            refunded_minor bigint  NOT NULL,
            fees_minor     bigint  NOT NULL,
            PRIMARY KEY (project, livemode, currency, day)
        );
        CREATE TABLE settlements (
            id                  text    PRIMARY KEY,
            project             text    NOT NULL,
            livemode            boolean NOT NULL,
            currency            text    NOT NULL,
            day                 date    NOT NULL,
            reference           text    NOT NULL,
            gross_minor         bigint  NOT NULL,
            refunded_minor      bigint  NOT NULL,
            fees_minor          bigint  NOT NULL,
            expected_net_minor  bigint  NOT NULL,
            received_minor      bigint  NOT NULL DEFAULT 0,
            credits             integer NOT NULL DEFAULT 0,
            status              text    NOT NULL DEFAULT 'awaiting',
            matched_transaction text,
            difference_minor    bigint  NOT NULL DEFAULT 0,
            updated_at          bigint  NOT NULL
        );
        CREATE TABLE credits (
            griffin_transaction text        PRIMARY KEY,
            account             text        NOT NULL,
            settlement_id       text,
            project             text        NOT NULL,
            livemode            boolean     NOT NULL,
            amount_minor        bigint      NOT NULL,
            currency            text        NOT NULL,
            reference           text,
            counterparty        text,
            processed_at        timestamptz NOT NULL,
            outcome             text        NOT NULL,
            matched_by          text,
            reason              text,
            recorded_at         bigint      NOT NULL
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
        -- each project's fee rule in force (projects without one have no row)
        CREATE TABLE fee_rules (
            project     text    PRIMARY KEY,
            percent     numeric NOT NULL,
            fixed_minor bigint  NOT NULL
        );"
    }

    fn index_sql(&self) -> &'static str {
        "CREATE INDEX expected_by_reference ON expected (reference, currency);
CREATE INDEX settlements_by_day ON settlements (project, livemode, day);
CREATE INDEX settlements_awaiting ON settlements (livemode, currency, expected_net_minor, day) WHERE credits = 0;
CREATE INDEX credits_by_processed_at ON credits (account, processed_at);"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut figures: HashMap<DayKey, DayFigures> = HashMap::new();
        let mut new_intents: Vec<(String, String)> = Vec::new();
        let mut new_refunds: Vec<(String, i64)> = Vec::new();
        let mut finished_refunds: Vec<String> = Vec::new();
        // Earlier batches' intents and refunds, looked up once for the batch.
        let intent_ids: Vec<&str> = events
            .iter()
            .filter(|event| event.aggregate_type == PaymentIntent::TYPE)
            .map(|event| event.aggregate_id.as_str())
            .collect();
        let mut currencies: HashMap<String, String> = if intent_ids.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as("SELECT id, currency FROM intents WHERE id = ANY($1)")
                .bind(&intent_ids)
                .fetch_all(&mut *connection)
                .await?
                .into_iter()
                .collect()
        };
        let mut refund_amounts: HashMap<String, i64> = HashMap::new();
        let mut refunds_loaded = false;
        // Fee rules (one row per project that has one), read once for a batch that needs them.
        let needs_rules = events.iter().any(|event| {
            (event.aggregate_type == PaymentIntent::TYPE
                && matches!(
                    event.event_type.as_str(),
                    "ChargeSucceeded" | "PaymentIntentCaptured"
                ))
                || (event.aggregate_type == Project::TYPE
                    && event.event_type == "BillingConfigured")
        });
        let mut fee_rules = if needs_rules {
            load_fee_rules(connection).await?
        } else {
            HashMap::new()
        };
        let mut changed_rules: Vec<String> = Vec::new();

        for event in events {
            if event.aggregate_type == Project::TYPE && event.event_type == "BillingConfigured" {
                if let ProjectEvent::BillingConfigured { settings, .. } =
                    decode::<ProjectEvent>(event, &self.upcasters)?
                {
                    fee_rules.insert(event.aggregate_id.clone(), settings.acquirer_fee);
                    changed_rules.push(event.aggregate_id.clone());
                }
                continue;
            }
            if event.aggregate_type == PaymentIntent::TYPE {
                if !INTENT_EVENTS.contains(&event.event_type.as_str()) {
                    continue;
                }
                if !refunds_loaded && event.event_type == "RefundSucceeded" {
                    refunds_loaded = true;
                    refund_amounts.extend(
                        sqlx::query_as::<_, (String, i64)>("SELECT id, amount_minor FROM refunds")
                            .fetch_all(&mut *connection)
                            .await?,
                    );
                }
                let metadata: EventMetadata = event
                    .metadata()
                    .map_err(|error| ProjectionError::bad_event(event, error))?;
                let intent_event: PaymentIntentEvent = decode(event, &self.upcasters)?;
                let intent = &event.aggregate_id;
                let key = |currency: &str| DayKey {
                    project: metadata.project.clone(),
                    livemode: metadata.mode == Some(Mode::Live),
                    currency: currency.to_string(),
                    day: event.recorded_at.date_naive(),
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
                        new_intents.push((intent.clone(), currency));
                    }
                    PaymentIntentEvent::ChargeSucceeded { amount, .. } => {
                        let fee = fee_of(&fee_rules, &metadata.project, amount.amount_minor);
                        let day = figures.entry(key(amount.currency.as_str())).or_default();
                        day.gross_minor += amount.amount_minor;
                        day.fees_minor += fee;
                    }
                    PaymentIntentEvent::PaymentIntentCaptured {
                        amount_captured, ..
                    } => {
                        let currency = currency_of(&currencies)?;
                        let fee = fee_of(&fee_rules, &metadata.project, amount_captured);
                        let day = figures.entry(key(&currency)).or_default();
                        day.gross_minor += amount_captured;
                        day.fees_minor += fee;
                    }
                    PaymentIntentEvent::RefundStarted {
                        refund_id, amount, ..
                    } => {
                        refund_amounts.insert(refund_id.clone(), amount);
                        new_refunds.push((refund_id, amount));
                    }
                    PaymentIntentEvent::RefundSucceeded { refund_id, .. } => {
                        let currency = currency_of(&currencies)?;
                        let amount = refund_amounts.get(&refund_id).copied().ok_or_else(|| {
                            ProjectionError::bad_event(event, "the refund's start was never seen")
                        })?;
                        figures.entry(key(&currency)).or_default().refunded_minor += amount;
                        finished_refunds.push(refund_id);
                    }
                    _ => {}
                }
            } else if event.aggregate_type == Settlement::TYPE {
                let settlement_event: SettlementEvent = decode(event, &self.upcasters)?;
                apply_settlement(connection, &event.aggregate_id, settlement_event).await?;
            } else if event.aggregate_type == BankCredit::TYPE {
                let metadata: EventMetadata = event
                    .metadata()
                    .map_err(|error| ProjectionError::bad_event(event, error))?;
                let credit_event: BankCreditEvent = decode(event, &self.upcasters)?;
                apply_credit(connection, &metadata, credit_event).await?;
            }
        }

        write_fee_rules(connection, &fee_rules, &changed_rules).await?;
        if !new_intents.is_empty() {
            let (ids, currencies): (Vec<String>, Vec<String>) = new_intents.into_iter().unzip();
            sqlx::query(
                "INSERT INTO intents (id, currency) SELECT * FROM UNNEST($1::text[], $2::text[]) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&currencies)
            .execute(&mut *connection)
            .await?;
        }
        if !new_refunds.is_empty() {
            let (ids, amounts): (Vec<String>, Vec<i64>) = new_refunds.into_iter().unzip();
            sqlx::query(
                "INSERT INTO refunds (id, amount_minor) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&amounts)
            .execute(&mut *connection)
            .await?;
        }
        if !finished_refunds.is_empty() {
            sqlx::query("DELETE FROM refunds WHERE id = ANY($1)")
                .bind(&finished_refunds)
                .execute(&mut *connection)
                .await?;
        }
        if !figures.is_empty() {
            let mut projects = Vec::new();
            let mut livemodes = Vec::new();
            let mut currencies = Vec::new();
            let mut days = Vec::new();
            let mut references = Vec::new();
            let mut gross = Vec::new();
            let mut refunded = Vec::new();
            let mut fees = Vec::new();
            for (key, day_figures) in figures {
                if day_figures.gross_minor < 0
                    || day_figures.refunded_minor < 0
                    || day_figures.fees_minor < 0
                {
                    return Err(ProjectionError::Invariant {
                        projection: NAME,
                        reason: format!("a negative amount on {} {}", key.project, key.day),
                    });
                }
                references.push(settlement_reference(&key.project, key.livemode, key.day));
                projects.push(key.project);
                livemodes.push(key.livemode);
                currencies.push(key.currency);
                days.push(key.day);
                gross.push(day_figures.gross_minor);
                refunded.push(day_figures.refunded_minor);
                fees.push(day_figures.fees_minor);
            }
            sqlx::query(
                "INSERT INTO expected AS e (project, livemode, currency, day, reference, \
                     gross_minor, refunded_minor, fees_minor) \
                 SELECT * FROM UNNEST($1::text[], $2::boolean[], $3::text[], $4::date[], \
                     $5::text[], $6::bigint[], $7::bigint[], $8::bigint[]) \
                 ON CONFLICT (project, livemode, currency, day) DO UPDATE SET \
                     gross_minor = e.gross_minor + EXCLUDED.gross_minor, \
                     refunded_minor = e.refunded_minor + EXCLUDED.refunded_minor, \
                     fees_minor = e.fees_minor + EXCLUDED.fees_minor",
            )
            .bind(&projects)
            .bind(&livemodes)
            .bind(&currencies)
            .bind(&days)
            .bind(&references)
            .bind(&gross)
            .bind(&refunded)
            .bind(&fees)
            .execute(&mut *connection)
            .await?;
        }
        Ok(())
    }
}

/// The fee of one capture under its project's rule (0 without one).
fn fee_of(rules: &HashMap<String, Option<FeeRule>>, project: &str, amount_minor: i64) -> i64 {
    rules
        .get(project)
        .copied()
        .flatten()
        .map_or(0, |rule| rule.fee_for(amount_minor))
}

async fn load_fee_rules(
    connection: &mut PgConnection,
) -> Result<HashMap<String, Option<FeeRule>>, ProjectionError> {
    let rows: Vec<(String, rust_decimal::Decimal, i64)> =
        sqlx::query_as("SELECT project, percent, fixed_minor FROM fee_rules")
            .fetch_all(&mut *connection)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(project, percent, fixed_minor)| {
            (
                project,
                Some(FeeRule {
                    percent,
                    fixed_minor,
                }),
            )
        })
        .collect())
}

/// The rules of the projects configured in this batch, as they stand after it.
async fn write_fee_rules(
    connection: &mut PgConnection,
    rules: &HashMap<String, Option<FeeRule>>,
    changed: &[String],
) -> Result<(), ProjectionError> {
    for project in changed {
        match rules.get(project).copied().flatten() {
            Some(rule) => {
                sqlx::query(
                    "INSERT INTO fee_rules (project, percent, fixed_minor) VALUES ($1, $2, $3) \
                     ON CONFLICT (project) DO UPDATE SET percent = EXCLUDED.percent, \
                         fixed_minor = EXCLUDED.fixed_minor",
                )
                .bind(project)
                .bind(rule.percent)
                .bind(rule.fixed_minor)
                .execute(&mut *connection)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM fee_rules WHERE project = $1")
                    .bind(project)
                    .execute(&mut *connection)
                    .await?;
            }
        }
    }
    Ok(())
}

async fn apply_settlement(
    connection: &mut PgConnection,
    id: &str,
    event: SettlementEvent,
) -> Result<(), ProjectionError> {
    match event {
        SettlementEvent::SettlementExpected {
            settlement_id,
            project,
            livemode,
            day,
            currency,
            reference,
            gross_captured,
            refunded,
            fees,
            expected_net,
            at,
        } => {
            sqlx::query(
                "INSERT INTO settlements (id, project, livemode, currency, day, reference, \
                     gross_minor, refunded_minor, fees_minor, expected_net_minor, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&settlement_id)
            .bind(&project)
            .bind(livemode)
            .bind(&currency)
            .bind(day)
            .bind(&reference)
            .bind(gross_captured)
            .bind(refunded)
            .bind(fees)
            .bind(expected_net)
            .bind(at)
            .execute(&mut *connection)
            .await?;
        }
        SettlementEvent::SettlementExpectationUpdated {
            gross_captured,
            refunded,
            fees,
            expected_net,
            at,
        } => {
            sqlx::query(
                "UPDATE settlements SET gross_minor = $2, refunded_minor = $3, fees_minor = $4, \
                     expected_net_minor = $5, updated_at = $6 WHERE id = $1",
            )
            .bind(id)
            .bind(gross_captured)
            .bind(refunded)
            .bind(fees)
            .bind(expected_net)
            .bind(at)
            .execute(&mut *connection)
            .await?;
        }
        SettlementEvent::SettlementMatched {
            griffin_transaction,
            received,
            at,
            ..
        }
        | SettlementEvent::SettlementShortfall {
            griffin_transaction,
            received,
            at,
            ..
        }
        | SettlementEvent::SettlementSurplus {
            griffin_transaction,
            received,
            at,
            ..
        } => {
            sqlx::query(
                "UPDATE settlements SET received_minor = $2, credits = credits + 1, \
                     matched_transaction = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(received)
            .bind(&griffin_transaction)
            .bind(at)
            .execute(&mut *connection)
            .await?;
        }
    }
    sqlx::query(STATUS_SQL)
        .bind(id)
        .execute(&mut *connection)
        .await?;
    // A credit's outcome is the settlement's status right after it was recorded.
    sqlx::query(
        "UPDATE credits c SET outcome = s.status FROM settlements s \
         WHERE s.id = $1 AND c.griffin_transaction = s.matched_transaction \
           AND c.outcome = 'allocated'",
    )
    .bind(id)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn apply_credit(
    connection: &mut PgConnection,
    metadata: &EventMetadata,
    event: BankCreditEvent,
) -> Result<(), ProjectionError> {
    let (credit, settlement_id, outcome, matched_by, reason, at) = match event {
        BankCreditEvent::BankCreditAllocated {
            credit,
            settlement_id,
            matched_by,
            at,
        } => (
            credit,
            Some(settlement_id),
            // Replaced by matched/shortfall/surplus when the settlement's event follows.
            "allocated",
            Some(matched_by_word(matched_by)),
            None,
            at,
        ),
        BankCreditEvent::UnexpectedCredit { credit, reason, at } => {
            (credit, None, "unexpected", None, Some(reason), at)
        }
    };
    sqlx::query(
        "INSERT INTO credits (griffin_transaction, account, settlement_id, project, livemode, \
             amount_minor, currency, reference, counterparty, processed_at, outcome, matched_by, \
             reason, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (griffin_transaction) DO NOTHING",
    )
    .bind(&credit.griffin_transaction)
    .bind(&credit.account)
    .bind(&settlement_id)
    .bind(&metadata.project)
    .bind(metadata.mode == Some(Mode::Live))
    .bind(credit.amount)
    .bind(&credit.currency)
    .bind(&credit.reference)
    .bind(&credit.counterparty)
    .bind(processed_at(&credit))
    .bind(outcome)
    .bind(matched_by)
    .bind(&reason)
    .bind(at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Bound on the rows [`list`] answers.
pub const MAX_LIST_ROWS: i64 = 10_000;

/// A settlement (or an unexpected credit) as `calmony settlements list` and the dashboard
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SettlementRow {
    /// `stl_…`, or the Griffin transaction id of an unexpected credit.
    pub id: String,
    pub project: String,
    pub livemode: bool,
    pub day: Option<NaiveDate>,
    pub currency: String,
    /// `None` for an unexpected credit.
    pub expected_net_minor: Option<i64>,
    pub received_minor: i64,
    /// Received − expected once something was received.
    pub difference_minor: i64,
    /// `awaiting`, `matched`, `shortfall`, `surplus`, or `unexpected`.
    pub status: String,
    /// The latest Griffin transaction recorded on it.
    pub transaction: Option<String>,
}

/// Every day with expected figures (with its settlement's state; `awaiting` until a
/// reconciliation pass records it) and every unexpected credit, by day; `project` keeps one
/// project's (unexpected credits belong to none).
pub async fn list(
    pool: &sqlx::PgPool,
    project: Option<&str>,
) -> Result<Vec<SettlementRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project, livemode, day, currency, expected_net_minor, received_minor, \
             difference_minor, status, transaction FROM ( \
           SELECT COALESCE(s.id, 'stl_' || e.project || '_' || \
                      CASE WHEN e.livemode THEN 'live' ELSE 'test' END || '_' || e.currency \
                      || '_' || to_char(e.day, 'YYYYMMDD')) AS id, \
                  e.project, e.livemode, e.day, e.currency, \
                  COALESCE(s.expected_net_minor, \
                      e.gross_minor - e.refunded_minor - e.fees_minor) AS expected_net_minor, \
                  COALESCE(s.received_minor, 0) AS received_minor, \
                  COALESCE(s.difference_minor, 0) AS difference_minor, \
                  COALESCE(s.status, 'awaiting') AS status, \
                  s.matched_transaction AS transaction, 0 AS kind \
             FROM settlements.expected e \
             LEFT JOIN settlements.settlements s ON s.project = e.project \
                  AND s.livemode = e.livemode AND s.currency = e.currency AND s.day = e.day \
            WHERE $1::text IS NULL OR e.project = $1 \
           UNION ALL \
           SELECT griffin_transaction, project, livemode, \
                  (processed_at AT TIME ZONE 'UTC')::date, currency, NULL, amount_minor, \
                  amount_minor, 'unexpected', griffin_transaction, 1 \
             FROM settlements.credits \
            WHERE outcome = 'unexpected' AND ($1::text IS NULL OR project = $1) \
         ) rows ORDER BY day, kind, id LIMIT $2",
    )
    .bind(project)
    .bind(MAX_LIST_ROWS)
    .fetch_all(pool)
    .await
}
