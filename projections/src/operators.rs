//! Dashboard operators by email: what the dashboard's login looks up (id, password hash,
//! whether disabled). The password hash is here and in the created event only.

use cqrs_es::Aggregate;
use domain::operator::{Operator, OperatorEvent};
use event_store::RecordedEvent;
use sqlx::PgConnection;

use crate::runtime::{Projection, ProjectionError};

pub const NAME: &str = "operators";

pub struct Operators;

#[async_trait::async_trait]
impl Projection for Operators {
    /// Background: sign-in catches it up after `calmony operators create`.
    fn batching_delay(&self) -> std::time::Duration {
        crate::runtime::BACKGROUND_BATCHING_DELAY
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn schema_sql(&self) -> &'static str {
        "CREATE TABLE operators (
            id            text   PRIMARY KEY,
            email         text   NOT NULL UNIQUE,
            display_name  text   NOT NULL,
            password_hash text   NOT NULL,
            created       bigint NOT NULL,
            disabled_at   bigint
        );"
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // Few and rare: one statement per event keeps this obvious.
        for event in events
            .iter()
            .filter(|event| event.aggregate_type == Operator::TYPE)
        {
            let operator_event: OperatorEvent = event
                .payload_as()
                .map_err(|error| ProjectionError::bad_event(event, error))?;
            match operator_event {
                OperatorEvent::OperatorCreated {
                    operator_id,
                    email,
                    display_name,
                    password_hash,
                    created,
                } => {
                    sqlx::query(
                        "INSERT INTO operators (id, email, display_name, password_hash, created) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(operator_id)
                    .bind(email)
                    .bind(display_name)
                    .bind(password_hash.as_str())
                    .bind(created)
                    .execute(&mut *connection)
                    .await?;
                }
                OperatorEvent::OperatorDisabled { at } => {
                    sqlx::query("UPDATE operators SET disabled_at = $2 WHERE id = $1")
                        .bind(&event.aggregate_id)
                        .bind(at)
                        .execute(&mut *connection)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
