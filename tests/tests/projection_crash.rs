//! Killing a projection process anywhere (between batches or inside one) loses nothing and
//! repeats nothing: the real `calmony projections run`, SIGKILLed again and again.

use std::process::Stdio;
use std::time::{Duration, Instant};

use calmony_tests::{calmony, kill_hard};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, LogReader, Mode, NewEvent};
use rand::Rng;

const STREAMS: usize = 6_000;
const EVENTS_PER_STREAM: i64 = 3;

async fn seed(db: &TestDatabase) {
    let metadata = EventMetadata::new("proj_a", Mode::Test, "system:test");
    let mut batch = Vec::new();
    for stream in 0..STREAMS {
        for sequence in 1..=EVENTS_PER_STREAM {
            batch.push(NewEvent {
                aggregate_type: "thing".into(),
                aggregate_id: format!("t{stream:05}"),
                sequence,
                event_type: "Changed".into(),
                event_version: "1.0".into(),
                payload: serde_json::json!({"n": sequence}),
                metadata: metadata.clone(),
            });
        }
        if batch.len() >= 900 {
            let mut transaction = db.pool.begin().await.unwrap();
            EventStore::append(&mut transaction, &batch).await.unwrap();
            transaction.commit().await.unwrap();
            batch.clear();
        }
    }
    let mut transaction = db.pool.begin().await.unwrap();
    EventStore::append(&mut transaction, &batch).await.unwrap();
    transaction.commit().await.unwrap();
    assert!(LogReader::new(db.pool.clone())
        .wait_until_final(Duration::from_secs(30))
        .await
        .unwrap());
}

async fn applied(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT events FROM projection_checkpoints WHERE name = 'stream_index'")
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_projection_killed_again_and_again_ends_exactly_once() {
    let db = TestDatabase::new().await;
    seed(&db).await;
    let total = STREAMS as i64 * EVENTS_PER_STREAM;
    let runner = || {
        calmony(&db.url)
            .args([
                "projections",
                "run",
                "--only",
                "stream_index",
                "--batch-events",
                // Small batches: many commits, so the kills land mid-way however fast the
                // follower reads.
                "5",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn calmony projections run")
    };

    let mut kills = 0;
    let mut progress_seen = Vec::new();
    while applied(&db).await < total * 3 / 4 && kills < 40 {
        let mut child = runner();
        let pause_ms = rand::rng().random_range(100..400);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        kill_hard(&mut child);
        kills += 1;
        progress_seen.push(applied(&db).await);
    }
    assert!(
        kills >= 3,
        "the projection finished before it could be killed often"
    );
    assert!(
        progress_seen.windows(2).all(|pair| pair[0] <= pair[1]),
        "the checkpoint never goes backwards: {progress_seen:?}"
    );

    // One last run to the end.
    let mut child = runner();
    let deadline = Instant::now() + Duration::from_secs(120);
    while applied(&db).await < total {
        assert!(Instant::now() < deadline, "the projection never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill_hard(&mut child);

    assert_eq!(
        applied(&db).await,
        total,
        "the checkpoint counts every event once"
    );
    let (streams, events, wrong): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(event_count), 0)::bigint, \
                count(*) FILTER (WHERE event_count <> version OR version <> 3) \
         FROM stream_index.streams",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(streams, STREAMS as i64, "no stream lost");
    assert_eq!(events, total, "no event lost or applied twice");
    assert_eq!(wrong, 0, "every stream saw each of its events exactly once");
}
