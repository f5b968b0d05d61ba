//! The objects the API answers with, as the OpenAPI document's component schemas and the
//! docs' object reference. Each is written as a compact field list (`name:type`, `?` for
//! nullable) to keep the table readable; the shapes are those `projections::stripe`
//! renders (Stripe API version `2026-10-28.endive`).
//!
//! Types: `str`, `int`, `bool`, `ts` (unix seconds), `obj` (a nested object), `arr`,
//! `meta` (string → string), `any`, `exp:<object>` (an id, or the object when expanded),
//! `list:<object>` (a nested list object), `'value'` (that constant string).

/// `(object type, description, fields)`.
pub const OBJECTS: &[(&str, &str, &str)] = &[
    (
        "customer",
        "A customer.",
        "id:str object:'customer' address:obj? balance:int created:ts currency:str? \
         default_source:str? delinquent:bool description:str? discount:obj? email:str? \
         invoice_prefix:str invoice_settings:obj livemode:bool metadata:meta name:str? \
         next_invoice_sequence:int phone:str? preferred_locales:arr shipping:obj? \
         tax_exempt:str test_clock:exp:test_helpers.test_clock?",
    ),
    (
        "payment_method",
        "A card, tokenised at the gateway.",
        "id:str object:'payment_method' allow_redisplay:str billing_details:obj card:obj \
         created:ts customer:exp:customer? livemode:bool metadata:meta type:str",
    ),
    (
        "payment_intent",
        "One payment's life, from creation to success or cancellation.",
        "id:str object:'payment_intent' amount:int amount_capturable:int amount_details:obj \
         amount_received:int application:str? application_fee_amount:int? \
         automatic_payment_methods:obj? canceled_at:ts? cancellation_reason:str? \
         capture_method:str client_secret:str confirmation_method:str created:ts currency:str \
         customer:exp:customer? description:str? last_payment_error:obj? \
         latest_charge:exp:charge? livemode:bool metadata:meta next_action:obj? \
         on_behalf_of:str? payment_method:exp:payment_method? \
         payment_method_configuration_details:obj? payment_method_options:obj \
         payment_method_types:arr processing:obj? receipt_email:str? review:str? \
         setup_future_usage:str? shipping:obj? statement_descriptor:str? \
         statement_descriptor_suffix:str? status:str transfer_data:obj? transfer_group:str?",
    ),
    (
        "charge",
        "One attempt to move money for a payment intent.",
        "id:str object:'charge' amount:int amount_captured:int amount_refunded:int \
         balance_transaction:str? billing_details:obj captured:bool created:ts currency:str \
         customer:exp:customer? description:str? disputed:bool failure_code:str? \
         failure_message:str? livemode:bool metadata:meta outcome:obj? paid:bool \
         payment_intent:exp:payment_intent? payment_method:str? payment_method_details:obj? \
         receipt_email:str? refunded:bool status:str",
    ),
    (
        "refund",
        "Money returned on a charge.",
        "id:str object:'refund' amount:int balance_transaction:str? charge:exp:charge \
         created:ts currency:str destination_details:obj? failure_reason:str? metadata:meta \
         payment_intent:exp:payment_intent? reason:str? receipt_number:str? status:str",
    ),
    (
        "event",
        "Something that happened; `data.object` is the object as it was then.",
        "id:str object:'event' api_version:str created:ts data:obj livemode:bool \
         pending_webhooks:int request:obj type:str",
    ),
    (
        "webhook_endpoint",
        "Where events are sent. `secret` is in the create answer only.",
        "id:str object:'webhook_endpoint' api_version:str? application:str? created:ts \
         description:str? enabled_events:arr livemode:bool metadata:meta secret:str \
         status:str url:str",
    ),
    (
        "webhook_delivery",
        "One event's delivery to one endpoint, with every attempt (a Calmony extension).",
        "id:str object:'webhook_delivery' webhook_endpoint:str event:str event_type:str \
         created:ts redelivery:bool status:str attempt_count:int next_attempt:ts? attempts:arr",
    ),
    (
        "product",
        "What you sell.",
        "id:str object:'product' active:bool created:ts default_price:exp:price? \
         description:str? images:arr livemode:bool marketing_features:arr metadata:meta \
         name:str package_dimensions:obj? shippable:bool? statement_descriptor:str? \
         tax_code:str? tax_details:obj? type:str unit_label:str? updated:ts url:str?",
    ),
    (
        "price",
        "How much and how often.",
        "id:str object:'price' active:bool billing_scheme:str created:ts currency:str \
         custom_unit_amount:obj? livemode:bool lookup_key:str? metadata:meta nickname:str? \
         product:exp:product recurring:obj? tax_behavior:str tiers_mode:str? \
         transform_quantity:obj? type:str unit_amount:int? unit_amount_decimal:str?",
    ),
    (
        "tax_rate",
        "A tax percentage.",
        "id:str object:'tax_rate' active:bool country:str? created:ts description:str? \
         display_name:str effective_percentage:any flat_amount:obj? inclusive:bool \
         jurisdiction:str? jurisdiction_level:str? livemode:bool metadata:meta percentage:any \
         rate_type:str? state:str? tax_type:str?",
    ),
    (
        "invoice",
        "A bill. Its subscription, if any, is under `parent.subscription_details`.",
        "id:str object:'invoice' account_country:str? account_name:str? account_tax_ids:arr? \
         amount_due:int amount_overpaid:int amount_paid:int amount_remaining:int \
         amount_shipping:int application:str? attempt_count:int attempted:bool \
         auto_advance:bool automatic_tax:obj automatically_finalizes_at:ts? billing_reason:str? \
         collection_method:str confirmation_secret:obj? created:ts currency:str \
         custom_fields:arr? customer:exp:customer customer_address:obj? customer_email:str? \
         customer_name:str? customer_phone:str? customer_shipping:obj? \
         customer_tax_exempt:str? customer_tax_ids:arr? default_payment_method:exp:payment_method? \
         default_source:str? default_tax_rates:arr description:str? discounts:arr due_date:ts? \
         effective_at:ts? ending_balance:int? footer:str? from_invoice:obj? \
         hosted_invoice_url:str? invoice_pdf:str? issuer:obj last_finalization_error:obj? \
         latest_revision:str? lines:list:line_item livemode:bool metadata:meta \
         next_payment_attempt:ts? number:str? on_behalf_of:str? paid:bool \
         paid_out_of_band:bool parent:obj? payment_settings:obj payments:list:invoice_payment \
         period_end:ts period_start:ts post_payment_credit_notes_amount:int \
         pre_payment_credit_notes_amount:int receipt_number:str? rendering:obj? \
         shipping_cost:obj? shipping_details:obj? starting_balance:int \
         statement_descriptor:str? status:str status_transitions:obj subtotal:int \
         subtotal_excluding_tax:int? test_clock:exp:test_helpers.test_clock? \
         threshold_reason:obj? total:int total_discount_amounts:arr? \
         total_excluding_tax:int? total_pretax_credit_amounts:arr? total_taxes:arr? \
         webhooks_delivered_at:ts?",
    ),
    (
        "line_item",
        "A line of an invoice.",
        "id:str object:'line_item' amount:int currency:str description:str? \
         discount_amounts:arr discountable:bool discounts:arr invoice:str? livemode:bool \
         metadata:meta parent:obj? period:obj pretax_credit_amounts:arr pricing:obj? \
         quantity:int? taxes:arr",
    ),
    (
        "invoice_payment",
        "A payment towards an invoice.",
        "id:str object:'invoice_payment' amount_paid:int? amount_requested:int created:ts \
         currency:str invoice:str is_default:bool livemode:bool payment:obj status:str \
         status_transitions:obj",
    ),
    (
        "invoiceitem",
        "A charge waiting for (or on) an invoice.",
        "id:str object:'invoiceitem' amount:int currency:str customer:exp:customer date:ts \
         description:str? discountable:bool discounts:arr invoice:exp:invoice? livemode:bool \
         metadata:meta net_amount:int parent:obj? period:obj pricing:obj? proration:bool \
         quantity:int tax_rates:arr test_clock:exp:test_helpers.test_clock?",
    ),
    (
        "subscription",
        "Recurring billing. Periods are on `items.data[]` (`current_period_start`/`_end`).",
        "id:str object:'subscription' application:str? application_fee_percent:any \
         automatic_tax:obj billing_cycle_anchor:ts billing_cycle_anchor_config:obj? \
         billing_thresholds:obj? cancel_at:ts? cancel_at_period_end:bool canceled_at:ts? \
         cancellation_details:obj collection_method:str created:ts currency:str \
         customer:exp:customer days_until_due:int? default_payment_method:exp:payment_method? \
         default_source:str? default_tax_rates:arr description:str? discounts:arr \
         ended_at:ts? invoice_settings:obj items:list:subscription_item \
         latest_invoice:exp:invoice? livemode:bool metadata:meta \
         next_pending_invoice_item_invoice:ts? on_behalf_of:str? pause_collection:obj? \
         payment_settings:obj? pending_invoice_item_interval:obj? pending_setup_intent:str? \
         pending_update:obj? schedule:str? start_date:ts status:str \
         test_clock:exp:test_helpers.test_clock? transfer_data:obj? trial_end:ts? \
         trial_settings:obj? trial_start:ts?",
    ),
    (
        "subscription_item",
        "A price on a subscription, with its current period.",
        "id:str object:'subscription_item' billing_thresholds:obj? created:ts \
         current_period_end:ts current_period_start:ts discounts:arr metadata:meta \
         price:obj quantity:int subscription:str tax_rates:arr",
    ),
    (
        "test_helpers.test_clock",
        "A test-mode clock customers can be put on.",
        "id:str object:'test_helpers.test_clock' created:ts deletes_after:ts frozen_time:ts \
         livemode:bool name:str? status:str status_details:obj",
    ),
    (
        "checkout.session",
        "A hosted checkout page (`url`) for a payment, a subscription or saving a card.",
        "id:str object:'checkout.session' amount_subtotal:int? amount_total:int? \
         cancel_url:str? client_reference_id:str? created:ts currency:str? \
         customer:exp:customer? customer_details:obj? customer_email:str? expires_at:ts \
         line_items:list:item livemode:bool metadata:meta mode:str \
         payment_intent:exp:payment_intent? payment_method_types:arr payment_status:str \
         setup_intent:str? status:str subscription:exp:subscription? success_url:str \
         ui_mode:str url:str?",
    ),
    (
        "item",
        "A line item of a Checkout Session.",
        "id:str object:'item' amount_discount:int amount_subtotal:int amount_tax:int \
         amount_total:int currency:str description:str? price:obj quantity:int",
    ),
    (
        "billing_portal.session",
        "A customer portal session: a short-lived link (`url`) to the hosted portal.",
        "id:str object:'billing_portal.session' configuration:str? created:ts customer:str \
         expires_at:ts flow:obj? livemode:bool locale:str? on_behalf_of:str? return_url:str? \
         url:str",
    ),
];

