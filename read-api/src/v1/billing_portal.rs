//! `POST /v1/billing_portal/sessions`: a short-lived link to the customer portal
//! (`pages::portal`) for one customer. Create only, as Stripe has it: a session cannot be
//! retrieved or listed, because its URL is a credential.
//!
//! Not run through the idempotency store: the stored answer would keep the URL — the
//! token — for a day, where only its hash may be kept. A retried request makes a second
//! session for the same customer, which is harmless (both expire within the hour).

use axum::extract::State;
use axum::{Extension, Json};
use domain::customer::Customer;
use serde_json::{json, Value};

use super::write::WriteRequest;
use super::ApiState;
use crate::http::error::ApiError;
use crate::pages::portal::session::{PortalSession, PortalSettings};

/// Longest `return_url` accepted.
const MAX_URL_CHARS: usize = 5_000;
/// Longest `configuration` id or `locale` accepted.
const MAX_NAME_CHARS: usize = 100;

/// An absolute http(s) URL with nothing a browser would read otherwise (no `javascript:`).
fn return_url(url: String) -> Result<String, ApiError> {
    let absolute = ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
            && url.len() > scheme.len()
    });
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if url.len() > MAX_URL_CHARS || !absolute || !clean {
        return Err(ApiError::invalid_param(
            "return_url",
            "Not a valid URL: return_url must be an absolute http(s) URL.",
        ));
    }
    Ok(url)
}

fn short(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(value) if value.chars().count() > MAX_NAME_CHARS => Err(ApiError::invalid_param(
            name,
            format!("{name} is too long (at most {MAX_NAME_CHARS} characters)."),
        )),
        value => Ok(value),
    }
}

pub async fn create(
    State(state): State<ApiState>,
    Extension(settings): Extension<PortalSettings>,
    mut request: WriteRequest,
) -> Result<Json<Value>, ApiError> {
    let params = &mut request.params;
    let customer = params
        .take_string("customer")?
        .ok_or_else(|| ApiError::missing_param("customer"))?;
    let return_url = params
        .take_string("return_url")?
        .map(return_url)
        .transpose()?;
    let configuration = short("configuration", params.take_string("configuration")?)?;
    let locale = short("locale", params.take_string("locale")?)?;
    params.take_string("on_behalf_of")?;
    request.reject_unknown_params()?;
    let actor = request.actor();
    let found = state
        .payments
        .load_owned::<Customer>(&actor, "customer", &customer)
        .await;
    match found {
        Ok((found, _)) if found.exists() => {}
        Ok(_) | Err(commands::payments::PaymentError::NotFound { .. }) => {
            return Err(ApiError::missing_reference(
                "customer", "customer", &customer,
            ))
        }
        Err(other) => return Err(other.into()),
    }
    let livemode = request.key.mode.is_live();
    let created = PortalSession::create(
        &state.pool,
        settings,
        &request.key.project_id,
        livemode,
        &customer,
        return_url.clone(),
        locale.clone(),
    )
    .await
    .map_err(ApiError::internal)?;
    let url = format!(
        "{}/portal/{}",
        state.payments.public_url().trim_end_matches('/'),
        created.token
    );
    Ok(Json(json!({
        "id": created.session.id,
        "object": "billing_portal.session",
        "configuration": configuration,
        "created": created.created,
        "customer": customer,
        "flow": null,
        "livemode": livemode,
        "locale": locale,
        "on_behalf_of": null,
        "return_url": return_url,
        "url": url,
        // Not in Stripe's shape: when the URL stops working.
        "expires_at": created.session.expires_at,
    })))
}
