//! The ledger-core benchmark: how fast the event store appends (beside pgbench making the
//! same inserts on the same server), how fast the stream index rebuilds from a million
//! events, and how far behind the live log a subscriber runs.
//!
//! `cargo bench -p calmony-tests --bench ledger` runs every section; name sections after
//! `--` to run only those (`cargo bench -p calmony-tests --bench ledger -- append lag`).
//! Every measurement starts from a fresh migrated database (`TestDatabase`) on the test
//! server: `DATABASE_URL`'s, or PostgreSQL on 127.0.0.1:5432.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use event_store::log::{read_headers_after, SubscriptionSettings};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, LogCursor, LogReader, Mode, NewEvent};
use hdrhistogram::Histogram;
use projections::runtime::REBUILD_BATCH_EVENTS;
use projections::stream_index::StreamIndex;
use projections::{Projection, ProjectionRuntime};
use sqlx::PgPool;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BENCH_COMMAND: &str = "cargo bench -p calmony-tests --bench ledger";
const EVENTS_PER_COMMAND: u64 = 3;

const APPEND_CONCURRENCY_LEVELS: [usize; 3] = [1, 8, 32];
const APPEND_MEASURE_SECONDS: u64 = 5;
/// Opens the pool's connections and prepares the statement before measuring, as pgbench's
/// figure leaves out its connection time.
const APPEND_WARMUP_MS: u64 = 1_000;
const APPEND_RATIO_TARGET: f64 = 0.5;
const PGBENCH_PATH: &str = "/usr/bin/pgbench";
/// pgbench's worker threads: one per core of this machine at most.
const PGBENCH_MAX_THREADS: usize = 2;

const REBUILD_EVENTS: i64 = 1_000_000;
const FILL_TRANSACTION_EVENTS: i64 = 50_000;
const FILL_EVENTS_PER_STREAM: i64 = 3;
const REBUILD_TARGET_EVENTS_PER_SECOND: f64 = 250_000.0;
const PROFILE_SCHEMA: &str = "stream_index_profile";

const LAG_WRITERS: usize = 8;
const LAG_STEADY_EVENTS_PER_SECOND: u64 = 2_000;
const LAG_STEADY_SECONDS: u64 = 10;
const LAG_MAX_RATE_SECONDS: u64 = 5;
/// How long the subscriber may take to see the last events after the writers stop.
const LAG_DRAIN_TIMEOUT_MS: u64 = 10_000;
const LAG_P99_TARGET_MS: f64 = 50.0;
/// Histogram bounds, in microseconds: 1 µs to 10 minutes.
const HISTOGRAM_MAX_MICROS: u64 = 600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Append,
    Rebuild,
    Lag,
}

impl Section {
    const ALL: [Section; 3] = [Section::Append, Section::Rebuild, Section::Lag];

    fn name(self) -> &'static str {
        match self {
            Section::Append => "append",
            Section::Rebuild => "rebuild",
            Section::Lag => "lag",
        }
    }
}

/// One line of the closing table.
struct SummaryRow {
    measure: String,
    figure: String,
    target: String,
    met: Option<bool>,
}

impl SummaryRow {
    fn new(measure: impl Into<String>, figure: impl Into<String>) -> Self {
        Self {
            measure: measure.into(),
            figure: figure.into(),
            target: String::new(),
            met: None,
        }
    }

    fn with_target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

fn main() -> BenchResult<()> {
    // cargo passes `--bench` to a harness-less bench; every other word names a section.
    let requested: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with("--"))
        .collect();
    let mut sections = Vec::new();
    for name in &requested {
        match Section::ALL.iter().find(|section| section.name() == name) {
            Some(section) => sections.push(*section),
            None => {
                return Err(
                    format!("unknown section {name:?}: choose from append, rebuild, lag").into(),
                )
            }
        }
    }
    if sections.is_empty() {
        sections = Section::ALL.to_vec();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&sections))
}

