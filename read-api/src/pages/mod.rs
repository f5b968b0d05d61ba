//! Pages a person's browser sees (server-rendered with maud, escaped by default). Every
//! page carries a per-response CSP nonce; scripts are constants.

pub mod authenticate;
pub mod checkout;
pub mod dashboard;
pub mod invoices;
pub mod portal;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use rand::distr::{Alphanumeric, SampleString};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:30rem;margin:2rem auto;padding:0 1rem;color:#1a1a2e}\
button{font-size:1rem;padding:.6rem 1.2rem;margin-top:1rem;cursor:pointer}.note{color:#555}";

/// A page with its own script nonce.
pub struct Page {
    nonce: String,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            nonce: Alphanumeric.sample_string(&mut rand::rng(), 22),
        }
    }
}

impl Page {
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    pub fn document(&self, title: &str, body: Markup) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Calmony Pay" }
                    style nonce=(self.nonce) { (STYLE) }
                }
                body { main { (body) } }
            }
        }
    }

    /// The page with its security headers: no inline script but ours, no framing, no
    /// caching of what may be personal.
    pub fn respond(&self, status: StatusCode, markup: Markup) -> Response {
        let policy = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
             form-action *; frame-ancestors 'none'; base-uri 'none'",
            nonce = self.nonce
        );
        let mut response = (status, markup).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&policy) {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        response
    }

    pub fn message(&self, status: StatusCode, title: &str, text: &str) -> Response {
        self.respond(
            status,
            self.document(title, html! { h1 { (title) } p { (text) } }),
        )
    }
}
