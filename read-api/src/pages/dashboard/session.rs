//! Who is signed in to the dashboard, and the checks around signing in.
//!
//! - **Session**: a random token in the `calmony_session` cookie (HttpOnly, SameSite=Strict,
//!   Path=/dashboard, Secure when the public URL is https); `dashboard_sessions` keeps its
//!   SHA-256, the operator, a CSRF token and an expiry 12 h after sign-in. A disabled
//!   operator's sessions stop working at once (the lookup joins the `operators` read model).
//! - **CSRF**: every form carries the session's token, checked on every POST; the sign-in
//!   form (no session yet) uses a double-submit cookie. Both compared in constant time.
//! - **Attempts**: failed sign-ins are counted per email and per client address over 15
//!   minutes in `dashboard_login_failures` (shared by every API process). An attempt is
//!   recorded *before* its password is checked, so concurrent guesses count too.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::DashboardState;

pub const SESSION_COOKIE: &str = "calmony_session";
pub const LOGIN_CSRF_COOKIE: &str = "calmony_login_csrf";
/// How long a session lasts from sign-in, whatever happens in between.
pub const SESSION_SECONDS: i64 = 12 * 60 * 60;
/// How long a sign-in form may be left open.
pub const LOGIN_FORM_SECONDS: i64 = 60 * 60;
/// Random characters of a session token and of a CSRF token (~256 bits).
const TOKEN_CHARS: usize = 43;
/// Failed sign-ins allowed per email within [`FAILURE_WINDOW_SECONDS`]; the next is refused.
pub const MAX_FAILURES_PER_EMAIL: i64 = 5;
/// Failed sign-ins allowed per client address within the window. Higher than per email:
/// colleagues share an office's address, and one guesser trying many emails is still
/// stopped.
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;
pub const FAILURE_WINDOW_SECONDS: i64 = 15 * 60;

pub fn new_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), TOKEN_CHARS)
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time equality of two tokens (lengths are not secret).
pub fn tokens_equal(left: &str, right: &str) -> bool {
    !left.is_empty() && bool::from(left.as_bytes().ct_eq(right.as_bytes()))
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value scoped to the dashboard.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path=/dashboard; Max-Age={max_age_seconds}; HttpOnly; SameSite=Strict{secure}"
    );
    // Names are constants and values our own alphanumeric tokens.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in operator, from the session cookie. Handlers that take it are reachable only
/// signed in: without a valid session the browser is sent to the sign-in page.
#[derive(Debug, Clone)]
pub struct Session {
    token_hash: Vec<u8>,
    pub operator_id: String,
    pub email: String,
    pub display_name: String,
    pub csrf_token: String,
}

impl Session {
    pub async fn find(pool: &PgPool, token: &str) -> Result<Option<Session>, sqlx::Error> {
        let hash = token_hash(token);
        let row: Option<(String, String, String, String)> = sqlx::query_as(
            "SELECT s.operator_id, o.email, o.display_name, s.csrf_token \
             FROM public.dashboard_sessions s \
             JOIN operators.operators o ON o.id = s.operator_id \
             WHERE s.token_hash = $1 AND s.expires_at > now() AND o.disabled_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(pool)
        .await?;
        Ok(
            row.map(|(operator_id, email, display_name, csrf_token)| Session {
                token_hash: hash,
                operator_id,
                email,
                display_name,
                csrf_token,
            }),
        )
    }

    /// Starts a session for `operator_id`: the token for the cookie.
    pub async fn start(pool: &PgPool, operator_id: &str) -> Result<String, sqlx::Error> {
        let token = new_token();
        // Expired sessions go as new ones come (bounded by the index on expires_at).
        sqlx::query("DELETE FROM public.dashboard_sessions WHERE expires_at <= now()")
            .execute(pool)
            .await?;
        sqlx::query(
            "INSERT INTO public.dashboard_sessions (token_hash, operator_id, csrf_token, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        )
        .bind(token_hash(&token))
        .bind(operator_id)
        .bind(new_token())
        .bind(SESSION_SECONDS as f64)
        .execute(pool)
        .await?;
        Ok(token)
    }

    pub async fn end(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM public.dashboard_sessions WHERE token_hash = $1")
            .bind(&self.token_hash)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Whether a posted form's `csrf_token` is this session's.
    pub fn csrf_ok(&self, posted: Option<&str>) -> bool {
        posted.is_some_and(|posted| tokens_equal(posted, &self.csrf_token))
    }
}

/// Why a page needing a session did not get one.
pub enum NoSession {
    SignIn,
    Unavailable,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::SignIn => Redirect::to("/dashboard/login").into_response(),
            NoSession::Unavailable => crate::pages::Page::default().message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Dashboard unavailable",
                "The dashboard cannot be shown right now. Please try again in a moment.",
            ),
        }
    }
}

