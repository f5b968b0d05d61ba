//! The hosted invoice page (`invoice.hosted_invoice_url`) and its PDF (`invoice.invoice_pdf`).
//!
//! Reached without an API key: the unguessable token in the URL is the capability. The
//! invoice is found through the API read model (`api.invoice_access_tokens`, written when
//! the invoice is finalized); the seller's details and brand colour are the project's billing
//! settings, read from the log.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use commands::project_settings::billing_settings;
use domain::project::BillingSettings;
use invoice_pdf::{
    format_money, DocumentLine, DocumentStatus, DocumentTax, InvoiceDocument, Party,
};
use maud::html;
use serde_json::Value;

use super::Page;
use crate::v1::read_model::{self, Scope};
use crate::v1::ApiState;

/// Longest token looked up (ours are far shorter): anything longer is not one.
const MAX_TOKEN_CHARS: usize = 128;

/// A finalized invoice, its customer and its seller, as the page and the PDF show them.
struct HostedInvoice {
    invoice: Value,
    customer: Option<Value>,
    settings: BillingSettings,
    /// Each entry of `total_taxes` with its label ("VAT 20% (inclusive)").
    tax_labels: Vec<String>,
}

async fn find(state: &ApiState, token: &str) -> Result<Option<HostedInvoice>, sqlx::Error> {
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Ok(None);
    }
    let found: Option<(Value, String, bool)> = sqlx::query_as(
        "SELECT o.body, t.project, t.livemode FROM api.invoice_access_tokens t \
         JOIN api.objects o ON o.id = t.invoice AND o.project = t.project AND o.livemode = t.livemode \
         WHERE t.token = $1 AND NOT o.deleted",
    )
    .bind(token)
    .fetch_optional(&state.pool)
    .await?;
    let Some((invoice, project, livemode)) = found else {
        return Ok(None);
    };
    let scope = Scope { project, livemode };
    let customer = match invoice["customer"].as_str() {
        Some(id) => read_model::get_object(&state.pool, &scope, "customer", id)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let mut tax_labels = Vec::new();
    for tax in invoice["total_taxes"].as_array().into_iter().flatten() {
        let rate_id = tax["tax_rate_details"]["tax_rate"].as_str().unwrap_or("");
        let rate = read_model::get_object(&state.pool, &scope, "tax_rate", rate_id)
            .await
            .ok()
            .flatten();
        tax_labels.push(tax_label(rate.as_ref(), tax));
    }
    let settings = billing_settings(state.payments.bus(), &scope.project)
        .await
        .unwrap_or_else(|_| BillingSettings::defaults_for(&scope.project));
    Ok(Some(HostedInvoice {
        invoice,
        customer,
        settings,
        tax_labels,
    }))
}

fn tax_label(rate: Option<&Value>, tax: &Value) -> String {
    let inclusive = tax["tax_behavior"] == "inclusive";
    let mut label = match rate {
        Some(rate) => format!(
            "{} {}%",
            rate["display_name"].as_str().unwrap_or("Tax"),
            rate["percentage"]
        ),
        None => "Tax".to_string(),
    };
    if inclusive {
        label.push_str(" (inclusive)");
    }
    label
}

