//! Upcasters: how events stored in an older shape load as the current one. Events are
//! never rewritten in the store; each load passes them through here.
//!
//! History of shapes:
//! - `customer` / `CustomerCreated` 1.0 named the customer's name `full_name`; 2.0 calls it
//!   `name`, as Stripe does.

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

/// Every upcaster, in the order they apply.
pub fn all() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        "CustomerCreated",
        "2.0",
        Box::new(customer_created_full_name_to_name),
    ))]
}
