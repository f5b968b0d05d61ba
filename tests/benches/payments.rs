//! The payment benchmark: confirmed card charges per second through the real server, end to
//! end, beside the raw PostgreSQL ceiling of the ledger benchmark, and the latency of an
//! open-loop load at half the best rate.
//!
//! `cargo bench -p calmony-tests --bench payments` runs it all in one go. Each charge is one
//! `POST /v1/payment_intents` with `amount`, `currency=gbp`, a `payment_method` attached
//! earlier, `confirm=true` and a fresh `Idempotency-Key`: HTTP, API-key auth, the
//! idempotency claim, the intent's events, the Cardstream simulator on loopback, the
//! outcome's events with the stored answer, and the wait for the `api` read model. The
//! server is the `calmony serve` process of this profile (release under `cargo bench`) on a
//! fresh migrated database (`TestDatabase`) with the test-key rate limit out of the way.
//!
//! `-- profile` runs instead a server with statement-level debug logging and prints where a
//! charge's time goes (statements by kind, gateway calls); `-- charges profile` runs both.
//!
//! `CALMONY_BENCH_BASELINE=<another calmony binary>` measures that binary's server too,
//! alternately with this build's at every level between the same pgbench runs, so a change
//! is compared side by side on a machine whose load swings.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calmony_tests::{calmony_binary, run as run_cli, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, Mode, NewEvent};
use hdrhistogram::Histogram;
use sqlx::PgPool;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BENCH_COMMAND: &str = "cargo bench -p calmony-tests --bench payments";
/// Names another `calmony` binary (a baseline build) to measure alternately with this one in
/// the charges section: `CALMONY_BENCH_BASELINE=/tmp/calmony-before cargo bench …`.
const BASELINE_VARIABLE: &str = "CALMONY_BENCH_BASELINE";
/// With a baseline, each of the two servers may hold this many connections: both servers'
/// pools and pgbench's 32 clients must fit in PostgreSQL's default 100.
const COMPARED_MAX_CONNECTIONS: &str = "12";
const COMPARED_ENV: &[(&str, &str)] = &[("CALMONY_DB_MAX_CONNECTIONS", COMPARED_MAX_CONNECTIONS)];
/// `CALMONY_BENCH_LEVELS=8,32`: measure only these concurrency levels (each must divide
/// [`PAYMENT_METHODS`]); empty, none (then give the open loop its rate).
const LEVELS_VARIABLE: &str = "CALMONY_BENCH_LEVELS";
/// `CALMONY_BENCH_OPEN_RATE=200`: run the open loop at this rate (charges/s) instead of half
/// the best closed-loop rate: with a baseline, both servers then face the same arrivals.
const OPEN_RATE_VARIABLE: &str = "CALMONY_BENCH_OPEN_RATE";
const CONCURRENCY_LEVELS: [usize; 3] = [1, 8, 32];
const WARMUP_SECONDS: u64 = 2;
const MEASURE_SECONDS: u64 = 8;
/// Payment methods attached before measuring. Worker `w` of `c` charges the ones whose index
/// is `w` modulo `c` in turn, so no two workers share one (a charge refreshes its method's
/// gateway token: an append to the method's stream) and no method's stream grows long.
const PAYMENT_METHODS: usize = 256;
const SETUP_CONCURRENCY: usize = 8;
const AMOUNT_MINOR: u64 = 1999;

/// pgbench beside each level, as the ledger benchmark's append section: the same three
/// event rows in one transaction (its "one command"), and the charge's own writes.
const PGBENCH_SECONDS: u64 = 5;
const PGBENCH_PATH: &str = "/usr/bin/pgbench";
/// pgbench's worker threads: one per core of this machine at most.
const PGBENCH_MAX_THREADS: usize = 2;
const LEDGER_EVENTS_PER_COMMAND: usize = 3;
const RATIO_TARGET: f64 = 0.5;

const OPEN_LOOP_FRACTION: f64 = 0.5;
const OPEN_LOOP_WARMUP_SECONDS: u64 = 1;
const OPEN_LOOP_SECONDS: u64 = 8;
const OPEN_LOOP_P99_TARGET_MS: f64 = 25.0;

const PROFILE_SECONDS: u64 = 6;
const REUSE_CHARGES: usize = 600;
const REUSE_WINDOW: usize = 100;
/// How much of a statement names it in the profile, and how many rows each table shows.
const PROFILE_LABEL_CHARS: usize = 90;
const PROFILE_ROWS: usize = 16;
const WHAT_IF_CONCURRENCY: usize = 8;
const WHAT_IF_SECONDS: u64 = 6;
const PROFILE_LOG_FILTER: &str =
    "warn,read_api=info,sqlx::query=trace,cardstream=debug,sqlx::postgres::notice=warn";

/// Latency histogram bounds, in microseconds: 1 µs to 10 minutes.
const HISTOGRAM_MAX_MICROS: u64 = 600_000_000;
/// How many failed charges' answers to print.
const ERRORS_SHOWN: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Charges,
    Profile,
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
        match name.as_str() {
            "charges" => sections.push(Section::Charges),
            "profile" => sections.push(Section::Profile),
            other => {
                return Err(
                    format!("unknown section {other:?}: choose from charges, profile").into(),
                )
            }
        }
    }
    if sections.is_empty() {
        sections.push(Section::Charges);
    }
    // Built (or found up to date) before the clock starts: `cargo build` of this profile.
    let binary = calmony_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(binary, &sections))
}

async fn run(binary: &Path, sections: &[Section]) -> BenchResult<()> {
    let started = Instant::now();
    describe(binary).await?;
    let mut summary = Vec::new();
    for section in sections {
        match section {
            Section::Charges => charges_section(&mut summary).await?,
            Section::Profile => profile_section().await?,
        }
    }
    print_summary(&summary);
    println!(
        "\nwhole run: {:.0} s, load average at the end {}; reproduce: {BENCH_COMMAND}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

async fn describe(binary: &Path) -> BenchResult<()> {
    let database = TestDatabase::new().await;
    let (version, synchronous_commit, shared_buffers): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit'), \
                current_setting('shared_buffers')",
    )
    .fetch_one(&database.pool)
    .await?;
    close(database).await;
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    println!(
        "payments benchmark: {} ({}), PostgreSQL {version} (synchronous_commit={synchronous_commit}, \
         shared_buffers={shared_buffers}); server, database, simulator, pgbench and this client \
         share {cores} cores; load average {}",
        binary.display(),
        profile_of(binary),
        load_average()
    );
    println!("reproduce: {BENCH_COMMAND}");
    Ok(())
}

fn profile_of(binary: &Path) -> &'static str {
    let release = binary
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|name| name == "release");
    if release {
        "release build"
    } else {
        "DEBUG build: figures are not representative"
    }
}

