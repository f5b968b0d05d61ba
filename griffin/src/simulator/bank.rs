//! The simulator's state: one organisation, its accounts, each account's ledger, the payments
//! behind inbound credits, the event log, the webhook and what was delivered to it. Pure
//! data and rules, no I/O; `routes` renders it and `delivery` sends webhooks.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::resources::{
    event_types, AccountStatus, AccountTransaction, BalanceChangeDirection, BankAccount,
    BankAddress, BankProductType, Event, Links, Organization, OrganizationMode, Payment,
    PaymentDirection, PaymentParty, TransactionOriginType, Webhook, WebhookState,
    WebhookTestStatus,
};

/// A Griffin-style id: the prefix, a dot and 22 characters of unpadded base64url.
pub(crate) fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}.{}",
        URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
    )
}

/// Griffin's timestamps carry milliseconds.
pub(crate) fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

pub(crate) struct Account {
    pub id: String,
    pub display_name: String,
    pub product_type: BankProductType,
    pub address: BankAddress,
    pub balance: Money,
    pub created_at: DateTime<Utc>,
    /// Insertion order, the tie-break of equal `created-at`s.
    pub seq: u64,
}

pub(crate) struct StoredTransaction {
    pub seq: u64,
    pub id: String,
    pub account_id: String,
    pub direction: BalanceChangeDirection,
    pub amount: Money,
    pub balance_after: Money,
    pub origin: TransactionOriginType,
    pub reference: Option<String>,
    pub description: Option<String>,
    pub payment_id: Option<String>,
    pub processed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

pub(crate) struct StoredPayment {
    pub id: String,
    pub account_id: String,
    pub amount: Money,
    pub reference: Option<String>,
    pub debtor: PaymentParty,
    pub created_at: DateTime<Utc>,
}

pub(crate) struct StoredEvent {
    pub seq: u64,
    pub id: String,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub(crate) struct StoredWebhook {
    pub id: String,
    pub destination_url: String,
    pub description: Option<String>,
    pub state: WebhookState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_test: Option<WebhookTestStatus>,
}

/// An incoming payment to book, as the control endpoint takes it: a settlement from the
/// acquirer arriving by Faster Payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Credit {
    pub amount: Money,
    /// The payer's reference (`payment-reference`, at most 35 characters at Griffin).
    pub reference: String,
    pub counterparty_name: String,
    /// The payer's sort code (`bank-id`); a simulated one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty_bank_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty_account_number: Option<String>,
    /// When the credit was entered into the ledger (`processed-at`); now if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booked_at: Option<DateTime<Utc>>,
}

/// What the control endpoint booked: the credit, and the transaction and payment it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PostedCredit {
    pub account_url: String,
    pub credit: Credit,
    pub transaction: AccountTransaction,
    pub payment: Payment,
}

/// One webhook delivery as the simulator attempted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeliveryRecord {
    pub event_url: String,
    pub event_type: String,
    pub destination_url: String,
    pub attempts: u32,
    pub delivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BankError {
    #[error("no such bank account")]
    NoSuchAccount,
    #[error("the credit must be a positive amount")]
    NonPositiveAmount,
    #[error("the balance would overflow")]
    Overflow,
    #[error("the reference must be 1 to 35 characters")]
    BadReference,
}

pub(crate) struct Bank {
    pub organization_id: String,
    pub organization_name: String,
    pub api_key_id: String,
    pub accounts: Vec<Account>,
    pub transactions: Vec<StoredTransaction>,
    pub payments: Vec<StoredPayment>,
    pub credits: Vec<PostedCredit>,
    pub events: Vec<StoredEvent>,
    pub webhook: Option<StoredWebhook>,
    pub deliveries: Vec<DeliveryRecord>,
    next_seq: u64,
    next_account_number: u64,
}

/// The most characters of a payment reference (Faster Payments).
const MAX_REFERENCE_CHARS: usize = 35;

