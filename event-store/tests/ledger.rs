//! The event store against a real PostgreSQL: append-only, versions, hash chains, seals,
//! tamper detection.

use event_store::seal::Sealer;
use event_store::store::AsOf;
use event_store::test_harness::TestDatabase;
use event_store::verify::{verify_ledger, Problem};
use event_store::{AppendError, EventMetadata, EventStore, Mode, NewEvent};
use serde_json::json;

fn event(stream: &str, sequence: i64, body: serde_json::Value) -> NewEvent {
    NewEvent {
        aggregate_type: "account".into(),
        aggregate_id: stream.into(),
        sequence,
        event_type: "Deposited".into(),
        event_version: "1.0".into(),
        payload: body,
        metadata: EventMetadata::new("proj_1", Mode::Test, "system:test").with_request("req_1"),
    }
}

async fn append(db: &TestDatabase, events: &[NewEvent]) -> Result<(), AppendError> {
    let mut transaction = db.pool.begin().await?;
    EventStore::append(&mut transaction, events).await?;
    transaction.commit().await?;
    Ok(())
}

async fn seed(db: &TestDatabase, streams: usize, per_stream: i64) {
    for stream in 0..streams {
        let events: Vec<_> = (1..=per_stream)
            .map(|sequence| {
                event(
                    &format!("acc_{stream}"),
                    sequence,
                    json!({"amount": sequence * 100}),
                )
            })
            .collect();
        append(db, &events).await.expect("seed");
    }
}

#[tokio::test]
async fn events_cannot_be_updated_deleted_or_truncated() {
    let db = TestDatabase::new().await;
    seed(&db, 1, 2).await;
    for statement in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = sqlx::query(statement)
            .execute(&db.pool)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    wait_until_final(&db).await;
    Sealer::new(db.pool.clone()).seal_all(100).await.unwrap();
    for statement in [
        "UPDATE ledger_seals SET hash = '\\x00'",
        "DELETE FROM ledger_seals",
        "TRUNCATE ledger_seals",
    ] {
        let error = sqlx::query(statement)
            .execute(&db.pool)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
}

async fn wait_until_final(db: &TestDatabase) {
    let reader = event_store::LogReader::new(db.pool.clone());
    assert!(reader
        .wait_until_final(std::time::Duration::from_secs(30))
        .await
        .unwrap());
}

#[tokio::test]
async fn versions_must_increase_by_one_and_a_taken_version_is_a_conflict() {
    let db = TestDatabase::new().await;
    seed(&db, 1, 2).await;
    let gap = append(&db, &[event("acc_0", 4, json!({}))]).await;
    assert!(
        matches!(&gap, Err(AppendError::Sql(error)) if error.to_string().contains("versions must increase by one")),
        "{gap:?}"
    );
    let taken = append(&db, &[event("acc_0", 2, json!({}))]).await;
    assert!(
        matches!(taken, Err(AppendError::Conflict { sequence: 2, .. })),
        "{taken:?}"
    );
    let fresh_stream_not_at_one = append(&db, &[event("acc_new", 2, json!({}))]).await;
    assert!(fresh_stream_not_at_one.is_err());
}

#[tokio::test]
async fn of_two_concurrent_writers_to_one_stream_exactly_one_wins() {
    let db = TestDatabase::new().await;
    seed(&db, 1, 1).await;
    // Both loaded version 1 and write version 2; the first holds its transaction open.
    let mut first = db.pool.begin().await.unwrap();
    EventStore::append(&mut first, &[event("acc_0", 2, json!({"writer": 1}))])
        .await
        .unwrap();
    let pool = db.pool.clone();
    let second = tokio::spawn(async move {
        let mut transaction = pool.begin().await?;
        EventStore::append(&mut transaction, &[event("acc_0", 2, json!({"writer": 2}))]).await?;
        transaction.commit().await?;
        Ok::<_, AppendError>(())
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    first.commit().await.unwrap();
    let outcome = second.await.unwrap();
    assert!(
        matches!(outcome, Err(AppendError::Conflict { .. })),
        "{outcome:?}"
    );
    let store = EventStore::new(db.pool.clone());
    let events = store
        .load_stream("account", "acc_0", AsOf::Now)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert!(events[1].payload.contains("\"writer\":1"));
}

#[tokio::test]
async fn every_event_carries_its_metadata_and_a_chained_hash() {
    let db = TestDatabase::new().await;
    seed(&db, 2, 3).await;
    let store = EventStore::new(db.pool.clone());
    let events = store
        .load_stream("account", "acc_1", AsOf::Now)
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].prev_hash, vec![0u8; 32]);
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert!(pair[1].position > pair[0].position);
    }
    for recorded in &events {
        // The Rust hash and the trigger's SQL hash are the same function.
        assert_eq!(
            event_store::chain::event_hash(&recorded.prev_hash, recorded).to_vec(),
            recorded.hash
        );
        let metadata = recorded.metadata().unwrap();
        assert_eq!(metadata.project, "proj_1");
        assert_eq!(metadata.mode, Some(Mode::Test));
        assert_eq!(metadata.request_id.as_deref(), Some("req_1"));
        assert_eq!(metadata.correlation_id.as_deref(), Some("req_1"));
        assert_eq!(metadata.actor, "system:test");
    }
    let report = verify_ledger(&db.pool, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 6);
    assert_eq!(report.streams_checked, 2);
}