/// Stops the server, drops its database, and removes its log unless the log holds anything
/// (the profile's statement log is always removed: it runs to tens of megabytes).
async fn stop(bench: Bench) {
    let Bench {
        database,
        server,
        log_path,
        ..
    } = bench;
    drop(server);
    close(database).await;
    let keep = std::fs::metadata(&log_path).is_ok_and(|metadata| metadata.len() > 0)
        && !log_path.to_string_lossy().contains("-profile-");
    if !keep {
        let _ = std::fs::remove_file(&log_path);
    }
}

async fn close(database: TestDatabase) {
    database.pool.close().await;
    drop(database);
}

// ---------------------------------------------------------------------------------------
// The server and its API
// ---------------------------------------------------------------------------------------

/// A running server on a fresh database with a test key and payment methods to charge.
struct Bench {
    database: TestDatabase,
    server: Server,
    log_path: PathBuf,
    api: Api,
    payment_methods: Vec<String>,
}

#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    authorization: String,
}

/// What one charge came back with.
enum Charged {
    Succeeded,
    Failed(String),
}

impl Api {
    fn new(base: &str, key: &str) -> BenchResult<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            base: base.to_string(),
            authorization: format!("Bearer {key}"),
        })
    }

    async fn post(&self, path: &str, body: String) -> BenchResult<(u16, Vec<u8>)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    async fn post_json(&self, path: &str, body: String) -> BenchResult<serde_json::Value> {
        let (status, body) = self.post(path, body).await?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status != 200 {
            return Err(format!("POST {path}: {status} {value}").into());
        }
        Ok(value)
    }

    /// One confirmed charge; the answer is checked without parsing all of it (this client
    /// shares the cores with the server).
    async fn charge(&self, payment_method: &str, idempotency_key: &str) -> Charged {
        let body = format!(
            "amount={AMOUNT_MINOR}&currency=gbp&payment_method={payment_method}&confirm=true"
        );
        let sent = self
            .client
            .post(format!("{}/v1/payment_intents", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("Idempotency-Key", idempotency_key)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Charged::Failed(format!("transport: {error}")),
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(body) if status == 200 && contains(&body, b"\"status\":\"succeeded\"") => {
                Charged::Succeeded
            }
            Ok(body) => Charged::Failed(format!(
                "{status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
            Err(error) => Charged::Failed(format!("{status}, body: {error}")),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Starts `calmony serve` on a fresh database with a new project and test key, and attaches
/// [`PAYMENT_METHODS`] cards to as many customers.
/// `database_settings` (`name = value`) are set on the database before the server connects.
///
/// `binary`: another `calmony` to serve with (a baseline); this build's when `None`.
/// `server_env`: more variables for the server.
async fn start_bench(
    log_filter: &str,
    label: &str,
    database_settings: &[&str],
    binary: Option<&Path>,
    server_env: &[(&str, &str)],
) -> BenchResult<Bench> {
    let database = TestDatabase::new().await;
    for setting in database_settings {
        let name: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&database.pool)
            .await?;
        sqlx::query(&format!("ALTER DATABASE \"{name}\" SET {setting}"))
            .execute(&database.pool)
            .await?;
    }
    let url = database.url.clone();
    let key = tokio::task::spawn_blocking(move || create_key(&url)).await??;
    let log_path = std::env::temp_dir().join(format!(
        "calmony-payments-bench-{label}-{}.log",
        std::process::id()
    ));
    let server = {
        let url = database.url.clone();
        let log_path = log_path.clone();
        let filter = log_filter.to_string();
        let binary = binary.map(Path::to_path_buf);
        let server_env: Vec<(String, String)> = server_env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut env = vec![
                ("CALMONY_RATE_LIMIT_TEST", "1000000"),
                ("CALMONY_LOG", filter.as_str()),
                ("NO_COLOR", "1"),
            ];
            env.extend(
                server_env
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            );
            match binary {
                Some(binary) => serve_with(&binary, &url, &env, &log_path),
                None => Ok(Server::spawn_with_log(
                    &url,
                    &["serve", "--addr", "127.0.0.1:0"],
                    &env,
                    Some(&log_path),
                )),
            }
        })
        .await??
    };
    let api = Api::new(&server.base_url, &key)?;
    wait_for_key(&api).await?;
    let payment_methods = attach_payment_methods(&api).await?;
    Ok(Bench {
        database,
        server,
        log_path,
        api,
        payment_methods,
    })
}

/// `calmony serve` from another binary (a baseline), as [`Server::spawn_with_log`] starts
/// this build's: on a free port, killed when dropped.
fn serve_with(
    binary: &Path,
    database_url: &str,
    env: &[(&str, &str)],
    log_path: &Path,
) -> BenchResult<Server> {
    use std::io::BufRead;
    let mut command = std::process::Command::new(binary);
    command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log_path)?);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base_url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    break url.trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                return Err(format!("{} exited before listening", binary.display()).into());
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Server { child, base_url })
}

fn create_key(database_url: &str) -> BenchResult<String> {
    let output = run_cli(
        database_url,
        &["projects", "create", "--name", "Bench Merchant"],
    );
    if !output.status.success() {
        return Err(format!("projects create: {}", stderr_of(&output)).into());
    }
    let project = stdout_of(&output).trim().to_string();
    let output = run_cli(
        database_url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    if !output.status.success() {
        return Err(format!("keys create: {}", stderr_of(&output)).into());
    }
    Ok(stdout_of(&output).trim().to_string())
}

/// The key exists once the `api_keys` projection has applied it.
async fn wait_for_key(api: &Api) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = api
            .client
            .get(format!("{}/v1/customers?limit=1", api.base))
            .header(reqwest::header::AUTHORIZATION, &api.authorization)
            .send()
            .await?;
        if response.status() == 200 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the key was not accepted: {}", response.status()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attach_payment_methods(api: &Api) -> BenchResult<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..SETUP_CONCURRENCY {
        let api = api.clone();
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut attached = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= PAYMENT_METHODS {
                    break;
                }
                let customer = api
                    .post_json(
                        "/v1/customers",
                        format!("name=Bench+Customer+{index}&email=bench{index}%40example.com"),
                    )
                    .await?;
                let customer = customer["id"].as_str().unwrap_or_default().to_string();
                let method = api
                    .post_json(
                        "/v1/payment_methods/pm_card_visa/attach",
                        format!("customer={customer}"),
                    )
                    .await?;
                let method = method["id"]
                    .as_str()
                    .ok_or_else(|| format!("no payment method id in {method}"))?;
                attached.push((index, method.to_string()));
            }
            BenchResult::Ok(attached)
        });
    }
    let mut attached = Vec::new();
    while let Some(joined) = workers.join_next().await {
        attached.extend(joined??);
    }
    attached.sort();
    Ok(attached.into_iter().map(|(_, method)| method).collect())
}

