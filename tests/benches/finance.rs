//! The finance benchmark: about a million money-moving events appended in bulk (synthetic
//! but valid: per unit an invoice created, finalized and paid, its payment intent created
//! and charged, and every tenth payment partly refunded), then
//!
//! 1. the journal projection rebuilt from zero (the runtime's rebuild: a read-ahead reader,
//!    set-wise `UNNEST` inserts, indexes after the load), in events/s, and
//! 2. the revenue report replayed from the same log, in events/s,
//!
//! each checked against the revenue the generator made.
//!
//! `cargo bench -p calmony-tests --bench finance` (on a fresh database on the test server:
//! `DATABASE_URL`'s, or PostgreSQL on 127.0.0.1:5432).

use std::error::Error;
use std::time::Instant;

use domain::customer::Metadata;
use domain::invoice::{BillingReason, InvoiceEvent, InvoiceLine, NewInvoice, Totals};
use domain::money::{Currency, Money};
use domain::payment_intent::{CaptureMethod, PaymentIntentEvent};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, Mode};
use projections::journal::Journal;
use projections::revenue::{revenue_report, GroupBy, RevenueQuery};
use projections::ProjectionRuntime;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BENCH_COMMAND: &str = "cargo bench -p calmony-tests --bench finance";
/// Events per unit: 5, and 2 more (a refund) for every tenth unit.
const UNITS: i64 = 192_308;
const FILL_TRANSACTION_UNITS: i64 = 10_000;
const NET_MINOR: i64 = 1_000;
const TAX_MINOR: i64 = 200;
const REFUND_MINOR: i64 = 300;
const REFUND_EVERY_UNITS: i64 = 10;
const PROJECT: &str = "proj_finance_bench";
/// 2026-01-31T12:00:00Z.
const START: i64 = 1_769_860_800;
const JOURNAL_TARGET_EVENTS_PER_SECOND: f64 = 250_000.0;