async fn run(sections: &[Section]) -> BenchResult<()> {
    let started = Instant::now();
    describe_server().await?;
    let mut summary = Vec::new();
    for section in sections {
        match section {
            Section::Append => append_section(&mut summary).await?,
            Section::Rebuild => rebuild_section(&mut summary).await?,
            Section::Lag => lag_section(&mut summary).await?,
        }
    }
    print_summary(&summary);
    println!(
        "\nwhole run: {:.0} s; reproduce: {BENCH_COMMAND}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn describe_server() -> BenchResult<()> {
    let database = TestDatabase::new().await;
    let (version, synchronous_commit, shared_buffers): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit'), \
                    current_setting('shared_buffers')",
    )
    .fetch_one(&database.pool)
    .await?;
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    println!(
        "ledger benchmark: PostgreSQL {version} (synchronous_commit={synchronous_commit}, \
         shared_buffers={shared_buffers}), client and server sharing {cores} cores"
    );
    close(database).await;
    Ok(())
}

async fn close(database: TestDatabase) {
    database.pool.close().await;
    drop(database);
}

// ---------------------------------------------------------------------------------------
// 1. Append throughput, beside pgbench
// ---------------------------------------------------------------------------------------

async fn append_section(summary: &mut Vec<SummaryRow>) -> BenchResult<()> {
    println!(
        "\n== 1. Append throughput: {EVENTS_PER_COMMAND} events per command (one \
         EventStore::append in its own transaction, a new stream each), \
         {APPEND_MEASURE_SECONDS} s per level"
    );
    println!("   reproduce: {BENCH_COMMAND} -- append");
    let script = pgbench_script()?;
    let script_path = std::env::temp_dir().join("calmony-ledger-bench-append.sql");
    std::fs::write(&script_path, &script)?;
    println!(
        "   pgbench script ({}), the same three rows through the same trigger:",
        script_path.display()
    );
    for line in script.lines() {
        println!("     {line}");
    }
    println!(
        "   each level: a fresh database; pgbench runs first, then ours in the same database \
         (its leftover rows can only slow ours)"
    );
    println!(
        "   {:>11} | {:>14} | {:>14} | {:>11}",
        "concurrency", "ours events/s", "pgbench ev/s", "ours/pgbench"
    );
    for concurrency in APPEND_CONCURRENCY_LEVELS {
        let database = TestDatabase::new().await;
        let pgbench = run_pgbench(&database.url, &script_path, concurrency).await?;
        let ours = append_throughput(&database.pool, concurrency).await?;
        close(database).await;
        let ratio = ours / pgbench.events_per_second;
        println!(
            "   {concurrency:>11} | {ours:>14.0} | {:>14.0} | {ratio:>11.2}",
            pgbench.events_per_second
        );
        println!("     pgbench: {}", pgbench.command);
        if pgbench.failed_transactions > 0 {
            println!(
                "     warning: pgbench reported {} failed transactions",
                pgbench.failed_transactions
            );
        }
        summary.push(
            SummaryRow::new(
                format!("append c={concurrency}: ours / pgbench events/s"),
                format!("{ours:.0} / {:.0} = {ratio:.2}", pgbench.events_per_second),
            )
            .with_target(
                format!("ratio >= {APPEND_RATIO_TARGET}"),
                ratio >= APPEND_RATIO_TARGET,
            ),
        );
    }
    Ok(())
}

