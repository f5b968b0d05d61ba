//! Test cards: Cardstream's published ones (§1.10), which all approve, and the cards the
//! simulator gives a fixed outcome, each tied to a Stripe test payment method id.
//!
//! Calmony's test mode follows the card, not the amount (STRIPE-CONVENTIONS.md, "Calmony
//! decisions"): the payment API turns `pm_card_chargeDeclined` into the card below, sends it
//! through the simulator, and the simulator declines it whatever the amount. The behaviour
//! cards use Stripe's own test numbers, so a Stripe user's `4000000000000002` behaves as on
//! Stripe, and every card of Cardstream's own table keeps approving as the guide says.
//!
//! | Stripe test id | card number | CVV | simulator outcome |
//! |---|---|---|---|
//! | `pm_card_visa` | 4929421234600821 (Visa Credit) | 356 | approves everything |
//! | `pm_card_mastercard` | 5301250070000191 (MC Credit) | 419 | approves everything |
//! | `pm_card_amex` | 374245455400001 (Amex) | 4887 | approves everything |
//! | `pm_card_chargeDeclined` | 4000000000000002 (Visa) | 123 | VERIFY and SALE: 5 CARD DECLINED → `generic_decline` |
//! | `pm_card_chargeDeclinedInsufficientFunds` | 4000000000009995 (Visa) | 123 | VERIFY approves (it checks no funds); SALE: 51 → `insufficient_funds` |
//! | `pm_card_chargeCustomerFail` | 4000000000000341 (Visa) | 123 | VERIFY approves (attaches fine); every SALE: 5 → `generic_decline` |
//! | `pm_card_authenticationRequired` | 4000002760003184 (Visa) | 123 | 3-D Secure challenge on every customer-initiated SALE or VERIFY that can run it (Direct with `threeDSRedirectURL`, or Hosted); the tester picks pass (→ 0) or fail (→ 65803). Without a browser: VERIFY approves, SALE gives 65 SCA REQUIRED → `authentication_required` (merchant-initiated repeats too, as Stripe's card does off-session) |
//!
//! Further behaviour cards without a Stripe id: 4000000000000010 refers (1 CARD REFERRED, or
//! 0 when an `authorisationCode` is sent), 4000000000000044 keep card (4 → `pickup_card`),
//! 4000000000009987 lost (41), 4000000000009979 stolen (43), 4000000000000069 expired (54),
//! 4000000000000127 CVV2 failure (N7 = 935 → `incorrect_cvc`), 4000000000000119 system
//! malfunction (96 → `processing_error`). Any other Luhn-valid number approves.

use crate::card::CardBrand;
use crate::codes::ResponseCode;

/// What the simulator does with a card (outside strict test-amount mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardBehaviour {
    Approve,
    /// Every VERIFY and SALE is declined with this code.
    Decline(ResponseCode),
    /// VERIFY approves; every SALE (and PREAUTH) is declined with this code.
    DeclineCharges(ResponseCode),
    /// 1 CARD REFERRED unless the request carries an `authorisationCode`.
    Refer,
    /// Customer-initiated payments need a 3-D Secure challenge.
    RequireThreeDSecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestCard {
    pub number: &'static str,
    pub cvv: &'static str,
    pub brand: CardBrand,
    pub debit: bool,
    /// The Stripe test payment method this card stands for, if any.
    pub stripe_payment_method: Option<&'static str>,
    pub behaviour: CardBehaviour,
}

const fn card(
    number: &'static str,
    cvv: &'static str,
    brand: CardBrand,
    debit: bool,
    stripe_payment_method: Option<&'static str>,
    behaviour: CardBehaviour,
) -> TestCard {
    TestCard {
        number,
        cvv,
        brand,
        debit,
        stripe_payment_method,
        behaviour,
    }
}

use CardBehaviour::{Approve, Decline, DeclineCharges, Refer, RequireThreeDSecure};
use CardBrand::{Amex, Diners, Jcb, Maestro, Mastercard, Visa};

