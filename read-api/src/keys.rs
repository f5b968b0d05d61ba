//! API keys by hash, from the `api_keys` read model.

use async_trait::async_trait;
use event_store::Mode;
use sqlx::PgPool;

use crate::http::auth::{AuthenticatedKey, KeyResolver, ResolveError};

pub struct DatabaseKeys {
    pool: PgPool,
}

impl DatabaseKeys {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl KeyResolver for DatabaseKeys {
    async fn resolve(&self, secret: &str) -> Result<Option<AuthenticatedKey>, ResolveError> {
        let row: Option<(String, String, bool)> = sqlx::query_as(
            "SELECT key_id, project, livemode FROM api_keys.keys \
             WHERE secret_hash = $1 AND revoked_at IS NULL",
        )
        .bind(commands::ids::secret_hash(secret))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(key_id, project_id, livemode)| {
            let mode = if livemode { Mode::Live } else { Mode::Test };
            // A key whose prefix disagrees with its stored mode is not that key.
            let prefix_live = secret.starts_with("sk_live_") || secret.starts_with("rk_live_");
            (prefix_live == livemode).then_some(AuthenticatedKey {
                key_id,
                project_id,
                mode,
                rate_limit_per_second: 0,
            })
        }))
    }
}
