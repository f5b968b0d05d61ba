//! The hash chains: per stream (each event hashes the previous one) and over the global log
//! (each seal hashes the events of its range and the previous seal).
//!
//! `event_hash` must produce exactly the bytes of the SQL function `calmony_event_hash` in
//! `migrations/0001_event_store.sql` and of the insert trigger's inline copy of it
//! (`migrations/0008_event_hash_inline.sql`); the trigger computes hashes there and
//! `calmony ledger verify` recomputes them here.

use sha2::{Digest, Sha256};

use crate::record::RecordedEvent;

pub const HASH_BYTES: usize = 32;
pub const GENESIS_HASH: [u8; HASH_BYTES] = [0; HASH_BYTES];

/// The hash an event must carry, given the hash of the previous event in its stream.
pub fn event_hash(prev_hash: &[u8], event: &RecordedEvent) -> [u8; HASH_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(event.sequence.to_be_bytes());
    hasher.update(event.position.to_be_bytes());
    hasher.update(event.recorded_at.timestamp_micros().to_be_bytes());
    for (index, text) in [
        event.aggregate_type.as_str(),
        event.aggregate_id.as_str(),
        event.event_type.as_str(),
        event.event_version.as_str(),
        event.payload.as_str(),
        event.metadata.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        if index > 0 {
            hasher.update([0u8]);
        }
        hasher.update(text.as_bytes());
    }
    hasher.finalize().into()
}

/// Folds event hashes, in log order, onto the previous seal's hash.
#[derive(Clone)]
pub struct SealHasher {
    hasher: Sha256,
    events: i64,
}

impl SealHasher {
    pub fn new(prev_seal_hash: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(prev_seal_hash);
        Self { hasher, events: 0 }
    }

    pub fn add(&mut self, event_hash: &[u8]) {
        self.hasher.update(event_hash);
        self.events += 1;
    }

    pub fn events(&self) -> i64 {
        self.events
    }

    pub fn finish(self) -> [u8; HASH_BYTES] {
        self.hasher.finalize().into()
    }
}
