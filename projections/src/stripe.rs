//! Stripe's object shapes (API version 2026-10-28.endive), rendered from our aggregates.
//!
//! One renderer per resource, used both by the API read model (`api_objects`) and by the
//! write endpoints' responses, so a POST's answer and a later GET never disagree.

use domain::customer::Customer;
use domain::payment_intent::{AttemptStatus, CaptureMethod, Charge, PaymentIntent, Refund};
use domain::payment_method::PaymentMethod;
use domain::webhook_endpoint::WebhookEndpoint;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

mod billing;
mod catalog;
mod checkout;
pub use billing::{
    hosted_invoice_url, invoice, invoice_item, invoice_line, invoice_lines, invoice_pdf_url,
    subscription, test_clock, TEST_CLOCK_OBJECT,
};
pub use catalog::{price, product, tax_rate};
pub use checkout::{
    checkout_line_item, checkout_line_items, checkout_session, checkout_url,
    CHECKOUT_SESSION_OBJECT,
};

pub const API_VERSION: &str = "2026-10-28.endive";

/// Every Stripe event type rendered here (by `api_objects`): what a webhook endpoint's
/// `enabled_events` may name, besides `*`.
pub const EVENT_TYPES: &[&str] = &[
    "charge.captured",
    "charge.failed",
    "charge.refunded",
    "charge.succeeded",
    "checkout.session.completed",
    "checkout.session.expired",
    "customer.created",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.deleted",
    "customer.subscription.updated",
    "customer.updated",
    "invoice.created",
    "invoice.deleted",
    "invoice.finalized",
    "invoice.marked_uncollectible",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.updated",
    "invoice.voided",
    "invoiceitem.created",
    "invoiceitem.deleted",
    "payment_intent.amount_capturable_updated",
    "payment_intent.canceled",
    "payment_intent.created",
    "payment_intent.payment_failed",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "payment_method.attached",
    "payment_method.detached",
    "payment_method.updated",
    "price.created",
    "price.updated",
    "product.created",
    "product.deleted",
    "product.updated",
    "refund.created",
    "refund.failed",
    "refund.updated",
    "tax_rate.created",
    "tax_rate.updated",
    "test_helpers.test_clock.advancing",
    "test_helpers.test_clock.created",
    "test_helpers.test_clock.deleted",
    "test_helpers.test_clock.ready",
];

fn short_hash(parts: &[&str], length: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    digest
        .iter()
        .take(length)
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect()
}

/// A Stripe event id that is the same every time the log is projected (live or rebuilt).
pub fn event_id(position: i64, index: usize) -> String {
    format!(
        "evt_{}",
        short_hash(&[&position.to_string(), &index.to_string()], 24)
    )
}

pub fn customer(customer: &Customer, livemode: bool) -> Value {
    if customer.deleted {
        return json!({"id": customer.id, "object": "customer", "deleted": true});
    }
    json!({
        "id": customer.id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": customer.created,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": customer.description,
        "discount": null,
        "email": customer.email,
        "invoice_prefix": short_hash(&[&customer.id], 8).to_uppercase(),
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": customer.default_payment_method,
            "footer": null,
            "rendering_options": null,
        },
        "livemode": livemode,
        "metadata": customer.metadata,
        "name": customer.name,
        "next_invoice_sequence": 1,
        "phone": customer.phone,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": customer.test_clock,
    })
}

pub fn payment_method(method: &PaymentMethod) -> Value {
    let card = method.card.as_ref().map(|card| {
        json!({
            "brand": card.brand,
            "checks": {"address_line1_check": null, "address_postal_code_check": null, "cvc_check": "pass"},
            "country": null,
            "display_brand": card.brand,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "fingerprint": card.fingerprint,
            "funding": card.funding,
            "generated_from": null,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": null},
            "three_d_secure_usage": {"supported": true},
            "wallet": null,
        })
    });
    json!({
        "id": method.id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": {"city": null, "country": null, "line1": null, "line2": null,
                        "postal_code": method.billing_details.postal_code, "state": null},
            "email": method.billing_details.email,
            "name": method.billing_details.name,
            "phone": method.billing_details.phone,
        },
        "card": card,
        "created": method.created,
        "customer": method.customer,
        "livemode": method.livemode,
        "metadata": method.metadata,
        "type": "card",
    })
}

fn capture_method(method: CaptureMethod) -> &'static str {
    match method {
        CaptureMethod::Automatic => "automatic",
        CaptureMethod::Manual => "manual",
    }
}