fn amount(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn brand_color(settings: &BillingSettings) -> Option<[u8; 3]> {
    let hex = settings.brand_color.as_deref()?.strip_prefix('#')?;
    if hex.len() != 6 {
        return None;
    }
    let channel = |at: usize| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok();
    Some([channel(0)?, channel(2)?, channel(4)?])
}

impl HostedInvoice {
    fn currency(&self) -> String {
        self.invoice["currency"].as_str().unwrap_or("").to_string()
    }

    fn money(&self, value: &Value) -> String {
        format_money(amount(value), &self.currency())
    }

    fn number(&self) -> String {
        self.invoice["number"].as_str().unwrap_or("").to_string()
    }

    fn seller(&self) -> Party {
        let seller = &self.settings.seller;
        Party {
            name: seller.name.clone().unwrap_or_default(),
            address_lines: seller.address_lines.clone(),
            email: seller.email.clone(),
            tax_id: seller.tax_id.clone(),
        }
    }

    fn customer(&self) -> Party {
        let customer = self.customer.as_ref().unwrap_or(&Value::Null);
        let email = text(&customer["email"]);
        Party {
            name: text(&customer["name"])
                .or_else(|| email.clone())
                .unwrap_or_default(),
            address_lines: Vec::new(),
            email,
            tax_id: None,
        }
    }

    fn status(&self) -> DocumentStatus {
        match self.invoice["status"].as_str() {
            Some("paid") => DocumentStatus::Paid,
            Some("void") => DocumentStatus::Void,
            Some("uncollectible") => DocumentStatus::Uncollectible,
            Some("draft") => DocumentStatus::Draft,
            _ => DocumentStatus::Open,
        }
    }

    fn issued_at(&self) -> i64 {
        self.invoice["status_transitions"]["finalized_at"]
            .as_i64()
            .unwrap_or_else(|| amount(&self.invoice["created"]))
    }

    fn lines(&self) -> Vec<DocumentLine> {
        self.invoice["lines"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|line| {
                let (start, end) = (
                    amount(&line["period"]["start"]),
                    amount(&line["period"]["end"]),
                );
                DocumentLine {
                    description: line["description"].as_str().unwrap_or("").to_string(),
                    quantity: line["quantity"].as_i64().unwrap_or(1),
                    unit_amount: line["pricing"]["unit_amount_decimal"]
                        .as_str()
                        .and_then(|unit| unit.parse().ok()),
                    amount: amount(&line["amount"]),
                    period: (end > start).then_some((start, end)),
                }
            })
            .collect()
    }

    fn taxes(&self) -> Vec<DocumentTax> {
        self.invoice["total_taxes"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(&self.tax_labels)
            .map(|(tax, label)| DocumentTax {
                label: label.clone(),
                amount: amount(&tax["amount"]),
            })
            .collect()
    }

    fn document(&self) -> InvoiceDocument {
        InvoiceDocument {
            seller: self.seller(),
            brand_color: brand_color(&self.settings),
            customer: self.customer(),
            number: Some(self.number()).filter(|number| !number.is_empty()),
            status: self.status(),
            currency: self.currency(),
            issued_at: self.issued_at(),
            due_at: self.invoice["due_date"].as_i64(),
            paid_at: self.invoice["status_transitions"]["paid_at"].as_i64(),
            lines: self.lines(),
            subtotal: amount(&self.invoice["subtotal"]),
            taxes: self.taxes(),
            total: amount(&self.invoice["total"]),
            amount_paid: amount(&self.invoice["amount_paid"]),
            amount_remaining: amount(&self.invoice["amount_remaining"]),
            footer: text(&self.invoice["footer"]),
        }
    }
}

fn date(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0)
        .map(|time| time.format("%-d %B %Y").to_string())
        .unwrap_or_default()
}

fn not_found(page: &Page) -> Response {
    page.message(
        StatusCode::NOT_FOUND,
        "Invoice not found",
        "This invoice link is not valid. Ask the sender for a new one.",
    )
}

fn unavailable(page: &Page) -> Response {
    page.message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Invoice unavailable",
        "The invoice cannot be shown right now. Please try again in a moment.",
    )
}