impl FromRequestParts<DashboardState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &DashboardState,
    ) -> Result<Session, NoSession> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(NoSession::SignIn);
        };
        match Session::find(&state.pool, token).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(NoSession::SignIn),
            Err(error) => {
                tracing::warn!(%error, "dashboard session lookup failed");
                Err(NoSession::Unavailable)
            }
        }
    }
}

/// The client's address as sign-in limits count it: the peer of the connection (a proxy's
/// forwarding headers are not trusted), or one shared bucket when unknown.
pub struct ClientAddress(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip().to_string())
                .unwrap_or_else(|| "unknown".to_string()),
        ))
    }
}

/// One sign-in attempt, recorded as a failure until it succeeds.
pub struct Attempt {
    email_subject: String,
    address_failure_id: i64,
}

pub enum AttemptVerdict {
    /// Within the limits: check the password.
    Allowed(Attempt),
    /// Too many failures for this email or address: refuse without checking.
    Refused,
}

impl Attempt {
    /// Records the attempt for `email` (normalized) from `address`, then counts.
    pub async fn begin(
        pool: &PgPool,
        email: &str,
        address: &str,
    ) -> Result<AttemptVerdict, sqlx::Error> {
        let email_subject: String = format!("email:{email}").chars().take(300).collect();
        let address_subject = format!("ip:{address}");
        sqlx::query(
            "DELETE FROM public.dashboard_login_failures \
             WHERE failed_at < now() - make_interval(secs => $1)",
        )
        .bind(FAILURE_WINDOW_SECONDS as f64)
        .execute(pool)
        .await?;
        let recorded: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO public.dashboard_login_failures (subject) \
             SELECT * FROM UNNEST($1::text[]) RETURNING id, subject",
        )
        .bind([&email_subject, &address_subject])
        .fetch_all(pool)
        .await?;
        let ids: Vec<i64> = recorded.iter().map(|(id, _)| *id).collect();
        let address_failure_id = recorded
            .iter()
            .find(|(_, subject)| *subject == address_subject)
            .map_or(0, |(id, _)| *id);
        let (by_email, by_address): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE subject = $1), count(*) FILTER (WHERE subject = $2) \
             FROM public.dashboard_login_failures \
             WHERE subject IN ($1, $2) AND failed_at >= now() - make_interval(secs => $3)",
        )
        .bind(&email_subject)
        .bind(&address_subject)
        .bind(FAILURE_WINDOW_SECONDS as f64)
        .fetch_one(pool)
        .await?;
        // This attempt is among those counted.
        if by_email > MAX_FAILURES_PER_EMAIL || by_address > MAX_FAILURES_PER_ADDRESS {
            // A refused attempt does not extend the lockout.
            sqlx::query("DELETE FROM public.dashboard_login_failures WHERE id = ANY($1)")
                .bind(&ids)
                .execute(pool)
                .await?;
            return Ok(AttemptVerdict::Refused);
        }
        Ok(AttemptVerdict::Allowed(Attempt {
            email_subject,
            address_failure_id,
        }))
    }

    /// The password was right: the email's failures are forgiven, and this attempt with them.
    pub async fn succeeded(self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM public.dashboard_login_failures WHERE subject = $1 OR id = $2")
            .bind(&self.email_subject)
            .bind(self.address_failure_id)
            .execute(pool)
            .await?;
        Ok(())
    }
}
