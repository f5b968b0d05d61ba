//! Gateway settings: where test-mode and live-mode charges go.

use clap::Args;
use commands::payments::CheckoutFault;

/// Cardstream's published demo account (the simulator knows it too).
pub const DEMO_MERCHANT_ID: &str = "100001";
pub const DEMO_SECRET: &str = "Circle4Take40Idea";

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Cardstream Direct URL for test-mode keys. Unset: `serve` starts the simulator on
    /// loopback and uses it.
    #[arg(long, env = "CALMONY_CARDSTREAM_TEST_URL")]
    pub cardstream_test_url: Option<String>,
    #[arg(long, env = "CALMONY_CARDSTREAM_TEST_MERCHANT_ID", default_value = DEMO_MERCHANT_ID)]
    pub cardstream_test_merchant_id: String,
    #[arg(long, env = "CALMONY_CARDSTREAM_TEST_SECRET", default_value = DEMO_SECRET, hide_env_values = true)]
    pub cardstream_test_secret: String,

    /// Cardstream Direct URL for live-mode keys; live charges are refused without all three
    /// live settings.
    #[arg(long, env = "CALMONY_CARDSTREAM_LIVE_URL")]
    pub cardstream_live_url: Option<String>,
    #[arg(long, env = "CALMONY_CARDSTREAM_LIVE_MERCHANT_ID")]
    pub cardstream_live_merchant_id: Option<String>,
    #[arg(long, env = "CALMONY_CARDSTREAM_LIVE_SECRET", hide_env_values = true)]
    pub cardstream_live_secret: Option<String>,

    /// Test only: abort right after the gateway approves a charge, before recording it.
    #[arg(
        long,
        env = "CALMONY_FAULT_CRASH_AFTER_APPROVAL",
        hide = true,
        default_value_t = false
    )]
    pub fault_crash_after_approval: bool,

    /// Test only: abort at this point of a hosted checkout's return: `accepted` (the
    /// gateway's result accepted, nothing else recorded) or `recorded` (the payment
    /// recorded, the session not completed).
    #[arg(
        long,
        env = "CALMONY_FAULT_CRASH_IN_CHECKOUT_RETURN",
        hide = true,
        value_parser = parse_checkout_fault
    )]
    pub fault_crash_in_checkout_return: Option<CheckoutFault>,
}

fn parse_checkout_fault(text: &str) -> Result<CheckoutFault, String> {
    match text {
        "accepted" => Ok(CheckoutFault::AfterAccept),
        "recorded" => Ok(CheckoutFault::BeforeComplete),
        other => Err(format!("{other}: expected accepted or recorded")),
    }
}

pub fn client_config(direct_url: &str, merchant_id: &str, secret: &str) -> cardstream::Config {
    let hosted_url = direct_url.replace("/direct/", "/hosted/");
    cardstream::Config {
        direct_url: direct_url.to_string(),
        hosted_url,
        merchant_id: merchant_id.to_string(),
        secret: cardstream::MerchantSecret::new(secret),
        country_code: "826".to_string(),
        timeouts: cardstream::Timeouts::default(),
    }
}

impl GatewayArgs {
    pub fn live_config(&self) -> Option<cardstream::Config> {
        match (
            &self.cardstream_live_url,
            &self.cardstream_live_merchant_id,
            &self.cardstream_live_secret,
        ) {
            (Some(url), Some(merchant), Some(secret)) => Some(client_config(url, merchant, secret)),
            _ => None,
        }
    }
}
