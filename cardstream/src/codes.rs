//! Response codes, transaction states, and the one table that turns a Cardstream response
//! code into a Stripe decline code (CARDSTREAM.md §1.5).

use std::fmt;

/// Cardstream's `responseCode`. 0–9999 are ISO-8583 authorisation codes (two-letter codes
/// folded into numbers); 65536 and up are the gateway's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    pub const SUCCESS: Self = Self(0);
    pub const CARD_REFERRED: Self = Self(1);
    pub const CARD_REFERRED_SPECIAL_CONDITION: Self = Self(2);
    pub const KEEP_CARD: Self = Self(4);
    pub const DO_NOT_HONOUR: Self = Self(5);
    pub const LOST_CARD: Self = Self(41);
    pub const STOLEN_CARD: Self = Self(43);
    pub const INSUFFICIENT_FUNDS: Self = Self(51);
    pub const EXPIRED_CARD: Self = Self(54);
    /// A soft decline: the issuer wants Strong Customer Authentication; retry with 3-D Secure.
    pub const SCA_REQUIRED: Self = Self(65);
    /// What a successful `VERIFY` may return instead of 0.
    pub const NO_REASON_TO_DECLINE: Self = Self(85);
    pub const SYSTEM_MALFUNCTION: Self = Self(96);
    /// `N7`, the CVV2 failure, as folded by `100 + 36·b36(c1) + b36(c2)`.
    pub const CVV_FAILURE: Self = Self(935);

    pub const INVALID_CREDENTIALS: Self = Self(65539);
    pub const ACTION_NOT_ALLOWED: Self = Self(65541);
    pub const REQUEST_MISMATCH: Self = Self(65542);
    pub const MALFORMED_REQUEST: Self = Self(65544);
    pub const CURRENCY_NOT_SUPPORTED: Self = Self(65546);
    pub const DUPLICATE_REQUEST: Self = Self(65554);
    pub const CARD_TYPE_NOT_SUPPORTED: Self = Self(65561);
    pub const REQUEST_EXPIRED: Self = Self(65564);
    pub const TEST_CARD_ON_LIVE_ACCOUNT: Self = Self(65566);
    pub const CANCELLED_ON_HOSTED_PAGE: Self = Self(65576);
    /// `0x1010A`: the cardholder must complete a 3-D Secure step in their browser.
    pub const THREE_DS_AUTHENTICATION_REQUIRED: Self = Self(65802);
    /// The 3-D Secure result does not meet the merchant's `threeDSCheckPref`.
    pub const THREE_DS_RESULT_NOT_ACCEPTED: Self = Self(65803);
    // Field errors: a missing field is `66048 + n`, an invalid one its missing code + 256.
    pub const INVALID_ACTION: Self = Self(66311);
    /// The guide says an amount outside the test ranges gives 66311 "Invalid Test Amount"
    /// although the arithmetic says 66312; we follow the guide (§1.10).
    pub const INVALID_TEST_AMOUNT: Self = Self(66311);
    pub const INVALID_AMOUNT: Self = Self(66312);
    pub const INVALID_CARD_NUMBER: Self = Self(66314);
    pub const INVALID_CARD_EXPIRY_MONTH: Self = Self(66315);
    pub const INVALID_CARD_EXPIRY_YEAR: Self = Self(66316);
    pub const INVALID_CARD_CVV: Self = Self(66320);
    pub const INVALID_XREF: Self = Self(66341);
    pub const MISSING_XREF: Self = Self(66341 - 256);
    pub const INVALID_SIGNATURE: Self = Self(66343);
    pub const MISSING_SIGNATURE: Self = Self(66343 - 256);
    pub const INVALID_CAPTURE_DELAY: Self = Self(66358);

    /// Folds a two-character letter code (`N7`, `5C`) into its number: `100 + 36·b36(c1) +
    /// b36(c2)`. Visa's `1A` (SCA required) is normalised to 65 as the gateway does.
    pub fn from_letter_code(code: &str) -> Option<Self> {
        if code.eq_ignore_ascii_case("1A") {
            return Some(Self::SCA_REQUIRED);
        }
        let mut characters = code.chars();
        let (first, second) = (characters.next()?, characters.next()?);
        if characters.next().is_some() {
            return None;
        }
        Some(Self(100 + 36 * first.to_digit(36)? + second.to_digit(36)?))
    }

    pub fn is_success(self) -> bool {
        self == Self::SUCCESS || self == Self::NO_REASON_TO_DECLINE
    }

    /// Codes 65536 and up come from the gateway itself rather than from the card issuer.
    pub fn is_gateway_code(self) -> bool {
        self.0 >= 65536
    }

    /// `responseStatus`: 0 approved, 1 declined, 2 error or malformed. 3-D Secure outcomes
    /// count as declines since they are about the cardholder, not the request.
    pub fn status(self) -> u8 {
        match self.0 {
            _ if self.is_success() => 0,
            1..=9999 | 65792..=65823 => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// The Stripe `decline_code` for a Cardstream response code, or `None` when the response is
/// not a decline of the card: a success, or the gateway refusing the request itself
/// (credentials, malformed fields, a management action in the wrong state), which the
/// payment API reports as an API error instead.
///
/// | Cardstream `responseCode` | Stripe `decline_code` |
/// |---|---|
/// | 0 approved, 85 no reason to decline | none |
/// | 1, 2 referral | `call_issuer` |
/// | 4 keep card, 7 pick up (fraud) | `pickup_card` |
/// | 5 do not honour (also AVS/CV2 and velocity rejections) | `generic_decline` |
/// | 6 error, 96 system malfunction | `processing_error` |
/// | 12, 57, 58 transaction not permitted; 93 violation of law; 5C not supported | `transaction_not_allowed` |
/// | 13 invalid amount | `invalid_amount` |
/// | 14 invalid card number, 15 no such issuer | `invalid_number` |
/// | 19 re-enter | `reenter_transaction` |
/// | 41 lost | `lost_card` |
/// | 43 stolen | `stolen_card` |
/// | 46 closed account, 78 no account | `invalid_account` |
/// | 51 insufficient funds | `insufficient_funds` |
/// | 54 expired | `expired_card` |
/// | 55 incorrect PIN | `incorrect_pin` |
/// | 59 suspected fraud | `fraudulent` |
/// | 61 over withdrawal limit | `card_velocity_exceeded` |
/// | 62 restricted | `restricted_card` |
/// | 63 security violation | `security_violation` |
/// | 65 SCA required (soft decline) | `authentication_required` |
/// | 75 PIN tries exceeded | `pin_try_exceeded` |
/// | 91, 92 issuer unavailable | `issuer_not_available` |
/// | 94 duplicate at issuer | `duplicate_transaction` |
/// | N7 (935) CVV2 failure | `incorrect_cvc` |
/// | 9G (440) blocked by cardholder | `do_not_try_again` |
/// | R0 (1072) stop payment | `stop_payment_order` |
/// | R1 (1073) revocation | `revocation_of_authorization` |
/// | R3 (1075) revoke all | `revocation_of_all_authorizations` |
/// | any other 1–9999 | `generic_decline` |
/// | 65546 currency not supported | `currency_not_supported` |
/// | 65554 duplicate request | `duplicate_transaction` |
/// | 65561 card type not supported | `card_not_supported` |
/// | 65566 test card on a live account | `testmode_decline` |
/// | 65792–65823 3-D Secure (65802 required, 65803 result refused) | `authentication_required`; for a failed challenge Stripe's error `code` is `payment_intent_authentication_failure` |
/// | 66311 invalid test amount, 66312 invalid amount | `invalid_amount` |
/// | 66314 invalid card number | `invalid_number` |
/// | 66315 / 66316 invalid expiry month / year | `invalid_expiry_month` / `invalid_expiry_year` |
/// | 66320 invalid CVV | `invalid_cvc` |
/// | any other gateway code | none |
pub fn stripe_decline_code(code: ResponseCode) -> Option<&'static str> {
    let decline_code = match code.0 {
        0 | 85 => return None,
        1 | 2 => "call_issuer",
        4 | 7 => "pickup_card",
        6 | 96 => "processing_error",
        12 | 57 | 58 | 93 | 292 => "transaction_not_allowed",
        13 => "invalid_amount",
        14 | 15 => "invalid_number",
        19 => "reenter_transaction",
        41 => "lost_card",
        43 => "stolen_card",
        46 | 78 => "invalid_account",
        51 => "insufficient_funds",
        54 => "expired_card",
        55 => "incorrect_pin",
        59 => "fraudulent",
        61 => "card_velocity_exceeded",
        62 => "restricted_card",
        63 => "security_violation",
        65 => "authentication_required",
        75 => "pin_try_exceeded",
        91 | 92 => "issuer_not_available",
        94 => "duplicate_transaction",
        935 => "incorrect_cvc",
        440 => "do_not_try_again",
        1072 => "stop_payment_order",
        1073 => "revocation_of_authorization",
        1075 => "revocation_of_all_authorizations",
        1..=9999 => "generic_decline",
        65546 => "currency_not_supported",
        65554 => "duplicate_transaction",
        65561 => "card_not_supported",
        65566 => "testmode_decline",
        65792..=65823 => "authentication_required",
        66311 | 66312 => "invalid_amount",
        66314 => "invalid_number",
        66315 => "invalid_expiry_month",
        66316 => "invalid_expiry_year",
        66320 => "invalid_cvc",
        _ => return None,
    };
    Some(decline_code)
}

/// A transaction's `state` (§1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    Received,
    /// Authorised and held, not yet captured: `CAPTURE` or `CANCEL` may follow.
    Approved,
    Verified,
    Declined,
    Referred,
    Reversed,
    /// Captured, waiting for the settlement run: `CANCEL` still works, `REFUND_SALE` not yet.
    Captured,
    /// Sent for settlement; can no longer be cancelled.
    Tendered,
    Deferred,
    /// Settled: only now is `REFUND_SALE` allowed.
    Accepted,
    Rejected,
    Canceled,
    Finished,
}

