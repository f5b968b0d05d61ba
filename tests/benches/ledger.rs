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

use event_store::log::SubscriptionSettings;
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, LogCursor, LogReader, Mode, NewEvent, RecordedEvent};
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
/// How often the lag run looks for outside transactions holding the log's horizon back.
const HORIZON_SAMPLE_INTERVAL_MS: u64 = 5;
/// The log's horizon is server-wide: any transaction with an xid, in any database, hides
/// every event with a later xid until it ends. This names the oldest such transaction that
/// is not one of the benchmark's own writers (client sessions of this database), with its
/// xid (32 bits, without the epoch).
const OUTSIDE_HORIZON_HOLDERS_SQL: &str = "\
    SELECT backend_xid::text::bigint, \
           coalesce(datname, '-') || ' ' || backend_type || ': ' \
           || left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 60) \
    FROM pg_stat_activity \
    WHERE backend_xid IS NOT NULL \
      AND (datname IS DISTINCT FROM current_database() OR backend_type <> 'client backend') \
    ORDER BY age(backend_xid) DESC \
    LIMIT 1";
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
        .filter(|argument| !argument.starts_with("--") && argument != "rebuild-profile")
        .collect();
    if let Some(unknown) = requested
        .iter()
        .find(|name| !Section::ALL.iter().any(|section| section.name() == *name))
    {
        return Err(
            format!("unknown section {unknown:?}: choose from append, rebuild, lag").into(),
        );
    }
    // Always in this order: the lag section reuses the rebuild's million-event log.
    let sections: Vec<Section> = Section::ALL
        .into_iter()
        .filter(|section| {
            requested.is_empty() || requested.iter().any(|name| name == section.name())
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&sections))
}

