//! Billing's Stripe shapes (API version 2026-10-28.endive): `invoice` with its `line_item`s
//! and `invoice_payment`s, `invoiceitem`, `subscription` with its `subscription_item`s, and
//! `test_helpers.test_clock`.
//!
//! Endive's placement is followed: billing periods on subscription items, an invoice's
//! subscription under `parent.subscription_details`, taxes as `total_taxes[]` and per-line
//! `taxes[]` of type `tax_rate_details`, prices under `pricing.price_details`.

use std::collections::BTreeMap;

use domain::invoice::{Invoice, InvoiceLine, InvoiceStatus};
use domain::invoice_item::InvoiceItem;
use domain::subscription::{PlanPrice, Subscription, SubscriptionItem};
use domain::tax::TaxAmount;
use domain::test_clock::{ClockStatus, TestClock};
use serde_json::{json, Value};

use super::short_hash;

/// The `object` of a test clock.
pub const TEST_CLOCK_OBJECT: &str = "test_helpers.test_clock";

/// How long Stripe keeps a test clock before deleting it (30 days).
const TEST_CLOCK_LIFETIME_SECONDS: i64 = 30 * 86_400;

/// The hosted invoice page of an invoice with `access_token`, under the server's public URL.
pub fn hosted_invoice_url(public_url: &str, access_token: &str) -> String {
    format!(
        "{}/invoices/{access_token}",
        public_url.trim_end_matches('/')
    )
}

/// The invoice's PDF, beside its hosted page.
pub fn invoice_pdf_url(public_url: &str, access_token: &str) -> String {
    format!("{}/pdf", hosted_invoice_url(public_url, access_token))
}

fn tax_behavior(inclusive: bool) -> &'static str {
    if inclusive {
        "inclusive"
    } else {
        "exclusive"
    }
}

fn tax_entry(tax: &TaxAmount) -> Value {
    json!({
        "amount": tax.amount,
        "tax_behavior": tax_behavior(tax.inclusive),
        "tax_rate_details": {"tax_rate": tax.tax_rate},
        "taxability_reason": "standard_rated",
        "taxable_amount": tax.taxable_amount,
        "type": "tax_rate_details",
    })
}

/// The invoice's taxes summed per rate, in the order the rates first appear.
fn total_taxes(lines: &[InvoiceLine]) -> Vec<Value> {
    let mut order: Vec<(String, bool)> = Vec::new();
    let mut sums: BTreeMap<(String, bool), (i64, i64)> = BTreeMap::new();
    for tax in lines.iter().flat_map(|line| &line.taxes) {
        let key = (tax.tax_rate.clone(), tax.inclusive);
        let entry = sums.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            (0, 0)
        });
        entry.0 += tax.amount;
        entry.1 += tax.taxable_amount;
    }
    order
        .into_iter()
        .map(|key| {
            let (amount, taxable_amount) = sums[&key];
            tax_entry(&TaxAmount {
                tax_rate: key.0,
                amount,
                inclusive: key.1,
                taxable_amount,
            })
        })
        .collect()
}

fn pricing(price: Option<&str>, product: Option<&str>, unit_amount: Option<i64>) -> Value {
    if price.is_none() && unit_amount.is_none() {
        return Value::Null;
    }
    json!({
        "price_details": {"price": price, "product": product},
        "type": "price_details",
        "unit_amount_decimal": unit_amount.map(|amount| amount.to_string()),
    })
}