/// The events of one command: a payment intent created, confirmed and succeeded.
fn command_events(aggregate_id: &str, request_id: &str) -> Vec<NewEvent> {
    let metadata =
        EventMetadata::new("proj_bench", Mode::Live, "key:key_bench_0001").with_request(request_id);
    let payloads = [
        (
            "PaymentIntentCreated",
            serde_json::json!({
                "amount_minor": 1999,
                "currency": "eur",
                "customer": "cus_bench_0001",
                "description": "Order 1042",
                "capture_method": "automatic",
            }),
        ),
        (
            "PaymentIntentConfirmed",
            serde_json::json!({ "payment_method": "pm_card_visa", "amount_minor": 1999 }),
        ),
        (
            "PaymentIntentSucceeded",
            serde_json::json!({
                "amount_received_minor": 1999,
                "charge": "ch_bench_0001",
                "gateway_reference": "gw_0001",
            }),
        ),
    ];
    payloads
        .into_iter()
        .zip(1..)
        .map(|((event_type, payload), sequence)| NewEvent {
            aggregate_type: "payment_intent".to_string(),
            aggregate_id: aggregate_id.to_string(),
            sequence,
            event_type: event_type.to_string(),
            event_version: "1".to_string(),
            payload,
            metadata: metadata.clone(),
        })
        .collect()
}

/// A pgbench script inserting what [`command_events`] appends, as one three-row INSERT in
/// its own transaction. `:command` counts each client's transactions (from `-D command=0`),
/// so `:client_id` and `:command` name a new stream every time.
fn pgbench_script() -> BenchResult<String> {
    let mut rows = Vec::new();
    for event in command_events("unused", "req_pgbench_00000") {
        rows.push(format!(
            "  ({}, 'pi_pgbench_' || :client_id || '_' || :command, {}, {}, {}, {}, {})",
            sql_text(&event.aggregate_type),
            event.sequence,
            sql_text(&event.event_type),
            sql_text(&event.event_version),
            sql_text(&event.payload.to_string()),
            sql_text(&serde_json::to_string(&event.metadata)?),
        ));
    }
    Ok(format!(
        "\\set command :command + 1\n\
         BEGIN;\n\
         INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES\n{};\n\
         COMMIT;\n",
        rows.join(",\n")
    ))
}

fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

struct PgbenchRun {
    events_per_second: f64,
    failed_transactions: u64,
    command: String,
}

async fn run_pgbench(
    database_url: &str,
    script: &Path,
    concurrency: usize,
) -> BenchResult<PgbenchRun> {
    let program = if Path::new(PGBENCH_PATH).exists() {
        PGBENCH_PATH
    } else {
        "pgbench"
    };
    let threads = concurrency.min(PGBENCH_MAX_THREADS);
    let arguments: Vec<String> = vec![
        "-n".into(),
        "-c".into(),
        concurrency.to_string(),
        "-j".into(),
        threads.to_string(),
        "-T".into(),
        APPEND_MEASURE_SECONDS.to_string(),
        "-D".into(),
        "command=0".into(),
        "-f".into(),
        script.display().to_string(),
        database_url.to_string(),
    ];
    let command = format!("{program} {}", arguments.join(" "));
    let output = tokio::process::Command::new(program)
        .args(&arguments)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{command} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let field = |prefix: &str| -> BenchResult<f64> {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .ok_or_else(|| format!("no {prefix:?} in pgbench's output:\n{stdout}"))?;
        let number = line[prefix.len()..]
            .split_whitespace()
            .next()
            .unwrap_or_default();
        Ok(number.parse::<f64>()?)
    };
    let transactions_per_second = field("tps = ")?;
    let failed_transactions = field("number of failed transactions: ").unwrap_or(0.0) as u64;
    Ok(PgbenchRun {
        events_per_second: transactions_per_second * EVENTS_PER_COMMAND as f64,
        failed_transactions,
        command,
    })
}

