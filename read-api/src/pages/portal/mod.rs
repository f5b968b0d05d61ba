//! The customer portal (`billing_portal.session.url`, `/portal/{token}`): one customer's
//! details, subscriptions, invoices and cards, and what they may change.
//!
//! Reached without signing in: the token in the URL is the capability ([`session`]), scoped
//! to one customer of one project and mode, and short-lived; an unknown token gets a 404
//! page, an expired one a 410. Every form carries the session's CSRF token, checked in
//! constant time before anything is read from the form. Every write goes through the same
//! commands as the API (`BillingService`, `CustomerCommand`) with `portal:<bps_…>` as the
//! actor in the events' metadata, after checking that what the form names (a
//! subscription, a card) is this customer's. Pages are read from the `api` read model and
//! sent with the pages' CSP nonce, `Cache-Control: no-store`, `frame-ancestors 'none'` and
//! `Referrer-Policy: no-referrer` (the URL holds the token). Adding a card uses a hosted
//! checkout session in `setup` mode (`pages::checkout`), which returns here.

pub mod session;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use commands::billing::{SubscriptionUpdate, Written};
use commands::checkout::{CheckoutService, SessionRequest};
use commands::execute::NoExtraWork;
use commands::payments::{Actor, PaymentError};
use domain::checkout_session::SessionMode;
use domain::customer::{Customer, CustomerCommand, CustomerFields};
use domain::money::Currency;
use domain::payment_method::PaymentMethod;
use domain::subscription::{Subscription, SubscriptionChanges};
use event_store::store::Appended;
use invoice_pdf::format_money;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use self::session::{Lookup, PortalSession};
use super::dashboard::overview::objects;
use super::Page;
use crate::http::middleware::RequestId;
use crate::v1::read_model::Scope;
use crate::v1::write::READ_YOUR_WRITES_TIMEOUT_MS;
use crate::v1::ApiState;

/// Subscriptions, invoices and cards listed, each.
const MAX_ITEMS: i64 = 20;
/// Fields read from a posted form (ours have at most five).
const MAX_FORM_FIELDS: usize = 20;
/// Longest name, email or phone accepted from the details form.
const MAX_DETAIL_CHARS: usize = 500;

/// The portal's routes (the API key-less part); `/v1/billing_portal/sessions` is in `v1`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/portal/{token}", get(overview))
        .route("/portal/{token}/customer", post(update_customer))
        .route("/portal/{token}/subscription", post(change_subscription))
        .route("/portal/{token}/payment_method", post(set_default_method))
        .route("/portal/{token}/card", post(add_card))
}

fn not_found(page: &Page) -> Response {
    page.message(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This billing portal link is not valid. Return to the site you came from and open the portal again.",
    )
}

fn expired(page: &Page) -> Response {
    page.message(
        StatusCode::GONE,
        "Link expired",
        "This billing portal link has expired. Return to the site you came from and open the portal again.",
    )
}

fn unavailable(page: &Page, error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "portal page failed");
    page.message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Portal unavailable",
        "The billing portal cannot be shown right now. Please try again in a moment.",
    )
}

fn forbidden(page: &Page) -> Response {
    page.message(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form is no longer valid. Reload the page and try again.",
    )
}

/// The session a token grants, or the page to answer with.
async fn session_of(state: &ApiState, page: &Page, token: &str) -> Result<PortalSession, Response> {
    match PortalSession::find(&state.pool, token).await {
        Ok(Lookup::Found(session)) => Ok(session),
        Ok(Lookup::Expired) => Err(expired(page)),
        Ok(Lookup::Unknown) => Err(not_found(page)),
        Err(error) => Err(unavailable(page, error)),
    }
}

/// A posted form: refused unless it carries the session's CSRF token.
struct Form(Vec<(String, String)>);

