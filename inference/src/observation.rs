//! The observation vocabulary the belief and the per-source claims share: the kinds of absolute
//! observation, and the compact time both store.

use serde::{Deserialize, Serialize};

const EPOCH_2020_MS: i64 = 1_577_836_800_000;

/// Milliseconds since the Unix epoch to whole seconds since 2020-01-01Z (0 = never), the
/// compact time the belief stores (the ledger uses the same).
pub fn compact_seconds(time_ms: i64) -> u32 {
    ((time_ms - EPOCH_2020_MS).div_euclid(1_000)).clamp(1, i64::from(u32::MAX)) as u32
}

/// Compact seconds back to milliseconds since the Unix epoch.
pub fn millis_of(compact: u32) -> i64 {
    EPOCH_2020_MS + i64::from(compact) * 1_000
}

/// The kinds of absolute observation, each with its own error model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObservationKind {
    /// An associate's cycle count.
    Count,
    /// An RFID sweep (under-reads).
    RfidRead,
    /// A warehouse or WMS feed's claim (ages).
    Snapshot,
}
