//! Resolves work a crash left half done, every few seconds, once it has waited longer than
//! the grace period:
//!
//! - charge attempts left open (from the API read model): the payment service asks the
//!   gateway what happened;
//! - Checkout Sessions whose gateway result was accepted but that never completed (from
//!   the `billing` read model): the checkout service finishes them with the ids fixed at
//!   acceptance.
//!
//! Safe to run in every process: both are idempotent in the aggregates.

use std::time::Duration;

use commands::billing::BillingService;
use commands::checkout::CheckoutService;
use commands::payments::{Actor, PaymentService};
use sqlx::PgPool;

/// Bound on the intents one pass resolves.
const MAX_PER_PASS: i64 = 100;

pub async fn run(pool: PgPool, payments: PaymentService, grace_ms: u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(grace_ms.clamp(100, 60_000) / 2));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Checkout first: a subscription's first charge that a crash left open is continued
        // by finishing its session (the charge pass would record it as failed).
        if let Err(error) = checkout_pass(&pool, &payments, grace_ms).await {
            tracing::warn!(%error, "checkout recovery pass failed; retrying at the next tick");
        }
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

/// One pass over Checkout Sessions accepted longer than the grace period ago and still
/// open; returns how many it finished.
pub async fn checkout_pass(
    pool: &PgPool,
    payments: &PaymentService,
    grace_ms: u64,
) -> Result<usize, sqlx::Error> {
    let grace_seconds = (grace_ms as f64) / 1_000.0;
    let open: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT id, project, livemode FROM billing.checkout_sessions \
         WHERE return_accepted_at <= now() - make_interval(secs => $1) \
         ORDER BY return_accepted_at LIMIT $2",
    )
    .bind(grace_seconds)
    .bind(MAX_PER_PASS)
    .fetch_all(pool)
    .await?;
    let checkout = CheckoutService::new(BillingService::new(payments.clone()));
    let mut finished = 0;
    for (session_id, project, livemode) in open {
        let actor = Actor {
            project,
            livemode,
            actor: "system:checkout-recovery".into(),
            request_id: commands::ids::new_id("req"),
            idempotency_key: None,
        };
        match checkout.finish_accepted(&actor, &session_id).await {
            Ok(_) => {
                tracing::info!(checkout_session = %session_id, "finished a checkout session a crash left accepted");
                finished += 1;
            }
            Err(error) => {
                tracing::warn!(checkout_session = %session_id, %error, "could not finish an accepted checkout session")
            }
        }
    }
    Ok(finished)
}
