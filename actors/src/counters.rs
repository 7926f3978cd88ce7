//! Counters of what the engine did since it started, shared by the engine and its shards.

use std::sync::atomic::AtomicU64;

/// Counters of what the engine did since it started.
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Events applied.
    pub applied_events: AtomicU64,
    /// Duplicate arrivals.
    pub duplicate_events: AtomicU64,
    /// Quarantined arrivals.
    pub quarantined_events: AtomicU64,
    /// Arrivals refused with an error (not applied; the caller may retry).
    pub failed_events: AtomicU64,
    /// Picks that settled a reservation's hold.
    pub settled_picks: AtomicU64,
    /// Picks naming a reservation with no active hold at the pair (applied as plain deltas).
    pub unmatched_picks: AtomicU64,
}
