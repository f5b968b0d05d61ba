//! The simulator's HTTP surface: Griffin's routes behind the API key, the JWKS, and the
//! `/_simulator/` test controls.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::bank::{
    self, now_millis, page_links, paginate, render_event, render_payment, render_transaction, Bank,
    BankError, Credit, Cursor, StoredWebhook,
};
use super::delivery::{self, Deliverer, DeliveryJob};
use super::SimulatorConfig;
use crate::client::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::money::Money;
use crate::problem::{ErrorObject, ErrorSource};
use crate::resources::{
    event_types, AccountStatus, ApiKeyResource, BankProductType, Index, Jwks, Listed, Page,
    WebhookState, WebhookTestStatus,
};
use crate::webhook_signature::WebhookSigner;

struct AppState {
    config: SimulatorConfig,
    bank: Arc<Mutex<Bank>>,
    deliverer: Deliverer,
    jobs: mpsc::Sender<DeliveryJob>,
}

type Shared = Arc<AppState>;
type Answer = Result<Response, Rejection>;

/// An error answer, boxed so that handler results stay small.
struct Rejection(Box<Response>);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl AppState {
    fn bank(&self) -> MutexGuard<'_, Bank> {
        self.bank
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `change` on the bank and queues every event it recorded for the active webhook.
    fn change<R>(&self, change: impl FnOnce(&mut Bank) -> R) -> R {
        let mut bank = self.bank();
        let before = bank.events.len();
        let result = change(&mut bank);
        let destination = bank
            .webhook
            .as_ref()
            .filter(|webhook| webhook.state == WebhookState::Active)
            .map(|webhook| webhook.destination_url.clone());
        if let Some(destination_url) = destination {
            let new_events: Vec<_> = bank.events[before..].iter().map(render_event).collect();
            for event in new_events {
                let job = DeliveryJob {
                    event,
                    destination_url: destination_url.clone(),
                };
                if let Err(error) = self.jobs.try_send(job) {
                    let job = match error {
                        mpsc::error::TrySendError::Full(job)
                        | mpsc::error::TrySendError::Closed(job) => job,
                    };
                    bank.deliveries.push(bank::DeliveryRecord {
                        event_url: job.event.event_url,
                        event_type: job.event.event_type,
                        destination_url: job.destination_url,
                        attempts: 0,
                        delivered: false,
                        last_http_status: None,
                        last_error: Some("dropped: the delivery queue is full".to_string()),
                    });
                }
            }
        }
        result
    }

    fn problem(&self, status: StatusCode, detail: impl Into<String>) -> Rejection {
        self.problem_at(status, detail, None)
    }

    fn problem_at(
        &self,
        status: StatusCode,
        detail: impl Into<String>,
        source: Option<ErrorSource>,
    ) -> Rejection {
        let error = ErrorObject {
            status: Some(status.as_u16().to_string()),
            title: status.canonical_reason().map(str::to_string),
            detail: Some(detail.into()),
            source,
        };
        Rejection(Box::new(
            (status, Json(self.config.error_shape.render(&error))).into_response(),
        ))
    }

    fn not_found(&self) -> Rejection {
        self.problem(StatusCode::NOT_FOUND, "Not found")
    }

    fn bad_parameter(&self, parameter: &str, detail: impl Into<String>) -> Rejection {
        self.problem_at(
            StatusCode::BAD_REQUEST,
            detail,
            Some(ErrorSource {
                pointer: None,
                parameter: Some(parameter.to_string()),
            }),
        )
    }

    fn check_organization(&self, organization_id: &str) -> Result<(), Rejection> {
        if self.bank().organization_id == organization_id {
            Ok(())
        } else {
            Err(self.not_found())
        }
    }
}

