//! Portal sessions (`billing_portal.session`): access grants kept in
//! `billing_portal_sessions` (migrations/0006_billing_portal.sql, which says why a table and
//! not an event). The URL's token is the capability; only its SHA-256 is stored. Each
//! session carries a CSRF token for its forms and expires a short while after creation.

use commands::payments::Actor;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::pages::dashboard::session::{new_token, tokens_equal};

/// How long a portal session lasts by default (Stripe's portal links are short-lived too).
pub const DEFAULT_SESSION_SECONDS: i64 = 60 * 60;
/// Expired sessions are kept this long (so their links answer "expired", not "unknown"),
/// then pruned as new sessions are created.
const KEEP_EXPIRED_SECONDS: i64 = 24 * 60 * 60;
/// Longest token looked up (ours are 43 characters): anything longer is not one.
const MAX_TOKEN_CHARS: usize = 128;

/// The portal's settings, read once at start-up (`calmony serve --portal-session-seconds`).
#[derive(Debug, Clone, Copy)]
pub struct PortalSettings {
    pub session_seconds: i64,
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            session_seconds: DEFAULT_SESSION_SECONDS,
        }
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A live portal session: whose portal it is, and the form token.
#[derive(Debug, Clone)]
pub struct PortalSession {
    pub id: String,
    pub project: String,
    pub livemode: bool,
    pub customer: String,
    pub return_url: Option<String>,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// What a token in a URL turned out to be.
pub enum Lookup {
    Found(PortalSession),
    /// It was a session, and its time is over.
    Expired,
    Unknown,
}

/// A new session, as the API answers it: the token goes into the URL and nowhere else.
pub struct Created {
    pub session: PortalSession,
    pub token: String,
    pub created: i64,
}

impl PortalSession {
    /// The actor in the metadata of every event this session's writes append.
    pub fn actor(&self, request_id: &str) -> Actor {
        Actor {
            project: self.project.clone(),
            livemode: self.livemode,
            actor: format!("portal:{}", self.id),
            request_id: request_id.to_string(),
            idempotency_key: None,
        }
    }

    /// Whether a posted form's `csrf_token` is this session's (constant time).
    pub fn csrf_ok(&self, posted: Option<&str>) -> bool {
        posted.is_some_and(|posted| tokens_equal(posted, &self.csrf_token))
    }

    /// Grants the holder of a new token access to `customer`'s portal in this scope.
    pub async fn create(
        pool: &PgPool,
        settings: PortalSettings,
        project: &str,
        livemode: bool,
        customer: &str,
        return_url: Option<String>,
        locale: Option<String>,
    ) -> Result<Created, sqlx::Error> {
        sqlx::query(
            "DELETE FROM public.billing_portal_sessions \
             WHERE expires_at < now() - make_interval(secs => $1)",
        )
        .bind(KEEP_EXPIRED_SECONDS as f64)
        .execute(pool)
        .await?;
        let id = commands::ids::new_id("bps");
        let token = new_token();
        let csrf_token = new_token();
        let (created, expires_at): (i64, i64) = sqlx::query_as(
            "INSERT INTO public.billing_portal_sessions \
               (id, token_hash, project, livemode, customer, return_url, locale, csrf_token, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9)) \
             RETURNING extract(epoch FROM created_at)::bigint, extract(epoch FROM expires_at)::bigint",
        )
        .bind(&id)
        .bind(token_hash(&token))
        .bind(project)
        .bind(livemode)
        .bind(customer)
        .bind(&return_url)
        .bind(&locale)
        .bind(&csrf_token)
        .bind(settings.session_seconds as f64)
        .fetch_one(pool)
        .await?;
        Ok(Created {
            session: PortalSession {
                id,
                project: project.to_string(),
                livemode,
                customer: customer.to_string(),
                return_url,
                csrf_token,
                expires_at,
            },
            token,
            created,
        })
    }

    /// The session a URL's token grants, if any.
    pub async fn find(pool: &PgPool, token: &str) -> Result<Lookup, sqlx::Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
            return Ok(Lookup::Unknown);
        }
        type Row = (
            String,
            String,
            bool,
            String,
            Option<String>,
            String,
            i64,
            bool,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, project, livemode, customer, return_url, csrf_token, \
                    extract(epoch FROM expires_at)::bigint, expires_at > now() \
             FROM public.billing_portal_sessions WHERE token_hash = $1",
        )
        .bind(token_hash(token))
        .fetch_optional(pool)
        .await?;
        Ok(match row {
            None => Lookup::Unknown,
            Some((.., false)) => Lookup::Expired,
            Some((id, project, livemode, customer, return_url, csrf_token, expires_at, true)) => {
                Lookup::Found(PortalSession {
                    id,
                    project,
                    livemode,
                    customer,
                    return_url,
                    csrf_token,
                    expires_at,
                })
            }
        })
    }
}
