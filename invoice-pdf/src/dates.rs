//! Dates as an invoice shows them, in UTC: "25 November 2026", and "1 Nov 2026" in periods.

use chrono::{DateTime, Datelike};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// What a timestamp chrono cannot represent (beyond ±262,000 years) is shown as.
const UNREPRESENTABLE: &str = "unknown date";

/// "25 November 2026".
pub(crate) fn long_date(unix_seconds: i64) -> String {
    date(unix_seconds, usize::MAX)
}

/// "25 Nov 2026".
pub(crate) fn short_date(unix_seconds: i64) -> String {
    date(unix_seconds, 3)
}

/// "1 Nov 2026 – 1 Dec 2026".
pub(crate) fn period(start_unix_seconds: i64, end_unix_seconds: i64) -> String {
    format!(
        "{} \u{2013} {}",
        short_date(start_unix_seconds),
        short_date(end_unix_seconds)
    )
}

/// The day, the month's name cut to `month_letters`, and the year.
fn date(unix_seconds: i64, month_letters: usize) -> String {
    let Some(moment) = DateTime::from_timestamp(unix_seconds, 0) else {
        return UNREPRESENTABLE.to_owned();
    };
    let month = MONTHS
        .get(moment.month0() as usize)
        .copied()
        .unwrap_or_default();
    let month = month.get(..month_letters).unwrap_or(month);
    format!("{} {} {}", moment.day(), month, moment.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T00:00:00Z.
    const NOVEMBER_25_2026: i64 = 1_795_564_800;

    #[test]
    fn long_dates_spell_the_month() {
        assert_eq!(long_date(NOVEMBER_25_2026), "25 November 2026");
        assert_eq!(long_date(NOVEMBER_25_2026 + 86_399), "25 November 2026");
        assert_eq!(long_date(0), "1 January 1970");
    }

    #[test]
    fn periods_use_short_months_and_an_en_dash() {
        let november_1 = NOVEMBER_25_2026 - 24 * 86_400;
        let december_1 = november_1 + 30 * 86_400;
        assert_eq!(
            period(november_1, december_1),
            "1 Nov 2026 \u{2013} 1 Dec 2026"
        );
    }

    #[test]
    fn dates_before_the_epoch_and_out_of_range_do_not_panic() {
        assert_eq!(long_date(-86_400), "31 December 1969");
        assert_eq!(long_date(i64::MAX), UNREPRESENTABLE);
        assert_eq!(long_date(i64::MIN), UNREPRESENTABLE);
    }
}
