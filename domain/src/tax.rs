//! Tax arithmetic: exact decimals, one documented rounding rule.
//!
//! **The rule.** Tax is computed per invoice line and per tax rate, exactly in
//! [`rust_decimal::Decimal`], then rounded once to the currency's minor unit, half away from
//! zero (HMRC's "round to the nearest penny, half a penny up"; negative proration credits
//! round symmetrically). Invoice tax is the sum of the rounded line taxes, so an invoice's
//! tax always equals what its lines show.
//!
//! - **Exclusive** rate `r`: tax = amount × r / 100; the line's total is amount + tax.
//! - **Inclusive** rates `r1..rn` (the amount already holds the tax): each tax =
//!   amount × ri / (100 + r1 + … + rn); the net amount is amount − Σ tax, so net plus tax is
//!   exactly what was charged.
//!
//! Amounts are integers in the currency's minor unit (pence, cents, yen), so zero-decimal
//! currencies need no special case.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// A rate as a line sees it: which tax rate object, how much, and which way it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRate {
    pub tax_rate: String,
    /// Percent, e.g. `20` or `17.5`.
    pub percentage: Decimal,
    pub inclusive: bool,
}

/// The tax one rate adds to (or holds within) one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxAmount {
    pub tax_rate: String,
    pub amount: i64,
    pub inclusive: bool,
    /// The amount the rate was applied to (net of inclusive tax).
    pub taxable_amount: i64,
}

/// A line's amounts after tax.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LineTax {
    /// The line amount without any tax.
    pub net: i64,
    /// Taxes, in the order of the rates given.
    pub taxes: Vec<TaxAmount>,
    /// What the customer pays for the line: the amount plus exclusive taxes.
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxError {
    #[error("tax rate percentage must be between 0 and 100")]
    PercentageOutOfRange,
    #[error("amount overflow while computing tax")]
    Overflow,
}

pub fn check_percentage(percentage: Decimal) -> Result<(), TaxError> {
    if percentage < Decimal::ZERO || percentage > Decimal::ONE_HUNDRED {
        return Err(TaxError::PercentageOutOfRange);
    }
    Ok(())
}

fn round_to_minor(value: Decimal) -> Result<i64, TaxError> {
    let rounded = value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(rounded).map_err(|_| TaxError::Overflow)
}