pub(crate) fn router(config: SimulatorConfig) -> Router {
    let mut bank = Bank::new(config.organization_name.clone());
    for account in &config.accounts {
        bank.open_account(
            account.display_name.clone(),
            account.bank_product_type,
            config.bank_id.clone(),
            Money::gbp_minor(config.opening_balance_minor),
        );
    }
    if let Some(destination_url) = &config.webhook_destination_url {
        let now = now_millis();
        bank.webhook = Some(StoredWebhook {
            id: bank::new_id("wh"),
            destination_url: destination_url.clone(),
            description: Some("configured at start-up".to_string()),
            state: WebhookState::Active,
            created_at: now,
            updated_at: now,
            last_test: None,
        });
    }
    let mut signer = WebhookSigner::generate(config.webhook_key_id.clone());
    signer.digest = config.webhook_digest;
    signer.encoding = config.webhook_signature_encoding;
    signer.validity_seconds = config.webhook_signature_validity_seconds;
    let deliverer = Deliverer::new(
        signer,
        config.webhook_timeout_ms,
        config.webhook_max_attempts,
        config.webhook_retry_delay_ms,
    );
    let bank = Arc::new(Mutex::new(bank));
    let (jobs, queue) = mpsc::channel(config.webhook_queue_capacity.max(1));
    tokio::spawn(delivery::run_worker(queue, deliverer.clone(), bank.clone()));
    let state = Arc::new(AppState {
        config,
        bank,
        deliverer,
        jobs,
    });

    let griffin = Router::new()
        .route("/v0/index", get(index))
        .route("/v0/api-keys/{id}", get(api_key))
        .route("/v0/organizations/{id}", get(organization))
        .route(
            "/v0/organizations/{id}/bank/accounts",
            get(list_accounts).post(open_account),
        )
        .route("/v0/bank/accounts/{id}", get(get_account))
        .route(
            "/v0/bank/accounts/{id}/transactions",
            get(list_transactions),
        )
        .route("/v0/bank/transactions/{id}", get(get_transaction))
        .route("/v0/payments/{id}", get(get_payment))
        .route("/v0/organizations/{id}/events", get(list_events))
        .route("/v0/events/{id}", get(get_event))
        .route(
            "/v0/organizations/{id}/webhooks",
            get(list_webhooks).post(create_webhook),
        )
        .route(
            "/v0/webhooks/{id}",
            get(get_webhook)
                .patch(update_webhook)
                .delete(delete_webhook),
        )
        .route("/v0/webhooks/{id}/actions/activate", post(activate_webhook))
        .route(
            "/v0/webhooks/{id}/actions/deactivate",
            post(deactivate_webhook),
        )
        .route(
            "/v0/webhooks/{id}/actions/test",
            get(webhook_test_status).post(test_webhook),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));

    Router::new()
        .merge(griffin)
        .route("/v0/security/public-keys", get(public_keys))
        .route("/_simulator/bank/accounts/{id}/credits", post(credit))
        .route("/_simulator/credits", get(list_credits))
        .route("/_simulator/webhook-deliveries", get(list_deliveries))
        .with_state(state)
}

/// `Authorization: GriffinAPIKey <key>`; anything else is a 401 with `WWW-Authenticate:
/// GriffinSession`, as Griffin answers.
async fn authenticate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("GriffinAPIKey "))
        .map(str::trim);
    match key {
        Some(key) if state.config.api_keys.iter().any(|known| known == key) => {
            next.run(request).await
        }
        _ => {
            let mut response = state
                .problem(StatusCode::UNAUTHORIZED, "Requires an API key to continue")
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("GriffinSession"),
            );
            response
        }
    }
}

async fn index(State(state): State<Shared>) -> Json<Index> {
    let bank = state.bank();
    Json(Index {
        organization_url: state
            .config
            .index_includes_organization_url
            .then(|| bank.organization_url()),
        api_key_url: Some(format!("/v0/api-keys/{}", bank.api_key_id)),
        organizations_url: Some("/v0/organizations".to_string()),
        roles_url: Some("/v0/roles".to_string()),
        users_url: Some("/v0/users".to_string()),
    })
}

async fn api_key(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let bank = state.bank();
    if id != bank.api_key_id {
        return Err(state.not_found());
    }
    Ok(Json(ApiKeyResource {
        api_key_url: format!("/v0/api-keys/{id}"),
        organization_url: bank.organization_url(),
        api_key_name: Some("simulator".to_string()),
    })
    .into_response())
}

