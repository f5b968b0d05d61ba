//! Upcasters: how events stored in an older shape load as the current one. Events are
//! never rewritten in the store; each load passes them through here.
//!
//! History of shapes:
//! - `customer` / `CustomerCreated` 1.0 named the customer's name `full_name`; 2.0 calls it
//!   `name`, as Stripe does.
//! - `checkout_session` / `CheckoutSessionReturnAccepted` 1.0 held only `at`; 1.1 adds
//!   `result` (the card and the ids completing the session makes). A 1.0 event reads with
//!   `result: null`: accepted, with nothing to finish it from.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use serde_json::Value;

fn customer_created_full_name_to_name(mut payload: Value) -> Value {
    if let Some(body) = payload
        .get_mut("CustomerCreated")
        .and_then(Value::as_object_mut)
    {
        if let Some(full_name) = body.remove("full_name") {
            body.insert("name".to_string(), full_name);
        }
    }
    payload
}

fn checkout_return_accepted_without_result(mut payload: Value) -> Value {
    if let Some(body) = payload
        .get_mut("CheckoutSessionReturnAccepted")
        .and_then(Value::as_object_mut)
    {
        body.entry("result").or_insert(Value::Null);
    }
    payload
}

/// Every upcaster, in the order they apply.
pub fn all() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(SemanticVersionEventUpcaster::new(
            "CustomerCreated",
            "2.0",
            Box::new(customer_created_full_name_to_name),
        )),
        Box::new(SemanticVersionEventUpcaster::new(
            "CheckoutSessionReturnAccepted",
            "1.1",
            Box::new(checkout_return_accepted_without_result),
        )),
    ]
}
