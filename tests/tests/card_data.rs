//! Card numbers and CVVs never reach an event, a table or a log: a full flow with typed
//! card details and test cards, then the whole database dump and the server's log (at
//! trace level) are searched for them.

use calmony_tests::{run, stdout_of, Server};
use event_store::test_harness::TestDatabase;

const CARDS: &[(&str, &str)] = &[
    ("4929421234600821", "356"),
    ("5301250070000191", "419"),
    ("374245455400001", "4887"),
    ("4000000000009995", "999"),
];

#[tokio::test]
async fn no_card_number_or_cvv_is_ever_stored_or_logged() {
    let db = TestDatabase::new().await;
    let project = stdout_of(&run(&db.url, &["projects", "create", "--name", "Careful"]))
        .trim()
        .to_string();
    let key = stdout_of(&run(
        &db.url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    ))
    .trim()
    .to_string();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut server = Server::spawn_with_log(
        &db.url,
        &["serve", "--addr", "127.0.0.1:0"],
        &[("CALMONY_LOG", "trace")],
        Some(log.path()),
    );
    let client = reqwest::Client::new();
    let post = |path: &str, form: Vec<(&str, String)>| {
        client
            .post(format!("{}{path}", server.base_url))
            .bearer_auth(&key)
            .form(&form)
            .send()
    };
    let customer: serde_json::Value =
        post("/v1/customers", vec![("email", "card@example.com".into())])
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    for (number, cvc) in CARDS {
        let method: serde_json::Value = post(
            "/v1/payment_methods",
            vec![
                ("type", "card".into()),
                ("card[number]", number.to_string()),
                ("card[exp_month]", "12".into()),
                ("card[exp_year]", "2031".into()),
                ("card[cvc]", cvc.to_string()),
            ],
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let method_id = method["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{method}"))
            .to_string();
        assert_eq!(method["card"]["last4"], &number[number.len() - 4..]);
        post(
            &format!("/v1/payment_methods/{method_id}/attach"),
            vec![("customer", customer["id"].as_str().unwrap().into())],
        )
        .await
        .unwrap();
        let intent = post(
            "/v1/payment_intents",
            vec![
                ("amount", "1500".into()),
                ("currency", "gbp".into()),
                ("payment_method", method_id),
                ("confirm", "true".into()),
            ],
        )
        .await
        .unwrap();
        assert!(intent.status() == 200 || intent.status() == 402);
    }
    // A card with a wrong number is refused, and its digits are not kept either.
    let refused = post(
        "/v1/payment_methods",
        vec![
            ("type", "card".into()),
            ("card[number]", "4929421234600822".into()),
            ("card[exp_month]", "12".into()),
            ("card[exp_year]", "2031".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 402);
    server.kill();

    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner", &db.url])
        .output()
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("card@example.com"),
        "the dump really holds the data"
    );
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(log.len() > 1_000, "the log really was written");
    for haystack in [("database", &*dump), ("log", &*log)] {
        for (number, cvc) in CARDS.iter().chain([("4929421234600822", "")].iter()) {
            assert!(
                !haystack.1.contains(number),
                "card number {number} found in the {}",
                haystack.0
            );
            if !cvc.is_empty() {
                let pattern = format!("cvc={cvc}");
                assert!(
                    !haystack.1.contains(&pattern),
                    "CVC found in the {}",
                    haystack.0
                );
                assert!(
                    !haystack.1.contains(&format!("cardCVV={cvc}")),
                    "CVV found in the {}",
                    haystack.0
                );
            }
        }
    }
}
