//! Cardstream, the card gateway Calmony Pay charges through.
//!
//! This crate owns the Cardstream protocol and nothing else: the wire format and its
//! signature ([`fields`], [`signature`]), the response codes and their mapping to Stripe
//! decline codes ([`codes`]), the reqwest [`client`] the payment API calls, the Hosted page
//! helpers ([`hosted`]), and the in-memory [`simulator`] that speaks the same protocol so
//! that test mode and our tests never need the real gateway, with the [`test_cards`] that
//! stand for Stripe's `pm_card_*` test payment methods.
//!
//! It must never depend on Calmony's own crates (domain, commands, event store, projections,
//! HTTP API): it is a leaf adapter that knows Cardstream, not Stripe objects or our events.
//! Card numbers and CVVs pass through it but are never logged, printed by `Debug`, or
//! stored (the simulator keeps a last-4, a brand and a salted fingerprint).

pub mod card;
pub mod client;
pub mod codes;
pub mod fields;
pub mod hosted;
pub mod response;
pub mod signature;
pub mod simulator;
pub mod test_cards;

pub use card::{CardBrand, CardDetails, CardError, Cvv};
pub use client::{
    BrowserDetails, CaptureMode, Client, ClientError, Config, CustomerDetails, MerchantSecret,
    PaymentSource, RefundMethod, RefundResult, SaleRequest, StoredCardAgreement, ThreeDSecure,
    Timeouts, VerifyRequest,
};
pub use codes::{stripe_decline_code, ResponseCode, TransactionState};
pub use fields::Fields;
pub use hosted::{HostedAction, HostedPaymentForm, HostedPaymentRequest};
pub use response::{Decline, GatewayResponse, Outcome, ThreeDSecureChallenge};
pub use signature::SignatureError;
