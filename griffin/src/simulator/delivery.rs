//! Webhook delivery: each event is POSTed to the webhook's destination, signed at send time,
//! retried up to `webhook_max_attempts` times, and recorded in the bank's delivery log. One
//! worker delivers in event order (Griffin promises no order; we simply do not shuffle).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use super::bank::{Bank, DeliveryRecord};
use crate::resources::Event;
use crate::webhook_signature::WebhookSigner;

pub(crate) struct DeliveryJob {
    pub event: Event,
    pub destination_url: String,
}

/// What one delivery came to.
pub(crate) struct Outcome {
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.http_status
            .is_some_and(|status| (200..300).contains(&status))
    }
}

#[derive(Clone)]
pub(crate) struct Deliverer {
    pub http: reqwest::Client,
    pub signer: WebhookSigner,
    pub max_attempts: u32,
    pub retry_delay: Duration,
}

impl Deliverer {
    pub fn new(
        signer: WebhookSigner,
        timeout_ms: u64,
        max_attempts: u32,
        retry_delay_ms: u64,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain reqwest client builds");
        Self {
            http,
            signer,
            max_attempts: max_attempts.max(1),
            retry_delay: Duration::from_millis(retry_delay_ms),
        }
    }

    /// POSTs `event` until a 2xx or the attempts run out.
    pub async fn deliver(
        &self,
        event: &Event,
        destination_url: &str,
        max_attempts: u32,
    ) -> Outcome {
        let mut outcome = Outcome {
            attempts: 0,
            http_status: None,
            error: None,
        };
        let Ok(destination) = reqwest::Url::parse(destination_url) else {
            outcome.error = Some("webhook-unknown-host".to_string());
            return outcome;
        };
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(error) => {
                outcome.error = Some(error.to_string());
                return outcome;
            }
        };
        while outcome.attempts < max_attempts {
            if outcome.attempts > 0 {
                tokio::time::sleep(self.retry_delay).await;
            }
            outcome.attempts += 1;
            let signed = self.signer.sign(&destination, &body, Utc::now());
            let mut request = self.http.post(destination.clone()).body(body.clone());
            for (name, value) in signed.pairs() {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(response) => {
                    outcome.http_status = Some(response.status().as_u16());
                    outcome.error = None;
                    if outcome.delivered() {
                        break;
                    }
                }
                Err(error) => {
                    outcome.http_status = None;
                    outcome.error = Some(if error.is_timeout() {
                        "webhook-timeout".to_string()
                    } else if error.is_connect() {
                        "webhook-unknown-host".to_string()
                    } else {
                        "webhook-unknown-error".to_string()
                    });
                }
            }
        }
        outcome
    }
}

/// Delivers queued events until every sender is gone (the router was dropped).
pub(crate) async fn run_worker(
    mut jobs: mpsc::Receiver<DeliveryJob>,
    deliverer: Deliverer,
    bank: Arc<Mutex<Bank>>,
) {
    while let Some(job) = jobs.recv().await {
        let outcome = deliverer
            .deliver(&job.event, &job.destination_url, deliverer.max_attempts)
            .await;
        if !outcome.delivered() {
            tracing::warn!(
                event = %job.event.event_url,
                attempts = outcome.attempts,
                "the simulator could not deliver a webhook"
            );
        }
        record(&bank, &job, &outcome);
    }
}

pub(crate) fn record(bank: &Mutex<Bank>, job: &DeliveryJob, outcome: &Outcome) {
    let mut bank = bank.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    bank.deliveries.push(DeliveryRecord {
        event_url: job.event.event_url.clone(),
        event_type: job.event.event_type.clone(),
        destination_url: job.destination_url.clone(),
        attempts: outcome.attempts,
        delivered: outcome.delivered(),
        last_http_status: outcome.http_status,
        last_error: outcome.error.clone(),
    });
}
