//! The process's one listener: notifications reach the waiters of their channel (and
//! payload), one backend listens however many wait, and a lost connection wakes everyone and
//! listens again.

use std::time::Duration;

use event_store::notifications::Notifications;
use event_store::test_harness::TestDatabase;
use sqlx::PgPool;
use tokio::sync::watch;

const CHANNEL: &str = "calmony_test_channel";
const OTHER_CHANNEL: &str = "calmony_test_other";
const WAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a waiter that must not wake is watched.
const QUIET: Duration = Duration::from_millis(300);

async fn notify(pool: &PgPool, channel: &str, payload: &str) {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await
        .unwrap();
}

async fn wakes(receiver: &mut watch::Receiver<u64>) -> bool {
    tokio::time::timeout(WAKE_TIMEOUT, receiver.changed())
        .await
        .is_ok_and(|changed| changed.is_ok())
}

async fn stays_quiet(receiver: &mut watch::Receiver<u64>) -> bool {
    tokio::time::timeout(QUIET, receiver.changed())
        .await
        .is_err()
}

async fn listening_backends(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_notification_wakes_the_waiters_of_its_channel_and_payload_only() {
    let db = TestDatabase::new().await;
    let notifications = Notifications::listen(&db.pool, &[CHANNEL, OTHER_CHANNEL])
        .await
        .unwrap();
    let mut any = notifications.watch(CHANNEL, None);
    let mut api = notifications.watch(CHANNEL, Some("api"));
    let mut billing = notifications.watch(CHANNEL, Some("billing"));
    let mut other = notifications.watch(OTHER_CHANNEL, None);

    notify(&db.pool, CHANNEL, "api").await;
    assert!(wakes(&mut any).await, "the channel's waiter was not woken");
    assert!(wakes(&mut api).await, "the payload's waiter was not woken");
    assert!(
        stays_quiet(&mut billing).await,
        "another payload's waiter woke"
    );
    assert!(
        stays_quiet(&mut other).await,
        "another channel's waiter woke"
    );

    notify(&db.pool, OTHER_CHANNEL, "").await;
    assert!(wakes(&mut other).await);
    assert!(stays_quiet(&mut any).await);
}

#[tokio::test]
async fn one_backend_listens_however_many_wait() {
    let db = TestDatabase::new().await;
    let notifications = Notifications::listen(&db.pool, &[CHANNEL]).await.unwrap();
    let mut receivers: Vec<_> = (0..10)
        .map(|index| {
            let payload = format!("p{}", index % 3);
            notifications.watch(CHANNEL, (index % 2 == 0).then_some(payload.as_str()))
        })
        .collect();
    assert_eq!(listening_backends(&db.pool).await, 1);
    notify(&db.pool, CHANNEL, "p0").await;
    assert!(wakes(&mut receivers[0]).await);
    assert!(wakes(&mut receivers[1]).await);

    drop(receivers);
    drop(notifications);
    let deadline = tokio::time::Instant::now() + WAKE_TIMEOUT;
    while listening_backends(&db.pool).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener's connection outlived the last handle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_lost_connection_wakes_every_waiter_and_listens_again() {
    let db = TestDatabase::new().await;
    let notifications = Notifications::listen(&db.pool, &[CHANNEL]).await.unwrap();
    let mut named = notifications.watch(CHANNEL, Some("api"));
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%') AS t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(terminated, 1);
    // Whatever was sent while it was away is not coming: the waiter reads anyway.
    assert!(wakes(&mut named).await, "a lost connection woke nobody");

    // And it listens again: a later notification arrives.
    let deadline = tokio::time::Instant::now() + WAKE_TIMEOUT;
    loop {
        notify(&db.pool, CHANNEL, "api").await;
        if tokio::time::timeout(Duration::from_millis(200), named.changed())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification arrived after the reconnection"
        );
    }
    assert_eq!(listening_backends(&db.pool).await, 1);
}