async fn organization(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    state.check_organization(&id)?;
    Ok(Json(state.bank().organization()).into_response())
}

/// The query of a list request: its pairs decoded, plus the raw text for the links.
struct ListQuery {
    pairs: Vec<(String, String)>,
    raw: Option<String>,
    page_size: usize,
    cursor: Cursor,
    descending: bool,
    sort_field: String,
}

impl ListQuery {
    fn parse(
        state: &AppState,
        raw: Option<String>,
        sort_fields: &[&str],
    ) -> Result<Self, Rejection> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let page_size = match value("page[size]") {
            None => usize::from(DEFAULT_PAGE_SIZE),
            Some(text) => match text.parse::<u16>() {
                Ok(size) if (1..=MAX_PAGE_SIZE).contains(&size) => usize::from(size),
                _ => {
                    return Err(state.bad_parameter(
                        "page[size]",
                        format!("page[size] must be an integer from 1 to {MAX_PAGE_SIZE}"),
                    ))
                }
            },
        };
        let cursor = match (value("page[after]"), value("page[before]")) {
            (Some(_), Some(_)) => {
                return Err(state
                    .bad_parameter("page[after]", "give page[after] or page[before], not both"))
            }
            (Some(after), None) => Cursor::After(
                bank::decode_cursor(after)
                    .ok_or_else(|| state.bad_parameter("page[after]", "not a valid cursor"))?,
            ),
            (None, Some(before)) => Cursor::Before(
                bank::decode_cursor(before)
                    .ok_or_else(|| state.bad_parameter("page[before]", "not a valid cursor"))?,
            ),
            (None, None) => Cursor::First,
        };
        let sort = value("sort").unwrap_or("-created-at");
        let (descending, sort_field) = match sort.strip_prefix('-') {
            Some(field) => (true, field),
            None => (false, sort),
        };
        if !sort_fields.contains(&sort_field) {
            return Err(state.bad_parameter(
                "sort",
                format!("sort must be one of {sort_fields:?}, optionally prefixed by '-'"),
            ));
        }
        let sort_field = sort_field.to_string();
        Ok(Self {
            pairs,
            raw,
            page_size,
            cursor,
            descending,
            sort_field,
        })
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn time(&self, state: &AppState, name: &str) -> Result<Option<DateTime<Utc>>, Rejection> {
        self.value(name)
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| state.bad_parameter(name, "not an ISO 8601 date-time"))
            })
            .transpose()
    }

    /// `filter[<field>][gt|gte|lt|lte]` as a predicate.
    fn time_range(
        &self,
        state: &AppState,
        field: &str,
    ) -> Result<impl Fn(DateTime<Utc>) -> bool, Rejection> {
        let gt = self.time(state, &format!("filter[{field}][gt]"))?;
        let gte = self.time(state, &format!("filter[{field}][gte]"))?;
        let lt = self.time(state, &format!("filter[{field}][lt]"))?;
        let lte = self.time(state, &format!("filter[{field}][lte]"))?;
        Ok(move |at: DateTime<Utc>| {
            gt.is_none_or(|bound| at > bound)
                && gte.is_none_or(|bound| at >= bound)
                && lt.is_none_or(|bound| at < bound)
                && lte.is_none_or(|bound| at <= bound)
        })
    }

    /// Orders `(key, seq, item)` and answers the page as Griffin does.
    fn answer<T: Listed>(
        &self,
        state: &AppState,
        path: &str,
        mut keyed: Vec<(DateTime<Utc>, u64, T)>,
    ) -> Answer {
        keyed.sort_by_key(|(at, seq, _)| (*at, *seq));
        if self.descending {
            keyed.reverse();
        }
        let ordered = keyed
            .into_iter()
            .map(|(_, seq, item)| (seq, item))
            .collect();
        let (items, prev, next) =
            paginate(ordered, self.cursor, self.page_size).ok_or_else(|| {
                state.bad_parameter("page[after]", "the cursor does not belong to this list")
            })?;
        let page = Page {
            items,
            links: page_links(path, self.raw.as_deref(), prev, next),
        };
        Ok(Json(page.to_json()).into_response())
    }
}

