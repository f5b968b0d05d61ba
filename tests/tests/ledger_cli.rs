//! The auditor's and operator's commands, run as a user runs them: the real binary
//! against a real database.

use calmony_tests::{run, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, LogReader, Mode, NewEvent};

async fn seed_customers(db: &TestDatabase, count: usize) {
    for index in 0..count {
        let id = format!("cus_{index:04}");
        let events = vec![
            NewEvent {
                aggregate_type: "customer".into(),
                aggregate_id: id.clone(),
                sequence: 1,
                event_type: "CustomerCreated".into(),
                event_version: "2.0".into(),
                payload: serde_json::json!({"CustomerCreated": {
                    "customer_id": id, "email": format!("c{index}@example.com"), "name": "First",
                    "description": null, "phone": null, "metadata": {}, "created": 1_700_000_000
                }}),
                metadata: EventMetadata::new("proj_a", Mode::Test, "key:test"),
            },
            NewEvent {
                aggregate_type: "customer".into(),
                aggregate_id: id.clone(),
                sequence: 2,
                event_type: "CustomerUpdated".into(),
                event_version: "1.0".into(),
                payload: serde_json::json!({"CustomerUpdated": {
                    "changes": {"name": "Second"}, "at": 1_700_000_100
                }}),
                metadata: EventMetadata::new("proj_a", Mode::Test, "key:test"),
            },
        ];
        let mut transaction = db.pool.begin().await.unwrap();
        EventStore::append(&mut transaction, &events).await.unwrap();
        transaction.commit().await.unwrap();
    }
    assert!(LogReader::new(db.pool.clone())
        .wait_until_final(std::time::Duration::from_secs(30))
        .await
        .unwrap());
}

#[tokio::test]
async fn export_writes_every_event_as_ndjson_in_the_documented_format() {
    let db = TestDatabase::new().await;
    seed_customers(&db, 5).await;
    let output = run(&db.url, &["ledger", "export"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let lines: Vec<serde_json::Value> = stdout_of(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), 10);
    let first = &lines[0];
    for field in [
        "position",
        "txid",
        "stream_type",
        "stream_id",
        "version",
        "type",
        "schema_version",
        "recorded_at",
        "payload",
        "metadata",
        "prev_hash",
        "hash",
    ] {
        assert!(first.get(field).is_some(), "missing {field} in {first}");
    }
    assert_eq!(first["stream_type"], "customer");
    assert_eq!(first["metadata"]["project"], "proj_a");
    assert_eq!(first["hash"].as_str().map(str::len), Some(64));

    let third_position = lines[2]["position"].as_i64().unwrap();
    let fifth_position = lines[4]["position"].as_i64().unwrap();
    let ranged = run(
        &db.url,
        &[
            "ledger",
            "export",
            "--from",
            &third_position.to_string(),
            "--to",
            &fifth_position.to_string(),
        ],
    );
    assert_eq!(stdout_of(&ranged).lines().count(), 3);
}

#[tokio::test]
async fn verify_passes_on_an_honest_ledger_and_names_the_first_bad_event() {
    let db = TestDatabase::new().await;
    seed_customers(&db, 4).await;
    let sealed = run(&db.url, &["ledger", "seal"]);
    assert!(sealed.status.success(), "{}", stderr_of(&sealed));
    assert!(
        stdout_of(&sealed).contains("latest seal 1"),
        "{}",
        stdout_of(&sealed)
    );

    let honest = run(&db.url, &["ledger", "verify"]);
    assert!(honest.status.success(), "{}", stderr_of(&honest));
    assert!(stdout_of(&honest).contains("8 events in 4 streams, 1 seals"));

    let mut transaction = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *transaction)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET payload = '{\"CustomerUpdated\": {\"changes\": {\"name\": \"Mallory\"}, \"at\": 1}}' \
         WHERE aggregate_id = 'cus_0002' AND sequence = 2",
    )
    .execute(&mut *transaction)
    .await
    .unwrap();
    transaction.commit().await.unwrap();

    let tampered = run(&db.url, &["ledger", "verify"]);
    assert_eq!(tampered.status.code(), Some(1));
    let message = stderr_of(&tampered);
    assert!(
        message.contains("FAILED") && message.contains("customer/cus_0002 version 2"),
        "{message}"
    );
}