/// Lines of the server's log (warnings, errors) since `from` bytes, and the new length.
fn server_log_since(path: &Path, from: usize) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines = text
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .map(str::to_string)
        .collect();
    (lines, text.len())
}

// ---------------------------------------------------------------------------------------
// 1–3. Charges per second, beside pgbench; open-loop latency at half the best rate
// ---------------------------------------------------------------------------------------

async fn charges_section(summary: &mut Vec<SummaryRow>) -> BenchResult<()> {
    println!(
        "\n== Confirmed charges through `calmony serve` (closed loop: each client sends its \
         next charge when the last one answered), {WARMUP_SECONDS} s warm-up + \
         {MEASURE_SECONDS} s per level"
    );
    // Each server on a fresh database of its own; a baseline (when named) and this build are
    // measured one after the other at every level, between the same pgbench runs.
    let mut servers: Vec<(&str, Bench)> = Vec::new();
    if let Some(baseline) = std::env::var_os(BASELINE_VARIABLE).map(PathBuf::from) {
        println!(
            "   baseline ({BASELINE_VARIABLE}): {}, measured alternately with this build",
            baseline.display()
        );
        println!(
            "   both servers with CALMONY_DB_MAX_CONNECTIONS={COMPARED_MAX_CONNECTIONS}, so that \
             two pools and pgbench fit in the server's connections"
        );
        servers.push((
            "base",
            start_bench("warn", "baseline", &[], Some(&baseline), COMPARED_ENV).await?,
        ));
    }
    let setup_started = Instant::now();
    let server_env = if servers.is_empty() {
        &[][..]
    } else {
        COMPARED_ENV
    };
    servers.push((
        "ours",
        start_bench("warn", "charges", &[], None, server_env).await?,
    ));
    let compared = servers.len() > 1;
    for (name, bench) in &servers {
        println!(
            "   {name}: server {} on {}, {} payment methods attached; server log (removed at the end if empty): {}",
            bench.server.base_url,
            bench.database.url,
            bench.payment_methods.len(),
            bench.log_path.display()
        );
    }
    println!(
        "   set up in {:.1} s",
        setup_started.elapsed().as_secs_f64()
    );
    let shape = describe_one_charge(&servers[servers.len() - 1].1).await?;
    let mut log_offsets = vec![0; servers.len()];
    for (index, (name, bench)) in servers.iter().enumerate() {
        let (setup_warnings, offset) = server_log_since(&bench.log_path, log_offsets[index]);
        log_offsets[index] = offset;
        print_warnings(&format!("{name} setup"), &setup_warnings);
    }

    let ledger_script = write_script("ledger-command", &ledger_pgbench_script()?)?;
    let charge_script = write_script("charge-writes", &shape.pgbench_script)?;
    println!(
        "   ceilings: pgbench on a fresh database of the same server at the same concurrency, \
         {PGBENCH_SECONDS} s per run, run twice around ours (before and after) and averaged:"
    );
    println!(
        "     ledger   = the ledger benchmark's append script ({}): one transaction inserting \
         one command's {LEDGER_EVENTS_PER_COMMAND} event rows; its transactions/s is the ceiling \
         charges/s is compared with (ratio = charges/s / ledger tps)",
        ledger_script.display()
    );
    println!(
        "     charge-w = this charge's own writes replayed as rows ({}): {}; one pgbench \
         transaction = one charge's writes",
        charge_script.display(),
        shape.summary
    );
    println!(
        "   {:>3} | {:>4} | {:>10} | {:>7} | {:>7} | {:>7} | {:>19} | {:>19} | {:>11} | {:>8} | {:>5}",
        "c",
        "srv",
        "charges/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ledger tps (runs)",
        "charge-w tps (runs)",
        "ratio/ledger",
        "/charge-w",
        "load"
    );
    let mut best_rates: Vec<f64> = vec![0.0; servers.len()];
    let levels: Vec<usize> = match std::env::var(LEVELS_VARIABLE) {
        Ok(levels) => levels
            .split(',')
            .filter(|level| !level.trim().is_empty())
            .map(|level| level.trim().parse::<usize>())
            .collect::<Result<_, _>>()?,
        Err(_) => CONCURRENCY_LEVELS.to_vec(),
    };
    for (level_index, concurrency) in levels.into_iter().enumerate() {
        let pgbench_database = TestDatabase::new().await;
        let ledger_first = run_pgbench(&pgbench_database.url, &ledger_script, concurrency, 1)
            .await?
            .transactions_per_second;
        let charge_first = run_pgbench(&pgbench_database.url, &charge_script, concurrency, 2)
            .await?
            .transactions_per_second;
        // The server measured second pays for the first's aftermath (autovacuum of its
        // fresh rows, mostly): the order alternates from level to level.
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if level_index % 2 == 1 {
            order.reverse();
        }
        let mut measurements = Vec::new();
        for &index in &order {
            let bench = &servers[index].1;
            closed_loop(
                bench,
                concurrency,
                Duration::from_secs(WARMUP_SECONDS),
                &format!("warm{concurrency}"),
            )
            .await?;
            let cpu_before = CpuSample::take(bench.server.child.id());
            let measured = closed_loop(
                bench,
                concurrency,
                Duration::from_secs(MEASURE_SECONDS),
                &format!("run{concurrency}"),
            )
            .await?;
            let cpu = CpuSample::take(bench.server.child.id()).since(&cpu_before, measured.charges);
            measurements.push((index, measured, cpu, load_average()));
        }
        measurements.sort_by_key(|(index, ..)| *index);
        let charge_second = run_pgbench(&pgbench_database.url, &charge_script, concurrency, 3)
            .await?
            .transactions_per_second;
        let ledger_second =
            run_pgbench(&pgbench_database.url, &ledger_script, concurrency, 4).await?;
        close(pgbench_database).await;
        let ledger = (ledger_first + ledger_second.transactions_per_second) / 2.0;
        let charge_writes = (charge_first + charge_second) / 2.0;
        for ((name, bench), (index, measured, cpu, load)) in servers.iter().zip(measurements) {
            let rate = measured.charges_per_second();
            best_rates[index] = best_rates[index].max(rate);
            let ratio = rate / ledger;
            let charge_ratio = rate / charge_writes;
            println!(
                "   {concurrency:>3} | {name:>4} | {rate:>10.1} | {:>7.2} | {:>7.2} | {:>7.2} | {:>19} | {:>19} | \
                 {ratio:>11.3} | {charge_ratio:>8.3} | {load:>5}",
                millis(measured.latency.value_at_quantile(0.5)),
                millis(measured.latency.value_at_quantile(0.99)),
                millis(measured.latency.max()),
                format!(
                    "{ledger:.0} ({ledger_first:.0}, {:.0})",
                    ledger_second.transactions_per_second
                ),
                format!("{charge_writes:.0} ({charge_first:.0}, {charge_second:.0})"),
            );
            println!("        {cpu}");
            if measured.failed > 0 {
                println!(
                    "        warning: {} charges failed; first answers: {:?}",
                    measured.failed, measured.errors
                );
            }
            let (warnings, offset) = server_log_since(&bench.log_path, log_offsets[index]);
            log_offsets[index] = offset;
            print_warnings(&format!("{name} c={concurrency}"), &warnings);
            let who = if compared {
                format!("{name} ")
            } else {
                String::new()
            };
            summary.push(SummaryRow::new(
                format!("{who}c={concurrency}: charges/s (p50/p99; cpu/charge calmony+pg)"),
                format!(
                    "{rate:.1} ({:.1}/{:.1} ms; {:.1}+{:.1} ms), load {load}",
                    millis(measured.latency.value_at_quantile(0.5)),
                    millis(measured.latency.value_at_quantile(0.99)),
                    cpu.server_ms,
                    cpu.postgres_ms
                ),
            ));
            summary.push(
                SummaryRow::new(
                    format!("{who}c={concurrency}: charges/s / pgbench ledger tps (3-event txn)"),
                    format!("{rate:.1} / {ledger:.0} = {ratio:.3}"),
                )
                .with_target(format!("ratio >= {RATIO_TARGET}"), ratio >= RATIO_TARGET),
            );
            summary.push(SummaryRow::new(
                format!("{who}c={concurrency}: charges/s / pgbench charge-writes tps"),
                format!("{rate:.1} / {charge_writes:.0} = {charge_ratio:.3}"),
            ));
        }
        println!("        pgbench: {}", ledger_second.command);
    }

    let chosen_rate = std::env::var(OPEN_RATE_VARIABLE)
        .ok()
        .and_then(|rate| rate.parse::<f64>().ok())
        .filter(|rate| *rate > 0.0);
    for (index, (name, bench)) in servers.iter().enumerate() {
        let best_rate = best_rates[index];
        let rate = chosen_rate.unwrap_or(best_rate * OPEN_LOOP_FRACTION);
        if rate <= 0.0 {
            println!("\n== Open loop ({name}): no closed-loop level ran; set {OPEN_RATE_VARIABLE}");
            continue;
        }
        println!(
            "\n== Open loop ({name}): charges arriving at a fixed {rate:.1}/s ({:.0}% of its best {best_rate:.1}/s{}), \
             {OPEN_LOOP_WARMUP_SECONDS} s warm-up + {OPEN_LOOP_SECONDS} s; latency from each charge's \
             scheduled start (a late start counts against it)",
            rate / best_rate * 100.0,
            if chosen_rate.is_some() {
                format!(", set by {OPEN_RATE_VARIABLE}")
            } else {
                String::new()
            }
        );
        open_loop(
            bench,
            rate,
            Duration::from_secs(OPEN_LOOP_WARMUP_SECONDS),
            "openwarm",
        )
        .await?;
        let cpu_before = CpuSample::take(bench.server.child.id());
        let open = open_loop(bench, rate, Duration::from_secs(OPEN_LOOP_SECONDS), "open").await?;
        let cpu = CpuSample::take(bench.server.child.id()).since(&cpu_before, open.sent);
        let load = load_average();
        let p50 = millis(open.latency.value_at_quantile(0.5));
        let p99 = millis(open.latency.value_at_quantile(0.99));
        println!(
            "   sent {} in {:.1} s ({:.1}/s), {} failed, at most {} in flight; from scheduled start: \
             p50 {p50:.2} ms, p90 {:.2} ms, p99 {p99:.2} ms, max {:.2} ms; from send: p50 {:.2} ms, \
             p99 {:.2} ms; load average {load}",
            open.sent,
            open.elapsed.as_secs_f64(),
            open.sent as f64 / open.elapsed.as_secs_f64(),
            open.failed,
            open.max_in_flight,
            millis(open.latency.value_at_quantile(0.9)),
            millis(open.latency.max()),
            millis(open.service.value_at_quantile(0.5)),
            millis(open.service.value_at_quantile(0.99)),
        );
        println!("   {cpu}");
        if open.failed > 0 {
            println!("   warning: first failed answers: {:?}", open.errors);
        }
        let (warnings, _) = server_log_since(&bench.log_path, log_offsets[index]);
        print_warnings(&format!("{name} open loop"), &warnings);
        let who = if compared {
            format!("{name} ")
        } else {
            String::new()
        };
        let row = SummaryRow::new(
            format!(
                "{who}open loop {rate:.1}/s ({:.0}% of {best_rate:.1}): p50 / p99",
                rate / best_rate * 100.0
            ),
            format!(
                "{p50:.2} / {p99:.2} ms ({:.1}+{:.1} ms cpu), load {load}",
                cpu.server_ms, cpu.postgres_ms
            ),
        );
        // The target is set at half the best rate; a rate of one's choosing only compares.
        summary.push(match chosen_rate {
            Some(_) => row,
            None => row.with_target(
                format!("p99 < {OPEN_LOOP_P99_TARGET_MS} ms"),
                p99 < OPEN_LOOP_P99_TARGET_MS,
            ),
        });
    }
    for (_, bench) in servers {
        stop(bench).await;
    }
    Ok(())
}

