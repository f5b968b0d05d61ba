//! 3-D Secure for payment intents confirmed through the API: `next_action.redirect_to_url`
//! points at [`start`], which sends the cardholder's browser to the issuer's challenge
//! (the gateway's ACS); the ACS posts the result back to [`finish`], which continues the
//! payment at the gateway and records the outcome.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use commands::execute::NoExtraWork;
use commands::ids;
use commands::payments::{Actor, FinalStepError};
use domain::payment_intent::{IntentStatus, PaymentIntent};
use maud::{html, PreEscaped};

use super::Page;
use crate::v1::ApiState;

/// Submits the page's form as it loads; the button is the fallback without script.
const AUTO_SUBMIT_SCRIPT: &str = "document.getElementById('continue').submit();";

/// Bound on the fields an ACS may post back.
const MAX_ACS_FIELDS: usize = 50;

async fn intent_and_actor(state: &ApiState, id: &str) -> Option<(PaymentIntent, Actor)> {
    let (project, livemode) = state.payments.owner_of::<PaymentIntent>(id).await.ok()??;
    let actor = Actor {
        project,
        livemode,
        actor: "customer:browser".into(),
        request_id: ids::new_id("req"),
        idempotency_key: None,
    };
    let (intent, _) = state
        .payments
        .load_owned::<PaymentIntent>(&actor, "payment_intent", id)
        .await
        .ok()?;
    Some((intent, actor))
}

/// GET: hands the browser to the issuer's challenge.
pub async fn start(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let page = Page::default();
    let Some((intent, _)) = intent_and_actor(&state, &id).await else {
        return page.message(
            StatusCode::NOT_FOUND,
            "Payment not found",
            "This payment does not exist.",
        );
    };
    let Some(action) = intent
        .next_action
        .filter(|_| intent.status == IntentStatus::RequiresAction)
    else {
        return page.message(
            StatusCode::CONFLICT,
            "Nothing to authenticate",
            "This payment is not waiting for authentication.",
        );
    };
    let body = html! {
        h1 { "Confirm your payment" }
        p { "Your bank needs to confirm it is you. Continuing to your bank…" }
        form id="continue" method="post" action=(action.challenge_url) {
            @for (name, value) in &action.challenge_fields {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" { "Continue to your bank" }
        }
        script nonce=(page.nonce()) { (PreEscaped(AUTO_SUBMIT_SCRIPT)) }
    };
    page.respond(StatusCode::OK, page.document("Confirm your payment", body))
}

/// POST from the ACS: continue the payment and show where it stands.
pub async fn finish(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let page = Page::default();
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body)
        .into_owned()
        .take(MAX_ACS_FIELDS)
        .collect();
    let Some((_, actor)) = intent_and_actor(&state, &id).await else {
        return page.message(
            StatusCode::NOT_FOUND,
            "Payment not found",
            "This payment does not exist.",
        );
    };
    match state
        .payments
        .complete_authentication(&actor, &id, &fields, NoExtraWork)
        .await
    {
        Ok(executed) => {
            // The merchant's next read should see the outcome.
            if let Some(last) = executed.appended.last() {
                let _ = state
                    .projections
                    .wait_until_applied(
                        projections::api_objects::NAME,
                        last.cursor(),
                        std::time::Duration::from_millis(
                            crate::v1::write::READ_YOUR_WRITES_TIMEOUT_MS,
                        ),
                    )
                    .await;
            }
            let (title, text) = match executed.aggregate.status {
                IntentStatus::Succeeded | IntentStatus::RequiresCapture => (
                    "Payment authenticated",
                    "Thank you: your payment went through. You can close this page.",
                ),
                _ => (
                    "Payment not completed",
                    "Your bank did not confirm the payment. Please try again or use another card.",
                ),
            };
            page.message(StatusCode::OK, title, text)
        }
        Err(FinalStepError::Payment(error)) => {
            tracing::warn!(payment_intent = %id, %error, "3-D Secure continuation failed");
            page.message(
                StatusCode::BAD_REQUEST,
                "Payment not completed",
                "This authentication could not be used. Please try again.",
            )
        }
        Err(FinalStepError::Step(error)) => {
            tracing::error!(payment_intent = %id, %error, "3-D Secure continuation failed");
            page.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please try again in a moment.",
            )
        }
    }
}
