//! Customers: the newest, or those whose email or name starts with what was searched (the
//! `dashboard` projection's prefix indexes), and one customer's page with its payments,
//! subscriptions and invoices (links to the hosted invoice page and PDF). Everything a
//! customer typed (name, email, metadata) is escaped by maud.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use invoice_pdf::format_money;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::overview::{money, objects, payments, payments_table, text};
use super::session::Session;
use super::{layout, not_found, unavailable, when, DashboardState, ProjectView, Section};
use crate::pages::Page;
use crate::v1::read_model::Scope;

/// Customers listed at once.
pub const CUSTOMERS_PER_PAGE: i64 = 50;
/// Payments, subscriptions and invoices listed on a customer's page, each.
pub const CUSTOMER_ITEMS: i64 = 20;
/// Longest search accepted.
const MAX_SEARCH_CHARS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

/// Customers whose email or name starts with `prefix` (case-insensitively), newest first.
pub async fn search(
    pool: &sqlx::PgPool,
    scope: &Scope,
    prefix: &str,
) -> Result<Vec<Value>, sqlx::Error> {
    let prefix = prefix.to_lowercase();
    // Byte-wise range scans on the text_pattern_ops indexes: every string starting with the
    // prefix sorts between it and it followed by the last code point.
    sqlx::query_scalar(
        "SELECT o.body FROM ( \
             (SELECT id FROM dashboard.customers \
              WHERE project = $1 AND livemode = $2 AND NOT deleted \
                AND email_lower ~>=~ $3 AND email_lower ~<=~ ($3 || chr(1114111)) \
              ORDER BY email_lower USING ~<~ LIMIT $4) \
             UNION \
             (SELECT id FROM dashboard.customers \
              WHERE project = $1 AND livemode = $2 AND NOT deleted \
                AND name_lower ~>=~ $3 AND name_lower ~<=~ ($3 || chr(1114111)) \
              ORDER BY name_lower USING ~<~ LIMIT $4) \
         ) matched JOIN api.objects o ON o.id = matched.id \
         WHERE o.project = $1 AND o.livemode = $2 AND o.object = 'customer' AND NOT o.deleted \
         ORDER BY o.created DESC, o.id DESC LIMIT $4",
    )
    .bind(&scope.project)
    .bind(scope.livemode)
    .bind(prefix)
    .bind(CUSTOMERS_PER_PAGE)
    .fetch_all(pool)
    .await
}

/// One customer (deleted ones too: their payments and invoices remain).
async fn customer(
    pool: &sqlx::PgPool,
    scope: &Scope,
    id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT body FROM api.objects \
         WHERE id = $1 AND project = $2 AND livemode = $3 AND object = 'customer'",
    )
    .bind(id)
    .bind(&scope.project)
    .bind(scope.livemode)
    .fetch_optional(pool)
    .await
}

