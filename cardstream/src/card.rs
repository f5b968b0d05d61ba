//! Card data as it enters the client (and the simulator's hosted form): validated, and
//! impossible to print. Only the brand and the last four digits ever leave this type.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("the card number must be 12 to 19 digits and pass the Luhn check")]
    InvalidNumber,
    #[error("the expiry month must be 1 to 12 and the year two or four digits")]
    InvalidExpiry,
    #[error("the CVV must be 3 or 4 digits")]
    InvalidCvv,
}

/// A card as typed by the cardholder. Deliberately not `Debug`-derived: the hand-written
/// `Debug` prints the brand and last four digits only.
#[derive(Clone, PartialEq, Eq)]
pub struct CardDetails {
    number: String,
    expiry_month: u8,
    expiry_year_two_digits: u8,
    cvv: Option<Cvv>,
}

impl CardDetails {
    /// `number` may contain spaces (they are removed); `expiry_year` may be `29` or `2029`.
    pub fn new(
        number: &str,
        expiry_month: u8,
        expiry_year: u16,
        cvv: Option<&str>,
    ) -> Result<Self, CardError> {
        let number: String = number
            .chars()
            .filter(|character| *character != ' ')
            .collect();
        if !(12..=19).contains(&number.len())
            || !number.bytes().all(|byte| byte.is_ascii_digit())
            || !luhn_valid(&number)
        {
            return Err(CardError::InvalidNumber);
        }
        if !(1..=12).contains(&expiry_month) {
            return Err(CardError::InvalidExpiry);
        }
        let expiry_year_two_digits = match expiry_year {
            0..=99 => expiry_year,
            2000..=2099 => expiry_year - 2000,
            _ => return Err(CardError::InvalidExpiry),
        };
        let cvv = cvv.map(Cvv::new).transpose()?;
        Ok(Self {
            number,
            expiry_month,
            expiry_year_two_digits: u8::try_from(expiry_year_two_digits)
                .map_err(|_| CardError::InvalidExpiry)?,
            cvv,
        })
    }

    pub fn brand(&self) -> CardBrand {
        CardBrand::detect(&self.number)
    }

    pub fn last4(&self) -> &str {
        last4(&self.number)
    }

    pub fn expiry_month(&self) -> u8 {
        self.expiry_month
    }

    /// Two digits, as the protocol's `cardExpiryYear` wants.
    pub fn expiry_year_two_digits(&self) -> u8 {
        self.expiry_year_two_digits
    }

    pub(crate) fn number(&self) -> &str {
        &self.number
    }

    pub(crate) fn cvv(&self) -> Option<&str> {
        self.cvv.as_ref().map(Cvv::expose)
    }
}