#[tokio::test]
async fn replay_prints_an_aggregate_as_of_a_position_or_time() {
    let db = TestDatabase::new().await;
    seed_customers(&db, 1).await;
    let first_position: i64 = sqlx::query_scalar("SELECT min(position) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let then = run(
        &db.url,
        &[
            "ledger",
            "replay",
            "--as-of",
            &first_position.to_string(),
            "--stream",
            "customer/cus_0000",
        ],
    );
    assert!(then.status.success(), "{}", stderr_of(&then));
    let state: serde_json::Value = serde_json::from_str(&stdout_of(&then)).unwrap();
    assert_eq!(state["version"], 1);
    assert_eq!(state["state"]["name"], "First");

    let now = run(
        &db.url,
        &[
            "ledger",
            "replay",
            "--as-of",
            "2999-01-01T00:00:00Z",
            "--stream",
            "customer/cus_0000",
        ],
    );
    let state: serde_json::Value = serde_json::from_str(&stdout_of(&now)).unwrap();
    assert_eq!(state["version"], 2);
    assert_eq!(state["state"]["name"], "Second");

    let before = run(
        &db.url,
        &[
            "ledger",
            "replay",
            "--as-of",
            "2000-01-01T00:00:00Z",
            "--stream",
            "customer/cus_0000",
        ],
    );
    assert!(!before.status.success());
    let unknown = run(
        &db.url,
        &["ledger", "replay", "--as-of", "1", "--stream", "nonsense/x"],
    );
    assert!(stderr_of(&unknown).contains("unknown stream type"));
}

#[tokio::test]
async fn the_server_starts_serves_health_and_projects_the_log() {
    let db = TestDatabase::new().await;
    seed_customers(&db, 3).await;
    let server = Server::start(&db.url, &[]);
    let health = reqwest::get(format!("{}/healthz", server.base_url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The stream index catches up with the log on its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let indexed: i64 = sqlx::query_scalar("SELECT count(*) FROM stream_index.streams")
            .fetch_one(&db.pool)
            .await
            .unwrap_or(0);
        if indexed == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream index never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = run(&db.url, &["projections", "status"]);
    assert!(status.status.success());
    let line = stdout_of(&status)
        .lines()
        .find(|line| line.starts_with("stream_index"))
        .map(str::to_string)
        .expect("a status line for the stream index");
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[2], "6", "applied: {line}");
    assert_eq!(columns[3], "0", "lag: {line}");
}

#[test]
fn without_database_url_it_starts_its_own_durable_postgresql() {
    use std::os::unix::fs::PermissionsExt;
    // A data directory PostgreSQL's own account can reach (tempfile's are private).
    let data_dir = std::env::temp_dir().join(format!("calmony-managed-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_managed = |args: &[&str]| {
        std::process::Command::new(calmony_tests::calmony_binary())
            .args(args)
            .env_remove("DATABASE_URL")
            .env("CALMONY_DATA_DIR", &data_dir)
            .env("CALMONY_LOG", "warn")
            .output()
            .expect("run calmony")
    };
    let created = run_managed(&["projects", "create", "--name", "Durable"]);
    assert!(created.status.success(), "{}", stderr_of(&created));
    let project = stdout_of(&created).trim().to_string();
    assert!(project.starts_with("proj_"));
    // A second process finds the same data: the server was stopped and started again.
    let replay = run_managed(&[
        "ledger",
        "replay",
        "--as-of",
        "2999-01-01T00:00:00Z",
        "--stream",
        &format!("project/{project}"),
    ]);
    assert!(replay.status.success(), "{}", stderr_of(&replay));
    assert!(stdout_of(&replay).contains("Durable"));
    let verified = run_managed(&["ledger", "verify"]);
    assert!(verified.status.success(), "{}", stderr_of(&verified));
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn the_stream_index_lists_streams_and_catches_a_deleted_unsealed_tail() {
    let db = TestDatabase::new().await;
    seed_customers(&db, 3).await;
    let listed = run(&db.url, &["ledger", "streams", "--type", "customer"]);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    let listing = stdout_of(&listed);
    assert_eq!(
        listing
            .lines()
            .filter(|line| line.starts_with("customer/"))
            .count(),
        3,
        "{listing}"
    );
    assert!(listing.contains("proj_a"));

    // No seal covers these events yet: only the independently built index remembers them.
    let mut transaction = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *transaction)
        .await
        .unwrap();
    sqlx::query("DELETE FROM events WHERE aggregate_id = 'cus_0001' AND sequence = 2")
        .execute(&mut *transaction)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    let verified = run(&db.url, &["ledger", "verify"]);
    assert_eq!(verified.status.code(), Some(1));
    let message = stderr_of(&verified);
    assert!(
        message.contains("customer/cus_0001 had version 2"),
        "{message}"
    );
}
