//! A stateful, in-memory Griffin speaking the same protocol as the real API (the parts this
//! crate covers), so that test mode, local development and our tests never need Griffin.
//!
//! Griffin's routes, behind `Authorization: GriffinAPIKey <key>` (401 otherwise):
//! - `GET /v0/index`, `GET /v0/api-keys/{id}`, `GET /v0/organizations/{id}`: navigation.
//! - `GET|POST /v0/organizations/{id}/bank/accounts`, `GET /v0/bank/accounts/{id}`: accounts
//!   with their balances; a new account gets the sandbox's opening balance as a `deposit`.
//! - `GET /v0/bank/accounts/{id}/transactions` (`page[size]`, `page[after]`, `page[before]`,
//!   `sort`, `filter[processed-at][gt|gte|lt|lte]`), `GET /v0/bank/transactions/{id}`.
//! - `GET /v0/payments/{id}`: the payment behind an inbound credit (debtor, reference).
//! - `GET /v0/organizations/{id}/events` (`filter[event-type][eq]`, `filter[created-at][…]`),
//!   `GET /v0/events/{id}`.
//! - `GET|POST /v0/organizations/{id}/webhooks`, `GET|PATCH|DELETE /v0/webhooks/{id}`,
//!   `POST …/actions/activate|deactivate`, `GET|POST …/actions/test`.
//! - `GET /v0/security/public-keys`: the JWKS of the key that signs webhooks (no key needed).
//!
//! Every event (`account-status-created`, `payment-created`, `transaction-created`,
//! `test-event`) is POSTed to the active webhook, signed as Griffin signs
//! ([`crate::webhook_signature`]), retried a bounded number of times.
//!
//! Test control, not part of Griffin's API, under `/_simulator/` and without a key:
//! - `POST /_simulator/bank/accounts/{id}/credits` with a [`Credit`]: an incoming Faster
//!   Payment (a card settlement from the acquirer) booked to the account; answers the
//!   [`PostedCredit`].
//! - `GET /_simulator/credits`: every credit posted, in posting order.
//! - `GET /_simulator/webhook-deliveries`: every webhook delivery and its outcome.
//!
//! What Griffin's docs leave UNCONFIRMED is configurable: the error body's top level, the
//! webhook digest algorithm and signature encoding, whether the index carries
//! `organization-url`, whether a new webhook starts active, and the opening balance.

mod bank;
mod delivery;
mod routes;

use std::io;
use std::net::SocketAddr;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client::{ApiKey, ClientError, Config, Timeouts};
use crate::problem::ErrorShape;
use crate::resources::{AccountTransaction, BankProductType};
use crate::webhook_signature::{DigestAlgorithm, SignatureEncoding};

pub use bank::{Credit, DeliveryRecord, PostedCredit};

/// The API key of [`SimulatorConfig::default`].
pub const DEFAULT_API_KEY: &str = "g-test-calmony-simulator";

/// An account the simulator opens at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SimulatedAccount {
    pub display_name: String,
    #[serde(default = "operational_account")]
    pub bank_product_type: BankProductType,
}

fn operational_account() -> BankProductType {
    BankProductType::OperationalAccount
}

/// Deserialisable so that `calmony griffin-sim` can read it; absent fields take the values
/// of [`SimulatorConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SimulatorConfig {
    /// The keys accepted in `Authorization: GriffinAPIKey <key>`.
    pub api_keys: Vec<String>,
    pub organization_name: String,
    pub accounts: Vec<SimulatedAccount>,
    /// Credited to each new account as a `deposit`. Griffin's sandbox page says £1,000
    /// (a third-party digest says £1,000,000); 0 books nothing.
    pub opening_balance_minor: i64,
    /// The simulated sort code of our accounts (`bank-id`).
    pub bank_id: String,
    /// Whether `GET /v0/index` carries `organization-url` (GRIFFIN.md says it does; the
    /// OpenAPI text says to follow `api-key-url`). The client handles both.
    pub index_includes_organization_url: bool,
    pub error_shape: ErrorShape,
    /// A webhook registered and active from the start.
    pub webhook_destination_url: Option<String>,
    /// Whether a webhook created through the API starts `active` (else it needs
    /// `actions/activate`).
    pub new_webhooks_active: bool,
    /// Griffin wants HTTPS on 443; off by default so tests can receive on loopback.
    pub require_https_webhooks: bool,
    pub webhook_key_id: String,
    pub webhook_digest: DigestAlgorithm,
    pub webhook_signature_encoding: SignatureEncoding,
    pub webhook_signature_validity_seconds: i64,
    pub webhook_timeout_ms: u64,
    pub webhook_max_attempts: u32,
    pub webhook_retry_delay_ms: u64,
    /// Events waiting for delivery; beyond this they are recorded as dropped.
    pub webhook_queue_capacity: usize,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            api_keys: vec![DEFAULT_API_KEY.to_string()],
            organization_name: "Calmony Pay Ltd".to_string(),
            accounts: vec![SimulatedAccount {
                display_name: "Card settlements".to_string(),
                bank_product_type: BankProductType::OperationalAccount,
            }],
            opening_balance_minor: 100_000,
            bank_id: "000000".to_string(),
            index_includes_organization_url: true,
            error_shape: ErrorShape::default(),
            webhook_destination_url: None,
            new_webhooks_active: true,
            require_https_webhooks: false,
            webhook_key_id: "griffin-simulator-1".to_string(),
            webhook_digest: DigestAlgorithm::default(),
            webhook_signature_encoding: SignatureEncoding::default(),
            webhook_signature_validity_seconds: 300,
            webhook_timeout_ms: 5_000,
            webhook_max_attempts: 3,
            webhook_retry_delay_ms: 200,
            webhook_queue_capacity: 10_000,
        }
    }
}

