//! The revenue report, computed by replaying the log (not from any projection's tables), so
//! finance can check the read models against the events themselves.
//!
//! **Definition.** Revenue, per currency = the net amounts (`subtotal_excluding_tax`: the
//! lines without any tax) of invoices *paid* in the period — subscription, manual and
//! one-off payments' receipt invoices alike — minus refunds that *succeeded* in the period,
//! net of the VAT they give back (the paid invoice's tax in proportion,
//! [`domain::tax::refund_tax_share`], exactly as the journal books it; a refund of a payment
//! without an invoice counts whole). The period is by the events' own times (`at`: a test clock's time
//! for its customers), in UTC days, both ends included. Unpaid, voided and uncollectible
//! invoices count nothing; a payment without a customer gets no invoice, so it counts only
//! if refunded (as a negative). Tax is never revenue.
//!
//! Grouping: by the day or month of the payment or refund, by product (each invoice line's
//! own net amount under its product; a receipt's line is `(one-off payment)`; a refund goes
//! under the product of the invoice its payment paid when there is exactly one, else
//! `(mixed)`, or `(no invoice)`), or by customer.
//!
//! [`RevenueFold`] is the pure fold (one event at a time, in log order); [`revenue_report`]
//! drives it over the log with a read-ahead reader.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use domain::invoice::{BillingReason, Invoice, InvoiceEvent, InvoiceLine};
use domain::payment_intent::{PaymentIntent, PaymentIntentEvent};
use event_store::{EventMetadata, LogCursor, Mode, RecordedEvent};
use sqlx::PgPool;

use crate::runtime::{decode, ProjectionError};

