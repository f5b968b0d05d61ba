//! Checkout Sessions (`checkout.session`) and their line items (`item`), in Stripe's
//! shapes. `url` is our hosted checkout page, present only while the session is open.

use domain::checkout_session::{CheckoutSession, LineItem, SessionMode, SessionStatus};
use serde_json::{json, Value};

pub const CHECKOUT_SESSION_OBJECT: &str = "checkout.session";

/// The hosted checkout page of a session.
pub fn checkout_url(public_url: &str, session_id: &str) -> String {
    format!("{}/checkout/{session_id}", public_url.trim_end_matches('/'))
}

pub fn checkout_line_item(line: &LineItem) -> Value {
    let recurring = line.recurring.map(|recurring| {
        json!({
            "interval": recurring.interval.as_str(),
            "interval_count": recurring.interval_count,
        })
    });
    let price_id = line
        .price
        .clone()
        .unwrap_or_else(|| format!("price_{}", line.id.trim_start_matches("li_")));
    json!({
        "id": line.id,
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": line.amount(),
        "amount_tax": 0,
        "amount_total": line.amount(),
        "currency": line.currency,
        "description": line.product_name,
        "price": {
            "id": price_id,
            "object": "price",
            "currency": line.currency,
            "product": line.product,
            "recurring": recurring,
            "type": if line.recurring.is_some() { "recurring" } else { "one_time" },
            "unit_amount": line.unit_amount,
            "unit_amount_decimal": line.unit_amount.to_string(),
        },
        "quantity": line.quantity,
    })
}

/// The session's line items as Stripe's list (`GET …/line_items` and `expand[]=line_items`).
pub fn checkout_line_items(session: &CheckoutSession) -> Value {
    json!({
        "object": "list",
        "data": session.line_items.iter().map(checkout_line_item).collect::<Vec<_>>(),
        "has_more": false,
        "url": format!("/v1/checkout/sessions/{}/line_items", session.id),
    })
}

pub fn checkout_session(session: &CheckoutSession, livemode: bool, public_url: &str) -> Value {
    let amount = match session.mode {
        SessionMode::Setup => Value::Null,
        SessionMode::Payment | SessionMode::Subscription => json!(session.amount_total()),
    };
    let url =
        (session.status == SessionStatus::Open).then(|| checkout_url(public_url, &session.id));
    json!({
        "id": session.id,
        "object": CHECKOUT_SESSION_OBJECT,
        "amount_subtotal": amount,
        "amount_total": amount,
        "cancel_url": session.cancel_url,
        "client_reference_id": null,
        "created": session.created,
        "currency": session.currency(),
        "customer": session.customer,
        "customer_details": session.customer_email.as_ref().map(|email| json!({"email": email})),
        "customer_email": session.customer_email,
        "expires_at": session.expires_at,
        "livemode": livemode,
        "metadata": session.metadata,
        "mode": session.mode.as_str(),
        "payment_intent": session.payment_intent,
        "payment_method_types": ["card"],
        "payment_status": session.payment_status.as_str(),
        "setup_intent": null,
        "status": session.status.as_str(),
        "subscription": session.subscription,
        "success_url": session.success_url,
        "ui_mode": "hosted_page",
        "url": url,
    })
}
