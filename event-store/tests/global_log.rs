//! The global log never skips an event and never yields one twice, even when concurrent
//! transactions commit out of the order of their positions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use event_store::log::{self, SubscriptionSettings};
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, LogCursor, LogReader, Mode, NewEvent};
use rand::Rng;

const WRITERS: usize = 8;
const EVENTS_PER_COMMAND: i64 = 3;
const COMMANDS_PER_WRITER: usize = 850; // 8 × 850 × 3 = 20,400 events
const STREAMS_PER_WRITER: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_subscriber_sees_every_event_exactly_once_in_stream_order() {
    let db = TestDatabase::new().await;
    let expected_total = WRITERS * COMMANDS_PER_WRITER * EVENTS_PER_COMMAND as usize;

    let reader = LogReader::new(db.pool.clone());
    let mut subscription = reader
        .subscribe(
            LogCursor::START,
            SubscriptionSettings {
                batch_events: 500,
                ..SubscriptionSettings::default()
            },
        )
        .await
        .unwrap();
    let subscriber = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(expected_total);
        while seen.len() < expected_total {
            let batch = tokio::time::timeout(Duration::from_secs(60), subscription.next_batch())
                .await
                .expect("the subscriber stalled")
                .unwrap();
            seen.extend(
                batch
                    .into_iter()
                    .map(|event| (event.position, event.aggregate_id, event.sequence)),
            );
        }
        // Nothing more may arrive: a duplicate would show up here.
        let extra =
            tokio::time::timeout(Duration::from_millis(500), subscription.next_batch()).await;
        assert!(extra.is_err(), "an event was delivered twice or invented");
        seen
    });

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let pool = db.pool.clone();
        writers.push(tokio::spawn(async move {
            let mut versions = vec![0i64; STREAMS_PER_WRITER];
            for _ in 0..COMMANDS_PER_WRITER {
                let (stream, delay_us) = {
                    let mut random = rand::rng();
                    (
                        random.random_range(0..STREAMS_PER_WRITER),
                        random.random_range(0..3_000),
                    )
                };
                let events: Vec<_> = (1..=EVENTS_PER_COMMAND)
                    .map(|offset| NewEvent {
                        aggregate_type: "load".into(),
                        aggregate_id: format!("w{writer}_s{stream}"),
                        sequence: versions[stream] + offset,
                        event_type: "Happened".into(),
                        event_version: "1.0".into(),
                        payload: serde_json::json!({"writer": writer}),
                        metadata: EventMetadata::new("proj_1", Mode::Test, "system:test"),
                    })
                    .collect();
                let mut transaction = pool.begin().await.unwrap();
                EventStore::append(&mut transaction, &events).await.unwrap();
                // Hold the transaction open a random while: commits land out of position order.
                tokio::time::sleep(Duration::from_micros(delay_us)).await;
                transaction.commit().await.unwrap();
                versions[stream] += EVENTS_PER_COMMAND;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = subscriber.await.unwrap();

    assert_eq!(seen.len(), expected_total);
    let unique: HashSet<i64> = seen.iter().map(|(position, _, _)| *position).collect();
    assert_eq!(unique.len(), expected_total, "an event was seen twice");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, expected_total);

    // Each stream's events arrive in version order, with no gaps.
    let mut last_version: HashMap<&str, i64> = HashMap::new();
    for (_, stream, sequence) in &seen {
        let previous = last_version.insert(stream.as_str(), *sequence).unwrap_or(0);
        assert_eq!(*sequence, previous + 1, "stream {stream} out of order");
    }

    // Commits really did land out of position order: the log order differs from positions.
    let positions: Vec<i64> = seen.iter().map(|(position, _, _)| *position).collect();
    assert!(
        positions.windows(2).any(|pair| pair[1] < pair[0]),
        "the test never produced out-of-order commits, so it proved nothing"
    );
}

#[tokio::test]
async fn read_all_pages_through_the_log_and_hides_uncommitted_work() {
    let db = TestDatabase::new().await;
    let metadata = EventMetadata::new("proj_1", Mode::Test, "system:test");
    let make = |id: &str, sequence: i64| NewEvent {
        aggregate_type: "load".into(),
        aggregate_id: id.into(),
        sequence,
        event_type: "Happened".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({}),
        metadata: metadata.clone(),
    };
    // An open transaction takes a position first...
    let mut open = db.pool.begin().await.unwrap();
    EventStore::append(&mut open, &[make("early", 1)])
        .await
        .unwrap();
    // ...and later ones commit before it.
    for index in 0..5 {
        let mut transaction = db.pool.begin().await.unwrap();
        EventStore::append(&mut transaction, &[make(&format!("late{index}"), 1)])
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    }
    let reader = LogReader::new(db.pool.clone());
    // The committed later events are hidden behind the open one, not skipped past it.
    assert!(reader
        .read_all(LogCursor::START, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(reader.has_hidden_events(LogCursor::START).await.unwrap());
    open.commit().await.unwrap();
    // The horizon is server-wide: other tests' transactions may hold it back a moment.
    assert!(reader
        .wait_until_final(Duration::from_secs(30))
        .await
        .unwrap());

    let first_page = reader.read_all(LogCursor::START, 4).await.unwrap();
    assert_eq!(first_page.len(), 4);
    assert_eq!(first_page[0].aggregate_id, "early");
    let rest = reader.read_all(first_page[3].cursor(), 100).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(reader
        .read_all(rest[1].cursor(), 100)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_consumer_batch_reads_its_checkpoint_and_the_events_after_it_in_one_statement() {
    let db = TestDatabase::new().await;
    let metadata = EventMetadata::new("proj_1", Mode::Test, "system:test");
    let make = |id: &str| NewEvent {
        aggregate_type: "load".into(),
        aggregate_id: id.into(),
        sequence: 1,
        event_type: "Happened".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({"id": id}),
        metadata: metadata.clone(),
    };
    for index in 0..6 {
        let mut transaction = db.pool.begin().await.unwrap();
        EventStore::append(&mut transaction, &[make(&format!("s{index}"))])
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    }
    assert!(LogReader::new(db.pool.clone())
        .wait_until_final(Duration::from_secs(30))
        .await
        .unwrap());
    let all = LogReader::new(db.pool.clone())
        .read_all(LogCursor::START, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    let set_checkpoint = |name: &'static str, cursor: LogCursor| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name, txid, position) \
                 VALUES ($1, $2::text::xid8, $3) \
                 ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position",
            )
            .bind(name)
            .bind(cursor.txid)
            .bind(cursor.position)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let mut connection = db.pool.acquire().await.unwrap();
    let ids = |batch: &log::ConsumerBatch| -> Vec<String> {
        batch
            .batch
            .events
            .iter()
            .map(|event| event.aggregate_id.clone())
            .collect()
    };

    // No checkpoint row: the caller must find where to start.
    assert!(
        log::read_consumer_batch(&mut connection, "consumer", None, 100, false)
            .await
            .unwrap()
            .is_none()
    );

    // After the second event, at most three: the third to the fifth, in log order, with the
    // checkpoint as stored.
    set_checkpoint("consumer", all[1].cursor()).await;
    let found = log::read_consumer_batch(&mut connection, "consumer", None, 3, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.checkpoint, all[1].cursor());
    assert_eq!(found.upstream, None);
    assert_eq!(ids(&found), ["s2", "s3", "s4"]);
    assert_eq!(found.batch.events[0].payload, all[2].payload);
    assert!(!found.batch.hidden);

    // Headers only: the same events without their payloads.
    let headers = log::read_consumer_batch(&mut connection, "consumer", None, 3, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&headers), ["s2", "s3", "s4"]);
    assert!(headers.batch.events[0].payload.is_empty());

    // At the end of the log: the checkpoint, no events.
    set_checkpoint("consumer", all[5].cursor()).await;
    let caught_up = log::read_consumer_batch(&mut connection, "consumer", None, 3, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(caught_up.checkpoint, all[5].cursor());
    assert!(caught_up.batch.events.is_empty());

    // Reading after another consumer: never past that one's checkpoint; none if it has no
    // row yet.
    set_checkpoint("downstream", all[0].cursor()).await;
    let before_upstream =
        log::read_consumer_batch(&mut connection, "downstream", Some("upstream"), 100, false)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(before_upstream.upstream, Some(LogCursor::START));
    assert!(before_upstream.batch.events.is_empty());
    set_checkpoint("upstream", all[3].cursor()).await;
    let downstream =
        log::read_consumer_batch(&mut connection, "downstream", Some("upstream"), 100, false)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(downstream.checkpoint, all[0].cursor());
    assert_eq!(downstream.upstream, Some(all[3].cursor()));
    assert_eq!(ids(&downstream), ["s1", "s2", "s3"]);
}
