//! The HTTP conventions layer driven through a tiny router, as a Stripe SDK would drive it:
//! parameters, error envelopes, Request-Id, Stripe-Version, panics, API keys, rate limits
//! and lists.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use event_store::Mode;
use read_api::http::auth::ResolveError;
use read_api::http::error::CardError;
use read_api::http::{
    apply_conventions, require_api_key, ApiError, AuthenticatedKey, ConventionsConfig,
    KeyRateLimiter, KeyResolver, List, ListParams, Params, RateLimitDefaults, RequestId,
    StripeVersion,
};
use serde_json::{json, Value};
use tower::ServiceExt;

const TEST_KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";
const LIVE_KEY: &str = "sk_live_9aZ0bY8cX7dW6eV5fU4gT3hS";
const SLOW_KEY: &str = "sk_test_onlytworequestspersecond0";
const BROKEN_KEY: &str = "sk_test_thedatabaseisdownforthis";

struct FakeResolver(HashMap<&'static str, AuthenticatedKey>);

#[async_trait]
impl KeyResolver for FakeResolver {
    async fn resolve(&self, secret: &str) -> Result<Option<AuthenticatedKey>, ResolveError> {
        if secret == BROKEN_KEY {
            return Err("connection refused to db.internal:5432".into());
        }
        Ok(self.0.get(secret).cloned())
    }
}

fn key(key_id: &str, mode: Mode, rate_limit_per_second: u32) -> AuthenticatedKey {
    AuthenticatedKey {
        key_id: key_id.to_owned(),
        project_id: "proj_1".to_owned(),
        mode,
        rate_limit_per_second,
    }
}

async fn create_customer(
    key: AuthenticatedKey,
    request_id: RequestId,
    version: StripeVersion,
    mut params: Params,
) -> Result<Json<Value>, ApiError> {
    let email = params.take_string("email")?;
    let description = params.take_optional_string("description")?;
    let metadata = params.take_metadata("metadata")?;
    let preferred_locales = params.take_list("preferred_locales")?;
    let expand = params.take_expand()?;
    let balance = params.take_i64("balance")?;
    let shipping_name = match params.take_object("shipping")? {
        Some(mut shipping) => shipping.take_string("name")?,
        None => None,
    };
    params.reject_unknown()?;
    let mut current = std::collections::BTreeMap::new();
    if let Some(update) = metadata {
        update.apply_to(&mut current);
    }
    Ok(Json(json!({
        "email": email,
        "description": match description {
            None => "absent".to_owned(),
            Some(None) => "unset".to_owned(),
            Some(Some(text)) => text,
        },
        "metadata": current,
        "preferred_locales": preferred_locales,
        "expand": expand,
        "balance": balance,
        "shipping_name": shipping_name,
        "livemode": key.mode == Mode::Live,
        "request_id": request_id.0,
        "stripe_version": version.0,
    })))
}

async fn list_customers(mut params: Params) -> Result<Json<List<Value>>, ApiError> {
    let list = ListParams::take_from(&mut params)?;
    params.reject_unknown()?;
    // Twelve customers, newest first; the "database" honours the keyset contract.
    let all: Vec<Value> = (1..=12)
        .rev()
        .map(|n| json!({"id": format!("cus_{n}")}))
        .collect();
    let rows: Vec<Value> = all
        .into_iter()
        .take(usize::try_from(list.fetch_limit()).unwrap())
        .collect();
    Ok(Json(List::from_page("/v1/customers", &list, rows)))
}

async fn retrieve_customer(
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    Err(ApiError::missing("customer", &id))
}

async fn confirm_declined() -> Result<Json<Value>, ApiError> {
    Err(ApiError::card_error(
        CardError::declined("insufficient_funds")
            .with_payment_intent(json!({"id": "pi_1", "object": "payment_intent"})),
    ))
}

async fn explode() -> Json<Value> {
    panic!("the handler fell over");
}

fn app() -> Router {
    let resolver = FakeResolver(HashMap::from([
        (TEST_KEY, key("key_test", Mode::Test, 0)),
        (LIVE_KEY, key("key_live", Mode::Live, 0)),
        (SLOW_KEY, key("key_slow", Mode::Test, 2)),
        // Stored as live behind a test prefix: a data bug that must not serve requests.
        (
            "sk_test_storedaslivebymistake00",
            key("key_wrong", Mode::Live, 0),
        ),
    ]));
    let v1 = Router::new()
        .route("/customers", post(create_customer).get(list_customers))
        .route("/customers/{id}", get(retrieve_customer))
        .route("/payment_intents/{id}/confirm", post(confirm_declined))
        .route("/explode", get(explode));
    let v1 = require_api_key(
        v1,
        Arc::new(resolver),
        Arc::new(KeyRateLimiter::new(RateLimitDefaults::default())),
    );
    let app = Router::new()
        .nest("/v1", v1)
        .route("/ping", get(|| async { "pong" }))
        .route("/explode", get(explode));
    apply_conventions(app, &ConventionsConfig::default())
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn error(&self) -> &Value {
        &self.body["error"]
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn get_with(uri: &str, authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(uri);
    if let Some(value) = authorization {
        builder = builder.header(header::AUTHORIZATION, value);
    }
    builder.body(Body::empty()).unwrap()
}

fn post_form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TEST_KEY}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn assert_request_id(answer: &Answer) -> String {
    let id = answer
        .header("request-id")
        .unwrap_or_else(|| panic!("no Request-Id on a {} answer", answer.status));
    let random = id
        .strip_prefix("req_")
        .unwrap_or_else(|| panic!("Request-Id {id} lacks req_"));
    assert!(random.len() >= 14, "{id}");
    assert!(random.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    id.to_owned()
}

#[tokio::test]
async fn nested_keys_in_both_array_forms_reach_the_handler() {
    let app = app();
    for body in [
        "email=a%40b.co&expand[]=customer&expand[]=invoice.subscription\
         &preferred_locales[]=en&preferred_locales[]=fr\
         &metadata[order]=42&shipping[name]=Jane+Doe&balance=-5",
        "email=a%40b.co&expand[1]=invoice.subscription&expand[0]=customer\
         &preferred_locales[1]=fr&preferred_locales[0]=en\
         &metadata%5Border%5D=42&shipping%5Bname%5D=Jane%20Doe&balance=-5",
    ] {
        let answer = send(&app, post_form("/v1/customers", body)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["email"], "a@b.co");
        assert_eq!(
            answer.body["expand"],
            json!(["customer", "invoice.subscription"])
        );
        assert_eq!(answer.body["preferred_locales"], json!(["en", "fr"]));
        assert_eq!(answer.body["metadata"], json!({"order": "42"}));
        assert_eq!(answer.body["shipping_name"], "Jane Doe");
        assert_eq!(answer.body["balance"], -5);
    }
}

#[tokio::test]
async fn get_reads_the_query_string_with_the_same_encoding() {
    let answer = send(
        &app(),
        get_with(
            "/v1/customers?limit=2&expand[0]=data.customer",
            Some(&bearer(TEST_KEY)),
        ),
    )
    .await;
    // `expand` is not taken by the list handler: proof the query string was parsed.
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.error()["param"], "expand");
}

#[tokio::test]
async fn empty_strings_unset() {
    let app = app();
    let answer = send(
        &app,
        post_form(
            "/v1/customers",
            "description=&metadata[a]=1&metadata[b]=&preferred_locales=",
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["description"], "unset");
    assert_eq!(answer.body["metadata"], json!({"a": "1"}));
    assert_eq!(answer.body["preferred_locales"], json!([]));

    let answer = send(&app, post_form("/v1/customers", "email=")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error()["code"], "parameter_invalid_empty");
    assert_eq!(answer.error()["param"], "email");
}

#[tokio::test]
async fn unknown_parameters_are_refused_by_name() {
    let app = app();
    let answer = send(
        &app,
        post_form(
            "/v1/customers",
            "email=a%40b.co&shipping[name]=n&shipping[bogus]=1",
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.body,
        json!({"error": {
            "type": "invalid_request_error",
            "code": "parameter_unknown",
            "message": "Received unknown parameter: shipping[bogus]",
            "param": "shipping[bogus]",
        }})
    );
    assert_request_id(&answer);

    let answer = send(&app, post_form("/v1/customers", "colour=red")).await;
    assert_eq!(answer.error()["param"], "colour");
}

#[tokio::test]
async fn wrong_types_are_400_with_param() {
    let answer = send(&app(), post_form("/v1/customers", "balance=lots")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error()["type"], "invalid_request_error");
    assert_eq!(answer.error()["code"], "parameter_invalid_integer");
    assert_eq!(answer.error()["param"], "balance");
    assert_eq!(answer.error()["message"], "Invalid integer: lots");
}

#[tokio::test]
async fn error_envelopes_have_stripes_shapes_and_statuses() {
    let app = app();
    let answer = send(
        &app,
        get_with("/v1/customers/cus_missing", Some(&bearer(TEST_KEY))),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.body,
        json!({"error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such customer: 'cus_missing'",
            "param": "id",
        }})
    );

    let answer = send(&app, post_form("/v1/payment_intents/pi_1/confirm", "")).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(answer.error()["type"], "card_error");
    assert_eq!(answer.error()["code"], "card_declined");
    assert_eq!(answer.error()["decline_code"], "insufficient_funds");
    assert_eq!(answer.error()["payment_intent"]["id"], "pi_1");
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn unknown_urls_and_methods_answer_the_envelope() {
    let app = app();
    let answer = send(&app, get_with("/v1/nothing_here", Some(&bearer(TEST_KEY)))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.error()["message"],
        "Unrecognized request URL (GET: /v1/nothing_here)."
    );
    assert_request_id(&answer);

    let delete = Request::delete("/v1/customers")
        .header(header::AUTHORIZATION, bearer(TEST_KEY))
        .body(Body::empty())
        .unwrap();
    let answer = send(&app, delete).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    assert_eq!(answer.error()["type"], "invalid_request_error");
}

#[tokio::test]
async fn every_response_carries_a_fresh_request_id() {
    let app = app();
    let answers = [
        send(&app, get_with("/ping", None)).await,
        send(&app, get_with("/v1/customers", Some(&bearer(TEST_KEY)))).await,
        send(
            &app,
            get_with("/v1/customers?limit=0", Some(&bearer(TEST_KEY))),
        )
        .await,
        send(&app, get_with("/v1/customers", None)).await,
        send(&app, get_with("/nowhere", None)).await,
        send(&app, get_with("/explode", None)).await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 400, 401, 404, 500]);
    let ids: std::collections::HashSet<String> = answers.iter().map(assert_request_id).collect();
    assert_eq!(ids.len(), answers.len(), "request ids repeat: {ids:?}");
}

#[tokio::test]
async fn the_request_id_reaches_the_handler() {
    let answer = send(&app(), post_form("/v1/customers", "")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.body["request_id"].as_str(),
        Some(assert_request_id(&answer).as_str())
    );
}

#[tokio::test]
async fn a_panic_is_a_500_envelope() {
    let answer = send(&app(), get_with("/v1/explode", Some(&bearer(TEST_KEY)))).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.error()["type"], "api_error");
    assert!(
        !answer.body.to_string().contains("fell over"),
        "the panic message leaked: {}",
        answer.body
    );
    assert_request_id(&answer);
    assert_eq!(answer.header("stripe-version"), Some("2026-10-28.endive"));
}

#[tokio::test]
async fn a_panic_over_a_real_connection_still_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app()).await });
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /explode HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    server.abort();
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nrequest-id: req_"),
        "{response}"
    );
    assert!(response.contains("\"type\":\"api_error\""), "{response}");
}

