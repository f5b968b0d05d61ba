//! `calmony ledger replay`: an aggregate's state as of a moment, rebuilt from its events.

use cqrs_es::Aggregate;
use domain::checkout_session::CheckoutSession;
use domain::customer::Customer;
use domain::invoice::Invoice;
use domain::invoice_item::InvoiceItem;
use domain::operator::Operator;
use domain::payment_intent::PaymentIntent;
use domain::payment_method::PaymentMethod;
use domain::price::Price;
use domain::product::Product;
use domain::project::Project;
use domain::settlement::{BankCredit, Settlement};
use domain::subscription::Subscription;
use domain::tax_rate::TaxRate;
use domain::test_clock::TestClock;
use domain::webhook_endpoint::WebhookEndpoint;
use event_store::store::AsOf;

use crate::execute::{CommandBus, CommandError};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("unknown stream type {0:?} (known: {known})", known = KNOWN_TYPES.join(", "))]
    UnknownType(String),
    #[error("{0}")]
    Load(String),
}

/// Every aggregate type that can be replayed.
pub const KNOWN_TYPES: &[&str] = &[
    BankCredit::TYPE,
    CheckoutSession::TYPE,
    Customer::TYPE,
    Invoice::TYPE,
    InvoiceItem::TYPE,
    Operator::TYPE,
    PaymentIntent::TYPE,
    PaymentMethod::TYPE,
    Price::TYPE,
    Product::TYPE,
    Project::TYPE,
    Settlement::TYPE,
    Subscription::TYPE,
    TaxRate::TYPE,
    TestClock::TYPE,
    WebhookEndpoint::TYPE,
];

/// The state of `aggregate_type/aggregate_id` as of `as_of`, as JSON, with the version it
/// had then.
pub async fn replay(
    bus: &CommandBus,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: AsOf,
) -> Result<(serde_json::Value, i64), ReplayError> {
    match aggregate_type {
        BankCredit::TYPE => state_of::<BankCredit>(bus, aggregate_id, as_of).await,
        CheckoutSession::TYPE => state_of::<CheckoutSession>(bus, aggregate_id, as_of).await,
        Customer::TYPE => state_of::<Customer>(bus, aggregate_id, as_of).await,
        Invoice::TYPE => state_of::<Invoice>(bus, aggregate_id, as_of).await,
        InvoiceItem::TYPE => state_of::<InvoiceItem>(bus, aggregate_id, as_of).await,
        Operator::TYPE => state_of::<Operator>(bus, aggregate_id, as_of).await,
        PaymentIntent::TYPE => state_of::<PaymentIntent>(bus, aggregate_id, as_of).await,
        PaymentMethod::TYPE => state_of::<PaymentMethod>(bus, aggregate_id, as_of).await,
        Price::TYPE => state_of::<Price>(bus, aggregate_id, as_of).await,
        Product::TYPE => state_of::<Product>(bus, aggregate_id, as_of).await,
        Project::TYPE => state_of::<Project>(bus, aggregate_id, as_of).await,
        Settlement::TYPE => state_of::<Settlement>(bus, aggregate_id, as_of).await,
        Subscription::TYPE => state_of::<Subscription>(bus, aggregate_id, as_of).await,
        TaxRate::TYPE => state_of::<TaxRate>(bus, aggregate_id, as_of).await,
        TestClock::TYPE => state_of::<TestClock>(bus, aggregate_id, as_of).await,
        WebhookEndpoint::TYPE => state_of::<WebhookEndpoint>(bus, aggregate_id, as_of).await,
        other => Err(ReplayError::UnknownType(other.to_string())),
    }
}

async fn state_of<A: Aggregate>(
    bus: &CommandBus,
    aggregate_id: &str,
    as_of: AsOf,
) -> Result<(serde_json::Value, i64), ReplayError> {
    let (aggregate, version) = bus
        .load::<A>(aggregate_id, as_of)
        .await
        .map_err(|error: CommandError<A::Error>| ReplayError::Load(error.to_string()))?;
    let state =
        serde_json::to_value(&aggregate).map_err(|error| ReplayError::Load(error.to_string()))?;
    Ok((state, version))
}
