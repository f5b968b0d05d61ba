//! The hosted checkout page (`session.url`): the order and a button that takes the
//! customer to the card gateway's hosted payment page with a signed form, and the return
//! from it, where the gateway's signed result completes the session (see
//! `commands::checkout` for what makes a result trusted).
//!
//! Reached without an API key: the session id is unguessable, the page shows only the
//! order, and the return records nothing unless the gateway signed it for this session.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use commands::checkout::{Completed, ReturnError};
use commands::payments::PaymentError;
use domain::checkout_session::{CheckoutSession, SessionMode, SessionStatus};
use invoice_pdf::format_money;
use maud::html;

use super::Page;
use crate::v1::checkout_sessions::service;
use crate::v1::write::READ_YOUR_WRITES_TIMEOUT_MS;
use crate::v1::ApiState;

/// The hosted page's signed result is about 40 fields; anything far larger is not one.
const MAX_RETURN_BYTES: usize = 32 * 1024;

fn not_found(page: &Page) -> Response {
    page.message(
        StatusCode::NOT_FOUND,
        "Checkout not found",
        "This checkout page does not exist.",
    )
}

fn total_text(session: &CheckoutSession) -> String {
    let currency = session
        .currency()
        .map(|currency| currency.as_str().to_string())
        .unwrap_or_default();
    format_money(session.amount_total(), &currency)
}

/// GET: the order, and the button to pay.
pub async fn page(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let page = Page::default();
    let checkout = service(&state);
    let Ok(Some((session, actor))) = checkout.session_for_browser(&id).await else {
        return not_found(&page);
    };
    match session.status {
        SessionStatus::Complete => {
            return page.message(
                StatusCode::OK,
                "Already paid",
                "This checkout is complete. Thank you.",
            )
        }
        SessionStatus::Expired => {
            return page.message(
                StatusCode::GONE,
                "Checkout expired",
                "This checkout has expired. Please return to the shop and start again.",
            )
        }
        SessionStatus::Open => {}
    }
    if session.return_accepted {
        return page.message(
            StatusCode::OK,
            "Payment received",
            "Your payment is being recorded. You can close this page.",
        );
    }
    let form = match checkout.hosted_form(&actor, &session) {
        Ok(form) => form,
        Err(error) => {
            tracing::error!(checkout_session = %id, %error, "cannot build the hosted form");
            return page.message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Payments unavailable",
                "Card payments are not available right now. Please try again later.",
            );
        }
    };
    let button = match session.mode {
        SessionMode::Payment => format!("Pay {}", total_text(&session)),
        SessionMode::Subscription => format!("Subscribe for {}", total_text(&session)),
        SessionMode::Setup => "Save card".to_string(),
    };
    let body = html! {
        h1 { "Checkout" }
        @if let Some(email) = &session.customer_email {
            p.note { "For " span #customer-email { (email) } }
        }
        @if !session.line_items.is_empty() {
            table #order {
                thead { tr { th { "Item" } th { "Qty" } th { "Amount" } } }
                tbody {
                    @for line in &session.line_items {
                        tr {
                            td.product-name { (line.product_name) }
                            td { (line.quantity) }
                            td { (format_money(line.amount(), line.currency.as_str())) }
                        }
                    }
                }
            }
            p { "Total " strong #total { (total_text(&session)) } }
        }
        @if session.mode == SessionMode::Setup {
            p { "Save a card for future payments. You will not be charged now." }
        }
        form #pay method="post" action=(form.action_url) {
            @for (name, value) in form.fields.iter() {
                input type="hidden" name=(name) value=(value);
            }
            button #pay-button type="submit" { (button) }
        }
        @if let Some(cancel_url) = &session.cancel_url {
            p { a #cancel href=(cancel_url) { "Cancel and return" } }
        }
        p.note { "You will enter your card details on our payment provider's secure page." }
    };
    page.respond(StatusCode::OK, page.document("Checkout", body))
}

/// GET (query string) or POST (form body) from the gateway's hosted page: the signed
/// result. Forged, altered or replayed results get a 400 page and record nothing.
pub async fn finish(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let page = Page::default();
    let fields: Vec<u8> = if body.is_empty() {
        uri.query().unwrap_or("").as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    if fields.len() > MAX_RETURN_BYTES {
        return refused_page(&page);
    }
    let checkout = service(&state);
    let Ok(Some((_, actor))) = checkout.session_for_browser(&id).await else {
        return not_found(&page);
    };
    match checkout
        .complete_from_hosted_return(&actor, &id, &fields)
        .await
    {
        Ok(completed) => redirect_after(&state, completed).await,
        Err(ReturnError::NotFound) => not_found(&page),
        Err(
            error @ (ReturnError::Forged(_) | ReturnError::Mismatch(_) | ReturnError::Replayed(_)),
        ) => {
            tracing::warn!(checkout_session = %id, %error, "hosted result refused");
            refused_page(&page)
        }
        Err(ReturnError::Declined(reason)) => {
            tracing::info!(checkout_session = %id, %reason, "hosted payment not approved");
            let body = html! {
                h1 { "Payment not completed" }
                p { "Your card was not charged. Please try again or use another card." }
                p { a #retry href=(format!("/checkout/{id}")) { "Back to checkout" } }
            };
            // A page the customer goes on from, not a failed request: 200, the outcome in
            // its words (a 4xx would count as a failed load in the browser).
            page.respond(StatusCode::OK, page.document("Payment not completed", body))
        }
        Err(ReturnError::Payment(PaymentError::InvalidRequest(message))) => {
            tracing::warn!(checkout_session = %id, %message, "hosted result not recorded");
            refused_page(&page)
        }
        Err(ReturnError::Payment(error)) => {
            tracing::error!(checkout_session = %id, %error, "recording a hosted result failed");
            page.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your payment could not be recorded yet. Please contact the shop.",
            )
        }
    }
}

fn refused_page(page: &Page) -> Response {
    page.message(
        StatusCode::BAD_REQUEST,
        "Payment result refused",
        "This payment result is not valid for this checkout, or was already used.",
    )
}

/// 303 to the merchant's `success_url`, once the API shows the completed session.
async fn redirect_after(state: &ApiState, completed: Completed) -> Response {
    if let Some(last) = completed.appended.last() {
        let _ = state
            .projections
            .wait_until_applied(
                projections::api_objects::NAME,
                last.cursor(),
                Duration::from_millis(READ_YOUR_WRITES_TIMEOUT_MS),
            )
            .await;
    }
    let page = Page::default();
    let Ok(location) = HeaderValue::from_str(&completed.redirect_url) else {
        return page.message(
            StatusCode::OK,
            "Payment complete",
            "Thank you: your payment went through.",
        );
    };
    let mut response = page.respond(
        StatusCode::SEE_OTHER,
        page.document("Payment complete", html! { p { "Redirecting…" } }),
    );
    response.headers_mut().insert(header::LOCATION, location);
    response.into_response()
}
