//! Where a node keeps its decision records: in their pair's partition (with an expiry after
//! the retention period) and what a replay of one from the node's log reports. The records themselves are
//! `stockgrid_model::audit`.

pub use stockgrid_model::audit::*;

use stockgrid_storage::WriteBatch;

use crate::domain::PairKey;
use crate::keys::{decision_key, expiry_key};
use crate::persist::{RebuildBase, encode};
use crate::time::Timestamp;

/// Adds a decision record to a batch (durable with it), expiring `retention_ms` after the
/// decision's time (deleted by a maintenance pass then).
pub fn put_record(batch: &mut WriteBatch, record: &AuditRecord, retention_ms: i64) {
    let key = decision_key(
        PairKey::new(record.sku, record.location),
        &record.decision_id,
    );
    batch.put(
        expiry_key(Timestamp(record.time_ms.saturating_add(retention_ms)), &key),
        Vec::new(),
    );
    batch.put(key, encode(record));
}

/// A decision recomputed from its rebuilt pair (`None`: not rebuilt), where the rebuild
/// started, and the log position it was rebuilt at.
pub(crate) type Recomputed = (Option<AuditRecord>, Option<RebuildBase>, Option<u64>);

/// The outcome of replaying one of a node's decision records from its store.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReplay {
    /// The comparison (no differences: bit-identical).
    pub check: AuditCheck,
    /// Where the rebuild of the pair started (`None`: it could not be rebuilt; the reason
    /// is among the differences).
    pub base: Option<RebuildBase>,
    /// The log position the decision was rebuilt at (`None`: the pair was not known, or
    /// no position matched).
    pub log_position: Option<u64>,
}
