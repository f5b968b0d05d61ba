//! `calmony ledger verify`: recomputes every stream's hash chain and every seal from the
//! stored rows, in Rust, independently of the database's own functions.

use futures::TryStreamExt;
use sqlx::PgPool;

use crate::chain::{event_hash, SealHasher, GENESIS_HASH};
use crate::log::LogCursor;
use crate::record::{RecordedEvent, RECORDED_EVENT_COLUMNS};
use crate::seal::{Seal, SEAL_COLUMNS};
use crate::store::StoreError;

/// Bound on the problems one run collects; the first is what matters.
pub const MAX_PROBLEMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A stream's versions do not run 1, 2, 3, …: an event was deleted (or renumbered).
    VersionGap {
        stream: String,
        expected: i64,
        found: i64,
        position: i64,
    },
    /// The event does not point at the hash of the event before it in its stream.
    BrokenLink {
        stream: String,
        sequence: i64,
        position: i64,
    },
    /// The event's content does not hash to its stored hash: it was altered, or inserted
    /// without the trigger.
    HashMismatch {
        stream: String,
        sequence: i64,
        position: i64,
    },
    /// A seal no longer matches the events of its range, or the seals do not chain.
    SealMismatch { seal_number: i64, reason: String },
}

impl Problem {
    /// Where in the log the problem is, for ordering ("the first bad event").
    fn position(&self) -> i64 {
        match self {
            Problem::VersionGap { position, .. }
            | Problem::BrokenLink { position, .. }
            | Problem::HashMismatch { position, .. } => *position,
            Problem::SealMismatch { .. } => i64::MAX,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::VersionGap {
                stream,
                expected,
                found,
                position,
            } => write!(
                formatter,
                "{stream}: expected version {expected}, found {found} (event at position {position})"
            ),
            Problem::BrokenLink {
                stream,
                sequence,
                position,
            } => write!(
                formatter,
                "{stream} version {sequence} (position {position}): prev_hash does not match the previous event"
            ),
            Problem::HashMismatch {
                stream,
                sequence,
                position,
            } => write!(
                formatter,
                "{stream} version {sequence} (position {position}): content does not match its hash"
            ),
            Problem::SealMismatch {
                seal_number,
                reason,
            } => write!(formatter, "seal {seal_number}: {reason}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub events_checked: u64,
    pub streams_checked: u64,
    pub seals_checked: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.first()
    }

    fn record(&mut self, problem: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
    }
}

/// Checks every event and every seal. `on_progress` is called with the events checked so
/// far, every few thousand.
pub async fn verify_ledger(
    pool: &PgPool,
    mut on_progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    verify_streams(pool, &mut report, &mut on_progress).await?;
    verify_seals(pool, &mut report).await?;
    report.problems.sort_by_key(Problem::position);
    Ok(report)
}

async fn verify_streams(
    pool: &PgPool,
    report: &mut VerifyReport,
    on_progress: &mut impl FnMut(u64),
) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT {RECORDED_EVENT_COLUMNS} FROM events \
         ORDER BY aggregate_type, aggregate_id, sequence"
    );
    let mut rows = sqlx::query_as::<_, RecordedEvent>(&sql).fetch(pool);
    let mut current_stream: Option<(String, String)> = None;
    let mut expected_sequence = 1;
    let mut previous_hash = GENESIS_HASH.to_vec();
    while let Some(event) = rows.try_next().await? {
        let same_stream = current_stream
            .as_ref()
            .is_some_and(|(kind, id)| *kind == event.aggregate_type && *id == event.aggregate_id);
        if !same_stream {
            current_stream = Some((event.aggregate_type.clone(), event.aggregate_id.clone()));
            expected_sequence = 1;
            previous_hash = GENESIS_HASH.to_vec();
            report.streams_checked += 1;
        }
        if event.sequence != expected_sequence {
            report.record(Problem::VersionGap {
                stream: event.stream_name(),
                expected: expected_sequence,
                found: event.sequence,
                position: event.position,
            });
        } else if event.prev_hash != previous_hash {
            report.record(Problem::BrokenLink {
                stream: event.stream_name(),
                sequence: event.sequence,
                position: event.position,
            });
        }
        if event_hash(&event.prev_hash, &event)[..] != event.hash[..] {
            report.record(Problem::HashMismatch {
                stream: event.stream_name(),
                sequence: event.sequence,
                position: event.position,
            });
        }
        expected_sequence = event.sequence + 1;
        previous_hash = event.hash;
        report.events_checked += 1;
        if report.events_checked.is_multiple_of(10_000) {
            on_progress(report.events_checked);
        }
    }
    on_progress(report.events_checked);
    Ok(())
}

async fn verify_seals(pool: &PgPool, report: &mut VerifyReport) -> Result<(), StoreError> {
    let seals: Vec<Seal> = sqlx::query_as(&format!(
        "SELECT {SEAL_COLUMNS} FROM ledger_seals ORDER BY seal_number"
    ))
    .fetch_all(pool)
    .await?;
    let mut expected_from = LogCursor::START;
    let mut expected_prev = GENESIS_HASH.to_vec();
    for (index, seal) in seals.iter().enumerate() {
        report.seals_checked += 1;
        let expected_number = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        if seal.seal_number != expected_number {
            report.record(Problem::SealMismatch {
                seal_number: seal.seal_number,
                reason: format!("expected seal number {expected_number}"),
            });
        }
        if seal.from() != expected_from || seal.prev_hash != expected_prev {
            report.record(Problem::SealMismatch {
                seal_number: seal.seal_number,
                reason: "does not continue the previous seal".to_string(),
            });
        }
        let mut hasher = SealHasher::new(&seal.prev_hash);
        let mut rows = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT hash FROM events \
             WHERE (txid, position) > ($1::text::xid8, $2) \
               AND (txid, position) <= ($3::text::xid8, $4) \
             ORDER BY events.txid, events.position",
        )
        .bind(seal.from_txid)
        .bind(seal.from_position)
        .bind(seal.to_txid)
        .bind(seal.to_position)
        .fetch(pool);
        while let Some(hash) = rows.try_next().await? {
            hasher.add(&hash);
        }
        if hasher.events() != seal.event_count {
            report.record(Problem::SealMismatch {
                seal_number: seal.seal_number,
                reason: format!(
                    "covers {} events now, {} when sealed (an event was deleted or inserted)",
                    hasher.events(),
                    seal.event_count
                ),
            });
        } else if hasher.finish()[..] != seal.hash[..] {
            report.record(Problem::SealMismatch {
                seal_number: seal.seal_number,
                reason: "events in its range no longer hash to the seal".to_string(),
            });
        }
        expected_from = seal.to();
        expected_prev = seal.hash.clone();
    }
    Ok(())
}