pub fn payment_intent(intent: &PaymentIntent) -> Value {
    let last_payment_error = intent.last_payment_error.as_ref().map(|error| {
        json!({
            "type": "card_error",
            "code": error.code,
            "decline_code": error.decline_code,
            "message": error.message,
            "charge": error.charge,
            "doc_url": format!("https://docs.stripe.com/error-codes/{}", error.code.replace('_', "-")),
            "payment_method": {"id": error.payment_method, "object": "payment_method", "type": "card"},
        })
    });
    let next_action = intent.next_action.as_ref().map(|action| {
        json!({
            "type": "redirect_to_url",
            "redirect_to_url": {"return_url": null, "url": action.redirect_url},
        })
    });
    json!({
        "id": intent.id,
        "object": "payment_intent",
        "amount": intent.amount.amount_minor,
        "amount_capturable": intent.amount_capturable,
        "amount_details": {"tip": {}},
        "amount_received": intent.amount_received,
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": null,
        "canceled_at": intent.canceled_at,
        "cancellation_reason": intent.cancellation_reason,
        "capture_method": capture_method(intent.capture_method),
        "client_secret": format!("{}_secret_{}", intent.id, short_hash(&[&intent.id, "secret"], 24)),
        "confirmation_method": "automatic",
        "created": intent.created,
        "currency": intent.amount.currency,
        "customer": intent.customer,
        "description": intent.description,
        "last_payment_error": last_payment_error,
        "latest_charge": intent.latest_charge().map(|charge| charge.id.clone()),
        "livemode": intent.livemode,
        "metadata": intent.metadata,
        "next_action": next_action,
        "on_behalf_of": null,
        "payment_method": intent.payment_method,
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "processing": null,
        "receipt_email": intent.receipt_email,
        "review": null,
        "setup_future_usage": null,
        "shipping": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": intent.status.as_str(),
        "transfer_data": null,
        "transfer_group": null,
    })
}

fn attempt_status(status: AttemptStatus) -> &'static str {
    match status {
        AttemptStatus::Pending => "pending",
        AttemptStatus::Succeeded => "succeeded",
        AttemptStatus::Failed => "failed",
    }
}

pub fn charge(intent: &PaymentIntent, charge: &Charge) -> Value {
    let succeeded = charge.status == AttemptStatus::Succeeded;
    let outcome = match charge.status {
        AttemptStatus::Pending => Value::Null,
        AttemptStatus::Succeeded => json!({
            "network_status": "approved_by_network", "reason": null, "risk_level": "normal",
            "seller_message": "Payment complete.", "type": "authorized",
        }),
        AttemptStatus::Failed => json!({
            "network_status": "declined_by_network", "reason": charge.decline_code,
            "risk_level": "normal", "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        }),
    };
    json!({
        "id": charge.id,
        "object": "charge",
        "amount": charge.amount.amount_minor,
        "amount_captured": charge.amount_captured,
        "amount_refunded": charge.amount_refunded,
        "balance_transaction": null,
        "billing_details": {"address": null, "email": null, "name": null, "phone": null},
        "captured": charge.captured,
        "created": charge.created,
        "currency": charge.amount.currency,
        "customer": intent.customer,
        "description": intent.description,
        "disputed": false,
        "failure_code": charge.failure_code,
        "failure_message": charge.failure_message,
        "livemode": intent.livemode,
        "metadata": intent.metadata,
        "outcome": outcome,
        "paid": succeeded,
        "payment_intent": intent.id,
        "payment_method": charge.payment_method,
        "payment_method_details": {"type": "card", "card": null},
        "receipt_email": intent.receipt_email,
        "refunded": charge.amount_captured > 0 && charge.amount_refunded >= charge.amount_captured,
        "status": attempt_status(charge.status),
    })
}

pub fn refund(intent: &PaymentIntent, refund: &Refund) -> Value {
    json!({
        "id": refund.id,
        "object": "refund",
        "amount": refund.amount,
        "balance_transaction": null,
        "charge": refund.charge,
        "created": refund.created,
        "currency": intent.amount.currency,
        "destination_details": {"type": "card", "card": {"type": "refund"}},
        "failure_reason": refund.failure_reason,
        "metadata": refund.metadata,
        "payment_intent": intent.id,
        "reason": refund.reason,
        "receipt_number": null,
        "status": attempt_status(refund.status),
    })
}

/// A webhook endpoint as Stripe shows it, without its secret (which only the create
/// response carries: the handler adds it there).
pub fn webhook_endpoint(endpoint: &WebhookEndpoint, livemode: bool) -> Value {
    if endpoint.deleted {
        return json!({"id": endpoint.id, "object": "webhook_endpoint", "deleted": true});
    }
    json!({
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "api_version": endpoint.api_version,
        "application": null,
        "created": endpoint.created,
        "description": endpoint.description,
        "enabled_events": endpoint.enabled_events,
        "livemode": livemode,
        "metadata": endpoint.metadata,
        "status": endpoint.status.as_str(),
        "url": endpoint.url,
    })
}

/// The top-level keys of `before` whose values differ in `after`: Stripe's
/// `data.previous_attributes` on `*.updated` events.
pub fn previous_attributes(before: &Value, after: &Value) -> Value {
    let mut changed = Map::new();
    if let (Some(before), Some(after)) = (before.as_object(), after.as_object()) {
        for (key, old) in before {
            if after.get(key) != Some(old) {
                changed.insert(key.clone(), old.clone());
            }
        }
    }
    Value::Object(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `EVENT_TYPES` names exactly the types `api_objects` renders (read from its source, so
    /// a new event type cannot be forgotten here).
    #[test]
    fn event_types_are_the_rendered_ones() {
        // Each file is split on its own: a stray quote in one cannot shift the other.
        let sources = [
            include_str!("api_objects.rs"),
            include_str!("api_objects/catalog.rs"),
            include_str!("api_objects/billing.rs"),
            include_str!("api_objects/checkout.rs"),
        ];
        let mut rendered: Vec<&str> = sources
            .iter()
            .flat_map(|source| source.split('"').skip(1).step_by(2))
            .filter(|literal| {
                literal.contains('.')
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            })
            .collect();
        rendered.sort_unstable();
        rendered.dedup();
        assert_eq!(rendered, EVENT_TYPES);
    }
}
