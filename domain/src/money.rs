//! Money: an integer amount of a currency's minor unit, never a float, never mixed.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {left} and {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount overflow")]
    Overflow,
    #[error("amount must not be negative")]
    Negative,
    #[error("{0:?} is not a supported ISO 4217 currency code")]
    UnknownCurrency(String),
}

/// A lowercase ISO 4217 code, as Stripe writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const GBP: Currency = Currency(*b"gbp");
    pub const EUR: Currency = Currency(*b"eur");
    pub const USD: Currency = Currency(*b"usd");

    /// Currencies with (ISO 4217 code, numeric code, minor-unit exponent). The numeric code
    /// is what Cardstream's `currencyCode` takes.
    const KNOWN: &'static [(&'static str, u16, u8)] = &[
        ("gbp", 826, 2),
        ("eur", 978, 2),
        ("usd", 840, 2),
        ("jpy", 392, 0),
        ("chf", 756, 2),
        ("sek", 752, 2),
        ("nok", 578, 2),
        ("dkk", 208, 2),
        ("pln", 985, 2),
        ("cad", 124, 2),
        ("aud", 36, 2),
        ("nzd", 554, 2),
    ];

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let lower = code.to_ascii_lowercase();
        Self::KNOWN
            .iter()
            .find(|(known, _, _)| *known == lower)
            .and_then(|(known, _, _)| known.as_bytes().try_into().ok())
            .map(Currency)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    fn entry(&self) -> Option<&'static (&'static str, u16, u8)> {
        Self::KNOWN
            .iter()
            .find(|(code, _, _)| code.as_bytes() == self.0)
    }

    pub fn numeric_code(&self) -> u16 {
        self.entry().map_or(0, |entry| entry.1)
    }

    pub fn minor_unit_exponent(&self) -> u8 {
        self.entry().map_or(2, |entry| entry.2)
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Currency::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.as_str().to_string()
    }
}

/// An amount in minor units (pence, cents; whole yen) of one currency. Never negative:
/// direction (charge or refund) is the event's meaning, not the sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if amount_minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Self {
            amount_minor,
            currency,
        })
    }

    pub fn zero(currency: Currency) -> Self {
        Self {
            amount_minor: 0,
            currency,
        }
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount_minor = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Money::new(amount_minor, self.currency)
    }

    /// `self - other`; an error rather than a negative amount.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount_minor = self
            .amount_minor
            .checked_sub(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Money::new(amount_minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_parse_case_insensitively_and_render_lowercase() {
        assert_eq!(
            Currency::parse("GBP").map(|c| c.to_string()),
            Ok("gbp".into())
        );
        assert_eq!(Currency::parse("gbp").map(|c| c.numeric_code()), Ok(826));
        assert_eq!(
            Currency::parse("jpy").map(|c| c.minor_unit_exponent()),
            Ok(0)
        );
        assert!(Currency::parse("xxx").is_err());
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies_overflow_and_negatives() {
        let pounds = Money::new(500, Currency::GBP).unwrap();
        let euros = Money::new(500, Currency::EUR).unwrap();
        assert!(matches!(
            pounds.checked_add(&euros),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        let max = Money::new(i64::MAX, Currency::GBP).unwrap();
        assert_eq!(max.checked_add(&pounds), Err(MoneyError::Overflow));
        let small = Money::new(100, Currency::GBP).unwrap();
        assert_eq!(small.checked_sub(&pounds), Err(MoneyError::Negative));
        assert_eq!(pounds.checked_sub(&small).map(|m| m.amount_minor), Ok(400));
        assert_eq!(Money::new(-1, Currency::GBP), Err(MoneyError::Negative));
    }

    #[test]
    fn serialises_currency_as_lowercase_string() {
        let json = serde_json::to_string(&Money::new(250, Currency::USD).unwrap()).unwrap();
        assert_eq!(json, r#"{"amount_minor":250,"currency":"usd"}"#);
        assert!(serde_json::from_str::<Currency>(r#""zzz""#).is_err());
    }
}
