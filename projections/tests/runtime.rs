//! The projection runtime against a real PostgreSQL: batches with checkpoints, several
//! runners at once, rebuild-and-swap while readers keep reading.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, LogReader, Mode, NewEvent};
use projections::stream_index::StreamIndex;
use projections::ProjectionRuntime;

/// Event `sequence` of the test stream `thing/<id>`, in `project`.
fn changed(id: String, sequence: i64, project: String) -> NewEvent {
    NewEvent {
        aggregate_type: "thing".into(),
        aggregate_id: id,
        sequence,
        event_type: "Changed".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({"n": sequence}),
        metadata: EventMetadata::new(project, Mode::Test, "system:test"),
    }
}

/// Follows `projection` on a task of its own, polling only once a minute: what moves it is
/// a notification or a waiting request.
fn follow_in_background(
    runtime: &ProjectionRuntime,
    projection: Arc<dyn projections::Projection>,
    batch_events: i64,
) -> tokio::task::JoinHandle<Result<(), projections::ProjectionError>> {
    let runtime = runtime.clone();
    tokio::spawn(async move { runtime.follow(projection, batch_events, 60_000).await })
}

async fn write_streams(db: &TestDatabase, streams: usize, per_stream: i64, offset: usize) {
    for stream in offset..offset + streams {
        let events: Vec<_> = (1..=per_stream)
            .map(|sequence| {
                changed(
                    format!("t{stream}"),
                    sequence,
                    format!("proj_{}", stream % 3),
                )
            })
            .collect();
        let mut transaction = db.pool.begin().await.unwrap();
        EventStore::append(&mut transaction, &events).await.unwrap();
        transaction.commit().await.unwrap();
    }
    assert!(LogReader::new(db.pool.clone())
        .wait_until_final(std::time::Duration::from_secs(30))
        .await
        .unwrap());
}

type Row = (String, String, Option<String>, i64, i64, i64, i64);

