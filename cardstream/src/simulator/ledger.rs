//! The simulator's in-memory state: transactions by xref, pending 3-D Secure challenges,
//! open hosted sessions, the duplicate-request window, and its movable clock.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::distr::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha512};

use crate::card::CardBrand;
use crate::codes::{ResponseCode, TransactionState};
use crate::fields::Fields;
use crate::test_cards::CardBehaviour;

/// An xref names a transaction's data for at most 13 months (§1.6); we count 396 days.
pub(crate) const XREF_LIFETIME_SECONDS: i64 = 396 * 24 * 60 * 60;
/// Bounds on what a long-running simulator keeps, so a stuck test cannot grow it forever.
pub(crate) const MAX_TRANSACTIONS: usize = 1_000_000;
pub(crate) const MAX_PENDING_BROWSER_STEPS: usize = 10_000;

/// What the simulator remembers of a card: never the number or the CVV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredCard {
    pub last4: String,
    pub brand: CardBrand,
    pub debit: bool,
    pub behaviour: CardBehaviour,
    pub expiry_month: u8,
    pub expiry_year_two_digits: u8,
}

impl StoredCard {
    fn type_code_and_name(&self) -> (&'static str, &'static str) {
        match (self.brand, self.debit) {
            (CardBrand::Visa, false) => ("VC", "Visa Credit"),
            (CardBrand::Visa, true) => ("VD", "Visa Debit"),
            (CardBrand::Mastercard, false) => ("MC", "Mastercard Credit"),
            (CardBrand::Mastercard, true) => ("MD", "Mastercard Debit"),
            (CardBrand::Amex, _) => ("AM", "American Express"),
            (CardBrand::Maestro, _) => ("MA", "Maestro"),
            (CardBrand::Jcb, _) => ("JC", "JCB"),
            (CardBrand::Diners, _) => ("DC", "Diners Club"),
            (CardBrand::Discover, _) => ("DI", "Discover"),
            (CardBrand::Unknown, _) => ("XX", "Unknown"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaptureDelay {
    Immediate,
    Days(u32),
    Never,
}

#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    pub xref: String,
    pub transaction_id: u64,
    pub merchant_id: String,
    /// `SALE`, `VERIFY`, `PREAUTH`, `REFUND` or `REFUND_SALE`.
    pub action: String,
    pub amount_minor: u64,
    /// Authorised, then captured, amount; what `amountReceived` reports.
    pub amount_received_minor: u64,
    pub amount_refunded_minor: u64,
    pub card: StoredCard,
    pub state: TransactionState,
    pub response_code: ResponseCode,
    pub response_message: String,
    pub authorisation_code: Option<String>,
    pub transaction_unique: Option<String>,
    pub capture_delay: CaptureDelay,
    /// The request as received (plus fields cloned from an xref), minus card data and the
    /// signature: echoed in every answer about this transaction and cloned by repeats.
    pub echoed_fields: Fields,
    /// Result fields beyond the standard ones (3-D Secure results, a pending challenge).
    pub result_fields: Fields,
    pub created_at: i64,
    pub modified_at: i64,
    pub captured_at: Option<i64>,
}

impl Transaction {
    /// The transaction as an answer: echoed request fields, then the result fields.
    pub fn view(&self) -> Fields {
        let mut fields = self.echoed_fields.clone();
        fields.set("action", self.action.clone());
        set_result(&mut fields, self.response_code, &self.response_message);
        fields.set("transactionID", self.transaction_id.to_string());
        fields.set("xref", self.xref.clone());
        fields.set("state", self.state.as_str());
        fields.set("timestamp", format_timestamp(self.modified_at));
        fields.set("cardNumberMask", format!("************{}", self.card.last4));
        let (type_code, type_name) = self.card.type_code_and_name();
        fields.set("cardTypeCode", type_code);
        fields.set("cardType", type_name);
        fields.set("cardSchemeCode", self.card.brand.scheme_code());
        fields.set("cardScheme", self.card.brand.scheme_name());
        fields.set("cardIssuer", "Calmony Simulated Bank");
        fields.set("cardIssuerCountry", "United Kingdom");
        fields.set("cardIssuerCountryCode", "GB");
        fields.set("currencyExponent", "2");
        if self.response_code.is_success() {
            fields.set_optional("authorisationCode", self.authorisation_code.clone());
            fields.set("amountReceived", self.amount_received_minor.to_string());
        }
        if self.action == "REFUND_SALE" || self.amount_refunded_minor > 0 {
            fields.set("amountRefunded", self.amount_refunded_minor.to_string());
        }
        for (name, value) in self.result_fields.iter() {
            fields.set(name, value);
        }
        fields
    }

    /// The settlement run: `captured` becomes `accepted`, or `rejected` when strict test
    /// amounts say so (decided by the captured amount, §1.10).
    pub fn settle(&mut self, strict_test_amounts: bool, now: i64) {
        let rejected = strict_test_amounts
            && self.action == "SALE"
            && matches!(self.amount_received_minor, 2500..=4999 | 7500..=9999);
        self.state = if rejected {
            TransactionState::Rejected
        } else {
            TransactionState::Accepted
        };
        self.modified_at = now;
    }
}

/// A 3-D Secure challenge waiting for the tester's choice and then the continuation.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    /// Also the `creq` the browser posts and the `cres` it brings back.
    pub id: String,
    pub three_ds_ref: String,
    pub xref: String,
    /// `None` until the tester picks pass or fail on the challenge page.
    pub passed: Option<bool>,
    /// Set for Direct: where the ACS page posts `cres`. Hosted completes the sale itself.
    pub redirect_url: Option<String>,
    pub hosted: bool,
}

/// A hosted payment page opened by a signed form, waiting for the card form.
#[derive(Debug, Clone)]
pub(crate) struct HostedSession {
    pub merchant_id: String,
    /// The verified request fields.
    pub fields: Fields,
}

pub(crate) struct Ledger {
    /// Read freely; changed only through [`Ledger::insert_transaction`] and
    /// [`Ledger::transaction_mut`], which keep the two indexes below true.
    pub transactions: HashMap<String, Transaction>,
    /// Each (merchant, `transactionUnique`) to its newest transaction's xref.
    by_transaction_unique: HashMap<(String, String), String>,
    /// Transactions that time may still change (a delayed capture falling due, a capture
    /// settling): what [`Ledger::apply_elapsed_time`] looks at, instead of every one.
    timed: std::collections::HashSet<String>,
    pub challenges: HashMap<String, Challenge>,
    pub hosted_sessions: HashMap<String, HostedSession>,
    /// Fingerprints of recent new-transaction requests and when each stops counting.
    recent_requests: HashMap<[u8; 32], i64>,
    /// When expired fingerprints were last dropped.
    pruned_at: i64,
    next_transaction_id: u64,
    clock_offset_seconds: i64,
    /// Per-process salt, so a duplicate fingerprint that includes a card number cannot be
    /// reversed by hashing candidate numbers.
    fingerprint_salt: [u8; 32],
}

impl Ledger {
    pub fn new() -> Self {
        Self {
            transactions: HashMap::new(),
            by_transaction_unique: HashMap::new(),
            timed: std::collections::HashSet::new(),
            challenges: HashMap::new(),
            hosted_sessions: HashMap::new(),
            recent_requests: HashMap::new(),
            pruned_at: i64::MIN,
            next_transaction_id: 10_000_001,
            clock_offset_seconds: 0,
            fingerprint_salt: rand::rng().random(),
        }
    }

    /// The simulator's clock: real time plus however far tests have advanced it.
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        real.saturating_add(self.clock_offset_seconds)
    }

    pub fn advance_clock(&mut self, seconds: i64) {
        self.clock_offset_seconds = self.clock_offset_seconds.saturating_add(seconds);
    }

    pub fn next_transaction_id(&mut self) -> u64 {
        let id = self.next_transaction_id;
        self.next_transaction_id += 1;
        id
    }

    /// Applies what time does by itself: delayed captures fall due, captured transactions
    /// settle once `settle_after_seconds` have passed, the duplicate window slides.
    pub fn apply_elapsed_time(
        &mut self,
        settle_after_seconds: Option<u64>,
        strict_test_amounts: bool,
        now: i64,
    ) {
        let transactions = &mut self.transactions;
        self.timed.retain(|xref| {
            let Some(transaction) = transactions.get_mut(xref) else {
                return false;
            };
            if transaction.state == TransactionState::Approved {
                if let CaptureDelay::Days(days) = transaction.capture_delay {
                    let due = transaction.created_at + i64::from(days) * 86_400;
                    if now >= due {
                        transaction.state = TransactionState::Captured;
                        transaction.captured_at = Some(due);
                        transaction.modified_at = due;
                    }
                }
            }
            if let (Some(after), TransactionState::Captured, Some(captured_at)) = (
                settle_after_seconds,
                transaction.state,
                transaction.captured_at,
            ) {
                if now >= captured_at.saturating_add(i64::try_from(after).unwrap_or(i64::MAX)) {
                    transaction.settle(strict_test_amounts, now);
                }
            }
            // Still waiting for time: an approval to capture later, a capture to settle.
            match transaction.state {
                TransactionState::Approved => {
                    matches!(transaction.capture_delay, CaptureDelay::Days(_))
                }
                TransactionState::Captured => settle_after_seconds.is_some(),
                _ => false,
            }
        });
        // Expired fingerprints go at most once a second (a lookup checks expiry itself):
        // pruning on every request made each one walk every request of the last minutes.
        if now > self.pruned_at {
            self.recent_requests.retain(|_, until| *until > now);
            self.pruned_at = now;
        }
    }

    /// Settles every captured transaction (or the one named), as the nightly run would.
    pub fn settle(&mut self, xref: Option<&str>, strict_test_amounts: bool, now: i64) -> usize {
        let mut settled = 0;
        for transaction in self.transactions.values_mut() {
            let selected = xref.is_none_or(|xref| transaction.xref == xref);
            if selected && transaction.state == TransactionState::Captured {
                transaction.settle(strict_test_amounts, now);
                settled += 1;
            }
        }
        settled
    }

    /// Records a new-transaction request and says whether the same one was seen within its
    /// `duplicateDelay` (§1.9).
    pub fn is_duplicate(
        &mut self,
        key_fields: &[(&str, &str)],
        duplicate_delay_seconds: i64,
        now: i64,
    ) -> bool {
        let mut hasher = Sha512::new();
        hasher.update(self.fingerprint_salt);
        for (name, value) in key_fields {
            hasher.update(name.as_bytes());
            hasher.update(b"=");
            hasher.update(value.as_bytes());
            hasher.update(b"\0");
        }
        let digest = hasher.finalize();
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(&digest[..32]);
        if self
            .recent_requests
            .get(&fingerprint)
            .is_some_and(|until| *until > now)
        {
            return true;
        }
        self.recent_requests
            .insert(fingerprint, now + duplicate_delay_seconds);
        false
    }

    /// The newest transaction of this merchant with this `transactionUnique`.
    pub fn find_by_transaction_unique(
        &self,
        merchant_id: &str,
        transaction_unique: &str,
    ) -> Option<&Transaction> {
        self.by_transaction_unique
            .get(&(merchant_id.to_string(), transaction_unique.to_string()))
            .and_then(|xref| self.transactions.get(xref))
    }

    /// Stores a new transaction (the newest for its `transactionUnique`).
    pub fn insert_transaction(&mut self, transaction: Transaction) {
        if let Some(unique) = &transaction.transaction_unique {
            let key = (transaction.merchant_id.clone(), unique.clone());
            let newer = self
                .by_transaction_unique
                .get(&key)
                .and_then(|xref| self.transactions.get(xref))
                .is_none_or(|known| known.transaction_id < transaction.transaction_id);
            if newer {
                self.by_transaction_unique
                    .insert(key, transaction.xref.clone());
            }
        }
        self.timed.insert(transaction.xref.clone());
        self.transactions
            .insert(transaction.xref.clone(), transaction);
    }

    /// A transaction to change; time's effects on it are looked at again afterwards.
    pub fn transaction_mut(&mut self, xref: &str) -> Option<&mut Transaction> {
        let transaction = self.transactions.get_mut(xref)?;
        self.timed.insert(xref.to_string());
        Some(transaction)
    }
}

/// Sets `responseCode`, `responseMessage` and `responseStatus`.
pub(crate) fn set_result(fields: &mut Fields, code: ResponseCode, message: &str) {
    fields.set("responseCode", code.0.to_string());
    fields.set("responseMessage", message);
    fields.set("responseStatus", code.status().to_string());
}

/// `YYYY-MM-DD HH:MM:SS`, as the gateway writes `timestamp`.
pub(crate) fn format_timestamp(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// An xref in the gateway's shape: `YYMMDDHH` then random capitals and digits, 23 in all.
pub(crate) fn new_xref(now: i64) -> String {
    let prefix = chrono::DateTime::from_timestamp(now, 0)
        .map(|time| time.format("%y%m%d%H").to_string())
        .unwrap_or_default();
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(15)
        .map(|byte| char::from(byte).to_ascii_uppercase())
        .collect();
    format!("{prefix}{suffix}")
}

/// An unguessable token for challenge ids, 3-D Secure references and hosted sessions.
pub(crate) fn random_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

pub(crate) fn new_authorisation_code() -> String {
    let number: u32 = rand::rng().random_range(0..1_000_000);
    format!("{number:06}")
}