/// The simulator as an axum router, to mount or serve. Must be called inside a Tokio
/// runtime: it starts the webhook delivery worker, which stops when the router is dropped.
pub fn router(config: SimulatorConfig) -> axum::Router {
    routes::router(config)
}

/// Serves the simulator on `listener` until the task is dropped or fails. This is what
/// `calmony griffin-sim` runs.
pub async fn serve(listener: TcpListener, config: SimulatorConfig) -> io::Result<()> {
    axum::serve(listener, router(config)).await
}

/// Starts the simulator on a free loopback port in the background, for tests and for a
/// test-mode server that runs its own bank. It stops when the handle is dropped.
pub async fn spawn(config: SimulatorConfig) -> io::Result<RunningSimulator> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, config));
    Ok(RunningSimulator { address, task })
}

/// A simulator running in the background.
#[derive(Debug)]
pub struct RunningSimulator {
    address: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

impl RunningSimulator {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A client configuration for one of the simulator's keys.
    pub fn client_config(&self, api_key: &str) -> Config {
        Config {
            base_url: self.base_url(),
            api_key: ApiKey::new(api_key),
            timeouts: Timeouts::default(),
            max_pages: 10_000,
        }
    }

    /// The test-control endpoints.
    pub fn control(&self) -> Control {
        Control::new(self.base_url())
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client of the simulator's `/_simulator/` test-control endpoints, for tests and tools
/// driving a simulator in this process or in another (`calmony griffin-sim`).
#[derive(Debug, Clone)]
pub struct Control {
    base_url: String,
    http: reqwest::Client,
}

impl Control {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request.send().await.map_err(ClientError::Transport)?;
        let status = response.status();
        let url = response.url().to_string();
        let bytes = response.bytes().await.map_err(ClientError::Transport)?;
        if !status.is_success() {
            return Err(ClientError::Api(crate::problem::ApiProblem::parse(
                status.as_u16(),
                &bytes,
            )));
        }
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Malformed {
            url,
            reason: error.to_string(),
        })
    }

    /// Books an incoming payment to the account at `account_url` (`/v0/bank/accounts/ba.…`
    /// or just its id) and answers the transaction it made.
    pub async fn credit(
        &self,
        account_url: &str,
        credit: &Credit,
    ) -> Result<AccountTransaction, ClientError> {
        let account_id = account_url.rsplit('/').next().unwrap_or(account_url);
        let posted: PostedCredit = self
            .json(
                self.http
                    .post(format!(
                        "{}/_simulator/bank/accounts/{account_id}/credits",
                        self.base_url
                    ))
                    .json(credit),
            )
            .await?;
        Ok(posted.transaction)
    }

    /// Every credit posted so far, in posting order.
    pub async fn credits(&self) -> Result<Vec<PostedCredit>, ClientError> {
        self.json(
            self.http
                .get(format!("{}/_simulator/credits", self.base_url)),
        )
        .await
    }

    /// Every webhook delivery so far and its outcome.
    pub async fn webhook_deliveries(&self) -> Result<Vec<DeliveryRecord>, ClientError> {
        self.json(
            self.http
                .get(format!("{}/_simulator/webhook-deliveries", self.base_url)),
        )
        .await
    }
}