impl Bank {
    pub fn new(organization_name: String) -> Self {
        Self {
            organization_id: new_id("og"),
            organization_name,
            api_key_id: new_id("ak"),
            accounts: Vec::new(),
            transactions: Vec::new(),
            payments: Vec::new(),
            credits: Vec::new(),
            events: Vec::new(),
            webhook: None,
            deliveries: Vec::new(),
            next_seq: 0,
            next_account_number: 10_000_001,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub fn organization_url(&self) -> String {
        format!("/v0/organizations/{}", self.organization_id)
    }

    pub fn organization(&self) -> Organization {
        let base = self.organization_url();
        Organization {
            organization_url: base.clone(),
            display_name: Some(self.organization_name.clone()),
            organization_mode: OrganizationMode::TestMode,
            organization_bank_accounts_url: format!("{base}/bank/accounts"),
            organization_payments_url: Some(format!("{base}/payments")),
            organization_payments_search_url: Some(format!("{base}/payments/search")),
            organization_events_url: Some(format!("{base}/events")),
            organization_webhooks_url: Some(format!("{base}/webhooks")),
            own_legal_person_url: None,
        }
    }

    /// Opens an account; a positive `opening_balance` is booked as a `deposit` credit, as the
    /// sandbox credits test money to each new account.
    pub fn open_account(
        &mut self,
        display_name: String,
        product_type: BankProductType,
        bank_id: String,
        opening_balance: Money,
    ) -> String {
        let id = new_id("ba");
        let account_number = format!("{:08}", self.next_account_number);
        self.next_account_number += 1;
        let seq = self.seq();
        let created_at = now_millis();
        self.accounts.push(Account {
            id: id.clone(),
            address: BankAddress {
                account_holder: self.organization_name.clone(),
                bank_id,
                bank_id_code: "gbdsc".to_string(),
                account_number,
                account_number_code: "bban".to_string(),
            },
            display_name,
            product_type,
            balance: Money::ZERO,
            created_at,
            seq,
        });
        self.record_event(
            event_types::ACCOUNT_STATUS_CREATED,
            serde_json::json!({
                "account-url": account_url(&id),
                "account-status": "open",
            }),
        );
        if opening_balance.amount_minor > 0 {
            let opening = self.book(
                &id,
                BalanceChangeDirection::Credit,
                opening_balance,
                TransactionOriginType::Deposit,
                None,
                Some("Sandbox opening balance".to_string()),
                None,
                created_at,
            );
            if let Err(error) = opening {
                tracing::error!(%error, account = %id, "the opening deposit could not be booked");
            }
        }
        id
    }

    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|account| account.id == id)
    }

    pub fn render_account(&self, account: &Account) -> BankAccount {
        let url = account_url(&account.id);
        BankAccount {
            account_url: url.clone(),
            display_name: account.display_name.clone(),
            account_status: AccountStatus::Open,
            bank_product_type: account.product_type,
            account_balance: account.balance,
            available_balance: account.balance,
            bank_addresses: vec![account.address.clone()],
            account_transactions_url: format!("{url}/transactions"),
            account_payments_url: Some(format!("{url}/payments")),
            account_admissions_url: Some(format!("{url}/admissions")),
            account_submissions_url: Some(format!("{url}/submissions")),
            primary_account: account.seq == self.accounts.first().map_or(0, |first| first.seq),
            pooled_funds: false,
            account_restricted: false,
            created_at: account.created_at,
        }
    }

    /// Books one ledger line and records its `transaction-created` event.
    #[allow(clippy::too_many_arguments)]
    fn book(
        &mut self,
        account_id: &str,
        direction: BalanceChangeDirection,
        amount: Money,
        origin: TransactionOriginType,
        reference: Option<String>,
        description: Option<String>,
        payment_id: Option<String>,
        processed_at: DateTime<Utc>,
    ) -> Result<AccountTransaction, BankError> {
        if amount.amount_minor <= 0 {
            return Err(BankError::NonPositiveAmount);
        }
        let seq = self.seq();
        let account = self
            .accounts
            .iter_mut()
            .find(|account| account.id == account_id)
            .ok_or(BankError::NoSuchAccount)?;
        let balance_after = match direction {
            BalanceChangeDirection::Credit => account.balance.checked_add(amount),
            BalanceChangeDirection::Debit => account.balance.checked_sub(amount),
        }
        .ok_or(BankError::Overflow)?;
        account.balance = balance_after;
        let transaction = StoredTransaction {
            seq,
            id: new_id("tr"),
            account_id: account_id.to_string(),
            direction,
            amount,
            balance_after,
            origin,
            reference,
            description,
            payment_id,
            processed_at,
            created_at: now_millis(),
        };
        let rendered = render_transaction(&transaction);
        self.transactions.push(transaction);
        self.record_event(
            event_types::TRANSACTION_CREATED,
            serde_json::to_value(&rendered).unwrap_or_default(),
        );
        Ok(rendered)
    }

