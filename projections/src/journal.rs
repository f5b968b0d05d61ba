//! The double-entry journal: every money-moving event becomes one balanced entry on named
//! accounts, per project, mode and currency.
//!
//! **Chart of accounts** (`accounts`): assets `cardstream_clearing` (captured by the
//! gateway, not yet paid out to us), `griffin_bank` (settled into our Griffin account),
//! `customer_receivable` (invoiced, not yet paid), `out_of_band_receipts` (invoices paid
//! outside Calmony); liabilities `unapplied_payments` (money received from a customer and
//! not yet applied to an invoice), `vat_payable`, `unidentified_receipts` (money that
//! arrived at Griffin and matched no settlement); income `revenue` and its contra account
//! `refunds`; expenses `bad_debt`, `fees`.
//!
//! **Posting rules** ([`post`]), one entry per event, entry id = the event's global
//! position:
//!
//! | event | debit | credit |
//! |---|---|---|
//! | `ChargeSucceeded`, `PaymentIntentCaptured` (manual capture; `ChargeAuthorized` only remembers the currency) | `cardstream_clearing` amount | `unapplied_payments` amount |
//! | `InvoiceFinalized` (subscription, manual and one-off receipt invoices alike) | `customer_receivable` total | `revenue` net (`subtotal_excluding_tax`), `vat_payable` tax |
//! | `InvoicePaid` (by a payment intent) | `unapplied_payments` amount paid | `customer_receivable` (or `bad_debt`, recovering what was written off) |
//! | `InvoicePaid` (out of band) | `out_of_band_receipts` | as above |
//! | `RefundSucceeded` | `refunds` amount − its VAT, `vat_payable` its VAT | `cardstream_clearing` amount |
//! | `InvoiceVoided`, `InvoiceMarkedUncollectible` (write-off of what is still owed) | `bad_debt` | `customer_receivable` |
//! | `SettlementExpected`, `SettlementExpectationUpdated` (the acquirer's fees, or their change) | `fees` | `cardstream_clearing` |
//! | `BankCreditAllocated` (a Griffin credit matched to a settlement) | `griffin_bank` amount | `cardstream_clearing` amount |
//! | `UnexpectedCredit` (a Griffin credit matching no settlement; project `""`) | `griffin_bank` amount | `unidentified_receipts` amount |
//!
//! A charge does not touch revenue: revenue is recognised when an invoice is finalized
//! (every successful one-off payment gets a receipt invoice, so its revenue arrives with
//! that). A payment without a customer gets no invoice and stays in `unapplied_payments`.
//! A refund of a payment that paid an invoice gives back that invoice's VAT in proportion
//! ([`domain::tax::refund_tax_share`], cumulative over partial refunds, so a full refund
//! returns exactly the VAT booked); the rest is contra-revenue. A refund of a payment
//! without an invoice (or refunded before its receipt was issued) is contra-revenue whole.
//! After a settlement is paid, `cardstream_clearing` per currency is what the acquirer
//! still owes (a shortfall) or overpaid (a surplus, negative).
//!
//! **Invariant**: every entry balances (checked before it is written, naming its event) and
//! after every batch debits equal credits per project, mode and currency over `balances`;
//! a violation fails the batch with [`ProjectionError::Invariant`], so the projection stops
//! rather than book wrong numbers.
//!
//! Tables: `lines` (the journal; each line names its event by position, `entry`, and the
//! view `lines_with_source` adds the event's stream and type from the log), `balances` (running totals per account, for the trial
//! balance and the batch check), and what later events need: `intents` (currency of a
//! charged intent, the total and tax of the invoice it paid, what was refunded of it),
//! `refunds` (amounts of refunds started, not finished), `invoices` (open or uncollectible
//! invoices' currency, total, tax, amount paid and written off; a paid or voided invoice's
//! row is deleted), `settlements` (currency and fees booked per settlement).

use std::collections::{HashMap, HashSet};

use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use domain::invoice::{Invoice, InvoiceEvent};
use domain::payment_intent::{PaymentIntent, PaymentIntentEvent};
use domain::settlement::{BankCredit, BankCreditEvent, Settlement, SettlementEvent};
use event_store::{EventMetadata, Mode, RecordedEvent};
use sqlx::PgConnection;

use crate::copy::BinaryCopy;
use crate::runtime::{decode, Projection, ProjectionError, Rebuilder};

pub const NAME: &str = "journal";

/// The chart of accounts.
pub mod accounts {
    /// Asset: captured at Cardstream, not yet settled to the bank.
    pub const CARDSTREAM_CLEARING: &str = "cardstream_clearing";
    /// Asset: the Griffin bank account settlements land in.
    pub const GRIFFIN_BANK: &str = "griffin_bank";
    /// Asset: invoiced and not yet paid.
    pub const CUSTOMER_RECEIVABLE: &str = "customer_receivable";
    /// Asset: invoices marked paid outside Calmony.
    pub const OUT_OF_BAND_RECEIPTS: &str = "out_of_band_receipts";
    /// Liability: money received and not yet applied to an invoice.
    pub const UNAPPLIED_PAYMENTS: &str = "unapplied_payments";
    /// Liability: tax collected for the tax authority.
    pub const VAT_PAYABLE: &str = "vat_payable";
    /// Liability: money in the bank that matched no settlement, until finance finds whose.
    pub const UNIDENTIFIED_RECEIPTS: &str = "unidentified_receipts";
    /// Income: invoiced net amounts.
    pub const REVENUE: &str = "revenue";
    /// Contra-income: refunds given.
    pub const REFUNDS: &str = "refunds";
    /// Expense: invoices written off (voided or uncollectible while owed).
    pub const BAD_DEBT: &str = "bad_debt";
    /// Expense: the gateway's and bank's fees, taken out of settlements.
    pub const FEES: &str = "fees";

    /// Every account, in the trial balance's order.
    pub const ALL: [&str; 11] = [
        CARDSTREAM_CLEARING,
        GRIFFIN_BANK,
        CUSTOMER_RECEIVABLE,
        OUT_OF_BAND_RECEIPTS,
        UNAPPLIED_PAYMENTS,
        VAT_PAYABLE,
        UNIDENTIFIED_RECEIPTS,
        REVENUE,
        REFUNDS,
        BAD_DEBT,
        FEES,
    ];
}

use accounts::*;

/// What moved, as the posting rules see it: amounts already resolved from earlier events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Movement {
    /// Money captured by the gateway (automatic capture, or a manual capture).
    ChargeCaptured { amount_minor: i64 },
    /// An invoice's amounts fixed: `net + tax = total`.
    InvoiceFinalized {
        net_minor: i64,
        tax_minor: i64,
        total_minor: i64,
    },
    /// An invoice paid; `written_off_minor` of it had been written off before.
    InvoicePaid {
        amount_minor: i64,
        out_of_band: bool,
        written_off_minor: i64,
    },
    /// `tax_minor` of the refund is VAT given back.
    RefundSucceeded { amount_minor: i64, tax_minor: i64 },
    /// What was still owed on a voided or uncollectible invoice.
    InvoiceWrittenOff { outstanding_minor: i64 },
    /// The acquirer's fees on a settlement, or their change when its figures change.
    SettlementFees { fee_minor: i64 },
    /// A Griffin credit allocated to a settlement.
    SettlementReceived { amount_minor: i64 },
    /// A Griffin credit that matched no settlement.
    UnexpectedCredit { amount_minor: i64 },
}

/// One line of an entry: exactly one of `debit_minor` and `credit_minor` is non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub account: &'static str,
    pub debit_minor: i64,
    pub credit_minor: i64,
}

/// A debit of `amount` (a negative amount becomes a credit).
fn debit(account: &'static str, amount: i64) -> Posting {
    if amount < 0 {
        return credit(account, -amount);
    }
    Posting {
        account,
        debit_minor: amount,
        credit_minor: 0,
    }
}

/// A credit of `amount` (a negative amount becomes a debit).
fn credit(account: &'static str, amount: i64) -> Posting {
    if amount < 0 {
        return debit(account, -amount);
    }
    Posting {
        account,
        debit_minor: 0,
        credit_minor: amount,
    }
}