/// One `line_item` of `invoice`.
pub fn invoice_line(invoice: &Invoice, line: &InvoiceLine, livemode: bool) -> Value {
    let proration_details = json!({"credited_items": null});
    let parent = match (&line.invoice_item, &line.subscription_item) {
        (Some(item), _) => json!({
            "type": "invoice_item_details",
            "invoice_item_details": {
                "invoice_item": item,
                "proration": line.proration,
                "proration_details": proration_details,
                "subscription": line.subscription,
            },
            "subscription_item_details": null,
        }),
        (None, Some(subscription_item)) => json!({
            "type": "subscription_item_details",
            "invoice_item_details": null,
            "subscription_item_details": {
                "invoice_item": null,
                "proration": line.proration,
                "proration_details": proration_details,
                "subscription": line.subscription,
                "subscription_item": subscription_item,
            },
        }),
        (None, None) => Value::Null,
    };
    json!({
        "id": line.id,
        "object": "line_item",
        "amount": line.amount,
        "currency": invoice.currency,
        "description": line.description,
        "discount_amounts": [],
        "discountable": true,
        "discounts": [],
        "invoice": invoice.id,
        "livemode": livemode,
        "metadata": line.metadata,
        "parent": parent,
        "period": {"start": line.period_start, "end": line.period_end},
        "pretax_credit_amounts": [],
        "pricing": pricing(line.price.as_deref(), line.product.as_deref(), line.unit_amount),
        "quantity": line.quantity,
        "taxes": line.taxes.iter().map(tax_entry).collect::<Vec<_>>(),
    })
}

/// An invoice's lines as Stripe's list object (every line: an invoice's lines are bounded
/// by what its writers add, and `/v1/invoices/{id}/lines` pages over this list).
pub fn invoice_lines(invoice: &Invoice, livemode: bool) -> Value {
    let data: Vec<Value> = invoice
        .lines
        .iter()
        .map(|line| invoice_line(invoice, line, livemode))
        .collect();
    json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "total_count": invoice.lines.len(),
        "url": format!("/v1/invoices/{}/lines", invoice.id),
    })
}