    /// Books an incoming payment: the payment (with its `payment-created` event), then the
    /// credit line (with its `transaction-created` event).
    pub fn credit(&mut self, account_id: &str, credit: Credit) -> Result<PostedCredit, BankError> {
        if self.account(account_id).is_none() {
            return Err(BankError::NoSuchAccount);
        }
        if credit.amount.amount_minor <= 0 {
            return Err(BankError::NonPositiveAmount);
        }
        let reference_chars = credit.reference.chars().count();
        if reference_chars == 0 || reference_chars > MAX_REFERENCE_CHARS {
            return Err(BankError::BadReference);
        }
        let created_at = now_millis();
        let payment = StoredPayment {
            id: new_id("pm"),
            account_id: account_id.to_string(),
            amount: credit.amount,
            reference: Some(credit.reference.clone()),
            debtor: PaymentParty {
                account_holder: Some(credit.counterparty_name.clone()),
                bank_id: Some(
                    credit
                        .counterparty_bank_id
                        .clone()
                        .unwrap_or_else(|| "000000".to_string()),
                ),
                bank_id_code: Some("gbdsc".to_string()),
                account_number: Some(
                    credit
                        .counterparty_account_number
                        .clone()
                        .unwrap_or_else(|| "00000000".to_string()),
                ),
                account_number_code: Some("bban".to_string()),
                account_url: None,
            },
            created_at,
        };
        let rendered_payment = render_payment(&payment);
        let payment_id = payment.id.clone();
        self.payments.push(payment);
        self.record_event(
            event_types::PAYMENT_CREATED,
            serde_json::to_value(&rendered_payment).unwrap_or_default(),
        );
        let transaction = self.book(
            account_id,
            BalanceChangeDirection::Credit,
            credit.amount,
            TransactionOriginType::Payment,
            Some(credit.reference.clone()),
            Some(format!("Faster Payment from {}", credit.counterparty_name)),
            Some(payment_id),
            credit.booked_at.unwrap_or(created_at),
        )?;
        let posted = PostedCredit {
            account_url: account_url(account_id),
            credit,
            transaction,
            payment: rendered_payment,
        };
        self.credits.push(posted.clone());
        Ok(posted)
    }

    pub fn record_event(&mut self, event_type: &str, payload: serde_json::Value) -> Event {
        let seq = self.seq();
        let event = StoredEvent {
            seq,
            id: new_id("ev"),
            event_type: event_type.to_string(),
            payload,
            created_at: now_millis(),
        };
        let rendered = render_event(&event);
        self.events.push(event);
        rendered
    }

    pub fn render_webhook(&self, webhook: &StoredWebhook) -> Webhook {
        let url = format!("/v0/webhooks/{}", webhook.id);
        Webhook {
            webhook_url: url.clone(),
            webhook_destination_url: webhook.destination_url.clone(),
            webhook_description: webhook.description.clone(),
            webhook_state: webhook.state,
            activate_webhook_url: Some(format!("{url}/actions/activate")),
            deactivate_webhook_url: Some(format!("{url}/actions/deactivate")),
            test_webhook_url: Some(format!("{url}/actions/test")),
            organization_url: Some(self.organization_url()),
            created_at: webhook.created_at,
            updated_at: Some(webhook.updated_at),
        }
    }
}

pub(crate) fn account_url(id: &str) -> String {
    format!("/v0/bank/accounts/{id}")
}

pub(crate) fn render_transaction(transaction: &StoredTransaction) -> AccountTransaction {
    AccountTransaction {
        account_transaction_url: format!("/v0/bank/transactions/{}", transaction.id),
        account_url: account_url(&transaction.account_id),
        balance_change: transaction.amount,
        balance_change_direction: transaction.direction,
        account_balance: transaction.balance_after,
        transaction_origin_type: transaction.origin,
        payment_url: transaction
            .payment_id
            .as_ref()
            .map(|id| format!("/v0/payments/{id}")),
        reference: transaction.reference.clone(),
        description: transaction.description.clone(),
        processed_at: transaction.processed_at,
        effective_at: transaction.processed_at,
        created_at: Some(transaction.created_at),
        origin_metadata: None,
    }
}

pub(crate) fn render_payment(payment: &StoredPayment) -> Payment {
    Payment {
        payment_url: format!("/v0/payments/{}", payment.id),
        payment_direction: PaymentDirection::InboundPayment,
        payment_amount: payment.amount,
        payment_reference: payment.reference.clone(),
        debtor: Some(payment.debtor.clone()),
        creditor: Some(PaymentParty {
            account_url: Some(account_url(&payment.account_id)),
            ..PaymentParty::default()
        }),
        created_at: payment.created_at,
    }
}

