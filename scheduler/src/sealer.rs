//! Seals the global log at an interval (see `event_store::seal`). Safe to run in every
//! process: sealing takes an advisory lock, so seals never interleave.

use std::time::Duration;

use event_store::seal::Sealer;

#[derive(Debug, Clone, Copy)]
pub struct SealerSettings {
    pub interval_ms: u64,
    pub max_events_per_seal: i64,
}

impl Default for SealerSettings {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            max_events_per_seal: 100_000,
        }
    }
}

/// Seals whatever is final every interval, for ever. Errors are logged and retried at the
/// next tick: a missed seal only widens the next one.
pub async fn run(sealer: Sealer, settings: SealerSettings) {
    let mut ticker = tokio::time::interval(Duration::from_millis(settings.interval_ms.max(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match sealer.seal_all(settings.max_events_per_seal).await {
            Ok(seals) => {
                if let Some(last) = seals.last() {
                    tracing::debug!(
                        seal = last.seal_number,
                        seals = seals.len(),
                        "sealed the log"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "sealing failed; retrying at the next tick"),
        }
    }
}
