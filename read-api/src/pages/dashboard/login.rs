//! Signing in and out. A wrong password and an unknown (or disabled) email get the same
//! answer, after the same work: an unknown email is checked against a decoy hash.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use commands::operators::{decoy_hash, verify_password};
use domain::operator::normalize_email;
use maud::html;

use super::session::{
    cookie, new_token, set_cookie, tokens_equal, Attempt, AttemptVerdict, ClientAddress, Session,
    LOGIN_CSRF_COOKIE, LOGIN_FORM_SECONDS, SESSION_COOKIE, SESSION_SECONDS,
};
use super::{unavailable, DashboardState};
use crate::pages::Page;

/// Bound on the fields a sign-in or sign-out form may post.
const MAX_FORM_FIELDS: usize = 10;
/// Bound on an email as typed.
const MAX_EMAIL_CHARS: usize = 254;

pub const WRONG_CREDENTIALS: &str = "That email and password do not match an operator.";
pub const TOO_MANY_ATTEMPTS: &str =
    "Too many failed sign-ins for this email or from this address. Try again in 15 minutes.";

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

fn parse(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .into_owned()
        .take(MAX_FORM_FIELDS)
        .collect()
}

/// The sign-in page with a fresh double-submit token (cookie and hidden field).
fn form_page(
    state: &DashboardState,
    status: StatusCode,
    email: &str,
    error: Option<&str>,
) -> Response {
    let page = Page::default();
    let csrf = new_token();
    let body = html! {
        h1 { "Sign in to the Calmony dashboard" }
        @if let Some(error) = error {
            p class="error" role="alert" id="login-error" { (error) }
        }
        form method="post" action="/dashboard/login" {
            input type="hidden" name="csrf_token" value=(csrf);
            label for="email" { "Email" }
            input id="email" name="email" type="email" autocomplete="username" required value=(email);
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
    };
    let mut response = page.respond(status, page.document("Sign in", body));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_CSRF_COOKIE,
            &csrf,
            LOGIN_FORM_SECONDS,
            state.secure_cookies,
        ),
    );
    response
}

fn forbidden() -> Response {
    Page::default().message(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form could not be checked (it may have expired). Go back, reload the page and try again.",
    )
}

/// `GET /dashboard/login`.
pub async fn form(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    // Already signed in: straight to the dashboard.
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if let Ok(Some(_)) = Session::find(&state.pool, token).await {
            return Redirect::to("/dashboard").into_response();
        }
    }
    form_page(&state, StatusCode::OK, "", None)
}

/// `POST /dashboard/login`: `csrf_token`, `email`, `password`.
pub async fn submit(
    State(state): State<DashboardState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = parse(&body);
    let posted_csrf = field(&fields, "csrf_token").unwrap_or_default();
    let cookie_csrf = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if !tokens_equal(&posted_csrf, cookie_csrf) {
        return forbidden();
    }
    let typed_email: String = field(&fields, "email")
        .unwrap_or_default()
        .chars()
        .take(MAX_EMAIL_CHARS)
        .collect();
    let email = normalize_email(&typed_email);
    let password = field(&fields, "password").unwrap_or_default();

    let attempt = match Attempt::begin(&state.pool, &email, &address).await {
        Ok(AttemptVerdict::Allowed(attempt)) => attempt,
        Ok(AttemptVerdict::Refused) => {
            tracing::warn!(%address, "dashboard sign-in refused: too many failures");
            return form_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                &typed_email,
                Some(TOO_MANY_ATTEMPTS),
            );
        }
        Err(error) => return unavailable(&Page::default(), error),
    };
    let operator: Option<(String, String)> = match sqlx::query_as(
        "SELECT id, password_hash FROM operators.operators WHERE email = $1 AND disabled_at IS NULL",
    )
    .bind(&email)
    .fetch_optional(&state.pool)
    .await
    {
        Ok(operator) => operator,
        Err(error) => return unavailable(&Page::default(), error),
    };
    // The same work whether or not the operator exists.
    let (operator_id, stored) = match operator {
        Some((id, hash)) => (Some(id), hash),
        None => (None, decoy_hash().to_string()),
    };
    let matches = tokio::task::spawn_blocking(move || verify_password(&stored, &password))
        .await
        .unwrap_or(false);
    let Some(operator_id) = operator_id.filter(|_| matches) else {
        tracing::info!(%address, "dashboard sign-in failed");
        return form_page(
            &state,
            StatusCode::UNAUTHORIZED,
            &typed_email,
            Some(WRONG_CREDENTIALS),
        );
    };
    let token = match attempt.succeeded(&state.pool).await {
        Ok(()) => Session::start(&state.pool, &operator_id).await,
        Err(error) => Err(error),
    };
    let token = match token {
        Ok(token) => token,
        Err(error) => return unavailable(&Page::default(), error),
    };
    tracing::info!(operator = %operator_id, "dashboard sign-in");
    let mut response = Redirect::to("/dashboard").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &token,
            SESSION_SECONDS,
            state.secure_cookies,
        ),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, "", 0, state.secure_cookies),
    );
    response
}

/// `POST /dashboard/logout`: `csrf_token`. Ends the session everywhere (the row goes).
pub async fn logout(
    State(state): State<DashboardState>,
    session: Session,
    body: Bytes,
) -> Response {
    let fields = parse(&body);
    if !session.csrf_ok(field(&fields, "csrf_token").as_deref()) {
        return forbidden();
    }
    if let Err(error) = session.end(&state.pool).await {
        return unavailable(&Page::default(), error);
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, state.secure_cookies),
    );
    response
}
