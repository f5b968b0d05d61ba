//! Griffin, the bank Calmony Pay's card settlements land in.
//!
//! This crate owns the part of Griffin's API a payment layer needs to *receive* money and
//! reconcile it, and nothing else:
//! - the [`money`] shape (`{"currency":"GBP","value":"12.34"}`) as exact integer pence;
//! - the [`resources`] as they travel (kebab-case JSON, links rather than ids);
//! - the reqwest [`client`]: `Authorization: GriffinAPIKey <key>`, navigation from
//!   `GET /v0/index` to the organisation and its links, bank accounts with their balances,
//!   transactions with Griffin's cursor pagination (`links.next` followed verbatim) and
//!   `filter[processed-at]`/`sort`, the payment behind a credit, events, webhook
//!   registration, and Griffin's JWKS;
//! - [`webhook_signature`]: verifying Griffin's RFC 9421 / ES512 webhook signatures (and
//!   signing them the same way, for the simulator);
//! - [`problem`]: Griffin's JSON error bodies;
//! - the in-memory [`simulator`] that speaks the same protocol, with `/_simulator/` controls
//!   to book an incoming payment as a settlement from the acquirer would arrive.
//!
//! **Why its own crate.** Three users need the same protocol: the server (settlement
//! reconciliation reads transactions and receives `transaction-created` webhooks), the
//! tests (the simulator stands in for Griffin, in this crate's tests and end-to-end), and
//! `calmony griffin-sim` (the simulator as a process). Keeping the client and the simulator
//! together, on the same serde types, keeps them from drifting apart, as `cardstream` does
//! for the card gateway. It must never depend on Calmony's own crates (domain, commands,
//! event store, projections, HTTP API): it is a leaf adapter that knows Griffin, not our
//! events. API keys and signing keys never reach `Debug` output or logs.
//!
//! **Covered from GRIFFIN.md:** §2.1 base URL, headers, kebab-case keys, link navigation,
//! money, the error statuses and a tolerant reading of the error body, 429 as retryable;
//! §2.3 index, organisation, bank accounts (list, get, open), balances on the account,
//! transactions (list with pagination, filters and sort; get), payments (get, for an
//! inbound credit's debtor and reference), events (list with `filter[event-type][eq]` and
//! `filter[created-at][…]`; get), webhooks (create, list, get, update, delete, activate,
//! deactivate, test); pagination (`page[size]` 1–200, default 25, `page[after]`/
//! `page[before]` cursors in `links`, `null` at the ends, links carrying the filters, sort
//! defaulting to `-created-at`); §2.4 webhook signature verification with the JWKS, key
//! caching, `Content-Digest` and `expires` checks; §2.5 the sandbox's £1,000 opening
//! balance and the missing inbound-payment simulation (our `/_simulator/` credit).
//!
//! **Left out:** §2.2 message signatures on our requests (Ed25519; optional in sandbox,
//! mandatory in live: needed before going live), creating and submitting outbound payments
//! and `payments/search`, admissions and submissions, bank account search, close and
//! PATCH, `include=payment` (accepted but not embedded), the Xero CSV format, legal
//! persons, onboarding, verification and CoP, and webhook retry schedules (UNCONFIRMED at
//! Griffin; the simulator retries a configurable few times).

pub mod client;
pub mod money;
pub mod problem;
pub mod resources;
pub mod simulator;
pub mod webhook_signature;

pub use client::{
    ApiKey, Client, ClientError, Config, EventQuery, Timeouts, TransactionQuery, TransactionSort,
    WebhookVerificationError, WebhookVerifier, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
    PRODUCTION_BASE_URL,
};
pub use money::{AmountError, Money};
pub use problem::{ApiProblem, ErrorObject, ErrorShape, ErrorSource};
pub use resources::{
    AccountStatus, AccountTransaction, BalanceChangeDirection, BankAccount, BankAddress,
    BankProductType, CreateWebhook, Event, Index, Jwk, Jwks, Links, Organization, OrganizationMode,
    Page, Payment, PaymentDirection, PaymentParty, TransactionOriginType, Webhook, WebhookState,
    WebhookTestStatus,
};
pub use webhook_signature::{
    verify_webhook, DigestAlgorithm, IncomingWebhook, KeyError, SignatureEncoding,
    VerifiedSignature, WebhookKeys, WebhookSignatureError, WebhookSigner,
};
