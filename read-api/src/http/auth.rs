//! API-key authentication for `/v1`: the secret key from `Authorization` (`Bearer sk_…`,
//! `Basic base64(sk_…:)` or `Basic sk_…`, as Stripe and its SDKs send it), resolved by a
//! [`KeyResolver`] to an [`AuthenticatedKey`] (project, mode), then rate-limited per key.
//! A missing or unknown key answers 401 in the error envelope.
//!
//! [`require_api_key`] wraps a router; handlers then take `key: AuthenticatedKey` as an
//! extractor. The key's `key_id`, `project` and `mode` are recorded on the request span;
//! the secret never is.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use event_store::Mode;

use super::error::ApiError;
use super::rate_limit::KeyRateLimiter;

/// Longest secret we will look up, in bytes.
pub const MAX_API_KEY_BYTES: usize = 255;

/// Who is calling: the resolved API key. Extract it in a handler behind
/// [`require_api_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedKey {
    /// The key's own id (not the secret), for logs, events and rate limiting.
    pub key_id: String,
    pub project_id: String,
    /// Test or live: decided by the key.
    pub mode: Mode,
    /// Requests per second for this key; 0 means the mode's default
    /// ([`super::rate_limit::RateLimitDefaults`]).
    pub rate_limit_per_second: u32,
}

/// Any failure of the lookup itself (the database is down, …): answered as a 500.
pub type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a secret key into the key it belongs to. Implemented over the database (a hash
/// lookup); `Ok(None)` for a key that does not exist or was revoked.
///
/// The secret has already been checked to start with `sk_test_`/`sk_live_` (or `rk_…`)
/// and to be at most [`MAX_API_KEY_BYTES`] of `[A-Za-z0-9_]`. The key returned must have
/// the mode its prefix says.
#[async_trait]
pub trait KeyResolver: Send + Sync + 'static {
    async fn resolve(&self, secret: &str) -> Result<Option<AuthenticatedKey>, ResolveError>;
}

#[derive(Clone)]
struct Authentication {
    resolver: Arc<dyn KeyResolver>,
    rate_limiter: Arc<KeyRateLimiter>,
}

/// Requires a valid API key on every route of `router` (and its fallback), then counts
/// the request against the key's rate limit. Handlers extract [`AuthenticatedKey`].
/// Call it after the routes are added: routes added later are not covered.
pub fn require_api_key<S>(
    router: Router<S>,
    resolver: Arc<dyn KeyResolver>,
    rate_limiter: Arc<KeyRateLimiter>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(from_fn_with_state(
        Authentication {
            resolver,
            rate_limiter,
        },
        authenticate,
    ))
}