async fn append_throughput(pool: &PgPool, concurrency: usize) -> BenchResult<f64> {
    run_appenders(
        pool,
        concurrency,
        Duration::from_millis(APPEND_WARMUP_MS),
        "warm",
    )
    .await?;
    let started = Instant::now();
    let events = run_appenders(
        pool,
        concurrency,
        Duration::from_secs(APPEND_MEASURE_SECONDS),
        "run",
    )
    .await?;
    // Commands in flight at the deadline finish and count: the clock stops after them.
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// `concurrency` writers appending commands until `duration` is up; returns events appended.
async fn run_appenders(
    pool: &PgPool,
    concurrency: usize,
    duration: Duration,
    label: &'static str,
) -> BenchResult<u64> {
    let deadline = Instant::now() + duration;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..concurrency {
        let pool = pool.clone();
        writers.spawn(async move {
            let mut events = 0u64;
            let mut command = 0u64;
            while Instant::now() < deadline {
                command += 1;
                let aggregate_id = format!("pi_{label}_{writer}_{command}");
                append_command(&pool, &aggregate_id, &format!("req_{label}_{command}")).await?;
                events += EVENTS_PER_COMMAND;
            }
            BenchResult::Ok(events)
        });
    }
    let mut total = 0;
    while let Some(joined) = writers.join_next().await {
        total += joined??;
    }
    Ok(total)
}

/// One command as the command layer runs it: a transaction holding one append.
async fn append_command(pool: &PgPool, aggregate_id: &str, request_id: &str) -> BenchResult<()> {
    let events = command_events(aggregate_id, request_id);
    let mut transaction = pool.begin().await?;
    EventStore::append(&mut transaction, &events).await?;
    transaction.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Rebuild of the stream index
// ---------------------------------------------------------------------------------------

/// One fill transaction: events `$1..=$2` of the benchmark log, `$3` per stream, in order (a
/// stream's later versions need its earlier ones, which the insert trigger reads for the
/// hash chain). Payload and metadata look like what the command layer writes.
const FILL_SQL: &str = r#"
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'payment_intent',
       'pi_' || lpad(stream::text, 12, '0'),
       version,
       (ARRAY['PaymentIntentCreated', 'PaymentIntentConfirmed', 'PaymentIntentSucceeded'])[1 + (version - 1) % 3],
       '1',
       format('{"amount_minor":%s,"capture_method":"automatic","currency":"eur","customer":"cus_%s","description":"Order %s"}',
              100 + stream % 100000, lpad((stream % 5000)::text, 8, '0'), stream)::json,
       format('{"project":"proj_%s","mode":"live","request_id":"req_%s_%s","actor":"key:key_%s","correlation_id":"req_%s_1"}',
              lpad((stream % 50)::text, 6, '0'), stream, version, stream % 50, stream)::json
FROM generate_series($1::bigint, $2::bigint) AS n,
     LATERAL (SELECT (n - 1) / $3::bigint + 1 AS stream, (n - 1) % $3::bigint + 1 AS version) AS event
ORDER BY n
"#;

/// The query of `event_store::log::read_headers_after`, with the cursor and limit inlined,
/// for EXPLAIN: keep the two in step.
fn headers_query(after: LogCursor, limit: i64) -> String {
    format!(
        "SELECT position, txid::text::bigint AS txid, aggregate_type, aggregate_id, sequence, \
                event_type, event_version, '' AS payload, metadata::text AS metadata, recorded_at, \
                '\\x'::bytea AS prev_hash, '\\x'::bytea AS hash \
         FROM events \
         WHERE (txid, position) > ('{}'::text::xid8, {}) \
           AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY txid, position \
         LIMIT {limit}",
        after.txid, after.position
    )
}

async fn rebuild_section(summary: &mut Vec<SummaryRow>) -> BenchResult<()> {
    println!(
        "\n== 2. Rebuild of the stream index over {REBUILD_EVENTS} events \
         ({FILL_EVENTS_PER_STREAM} per stream)"
    );
    println!("   reproduce: {BENCH_COMMAND} -- rebuild");
    let database = TestDatabase::new().await;
    let pool = database.pool.clone();

    let fill_started = Instant::now();
    let mut first = 1;
    while first <= REBUILD_EVENTS {
        let last = (first + FILL_TRANSACTION_EVENTS - 1).min(REBUILD_EVENTS);
        let mut transaction = pool.begin().await?;
        sqlx::query(FILL_SQL)
            .bind(first)
            .bind(last)
            .bind(FILL_EVENTS_PER_STREAM)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        first = last + 1;
    }
    let fill_elapsed = fill_started.elapsed();
    println!(
        "   fill: {REBUILD_EVENTS} events in {:.1} s ({:.0} events/s through the insert \
         trigger), {} transactions of {FILL_TRANSACTION_EVENTS}",
        fill_elapsed.as_secs_f64(),
        REBUILD_EVENTS as f64 / fill_elapsed.as_secs_f64(),
        (REBUILD_EVENTS + FILL_TRANSACTION_EVENTS - 1) / FILL_TRANSACTION_EVENTS
    );
    // A settled table, as autovacuum leaves a live one, and no checkpoint owed from the
    // fill landing inside the timed rebuild.
    sqlx::query("VACUUM (ANALYZE) events")
        .execute(&pool)
        .await?;
    if let Err(error) = sqlx::query("CHECKPOINT").execute(&pool).await {
        println!("   (no CHECKPOINT before the rebuild: {error})");
    }
    let table_size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('events'))")
            .fetch_one(&pool)
            .await?;
    println!("   events table with its indexes: {table_size}");

    let runtime = ProjectionRuntime::new(pool.clone());
    let started = Instant::now();
    let applied = runtime.rebuild(&StreamIndex, |_, _| {}).await?;
    let elapsed = started.elapsed();
    let events_per_second = applied as f64 / elapsed.as_secs_f64();
    let (streams, counted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(event_count), 0)::bigint FROM stream_index.streams",
    )
    .fetch_one(&pool)
    .await?;
    let expected_streams = (REBUILD_EVENTS + FILL_EVENTS_PER_STREAM - 1) / FILL_EVENTS_PER_STREAM;
    if applied != REBUILD_EVENTS as u64 || counted != REBUILD_EVENTS || streams != expected_streams
    {
        return Err(format!(
            "rebuild is wrong: applied {applied}, index counts {counted} events in {streams} \
             streams; expected {REBUILD_EVENTS} in {expected_streams}"
        )
        .into());
    }
    println!(
        "   rebuild: {applied} events into {streams} streams in {:.2} s = {events_per_second:.0} \
         events/s (target >= {REBUILD_TARGET_EVENTS_PER_SECOND:.0})",
        elapsed.as_secs_f64()
    );
    summary.push(
        SummaryRow::new(
            "rebuild stream index, 1M events",
            format!(
                "{events_per_second:.0} events/s ({:.2} s)",
                elapsed.as_secs_f64()
            ),
        )
        .with_target(
            format!("events/s >= {REBUILD_TARGET_EVENTS_PER_SECOND:.0}"),
            events_per_second >= REBUILD_TARGET_EVENTS_PER_SECOND,
        ),
    );

    profile_rebuild(&pool, elapsed).await?;
    close(database).await;
    Ok(())
}

