//! The Stripe-shaped `/v1` API: writes run commands (with idempotency), reads answer from
//! the API read model.

pub mod billing_portal;
pub mod billing_write;
pub mod checkout_sessions;
pub mod customers;
pub mod events;
pub mod invoice_items;
pub mod invoices;
pub mod payment_intents;
pub mod payment_methods;
pub mod prices;
pub mod products;
pub mod read_model;
pub mod refunds;
pub mod subscriptions;
pub mod tax_rates;
pub mod test_clocks;
pub mod webhook_endpoints;
pub mod write;

use axum::routing::{get, post};
use axum::Router;
use commands::idempotency::IdempotencyStore;
use commands::payments::PaymentService;
use projections::ProjectionRuntime;
use sqlx::PgPool;

use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::Params;
use read_model::Scope;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub payments: PaymentService,
    pub idempotency: IdempotencyStore,
    pub projections: ProjectionRuntime,
    /// Where webhook endpoints may point (checked when a URL is set).
    pub url_guard: webhook_relay::UrlGuard,
    /// Subscriptions, invoices, renewals (commands::billing).
    pub billing: commands::billing::BillingService,
    /// Wakes this process's billing runner (a test clock was asked to advance).
    pub billing_wake: std::sync::Arc<tokio::sync::Notify>,
}

pub fn scope(key: &AuthenticatedKey) -> Scope {
    Scope {
        project: key.project_id.clone(),
        livemode: key.mode.is_live(),
    }
}

/// The query string of a GET, parsed with the same rules as form bodies.
pub fn query_params(query: Option<&str>) -> Result<Params, ApiError> {
    Params::parse(&[query.unwrap_or("").as_bytes()])
}

/// `GET /v1/<resource>/{id}`: one object of `kind` from the read model, in the caller's
/// scope, with `expand[]`. `ignored` names parameters Stripe accepts there that change
/// nothing here (a PaymentIntent's `client_secret`).
pub async fn retrieve_object(
    state: &ApiState,
    key: &AuthenticatedKey,
    kind: &'static str,
    id: &str,
    query: Option<&str>,
    ignored: &[&str],
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mut params = query_params(query)?;
    let expand = params.take_expand()?;
    for name in ignored {
        params.take_string(name)?;
    }
    params.reject_unknown()?;
    let scope = scope(key);
    let mut object = read_model::require_object(&state.pool, &scope, kind, id).await?;
    read_model::expand(&state.pool, &scope, &mut object, &expand).await?;
    Ok(axum::Json(object))
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/customers",
            post(customers::create).get(customers::list),
        )
        .route(
            "/v1/customers/{id}",
            get(customers::retrieve)
                .post(customers::update)
                .delete(customers::delete),
        )
        .route(
            "/v1/customers/{id}/payment_methods",
            get(customers::list_payment_methods),
        )
        .route(
            "/v1/payment_methods",
            post(payment_methods::create).get(payment_methods::list),
        )
        .route(
            "/v1/payment_methods/{id}",
            get(payment_methods::retrieve).post(payment_methods::update),
        )
        .route(
            "/v1/payment_methods/{id}/attach",
            post(payment_methods::attach),
        )
        .route(
            "/v1/payment_methods/{id}/detach",
            post(payment_methods::detach),
        )
        .route(
            "/v1/payment_intents",
            post(payment_intents::create).get(payment_intents::list),
        )
        .route(
            "/v1/payment_intents/{id}",
            get(payment_intents::retrieve).post(payment_intents::update),
        )
        .route(
            "/v1/payment_intents/{id}/confirm",
            post(payment_intents::confirm),
        )
        .route(
            "/v1/payment_intents/{id}/capture",
            post(payment_intents::capture),
        )
        .route(
            "/v1/payment_intents/{id}/cancel",
            post(payment_intents::cancel),
        )
        .route("/v1/refunds", post(refunds::create).get(refunds::list))
        .route("/v1/refunds/{id}", get(refunds::retrieve))
        .route("/v1/charges", get(refunds::list_charges))
        .route("/v1/charges/{id}", get(refunds::retrieve_charge))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::retrieve))
        .route("/v1/events/{id}/redeliver", post(events::redeliver))
        .route(
            "/v1/webhook_endpoints",
            post(webhook_endpoints::create).get(webhook_endpoints::list),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhook_endpoints::retrieve)
                .post(webhook_endpoints::update)
                .delete(webhook_endpoints::delete),
        )
        .route(
            "/v1/webhook_endpoints/{id}/deliveries",
            get(webhook_endpoints::deliveries),
        )
        .merge(catalog_routes())
        .merge(invoice_routes())
        .merge(subscription_routes())
        .merge(checkout_routes())
        .route("/v1/billing_portal/sessions", post(billing_portal::create))
}

/// Checkout Sessions and their test helper.
fn checkout_routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/checkout/sessions",
            post(checkout_sessions::create).get(checkout_sessions::list),
        )
        .route(
            "/v1/checkout/sessions/{id}",
            get(checkout_sessions::retrieve),
        )
        .route(
            "/v1/checkout/sessions/{id}/expire",
            post(checkout_sessions::expire),
        )
        .route(
            "/v1/checkout/sessions/{id}/line_items",
            get(checkout_sessions::line_items),
        )
        .route(
            "/v1/test_helpers/checkout/sessions/{id}/complete",
            post(checkout_sessions::complete_for_test),
        )
}

/// Subscriptions and test clocks.
fn subscription_routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/subscriptions",
            post(subscriptions::create).get(subscriptions::list),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::retrieve)
                .post(subscriptions::update)
                .delete(subscriptions::cancel),
        )
        .route(
            "/v1/test_helpers/test_clocks",
            post(test_clocks::create).get(test_clocks::list),
        )
        .route(
            "/v1/test_helpers/test_clocks/{id}",
            get(test_clocks::retrieve).delete(test_clocks::delete),
        )
        .route(
            "/v1/test_helpers/test_clocks/{id}/advance",
            post(test_clocks::advance),
        )
}

/// Invoices and invoice items.
fn invoice_routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/invoices", post(invoices::create).get(invoices::list))
        .route(
            "/v1/invoices/{id}",
            get(invoices::retrieve)
                .post(invoices::update)
                .delete(invoices::delete),
        )
        .route("/v1/invoices/{id}/finalize", post(invoices::finalize))
        .route("/v1/invoices/{id}/pay", post(invoices::pay))
        .route("/v1/invoices/{id}/void", post(invoices::void))
        .route(
            "/v1/invoices/{id}/mark_uncollectible",
            post(invoices::mark_uncollectible),
        )
        .route("/v1/invoices/{id}/lines", get(invoices::lines))
        .route(
            "/v1/invoiceitems",
            post(invoice_items::create).get(invoice_items::list),
        )
        .route(
            "/v1/invoiceitems/{id}",
            get(invoice_items::retrieve).delete(invoice_items::delete),
        )
}

/// The billing catalog: products, prices, tax rates.
fn catalog_routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/products", post(products::create).get(products::list))
        .route(
            "/v1/products/{id}",
            get(products::retrieve)
                .post(products::update)
                .delete(products::delete),
        )
        .route("/v1/prices", post(prices::create).get(prices::list))
        .route(
            "/v1/prices/{id}",
            get(prices::retrieve).post(prices::update),
        )
        .route(
            "/v1/tax_rates",
            post(tax_rates::create).get(tax_rates::list),
        )
        .route(
            "/v1/tax_rates/{id}",
            get(tax_rates::retrieve).post(tax_rates::update),
        )
}
