//! Billing in the API read model: invoices (receipt invoices of one-off payments included),
//! invoice items, subscriptions and test clocks as objects, and their Stripe events.
//!
//! Invoices are filed under their customer (`customer` column) and their payment intent;
//! `invoice_access_tokens` maps a finalized invoice's unguessable token to the invoice, for
//! the hosted page and the PDF, which are reached without an API key.

use cqrs_es::Aggregate;
use domain::invoice::{Invoice, InvoiceEvent};
use domain::invoice_item::{InvoiceItem, InvoiceItemEvent};
use domain::subscription::{Subscription, SubscriptionEvent};
use domain::test_clock::{TestClock, TestClockEvent};
use serde_json::Value;
use sqlx::PgConnection;

use super::{Changes, Context, ObjectRow};
use crate::runtime::ProjectionError;
use crate::stripe;

/// A finalized invoice's token.
#[derive(Debug, Clone)]
pub(super) struct InvoiceToken {
    token: String,
    invoice: String,
    project: String,
    livemode: bool,
}

/// An object row filed under `customer` (the billing lists' usual filter).
fn row(
    context: &Context<'_>,
    (id, object): (&str, &'static str),
    customer: Option<String>,
    created: i64,
    deleted: bool,
    body: Value,
) -> ObjectRow {
    ObjectRow {
        id: id.to_string(),
        project: context.project.to_string(),
        livemode: context.livemode,
        object,
        customer,
        payment_intent: None,
        created,
        deleted,
        body,
    }
}

pub(super) fn project_invoice(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut Invoice,
    event: InvoiceEvent,
) {
    use InvoiceEvent as Event;
    let render = |invoice: &Invoice| stripe::invoice(invoice, context.livemode, context.public_url);
    let before = render(state);
    state.apply(event.clone());
    // A deleted draft keeps its last body in its Stripe event; the object becomes the stub.
    let after = render(state);
    changes.object(ObjectRow {
        payment_intent: state.payment_intent.clone(),
        ..row(
            context,
            (&state.id, "invoice"),
            Some(state.customer.clone()),
            state.created,
            state.deleted,
            after.clone(),
        )
    });
    let updated = |changes: &mut Changes, at: i64| {
        let previous = stripe::previous_attributes(&before, &after);
        changes.event(
            context,
            "invoice.updated",
            at,
            after.clone(),
            Some(previous),
        );
    };
    match event {
        Event::InvoiceCreated { created, .. } => {
            changes.event(context, "invoice.created", created, after.clone(), None)
        }
        Event::InvoiceLineAdded { at, .. }
        | Event::InvoiceDraftUpdated { at, .. }
        | Event::InvoicePaymentAttempted { at, .. } => updated(changes, at),
        Event::InvoiceDeleted { at } => {
            changes.event(context, "invoice.deleted", at, before.clone(), None)
        }
        Event::InvoiceFinalized {
            access_token, at, ..
        } => {
            changes.invoice_tokens.push(InvoiceToken {
                token: access_token,
                invoice: state.id.clone(),
                project: context.project.to_string(),
                livemode: context.livemode,
            });
            changes.event(context, "invoice.finalized", at, after.clone(), None)
        }
        Event::InvoicePaymentFailed { at, .. } => {
            changes.event(context, "invoice.payment_failed", at, after.clone(), None)
        }
        Event::InvoicePaid {
            out_of_band, at, ..
        } => {
            changes.event(context, "invoice.paid", at, after.clone(), None);
            if !out_of_band {
                changes.event(
                    context,
                    "invoice.payment_succeeded",
                    at,
                    after.clone(),
                    None,
                );
            }
        }
        Event::InvoiceVoided { at } => {
            changes.event(context, "invoice.voided", at, after.clone(), None)
        }
        Event::InvoiceMarkedUncollectible { at } => changes.event(
            context,
            "invoice.marked_uncollectible",
            at,
            after.clone(),
            None,
        ),
    }
}

pub(super) fn project_invoice_item(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut InvoiceItem,
    event: InvoiceItemEvent,
) {
    let before = stripe::invoice_item(state, context.livemode, None);
    state.apply(event.clone());
    let after = stripe::invoice_item(state, context.livemode, None);
    let Some(item) = &state.item else {
        return;
    };
    changes.object(row(
        context,
        (&item.invoice_item_id, "invoiceitem"),
        Some(item.customer.clone()),
        state.created,
        state.deleted,
        after.clone(),
    ));
    match event {
        InvoiceItemEvent::InvoiceItemCreated { created, .. } => {
            changes.event(context, "invoiceitem.created", created, after, None)
        }
        InvoiceItemEvent::InvoiceItemDeleted { at } => {
            changes.event(context, "invoiceitem.deleted", at, before, None)
        }
        // Stripe has no event for an item joining an invoice; the invoice's own tells.
        InvoiceItemEvent::InvoiceItemInvoiced { .. } => {}
    }
}

pub(super) fn project_subscription(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut Subscription,
    event: SubscriptionEvent,
) {
    use SubscriptionEvent as Event;
    let before = stripe::subscription(state, context.livemode);
    state.apply(event.clone());
    let after = stripe::subscription(state, context.livemode);
    changes.object(row(
        context,
        (&state.id, "subscription"),
        Some(state.customer.clone()),
        state.created,
        false,
        after.clone(),
    ));
    match event {
        Event::SubscriptionCreated { created, .. } => changes.event(
            context,
            "customer.subscription.created",
            created,
            after,
            None,
        ),
        // Every change, renewals and status changes included, is an update.
        Event::SubscriptionUpdated { at, .. }
        | Event::SubscriptionItemsChanged { at, .. }
        | Event::SubscriptionRenewed { at, .. }
        | Event::SubscriptionStatusChanged { at, .. } => {
            let previous = stripe::previous_attributes(&before, &after);
            changes.event(
                context,
                "customer.subscription.updated",
                at,
                after,
                Some(previous),
            )
        }
        Event::SubscriptionCanceled { at, .. } => {
            changes.event(context, "customer.subscription.deleted", at, after, None)
        }
    }
}

pub(super) fn project_test_clock(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut TestClock,
    event: TestClockEvent,
) {
    let before = stripe::test_clock(state, context.livemode);
    state.apply(event.clone());
    let after = stripe::test_clock(state, context.livemode);
    changes.object(row(
        context,
        (&state.id, stripe::TEST_CLOCK_OBJECT),
        None,
        state.created,
        state.deleted,
        after.clone(),
    ));
    match event {
        TestClockEvent::TestClockCreated { created, .. } => changes.event(
            context,
            "test_helpers.test_clock.created",
            created,
            after,
            None,
        ),
        TestClockEvent::TestClockAdvancing { at, .. } => changes.event(
            context,
            "test_helpers.test_clock.advancing",
            at,
            after,
            None,
        ),
        TestClockEvent::TestClockReady { at, .. } => {
            changes.event(context, "test_helpers.test_clock.ready", at, after, None)
        }
        TestClockEvent::TestClockDeleted { at } => {
            changes.event(context, "test_helpers.test_clock.deleted", at, before, None)
        }
    }
}

pub(super) async fn write_invoice_tokens(
    connection: &mut PgConnection,
    tokens: Vec<InvoiceToken>,
) -> Result<(), ProjectionError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let mut values = Vec::with_capacity(tokens.len());
    let mut invoices = Vec::with_capacity(tokens.len());
    let mut projects = Vec::with_capacity(tokens.len());
    let mut livemodes = Vec::with_capacity(tokens.len());
    for token in tokens {
        values.push(token.token);
        invoices.push(token.invoice);
        projects.push(token.project);
        livemodes.push(token.livemode);
    }
    sqlx::query(
        "INSERT INTO invoice_access_tokens (token, invoice, project, livemode) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::boolean[]) \
         ON CONFLICT (token) DO NOTHING",
    )
    .bind(&values)
    .bind(&invoices)
    .bind(&projects)
    .bind(&livemodes)
    .execute(connection)
    .await?;
    Ok(())
}