#[tokio::test]
async fn stripe_version_is_echoed_or_defaulted() {
    let app = app();
    let request = Request::get("/v1/customers")
        .header(header::AUTHORIZATION, bearer(TEST_KEY))
        .header("Stripe-Version", "2024-06-20")
        .body(Body::empty())
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(answer.header("stripe-version"), Some("2024-06-20"));

    let answer = send(&app, post_form("/v1/customers", "")).await;
    assert_eq!(answer.header("stripe-version"), Some("2026-10-28.endive"));
    assert_eq!(answer.body["stripe_version"], "2026-10-28.endive");

    let answer = send(&app, get_with("/v1/customers", None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("stripe-version"), Some("2026-10-28.endive"));
}

#[tokio::test]
async fn idempotency_key_is_echoed() {
    let mut request = post_form("/v1/customers", "");
    request
        .headers_mut()
        .insert("Idempotency-Key", "stripe-node-retry-1".parse().unwrap());
    let answer = send(&app(), request).await;
    assert_eq!(
        answer.header("idempotency-key"),
        Some("stripe-node-retry-1")
    );
}

#[tokio::test]
async fn bearer_and_both_basic_forms_authenticate() {
    let app = app();
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{LIVE_KEY}:"));
    for authorization in [
        bearer(LIVE_KEY),
        format!("Basic {encoded}"),
        format!("Basic {LIVE_KEY}"),
    ] {
        let request = Request::post("/v1/customers")
            .header(header::AUTHORIZATION, &authorization)
            .body(Body::empty())
            .unwrap();
        let answer = send(&app, request).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{authorization}: {}",
            answer.body
        );
        assert_eq!(answer.body["livemode"], true, "{authorization}");
    }
}

