//! The billing run: renewals, dunning retries and expiries that are due (Checkout Sessions
//! included, by their customer's test clock when they have one), found in the `billing`
//! read model and done through [`BillingService`], whose aggregates make every job
//! exactly-once (a renewal names its period, a retry its scheduled time, an expiry refuses
//! a session no longer open).
//!
//! Several runners may work at once (two `calmony serve`, a `calmony billing run`): each
//! job is leased (`billing.leases`, keyed by job and due time) so they share the work
//! instead of racing for it; a runner that dies mid-job leaves a lease that runs out, and
//! the aggregates refuse whatever it had already done. Time comes from a [`Clock`]; work on
//! a test clock is due by that clock's frozen time instead.

use std::sync::Arc;
use std::time::Duration;

use commands::billing::{BillingService, DueRenewal, JobOutcome};
use commands::payments::Actor;
use domain::test_clock::{TestClock, TestClockCommand};
use futures::StreamExt;
use projections::billing_schedule::BillingSchedule;
use projections::runtime::DEFAULT_BATCH_EVENTS;
use projections::ProjectionRuntime;
use sqlx::PgPool;

use crate::clock::Clock;

/// How long a job's lease lasts: longer than a job usually takes (a gateway call and two
/// commits). Leases only spread work; a job that outlives its lease and is taken again is
/// refused by its aggregate, never done twice.
const LEASE_SECONDS: i64 = 15;
/// Jobs taken per query.
const JOBS_PER_PASS: i64 = 2_000;
/// Passes that find only work already done before the run gives up waiting for the read
/// model to show it.
const MAX_IDLE_PASSES: u32 = 200;
/// Renewals of one project decided, charged and recorded together.
const RENEWALS_PER_BATCH: usize = 50;
/// Batches of one project under way at once: one taking invoice numbers, one at the gateway.
const BATCHES_IN_FLIGHT_PER_PROJECT: usize = 2;
/// Receipt invoices of one project issued in one transaction. Few: every read model
/// applies a batch's events in one go, and charges committed after it wait for the `api`
/// projection to get through it, so a large batch shows as a spike in their latency.
pub const RECEIPTS_PER_BATCH: usize = 25;
/// How often `run` issues the receipts that came due (and advances test clocks) when
/// nothing wakes it sooner: often, so that each run's batches stay small.
const RECEIPTS_INTERVAL: Duration = Duration::from_millis(250);
/// Pending invoice items (prorations) a renewal invoice takes in; any beyond wait for the
/// next one.
const MAX_PENDING_ITEMS_PER_RENEWAL: i64 = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Everything due, each item by its own time (wall clock or test clock).
    All,
    /// Only work on one test clock.
    Clock(&'a str),
    /// Only receipt invoices of one-off payments (due as soon as the payment succeeded).
    Receipts,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub renewed: u64,
    pub retried: u64,
    pub expired: u64,
    pub receipts: u64,
    /// Found already done by another runner (or by an earlier attempt of this one).
    pub already_done: u64,
    pub failed: u64,
}

impl RunReport {
    fn absorb(&mut self, other: RunReport) {
        self.renewed += other.renewed;
        self.retried += other.retried;
        self.expired += other.expired;
        self.receipts += other.receipts;
        self.already_done += other.already_done;
        self.failed += other.failed;
    }

