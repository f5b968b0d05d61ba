//! The settlement reconciler: brings each day's expectation onto its `Settlement`, reads the
//! credits that arrived in the Griffin account, and records each one once: matched,
//! shortfall or surplus on the settlement it pays, or unexpected.
//!
//! A pass ([`Reconciler::run_once`]):
//! 1. catches the `settlements` read model up with the log;
//! 2. for every day whose figures (`settlements.expected`) differ from what its settlement
//!    recorded, records them (`SettlementExpected`, then `SettlementExpectationUpdated`);
//! 3. lists the account's transactions with `filter[processed-at][gte]` = the watermark
//!    (the latest `processed-at` of a credit recorded for this account) minus an overlap,
//!    `sort=processed-at`, following `links.next` page by page; the overlap re-reads lines
//!    Griffin booked late, and re-read credits are dropped (known ids are skipped, and the
//!    credit's own stream refuses a second record);
//! 4. routes each incoming payment credit: by reference (`CARDSTREAM <merchant> <yyyymmdd>`
//!    naming a day with expected figures), else by amount and day (the only settlement of
//!    the organisation's mode awaiting exactly that amount, on the day the credit was booked
//!    or up to [`MATCH_WINDOW_DAYS`] before), else unexpected;
//! 5. records it through [`SettlementService::record_credit`].
//!
//! Any number of reconcilers may run at once (every `serve`, `calmony settlements
//! reconcile`): each credit is decided on its own stream in one unit with its settlement, so
//! it is recorded exactly once whoever gets there first. No transaction is held open across
//! a Griffin request.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use commands::settlements::{
    CreditRecorded, CreditRoute, SettlementCommandError, SettlementService,
};
use domain::settlement::{
    normalize_reference, parse_reference, settlement_id, CreditDetails, MatchedBy, Totals,
    MATCH_WINDOW_DAYS,
};
use griffin::{
    BalanceChangeDirection, BankAccount, OrganizationMode, TransactionOriginType, TransactionQuery,
    TransactionSort,
};
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::settlements::Settlements;
use projections::ProjectionRuntime;
use sqlx::PgPool;

use crate::Clock;

