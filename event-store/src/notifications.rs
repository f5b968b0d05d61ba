//! One LISTEN connection per process, shared by every task in it that waits on the
//! database's notifications.
//!
//! PostgreSQL signals every listening backend of a database on every `NOTIFY`, whatever its
//! channel, and each signalled backend wakes, reads the notification queue and writes to its
//! client. With a listener per projection follower, one commit woke ten backends and their
//! ten connections' tasks: about a tenth of PostgreSQL's CPU in the payments benchmark
//! (`perf`: the signals sent at commit and the woken backends' notify handling). Here one
//! connection listens on every channel the process asks for, and hands each notification to
//! the tasks waiting on its channel (or on its channel and payload) through `watch`
//! channels, which also fold a burst into one wake-up.
//!
//! A notification is a hint, never the record: whoever waits reads the database after it
//! wakes, and polls in case one was missed. When the connection is lost (notifications sent
//! meanwhile are gone), every waiter is woken, so that it reads at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::StoreError;

/// How long the relay waits before listening again after the connection could not be
/// re-established.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// The process's listener: cheap to clone; the connection closes when the last clone goes.
#[derive(Clone)]
pub struct Notifications {
    topics: Arc<Topics>,
    _relay: Arc<AbortOnDrop>,
}

#[derive(Default)]
struct Topics {
    /// What waiters are watching: a channel (every notification on it) or a channel and
    /// payload (only those carrying it), each with a counter of notifications seen.
    watched: Mutex<HashMap<Topic, watch::Sender<u64>>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Topic {
    channel: String,
    payload: Option<String>,
}

impl Topic {
    fn matches(&self, channel: &str, payload: &str) -> bool {
        self.channel == channel
            && self
                .payload
                .as_deref()
                .is_none_or(|wanted| wanted == payload)
    }
}

impl Topics {
    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, watch::Sender<u64>>> {
        self.watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the waiters of every topic `matches` picks.
    fn wake(&self, matches: impl Fn(&Topic) -> bool) {
        for (topic, counter) in self.watched().iter() {
            if matches(topic) {
                counter.send_modify(|seen| *seen = seen.wrapping_add(1));
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Notifications {
    /// Listens on `channels` on a connection of `pool`'s (outside the pool's count, as any
    /// [`PgListener`]). Once this returns, every notification sent on them reaches the
    /// waiters that [`Self::watch`] them.
    pub async fn listen(pool: &PgPool, channels: &[&str]) -> Result<Self, StoreError> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        let topics = Arc::new(Topics::default());
        let relay = tokio::spawn(relay(listener, topics.clone()));
        Ok(Self {
            topics,
            _relay: Arc::new(AbortOnDrop(relay)),
        })
    }

    /// A receiver that changes on every notification on `channel` (one of those given to
    /// [`Self::listen`]), or with `payload` on those carrying that payload only; and on every
    /// reconnection. A burst of notifications between two looks is one change.
    pub fn watch(&self, channel: &str, payload: Option<&str>) -> watch::Receiver<u64> {
        let topic = Topic {
            channel: channel.to_string(),
            payload: payload.map(str::to_string),
        };
        self.topics
            .watched()
            .entry(topic)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

/// Hands each notification to its topics' waiters, for as long as the process listens.
async fn relay(mut listener: PgListener, topics: Arc<Topics>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                topics.wake(|topic| topic.matches(notification.channel(), notification.payload()))
            }
            // The connection was lost; the next call reconnects and listens again. What was
            // sent in between is not coming: everyone reads now.
            Ok(None) => topics.wake(|_| true),
            Err(error) => {
                tracing::warn!(%error, "the notification listener could not reconnect; retrying");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                topics.wake(|_| true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_with_a_payload_matches_that_payload_only() {
        let any = Topic {
            channel: "c".into(),
            payload: None,
        };
        let named = Topic {
            channel: "c".into(),
            payload: Some("api".into()),
        };
        assert!(any.matches("c", "api") && any.matches("c", "billing"));
        assert!(named.matches("c", "api"));
        assert!(!named.matches("c", "billing"));
        assert!(!any.matches("d", "api") && !named.matches("d", "api"));
    }
}
