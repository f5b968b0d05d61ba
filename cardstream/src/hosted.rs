//! The Hosted payment page request: the signed field list our checkout page renders as a
//! form the cardholder's browser POSTs to the gateway (§1.8). The result comes back through
//! the browser to `redirectURL` and is checked with `Client::verify_hosted_response`.

use crate::client::{CaptureMode, CustomerDetails, StoredCardAgreement};
use crate::fields::Fields;

/// The Hosted integration supports only the basic payment actions (§1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostedAction {
    Sale,
    /// Zero amount: store the card without charging it.
    Verify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedPaymentRequest {
    pub action: HostedAction,
    /// Ignored (sent as 0) for `Verify`.
    pub amount_minor: u64,
    pub currency_code: String,
    pub transaction_unique: String,
    pub order_ref: Option<String>,
    /// Where the browser POSTs the signed result. Mandatory for Hosted.
    pub redirect_url: String,
    /// A server-to-server copy of the result; recommended, since the browser may never return.
    pub callback_url: Option<String>,
    pub capture: CaptureMode,
    pub customer: CustomerDetails,
    pub agreement: Option<StoredCardAgreement>,
}

impl HostedPaymentRequest {
    pub(crate) fn add_to(&self, fields: &mut Fields) {
        let (action, amount_minor) = match self.action {
            HostedAction::Sale => ("SALE", self.amount_minor),
            HostedAction::Verify => ("VERIFY", 0),
        };
        fields.set("action", action);
        fields.set("type", "1");
        fields.set("amount", amount_minor.to_string());
        fields.set("currencyCode", self.currency_code.to_ascii_uppercase());
        fields.set("transactionUnique", self.transaction_unique.clone());
        fields.set_optional("orderRef", self.order_ref.clone());
        fields.set("redirectURL", self.redirect_url.clone());
        fields.set_optional("callbackURL", self.callback_url.clone());
        if self.capture == CaptureMode::Manual && self.action == HostedAction::Sale {
            fields.set("captureDelay", "-1");
        }
        fields.set_optional(
            "rtAgreementType",
            self.agreement.map(StoredCardAgreement::as_str),
        );
        self.customer.add_to(fields);
    }
}

/// A signed Hosted form: render each field as `<input type="hidden">` in a form with
/// `method="post"` and `action=action_url`. Values may contain newlines (addresses); a
/// browser turns CR LF into LF, which the signature's line-ending normalisation absorbs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedPaymentForm {
    pub action_url: String,
    pub fields: Fields,
}