/// The posting rules: the lines one movement books (zero lines dropped).
pub fn post(movement: &Movement) -> Vec<Posting> {
    let postings = match *movement {
        Movement::ChargeCaptured { amount_minor } => vec![
            debit(CARDSTREAM_CLEARING, amount_minor),
            credit(UNAPPLIED_PAYMENTS, amount_minor),
        ],
        Movement::InvoiceFinalized {
            net_minor,
            tax_minor,
            total_minor,
        } => vec![
            debit(CUSTOMER_RECEIVABLE, total_minor),
            credit(REVENUE, net_minor),
            credit(VAT_PAYABLE, tax_minor),
        ],
        Movement::InvoicePaid {
            amount_minor,
            out_of_band,
            written_off_minor,
        } => {
            let recovered = written_off_minor.clamp(0, amount_minor.max(0));
            vec![
                debit(
                    if out_of_band {
                        OUT_OF_BAND_RECEIPTS
                    } else {
                        UNAPPLIED_PAYMENTS
                    },
                    amount_minor,
                ),
                credit(BAD_DEBT, recovered),
                credit(CUSTOMER_RECEIVABLE, amount_minor - recovered),
            ]
        }
        Movement::RefundSucceeded {
            amount_minor,
            tax_minor,
        } => vec![
            debit(REFUNDS, amount_minor - tax_minor),
            debit(VAT_PAYABLE, tax_minor),
            credit(CARDSTREAM_CLEARING, amount_minor),
        ],
        Movement::InvoiceWrittenOff { outstanding_minor } => vec![
            debit(BAD_DEBT, outstanding_minor),
            credit(CUSTOMER_RECEIVABLE, outstanding_minor),
        ],
        Movement::SettlementFees { fee_minor } => vec![
            debit(FEES, fee_minor),
            credit(CARDSTREAM_CLEARING, fee_minor),
        ],
        Movement::SettlementReceived { amount_minor } => vec![
            debit(GRIFFIN_BANK, amount_minor),
            credit(CARDSTREAM_CLEARING, amount_minor),
        ],
        Movement::UnexpectedCredit { amount_minor } => vec![
            debit(GRIFFIN_BANK, amount_minor),
            credit(UNIDENTIFIED_RECEIPTS, amount_minor),
        ],
    };
    postings
        .into_iter()
        .filter(|posting| posting.debit_minor != 0 || posting.credit_minor != 0)
        .collect()
}

/// Refuses an entry whose debits and credits differ, or a line with a negative or two-sided
/// amount, naming the event that caused it.
pub fn check_balanced(
    event: &RecordedEvent,
    currency: &str,
    postings: &[Posting],
) -> Result<(), ProjectionError> {
    let mut debits = 0i64;
    let mut credits = 0i64;
    for posting in postings {
        let one_sided = (posting.debit_minor == 0) != (posting.credit_minor == 0);
        if posting.debit_minor < 0 || posting.credit_minor < 0 || !one_sided {
            return Err(unbalanced(
                event,
                format!("a malformed line on {}: {posting:?}", posting.account),
            ));
        }
        debits = debits
            .checked_add(posting.debit_minor)
            .ok_or_else(|| unbalanced(event, "debits overflow".to_string()))?;
        credits = credits
            .checked_add(posting.credit_minor)
            .ok_or_else(|| unbalanced(event, "credits overflow".to_string()))?;
    }
    if debits != credits {
        return Err(unbalanced(
            event,
            format!("debits {debits} ≠ credits {credits} in {currency}"),
        ));
    }
    Ok(())
}

fn unbalanced(event: &RecordedEvent, reason: String) -> ProjectionError {
    ProjectionError::Invariant {
        projection: NAME,
        reason: format!(
            "the entry for {} v{} ({} at position {}) does not balance: {reason}",
            event.stream_name(),
            event.sequence,
            event.event_type,
            event.position
        ),
    }
}

/// The PaymentIntent events the journal reads.
const INTENT_EVENTS: [&str; 6] = [
    "ChargeSucceeded",
    "ChargeAuthorized",
    "PaymentIntentCaptured",
    "RefundStarted",
    "RefundSucceeded",
    "RefundFailed",
];
/// The Invoice events the journal reads.
const INVOICE_EVENTS: [&str; 6] = [
    "InvoiceCreated",
    "InvoiceDeleted",
    "InvoiceFinalized",
    "InvoicePaid",
    "InvoiceVoided",
    "InvoiceMarkedUncollectible",
];

/// The Settlement events the journal reads (the outcomes repeat what the credits say).
const SETTLEMENT_EVENTS: [&str; 2] = ["SettlementExpected", "SettlementExpectationUpdated"];

/// Whether the journal reads this event at all (cheap: no payload parsing).
pub fn is_money_moving(event: &RecordedEvent) -> bool {
    let event_type = event.event_type.as_str();
    match event.aggregate_type.as_str() {
        PaymentIntent::TYPE => INTENT_EVENTS.contains(&event_type),
        Invoice::TYPE => INVOICE_EVENTS.contains(&event_type),
        Settlement::TYPE => SETTLEMENT_EVENTS.contains(&event_type),
        BankCredit::TYPE => true,
        _ => false,
    }
}

/// What the journal remembers of an invoice until it is paid or voided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceMemory {
    pub currency: String,
    pub total_minor: i64,
    pub tax_minor: i64,
    pub paid_minor: i64,
    pub written_off_minor: i64,
    pub finalized: bool,
}

/// What the journal remembers of a charged intent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentMemory {
    pub currency: String,
    /// Total and tax of the invoice this payment paid (0 and 0: none).
    pub invoice_total_minor: i64,
    pub invoice_tax_minor: i64,
    /// Refunded so far (succeeded refunds).
    pub refunded_minor: i64,
}

/// What the journal remembers of a settlement: its currency and the fees booked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettlementMemory {
    pub currency: String,
    pub fees_minor: i64,
}

/// What earlier events left for later ones, for the ids one batch touches.
#[derive(Debug, Default)]
pub struct Memory {
    /// Charged intents.
    pub intents: HashMap<String, IntentMemory>,
    pub settlements: HashMap<String, SettlementMemory>,
    /// Refunds started and not finished: amounts.
    pub refunds: HashMap<String, i64>,
    /// `None`: paid or voided (its row goes).
    pub invoices: HashMap<String, Option<InvoiceMemory>>,
}

/// The decoded events of a batch that the journal reads.
pub enum Decoded {
    Intent(PaymentIntentEvent),
    /// `InvoiceCreated`, of which the journal needs only the currency: the event carries
    /// the whole invoice (lines, metadata), by far the largest the journal reads, so it is
    /// read as [`InvoiceOpened`], the rest skipped unparsed.
    InvoiceOpened(InvoiceOpened),
    Invoice(InvoiceEvent),
    Settlement(SettlementEvent),
    Credit(BankCreditEvent),
}

/// What the journal reads of an `InvoiceCreated` event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct InvoiceOpened {
    pub currency: domain::money::Currency,
}

/// `{"InvoiceCreated": {"invoice": {"currency": …, …}, …}}`, everything else skipped.
#[derive(serde::Deserialize)]
struct InvoiceCreatedShape {
    #[serde(rename = "InvoiceCreated")]
    created: InvoiceCreatedFields,
}

#[derive(serde::Deserialize)]
struct InvoiceCreatedFields {
    invoice: InvoiceOpened,
}

impl Decoded {
    /// Decodes a money-moving event ([`is_money_moving`]).
    pub fn of(
        event: &RecordedEvent,
        upcasters: &[Box<dyn EventUpcaster>],
    ) -> Result<Decoded, ProjectionError> {
        Ok(match event.aggregate_type.as_str() {
            PaymentIntent::TYPE => Decoded::Intent(decode(event, upcasters)?),
            Invoice::TYPE if event.event_type == "InvoiceCreated" => {
                let shape: InvoiceCreatedShape = decode(event, upcasters)?;
                Decoded::InvoiceOpened(shape.created.invoice)
            }
            Invoice::TYPE => Decoded::Invoice(decode(event, upcasters)?),
            Settlement::TYPE => Decoded::Settlement(decode(event, upcasters)?),
            BankCredit::TYPE => Decoded::Credit(decode(event, upcasters)?),
            other => {
                return Err(ProjectionError::bad_event(
                    event,
                    format!("the journal does not read {other} events"),
                ))
            }
        })
    }
}