/// One event to insert: (stream type, stream id, version, type, payload).
type Row = (&'static str, String, i64, String, String);

fn event_type_of<E: cqrs_es::DomainEvent>(event: &E) -> String {
    event.event_type()
}

fn unit_events(unit: i64) -> BenchResult<Vec<Row>> {
    let invoice_id = format!("in_{unit:012}");
    let intent_id = format!("pi_{unit:012}");
    let customer = format!("cus_{:08}", unit % 5_000);
    let at = START + unit * 13;
    let total = NET_MINOR + TAX_MINOR;
    let line = InvoiceLine {
        id: format!("il_{unit:012}"),
        description: "Pro plan".to_string(),
        price: Some("price_pro".to_string()),
        product: Some(format!("prod_{}", unit % 3)),
        quantity: 1,
        unit_amount: Some(NET_MINOR),
        amount: NET_MINOR,
        period_start: at,
        period_end: at + 30 * 86_400,
        proration: false,
        invoice_item: None,
        subscription: Some(format!("sub_{unit:012}")),
        subscription_item: None,
        tax_rates: Vec::new(),
        taxes: Vec::new(),
        metadata: Metadata::new(),
    };
    let invoice_events = [
        InvoiceEvent::InvoiceCreated {
            invoice: Box::new(NewInvoice {
                invoice_id: invoice_id.clone(),
                customer: customer.clone(),
                currency: Currency::GBP,
                billing_reason: BillingReason::SubscriptionCycle,
                subscription: Some(format!("sub_{unit:012}")),
                lines: vec![line],
                auto_advance: true,
                description: None,
                footer: None,
                metadata: Metadata::new(),
                default_payment_method: None,
                period_start: at,
                period_end: at + 30 * 86_400,
                test_clock: None,
            }),
            created: at,
        },
        InvoiceEvent::InvoiceFinalized {
            number: format!("BENCH-{unit:06}"),
            access_token: format!("tok_{unit}"),
            retry_days: vec![1, 2, 3],
            totals: Totals {
                subtotal: NET_MINOR,
                subtotal_excluding_tax: NET_MINOR,
                tax: TAX_MINOR,
                total,
            },
            at,
        },
    ];
    let amount = Money::new(total, Currency::GBP)?;
    let mut intent_events = vec![
        PaymentIntentEvent::PaymentIntentCreated {
            payment_intent_id: intent_id.clone(),
            livemode: true,
            amount,
            customer: Some(customer.clone()),
            payment_method: Some("pm_bench".to_string()),
            capture_method: CaptureMethod::Automatic,
            description: None,
            receipt_email: None,
            metadata: Metadata::new(),
            created: at,
            invoice: Some(invoice_id.clone()),
        },
        PaymentIntentEvent::ChargeSucceeded {
            charge_id: format!("ch_{unit:012}"),
            gateway_token: "xref_bench".to_string(),
            authorization_code: Some("12345".to_string()),
            amount,
            at,
        },
    ];
    let paid = InvoiceEvent::InvoicePaid {
        payment_intent: Some(intent_id.clone()),
        amount_paid: total,
        out_of_band: false,
        at,
    };
    if unit % REFUND_EVERY_UNITS == 0 {
        let refund_id = format!("re_{unit:012}");
        intent_events.push(PaymentIntentEvent::RefundStarted {
            refund_id: refund_id.clone(),
            charge_id: format!("ch_{unit:012}"),
            amount: REFUND_MINOR,
            reason: None,
            transaction_unique: format!("tu_{unit}"),
            metadata: Metadata::new(),
            at: at + 60,
        });
        intent_events.push(PaymentIntentEvent::RefundSucceeded {
            refund_id,
            at: at + 60,
        });
    }
    let mut rows = Vec::new();
    for (version, event) in invoice_events.iter().enumerate() {
        rows.push((
            "invoice",
            invoice_id.clone(),
            version as i64 + 1,
            event_type_of(event),
            serde_json::to_string(event)?,
        ));
    }
    let mut intent_rows = Vec::new();
    for (version, event) in intent_events.iter().enumerate() {
        intent_rows.push((
            "payment_intent",
            intent_id.clone(),
            version as i64 + 1,
            event_type_of(event),
            serde_json::to_string(event)?,
        ));
    }
    // The charge before the invoice is paid; a refund after.
    let (charge, refund) = intent_rows.split_at(2);
    rows.extend_from_slice(charge);
    rows.push((
        "invoice",
        invoice_id,
        3,
        event_type_of(&paid),
        serde_json::to_string(&paid)?,
    ));
    rows.extend_from_slice(refund);
    Ok(rows)
}

/// CPU time (user + system) this process has used, from /proc (0 where there is none).
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> BenchResult<()> {
    let started = Instant::now();
    let database = TestDatabase::new().await;
    let pool = database.pool.clone();
    let (version, cores) = (
        sqlx::query_scalar::<_, String>("SELECT current_setting('server_version')")
            .fetch_one(&pool)
            .await?,
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
    );
    println!("finance benchmark: PostgreSQL {version}, client and server sharing {cores} cores");

    let metadata = serde_json::to_string(&EventMetadata::new(PROJECT, Mode::Live, "key:bench"))?;
    let fill_started = Instant::now();
    let mut appended = 0i64;
    let mut first = 0;
    while first < UNITS {
        let last = (first + FILL_TRANSACTION_UNITS).min(UNITS);
        let mut types = Vec::new();
        let mut ids = Vec::new();
        let mut versions = Vec::new();
        let mut event_types = Vec::new();
        let mut payloads = Vec::new();
        for unit in first..last {
            for (stream_type, id, version, event_type, payload) in unit_events(unit)? {
                types.push(stream_type);
                ids.push(id);
                versions.push(version);
                event_types.push(event_type);
                payloads.push(payload);
            }
        }
        appended += ids.len() as i64;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata) \
             SELECT t, i, v, e, '1.0', p::json, $6::json \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) \
                 WITH ORDINALITY AS u(t, i, v, e, p, n) ORDER BY n",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&versions)
        .bind(&event_types)
        .bind(&payloads)
        .bind(&metadata)
        .execute(&pool)
        .await?;
        first = last;
    }
    println!(
        "fill: {appended} events ({UNITS} invoices paid by as many charges, every \
         {REFUND_EVERY_UNITS}th refunded) in {:.1} s",
        fill_started.elapsed().as_secs_f64()
    );
    sqlx::query("VACUUM (ANALYZE) events")
        .execute(&pool)
        .await?;
    if let Err(error) = sqlx::query("CHECKPOINT").execute(&pool).await {
        println!("(no CHECKPOINT before the measurements: {error})");
    }
    let refunds = (UNITS + REFUND_EVERY_UNITS - 1) / REFUND_EVERY_UNITS;
    // Refunds count net of the VAT they give back (the journal's and the report's rule).
    let refund_vat =
        domain::tax::refund_tax_share(NET_MINOR + TAX_MINOR, TAX_MINOR, 0, REFUND_MINOR)?;
    let expected_revenue = UNITS * NET_MINOR - refunds * (REFUND_MINOR - refund_vat);

    // 1. The journal, rebuilt from zero.
    let runtime = ProjectionRuntime::new(pool.clone());
    let journal = Journal::default();
    let rebuild_started = Instant::now();
    let cpu_before = own_cpu_seconds();
    let applied = runtime.rebuild(&journal, |_, _| {}).await?;
    let rebuild_seconds = rebuild_started.elapsed().as_secs_f64();
    let rebuild_cpu = own_cpu_seconds() - cpu_before;
    let journal_rate = applied as f64 / rebuild_seconds;
    let (lines, revenue, refunded): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM journal.lines), \
                (SELECT credit_minor - debit_minor FROM journal.balances WHERE account = 'revenue'), \
                (SELECT debit_minor - credit_minor FROM journal.balances WHERE account = 'refunds')",
    )
    .fetch_one(&pool)
    .await?;
    if revenue - refunded != expected_revenue || applied != appended as u64 {
        return Err(format!(
            "journal is wrong: applied {applied} of {appended}; revenue {revenue} − refunds \
             {refunded}, expected {expected_revenue}"
        )
        .into());
    }
    println!(
        "journal rebuild: {applied} events → {lines} lines in {rebuild_seconds:.2} s = \
         {journal_rate:.0} events/s (target >= {JOURNAL_TARGET_EVENTS_PER_SECOND:.0}: {}); \
         this process used {rebuild_cpu:.2} s of CPU meanwhile, PostgreSQL the rest",
        if journal_rate >= JOURNAL_TARGET_EVENTS_PER_SECOND {
            "met"
        } else {
            "NOT met"
        }
    );

    // Where the rebuild's time goes: reading the log alone, then preparing the lines (decode,
    // post, encode) alone, each over the whole log, one after the other.
    let read_started = Instant::now();
    let mut batches = Vec::new();
    let mut cursor = event_store::LogCursor::START;
    let mut connection = pool.acquire().await?;
    loop {
        let events = event_store::log::read_unhashed_after(
            &mut connection,
            cursor,
            projections::runtime::REBUILD_BATCH_EVENTS,
        )
        .await?;
        let Some(last) = events.last() else { break };
        cursor = last.cursor();
        batches.push(events);
    }
    drop(connection);
    let read_seconds = read_started.elapsed().as_secs_f64();
    let prepare_started = Instant::now();
    let mut rebuilder = projections::Projection::rebuilder(&journal).ok_or("a fast path")?;
    let mut encoded = 0usize;
    for events in &batches {
        for copy in rebuilder.prepare(events)? {
            encoded += copy.rows();
        }
    }
    let prepare_seconds = prepare_started.elapsed().as_secs_f64();
    drop(batches);
    println!(
        "  of which, measured alone: reading the log {:.0} events/s ({read_seconds:.2} s); \
         preparing the {encoded} lines (decode, post, encode) {:.0} events/s \
         ({prepare_seconds:.2} s)",
        applied as f64 / read_seconds,
        applied as f64 / prepare_seconds,
    );

    // 2. The revenue report over the same log.
    let report_started = Instant::now();
    let report = revenue_report(
        &pool,
        RevenueQuery {
            from: chrono::NaiveDate::from_ymd_opt(2000, 1, 1).ok_or("date")?,
            to: chrono::NaiveDate::from_ymd_opt(2100, 12, 31).ok_or("date")?,
            project: Some(PROJECT.to_string()),
            livemode: true,
            group_by: GroupBy::Month,
        },
        |_, _| {},
    )
    .await?;
    let report_seconds = report_started.elapsed().as_secs_f64();
    let report_rate = report.events_read as f64 / report_seconds;
    let total = report
        .totals
        .iter()
        .find(|row| row.currency == "gbp")
        .map_or(0, |row| row.revenue_minor());
    if total != expected_revenue {
        return Err(
            format!("report is wrong: revenue {total}, expected {expected_revenue}").into(),
        );
    }
    println!(
        "revenue report (by month, {} rows): {} events in {report_seconds:.2} s = \
         {report_rate:.0} events/s",
        report.rows.len(),
        report.events_read
    );
    println!(
        "both equal the generated revenue: {expected_revenue} minor units\n\
         whole run: {:.0} s; reproduce: {BENCH_COMMAND}",
        started.elapsed().as_secs_f64()
    );
    database.pool.close().await;
    Ok(())
}
