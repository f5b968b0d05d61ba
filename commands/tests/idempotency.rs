//! The idempotency store against a real PostgreSQL: replays, mismatches, keys in use, a
//! crowd of concurrent claims, leases that run out, scoping, pruning, and the atomicity of a
//! command's events with its stored response.

use std::sync::Arc;
use std::time::Duration;

use commands::execute::{ExecuteError, InTransaction};
use commands::idempotency::{
    fingerprint, Claim, ClaimToken, CompleteIdempotency, IdempotencyError, IdempotencyStore,
    RequestIdentity, StoredResponse, DEFAULT_LEASE_MS,
};
use commands::CommandBus;
use domain::customer::{Customer, CustomerCommand, CustomerEvent, CustomerFields};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, Mode};
use futures::future::BoxFuture;
use sqlx::PgConnection;

fn identity(key: &str) -> RequestIdentity {
    RequestIdentity::new(
        "proj_1",
        Mode::Test,
        key,
        "POST",
        "/v1/customers",
        b"email=ada%40example.com",
    )
}

fn response(status: u16, body: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: body.as_bytes().to_vec(),
    }
}

async fn fresh(store: &IdempotencyStore, identity: &RequestIdentity) -> ClaimToken {
    match store.claim(identity).await {
        Ok(Claim::Fresh(token)) => token,
        other => panic!("expected a fresh claim, got {other:?}"),
    }
}

