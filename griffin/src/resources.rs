//! Griffin's resources as they travel (kebab-case JSON). The simulator serialises these same
//! types, so the client and the simulator cannot drift apart on a key's spelling.
//!
//! Links (`*-url`) are kept as Griffin sends them, usually paths relative to the API's base
//! (`/v0/bank/accounts/ba.…`); the client resolves them. Enumerations keep an `Other` arm so
//! that a value Griffin adds within v0 (compatible changes only add) does not break parsing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Money;

/// `GET /v0/index`: the entry point of link navigation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Index {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_url: Option<String>,
}

/// `GET /v0/api-keys/{id}`: only what navigation needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApiKeyResource {
    pub api_key_url: String,
    pub organization_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrganizationMode {
    TestMode,
    LiveMode,
    #[serde(other)]
    Other,
}

/// `GET /v0/organizations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Organization {
    pub organization_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub organization_mode: OrganizationMode,
    pub organization_bank_accounts_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_payments_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_payments_search_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_events_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_webhooks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_legal_person_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountStatus {
    Opening,
    Open,
    Closing,
    Closed,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BankProductType {
    OperationalAccount,
    SafeguardingAccount,
    ClientMoneyAccount,
    EmbeddedAccount,
    SavingsAccount,
    #[serde(other)]
    Other,
}

/// A UK address of an account: sort code (`bank-id`, code `gbdsc`) and account number
/// (`account-number`, code `bban`). This is what an acquirer pays settlements to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BankAddress {
    pub account_holder: String,
    pub bank_id: String,
    pub bank_id_code: String,
    pub account_number: String,
    pub account_number_code: String,
}

