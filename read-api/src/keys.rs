//! API keys by hash, from the `api_keys` read model, remembered in process until that read
//! model changes.
//!
//! Every request resolves its key, and the key lookup was a statement of its own on every
//! request. Found keys are kept in memory; any batch of the `api_keys` projection, in this
//! process or another (its checkpoint notification, through the runtime's one listener),
//! forgets them all, so a revocation takes effect here as soon as the read model has it (as
//! it did when every request read the table), give or take the notification's way back. A
//! lost listening connection forgets them too. Unknown secrets are not remembered: nobody
//! fills the memory by guessing.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use event_store::Mode;
use projections::runtime::CHECKPOINT_CHANNEL;
use projections::ProjectionRuntime;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::http::auth::{AuthenticatedKey, KeyResolver, ResolveError};

pub struct DatabaseKeys {
    pool: PgPool,
    runtime: Option<ProjectionRuntime>,
    remembered: tokio::sync::OnceCell<Option<Mutex<Remembered>>>,
}

/// Keys found since the read model last changed.
struct Remembered {
    /// Changes on every `api_keys` batch (and reconnection).
    changes: watch::Receiver<u64>,
    /// The change `keys` were read after.
    as_of: u64,
    keys: HashMap<String, AuthenticatedKey>,
}

impl Remembered {
    /// Forgets everything if the read model changed since it was read.
    fn current(&mut self) -> &mut HashMap<String, AuthenticatedKey> {
        let latest = *self.changes.borrow_and_update();
        if latest != self.as_of {
            self.keys.clear();
            self.as_of = latest;
        }
        &mut self.keys
    }
}

impl DatabaseKeys {
    /// Reads the table on every request.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            runtime: None,
            remembered: tokio::sync::OnceCell::new(),
        }
    }

    /// Remembers found keys until `runtime` hears of an `api_keys` batch.
    pub fn remembered(pool: PgPool, runtime: ProjectionRuntime) -> Self {
        Self {
            runtime: Some(runtime),
            ..Self::new(pool)
        }
    }

    async fn memory(&self) -> Option<&Mutex<Remembered>> {
        self.remembered
            .get_or_init(|| async {
                let runtime = self.runtime.as_ref()?;
                match runtime.notifications().await {
                    Ok(notifications) => {
                        let mut changes = notifications
                            .watch(CHECKPOINT_CHANNEL, Some(projections::api_keys::NAME));
                        let as_of = *changes.borrow_and_update();
                        Some(Mutex::new(Remembered {
                            changes,
                            as_of,
                            keys: HashMap::new(),
                        }))
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for key changes; reading keys on every request");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    async fn read(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(String, String, bool)>, ResolveError> {
        Ok(sqlx::query_as(
            "SELECT key_id, project, livemode FROM api_keys.keys \
             WHERE secret_hash = $1 AND revoked_at IS NULL",
        )
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?)
    }
}

fn lock(memory: &Mutex<Remembered>) -> std::sync::MutexGuard<'_, Remembered> {
    memory
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl KeyResolver for DatabaseKeys {
    async fn resolve(&self, secret: &str) -> Result<Option<AuthenticatedKey>, ResolveError> {
        let secret_hash = commands::ids::secret_hash(secret);
        let memory = self.memory().await;
        let read_after = match memory {
            Some(memory) => {
                let mut remembered = lock(memory);
                if let Some(key) = remembered.current().get(&secret_hash) {
                    return Ok(Some(key.clone()));
                }
                Some(remembered.as_of)
            }
            None => None,
        };
        let found = self
            .read(&secret_hash)
            .await?
            .and_then(|(key_id, project_id, livemode)| {
                let mode = if livemode { Mode::Live } else { Mode::Test };
                // A key whose prefix disagrees with its stored mode is not that key.
                let prefix_live = secret.starts_with("sk_live_") || secret.starts_with("rk_live_");
                (prefix_live == livemode).then_some(AuthenticatedKey {
                    key_id,
                    project_id,
                    mode,
                    rate_limit_per_second: 0,
                })
            });
        if let (Some(memory), Some(read_after), Some(key)) = (memory, read_after, &found) {
            let mut remembered = lock(memory);
            remembered.current();
            // Kept only if the read model did not change while it was read: the row read
            // may be the one a revocation just replaced.
            if remembered.as_of == read_after {
                remembered.keys.insert(secret_hash, key.clone());
            }
        }
        Ok(found)
    }
}
