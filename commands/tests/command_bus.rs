//! Commands against a real event store: retries on conflict, rejections that write nothing,
//! and events stored in an older shape.

use std::collections::BTreeMap;

use commands::{CommandBus, CommandError};
use domain::customer::{Customer, CustomerCommand, CustomerError, CustomerFields};
use event_store::store::AsOf;
use event_store::test_harness::TestDatabase;
use event_store::{EventMetadata, EventStore, Mode};

fn bus(db: &TestDatabase) -> CommandBus {
    CommandBus::new(EventStore::new(db.pool.clone()), domain::upcasters::all())
}

fn metadata() -> EventMetadata {
    EventMetadata::new("proj_1", Mode::Test, "key:test").with_request("req_test")
}

async fn create(bus: &CommandBus, id: &str) {
    bus.execute::<Customer>(
        id,
        CustomerCommand::Create {
            customer_id: id.into(),
            fields: CustomerFields::default(),
            at: 1,
        },
        &(),
        &metadata(),
    )
    .await
    .expect("create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_stream_all_land_through_retries() {
    let db = TestDatabase::new().await;
    let bus = bus(&db);
    create(&bus, "cus_1").await;
    let writers = 8;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let fields = CustomerFields {
                metadata: BTreeMap::from([(format!("k{writer}"), Some(writer.to_string()))]),
                ..Default::default()
            };
            bus.execute::<Customer>(
                "cus_1",
                CustomerCommand::Update { fields, at: 2 },
                &(),
                &metadata(),
            )
            .await
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("every update lands after retrying on fresh state");
    }
    let (customer, version) = bus.load::<Customer>("cus_1", AsOf::Now).await.unwrap();
    assert_eq!(version, 1 + writers);
    assert_eq!(
        customer.metadata.len(),
        writers as usize,
        "no update was lost"
    );
}

#[tokio::test]
async fn a_rejected_command_writes_nothing() {
    let db = TestDatabase::new().await;
    let bus = bus(&db);
    let outcome = bus
        .execute::<Customer>(
            "cus_missing",
            CustomerCommand::Delete { at: 1 },
            &(),
            &metadata(),
        )
        .await;
    assert!(matches!(
        outcome,
        Err(CommandError::Rejected(CustomerError::NotFound))
    ));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn an_event_stored_in_an_older_shape_still_loads() {
    let db = TestDatabase::new().await;
    // As written by the 1.0 code: the name was `full_name`.
    let stored = include_str!("fixtures/customer_created_v1.json");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('customer', 'cus_legacy', 1, 'CustomerCreated', '1.0', $1::json, '{\"project\": \"proj_1\"}')",
    )
    .bind(stored)
    .execute(&db.pool)
    .await
    .unwrap();
    let bus = bus(&db);
    let (customer, version) = bus.load::<Customer>("cus_legacy", AsOf::Now).await.unwrap();
    assert_eq!(version, 1);
    assert_eq!(customer.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(customer.email.as_deref(), Some("ada@example.com"));
    // New commands build on the upcast state, and the old row is untouched.
    bus.execute::<Customer>(
        "cus_legacy",
        CustomerCommand::Update {
            fields: CustomerFields {
                phone: Some(Some("+44 20 7946 0000".into())),
                ..Default::default()
            },
            at: 2,
        },
        &(),
        &metadata(),
    )
    .await
    .unwrap();
    let version: String = sqlx::query_scalar(
        "SELECT event_version FROM events WHERE aggregate_id = 'cus_legacy' AND sequence = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(version, "1.0");
}

#[tokio::test]
async fn replay_shows_the_state_as_of_a_position() {
    let db = TestDatabase::new().await;
    let bus = bus(&db);
    create(&bus, "cus_r").await;
    let first_position: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    bus.execute::<Customer>(
        "cus_r",
        CustomerCommand::Update {
            fields: CustomerFields {
                name: Some(Some("Later Name".into())),
                ..Default::default()
            },
            at: 5,
        },
        &(),
        &metadata(),
    )
    .await
    .unwrap();
    let (then, version) =
        commands::replay::replay(&bus, "customer", "cus_r", AsOf::Position(first_position))
            .await
            .unwrap();
    assert_eq!(version, 1);
    assert_eq!(then["name"], serde_json::Value::Null);
    let (now, version) = commands::replay::replay(&bus, "customer", "cus_r", AsOf::Now)
        .await
        .unwrap();
    assert_eq!(version, 2);
    assert_eq!(now["name"], "Later Name");
}