/// Where a rebuild's time goes: the same loop as `ProjectionRuntime::rebuild`, timed step by
/// step, into a scratch schema; then the server's side of the read query alone.
async fn profile_rebuild(pool: &PgPool, rebuild_elapsed: Duration) -> BenchResult<()> {
    println!("   profile (same loop as the rebuild, timed per step, into a scratch schema):");
    let counting = Instant::now();
    let _: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE txid < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .fetch_one(pool)
    .await?;
    let count_elapsed = counting.elapsed();

    {
        let mut transaction = pool.begin().await?;
        sqlx::query(&format!("CREATE SCHEMA {PROFILE_SCHEMA}"))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(&format!(
            "SET LOCAL search_path TO {PROFILE_SCHEMA}, public"
        ))
        .execute(&mut *transaction)
        .await?;
        sqlx::raw_sql(StreamIndex.schema_sql())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
    }
    let mut read = Duration::ZERO;
    let mut apply = Duration::ZERO;
    let mut commit = Duration::ZERO;
    let mut batches = 0u32;
    let mut cursor = LogCursor::START;
    let mut middle_cursor = None;
    let looping = Instant::now();
    loop {
        let mut transaction = pool.begin().await?;
        let reading = Instant::now();
        let events = read_headers_after(&mut transaction, cursor, REBUILD_BATCH_EVENTS).await?;
        read += reading.elapsed();
        let Some(last) = events.last() else {
            transaction.rollback().await?;
            break;
        };
        cursor = last.cursor();
        batches += 1;
        if batches == 25 {
            middle_cursor = Some(cursor);
        }
        sqlx::query(&format!(
            "SET LOCAL search_path TO {PROFILE_SCHEMA}, public"
        ))
        .execute(&mut *transaction)
        .await?;
        let applying = Instant::now();
        StreamIndex.apply(&mut transaction, &events).await?;
        apply += applying.elapsed();
        let committing = Instant::now();
        transaction.commit().await?;
        commit += committing.elapsed();
    }
    let loop_elapsed = looping.elapsed();
    let share = |part: Duration| 100.0 * part.as_secs_f64() / loop_elapsed.as_secs_f64();
    println!(
        "     count(*) of readable events (rebuild's first step): {:>7.0} ms",
        count_elapsed.as_secs_f64() * 1000.0
    );
    println!(
        "     {batches} batches of up to {REBUILD_BATCH_EVENTS}: {:.0} ms in all, of which",
        loop_elapsed.as_secs_f64() * 1000.0
    );
    for (step, part) in [
        ("read_headers_after (query, transfer, decode)", read),
        ("StreamIndex::apply (fold, metadata parse, upsert)", apply),
        ("commit", commit),
    ] {
        println!(
            "       {step:<52} {:>7.0} ms  {:>4.1}%  ({:.1} ms per batch)",
            part.as_secs_f64() * 1000.0,
            share(part),
            part.as_secs_f64() * 1000.0 / f64::from(batches.max(1))
        );
    }
    println!(
        "     (the timed rebuild took {:.0} ms)",
        rebuild_elapsed.as_secs_f64() * 1000.0
    );

    // The server's part of a read: EXPLAIN ANALYZE runs the query but sends no rows.
    for (label, after) in [
        ("first batch", LogCursor::START),
        ("middle batch", middle_cursor.unwrap_or(LogCursor::START)),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, BUFFERS) {}",
            headers_query(after, REBUILD_BATCH_EVENTS)
        ))
        .fetch_all(pool)
        .await?;
        println!("     server side of read_headers_after, {label} (EXPLAIN ANALYZE):");
        for line in plan {
            println!("       {line}");
        }
    }
    sqlx::query(&format!("DROP SCHEMA {PROFILE_SCHEMA} CASCADE"))
        .execute(pool)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Live subscription lag
