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

/// The tax inside a refund of a paid invoice's payment: the invoice's tax in proportion to
/// what has been refunded, `tax × refunded / total` rounded by this module's rule (half away
/// from zero), *cumulatively*: this refund's share is the share of everything refunded so far (`refunded_before +
/// refund`) less the share of what was refunded before. So the shares of partial refunds
/// never add up to more than the invoice's tax, and a full refund returns exactly all of it.
/// Refunds beyond the invoice's total (none should exist) carry no tax.
pub fn refund_tax_share(
    invoice_total: i64,
    invoice_tax: i64,
    refunded_before: i64,
    refund: i64,
) -> Result<i64, TaxError> {
    if invoice_total <= 0 || invoice_tax == 0 {
        return Ok(0);
    }
    let share_of = |refunded: i64| -> Result<i64, TaxError> {
        let refunded = refunded.clamp(0, invoice_total);
        let exact = Decimal::from(invoice_tax)
            .checked_mul(Decimal::from(refunded))
            .ok_or(TaxError::Overflow)?
            / Decimal::from(invoice_total);
        round_to_minor(exact)
    };
    let after = refunded_before
        .checked_add(refund)
        .ok_or(TaxError::Overflow)?;
    Ok(share_of(after)? - share_of(refunded_before)?)
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

    #[test]
    fn a_full_refund_returns_all_the_tax_and_partial_ones_never_more() {
        // £12.00 = £10.00 + £2.00 VAT, refunded whole.
        assert_eq!(refund_tax_share(1_200, 200, 0, 1_200).unwrap(), 200);
        // Half of it: £1.00 of VAT.
        assert_eq!(refund_tax_share(1_200, 200, 0, 600).unwrap(), 100);
        // 100 = 83 + 17 refunded in thirds: 5.61 → 6, then 11.22 → 11 (5), then 17 (6).
        let thirds = [33, 33, 34];
        let mut before = 0;
        let mut shares = Vec::new();
        for refund in thirds {
            shares.push(refund_tax_share(100, 17, before, refund).unwrap());
            before += refund;
        }
        assert_eq!(shares, vec![6, 5, 6]);
        assert_eq!(shares.iter().sum::<i64>(), 17);
        // Every split of a full refund into pennies returns exactly the tax.
        let total: i64 = (0..999)
            .map(|before| refund_tax_share(999, 149, before, 1).unwrap())
            .sum();
        assert_eq!(total, 149);
        // No tax, no total, or a refund beyond the total: nothing more.
        assert_eq!(refund_tax_share(1_000, 0, 0, 500).unwrap(), 0);
        assert_eq!(refund_tax_share(0, 0, 0, 500).unwrap(), 0);
        assert_eq!(refund_tax_share(1_200, 200, 1_200, 100).unwrap(), 0);
    }
}
