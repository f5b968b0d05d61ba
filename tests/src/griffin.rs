//! The Griffin simulator for end-to-end tests: `calmony griffin-sim` as a process, its
//! settlement account, credits booked through its `/_simulator/` control, and the settings
//! that point `calmony` at it.

use serde_json::{json, Value};

use crate::Server;

/// The API key the simulator accepts.
pub const GRIFFIN_KEY: &str = "g-test-calmony-simulator";

/// `calmony griffin-sim` on a free port, and its settlement account's URL.
pub async fn griffin() -> (Server, String) {
    let simulator = Server::spawn(
        "postgres://unused",
        &["griffin-sim", "--addr", "127.0.0.1:0"],
        &[],
    );
    let client = reqwest::Client::new();
    let get = |path: String| {
        let request = client
            .get(format!("{}{path}", simulator.base_url))
            .header("Authorization", format!("GriffinAPIKey {GRIFFIN_KEY}"));
        async move {
            request
                .send()
                .await
                .expect("reach the Griffin simulator")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    let index = get("/v0/index".into()).await;
    let organization = get(index["organization-url"].as_str().unwrap().to_string()).await;
    let accounts = get(organization["organization-bank-accounts-url"]
        .as_str()
        .unwrap()
        .to_string())
    .await;
    let account = accounts["accounts"][0]["account-url"]
        .as_str()
        .expect("an account")
        .to_string();
    (simulator, account)
}

/// Books an incoming payment of `pence` with `reference` through the simulator's control;
/// answers its Griffin transaction id.
pub async fn book_credit(simulator: &Server, account: &str, pence: i64, reference: &str) -> String {
    book_credit_from(simulator, account, pence, reference, "Acquirer Ltd").await
}

/// As [`book_credit`], from a payer named `counterparty`.
pub async fn book_credit_from(
    simulator: &Server,
    account: &str,
    pence: i64,
    reference: &str,
    counterparty: &str,
) -> String {
    let id = account.rsplit('/').next().unwrap();
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "{}/_simulator/bank/accounts/{id}/credits",
            simulator.base_url
        ))
        .json(&json!({
            "amount": {"currency": "GBP", "value": format!("{}.{:02}", pence / 100, pence % 100)},
            "reference": reference,
            "counterparty-name": counterparty,
        }))
        .send()
        .await
        .expect("book a credit")
        .json()
        .await
        .expect("JSON");
    let url = answer["transaction"]["account-transaction-url"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    url.rsplit('/').next().unwrap().to_string()
}

/// The variables that point `calmony` at the simulator.
pub fn griffin_env(simulator: &Server) -> Vec<(String, String)> {
    vec![
        ("CALMONY_GRIFFIN_URL".into(), simulator.base_url.clone()),
        ("CALMONY_GRIFFIN_API_KEY".into(), GRIFFIN_KEY.into()),
    ]
}
