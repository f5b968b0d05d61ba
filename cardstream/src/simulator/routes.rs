//! HTTP for the simulator. Handlers are thin: they parse the form, take the ledger lock in a
//! synchronous helper (never across an await), and sign or render what the engine answers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::card::CardDetails;
use crate::codes::ResponseCode;
use crate::fields::Fields;
use crate::response::parse_amount_minor;
use crate::signature::{self, SIGNATURE_FIELD};

use super::engine::{authenticate, echo, refusal, Channel, Context};
use super::ledger::{random_token, set_result, HostedSession, Ledger, MAX_PENDING_BROWSER_STEPS};
use super::pages::{format_amount, Page, PaymentSummary};
use super::{SimulatedMerchant, SimulatorConfig};

/// The gateway allows 255 fields; 64 KiB is far more than any honest request needs.
const MAX_BODY_BYTES: usize = 64 * 1024;

struct Shared {
    config: SimulatorConfig,
    ledger: Mutex<Ledger>,
    http: reqwest::Client,
}

type SharedState = State<Arc<Shared>>;

pub(super) fn router(config: SimulatorConfig) -> Router {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.callback_timeout_ms))
        .build()
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        config,
        ledger: Mutex::new(Ledger::new()),
        http,
    });
    Router::new()
        .route("/direct/", post(direct))
        .route("/direct", post(direct))
        .route("/hosted/", post(hosted_start))
        .route("/hosted", post(hosted_start))
        .route("/hosted/modal/", post(hosted_start))
        .route("/paymentform/", post(hosted_start))
        .route("/hosted/pay", post(hosted_pay))
        .route("/hosted/cancel", post(hosted_cancel))
        .route("/acs/challenge", post(acs_challenge))
        .route("/acs/challenge/result", post(acs_result))
        .route("/admin/settle", post(admin_settle))
        .route("/admin/clock/advance", post(admin_advance_clock))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// A poisoned lock only means another request panicked mid-way; the simulator's state is
/// still the best answer we have, so keep serving rather than fail every later request.
fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn base_url(shared: &Shared, headers: &HeaderMap) -> String {
    if let Some(public_url) = &shared.config.public_url {
        return public_url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn sign_for(merchant: Option<&SimulatedMerchant>, mut fields: Fields) -> Fields {
    if let Some(secret) = merchant.and_then(|merchant| merchant.secret.as_deref()) {
        let signature = signature::sign(&fields, secret);
        fields.set(SIGNATURE_FIELD, signature);
    }
    fields
}

/// The real gateway labels its form-urlencoded answer `text/html` (§1.1); so do we, which
/// keeps our client honest about ignoring the Content-Type.
fn form_response(fields: &Fields) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        fields.to_form_body(),
    )
        .into_response()
}

async fn direct(State(shared): SharedState, headers: HeaderMap, body: Bytes) -> Response {
    let request = Fields::parse(&body);
    let base_url = base_url(&shared, &headers);
    let continuation = request.get_non_empty("threeDSRef").is_some();
    let (merchant, answer) = match authenticate(&shared.config, &request, continuation) {
        Ok((merchant, verified)) => {
            let mut ledger = lock(&shared.ledger);
            let context = Context {
                config: &shared.config,
                merchant,
                base_url: &base_url,
                channel: Channel::Direct,
                now: ledger.now(),
            };
            (Some(merchant), ledger.process(&context, &verified).fields)
        }
        Err((merchant, refused)) => (merchant, refused),
    };
    tracing::debug!(
        action = request.get("action").unwrap_or(""),
        response_code = answer.get("responseCode").unwrap_or(""),
        "simulated Direct request"
    );
    let signed = sign_for(merchant, answer);
    // The Direct integration also POSTs a copy to a callbackURL the request names (§1.3);
    // only the request's own, so that a QUERY does not re-send an old transaction's copy.
    let pending_challenge = signed.get("responseCode") == Some("65802");
    if let (Some(callback_url), false) = (request.get_non_empty("callbackURL"), pending_challenge) {
        if merchant.is_some() {
            deliver_callback(
                shared.http.clone(),
                callback_url.to_string(),
                signed.to_form_body(),
            );
        }
    }
    form_response(&signed)
}

