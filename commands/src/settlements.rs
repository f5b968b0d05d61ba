//! Settlement reconciliation's write side: recording a day's expectation on its
//! `Settlement`, and each Griffin credit, exactly once, on its `BankCredit` stream and (when
//! it was allocated) its settlement, in one unit of work.
//!
//! The figures and the routing come from the caller (the reconciler in `scheduler`, which
//! reads them from the `settlements` read model and Griffin); the aggregates decide on their
//! own streams: a settlement refuses a Griffin transaction it already holds, and a credit's
//! stream refuses a second record, so two reconcilers racing on one credit collide on its
//! stream and the loser finds it recorded.

use chrono::NaiveDate;
use domain::settlement::{
    settlement_id, BankCredit, BankCreditCommand, BankCreditError, CreditDetails, MatchedBy,
    Settlement, SettlementCommand, SettlementError, SettlementEvent, Totals,
};
use event_store::{EventMetadata, Mode};

use crate::unit::{back_off, UnitError, MAX_UNIT_ATTEMPTS};
use crate::CommandBus;

/// Who the reconciler's events say acted.
pub const ACTOR: &str = "system:settlement-reconciler";

#[derive(Debug, thiserror::Error)]
pub enum SettlementCommandError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("the settlement refused: {0}")]
    Settlement(#[from] SettlementError),
    #[error("the credit refused: {0}")]
    Credit(BankCreditError),
    #[error("gave up after {0} conflicting attempts")]
    TooManyConflicts(u32),
}

/// Where a credit goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditRoute {
    Settlement {
        settlement_id: String,
        project: String,
        livemode: bool,
        matched_by: MatchedBy,
    },
    /// No expected settlement: recorded as an `UnexpectedCredit` under the Griffin
    /// organisation's mode (and no project).
    Unexpected { livemode: bool, reason: String },
}

/// What recording a credit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditRecorded {
    /// `matched`, `shortfall` or `surplus`, on the settlement.
    Settled {
        settlement_id: String,
        outcome: &'static str,
    },
    Unexpected,
    /// This Griffin transaction was recorded before (by this reconciler or another).
    AlreadyRecorded,
}

fn mode(livemode: bool) -> Mode {
    if livemode {
        Mode::Live
    } else {
        Mode::Test
    }
}

#[derive(Clone)]
pub struct SettlementService {
    bus: CommandBus,
}

impl SettlementService {
    pub fn new(bus: CommandBus) -> Self {
        Self { bus }
    }

    /// Records the day's figures on its settlement; true when that appended an event.
    pub async fn update_expectation(
        &self,
        project: &str,
        livemode: bool,
        currency: &str,
        day: NaiveDate,
        totals: Totals,
        at: i64,
    ) -> Result<bool, SettlementCommandError> {
        let id = settlement_id(project, livemode, currency, day);
        let metadata = EventMetadata::new(project, mode(livemode), ACTOR);
        for attempt in 1..=MAX_UNIT_ATTEMPTS {
            let mut unit = self.bus.unit(&metadata).await?;
            let events = unit
                .decide::<Settlement>(
                    &id,
                    SettlementCommand::UpdateExpectation {
                        settlement_id: id.clone(),
                        project: project.to_string(),
                        livemode,
                        currency: currency.to_string(),
                        day,
                        totals,
                        at,
                    },
                )
                .await??;
            match unit.commit().await {
                Ok(_) => return Ok(!events.is_empty()),
                Err(UnitError::Conflict) => back_off(attempt).await,
                Err(error) => return Err(error.into()),
            }
        }
        Err(SettlementCommandError::TooManyConflicts(MAX_UNIT_ATTEMPTS))
    }

    /// Records one Griffin credit where `route` says, once: a transaction recorded before
    /// answers [`CreditRecorded::AlreadyRecorded`] and appends nothing.
    pub async fn record_credit(
        &self,
        credit: &CreditDetails,
        route: &CreditRoute,
        at: i64,
    ) -> Result<CreditRecorded, SettlementCommandError> {
        let metadata = match route {
            CreditRoute::Settlement {
                project, livemode, ..
            } => EventMetadata::new(project.as_str(), mode(*livemode), ACTOR),
            CreditRoute::Unexpected { livemode, .. } => {
                EventMetadata::new("", mode(*livemode), ACTOR)
            }
        };
        for attempt in 1..=MAX_UNIT_ATTEMPTS {
            let mut unit = self.bus.unit(&metadata).await?;
            let command = match route {
                CreditRoute::Settlement {
                    settlement_id,
                    matched_by,
                    ..
                } => BankCreditCommand::Allocate {
                    credit: credit.clone(),
                    settlement_id: settlement_id.clone(),
                    matched_by: *matched_by,
                    at,
                },
                CreditRoute::Unexpected { reason, .. } => BankCreditCommand::RecordUnexpected {
                    credit: credit.clone(),
                    reason: reason.clone(),
                    at,
                },
            };
            match unit
                .decide::<BankCredit>(&credit.griffin_transaction, command)
                .await?
            {
                Ok(_) => {}
                Err(BankCreditError::AlreadyRecorded(_)) => {
                    return Ok(CreditRecorded::AlreadyRecorded)
                }
                Err(other) => return Err(SettlementCommandError::Credit(other)),
            }
            let recorded = match route {
                CreditRoute::Settlement {
                    settlement_id,
                    matched_by,
                    ..
                } => {
                    let decided = unit
                        .decide::<Settlement>(
                            settlement_id,
                            SettlementCommand::RecordCredit {
                                griffin_transaction: credit.griffin_transaction.clone(),
                                amount: credit.amount,
                                matched_by: *matched_by,
                                at,
                            },
                        )
                        .await?;
                    let outcome = match decided {
                        Ok(events) => match events.first() {
                            Some(SettlementEvent::SettlementMatched { .. }) => "matched",
                            Some(SettlementEvent::SettlementShortfall { .. }) => "shortfall",
                            Some(SettlementEvent::SettlementSurplus { .. }) => "surplus",
                            _ => "recorded",
                        },
                        Err(SettlementError::AlreadyRecorded(_)) => {
                            return Ok(CreditRecorded::AlreadyRecorded)
                        }
                        Err(other) => return Err(other.into()),
                    };
                    CreditRecorded::Settled {
                        settlement_id: settlement_id.clone(),
                        outcome,
                    }
                }
                CreditRoute::Unexpected { .. } => CreditRecorded::Unexpected,
            };
            match unit.commit().await {
                Ok(_) => return Ok(recorded),
                Err(UnitError::Conflict) => back_off(attempt).await,
                Err(error) => return Err(error.into()),
            }
        }
        Err(SettlementCommandError::TooManyConflicts(MAX_UNIT_ATTEMPTS))
    }
}
