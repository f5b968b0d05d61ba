//! A payment method: a card tokenised at Cardstream. We keep what Stripe shows of a card
//! (brand, last 4, expiry, fingerprint) and the gateway's token (the `xref`); never the
//! number or the CVV.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::customer::Metadata;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSummary {
    /// Stripe's brand names: `visa`, `mastercard`, `amex`, …
    pub brand: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    /// `credit`, `debit`, `prepaid` or `unknown`.
    pub funding: String,
    /// Stable per card number within a project, never reversible to it.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub postal_code: Option<String>,
}

// Commands and events are short-lived values; boxing the card would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentMethodCommand {
    Create {
        payment_method_id: String,
        livemode: bool,
        card: CardSummary,
        gateway_token: String,
        billing_details: BillingDetails,
        metadata: Metadata,
        at: i64,
    },
    Attach {
        customer_id: String,
        at: i64,
    },
    Detach {
        at: i64,
    },
    UpdateMetadata {
        changes: std::collections::BTreeMap<String, Option<String>>,
        at: i64,
    },
    /// After a successful charge, the newest token: Cardstream chains repeat payments
    /// through the latest `xref`, which stays usable for 13 months from its transaction.
    /// A token less than [`TOKEN_REFRESH_SECONDS`] old is kept: a card charged for many
    /// subscriptions in one billing run then gets one event, not one per charge, and the
    /// stored token is never more than a day behind the newest.
    RefreshToken {
        gateway_token: String,
        at: i64,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentMethodEvent {
    PaymentMethodCreated {
        payment_method_id: String,
        livemode: bool,
        card: CardSummary,
        gateway_token: String,
        billing_details: BillingDetails,
        metadata: Metadata,
        created: i64,
    },
    PaymentMethodAttached {
        customer_id: String,
        at: i64,
    },
    PaymentMethodDetached {
        customer_id: String,
        at: i64,
    },
    PaymentMethodUpdated {
        metadata: std::collections::BTreeMap<String, Option<String>>,
        at: i64,
    },
    PaymentMethodTokenRefreshed {
        gateway_token: String,
        at: i64,
    },
}

impl DomainEvent for PaymentMethodEvent {
    fn event_type(&self) -> String {
        match self {
            PaymentMethodEvent::PaymentMethodCreated { .. } => "PaymentMethodCreated",
            PaymentMethodEvent::PaymentMethodAttached { .. } => "PaymentMethodAttached",
            PaymentMethodEvent::PaymentMethodDetached { .. } => "PaymentMethodDetached",
            PaymentMethodEvent::PaymentMethodUpdated { .. } => "PaymentMethodUpdated",
            PaymentMethodEvent::PaymentMethodTokenRefreshed { .. } => "PaymentMethodTokenRefreshed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentMethodError {
    #[error("payment method already exists")]
    AlreadyExists,
    #[error("no such payment method")]
    NotFound,
    #[error("the payment method is already attached to customer {0}")]
    AttachedElsewhere(String),
    #[error("the payment method is not attached to a customer")]
    NotAttached,
    #[error(
        "this PaymentMethod was previously detached from a Customer and may not be used again"
    )]
    Detached,
}

/// How old a card's stored token must be before a newer one replaces it (one day; the
/// token lives 13 months).
pub const TOKEN_REFRESH_SECONDS: i64 = 86_400;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    pub livemode: bool,
    pub card: Option<CardSummary>,
    pub gateway_token: String,
    pub billing_details: BillingDetails,
    pub metadata: Metadata,
    pub customer: Option<String>,
    pub created: i64,
    pub detached: bool,
    /// When the stored token was issued (created, or last refreshed).
    #[serde(default)]
    pub token_at: i64,
}

impl PaymentMethod {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// Whether a charge at `at` that came back with `gateway_token` leaves the stored token
    /// as it is ([`PaymentMethodCommand::RefreshToken`] decides nothing then).
    pub fn keeps_token(&self, gateway_token: &str, at: i64) -> bool {
        gateway_token == self.gateway_token
            || at < self.token_at.saturating_add(TOKEN_REFRESH_SECONDS)
    }

    /// Whether it can be charged now.
    pub fn usable(&self) -> bool {
        self.exists() && !self.detached
    }
}

