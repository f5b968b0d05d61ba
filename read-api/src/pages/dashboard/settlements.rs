//! Settlements: per UTC day and currency, what the acquirer owes the project (captured −
//! refunded − fees) against what arrived in the Griffin account, from the `settlements`
//! projection's tables (the reconciler's view, `calmony settlements list` in a browser).
//! Credits that matched no settlement belong to no project and are not shown here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use invoice_pdf::format_money;
use maud::html;

use super::session::Session;
use super::{layout, unavailable, DashboardState, ProjectView, Section};
use crate::pages::Page;

/// Days shown, newest first.
pub const DAYS_SHOWN: i64 = 90;

/// One row of the settlements table.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    day: chrono::NaiveDate,
    currency: String,
    gross_minor: i64,
    refunded_minor: i64,
    fees_minor: i64,
    expected_net_minor: i64,
    received_minor: i64,
    difference_minor: i64,
    status: String,
    matched_transaction: Option<String>,
}

/// `GET …/settlements`.
pub async fn list(
    State(state): State<DashboardState>,
    session: Session,
    Path((project, mode)): Path<(String, String)>,
) -> Response {
    let page = Page::default();
    let project = match ProjectView::find(&state.pool, &page, &project, &mode).await {
        Ok(project) => project,
        Err(response) => return response,
    };
    let rows: Vec<Row> = match sqlx::query_as(
        "SELECT day, currency, gross_minor, refunded_minor, fees_minor, expected_net_minor, \
                received_minor, difference_minor, status, matched_transaction \
         FROM settlements.settlements WHERE project = $1 AND livemode = $2 \
         ORDER BY day DESC, currency LIMIT $3",
    )
    .bind(&project.scope.project)
    .bind(project.scope.livemode)
    .bind(DAYS_SHOWN)
    .fetch_all(&state.pool)
    .await
    {
        Ok(rows) => rows,
        Err(error) => return unavailable(&page, error),
    };
    let open = rows.iter().filter(|row| row.status != "matched").count();
    let body = html! {
        h1 { "Settlements" }
        p {
            "What Cardstream owes for each day's card payments (captured, less refunds and "
            "fees) and what arrived for it in the Griffin account."
        }
        @if rows.is_empty() {
            p { "No settlements expected yet in this mode." }
        } @else {
            p data-open=(open) {
                @if open == 0 { "Every settlement shown is matched." }
                @else { (open) " of " (rows.len()) " settlements shown are not matched." }
            }
            table {
                caption { "Settlements, newest day first" }
                thead { tr {
                    th scope="col" { "Day" }
                    th scope="col" class="amount" { "Captured" }
                    th scope="col" class="amount" { "Refunded" }
                    th scope="col" class="amount" { "Fees" }
                    th scope="col" class="amount" { "Expected" }
                    th scope="col" class="amount" { "Received" }
                    th scope="col" class="amount" { "Difference" }
                    th scope="col" { "Status" }
                    th scope="col" { "Griffin transaction" }
                } }
                tbody {
                    @for row in &rows {
                        @let money = |minor: i64| format_money(minor, &row.currency);
                        tr data-status=(row.status) {
                            td { (row.day.format("%Y-%m-%d")) }
                            td class="amount" { (money(row.gross_minor)) }
                            td class="amount" { (money(row.refunded_minor)) }
                            td class="amount" { (money(row.fees_minor)) }
                            td class="amount" { (money(row.expected_net_minor)) }
                            td class="amount" { (money(row.received_minor)) }
                            td class="amount" { (money(row.difference_minor)) }
                            td { (row.status) }
                            td { @if let Some(transaction) = &row.matched_transaction { code { (transaction) } } }
                        }
                    }
                }
            }
        }
    };
    page.respond(
        StatusCode::OK,
        layout(
            &page,
            &session,
            "Settlements",
            Some(&project),
            Section::Settlements,
            body,
        ),
    )
}

/// Unexpected credits shown, newest first.
pub const CREDITS_SHOWN: i64 = 100;

/// One credit that matched no settlement.
#[derive(Debug, sqlx::FromRow)]
struct UnexpectedCredit {
    griffin_transaction: String,
    livemode: bool,
    amount_minor: i64,
    currency: String,
    reference: Option<String>,
    counterparty: Option<String>,
    processed_at: chrono::DateTime<chrono::Utc>,
    reason: Option<String>,
}

/// `GET /dashboard/bank-credits`: money that arrived in the Griffin account and matched no
/// settlement. It belongs to no project until finance finds whose it is, so it is listed for
/// the whole deployment (operators see every project), in both modes.
pub async fn unexpected(State(state): State<DashboardState>, session: Session) -> Response {
    let page = Page::default();
    let credits: Vec<UnexpectedCredit> = match sqlx::query_as(
        "SELECT griffin_transaction, livemode, amount_minor, currency, reference, counterparty, \
                processed_at, reason \
         FROM settlements.credits WHERE outcome = 'unexpected' \
         ORDER BY processed_at DESC, griffin_transaction LIMIT $1",
    )
    .bind(CREDITS_SHOWN)
    .fetch_all(&state.pool)
    .await
    {
        Ok(credits) => credits,
        Err(error) => return unavailable(&page, error),
    };
    let body = html! {
        h1 { "Unexpected bank credits" }
        p {
            "Credits of the Griffin account that matched no expected settlement, by reference "
            "or by amount and day. Each is recorded once (an " code { "UnexpectedCredit" }
            " event) and booked to " code { "unidentified_receipts" } " until someone finds "
            "whose it is."
        }
        @if credits.is_empty() {
            p { "None: every credit matched a settlement." }
        } @else {
            table {
                caption { "Unexpected credits, newest first" }
                thead { tr {
                    th scope="col" { "Booked" }
                    th scope="col" { "Mode" }
                    th scope="col" class="amount" { "Amount" }
                    th scope="col" { "Reference" }
                    th scope="col" { "From" }
                    th scope="col" { "Why unmatched" }
                    th scope="col" { "Griffin transaction" }
                } }
                tbody {
                    @for credit in &credits {
                        tr {
                            td { (credit.processed_at.format("%Y-%m-%d %H:%M UTC")) }
                            td { (if credit.livemode { "live" } else { "test" }) }
                            td class="amount" { (format_money(credit.amount_minor, &credit.currency)) }
                            td { (credit.reference.as_deref().unwrap_or("")) }
                            td { (credit.counterparty.as_deref().unwrap_or("")) }
                            td { (credit.reason.as_deref().unwrap_or("")) }
                            td { code { (credit.griffin_transaction) } }
                        }
                    }
                }
            }
        }
    };
    page.respond(
        StatusCode::OK,
        layout(
            &page,
            &session,
            "Unexpected bank credits",
            None,
            Section::BankCredits,
            body,
        ),
    )
}
