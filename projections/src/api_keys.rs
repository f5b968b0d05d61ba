//! API keys by the hash of their secret: what authentication looks up on every request.
//! Only hashes are stored; a key's secret exists only in the one output that created it.

use domain::project::{Project, ProjectEvent};
use event_store::RecordedEvent;
use sqlx::PgConnection;

use crate::runtime::{Projection, ProjectionError};

pub const NAME: &str = "api_keys";

pub struct ApiKeys;

#[async_trait::async_trait]
impl Projection for ApiKeys {
    /// Background: `calmony keys` catches it up before it answers.
    fn batching_delay(&self) -> std::time::Duration {
        crate::runtime::BACKGROUND_BATCHING_DELAY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE keys (
            secret_hash text    PRIMARY KEY,
            key_id      text    NOT NULL UNIQUE,
            project     text    NOT NULL,
            livemode    boolean NOT NULL,
            display     text    NOT NULL,
            created     bigint  NOT NULL,
            revoked_at  bigint
        );
        CREATE TABLE projects (
            id      text   PRIMARY KEY,
            name    text   NOT NULL,
            created bigint NOT NULL
        );"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        use cqrs_es::Aggregate;
        // Few and rare: one statement per event keeps this obvious.
        for event in events
            .iter()
            .filter(|event| event.aggregate_type == Project::TYPE)
        {
            let project_event: ProjectEvent = event
                .payload_as()
                .map_err(|error| ProjectionError::bad_event(event, error))?;
            match project_event {
                ProjectEvent::ProjectCreated {
                    project_id,
                    name,
                    created,
                } => {
                    sqlx::query("INSERT INTO projects (id, name, created) VALUES ($1, $2, $3)")
                        .bind(project_id)
                        .bind(name)
                        .bind(created)
                        .execute(&mut *connection)
                        .await?;
                }
                ProjectEvent::ApiKeyCreated {
                    key_id,
                    livemode,
                    secret_hash,
                    display,
                    created,
                } => {
                    sqlx::query(
                        "INSERT INTO keys (secret_hash, key_id, project, livemode, display, created) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(secret_hash)
                    .bind(key_id)
                    .bind(&event.aggregate_id)
                    .bind(livemode)
                    .bind(display)
                    .bind(created)
                    .execute(&mut *connection)
                    .await?;
                }
                ProjectEvent::ApiKeyRevoked { key_id, at } => {
                    sqlx::query("UPDATE keys SET revoked_at = $2 WHERE key_id = $1")
                        .bind(key_id)
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
                // Billing settings are read from the project's stream, not from here.
                ProjectEvent::BillingConfigured { .. } => {}
            }
        }
        Ok(())
    }
}