fn print_warnings(when: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    println!(
        "        server logged {} warnings/errors ({when}); first: {}",
        lines.len(),
        lines[0]
    );
}

struct ClosedRun {
    charges: u64,
    failed: u64,
    errors: Vec<String>,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl ClosedRun {
    fn charges_per_second(&self) -> f64 {
        self.charges as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` clients charging until `duration` is up. Charges in flight at the deadline
/// finish and count: the clock stops after them.
async fn closed_loop(
    bench: &Bench,
    concurrency: usize,
    duration: Duration,
    label: &str,
) -> BenchResult<ClosedRun> {
    assert_eq!(PAYMENT_METHODS % concurrency, 0, "disjoint payment methods");
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let api = bench.api.clone();
        let methods: Vec<String> = bench
            .payment_methods
            .iter()
            .skip(worker)
            .step_by(concurrency)
            .cloned()
            .collect();
        let label = label.to_string();
        workers.spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?;
            let mut charges = 0u64;
            let mut failed = 0u64;
            let mut errors = Vec::new();
            let mut sequence = 0usize;
            while Instant::now() < deadline {
                let method = &methods[sequence % methods.len()];
                let key = format!("bench-{label}-{worker}-{sequence}");
                sequence += 1;
                let sent = Instant::now();
                match api.charge(method, &key).await {
                    Charged::Succeeded => {
                        latency.saturating_record(sent.elapsed().as_micros() as u64);
                        charges += 1;
                    }
                    Charged::Failed(error) => {
                        failed += 1;
                        if errors.len() < ERRORS_SHOWN {
                            errors.push(error);
                        }
                    }
                }
            }
            BenchResult::Ok((charges, failed, errors, latency))
        });
    }
    let mut run = ClosedRun {
        charges: 0,
        failed: 0,
        errors: Vec::new(),
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?,
    };
    while let Some(joined) = workers.join_next().await {
        let (charges, failed, errors, latency) = joined??;
        run.charges += charges;
        run.failed += failed;
        run.errors
            .extend(errors.into_iter().take(ERRORS_SHOWN - run.errors.len()));
        run.latency.add(&latency)?;
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

struct OpenRun {
    sent: u64,
    failed: u64,
    errors: Vec<String>,
    elapsed: Duration,
    max_in_flight: usize,
    /// From each charge's scheduled start to its answer.
    latency: Histogram<u64>,
    /// From the moment it was sent to its answer.
    service: Histogram<u64>,
}

/// Charges started at a fixed rate whatever the answers do, until `duration` is up; every
/// charge started is waited for.
async fn open_loop(
    bench: &Bench,
    rate: f64,
    duration: Duration,
    label: &str,
) -> BenchResult<OpenRun> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let started = tokio::time::Instant::now();
    let end = started + duration;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let mut run = OpenRun {
        sent: 0,
        failed: 0,
        errors: Vec::new(),
        elapsed: Duration::ZERO,
        max_in_flight: 0,
        latency: Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?,
        service: Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?,
    };
    let mut charges = tokio::task::JoinSet::new();
    loop {
        let scheduled = started + period.mul_f64(run.sent as f64);
        if scheduled >= end {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let api = bench.api.clone();
        let sequence = run.sent as usize;
        let method = bench.payment_methods[sequence % bench.payment_methods.len()].clone();
        let key = format!("bench-{label}-{sequence}");
        let in_flight = Arc::clone(&in_flight);
        let max_in_flight = Arc::clone(&max_in_flight);
        run.sent += 1;
        charges.spawn(async move {
            let now_in_flight = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            max_in_flight.fetch_max(now_in_flight, Ordering::Relaxed);
            let sent = tokio::time::Instant::now();
            let charged = api.charge(&method, &key).await;
            let answered = tokio::time::Instant::now();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            match charged {
                Charged::Succeeded => Ok((answered - scheduled, answered - sent)),
                Charged::Failed(error) => Err(error),
            }
        });
        // Collect what finished, so the set does not grow for the whole run.
        while let Some(joined) = charges.try_join_next() {
            run.record(joined?);
        }
    }
    while let Some(joined) = charges.join_next().await {
        run.record(joined?);
    }
    run.elapsed = started.elapsed();
    run.max_in_flight = max_in_flight.load(Ordering::Relaxed);
    Ok(run)
}

impl OpenRun {
    fn record(&mut self, charged: Result<(Duration, Duration), String>) {
        match charged {
            Ok((latency, service)) => {
                self.latency.saturating_record(latency.as_micros() as u64);
                self.service.saturating_record(service.as_micros() as u64);
            }
            Err(error) => {
                self.failed += 1;
                if self.errors.len() < ERRORS_SHOWN {
                    self.errors.push(error);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// What one charge writes, and pgbench scripts
// ---------------------------------------------------------------------------------------

/// An event as read back: txid, aggregate type and id, sequence, event type and version,
/// payload and metadata (as text).
type EventRow = (String, String, String, i64, String, String, String, String);

struct ChargeShape {
    /// e.g. "4 transactions (1+2+2+1 events) + the idempotency claim".
    summary: String,
    pgbench_script: String,
}

/// Makes one charge and reads back what it wrote: its events by transaction and its
/// idempotency record. Returns a pgbench script making the same writes.
async fn describe_one_charge(bench: &Bench) -> BenchResult<ChargeShape> {
    let key = "bench-shape-0";
    let method = &bench.payment_methods[0];
    let body = format!("amount={AMOUNT_MINOR}&currency=gbp&payment_method={method}&confirm=true");
    let response = bench
        .api
        .client
        .post(format!("{}/v1/payment_intents", bench.api.base))
        .header(reqwest::header::AUTHORIZATION, &bench.api.authorization)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header("Idempotency-Key", key)
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let intent: serde_json::Value = response.json().await?;
    if status != 200 || intent["status"] != "succeeded" {
        return Err(format!("the first charge did not succeed: {status} {intent}").into());
    }
    let pool: &PgPool = &bench.database.pool;
    // The method's token refresh carries the same idempotency key in its metadata.
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT txid::text, aggregate_type, aggregate_id, sequence, event_type, \
                    event_version, payload::text, metadata::text \
             FROM events WHERE metadata->>'idempotency_key' = $1 ORDER BY position",
    )
    .bind(key)
    .fetch_all(pool)
    .await?;
    let (project, mode, response_status, response_body): (String, String, i16, Vec<u8>) =
        sqlx::query_as(
            "SELECT project, mode, response_status, response_body FROM idempotency_keys \
             WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_one(pool)
        .await?;
    let mut transactions: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        match transactions.last_mut() {
            Some((txid, members)) if *txid == row.0 => members.push(index),
            _ => transactions.push((row.0.clone(), vec![index])),
        }
    }
    println!(
        "   one charge (intent {}) wrote {} events in {} transactions, plus its idempotency claim \
         (own statement) and stored answer ({} bytes, with the outcome's events):",
        intent["id"].as_str().unwrap_or_default(),
        rows.len(),
        transactions.len(),
        response_body.len()
    );
    for (txid, members) in &transactions {
        let events: Vec<String> = members
            .iter()
            .map(|&index| format!("{}/{} v{}", rows[index].1, rows[index].4, rows[index].3))
            .collect();
        println!("     txid {txid}: {}", events.join(", "));
    }
    // Which transaction stored the answer: the one with the intent's last event.
    let completing = transactions
        .iter()
        .rposition(|(_, members)| {
            members
                .iter()
                .any(|&index| rows[index].1 == "payment_intent")
        })
        .ok_or("no payment_intent events")?;

    // Each stream of the charge becomes a new stream per pgbench transaction, with its
    // versions renumbered from 1 (the trigger wants every predecessor present).
    let mut streams: BTreeMap<(String, String), (usize, i64)> = BTreeMap::new();
    let idempotency_key = "'pgbench' || :run || '_' || :client_id || '_' || :command";
    let mut script = format!(
        "\\set command :command + 1\n\
         INSERT INTO idempotency_keys (project, mode, idempotency_key, fingerprint, claim_id, \
         locked_until) VALUES ({}, {}, {idempotency_key}, sha256('bench'::bytea), \
         gen_random_uuid(), now() + interval '1 hour');\n",
        sql_text(&project),
        sql_text(&mode)
    );
    for (number, (_, members)) in transactions.iter().enumerate() {
        let mut values = Vec::new();
        for &index in members {
            let (_, aggregate_type, aggregate_id, _, event_type, event_version, payload, metadata) =
                &rows[index];
            let stream_count = streams.len();
            let entry = streams
                .entry((aggregate_type.clone(), aggregate_id.clone()))
                .or_insert((stream_count, 0));
            entry.1 += 1;
            values.push(format!(
                "  ({}, 's{}_' || :run || '_' || :client_id || '_' || :command, {}, {}, {}, {}, {})",
                sql_text(aggregate_type),
                entry.0,
                entry.1,
                sql_text(event_type),
                sql_text(event_version),
                sql_text(payload),
                sql_text(metadata),
            ));
        }
        script.push_str(&format!(
            "BEGIN;\nINSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES\n{};\n",
            values.join(",\n")
        ));
        if number == completing {
            script.push_str(&format!(
                "UPDATE idempotency_keys SET state = 'completed', locked_until = NULL, \
                 response_status = {response_status}, response_body = decode('{}', 'hex'), \
                 completed_at = now() WHERE project = {} AND mode = {} AND idempotency_key = \
                 {idempotency_key} AND generation = 1 AND state = 'in_flight';\n",
                hex(&response_body),
                sql_text(&project),
                sql_text(&mode)
            ));
        }
        script.push_str("COMMIT;\n");
    }
    let sizes: Vec<String> = transactions
        .iter()
        .map(|(_, members)| members.len().to_string())
        .collect();
    Ok(ChargeShape {
        summary: format!(
            "the claim INSERT, then {} transactions of {} events (the answer's UPDATE in \
             transaction {})",
            transactions.len(),
            sizes.join("+"),
            completing + 1
        ),
        pgbench_script: script,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn write_script(name: &str, script: &str) -> BenchResult<PathBuf> {
    let path = std::env::temp_dir().join(format!("calmony-payments-bench-{name}.sql"));
    std::fs::write(&path, script)?;
    Ok(path)
}

/// The ledger benchmark's command: a payment intent created, confirmed and succeeded (as in
/// `benches/ledger.rs`; keep the two in step).
fn ledger_command_events(aggregate_id: &str, request_id: &str) -> Vec<NewEvent> {
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

/// The ledger benchmark's pgbench script: [`ledger_command_events`] as one three-row INSERT
/// in its own transaction, a new stream each time.
fn ledger_pgbench_script() -> BenchResult<String> {
    let mut rows = Vec::new();
    for event in ledger_command_events("unused", "req_pgbench_00000") {
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
    assert_eq!(rows.len(), LEDGER_EVENTS_PER_COMMAND);
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
    transactions_per_second: f64,
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
        PGBENCH_SECONDS.to_string(),
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
    let failed = field("number of failed transactions: ").unwrap_or(0.0);
    if failed > 0.0 {
        println!("        warning: {command}: {failed} failed transactions");
    }
    Ok(PgbenchRun {
        transactions_per_second: field("tps = ")?,
        command,
    })
}

// ---------------------------------------------------------------------------------------
// Profile: where a charge's time goes, from the server's debug log
// ---------------------------------------------------------------------------------------

async fn profile_section() -> BenchResult<()> {
    println!(
        "\n== Profile A: the server logging every statement (CALMONY_LOG={PROFILE_LOG_FILTER}); \
         logging slows it down, so read the counts and shares, not the absolute times"
    );
    println!("   reproduce: {BENCH_COMMAND} -- profile");
    let bench = start_bench(PROFILE_LOG_FILTER, "profile", &[], None, &[]).await?;
    for concurrency in [1, WHAT_IF_CONCURRENCY] {
        let (_, start_offset) = server_log_since(&bench.log_path, 0);
        let cpu_before = CpuSample::take(bench.server.child.id());
        let run = closed_loop(
            &bench,
            concurrency,
            Duration::from_secs(PROFILE_SECONDS),
            &format!("profile{concurrency}"),
        )
        .await?;
        // Let the projections' last batches reach the log.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu = CpuSample::take(bench.server.child.id()).since(&cpu_before, run.charges);
        println!(
            "\n   A{concurrency}. c={concurrency} for {PROFILE_SECONDS} s: {} charges ({:.1}/s), \
             client-side p50 {:.2} ms, p99 {:.2} ms (with logging), {} failed; load average {}",
            run.charges,
            run.charges_per_second(),
            millis(run.latency.value_at_quantile(0.5)),
            millis(run.latency.value_at_quantile(0.99)),
            run.failed,
            load_average()
        );
        println!("   {cpu}");
        let text = std::fs::read_to_string(&bench.log_path)?;
        let log = text.get(start_offset..).unwrap_or_default();
        print_profile(log, run.charges as usize);
    }
    stop(bench).await;

    println!(
        "\n== Profile B: one payment method charged again and again ({REUSE_CHARGES} charges one \
         at a time); every approved charge appends PaymentMethodTokenRefreshed to the method's \
         stream, which each later charge loads (whole) several times"
    );
    let bench = start_bench("warn", "reuse", &[], None, &[]).await?;
    let method = &bench.payment_methods[0];
    let mut first = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?;
    let mut last = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?;
    for sequence in 0..REUSE_CHARGES {
        let sent = Instant::now();
        match bench
            .api
            .charge(method, &format!("bench-reuse-{sequence}"))
            .await
        {
            Charged::Succeeded => {}
            Charged::Failed(error) => return Err(format!("a charge failed: {error}").into()),
        }
        let micros = sent.elapsed().as_micros() as u64;
        if sequence < REUSE_WINDOW {
            first.saturating_record(micros);
        } else if sequence >= REUSE_CHARGES - REUSE_WINDOW {
            last.saturating_record(micros);
        }
    }
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'payment_method' AND aggregate_id = $1",
    )
    .bind(method)
    .fetch_one(&bench.database.pool)
    .await?;
    println!(
        "   charges 1–{REUSE_WINDOW}: p50 {:.2} ms; charges {}–{REUSE_CHARGES}: p50 {:.2} ms; the \
         method's stream now holds {events} events; load average {}",
        millis(first.value_at_quantile(0.5)),
        REUSE_CHARGES - REUSE_WINDOW + 1,
        millis(last.value_at_quantile(0.5)),
        load_average()
    );
    stop(bench).await;

    println!(
        "\n== Profile C: what commits cost. c={WHAT_IF_CONCURRENCY} for {WHAT_IF_SECONDS} s on a \
         fresh server as is, then on one whose database has synchronous_commit=off (every commit \
         stops waiting for its WAL flush: an upper bound for making only the projections' \
         commits, or the claim's, asynchronous), then as is again"
    );
    let mut rates = Vec::new();
    for (label, settings) in [
        ("as is", &[][..]),
        ("synchronous_commit=off", &["synchronous_commit = off"][..]),
        ("as is", &[][..]),
    ] {
        let bench = start_bench("warn", "what-if", settings, None, &[]).await?;
        closed_loop(
            &bench,
            WHAT_IF_CONCURRENCY,
            Duration::from_secs(WARMUP_SECONDS),
            "warm",
        )
        .await?;
        let cpu_before = CpuSample::take(bench.server.child.id());
        let run = closed_loop(
            &bench,
            WHAT_IF_CONCURRENCY,
            Duration::from_secs(WHAT_IF_SECONDS),
            "run",
        )
        .await?;
        let cpu = CpuSample::take(bench.server.child.id()).since(&cpu_before, run.charges);
        println!(
            "   {label:>22}: {:.1} charges/s, p50 {:.2} ms, p99 {:.2} ms, {} failed, load {}; {cpu}",
            run.charges_per_second(),
            millis(run.latency.value_at_quantile(0.5)),
            millis(run.latency.value_at_quantile(0.99)),
            run.failed,
            load_average()
        );
        rates.push(run.charges_per_second());
        stop(bench).await;
    }
    println!(
        "   synchronous_commit=off / as is (mean of the two): {:.2}",
        rates[1] / ((rates[0] + rates[2]) / 2.0)
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    count: u64,
    micros: f64,
}

/// One line of the server's log, as far as the profile needs it.
struct LogLine<'a> {
    micros_of_day: f64,
    request_id: Option<&'a str>,
    label: Option<String>,
    elapsed_micros: f64,
}

fn parse_log_line(line: &str) -> Option<LogLine<'_>> {
    // 2026-11-25T15:55:01.894445Z LEVEL span{…}: target: message fields
    let time = line.get(11..26)?;
    let hours: f64 = time.get(0..2)?.parse().ok()?;
    let minutes: f64 = time.get(3..5)?.parse().ok()?;
    let seconds: f64 = time.get(6..15)?.parse().ok()?;
    let micros_of_day = ((hours * 60.0 + minutes) * 60.0 + seconds) * 1_000_000.0;
    let request_id = line
        .find("http_request{request_id=")
        .and_then(|start| {
            let rest = &line[start + "http_request{request_id=".len()..];
            rest.split([' ', '}']).next()
        })
        .filter(|_| line.contains("path=/v1/payment_intents"));
    let (label, elapsed_micros) = if line.contains("sqlx::query") {
        let statement = quoted_field(line, "db.statement=")
            .filter(|statement| !statement.trim().is_empty())
            .or_else(|| quoted_field(line, "summary="))
            .unwrap_or_default();
        let statement = statement
            .replace("\\n", " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let label: String = statement.chars().take(PROFILE_LABEL_CHARS).collect();
        let elapsed = field_of(line, "elapsed=")
            .map(|elapsed| duration_micros(&elapsed))
            .unwrap_or_default();
        (Some(format!("sql {label}")), elapsed)
    } else if line.contains("Cardstream answered") {
        let action = quoted_field(line, "send{action=").unwrap_or_default();
        (
            Some(format!("gateway {action} (round trip incl. simulator)")),
            0.0,
        )
    } else if line.contains("request finished") {
        (
            Some("answer sent (render, write the response)".to_string()),
            0.0,
        )
    } else {
        (None, 0.0)
    };
    Some(LogLine {
        micros_of_day,
        request_id,
        label,
        elapsed_micros,
    })
}

/// Where a charge's time goes: for every step of a charge's request (a statement finishing,
/// a gateway answer), the time since the previous step of the same request; and the
/// statements outside requests (projections, background workers) per charge.
fn print_profile(log: &str, charges: usize) {
    let mut steps: BTreeMap<String, Tally> = BTreeMap::new();
    let mut statement_time: BTreeMap<(bool, String), Tally> = BTreeMap::new();
    let mut previous: HashMap<String, f64> = HashMap::new();
    let mut first: HashMap<String, f64> = HashMap::new();
    let mut request_wall = Tally::default();
    for line in log.lines() {
        let Some(parsed) = parse_log_line(line) else {
            continue;
        };
        let Some(label) = parsed.label else {
            continue;
        };
        if label.starts_with("sql ") {
            let tally = statement_time
                .entry((parsed.request_id.is_some(), label.clone()))
                .or_default();
            tally.count += 1;
            tally.micros += parsed.elapsed_micros;
        }
        let Some(request_id) = parsed.request_id else {
            continue;
        };
        let gap = match previous.insert(request_id.to_string(), parsed.micros_of_day) {
            Some(before) => parsed.micros_of_day - before,
            // The first step: its statement's own time (the request's start is not logged).
            None => {
                first.insert(
                    request_id.to_string(),
                    parsed.micros_of_day - parsed.elapsed_micros,
                );
                parsed.elapsed_micros
            }
        };
        let tally = steps.entry(label.clone()).or_default();
        tally.count += 1;
        tally.micros += gap;
        if label.starts_with("answer sent") {
            if let Some(started) = first.remove(request_id) {
                request_wall.count += 1;
                request_wall.micros += parsed.micros_of_day - started;
            }
            previous.remove(request_id);
        }
    }
    let per_charge = |tally: &Tally| tally.micros / charges as f64 / 1000.0;
    println!(
        "   a charge's request, {:.2} ms from its first statement to its answer, step by step \
         (time since the request's previous step, so a statement's row includes the work and \
         waiting before it):",
        request_wall.micros / request_wall.count.max(1) as f64 / 1000.0
    );
    let mut rows: Vec<(&String, &Tally)> = steps.iter().collect();
    rows.sort_by(|a, b| b.1.micros.total_cmp(&a.1.micros));
    println!("     {:>8} {:>10}  step", "n/charge", "ms/charge");
    for (label, tally) in rows.iter().take(PROFILE_ROWS) {
        println!(
            "     {:>8.2} {:>10.3}  {label}",
            tally.count as f64 / charges as f64,
            per_charge(tally)
        );
    }
    for in_request in [true, false] {
        let mut rows: Vec<(&String, &Tally)> = statement_time
            .iter()
            .filter(|((inside, _), _)| *inside == in_request)
            .map(|((_, label), tally)| (label, tally))
            .collect();
        rows.sort_by(|a, b| b.1.micros.total_cmp(&a.1.micros));
        let count: u64 = rows.iter().map(|(_, tally)| tally.count).sum();
        let total: f64 = rows.iter().map(|(_, tally)| per_charge(tally)).sum();
        let commits: u64 = rows
            .iter()
            .filter(|(label, _)| label.as_str() == "sql COMMIT")
            .map(|(_, tally)| tally.count)
            .sum();
        println!(
            "   statements {}: {:.1} per charge ({:.1} COMMITs), {total:.2} ms of statement time \
             per charge",
            if in_request {
                "in the charge's request"
            } else {
                "outside requests (projections following the log, sealer, recovery)"
            },
            count as f64 / charges as f64,
            commits as f64 / charges as f64,
        );
        println!(
            "     {:>8} {:>10} {:>8}  statement",
            "n/charge", "ms/charge", "avg ms"
        );
        for (label, tally) in rows.iter().take(PROFILE_ROWS) {
            println!(
                "     {:>8.2} {:>10.3} {:>8.3}  {label}",
                tally.count as f64 / charges as f64,
                per_charge(tally),
                tally.micros / tally.count.max(1) as f64 / 1000.0
            );
        }
    }
}

/// A quoted field's value in a tracing line (escaped quotes inside are kept escaped).
fn quoted_field(line: &str, name: &str) -> Option<String> {
    let start = line.find(name)? + name.len();
    let rest = line[start..].strip_prefix('"')?;
    let mut end = None;
    let mut escaped = false;
    for (index, character) in rest.char_indices() {
        match character {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => {
                end = Some(index);
                break;
            }
            _ => escaped = false,
        }
    }
    Some(rest[..end?].to_string())
}

/// The value of `name` in a tracing line, up to the next space or brace.
fn field_of(line: &str, name: &str) -> Option<String> {
    let start = line.find(name)? + name.len();
    let rest = &line[start..];
    let end = rest.find([' ', '}']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// `1.234567ms`, `812.3µs`, `1.2s` (Debug of a Duration) in microseconds.
fn duration_micros(text: &str) -> f64 {
    let split = text
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..split].parse().unwrap_or(0.0);
    match &text[split..] {
        "ns" => value / 1000.0,
        "µs" | "us" => value,
        "ms" => value * 1000.0,
        "s" => value * 1_000_000.0,
        _ => 0.0,
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting: who used the two cores
// ---------------------------------------------------------------------------------------

/// CPU seconds used so far by the server process (with its in-process gateway simulator),
/// by each `postgres` process (every database on the server, not only ours), by this
/// client, and by the whole machine.
struct CpuSample {
    at: Instant,
    server: f64,
    postgres: HashMap<String, f64>,
    client: f64,
    machine_busy: f64,
}

impl CpuSample {
    fn take(server_pid: u32) -> Self {
        let mut postgres = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|byte| byte.is_ascii_digit()) {
                    continue;
                }
                if let Some((command, seconds)) = process_cpu(&pid) {
                    if command == "postgres" {
                        postgres.insert(pid, seconds);
                    }
                }
            }
        }
        Self {
            at: Instant::now(),
            server: process_cpu(&server_pid.to_string()).map_or(0.0, |(_, seconds)| seconds),
            postgres,
            client: process_cpu("self").map_or(0.0, |(_, seconds)| seconds),
            machine_busy: machine_busy_seconds(),
        }
    }

    /// CPU milliseconds per charge since `start`, by whom.
    fn since(&self, start: &CpuSample, charges: u64) -> CpuUse {
        let postgres: f64 = self
            .postgres
            .iter()
            .map(|(pid, seconds)| seconds - start.postgres.get(pid).copied().unwrap_or(0.0))
            .sum();
        let server = self.server - start.server;
        let client = self.client - start.client;
        let busy = self.machine_busy - start.machine_busy;
        let per = |seconds: f64| seconds * 1000.0 / charges.max(1) as f64;
        CpuUse {
            server_ms: per(server),
            postgres_ms: per(postgres),
            client_ms: per(client),
            rest_ms: per((busy - server - postgres - client).max(0.0)),
            busy_cores: busy / (self.at - start.at).as_secs_f64(),
        }
    }
}

/// CPU milliseconds per charge.
struct CpuUse {
    server_ms: f64,
    postgres_ms: f64,
    client_ms: f64,
    /// Everything else that ran on the machine meanwhile (other builds and tests).
    rest_ms: f64,
    busy_cores: f64,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "cpu per charge: calmony {:.2} ms, postgres {:.2} ms, this client {:.2} ms, rest of \
             the machine {:.2} ms; machine busy {:.2} of {} cores",
            self.server_ms,
            self.postgres_ms,
            self.client_ms,
            self.rest_ms,
            self.busy_cores,
            std::thread::available_parallelism().map_or(0, |cores| cores.get())
        )
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A process's command name and user+system CPU seconds, from `/proc/<pid>/stat`.
fn process_cpu(pid: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let command = stat[stat.find('(')? + 1..stat.rfind(')')?].to_string();
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the command: state is field 3 of stat(5); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((command, (utime + stime) / clock_ticks_per_second()))
}

/// Seconds the machine's cores were busy since boot (all but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle) / clock_ticks_per_second()
}

// ---------------------------------------------------------------------------------------
// Small things
// ---------------------------------------------------------------------------------------

/// The machine's one-minute load average: how busy the shared cores were.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn print_summary(rows: &[SummaryRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\n== Summary ({BENCH_COMMAND})");
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