/// The movement an event makes, in which currency, updating `memory`; `None` for events
/// that only leave something for later ones.
pub fn movement(
    event: &RecordedEvent,
    decoded: &Decoded,
    memory: &mut Memory,
) -> Result<Option<(String, Movement)>, ProjectionError> {
    let id = &event.aggregate_id;
    let intent_currency = |memory: &Memory| {
        memory
            .intents
            .get(id)
            .map(|intent| intent.currency.clone())
            .ok_or_else(|| ProjectionError::bad_event(event, "the intent's charge was never seen"))
    };
    Ok(match decoded {
        Decoded::Intent(intent_event) => match intent_event {
            PaymentIntentEvent::ChargeSucceeded { amount, .. } => {
                let currency = amount.currency.as_str().to_string();
                memory
                    .intents
                    .entry(id.clone())
                    .or_default()
                    .currency
                    .clone_from(&currency);
                Some((
                    currency,
                    Movement::ChargeCaptured {
                        amount_minor: amount.amount_minor,
                    },
                ))
            }
            PaymentIntentEvent::ChargeAuthorized { amount, .. } => {
                memory.intents.entry(id.clone()).or_default().currency =
                    amount.currency.as_str().to_string();
                None
            }
            PaymentIntentEvent::PaymentIntentCaptured {
                amount_captured, ..
            } => Some((
                intent_currency(memory)?,
                Movement::ChargeCaptured {
                    amount_minor: *amount_captured,
                },
            )),
            PaymentIntentEvent::RefundStarted {
                refund_id, amount, ..
            } => {
                memory.refunds.insert(refund_id.clone(), *amount);
                None
            }
            PaymentIntentEvent::RefundSucceeded { refund_id, .. } => {
                let amount = memory.refunds.remove(refund_id).ok_or_else(|| {
                    ProjectionError::bad_event(event, "the refund's start was never seen")
                })?;
                let intent = memory.intents.get_mut(id).ok_or_else(|| {
                    ProjectionError::bad_event(event, "the intent's charge was never seen")
                })?;
                let tax = domain::tax::refund_tax_share(
                    intent.invoice_total_minor,
                    intent.invoice_tax_minor,
                    intent.refunded_minor,
                    amount,
                )
                .map_err(|error| ProjectionError::bad_event(event, error))?;
                intent.refunded_minor += amount;
                Some((
                    intent.currency.clone(),
                    Movement::RefundSucceeded {
                        amount_minor: amount,
                        tax_minor: tax,
                    },
                ))
            }
            PaymentIntentEvent::RefundFailed { refund_id, .. } => {
                memory.refunds.remove(refund_id);
                None
            }
            _ => None,
        },
        Decoded::InvoiceOpened(opened) => {
            memory.invoices.insert(
                id.clone(),
                Some(InvoiceMemory {
                    currency: opened.currency.as_str().to_string(),
                    ..InvoiceMemory::default()
                }),
            );
            None
        }
        Decoded::Invoice(invoice_event) => {
            let known = |memory: &mut Memory| -> Result<InvoiceMemory, ProjectionError> {
                memory
                    .invoices
                    .get(id)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| ProjectionError::bad_event(event, "the invoice is not open"))
            };
            match invoice_event {
                InvoiceEvent::InvoiceDeleted { .. } => {
                    memory.invoices.insert(id.clone(), None);
                    None
                }
                InvoiceEvent::InvoiceFinalized { totals, .. } => {
                    let mut invoice = known(memory)?;
                    invoice.total_minor = totals.total;
                    invoice.tax_minor = totals.tax;
                    invoice.finalized = true;
                    let currency = invoice.currency.clone();
                    memory.invoices.insert(id.clone(), Some(invoice));
                    Some((
                        currency,
                        Movement::InvoiceFinalized {
                            net_minor: totals.subtotal_excluding_tax,
                            tax_minor: totals.tax,
                            total_minor: totals.total,
                        },
                    ))
                }
                InvoiceEvent::InvoicePaid {
                    payment_intent,
                    amount_paid,
                    out_of_band,
                    ..
                } => {
                    let invoice = known(memory)?;
                    memory.invoices.insert(id.clone(), None);
                    // Its refunds give back its VAT.
                    if let Some(intent) = payment_intent
                        .as_ref()
                        .and_then(|intent| memory.intents.get_mut(intent))
                    {
                        intent.invoice_total_minor = invoice.total_minor;
                        intent.invoice_tax_minor = invoice.tax_minor;
                    }
                    Some((
                        invoice.currency,
                        Movement::InvoicePaid {
                            amount_minor: *amount_paid,
                            out_of_band: *out_of_band,
                            written_off_minor: invoice.written_off_minor,
                        },
                    ))
                }
                InvoiceEvent::InvoiceVoided { .. }
                | InvoiceEvent::InvoiceMarkedUncollectible { .. } => {
                    let mut invoice = known(memory)?;
                    let outstanding = if invoice.finalized {
                        invoice.total_minor - invoice.paid_minor - invoice.written_off_minor
                    } else {
                        0
                    };
                    invoice.written_off_minor += outstanding.max(0);
                    let currency = invoice.currency.clone();
                    let voided = matches!(invoice_event, InvoiceEvent::InvoiceVoided { .. });
                    memory
                        .invoices
                        .insert(id.clone(), (!voided).then_some(invoice));
                    (outstanding > 0).then_some((
                        currency,
                        Movement::InvoiceWrittenOff {
                            outstanding_minor: outstanding,
                        },
                    ))
                }
                _ => None,
            }
        }
        Decoded::Settlement(settlement_event) => match settlement_event {
            SettlementEvent::SettlementExpected { currency, fees, .. } => {
                let currency = currency.to_ascii_lowercase();
                memory.settlements.insert(
                    id.clone(),
                    SettlementMemory {
                        currency: currency.clone(),
                        fees_minor: *fees,
                    },
                );
                (*fees != 0).then_some((currency, Movement::SettlementFees { fee_minor: *fees }))
            }
            SettlementEvent::SettlementExpectationUpdated { fees, .. } => {
                let settlement = memory.settlements.get_mut(id).ok_or_else(|| {
                    ProjectionError::bad_event(event, "the settlement's expectation was never seen")
                })?;
                let change = fees - settlement.fees_minor;
                settlement.fees_minor = *fees;
                (change != 0).then(|| {
                    (
                        settlement.currency.clone(),
                        Movement::SettlementFees { fee_minor: change },
                    )
                })
            }
            _ => None,
        },
        Decoded::Credit(credit_event) => match credit_event {
            BankCreditEvent::BankCreditAllocated { credit, .. } => Some((
                credit.currency.to_ascii_lowercase(),
                Movement::SettlementReceived {
                    amount_minor: credit.amount,
                },
            )),
            BankCreditEvent::UnexpectedCredit { credit, .. } => Some((
                credit.currency.to_ascii_lowercase(),
                Movement::UnexpectedCredit {
                    amount_minor: credit.amount,
                },
            )),
        },
    })
}

/// The journal projection. `rules` are the posting rules ([`post`]; a test swaps in a
/// broken one to see the check stop it).
pub struct Journal {
    upcasters: Vec<Box<dyn EventUpcaster>>,
    rules: fn(&Movement) -> Vec<Posting>,
}

impl Default for Journal {
    fn default() -> Self {
        Self {
            upcasters: domain::upcasters::all(),
            rules: post,
        }
    }
}

