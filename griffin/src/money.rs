//! Griffin's money: `{"currency":"GBP","value":"1000.00"}`, a decimal string, GBP only.
//! We hold it as integer minor units (pence) and convert with `rust_decimal`, never through
//! a float, so "0.10" is exactly 10 and "92233720368547758.07" is exactly `i64::MAX`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The only currency Griffin holds.
pub const GBP: &str = "GBP";

/// Minor units per major unit for GBP.
const MINOR_PER_MAJOR: i64 = 100;
/// Decimal places of a GBP amount.
const GBP_SCALE: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("{0:?} is not a decimal amount")]
    NotDecimal(String),
    #[error("{0:?} has more than two decimal places")]
    TooPrecise(String),
    #[error("{0:?} does not fit in 64-bit minor units")]
    OutOfRange(String),
    #[error("currency {0:?} is not GBP")]
    UnsupportedCurrency(String),
}

/// An amount of money as Griffin sends it, held in minor units. Transaction values are always
/// positive (the direction is separate); balances may be negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Money {
    pub amount_minor: i64,
}

impl Money {
    pub const ZERO: Money = Money { amount_minor: 0 };

    pub fn gbp_minor(amount_minor: i64) -> Self {
        Self { amount_minor }
    }

    /// Parses Griffin's decimal string (`"12.34"`, `"12.3"`, `"12"`, `"-5.00"`) exactly.
    pub fn from_decimal_str(value: &str) -> Result<Self, AmountError> {
        let decimal = Decimal::from_str(value.trim())
            .map_err(|_| AmountError::NotDecimal(value.to_string()))?;
        let minor = decimal
            .checked_mul(Decimal::from(MINOR_PER_MAJOR))
            .ok_or_else(|| AmountError::OutOfRange(value.to_string()))?;
        if !minor.fract().is_zero() {
            return Err(AmountError::TooPrecise(value.to_string()));
        }
        let amount_minor =
            i64::try_from(minor.trunc()).map_err(|_| AmountError::OutOfRange(value.to_string()))?;
        Ok(Self { amount_minor })
    }

    /// Griffin's decimal string with exactly two places: 10 → `"0.10"`, -5 → `"-0.05"`.
    pub fn to_decimal_string(self) -> String {
        Decimal::new(self.amount_minor, GBP_SCALE).to_string()
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(Money::gbp_minor)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.amount_minor
            .checked_sub(other.amount_minor)
            .map(Money::gbp_minor)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", GBP, self.to_decimal_string())
    }
}

/// The wire shape.
#[derive(Serialize, Deserialize)]
struct WireMoney {
    currency: String,
    value: String,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireMoney {
            currency: GBP.to_string(),
            value: self.to_decimal_string(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireMoney::deserialize(deserializer)?;
        if wire.currency != GBP {
            return Err(serde::de::Error::custom(AmountError::UnsupportedCurrency(
                wire.currency,
            )));
        }
        Money::from_decimal_str(&wire.value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_exactly() {
        for (text, minor, canonical) in [
            ("0.10", 10, "0.10"),
            ("0.1", 10, "0.10"),
            ("1234.56", 123_456, "1234.56"),
            ("12", 1200, "12.00"),
            ("-5.00", -500, "-5.00"),
            ("0.00", 0, "0.00"),
            ("92233720368547758.07", i64::MAX, "92233720368547758.07"),
        ] {
            let money = Money::from_decimal_str(text).unwrap();
            assert_eq!(money.amount_minor, minor, "{text}");
            assert_eq!(money.to_decimal_string(), canonical, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_whole_pence() {
        assert!(matches!(
            Money::from_decimal_str("0.001"),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(
            Money::from_decimal_str("ten"),
            Err(AmountError::NotDecimal(_))
        ));
        assert!(matches!(
            Money::from_decimal_str("92233720368547758.08"),
            Err(AmountError::OutOfRange(_))
        ));
        // Trailing zeros beyond two places are still whole pence.
        assert_eq!(Money::from_decimal_str("1.500").unwrap().amount_minor, 150);
    }

    #[test]
    fn wire_shape_round_trips_and_refuses_other_currencies() {
        let money: Money = serde_json::from_str(r#"{"currency":"GBP","value":"20.00"}"#).unwrap();
        assert_eq!(money.amount_minor, 2000);
        assert_eq!(
            serde_json::to_string(&money).unwrap(),
            r#"{"currency":"GBP","value":"20.00"}"#
        );
        assert!(serde_json::from_str::<Money>(r#"{"currency":"EUR","value":"1.00"}"#).is_err());
    }
}