/// Events per read of the log.
pub const REPORT_BATCH_EVENTS: i64 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Month,
    Product,
    Customer,
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "day" => Ok(GroupBy::Day),
            "month" => Ok(GroupBy::Month),
            "product" => Ok(GroupBy::Product),
            "customer" => Ok(GroupBy::Customer),
            other => Err(format!(
                "group by day, month, product or customer, not {other:?}"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RevenueQuery {
    /// First UTC day included.
    pub from: NaiveDate,
    /// Last UTC day included.
    pub to: NaiveDate,
    /// One project, or all.
    pub project: Option<String>,
    pub livemode: bool,
    pub group_by: GroupBy,
}

/// One group's figures in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevenueRow {
    pub group: String,
    pub currency: String,
    pub invoiced_net_minor: i64,
    pub refunded_minor: i64,
}

impl RevenueRow {
    pub fn revenue_minor(&self) -> i64 {
        self.invoiced_net_minor - self.refunded_minor
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevenueReport {
    /// By group, then currency.
    pub rows: Vec<RevenueRow>,
    /// Per currency (the `group` is `total`).
    pub totals: Vec<RevenueRow>,
    pub events_read: u64,
}

#[derive(Debug, Default)]
struct IntentMemory {
    currency: String,
    customer: Option<String>,
    /// The invoice this payment paid.
    invoice: Option<String>,
    /// That invoice's total and tax, and what was refunded of this payment so far.
    invoice_total_minor: i64,
    invoice_tax_minor: i64,
    refunded_minor: i64,
}

#[derive(Debug, Default)]
struct InvoiceMemory {
    customer: String,
    currency: String,
    receipt: bool,
    /// Net amount per line's product.
    lines: Vec<(String, i64)>,
    net_minor: i64,
    total_minor: i64,
    tax_minor: i64,
}

const ONE_OFF: &str = "(one-off payment)";

fn line_net(line: &InvoiceLine) -> i64 {
    line.amount
        - line
            .taxes
            .iter()
            .filter(|tax| tax.inclusive)
            .map(|tax| tax.amount)
            .sum::<i64>()
}

/// The report's fold: feed it every event in log order, then [`RevenueFold::finish`].
pub struct RevenueFold {
    query: RevenueQuery,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    intents: HashMap<String, IntentMemory>,
    refunds: HashMap<String, i64>,
    invoices: HashMap<String, InvoiceMemory>,
    /// Product key of paid invoices (for refunds by product).
    paid_products: HashMap<String, String>,
    rows: BTreeMap<(String, String), (i64, i64)>,
    events_read: u64,
}

impl RevenueFold {
    pub fn new(query: RevenueQuery) -> Self {
        Self {
            query,
            upcasters: domain::upcasters::all(),
            intents: HashMap::new(),
            refunds: HashMap::new(),
            invoices: HashMap::new(),
            paid_products: HashMap::new(),
            rows: BTreeMap::new(),
            events_read: 0,
        }
    }

    fn in_period(&self, at: i64) -> bool {
        let day = crate::dashboard::day_of(at);
        day >= self.query.from && day <= self.query.to
    }

    fn group(&self, at: i64, product: &str, customer: &str) -> String {
        match self.query.group_by {
            GroupBy::Day => crate::dashboard::day_of(at).to_string(),
            GroupBy::Month => crate::dashboard::day_of(at).format("%Y-%m").to_string(),
            GroupBy::Product => product.to_string(),
            GroupBy::Customer => customer.to_string(),
        }
    }

    fn add(&mut self, group: String, currency: &str, invoiced: i64, refunded: i64) {
        let row = self.rows.entry((group, currency.to_string())).or_default();
        row.0 += invoiced;
        row.1 += refunded;
    }

    /// Folds one event (any event: the irrelevant are skipped without parsing).
    pub fn add_event(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.events_read += 1;
        let intent = event.aggregate_type == PaymentIntent::TYPE;
        let invoice = event.aggregate_type == Invoice::TYPE;
        let relevant = match event.event_type.as_str() {
            "PaymentIntentCreated" | "RefundStarted" | "RefundSucceeded" | "RefundFailed" => intent,
            "InvoiceCreated" | "InvoiceLineAdded" | "InvoiceFinalized" | "InvoicePaid"
            | "InvoiceVoided" | "InvoiceDeleted" => invoice,
            _ => false,
        };
        if !relevant {
            return Ok(());
        }
        let metadata: EventMetadata = event
            .metadata()
            .map_err(|error| ProjectionError::bad_event(event, error))?;
        let in_scope = (metadata.mode == Some(Mode::Live)) == self.query.livemode
            && self
                .query
                .project
                .as_deref()
                .is_none_or(|project| project == metadata.project);
        if !in_scope {
            return Ok(());
        }
        let id = &event.aggregate_id;
        if intent {
            match decode::<PaymentIntentEvent>(event, &self.upcasters)? {
                PaymentIntentEvent::PaymentIntentCreated {
                    amount,
                    customer,
                    invoice,
                    ..
                } => {
                    self.intents.insert(
                        id.clone(),
                        IntentMemory {
                            currency: amount.currency.as_str().to_string(),
                            customer,
                            invoice,
                            ..IntentMemory::default()
                        },
                    );
                }
                PaymentIntentEvent::RefundStarted {
                    refund_id, amount, ..
                } => {
                    self.refunds.insert(refund_id, amount);
                }
                PaymentIntentEvent::RefundFailed { refund_id, .. } => {
                    self.refunds.remove(&refund_id);
                }
                PaymentIntentEvent::RefundSucceeded { refund_id, at } => {
                    let amount = self.refunds.remove(&refund_id).ok_or_else(|| {
                        ProjectionError::bad_event(event, "the refund's start was never seen")
                    })?;
                    let memory = self.intents.get_mut(id).ok_or_else(|| {
                        ProjectionError::bad_event(event, "the intent's creation was never seen")
                    })?;
                    let tax = domain::tax::refund_tax_share(
                        memory.invoice_total_minor,
                        memory.invoice_tax_minor,
                        memory.refunded_minor,
                        amount,
                    )
                    .map_err(|error| ProjectionError::bad_event(event, error))?;
                    memory.refunded_minor += amount;
                    if !self.in_period(at) {
                        return Ok(());
                    }
                    let Some(memory) = self.intents.get(id) else {
                        return Ok(());
                    };
                    let product = memory
                        .invoice
                        .as_ref()
                        .and_then(|invoice| self.paid_products.get(invoice))
                        .map_or("(no invoice)", String::as_str);
                    let customer = memory.customer.as_deref().unwrap_or("(guest)");
                    let group = self.group(at, product, customer);
                    let currency = memory.currency.clone();
                    self.add(group, &currency, 0, amount - tax);
                }
                _ => {}
            }
            return Ok(());
        }
        match decode::<InvoiceEvent>(event, &self.upcasters)? {
            InvoiceEvent::InvoiceCreated { invoice, .. } => {
                let receipt = invoice.billing_reason == BillingReason::Payment;
                self.invoices.insert(
                    id.clone(),
                    InvoiceMemory {
                        customer: invoice.customer.clone(),
                        currency: invoice.currency.as_str().to_string(),
                        receipt,
                        lines: invoice
                            .lines
                            .iter()
                            .map(|line| (product_of(line, receipt), line_net(line)))
                            .collect(),
                        net_minor: 0,
                        total_minor: 0,
                        tax_minor: 0,
                    },
                );
            }
            InvoiceEvent::InvoiceLineAdded { line, .. } => {
                if let Some(memory) = self.invoices.get_mut(id) {
                    let receipt = memory.receipt;
                    memory
                        .lines
                        .push((product_of(&line, receipt), line_net(&line)));
                }
            }
            InvoiceEvent::InvoiceFinalized { totals, .. } => {
                if let Some(memory) = self.invoices.get_mut(id) {
                    memory.net_minor = totals.subtotal_excluding_tax;
                    memory.total_minor = totals.total;
                    memory.tax_minor = totals.tax;
                }
            }
            InvoiceEvent::InvoiceVoided { .. } | InvoiceEvent::InvoiceDeleted { .. } => {
                self.invoices.remove(id);
            }
            InvoiceEvent::InvoicePaid {
                payment_intent, at, ..
            } => {
                let memory = self.invoices.remove(id).ok_or_else(|| {
                    ProjectionError::bad_event(event, "the invoice's creation was never seen")
                })?;
                let mut products: Vec<&str> = memory
                    .lines
                    .iter()
                    .map(|(product, _)| product.as_str())
                    .collect();
                products.sort_unstable();
                products.dedup();
                let single = match products.as_slice() {
                    [only] => only.to_string(),
                    _ => "(mixed)".to_string(),
                };
                if let Some(intent) = payment_intent
                    .as_ref()
                    .and_then(|intent| self.intents.get_mut(intent))
                {
                    intent.invoice = Some(id.clone());
                    intent.invoice_total_minor = memory.total_minor;
                    intent.invoice_tax_minor = memory.tax_minor;
                }
                self.paid_products.insert(id.clone(), single);
                if !self.in_period(at) {
                    return Ok(());
                }
                if self.query.group_by == GroupBy::Product {
                    let mut rest = memory.net_minor;
                    for (product, net) in &memory.lines {
                        rest -= net;
                        let group = self.group(at, product, &memory.customer);
                        self.add(group, &memory.currency, *net, 0);
                    }
                    if rest != 0 {
                        // Only if the lines' taxes were not recorded on them.
                        self.add("(adjustment)".to_string(), &memory.currency, rest, 0);
                    }
                } else {
                    let group = self.group(at, "", &memory.customer);
                    self.add(group, &memory.currency, memory.net_minor, 0);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn finish(self) -> RevenueReport {
        let mut totals: BTreeMap<String, RevenueRow> = BTreeMap::new();
        let rows: Vec<RevenueRow> = self
            .rows
            .into_iter()
            .map(|((group, currency), (invoiced, refunded))| {
                let total = totals
                    .entry(currency.clone())
                    .or_insert_with(|| RevenueRow {
                        group: "total".to_string(),
                        currency: currency.clone(),
                        ..RevenueRow::default()
                    });
                total.invoiced_net_minor += invoiced;
                total.refunded_minor += refunded;
                RevenueRow {
                    group,
                    currency,
                    invoiced_net_minor: invoiced,
                    refunded_minor: refunded,
                }
            })
            .collect();
        RevenueReport {
            rows,
            totals: totals.into_values().collect(),
            events_read: self.events_read,
        }
    }
}

fn product_of(line: &InvoiceLine, receipt: bool) -> String {
    match (&line.product, receipt) {
        (Some(product), _) => product.clone(),
        (None, true) => ONE_OFF.to_string(),
        (None, false) => "(no product)".to_string(),
    }
}

/// Replays the whole readable log into the report. `on_progress(read, total)`.
pub async fn revenue_report(
    pool: &PgPool,
    query: RevenueQuery,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<RevenueReport, ProjectionError> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE txid < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .fetch_one(pool)
    .await?;
    let total = u64::try_from(total).unwrap_or(0);
    // A reader task fetches the next batch while this one is folded.
    let (batches, mut incoming) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(2);
    let reader = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut cursor = LogCursor::START;
            loop {
                let mut connection = pool.acquire().await?;
                let events =
                    event_store::log::read_after(&mut connection, cursor, REPORT_BATCH_EVENTS)
                        .await?;
                drop(connection);
                let Some(last) = events.last() else {
                    return Ok::<(), ProjectionError>(());
                };
                cursor = last.cursor();
                if batches.send(events).await.is_err() {
                    return Ok(());
                }
            }
        })
    };
    let mut fold = RevenueFold::new(query);
    let mut read = 0u64;
    while let Some(events) = incoming.recv().await {
        for event in &events {
            fold.add_event(event)?;
        }
        read += events.len() as u64;
        on_progress(read, total.max(read));
    }
    reader.await.map_err(|error| ProjectionError::Invariant {
        projection: "revenue report",
        reason: format!("the report's reader task failed: {error}"),
    })??;
    Ok(fold.finish())
}
