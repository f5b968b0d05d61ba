//! Amounts as people read them on an invoice: "£1,234.56", "¥500", "-€3.33", "12.00 CHF".

/// Currencies with no minor unit, as Stripe counts them: an amount of 500 `jpy` is ¥500.
const ZERO_DECIMAL_CURRENCIES: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Currencies whose minor unit is a thousandth.
const THREE_DECIMAL_CURRENCIES: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Currencies written with a symbol before the number; every other is written as the number
/// followed by its upper-case code, which is never ambiguous.
const SYMBOLS: &[(&str, &str)] = &[("gbp", "£"), ("eur", "€"), ("usd", "$"), ("jpy", "¥")];

/// Formats an amount in a currency's minor unit (pence, cents; yen have none) for a person:
/// `format_money(1200, "gbp")` is "£12.00", `format_money(123456, "usd")` is "$1,234.56",
/// `format_money(500, "jpy")` is "¥500", `format_money(-333, "gbp")` is "-£3.33" and a
/// currency without a symbol here is written after the number, `format_money(1200, "chf")`
/// is "12.00 CHF". Every `i64` formats, `i64::MIN` included.
pub fn format_money(amount_minor: i64, currency: &str) -> String {
    let code = currency.trim().to_ascii_lowercase();
    let exponent = minor_unit_exponent(&code);
    let divisor = 10_u64.pow(exponent);
    let magnitude = amount_minor.unsigned_abs();
    let mut number = group_thousands(magnitude / divisor);
    if exponent > 0 {
        let width = exponent as usize;
        number.push('.');
        number.push_str(&format!("{:0width$}", magnitude % divisor));
    }
    let sign = if amount_minor < 0 { "-" } else { "" };
    match SYMBOLS.iter().find(|(known, _)| *known == code) {
        Some((_, symbol)) => format!("{sign}{symbol}{number}"),
        None if code.is_empty() => format!("{sign}{number}"),
        None => format!("{sign}{number} {}", code.to_ascii_uppercase()),
    }
}

/// A quantity with thousands separators: "1,000", "-12".
pub(crate) fn format_quantity(quantity: i64) -> String {
    let sign = if quantity < 0 { "-" } else { "" };
    format!("{sign}{}", group_thousands(quantity.unsigned_abs()))
}

/// How many digits of an amount are the minor unit, Stripe's way.
fn minor_unit_exponent(code: &str) -> u32 {
    if ZERO_DECIMAL_CURRENCIES.contains(&code) {
        0
    } else if THREE_DECIMAL_CURRENCIES.contains(&code) {
        3
    } else {
        2
    }
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_decimal_currencies_with_symbols() {
        assert_eq!(format_money(1200, "gbp"), "£12.00");
        assert_eq!(format_money(50, "eur"), "€0.50");
        assert_eq!(format_money(123_456, "usd"), "$1,234.56");
        assert_eq!(format_money(0, "gbp"), "£0.00");
        assert_eq!(format_money(5, "usd"), "$0.05");
        assert_eq!(format_money(100_000_000, "gbp"), "£1,000,000.00");
    }

    #[test]
    fn zero_decimal_currencies_have_no_minor_unit() {
        assert_eq!(format_money(500, "jpy"), "¥500");
        assert_eq!(format_money(1_234_567, "jpy"), "¥1,234,567");
        assert_eq!(format_money(0, "jpy"), "¥0");
        assert_eq!(format_money(-500, "jpy"), "-¥500");
        assert_eq!(format_money(1500, "krw"), "1,500 KRW");
    }

    #[test]
    fn negatives_put_the_sign_before_the_symbol() {
        assert_eq!(format_money(-333, "gbp"), "-£3.33");
        assert_eq!(format_money(-1, "eur"), "-€0.01");
        assert_eq!(format_money(-123_456, "usd"), "-$1,234.56");
        assert_eq!(format_money(-1200, "chf"), "-12.00 CHF");
    }

    #[test]
    fn other_currencies_are_written_after_the_number() {
        assert_eq!(format_money(1200, "chf"), "12.00 CHF");
        assert_eq!(format_money(123_456, "sek"), "1,234.56 SEK");
        assert_eq!(format_money(1234, "kwd"), "1.234 KWD");
        assert_eq!(format_money(1200, ""), "12.00");
    }

    #[test]
    fn currency_codes_are_read_in_any_case() {
        assert_eq!(format_money(1200, "GBP"), "£12.00");
        assert_eq!(format_money(1200, " Eur "), "€12.00");
    }

    #[test]
    fn the_extremes_of_i64_format() {
        assert_eq!(format_money(i64::MAX, "gbp"), "£92,233,720,368,547,758.07");
        assert_eq!(format_money(i64::MIN, "gbp"), "-£92,233,720,368,547,758.08");
        assert_eq!(format_money(i64::MIN, "jpy"), "-¥9,223,372,036,854,775,808");
    }

    #[test]
    fn quantities_are_grouped() {
        assert_eq!(format_quantity(1), "1");
        assert_eq!(format_quantity(1000), "1,000");
        assert_eq!(format_quantity(-12_345), "-12,345");
        assert_eq!(format_quantity(i64::MIN), "-9,223,372,036,854,775,808");
    }
}