/// `GET /v0/bank/accounts/{id}`. Balances live on the account; Griffin has no separate
/// balance endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BankAccount {
    pub account_url: String,
    pub display_name: String,
    pub account_status: AccountStatus,
    pub bank_product_type: BankProductType,
    pub account_balance: Money,
    pub available_balance: Money,
    #[serde(default)]
    pub bank_addresses: Vec<BankAddress>,
    pub account_transactions_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_payments_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_admissions_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_submissions_url: Option<String>,
    #[serde(default)]
    pub primary_account: bool,
    #[serde(default)]
    pub pooled_funds: bool,
    #[serde(default)]
    pub account_restricted: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceChangeDirection {
    Credit,
    Debit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransactionOriginType {
    Payment,
    Fee,
    Interest,
    Commission,
    Transfer,
    ManualPayment,
    Deposit,
    CardTransaction,
    #[serde(other)]
    Other,
}

/// One ledger line of an account: `GET /v0/bank/transactions/{id}`, and the items of
/// `GET /v0/bank/accounts/{id}/transactions`. `balance-change` is always positive; the sign
/// is `balance-change-direction`. `account-balance` is the running balance after the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AccountTransaction {
    pub account_transaction_url: String,
    pub account_url: String,
    pub balance_change: Money,
    pub balance_change_direction: BalanceChangeDirection,
    pub account_balance: Money,
    pub transaction_origin_type: TransactionOriginType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_url: Option<String>,
    /// The payer's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub processed_at: DateTime<Utc>,
    pub effective_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl AccountTransaction {
    /// The signed change in minor units: positive for a credit.
    pub fn signed_amount_minor(&self) -> i64 {
        match self.balance_change_direction {
            BalanceChangeDirection::Credit => self.balance_change.amount_minor,
            BalanceChangeDirection::Debit => -self.balance_change.amount_minor,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaymentDirection {
    InboundPayment,
    OutboundPayment,
    #[serde(other)]
    Other,
}

/// A party of a payment: a UK account by sort code and number, or a Griffin account by URL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PaymentParty {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_id_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_number_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_url: Option<String>,
}

/// `GET /v0/payments/{id}`: read for an inbound credit's payer (`debtor`) and reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Payment {
    pub payment_url: String,
    pub payment_direction: PaymentDirection,
    pub payment_amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debtor: Option<PaymentParty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creditor: Option<PaymentParty>,
    pub created_at: DateTime<Utc>,
}

/// An event, as listed and as POSTed to the webhook: the resource's JSON in `event-payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Event {
    pub event_url: String,
    pub event_type: String,
    pub event_payload: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// The event types this crate gives names to; Griffin has more (verification, onboarding…).
pub mod event_types {
    pub const TRANSACTION_CREATED: &str = "transaction-created";
    pub const PAYMENT_CREATED: &str = "payment-created";
    pub const ADMISSION_CREATED: &str = "admission-created";
    pub const ADMISSION_UPDATED: &str = "admission-updated";
    pub const ACCOUNT_STATUS_CREATED: &str = "account-status-created";
    pub const TEST_EVENT: &str = "test-event";
}

impl Event {
    /// The payload of a `transaction-created` event.
    pub fn transaction(&self) -> Option<AccountTransaction> {
        if self.event_type != event_types::TRANSACTION_CREATED {
            return None;
        }
        serde_json::from_value(self.event_payload.clone()).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookState {
    Active,
    Inactive,
    #[serde(other)]
    Other,
}

/// `GET /v0/webhooks/{id}`. One per organisation; it receives every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Webhook {
    pub webhook_url: String,
    pub webhook_destination_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_description: Option<String>,
    pub webhook_state: WebhookState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivate_webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_url: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `POST /v0/organizations/{id}/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CreateWebhook {
    pub webhook_destination_url: String,
    pub webhook_description: String,
}

/// `GET /v0/webhooks/{id}/actions/test`: the outcome of the latest test event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WebhookTestStatus {
    /// `default` (none sent yet) or `complete`.
    pub webhook_request_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `links` of a list answer: cursor links (`…?page[after]=…`) carrying the original filters,
/// `null` at either end. Follow them verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Links {
    pub prev: Option<String>,
    pub next: Option<String>,
}

/// One page of a list. Griffin names the array after the collection (`accounts`,
/// `account-transactions`, `events`, `organization-webhooks`); [`Listed`] says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub links: Links,
}

/// A resource that Griffin lists, with the key its list answer puts the array under.
pub trait Listed: serde::de::DeserializeOwned + Serialize {
    const COLLECTION_KEY: &'static str;
}

impl Listed for BankAccount {
    const COLLECTION_KEY: &'static str = "accounts";
}

impl Listed for AccountTransaction {
    const COLLECTION_KEY: &'static str = "account-transactions";
}

impl Listed for Event {
    const COLLECTION_KEY: &'static str = "events";
}

impl Listed for Webhook {
    const COLLECTION_KEY: &'static str = "organization-webhooks";
}

impl<T: Listed> Page<T> {
    /// The list answer's JSON: `{"<collection>": [...], "links": {...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert(
            T::COLLECTION_KEY.to_string(),
            serde_json::to_value(&self.items).unwrap_or_default(),
        );
        body.insert(
            "links".to_string(),
            serde_json::to_value(&self.links).unwrap_or_default(),
        );
        serde_json::Value::Object(body)
    }

    pub fn from_json(mut body: serde_json::Value) -> Result<Self, serde_json::Error> {
        let items = body
            .get_mut(T::COLLECTION_KEY)
            .map(serde_json::Value::take)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("no {:?} array in the list", T::COLLECTION_KEY))
            })?;
        let links = body
            .get_mut("links")
            .map(serde_json::Value::take)
            .unwrap_or_default();
        Ok(Self {
            items: serde_json::from_value(items)?,
            links: if links.is_null() {
                Links::default()
            } else {
                serde_json::from_value(links)?
            },
        })
    }
}

/// One key of Griffin's JWKS (`GET /v0/security/public-keys`): an EC P-521 key for ES512.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    pub kid: String,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<serde_json::Value>,
}