impl Journal {
    /// The journal with other posting rules (tests).
    pub fn with_rules(rules: fn(&Movement) -> Vec<Posting>) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BalanceKey {
    project: String,
    livemode: bool,
    account: &'static str,
    currency: String,
}

/// Debit and credit totals per account: a few dozen keys at most (projects × accounts ×
/// currencies touched), so a list searched in place, most recent first, beats hashing a
/// freshly allocated key for every line.
#[derive(Debug, Default)]
struct Balances(Vec<(BalanceKey, (i64, i64))>);

impl Balances {
    fn add(&mut self, project: &str, livemode: bool, posting: &Posting, currency: &str) {
        let found = self.0.iter_mut().rev().find(|(key, _)| {
            key.account == posting.account
                && key.livemode == livemode
                && key.currency == currency
                && key.project == project
        });
        let totals = match found {
            Some((_, totals)) => totals,
            None => {
                self.0.push((
                    BalanceKey {
                        project: project.to_string(),
                        livemode,
                        account: posting.account,
                        currency: currency.to_string(),
                    },
                    (0, 0),
                ));
                let last = self.0.len() - 1;
                &mut self.0[last].1
            }
        };
        totals.0 += posting.debit_minor;
        totals.1 += posting.credit_minor;
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The project and mode of the last event's metadata: consecutive events mostly share
/// theirs (one command's events, one project's batch), so it is parsed once per change.
#[derive(Debug, Default)]
struct LastMetadata {
    text: String,
    project: String,
    livemode: bool,
}

impl LastMetadata {
    fn of(&mut self, event: &RecordedEvent) -> Result<(&str, bool), ProjectionError> {
        if self.text != event.metadata || self.text.is_empty() {
            let metadata: EventMetadata = event
                .metadata()
                .map_err(|error| ProjectionError::bad_event(event, error))?;
            self.text.clone_from(&event.metadata);
            self.project = metadata.project;
            self.livemode = metadata.mode == Some(Mode::Live);
        }
        Ok((&self.project, self.livemode))
    }
}

/// The domain time of an event (its `at`/`created`), for reports by business date.
fn occurred_at(decoded: &Decoded) -> i64 {
    match decoded {
        Decoded::Intent(event) => match event {
            PaymentIntentEvent::ChargeSucceeded { at, .. }
            | PaymentIntentEvent::PaymentIntentCaptured { at, .. }
            | PaymentIntentEvent::RefundSucceeded { at, .. } => *at,
            _ => 0,
        },
        Decoded::InvoiceOpened(_) => 0,
        Decoded::Invoice(event) => match event {
            InvoiceEvent::InvoiceFinalized { at, .. }
            | InvoiceEvent::InvoicePaid { at, .. }
            | InvoiceEvent::InvoiceVoided { at }
            | InvoiceEvent::InvoiceMarkedUncollectible { at } => *at,
            _ => 0,
        },
        Decoded::Settlement(event) => match event {
            SettlementEvent::SettlementExpected { at, .. }
            | SettlementEvent::SettlementExpectationUpdated { at, .. }
            | SettlementEvent::SettlementMatched { at, .. }
            | SettlementEvent::SettlementShortfall { at, .. }
            | SettlementEvent::SettlementSurplus { at, .. } => *at,
        },
        Decoded::Credit(event) => match event {
            BankCreditEvent::BankCreditAllocated { at, .. }
            | BankCreditEvent::UnexpectedCredit { at, .. } => *at,
        },
    }
}

#[async_trait::async_trait]
impl Projection for Journal {
    /// Background: finance reports, read a moment later.
    fn batching_delay(&self) -> std::time::Duration {
        crate::runtime::BACKGROUND_BATCHING_DELAY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE lines (
            entry         bigint      NOT NULL, -- the source event's global position
            line          smallint    NOT NULL, -- position within the entry
            project       text        NOT NULL,
            livemode      boolean     NOT NULL,
            account       text        NOT NULL,
            currency      text        NOT NULL,
            debit_minor   bigint      NOT NULL CHECK (debit_minor >= 0),
            credit_minor  bigint      NOT NULL CHECK (credit_minor >= 0),
            occurred_at   bigint      NOT NULL, -- the event's own time (Unix seconds)
            recorded_at   timestamptz NOT NULL  -- when the log recorded it
        );
        -- The lines with the event each came from (the log is one join away: a line names
        -- its event by position rather than copying its stream and type).
        CREATE VIEW lines_with_source AS
            SELECT l.*, e.aggregate_type || '/' || e.aggregate_id AS source_stream,
                   e.event_type AS source_event
            FROM lines l JOIN public.events e ON e.position = l.entry;
        CREATE TABLE balances (
            project      text    NOT NULL,
            livemode     boolean NOT NULL,
            account      text    NOT NULL,
            currency     text    NOT NULL,
            debit_minor  bigint  NOT NULL,
            credit_minor bigint  NOT NULL,
            PRIMARY KEY (project, livemode, account, currency)
        );
        CREATE TABLE intents (
            id                  text   PRIMARY KEY,
            currency            text   NOT NULL,
            invoice_total_minor bigint NOT NULL,
            invoice_tax_minor   bigint NOT NULL,
            refunded_minor      bigint NOT NULL
        );
        CREATE TABLE settlements (
            id         text   PRIMARY KEY,
            currency   text   NOT NULL,
            fees_minor bigint NOT NULL
        );
        CREATE TABLE refunds (
            id           text   PRIMARY KEY,
            amount_minor bigint NOT NULL
        );
        CREATE TABLE invoices (
            id                text    PRIMARY KEY,
            currency          text    NOT NULL,
            total_minor       bigint  NOT NULL,
            tax_minor         bigint  NOT NULL,
            paid_minor        bigint  NOT NULL,
            written_off_minor bigint  NOT NULL,
            finalized         boolean NOT NULL
        );"
    }

    fn index_sql(&self) -> &'static str {
        // An event is booked once: its entry's first line is unique (booking an event twice
        // repeats all its lines, the first included), which guards as well as a unique
        // (entry, line) and is a third cheaper to build over a rebuild's million entries.
        // Lines are appended in log order, so their times only grow (give or take the
        // order concurrent transactions commit in): a BRIN index finds a trial balance's
        // cut-off for a fraction of a B-tree's size and build time.
        "CREATE UNIQUE INDEX entries_booked_once ON lines (entry) WHERE line = 1;
         CREATE INDEX lines_by_time ON lines USING brin (recorded_at);"
    }

    fn rebuilder(&self) -> Option<Box<dyn Rebuilder>> {
        Some(Box::new(JournalRebuild {
            upcasters: domain::upcasters::all(),
            rules: self.rules,
            memory: Memory::default(),
            metadata: LastMetadata::default(),
            balances: Balances::default(),
        }))
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut decoded = Vec::new();
        for event in events.iter().filter(|event| is_money_moving(event)) {
            decoded.push((event, Decoded::of(event, &self.upcasters)?));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let mut memory = load_memory(&mut *connection, &decoded).await?;
        let before_invoices: HashSet<String> = memory.invoices.keys().cloned().collect();
        let mut touched = Touched::default();
        let mut lines = lines_copy(decoded.len());
        let mut balances = Balances::default();
        let mut metadata = LastMetadata::default();
        for (event, payload) in &decoded {
            touched.note(event, payload);
            book(
                self.rules,
                event,
                payload,
                &mut memory,
                &mut metadata,
                &mut lines,
                &mut balances,
            )?;
        }
        write_memory(&mut *connection, &memory, &touched, &before_invoices).await?;
        lines.send(&mut *connection).await?;
        write_balances(&mut *connection, balances).await?;
        check_books(&mut *connection, events).await
    }
}

/// The journal's columns, in COPY order.
const LINE_COLUMNS: [&str; 10] = [
    "entry",
    "line",
    "project",
    "livemode",
    "account",
    "currency",
    "debit_minor",
    "credit_minor",
    "occurred_at",
    "recorded_at",
];

/// Lines for a batch of `events` (most entries have two or three lines of ~120 bytes).
fn lines_copy(events: usize) -> BinaryCopy {
    BinaryCopy::with_capacity("lines", &LINE_COLUMNS, events.saturating_mul(3 * 120))
}

/// Books one decoded event: its movement (updating `memory`), checked to balance, as lines
/// added to `lines` and totals added to `balances`.
fn book(
    rules: fn(&Movement) -> Vec<Posting>,
    event: &RecordedEvent,
    payload: &Decoded,
    memory: &mut Memory,
    metadata: &mut LastMetadata,
    lines: &mut BinaryCopy,
    balances: &mut Balances,
) -> Result<(), ProjectionError> {
    let Some((currency, movement)) = movement(event, payload, memory)? else {
        return Ok(());
    };
    let postings = rules(&movement);
    check_balanced(event, &currency, &postings)?;
    if postings.is_empty() {
        return Ok(());
    }
    let (project, livemode) = metadata.of(event)?;
    let at = occurred_at(payload);
    for (index, posting) in postings.iter().enumerate() {
        lines
            .row()
            .bigint(event.position)
            .smallint(i16::try_from(index + 1).unwrap_or(i16::MAX))
            .text(project)
            .boolean(livemode)
            .text(posting.account)
            .text(&currency)
            .bigint(posting.debit_minor)
            .bigint(posting.credit_minor)
            .bigint(at)
            .timestamptz(event.recorded_at);
        balances.add(project, livemode, posting, &currency);
    }
    Ok(())
}

/// The journal's rebuild from zero: [`Memory`] and the balances stay in memory across
/// batches (nothing is read back), lines go out as binary COPY, and the books are checked
/// after every batch from the running balances, as `apply` checks them from its table.
struct JournalRebuild {
    upcasters: Vec<Box<dyn EventUpcaster>>,
    rules: fn(&Movement) -> Vec<Posting>,
    memory: Memory,
    metadata: LastMetadata,
    balances: Balances,
}

impl Rebuilder for JournalRebuild {
    fn prepare(&mut self, events: &[RecordedEvent]) -> Result<Vec<BinaryCopy>, ProjectionError> {
        let mut lines = lines_copy(events.len());
        for event in events.iter().filter(|event| is_money_moving(event)) {
            let payload = Decoded::of(event, &self.upcasters)?;
            book(
                self.rules,
                event,
                &payload,
                &mut self.memory,
                &mut self.metadata,
                &mut lines,
                &mut self.balances,
            )?;
        }
        let mut books: HashMap<(&str, bool, &str), (i64, i64)> = HashMap::new();
        for (key, (debit, credit)) in &self.balances.0 {
            let totals = books
                .entry((key.project.as_str(), key.livemode, key.currency.as_str()))
                .or_default();
            totals.0 += debit;
            totals.1 += credit;
        }
        if let Some(((project, livemode, currency), (debits, credits))) = books
            .into_iter()
            .find(|(_, (debit, credit))| debit != credit)
        {
            return Err(unbalanced_books(
                events, project, livemode, currency, debits, credits,
            ));
        }
        Ok(vec![lines])
    }

    fn finish(self: Box<Self>) -> Result<Vec<BinaryCopy>, ProjectionError> {
        let mut balances = BinaryCopy::new(
            "balances",
            &[
                "project",
                "livemode",
                "account",
                "currency",
                "debit_minor",
                "credit_minor",
            ],
        );
        for (key, (debit, credit)) in &self.balances.0 {
            balances
                .row()
                .text(&key.project)
                .boolean(key.livemode)
                .text(key.account)
                .text(&key.currency)
                .bigint(*debit)
                .bigint(*credit);
        }
        let mut intents = BinaryCopy::new(
            "intents",
            &[
                "id",
                "currency",
                "invoice_total_minor",
                "invoice_tax_minor",
                "refunded_minor",
            ],
        );
        for (id, intent) in &self.memory.intents {
            intents
                .row()
                .text(id)
                .text(&intent.currency)
                .bigint(intent.invoice_total_minor)
                .bigint(intent.invoice_tax_minor)
                .bigint(intent.refunded_minor);
        }
        let mut refunds = BinaryCopy::new("refunds", &["id", "amount_minor"]);
        for (id, amount) in &self.memory.refunds {
            refunds.row().text(id).bigint(*amount);
        }
        let mut invoices = BinaryCopy::new(
            "invoices",
            &[
                "id",
                "currency",
                "total_minor",
                "tax_minor",
                "paid_minor",
                "written_off_minor",
                "finalized",
            ],
        );
        for (id, invoice) in &self.memory.invoices {
            if let Some(invoice) = invoice {
                invoices
                    .row()
                    .text(id)
                    .text(&invoice.currency)
                    .bigint(invoice.total_minor)
                    .bigint(invoice.tax_minor)
                    .bigint(invoice.paid_minor)
                    .bigint(invoice.written_off_minor)
                    .boolean(invoice.finalized);
            }
        }
        let mut settlements = BinaryCopy::new("settlements", &["id", "currency", "fees_minor"]);
        for (id, settlement) in &self.memory.settlements {
            settlements
                .row()
                .text(id)
                .text(&settlement.currency)
                .bigint(settlement.fees_minor);
        }
        Ok(vec![balances, intents, refunds, invoices, settlements])
    }
}

/// The memory rows one batch changed (invoices are compared with what was loaded instead).
#[derive(Default)]
struct Touched {
    intents: HashSet<String>,
    settlements: HashSet<String>,
    new_refunds: Vec<String>,
    finished_refunds: Vec<String>,
}

impl Touched {
    /// What this event changes in memory, for the rows written after the batch.
    fn note(&mut self, event: &RecordedEvent, payload: &Decoded) {
        match payload {
            Decoded::Intent(intent_event) => match intent_event {
                PaymentIntentEvent::ChargeSucceeded { .. }
                | PaymentIntentEvent::ChargeAuthorized { .. } => {
                    self.intents.insert(event.aggregate_id.clone());
                }
                PaymentIntentEvent::RefundStarted { refund_id, .. } => {
                    self.new_refunds.push(refund_id.clone())
                }
                PaymentIntentEvent::RefundSucceeded { refund_id, .. } => {
                    self.intents.insert(event.aggregate_id.clone());
                    self.finished_refunds.push(refund_id.clone())
                }
                PaymentIntentEvent::RefundFailed { refund_id, .. } => {
                    self.finished_refunds.push(refund_id.clone())
                }
                _ => {}
            },
            Decoded::Invoice(InvoiceEvent::InvoicePaid {
                payment_intent: Some(intent),
                ..
            }) => {
                self.intents.insert(intent.clone());
            }
            Decoded::Settlement(_) => {
                self.settlements.insert(event.aggregate_id.clone());
            }
            _ => {}
        }
    }
}

/// What earlier batches remembered about the intents, refunds, invoices and settlements of
/// this batch.
async fn load_memory(
    connection: &mut PgConnection,
    decoded: &[(&RecordedEvent, Decoded)],
) -> Result<Memory, ProjectionError> {
    let mut memory = Memory::default();
    let mut intent_ids = Vec::new();
    let mut refund_ids = Vec::new();
    let mut invoice_ids = Vec::new();
    let mut settlement_ids = Vec::new();
    for (event, payload) in decoded {
        match payload {
            Decoded::Intent(
                PaymentIntentEvent::PaymentIntentCaptured { .. }
                | PaymentIntentEvent::ChargeSucceeded { .. }
                | PaymentIntentEvent::ChargeAuthorized { .. },
            ) => intent_ids.push(event.aggregate_id.as_str()),
            Decoded::Intent(PaymentIntentEvent::RefundSucceeded { refund_id, .. }) => {
                intent_ids.push(event.aggregate_id.as_str());
                refund_ids.push(refund_id.as_str());
            }
            Decoded::InvoiceOpened(_) | Decoded::Intent(_) => {}
            Decoded::Invoice(invoice_event) => {
                invoice_ids.push(event.aggregate_id.as_str());
                if let InvoiceEvent::InvoicePaid {
                    payment_intent: Some(intent),
                    ..
                } = invoice_event
                {
                    intent_ids.push(intent.as_str());
                }
            }
            Decoded::Settlement(SettlementEvent::SettlementExpectationUpdated { .. }) => {
                settlement_ids.push(event.aggregate_id.as_str())
            }
            Decoded::Settlement(_) | Decoded::Credit(_) => {}
        }
    }
    if !intent_ids.is_empty() {
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, currency, invoice_total_minor, invoice_tax_minor, refunded_minor \
             FROM intents WHERE id = ANY($1)",
        )
        .bind(&intent_ids)
        .fetch_all(&mut *connection)
        .await?;
        for (id, currency, invoice_total_minor, invoice_tax_minor, refunded_minor) in rows {
            memory.intents.insert(
                id,
                IntentMemory {
                    currency,
                    invoice_total_minor,
                    invoice_tax_minor,
                    refunded_minor,
                },
            );
        }
    }
    if !refund_ids.is_empty() {
        memory.refunds = sqlx::query_as("SELECT id, amount_minor FROM refunds WHERE id = ANY($1)")
            .bind(&refund_ids)
            .fetch_all(&mut *connection)
            .await?
            .into_iter()
            .collect();
    }
    if !invoice_ids.is_empty() {
        let rows: Vec<(String, String, i64, i64, i64, i64, bool)> = sqlx::query_as(
            "SELECT id, currency, total_minor, tax_minor, paid_minor, written_off_minor, \
                 finalized \
             FROM invoices WHERE id = ANY($1)",
        )
        .bind(&invoice_ids)
        .fetch_all(&mut *connection)
        .await?;
        for (id, currency, total_minor, tax_minor, paid_minor, written_off_minor, finalized) in rows
        {
            memory.invoices.insert(
                id,
                Some(InvoiceMemory {
                    currency,
                    total_minor,
                    tax_minor,
                    paid_minor,
                    written_off_minor,
                    finalized,
                }),
            );
        }
    }
    if !settlement_ids.is_empty() {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, currency, fees_minor FROM settlements WHERE id = ANY($1)")
                .bind(&settlement_ids)
                .fetch_all(&mut *connection)
                .await?;
        for (id, currency, fees_minor) in rows {
            memory.settlements.insert(
                id,
                SettlementMemory {
                    currency,
                    fees_minor,
                },
            );
        }
    }
    Ok(memory)
}

async fn write_memory(
    connection: &mut PgConnection,
    memory: &Memory,
    touched: &Touched,
    before_invoices: &HashSet<String>,
) -> Result<(), ProjectionError> {
    let (new_refunds, finished_refunds) = (&touched.new_refunds, &touched.finished_refunds);
    let intents: Vec<(&String, &IntentMemory)> = touched
        .intents
        .iter()
        .filter_map(|id| memory.intents.get(id).map(|intent| (id, intent)))
        .collect();
    if !intents.is_empty() {
        let ids: Vec<&str> = intents.iter().map(|(id, _)| id.as_str()).collect();
        let currencies: Vec<&str> = intents.iter().map(|(_, i)| i.currency.as_str()).collect();
        let totals: Vec<i64> = intents.iter().map(|(_, i)| i.invoice_total_minor).collect();
        let taxes: Vec<i64> = intents.iter().map(|(_, i)| i.invoice_tax_minor).collect();
        let refunded: Vec<i64> = intents.iter().map(|(_, i)| i.refunded_minor).collect();
        sqlx::query(
            "INSERT INTO intents (id, currency, invoice_total_minor, invoice_tax_minor, \
                 refunded_minor) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                 $5::bigint[]) \
             ON CONFLICT (id) DO UPDATE SET currency = EXCLUDED.currency, \
                 invoice_total_minor = EXCLUDED.invoice_total_minor, \
                 invoice_tax_minor = EXCLUDED.invoice_tax_minor, \
                 refunded_minor = EXCLUDED.refunded_minor",
        )
        .bind(&ids)
        .bind(&currencies)
        .bind(&totals)
        .bind(&taxes)
        .bind(&refunded)
        .execute(&mut *connection)
        .await?;
    }
    let settlements: Vec<(&String, &SettlementMemory)> = touched
        .settlements
        .iter()
        .filter_map(|id| {
            memory
                .settlements
                .get(id)
                .map(|settlement| (id, settlement))
        })
        .collect();
    if !settlements.is_empty() {
        let ids: Vec<&str> = settlements.iter().map(|(id, _)| id.as_str()).collect();
        let currencies: Vec<&str> = settlements
            .iter()
            .map(|(_, s)| s.currency.as_str())
            .collect();
        let fees: Vec<i64> = settlements.iter().map(|(_, s)| s.fees_minor).collect();
        sqlx::query(
            "INSERT INTO settlements (id, currency, fees_minor) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
             ON CONFLICT (id) DO UPDATE SET fees_minor = EXCLUDED.fees_minor",
        )
        .bind(&ids)
        .bind(&currencies)
        .bind(&fees)
        .execute(&mut *connection)
        .await?;
    }
    // Refunds started and finished within the batch never reach the table.
    let still_open: Vec<(&String, i64)> = new_refunds
        .iter()
        .filter_map(|id| memory.refunds.get(id).map(|amount| (id, *amount)))
        .collect();
    if !still_open.is_empty() {
        let (ids, amounts): (Vec<&String>, Vec<i64>) = still_open.into_iter().unzip();
        sqlx::query(
            "INSERT INTO refunds (id, amount_minor) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&amounts)
        .execute(&mut *connection)
        .await?;
    }
    if !finished_refunds.is_empty() {
        sqlx::query("DELETE FROM refunds WHERE id = ANY($1)")
            .bind(finished_refunds)
            .execute(&mut *connection)
            .await?;
    }
    let mut gone = Vec::new();
    let mut kept = KeptInvoices::default();
    for (id, invoice) in &memory.invoices {
        match invoice {
            None => {
                if before_invoices.contains(id) {
                    gone.push(id.as_str());
                }
            }
            Some(invoice) => {
                kept.ids.push(id.as_str());
                kept.currencies.push(invoice.currency.as_str());
                kept.totals.push(invoice.total_minor);
                kept.taxes.push(invoice.tax_minor);
                kept.paid.push(invoice.paid_minor);
                kept.written_off.push(invoice.written_off_minor);
                kept.finalized.push(invoice.finalized);
            }
        }
    }
    if !gone.is_empty() {
        sqlx::query("DELETE FROM invoices WHERE id = ANY($1)")
            .bind(&gone)
            .execute(&mut *connection)
            .await?;
    }
    if !kept.ids.is_empty() {
        sqlx::query(
            "INSERT INTO invoices (id, currency, total_minor, tax_minor, paid_minor, \
                 written_off_minor, finalized) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                 $5::bigint[], $6::bigint[], $7::boolean[]) \
             ON CONFLICT (id) DO UPDATE SET currency = EXCLUDED.currency, \
                 total_minor = EXCLUDED.total_minor, tax_minor = EXCLUDED.tax_minor, \
                 paid_minor = EXCLUDED.paid_minor, \
                 written_off_minor = EXCLUDED.written_off_minor, finalized = EXCLUDED.finalized",
        )
        .bind(&kept.ids)
        .bind(&kept.currencies)
        .bind(&kept.totals)
        .bind(&kept.taxes)
        .bind(&kept.paid)
        .bind(&kept.written_off)
        .bind(&kept.finalized)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// The open invoices one batch leaves, column by column.
#[derive(Default)]
struct KeptInvoices<'a> {
    ids: Vec<&'a str>,
    currencies: Vec<&'a str>,
    totals: Vec<i64>,
    taxes: Vec<i64>,
    paid: Vec<i64>,
    written_off: Vec<i64>,
    finalized: Vec<bool>,
}

async fn write_balances(
    connection: &mut PgConnection,
    balances: Balances,
) -> Result<(), ProjectionError> {
    if balances.is_empty() {
        return Ok(());
    }
    let mut projects = Vec::new();
    let mut livemodes = Vec::new();
    let mut accounts = Vec::new();
    let mut currencies = Vec::new();
    let mut debits = Vec::new();
    let mut credits = Vec::new();
    for (key, (debit, credit)) in balances.0 {
        projects.push(key.project);
        livemodes.push(key.livemode);
        accounts.push(key.account);
        currencies.push(key.currency);
        debits.push(debit);
        credits.push(credit);
    }
    sqlx::query(
        "INSERT INTO balances AS b (project, livemode, account, currency, debit_minor, \
             credit_minor) \
         SELECT * FROM UNNEST($1::text[], $2::boolean[], $3::text[], $4::text[], \
             $5::bigint[], $6::bigint[]) \
         ON CONFLICT (project, livemode, account, currency) DO UPDATE SET \
             debit_minor = b.debit_minor + EXCLUDED.debit_minor, \
             credit_minor = b.credit_minor + EXCLUDED.credit_minor",
    )
    .bind(&projects)
    .bind(&livemodes)
    .bind(&accounts)
    .bind(&currencies)
    .bind(&debits)
    .bind(&credits)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// After the batch: the books of every project, mode and currency balance.
async fn check_books(
    connection: &mut PgConnection,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let unbalanced: Option<(String, bool, String, i64, i64)> = sqlx::query_as(
        "SELECT project, livemode, currency, sum(debit_minor)::bigint, sum(credit_minor)::bigint \
         FROM balances GROUP BY project, livemode, currency \
         HAVING sum(debit_minor) <> sum(credit_minor) LIMIT 1",
    )
    .fetch_optional(connection)
    .await?;
    if let Some((project, livemode, currency, debits, credits)) = unbalanced {
        return Err(unbalanced_books(
            events, &project, livemode, &currency, debits, credits,
        ));
    }
    Ok(())
}

fn unbalanced_books(
    events: &[RecordedEvent],
    project: &str,
    livemode: bool,
    currency: &str,
    debits: i64,
    credits: i64,
) -> ProjectionError {
    let (first, last) = (events.first(), events.last());
    ProjectionError::Invariant {
        projection: NAME,
        reason: format!(
            "after the batch of positions {}..={}, {project} ({}) {currency}: debits \
             {debits} ≠ credits {credits}",
            first.map_or(0, |event| event.position),
            last.map_or(0, |event| event.position),
            if livemode { "live" } else { "test" },
        ),
    }
}

/// One row of a trial balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialBalanceRow {
    pub account: String,
    pub currency: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
}

impl TrialBalanceRow {
    /// Debit-positive balance.
    pub fn balance_minor(&self) -> i64 {
        self.debit_minor - self.credit_minor
    }
}

/// As of when a trial balance is taken.
#[derive(Debug, Clone, Copy)]
pub enum AsOf {
    Now,
    /// Lines of events recorded at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
    /// Lines of events at or before this global position.
    Position(i64),
}

/// Balances per account and currency of `project` (all projects when `None`) in one mode,
/// from the running balances or, as of a moment, from the lines.
pub async fn trial_balance(
    pool: &sqlx::PgPool,
    project: Option<&str>,
    livemode: bool,
    as_of: AsOf,
) -> Result<Vec<TrialBalanceRow>, sqlx::Error> {
    let (time, position) = match as_of {
        AsOf::Now => (None, None),
        AsOf::Time(time) => (Some(time), None),
        AsOf::Position(position) => (None, Some(position)),
    };
    let sql = if matches!(as_of, AsOf::Now) {
        "SELECT account, currency, sum(debit_minor)::bigint, sum(credit_minor)::bigint \
         FROM journal.balances WHERE ($1::text IS NULL OR project = $1) AND livemode = $2 \
           AND $3::timestamptz IS NULL AND $4::bigint IS NULL \
         GROUP BY account, currency"
    } else {
        "SELECT account, currency, sum(debit_minor)::bigint, sum(credit_minor)::bigint \
         FROM journal.lines WHERE ($1::text IS NULL OR project = $1) AND livemode = $2 \
           AND ($3::timestamptz IS NULL OR recorded_at <= $3) \
           AND ($4::bigint IS NULL OR entry <= $4) \
         GROUP BY account, currency"
    };
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(sql)
        .bind(project)
        .bind(livemode)
        .bind(time)
        .bind(position)
        .fetch_all(pool)
        .await?;
    let mut rows: Vec<TrialBalanceRow> = rows
        .into_iter()
        .map(
            |(account, currency, debit_minor, credit_minor)| TrialBalanceRow {
                account,
                currency,
                debit_minor,
                credit_minor,
            },
        )
        .collect();
    let order = |account: &str| {
        accounts::ALL
            .iter()
            .position(|known| *known == account)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by(|a, b| {
        (a.currency.as_str(), order(&a.account), a.account.as_str()).cmp(&(
            b.currency.as_str(),
            order(&b.account),
            b.account.as_str(),
        ))
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::invoice::{BillingReason, NewInvoice, Totals};
    use domain::money::{Currency, Money};

    fn recorded(aggregate_type: &str, id: &str, position: i64, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            position,
            txid: 1,
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: id.to_string(),
            sequence: position,
            event_type: event_type.to_string(),
            event_version: "1.0".to_string(),
            payload: String::new(),
            metadata: r#"{"project":"proj_1","mode":"test","actor":"test"}"#.to_string(),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }

    fn balanced(movement: Movement) -> Vec<Posting> {
        let postings = post(&movement);
        let event = recorded("payment_intent", "pi_1", 1, "ChargeSucceeded");
        check_balanced(&event, "gbp", &postings).expect("balanced");
        postings
    }

    fn side(postings: &[Posting], account: &str) -> (i64, i64) {
        postings
            .iter()
            .filter(|posting| posting.account == account)
            .fold((0, 0), |(d, c), posting| {
                (d + posting.debit_minor, c + posting.credit_minor)
            })
    }

    #[test]
    fn a_capture_moves_money_into_clearing_and_unapplied_payments() {
        let postings = balanced(Movement::ChargeCaptured { amount_minor: 1200 });
        assert_eq!(side(&postings, CARDSTREAM_CLEARING), (1200, 0));
        assert_eq!(side(&postings, UNAPPLIED_PAYMENTS), (0, 1200));
    }

    #[test]
    fn a_finalized_invoice_books_net_revenue_and_vat() {
        let postings = balanced(Movement::InvoiceFinalized {
            net_minor: 1000,
            tax_minor: 200,
            total_minor: 1200,
        });
        assert_eq!(side(&postings, CUSTOMER_RECEIVABLE), (1200, 0));
        assert_eq!(side(&postings, REVENUE), (0, 1000));
        assert_eq!(side(&postings, VAT_PAYABLE), (0, 200));
        // No tax: no zero line.
        let untaxed = balanced(Movement::InvoiceFinalized {
            net_minor: 1000,
            tax_minor: 0,
            total_minor: 1000,
        });
        assert_eq!(untaxed.len(), 2);
    }

    #[test]
    fn paying_an_invoice_applies_the_payment_and_recovers_written_off_debt() {
        let postings = balanced(Movement::InvoicePaid {
            amount_minor: 1200,
            out_of_band: false,
            written_off_minor: 0,
        });
        assert_eq!(side(&postings, UNAPPLIED_PAYMENTS), (1200, 0));
        assert_eq!(side(&postings, CUSTOMER_RECEIVABLE), (0, 1200));
        let recovered = balanced(Movement::InvoicePaid {
            amount_minor: 1200,
            out_of_band: true,
            written_off_minor: 1200,
        });
        assert_eq!(side(&recovered, OUT_OF_BAND_RECEIPTS), (1200, 0));
        assert_eq!(side(&recovered, BAD_DEBT), (0, 1200));
        assert_eq!(side(&recovered, CUSTOMER_RECEIVABLE), (0, 0));
    }

    #[test]
    fn refunds_write_offs_and_settlements_balance() {
        let refund = balanced(Movement::RefundSucceeded {
            amount_minor: 600,
            tax_minor: 100,
        });
        assert_eq!(side(&refund, REFUNDS), (500, 0));
        assert_eq!(side(&refund, VAT_PAYABLE), (100, 0));
        assert_eq!(side(&refund, CARDSTREAM_CLEARING), (0, 600));
        let write_off = balanced(Movement::InvoiceWrittenOff {
            outstanding_minor: 700,
        });
        assert_eq!(side(&write_off, BAD_DEBT), (700, 0));
        assert_eq!(side(&write_off, CUSTOMER_RECEIVABLE), (0, 700));
        let fees = balanced(Movement::SettlementFees { fee_minor: 150 });
        assert_eq!(side(&fees, FEES), (150, 0));
        assert_eq!(side(&fees, CARDSTREAM_CLEARING), (0, 150));
        // Fees revised down come back out of the fees account.
        let lower = balanced(Movement::SettlementFees { fee_minor: -20 });
        assert_eq!(side(&lower, FEES), (0, 20));
        assert_eq!(side(&lower, CARDSTREAM_CLEARING), (20, 0));
        let received = balanced(Movement::SettlementReceived {
            amount_minor: 9_850,
        });
        assert_eq!(side(&received, GRIFFIN_BANK), (9_850, 0));
        assert_eq!(side(&received, CARDSTREAM_CLEARING), (0, 9_850));
        let unexpected = balanced(Movement::UnexpectedCredit { amount_minor: 42 });
        assert_eq!(side(&unexpected, GRIFFIN_BANK), (42, 0));
        assert_eq!(side(&unexpected, UNIDENTIFIED_RECEIPTS), (0, 42));
    }

    /// A rule that forgets the VAT line: the check refuses it, naming the event.
    fn rule_without_vat(movement: &Movement) -> Vec<Posting> {
        post(movement)
            .into_iter()
            .filter(|posting| posting.account != VAT_PAYABLE)
            .collect()
    }

    #[test]
    fn an_unbalanced_rule_is_caught_and_names_its_event() {
        let event = recorded("invoice", "in_1", 42, "InvoiceFinalized");
        let postings = rule_without_vat(&Movement::InvoiceFinalized {
            net_minor: 1000,
            tax_minor: 200,
            total_minor: 1200,
        });
        let error = check_balanced(&event, "gbp", &postings).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ProjectionError::Invariant { .. }),
            "{message}"
        );
        assert!(message.contains("invoice/in_1"), "{message}");
        assert!(message.contains("position 42"), "{message}");
        assert!(message.contains("1200 ≠ credits 1000"), "{message}");
    }

    #[test]
    fn a_two_sided_or_negative_line_is_refused() {
        let event = recorded("invoice", "in_1", 7, "InvoicePaid");
        let two_sided = [Posting {
            account: REVENUE,
            debit_minor: 5,
            credit_minor: 5,
        }];
        assert!(check_balanced(&event, "gbp", &two_sided).is_err());
        let negative = [
            Posting {
                account: REVENUE,
                debit_minor: -5,
                credit_minor: 0,
            },
            Posting {
                account: REFUNDS,
                debit_minor: 0,
                credit_minor: -5,
            },
        ];
        assert!(check_balanced(&event, "gbp", &negative).is_err());
    }

    #[test]
    fn an_invoice_created_event_is_read_for_its_currency_alone() {
        let event = InvoiceEvent::InvoiceCreated {
            invoice: Box::new(NewInvoice {
                invoice_id: "in_1".to_string(),
                customer: "cus_1".to_string(),
                currency: Currency::EUR,
                billing_reason: BillingReason::SubscriptionCycle,
                subscription: Some("sub_1".to_string()),
                lines: Vec::new(),
                auto_advance: true,
                description: Some("with \"quotes\" and \\ escapes".to_string()),
                footer: None,
                metadata: Default::default(),
                default_payment_method: None,
                period_start: 0,
                period_end: 0,
                test_clock: None,
            }),
            created: 0,
        };
        let mut recorded = recorded("invoice", "in_1", 1, "InvoiceCreated");
        recorded.payload = serde_json::to_string(&event).unwrap();
        let decoded = Decoded::of(&recorded, &domain::upcasters::all()).unwrap();
        assert!(
            matches!(
                decoded,
                Decoded::InvoiceOpened(InvoiceOpened {
                    currency: Currency::EUR
                })
            ),
            "the whole event read as its currency"
        );
    }

    fn invoice_created(currency: Currency) -> Decoded {
        Decoded::InvoiceOpened(InvoiceOpened { currency })
    }

    #[test]
    fn an_invoices_life_nets_receivable_to_zero_and_keeps_revenue() {
        let mut memory = Memory::default();
        let mut books: HashMap<&'static str, i64> = HashMap::new();
        let book = |event: RecordedEvent,
                    decoded: Decoded,
                    memory: &mut Memory,
                    books: &mut HashMap<&'static str, i64>| {
            if let Some((currency, movement)) = movement(&event, &decoded, memory).unwrap() {
                assert_eq!(currency, "eur");
                let postings = post(&movement);
                check_balanced(&event, &currency, &postings).unwrap();
                for posting in postings {
                    *books.entry(posting.account).or_default() +=
                        posting.debit_minor - posting.credit_minor;
                }
            }
        };
        book(
            recorded("invoice", "in_1", 1, "InvoiceCreated"),
            invoice_created(Currency::EUR),
            &mut memory,
            &mut books,
        );
        book(
            recorded("invoice", "in_1", 2, "InvoiceFinalized"),
            Decoded::Invoice(InvoiceEvent::InvoiceFinalized {
                number: "A-1".to_string(),
                access_token: String::new(),
                retry_days: Vec::new(),
                totals: Totals {
                    subtotal: 1000,
                    subtotal_excluding_tax: 1000,
                    tax: 200,
                    total: 1200,
                },
                at: 10,
            }),
            &mut memory,
            &mut books,
        );
        book(
            recorded("payment_intent", "pi_1", 3, "ChargeSucceeded"),
            Decoded::Intent(PaymentIntentEvent::ChargeSucceeded {
                charge_id: "ch_1".to_string(),
                gateway_token: String::new(),
                authorization_code: None,
                amount: Money::new(1200, Currency::EUR).unwrap(),
                at: 11,
            }),
            &mut memory,
            &mut books,
        );
        book(
            recorded("invoice", "in_1", 4, "InvoicePaid"),
            Decoded::Invoice(InvoiceEvent::InvoicePaid {
                payment_intent: Some("pi_1".to_string()),
                amount_paid: 1200,
                out_of_band: false,
                at: 11,
            }),
            &mut memory,
            &mut books,
        );
        // A paid invoice is forgotten; voiding it later would be a bad event.
        assert_eq!(memory.invoices.get("in_1"), Some(&None));
        assert_eq!(books[CUSTOMER_RECEIVABLE], 0);
        assert_eq!(books[UNAPPLIED_PAYMENTS], 0);
        assert_eq!(books[CARDSTREAM_CLEARING], 1200);
        assert_eq!(books[REVENUE], -1000);
        assert_eq!(books[VAT_PAYABLE], -200);
        // Refunded in two parts (a third, then the rest): the VAT comes back in proportion,
        // exactly all of it in the end, and the rest is contra-revenue.
        for (position, (refund, amount)) in [("re_1", 400), ("re_2", 800)].into_iter().enumerate() {
            let position = 5 + 2 * position as i64;
            book(
                recorded("payment_intent", "pi_1", position, "RefundStarted"),
                Decoded::Intent(PaymentIntentEvent::RefundStarted {
                    refund_id: refund.to_string(),
                    charge_id: "ch_1".to_string(),
                    amount,
                    reason: None,
                    transaction_unique: format!("tu_{refund}"),
                    metadata: Default::default(),
                    at: 12,
                }),
                &mut memory,
                &mut books,
            );
            book(
                recorded("payment_intent", "pi_1", position + 1, "RefundSucceeded"),
                Decoded::Intent(PaymentIntentEvent::RefundSucceeded {
                    refund_id: refund.to_string(),
                    at: 12,
                }),
                &mut memory,
                &mut books,
            );
            if refund == "re_1" {
                // A third of £2.00 VAT: 66.67 → 67.
                assert_eq!(books[VAT_PAYABLE], -200 + 67);
                assert_eq!(books[REFUNDS], 400 - 67);
            }
        }
        assert_eq!(books[VAT_PAYABLE], 0);
        assert_eq!(books[REFUNDS], 1000);
        assert_eq!(books[CARDSTREAM_CLEARING], 0);
        assert_eq!(memory.intents["pi_1"].refunded_minor, 1200);
    }
}