/// One field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub field_type: FieldType,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    String,
    Integer,
    Boolean,
    Timestamp,
    Object,
    Array,
    Metadata,
    Any,
    /// An id, or the object when expanded.
    Expandable(&'static str),
    /// A nested list object of this object type.
    List(&'static str),
    Constant(&'static str),
}

impl FieldType {
    /// How the docs name it.
    pub fn label(&self) -> String {
        match self {
            FieldType::String => "string".into(),
            FieldType::Integer => "integer".into(),
            FieldType::Boolean => "boolean".into(),
            FieldType::Timestamp => "timestamp".into(),
            FieldType::Object => "object".into(),
            FieldType::Array => "array".into(),
            FieldType::Metadata => "metadata".into(),
            FieldType::Any => "any".into(),
            FieldType::Expandable(object) => format!("id or {object} (expandable)"),
            FieldType::List(object) => format!("list of {object}"),
            FieldType::Constant(value) => format!("\"{value}\""),
        }
    }
}

/// The fields of a spec string. Panics on a malformed spec (a test parses every one).
pub fn fields(spec: &'static str) -> Vec<Field> {
    spec.split_whitespace()
        .map(|item| {
            let (name, kind) = item
                .split_once(':')
                .unwrap_or_else(|| panic!("`{item}`: name:type"));
            let (kind, nullable) = match kind.strip_suffix('?') {
                Some(kind) => (kind, true),
                None => (kind, false),
            };
            let field_type = match kind {
                "str" => FieldType::String,
                "int" => FieldType::Integer,
                "bool" => FieldType::Boolean,
                "ts" => FieldType::Timestamp,
                "obj" => FieldType::Object,
                "arr" => FieldType::Array,
                "meta" => FieldType::Metadata,
                "any" => FieldType::Any,
                _ => {
                    if let Some(object) = kind.strip_prefix("exp:") {
                        FieldType::Expandable(object)
                    } else if let Some(object) = kind.strip_prefix("list:") {
                        FieldType::List(object)
                    } else if let Some(value) =
                        kind.strip_prefix('\'').and_then(|k| k.strip_suffix('\''))
                    {
                        FieldType::Constant(value)
                    } else {
                        panic!("`{item}`: unknown type")
                    }
                }
            };
            Field {
                name,
                field_type,
                nullable,
            }
        })
        .collect()
}

/// The description and fields of an object type.
pub fn object(name: &str) -> Option<(&'static str, Vec<Field>)> {
    OBJECTS
        .iter()
        .find(|(object, _, _)| *object == name)
        .map(|(_, description, spec)| (*description, fields(spec)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::registry::ENDPOINTS;

    #[test]
    fn every_object_parses_and_names_itself() {
        for (name, _, spec) in OBJECTS {
            let fields = fields(spec);
            assert_eq!(fields[0].name, "id", "{name}");
            assert_eq!(fields[1].field_type, FieldType::Constant(name), "{name}");
            for field in &fields {
                if let FieldType::Expandable(other) | FieldType::List(other) = &field.field_type {
                    assert!(object(other).is_some(), "{name}.{}: {other}", field.name);
                }
            }
        }
    }

    #[test]
    fn every_endpoint_returns_a_described_object() {
        for endpoint in ENDPOINTS {
            assert!(
                object(endpoint.returns.object()).is_some(),
                "{}: {}",
                endpoint.path,
                endpoint.returns.object()
            );
        }
    }
}