impl Aggregate for PaymentMethod {
    const TYPE: &'static str = "payment_method";
    type Command = PaymentMethodCommand;
    type Event = PaymentMethodEvent;
    type Error = PaymentMethodError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            PaymentMethodCommand::Create {
                payment_method_id,
                livemode,
                card,
                gateway_token,
                billing_details,
                metadata,
                at,
            } => {
                if self.exists() {
                    return Err(PaymentMethodError::AlreadyExists);
                }
                PaymentMethodEvent::PaymentMethodCreated {
                    payment_method_id,
                    livemode,
                    card,
                    gateway_token,
                    billing_details,
                    metadata,
                    created: at,
                }
            }
            PaymentMethodCommand::Attach { customer_id, at } => {
                if !self.exists() {
                    return Err(PaymentMethodError::NotFound);
                }
                if self.detached {
                    return Err(PaymentMethodError::Detached);
                }
                match &self.customer {
                    // Attaching to the same customer again is a no-op, as at Stripe.
                    Some(current) if *current == customer_id => return Ok(()),
                    Some(current) => {
                        return Err(PaymentMethodError::AttachedElsewhere(current.clone()))
                    }
                    None => PaymentMethodEvent::PaymentMethodAttached { customer_id, at },
                }
            }
            PaymentMethodCommand::Detach { at } => {
                if !self.exists() {
                    return Err(PaymentMethodError::NotFound);
                }
                let customer_id = self
                    .customer
                    .clone()
                    .ok_or(PaymentMethodError::NotAttached)?;
                PaymentMethodEvent::PaymentMethodDetached { customer_id, at }
            }
            PaymentMethodCommand::UpdateMetadata { changes, at } => {
                if !self.exists() {
                    return Err(PaymentMethodError::NotFound);
                }
                PaymentMethodEvent::PaymentMethodUpdated {
                    metadata: changes,
                    at,
                }
            }
            PaymentMethodCommand::RefreshToken { gateway_token, at } => {
                if !self.exists() {
                    return Err(PaymentMethodError::NotFound);
                }
                if self.keeps_token(&gateway_token, at) {
                    return Ok(());
                }
                PaymentMethodEvent::PaymentMethodTokenRefreshed { gateway_token, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentMethodEvent::PaymentMethodCreated {
                payment_method_id,
                livemode,
                card,
                gateway_token,
                billing_details,
                metadata,
                created,
            } => {
                self.id = payment_method_id;
                self.livemode = livemode;
                self.card = Some(card);
                self.gateway_token = gateway_token;
                self.billing_details = billing_details;
                self.metadata = metadata;
                self.created = created;
                self.token_at = created;
            }
            PaymentMethodEvent::PaymentMethodAttached { customer_id, .. } => {
                self.customer = Some(customer_id);
            }
            PaymentMethodEvent::PaymentMethodDetached { .. } => {
                self.customer = None;
                self.detached = true;
            }
            PaymentMethodEvent::PaymentMethodUpdated { metadata, .. } => {
                crate::customer::apply_metadata_changes(&mut self.metadata, &metadata, false);
            }
            PaymentMethodEvent::PaymentMethodTokenRefreshed { gateway_token, at } => {
                self.gateway_token = gateway_token;
                self.token_at = at;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn created() -> PaymentMethodEvent {
        PaymentMethodEvent::PaymentMethodCreated {
            payment_method_id: "pm_1".into(),
            livemode: false,
            card: CardSummary {
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2030,
                funding: "credit".into(),
                fingerprint: "fp".into(),
            },
            gateway_token: "xref1".into(),
            billing_details: BillingDetails::default(),
            metadata: Metadata::new(),
            created: 1,
        }
    }

    #[test]
    fn attach_once_then_detach_for_good() {
        let attached = PaymentMethodEvent::PaymentMethodAttached {
            customer_id: "cus_1".into(),
            at: 2,
        };
        TestFramework::<PaymentMethod>::with(())
            .given(vec![created()])
            .when(PaymentMethodCommand::Attach {
                customer_id: "cus_1".into(),
                at: 2,
            })
            .then_expect_events(vec![attached.clone()]);
        TestFramework::<PaymentMethod>::with(())
            .given(vec![created(), attached.clone()])
            .when(PaymentMethodCommand::Attach {
                customer_id: "cus_2".into(),
                at: 3,
            })
            .then_expect_error(PaymentMethodError::AttachedElsewhere("cus_1".into()));
        TestFramework::<PaymentMethod>::with(())
            .given(vec![
                created(),
                attached,
                PaymentMethodEvent::PaymentMethodDetached {
                    customer_id: "cus_1".into(),
                    at: 3,
                },
            ])
            .when(PaymentMethodCommand::Attach {
                customer_id: "cus_1".into(),
                at: 4,
            })
            .then_expect_error(PaymentMethodError::Detached);
    }

    #[test]
    fn a_newer_token_replaces_one_a_day_old_and_not_sooner() {
        let refresh = |token: &str, at: i64| PaymentMethodCommand::RefreshToken {
            gateway_token: token.into(),
            at,
        };
        // Created at 1: a token an hour later is not worth an event.
        TestFramework::<PaymentMethod>::with(())
            .given(vec![created()])
            .when(refresh("xref2", 3_601))
            .then_expect_events(vec![]);
        // A day later it is, and the day counts again from the refresh.
        let refreshed = PaymentMethodEvent::PaymentMethodTokenRefreshed {
            gateway_token: "xref2".into(),
            at: 1 + TOKEN_REFRESH_SECONDS,
        };
        TestFramework::<PaymentMethod>::with(())
            .given(vec![created()])
            .when(refresh("xref2", 1 + TOKEN_REFRESH_SECONDS))
            .then_expect_events(vec![refreshed.clone()]);
        TestFramework::<PaymentMethod>::with(())
            .given(vec![created(), refreshed.clone()])
            .when(refresh("xref3", TOKEN_REFRESH_SECONDS + 100))
            .then_expect_events(vec![]);
        TestFramework::<PaymentMethod>::with(())
            .given(vec![created(), refreshed])
            .when(refresh("xref3", 1 + 2 * TOKEN_REFRESH_SECONDS))
            .then_expect_events(vec![PaymentMethodEvent::PaymentMethodTokenRefreshed {
                gateway_token: "xref3".into(),
                at: 1 + 2 * TOKEN_REFRESH_SECONDS,
            }]);
    }
}