/// Every card the simulator knows by number.
pub const TEST_CARDS: &[TestCard] = &[
    // Cardstream's published test cards (§1.10): all approve.
    card(
        "4929421234600821",
        "356",
        Visa,
        false,
        Some("pm_card_visa"),
        Approve,
    ),
    card("4543059999999982", "110", Visa, false, None, Approve),
    card("4543059999999990", "689", Visa, false, None, Approve),
    card("4539791001730106", "289", Visa, true, None, Approve),
    card("4462000000000003", "672", Visa, true, None, Approve),
    card("4917480000000008", "009", Visa, true, None, Approve),
    card(
        "5301250070000191",
        "419",
        Mastercard,
        false,
        Some("pm_card_mastercard"),
        Approve,
    ),
    card("5413339000001000", "304", Mastercard, false, None, Approve),
    card("5434849999999951", "470", Mastercard, false, None, Approve),
    card("5434849999999993", "557", Mastercard, false, None, Approve),
    card("5573471234567898", "159", Mastercard, true, None, Approve),
    card("6759015050123445002", "309", Maestro, true, None, Approve),
    card("6759016800000120097", "701", Maestro, true, None, Approve),
    card("3540599999991047", "209", Jcb, false, None, Approve),
    card(
        "374245455400001",
        "4887",
        Amex,
        false,
        Some("pm_card_amex"),
        Approve,
    ),
    card("36432685260294", "111", Diners, false, None, Approve),
    card("4012001037141112", "083", Visa, false, None, Approve),
    // Behaviour cards (Stripe's test numbers where Stripe has one).
    card(
        "4000000000000002",
        "123",
        Visa,
        false,
        Some("pm_card_chargeDeclined"),
        Decline(ResponseCode::DO_NOT_HONOUR),
    ),
    card(
        "4000000000009995",
        "123",
        Visa,
        false,
        Some("pm_card_chargeDeclinedInsufficientFunds"),
        DeclineCharges(ResponseCode::INSUFFICIENT_FUNDS),
    ),
    card(
        "4000000000000341",
        "123",
        Visa,
        false,
        Some("pm_card_chargeCustomerFail"),
        DeclineCharges(ResponseCode::DO_NOT_HONOUR),
    ),
    card(
        "4000002760003184",
        "123",
        Visa,
        false,
        Some("pm_card_authenticationRequired"),
        RequireThreeDSecure,
    ),
    card("4000000000000010", "123", Visa, false, None, Refer),
    card(
        "4000000000000044",
        "123",
        Visa,
        false,
        None,
        Decline(ResponseCode::KEEP_CARD),
    ),
    card(
        "4000000000009987",
        "123",
        Visa,
        false,
        None,
        DeclineCharges(ResponseCode::LOST_CARD),
    ),
    card(
        "4000000000009979",
        "123",
        Visa,
        false,
        None,
        DeclineCharges(ResponseCode::STOLEN_CARD),
    ),
    card(
        "4000000000000069",
        "123",
        Visa,
        false,
        None,
        Decline(ResponseCode::EXPIRED_CARD),
    ),
    card(
        "4000000000000127",
        "123",
        Visa,
        false,
        None,
        Decline(ResponseCode::CVV_FAILURE),
    ),
    card(
        "4000000000000119",
        "123",
        Visa,
        false,
        None,
        DeclineCharges(ResponseCode::SYSTEM_MALFUNCTION),
    ),
];

/// The card standing for a Stripe test payment method id such as `pm_card_visa`.
pub fn for_payment_method(payment_method: &str) -> Option<&'static TestCard> {
    TEST_CARDS
        .iter()
        .find(|card| card.stripe_payment_method == Some(payment_method))
}

/// The test card with this number (spaces ignored), if the simulator knows it.
pub fn by_number(number: &str) -> Option<&'static TestCard> {
    let digits: String = number
        .chars()
        .filter(|character| *character != ' ')
        .collect();
    TEST_CARDS.iter().find(|card| card.number == digits)
}

/// The simulator's behaviour for any card number: unknown numbers approve.
pub fn behaviour_of(number: &str) -> CardBehaviour {
    by_number(number).map_or(CardBehaviour::Approve, |card| card.behaviour)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::luhn_valid;

    #[test]
    fn every_test_card_is_valid_and_named_once() {
        for card in TEST_CARDS {
            assert!(luhn_valid(card.number), "{} fails Luhn", card.number);
            assert_eq!(
                CardBrand::detect(card.number),
                card.brand,
                "{}",
                card.number
            );
        }
        for id in [
            "pm_card_visa",
            "pm_card_mastercard",
            "pm_card_amex",
            "pm_card_chargeDeclined",
            "pm_card_chargeDeclinedInsufficientFunds",
            "pm_card_chargeCustomerFail",
            "pm_card_authenticationRequired",
        ] {
            assert!(for_payment_method(id).is_some(), "{id} has no card");
        }
    }
}
