//! Invoice items (`ii_…`): a charge or credit for a customer that waits for an invoice.
//! Created on a draft invoice directly, or pending (no invoice yet) until the customer's
//! next invoice picks it up — which is how subscription prorations reach the next renewal.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::Metadata;
use crate::money::Currency;
use crate::tax::AppliedRate;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInvoiceItem {
    pub invoice_item_id: String,
    pub customer: String,
    pub currency: Currency,
    pub amount: i64,
    pub quantity: i64,
    #[serde(default)]
    pub unit_amount: Option<i64>,
    pub description: String,
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub subscription_item: Option<String>,
    #[serde(default)]
    pub proration: bool,
    pub period_start: i64,
    pub period_end: i64,
    #[serde(default)]
    pub tax_rates: Vec<AppliedRate>,
    #[serde(default)]
    pub metadata: Metadata,
    /// A draft invoice to join at once; `None` leaves the item pending.
    #[serde(default)]
    pub invoice: Option<String>,
    /// The invoice line it becomes (`il_…`).
    pub line_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceItemCommand {
    Create {
        item: Box<NewInvoiceItem>,
        at: i64,
    },
    /// A pending item joins `invoice`.
    Invoice {
        invoice: String,
        at: i64,
    },
    Delete {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceItemEvent {
    InvoiceItemCreated {
        item: Box<NewInvoiceItem>,
        created: i64,
    },
    InvoiceItemInvoiced {
        invoice: String,
        at: i64,
    },
    InvoiceItemDeleted {
        at: i64,
    },
}

impl DomainEvent for InvoiceItemEvent {
    fn event_type(&self) -> String {
        match self {
            InvoiceItemEvent::InvoiceItemCreated { .. } => "InvoiceItemCreated",
            InvoiceItemEvent::InvoiceItemInvoiced { .. } => "InvoiceItemInvoiced",
            InvoiceItemEvent::InvoiceItemDeleted { .. } => "InvoiceItemDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceItemError {
    #[error("invoice item already exists")]
    AlreadyExists,
    #[error("no such invoice item")]
    NotFound,
    #[error("This invoice item is already on invoice {0}.")]
    AlreadyInvoiced(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceItem {
    pub item: Option<NewInvoiceItem>,
    pub invoice: Option<String>,
    pub created: i64,
    pub deleted: bool,
}

impl InvoiceItem {
    pub fn exists(&self) -> bool {
        self.item.is_some() && !self.deleted
    }

    pub fn id(&self) -> &str {
        self.item
            .as_ref()
            .map_or("", |item| item.invoice_item_id.as_str())
    }
}

impl Aggregate for InvoiceItem {
    const TYPE: &'static str = "invoice_item";
    type Command = InvoiceItemCommand;
    type Event = InvoiceItemEvent;
    type Error = InvoiceItemError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            InvoiceItemCommand::Create { item, at } => {
                if self.item.is_some() {
                    return Err(InvoiceItemError::AlreadyExists);
                }
                sink.write(
                    InvoiceItemEvent::InvoiceItemCreated { item, created: at },
                    self,
                )
                .await;
            }
            InvoiceItemCommand::Invoice { invoice, at } => {
                if !self.exists() {
                    return Err(InvoiceItemError::NotFound);
                }
                if let Some(current) = &self.invoice {
                    return Err(InvoiceItemError::AlreadyInvoiced(current.clone()));
                }
                sink.write(InvoiceItemEvent::InvoiceItemInvoiced { invoice, at }, self)
                    .await;
            }
            InvoiceItemCommand::Delete { at } => {
                if !self.exists() {
                    return Err(InvoiceItemError::NotFound);
                }
                if let Some(current) = &self.invoice {
                    return Err(InvoiceItemError::AlreadyInvoiced(current.clone()));
                }
                sink.write(InvoiceItemEvent::InvoiceItemDeleted { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InvoiceItemEvent::InvoiceItemCreated { item, created } => {
                self.invoice = item.invoice.clone();
                self.item = Some(*item);
                self.created = created;
            }
            InvoiceItemEvent::InvoiceItemInvoiced { invoice, .. } => self.invoice = Some(invoice),
            InvoiceItemEvent::InvoiceItemDeleted { .. } => self.deleted = true,
        }
    }
}
