//! The `/docs` page: guides, then every endpoint grouped by resource (parameters, what it
//! returns, errors, a curl example), then every object's fields. No script; the style
//! carries the response's CSP nonce.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::guides::{self, GUIDES};
use super::objects::{self, OBJECTS};
use super::registry::{Endpoint, Kind, Returns, ENDPOINTS, RESOURCES};
use crate::pages::Page;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1a1a2e;line-height:1.5}\
nav{position:fixed;top:0;bottom:0;left:0;width:15rem;overflow-y:auto;padding:1rem;background:#f4f4f8;font-size:.9rem}\
nav ul{list-style:none;padding-left:.5rem;margin:.2rem 0 .8rem}nav a{color:#334;text-decoration:none}\
main{margin-left:17rem;max-width:56rem;padding:1rem 2rem 4rem}\
pre{background:#1a1a2e;color:#e8e8f0;padding:.8rem;overflow-x:auto;border-radius:4px;font-size:.85rem}\
code{font-family:ui-monospace,monospace;font-size:.9em}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;font-size:.9rem}\
th,td{border-bottom:1px solid #dde;padding:.3rem .5rem;text-align:left;vertical-align:top}\
.endpoint{border-top:1px solid #ccd;padding-top:.5rem;margin-top:1.5rem}\
.method{font-weight:bold;font-family:ui-monospace,monospace;margin-right:.5rem}\
.required{color:#a33;font-size:.8rem}.note{color:#555}\
@media (max-width:50rem){nav{position:static;width:auto}main{margin-left:0}}";

/// The page's body (everything but the nonce-carrying head), rendered once.
fn body() -> &'static str {
    static BODY: OnceLock<String> = OnceLock::new();
    BODY.get_or_init(|| render_body().into_string())
}

pub fn respond() -> Response {
    let page = Page::default();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "API reference · Calmony Pay" }
                style nonce=(page.nonce()) { (STYLE) }
            }
            body { (PreEscaped(body())) }
        }
    };
    page.respond(StatusCode::OK, markup)
}

fn resource_anchor(resource: &str) -> String {
    resource.to_lowercase().replace(' ', "-")
}

/// Inline `code` spans from backticks, escaped.
fn prose(text: &str) -> Markup {
    html! {
        @for (index, part) in text.split('`').enumerate() {
            @if index % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

fn kind_label(kind: Kind) -> String {
    match kind {
        Kind::String => "string".into(),
        Kind::Integer => "integer".into(),
        Kind::Boolean => "boolean".into(),
        Kind::Timestamp => "timestamp".into(),
        Kind::Enum(values) => format!("one of {}", values.join(", ")),
        Kind::StringList => "array of strings".into(),
        Kind::Metadata => "metadata".into(),
    }
}

fn render_body() -> Markup {
    html! {
        nav {
            strong { "Calmony Pay API" }
            ul { li { a href="/openapi.json" { "openapi.json" } } }
            strong { "Guides" }
            ul {
                @for (anchor, heading) in GUIDES {
                    li { a href={ "#" (anchor) } { (heading) } }
                }
            }
            strong { "Endpoints" }
            ul {
                @for (resource, _) in RESOURCES {
                    li { a href={ "#" (resource_anchor(resource)) } { (resource) } }
                }
            }
            strong { "Objects" }
            ul {
                @for (name, _, _) in OBJECTS {
                    li { a href={ "#object-" (name) } { (name) } }
                }
            }
        }
        main {
            h1 { "Calmony Pay API reference" }
            p {
                "A Stripe-shaped payments API. Requests are form-encoded, answers are JSON, "
                "the official Stripe SDKs work by changing the base URL. The same reference, "
                "machine-readable: " a href="/openapi.json" { code { "/openapi.json" } } " (OpenAPI 3.1)."
            }
            @for (anchor, heading) in GUIDES {
                section id=(anchor) {
                    h2 { (heading) }
                    (guides::render(anchor))
                }
            }
            @for (resource, description) in RESOURCES {
                section id=(resource_anchor(resource)) {
                    h2 { (resource) }
                    p { (prose(description)) }
                    @for endpoint in ENDPOINTS.iter().filter(|endpoint| endpoint.resource == *resource) {
                        (endpoint_section(endpoint))
                    }
                }
            }
            h2 { "Objects" }
            @for (name, description, spec) in OBJECTS {
                section id={ "object-" (name) } {
                    h3 { "The " code { (name) } " object" }
                    p { (prose(description)) }
                    table {
                        thead { tr { th { "Field" } th { "Type" } } }
                        tbody {
                            @for field in objects::fields(spec) {
                                tr {
                                    td { code { (field.name) } }
                                    td {
                                        (field.field_type.label())
                                        @if field.nullable { span class="note" { ", nullable" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn endpoint_section(endpoint: &Endpoint) -> Markup {
    let params = endpoint.all_params();
    html! {
        div class="endpoint" id=(endpoint.anchor()) {
            h3 { (endpoint.summary) }
            p { span class="method" { (endpoint.method.as_str()) } code { (endpoint.path) } }
            @if !endpoint.description.is_empty() { p { (prose(endpoint.description)) } }
            @if !params.is_empty() {
                table {
                    thead { tr { th { "Parameter" } th { "Type" } th { "Description" } } }
                    tbody {
                        @for param in &params {
                            tr {
                                td {
                                    code { (param.name) }
                                    @if param.required { " " span class="required" { "required" } }
                                }
                                td { (kind_label(param.kind)) }
                                td { (prose(param.description)) }
                            }
                        }
                    }
                }
            }
            p {
                "Returns "
                @match endpoint.returns {
                    Returns::Object(object) => { "the " a href={ "#object-" (object) } { code { (object) } } " object." }
                    Returns::List(object) => { "a list of " a href={ "#object-" (object) } { code { (object) } } " objects." }
                    Returns::Deleted(object) => { code { r#"{"id", "object": ""# (object) r#"", "deleted": true}"# } "." }
                }
            }
            table {
                thead { tr { th { "Status" } th { "Error" } th { "When" } } }
                tbody {
                    @for error in endpoint.errors() {
                        tr {
                            td { (error.status) }
                            td {
                                code { (error.error_type) }
                                @if let Some(code) = error.code { " " code { (code) } }
                            }
                            td { (prose(error.when)) }
                        }
                    }
                }
            }
            pre { code { (endpoint.curl()) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_every_endpoint_guide_and_object() {
        let html = render_body().into_string();
        for endpoint in ENDPOINTS {
            assert!(
                html.contains(&format!("<code>{}</code>", endpoint.path)),
                "{}",
                endpoint.path
            );
            assert!(html.contains(&format!("id=\"{}\"", endpoint.anchor())));
        }
        for (anchor, heading) in GUIDES {
            assert!(html.contains(&format!("<h2>{heading}</h2>")), "{heading}");
            assert!(html.contains(&format!("id=\"{anchor}\"")));
        }
        for (name, _, _) in OBJECTS {
            assert!(html.contains(&format!("id=\"object-{name}\"")), "{name}");
        }
        for needle in [
            "stripe.Webhook.construct_event",
            "stripe.webhooks.constructEvent",
            "base_addresses={&quot;api&quot;: &quot;http://127.0.0.1:8080&quot;}",
            "protocol: 'http'",
            "Idempotent-Replayed: true",
            "starting_after",
            "ending_before",
            "pm_card_chargeCustomerFail",
            "/v1/test_helpers/test_clocks/clock_…/advance",
        ] {
            assert!(html.contains(needle), "{needle}");
        }
        assert!(!html.contains("<script"), "no scripts");
    }
}