async fn run(sections: &[Section]) -> BenchResult<()> {
    let started = Instant::now();
    describe_server().await?;
    let mut summary = Vec::new();
    let mut filled_log = None;
    for section in sections {
        match section {
            Section::Append => append_section(&mut summary).await?,
            Section::Rebuild => filled_log = Some(rebuild_section(&mut summary).await?),
            Section::Lag => lag_section(&mut summary, filled_log.as_ref()).await?,
        }
    }
    if let Some(database) = filled_log {
        close(database).await;
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
         shared_buffers={shared_buffers}), client and server sharing {cores} cores, load average {}",
        load_average()
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
        "   each level: a fresh database, then pgbench, ours, ours, pgbench in it ({} s each; the \
         two sides' load and fsync weather averaged), each side's figure the mean of its two \
         runs",
        APPEND_MEASURE_SECONDS
    );
    println!(
        "   {:>11} | {:>22} | {:>22} | {:>12}",
        "concurrency", "ours events/s (runs)", "pgbench events/s (runs)", "ours/pgbench"
    );
    for concurrency in APPEND_CONCURRENCY_LEVELS {
        let database = TestDatabase::new().await;
        let pgbench_first = run_pgbench(&database.url, &script_path, concurrency, 1).await?;
        let ours_first = append_throughput(&database.pool, concurrency, 1).await?;
        let ours_second = append_throughput(&database.pool, concurrency, 2).await?;
        let pgbench_second = run_pgbench(&database.url, &script_path, concurrency, 2).await?;
        close(database).await;
        let ours = (ours_first + ours_second) / 2.0;
        let pgbench = (pgbench_first.events_per_second + pgbench_second.events_per_second) / 2.0;
        let ratio = ours / pgbench;
        println!(
            "   {concurrency:>11} | {:>22} | {:>22} | {ratio:>12.2}",
            format!("{ours:.0} ({ours_first:.0}, {ours_second:.0})"),
            format!(
                "{pgbench:.0} ({:.0}, {:.0})",
                pgbench_first.events_per_second, pgbench_second.events_per_second
            ),
        );
        println!(
            "     pgbench: {}   (load average {})",
            pgbench_second.command,
            load_average()
        );
        let failed = pgbench_first.failed_transactions + pgbench_second.failed_transactions;
        if failed > 0 {
            println!("     warning: pgbench reported {failed} failed transactions");
        }
        summary.push(
            SummaryRow::new(
                format!("append c={concurrency}: ours / pgbench events/s"),
                format!("{ours:.0} / {pgbench:.0} = {ratio:.2}"),
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
/// so `:run` (`-D run=N`), `:client_id` and `:command` name a new stream every time.
fn pgbench_script() -> BenchResult<String> {
    let mut rows = Vec::new();
    for event in command_events("unused", "req_pgbench_00000") {
        rows.push(format!(
            "  ({}, 'pi_pgbench' || :run || '_' || :client_id || '_' || :command, {}, {}, {}, {}, \
             {})",
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
    run: u32,
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
        "-D".into(),
        format!("run={run}"),
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

/// Events per second that `concurrency` writers append; `run` keeps each call's streams
/// apart from the others' in the same database.
async fn append_throughput(pool: &PgPool, concurrency: usize, run: u32) -> BenchResult<f64> {
    run_appenders(
        pool,
        concurrency,
        Duration::from_millis(APPEND_WARMUP_MS),
        format!("warm{run}"),
    )
    .await?;
    let started = Instant::now();
    let events = run_appenders(
        pool,
        concurrency,
        Duration::from_secs(APPEND_MEASURE_SECONDS),
        format!("run{run}"),
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
    label: String,
) -> BenchResult<u64> {
    let deadline = Instant::now() + duration;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..concurrency {
        let pool = pool.clone();
        let label = label.clone();
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

/// How `event_store::log::read_headers_after` ordered the log before commit fe04301. `txid`
/// there names the select list's `txid::text::bigint AS txid`, not the column: PostgreSQL
/// resolves a bare ORDER BY name to an output column first, so no index matches and every
/// read sorts all the events after the cursor. Kept to show the difference in the profile.
const CURRENT_ORDER_BY: &str = "ORDER BY txid, position";
/// The same order on the table's columns, which the `events_log_order` index serves (what
/// the code does now).
const PROPOSED_ORDER_BY: &str = "ORDER BY events.txid, events.position";

/// The query of `read_headers_after` (keep the two in step) with `order_by` and the
/// `metadata` column's expression; the cursor and limit are SQL text: `$1`.. placeholders,
/// or literals for EXPLAIN.
fn headers_sql(order_by: &str, metadata: &str, txid: &str, position: &str, limit: &str) -> String {
    format!(
        "SELECT position, txid::text::bigint AS txid, aggregate_type, aggregate_id, sequence, \
                event_type, event_version, '' AS payload, {metadata}, recorded_at, \
                '\\x'::bytea AS prev_hash, '\\x'::bytea AS hash \
         FROM events \
         WHERE (txid, position) > ({txid}::text::xid8, {position}) \
           AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         {order_by} \
         LIMIT {limit}"
    )
}

/// Returns the filled database, for the lag section to measure over a long log.
async fn rebuild_section(summary: &mut Vec<SummaryRow>) -> BenchResult<TestDatabase> {
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

    // The step-by-step profile (and the comparison with the old, unindexed log order) is
    // diagnostic and slow: only on request, `-- rebuild-profile`.
    if std::env::args().any(|argument| argument == "rebuild-profile") {
        profile_rebuild(&pool, elapsed, summary).await?;
    }
    Ok(database)
}

/// Where a rebuild's time goes: the rebuild's own loop, timed step by step into a scratch
/// schema, as it is today and with each proposed change added in turn (`REPLAY_VARIANTS`),
/// with the CPU each side used; then the server's side of one read of today's query and of
/// the proposed one (EXPLAIN ANALYZE runs the query but sends no rows).
async fn profile_rebuild(
    pool: &PgPool,
    rebuild_elapsed: Duration,
    summary: &mut Vec<SummaryRow>,
) -> BenchResult<()> {
    let counting = Instant::now();
    let _: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE txid < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .fetch_one(pool)
    .await?;
    println!(
        "   profile: the rebuild's first step, count(*) of readable events: {:.0} ms; then its \
         batch loop, timed per step, into a scratch schema:",
        counting.elapsed().as_secs_f64() * 1000.0
    );
    let mut middle_cursor = LogCursor::START;
    for variant in REPLAY_VARIANTS {
        let cpu_before = CpuUse::measure(pool).await?;
        let replay = replay_rebuild(pool, variant).await?;
        let cpu = CpuUse::measure(pool).await?.since(&cpu_before);
        let events_per_second = REBUILD_EVENTS as f64 / replay.elapsed.as_secs_f64();
        if variant.in_summary {
            summary.push(SummaryRow::new(
                format!("  profile replay, {}", variant.label),
                format!("{events_per_second:.0} events/s (not in the code yet)"),
            ));
        }
        middle_cursor = replay.middle_cursor;
        println!(
            "     {}: {} batches of up to {REBUILD_BATCH_EVENTS}, {:.0} ms = {:.0} events/s; \
             CPU: benchmark process {:.0} ms, its database's server backends {}",
            variant.label,
            replay.batches,
            replay.elapsed.as_secs_f64() * 1000.0,
            events_per_second,
            cpu.client.as_secs_f64() * 1000.0,
            cpu.server
                .map_or("unknown (remote server)".to_string(), |server| {
                    let reading = cpu
                        .server_by_pid
                        .get(&replay.reader_backend_pid)
                        .copied()
                        .unwrap_or_default();
                    format!(
                        "{:.0} ms (reads {:.0} ms, applies {:.0} ms; parallel query workers \
                         not counted)",
                        server.as_secs_f64() * 1000.0,
                        reading.as_secs_f64() * 1000.0,
                        server.saturating_sub(reading).as_secs_f64() * 1000.0
                    )
                }),
        );
        let read_step = if variant.read_ahead {
            "waiting for the read-ahead (query, transfer, decode)"
        } else {
            "read (query, transfer, decode)"
        };
        for (step, part) in [
            (read_step, replay.read),
            ("StreamIndex::apply (fold, parse, upsert)", replay.apply),
            ("commit", replay.commit),
            (
                "create the secondary indexes after the load",
                replay.indexes,
            ),
        ] {
            if part.is_zero() {
                continue;
            }
            println!(
                "       {step:<52} {:>7.0} ms {:>5.1}%  {:>6.1} ms per batch",
                part.as_secs_f64() * 1000.0,
                100.0 * part.as_secs_f64() / replay.elapsed.as_secs_f64(),
                part.as_secs_f64() * 1000.0 / f64::from(replay.batches.max(1))
            );
        }
    }
    println!(
        "     (the timed rebuild took {:.0} ms)",
        rebuild_elapsed.as_secs_f64() * 1000.0
    );
    for (label, order_by) in [
        ("old (bare txid)", CURRENT_ORDER_BY),
        ("current (events.txid)", PROPOSED_ORDER_BY),
    ] {
        let query = headers_sql(
            order_by,
            ALL_METADATA,
            &format!("'{}'", middle_cursor.txid),
            &middle_cursor.position.to_string(),
            &REBUILD_BATCH_EVENTS.to_string(),
        );
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {query}"))
                .fetch_all(pool)
                .await?;
        println!("     server side of {label} read, batch from the middle of the log:");
        for line in plan.iter().filter(|line| !is_jit_detail(line)) {
            println!("       {line}");
        }
    }
    Ok(())
}

fn is_jit_detail(plan_line: &str) -> bool {
    let trimmed = plan_line.trim_start();
    ["JIT:", "Functions:", "Options:", "Timing:"]
        .iter()
        .any(|prefix| trimmed.starts_with(prefix))
}

/// CPU time used so far by this process and, when the server runs on this machine, by the
/// server backends connected to the pool's database (from /proc).
struct CpuUse {
    client: Duration,
    server: Option<Duration>,
    server_by_pid: HashMap<i32, Duration>,
}

/// /proc reports CPU time in USER_HZ ticks, 100 a second on Linux.
const PROC_TICKS_PER_SECOND: u64 = 100;

impl CpuUse {
    async fn measure(pool: &PgPool) -> BenchResult<CpuUse> {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()",
        )
        .fetch_all(pool)
        .await?;
        let server_by_pid: HashMap<i32, Duration> = pids
            .into_iter()
            .filter_map(|pid| process_cpu(&pid.to_string()).map(|cpu| (pid, cpu)))
            .collect();
        Ok(CpuUse {
            client: process_cpu("self").unwrap_or_default(),
            server: (!server_by_pid.is_empty()).then(|| server_by_pid.values().sum()),
            server_by_pid,
        })
    }

    /// Use between `earlier` and this; backends that connected meanwhile count from zero.
    fn since(&self, earlier: &CpuUse) -> CpuUse {
        let server_by_pid: HashMap<i32, Duration> = self
            .server_by_pid
            .iter()
            .map(|(pid, cpu)| {
                let before = earlier.server_by_pid.get(pid).copied().unwrap_or_default();
                (*pid, cpu.saturating_sub(before))
            })
            .collect();
        CpuUse {
            client: self.client.saturating_sub(earlier.client),
            server: self.server.map(|_| server_by_pid.values().sum()),
            server_by_pid,
        }
    }
}

/// User plus system CPU time of a process of this machine, from `/proc/<pid>/stat`.
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is the first, utime the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / PROC_TICKS_PER_SECOND,
    ))
}

/// One way of running the rebuild's batch loop.
#[derive(Clone, Copy)]
struct ReplayVariant {
    label: &'static str,
    order_by: &'static str,
    /// Read the next batch on a second connection while this one is applied.
    read_ahead: bool,
    /// Drop the non-unique indexes of the fresh schema before the load and create them
    /// after it (unique ones stay: ON CONFLICT needs them).
    defer_secondary_indexes: bool,
    /// Batch commits do not wait for the WAL flush: a crash loses only rebuild work, which
    /// starts again from zero anyway.
    asynchronous_commit: bool,
    metadata: &'static str,
    in_summary: bool,
}

const ALL_METADATA: &str = "metadata::text AS metadata";
/// The stream index reads metadata only from a stream's first event.
const FIRST_EVENT_METADATA: &str =
    "CASE WHEN sequence = 1 THEN metadata::text ELSE '{}' END AS metadata";

const TODAY: ReplayVariant = ReplayVariant {
    label: "old read_headers_after (bare txid)",
    order_by: CURRENT_ORDER_BY,
    read_ahead: false,
    defer_secondary_indexes: false,
    asynchronous_commit: false,
    metadata: ALL_METADATA,
    in_summary: false,
};

const REPLAY_VARIANTS: [ReplayVariant; 6] = [
    TODAY,
    ReplayVariant {
        label: "A: ORDER BY events.txid, events.position",
        order_by: PROPOSED_ORDER_BY,
        in_summary: true,
        ..TODAY
    },
    ReplayVariant {
        label: "A + B: next batch read while one is applied",
        order_by: PROPOSED_ORDER_BY,
        read_ahead: true,
        in_summary: true,
        ..TODAY
    },
    ReplayVariant {
        label: "A + B + C: secondary indexes built after the load",
        order_by: PROPOSED_ORDER_BY,
        read_ahead: true,
        defer_secondary_indexes: true,
        ..TODAY
    },
    ReplayVariant {
        label: "A + B + C + D: synchronous_commit off for batches",
        order_by: PROPOSED_ORDER_BY,
        read_ahead: true,
        defer_secondary_indexes: true,
        asynchronous_commit: true,
        ..TODAY
    },
    ReplayVariant {
        label: "A + B + C + D + E: metadata of first events only",
        order_by: PROPOSED_ORDER_BY,
        read_ahead: true,
        defer_secondary_indexes: true,
        asynchronous_commit: true,
        metadata: FIRST_EVENT_METADATA,
        in_summary: false,
    },
];

struct RebuildReplay {
    batches: u32,
    elapsed: Duration,
    read: Duration,
    apply: Duration,
    commit: Duration,
    indexes: Duration,
    middle_cursor: LogCursor,
    /// The server backend that ran the reads.
    reader_backend_pid: i32,
}

/// `ProjectionRuntime::rebuild`'s batch loop, run as `variant` says, into a fresh scratch
/// schema; checks the result.
async fn replay_rebuild(pool: &PgPool, variant: ReplayVariant) -> BenchResult<RebuildReplay> {
    {
        let mut transaction = pool.begin().await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {PROFILE_SCHEMA} CASCADE"))
            .execute(&mut *transaction)
            .await?;
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
    let started = Instant::now();
    let deferred_indexes: Vec<(String, String)> = if variant.defer_secondary_indexes {
        sqlx::query_as(
            "SELECT index_class.relname::text, pg_get_indexdef(index.indexrelid) \
             FROM pg_index AS index \
             JOIN pg_class AS index_class ON index_class.oid = index.indexrelid \
             JOIN pg_namespace AS schema ON schema.oid = index_class.relnamespace \
             WHERE schema.nspname = $1 AND NOT index.indisunique",
        )
        .bind(PROFILE_SCHEMA)
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };
    for (name, _) in &deferred_indexes {
        sqlx::query(&format!("DROP INDEX {PROFILE_SCHEMA}.\"{name}\""))
            .execute(pool)
            .await?;
    }

    let read_sql = headers_sql(variant.order_by, variant.metadata, "$1", "$2", "$3");
    let middle_batch = (REBUILD_EVENTS / REBUILD_BATCH_EVENTS / 2) as u32;
    let mut replay = RebuildReplay {
        batches: 0,
        elapsed: Duration::ZERO,
        read: Duration::ZERO,
        apply: Duration::ZERO,
        commit: Duration::ZERO,
        indexes: Duration::ZERO,
        middle_cursor: LogCursor::START,
        reader_backend_pid: 0,
    };
    // Batches come from a reader task: ahead of the applier when `read_ahead`, else one
    // at a time, on request.
    let (batch_sender, mut batches) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(1);
    let (request_sender, mut requests) = tokio::sync::mpsc::channel::<()>(1);
    let reader = {
        let pool = pool.clone();
        let read_ahead = variant.read_ahead;
        tokio::spawn(async move {
            let mut connection = pool.acquire().await?;
            let backend_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *connection)
                .await?;
            let mut cursor = LogCursor::START;
            loop {
                if !read_ahead && requests.recv().await.is_none() {
                    return BenchResult::Ok(backend_pid);
                }
                let events: Vec<RecordedEvent> = sqlx::query_as(&read_sql)
                    .bind(cursor.txid)
                    .bind(cursor.position)
                    .bind(REBUILD_BATCH_EVENTS)
                    .fetch_all(&mut *connection)
                    .await?;
                let last = events.last().map(RecordedEvent::cursor);
                if batch_sender.send(events).await.is_err() {
                    return Ok(backend_pid);
                }
                match last {
                    Some(last) => cursor = last,
                    None => return Ok(backend_pid),
                }
            }
        })
    };
    let mut cursor = LogCursor::START;
    loop {
        let reading = Instant::now();
        if !variant.read_ahead {
            request_sender.send(()).await?;
        }
        let events = batches.recv().await.unwrap_or_default();
        replay.read += reading.elapsed();
        let Some(last) = events.last() else {
            break;
        };
        if replay.batches == middle_batch {
            replay.middle_cursor = cursor;
        }
        cursor = last.cursor();
        replay.batches += 1;
        let mut transaction = pool.begin().await?;
        sqlx::query(&format!(
            "SET LOCAL search_path TO {PROFILE_SCHEMA}, public"
        ))
        .execute(&mut *transaction)
        .await?;
        if variant.asynchronous_commit {
            sqlx::query("SET LOCAL synchronous_commit TO off")
                .execute(&mut *transaction)
                .await?;
        }
        let applying = Instant::now();
        StreamIndex.apply(&mut transaction, &events).await?;
        replay.apply += applying.elapsed();
        let committing = Instant::now();
        transaction.commit().await?;
        replay.commit += committing.elapsed();
    }
    drop(request_sender);
    replay.reader_backend_pid = reader.await??;
    let indexing = Instant::now();
    for (_, definition) in &deferred_indexes {
        sqlx::query(definition).execute(pool).await?;
    }
    replay.indexes = indexing.elapsed();
    replay.elapsed = started.elapsed();

    let (streams, counted): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), coalesce(sum(event_count), 0)::bigint FROM {PROFILE_SCHEMA}.streams"
    ))
    .fetch_one(pool)
    .await?;
    sqlx::query(&format!("DROP SCHEMA {PROFILE_SCHEMA} CASCADE"))
        .execute(pool)
        .await?;
    if counted != REBUILD_EVENTS {
        return Err(format!(
            "replay {:?} indexed {counted} events in {streams} streams, not {REBUILD_EVENTS}",
            variant.label
        )
        .into());
    }
    Ok(replay)
}

// ---------------------------------------------------------------------------------------
// 3. Live subscription lag
// ---------------------------------------------------------------------------------------

struct Received {
    aggregate_id: String,
    sequence: i64,
    txid: i64,
    at: Instant,
    wall_micros: i64,
    recorded_at_micros: i64,
}

/// The oldest outside transaction holding the log's horizon back, as sampled at `at`.
struct HorizonSample {
    at: Instant,
    xid: i64,
    holder: String,
}

struct LagRun {
    committed_events: u64,
    received_events: u64,
    duplicate_events: u64,
    elapsed: Duration,
    /// Subscriber's receipt − the writer's `commit().await` returning, both `Instant`s.
    commit_to_receive: Histogram<u64>,
    /// The same, for events during whose wait the sampler saw no outside transaction
    /// holding the horizon back.
    commit_to_receive_unheld: Histogram<u64>,
    /// What held the horizon back, with how many samples saw it, most seen first.
    outside_horizon_holders: Vec<(String, u64)>,
    /// Received before the writer saw its commit return (counted as 0 in the histogram).
    received_before_commit_returned: u64,
    /// Subscriber's wall clock − `recorded_at` (`clock_timestamp()` at insert, so it
    /// includes the rest of the writing transaction and its commit).
    insert_to_receive: Histogram<u64>,
}

async fn lag_section(
    summary: &mut Vec<SummaryRow>,
    filled_log: Option<&TestDatabase>,
) -> BenchResult<()> {
    println!(
        "\n== 3. Live subscription lag: one LogReader::subscribe subscriber (default settings) \
         from the end of the log, {LAG_WRITERS} writers appending {EVENTS_PER_COMMAND}-event \
         commands"
    );
    println!("   reproduce: {BENCH_COMMAND} -- lag   (with the 1M-event log: -- rebuild lag)");
    println!(
        "   lag = subscriber's receipt of the batch − the writer's commit().await returning \
         (client-side Instants, one process; joined by stream)"
    );
    let steady = format!("steady {LAG_STEADY_EVENTS_PER_SECOND} events/s");
    let mut runs = vec![
        (
            format!("{steady}, empty log"),
            Some(LAG_STEADY_EVENTS_PER_SECOND),
            LAG_STEADY_SECONDS,
            None,
        ),
        (
            "max rate, empty log".to_string(),
            None,
            LAG_MAX_RATE_SECONDS,
            None,
        ),
    ];
    match filled_log {
        Some(database) => runs.push((
            format!("{steady}, after {REBUILD_EVENTS} events"),
            Some(LAG_STEADY_EVENTS_PER_SECOND),
            LAG_STEADY_SECONDS,
            Some(&database.pool),
        )),
        None => println!(
            "   (no {REBUILD_EVENTS}-event log to measure over: run the rebuild section too)"
        ),
    }
    for (label, rate, seconds, log) in runs {
        let duration = Duration::from_secs(seconds);
        let run = match log {
            Some(pool) => lag_run(pool, rate, duration).await?,
            None => {
                let database = TestDatabase::new().await;
                let run = lag_run(&database.pool, rate, duration).await;
                close(database).await;
                run?
            }
        };
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
        let unheld = &run.commit_to_receive_unheld;
        println!(
            "     commit→receive ms, the {} events whose wait saw no outside horizon holder: \
             p50 {:.1}  p99 {:.1}  max {:.1}",
            unheld.len(),
            millis(unheld.value_at_quantile(0.50)),
            millis(unheld.value_at_quantile(0.99)),
            millis(unheld.max())
        );
        for (holder, samples) in run.outside_horizon_holders.iter().take(3) {
            println!(
                "     outside transaction holding the horizon, seen in {samples} samples \
                 ({} ms): {holder}",
                samples * HORIZON_SAMPLE_INTERVAL_MS
            );
        }
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
                format!(
                    "p50 {p50:.1} ms, p99 {p99:.1} ms (unheld p99 {:.1} ms)",
                    millis(run.commit_to_receive_unheld.value_at_quantile(0.99))
                ),
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
/// one subscriber following the log from its current end.
async fn lag_run(
    pool: &PgPool,
    events_per_second: Option<u64>,
    duration: Duration,
) -> BenchResult<LagRun> {
    let end: Option<(i64, i64)> = sqlx::query_as(
        "SELECT txid::text::bigint, position FROM events \
         ORDER BY events.txid DESC, events.position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let start = end.map_or(LogCursor::START, |(txid, position)| LogCursor {
        txid,
        position,
    });
    let commits: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let received_count = Arc::new(AtomicU64::new(0));

    let outside_holders: Arc<Mutex<Vec<HorizonSample>>> = Arc::default();
    let sampler = {
        let pool = pool.clone();
        let outside_holders = Arc::clone(&outside_holders);
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval(Duration::from_millis(HORIZON_SAMPLE_INTERVAL_MS));
            loop {
                ticker.tick().await;
                let holder: Option<(i64, String)> = sqlx::query_as(OUTSIDE_HORIZON_HOLDERS_SQL)
                    .fetch_optional(&pool)
                    .await?;
                if let Some((xid, holder)) = holder {
                    outside_holders
                        .lock()
                        .expect("horizon samples lock")
                        .push(HorizonSample {
                            at: Instant::now(),
                            xid,
                            holder,
                        });
                }
            }
            #[allow(unreachable_code)]
            BenchResult::Ok(())
        })
    };
    let mut subscription = LogReader::new(pool.clone())
        .subscribe(start, SubscriptionSettings::default())
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
                        txid: event.txid,
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
    sampler.abort();
    match subscriber.await {
        Ok(Err(error)) => return Err(format!("the subscriber failed: {error}").into()),
        Err(join) if join.is_panic() => return Err(join.into()),
        // Cancelled by the abort above: the subscriber never ends by itself.
        _ => {}
    }

    let commits = commits.lock().expect("commit times lock");
    let received = received.lock().expect("received events lock");
    let outside_holders = outside_holders.lock().expect("horizon samples lock");
    let mut holder_samples: HashMap<&str, u64> = HashMap::new();
    for sample in outside_holders.iter() {
        *holder_samples.entry(sample.holder.as_str()).or_default() += 1;
    }
    let mut outside_horizon_holders: Vec<(String, u64)> = holder_samples
        .into_iter()
        .map(|(holder, samples)| (holder.to_string(), samples))
        .collect();
    outside_horizon_holders.sort_by_key(|(_, samples)| std::cmp::Reverse(*samples));
    let mut commit_to_receive = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?;
    let mut commit_to_receive_unheld =
        Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?;
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
        // Was an outside transaction older than this event's seen while it waited?
        let first_after_commit = outside_holders.partition_point(|sample| sample.at < *committed);
        let held = outside_holders[first_after_commit..]
            .iter()
            .take_while(|sample| sample.at <= event.at)
            .any(|sample| sample.xid < event.txid & 0xffff_ffff);
        if !held {
            commit_to_receive_unheld.saturating_record(lag.as_micros() as u64);
        }
        let since_insert = (event.wall_micros - event.recorded_at_micros).max(0);
        insert_to_receive.saturating_record(since_insert as u64);
    }
    Ok(LagRun {
        committed_events,
        received_events: seen.len() as u64,
        duplicate_events,
        elapsed,
        commit_to_receive,
        commit_to_receive_unheld,
        outside_horizon_holders,
        received_before_commit_returned,
        insert_to_receive,
    })
}

/// The machine's one-minute load average: how busy the shared cores were.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
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