#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    /// The account settlements land in (`/v0/bank/accounts/ba.…`, or just its id). Unset:
    /// the organisation's primary account, else its first open one.
    pub account: Option<String>,
    /// `page[size]` of transaction lists (1–200).
    pub page_size: u16,
    /// How far before the watermark each pass reads again.
    pub overlap_seconds: i64,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        Self {
            account: None,
            page_size: 100,
            overlap_seconds: 86_400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Griffin: {0}")]
    Griffin(#[from] griffin::ClientError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("read model: {0}")]
    Projection(#[from] projections::ProjectionError),
    #[error("recording: {0}")]
    Command(#[from] SettlementCommandError),
    #[error("the Griffin organisation has no open bank account")]
    NoAccount,
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    pub expectations_recorded: u64,
    pub transactions_read: u64,
    pub credits_seen: u64,
    pub matched: u64,
    pub shortfall: u64,
    pub surplus: u64,
    pub unexpected: u64,
    pub already_recorded: u64,
}

#[derive(Clone)]
pub struct Reconciler {
    pool: PgPool,
    runtime: ProjectionRuntime,
    service: SettlementService,
    griffin: griffin::Client,
    clock: Arc<dyn Clock>,
    settings: ReconcilerSettings,
}

/// A day's figures, as the read model has them.
#[derive(Debug, Clone, sqlx::FromRow)]
struct ExpectedRow {
    project: String,
    livemode: bool,
    currency: String,
    day: NaiveDate,
    gross_minor: i64,
    refunded_minor: i64,
    fees_minor: i64,
}

impl ExpectedRow {
    fn totals(&self) -> Totals {
        Totals {
            gross_captured: self.gross_minor,
            refunded: self.refunded_minor,
            fees: self.fees_minor,
        }
    }

    fn settlement_id(&self) -> String {
        settlement_id(&self.project, self.livemode, &self.currency, self.day)
    }
}

const EXPECTED_COLUMNS: &str = "e.project, e.livemode, e.currency, e.day, e.gross_minor, \
     e.refunded_minor, e.fees_minor";

impl Reconciler {
    pub fn new(
        pool: PgPool,
        runtime: ProjectionRuntime,
        service: SettlementService,
        griffin: griffin::Client,
        clock: Arc<dyn Clock>,
        settings: ReconcilerSettings,
    ) -> Self {
        Self {
            pool,
            runtime,
            service,
            griffin,
            clock,
            settings,
        }
    }

    async fn catch_up(&self) -> Result<(), ReconcileError> {
        self.runtime
            .catch_up(&Settlements::default(), DEFAULT_BATCH_EVENTS)
            .await?;
        Ok(())
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// One pass. `project` limits step 2 to that project's days; credits are always read
    /// for the whole account (a credit's project is known only once it is read, and the
    /// watermark must not pass credits left unrecorded).
    #[tracing::instrument(skip(self))]
    pub async fn run_once(&self, project: Option<&str>) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        self.catch_up().await?;
        let stale: Vec<ExpectedRow> = sqlx::query_as(&format!(
            "SELECT {EXPECTED_COLUMNS} FROM settlements.expected e \
             LEFT JOIN settlements.settlements s ON s.project = e.project \
                 AND s.livemode = e.livemode AND s.currency = e.currency AND s.day = e.day \
             WHERE ($1::text IS NULL OR e.project = $1) \
               AND (s.id IS NULL OR s.gross_minor <> e.gross_minor \
                    OR s.refunded_minor <> e.refunded_minor OR s.fees_minor <> e.fees_minor) \
             ORDER BY e.day, e.project"
        ))
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        for row in &stale {
            if self.record_expectation(row).await? {
                report.expectations_recorded += 1;
            }
        }
        if report.expectations_recorded > 0 {
            self.catch_up().await?;
        }

        let organization = self.griffin.organization().await?;
        let livemode = organization.organization_mode == OrganizationMode::LiveMode;
        let account = self.account(&organization).await?;
        let watermark: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(processed_at) FROM settlements.credits WHERE account = $1",
        )
        .bind(&account.account_url)
        .fetch_one(&self.pool)
        .await?;
        let from =
            watermark.map(|at| at - chrono::Duration::seconds(self.settings.overlap_seconds));
        let known: HashSet<String> = sqlx::query_scalar(
            "SELECT griffin_transaction FROM settlements.credits \
             WHERE account = $1 AND ($2::timestamptz IS NULL OR processed_at >= $2)",
        )
        .bind(&account.account_url)
        .bind(from)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        let query = TransactionQuery {
            page_size: Some(self.settings.page_size.clamp(1, griffin::MAX_PAGE_SIZE)),
            sort: Some(TransactionSort::ProcessedAtAscending),
            processed_at_or_after: from,
            ..TransactionQuery::default()
        };
        // Settlements given a credit by amount in this pass (the read model has not seen
        // them yet).
        let mut claimed: HashSet<String> = HashSet::new();
        let mut page = Some(self.griffin.transactions_page(&account, &query).await?);
        while let Some(current) = page {
            for transaction in &current.items {
                report.transactions_read += 1;
                if transaction.balance_change_direction != BalanceChangeDirection::Credit
                    || transaction.transaction_origin_type != TransactionOriginType::Payment
                {
                    continue;
                }
                let id = transaction_id(&transaction.account_transaction_url);
                report.credits_seen += 1;
                if known.contains(&id) {
                    report.already_recorded += 1;
                    continue;
                }
                let reference = match (&transaction.reference, &transaction.payment_url) {
                    (Some(reference), _) => Some(reference.clone()),
                    (None, Some(payment_url)) => {
                        self.griffin.payment(payment_url).await?.payment_reference
                    }
                    (None, None) => None,
                };
                let credit = CreditDetails {
                    griffin_transaction: id,
                    account: account.account_url.clone(),
                    amount: transaction.balance_change.amount_minor,
                    currency: "gbp".to_string(),
                    reference,
                    counterparty: transaction.description.clone(),
                    processed_at: transaction.processed_at.timestamp(),
                };
                let route = self
                    .route(&credit, transaction.processed_at, livemode, &claimed)
                    .await?;
                if let CreditRoute::Settlement { settlement_id, .. } = &route {
                    claimed.insert(settlement_id.clone());
                }
                match self
                    .service
                    .record_credit(&credit, &route, self.now())
                    .await?
                {
                    CreditRecorded::Settled { outcome, .. } => match outcome {
                        "matched" => report.matched += 1,
                        "shortfall" => report.shortfall += 1,
                        _ => report.surplus += 1,
                    },
                    CreditRecorded::Unexpected => report.unexpected += 1,
                    CreditRecorded::AlreadyRecorded => report.already_recorded += 1,
                }
            }
            page = self.griffin.next_page(&current).await?;
        }
        self.catch_up().await?;
        Ok(report)
    }

    async fn record_expectation(&self, row: &ExpectedRow) -> Result<bool, ReconcileError> {
        Ok(self
            .service
            .update_expectation(
                &row.project,
                row.livemode,
                &row.currency,
                row.day,
                row.totals(),
                self.now(),
            )
            .await?)
    }

    async fn account(
        &self,
        organization: &griffin::Organization,
    ) -> Result<BankAccount, ReconcileError> {
        if let Some(account) = &self.settings.account {
            let link = if account.starts_with('/') || account.contains("://") {
                account.clone()
            } else {
                format!("/v0/bank/accounts/{account}")
            };
            return Ok(self.griffin.bank_account(&link).await?);
        }
        let accounts = self.griffin.bank_accounts(organization).await?;
        let open = |account: &&BankAccount| account.account_status == griffin::AccountStatus::Open;
        accounts
            .iter()
            .filter(open)
            .find(|account| account.primary_account)
            .or_else(|| accounts.iter().find(open))
            .cloned()
            .ok_or(ReconcileError::NoAccount)
    }

    /// Where a credit goes: by reference, else by amount and day, else unexpected. A route to
    /// a settlement first makes sure its expectation is recorded.
    async fn route(
        &self,
        credit: &CreditDetails,
        processed_at: DateTime<Utc>,
        livemode: bool,
        claimed: &HashSet<String>,
    ) -> Result<CreditRoute, ReconcileError> {
        let parsed = credit.reference.as_deref().and_then(parse_reference);
        if let Some(reference) = credit.reference.as_deref().filter(|_| parsed.is_some()) {
            let row: Option<ExpectedRow> = sqlx::query_as(&format!(
                "SELECT {EXPECTED_COLUMNS} FROM settlements.expected e \
                 WHERE e.reference = $1 AND e.currency = 'gbp'"
            ))
            .bind(normalize_reference(reference))
            .fetch_optional(&self.pool)
            .await?;
            return Ok(match row {
                Some(row) => {
                    self.record_expectation(&row).await?;
                    CreditRoute::Settlement {
                        settlement_id: row.settlement_id(),
                        project: row.project,
                        livemode: row.livemode,
                        matched_by: MatchedBy::Reference,
                    }
                }
                None => CreditRoute::Unexpected {
                    livemode,
                    reason: "the reference names no day with expected settlement".to_string(),
                },
            });
        }
        let day = processed_at.date_naive();
        let candidates: Vec<ExpectedRow> = sqlx::query_as(&format!(
            "SELECT {EXPECTED_COLUMNS} FROM settlements.expected e \
             LEFT JOIN settlements.settlements s ON s.project = e.project \
                 AND s.livemode = e.livemode AND s.currency = e.currency AND s.day = e.day \
             WHERE e.livemode = $1 AND e.currency = 'gbp' \
               AND e.gross_minor - e.refunded_minor - e.fees_minor = $2 \
               AND e.day BETWEEN $3 AND $4 AND COALESCE(s.credits, 0) = 0 \
             ORDER BY e.day, e.project LIMIT 20"
        ))
        .bind(livemode)
        .bind(credit.amount)
        .bind(day - chrono::Duration::days(MATCH_WINDOW_DAYS))
        .bind(day)
        .fetch_all(&self.pool)
        .await?;
        let candidates: Vec<ExpectedRow> = candidates
            .into_iter()
            .filter(|row| !claimed.contains(&row.settlement_id()))
            .collect();
        Ok(match candidates.as_slice() {
            [row] => {
                self.record_expectation(row).await?;
                CreditRoute::Settlement {
                    settlement_id: row.settlement_id(),
                    project: row.project.clone(),
                    livemode: row.livemode,
                    matched_by: MatchedBy::AmountAndDay,
                }
            }
            [] => CreditRoute::Unexpected {
                livemode,
                reason: "no reference, and no settlement awaiting this amount".to_string(),
            },
            several => CreditRoute::Unexpected {
                livemode,
                reason: format!(
                    "no reference, and {} settlements await this amount",
                    several.len()
                ),
            },
        })
    }
}

/// The id at the end of a transaction's URL (`/v0/bank/transactions/tr.…`).
fn transaction_id(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(url)
        .to_string()
}

/// Runs a pass every `interval`, and at once when `wake` is notified (a Griffin webhook
/// announced a transaction). Failures are logged and retried at the next tick.
pub async fn run(reconciler: Reconciler, interval: Duration, wake: Arc<tokio::sync::Notify>) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        match reconciler.run_once(None).await {
            Ok(report) if report != ReconcileReport::default() => {
                tracing::info!(?report, "settlement reconciliation pass");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "settlement reconciliation failed; retrying at the next tick");
            }
        }
    }
}
