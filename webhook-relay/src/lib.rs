//! Tails the global log and delivers events to webhook endpoints (the webhook issue).
//!
//! Depends on `event-store` (it consumes the log like a projection, with its own
//! checkpoint); never on the write side.