async fn hosted_start(State(shared): SharedState, body: Bytes) -> Response {
    let request = Fields::parse(&body);
    let page = Page::new();
    let (merchant, verified) = match authenticate(&shared.config, &request, false) {
        Ok(authenticated) => authenticated,
        Err((_, refused)) => {
            let message = format!(
                "{} ({})",
                refused.get("responseMessage").unwrap_or(""),
                refused.get("responseCode").unwrap_or("")
            );
            let markup = page.message("Payment request refused", &message);
            return page.respond(StatusCode::BAD_REQUEST, markup);
        }
    };
    let problem = if verified.get_non_empty("redirectURL").is_none() {
        Some("redirectURL is required for the hosted payment page")
    } else if !matches!(verified.get("action"), Some("SALE" | "VERIFY")) {
        Some("The hosted payment page supports SALE and VERIFY only")
    } else if verified
        .get_non_empty("amount")
        .and_then(|amount| parse_amount_minor(amount, 2))
        .is_none()
    {
        Some("amount is missing or invalid")
    } else {
        None
    };
    if let Some(problem) = problem {
        let markup = page.message("Payment request refused", problem);
        return page.respond(StatusCode::BAD_REQUEST, markup);
    }
    let session_id = random_token();
    {
        let mut ledger = lock(&shared.ledger);
        if ledger.hosted_sessions.len() >= MAX_PENDING_BROWSER_STEPS {
            let markup = page.message(
                "Busy",
                "Too many open payment pages; restart the simulator.",
            );
            return page.respond(StatusCode::SERVICE_UNAVAILABLE, markup);
        }
        ledger.hosted_sessions.insert(
            session_id.clone(),
            HostedSession {
                merchant_id: merchant.merchant_id.clone(),
                // Card data has no business in a hosted request; never keep any that came.
                fields: echo(&verified),
            },
        );
    }
    let markup = page.card_form(
        &session_id,
        &summary_of(&verified, None),
        None,
        allows_cancel(&verified),
    );
    page.respond(StatusCode::OK, markup)
}

async fn hosted_pay(State(shared): SharedState, headers: HeaderMap, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let page = Page::new();
    let base_url = base_url(&shared, &headers);
    let session_id = form.get("session").unwrap_or("");
    let mut ledger = lock(&shared.ledger);
    let Some(session) = ledger.hosted_sessions.get(session_id).cloned() else {
        let markup = page.message(
            "Payment page expired",
            "This payment page is no longer open.",
        );
        return page.respond(StatusCode::NOT_FOUND, markup);
    };
    let Some(merchant) = shared.config.merchant(&session.merchant_id) else {
        let markup = page.message(
            "Payment page expired",
            "This merchant is no longer configured.",
        );
        return page.respond(StatusCode::NOT_FOUND, markup);
    };
    // Validate what the cardholder typed before it becomes a request, as a real payment
    // page does: a typo is shown on the form, not sent to the merchant as a failure.
    let card = CardDetails::new(
        form.get("cardNumber").unwrap_or(""),
        form.get("cardExpiryMonth")
            .and_then(|month| month.parse().ok())
            .unwrap_or(0),
        form.get("cardExpiryYear")
            .and_then(|year| year.parse().ok())
            .unwrap_or(u16::MAX),
        Some(form.get("cardCVV").unwrap_or("")),
    );
    let card = match card {
        Ok(card) => card,
        Err(error) => {
            let markup = page.card_form(
                session_id,
                &summary_of(&session.fields, None),
                Some(&error.to_string()),
                allows_cancel(&session.fields),
            );
            return page.respond(StatusCode::OK, markup);
        }
    };
    ledger.hosted_sessions.remove(session_id);
    let mut request = session.fields.clone();
    request.set("cardNumber", card.number());
    request.set("cardExpiryMonth", format!("{:02}", card.expiry_month()));
    request.set(
        "cardExpiryYear",
        format!("{:02}", card.expiry_year_two_digits()),
    );
    request.set_optional("cardCVV", card.cvv());
    let context = Context {
        config: &shared.config,
        merchant,
        base_url: &base_url,
        channel: Channel::Hosted,
        now: ledger.now(),
    };
    let answer = ledger.process(&context, &request);
    drop(ledger);
    match answer.challenge_id {
        Some(challenge_id) => {
            // The hosted page runs 3-D Secure itself (§1.7): show the challenge straight away.
            let summary = summary_of(&session.fields, Some(card.last4().to_string()));
            let markup = page.challenge(&challenge_id, &summary);
            page.respond(StatusCode::OK, markup)
        }
        None => finish_hosted(&shared, merchant, answer.fields, page),
    }
}

