//! The HTTP conventions every Stripe-shaped route follows, kept apart from the resources:
//!
//! - [`form`]: urlencoded parameters with bracket nesting, read through [`Params`] whose
//!   `take_*` accessors record what was read so `reject_unknown()` can refuse the rest;
//! - [`error`]: [`ApiError`], Stripe's error envelope and statuses;
//! - [`middleware`]: Request-Id, tracing span, Stripe-Version echo, catch-panic, body limit
//!   and an envelope for every error ([`apply_conventions`]);
//! - [`auth`]: API keys from `Authorization`, resolved by a [`KeyResolver`], 401s;
//! - [`rate_limit`]: requests per second per key, 429 with `Retry-After`;
//! - [`list`]: `limit`/`starting_after`/`ending_before` and the list object;
//!
//! Wiring (the binary or `read_api::router`):
//!
//! ```text
//! let v1 = http::auth::require_api_key(v1_routes.with_state(state), resolver, rate_limiter);
//! let app = http::apply_conventions(Router::new().nest("/v1", v1).route("/healthz", …),
//!                                   &http::ConventionsConfig::default());
//! ```

pub mod auth;
pub mod error;
pub mod form;
pub mod list;
pub mod middleware;
pub mod rate_limit;

pub use auth::{require_api_key, AuthenticatedKey, KeyResolver};
pub use error::{ApiError, CardError};
pub use form::Params;
pub use list::{List, ListParams};
pub use middleware::{apply_conventions, ConventionsConfig, RequestId, StripeVersion};
pub use rate_limit::{KeyRateLimiter, RateLimitDefaults};
