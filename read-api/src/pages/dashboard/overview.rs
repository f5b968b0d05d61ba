//! A project's overview: net revenue and payment counts per currency (all time), the 30-day
//! revenue chart, and the latest payments. Three indexed queries, run at once: the
//! `dashboard` projection's daily totals (a few rows per day) and the newest intents of
//! `api.objects`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use invoice_pdf::format_money;
use maud::{html, Markup};
use serde_json::Value;

use super::chart::{revenue_chart, DayFigure, CHART_DAYS};
use super::session::Session;
use super::{layout, unavailable, when, DashboardState, ProjectView, Section};
use crate::pages::Page;
use crate::v1::read_model::Scope;

/// Payments listed on the overview.
pub const RECENT_PAYMENTS: i64 = 20;
/// Currencies charted (one chart each, the busiest first); the totals table lists all.
pub const MAX_CHARTED_CURRENCIES: usize = 4;

/// All-time figures of one currency.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CurrencyTotals {
    pub currency: String,
    pub gross_minor: i64,
    pub refunded_minor: i64,
    pub succeeded_count: i64,
    pub failed_count: i64,
}

impl CurrencyTotals {
    pub fn net_minor(&self) -> i64 {
        self.gross_minor - self.refunded_minor
    }
}

pub async fn totals(
    pool: &sqlx::PgPool,
    scope: &Scope,
) -> Result<Vec<CurrencyTotals>, sqlx::Error> {
    sqlx::query_as(
        "SELECT currency, sum(gross_minor)::bigint AS gross_minor, \
                sum(refunded_minor)::bigint AS refunded_minor, \
                sum(succeeded_count)::bigint AS succeeded_count, \
                sum(failed_count)::bigint AS failed_count \
         FROM dashboard.daily_totals WHERE project = $1 AND livemode = $2 \
         GROUP BY currency ORDER BY currency",
    )
    .bind(&scope.project)
    .bind(scope.livemode)
    .fetch_all(pool)
    .await
}

/// The last [`CHART_DAYS`] days up to `today`, per currency, every day present (zero when
/// nothing happened).
pub async fn recent_days(
    pool: &sqlx::PgPool,
    scope: &Scope,
    today: NaiveDate,
) -> Result<BTreeMap<String, Vec<DayFigure>>, sqlx::Error> {
    let first = today - chrono::Duration::days(CHART_DAYS as i64 - 1);
    let rows: Vec<(String, NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT currency, day, gross_minor, refunded_minor FROM dashboard.daily_totals \
         WHERE project = $1 AND livemode = $2 AND day BETWEEN $3 AND $4",
    )
    .bind(&scope.project)
    .bind(scope.livemode)
    .bind(first)
    .bind(today)
    .fetch_all(pool)
    .await?;
    let mut charts: BTreeMap<String, Vec<DayFigure>> = BTreeMap::new();
    for (currency, day, gross_minor, refunded_minor) in rows {
        let days = charts.entry(currency).or_insert_with(|| {
            (0..CHART_DAYS as i64)
                .map(|offset| DayFigure {
                    day: first + chrono::Duration::days(offset),
                    gross_minor: 0,
                    refunded_minor: 0,
                })
                .collect()
        });
        if let Some(slot) = usize::try_from((day - first).num_days())
            .ok()
            .and_then(|index| days.get_mut(index))
        {
            slot.gross_minor += gross_minor;
            slot.refunded_minor += refunded_minor;
        }
    }
    Ok(charts)
}

/// The newest payment intents of the scope (of one customer, if given).
pub async fn payments(
    pool: &sqlx::PgPool,
    scope: &Scope,
    customer: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    objects(pool, scope, "payment_intent", customer, limit).await
}