pub(crate) fn render_event(event: &StoredEvent) -> Event {
    Event {
        event_url: format!("/v0/events/{}", event.id),
        event_type: event.event_type.clone(),
        event_payload: event.payload.clone(),
        created_at: Some(event.created_at),
    }
}

/// A page cursor: `v1:<seq>` of the item it is relative to, base64url without padding (the
/// shape of Griffin's `djE6…` cursors).
pub(crate) fn encode_cursor(seq: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{seq}"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<u64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim_end_matches('=')).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("v1:")?
        .parse()
        .ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cursor {
    First,
    After(u64),
    Before(u64),
}

/// One page of `ordered` (already filtered and in listing order, each item with its seq):
/// the items, and the seqs to put in the `prev` (`page[before]`) and `next` (`page[after]`)
/// links. `None` when the cursor's item is not in the list.
pub(crate) fn paginate<T>(
    ordered: Vec<(u64, T)>,
    cursor: Cursor,
    size: usize,
) -> Option<(Vec<T>, Option<u64>, Option<u64>)> {
    let position = |seq: u64| ordered.iter().position(|(item, _)| *item == seq);
    let (start, end) = match cursor {
        Cursor::First => (0, size.min(ordered.len())),
        Cursor::After(seq) => {
            let start = position(seq)? + 1;
            (start, (start + size).min(ordered.len()))
        }
        Cursor::Before(seq) => {
            let end = position(seq)?;
            (end.saturating_sub(size), end)
        }
    };
    let total = ordered.len();
    let window: Vec<(u64, T)> = ordered.into_iter().skip(start).take(end - start).collect();
    let prev = (start > 0)
        .then(|| window.first().map(|(seq, _)| *seq))
        .flatten();
    let next = (end < total)
        .then(|| window.last().map(|(seq, _)| *seq))
        .flatten();
    Some((
        window.into_iter().map(|(_, item)| item).collect(),
        prev,
        next,
    ))
}

/// `links` for a page: the request's path and query with its `page[after]`/`page[before]`
/// replaced, every other parameter kept verbatim (they carry the filters).
pub(crate) fn page_links(
    path: &str,
    raw_query: Option<&str>,
    prev: Option<u64>,
    next: Option<u64>,
) -> Links {
    let kept: Vec<&str> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            let name: String = form_urlencoded::parse(name.as_bytes())
                .map(|(key, _)| key.into_owned())
                .next()
                .unwrap_or_default();
            name != "page[after]" && name != "page[before]"
        })
        .collect();
    let link = |name: &str, seq: u64| {
        let mut pairs = kept.clone();
        let cursor = format!("{name}={}", encode_cursor(seq));
        pairs.push(&cursor);
        format!("{path}?{}", pairs.join("&"))
    };
    Links {
        prev: prev.map(|seq| link("page[before]", seq)),
        next: next.map(|seq| link("page[after]", seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert!(encode_cursor(1).starts_with("djE6"));
        assert_eq!(decode_cursor("garbage!"), None);
    }

    #[test]
    fn pages_cover_the_list_once_forwards_and_backwards() {
        let ordered: Vec<(u64, u64)> = (1..=7).map(|seq| (seq, seq)).collect();
        let (first, prev, next) = paginate(ordered.clone(), Cursor::First, 3).unwrap();
        assert_eq!((first, prev, next), (vec![1, 2, 3], None, Some(3)));
        let (second, prev, next) = paginate(ordered.clone(), Cursor::After(3), 3).unwrap();
        assert_eq!((second, prev, next), (vec![4, 5, 6], Some(4), Some(6)));
        let (last, prev, next) = paginate(ordered.clone(), Cursor::After(6), 3).unwrap();
        assert_eq!((last, prev, next), (vec![7], Some(7), None));
        let (back, prev, next) = paginate(ordered.clone(), Cursor::Before(4), 3).unwrap();
        assert_eq!((back, prev, next), (vec![1, 2, 3], None, Some(3)));
        assert!(paginate(ordered, Cursor::After(99), 3).is_none());
    }

    #[test]
    fn links_keep_the_filters_and_replace_the_cursor() {
        let links = page_links(
            "/v0/bank/accounts/ba.x/transactions",
            Some("page[size]=2&filter[processed-at][gte]=2024-01-01T00%3A00%3A00Z&page[after]=old"),
            None,
            Some(5),
        );
        assert_eq!(links.prev, None);
        assert_eq!(
            links.next.as_deref(),
            Some("/v0/bank/accounts/ba.x/transactions?page[size]=2&filter[processed-at][gte]=2024-01-01T00%3A00%3A00Z&page[after]=djE6NQ")
        );
    }
}