/// The `invoice_payment` of the invoice's payment intent, if one was opened.
fn invoice_payments(invoice: &Invoice, livemode: bool) -> Value {
    let data: Vec<Value> = invoice
        .payment_intent
        .iter()
        .map(|intent| {
            let paid = invoice.status == InvoiceStatus::Paid;
            json!({
                "id": format!("inpay_{}", short_hash(&[&invoice.id, intent], 24)),
                "object": "invoice_payment",
                "amount_paid": if paid { invoice.amount_paid } else { 0 },
                "amount_requested": invoice.amount_due(),
                "created": invoice.created,
                "currency": invoice.currency,
                "invoice": invoice.id,
                "is_default": true,
                "livemode": livemode,
                "payment": {"type": "payment_intent", "payment_intent": intent},
                "status": if paid { "paid" } else { "open" },
                "status_transitions": {
                    "canceled_at": null,
                    "paid_at": if paid { invoice.status_transitions.paid_at } else { None },
                },
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "total_count": invoice.payment_intent.iter().count(),
        "url": format!("/v1/invoice_payments?invoice={}", invoice.id),
    })
}

/// An invoice. `hosted_invoice_url` and `invoice_pdf` are null until it is finalized; then
/// they are pages of this server (`public_url`) named by the invoice's unguessable token.
pub fn invoice(invoice: &Invoice, livemode: bool, public_url: &str) -> Value {
    if invoice.deleted {
        return json!({"id": invoice.id, "object": "invoice", "deleted": true});
    }
    let totals = invoice.totals();
    let finalized = invoice.status != InvoiceStatus::Draft;
    let token = invoice.access_token.as_deref().filter(|_| finalized);
    let parent = invoice.subscription.as_ref().map(|subscription| {
        json!({
            "quote_details": null,
            "subscription_details": {"metadata": {}, "subscription": subscription},
            "type": "subscription_details",
        })
    });
    let mut body = json!({
        "id": invoice.id,
        "object": "invoice",
        "account_country": null,
        "account_name": null,
        "account_tax_ids": null,
        "amount_due": invoice.amount_due(),
        "amount_overpaid": 0,
        "amount_paid": invoice.amount_paid,
        "amount_remaining": invoice.amount_remaining(),
        "amount_shipping": 0,
        "application": null,
        "attempt_count": invoice.attempt_count,
        "attempted": invoice.attempted,
        "auto_advance": invoice.auto_advance,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null, "provider": null, "status": null},
        "automatically_finalizes_at": null,
        "billing_reason": invoice.billing_reason.as_str(),
        "collection_method": "charge_automatically",
        "confirmation_secret": null,
        "created": invoice.created,
        "currency": invoice.currency,
        "custom_fields": null,
        "customer": invoice.customer,
        "customer_address": null,
        "customer_email": null,
        "customer_name": null,
        "customer_phone": null,
        "customer_shipping": null,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
    });
    let middle = json!({
        "default_payment_method": invoice.default_payment_method,
        "default_source": null,
        "default_tax_rates": [],
        "description": invoice.description,
        "discounts": [],
        "due_date": null,
        "effective_at": invoice.status_transitions.finalized_at,
        "ending_balance": if finalized { Some(0) } else { None },
        "footer": invoice.footer,
        "from_invoice": null,
        "hosted_invoice_url": token.map(|token| hosted_invoice_url(public_url, token)),
        "invoice_pdf": token.map(|token| invoice_pdf_url(public_url, token)),
        "issuer": {"type": "self"},
        "last_finalization_error": null,
        "latest_revision": null,
        "lines": invoice_lines(invoice, livemode),
    });
    let rest = json!({
        "livemode": livemode,
        "metadata": invoice.metadata,
        "next_payment_attempt": invoice.next_payment_attempt,
        "number": invoice.number,
        "on_behalf_of": null,
        "paid": invoice.status == InvoiceStatus::Paid,
        "paid_out_of_band": invoice.paid_out_of_band,
        "parent": parent,
        "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
        "payments": invoice_payments(invoice, livemode),
        "period_end": invoice.period_end,
        "period_start": invoice.period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": null,
        "rendering": null,
        "shipping_cost": null,
        "shipping_details": null,
        "starting_balance": 0,
        "statement_descriptor": null,
        "status": invoice.status.as_str(),
        "status_transitions": {
            "finalized_at": invoice.status_transitions.finalized_at,
            "marked_uncollectible_at": invoice.status_transitions.marked_uncollectible_at,
            "paid_at": invoice.status_transitions.paid_at,
            "voided_at": invoice.status_transitions.voided_at,
        },
        "subtotal": totals.subtotal,
        "subtotal_excluding_tax": totals.subtotal_excluding_tax,
        "test_clock": invoice.test_clock,
        "threshold_reason": null,
        "total": totals.total,
        "total_discount_amounts": [],
        "total_excluding_tax": totals.total - totals.tax,
        "total_pretax_credit_amounts": [],
        "total_taxes": total_taxes(&invoice.lines),
        "webhooks_delivered_at": invoice.status_transitions.finalized_at,
    });
    // In parts: one `json!` of every field exceeds the macro's recursion limit.
    if let (Some(body), Value::Object(middle), Value::Object(rest)) =
        (body.as_object_mut(), middle, rest)
    {
        body.extend(middle);
        body.extend(rest);
    }
    body
}

/// An invoice item (`ii_…`). A deleted one is Stripe's stub.
pub fn invoice_item(item: &InvoiceItem, livemode: bool, test_clock: Option<&str>) -> Value {
    let Some(new) = &item.item else {
        return Value::Null;
    };
    if item.deleted {
        return json!({"id": new.invoice_item_id, "object": "invoiceitem", "deleted": true});
    }
    let parent = new.subscription.as_ref().map(|subscription| {
        json!({
            "type": "subscription_details",
            "subscription_details": {
                "subscription": subscription,
                "subscription_item": new.subscription_item,
            },
        })
    });
    json!({
        "id": new.invoice_item_id,
        "object": "invoiceitem",
        "amount": new.amount,
        "currency": new.currency,
        "customer": new.customer,
        "date": item.created,
        "description": new.description,
        "discountable": true,
        "discounts": [],
        "invoice": item.invoice,
        "livemode": livemode,
        "metadata": new.metadata,
        "net_amount": new.amount,
        "parent": parent,
        "period": {"start": new.period_start, "end": new.period_end},
        "pricing": pricing(new.price.as_deref(), new.product.as_deref(), new.unit_amount),
        "proration": new.proration,
        "quantity": new.quantity,
        "tax_rates": new.tax_rates.iter().map(|rate| rate.tax_rate.clone()).collect::<Vec<_>>(),
        "test_clock": test_clock,
    })
}

/// The price a subscription item bills, from the copy the subscription agreed to: the
/// recurring price object, cheap to render and the same on every read.
fn plan_price(plan: &PlanPrice, livemode: bool) -> Value {
    json!({
        "id": plan.price,
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "currency": plan.currency,
        "custom_unit_amount": null,
        "livemode": livemode,
        "product": plan.product,
        "recurring": {
            "interval": plan.cadence.interval.as_str(),
            "interval_count": plan.cadence.count,
            "meter": null,
            "trial_period_days": null,
            "usage_type": "licensed",
        },
        "tiers_mode": null,
        "transform_quantity": null,
        "type": "recurring",
        "unit_amount": plan.unit_amount,
        "unit_amount_decimal": plan.unit_amount.to_string(),
    })
}

fn subscription_item(
    subscription: &Subscription,
    item: &SubscriptionItem,
    livemode: bool,
) -> Value {
    json!({
        "id": item.id,
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": item.created,
        "current_period_end": subscription.current_period_end,
        "current_period_start": subscription.current_period_start,
        "discounts": [],
        "metadata": item.metadata,
        "price": plan_price(&item.price, livemode),
        "quantity": item.quantity,
        "subscription": subscription.id,
        "tax_rates": [],
    })
}

/// A subscription: its billing period is on each item (endive), not on the subscription.
pub fn subscription(subscription: &Subscription, livemode: bool) -> Value {
    let items: Vec<Value> = subscription
        .items
        .iter()
        .map(|item| subscription_item(subscription, item, livemode))
        .collect();
    let cancel_at = subscription
        .cancel_at_period_end
        .then_some(subscription.current_period_end)
        .filter(|_| !subscription.status.is_final());
    let mut body = json!({
        "id": subscription.id,
        "object": "subscription",
        "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": subscription.billing_cycle_anchor,
        "billing_cycle_anchor_config": null,
        "billing_thresholds": null,
        "cancel_at": cancel_at,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "canceled_at": subscription.canceled_at,
        "cancellation_details": {
            "comment": null,
            "feedback": null,
            "reason": subscription.cancellation_reason,
        },
        "collection_method": "charge_automatically",
        "created": subscription.created,
        "currency": subscription.currency(),
        "customer": subscription.customer,
        "days_until_due": null,
        "default_payment_method": subscription.default_payment_method,
        "default_source": null,
        "default_tax_rates": subscription
            .default_tax_rates
            .iter()
            .map(|rate| rate.tax_rate.clone())
            .collect::<Vec<_>>(),
        "description": subscription.description,
        "discounts": [],
        "ended_at": subscription.ended_at,
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
    });
    let rest = json!({
        "items": {
            "object": "list",
            "data": items,
            "has_more": false,
            "total_count": subscription.items.len(),
            "url": format!("/v1/subscription_items?subscription={}", subscription.id),
        },
        "latest_invoice": subscription.latest_invoice,
        "livemode": livemode,
        "metadata": subscription.metadata,
        "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": "off"},
        "pending_invoice_item_interval": null,
        "pending_setup_intent": null,
        "pending_update": null,
        "schedule": null,
        "start_date": subscription.start_date,
        "status": subscription.status.as_str(),
        "test_clock": subscription.test_clock,
        "transfer_data": null,
        "trial_end": subscription.trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": subscription.trial_start,
    });
    // In parts: one `json!` of every field exceeds the macro's recursion limit.
    if let (Some(body), Value::Object(rest)) = (body.as_object_mut(), rest) {
        body.extend(rest);
    }
    body
}

/// A test clock (`test_helpers.test_clock`). A deleted one is Stripe's stub.
pub fn test_clock(clock: &TestClock, livemode: bool) -> Value {
    if clock.deleted {
        return json!({"id": clock.id, "object": TEST_CLOCK_OBJECT, "deleted": true});
    }
    let status_details = match clock.status {
        ClockStatus::Advancing => {
            json!({"advancing": {"target_frozen_time": clock.frozen_time}})
        }
        ClockStatus::Ready => json!({}),
    };
    json!({
        "id": clock.id,
        "object": TEST_CLOCK_OBJECT,
        "created": clock.created,
        "deletes_after": clock.created + TEST_CLOCK_LIFETIME_SECONDS,
        "frozen_time": clock.frozen_time,
        "livemode": livemode,
        "name": clock.name,
        "status": clock.status.as_str(),
        "status_details": status_details,
    })
}