async fn index_rows(db: &TestDatabase) -> Vec<Row> {
    sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, project, version, event_count, first_position, last_position \
         FROM stream_index.streams ORDER BY aggregate_type, aggregate_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn expected_rows(db: &TestDatabase) -> Vec<Row> {
    sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, \
                (array_agg(metadata->>'project' ORDER BY sequence))[1], \
                max(sequence), count(*), min(position), max(position) \
         FROM events GROUP BY aggregate_type, aggregate_id ORDER BY aggregate_type, aggregate_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn batches_move_the_checkpoint_with_their_effect() {
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    runtime.ensure_created(&StreamIndex).await.unwrap();
    write_streams(&db, 10, 5, 0).await;

    assert_eq!(runtime.run_batch(&StreamIndex, 7).await.unwrap(), 7);
    let status = runtime.status(&StreamIndex).await.unwrap();
    assert_eq!(status.events_applied, 7);
    assert_eq!(status.lag_events, 43);
    let applied: i64 =
        sqlx::query_scalar("SELECT sum(event_count)::bigint FROM stream_index.streams")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        applied, 7,
        "the table holds exactly the checkpoint's events"
    );

    runtime.catch_up(&StreamIndex, 7).await.unwrap();
    assert_eq!(runtime.status(&StreamIndex).await.unwrap().lag_events, 0);
    assert_eq!(index_rows(&db).await, expected_rows(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_runners_never_apply_an_event_twice() {
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    runtime.ensure_created(&StreamIndex).await.unwrap();
    write_streams(&db, 200, 3, 0).await;
    let mut runners = Vec::new();
    for _ in 0..4 {
        let runtime = ProjectionRuntime::new(db.pool.clone());
        runners.push(tokio::spawn(async move {
            runtime.catch_up(&StreamIndex, 13).await
        }));
    }
    let mut total = 0;
    for runner in runners {
        total += runner.await.unwrap().unwrap();
    }
    assert_eq!(total, 600, "the runners shared the work without overlap");
    assert_eq!(index_rows(&db).await, expected_rows(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_equals_live_and_reads_never_stop() {
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    runtime.ensure_created(&StreamIndex).await.unwrap();
    write_streams(&db, 300, 4, 0).await;
    runtime.catch_up(&StreamIndex, 100).await.unwrap();
    let live = index_rows(&db).await;

    // Readers hammer the live table through the whole rebuild and swap.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let pool = db.pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM stream_index.streams")
                    .fetch_one(&pool)
                    .await
                    .expect("reads keep working during the rebuild");
                assert!(
                    count >= 300,
                    "a reader saw a half-built table ({count} rows)"
                );
                reads += 1;
            }
            reads
        })
    };
    // Events keep arriving during the rebuild; the swap catches them up.
    let writer = {
        let db_pool = db.pool.clone();
        tokio::spawn(async move {
            for stream in 300..340 {
                let mut transaction = db_pool.begin().await.unwrap();
                EventStore::append(
                    &mut transaction,
                    &[NewEvent {
                        aggregate_type: "thing".into(),
                        aggregate_id: format!("t{stream}"),
                        sequence: 1,
                        event_type: "Changed".into(),
                        event_version: "1.0".into(),
                        payload: serde_json::json!({}),
                        metadata: EventMetadata::new("proj_0", Mode::Test, "system:test"),
                    }],
                )
                .await
                .unwrap();
                transaction.commit().await.unwrap();
            }
        })
    };
    let mut progress_calls = 0;
    runtime
        .rebuild(&StreamIndex, |done, total| {
            progress_calls += 1;
            assert!(done <= total);
        })
        .await
        .unwrap();
    writer.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    assert!(progress_calls > 0);

    assert!(LogReader::new(db.pool.clone())
        .wait_until_final(std::time::Duration::from_secs(30))
        .await
        .unwrap());
    runtime.catch_up(&StreamIndex, 100).await.unwrap();
    let rebuilt = index_rows(&db).await;
    assert_eq!(
        rebuilt,
        expected_rows(&db).await,
        "rebuilt + caught up equals the log"
    );
    let untouched: Vec<Row> = rebuilt
        .iter()
        .filter(|row| live.iter().any(|old| old.1 == row.1))
        .cloned()
        .collect();
    assert_eq!(
        untouched, live,
        "streams untouched during the rebuild read the same"
    );
    let leftover: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'stream_index\\_\\_%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leftover, 0, "no rebuild or old schema is left behind");
}

/// Counts the events it is given, in a table of its own; reads after the stream index.
struct Downstream;

#[async_trait::async_trait]
impl projections::Projection for Downstream {
    fn name(&self) -> &'static str {
        "downstream_test"
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE seen (position bigint PRIMARY KEY);"
    }

    fn reads_after(&self) -> Option<&'static str> {
        Some("stream_index")
    }

    async fn apply(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[event_store::RecordedEvent],
    ) -> Result<(), projections::ProjectionError> {
        let positions: Vec<i64> = events.iter().map(|event| event.position).collect();
        sqlx::query("INSERT INTO seen SELECT * FROM UNNEST($1::bigint[])")
            .bind(&positions)
            .execute(connection)
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_consumer_never_passes_its_upstream_and_wakes_on_its_commits() {
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    runtime.ensure_created(&StreamIndex).await.unwrap();
    runtime.ensure_created(&Downstream).await.unwrap();
    write_streams(&db, 10, 2, 0).await;

    assert_eq!(runtime.run_batch(&Downstream, 100).await.unwrap(), 0);
    assert_eq!(runtime.run_batch(&StreamIndex, 5).await.unwrap(), 5);
    assert_eq!(runtime.run_batch(&Downstream, 100).await.unwrap(), 5);
    assert_eq!(runtime.run_batch(&Downstream, 100).await.unwrap(), 0);

    // Following, it catches up as the upstream commits, well before its poll interval.
    let follower = follow_in_background(&runtime, Arc::new(Downstream), 100);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    runtime.catch_up(&StreamIndex, 100).await.unwrap();
    wait_for_count(&db, "SELECT count(*) FROM downstream_test.seen", 20).await;
    follower.abort();
    assert!(runtime.rebuild(&Downstream, |_, _| {}).await.is_err());
}

async fn listening_backends(db: &TestDatabase) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Waits until `sql` (a count) answers `expected`.
async fn wait_for_count(db: &TestDatabase, sql: &str, expected: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap();
        if count == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {count}, expected {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Followers wake on notifications (their poll interval here is a minute), and a runtime's
/// followers all listen through one connection: PostgreSQL signals every listening backend
/// on every notification. A downstream consumer in another process (another runtime) wakes
/// on its upstream's checkpoint notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtimes_followers_share_one_listening_connection_and_wake_on_notifications() {
    let db = TestDatabase::new().await;
    let here = ProjectionRuntime::new(db.pool.clone());
    let elsewhere = ProjectionRuntime::new(db.pool.clone());
    here.ensure_created(&StreamIndex).await.unwrap();
    here.ensure_created(&Downstream).await.unwrap();
    here.ensure_created(&Counter { with_sum: false })
        .await
        .unwrap();
    let minute = 60_000;
    let mut followers = tokio::task::JoinSet::new();
    for projection in [
        Arc::new(StreamIndex) as Arc<dyn projections::Projection>,
        Arc::new(Counter { with_sum: false }),
    ] {
        let runtime = here.clone();
        followers.spawn(async move { runtime.follow(projection, 100, minute).await });
    }
    {
        let runtime = elsewhere.clone();
        followers.spawn(async move { runtime.follow(Arc::new(Downstream), 100, minute).await });
    }
    // Their first batches (nothing to apply) and their listening started.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        listening_backends(&db).await,
        2,
        "one listening connection per runtime"
    );

    let seen = "SELECT count(*) FROM downstream_test.seen";
    let counted = "SELECT coalesce(sum(events), 0)::bigint FROM counter.counts";
    write_streams(&db, 10, 2, 0).await;
    wait_for_count(&db, seen, 20).await;
    wait_for_count(&db, counted, 20).await;
    write_streams(&db, 5, 1, 10).await;
    wait_for_count(&db, seen, 25).await;
    wait_for_count(&db, counted, 25).await;
    followers.abort_all();
}

/// Many requests at once each append and wait to read their write, as the API's writes
/// do, while the follower applies: every wait ends (a wait that wakes the follower in
/// process once took the runtime's lock and a channel's in the opposite order to the
/// follower, and both threads stopped for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_waiting_for_their_writes_all_get_through() {
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    runtime.ensure_created(&StreamIndex).await.unwrap();
    let follower = follow_in_background(&runtime, Arc::new(StreamIndex), 1_000);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..16 {
        let runtime = runtime.clone();
        let pool = db.pool.clone();
        writers.spawn(async move {
            let mut writes = 0_u32;
            for sequence in 1.. {
                if std::time::Instant::now() >= until {
                    break;
                }
                let event = changed(format!("w{writer}"), sequence, "proj_0".into());
                let mut transaction = pool.begin().await.unwrap();
                let appended = EventStore::append(&mut transaction, &[event])
                    .await
                    .unwrap();
                transaction.commit().await.unwrap();
                let applied = runtime
                    .wait_until_applied(
                        "stream_index",
                        appended[0].cursor(),
                        std::time::Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                assert!(
                    applied,
                    "writer {writer}'s write {sequence} was never applied"
                );
                writes += 1;
            }
            writes
        });
    }
    let all = tokio::time::timeout(std::time::Duration::from_secs(30), writers.join_all())
        .await
        .expect("writers stopped: the runtime is stuck");
    assert!(all.iter().all(|&writes| writes > 0));
    follower.abort();
}

/// A projection counting events per stream, in two versions: the second also sums the
/// payloads' `n` into a column the first never had.
struct Counter {
    with_sum: bool,
}

#[async_trait::async_trait]
impl projections::Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }

    fn schema_sql(&self) -> &'static str {
        if self.with_sum {
            "CREATE TABLE counts (id text PRIMARY KEY, events bigint NOT NULL, sum_n bigint NOT NULL)"
        } else {
            "CREATE TABLE counts (id text PRIMARY KEY, events bigint NOT NULL)"
        }
    }

    async fn apply(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[event_store::RecordedEvent],
    ) -> Result<(), projections::ProjectionError> {
        for event in events {
            let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
            if self.with_sum {
                sqlx::query(
                    "INSERT INTO counts VALUES ($1, 1, $2) ON CONFLICT (id) DO UPDATE \
                     SET events = counts.events + 1, sum_n = counts.sum_n + EXCLUDED.sum_n",
                )
                .bind(&event.aggregate_id)
                .bind(payload["n"].as_i64().unwrap())
                .execute(&mut *connection)
                .await?;
            } else {
                sqlx::query(
                    "INSERT INTO counts VALUES ($1, 1) ON CONFLICT (id) DO UPDATE \
                     SET events = counts.events + 1",
                )
                .bind(&event.aggregate_id)
                .execute(&mut *connection)
                .await?;
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_whose_code_changed_is_rebuilt_before_it_follows() {
    use projections::runtime::Freshness;
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    let old = Counter { with_sum: false };
    assert_eq!(
        runtime.ensure_current(&old, |_, _| {}).await.unwrap(),
        Freshness::Current
    );
    write_streams(&db, 5, 4, 0).await;
    runtime.catch_up(&old, 100).await.unwrap();
    // Unchanged code: nothing to do.
    assert_eq!(
        runtime.ensure_current(&old, |_, _| {}).await.unwrap(),
        Freshness::Current
    );

    // New code (a new column): rebuilt from the log, by one of two starting at once.
    let new = Counter { with_sum: true };
    let other = ProjectionRuntime::new(db.pool.clone());
    let (first, second) = tokio::join!(
        runtime.ensure_current(&new, |_, _| {}),
        other.ensure_current(&new, |_, _| {})
    );
    assert_eq!(first.unwrap(), Freshness::Stale);
    assert_eq!(second.unwrap(), Freshness::Stale);
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT id, events, sum_n FROM counter.counts ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|(_, events, sum)| *events == 4 && *sum == 10),
        "{rows:?}"
    );
    assert_eq!(runtime.status(&new).await.unwrap().lag_events, 0);
    assert_eq!(
        runtime.ensure_current(&new, |_, _| {}).await.unwrap(),
        Freshness::Current
    );

    // Tables stamped before fingerprints existed count as stale too.
    sqlx::query(
        "UPDATE projection_checkpoints SET schema_fingerprint = NULL WHERE name = 'counter'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        runtime.ensure_created(&new).await.unwrap(),
        Freshness::Stale
    );
}

/// Records each batch it is given (how many events), with a batching delay of its own and
/// a gathering until awaited.
struct Batches {
    name: &'static str,
    delay: std::time::Duration,
    awaited: std::time::Duration,
}

#[async_trait::async_trait]
impl projections::Projection for Batches {
    fn name(&self) -> &'static str {
        self.name
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE batches (n bigserial PRIMARY KEY, events bigint NOT NULL)"
    }

    fn batching_delay(&self) -> std::time::Duration {
        self.delay
    }

    fn gathering_until_awaited(&self) -> std::time::Duration {
        self.awaited
    }

    async fn apply(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[event_store::RecordedEvent],
    ) -> Result<(), projections::ProjectionError> {
        sqlx::query("INSERT INTO batches (events) VALUES ($1)")
            .bind(events.len() as i64)
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// The batches a `Batches` projection was given, once it has seen `events` events.
async fn batches_once_seen(db: &TestDatabase, schema: &str, events: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (batches, seen): (i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT count(*), sum(events)::bigint FROM {schema}.batches"
        ))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if seen == Some(events) {
            return batches;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{schema} saw {seen:?} of {events}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_follower_gathers_the_commits_of_its_batching_delay_into_one_batch() {
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    let gathering = Arc::new(Batches {
        name: "gathering_test",
        delay: std::time::Duration::from_millis(1_500),
        awaited: std::time::Duration::ZERO,
    });
    runtime.ensure_created(gathering.as_ref()).await.unwrap();
    let follower = follow_in_background(&runtime, gathering.clone(), 100);
    // The follower's first batch finds nothing; then it waits for a commit.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Eight commits in a row: the first wakes the follower, which waits out its delay and
    // then applies all eight at once, where one without a delay applies them as they come.
    let started = std::time::Instant::now();
    write_streams(&db, 8, 1, 0).await;
    let writing = started.elapsed();
    let batches = batches_once_seen(&db, "gathering_test", 8).await;
    follower.abort();
    // It reads at the first slot of its phase at least half its delay after the first
    // commit woke it.
    if writing < std::time::Duration::from_millis(750) {
        assert_eq!(
            batches, 1,
            "eight commits within half the delay are one batch"
        );
    } else {
        // A machine this slow to commit spreads them over more than one delay.
        assert!(batches < 8, "{batches} batches for 8 commits");
    }
}

/// Records the transaction and size of every batch it applies.
struct TxidRecorder {
    name: &'static str,
    after: Option<&'static str>,
    fails: bool,
}

#[async_trait::async_trait]
impl projections::Projection for TxidRecorder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE batches (txid bigint NOT NULL, events bigint NOT NULL)"
    }

    fn reads_after(&self) -> Option<&'static str> {
        self.after
    }

    fn rides_along(&self) -> bool {
        self.after.is_some()
    }

    async fn apply(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[event_store::RecordedEvent],
    ) -> Result<(), projections::ProjectionError> {
        if self.fails {
            // A statement that fails inside the transaction, as a broken apply would.
            sqlx::query("INSERT INTO batches (txid, events) VALUES (NULL, 0)")
                .execute(connection)
                .await?;
            return Ok(());
        }
        sqlx::query("INSERT INTO batches VALUES (txid_current(), $1)")
            .bind(events.len() as i64)
            .execute(connection)
            .await?;
        Ok(())
    }
}

async fn batch_txids(db: &TestDatabase, schema: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!("SELECT txid FROM {schema}.batches ORDER BY txid"))
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// A leader and a rider of it, both followed by one runtime (the rider's apply fails if
/// `rider_fails`); the followers' tasks, leader's first.
async fn follow_leader_and_rider(
    db: &TestDatabase,
    rider_fails: bool,
) -> Vec<tokio::task::JoinHandle<Result<(), projections::ProjectionError>>> {
    let runtime = ProjectionRuntime::new(db.pool.clone());
    let leader = TxidRecorder {
        name: "leader_test",
        after: None,
        fails: false,
    };
    let rider = TxidRecorder {
        name: "rider_test",
        after: Some("leader_test"),
        fails: rider_fails,
    };
    runtime.ensure_created(&leader).await.unwrap();
    runtime.ensure_created(&rider).await.unwrap();
    let followers = [leader, rider]
        .into_iter()
        .map(|projection| follow_in_background(&runtime, Arc::new(projection), 100))
        .collect();
    // Their first batches find nothing; then they wait for commits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    followers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_level_with_its_upstream_is_applied_in_the_upstreams_transactions() {
    let db = TestDatabase::new().await;
    let followers = follow_leader_and_rider(&db, false).await;

    write_streams(&db, 8, 2, 0).await;
    let rider_batches = batches_once_seen(&db, "rider_test", 16).await;
    for follower in followers {
        follower.abort();
    }
    let leader_txids = batch_txids(&db, "leader_test").await;
    let rider_txids = batch_txids(&db, "rider_test").await;
    assert_eq!(rider_txids.len() as i64, rider_batches);
    assert!(
        rider_txids.iter().all(|txid| leader_txids.contains(txid)),
        "every rider batch shares a leader batch's transaction: rider {rider_txids:?}, leader {leader_txids:?}"
    );
    let checkpoints: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT name, txid::text::bigint, events FROM projection_checkpoints \
         WHERE name IN ('leader_test', 'rider_test') ORDER BY name",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(checkpoints[0].1, checkpoints[1].1, "{checkpoints:?}");
    assert_eq!((checkpoints[0].2, checkpoints[1].2), (16, 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_that_fails_leaves_its_upstreams_batches_whole() {
    let db = TestDatabase::new().await;
    let mut followers = follow_leader_and_rider(&db, true).await;
    let riding = followers.pop().unwrap();
    let leading = followers.pop().unwrap();

    write_streams(&db, 4, 1, 0).await;
    batches_once_seen(&db, "leader_test", 4).await;
    // The rider's own follower meets its failure and stops; nothing of it was kept.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), riding)
        .await
        .expect("the failing rider's follower stops")
        .unwrap();
    assert!(stopped.is_err());
    leading.abort();
    assert!(batch_txids(&db, "rider_test").await.is_empty());
    let rider_events: i64 =
        sqlx::query_scalar("SELECT events FROM projection_checkpoints WHERE name = 'rider_test'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(rider_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_nobody_waits_on_shares_a_batch_with_the_next_one_somebody_does() {
    let db = TestDatabase::new().await;
    let runtime = ProjectionRuntime::new(db.pool.clone());
    let awaited = Arc::new(Batches {
        name: "awaited_test",
        delay: std::time::Duration::ZERO,
        awaited: std::time::Duration::from_secs(30),
    });
    runtime.ensure_created(awaited.as_ref()).await.unwrap();
    let follower = follow_in_background(&runtime, awaited.clone(), 100);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A commit nobody waits on: the follower holds it back, for up to its 30 s.
    write_streams(&db, 1, 1, 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM awaited_test.batches")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(held, 0, "a commit nobody waits on is held back");

    // The next one somebody waits on: read at once, with the first, in one batch.
    write_streams(&db, 1, 1, 1).await;
    let head = LogReader::new(db.pool.clone())
        .read_all(event_store::LogCursor::START, 10)
        .await
        .unwrap()
        .last()
        .unwrap()
        .cursor();
    let started = std::time::Instant::now();
    let applied = runtime
        .wait_until_applied("awaited_test", head, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let waited = started.elapsed();
    follower.abort();
    assert!(applied);
    assert!(
        waited < std::time::Duration::from_secs(5),
        "a waiter is served at once, not after the gathering ({waited:?})"
    );
    assert_eq!(batches_once_seen(&db, "awaited_test", 2).await, 1);
}
