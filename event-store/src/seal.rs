//! Seals: tamper evidence over the whole global log without serialising writers.
//!
//! Writers only chain events within their own stream. A sealer, running beside them,
//! periodically takes the next range of the log that is final (below the horizon of
//! finished transactions), hashes the event hashes of that range in log order onto the
//! previous seal's hash, and records the result. Rewriting any sealed event, or slipping
//! one into or out of a sealed range, changes the hash of its seal and of every seal after
//! it. Only one sealer seals at a time (a transaction-scoped advisory lock), however many
//! processes run one.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgPool;

use crate::chain::{SealHasher, GENESIS_HASH};
use crate::log::LogCursor;
use crate::store::StoreError;

/// Bound on the events one seal covers.
pub const MAX_SEAL_EVENTS: i64 = 1_000_000;

/// Key of the advisory lock that makes sealing single-writer.
const SEAL_LOCK_KEY: i64 = 0x6361_6c6d_7365_616c; // "calmseal"

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Seal {
    pub seal_number: i64,
    pub from_txid: i64,
    pub from_position: i64,
    pub to_txid: i64,
    pub to_position: i64,
    pub event_count: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub sealed_at: DateTime<Utc>,
}

impl Seal {
    pub fn from(&self) -> LogCursor {
        LogCursor {
            txid: self.from_txid,
            position: self.from_position,
        }
    }

    pub fn to(&self) -> LogCursor {
        LogCursor {
            txid: self.to_txid,
            position: self.to_position,
        }
    }
}

pub(crate) const SEAL_COLUMNS: &str = "seal_number, from_txid::text::bigint AS from_txid, \
     from_position, to_txid::text::bigint AS to_txid, to_position, event_count, prev_hash, \
     hash, sealed_at";

#[derive(Clone)]
pub struct Sealer {
    pool: PgPool,
}

impl Sealer {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Seals the next final range of up to `max_events` events. `None` when there was
    /// nothing new to seal.
    pub async fn seal_next(&self, max_events: i64) -> Result<Option<Seal>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEAL_LOCK_KEY)
            .execute(&mut *transaction)
            .await?;
        let last: Option<Seal> = sqlx::query_as(&format!(
            "SELECT {SEAL_COLUMNS} FROM ledger_seals ORDER BY seal_number DESC LIMIT 1"
        ))
        .fetch_optional(&mut *transaction)
        .await?;
        let (from, prev_hash, seal_number) = match &last {
            Some(seal) => (seal.to(), seal.hash.clone(), seal.seal_number + 1),
            None => (LogCursor::START, GENESIS_HASH.to_vec(), 1),
        };

        let mut hasher = SealHasher::new(&prev_hash);
        let mut to = from;
        {
            let mut rows = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(
                "SELECT txid::text::bigint, position, hash FROM events \
                 WHERE (txid, position) > ($1::text::xid8, $2) \
                   AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY events.txid, events.position LIMIT $3",
            )
            .bind(from.txid)
            .bind(from.position)
            .bind(max_events.clamp(1, MAX_SEAL_EVENTS))
            .fetch(&mut *transaction);
            while let Some((txid, position, hash)) = rows.try_next().await? {
                hasher.add(&hash);
                to = LogCursor { txid, position };
            }
        }
        if hasher.events() == 0 {
            transaction.rollback().await?;
            return Ok(None);
        }
        let event_count = hasher.events();
        let hash = hasher.finish();
        let seal: Seal = sqlx::query_as(&format!(
            "INSERT INTO ledger_seals (seal_number, from_txid, from_position, to_txid, \
                 to_position, event_count, prev_hash, hash) \
             VALUES ($1, $2::text::xid8, $3, $4::text::xid8, $5, $6, $7, $8) \
             RETURNING {SEAL_COLUMNS}"
        ))
        .bind(seal_number)
        .bind(from.txid)
        .bind(from.position)
        .bind(to.txid)
        .bind(to.position)
        .bind(event_count)
        .bind(prev_hash)
        .bind(hash.to_vec())
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(seal))
    }

    /// Seals everything final, in ranges of at most `max_events`.
    pub async fn seal_all(&self, max_events: i64) -> Result<Vec<Seal>, StoreError> {
        let mut seals = Vec::new();
        while let Some(seal) = self.seal_next(max_events).await? {
            seals.push(seal);
        }
        Ok(seals)
    }
}
