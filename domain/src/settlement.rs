//! Settlement: what the acquirer owes a project for one day of card payments, and what
//! arrived in the Griffin account for it.
//!
//! A [`Settlement`] is one (project, mode, currency, UTC day), with the id
//! `stl_<project>_<mode>_<ccy>_<yyyymmdd>` ([`settlement_id`]). Its expectation is the day's
//! captured money minus the day's refunds (minus fees, when a fee rule gives any; none by
//! default), and it is **kept up to date, not fixed at a cut-off**: the first figures are
//! recorded as [`SettlementEvent::SettlementExpected`], every later change of them as
//! [`SettlementEvent::SettlementExpectationUpdated`] with the new totals. A day's figures
//! stop changing once the day is over (charges and refunds count on the UTC day they were
//! recorded), which is before the acquirer pays it (nightly at the earliest), so in practice
//! the expectation is final when the money comes; a late change is still recorded, and the
//! settlement's [`Settlement::status`] is always received-versus-expected on the latest
//! figures.
//!
//! Each credit of the Griffin account allocated to a settlement is recorded once, by its
//! Griffin transaction id: [`SettlementCommand::RecordCredit`] refuses an id the settlement
//! already holds. The outcome compares everything received so far with the expectation:
//! `SettlementMatched` when equal, `SettlementShortfall` when less, `SettlementSurplus`
//! when more (a shortfall followed by the missing remainder ends matched).
//!
//! A [`BankCredit`] (stream `bank_credit/<griffin transaction id>`) records what became of
//! every credit exactly once: allocated to a settlement, or an [`BankCreditEvent::UnexpectedCredit`]
//! when it matches none. The reconciler decides both streams in one unit of work, so two
//! reconcilers racing on one credit collide on the credit's stream and only one records it.
//!
//! **The reference Cardstream settlements carry** ([`settlement_reference`]):
//! `CARDSTREAM <merchant> <yyyymmdd>`, 28 characters (Griffin keeps 35): `<merchant>` is the
//! project's merchant code for the mode ([`merchant_code`], 8 characters of `0-9A-Z`), and
//! the date is the settlement day. References are compared after trimming, upper-casing and
//! collapsing runs of spaces.

use chrono::NaiveDate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// What every settlement reference starts with.
pub const REFERENCE_PREFIX: &str = "CARDSTREAM";
/// The length of a merchant code.
pub const MERCHANT_CODE_CHARS: usize = 8;
/// Griffin's bound on a payment reference.
pub const MAX_REFERENCE_CHARS: usize = 35;
/// A credit without a usable reference may settle a day up to this many days before the day
/// it was booked (Cardstream settles nightly; the acquirer may take up to three days).
pub const MATCH_WINDOW_DAYS: i64 = 3;

/// `test` or `live`, as settlement ids and merchant codes spell the mode.
pub fn mode_word(livemode: bool) -> &'static str {
    if livemode {
        "live"
    } else {
        "test"
    }
}

/// `stl_<project>_<mode>_<ccy>_<yyyymmdd>`.
pub fn settlement_id(project: &str, livemode: bool, currency: &str, day: NaiveDate) -> String {
    format!(
        "stl_{project}_{}_{}_{}",
        mode_word(livemode),
        currency.to_ascii_lowercase(),
        day.format("%Y%m%d")
    )
}

/// The project's merchant code in one mode: 8 characters of `0-9A-Z` from an FNV-1a hash of
/// `<project>:<mode>`. Stable (it is in references the acquirer was told to use), short
/// enough for the reference to fit Griffin's 35 characters.
pub fn merchant_code(project: &str, livemode: bool) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in project
        .bytes()
        .chain(std::iter::once(b':'))
        .chain(mode_word(livemode).bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut code = [b'0'; MERCHANT_CODE_CHARS];
    for slot in code.iter_mut().rev() {
        *slot = ALPHABET[(hash % 36) as usize];
        hash /= 36;
    }
    code.iter().map(|byte| char::from(*byte)).collect()
}

/// `CARDSTREAM <merchant code> <yyyymmdd>`: the reference the acquirer's payment for this
/// settlement carries.
pub fn settlement_reference(project: &str, livemode: bool, day: NaiveDate) -> String {
    format!(
        "{REFERENCE_PREFIX} {} {}",
        merchant_code(project, livemode),
        day.format("%Y%m%d")
    )
}