async fn replayed(store: &IdempotencyStore, identity: &RequestIdentity) -> StoredResponse {
    match store.claim(identity).await {
        Ok(Claim::Replay(response)) => response,
        other => panic!("expected a replay, got {other:?}"),
    }
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

async fn state_of(db: &TestDatabase, key: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM idempotency_keys WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(&db.pool)
        .await
        .expect("read the record")
}

/// Moves the database's view of a claim past its lease, as if the lease had run out.
async fn expire_lease(db: &TestDatabase, key: &str) {
    let expired = sqlx::query(
        "UPDATE idempotency_keys SET locked_until = now() - interval '1 millisecond' \
         WHERE idempotency_key = $1 AND state = 'in_flight'",
    )
    .bind(key)
    .execute(&db.pool)
    .await
    .expect("expire the lease");
    assert_eq!(expired.rows_affected(), 1);
}

fn bus(db: &TestDatabase) -> CommandBus {
    CommandBus::new(EventStore::new(db.pool.clone()), domain::upcasters::all())
}

fn metadata(key: &str) -> EventMetadata {
    EventMetadata::new("proj_1", Mode::Test, "key:test")
        .with_request("req_test")
        .with_idempotency_key(Some(key.to_string()))
}

fn create_customer(customer_id: &str) -> CustomerCommand {
    CustomerCommand::Create {
        customer_id: customer_id.into(),
        fields: CustomerFields {
            email: Some(Some("ada@example.com".into())),
            ..Default::default()
        },
        at: 1_700_000_000,
    }
}

fn render(customer: &Customer) -> StoredResponse {
    StoredResponse::json(
        200,
        &serde_json::json!({"id": customer.id, "object": "customer", "email": customer.email}),
    )
}

/// `POST /v1/customers` as a handler runs it: claim, then create a customer with a new id
/// (as every request does) and store the response with its events.
async fn create_customer_request(
    store: &IdempotencyStore,
    bus: &CommandBus,
    key: &str,
    customer_id: &str,
) -> Result<StoredResponse, IdempotencyError> {
    let token = match store.claim(&identity(key)).await? {
        Claim::Replay(response) => return Ok(response),
        Claim::Fresh(token) => token,
    };
    let executed = bus
        .execute_with(
            customer_id,
            create_customer(customer_id),
            &(),
            &metadata(key),
            CompleteIdempotency::new(&token, render),
        )
        .await;
    match executed {
        Ok(executed) => Ok(executed.output),
        Err(ExecuteError::Extra(error)) => Err(error),
        Err(ExecuteError::Command(error)) => {
            let failed = StoredResponse::json(
                500,
                &serde_json::json!({"error": {"type": "api_error", "message": error.to_string()}}),
            );
            store.complete(&token, &failed).await?;
            Ok(failed)
        }
    }
}

#[test]
fn the_fingerprint_covers_method_path_and_parameters_unambiguously() {
    let base = fingerprint("POST", "/v1/customers", b"a=1");
    assert_eq!(base, fingerprint("POST", "/v1/customers", b"a=1"));
    assert_ne!(base, fingerprint("POST", "/v1/customers", b"a=2"));
    assert_ne!(base, fingerprint("POST", "/v1/products", b"a=1"));
    assert_ne!(base, fingerprint("DELETE", "/v1/customers", b"a=1"));
    // The same bytes split differently between the parts.
    assert_ne!(
        fingerprint("POST", "/v1/a", b"b"),
        fingerprint("POST", "/v1/", b"ab")
    );
}

#[tokio::test]
async fn a_completed_key_replays_the_same_status_and_body() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let request = identity("key-replay");
    let token = fresh(&store, &request).await;
    assert_eq!(token.generation(), 1);
    let first = response(200, r#"{"id": "cus_1",  "object":"customer"}"#);
    store.complete(&token, &first).await.expect("complete");
    assert_eq!(replayed(&store, &request).await, first, "byte for byte");
    assert_eq!(replayed(&store, &request).await, first, "and again");
    // A claim is completed once: a second completion is refused and changes nothing.
    assert!(matches!(
        store.complete(&token, &response(500, "{}")).await,
        Err(IdempotencyError::ClaimLost)
    ));
    assert_eq!(replayed(&store, &request).await, first);
}

#[tokio::test]
async fn error_responses_are_replayed_too() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    for (key, status) in [("key-402", 402), ("key-500", 500)] {
        let request = identity(key);
        let token = fresh(&store, &request).await;
        let failed = response(status, r#"{"error":{"type":"card_error"}}"#);
        store.complete(&token, &failed).await.expect("complete");
        assert_eq!(replayed(&store, &request).await, failed);
    }
}

#[tokio::test]
async fn a_different_fingerprint_is_a_mismatch_in_flight_done_or_abandoned() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let other = |key: &str| {
        RequestIdentity::new(
            "proj_1",
            Mode::Test,
            key,
            "POST",
            "/v1/customers",
            b"email=eve%40example.com",
        )
    };

    let in_flight = fresh(&store, &identity("key-a")).await;
    assert!(matches!(
        store.claim(&other("key-a")).await,
        Err(IdempotencyError::Mismatch)
    ));

    store
        .complete(&in_flight, &response(200, "{}"))
        .await
        .expect("complete");
    assert!(matches!(
        store.claim(&other("key-a")).await,
        Err(IdempotencyError::Mismatch)
    ));

    // A lapsed lease is taken over only by a retry of the same request.
    let _abandoned = fresh(&store, &identity("key-b")).await;
    expire_lease(&db, "key-b").await;
    assert!(matches!(
        store.claim(&other("key-b")).await,
        Err(IdempotencyError::Mismatch)
    ));
    assert_eq!(fresh(&store, &identity("key-b")).await.generation(), 2);
}