/// Taxes `amount` (minor units; negative for credits) at `rates`.
pub fn tax_line(amount: i64, rates: &[AppliedRate]) -> Result<LineTax, TaxError> {
    for rate in rates {
        check_percentage(rate.percentage)?;
    }
    let gross = Decimal::from(amount);
    let inclusive_sum: Decimal = rates
        .iter()
        .filter(|rate| rate.inclusive)
        .map(|rate| rate.percentage)
        .sum();
    let divisor = Decimal::ONE_HUNDRED + inclusive_sum;

    // Inclusive taxes first: they decide the net amount the exclusive ones apply to.
    let mut amounts = vec![0i64; rates.len()];
    for (slot, rate) in amounts.iter_mut().zip(rates) {
        if rate.inclusive {
            let share = gross
                .checked_mul(rate.percentage)
                .ok_or(TaxError::Overflow)?
                / divisor;
            *slot = round_to_minor(share)?;
        }
    }
    let inclusive_total = amounts.iter().try_fold(0i64, |sum, tax| {
        sum.checked_add(*tax).ok_or(TaxError::Overflow)
    })?;
    let net = amount
        .checked_sub(inclusive_total)
        .ok_or(TaxError::Overflow)?;

    let mut total = amount;
    for (slot, rate) in amounts.iter_mut().zip(rates) {
        if !rate.inclusive {
            let tax = Decimal::from(net)
                .checked_mul(rate.percentage)
                .ok_or(TaxError::Overflow)?
                / Decimal::ONE_HUNDRED;
            *slot = round_to_minor(tax)?;
            total = total.checked_add(*slot).ok_or(TaxError::Overflow)?;
        }
    }
    let taxes = rates
        .iter()
        .zip(amounts)
        .map(|(rate, amount)| TaxAmount {
            tax_rate: rate.tax_rate.clone(),
            amount,
            inclusive: rate.inclusive,
            taxable_amount: net,
        })
        .collect();
    Ok(LineTax { net, taxes, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn rate(percent: &str, inclusive: bool) -> AppliedRate {
        AppliedRate {
            tax_rate: format!("txr_{percent}_{inclusive}"),
            percentage: Decimal::from_str(percent).unwrap(),
            inclusive,
        }
    }

    #[test]
    fn exclusive_vat_adds_to_the_total() {
        let line = tax_line(1_000, &[rate("20", false)]).unwrap();
        assert_eq!(
            (line.net, line.taxes[0].amount, line.total),
            (1_000, 200, 1_200)
        );
    }

    #[test]
    fn inclusive_vat_is_carved_out_of_the_amount() {
        // £12.00 including 20% VAT is £10.00 net plus £2.00 VAT.
        let line = tax_line(1_200, &[rate("20", true)]).unwrap();
        assert_eq!(
            (line.net, line.taxes[0].amount, line.total),
            (1_000, 200, 1_200)
        );
    }

    #[test]
    fn half_pennies_round_away_from_zero() {
        // 20% of 2.5p is 0.5p: up to 1p. 20% of 7.5p is 1.5p: up to 2p.
        assert_eq!(
            tax_line(25, &[rate("2", false)]).unwrap().taxes[0].amount,
            1
        );
        assert_eq!(
            tax_line(75, &[rate("2", false)]).unwrap().taxes[0].amount,
            2
        );
        // A credit rounds the same way, mirrored.
        assert_eq!(
            tax_line(-25, &[rate("2", false)]).unwrap().taxes[0].amount,
            -1
        );
    }

    #[test]
    fn awkward_inclusive_amounts_still_add_up_to_the_charge() {
        // 17.5% inclusive of £9.99: 999 × 17.5 / 117.5 = 148.787… → 149; net 850.
        let line = tax_line(999, &[rate("17.5", true)]).unwrap();
        assert_eq!(line.taxes[0].amount, 149);
        assert_eq!(line.net + line.taxes[0].amount, 999);
        assert_eq!(line.total, 999);
        // 1p at 20% inclusive: 1 × 20 / 120 = 0.166… → 0.
        let penny = tax_line(1, &[rate("20", true)]).unwrap();
        assert_eq!((penny.net, penny.taxes[0].amount), (1, 0));
        for amount in [1, 7, 99, 101, 333, 1_001, 99_999, 123_457] {
            let line = tax_line(amount, &[rate("20", true)]).unwrap();
            let tax: i64 = line.taxes.iter().map(|tax| tax.amount).sum();
            assert_eq!(line.net + tax, amount, "inclusive split of {amount}");
        }
    }

    #[test]
    fn exclusive_rate_on_fractional_percentages() {
        // 8.875% of $19.99 = 177.41125¢ → 177¢.
        let line = tax_line(1_999, &[rate("8.875", false)]).unwrap();
        assert_eq!((line.taxes[0].amount, line.total), (177, 2_176));
    }

    #[test]
    fn mixed_inclusive_and_exclusive_rates() {
        // 1,100 including 10% → net 1,000; then 5% exclusive on the net → 50 more.
        let line = tax_line(1_100, &[rate("10", true), rate("5", false)]).unwrap();
        assert_eq!(line.net, 1_000);
        assert_eq!(line.taxes[0].amount, 100);
        assert_eq!(line.taxes[1].amount, 50);
        assert_eq!(line.total, 1_150);
    }

    #[test]
    fn out_of_range_percentages_are_refused() {
        assert_eq!(
            tax_line(100, &[rate("100.01", false)]),
            Err(TaxError::PercentageOutOfRange)
        );
        assert_eq!(
            tax_line(100, &[rate("-1", false)]),
            Err(TaxError::PercentageOutOfRange)
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert_eq!(
            tax_line(i64::MAX, &[rate("20", false)]),
            Err(TaxError::Overflow)
        );
    }
}