// ---------------------------------------------------------------------------------------

struct Received {
    aggregate_id: String,
    sequence: i64,
    at: Instant,
    wall_micros: i64,
    recorded_at_micros: i64,
}

struct LagRun {
    committed_events: u64,
    received_events: u64,
    duplicate_events: u64,
    elapsed: Duration,
    /// Subscriber's receipt − the writer's `commit().await` returning, both `Instant`s.
    commit_to_receive: Histogram<u64>,
    /// Received before the writer saw its commit return (counted as 0 in the histogram).
    received_before_commit_returned: u64,
    /// Subscriber's wall clock − `recorded_at` (`clock_timestamp()` at insert, so it
    /// includes the rest of the writing transaction and its commit).
    insert_to_receive: Histogram<u64>,
}

async fn lag_section(summary: &mut Vec<SummaryRow>) -> BenchResult<()> {
    println!(
        "\n== 3. Live subscription lag: one LogReader::subscribe subscriber (default settings), \
         {LAG_WRITERS} writers appending {EVENTS_PER_COMMAND}-event commands"
    );
    println!("   reproduce: {BENCH_COMMAND} -- lag");
    println!(
        "   lag = subscriber's receipt of the batch − the writer's commit().await returning \
         (client-side Instants, one process; joined by stream)"
    );
    for (label, rate, seconds) in [
        (
            format!("steady {LAG_STEADY_EVENTS_PER_SECOND} events/s"),
            Some(LAG_STEADY_EVENTS_PER_SECOND),
            LAG_STEADY_SECONDS,
        ),
        ("max rate".to_string(), None, LAG_MAX_RATE_SECONDS),
    ] {
        let run = lag_run(rate, Duration::from_secs(seconds)).await?;
        let p50 = millis(run.commit_to_receive.value_at_quantile(0.50));
        let p99 = millis(run.commit_to_receive.value_at_quantile(0.99));
        println!(
            "   {label}, {seconds} s: {} events committed ({:.0} events/s), {} received, {} \
             duplicates",
            run.committed_events,
            run.committed_events as f64 / run.elapsed.as_secs_f64(),
            run.received_events,
            run.duplicate_events
        );
        println!(
            "     commit→receive ms: p50 {p50:.1}  p90 {:.1}  p99 {p99:.1}  p99.9 {:.1}  max {:.1} \
             ({} events seen before the writer's commit returned)",
            millis(run.commit_to_receive.value_at_quantile(0.90)),
            millis(run.commit_to_receive.value_at_quantile(0.999)),
            millis(run.commit_to_receive.max()),
            run.received_before_commit_returned
        );
        println!(
            "     insert→receive ms (recorded_at): p50 {:.1}  p99 {:.1}  max {:.1}",
            millis(run.insert_to_receive.value_at_quantile(0.50)),
            millis(run.insert_to_receive.value_at_quantile(0.99)),
            millis(run.insert_to_receive.max())
        );
        let complete = run.received_events == run.committed_events && run.duplicate_events == 0;
        if !complete {
            println!("     warning: the subscriber did not see every event exactly once");
        }
        summary.push(
            SummaryRow::new(
                format!(
                    "subscription lag, {label} ({:.0} ev/s achieved)",
                    run.committed_events as f64 / run.elapsed.as_secs_f64()
                ),
                format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
            )
            .with_target(
                format!("p99 < {LAG_P99_TARGET_MS:.0} ms"),
                p99 < LAG_P99_TARGET_MS && complete,
            ),
        );
    }
    Ok(())
}

