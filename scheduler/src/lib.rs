//! Timed work, each job on an injectable clock so tests move time instead of sleeping.
//!
//! Today: the ledger sealer. With billing: renewal runs, dunning retries and test clocks.
//! Depends on `event-store` (and later `commands`); never on HTTP.

pub mod clock;
pub mod sealer;

pub use clock::{Clock, SystemClock};
