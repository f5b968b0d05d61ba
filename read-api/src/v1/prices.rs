//! `/v1/prices`: create (on a `product`, or with `product_data` creating one), retrieve,
//! update, list (`active`, `product`, `type`, `currency`, `lookup_keys[]`,
//! `recurring[interval]`). No delete: a price is archived with `active=false`.
//!
//! Per-unit prices with a whole `unit_amount` only (no tiers, no `custom_unit_amount`, no
//! metered usage): the rest of Stripe's price parameters are refused as unknown.

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commands::execute::ExecuteError;
use commands::idempotency::{IdempotencyError, StoredResponse};
use commands::payments::{Actor, FinalStepError, PaymentError};
use commands::{ids, CommandError};
use domain::customer::Metadata;
use domain::money::Currency;
use domain::price::{
    Interval, NewPrice, Price, PriceChanges, PriceCommand, PriceError, Recurring, TaxBehavior,
};
use domain::product::Product;
use projections::stripe;
use serde_json::{json, Map, Value};

use super::read_model::{self, BodyFilter, ListFilter, Scope};
use super::write::{idempotent, json_response, Respond, WriteRequest, Written};
use super::{products, query_params, scope, ApiState};
use crate::http::auth::AuthenticatedKey;
use crate::http::error::ApiError;
use crate::http::form::{MapUpdate, Params};
use crate::http::list::ListParams;

const KIND: &str = "price";
/// Stripe's bound on `lookup_keys[]` in a list request.
const MAX_LOOKUP_KEYS: usize = 10;

const INTERVALS: [(&str, Interval); 4] = [
    ("day", Interval::Day),
    ("week", Interval::Week),
    ("month", Interval::Month),
    ("year", Interval::Year),
];

const TAX_BEHAVIORS: [(&str, TaxBehavior); 3] = [
    ("exclusive", TaxBehavior::Exclusive),
    ("inclusive", TaxBehavior::Inclusive),
    ("unspecified", TaxBehavior::Unspecified),
];

/// A business rule broken, as a 400 naming the parameter.
fn rule_error(rule: PriceError) -> ApiError {
    let error = ApiError::invalid_request(rule.to_string());
    match rule.param() {
        Some(param) => error.with_param(param),
        None => error,
    }
}

fn price_error(id: &str, error: ExecuteError<PriceError, IdempotencyError>) -> ApiError {
    match error {
        ExecuteError::Command(CommandError::Rejected(PriceError::NotFound)) => {
            ApiError::missing(KIND, id)
        }
        ExecuteError::Command(CommandError::Rejected(rule)) => rule_error(rule),
        ExecuteError::Command(other) => ApiError::internal(other),
        ExecuteError::Extra(error) => FinalStepError::Step(error).into(),
    }
}

fn render(price: &Price, livemode: bool) -> StoredResponse {
    json_response(200, &stripe::price(price, livemode))
}

pub(crate) fn take_currency(params: &mut Params) -> Result<Option<Currency>, ApiError> {
    let Some(code) = params.take_string("currency")? else {
        return Ok(None);
    };
    Currency::parse(&code).map(Some).map_err(|_| {
        ApiError::invalid_param(
            "currency",
            format!("Invalid currency: {}. Use a lowercase ISO 4217 code we support, e.g. gbp, eur, usd.", code.to_ascii_lowercase()),
        )
    })
}

/// `recurring[interval]`, `recurring[interval_count]` (default 1), `recurring[usage_type]`
/// (`licensed` only).
pub(crate) fn take_recurring(params: &mut Params) -> Result<Option<Recurring>, ApiError> {
    let Some(mut recurring) = params.take_object("recurring")? else {
        return Ok(None);
    };
    let interval = recurring
        .take_enum("interval", &INTERVALS)?
        .ok_or_else(|| ApiError::missing_param("recurring[interval]"))?;
    let interval_count = match recurring.take_i64("interval_count")? {
        None => 1,
        Some(count) => u32::try_from(count).map_err(|_| {
            rule_error(PriceError::IntervalCountOutOfRange {
                interval: interval.as_str(),
                max: interval.max_count(),
            })
        })?,
    };
    if let Some(usage_type) = recurring.take_string("usage_type")? {
        if usage_type != "licensed" {
            return Err(ApiError::invalid_param(
                "recurring[usage_type]",
                "Invalid recurring[usage_type]: only licensed prices are supported.",
            ));
        }
    }
    Ok(Some(Recurring {
        interval,
        interval_count,
    }))
}

