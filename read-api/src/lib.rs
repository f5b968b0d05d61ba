//! The HTTP surface: the Stripe-shaped `/v1` API (reads answered from the read model,
//! writes sent through `commands` with idempotency) and, later, the HTML pages (maud).
//!
//! Depends on `commands`, `projections`, `event-store` and `domain`; nothing depends on it
//! but the binary.

pub mod docs;
pub mod http;
pub mod keys;
pub mod pages;
pub mod v1;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::http::middleware::{apply_conventions, ConventionsConfig};
use crate::http::rate_limit::{KeyRateLimiter, RateLimitDefaults};
pub use crate::v1::ApiState;

/// Everything the server needs to build its routes.
pub struct ServerSettings {
    pub rate_limits: RateLimitDefaults,
    /// Where browsers reach the server (dashboard cookies are `Secure` when it is https).
    pub public_url: String,
    /// The customer portal's session life.
    pub portal: pages::portal::session::PortalSettings,
}

pub fn router(state: ApiState, settings: ServerSettings) -> Router {
    let resolver = Arc::new(keys::DatabaseKeys::new(state.pool.clone()));
    let limiter = Arc::new(KeyRateLimiter::new(settings.rate_limits));
    let api = http::auth::require_api_key(v1::routes(), resolver, limiter);
    let dashboard = pages::dashboard::routes(pages::dashboard::DashboardState::new(
        state.pool.clone(),
        &settings.public_url,
    ));
    let app = Router::new()
        .route("/healthz", get(health))
        // Browsers ask every origin for an icon; we have none (a 404 would be a console
        // error on every page).
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        // The API reference and the OpenAPI document: public, built from docs::registry.
        .merge(docs::routes())
        // Reached by the cardholder's browser, not with an API key.
        .route(
            "/v1/payment_intents/{id}/authenticate",
            get(pages::authenticate::start),
        )
        .route(
            "/v1/payment_intents/{id}/authenticate/return",
            post(pages::authenticate::finish),
        )
        // Hosted invoices: the token in the URL is the capability.
        .route("/invoices/{token}", get(pages::invoices::page))
        .route("/invoices/{token}/pdf", get(pages::invoices::pdf))
        // Hosted checkout: the session id is the capability; the return is trusted only
        // when the gateway signed it for that session.
        .route("/checkout/{id}", get(pages::checkout::page))
        .route(
            "/checkout/{id}/return",
            get(pages::checkout::finish).post(pages::checkout::finish),
        )
        // The customer portal: the token in the URL is the capability.
        .merge(pages::portal::routes())
        .merge(api)
        .layer(axum::Extension(settings.portal))
        .with_state(state)
        // Operators, signed in with a session cookie (pages::dashboard).
        .merge(dashboard);
    apply_conventions(app, &ConventionsConfig::default())
}

/// 200 when the database answers, 503 when it does not.
async fn health(State(state): State<ApiState>) -> (StatusCode, Json<serde_json::Value>) {
    match sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&state.pool)
        .await
    {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))),
        Err(error) => {
            tracing::warn!(%error, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "database unavailable"})),
            )
        }
    }
}
