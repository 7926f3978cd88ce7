//! The engine's configuration, with the defaults DESIGN.md names.

use serde::{Deserialize, Serialize};

use crate::decision::SafetyStock;
use crate::ledger::{FOLD_MARGIN_MS, LedgerConfig};
use crate::time::{HOUR_MS, MINUTE_MS};

/// The longest lateness bound accepted (30 days).
pub const MAX_LATENESS_BOUND_MS: i64 = 30 * 24 * HOUR_MS;

/// Everything the engine needs to know beyond its store and clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Shard actors; pairs are placed on them by a stable hash.
    pub shard_count: usize,
    /// Messages that may wait in one shard's mailbox before senders wait (back-pressure).
    pub mailbox_capacity: usize,
    /// The ledger's rules.
    pub ledger: LedgerConfig,
    /// An entity writes a snapshot after this many log records.
    pub snapshot_every_records: u64,
    /// An entity untouched for this long is passivated (snapshot, then out of memory).
    pub passivate_after_ms: i64,
    /// Log records covered by a snapshot are kept this long, then compacted away. At least
    /// the lateness bound plus the skew bound plus [`FOLD_MARGIN_MS`]: a late anchor reads the
    /// deltas it must apply on top of it from the log. It is also how far back an audit
    /// replay of this engine's decisions reaches: compaction starts the log at the newest
    /// checkpoint older than this, with the history such an anchor needs before it.
    pub log_retention_ms: i64,
    /// Quarantined events stay visible this long.
    pub quarantine_retention_ms: i64,
    /// Recent identities kept in memory in front of the store.
    pub identity_tail_capacity: usize,
    /// Most events one `ingest` call may carry.
    pub max_events_per_ingest: usize,
    /// Units held back from promises and reservations, per surface.
    pub safety_stock: SafetyStock,
    /// How long a PENDING reservation holds when the client names no TTL.
    pub reservation_ttl_ms: i64,
    /// How long a COMMITTED reservation holds when the client names no pickup window.
    pub pickup_window_ms: i64,
    /// Threads of a runtime of their own for the shards, run at a lower priority (nice +10)
    /// than the callers' threads so that lookups keep the CPU while ingest runs flat out; 0:
    /// the shards run on the caller's runtime.
    pub shard_threads: usize,
    /// Test hook: a shard panics while handling the event with this id, so supervision can
    /// be tested for real. Not read from any file or flag; `None` outside tests.
    #[serde(skip)]
    pub panic_on_event_id: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let ledger = LedgerConfig::default();
        Self {
            shard_count: 8,
            mailbox_capacity: 64,
            log_retention_ms: ledger.lateness_bound_ms + ledger.future_skew_ms + FOLD_MARGIN_MS,
            ledger,
            snapshot_every_records: 64,
            passivate_after_ms: 30 * MINUTE_MS,
            quarantine_retention_ms: 7 * 24 * HOUR_MS,
            identity_tail_capacity: 1 << 20,
            max_events_per_ingest: 10_000,
            safety_stock: SafetyStock::default(),
            reservation_ttl_ms: 15 * MINUTE_MS,
            pickup_window_ms: 48 * HOUR_MS,
            shard_threads: 0,
            panic_on_event_id: None,
        }
    }
}

impl EngineConfig {
    /// How long an identity must be remembered after its event time: past it, any repeat
    /// is quarantined as late before dedup is consulted.
    pub fn identity_retention_ms(&self) -> i64 {
        self.ledger.lateness_bound_ms + self.ledger.future_skew_ms + FOLD_MARGIN_MS
    }

    /// Checks the values make sense, naming the first that does not.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("shard_count", self.shard_count as i64),
            ("mailbox_capacity", self.mailbox_capacity as i64),
            ("snapshot_every_records", self.snapshot_every_records as i64),
            ("passivate_after_ms", self.passivate_after_ms),
            ("lateness_bound_ms", self.ledger.lateness_bound_ms),
            ("future_skew_ms", self.ledger.future_skew_ms),
            ("identity_tail_capacity", self.identity_tail_capacity as i64),
            ("max_events_per_ingest", self.max_events_per_ingest as i64),
            ("reservation_ttl_ms", self.reservation_ttl_ms),
            ("pickup_window_ms", self.pickup_window_ms),
        ];
        for (name, value) in positive {
            if value <= 0 {
                return Err(format!("{name} must be positive, got {value}"));
            }
        }
        if self.shard_count > 4096 {
            return Err(format!(
                "shard_count must be at most 4096, got {}",
                self.shard_count
            ));
        }
        if self.ledger.lateness_bound_ms > MAX_LATENESS_BOUND_MS {
            return Err(format!(
                "lateness_bound_ms must be at most {MAX_LATENESS_BOUND_MS} (30 days), got {}",
                self.ledger.lateness_bound_ms
            ));
        }
        if self.log_retention_ms < self.identity_retention_ms() {
            return Err(format!(
                "log_retention_ms must be at least the lateness bound plus the skew bound plus {FOLD_MARGIN_MS} ms ({}), got {}",
                self.identity_retention_ms(),
                self.log_retention_ms
            ));
        }
        if self.quarantine_retention_ms < 0 {
            return Err("quarantine_retention_ms must not be negative".to_owned());
        }
        Ok(())
    }
}
