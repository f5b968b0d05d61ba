//! The Griffin API client: `Authorization: GriffinAPIKey <key>`, JSON in and out, link
//! navigation from `GET /v0/index`, cursor pagination by following `links.next` verbatim,
//! typed answers and typed errors.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::RwLock;
use tracing::instrument;

use crate::problem::ApiProblem;
use crate::resources::{
    AccountTransaction, ApiKeyResource, BankAccount, CreateWebhook, Event, Index, Jwks, Listed,
    Organization, Page, Payment, Webhook, WebhookTestStatus,
};
use crate::webhook_signature::{
    verify_webhook, IncomingWebhook, KeyError, VerifiedSignature, WebhookKeys,
    WebhookSignatureError,
};

/// Griffin's API, sandbox and live alike (the organisation decides the mode).
pub const PRODUCTION_BASE_URL: &str = "https://api.griffin.com";

/// Griffin's default page size, and the bounds of `page[size]`.
pub const DEFAULT_PAGE_SIZE: u16 = 25;
pub const MAX_PAGE_SIZE: u16 = 200;

/// A Griffin API key (`g-test-…` in sandbox). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value.
    fn authorization(&self) -> String {
        format!("GriffinAPIKey {}", self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ApiKey([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// How long to wait for the TCP/TLS connection.
    pub connect_timeout_ms: u64,
    /// The whole request, from connecting to the last byte of the answer.
    pub request_timeout_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// How to reach Griffin. Deserialisable so the binary can read it with its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Config {
    /// The API's origin, e.g. [`PRODUCTION_BASE_URL`]; Griffin's links are paths under it.
    pub base_url: String,
    pub api_key: ApiKey,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The most pages one `list_all`-style call follows before giving up.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

fn default_max_pages() -> u32 {
    10_000
}

impl Config {
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            timeouts: Timeouts::default(),
            max_pages: default_max_pages(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Griffin client configuration: {0}")]
    Configuration(String),
    /// The connection was never made, so Griffin cannot have acted on the request.
    #[error("could not connect to Griffin")]
    Unreachable(#[source] reqwest::Error),
    /// The request may have reached Griffin; a write must be looked up before it is retried.
    #[error("Griffin did not answer in time")]
    Timeout(#[source] reqwest::Error),
    #[error("the request to Griffin failed")]
    Transport(#[source] reqwest::Error),
    /// 401: a missing, wrong or revoked API key (or, in live, a missing message signature).
    #[error("Griffin refused the API key (401): {}", .0.detail().unwrap_or("no detail"))]
    Unauthorized(ApiProblem),
    #[error("Griffin forbids this for the key's role (403): {}", .0.detail().unwrap_or("no detail"))]
    Forbidden(ApiProblem),
    #[error("not found at Griffin (404): {}", .0.detail().unwrap_or("no detail"))]
    NotFound(ApiProblem),
    /// 429: more than 50 requests in flight for the organisation; back off.
    #[error("Griffin rate-limited the request (429)")]
    RateLimited(ApiProblem),
    #[error("Griffin answered {}: {}", .0.status, .0.detail().unwrap_or("no detail"))]
    Api(ApiProblem),
    #[error("Griffin's answer from {url} is malformed: {reason}")]
    Malformed { url: String, reason: String },
    /// A link pointing outside the configured origin: never sent, so the key cannot leak.
    #[error("refusing to follow a link outside Griffin's origin: {0}")]
    ForeignLink(String),
    #[error("the index leads to no organisation")]
    NoOrganization,
    #[error("the organisation has no {0}")]
    MissingLink(&'static str),
    #[error("a list went on for more than {limit} pages")]
    TooManyPages { limit: u32 },
    #[error("Griffin's public keys are unusable")]
    Keys(#[from] KeyError),
}

impl ClientError {
    fn from_problem(problem: ApiProblem) -> Self {
        match problem.status {
            401 => ClientError::Unauthorized(problem),
            403 => ClientError::Forbidden(problem),
            404 => ClientError::NotFound(problem),
            429 => ClientError::RateLimited(problem),
            _ => ClientError::Api(problem),
        }
    }

    /// Whether the same request may succeed after a pause: 429, 5xx, timeouts and failed
    /// connections. Writes that timed out must be looked up before they are retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::RateLimited(_) | ClientError::Unreachable(_) | ClientError::Timeout(_) => {
                true
            }
            ClientError::Api(problem) => problem.status >= 500,
            _ => false,
        }
    }

    fn from_transport(error: reqwest::Error) -> Self {
        if error.is_connect() {
            ClientError::Unreachable(error)
        } else if error.is_timeout() {
            ClientError::Timeout(error)
        } else {
            ClientError::Transport(error)
        }
    }
}

/// `sort` of a transaction list. Griffin's default is `-created-at` (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionSort {
    CreatedAtAscending,
    CreatedAtDescending,
    ProcessedAtAscending,
    ProcessedAtDescending,
}

impl TransactionSort {
    pub fn as_param(self) -> &'static str {
        match self {
            TransactionSort::CreatedAtAscending => "created-at",
            TransactionSort::CreatedAtDescending => "-created-at",
            TransactionSort::ProcessedAtAscending => "processed-at",
            TransactionSort::ProcessedAtDescending => "-processed-at",
        }
    }
}

/// The first page of a transaction list: page size, sort and `filter[processed-at][…]`.
/// Later pages come from `links`, which carry these parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionQuery {
    pub page_size: Option<u16>,
    pub sort: Option<TransactionSort>,
    pub processed_after: Option<DateTime<Utc>>,
    pub processed_at_or_after: Option<DateTime<Utc>>,
    pub processed_before: Option<DateTime<Utc>>,
    pub processed_at_or_before: Option<DateTime<Utc>>,
}

impl TransactionQuery {
    fn to_query_string(&self) -> String {
        let mut query = QueryString::default();
        if let Some(size) = self.page_size {
            query.push("page[size]", &size.to_string());
        }
        if let Some(sort) = self.sort {
            query.push("sort", sort.as_param());
        }
        for (name, at) in [
            ("filter[processed-at][gt]", self.processed_after),
            ("filter[processed-at][gte]", self.processed_at_or_after),
            ("filter[processed-at][lt]", self.processed_before),
            ("filter[processed-at][lte]", self.processed_at_or_before),
        ] {
            if let Some(at) = at {
                query.push(name, &at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
        }
        query.finish()
    }
}

/// The first page of an event list: `filter[event-type][eq]` and `filter[created-at][gte]`,
/// the backfill Griffin's reconciliation recipe uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub page_size: Option<u16>,
    pub event_type: Option<String>,
    pub created_at_or_after: Option<DateTime<Utc>>,
}

impl EventQuery {
    fn to_query_string(&self) -> String {
        let mut query = QueryString::default();
        if let Some(size) = self.page_size {
            query.push("page[size]", &size.to_string());
        }
        if let Some(event_type) = &self.event_type {
            query.push("filter[event-type][eq]", event_type);
        }
        if let Some(at) = self.created_at_or_after {
            query.push(
                "filter[created-at][gte]",
                &at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            );
        }
        query.finish()
    }
}

/// Builds a query with Griffin's bracketed names kept literal (as its examples and links
/// spell them) and values percent-encoded.
#[derive(Default)]
struct QueryString(Vec<String>);

impl QueryString {
    fn push(&mut self, name: &str, value: &str) {
        let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
        self.0.push(format!("{name}={value}"));
    }

    fn finish(self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!("?{}", self.0.join("&"))
        }
    }
}

/// The Griffin client. Cheap to clone (reqwest's pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: ApiKey,
    max_pages: u32,
}

impl Client {
    pub fn new(config: Config) -> Result<Self, ClientError> {
        let base = Url::parse(&config.base_url).map_err(|error| {
            ClientError::Configuration(format!("base_url {:?}: {error}", config.base_url))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(ClientError::Configuration(format!(
                "base_url {:?} is not an http(s) origin",
                config.base_url
            )));
        }
        if config.api_key.expose().trim().is_empty() {
            return Err(ClientError::Configuration(
                "the API key is empty".to_string(),
            ));
        }
        if config.max_pages == 0 {
            return Err(ClientError::Configuration(
                "max_pages must be at least 1".to_string(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.timeouts.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeouts.request_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ClientError::Configuration(error.to_string()))?;
        Ok(Self {
            http,
            base,
            api_key: config.api_key,
            max_pages: config.max_pages,
        })
    }

    /// Resolves one of Griffin's links (usually a path such as `/v0/bank/accounts/ba.…`)
    /// against the origin. Absolute links must stay on the origin.
    pub fn resolve(&self, link: &str) -> Result<Url, ClientError> {
        let url = self
            .base
            .join(link)
            .map_err(|_| ClientError::ForeignLink(link.to_string()))?;
        if url.origin() != self.base.origin() {
            return Err(ClientError::ForeignLink(link.to_string()));
        }
        Ok(url)
    }

    async fn send<B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        link: &str,
        body: Option<&B>,
    ) -> Result<(Url, Vec<u8>), ClientError> {
        let url = self.resolve(link)?;
        let mut request = self
            .http
            .request(method, url.clone())
            .header(AUTHORIZATION, self.api_key.authorization())
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            let body = serde_json::to_vec(body).map_err(|error| ClientError::Malformed {
                url: url.to_string(),
                reason: format!("request body: {error}"),
            })?;
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(ClientError::from_transport)?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(ClientError::from_transport)?;
        if !status.is_success() {
            return Err(ClientError::from_problem(ApiProblem::parse(
                status.as_u16(),
                &bytes,
            )));
        }
        Ok((url, bytes.to_vec()))
    }

    async fn request_json<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        link: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (url, bytes) = self.send(method, link, body).await?;
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Malformed {
            url: url.to_string(),
            reason: error.to_string(),
        })
    }

    /// GETs any Griffin link as `T`.
    pub async fn get<T: DeserializeOwned>(&self, link: &str) -> Result<T, ClientError> {
        self.request_json::<T, ()>(Method::GET, link, None).await
    }

    /// `GET /v0/index`.
    #[instrument(skip(self))]
    pub async fn index(&self) -> Result<Index, ClientError> {
        self.get("/v0/index").await
    }

    /// The key's organisation, by navigation: the index's `organization-url`, or, when the
    /// index leaves it out, the `organization-url` of the API key behind `api-key-url`.
    #[instrument(skip(self))]
    pub async fn organization(&self) -> Result<Organization, ClientError> {
        let index = self.index().await?;
        let organization_url = match index.organization_url {
            Some(url) => url,
            None => {
                let api_key_url = index.api_key_url.ok_or(ClientError::NoOrganization)?;
                self.get::<ApiKeyResource>(&api_key_url)
                    .await?
                    .organization_url
            }
        };
        self.get(&organization_url).await
    }

    /// One page of any list, from a link: a first-page URL or a `links.next`/`links.prev`.
    pub async fn page<T: Listed>(&self, link: &str) -> Result<Page<T>, ClientError> {
        let (url, bytes) = self.send::<()>(Method::GET, link, None).await?;
        let body = serde_json::from_slice(&bytes).map_err(|error| ClientError::Malformed {
            url: url.to_string(),
            reason: error.to_string(),
        })?;
        Page::from_json(body).map_err(|error| ClientError::Malformed {
            url: url.to_string(),
            reason: error.to_string(),
        })
    }

    /// The page after `page`, following its `links.next` verbatim; `None` at the end.
    pub async fn next_page<T: Listed>(
        &self,
        page: &Page<T>,
    ) -> Result<Option<Page<T>>, ClientError> {
        match &page.links.next {
            Some(next) => self.page(next).await.map(Some),
            None => Ok(None),
        }
    }

    /// Every item of a list, starting at `first` and following `links.next` until it is null
    /// (at most `max_pages` pages).
    pub async fn all<T: Listed>(&self, first: &str) -> Result<Vec<T>, ClientError> {
        let mut page = self.page::<T>(first).await?;
        let mut items = std::mem::take(&mut page.items);
        let mut pages = 1;
        while let Some(mut next) = self.next_page(&page).await? {
            pages += 1;
            if pages > self.max_pages {
                return Err(ClientError::TooManyPages {
                    limit: self.max_pages,
                });
            }
            items.append(&mut next.items);
            page = next;
        }
        Ok(items)
    }

    /// The organisation's bank accounts, every page.
    #[instrument(skip_all)]
    pub async fn bank_accounts(
        &self,
        organization: &Organization,
    ) -> Result<Vec<BankAccount>, ClientError> {
        self.all(&organization.organization_bank_accounts_url).await
    }

    /// `GET /v0/bank/accounts/{id}` (by its `account-url`), with its balances.
    #[instrument(skip(self))]
    pub async fn bank_account(&self, account_url: &str) -> Result<BankAccount, ClientError> {
        self.get(account_url).await
    }

    /// The first page of an account's transactions.
    #[instrument(skip(self, account), fields(account = %account.account_url))]
    pub async fn transactions_page(
        &self,
        account: &BankAccount,
        query: &TransactionQuery,
    ) -> Result<Page<AccountTransaction>, ClientError> {
        if let Some(size) = query.page_size {
            if !(1..=MAX_PAGE_SIZE).contains(&size) {
                return Err(ClientError::Configuration(format!(
                    "page size {size} is outside 1..={MAX_PAGE_SIZE}"
                )));
            }
        }
        let link = format!(
            "{}{}",
            account.account_transactions_url,
            query.to_query_string()
        );
        self.page(&link).await
    }

    /// Every transaction of an account matching `query`, in the query's order.
    #[instrument(skip(self, account), fields(account = %account.account_url))]
    pub async fn transactions(
        &self,
        account: &BankAccount,
        query: &TransactionQuery,
    ) -> Result<Vec<AccountTransaction>, ClientError> {
        let mut page = self.transactions_page(account, query).await?;
        let mut items = std::mem::take(&mut page.items);
        let mut pages = 1;
        while let Some(mut next) = self.next_page(&page).await? {
            pages += 1;
            if pages > self.max_pages {
                return Err(ClientError::TooManyPages {
                    limit: self.max_pages,
                });
            }
            items.append(&mut next.items);
            page = next;
        }
        Ok(items)
    }

    /// `GET /v0/bank/transactions/{id}`.
    pub async fn transaction(
        &self,
        transaction_url: &str,
    ) -> Result<AccountTransaction, ClientError> {
        self.get(transaction_url).await
    }

    /// `GET /v0/payments/{id}`: an inbound credit's payer and reference.
    pub async fn payment(&self, payment_url: &str) -> Result<Payment, ClientError> {
        self.get(payment_url).await
    }

    /// The first page of the organisation's events.
    pub async fn events_page(
        &self,
        organization: &Organization,
        query: &EventQuery,
    ) -> Result<Page<Event>, ClientError> {
        let events_url = organization
            .organization_events_url
            .as_deref()
            .ok_or(ClientError::MissingLink("organization-events-url"))?;
        self.page(&format!("{events_url}{}", query.to_query_string()))
            .await
    }

    /// `GET /v0/events/{id}`.
    pub async fn event(&self, event_url: &str) -> Result<Event, ClientError> {
        self.get(event_url).await
    }

    fn webhooks_url(organization: &Organization) -> Result<&str, ClientError> {
        organization
            .organization_webhooks_url
            .as_deref()
            .ok_or(ClientError::MissingLink("organization-webhooks-url"))
    }

    /// The organisation's webhooks (Griffin allows one).
    pub async fn webhooks(&self, organization: &Organization) -> Result<Vec<Webhook>, ClientError> {
        Ok(self
            .page::<Webhook>(Self::webhooks_url(organization)?)
            .await?
            .items)
    }

    /// `POST /v0/organizations/{id}/webhooks`. Griffin wants an HTTPS destination on 443.
    #[instrument(skip(self, organization))]
    pub async fn create_webhook(
        &self,
        organization: &Organization,
        webhook: &CreateWebhook,
    ) -> Result<Webhook, ClientError> {
        self.request_json(
            Method::POST,
            Self::webhooks_url(organization)?,
            Some(webhook),
        )
        .await
    }

    pub async fn webhook(&self, webhook_url: &str) -> Result<Webhook, ClientError> {
        self.get(webhook_url).await
    }

    pub async fn activate_webhook(&self, webhook: &Webhook) -> Result<Webhook, ClientError> {
        let link = webhook
            .activate_webhook_url
            .clone()
            .unwrap_or_else(|| format!("{}/actions/activate", webhook.webhook_url));
        self.request_json::<Webhook, ()>(Method::POST, &link, None)
            .await
    }

    pub async fn deactivate_webhook(&self, webhook: &Webhook) -> Result<Webhook, ClientError> {
        let link = webhook
            .deactivate_webhook_url
            .clone()
            .unwrap_or_else(|| format!("{}/actions/deactivate", webhook.webhook_url));
        self.request_json::<Webhook, ()>(Method::POST, &link, None)
            .await
    }

    pub async fn delete_webhook(&self, webhook: &Webhook) -> Result<(), ClientError> {
        self.send::<()>(Method::DELETE, &webhook.webhook_url, None)
            .await
            .map(|_| ())
    }

    /// `POST …/actions/test`: Griffin sends a `test-event` to the destination.
    pub async fn send_test_webhook(
        &self,
        webhook: &Webhook,
    ) -> Result<WebhookTestStatus, ClientError> {
        let link = self.test_link(webhook);
        self.request_json::<WebhookTestStatus, ()>(Method::POST, &link, None)
            .await
    }

    /// `GET …/actions/test`: the outcome of the latest test event.
    pub async fn webhook_test_status(
        &self,
        webhook: &Webhook,
    ) -> Result<WebhookTestStatus, ClientError> {
        self.get(&self.test_link(webhook)).await
    }

    fn test_link(&self, webhook: &Webhook) -> String {
        webhook
            .test_webhook_url
            .clone()
            .unwrap_or_else(|| format!("{}/actions/test", webhook.webhook_url))
    }

    /// `GET /v0/security/public-keys`: Griffin's webhook-signing keys (JWKS).
    pub async fn public_keys(&self) -> Result<Jwks, ClientError> {
        self.get("/v0/security/public-keys").await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookVerificationError {
    #[error(transparent)]
    Signature(#[from] WebhookSignatureError),
    #[error("could not fetch Griffin's public keys")]
    Keys(#[source] ClientError),
}

/// Verifies incoming webhooks with Griffin's keys, cached: a `kid` never changes its key, so
/// the JWKS is fetched again only when a webhook names a `kid` we do not hold, and then at
/// most once per `refresh_interval` (a forged `kid` cannot make us hammer Griffin).
#[derive(Debug)]
pub struct WebhookVerifier {
    client: Client,
    keys: RwLock<WebhookKeys>,
    last_refresh: Mutex<Option<Instant>>,
    refresh_interval: Duration,
}

impl WebhookVerifier {
    pub fn new(client: Client) -> Self {
        Self::with_keys(client, WebhookKeys::default())
    }

    /// Starts from keys already held (e.g. loaded at start-up).
    pub fn with_keys(client: Client, keys: WebhookKeys) -> Self {
        Self {
            client,
            keys: RwLock::new(keys),
            last_refresh: Mutex::new(None),
            refresh_interval: Duration::from_secs(60),
        }
    }

    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Fetches the JWKS now and adds its new keys.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let jwks = self.client.public_keys().await?;
        self.keys.write().await.merge(&jwks)?;
        Ok(())
    }

    pub async fn verify(
        &self,
        request: &IncomingWebhook<'_>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedSignature, WebhookVerificationError> {
        let first = verify_webhook(&*self.keys.read().await, request, now);
        match first {
            Err(WebhookSignatureError::UnknownKey(_)) if self.may_refresh() => {
                self.refresh()
                    .await
                    .map_err(WebhookVerificationError::Keys)?;
                Ok(verify_webhook(&*self.keys.read().await, request, now)?)
            }
            other => Ok(other?),
        }
    }

    fn may_refresh(&self) -> bool {
        let mut last = self
            .last_refresh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= self.refresh_interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}