/// A payer's reference as references are compared: trimmed, upper-cased, runs of
/// whitespace made one space.
pub fn normalize_reference(reference: &str) -> String {
    reference
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// The merchant code and day of a settlement reference, if `reference` is one.
pub fn parse_reference(reference: &str) -> Option<(String, NaiveDate)> {
    let normalized = normalize_reference(reference);
    let mut words = normalized.split(' ');
    if words.next()? != REFERENCE_PREFIX {
        return None;
    }
    let code = words.next()?;
    let day = words.next()?;
    if words.next().is_some()
        || code.len() != MERCHANT_CODE_CHARS
        || !code.bytes().all(|byte| byte.is_ascii_alphanumeric())
        || day.len() != 8
    {
        return None;
    }
    let day = NaiveDate::parse_from_str(day, "%Y%m%d").ok()?;
    Some((code.to_string(), day))
}

/// Most a fee rule's percentage may be.
pub const MAX_FEE_PERCENT: i64 = 20;
/// Most a fee rule's fixed part may be, in minor units.
pub const MAX_FEE_FIXED_MINOR: i64 = 10_000;

/// What the acquirer keeps of each captured charge before paying a settlement out: a
/// percentage of the amount plus a fixed amount per capture (in the charge's minor units),
/// e.g. `1.4% + 20`. The percentage part is rounded half away from zero, per capture.
/// Refunds do not give fees back (as acquirers usually do). A project without a rule
/// (the default) expects its settlements without fees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeRule {
    /// Percent of each capture, e.g. `1.4`.
    pub percent: rust_decimal::Decimal,
    /// Minor units per capture.
    pub fixed_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeRuleError {
    #[error("a fee rule reads like 1.4%+20, 1.4%, 20 or none, not {0:?}")]
    Unreadable(String),
    #[error("a fee's percentage must be between 0 and {MAX_FEE_PERCENT}, with at most 4 decimals")]
    PercentOutOfRange,
    #[error("a fee's fixed part must be between 0 and {MAX_FEE_FIXED_MINOR} minor units")]
    FixedOutOfRange,
}

impl FeeRule {
    pub fn validate(&self) -> Result<(), FeeRuleError> {
        if self.percent < rust_decimal::Decimal::ZERO
            || self.percent > rust_decimal::Decimal::from(MAX_FEE_PERCENT)
            || self.percent.scale() > 4
        {
            return Err(FeeRuleError::PercentOutOfRange);
        }
        if !(0..=MAX_FEE_FIXED_MINOR).contains(&self.fixed_minor) {
            return Err(FeeRuleError::FixedOutOfRange);
        }
        Ok(())
    }

    /// `1.4%+20`, `1.4%`, `20` (a fixed fee alone); `none` is `Ok(None)`.
    pub fn parse(text: &str) -> Result<Option<FeeRule>, FeeRuleError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let unreadable = || FeeRuleError::Unreadable(text.to_string());
        let (percent, fixed) = match compact.split_once('%') {
            Some((percent, rest)) => {
                let fixed = match rest.strip_prefix('+') {
                    Some(fixed) => fixed,
                    None if rest.is_empty() => "0",
                    None => return Err(unreadable()),
                };
                (percent, fixed)
            }
            None => ("0", compact.as_str()),
        };
        let percent: rust_decimal::Decimal = percent.parse().map_err(|_| unreadable())?;
        let fixed_minor: i64 = fixed.parse().map_err(|_| unreadable())?;
        let rule = FeeRule {
            percent: percent.normalize(),
            fixed_minor,
        };
        rule.validate()?;
        Ok(Some(rule))
    }

    /// The fee on one capture of `amount_minor` (0 for nothing captured).
    pub fn fee_for(&self, amount_minor: i64) -> i64 {
        if amount_minor <= 0 {
            return 0;
        }
        let percentage = (rust_decimal::Decimal::from(amount_minor) * self.percent
            / rust_decimal::Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        i64::try_from(percentage)
            .unwrap_or(i64::MAX)
            .saturating_add(self.fixed_minor)
    }
}

impl std::fmt::Display for FeeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%+{}", self.percent, self.fixed_minor)
    }
}

/// A day's figures, in minor units of the settlement's currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub gross_captured: i64,
    pub refunded: i64,
    pub fees: i64,
}

