//! Checkout Sessions in the API read model: the session as an object (filed under its
//! customer and payment intent), and `checkout.session.completed` / `.expired`.

use cqrs_es::Aggregate;
use domain::checkout_session::{CheckoutSession, CheckoutSessionEvent};

use super::{Changes, Context, ObjectRow};
use crate::stripe;

pub(super) fn project_checkout_session(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut CheckoutSession,
    event: CheckoutSessionEvent,
) {
    state.apply(event.clone());
    let body = stripe::checkout_session(state, context.livemode, context.public_url);
    // Stripe shows `line_items` only when expanded; the row keeps them for that (and for
    // `GET …/line_items`), and the API removes them otherwise.
    let mut row_body = body.clone();
    row_body["line_items"] = stripe::checkout_line_items(state);
    changes.object(ObjectRow {
        id: state.id.clone(),
        project: context.project.to_string(),
        livemode: context.livemode,
        object: stripe::CHECKOUT_SESSION_OBJECT,
        customer: state.customer.clone(),
        payment_intent: state.payment_intent.clone(),
        created: state.created,
        deleted: false,
        body: row_body,
    });
    match event {
        CheckoutSessionEvent::CheckoutSessionCompleted { at, .. } => {
            changes.event(context, "checkout.session.completed", at, body, None)
        }
        CheckoutSessionEvent::CheckoutSessionExpired { at } => {
            changes.event(context, "checkout.session.expired", at, body, None)
        }
        CheckoutSessionEvent::CheckoutSessionCreated { .. }
        | CheckoutSessionEvent::CheckoutSessionReturnAccepted { .. } => {}
    }
}
