//! A verified gateway response and its typed outcome.

use crate::codes::{stripe_decline_code, ResponseCode, TransactionState};
use crate::fields::Fields;

/// A response whose signature has been checked, holding only the fields the signature
/// covers. Unknown fields are kept: the gateway adds fields over time (§0.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayResponse {
    fields: Fields,
    response_code: ResponseCode,
}

/// Why a verified message is not a usable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed gateway response: {reason}")]
pub struct MalformedResponse {
    pub reason: String,
}

impl GatewayResponse {
    pub fn from_verified_fields(fields: Fields) -> Result<Self, MalformedResponse> {
        let text = fields
            .get("responseCode")
            .ok_or_else(|| MalformedResponse {
                reason: "no responseCode".to_string(),
            })?;
        let code = text.trim().parse::<u32>().map_err(|_| MalformedResponse {
            reason: format!("responseCode {text:?} is not a number"),
        })?;
        Ok(Self {
            fields,
            response_code: ResponseCode(code),
        })
    }

    pub fn response_code(&self) -> ResponseCode {
        self.response_code
    }

    pub fn message(&self) -> &str {
        self.get("responseMessage").unwrap_or("")
    }

    /// What the payment API should do next.
    pub fn outcome(&self) -> Outcome {
        let code = self.response_code;
        if code.is_success() {
            return Outcome::Approved;
        }
        if code == ResponseCode::THREE_DS_AUTHENTICATION_REQUIRED {
            if let (Some(three_ds_ref), Some(url)) = (
                self.fields.get_non_empty("threeDSRef"),
                self.fields.get_non_empty("threeDSURL"),
            ) {
                return Outcome::ThreeDSecureRequired(ThreeDSecureChallenge {
                    three_ds_ref: three_ds_ref.to_string(),
                    url: url.to_string(),
                    request_fields: self.fields.record("threeDSRequest"),
                });
            }
            return Outcome::Rejected {
                response_code: code,
                message: "3-D Secure required but threeDSRef or threeDSURL is missing".to_string(),
            };
        }
        if code == ResponseCode::DUPLICATE_REQUEST {
            return Outcome::Duplicate;
        }
        match stripe_decline_code(code) {
            Some(decline_code) => Outcome::Declined(Decline {
                response_code: code,
                decline_code,
                message: self.message().to_string(),
            }),
            None => Outcome::Rejected {
                response_code: code,
                message: self.message().to_string(),
            },
        }
    }

    pub fn xref(&self) -> Option<&str> {
        self.fields.get_non_empty("xref")
    }

    pub fn transaction_id(&self) -> Option<&str> {
        self.fields.get_non_empty("transactionID")
    }

    pub fn transaction_unique(&self) -> Option<&str> {
        self.fields.get_non_empty("transactionUnique")
    }

    /// The `action` as returned: `SALE`, or `REQUESTED:ORIGINAL` (`CAPTURE:SALE`) for a
    /// management action.
    pub fn action(&self) -> Option<&str> {
        self.fields.get_non_empty("action")
    }

    pub fn state(&self) -> Option<TransactionState> {
        self.fields.get("state").and_then(TransactionState::parse)
    }

    pub fn authorisation_code(&self) -> Option<&str> {
        self.fields.get_non_empty("authorisationCode")
    }

    pub fn amount_minor(&self) -> Option<u64> {
        self.amount_field("amount")
    }

    pub fn amount_received_minor(&self) -> Option<u64> {
        self.amount_field("amountReceived")
    }

    pub fn amount_refunded_minor(&self) -> Option<u64> {
        self.amount_field("amountRefunded")
    }

    pub fn card_number_mask(&self) -> Option<&str> {
        self.fields.get_non_empty("cardNumberMask")
    }

    /// The last four digits from `cardNumberMask`.
    pub fn card_last4(&self) -> Option<&str> {
        let mask = self.card_number_mask()?;
        mask.get(mask.len().checked_sub(4)?..)
    }

    pub fn card_scheme(&self) -> Option<&str> {
        self.fields.get_non_empty("cardScheme")
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    fn amount_field(&self, name: &str) -> Option<u64> {
        let exponent = self
            .fields
            .get("currencyExponent")
            .and_then(|text| text.parse::<u32>().ok())
            .unwrap_or(2);
        parse_amount_minor(self.fields.get_non_empty(name)?, exponent)
    }
}

/// The typed result of a Direct request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 0, or 85 for a `VERIFY`.
    Approved,
    /// The issuer (or the gateway on its behalf) declined the card.
    Declined(Decline),
    /// 65802: send the cardholder's browser through the challenge, then call
    /// `Client::continue_three_d_secure`.
    ThreeDSecureRequired(ThreeDSecureChallenge),
    /// 65554: the same request was seen within `duplicateDelay`. The first one's outcome is
    /// found with `Client::query_by_transaction_unique` or by xref.
    Duplicate,
    /// The gateway refused the request itself (credentials, fields, a management action in
    /// the wrong state): our fault or our configuration, not the card's.
    Rejected {
        response_code: ResponseCode,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub response_code: ResponseCode,
    /// Stripe's `decline_code`, from [`stripe_decline_code`].
    pub decline_code: &'static str,
    pub message: String,
}

/// What the cardholder's browser must POST, and where (§1.7 step 2). `request_fields` are
/// the sub-fields of `threeDSRequest`, posted under their own names (`creq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreeDSecureChallenge {
    /// Opaque; send it back with the continuation.
    pub three_ds_ref: String,
    /// The ACS address the browser posts `request_fields` to.
    pub url: String,
    pub request_fields: Vec<(String, String)>,
}

/// Parses an amount as the protocol allows it: minor units (`1099`), or major units when it
/// contains one decimal point (`10.99`).
pub fn parse_amount_minor(text: &str, exponent: u32) -> Option<u64> {
    match text.split_once('.') {
        None => text.parse().ok(),
        Some((major, fraction)) => {
            if fraction.len() > exponent as usize
                || !fraction.bytes().all(|byte| byte.is_ascii_digit())
            {
                return None;
            }
            let scale = 10u64.checked_pow(exponent)?;
            let major: u64 = if major.is_empty() {
                0
            } else {
                major.parse().ok()?
            };
            let padded = format!("{fraction:0<width$}", width = exponent as usize);
            let fraction: u64 = if padded.is_empty() {
                0
            } else {
                padded.parse().ok()?
            };
            major.checked_mul(scale)?.checked_add(fraction)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_in_minor_or_major_units() {
        assert_eq!(parse_amount_minor("1099", 2), Some(1099));
        assert_eq!(parse_amount_minor("10.99", 2), Some(1099));
        assert_eq!(parse_amount_minor("10.9", 2), Some(1090));
        assert_eq!(parse_amount_minor("10.999", 2), None);
        assert_eq!(parse_amount_minor("-5", 2), None);
        assert_eq!(parse_amount_minor("1.2.3", 2), None);
    }

    #[test]
    fn outcome_follows_the_code() {
        let response = |code: &str| {
            GatewayResponse::from_verified_fields([("responseCode", code)].into_iter().collect())
                .expect("has a response code")
        };
        assert_eq!(response("0").outcome(), Outcome::Approved);
        assert_eq!(response("65554").outcome(), Outcome::Duplicate);
        assert!(matches!(
            response("51").outcome(),
            Outcome::Declined(Decline {
                decline_code: "insufficient_funds",
                ..
            })
        ));
        assert!(matches!(
            response("65539").outcome(),
            Outcome::Rejected { .. }
        ));
        assert!(GatewayResponse::from_verified_fields(Fields::new()).is_err());
    }
}
