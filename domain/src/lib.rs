//! The business rules of Calmony Pay as small state machines: aggregates decide
//! (`handle(command) -> events`) and remember (`apply(event)`, which never fails).
//!
//! Pure: no I/O, no clock, no randomness. Time and ids come in with the command. Must never
//! depend on sqlx, tokio, axum, reqwest or any crate that touches the outside world.

pub mod checkout_session;
pub mod clearable;
pub mod customer;
pub mod invoice;
pub mod invoice_item;
pub mod money;
pub mod operator;
pub mod payment_intent;
pub mod payment_method;
pub mod price;
pub mod product;
pub mod project;
pub mod recurring;
pub mod settlement;
pub mod subscription;
pub mod tax;
pub mod tax_rate;
pub mod test_clock;
pub mod upcasters;
pub mod webhook_endpoint;

pub use money::{Currency, Money, MoneyError};
