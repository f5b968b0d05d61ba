//! The Stripe-shaped API as the end-to-end tests drive it: form posts with a bearer key,
//! JSON answers, and the billing helpers several test files need (test clocks, lists).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::{run, stdout_of, Server};

pub struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    pub fn new(server: &Server, key: &str) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: server.base_url.clone(),
            key: key.to_string(),
        }
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let (status, _, body) = self.send_post(path, None, form).await;
        (status, body)
    }

    /// A POST with an `Idempotency-Key`: (status, whether `Idempotent-Replayed: true`, body).
    pub async fn post_idempotent(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, bool, Value) {
        self.send_post(path, Some(key), form).await
    }

    async fn send_post(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
        form: &[(&str, &str)],
    ) -> (StatusCode, bool, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .form(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|value| value == "true");
        (
            status,
            replayed,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("DELETE");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The same server with another key (another project's, say).
    pub fn with_key(&self, key: &str) -> Api {
        Api {
            client: self.client.clone(),
            base: self.base.clone(),
            key: key.to_string(),
        }
    }

    /// A POST that must answer 200; its body.
    pub async fn ok(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self.post(path, form).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    /// A GET that must answer 200; its body.
    pub async fn fetch(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A list's `data`.
    pub async fn list(&self, path: &str) -> Vec<Value> {
        let list = self.fetch(path).await;
        list["data"].as_array().cloned().unwrap_or_default()
    }

    pub async fn invoices_of(&self, customer: &str) -> Vec<Value> {
        self.list(&format!("/v1/invoices?customer={customer}&limit=100"))
            .await
    }

    pub async fn invoice(&self, id: &str) -> Value {
        self.fetch(&format!("/v1/invoices/{id}")).await
    }

    pub async fn subscription(&self, id: &str) -> Value {
        self.fetch(&format!("/v1/subscriptions/{id}")).await
    }

    /// The customer's payment intents that succeeded.
    pub async fn succeeded_charges_of(&self, customer: &str) -> Vec<Value> {
        self.list(&format!(
            "/v1/payment_intents?customer={customer}&limit=100"
        ))
        .await
        .into_iter()
        .filter(|intent| intent["status"] == "succeeded")
        .collect()
    }

    /// Moves a test clock and waits until the work due by then is done (`ready`).
    pub async fn advance(&self, clock: &str, to: i64) {
        let body = self
            .ok(
                &format!("/v1/test_helpers/test_clocks/{clock}/advance"),
                &[("frozen_time", &to.to_string())],
            )
            .await;
        assert_eq!(body["status"], "advancing", "{body}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let clock = self
                .fetch(&format!("/v1/test_helpers/test_clocks/{clock}"))
                .await;
            if clock["status"] == "ready" && clock["frozen_time"] == to {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the clock never became ready: {clock}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A new project (named `name`) and a secret key of `mode` for it, through the CLI.
pub fn project_key(database_url: &str, name: &str, mode: &str) -> String {
    let output = run(database_url, &["projects", "create", "--name", name]);
    assert!(output.status.success());
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", mode],
    );
    assert!(output.status.success());
    stdout_of(&output).trim().to_string()
}

/// An object's `id`.
pub fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}