#[tokio::test]
async fn a_second_claim_while_the_first_runs_is_key_in_use() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let request = identity("key-busy");
    let token = fresh(&store, &request).await;
    for _ in 0..3 {
        assert!(matches!(
            store.claim(&request).await,
            Err(IdempotencyError::KeyInUse)
        ));
    }
    store
        .complete(&token, &response(201, r#"{"ok":true}"#))
        .await
        .expect("complete");
    assert_eq!(replayed(&store, &request).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_claims_of_one_key_make_exactly_one_owner() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let claimants = 50;
    let start = Arc::new(tokio::sync::Barrier::new(claimants));
    let body = r#"{"id":"cus_winner"}"#;
    let mut tasks = Vec::new();
    for _ in 0..claimants {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let claim = store.claim(&identity("key-crowd")).await;
            if let Ok(Claim::Fresh(token)) = &claim {
                store
                    .complete(token, &response(200, body))
                    .await
                    .expect("the owner completes");
            }
            claim
        }));
    }
    let (mut owners, mut in_use, mut replays) = (0, 0, 0);
    for task in tasks {
        match task.await.expect("claimant") {
            Ok(Claim::Fresh(_)) => owners += 1,
            Ok(Claim::Replay(replay)) => {
                assert_eq!(replay, response(200, body));
                replays += 1;
            }
            Err(IdempotencyError::KeyInUse) => in_use += 1,
            Err(error) => panic!("unexpected claim error: {error}"),
        }
    }
    assert_eq!(owners, 1, "exactly one claimant owns the key");
    assert_eq!(owners + in_use + replays, claimants);
    assert_eq!(
        count(&db, "SELECT count(*) FROM idempotency_keys").await,
        1,
        "one record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_with_one_key_create_one_customer() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let bus = bus(&db);
    let requests = 50;
    let start = Arc::new(tokio::sync::Barrier::new(requests));
    let mut tasks = Vec::new();
    for request in 0..requests {
        let (store, bus, start) = (store.clone(), bus.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            // Each request mints its own id, as a handler does: only the key ties them.
            create_customer_request(&store, &bus, "key-stampede", &format!("cus_{request}")).await
        }));
    }
    let mut bodies = Vec::new();
    for task in tasks {
        match task.await.expect("request") {
            Ok(response) => {
                assert_eq!(response.status, 200);
                bodies.push(response.body);
            }
            Err(IdempotencyError::KeyInUse) => {}
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 1);
    assert!(!bodies.is_empty());
    assert!(
        bodies.iter().all(|body| *body == bodies[0]),
        "every answer is the first response"
    );
    // A late retry gets the same answer.
    let late = create_customer_request(&store, &bus, "key-stampede", "cus_late")
        .await
        .expect("replay");
    assert_eq!(late.body, bodies[0]);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn a_committed_command_and_its_response_replay_without_running_again() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let bus = bus(&db);
    let first = create_customer_request(&store, &bus, "key-commit", "cus_first")
        .await
        .expect("create");
    let created: serde_json::Value = serde_json::from_slice(&first.body).expect("json");
    assert_eq!(created["id"], "cus_first");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM events WHERE aggregate_id = 'cus_first'"
        )
        .await,
        1
    );
    assert_eq!(
        state_of(&db, "key-commit").await.as_deref(),
        Some("completed")
    );

    let retry = create_customer_request(&store, &bus, "key-commit", "cus_second")
        .await
        .expect("retry");
    assert_eq!(retry, first);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 1);
}

/// How the transaction dies after the events and the response were written.
#[derive(Clone, Copy, Debug)]
enum Crash {
    /// A later in-transaction step fails.
    StepFails,
    /// The server ends the session before the commit.
    ConnectionDropped,
}

/// Completes the claim, then kills the transaction before it can commit.
struct CompleteThenCrash<W> {
    inner: W,
    crash: Crash,
}

impl<W> InTransaction<Customer> for CompleteThenCrash<W>
where
    W: InTransaction<Customer, Output = StoredResponse, Error = IdempotencyError>,
{
    type Output = StoredResponse;
    type Error = IdempotencyError;

    fn run<'a>(
        &'a mut self,
        connection: &'a mut PgConnection,
        aggregate: &'a Customer,
        events: &'a [CustomerEvent],
    ) -> BoxFuture<'a, Result<StoredResponse, IdempotencyError>> {
        Box::pin(async move {
            self.inner.run(&mut *connection, aggregate, events).await?;
            let written: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events, idempotency_keys WHERE state = 'completed'",
            )
            .fetch_one(&mut *connection)
            .await?;
            assert_eq!(written, 1, "the events and the response are written");
            match self.crash {
                Crash::StepFails => Err(IdempotencyError::Sql(sqlx::Error::Protocol(
                    "simulated failure before commit".into(),
                ))),
                Crash::ConnectionDropped => {
                    sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                        .execute(&mut *connection)
                        .await?;
                    Err(IdempotencyError::Sql(sqlx::Error::Protocol(
                        "the session survived its termination".into(),
                    )))
                }
            }
        })
    }
}

