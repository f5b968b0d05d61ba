//! The 30-day revenue chart: server-side SVG, one bar per day of net revenue, with axis
//! labels, a `<title>`/`<desc>` for screen readers and the same figures as a table. No
//! script, no inline `style` attributes (the CSP forbids them): presentation attributes only.

use chrono::NaiveDate;
use invoice_pdf::format_money;
use maud::{html, Markup};

/// Days the chart covers, today (UTC) included.
pub const CHART_DAYS: usize = 30;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;
const BAR_GAP: f64 = 3.0;
const BAR_COLOR: &str = "#2f5d8a";
const AXIS_COLOR: &str = "#555";
const GRID_COLOR: &str = "#ddd";

/// One day of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayFigure {
    pub day: NaiveDate,
    pub gross_minor: i64,
    pub refunded_minor: i64,
}

impl DayFigure {
    pub fn net_minor(&self) -> i64 {
        self.gross_minor - self.refunded_minor
    }
}

/// The smallest "round" number (1, 2 or 5 × 10ⁿ) at or above `value`, at least 1.
pub fn nice_ceiling(value: i64) -> i64 {
    let value = value.max(1);
    let mut power: i64 = 1;
    loop {
        for step in [1, 2, 5] {
            if let Some(candidate) = power.checked_mul(step) {
                if candidate >= value {
                    return candidate;
                }
            }
        }
        match power.checked_mul(10) {
            Some(next) => power = next,
            None => return value,
        }
    }
}

/// The chart of `days` (oldest first, [`CHART_DAYS`] of them) in `currency`. `id` makes the
/// chart's element ids unique on the page.
pub fn revenue_chart(id: &str, currency: &str, days: &[DayFigure]) -> Markup {
    let total: i64 = days.iter().map(DayFigure::net_minor).sum();
    let top = nice_ceiling(days.iter().map(DayFigure::net_minor).max().unwrap_or(0));
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / days.len().max(1) as f64;
    let y_of = |amount: i64| TOP + plot_height * (1.0 - amount.max(0) as f64 / top as f64);
    let (first, last) = (
        days.first().map(|day| day.day),
        days.last().map(|day| day.day),
    );
    let title_id = format!("{id}-title");
    let desc_id = format!("{id}-desc");
    let currency_upper = currency.to_ascii_uppercase();
    html! {
        figure {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
                width=(WIDTH) height=(HEIGHT) role="img"
                aria-labelledby=(format!("{title_id} {desc_id}")) {
                title id=(title_id) { "Net revenue per day, last " (CHART_DAYS) " days, " (currency_upper) }
                desc id=(desc_id) {
                    @if let (Some(first), Some(last)) = (first, last) {
                        "From " (first.format("%-d %B %Y")) " to " (last.format("%-d %B %Y")) ": "
                    }
                    (format_money(total, currency)) " in all. The table below has each day's figures."
                }
                // Grid lines and amounts at 0, half and the top.
                @for fraction in [0_i64, 1, 2] {
                    @let amount = top * fraction / 2;
                    @let y = y_of(amount);
                    line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) stroke=(GRID_COLOR) stroke-width="1" {}
                    text x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" font-size="12" fill=(AXIS_COLOR) {
                        (format_money(amount, currency))
                    }
                }
                @for (index, figure) in days.iter().enumerate() {
                    @let x = LEFT + slot * index as f64;
                    @let y = y_of(figure.net_minor());
                    rect x=(format!("{:.1}", x + BAR_GAP / 2.0)) y=(format!("{y:.1}"))
                        width=(format!("{:.1}", (slot - BAR_GAP).max(1.0)))
                        height=(format!("{:.1}", (TOP + plot_height - y).max(0.0)))
                        fill=(BAR_COLOR) {
                        title { (figure.day.format("%-d %b")) ": " (format_money(figure.net_minor(), currency)) }
                    }
                    // A date under every fifth bar and the last.
                    @if index % 5 == 0 || index + 1 == days.len() {
                        text x=(format!("{:.1}", x + slot / 2.0)) y=(HEIGHT - BOTTOM + 16.0)
                            text-anchor="middle" font-size="11" fill=(AXIS_COLOR) {
                            (figure.day.format("%-d %b"))
                        }
                    }
                }
                line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(TOP + plot_height) y2=(TOP + plot_height)
                    stroke=(AXIS_COLOR) stroke-width="1" {}
                line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(TOP + plot_height) stroke=(AXIS_COLOR) stroke-width="1" {}
            }
            figcaption {
                details {
                    summary { "Each day's figures (" (currency_upper) ")" }
                    table {
                        caption { "Revenue per day, " (currency_upper) }
                        thead { tr {
                            th scope="col" { "Day (UTC)" }
                            th scope="col" class="amount" { "Captured" }
                            th scope="col" class="amount" { "Refunded" }
                            th scope="col" class="amount" { "Net" }
                        } }
                        tbody {
                            @for figure in days {
                                tr {
                                    th scope="row" { (figure.day.format("%Y-%m-%d")) }
                                    td class="amount" { (format_money(figure.gross_minor, currency)) }
                                    td class="amount" { (format_money(figure.refunded_minor, currency)) }
                                    td class="amount" { (format_money(figure.net_minor(), currency)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_the_axis_up_to_one_two_or_five() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(-40), 1);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(120), 200);
        assert_eq!(nice_ceiling(200), 200);
        assert_eq!(nice_ceiling(4_999), 5_000);
        assert_eq!(nice_ceiling(i64::MAX), i64::MAX);
    }

    #[test]
    fn draws_a_bar_and_a_row_per_day_with_a_title() {
        let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let days: Vec<DayFigure> = (0..CHART_DAYS as i64)
            .map(|offset| DayFigure {
                day: start + chrono::Duration::days(offset),
                gross_minor: offset * 100,
                refunded_minor: if offset == 3 { 1_000 } else { 0 },
            })
            .collect();
        let svg = revenue_chart("chart-gbp", "gbp", &days).into_string();
        assert_eq!(svg.matches("<rect").count(), CHART_DAYS);
        assert_eq!(svg.matches("<tr>").count(), CHART_DAYS + 1);
        assert!(svg.contains(r#"aria-labelledby="chart-gbp-title chart-gbp-desc""#));
        assert!(svg.contains("Net revenue per day, last 30 days, GBP"));
        // A day with more refunded than captured shows its negative net, with no bar.
        assert!(svg.contains("4 Mar: -£7.00"));
        assert!(!svg.contains("style="));
        // The axis tops at a round amount above the best day (£29.00).
        assert!(svg.contains("£50.00"));
    }
}