/// `LAG_WRITERS` writers for `duration`, at `events_per_second` in all (or flat out), with
/// one subscriber following the log from its start.
async fn lag_run(events_per_second: Option<u64>, duration: Duration) -> BenchResult<LagRun> {
    let database = TestDatabase::new().await;
    let pool = database.pool.clone();
    let commits: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let received_count = Arc::new(AtomicU64::new(0));

    let mut subscription = LogReader::new(pool.clone())
        .subscribe(LogCursor::START, SubscriptionSettings::default())
        .await?;
    let subscriber = {
        let received = Arc::clone(&received);
        let received_count = Arc::clone(&received_count);
        tokio::spawn(async move {
            loop {
                let batch = subscription.next_batch().await?;
                let at = Instant::now();
                let wall_micros = wall_clock_micros();
                let mut received = received.lock().expect("received events lock");
                for event in &batch {
                    received.push(Received {
                        aggregate_id: event.aggregate_id.clone(),
                        sequence: event.sequence,
                        at,
                        wall_micros,
                        recorded_at_micros: event.recorded_at.timestamp_micros(),
                    });
                }
                received_count.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            #[allow(unreachable_code)]
            BenchResult::Ok(())
        })
    };

    let started = Instant::now();
    let deadline = started + duration;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..LAG_WRITERS {
        let pool = pool.clone();
        let commits = Arc::clone(&commits);
        writers.spawn(async move {
            // Each writer's share of the rate, its ticks spread across the period so that
            // the writers do not fire together.
            let mut ticker = events_per_second.map(|rate| {
                let period = Duration::from_secs_f64(
                    (LAG_WRITERS as u64 * EVENTS_PER_COMMAND) as f64 / rate as f64,
                );
                let offset = period.mul_f64(writer as f64 / LAG_WRITERS as f64);
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            });
            let mut events = 0u64;
            let mut command = 0u64;
            loop {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                if Instant::now() >= deadline {
                    break;
                }
                command += 1;
                let aggregate_id = format!("pi_lag_{writer}_{command}");
                append_command(&pool, &aggregate_id, &format!("req_lag_{command}")).await?;
                let committed = Instant::now();
                commits
                    .lock()
                    .expect("commit times lock")
                    .insert(aggregate_id, committed);
                events += EVENTS_PER_COMMAND;
            }
            BenchResult::Ok(events)
        });
    }
    let mut committed_events = 0;
    while let Some(joined) = writers.join_next().await {
        committed_events += joined??;
    }
    let elapsed = started.elapsed();

    let drain_deadline = Instant::now() + Duration::from_millis(LAG_DRAIN_TIMEOUT_MS);
    while received_count.load(Ordering::Relaxed) < committed_events
        && Instant::now() < drain_deadline
        && !subscriber.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let a wrongly repeated delivery show up before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    subscriber.abort();
    match subscriber.await {
        Ok(Err(error)) => return Err(format!("the subscriber failed: {error}").into()),
        Err(join) if join.is_panic() => return Err(join.into()),
        // Cancelled by the abort above: the subscriber never ends by itself.
        _ => {}
    }
    close(database).await;

    let commits = commits.lock().expect("commit times lock");
    let received = received.lock().expect("received events lock");
    let mut commit_to_receive = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?;
    let mut insert_to_receive = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?;
    let mut received_before_commit_returned = 0;
    let mut seen = HashSet::new();
    let mut duplicate_events = 0;
    for event in received.iter() {
        if !seen.insert((event.aggregate_id.as_str(), event.sequence)) {
            duplicate_events += 1;
            continue;
        }
        let Some(committed) = commits.get(&event.aggregate_id) else {
            return Err(format!("received {} which no writer wrote", event.aggregate_id).into());
        };
        if event.at < *committed {
            received_before_commit_returned += 1;
        }
        let lag = event.at.saturating_duration_since(*committed);
        commit_to_receive.saturating_record(lag.as_micros() as u64);
        let since_insert = (event.wall_micros - event.recorded_at_micros).max(0);
        insert_to_receive.saturating_record(since_insert as u64);
    }
    Ok(LagRun {
        committed_events,
        received_events: seen.len() as u64,
        duplicate_events,
        elapsed,
        commit_to_receive,
        received_before_commit_returned,
        insert_to_receive,
    })
}

fn wall_clock_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as i64)
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------

fn print_summary(rows: &[SummaryRow]) {
    println!("\n== Summary");
    let measure_width = rows.iter().map(|row| row.measure.len()).max().unwrap_or(0);
    let figure_width = rows.iter().map(|row| row.figure.len()).max().unwrap_or(0);
    let target_width = rows.iter().map(|row| row.target.len()).max().unwrap_or(0);
    println!(
        "{:<measure_width$} | {:<figure_width$} | {:<target_width$} | met",
        "measure", "figure", "target"
    );
    println!(
        "{}-+-{}-+-{}-+----",
        "-".repeat(measure_width),
        "-".repeat(figure_width),
        "-".repeat(target_width)
    );
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<measure_width$} | {:<figure_width$} | {:<target_width$} | {met}",
            row.measure, row.figure, row.target
        );
    }
}
