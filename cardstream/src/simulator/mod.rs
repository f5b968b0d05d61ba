//! A stateful, in-memory Cardstream gateway speaking the same protocol as the real one, so
//! that test mode, local development and our tests never need the real gateway.
//!
//! Endpoints:
//! - `POST /direct/`: the Direct integration (form-urlencoded in, signed form-urlencoded out).
//! - `POST /hosted/` (also `/hosted/modal/` and `/paymentform/`): the Hosted payment page,
//!   a real card form; on submit the browser auto-posts the signed result to `redirectURL`
//!   and a copy goes server-to-server to `callbackURL`.
//! - `POST /acs/challenge`: the 3-D Secure challenge page (the tester picks pass or fail),
//!   posting `cres` back to the merchant's `threeDSRedirectURL`.
//! - `POST /admin/settle` (optional `xref=`): run settlement now, so tests can reach the
//!   `accepted` state that `REFUND_SALE` needs. `POST /admin/clock/advance` (`seconds=`):
//!   move the simulator's clock (duplicate windows, `captureDelay` days, `settle_after`).
//!
//! Outcomes follow the card (see [`crate::test_cards`]) unless
//! [`SimulatorConfig::strict_test_amounts`] applies Cardstream's test-amount ranges instead.

mod engine;
mod ledger;
mod pages;
mod routes;

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client::{Config, MerchantSecret, Timeouts};

/// The secret of Cardstream's public demo accounts (§1.10), used by [`SimulatorConfig::demo`].
pub const DEMO_SECRET: &str = "Circle4Take40Idea";

/// A merchant account the simulator knows.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SimulatedMerchant {
    pub merchant_id: String,
    /// `None` for an account without signing: answers are then unsigned.
    #[serde(default)]
    pub secret: Option<String>,
    /// Refuse unsigned requests (66087), as accounts that make signatures mandatory do.
    #[serde(default = "signatures_required_by_default")]
    pub signature_required: bool,
}

impl SimulatedMerchant {
    /// An account that requires signed requests, as every Calmony account does.
    pub fn signed(merchant_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            merchant_id: merchant_id.into(),
            secret: Some(secret.into()),
            signature_required: true,
        }
    }
}

impl fmt::Debug for SimulatedMerchant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SimulatedMerchant")
            .field("merchant_id", &self.merchant_id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("signature_required", &self.signature_required)
            .finish()
    }
}

/// Deserialisable so that `calmony cardstream-sim` can read it from its configuration;
/// absent fields take the values of [`SimulatorConfig::demo`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct SimulatorConfig {
    pub merchants: Vec<SimulatedMerchant>,
    /// Apply Cardstream's test-amount ranges (§1.10) instead of per-card outcomes; 3-D
    /// Secure then follows the expiry month (12 challenges, 02 and 06 fail).
    pub strict_test_amounts: bool,
    /// Settle captured transactions automatically once this long has passed since capture;
    /// `None` settles only through `POST /admin/settle`.
    pub settle_after_seconds: Option<u64>,
    /// The address browsers reach the simulator on (for `threeDSURL`); by default the
    /// request's `Host`.
    pub public_url: Option<String>,
    pub callback_timeout_ms: u64,
}

fn signatures_required_by_default() -> bool {
    true
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self::demo()
    }
}

impl SimulatorConfig {
    /// One merchant account requiring signatures.
    pub fn with_merchant(merchant_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            merchants: vec![SimulatedMerchant::signed(merchant_id, secret)],
            strict_test_amounts: false,
            settle_after_seconds: None,
            public_url: None,
            callback_timeout_ms: 5_000,
        }
    }

    /// Cardstream's public demo accounts, 100001 and 100856, with their published secret.
    pub fn demo() -> Self {
        let mut config = Self::with_merchant("100001", DEMO_SECRET);
        config
            .merchants
            .push(SimulatedMerchant::signed("100856", DEMO_SECRET));
        config
    }

    pub(crate) fn merchant(&self, merchant_id: &str) -> Option<&SimulatedMerchant> {
        self.merchants
            .iter()
            .find(|merchant| merchant.merchant_id == merchant_id)
    }
}

/// The simulator as an axum router, to mount or serve.
pub fn router(config: SimulatorConfig) -> axum::Router {
    routes::router(config)
}

/// Serves the simulator on `listener` until the task is dropped or fails. This is what
/// `calmony cardstream-sim` runs.
pub async fn serve(listener: TcpListener, mut config: SimulatorConfig) -> io::Result<()> {
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{}", listener.local_addr()?));
    }
    axum::serve(listener, router(config)).await
}

/// Starts the simulator on a free loopback port in the background, for tests and for a
/// test-mode server that runs its own gateway. It stops when the handle is dropped.
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

    pub fn direct_url(&self) -> String {
        format!("{}/direct/", self.base_url())
    }

    pub fn hosted_url(&self) -> String {
        format!("{}/hosted/", self.base_url())
    }

    /// A client configuration for one of the simulator's merchants.
    pub fn client_config(&self, merchant_id: &str, secret: &str) -> Config {
        Config {
            direct_url: self.direct_url(),
            hosted_url: self.hosted_url(),
            merchant_id: merchant_id.to_string(),
            secret: MerchantSecret::new(secret),
            country_code: "826".to_string(),
            timeouts: Timeouts::default(),
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
