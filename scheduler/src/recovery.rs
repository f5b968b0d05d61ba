//! Resolves charge attempts a crash left open: every few seconds, finds payment intents
//! whose attempt has been pending longer than the grace period (from the API read model),
//! and lets the payment service ask the gateway what happened. Safe to run in every
//! process: resolving is idempotent in the aggregate.

use std::time::Duration;

use commands::payments::{Actor, PaymentService};
use sqlx::PgPool;

/// Bound on the intents one pass resolves.
const MAX_PER_PASS: i64 = 100;

pub async fn run(pool: PgPool, payments: PaymentService, grace_ms: u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(grace_ms.clamp(100, 60_000) / 2));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = pass(&pool, &payments, grace_ms).await {
            tracing::warn!(%error, "charge recovery pass failed; retrying at the next tick");
        }
    }
}

/// One pass; returns how many intents it resolved.
pub async fn pass(
    pool: &PgPool,
    payments: &PaymentService,
    grace_ms: u64,
) -> Result<usize, sqlx::Error> {
    let grace_seconds = i64::try_from(grace_ms / 1_000).unwrap_or(i64::MAX);
    let open: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT payment_intent, project, livemode FROM api.objects \
         WHERE object = 'charge' AND body->>'status' = 'pending' \
           AND created <= extract(epoch FROM now())::bigint - $1 \
         ORDER BY created LIMIT $2",
    )
    .bind(grace_seconds)
    .bind(MAX_PER_PASS)
    .fetch_all(pool)
    .await?;
    let mut resolved = 0;
    for (intent_id, project, livemode) in open {
        let actor = Actor {
            project,
            livemode,
            actor: "system:charge-recovery".into(),
            request_id: commands::ids::new_id("req"),
            idempotency_key: None,
        };
        match payments.resolve_open_attempt(&actor, &intent_id).await {
            Ok(status) => {
                tracing::info!(payment_intent = %intent_id, status = status.as_str(), "resolved an open charge attempt");
                resolved += 1;
            }
            Err(error) => {
                tracing::warn!(payment_intent = %intent_id, %error, "could not resolve an open charge attempt")
            }
        }
    }
    Ok(resolved)
}