impl Form {
    fn checked(session: &PortalSession, body: &Bytes) -> Option<Form> {
        let fields: Vec<(String, String)> = form_urlencoded::parse(body)
            .into_owned()
            .take(MAX_FORM_FIELDS)
            .collect();
        let form = Form(fields);
        session.csrf_ok(form.get("csrf_token")).then_some(form)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn scope_of(session: &PortalSession) -> Scope {
    Scope {
        project: session.project.clone(),
        livemode: session.livemode,
    }
}

/// What the last write did, shown once after the redirect (a fixed set: nothing posted is
/// echoed back).
#[derive(Debug, Deserialize)]
pub struct Notice {
    done: Option<String>,
}

fn notice_text(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "details" => "Your details were saved.",
        "canceled" => "The subscription was canceled.",
        "cancel_scheduled" => "The subscription will end at the end of its current period.",
        "resumed" => "The subscription will continue: the cancellation was withdrawn.",
        "default_method" => "Your default card was changed.",
        _ => return None,
    })
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn date(timestamp: Option<i64>) -> String {
    timestamp
        .and_then(|timestamp| chrono::DateTime::from_timestamp(timestamp, 0))
        .map(|time| time.format("%-d %B %Y").to_string())
        .unwrap_or_default()
}

/// `GET /portal/{token}`.
async fn overview(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    let page = Page::default();
    let session = match session_of(&state, &page, &token).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let scope = scope_of(&session);
    let pool = &state.pool;
    let customer_id = session.customer.as_str();
    let loaded = tokio::try_join!(
        customer_object(pool, &scope, customer_id),
        objects(pool, &scope, "subscription", Some(customer_id), MAX_ITEMS),
        objects(pool, &scope, "invoice", Some(customer_id), MAX_ITEMS),
        objects(pool, &scope, "payment_method", Some(customer_id), MAX_ITEMS),
        merchant_name(pool, &session.project),
    );
    let (customer, subscriptions, invoices, methods, merchant) = match loaded {
        Ok((Some(customer), subscriptions, invoices, methods, merchant)) => {
            (customer, subscriptions, invoices, methods, merchant)
        }
        Ok((None, ..)) => return not_found(&page),
        Err(error) => return unavailable(&page, error),
    };
    let base = format!("/portal/{token}");
    let csrf = session.csrf_token.as_str();
    let default_method = text(&customer["invoice_settings"]["default_payment_method"]);
    let body = html! {
        style nonce=(page.nonce()) { (STYLE) }
        header {
            p.note { (merchant) }
            h1 { "Billing" }
            @if let Some(return_url) = &session.return_url {
                p { a #return href=(return_url) { "← Return to " (merchant) } }
            }
        }
        @if let Some(notice) = notice_text(notice.done.as_deref()) {
            p #notice role="status" { (notice) }
        }
        section #details aria-labelledby="details-title" {
            h2 #details-title { "Your details" }
            dl {
                dt { "Name" } dd #customer-name { (text(&customer["name"])) }
                dt { "Email" } dd #customer-email { (text(&customer["email"])) }
                dt { "Phone" } dd #customer-phone { (text(&customer["phone"])) }
            }
            form method="post" action=(format!("{base}/customer")) {
                input type="hidden" name="csrf_token" value=(csrf);
                label for="name" { "Name" }
                input #name name="name" type="text" autocomplete="name" maxlength=(MAX_DETAIL_CHARS) value=(text(&customer["name"]));
                label for="email" { "Email" }
                input #email name="email" type="email" autocomplete="email" maxlength=(MAX_DETAIL_CHARS) value=(text(&customer["email"]));
                label for="phone" { "Phone" }
                input #phone name="phone" type="tel" autocomplete="tel" maxlength=(MAX_DETAIL_CHARS) value=(text(&customer["phone"]));
                button type="submit" { "Save details" }
            }
        }
        section #subscriptions aria-labelledby="subscriptions-title" {
            h2 #subscriptions-title { "Subscriptions" }
            @if subscriptions.is_empty() { p { "No subscriptions." } }
            @for subscription in &subscriptions {
                (subscription_card(&base, csrf, subscription))
            }
        }
        section #invoices aria-labelledby="invoices-title" {
            h2 #invoices-title { "Invoices" }
            @if invoices.iter().all(|invoice| invoice["hosted_invoice_url"].is_null()) {
                p { "No invoices." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Date" }
                        th scope="col" { "Number" }
                        th scope="col" { "Status" }
                        th scope="col" class="amount" { "Total" }
                        th scope="col" { "Documents" }
                    } }
                    tbody {
                        // Drafts are the merchant's work in progress, not the customer's.
                        @for invoice in invoices.iter().filter(|invoice| !invoice["hosted_invoice_url"].is_null()) {
                            tr data-invoice=(text(&invoice["id"])) {
                                td { (date(invoice["created"].as_i64())) }
                                td { (text(&invoice["number"])) }
                                td { (text(&invoice["status"])) }
                                td class="amount" { (format_money(invoice["total"].as_i64().unwrap_or(0), text(&invoice["currency"]))) }
                                td {
                                    a href=(text(&invoice["hosted_invoice_url"])) { "View" }
                                    @if let Some(pdf) = invoice["invoice_pdf"].as_str() {
                                        " · " a href=(pdf) { "PDF" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #payment-methods aria-labelledby="methods-title" {
            h2 #methods-title { "Payment methods" }
            @if methods.is_empty() { p { "No saved cards." } }
            ul {
                @for method in &methods {
                    @let id = text(&method["id"]);
                    li data-payment-method=(id) {
                        (text(&method["card"]["brand"])) " •••• " (text(&method["card"]["last4"]))
                        " expires " (method["card"]["exp_month"]) "/" (method["card"]["exp_year"])
                        @if id == default_method {
                            " " strong.default { "Default" }
                        } @else {
                            form.inline method="post" action=(format!("{base}/payment_method")) {
                                input type="hidden" name="csrf_token" value=(csrf);
                                input type="hidden" name="payment_method" value=(id);
                                input type="hidden" name="action" value="set_default";
                                button type="submit" { "Make default" }
                            }
                        }
                    }
                }
            }
            form method="post" action=(format!("{base}/card")) {
                input type="hidden" name="csrf_token" value=(csrf);
                button #add-card type="submit" { "Add a card" }
            }
            p.note { "You will enter your card details on our payment provider's secure page." }
        }
    };
    page.respond(StatusCode::OK, page.document("Billing", body))
}

const STYLE: &str = "body{max-width:48rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem;border-bottom:1px solid #ddd}\
td.amount,th.amount{text-align:right}label{display:block;margin-top:.6rem}\
input[type=text],input[type=email],input[type=tel]{font-size:1rem;padding:.4rem;width:100%;max-width:24rem}\
form.inline{display:inline}form.inline button{margin:0 0 0 .5rem;padding:.2rem .6rem}\
article{border:1px solid #ccd;padding:.5rem 1rem;margin:.5rem 0}#notice{font-weight:bold}";

fn subscription_card(base: &str, csrf: &str, subscription: &Value) -> Markup {
    let id = text(&subscription["id"]);
    let status = text(&subscription["status"]);
    let item = &subscription["items"]["data"][0];
    let price = &item["price"];
    let product = text(&price["product"]);
    let period_end = item["current_period_end"].as_i64();
    let live = !matches!(status, "canceled" | "incomplete_expired");
    let pending_cancel = subscription["cancel_at_period_end"] == true;
    let action = |name: &str, label: &str| {
        html! {
            form.inline method="post" action=(format!("{base}/subscription")) {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="subscription" value=(id);
                input type="hidden" name="action" value=(name);
                button type="submit" { (label) }
            }
        }
    };
    html! {
        article data-subscription=(id) {
            h3 {
                @if let Some(description) = subscription["description"].as_str() { (description) }
                @else { "Subscription " code { (product) } }
            }
            p {
                "Status: " span.status { (status.replace('_', " ")) }
                @if let Some(amount) = price["unit_amount"].as_i64() {
                    " · " (format_money(amount * item["quantity"].as_i64().unwrap_or(1), text(&price["currency"])))
                    @if let Some(interval) = price["recurring"]["interval"].as_str() { " / " (interval) }
                }
            }
            @if live {
                @if pending_cancel {
                    p.pending-cancel { "Ends on " (date(period_end)) "." }
                    (action("resume", "Keep my subscription"))
                } @else {
                    @if period_end.is_some() { p { "Renews on " (date(period_end)) "." } }
                    (action("cancel_at_period_end", "Cancel at period end"))
                    (action("cancel_now", "Cancel now"))
                }
            } @else if let Some(ended) = subscription["ended_at"].as_i64() {
                p { "Ended on " (date(Some(ended))) "." }
            }
        }
    }
}

async fn customer_object(
    pool: &sqlx::PgPool,
    scope: &Scope,
    id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT body FROM api.objects \
         WHERE id = $1 AND project = $2 AND livemode = $3 AND object = 'customer' AND NOT deleted",
    )
    .bind(id)
    .bind(&scope.project)
    .bind(scope.livemode)
    .fetch_optional(pool)
    .await
}

/// The project's name as its customers know it.
async fn merchant_name(pool: &sqlx::PgPool, project: &str) -> Result<String, sqlx::Error> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT name FROM api_keys.projects WHERE id = $1")
            .bind(project)
            .fetch_optional(pool)
            .await?;
    Ok(name.unwrap_or_default())
}

/// Waits until the read model shows what a write appended (so the page after the redirect
/// shows it too).
async fn settle(state: &ApiState, appended: &[Appended]) {
    if let Some(last) = appended.last() {
        if let Err(error) = state
            .projections
            .wait_until_applied(
                projections::api_objects::NAME,
                last.cursor(),
                Duration::from_millis(READ_YOUR_WRITES_TIMEOUT_MS),
            )
            .await
        {
            tracing::warn!(?error, "portal write not readable yet");
        }
    }
}

/// 303 back to the portal with what was done.
fn back(token: &str, done: &str) -> Response {
    let page = Page::default();
    let mut response = page.respond(
        StatusCode::SEE_OTHER,
        page.document("Saved", html! { p { "Saved." } }),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/portal/{token}?done={done}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A write the rules refused (a 400 page with the reason), or one that failed.
fn refused(page: &Page, token: &str, error: PaymentError) -> Response {
    let (status, message) = match error {
        PaymentError::InvalidRequest(message) => (StatusCode::BAD_REQUEST, message),
        PaymentError::NotFound { .. } => return not_found(page),
        other => {
            tracing::warn!(error = %other, "portal write failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong. Please try again.".to_string(),
            )
        }
    };
    let body = html! {
        h1 { "Not done" }
        p #error { (message) }
        p { a href=(format!("/portal/{token}")) { "Back to billing" } }
    };
    page.respond(status, page.document("Not done", body))
}

/// What a form names must be this customer's: anything else is answered as unknown.
fn owned_by(session: &PortalSession, owner: Option<&str>) -> Result<(), PaymentError> {
    if owner == Some(session.customer.as_str()) {
        Ok(())
    } else {
        Err(PaymentError::NotFound {
            kind: "object",
            id: String::new(),
        })
    }
}

/// `POST /portal/{token}/customer`: name, email and phone (empty clears).
async fn update_customer(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Response {
    let page = Page::default();
    let session = match session_of(&state, &page, &token).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let Some(form) = Form::checked(&session, &body) else {
        return forbidden(&page);
    };
    let field = |name: &str| -> Result<Option<Option<String>>, PaymentError> {
        let Some(value) = form.get(name) else {
            return Ok(None);
        };
        let value = value.trim();
        if value.chars().count() > MAX_DETAIL_CHARS {
            return Err(PaymentError::InvalidRequest(format!(
                "The {name} is too long (at most {MAX_DETAIL_CHARS} characters)."
            )));
        }
        Ok(Some((!value.is_empty()).then(|| value.to_string())))
    };
    let fields = match (field("name"), field("email"), field("phone")) {
        (Ok(name), Ok(email), Ok(phone)) => CustomerFields {
            name,
            email,
            phone,
            ..CustomerFields::default()
        },
        (Err(error), ..) | (_, Err(error), _) | (.., Err(error)) => {
            return refused(&page, &token, error)
        }
    };
    let actor = session.actor(&request_id);
    let updated = state
        .payments
        .bus()
        .execute::<Customer>(
            &session.customer,
            CustomerCommand::Update {
                fields,
                at: chrono::Utc::now().timestamp(),
            },
            &(),
            &actor.metadata(),
        )
        .await;
    match updated {
        Ok(executed) => {
            settle(&state, &executed.appended).await;
            back(&token, "details")
        }
        Err(error) => refused(&page, &token, error.into()),
    }
}

/// `POST /portal/{token}/subscription`: `subscription`, `action` = `cancel_now`,
/// `cancel_at_period_end` or `resume`.
async fn change_subscription(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Response {
    let page = Page::default();
    let session = match session_of(&state, &page, &token).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let Some(form) = Form::checked(&session, &body) else {
        return forbidden(&page);
    };
    let subscription_id = form.get("subscription").unwrap_or_default();
    let actor = session.actor(&request_id);
    let done = match change(
        &state,
        &session,
        &actor,
        subscription_id,
        form.get("action"),
    )
    .await
    {
        Ok(done) => done,
        Err(error) => return refused(&page, &token, error),
    };
    back(&token, done)
}

async fn change(
    state: &ApiState,
    session: &PortalSession,
    actor: &Actor,
    subscription_id: &str,
    action: Option<&str>,
) -> Result<&'static str, PaymentError> {
    let (subscription, _) = state
        .payments
        .load_owned::<Subscription>(actor, "subscription", subscription_id)
        .await?;
    owned_by(session, Some(subscription.customer.as_str()))?;
    let mut written = Written::new(None);
    let flag = |cancel_at_period_end: bool| SubscriptionUpdate {
        changes: SubscriptionChanges {
            cancel_at_period_end: Some(cancel_at_period_end),
            ..SubscriptionChanges::default()
        },
        ..SubscriptionUpdate::default()
    };
    let done = match action {
        Some("cancel_now") => {
            state
                .billing
                .cancel_subscription(
                    actor,
                    subscription_id,
                    Some("cancellation_requested".into()),
                    &mut written,
                )
                .await?;
            "canceled"
        }
        Some("cancel_at_period_end") => {
            state
                .billing
                .update_subscription(actor, subscription_id, flag(true), &mut written)
                .await?;
            "cancel_scheduled"
        }
        Some("resume") => {
            state
                .billing
                .update_subscription(actor, subscription_id, flag(false), &mut written)
                .await?;
            "resumed"
        }
        _ => return Err(PaymentError::InvalidRequest("Unknown action.".into())),
    };
    settle(state, &written.appended).await;
    Ok(done)
}

/// `POST /portal/{token}/payment_method`: `payment_method`, `action` = `set_default`.
async fn set_default_method(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Response {
    let page = Page::default();
    let session = match session_of(&state, &page, &token).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let Some(form) = Form::checked(&session, &body) else {
        return forbidden(&page);
    };
    if form.get("action") != Some("set_default") {
        return refused(
            &page,
            &token,
            PaymentError::InvalidRequest("Unknown action.".into()),
        );
    }
    let method_id = form.get("payment_method").unwrap_or_default();
    let actor = session.actor(&request_id);
    let result: Result<Vec<Appended>, PaymentError> = async {
        let (method, _) = state
            .payments
            .load_owned::<PaymentMethod>(&actor, "payment_method", method_id)
            .await?;
        owned_by(&session, method.customer.as_deref())?;
        if !method.usable() {
            return Err(PaymentError::InvalidRequest(
                "This card can no longer be used.".into(),
            ));
        }
        let executed = state
            .payments
            .bus()
            .execute::<Customer>(
                &session.customer,
                CustomerCommand::Update {
                    fields: CustomerFields {
                        default_payment_method: Some(Some(method_id.to_string())),
                        ..CustomerFields::default()
                    },
                    at: chrono::Utc::now().timestamp(),
                },
                &(),
                &actor.metadata(),
            )
            .await?;
        Ok(executed.appended)
    }
    .await;
    match result {
        Ok(appended) => {
            settle(&state, &appended).await;
            back(&token, "default_method")
        }
        Err(error) => refused(&page, &token, error),
    }
}

/// `POST /portal/{token}/card`: a hosted checkout session in `setup` mode for this
/// customer, which saves the card on the gateway's hosted page and returns to the portal.
///
/// The session's `success_url` and `cancel_url` are this portal's URL, so the portal token
/// is written into the checkout session's event: the one place it is kept in clear,
/// readable only by the merchant's key (who can make portal sessions anyway) and useless
/// once the portal session expires.
async fn add_card(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Response {
    let page = Page::default();
    let session = match session_of(&state, &page, &token).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    if Form::checked(&session, &body).is_none() {
        return forbidden(&page);
    }
    let scope = scope_of(&session);
    // The card check's currency: the customer's latest subscription's, else pounds.
    let currency = objects(
        &state.pool,
        &scope,
        "subscription",
        Some(&session.customer),
        1,
    )
    .await
    .ok()
    .and_then(|latest| {
        latest
            .first()
            .and_then(|subscription| subscription["currency"].as_str().map(str::to_string))
    })
    .and_then(|code| Currency::parse(&code).ok())
    .unwrap_or(Currency::GBP);
    let portal_url = format!(
        "{}/portal/{token}",
        state.payments.public_url().trim_end_matches('/')
    );
    let actor = session.actor(&request_id);
    let checkout = CheckoutService::new(state.billing.clone());
    let created = checkout
        .create(
            &actor,
            SessionRequest {
                mode: SessionMode::Setup,
                line_items: Vec::new(),
                currency: Some(currency),
                customer: Some(session.customer.clone()),
                customer_email: None,
                success_url: portal_url.clone(),
                cancel_url: Some(portal_url),
                expires_at: None,
                metadata: Default::default(),
            },
            NoExtraWork,
        )
        .await;
    let executed = match created {
        Ok(executed) => executed,
        Err(commands::payments::FinalStepError::Payment(error)) => {
            return refused(&page, &token, error)
        }
        Err(commands::payments::FinalStepError::Step(error)) => return unavailable(&page, error),
    };
    settle(&state, &executed.appended).await;
    let mut response = page.respond(
        StatusCode::SEE_OTHER,
        page.document("Add a card", html! { p { "Redirecting…" } }),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/checkout/{}", executed.aggregate.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.into_response()
}
