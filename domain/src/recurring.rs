//! Billing periods: calendar arithmetic for recurring prices, and daily proration.
//!
//! Periods are counted from the subscription's billing cycle anchor, never from the previous
//! period's end, so month ends do not drift: anchored on 31 January, the periods end on
//! 28 (or 29) February, 31 March, 30 April, … as at Stripe.

use chrono::{DateTime, Datelike, Days, Months, TimeZone, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub fn parse(text: &str) -> Option<Interval> {
        match text {
            "day" => Some(Interval::Day),
            "week" => Some(Interval::Week),
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }
}

/// A recurring price's cadence: every `count` `interval`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cadence {
    pub interval: Interval,
    pub count: u32,
}

const SECONDS_PER_DAY: i64 = 86_400;

fn to_datetime(timestamp: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(timestamp, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Cadence {
    /// The end of period number `index` (0-based) of a cycle anchored at `anchor`: the
    /// anchor moved forward by `(index + 1) × count` intervals. Month arithmetic clamps to
    /// the last day of a shorter month.
    pub fn period_end(&self, anchor: i64, index: u32) -> i64 {
        let steps = u64::from(index.saturating_add(1)).saturating_mul(u64::from(self.count));
        let start = to_datetime(anchor);
        let end = match self.interval {
            Interval::Day => start.checked_add_days(Days::new(steps)),
            Interval::Week => start.checked_add_days(Days::new(steps.saturating_mul(7))),
            Interval::Month => u32::try_from(steps)
                .ok()
                .and_then(|months| start.checked_add_months(Months::new(months))),
            Interval::Year => u32::try_from(steps.saturating_mul(12))
                .ok()
                .and_then(|months| start.checked_add_months(Months::new(months))),
        };
        end.map_or(i64::MAX, |end| end.timestamp())
    }

    /// The start of period `index`: the anchor for the first, else the previous end.
    pub fn period_start(&self, anchor: i64, index: u32) -> i64 {
        match index.checked_sub(1) {
            None => anchor,
            Some(previous) => self.period_end(anchor, previous),
        }
    }
}

/// Whole days from `from` to `to` (UTC calendar days between the two instants' dates).
pub fn days_between(from: i64, to: i64) -> i64 {
    let from = to_datetime(from).date_naive();
    let to = to_datetime(to).date_naive();
    (to - from).num_days()
}

/// Daily proration: the part of `amount` that `[at, period_end)` is of the whole period
/// `[period_start, period_end)`, counted in whole days (a change on the day a period starts
/// prorates the whole period; on its last day, one day). Rounded half away from zero.
pub fn prorate(amount: i64, period_start: i64, period_end: i64, at: i64) -> i64 {
    let total_days = days_between(period_start, period_end).max(1);
    let remaining_days = days_between(at, period_end).clamp(0, total_days);
    let share = Decimal::from(amount) * Decimal::from(remaining_days) / Decimal::from(total_days);
    i64::try_from(share.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero))
        .unwrap_or(if amount < 0 { i64::MIN } else { i64::MAX })
}

/// Day of month of a timestamp (for display and tests).
pub fn day_of_month(timestamp: i64) -> u32 {
    to_datetime(timestamp).day()
}

/// Seconds in `days` days.
pub fn days(days: u32) -> i64 {
    i64::from(days) * SECONDS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str) -> i64 {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp()
    }

    #[test]
    fn monthly_periods_anchored_on_the_31st_do_not_drift() {
        let monthly = Cadence {
            interval: Interval::Month,
            count: 1,
        };
        let anchor = at("2026-01-31");
        assert_eq!(monthly.period_end(anchor, 0), at("2026-02-28"));
        assert_eq!(monthly.period_end(anchor, 1), at("2026-03-31"));
        assert_eq!(monthly.period_end(anchor, 2), at("2026-04-30"));
        assert_eq!(monthly.period_start(anchor, 2), at("2026-03-31"));
        assert_eq!(
            monthly.period_end(anchor, 0),
            monthly.period_start(anchor, 1)
        );
    }

    #[test]
    fn leap_years_weeks_days_and_counts() {
        let yearly = Cadence {
            interval: Interval::Year,
            count: 1,
        };
        assert_eq!(yearly.period_end(at("2028-02-29"), 0), at("2029-02-28"));
        assert_eq!(yearly.period_end(at("2028-02-29"), 3), at("2032-02-29"));
        let fortnightly = Cadence {
            interval: Interval::Week,
            count: 2,
        };
        assert_eq!(
            fortnightly.period_end(at("2026-11-25"), 0),
            at("2026-12-09")
        );
        let quarterly = Cadence {
            interval: Interval::Month,
            count: 3,
        };
        assert_eq!(quarterly.period_end(at("2026-11-30"), 0), at("2027-02-28"));
        assert_eq!(quarterly.period_end(at("2026-11-30"), 1), at("2027-05-30"));
        let daily = Cadence {
            interval: Interval::Day,
            count: 1,
        };
        assert_eq!(daily.period_end(at("2026-12-31"), 0), at("2027-01-01"));
    }

    #[test]
    fn daily_proration() {
        // A 30-day period (November), changed with 10 days left: a third of the amount.
        let start = at("2026-11-01");
        let end = at("2026-12-01");
        assert_eq!(prorate(3_000, start, end, at("2026-11-21")), 1_000);
        assert_eq!(prorate(-3_000, start, end, at("2026-11-21")), -1_000);
        // On the first day, all of it; after the end, none.
        assert_eq!(prorate(3_000, start, end, start), 3_000);
        assert_eq!(prorate(3_000, start, end, at("2026-12-02")), 0);
        // 999 × 7 / 30 = 233.1 → 233; 1,000 × 1 / 30 = 33.33 → 33; 15 × 1 / 30 = 0.5 → 1.
        assert_eq!(prorate(999, start, end, at("2026-11-24")), 233);
        assert_eq!(prorate(1_000, start, end, at("2026-11-30")), 33);
        assert_eq!(prorate(15, start, end, at("2026-11-30")), 1);
    }
}
