//! Timed work, each job on an injectable clock so tests move time instead of sleeping.
//!
//! Today: the ledger sealer and the recovery of open charge attempts. With billing: renewal
//! runs, dunning retries and test clocks; settlement reconciliation against the Griffin
//! account. Depends on `event-store`, `commands` and the `griffin` client; never on HTTP.

pub mod billing;
pub mod clock;
pub mod recovery;
pub mod sealer;
pub mod settlements;

pub use clock::{Clock, ManualClock, SystemClock};