/// The price already holding `lookup_key` in this scope, other than `except`.
async fn lookup_key_holder(
    state: &ApiState,
    scope: &Scope,
    lookup_key: &str,
    except: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let page = ListParams {
        limit: 2,
        cursor: None,
    };
    let filter = ListFilter::Body(BodyFilter {
        lookup_keys: vec![lookup_key.to_string()],
        ..BodyFilter::default()
    });
    let holders =
        read_model::list_objects(&state.pool, scope, KIND, &filter, &page, "/v1/prices").await?;
    Ok(holders
        .data
        .iter()
        .filter_map(|price| price["id"].as_str())
        .find(|id| Some(*id) != except)
        .map(str::to_string))
}

/// Lookup keys are unique among a project's prices (per mode). With `transfer`, the key is
/// taken off the price holding it first (Stripe's `transfer_lookup_key`). Checked on the
/// read model: two requests claiming the same new key at the same moment can both pass.
async fn claim_lookup_key(
    state: &ApiState,
    request: &WriteRequest,
    lookup_key: Option<&str>,
    transfer: bool,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let Some(lookup_key) = lookup_key else {
        return Ok(());
    };
    let Some(holder) = lookup_key_holder(state, &request.scope(), lookup_key, except).await? else {
        return Ok(());
    };
    if !transfer {
        return Err(ApiError::invalid_param(
            "lookup_key",
            format!(
                "A price ({holder}) already uses the lookup key '{lookup_key}'. Pass \
                 transfer_lookup_key=true to move it to this price."
            ),
        ));
    }
    state
        .payments
        .bus()
        .execute::<Price>(
            &holder,
            PriceCommand::Update {
                changes: PriceChanges {
                    lookup_key: Some(None),
                    ..PriceChanges::default()
                },
                at: chrono::Utc::now().timestamp(),
            },
            &(),
            &request.actor().metadata(),
        )
        .await
        .map_err(|error| ApiError::internal(format!("moving a lookup key: {error}")))?;
    Ok(())
}

/// The product a price is created on: one of this project and mode, not deleted.
async fn check_product(state: &ApiState, actor: &Actor, product_id: &str) -> Result<(), ApiError> {
    let missing = || ApiError::missing_reference("product", "product", product_id);
    let (product, _) = state
        .payments
        .load_owned::<Product>(actor, "product", product_id)
        .await
        .map_err(|error| match error {
            PaymentError::NotFound { .. } => missing(),
            other => other.into(),
        })?;
    if !product.exists() {
        return Err(missing());
    }
    Ok(())
}