async fn list_accounts(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Answer {
    state.check_organization(&id)?;
    let query = ListQuery::parse(&state, raw, &["created-at", "display-name"])?;
    let statuses: Vec<&str> = query
        .pairs
        .iter()
        .filter(|(key, _)| key == "filter[account-status][in][]")
        .map(|(_, value)| value.as_str())
        .collect();
    let bank = state.bank();
    let mut keyed: Vec<_> = bank
        .accounts
        .iter()
        .filter(|_| statuses.is_empty() || statuses.contains(&"open"))
        .map(|account| {
            (
                account.created_at,
                account.seq,
                bank.render_account(account),
            )
        })
        .collect();
    if query.sort_field == "display-name" {
        // Rank by name; the seq still breaks ties.
        let mut names: Vec<String> = keyed
            .iter()
            .map(|(_, _, item)| item.display_name.clone())
            .collect();
        names.sort();
        for (at, _, item) in keyed.iter_mut() {
            let rank = names
                .iter()
                .position(|name| *name == item.display_name)
                .unwrap_or(0);
            *at = DateTime::from_timestamp(rank as i64, 0).unwrap_or_default();
        }
    }
    query.answer(
        &state,
        &format!("/v0/organizations/{id}/bank/accounts"),
        keyed,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct OpenAccount {
    display_name: String,
    bank_product_type: BankProductType,
}

async fn open_account(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<OpenAccount>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    state.check_organization(&id)?;
    let Json(open) =
        body.map_err(|rejection| state.problem(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    if open.bank_product_type == BankProductType::Other {
        return Err(state.problem_at(
            StatusCode::BAD_REQUEST,
            "unknown bank-product-type",
            Some(ErrorSource {
                pointer: Some("/bank-product-type".to_string()),
                parameter: None,
            }),
        ));
    }
    let account = state.change(|bank| {
        let account_id = bank.open_account(
            open.display_name,
            open.bank_product_type,
            state.config.bank_id.clone(),
            Money::gbp_minor(state.config.opening_balance_minor),
        );
        bank.account(&account_id)
            .map(|account| bank.render_account(account))
    });
    let account = account.ok_or_else(|| {
        state.problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the account just opened is missing",
        )
    })?;
    let mut response = (StatusCode::CREATED, Json(&account)).into_response();
    if let Ok(location) = HeaderValue::from_str(&account.account_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn get_account(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let bank = state.bank();
    let account = bank.account(&id).ok_or_else(|| state.not_found())?;
    debug_assert_eq!(
        bank.render_account(account).account_status,
        AccountStatus::Open
    );
    Ok(Json(bank.render_account(account)).into_response())
}

async fn list_transactions(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Answer {
    let query = ListQuery::parse(&state, raw, &["created-at", "processed-at"])?;
    if let Some(include) = query.value("include") {
        if include != "payment" {
            return Err(state.bad_parameter("include", "include may only be payment"));
        }
    }
    let processed = query.time_range(&state, "processed-at")?;
    let bank = state.bank();
    if bank.account(&id).is_none() {
        return Err(state.not_found());
    }
    let by_processed_at = query.sort_field == "processed-at";
    let keyed: Vec<_> = bank
        .transactions
        .iter()
        .filter(|transaction| transaction.account_id == id && processed(transaction.processed_at))
        .map(|transaction| {
            let key = if by_processed_at {
                transaction.processed_at
            } else {
                transaction.created_at
            };
            (key, transaction.seq, render_transaction(transaction))
        })
        .collect();
    query.answer(
        &state,
        &format!("/v0/bank/accounts/{id}/transactions"),
        keyed,
    )
}

async fn get_transaction(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let bank = state.bank();
    let transaction = bank
        .transactions
        .iter()
        .find(|transaction| transaction.id == id)
        .ok_or_else(|| state.not_found())?;
    Ok(Json(render_transaction(transaction)).into_response())
}

async fn get_payment(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let bank = state.bank();
    let payment = bank
        .payments
        .iter()
        .find(|payment| payment.id == id)
        .ok_or_else(|| state.not_found())?;
    Ok(Json(render_payment(payment)).into_response())
}

async fn list_events(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Answer {
    state.check_organization(&id)?;
    let query = ListQuery::parse(&state, raw, &["created-at"])?;
    let created = query.time_range(&state, "created-at")?;
    let event_type = query.value("filter[event-type][eq]").map(str::to_string);
    let bank = state.bank();
    let keyed: Vec<_> = bank
        .events
        .iter()
        .filter(|event| {
            event_type
                .as_deref()
                .is_none_or(|wanted| event.event_type == wanted)
        })
        .filter(|event| created(event.created_at))
        .map(|event| (event.created_at, event.seq, render_event(event)))
        .collect();
    query.answer(&state, &format!("/v0/organizations/{id}/events"), keyed)
}

async fn get_event(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let bank = state.bank();
    let event = bank
        .events
        .iter()
        .find(|event| event.id == id)
        .ok_or_else(|| state.not_found())?;
    Ok(Json(render_event(event)).into_response())
}

async fn list_webhooks(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    state.check_organization(&id)?;
    let bank = state.bank();
    let page = Page {
        items: bank
            .webhook
            .iter()
            .map(|webhook| bank.render_webhook(webhook))
            .collect(),
        links: Default::default(),
    };
    Ok(Json(page.to_json()).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WebhookFields {
    webhook_destination_url: Option<String>,
    webhook_description: Option<String>,
}

fn check_destination(state: &AppState, destination: &str) -> Result<(), Rejection> {
    let invalid = |detail: &str| {
        state.problem_at(
            StatusCode::UNPROCESSABLE_ENTITY,
            detail.to_string(),
            Some(ErrorSource {
                pointer: Some("/webhook-destination-url".to_string()),
                parameter: None,
            }),
        )
    };
    let url = reqwest::Url::parse(destination).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the destination must be an HTTP(S) URL"));
    }
    if state.config.require_https_webhooks
        && (url.scheme() != "https" || url.port_or_known_default() != Some(443))
    {
        return Err(invalid("the destination must be HTTPS on port 443"));
    }
    Ok(())
}

async fn create_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<WebhookFields>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    state.check_organization(&id)?;
    let Json(fields) =
        body.map_err(|rejection| state.problem(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let destination = fields.webhook_destination_url.ok_or_else(|| {
        state.problem_at(
            StatusCode::BAD_REQUEST,
            "webhook-destination-url is required",
            Some(ErrorSource {
                pointer: Some("/webhook-destination-url".to_string()),
                parameter: None,
            }),
        )
    })?;
    check_destination(&state, &destination)?;
    let mut bank = state.bank();
    if bank.webhook.is_some() {
        return Err(state.problem(
            StatusCode::CONFLICT,
            "the organization already has a webhook",
        ));
    }
    let now = now_millis();
    let webhook = StoredWebhook {
        id: bank::new_id("wh"),
        destination_url: destination,
        description: fields.webhook_description,
        state: if state.config.new_webhooks_active {
            WebhookState::Active
        } else {
            WebhookState::Inactive
        },
        created_at: now,
        updated_at: now,
        last_test: None,
    };
    let rendered = bank.render_webhook(&webhook);
    bank.webhook = Some(webhook);
    let mut response = (StatusCode::CREATED, Json(&rendered)).into_response();
    if let Ok(location) = HeaderValue::from_str(&rendered.webhook_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Runs `change` on the organisation's webhook if it is the one named `id`.
fn with_webhook(state: &AppState, id: &str, change: impl FnOnce(&mut StoredWebhook)) -> Answer {
    let mut bank = state.bank();
    let bank = &mut *bank;
    let webhook = bank
        .webhook
        .as_mut()
        .filter(|webhook| webhook.id == id)
        .ok_or_else(|| state.not_found())?;
    change(webhook);
    let rendered = bank
        .webhook
        .as_ref()
        .map(|webhook| bank.render_webhook(webhook))
        .ok_or_else(|| state.not_found())?;
    Ok(Json(rendered).into_response())
}

async fn get_webhook(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    with_webhook(&state, &id, |_| {})
}

async fn update_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<WebhookFields>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let Json(fields) =
        body.map_err(|rejection| state.problem(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    if let Some(destination) = &fields.webhook_destination_url {
        check_destination(&state, destination)?;
    }
    with_webhook(&state, &id, |webhook| {
        if let Some(destination) = fields.webhook_destination_url {
            webhook.destination_url = destination;
        }
        if let Some(description) = fields.webhook_description {
            webhook.description = Some(description);
        }
        webhook.updated_at = now_millis();
    })
}

async fn delete_webhook(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let mut bank = state.bank();
    if bank.webhook.as_ref().is_none_or(|webhook| webhook.id != id) {
        return Err(state.not_found());
    }
    bank.webhook = None;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn activate_webhook(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    with_webhook(&state, &id, |webhook| {
        webhook.state = WebhookState::Active;
        webhook.updated_at = now_millis();
    })
}

async fn deactivate_webhook(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    with_webhook(&state, &id, |webhook| {
        webhook.state = WebhookState::Inactive;
        webhook.updated_at = now_millis();
    })
}

async fn webhook_test_status(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let bank = state.bank();
    let webhook = bank
        .webhook
        .as_ref()
        .filter(|webhook| webhook.id == id)
        .ok_or_else(|| state.not_found())?;
    let status = webhook.last_test.clone().unwrap_or(WebhookTestStatus {
        webhook_request_status: "default".to_string(),
        webhook_http_status: None,
        webhook_error_code: None,
        updated_at: Some(webhook.updated_at),
    });
    Ok(Json(status).into_response())
}

/// Sends a `test-event` now (one attempt) and answers its outcome.
async fn test_webhook(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let (event, destination_url) = {
        let mut bank = state.bank();
        let destination_url = bank
            .webhook
            .as_ref()
            .filter(|webhook| webhook.id == id)
            .map(|webhook| webhook.destination_url.clone())
            .ok_or_else(|| state.not_found())?;
        let event = bank.record_event(event_types::TEST_EVENT, serde_json::json!({}));
        (event, destination_url)
    };
    let outcome = state.deliverer.deliver(&event, &destination_url, 1).await;
    let job = DeliveryJob {
        event,
        destination_url,
    };
    delivery::record(&state.bank, &job, &outcome);
    let status = WebhookTestStatus {
        webhook_request_status: "complete".to_string(),
        webhook_http_status: outcome.http_status,
        webhook_error_code: if outcome.delivered() {
            None
        } else {
            Some(
                outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| "webhook-invalid-response".to_string()),
            )
        },
        updated_at: Some(now_millis()),
    };
    if let Some(webhook) = state.bank().webhook.as_mut() {
        webhook.last_test = Some(status.clone());
    }
    Ok(Json(status).into_response())
}

async fn public_keys(State(state): State<Shared>) -> Json<Jwks> {
    Json(Jwks {
        keys: vec![state.deliverer.signer.jwk()],
        links: Some(serde_json::json!({ "self": "/v0/security/public-keys" })),
    })
}

async fn credit(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<Credit>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    let Json(credit) =
        body.map_err(|rejection| state.problem(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let posted = state
        .change(|bank| bank.credit(&id, credit))
        .map_err(|error| match error {
            BankError::NoSuchAccount => state.not_found(),
            other => state.problem(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        })?;
    Ok((StatusCode::CREATED, Json(posted)).into_response())
}

async fn list_credits(State(state): State<Shared>) -> Response {
    Json(state.bank().credits.clone()).into_response()
}

async fn list_deliveries(State(state): State<Shared>) -> Response {
    Json(state.bank().deliveries.clone()).into_response()
}