/// `GET …/customers?q=`.
pub async fn list(
    State(state): State<DashboardState>,
    session: Session,
    Path((project, mode)): Path<(String, String)>,
    Query(Search { q }): Query<Search>,
) -> Response {
    let page = Page::default();
    let project = match ProjectView::find(&state.pool, &page, &project, &mode).await {
        Ok(project) => project,
        Err(response) => return response,
    };
    let query: String = q.trim().chars().take(MAX_SEARCH_CHARS).collect();
    let found = if query.is_empty() {
        objects(
            &state.pool,
            &project.scope,
            "customer",
            None,
            CUSTOMERS_PER_PAGE,
        )
        .await
    } else {
        search(&state.pool, &project.scope, &query).await
    };
    let customers = match found {
        Ok(customers) => customers,
        Err(error) => return unavailable(&page, error),
    };
    let caption = if query.is_empty() {
        format!("The newest {CUSTOMERS_PER_PAGE} customers")
    } else {
        format!("Customers whose email or name starts with “{query}”")
    };
    let body = html! {
        h1 { "Customers" }
        form method="get" action=(project.href("/customers")) role="search" {
            label for="q" { "Search by the start of an email or name" }
            input id="q" name="q" type="search" value=(query);
            button type="submit" { "Search" }
        }
        @if customers.is_empty() {
            p { "No customers found." }
        } @else {
            table {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Email" }
                    th scope="col" { "Id" }
                    th scope="col" { "Created" }
                } }
                tbody {
                    @for customer in &customers {
                        @let id = text(&customer["id"]);
                        tr data-customer=(id) {
                            td { a href=(project.href(&format!("/customers/{id}"))) {
                                @if text(&customer["name"]).is_empty() { "(no name)" } @else { (text(&customer["name"])) }
                            } }
                            td { (text(&customer["email"])) }
                            td { code { (id) } }
                            td { (when(customer["created"].as_i64().unwrap_or(0))) }
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
            "Customers",
            Some(&project),
            Section::Customers,
            body,
        ),
    )
}

/// `GET …/customers/{customer}`.
pub async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Path((project, mode, customer_id)): Path<(String, String, String)>,
) -> Response {
    let page = Page::default();
    let project = match ProjectView::find(&state.pool, &page, &project, &mode).await {
        Ok(project) => project,
        Err(response) => return response,
    };
    let scope = &project.scope;
    let pool = &state.pool;
    let loaded = tokio::try_join!(
        customer(pool, scope, &customer_id),
        payments(pool, scope, Some(&customer_id), CUSTOMER_ITEMS),
        objects(
            pool,
            scope,
            "subscription",
            Some(&customer_id),
            CUSTOMER_ITEMS
        ),
        objects(pool, scope, "invoice", Some(&customer_id), CUSTOMER_ITEMS),
    );
    let (customer, payments, subscriptions, invoices) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return unavailable(&page, error),
    };
    let Some(customer) = customer else {
        return not_found(&page);
    };
    let name = text(&customer["name"]);
    let title = if name.is_empty() {
        customer_id.as_str()
    } else {
        name
    };
    let metadata: Vec<(&String, &Value)> = customer["metadata"]
        .as_object()
        .map(|metadata| metadata.iter().collect())
        .unwrap_or_default();
    let body = html! {
        h1 { "Customer: " (title) }
        dl {
            dt { "Id" } dd { code { (customer_id) } }
            dt { "Name" } dd { (name) }
            dt { "Email" } dd { (text(&customer["email"])) }
            @if !text(&customer["description"]).is_empty() {
                dt { "Description" } dd { (text(&customer["description"])) }
            }
            dt { "Created" } dd { (when(customer["created"].as_i64().unwrap_or(0))) }
            @if customer["deleted"] == true { dt { "Deleted" } dd { "yes" } }
        }
        @if !metadata.is_empty() {
            table {
                caption { "Metadata" }
                thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                tbody {
                    @for (key, value) in &metadata {
                        tr { th scope="row" { (key) } td { (text(value)) } }
                    }
                }
            }
        }
        section aria-labelledby="payments" {
            h2 id="payments" { "Payments" }
            (payments_table(&format!("The latest {CUSTOMER_ITEMS} payments"), &project, &payments))
        }
        section aria-labelledby="subscriptions" {
            h2 id="subscriptions" { "Subscriptions" }
            @if subscriptions.is_empty() {
                p { "No subscriptions." }
            } @else {
                table {
                    caption { "The latest " (CUSTOMER_ITEMS) " subscriptions" }
                    thead { tr {
                        th scope="col" { "Subscription" }
                        th scope="col" { "Status" }
                        th scope="col" { "Price" }
                        th scope="col" { "Created" }
                        th scope="col" { "Cancels at period end" }
                    } }
                    tbody {
                        @for subscription in &subscriptions {
                            @let price = &subscription["items"]["data"][0]["price"];
                            tr data-subscription=(text(&subscription["id"])) {
                                td { code { (text(&subscription["id"])) } }
                                td { (text(&subscription["status"]).replace('_', " ")) }
                                td {
                                    @if let Some(amount) = price["unit_amount"].as_i64() {
                                        (format_money(amount, text(&price["currency"])))
                                        @if let Some(interval) = price["recurring"]["interval"].as_str() {
                                            " / " (interval)
                                        }
                                    }
                                }
                                td { (when(subscription["created"].as_i64().unwrap_or(0))) }
                                td { @if subscription["cancel_at_period_end"] == true { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="invoices" {
            h2 id="invoices" { "Invoices" }
            @if invoices.is_empty() {
                p { "No invoices." }
            } @else {
                table {
                    caption { "The latest " (CUSTOMER_ITEMS) " invoices" }
                    thead { tr {
                        th scope="col" { "Number" }
                        th scope="col" { "Status" }
                        th scope="col" class="amount" { "Total" }
                        th scope="col" { "Created" }
                        th scope="col" { "Documents" }
                    } }
                    tbody {
                        @for invoice in &invoices {
                            tr data-invoice=(text(&invoice["id"])) {
                                td {
                                    @if text(&invoice["number"]).is_empty() { code { (text(&invoice["id"])) } }
                                    @else { (text(&invoice["number"])) }
                                }
                                td { (text(&invoice["status"])) }
                                td class="amount" { (money(invoice, "total")) }
                                td { (when(invoice["created"].as_i64().unwrap_or(0))) }
                                td {
                                    @if let Some(url) = invoice["hosted_invoice_url"].as_str() {
                                        a href=(url) { "Invoice page" }
                                    }
                                    @if let Some(url) = invoice["invoice_pdf"].as_str() {
                                        " · " a href=(url) { "PDF" }
                                    }
                                    @if invoice["hosted_invoice_url"].is_null() { "(draft: none yet)" }
                                }
                            }
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
            title,
            Some(&project),
            Section::Customers,
            body,
        ),
    )
}
