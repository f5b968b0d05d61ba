//! The API's documentation: `/docs` (HTML: guides, every endpoint, every object) and
//! `/openapi.json` (OpenAPI 3.1). Both are built from one table of endpoints
//! ([`registry`]) and one of objects ([`objects`]); tests hold the table to the router and
//! to the parameters the handlers read, so the docs cannot drift from the code.

pub mod guides;
pub mod objects;
pub mod openapi;
mod page;
pub mod registry;

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// `GET /docs` and `GET /openapi.json`; public (no API key), the same for every project.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs", get(docs))
        .route("/openapi.json", get(openapi_json))
}

async fn docs() -> Response {
    page::respond()
}

async fn openapi_json() -> Response {
    // Built once: the document depends on nothing but the code.
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(openapi::json).clone();
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 4 << 20).await.expect("body");
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn openapi_json_is_served_as_openapi_3_1_with_every_path() {
        let (status, headers, body) = get("/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(document["openapi"], "3.1.0");
        for endpoint in registry::ENDPOINTS {
            let method = endpoint.method.as_str().to_lowercase();
            assert!(
                document["paths"][endpoint.path][&method].is_object(),
                "{method} {}",
                endpoint.path
            );
        }
    }

    #[tokio::test]
    async fn docs_are_served_with_a_strict_policy_and_every_endpoint_and_guide() {
        let (status, headers, body) = get("/docs").await;
        assert_eq!(status, StatusCode::OK);
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        for endpoint in registry::ENDPOINTS {
            assert!(body.contains(endpoint.path), "{}", endpoint.path);
        }
        for (_, heading) in guides::GUIDES {
            assert!(body.contains(heading), "{heading}");
        }
    }
}