async fn hosted_cancel(State(shared): SharedState, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let page = Page::new();
    let session = lock(&shared.ledger)
        .hosted_sessions
        .remove(form.get("session").unwrap_or(""));
    let Some(session) = session else {
        let markup = page.message(
            "Payment page expired",
            "This payment page is no longer open.",
        );
        return page.respond(StatusCode::NOT_FOUND, markup);
    };
    let Some(merchant) = shared.config.merchant(&session.merchant_id) else {
        let markup = page.message(
            "Payment page expired",
            "This merchant is no longer configured.",
        );
        return page.respond(StatusCode::NOT_FOUND, markup);
    };
    let answer = refusal(
        &session.fields,
        ResponseCode::CANCELLED_ON_HOSTED_PAGE,
        "CANCELLED BY CUSTOMER",
    );
    finish_hosted(&shared, merchant, answer, page)
}

/// Signs the final answer, sends the callback copy, and makes the browser post the result
/// to `redirectURL`.
fn finish_hosted(
    shared: &Shared,
    merchant: &SimulatedMerchant,
    answer: Fields,
    page: Page,
) -> Response {
    let signed = sign_for(Some(merchant), answer);
    if let Some(callback_url) = signed.get_non_empty("callbackURL") {
        deliver_callback(
            shared.http.clone(),
            callback_url.to_string(),
            signed.to_form_body(),
        );
    }
    let Some(redirect_url) = signed.get_non_empty("redirectURL") else {
        let markup = page.message("Payment finished", "No redirectURL was given.");
        return page.respond(StatusCode::OK, markup);
    };
    let markup = page.auto_submit("Payment finished", redirect_url, signed.iter());
    page.respond(StatusCode::OK, markup)
}

/// The server-to-server copy of a hosted result. Cardstream's retry policy is unknown
/// (§1.8), so the simulator tries once and logs the outcome.
fn deliver_callback(http: reqwest::Client, url: String, body: String) {
    tokio::spawn(async move {
        let sent = http
            .post(&url)
            .header(
                header::CONTENT_TYPE.as_str(),
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) => {
                tracing::debug!(%url, status = answer.status().as_u16(), "callback delivered")
            }
            Err(error) => tracing::warn!(%url, %error, "callback delivery failed"),
        }
    });
}

async fn acs_challenge(State(shared): SharedState, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let page = Page::new();
    let creq = form.get("creq").unwrap_or("");
    let ledger = lock(&shared.ledger);
    let summary = ledger
        .challenges
        .get(creq)
        .and_then(|challenge| ledger.transactions.get(&challenge.xref))
        .map(|transaction| PaymentSummary {
            merchant_id: transaction.merchant_id.clone(),
            amount_text: format_amount(
                transaction.amount_minor,
                transaction.echoed_fields.get("currencyCode").unwrap_or(""),
            ),
            order_ref: transaction
                .echoed_fields
                .get_non_empty("orderRef")
                .map(str::to_string),
            card_last4: Some(transaction.card.last4.clone()),
        });
    drop(ledger);
    match summary {
        Some(summary) => {
            let markup = page.challenge(creq, &summary);
            page.respond(StatusCode::OK, markup)
        }
        None => {
            let markup = page.message(
                "Unknown challenge",
                "This authentication request is unknown or finished.",
            );
            page.respond(StatusCode::NOT_FOUND, markup)
        }
    }
}

