//! The simulator's browser pages: the hosted card form, the 3-D Secure challenge, the
//! auto-submitting form that carries a result to the merchant, and a message page. Every
//! page carries a per-response CSP nonce; its only scripts are constants.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::ledger::random_token;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#1a1a2e}\
label{display:block;margin:.8rem 0 .2rem}input,select{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}\
.row{display:flex;gap:.5rem}button{font-size:1rem;padding:.6rem 1.2rem;margin:1rem .5rem 0 0;cursor:pointer}\
.error{color:#b00020;font-weight:bold}.summary{background:#f3f3f8;padding:.8rem;border-radius:.4rem}\
.note{color:#555;font-size:.9rem}";

/// Submits the page's only form as soon as it loads; the visible button is the fallback.
const AUTO_SUBMIT_SCRIPT: &str = "document.getElementById('autosubmit').submit();";

/// What the cardholder is paying, shown on the card form and the challenge page.
pub(crate) struct PaymentSummary {
    pub merchant_id: String,
    pub amount_text: String,
    pub order_ref: Option<String>,
    pub card_last4: Option<String>,
}

pub(crate) struct Page {
    nonce: String,
}

impl Page {
    pub fn new() -> Self {
        Self {
            nonce: random_token(),
        }
    }

    fn document(&self, title: &str, body: Markup) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) }
                    style nonce=(self.nonce) { (PreEscaped(STYLE)) }
                }
                body { (body) }
            }
        }
    }

    /// Sends the page with a Content-Security-Policy that allows only this page's nonce for
    /// scripts and styles. Forms may post to any http(s) URL: that is the point of them.
    pub fn respond(self, status: StatusCode, markup: Markup) -> Response {
        let policy = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; form-action http: https:; base-uri 'none'",
            nonce = self.nonce
        );
        let mut response = (status, markup).into_response();
        if let Ok(value) = HeaderValue::from_str(&policy) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    pub fn card_form(
        &self,
        session_id: &str,
        summary: &PaymentSummary,
        error: Option<&str>,
        allow_cancel: bool,
    ) -> Markup {
        let body = html! {
            h1 { "Pay by card" }
            (summary_block(summary))
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/hosted/pay" autocomplete="off" {
                input type="hidden" name="session" value=(session_id);
                label for="cardNumber" { "Card number" }
                input id="cardNumber" name="cardNumber" inputmode="numeric" maxlength="23" required;
                div.row {
                    div {
                        label for="cardExpiryMonth" { "Expiry month" }
                        select id="cardExpiryMonth" name="cardExpiryMonth" required {
                            @for month in 1..=12u8 {
                                option value=(format!("{month:02}")) { (format!("{month:02}")) }
                            }
                        }
                    }
                    div {
                        label for="cardExpiryYear" { "Expiry year" }
                        select id="cardExpiryYear" name="cardExpiryYear" required {
                            @for year in expiry_years() {
                                option value=(format!("{:02}", year % 100)) { (year) }
                            }
                        }
                    }
                    div {
                        label for="cardCVV" { "CVV" }
                        input id="cardCVV" name="cardCVV" inputmode="numeric" maxlength="4" required;
                    }
                }
                button type="submit" { "Pay" }
                @if allow_cancel {
                    button type="submit" formaction="/hosted/cancel" formnovalidate { "Cancel" }
                }
            }
            p.note { "Cardstream simulator: outcomes follow the test card used." }
        };
        self.document("Pay by card", body)
    }

    pub fn challenge(&self, creq: &str, summary: &PaymentSummary) -> Markup {
        let body = html! {
            h1 { "3-D Secure check" }
            (summary_block(summary))
            p { "This is the simulator's access control server. Choose how the cardholder's bank answers." }
            form method="post" action="/acs/challenge/result" {
                input type="hidden" name="creq" value=(creq);
                button type="submit" name="outcome" value="pass" { "Authenticate (pass)" }
                button type="submit" name="outcome" value="fail" { "Fail authentication" }
            }
        };
        self.document("3-D Secure check", body)
    }

    /// A form of hidden fields that posts itself to `action_url`.
    pub fn auto_submit<'a>(
        &self,
        title: &str,
        action_url: &str,
        fields: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Markup {
        let body = html! {
            form id="autosubmit" method="post" action=(action_url) {
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                p { "Returning you to the merchant…" }
                button type="submit" { "Continue" }
            }
            script nonce=(self.nonce) { (PreEscaped(AUTO_SUBMIT_SCRIPT)) }
        };
        self.document(title, body)
    }

    pub fn message(&self, title: &str, message: &str) -> Markup {
        let body = html! {
            h1 { (title) }
            p { (message) }
        };
        self.document(title, body)
    }
}

fn summary_block(summary: &PaymentSummary) -> Markup {
    html! {
        div.summary {
            p { "Merchant " strong { (summary.merchant_id) } }
            p { "Amount " strong { (summary.amount_text) } }
            @if let Some(order_ref) = &summary.order_ref {
                p { "Order " (order_ref) }
            }
            @if let Some(last4) = &summary.card_last4 {
                p { "Card ending " (last4) }
            }
        }
    }
}

fn expiry_years() -> std::ops::RangeInclusive<i32> {
    use chrono::Datelike;
    let this_year = chrono::Utc::now().year();
    this_year..=this_year + 12
}

/// `1234` minor units of `GBP` as `12.34 GBP`.
pub(crate) fn format_amount(amount_minor: u64, currency_code: &str) -> String {
    format!(
        "{}.{:02} {}",
        amount_minor / 100,
        amount_minor % 100,
        currency_code
    )
}