#[tokio::test]
async fn missing_and_invalid_keys_answer_401_envelopes() {
    let app = app();
    let answer = send(&app, get_with("/v1/customers", None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error()["type"], "invalid_request_error");
    assert!(answer.error()["message"]
        .as_str()
        .unwrap()
        .starts_with("You did not provide an API key."));

    let answer = send(
        &app,
        get_with(
            "/v1/customers",
            Some("Bearer sk_test_0000000000000000000000abcd"),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.error()["message"],
        "Invalid API Key provided: sk_test_****abcd"
    );

    // Not even shaped like a key: refused without a lookup, and never echoed whole.
    let answer = send(&app, get_with("/v1/customers", Some("Bearer pk_test_abc"))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(!answer.body.to_string().contains("pk_test_abc"));
}

#[tokio::test]
async fn resolver_failures_and_mode_mismatches_are_500s_without_detail() {
    let app = app();
    let answer = send(&app, get_with("/v1/customers", Some(&bearer(BROKEN_KEY)))).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.error()["type"], "api_error");
    assert!(!answer.body.to_string().contains("db.internal"));

    let answer = send(
        &app,
        get_with(
            "/v1/customers",
            Some(&bearer("sk_test_storedaslivebymistake00")),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_burst_over_the_keys_limit_gets_429_with_retry_after() {
    let app = app();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let answer = send(&app, get_with("/v1/customers", Some(&bearer(SLOW_KEY)))).await;
        statuses.push(answer.status.as_u16());
        last = Some(answer);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let answer = last.unwrap();
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.error()["code"], "rate_limit");
    assert_request_id(&answer);

    // Another key keeps its own budget.
    let answer = send(&app, get_with("/v1/customers", Some(&bearer(TEST_KEY)))).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn list_limit_is_validated_and_pages_say_has_more() {
    let app = app();
    let answer = send(&app, get_with("/v1/customers", Some(&bearer(TEST_KEY)))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["object"], "list");
    assert_eq!(answer.body["url"], "/v1/customers");
    assert_eq!(answer.body["has_more"], true);
    assert_eq!(answer.body["data"].as_array().unwrap().len(), 10);
    assert_eq!(answer.body["data"][0]["id"], "cus_12");

    let answer = send(
        &app,
        get_with("/v1/customers?limit=100", Some(&bearer(TEST_KEY))),
    )
    .await;
    assert_eq!(answer.body["has_more"], false);
    assert_eq!(answer.body["data"].as_array().unwrap().len(), 12);

    for query in ["limit=0", "limit=101", "limit=abc"] {
        let answer = send(
            &app,
            get_with(&format!("/v1/customers?{query}"), Some(&bearer(TEST_KEY))),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.error()["param"], "limit", "{query}");
    }

    let answer = send(
        &app,
        get_with(
            "/v1/customers?starting_after=cus_3&ending_before=cus_5",
            Some(&bearer(TEST_KEY)),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error()["code"], "parameters_exclusive");
}

#[tokio::test]
async fn oversized_and_non_form_bodies_are_refused_in_the_envelope() {
    let app = app();
    let big = format!("description={}", "x".repeat(300 * 1024));
    let answer = send(&app, post_form("/v1/customers", &big)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error()["type"], "invalid_request_error");
    assert_request_id(&answer);

    // Without Content-Length (a streamed body), the limit applies while reading.
    let chunks = streamed(&big);
    let request = Request::post("/v1/customers")
        .header(header::AUTHORIZATION, bearer(TEST_KEY))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(chunks)
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(answer.error()["type"], "invalid_request_error");

    let request = Request::post("/v1/customers")
        .header(header::AUTHORIZATION, bearer(TEST_KEY))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"email":"a@b.co"}"#))
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error()["type"], "invalid_request_error");
}

/// A body of unknown length, as a chunked upload sends it.
fn streamed(text: &str) -> Body {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = text
        .as_bytes()
        .chunks(16 * 1024)
        .map(|chunk| Ok(axum::body::Bytes::copy_from_slice(chunk)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}