impl TransactionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Approved => "approved",
            Self::Verified => "verified",
            Self::Declined => "declined",
            Self::Referred => "referred",
            Self::Reversed => "reversed",
            Self::Captured => "captured",
            Self::Tendered => "tendered",
            Self::Deferred => "deferred",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Canceled => "canceled",
            Self::Finished => "finished",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "received" => Self::Received,
            "approved" => Self::Approved,
            "verified" => Self::Verified,
            "declined" => Self::Declined,
            "referred" => Self::Referred,
            "reversed" => Self::Reversed,
            "captured" => Self::Captured,
            "tendered" => Self::Tendered,
            "deferred" => Self::Deferred,
            "accepted" => Self::Accepted,
            "rejected" => Self::Rejected,
            // One "l" in the protocol; accept the other spelling rather than fail a recovery.
            "canceled" | "cancelled" => Self::Canceled,
            "finished" => Self::Finished,
            _ => return None,
        })
    }
}

impl fmt::Display for TransactionState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_codes_fold_as_documented() {
        assert_eq!(
            ResponseCode::from_letter_code("N7"),
            Some(ResponseCode(935))
        );
        assert_eq!(
            ResponseCode::from_letter_code("5C"),
            Some(ResponseCode(292))
        );
        assert_eq!(
            ResponseCode::from_letter_code("M1"),
            Some(ResponseCode(893))
        );
        assert_eq!(
            ResponseCode::from_letter_code("Z5"),
            Some(ResponseCode(1365))
        );
        assert_eq!(
            ResponseCode::from_letter_code("1A"),
            Some(ResponseCode::SCA_REQUIRED)
        );
    }

    #[test]
    fn decline_table_examples() {
        let table = [
            (0, None),
            (85, None),
            (1, Some("call_issuer")),
            (4, Some("pickup_card")),
            (5, Some("generic_decline")),
            (41, Some("lost_card")),
            (51, Some("insufficient_funds")),
            (65, Some("authentication_required")),
            (935, Some("incorrect_cvc")),
            (9999, Some("generic_decline")),
            (65554, Some("duplicate_transaction")),
            (65802, Some("authentication_required")),
            (65539, None),
            (66085, None),
        ];
        for (code, expected) in table {
            assert_eq!(
                stripe_decline_code(ResponseCode(code)),
                expected,
                "code {code}"
            );
        }
    }
}
