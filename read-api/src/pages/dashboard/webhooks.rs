//! Webhook endpoints (from the api read model) and each one's delivery log (the relay's
//! tables, through `webhook_relay::store`, as `GET /v1/webhook_endpoints/{id}/deliveries`
//! reads them).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde_json::Value;
use webhook_relay::store;

use super::overview::{objects, text};
use super::session::Session;
use super::{layout, not_found, unavailable, when, DashboardState, ProjectView, Section};
use crate::pages::Page;

/// Endpoints listed (Stripe allows 16 per account; ours are unbounded but few).
pub const MAX_ENDPOINTS: i64 = 100;
/// Deliveries shown on an endpoint's page.
pub const DELIVERIES_SHOWN: i64 = 50;

fn events_of(endpoint: &Value) -> String {
    endpoint["enabled_events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `GET …/webhooks`.
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
    let endpoints = match objects(
        &state.pool,
        &project.scope,
        "webhook_endpoint",
        None,
        MAX_ENDPOINTS,
    )
    .await
    {
        Ok(endpoints) => endpoints,
        Err(error) => return unavailable(&page, error),
    };
    let body = html! {
        h1 { "Webhook endpoints" }
        @if endpoints.is_empty() {
            p { "No webhook endpoints in this mode." }
        } @else {
            table {
                caption { "Endpoints, newest first" }
                thead { tr {
                    th scope="col" { "URL" }
                    th scope="col" { "Status" }
                    th scope="col" { "Events" }
                    th scope="col" { "Created" }
                } }
                tbody {
                    @for endpoint in &endpoints {
                        @let id = text(&endpoint["id"]);
                        tr data-endpoint=(id) {
                            td { a href=(project.href(&format!("/webhooks/{id}"))) { code { (text(&endpoint["url"])) } } }
                            td { (text(&endpoint["status"])) }
                            td { (events_of(endpoint)) }
                            td { (when(endpoint["created"].as_i64().unwrap_or(0))) }
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
            "Webhooks",
            Some(&project),
            Section::Webhooks,
            body,
        ),
    )
}

/// `GET …/webhooks/{endpoint}`: the endpoint and its latest deliveries with their attempts.
pub async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Path((project, mode, endpoint_id)): Path<(String, String, String)>,
) -> Response {
    let page = Page::default();
    let project = match ProjectView::find(&state.pool, &page, &project, &mode).await {
        Ok(project) => project,
        Err(response) => return response,
    };
    let scope = &project.scope;
    let endpoint: Option<Value> = match sqlx::query_scalar(
        "SELECT body FROM api.objects \
         WHERE id = $1 AND project = $2 AND livemode = $3 AND object = 'webhook_endpoint' AND NOT deleted",
    )
    .bind(&endpoint_id)
    .bind(&scope.project)
    .bind(scope.livemode)
    .fetch_optional(&state.pool)
    .await
    {
        Ok(endpoint) => endpoint,
        Err(error) => return unavailable(&page, error),
    };
    let Some(endpoint) = endpoint else {
        return not_found(&page);
    };
    let deliveries = match store::list_deliveries(
        &state.pool,
        store::Scope {
            project: &scope.project,
            livemode: scope.livemode,
        },
        &endpoint_id,
        None,
        store::Page::First,
        DELIVERIES_SHOWN,
    )
    .await
    {
        Ok(deliveries) => deliveries,
        Err(error) => return unavailable(&page, error),
    };
    let body = html! {
        h1 { "Webhook endpoint" }
        dl {
            dt { "URL" } dd { code { (text(&endpoint["url"])) } }
            dt { "Id" } dd { code { (endpoint_id) } }
            dt { "Status" } dd { (text(&endpoint["status"])) }
            dt { "Events" } dd { (events_of(&endpoint)) }
            @if !text(&endpoint["description"]).is_empty() {
                dt { "Description" } dd { (text(&endpoint["description"])) }
            }
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() {
            p { "Nothing delivered yet." }
        } @else {
            table {
                caption { "The latest " (DELIVERIES_SHOWN) " deliveries, newest first" }
                thead { tr {
                    th scope="col" { "Created" }
                    th scope="col" { "Event" }
                    th scope="col" { "Status" }
                    th scope="col" class="amount" { "Attempts" }
                    th scope="col" { "Last attempt" }
                    th scope="col" { "Next attempt" }
                } }
                tbody {
                    @for delivery in &deliveries {
                        @let last = delivery["attempts"].as_array().and_then(|attempts| attempts.last());
                        tr data-delivery=(text(&delivery["id"])) {
                            td { (when(delivery["created"].as_i64().unwrap_or(0))) }
                            td { (text(&delivery["event_type"])) br; code { (text(&delivery["event"])) } }
                            td { (text(&delivery["status"])) @if delivery["redelivery"] == true { " (redelivery)" } }
                            td class="amount" { (delivery["attempt_count"].as_i64().unwrap_or(0)) }
                            td {
                                @if let Some(last) = last {
                                    (when(last["created"].as_i64().unwrap_or(0))) ": "
                                    @if let Some(code) = last["status_code"].as_i64() { "HTTP " (code) }
                                    @if let Some(error) = last["error"].as_str() { " " (error) }
                                    @if let Some(latency) = last["latency_ms"].as_i64() { " (" (latency) " ms)" }
                                }
                            }
                            td {
                                @if let Some(next) = delivery["next_attempt"].as_i64() { (when(next)) } @else { "—" }
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
            "Webhook endpoint",
            Some(&project),
            Section::Webhooks,
            body,
        ),
    )
}