    pub fn done(&self) -> u64 {
        self.renewed + self.retried + self.expired + self.receipts
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Job {
    kind: String,
    id: String,
    project: String,
    livemode: bool,
    due: i64,
}

#[derive(Clone)]
pub struct BillingRunner {
    pool: PgPool,
    billing: BillingService,
    projections: ProjectionRuntime,
    clock: Arc<dyn Clock>,
    worker: String,
    concurrency: usize,
}

impl BillingRunner {
    pub fn new(
        pool: PgPool,
        billing: BillingService,
        projections: ProjectionRuntime,
        clock: Arc<dyn Clock>,
        concurrency: usize,
    ) -> Self {
        Self {
            pool,
            billing,
            projections,
            clock,
            worker: commands::ids::new_id("worker"),
            concurrency: concurrency.max(1),
        }
    }

    /// Does everything due in `scope`, until nothing is.
    pub async fn run_due(&self, scope: Scope<'_>) -> Result<RunReport, sqlx::Error> {
        let mut report = RunReport::default();
        let mut idle_passes = 0;
        // Jobs the last pass finished, which the read model may not show yet: the read
        // model catches up with that pass while this one works, so they are left out of
        // this pass's claim instead of waiting for it.
        let mut finished: Vec<String> = Vec::new();
        loop {
            // After a pass, its catch-up runs beside the next claim; otherwise (the first
            // pass, an idle tick) the read model is brought up to date before claiming.
            let overlapped = !finished.is_empty();
            let caught_up = if overlapped {
                let runtime = self.projections.clone();
                Some(tokio::spawn(async move {
                    runtime
                        .catch_up(&BillingSchedule, DEFAULT_BATCH_EVENTS)
                        .await
                        .map(|_| ())
                        .map_err(|error| sqlx::Error::Protocol(error.to_string()))
                }))
            } else {
                self.catch_up().await?;
                None
            };
            let claimed = self.claim_due(scope, &finished).await;
            let (due, jobs) = match claimed {
                Ok(claimed) => claimed,
                Err(error) => {
                    let _ = settled(caught_up).await;
                    return Err(error);
                }
            };
            if due == 0 {
                settled(caught_up).await?;
                if !overlapped {
                    // Found nothing on a caught-up read model: done, and the read model
                    // shows the whole run.
                    return Ok(report);
                }
                // Found nothing while the read model was catching up: look again on it.
                finished.clear();
                continue;
            }
            if jobs.is_empty() {
                // Due, but leased by other runners: wait for them (or their leases) to end,
                // so that "nothing due" really means done (a test clock turns ready on it).
                settled(caught_up).await?;
                finished.clear();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let (pass, done) = self.work(jobs).await;
            settled(caught_up).await?;
            finished = done;
            report.absorb(pass);
            if scope == Scope::Receipts && i64::try_from(due).unwrap_or(i64::MAX) < JOBS_PER_PASS {
                // Receipts come with every payment: what arrived during this pass waits for
                // the next tick, in one batch, instead of a pass each.
                return Ok(report);
            }
            if pass.done() == 0 {
                idle_passes += 1;
                if idle_passes >= MAX_IDLE_PASSES {
                    tracing::warn!("billing run: due work keeps being found done; stopping");
                    return Ok(report);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            } else {
                idle_passes = 0;
            }
        }
    }

    /// Brings the billing read model up to what has been committed, so the next query
    /// sees this runner's own work.
    async fn catch_up(&self) -> Result<(), sqlx::Error> {
        self.projections
            .catch_up(&BillingSchedule, DEFAULT_BATCH_EVENTS)
            .await
            .map(|_| ())
            .map_err(|error| sqlx::Error::Protocol(error.to_string()))
    }

    /// How many jobs are due, and those of them this runner now holds leases on.
    /// `finished`: ids of jobs just done, left out whatever the read model says.
    async fn claim_due(
        &self,
        scope: Scope<'_>,
        finished: &[String],
    ) -> Result<(usize, Vec<Job>), sqlx::Error> {
        let now = self.clock.now().timestamp();
        let (clock, receipts_only, include_receipts) = match scope {
            Scope::All => (None, false, true),
            Scope::Clock(id) => (Some(id.to_string()), false, false),
            Scope::Receipts => (None, true, true),
        };
        let due: Vec<Job> = sqlx::query_as(
            "WITH due AS ( \
               SELECT 'renew' AS kind, s.id, s.project, s.livemode, s.current_period_end AS due \
               FROM billing.subscriptions s LEFT JOIN billing.test_clocks c ON c.id = s.test_clock \
               WHERE s.status IN ('active', 'past_due', 'trialing') \
                 AND s.current_period_end <= CASE WHEN s.test_clock IS NULL THEN $1 ELSE c.frozen_time END \
                 AND ($2::text IS NULL OR s.test_clock = $2) \
                 AND NOT (s.id = ANY($6::text[])) \
               UNION ALL \
               SELECT 'expire', s.id, s.project, s.livemode, s.created + 82800 \
               FROM billing.subscriptions s LEFT JOIN billing.test_clocks c ON c.id = s.test_clock \
               WHERE s.status = 'incomplete' \
                 AND s.created + 82800 <= CASE WHEN s.test_clock IS NULL THEN $1 ELSE c.frozen_time END \
                 AND ($2::text IS NULL OR s.test_clock = $2) \
                 AND NOT (s.id = ANY($6::text[])) \
               UNION ALL \
               SELECT 'retry', i.id, i.project, i.livemode, i.next_payment_attempt \
               FROM billing.invoices i LEFT JOIN billing.test_clocks c ON c.id = i.test_clock \
               WHERE i.next_payment_attempt IS NOT NULL \
                 AND i.next_payment_attempt <= CASE WHEN i.test_clock IS NULL THEN $1 ELSE c.frozen_time END \
                 AND ($2::text IS NULL OR i.test_clock = $2) \
                 AND NOT (i.id = ANY($6::text[])) \
               UNION ALL \
               SELECT 'expire_checkout', k.id, k.project, k.livemode, k.expires_at \
               FROM billing.checkout_sessions k LEFT JOIN billing.test_clocks c ON c.id = k.test_clock \
               WHERE k.return_accepted_at IS NULL \
                 AND k.expires_at <= CASE WHEN k.test_clock IS NULL THEN $1 ELSE c.frozen_time END \
                 AND ($2::text IS NULL OR k.test_clock = $2) \
                 AND NOT (k.id = ANY($6::text[])) \
               UNION ALL \
               SELECT 'receipt', r.payment_intent, r.project, r.livemode, 0 \
               FROM billing.receipts_due r WHERE $5 AND NOT (r.payment_intent = ANY($6::text[])) \
             ) SELECT kind, id, project, livemode, due FROM due \
               WHERE NOT $4 OR kind = 'receipt' ORDER BY due, id LIMIT $3",
        )
        .bind(now)
        .bind(&clock)
        .bind(JOBS_PER_PASS)
        .bind(receipts_only)
        .bind(include_receipts)
        .bind(finished)
        .fetch_all(&self.pool)
        .await?;
        if due.is_empty() {
            return Ok((0, due));
        }
        let keys: Vec<String> = due.iter().map(Job::lease_key).collect();
        let leased: Vec<String> = sqlx::query_scalar(
            "INSERT INTO billing.leases AS l (job, holder, leased_until) \
             SELECT job, $2, now() + make_interval(secs => $3) FROM UNNEST($1::text[]) AS job \
             ON CONFLICT (job) DO UPDATE SET holder = EXCLUDED.holder, leased_until = EXCLUDED.leased_until \
               WHERE l.leased_until < now() \
             RETURNING job",
        )
        .bind(&keys)
        .bind(&self.worker)
        .bind(LEASE_SECONDS as f64)
        .fetch_all(&self.pool)
        .await?;
        let leased: std::collections::HashSet<String> = leased.into_iter().collect();
        let count = due.len();
        Ok((
            count,
            due.into_iter()
                .filter(|job| leased.contains(&job.lease_key()))
                .collect(),
        ))
    }

    /// Runs a pass's jobs: renewals in batches per project and mode (see
    /// [`BillingService::renew_batch`]), everything else one by one, `concurrency` at once.
    async fn work(&self, jobs: Vec<Job>) -> (RunReport, Vec<String>) {
        let (renewals, others): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|job| job.kind == "renew");
        let (receipts, others): (Vec<Job>, Vec<Job>) =
            others.into_iter().partition(|job| job.kind == "receipt");
        let receipt_batches: Vec<Vec<Job>> = by_project(receipts)
            .into_iter()
            .flat_map(|jobs| {
                jobs.chunks(RECEIPTS_PER_BATCH)
                    .map(<[Job]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        // A project's batches take its invoice numbers in turn (the counter's lock is held
        // from a batch's first number to its commit), so each project runs one batch opening
        // while its previous batch is at the gateway; projects run side by side.
        let projects = by_project(renewals);
        let project_concurrency = (self.concurrency / 2).max(1);
        let (batched, single, receipted) = futures::join!(
            futures::stream::iter(projects)
                .map(|jobs| {
                    // A task of its own, so projects use every core.
                    let runner = self.clone();
                    let count = jobs.len() as u64;
                    let project = tokio::spawn(async move {
                        let batches: Vec<Vec<Job>> =
                            jobs.chunks(RENEWALS_PER_BATCH).map(<[Job]>::to_vec).collect();
                        let runner = &runner;
                        futures::stream::iter(batches)
                            .map(|batch| async move { runner.run_renewals(batch).await })
                            .buffered(BATCHES_IN_FLIGHT_PER_PROJECT)
                            .collect::<Vec<(RunReport, Vec<String>)>>()
                            .await
                    });
                    async move {
                        project.await.unwrap_or_else(|error| {
                            tracing::warn!(%error, "a billing task ended early; its renewals stay due");
                            vec![(
                                RunReport {
                                    failed: count,
                                    ..RunReport::default()
                                },
                                Vec::new(),
                            )]
                        })
                    }
                })
                .buffer_unordered(project_concurrency)
                .collect::<Vec<Vec<(RunReport, Vec<String>)>>>(),
            futures::stream::iter(others)
                .map(|job| async move {
                    let id = job.id.clone();
                    let report = self.run_job(job).await;
                    let done = if report.failed == 0 { vec![id] } else { Vec::new() };
                    (report, done)
                })
                .buffer_unordered(self.concurrency)
                .collect::<Vec<(RunReport, Vec<String>)>>(),
            futures::stream::iter(receipt_batches)
                .map(|batch| self.run_receipts(batch))
                .buffer_unordered(project_concurrency)
                .collect::<Vec<(RunReport, Vec<String>)>>()
        );
        let mut report = RunReport::default();
        let mut finished = Vec::new();
        for (one, done) in batched.into_iter().flatten().chain(single).chain(receipted) {
            report.absorb(one);
            finished.extend(done);
        }
        (report, finished)
    }

    /// Issues one project's batch of receipt invoices together, then clears their rows and
    /// leases (a statement each for the whole batch).
    async fn run_receipts(&self, jobs: Vec<Job>) -> (RunReport, Vec<String>) {
        let Some(first) = jobs.first() else {
            return (RunReport::default(), Vec::new());
        };
        let actor = first.actor();
        let intents: Vec<String> = jobs.iter().map(|job| job.id.clone()).collect();
        let results = self.billing.issue_receipts(&actor, &intents).await;
        let (report, finished) = tally(&jobs, results, |report| report.receipts += 1);
        // Issued, or nothing to issue (a guest payment, an invoice's own intent): the rows
        // have served. (A rebuild brings rows back; each is then found done.)
        if let Err(error) =
            sqlx::query("DELETE FROM billing.receipts_due WHERE payment_intent = ANY($1::text[])")
                .bind(&finished)
                .execute(&self.pool)
                .await
        {
            tracing::warn!(%error, "could not clear receipt jobs");
        }
        self.release_leases(&jobs).await;
        (report, finished)
    }

    async fn release_leases(&self, jobs: &[Job]) {
        let keys: Vec<String> = jobs.iter().map(Job::lease_key).collect();
        if let Err(error) =
            sqlx::query("DELETE FROM billing.leases WHERE job = ANY($1::text[]) AND holder = $2")
                .bind(&keys)
                .bind(&self.worker)
                .execute(&self.pool)
                .await
        {
            tracing::warn!(%error, "could not release billing leases");
        }
    }

    /// Renews one project's batch of due subscriptions together.
    async fn run_renewals(&self, jobs: Vec<Job>) -> (RunReport, Vec<String>) {
        let Some(first) = jobs.first() else {
            return (RunReport::default(), Vec::new());
        };
        let actor = first.actor();
        let pending = match self.pending_items_of_all(&jobs).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, "could not read pending invoice items; the renewals stay due");
                let report = RunReport {
                    failed: jobs.len() as u64,
                    ..RunReport::default()
                };
                return (report, Vec::new());
            }
        };
        let due: Vec<DueRenewal> = jobs
            .iter()
            .map(|job| DueRenewal {
                subscription: job.id.clone(),
                period_end: job.due,
                pending_items: pending.get(&job.id).cloned().unwrap_or_default(),
            })
            .collect();
        let results = self.billing.renew_batch(&actor, &due).await;
        let (report, finished) = tally(&jobs, results, |report| report.renewed += 1);
        self.release_leases(&jobs).await;
        (report, finished)
    }

    /// The pending invoice items (prorations) of each of `jobs`' subscriptions, which their
    /// renewal invoices take in (the aggregates skip any another invoice took first), in
    /// one query.
    async fn pending_items_of_all(
        &self,
        jobs: &[Job],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, sqlx::Error> {
        let subscriptions: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
        let Some(first) = jobs.first() else {
            return Ok(std::collections::HashMap::new());
        };
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT subscription, id FROM ( \
               SELECT subscription, id, \
                      row_number() OVER (PARTITION BY subscription ORDER BY id) AS n \
               FROM billing.pending_items \
               WHERE subscription = ANY($1::text[]) AND project = $2 AND livemode = $3 \
             ) p WHERE n <= $4 ORDER BY subscription, id",
        )
        .bind(&subscriptions)
        .bind(&first.project)
        .bind(first.livemode)
        .bind(MAX_PENDING_ITEMS_PER_RENEWAL)
        .fetch_all(&self.pool)
        .await?;
        let mut pending: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for (subscription, id) in rows {
            pending.entry(subscription).or_default().push(id);
        }
        Ok(pending)
    }

    async fn run_job(&self, job: Job) -> RunReport {
        let actor = job.actor();
        // Renewals and receipts go in batches (`run_renewals`, `run_receipts`), never
        // through here.
        let outcome = match job.kind.as_str() {
            "retry" => self.billing.retry_invoice(&actor, &job.id, job.due).await,
            "expire_checkout" => {
                commands::checkout::CheckoutService::new(self.billing.clone())
                    .expire_due(&actor, &job.id)
                    .await
            }
            _ => self.billing.expire_incomplete(&actor, &job.id).await,
        };
        let mut report = RunReport::default();
        match outcome {
            Ok(JobOutcome::AlreadyDone) => report.already_done = 1,
            Ok(JobOutcome::Done) => match job.kind.as_str() {
                "retry" => report.retried = 1,
                _ => report.expired = 1,
            },
            Err(error) => {
                tracing::warn!(kind = %job.kind, id = %job.id, %error, "billing job failed; it stays due");
                report.failed = 1;
            }
        }
        // Done (or found done): the lease is not needed any more.
        self.release_leases(std::slice::from_ref(&job)).await;
        report
    }

    /// Finishes the advance of every test clock that is `advancing`: does the work due up
    /// to its new time, then marks it `ready`.
    pub async fn advance_clocks(&self) -> Result<usize, sqlx::Error> {
        self.catch_up().await?;
        let advancing: Vec<(String, String, bool, i64)> = sqlx::query_as(
            "SELECT id, project, livemode, frozen_time FROM billing.test_clocks \
             WHERE status = 'advancing' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let count = advancing.len();
        for (clock, project, livemode, frozen_time) in advancing {
            let report = self.run_due(Scope::Clock(&clock)).await?;
            if report.failed > 0 {
                tracing::warn!(%clock, failed = report.failed, "test clock advance had failed jobs");
            }
            let actor = Actor {
                project,
                livemode,
                actor: "system:billing".into(),
                request_id: commands::ids::new_id("req"),
                idempotency_key: None,
            };
            let finished = self
                .billing
                .payments()
                .bus()
                .execute::<TestClock>(
                    &clock,
                    TestClockCommand::FinishAdvance {
                        frozen_time,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                )
                .await;
            if let Err(error) = finished {
                tracing::warn!(%clock, %error, "could not mark a test clock ready");
            }
        }
        Ok(count)
    }
}

/// Waits for a catch-up running beside a claim, if one is.
async fn settled(
    catching_up: Option<tokio::task::JoinHandle<Result<(), sqlx::Error>>>,
) -> Result<(), sqlx::Error> {
    match catching_up {
        Some(task) => task
            .await
            .map_err(|error| sqlx::Error::Protocol(error.to_string()))?,
        None => Ok(()),
    }
}

impl Job {
    fn lease_key(&self) -> String {
        format!("{}:{}:{}", self.kind, self.id, self.due)
    }

    /// Who does the job: the billing system, in the job's project and mode.
    fn actor(&self) -> Actor {
        Actor {
            project: self.project.clone(),
            livemode: self.livemode,
            actor: "system:billing".into(),
            request_id: commands::ids::new_id("req"),
            idempotency_key: None,
        }
    }
}

/// Jobs grouped by project and mode (batches never mix them: a batch's unit of work is one
/// project's, and takes that project's invoice numbers).
fn by_project(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut groups: std::collections::BTreeMap<(String, bool), Vec<Job>> =
        std::collections::BTreeMap::new();
    for job in jobs {
        groups
            .entry((job.project.clone(), job.livemode))
            .or_default()
            .push(job);
    }
    groups.into_values().collect()
}

/// A batch's results as a report (`done` counts one job done) and the ids of the jobs
/// finished (done, or found done); a failed job stays due.
fn tally(
    jobs: &[Job],
    results: Vec<Result<JobOutcome, commands::payments::PaymentError>>,
    done: fn(&mut RunReport),
) -> (RunReport, Vec<String>) {
    let mut report = RunReport::default();
    let mut finished = Vec::with_capacity(jobs.len());
    for (job, result) in jobs.iter().zip(results) {
        match result {
            Ok(JobOutcome::Done) => {
                done(&mut report);
                finished.push(job.id.clone());
            }
            Ok(JobOutcome::AlreadyDone) => {
                report.already_done += 1;
                finished.push(job.id.clone());
            }
            Err(error) => {
                tracing::warn!(kind = %job.kind, id = %job.id, %error, "billing job failed; it stays due");
                report.failed += 1;
            }
        }
    }
    (report, finished)
}

/// The billing loop of `calmony serve`: a full run every `interval`; receipt invoices and
/// test clocks' advances as soon as asked for (`wake`), or at the latest every
/// [`RECEIPTS_INTERVAL`].
pub async fn run(runner: BillingRunner, interval: Duration, wake: Arc<tokio::sync::Notify>) {
    let mut full_run = tokio::time::interval(interval.max(Duration::from_secs(1)));
    full_run.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = full_run.tick() => {
                match runner.run_due(Scope::All).await {
                    Ok(report) if report.done() + report.failed > 0 => {
                        tracing::info!(?report, "billing run finished");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "billing run failed; retrying at the next tick"),
                }
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(RECEIPTS_INTERVAL) => {}
        }
        if let Err(error) = runner.run_due(Scope::Receipts).await {
            tracing::warn!(%error, "issuing receipt invoices failed; retrying");
        }
        if let Err(error) = runner.advance_clocks().await {
            tracing::warn!(%error, "test clock advance failed; retrying");
        }
    }
}
