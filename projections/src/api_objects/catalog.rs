//! The billing catalog in the API read model: products, prices and tax rates as objects,
//! and their Stripe events (`*.updated` with `previous_attributes`). Prices are listed by
//! product through `body->>'product'` (index `objects_by_product`).

use cqrs_es::Aggregate;
use domain::price::{Price, PriceEvent};
use domain::product::{Product, ProductEvent};
use domain::tax_rate::{TaxRate, TaxRateEvent};
use serde_json::Value;

use super::{Changes, Context, ObjectRow};
use crate::stripe;

fn catalog_row(
    context: &Context<'_>,
    id: &str,
    object: &'static str,
    created: i64,
    deleted: bool,
    body: Value,
) -> ObjectRow {
    ObjectRow {
        id: id.to_string(),
        project: context.project.to_string(),
        livemode: context.livemode,
        object,
        customer: None,
        payment_intent: None,
        created,
        deleted,
        body,
    }
}

pub(super) fn project_product(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut Product,
    event: ProductEvent,
) {
    let before = stripe::product(state, context.livemode);
    state.apply(event.clone());
    let after = stripe::product(state, context.livemode);
    changes.object(catalog_row(
        context,
        &state.id,
        "product",
        state.created,
        state.deleted,
        after.clone(),
    ));
    match event {
        ProductEvent::ProductCreated { created, .. } => {
            changes.event(context, "product.created", created, after, None)
        }
        ProductEvent::ProductUpdated { at, .. } => {
            let previous = stripe::previous_attributes(&before, &after);
            changes.event(context, "product.updated", at, after, Some(previous))
        }
        ProductEvent::ProductDeleted { at } => {
            changes.event(context, "product.deleted", at, before, None)
        }
    }
}

pub(super) fn project_price(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut Price,
    event: PriceEvent,
) {
    let before = stripe::price(state, context.livemode);
    state.apply(event.clone());
    let after = stripe::price(state, context.livemode);
    changes.object(catalog_row(
        context,
        &state.id,
        "price",
        state.created,
        false,
        after.clone(),
    ));
    match event {
        PriceEvent::PriceCreated { created, .. } => {
            changes.event(context, "price.created", created, after, None)
        }
        PriceEvent::PriceUpdated { at, .. } => {
            let previous = stripe::previous_attributes(&before, &after);
            changes.event(context, "price.updated", at, after, Some(previous))
        }
    }
}

pub(super) fn project_tax_rate(
    changes: &mut Changes,
    context: &Context<'_>,
    state: &mut TaxRate,
    event: TaxRateEvent,
) {
    let before = stripe::tax_rate(state, context.livemode);
    state.apply(event.clone());
    let after = stripe::tax_rate(state, context.livemode);
    changes.object(catalog_row(
        context,
        &state.id,
        "tax_rate",
        state.created,
        false,
        after.clone(),
    ));
    match event {
        TaxRateEvent::TaxRateCreated { created, .. } => {
            changes.event(context, "tax_rate.created", created, after, None)
        }
        TaxRateEvent::TaxRateUpdated { at, .. } => {
            let previous = stripe::previous_attributes(&before, &after);
            changes.event(context, "tax_rate.updated", at, after, Some(previous))
        }
    }
}
