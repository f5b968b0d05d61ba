//! Timed work, each job on an injectable clock so tests move time instead of sleeping.
//!
//! Today: the ledger sealer and the recovery of open charge attempts. With billing: renewal
//! runs, dunning retries and test clocks. Depends on `event-store` and `commands`; never on
//! HTTP.

pub mod billing;
pub mod clock;
pub mod recovery;
pub mod sealer;

pub use clock::{Clock, ManualClock, SystemClock};