/// `GET /invoices/{token}`: the invoice as an accessible HTML page.
pub async fn page(State(state): State<ApiState>, Path(token): Path<String>) -> Response {
    let page = Page::default();
    let hosted = match find(&state, &token).await {
        Ok(Some(hosted)) => hosted,
        Ok(None) => return not_found(&page),
        Err(error) => {
            tracing::warn!(%error, "hosted invoice lookup failed");
            return unavailable(&page);
        }
    };
    let document = hosted.document();
    let number = hosted.number();
    let brand = hosted
        .settings
        .brand_color
        .clone()
        .filter(|_| brand_color(&hosted.settings).is_some())
        .unwrap_or_else(|| "#2f5d8a".to_string());
    let brand_style = format!(
        "header{{border-top:.5rem solid {brand};padding-top:1rem}}\
         table{{width:100%;border-collapse:collapse}}th,td{{text-align:left;padding:.3rem;border-bottom:1px solid #ddd}}\
         td.amount,th.amount{{text-align:right}}.status{{font-weight:bold;text-transform:uppercase}}"
    );
    let status = hosted.invoice["status"].as_str().unwrap_or("").to_string();
    let markup = page.document(
        &format!("Invoice {number}"),
        html! {
            style nonce=(page.nonce()) { (brand_style) }
            header {
                h1 { "Invoice " (number) }
                p class="status" { "Status: " (status) }
            }
            section aria-labelledby="from" {
                h2 id="from" { "From" }
                p { (document.seller.name) }
                @for line in &document.seller.address_lines { p { (line) } }
                @if let Some(email) = &document.seller.email { p { (email) } }
                @if let Some(tax_id) = &document.seller.tax_id { p { "Tax ID: " (tax_id) } }
            }
            section aria-labelledby="to" {
                h2 id="to" { "Billed to" }
                p { (document.customer.name) }
                @if let Some(email) = &document.customer.email {
                    @if *email != document.customer.name { p { (email) } }
                }
            }
            dl {
                dt { "Invoice number" } dd { (number) }
                dt { "Date of issue" } dd { (date(document.issued_at)) }
                @if let Some(paid_at) = document.paid_at {
                    dt { "Paid on" } dd { (date(paid_at)) }
                }
            }
            table {
                caption { "Invoice lines" }
                thead { tr {
                    th scope="col" { "Description" }
                    th scope="col" class="amount" { "Qty" }
                    th scope="col" class="amount" { "Unit price" }
                    th scope="col" class="amount" { "Amount" }
                } }
                tbody {
                    @for line in &document.lines {
                        tr {
                            td {
                                (line.description)
                                @if let Some((start, end)) = line.period {
                                    br; small { (date(start)) " – " (date(end)) }
                                }
                            }
                            td class="amount" { (line.quantity) }
                            td class="amount" {
                                @if let Some(unit) = line.unit_amount { (format_money(unit, &document.currency)) }
                            }
                            td class="amount" { (format_money(line.amount, &document.currency)) }
                        }
                    }
                }
            }
            table {
                caption { "Totals" }
                tbody {
                    tr { th scope="row" { "Subtotal" } td class="amount" { (hosted.money(&hosted.invoice["subtotal"])) } }
                    @for tax in &document.taxes {
                        tr { th scope="row" { (tax.label) } td class="amount" { (format_money(tax.amount, &document.currency)) } }
                    }
                    tr { th scope="row" { "Total" } td class="amount" { (hosted.money(&hosted.invoice["total"])) } }
                    tr { th scope="row" { "Amount paid" } td class="amount" { (hosted.money(&hosted.invoice["amount_paid"])) } }
                    tr { th scope="row" { "Amount due" } td class="amount" { (hosted.money(&hosted.invoice["amount_remaining"])) } }
                }
            }
            @if let Some(footer) = &document.footer { p class="note" { (footer) } }
            p { a href=(format!("{token}/pdf")) download=(format!("{number}.pdf")) { "Download PDF" } }
        },
    );
    page.respond(StatusCode::OK, markup)
}

/// `GET /invoices/{token}/pdf`: the invoice as a PDF.
pub async fn pdf(State(state): State<ApiState>, Path(token): Path<String>) -> Response {
    let page = Page::default();
    let hosted = match find(&state, &token).await {
        Ok(Some(hosted)) => hosted,
        Ok(None) => return not_found(&page),
        Err(error) => {
            tracing::warn!(%error, "invoice PDF lookup failed");
            return unavailable(&page);
        }
    };
    let bytes = invoice_pdf::render(&hosted.document());
    // The number is ours (PREFIX-NNNN), but only filename-safe characters are kept anyway.
    let filename: String = hosted
        .number()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("inline; filename=\"{filename}.pdf\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