#[tokio::test]
async fn a_transaction_that_dies_after_the_append_leaves_nothing_and_the_retry_runs_once() {
    for crash in [Crash::StepFails, Crash::ConnectionDropped] {
        let db = TestDatabase::new().await;
        let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
        let bus = bus(&db);
        let key = "key-crash";
        let token = fresh(&store, &identity(key)).await;
        let outcome = bus
            .execute_with(
                "cus_crashed",
                create_customer("cus_crashed"),
                &(),
                &metadata(key),
                CompleteThenCrash {
                    inner: CompleteIdempotency::new(&token, render),
                    crash,
                },
            )
            .await;
        assert!(outcome.is_err(), "{crash:?}: the transaction failed");
        assert_eq!(
            count(&db, "SELECT count(*) FROM events").await,
            0,
            "{crash:?}: no events"
        );
        assert_eq!(
            state_of(&db, key).await.as_deref(),
            Some("in_flight"),
            "{crash:?}: no stored response"
        );
        // The owner is gone for good; its lease runs out and the client's retry runs.
        drop(token);
        assert!(matches!(
            store.claim(&identity(key)).await,
            Err(IdempotencyError::KeyInUse)
        ));
        expire_lease(&db, key).await;
        let retry = create_customer_request(&store, &bus, key, "cus_retry")
            .await
            .expect("the retry runs");
        assert_eq!(retry.status, 200, "{crash:?}");
        let again = create_customer_request(&store, &bus, key, "cus_again")
            .await
            .expect("then replays");
        assert_eq!(again, retry);
        let streams: Vec<String> = sqlx::query_scalar("SELECT aggregate_id FROM events")
            .fetch_all(&db.pool)
            .await
            .expect("events");
        assert_eq!(streams, ["cus_retry"], "{crash:?}: the command ran once");
    }
}

#[tokio::test]
async fn a_claim_whose_lease_ran_out_is_taken_over_and_its_old_owner_is_refused() {
    let db = TestDatabase::new().await;
    let lease_ms = 1_000;
    let store = IdempotencyStore::new(db.pool.clone(), lease_ms);
    let bus = bus(&db);
    let key = "key-lease";
    let claimed_at = tokio::time::Instant::now();
    let stale = fresh(&store, &identity(key)).await;
    let lease_left_ms: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM locked_until - now())::float8 * 1000 FROM idempotency_keys",
    )
    .fetch_one(&db.pool)
    .await
    .expect("lease");
    assert!(
        lease_left_ms > 0.0 && lease_left_ms <= lease_ms as f64,
        "the lease is {lease_ms} ms: {lease_left_ms}"
    );
    assert!(matches!(
        store.claim(&identity(key)).await,
        Err(IdempotencyError::KeyInUse)
    ));

    tokio::time::sleep_until(claimed_at + Duration::from_millis(lease_ms + 200)).await;
    let current = fresh(&store, &identity(key)).await;
    assert_eq!(current.generation(), 2);

    // The old owner wakes up: whatever it tries is refused, and its command rolls back.
    let late = bus
        .execute_with(
            "cus_stale",
            create_customer("cus_stale"),
            &(),
            &metadata(key),
            CompleteIdempotency::new(&stale, render),
        )
        .await;
    assert!(matches!(
        late,
        Err(ExecuteError::Extra(IdempotencyError::ClaimLost))
    ));
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 0);
    assert!(matches!(
        store.complete(&stale, &response(500, "{}")).await,
        Err(IdempotencyError::ClaimLost)
    ));

    let executed = bus
        .execute_with(
            "cus_current",
            create_customer("cus_current"),
            &(),
            &metadata(key),
            CompleteIdempotency::new(&current, render),
        )
        .await
        .map_err(|error| format!("{error:?}"))
        .expect("the new owner completes");
    assert!(matches!(
        store.release(stale).await,
        Err(IdempotencyError::ClaimLost)
    ));
    assert_eq!(replayed(&store, &identity(key)).await, executed.output);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn a_released_key_runs_afresh_and_only_its_owner_may_release_it() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let request = identity("key-release");
    let first = fresh(&store, &request).await;
    store.release(first).await.expect("release");
    assert_eq!(state_of(&db, "key-release").await, None, "nothing saved");

    let abandoned = fresh(&store, &request).await;
    assert_eq!(abandoned.generation(), 1, "a new request");
    expire_lease(&db, "key-release").await;
    let current = fresh(&store, &request).await;
    assert!(matches!(
        store.release(abandoned).await,
        Err(IdempotencyError::ClaimLost)
    ));
    assert_eq!(
        state_of(&db, "key-release").await.as_deref(),
        Some("in_flight"),
        "the current owner's claim stands"
    );
    store
        .complete(&current, &response(200, "{}"))
        .await
        .expect("the current owner completes");
}