async fn acs_result(State(shared): SharedState, headers: HeaderMap, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let page = Page::new();
    let creq = form.get("creq").unwrap_or("").to_string();
    let passed = match form.get("outcome") {
        Some("pass") => true,
        Some("fail") => false,
        _ => {
            let markup = page.message("Choose an outcome", "outcome must be pass or fail.");
            return page.respond(StatusCode::BAD_REQUEST, markup);
        }
    };
    let base_url = base_url(&shared, &headers);
    let mut ledger = lock(&shared.ledger);
    let Some(challenge) = ledger.challenges.get_mut(&creq) else {
        let markup = page.message(
            "Unknown challenge",
            "This authentication request is unknown or finished.",
        );
        return page.respond(StatusCode::NOT_FOUND, markup);
    };
    challenge.passed = Some(passed);
    let challenge = challenge.clone();
    if !challenge.hosted {
        drop(ledger);
        return match challenge.redirect_url {
            Some(redirect_url) => {
                let markup = page.auto_submit(
                    "Authentication complete",
                    &redirect_url,
                    [("cres", creq.as_str())].into_iter(),
                );
                page.respond(StatusCode::OK, markup)
            }
            None => {
                let markup = page.message(
                    "Authentication complete",
                    "No threeDSRedirectURL was given.",
                );
                page.respond(StatusCode::OK, markup)
            }
        };
    }
    // Hosted: the gateway continues the transaction itself and returns to the merchant.
    ledger.challenges.remove(&creq);
    let merchant_id = ledger
        .transactions
        .get(&challenge.xref)
        .map(|transaction| transaction.merchant_id.clone())
        .unwrap_or_default();
    let Some(merchant) = shared.config.merchant(&merchant_id) else {
        let markup = page.message(
            "Unknown challenge",
            "This merchant is no longer configured.",
        );
        return page.respond(StatusCode::NOT_FOUND, markup);
    };
    let context = Context {
        config: &shared.config,
        merchant,
        base_url: &base_url,
        channel: Channel::Hosted,
        now: ledger.now(),
    };
    let answer = ledger.complete_challenge(&context, &challenge.xref, passed);
    drop(ledger);
    finish_hosted(&shared, merchant, answer, page)
}

async fn admin_settle(State(shared): SharedState, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let mut ledger = lock(&shared.ledger);
    let now = ledger.now();
    let settled = ledger.settle(
        form.get_non_empty("xref"),
        shared.config.strict_test_amounts,
        now,
    );
    let mut answer = Fields::new();
    answer.set("settled", settled.to_string());
    form_response(&answer)
}

async fn admin_advance_clock(State(shared): SharedState, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let Some(seconds) = form
        .get("seconds")
        .and_then(|seconds| seconds.parse::<i64>().ok())
    else {
        let mut answer = Fields::new();
        set_result(
            &mut answer,
            ResponseCode::MALFORMED_REQUEST,
            "seconds must be an integer",
        );
        return (StatusCode::BAD_REQUEST, form_response(&answer)).into_response();
    };
    let mut ledger = lock(&shared.ledger);
    ledger.advance_clock(seconds);
    let now = ledger.now();
    ledger.apply_elapsed_time(
        shared.config.settle_after_seconds,
        shared.config.strict_test_amounts,
        now,
    );
    let mut answer = Fields::new();
    answer.set("now", now.to_string());
    form_response(&answer)
}

fn summary_of(fields: &Fields, card_last4: Option<String>) -> PaymentSummary {
    let amount_minor = fields
        .get_non_empty("amount")
        .and_then(|amount| parse_amount_minor(amount, 2))
        .unwrap_or(0);
    PaymentSummary {
        merchant_id: fields.get("merchantID").unwrap_or("").to_string(),
        amount_text: format_amount(amount_minor, fields.get("currencyCode").unwrap_or("")),
        order_ref: fields.get_non_empty("orderRef").map(str::to_string),
        card_last4,
    }
}

/// `formAllowCancel=Y`, or its V4.21 replacement `formCancelRequired=Y` (§1.3).
fn allows_cancel(fields: &Fields) -> bool {
    fields.get("formAllowCancel") == Some("Y") || fields.get("formCancelRequired") == Some("Y")
}