pub async fn create(State(state): State<ApiState>, request: WriteRequest) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let product = params.take_string("product")?;
            let product_data = match params.take_object("product_data")? {
                Some(mut data) => Some(products::take_new_product(&mut data, false)?),
                None => None,
            };
            let currency =
                take_currency(params)?.ok_or_else(|| ApiError::missing_param("currency"))?;
            let unit_amount = params
                .take_i64("unit_amount")?
                .ok_or_else(|| ApiError::missing_param("unit_amount"))?;
            let recurring = take_recurring(params)?;
            let tax_behavior = params
                .take_enum("tax_behavior", &TAX_BEHAVIORS)?
                .unwrap_or_default();
            params.take_enum("billing_scheme", &[("per_unit", ())])?;
            let nickname = params.take_string("nickname")?;
            let lookup_key = params.take_string("lookup_key")?;
            let transfer_lookup_key = params.take_bool("transfer_lookup_key")?.unwrap_or(false);
            let active = params.take_bool("active")?.unwrap_or(true);
            let mut metadata = Metadata::new();
            if let Some(update) = params.take_metadata("metadata")? {
                update.apply_to(&mut metadata);
            }
            request.reject_unknown_params()?;
            let mut price = NewPrice {
                product: product.clone().unwrap_or_default(),
                currency,
                unit_amount,
                recurring,
                tax_behavior,
                nickname,
                lookup_key,
                active,
                metadata,
            };
            // Every rule of the price before anything is written (a product of
            // `product_data` included).
            price.validate().map_err(rule_error)?;
            let actor = request.actor();
            match (&product, &product_data) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::exclusive_params("product", "product_data"))
                }
                (None, None) => return Err(ApiError::missing_param("product")),
                (Some(product), None) => check_product(&inner, &actor, product).await?,
                (None, Some(_)) => {}
            }
            claim_lookup_key(
                &inner,
                &request,
                price.lookup_key.as_deref(),
                transfer_lookup_key,
                None,
            )
            .await?;
            if let Some(new_product) = product_data {
                price.product = products::create_for_price(&inner, &actor, new_product).await?;
            }
            let livemode = request.key.mode.is_live();
            let price_id = ids::new_id("price");
            let executed = inner
                .payments
                .bus()
                .execute_with::<Price, _>(
                    &price_id,
                    PriceCommand::Create {
                        price_id: price_id.clone(),
                        price,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                    Respond::new(token, |price: &Price| render(price, livemode)),
                )
                .await
                .map_err(|error| price_error(&price_id, error))?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: WriteRequest,
) -> Response {
    let inner = state.clone();
    idempotent(&state, request, move |mut request, token| {
        Box::pin(async move {
            let params = &mut request.params;
            let mut changes = PriceChanges {
                active: params.take_bool("active")?,
                nickname: params.take_optional_string("nickname")?,
                lookup_key: params.take_optional_string("lookup_key")?,
                tax_behavior: params.take_enum("tax_behavior", &TAX_BEHAVIORS)?,
                ..PriceChanges::default()
            };
            match params.take_metadata("metadata")? {
                Some(MapUpdate::Clear) => changes.clear_metadata = true,
                Some(MapUpdate::Merge(metadata)) => changes.metadata = metadata,
                None => {}
            }
            let transfer_lookup_key = params.take_bool("transfer_lookup_key")?.unwrap_or(false);
            request.reject_unknown_params()?;
            let actor = request.actor();
            let (price, _) = inner
                .payments
                .load_owned::<Price>(&actor, KIND, &id)
                .await?;
            if changes.active == Some(false) {
                // Stripe keeps a product's default price active: choose another default (or
                // none) first.
                let (product, _) = inner
                    .payments
                    .load_owned::<Product>(&actor, "product", &price.product)
                    .await?;
                if product.exists() && product.default_price.as_deref() == Some(id.as_str()) {
                    return Err(ApiError::invalid_param(
                        "active",
                        "This price cannot be archived because it is the default price of its \
                         product.",
                    ));
                }
            }
            let new_key = changes.lookup_key.as_ref().and_then(Option::as_deref);
            if new_key.is_some() && new_key != price.lookup_key.as_deref() {
                claim_lookup_key(&inner, &request, new_key, transfer_lookup_key, Some(&id)).await?;
            }
            let livemode = request.key.mode.is_live();
            let executed = inner
                .payments
                .bus()
                .execute_with::<Price, _>(
                    &id,
                    PriceCommand::Update {
                        changes,
                        at: chrono::Utc::now().timestamp(),
                    },
                    &(),
                    &actor.metadata(),
                    Respond::new(token, |price: &Price| render(price, livemode)),
                )
                .await
                .map_err(|error| price_error(&id, error))?;
            Ok(Written::from_executed(executed, token))
        })
    })
    .await
}

pub async fn retrieve(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    super::retrieve_object(&state, &key, KIND, &id, uri.query(), &[]).await
}

pub async fn list(
    State(state): State<ApiState>,
    key: AuthenticatedKey,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut params = query_params(uri.query())?;
    let page = ListParams::take_from(&mut params)?;
    let expand = params.take_expand()?;
    let mut contains = Map::new();
    if let Some(active) = params.take_bool("active")? {
        contains.insert("active".into(), Value::Bool(active));
    }
    if let Some(price_type) = params.take_enum(
        "type",
        &[("one_time", "one_time"), ("recurring", "recurring")],
    )? {
        contains.insert("type".into(), Value::from(price_type));
    }
    if let Some(currency) = take_currency(&mut params)? {
        contains.insert("currency".into(), Value::from(currency.as_str()));
    }
    if let Some(mut recurring) = params.take_object("recurring")? {
        if let Some(interval) = recurring.take_enum("interval", &INTERVALS)? {
            contains.insert("recurring".into(), json!({"interval": interval.as_str()}));
        }
    }
    let product = params.take_string("product")?;
    let lookup_keys = params.take_list("lookup_keys")?.unwrap_or_default();
    if lookup_keys.len() > MAX_LOOKUP_KEYS {
        return Err(ApiError::invalid_param(
            "lookup_keys",
            format!("Invalid lookup_keys: at most {MAX_LOOKUP_KEYS} may be given."),
        ));
    }
    params.reject_unknown()?;
    let scope = scope(&key);
    let filter = ListFilter::Body(BodyFilter {
        contains: (!contains.is_empty()).then_some(Value::Object(contains)),
        product,
        lookup_keys,
        ..BodyFilter::default()
    });
    let list =
        read_model::list_objects(&state.pool, &scope, KIND, &filter, &page, "/v1/prices").await?;
    let mut body = serde_json::to_value(&list).map_err(ApiError::internal)?;
    read_model::expand(&state.pool, &scope, &mut body, &expand).await?;
    Ok(Json(body).into_response())
}