impl fmt::Debug for CardDetails {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CardDetails")
            .field("brand", &self.brand())
            .field("last4", &self.last4())
            .field("expiry_month", &self.expiry_month)
            .field("expiry_year_two_digits", &self.expiry_year_two_digits)
            .field("cvv", &self.cvv.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// A card security code on its own, for a customer-present sale on a stored card (the
/// gateway never stores CVVs). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cvv(String);

impl Cvv {
    pub fn new(cvv: &str) -> Result<Self, CardError> {
        if (3..=4).contains(&cvv.len()) && cvv.bytes().all(|byte| byte.is_ascii_digit()) {
            Ok(Self(cvv.to_string()))
        } else {
            Err(CardError::InvalidCvv)
        }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvv {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Cvv([redacted])")
    }
}

/// Card brands the gateway reports, detected from the number's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardBrand {
    Visa,
    Mastercard,
    Amex,
    Maestro,
    Jcb,
    Diners,
    Discover,
    Unknown,
}

impl CardBrand {
    pub fn detect(number: &str) -> Self {
        let prefix = |length: usize| {
            number
                .get(..length)
                .and_then(|digits| digits.parse::<u32>().ok())
        };
        match (prefix(1), prefix(2), prefix(4)) {
            (_, Some(34 | 37), _) => Self::Amex,
            (_, Some(36 | 38 | 30), _) => Self::Diners,
            (_, Some(35), _) => Self::Jcb,
            (_, _, Some(6011)) | (_, Some(65), _) => Self::Discover,
            (_, Some(50 | 56..=69), _) => Self::Maestro,
            (_, Some(51..=55), _) | (_, _, Some(2221..=2720)) => Self::Mastercard,
            (Some(4), _, _) => Self::Visa,
            _ => Self::Unknown,
        }
    }

    /// Stripe's `card.brand` value.
    pub fn stripe_brand(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Maestro => "maestro",
            Self::Jcb => "jcb",
            Self::Diners => "diners",
            Self::Discover => "discover",
            Self::Unknown => "unknown",
        }
    }

    /// The brand a result's `cardScheme` names (the hosted page took the number, so the
    /// merchant only sees the scheme).
    pub fn from_scheme_name(name: &str) -> Self {
        [
            Self::Visa,
            Self::Mastercard,
            Self::Amex,
            Self::Maestro,
            Self::Jcb,
            Self::Diners,
            Self::Discover,
        ]
        .into_iter()
        .find(|brand| brand.scheme_name().eq_ignore_ascii_case(name.trim()))
        .unwrap_or(Self::Unknown)
    }

    /// The gateway's `cardScheme` name.
    pub fn scheme_name(self) -> &'static str {
        match self {
            Self::Visa => "Visa",
            Self::Mastercard => "MasterCard",
            Self::Amex => "American Express",
            Self::Maestro => "Maestro",
            Self::Jcb => "JCB",
            Self::Diners => "Diners Club",
            Self::Discover => "Discover",
            Self::Unknown => "Unknown",
        }
    }

    /// The gateway's `cardSchemeCode`.
    pub fn scheme_code(self) -> &'static str {
        match self {
            Self::Visa => "VC",
            Self::Mastercard => "MC",
            Self::Amex => "AM",
            Self::Maestro => "MA",
            Self::Jcb => "JC",
            Self::Diners => "DC",
            Self::Discover => "DI",
            Self::Unknown => "XX",
        }
    }
}

pub(crate) fn last4(number: &str) -> &str {
    number
        .get(number.len().saturating_sub(4)..)
        .unwrap_or(number)
}

/// The Luhn (mod 10) check every card number passes.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (index, byte) in digits.bytes().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return false;
        }
        let mut digit = u32::from(byte - b'0');
        if index % 2 == 1 {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
    }
    !digits.is_empty() && sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_number_or_cvv() {
        let card = CardDetails::new("4929 4212 3460 0821", 12, 2029, Some("356"))
            .expect("a valid test card");
        let printed = format!("{card:?}");
        assert!(!printed.contains("4929421234600821"));
        assert!(!printed.contains("356"));
        assert!(printed.contains("0821"));
    }

    #[test]
    fn brands_and_validation() {
        assert_eq!(CardBrand::detect("374245455400001"), CardBrand::Amex);
        assert_eq!(CardBrand::detect("5301250070000191"), CardBrand::Mastercard);
        assert_eq!(CardBrand::detect("6759015050123445002"), CardBrand::Maestro);
        assert_eq!(CardBrand::detect("36432685260294"), CardBrand::Diners);
        assert_eq!(CardBrand::detect("3540599999991047"), CardBrand::Jcb);
        assert_eq!(
            CardDetails::new("4929421234600822", 1, 29, None),
            Err(CardError::InvalidNumber)
        );
        assert_eq!(
            CardDetails::new("4929421234600821", 13, 29, None),
            Err(CardError::InvalidExpiry)
        );
        assert_eq!(
            CardDetails::new("4929421234600821", 1, 29, Some("35a")),
            Err(CardError::InvalidCvv)
        );
    }
}