#[tokio::test]
async fn load_stream_as_of_a_position_or_a_time() {
    let db = TestDatabase::new().await;
    seed(&db, 1, 3).await;
    let store = EventStore::new(db.pool.clone());
    let all = store
        .load_stream("account", "acc_0", AsOf::Now)
        .await
        .unwrap();
    let upto_second = store
        .load_stream("account", "acc_0", AsOf::Position(all[1].position))
        .await
        .unwrap();
    assert_eq!(upto_second.len(), 2);
    let upto_first_time = store
        .load_stream("account", "acc_0", AsOf::Time(all[0].recorded_at))
        .await
        .unwrap();
    assert_eq!(upto_first_time.len(), 1);
}

/// Runs statements as superuser with the triggers switched off, as an attacker would.
async fn tamper(db: &TestDatabase, statement: &str) {
    let mut transaction = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *transaction)
        .await
        .unwrap();
    sqlx::query(statement)
        .execute(&mut *transaction)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
}

async fn sealed_ledger() -> TestDatabase {
    let db = TestDatabase::new().await;
    seed(&db, 3, 4).await;
    wait_until_final(&db).await;
    let seals = Sealer::new(db.pool.clone()).seal_all(5).await.unwrap();
    assert_eq!(seals.len(), 3, "12 events in seals of at most 5");
    assert_eq!(seals.iter().map(|seal| seal.event_count).sum::<i64>(), 12);
    let clean = verify_ledger(&db.pool, |_| {}).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.problems);
    assert_eq!(clean.seals_checked, 3);
    db
}

#[tokio::test]
async fn verify_catches_an_altered_event() {
    let db = sealed_ledger().await;
    tamper(
        &db,
        "UPDATE events SET payload = '{\"amount\": 1}' WHERE aggregate_id = 'acc_1' AND sequence = 2",
    )
    .await;
    let report = verify_ledger(&db.pool, |_| {}).await.unwrap();
    assert!(
        matches!(report.first_problem(), Some(Problem::HashMismatch { stream, sequence: 2, .. }) if stream == "account/acc_1"),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn verify_catches_an_altered_event_whose_hash_was_recomputed() {
    let db = sealed_ledger().await;
    // The attacker also recomputes this event's hash with the database's own function; the
    // next event's link and the seal still give it away.
    tamper(
        &db,
        "UPDATE events SET payload = '{\"amount\": 1}', \
             hash = calmony_event_hash(prev_hash, aggregate_type, aggregate_id, sequence, position, \
                 recorded_at, event_type, event_version, '{\"amount\": 1}'::json, metadata) \
         WHERE aggregate_id = 'acc_1' AND sequence = 2",
    )
    .await;
    let report = verify_ledger(&db.pool, |_| {}).await.unwrap();
    assert!(
        matches!(
            report.first_problem(),
            Some(Problem::BrokenLink { sequence: 3, .. })
        ),
        "{:?}",
        report.problems
    );
    assert!(report
        .problems
        .iter()
        .any(|problem| matches!(problem, Problem::SealMismatch { .. })));
}

#[tokio::test]
async fn verify_catches_a_deleted_event() {
    let db = sealed_ledger().await;
    tamper(
        &db,
        "DELETE FROM events WHERE aggregate_id = 'acc_2' AND sequence = 2",
    )
    .await;
    let report = verify_ledger(&db.pool, |_| {}).await.unwrap();
    assert!(
        matches!(
            report.first_problem(),
            Some(Problem::VersionGap {
                expected: 2,
                found: 3,
                ..
            })
        ),
        "{:?}",
        report.problems
    );
    // Deleting a stream's last event leaves no gap; the seal catches it.
    let db = sealed_ledger().await;
    tamper(
        &db,
        "DELETE FROM events WHERE aggregate_id = 'acc_2' AND sequence = 4",
    )
    .await;
    let report = verify_ledger(&db.pool, |_| {}).await.unwrap();
    assert!(
        matches!(report.first_problem(), Some(Problem::SealMismatch { .. })),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn verify_catches_an_inserted_event() {
    let db = sealed_ledger().await;
    tamper(
        &db,
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('account', 'acc_0', 5, 'Deposited', '1.0', '{\"amount\": 999999}', '{\"project\": \"proj_1\"}')",
    )
    .await;
    let report = verify_ledger(&db.pool, |_| {}).await.unwrap();
    assert!(
        matches!(
            report.first_problem(),
            Some(Problem::BrokenLink { sequence: 5, .. })
                | Some(Problem::HashMismatch { sequence: 5, .. })
        ),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn postgres_es_reads_the_same_table() {
    use cqrs_es::persist::PersistedEventRepository;
    let db = TestDatabase::new().await;
    seed(&db, 1, 3).await;
    let repository = postgres_es::PostgresEventRepository::new(db.pool.clone());
    let events = repository
        .get_events::<Account>("acc_0")
        .await
        .expect("postgres-es reads our events table");
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].sequence, 3);
    assert_eq!(events[2].payload, json!({"amount": 300}));
}

/// The smallest aggregate postgres-es needs to name the stream type.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Account;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Deposited;

impl cqrs_es::DomainEvent for Deposited {
    fn event_type(&self) -> String {
        "Deposited".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

impl cqrs_es::Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = ();
    type Event = Deposited;
    type Error = std::io::Error;
    type Services = ();

    async fn handle(
        &mut self,
        _command: (),
        _services: &(),
        _sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn apply(&mut self, _event: Deposited) {}
}