impl Totals {
    /// Captured − refunded − fees; negative when refunds and fees exceed the day's captures
    /// (the acquirer would then take money, which is not a credit to match).
    pub fn expected_net(&self) -> Option<i64> {
        self.gross_captured
            .checked_sub(self.refunded)?
            .checked_sub(self.fees)
    }
}

/// How a credit was tied to its settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// Its reference is the settlement's.
    Reference,
    /// No usable reference: the only settlement awaiting exactly this amount within
    /// [`MATCH_WINDOW_DAYS`] before the day it was booked.
    AmountAndDay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementStatus {
    /// Expected; nothing received yet.
    Awaiting,
    Matched,
    Shortfall,
    Surplus,
}

impl SettlementStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SettlementStatus::Awaiting => "awaiting",
            SettlementStatus::Matched => "matched",
            SettlementStatus::Shortfall => "shortfall",
            SettlementStatus::Surplus => "surplus",
        }
    }

    /// The status of `received` (from `credits` credits) against `expected_net`.
    pub fn of(expected_net: i64, received: i64, credits: usize) -> Self {
        if credits == 0 {
            SettlementStatus::Awaiting
        } else if received == expected_net {
            SettlementStatus::Matched
        } else if received < expected_net {
            SettlementStatus::Shortfall
        } else {
            SettlementStatus::Surplus
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementCommand {
    /// Records the day's figures: `SettlementExpected` the first time,
    /// `SettlementExpectationUpdated` when they changed, nothing when they did not.
    UpdateExpectation {
        settlement_id: String,
        project: String,
        livemode: bool,
        currency: String,
        day: NaiveDate,
        totals: Totals,
        at: i64,
    },
    /// Records one credit of the Griffin account as (part of) this settlement's payment.
    RecordCredit {
        griffin_transaction: String,
        amount: i64,
        matched_by: MatchedBy,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementEvent {
    SettlementExpected {
        settlement_id: String,
        project: String,
        livemode: bool,
        day: NaiveDate,
        currency: String,
        /// [`settlement_reference`] of the project, mode and day.
        reference: String,
        gross_captured: i64,
        refunded: i64,
        fees: i64,
        expected_net: i64,
        at: i64,
    },
    SettlementExpectationUpdated {
        gross_captured: i64,
        refunded: i64,
        fees: i64,
        expected_net: i64,
        at: i64,
    },
    /// Everything received so far (`received`, this credit's `amount` included) equals the
    /// expectation.
    SettlementMatched {
        griffin_transaction: String,
        amount: i64,
        received: i64,
        matched_by: MatchedBy,
        at: i64,
    },
    /// Received less than expected: `difference` = expected − received.
    SettlementShortfall {
        griffin_transaction: String,
        amount: i64,
        expected: i64,
        received: i64,
        difference: i64,
        matched_by: MatchedBy,
        at: i64,
    },
    /// Received more than expected: `difference` = received − expected.
    SettlementSurplus {
        griffin_transaction: String,
        amount: i64,
        expected: i64,
        received: i64,
        difference: i64,
        matched_by: MatchedBy,
        at: i64,
    },
}

impl DomainEvent for SettlementEvent {
    fn event_type(&self) -> String {
        match self {
            SettlementEvent::SettlementExpected { .. } => "SettlementExpected",
            SettlementEvent::SettlementExpectationUpdated { .. } => "SettlementExpectationUpdated",
            SettlementEvent::SettlementMatched { .. } => "SettlementMatched",
            SettlementEvent::SettlementShortfall { .. } => "SettlementShortfall",
            SettlementEvent::SettlementSurplus { .. } => "SettlementSurplus",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("the settlement has no expectation yet")]
    NotExpected,
    #[error("Griffin transaction {0} is already recorded on this settlement")]
    AlreadyRecorded(String),
    #[error("the command is for another settlement ({0})")]
    WrongSettlement(String),
    #[error("amounts must be positive and the totals non-negative and small enough to add")]
    InvalidAmount,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub id: String,
    pub project: String,
    pub livemode: bool,
    pub currency: String,
    pub day: Option<NaiveDate>,
    pub reference: String,
    pub totals: Totals,
    pub expected_net: i64,
    pub received: i64,
    /// Griffin transaction ids recorded, in order.
    pub credits: Vec<String>,
}

impl Settlement {
    pub fn is_expected(&self) -> bool {
        !self.id.is_empty()
    }

    pub fn status(&self) -> SettlementStatus {
        SettlementStatus::of(self.expected_net, self.received, self.credits.len())
    }
}

impl Aggregate for Settlement {
    const TYPE: &'static str = "settlement";
    type Command = SettlementCommand;
    type Event = SettlementEvent;
    type Error = SettlementError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            SettlementCommand::UpdateExpectation {
                settlement_id: id,
                project,
                livemode,
                currency,
                day,
                totals,
                at,
            } => {
                if totals.gross_captured < 0 || totals.refunded < 0 || totals.fees < 0 {
                    return Err(SettlementError::InvalidAmount);
                }
                let expected_net = totals
                    .expected_net()
                    .ok_or(SettlementError::InvalidAmount)?;
                let currency = currency.to_ascii_lowercase();
                if id != settlement_id(&project, livemode, &currency, day) {
                    return Err(SettlementError::WrongSettlement(id));
                }
                if self.is_expected() {
                    if self.id != id {
                        return Err(SettlementError::WrongSettlement(id));
                    }
                    if self.totals == totals {
                        return Ok(());
                    }
                    sink.write(
                        SettlementEvent::SettlementExpectationUpdated {
                            gross_captured: totals.gross_captured,
                            refunded: totals.refunded,
                            fees: totals.fees,
                            expected_net,
                            at,
                        },
                        self,
                    )
                    .await;
                } else {
                    let reference = settlement_reference(&project, livemode, day);
                    sink.write(
                        SettlementEvent::SettlementExpected {
                            settlement_id: id,
                            project,
                            livemode,
                            day,
                            currency,
                            reference,
                            gross_captured: totals.gross_captured,
                            refunded: totals.refunded,
                            fees: totals.fees,
                            expected_net,
                            at,
                        },
                        self,
                    )
                    .await;
                }
            }
            SettlementCommand::RecordCredit {
                griffin_transaction,
                amount,
                matched_by,
                at,
            } => {
                if !self.is_expected() {
                    return Err(SettlementError::NotExpected);
                }
                if self.credits.contains(&griffin_transaction) {
                    return Err(SettlementError::AlreadyRecorded(griffin_transaction));
                }
                if amount <= 0 {
                    return Err(SettlementError::InvalidAmount);
                }
                let received = self
                    .received
                    .checked_add(amount)
                    .ok_or(SettlementError::InvalidAmount)?;
                let expected = self.expected_net;
                let event = match SettlementStatus::of(expected, received, 1) {
                    SettlementStatus::Matched | SettlementStatus::Awaiting => {
                        SettlementEvent::SettlementMatched {
                            griffin_transaction,
                            amount,
                            received,
                            matched_by,
                            at,
                        }
                    }
                    SettlementStatus::Shortfall => SettlementEvent::SettlementShortfall {
                        griffin_transaction,
                        amount,
                        expected,
                        received,
                        difference: expected - received,
                        matched_by,
                        at,
                    },
                    SettlementStatus::Surplus => SettlementEvent::SettlementSurplus {
                        griffin_transaction,
                        amount,
                        expected,
                        received,
                        difference: received - expected,
                        matched_by,
                        at,
                    },
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SettlementEvent::SettlementExpected {
                settlement_id,
                project,
                livemode,
                day,
                currency,
                reference,
                gross_captured,
                refunded,
                fees,
                expected_net,
                at: _,
            } => {
                self.id = settlement_id;
                self.project = project;
                self.livemode = livemode;
                self.day = Some(day);
                self.currency = currency;
                self.reference = reference;
                self.totals = Totals {
                    gross_captured,
                    refunded,
                    fees,
                };
                self.expected_net = expected_net;
            }
            SettlementEvent::SettlementExpectationUpdated {
                gross_captured,
                refunded,
                fees,
                expected_net,
                at: _,
            } => {
                self.totals = Totals {
                    gross_captured,
                    refunded,
                    fees,
                };
                self.expected_net = expected_net;
            }
            SettlementEvent::SettlementMatched {
                griffin_transaction,
                received,
                ..
            }
            | SettlementEvent::SettlementShortfall {
                griffin_transaction,
                received,
                ..
            }
            | SettlementEvent::SettlementSurplus {
                griffin_transaction,
                received,
                ..
            } => {
                self.received = received;
                self.credits.push(griffin_transaction);
            }
        }
    }
}

/// A credit of the Griffin account as the reconciler read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditDetails {
    pub griffin_transaction: String,
    /// The account's `account-url`.
    pub account: String,
    /// Minor units of `currency` (lowercase; Griffin is GBP only).
    pub amount: i64,
    pub currency: String,
    /// The payer's reference, as Griffin gave it.
    pub reference: Option<String>,
    pub counterparty: Option<String>,
    /// Griffin's `processed-at`, Unix seconds.
    pub processed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankCreditCommand {
    Allocate {
        credit: CreditDetails,
        settlement_id: String,
        matched_by: MatchedBy,
        at: i64,
    },
    RecordUnexpected {
        credit: CreditDetails,
        reason: String,
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankCreditEvent {
    BankCreditAllocated {
        credit: CreditDetails,
        settlement_id: String,
        matched_by: MatchedBy,
        at: i64,
    },
    /// A credit that matches no expected settlement: for finance to look into.
    UnexpectedCredit {
        credit: CreditDetails,
        reason: String,
        at: i64,
    },
}

impl DomainEvent for BankCreditEvent {
    fn event_type(&self) -> String {
        match self {
            BankCreditEvent::BankCreditAllocated { .. } => "BankCreditAllocated",
            BankCreditEvent::UnexpectedCredit { .. } => "UnexpectedCredit",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankCreditError {
    #[error("Griffin transaction {0} is already recorded")]
    AlreadyRecorded(String),
    #[error("a credit's amount must be positive")]
    InvalidAmount,
}

/// One credit of the Griffin account (stream id: its Griffin transaction id), recorded once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankCredit {
    pub griffin_transaction: String,
    pub settlement_id: Option<String>,
    pub unexpected: bool,
}

impl Aggregate for BankCredit {
    const TYPE: &'static str = "bank_credit";
    type Command = BankCreditCommand;
    type Event = BankCreditEvent;
    type Error = BankCreditError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let credit = match &command {
            BankCreditCommand::Allocate { credit, .. }
            | BankCreditCommand::RecordUnexpected { credit, .. } => credit,
        };
        if !self.griffin_transaction.is_empty() {
            return Err(BankCreditError::AlreadyRecorded(
                credit.griffin_transaction.clone(),
            ));
        }
        if credit.amount <= 0 {
            return Err(BankCreditError::InvalidAmount);
        }
        let event = match command {
            BankCreditCommand::Allocate {
                credit,
                settlement_id,
                matched_by,
                at,
            } => BankCreditEvent::BankCreditAllocated {
                credit,
                settlement_id,
                matched_by,
                at,
            },
            BankCreditCommand::RecordUnexpected { credit, reason, at } => {
                BankCreditEvent::UnexpectedCredit { credit, reason, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankCreditEvent::BankCreditAllocated {
                credit,
                settlement_id,
                ..
            } => {
                self.griffin_transaction = credit.griffin_transaction;
                self.settlement_id = Some(settlement_id);
            }
            BankCreditEvent::UnexpectedCredit { credit, .. } => {
                self.griffin_transaction = credit.griffin_transaction;
                self.unexpected = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
    }

    fn id() -> String {
        settlement_id("proj_1", false, "gbp", day())
    }

    fn update(gross: i64, refunded: i64) -> SettlementCommand {
        SettlementCommand::UpdateExpectation {
            settlement_id: id(),
            project: "proj_1".into(),
            livemode: false,
            currency: "gbp".into(),
            day: day(),
            totals: Totals {
                gross_captured: gross,
                refunded,
                fees: 0,
            },
            at: 100,
        }
    }

    fn expected(gross: i64, refunded: i64) -> SettlementEvent {
        SettlementEvent::SettlementExpected {
            settlement_id: id(),
            project: "proj_1".into(),
            livemode: false,
            day: day(),
            currency: "gbp".into(),
            reference: settlement_reference("proj_1", false, day()),
            gross_captured: gross,
            refunded,
            fees: 0,
            expected_net: gross - refunded,
            at: 100,
        }
    }

    fn credit(transaction: &str, amount: i64) -> SettlementCommand {
        SettlementCommand::RecordCredit {
            griffin_transaction: transaction.into(),
            amount,
            matched_by: MatchedBy::Reference,
            at: 200,
        }
    }

    #[test]
    fn ids_and_references() {
        assert_eq!(id(), "stl_proj_1_test_gbp_20261125");
        let reference = settlement_reference("proj_1", false, day());
        assert_eq!(reference.len(), 28);
        assert!(reference.len() <= MAX_REFERENCE_CHARS);
        assert!(reference.starts_with("CARDSTREAM "));
        assert!(reference.ends_with(" 20261125"));
        assert_ne!(
            merchant_code("proj_1", false),
            merchant_code("proj_1", true)
        );
        assert_ne!(
            merchant_code("proj_1", false),
            merchant_code("proj_2", false)
        );
        let (code, parsed_day) = parse_reference(&reference).unwrap();
        assert_eq!(code, merchant_code("proj_1", false));
        assert_eq!(parsed_day, day());
        let sloppy = format!("  {}  ", reference.to_lowercase().replace(' ', "   "));
        assert_eq!(normalize_reference(&sloppy), reference);
        assert_eq!(parse_reference(&sloppy), parse_reference(&reference));
        for bad in [
            "",
            "CARDSTREAM",
            "CARDSTREAM ABCDEFGH",
            "CARDSTREAM ABCDEFGH 20261332",
            "CARDSTREAM ABC 20261125",
            "CARDSTREAM ABCDEFGH 20261125 X",
            "INVOICE 42",
        ] {
            assert_eq!(parse_reference(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_first_figures_are_expected_then_changes_update_them() {
        TestFramework::<Settlement>::with(())
            .given_no_previous_events()
            .when(update(3000, 500))
            .then_expect_events(vec![expected(3000, 500)]);
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500)])
            .when(update(3000, 500))
            .then_expect_events(vec![]);
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500)])
            .when(update(4000, 500))
            .then_expect_events(vec![SettlementEvent::SettlementExpectationUpdated {
                gross_captured: 4000,
                refunded: 500,
                fees: 0,
                expected_net: 3500,
                at: 100,
            }]);
    }

    #[test]
    fn refuses_an_id_that_is_not_the_settlements() {
        let SettlementCommand::UpdateExpectation { totals, .. } = update(1, 0) else {
            unreachable!()
        };
        TestFramework::<Settlement>::with(())
            .given_no_previous_events()
            .when(SettlementCommand::UpdateExpectation {
                settlement_id: "stl_other".into(),
                project: "proj_1".into(),
                livemode: false,
                currency: "gbp".into(),
                day: day(),
                totals,
                at: 1,
            })
            .then_expect_error(SettlementError::WrongSettlement("stl_other".into()));
    }

    #[test]
    fn a_credit_of_the_expected_net_matches() {
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500)])
            .when(credit("tr.1", 2500))
            .then_expect_events(vec![SettlementEvent::SettlementMatched {
                griffin_transaction: "tr.1".into(),
                amount: 2500,
                received: 2500,
                matched_by: MatchedBy::Reference,
                at: 200,
            }]);
    }

    #[test]
    fn short_and_surplus_credits_say_by_how_much() {
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500)])
            .when(credit("tr.1", 2000))
            .then_expect_events(vec![SettlementEvent::SettlementShortfall {
                griffin_transaction: "tr.1".into(),
                amount: 2000,
                expected: 2500,
                received: 2000,
                difference: 500,
                matched_by: MatchedBy::Reference,
                at: 200,
            }]);
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500)])
            .when(credit("tr.1", 2600))
            .then_expect_events(vec![SettlementEvent::SettlementSurplus {
                griffin_transaction: "tr.1".into(),
                amount: 2600,
                expected: 2500,
                received: 2600,
                difference: 100,
                matched_by: MatchedBy::Reference,
                at: 200,
            }]);
    }

    #[test]
    fn the_remainder_of_a_shortfall_ends_matched() {
        let shortfall = SettlementEvent::SettlementShortfall {
            griffin_transaction: "tr.1".into(),
            amount: 2000,
            expected: 2500,
            received: 2000,
            difference: 500,
            matched_by: MatchedBy::Reference,
            at: 200,
        };
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500), shortfall])
            .when(credit("tr.2", 500))
            .then_expect_events(vec![SettlementEvent::SettlementMatched {
                griffin_transaction: "tr.2".into(),
                amount: 500,
                received: 2500,
                matched_by: MatchedBy::Reference,
                at: 200,
            }]);
    }

    #[test]
    fn a_transaction_is_recorded_once() {
        let matched = SettlementEvent::SettlementMatched {
            griffin_transaction: "tr.1".into(),
            amount: 2500,
            received: 2500,
            matched_by: MatchedBy::Reference,
            at: 200,
        };
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500), matched])
            .when(credit("tr.1", 2500))
            .then_expect_error(SettlementError::AlreadyRecorded("tr.1".into()));
    }

    #[test]
    fn credits_need_an_expectation_and_a_positive_amount() {
        TestFramework::<Settlement>::with(())
            .given_no_previous_events()
            .when(credit("tr.1", 2500))
            .then_expect_error(SettlementError::NotExpected);
        TestFramework::<Settlement>::with(())
            .given(vec![expected(3000, 500)])
            .when(credit("tr.1", 0))
            .then_expect_error(SettlementError::InvalidAmount);
    }

    #[test]
    fn status_follows_the_latest_figures() {
        let mut settlement = Settlement::default();
        settlement.apply(expected(3000, 500));
        assert_eq!(settlement.status(), SettlementStatus::Awaiting);
        settlement.apply(SettlementEvent::SettlementMatched {
            griffin_transaction: "tr.1".into(),
            amount: 2500,
            received: 2500,
            matched_by: MatchedBy::Reference,
            at: 200,
        });
        assert_eq!(settlement.status(), SettlementStatus::Matched);
        settlement.apply(SettlementEvent::SettlementExpectationUpdated {
            gross_captured: 3000,
            refunded: 1000,
            fees: 0,
            expected_net: 2000,
            at: 300,
        });
        assert_eq!(settlement.status(), SettlementStatus::Surplus);
    }

    fn details(transaction: &str) -> CreditDetails {
        CreditDetails {
            griffin_transaction: transaction.into(),
            account: "/v0/bank/accounts/ba.1".into(),
            amount: 2500,
            currency: "gbp".into(),
            reference: Some("CARDSTREAM X 1".into()),
            counterparty: Some("Acquirer".into()),
            processed_at: 1_000,
        }
    }

    #[test]
    fn a_bank_credit_is_recorded_once_either_way() {
        let allocated = BankCreditEvent::BankCreditAllocated {
            credit: details("tr.1"),
            settlement_id: id(),
            matched_by: MatchedBy::Reference,
            at: 5,
        };
        TestFramework::<BankCredit>::with(())
            .given_no_previous_events()
            .when(BankCreditCommand::Allocate {
                credit: details("tr.1"),
                settlement_id: id(),
                matched_by: MatchedBy::Reference,
                at: 5,
            })
            .then_expect_events(vec![allocated.clone()]);
        TestFramework::<BankCredit>::with(())
            .given(vec![allocated])
            .when(BankCreditCommand::RecordUnexpected {
                credit: details("tr.1"),
                reason: "no match".into(),
                at: 6,
            })
            .then_expect_error(BankCreditError::AlreadyRecorded("tr.1".into()));
        TestFramework::<BankCredit>::with(())
            .given_no_previous_events()
            .when(BankCreditCommand::RecordUnexpected {
                credit: details("tr.2"),
                reason: "no match".into(),
                at: 6,
            })
            .then_expect_events(vec![BankCreditEvent::UnexpectedCredit {
                credit: details("tr.2"),
                reason: "no match".into(),
                at: 6,
            }]);
    }

    #[test]
    fn fee_rules_read_and_charge_per_capture() {
        let rule = FeeRule::parse("1.4% + 20").unwrap().unwrap();
        assert_eq!(rule.to_string(), "1.4%+20");
        // 1.4% of £10.00 is 14p, plus 20p.
        assert_eq!(rule.fee_for(1_000), 34);
        // 1.4% of 25p is 0.35p → 0p; of 36p is 0.504p → 1p; 1.25% of 100p is 1.25 → 1.
        assert_eq!(rule.fee_for(25), 20);
        assert_eq!(rule.fee_for(36), 21);
        assert_eq!(FeeRule::parse("1.25%").unwrap().unwrap().fee_for(100), 1);
        // Half a penny rounds up: 1.5% of 100p... 1.5 → 2.
        assert_eq!(FeeRule::parse("1.5%").unwrap().unwrap().fee_for(100), 2);
        assert_eq!(FeeRule::parse("20").unwrap().unwrap().fee_for(500), 20);
        assert_eq!(rule.fee_for(0), 0);
        assert_eq!(FeeRule::parse(" none ").unwrap(), None);
        for bad in [
            "", "%", "1.4%20", "abc", "1.4%+x", "-1%", "21%", "1.23456%", "10001", "-5",
        ] {
            assert!(FeeRule::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
