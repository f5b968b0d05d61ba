//! Exactly-once charging across a crash: the server is killed right after the gateway
//! approved a charge and before the outcome was recorded. Neither a retry of the request
//! nor the recovery worker may charge again; both find the approved charge.

use calmony_tests::{run, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use serde_json::Value;

fn key_for_new_project(database_url: &str) -> String {
    let project = stdout_of(&run(
        database_url,
        &["projects", "create", "--name", "Crashy"],
    ))
    .trim()
    .to_string();
    stdout_of(&run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    ))
    .trim()
    .to_string()
}

async fn confirm(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    idempotency_key: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let response = client
        .post(format!("{base}/v1/payment_intents"))
        .bearer_auth(key)
        .header("Idempotency-Key", idempotency_key)
        .form(&[
            ("amount", "4200"),
            ("currency", "gbp"),
            ("payment_method", "pm_card_visa"),
            ("confirm", "true"),
        ])
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn event_count(db: &TestDatabase, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_crash_between_approval_and_recording_never_charges_twice() {
    let db = TestDatabase::new().await;
    let key = key_for_new_project(&db.url);
    let simulator = Server::cardstream_simulator();
    let gateway = format!("{}/direct/", simulator.base_url);
    let client = reqwest::Client::new();

    // Two payments, each killing the server at the worst moment.
    for idempotency_key in ["crash-retried", "crash-recovered"] {
        let server = Server::start(
            &db.url,
            &[
                ("CALMONY_CARDSTREAM_TEST_URL", &gateway),
                ("CALMONY_FAULT_CRASH_AFTER_APPROVAL", "true"),
                // The claim a crashed request leaves behind frees up after this lease.
                ("CALMONY_IDEMPOTENCY_LEASE_MS", "500"),
            ],
        );
        let outcome = confirm(&client, &server.base_url, &key, idempotency_key).await;
        assert!(
            outcome.is_err(),
            "the server must die mid-request, got {outcome:?}"
        );
        drop(server);
    }
    assert_eq!(event_count(&db, "ChargeAttemptStarted").await, 2);
    assert_eq!(
        event_count(&db, "ChargeSucceeded").await,
        0,
        "nothing recorded the approvals"
    );

    // Restart without the fault. Short leases so the crashed requests' keys free up; the
    // recovery worker only acts on attempts open for 3 s.
    let server = Server::start(
        &db.url,
        &[
            ("CALMONY_CARDSTREAM_TEST_URL", &gateway),
            ("CALMONY_IDEMPOTENCY_LEASE_MS", "500"),
            ("CALMONY_RECOVERY_AFTER_MS", "3000"),
        ],
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;

    // The client retries the first payment with its key: it resumes, it does not re-charge.
    let (status, intent) = confirm(&client, &server.base_url, &key, "crash-retried")
        .await
        .unwrap();
    assert_eq!(status, 200, "{intent}");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], 4200);

    // Nobody retries the second one: the recovery worker resolves it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while event_count(&db, "ChargeSucceeded").await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the recovery worker never resolved the open attempt"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    assert_eq!(
        event_count(&db, "ChargeAttemptStarted").await,
        2,
        "no second attempt was ever made"
    );
    assert_eq!(event_count(&db, "ChargeSucceeded").await, 2);
    // And the gateway knows exactly one approved sale per attempt.
    let uniques: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'ChargeAttemptStarted'->>'transaction_unique' FROM events WHERE event_type = 'ChargeAttemptStarted'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let gateway_client = cardstream::Client::new(cardstream::Config {
        direct_url: gateway.clone(),
        hosted_url: gateway.replace("/direct/", "/hosted/"),
        merchant_id: "100001".into(),
        secret: cardstream::MerchantSecret::new("Circle4Take40Idea"),
        country_code: "826".into(),
        timeouts: cardstream::Timeouts::default(),
    })
    .unwrap();
    for unique in uniques {
        let answer = gateway_client
            .query_by_transaction_unique(&unique)
            .await
            .unwrap();
        assert_eq!(
            answer.amount_minor(),
            Some(4200),
            "one approved sale for {unique}"
        );
    }
}