/// The newest `kind` objects of the scope (of one customer, if given): the `objects_list`
/// and `objects_by_customer` indexes of the api read model.
pub async fn objects(
    pool: &sqlx::PgPool,
    scope: &Scope,
    kind: &str,
    customer: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, sqlx::Error> {
    match customer {
        Some(customer) => sqlx::query_scalar(
            "SELECT body FROM api.objects \
             WHERE project = $1 AND livemode = $2 AND object = $3 AND customer = $4 AND NOT deleted \
             ORDER BY created DESC, id DESC LIMIT $5",
        )
        .bind(&scope.project)
        .bind(scope.livemode)
        .bind(kind)
        .bind(customer)
        .bind(limit)
        .fetch_all(pool)
        .await,
        None => sqlx::query_scalar(
            "SELECT body FROM api.objects \
             WHERE project = $1 AND livemode = $2 AND object = $3 AND NOT deleted \
             ORDER BY created DESC, id DESC LIMIT $4",
        )
        .bind(&scope.project)
        .bind(scope.livemode)
        .bind(kind)
        .bind(limit)
        .fetch_all(pool)
        .await,
    }
}

pub fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

pub fn money(value: &Value, amount_field: &str) -> String {
    format_money(
        value[amount_field].as_i64().unwrap_or(0),
        text(&value["currency"]),
    )
}

/// A table of payment intents, newest first, linking to their customers.
pub fn payments_table(caption: &str, project: &ProjectView, payments: &[Value]) -> Markup {
    html! {
        @if payments.is_empty() {
            p { "No payments yet." }
        } @else {
            table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Created" }
                    th scope="col" { "Payment" }
                    th scope="col" class="amount" { "Amount" }
                    th scope="col" class="amount" { "Received" }
                    th scope="col" { "Status" }
                    th scope="col" { "Customer" }
                    th scope="col" { "Description" }
                } }
                tbody {
                    @for payment in payments {
                        tr data-payment=(text(&payment["id"])) {
                            td { (when(payment["created"].as_i64().unwrap_or(0))) }
                            td { code { (text(&payment["id"])) } }
                            td class="amount" { (money(payment, "amount")) }
                            td class="amount" { (money(payment, "amount_received")) }
                            td { (text(&payment["status"]).replace('_', " ")) }
                            td {
                                @if let Some(customer) = payment["customer"].as_str() {
                                    a href=(project.href(&format!("/customers/{customer}"))) { code { (customer) } }
                                }
                            }
                            td { (text(&payment["description"])) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /dashboard/projects/{project}/{mode}`.
pub async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Path((project, mode)): Path<(String, String)>,
) -> Response {
    let page = Page::default();
    let project = match ProjectView::find(&state.pool, &page, &project, &mode).await {
        Ok(project) => project,
        Err(response) => return response,
    };
    let today = chrono::Utc::now().date_naive();
    let scope = &project.scope;
    let loaded = tokio::try_join!(
        totals(&state.pool, scope),
        recent_days(&state.pool, scope, today),
        payments(&state.pool, scope, None, RECENT_PAYMENTS),
    );
    let (totals, charts, recent) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return unavailable(&page, error),
    };
    let succeeded: i64 = totals.iter().map(|row| row.succeeded_count).sum();
    let failed: i64 = totals.iter().map(|row| row.failed_count).sum();
    let mut charted: Vec<(&String, &Vec<DayFigure>)> = charts.iter().collect();
    charted.sort_by_key(|(currency, days)| {
        let net: i64 = days.iter().map(DayFigure::net_minor).sum();
        (std::cmp::Reverse(net), (*currency).clone())
    });
    charted.truncate(MAX_CHARTED_CURRENCIES);
    let body = html! {
        h1 { "Overview" }
        section aria-labelledby="figures" {
            h2 id="figures" { "Payments" }
            dl class="figures" data-succeeded-count=(succeeded) data-failed-count=(failed) {
                div { dt { "Succeeded" } dd { (succeeded) } }
                div { dt { "Failed" } dd { (failed) } }
            }
            @if totals.is_empty() {
                p { "No revenue yet." }
            } @else {
                table {
                    caption { "Revenue by currency, all time" }
                    thead { tr {
                        th scope="col" { "Currency" }
                        th scope="col" class="amount" { "Captured" }
                        th scope="col" class="amount" { "Refunded" }
                        th scope="col" class="amount" { "Net revenue" }
                        th scope="col" class="amount" { "Succeeded" }
                        th scope="col" class="amount" { "Failed" }
                    } }
                    tbody {
                        @for row in &totals {
                            tr data-currency=(row.currency) data-gross-minor=(row.gross_minor)
                                data-refunded-minor=(row.refunded_minor) data-net-minor=(row.net_minor())
                                data-succeeded-count=(row.succeeded_count) data-failed-count=(row.failed_count) {
                                th scope="row" { (row.currency.to_ascii_uppercase()) }
                                td class="amount" { (format_money(row.gross_minor, &row.currency)) }
                                td class="amount" { (format_money(row.refunded_minor, &row.currency)) }
                                td class="amount" { strong { (format_money(row.net_minor(), &row.currency)) } }
                                td class="amount" { (row.succeeded_count) }
                                td class="amount" { (row.failed_count) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="chart" {
            h2 id="chart" { "Net revenue, last " (CHART_DAYS) " days" }
            @if charted.is_empty() {
                p { "No revenue in the last " (CHART_DAYS) " days." }
            }
            @for (currency, days) in &charted {
                (revenue_chart(&format!("chart-{currency}"), currency, days))
            }
        }
        section aria-labelledby="recent" {
            h2 id="recent" { "Latest payments" }
            (payments_table(&format!("The latest {RECENT_PAYMENTS} payments"), &project, &recent))
        }
    };
    page.respond(
        StatusCode::OK,
        layout(
            &page,
            &session,
            "Overview",
            Some(&project),
            Section::Overview,
            body,
        ),
    )
}