async fn authenticate(
    State(authentication): State<Authentication>,
    mut request: Request,
    next: Next,
) -> Response {
    match resolve_request_key(&authentication, request.headers()).await {
        Ok(key) => {
            let span = tracing::Span::current();
            span.record("key_id", key.key_id.as_str());
            span.record("project", key.project_id.as_str());
            span.record("mode", key.mode.as_str());
            if let Err(error) = authentication.rate_limiter.check(&key) {
                return error.into_response();
            }
            request.extensions_mut().insert(key);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn resolve_request_key(
    authentication: &Authentication,
    headers: &HeaderMap,
) -> Result<AuthenticatedKey, ApiError> {
    let secret = api_key_from_headers(headers)?;
    let Some(prefix_mode) = mode_of_secret(&secret) else {
        return Err(ApiError::invalid_api_key(&secret));
    };
    let key = authentication
        .resolver
        .resolve(&secret)
        .await
        .map_err(|error| ApiError::internal(format!("resolving an API key: {error}")))?
        .ok_or_else(|| ApiError::invalid_api_key(&secret))?;
    if key.mode != prefix_mode {
        // The key's prefix promised the client one mode; serving it in the other would
        // mix test and live data.
        return Err(ApiError::internal(format!(
            "API key {} is stored as {} but its prefix says {}",
            key.key_id,
            key.mode.as_str(),
            prefix_mode.as_str()
        )));
    }
    Ok(key)
}

/// The secret key sent in `Authorization`, or the 401 to answer. Accepts
/// `Bearer <key>`, `Basic base64(<key>:<anything>)` and `Basic <key>`.
pub fn api_key_from_headers(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::no_api_key());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_api_key(""))?
        .trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if credentials.is_empty() {
        return Err(ApiError::no_api_key());
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(credentials.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::no_api_key());
    }
    // `Basic sk_…`: the key itself, which base64 cannot be (`_` is not in its alphabet).
    if credentials.contains('_') {
        return Ok(credentials.to_owned());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(credentials))
        .map_err(|_| ApiError::invalid_api_key(""))?;
    let decoded = String::from_utf8(decoded).map_err(|_| ApiError::invalid_api_key(""))?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    if user.is_empty() {
        return Err(ApiError::no_api_key());
    }
    Ok(user.to_owned())
}

/// The mode a well-formed secret key's prefix announces; `None` for anything that cannot
/// be one of our keys (which is then refused without a lookup).
fn mode_of_secret(secret: &str) -> Option<Mode> {
    let well_formed = secret.len() <= MAX_API_KEY_BYTES
        && secret
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if !well_formed {
        return None;
    }
    let rest = secret
        .strip_prefix("sk_")
        .or_else(|| secret.strip_prefix("rk_"))?;
    if rest
        .strip_prefix("test_")
        .is_some_and(|tail| !tail.is_empty())
    {
        Some(Mode::Test)
    } else if rest
        .strip_prefix("live_")
        .is_some_and(|tail| !tail.is_empty())
    {
        Some(Mode::Live)
    } else {
        None
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<AuthenticatedKey, ApiError> {
        parts
            .extensions
            .get::<AuthenticatedKey>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal("AuthenticatedKey extracted on a route without require_api_key")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_and_both_basic_forms_give_the_key() {
        let key = "sk_test_abcdefghijklmnop1234";
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        for value in [
            format!("Bearer {key}"),
            format!("bearer  {key}"),
            format!("Basic {encoded}"),
            format!("Basic {key}"),
        ] {
            assert_eq!(
                api_key_from_headers(&with_authorization(&value)).unwrap(),
                key,
                "{value}"
            );
        }
    }

    #[test]
    fn basic_without_padding_or_password_colon_still_works() {
        let key = "sk_live_xyz1";
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(key);
        assert_eq!(
            api_key_from_headers(&with_authorization(&format!("Basic {unpadded}"))).unwrap(),
            key
        );
    }

    #[test]
    fn missing_or_empty_credentials_are_no_api_key() {
        for headers in [
            HeaderMap::new(),
            with_authorization("Bearer "),
            with_authorization("Bearer"),
            with_authorization("Token sk_test_1"),
        ] {
            let error = api_key_from_headers(&headers).unwrap_err();
            assert_eq!(error.status().as_u16(), 401);
            assert!(
                error
                    .object()
                    .message
                    .starts_with("You did not provide an API key"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_prefix_decides_the_mode() {
        assert_eq!(mode_of_secret("sk_test_abc"), Some(Mode::Test));
        assert_eq!(mode_of_secret("sk_live_abc"), Some(Mode::Live));
        assert_eq!(mode_of_secret("rk_live_abc"), Some(Mode::Live));
        assert_eq!(mode_of_secret("pk_test_abc"), None);
        assert_eq!(mode_of_secret("sk_test_"), None);
        assert_eq!(mode_of_secret("sk_prod_abc"), None);
        assert_eq!(mode_of_secret("sk_test_a-b"), None);
        assert_eq!(
            mode_of_secret(&format!("sk_test_{}", "a".repeat(300))),
            None
        );
    }
}