#[tokio::test]
async fn keys_are_scoped_by_project_and_mode() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let key = "key-shared";
    let scoped = |project: &str, mode: Mode| RequestIdentity {
        project: project.into(),
        mode,
        ..identity(key)
    };
    let test = fresh(&store, &scoped("proj_1", Mode::Test)).await;
    let live = fresh(&store, &scoped("proj_1", Mode::Live)).await;
    let other_project = fresh(&store, &scoped("proj_2", Mode::Test)).await;
    store
        .complete(&test, &response(200, "test"))
        .await
        .expect("complete");
    store
        .complete(&live, &response(200, "live"))
        .await
        .expect("complete");
    store
        .complete(&other_project, &response(200, "proj_2"))
        .await
        .expect("complete");
    for (identity, body) in [
        (scoped("proj_1", Mode::Test), "test"),
        (scoped("proj_1", Mode::Live), "live"),
        (scoped("proj_2", Mode::Test), "proj_2"),
    ] {
        assert_eq!(replayed(&store, &identity).await.body, body.as_bytes());
    }
    // The fingerprint is checked within the scope only.
    let different = RequestIdentity {
        project: "proj_3".into(),
        ..RequestIdentity::new("x", Mode::Test, key, "POST", "/v1/other", b"")
    };
    fresh(&store, &different).await;
}

#[tokio::test]
async fn keys_longer_than_255_characters_or_empty_are_refused() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    let longest = "é".repeat(255);
    fresh(&store, &identity(&longest)).await;
    assert!(matches!(
        store.claim(&identity(&"k".repeat(256))).await,
        Err(IdempotencyError::KeyTooLong { chars: 256 })
    ));
    assert!(matches!(
        store.claim(&identity("")).await,
        Err(IdempotencyError::EmptyKey)
    ));
    assert_eq!(count(&db, "SELECT count(*) FROM idempotency_keys").await, 1);
}

#[tokio::test]
async fn prune_removes_records_past_retention_and_nothing_else() {
    let db = TestDatabase::new().await;
    let store = IdempotencyStore::new(db.pool.clone(), DEFAULT_LEASE_MS);
    for key in [
        "old-done",
        "old-abandoned",
        "old-running",
        "recent-done",
        "new-done",
    ] {
        let token = fresh(&store, &identity(key)).await;
        if key.ends_with("done") {
            store
                .complete(&token, &response(200, key))
                .await
                .expect("complete");
        }
    }
    let age = |key: &'static str, hours: i32, lease: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(&format!(
                "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $2), \
                 locked_until = CASE WHEN state = 'in_flight' THEN now() + interval '{lease}' END \
                 WHERE idempotency_key = $1"
            ))
            .bind(key)
            .bind(hours)
            .execute(&pool)
            .await
            .expect("age the record");
        }
    };
    age("old-done", 25, "0 s").await;
    age("old-abandoned", 25, "-1 s").await;
    age("old-running", 25, "1 hour").await; // a claim whose lease still runs
    age("recent-done", 23, "0 s").await;

    // A cutoff later than the retention allows is held back to 24 hours.
    let pruned = store.prune(chrono::Utc::now()).await.expect("prune");
    assert_eq!(pruned, 2);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM idempotency_keys ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .expect("keys");
    assert_eq!(left, ["new-done", "old-running", "recent-done"]);
    // An earlier cutoff keeps the 23-hour-old record too.
    assert_eq!(
        store
            .prune(chrono::Utc::now() - chrono::Duration::hours(48))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(store.prune(chrono::Utc::now()).await.expect("prune"), 0);

    // A pruned key is a new request again.
    assert_eq!(fresh(&store, &identity("old-done")).await.generation(), 1);
}
