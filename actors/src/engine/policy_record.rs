//! The decision policy's record in the store: one for the whole grid, versioned. Changes are
//! made to the record (read, change, write conditioned on what was read; again when another
//! node changed it meanwhile) and applied from it; every node reads it at start and every
//! second (`serve`), so that the switches in force do not depend on which node answers and
//! survive restarts and failovers. Drift fallbacks a node measures are written to it too.

use stockgrid_storage::offload::offload;
use stockgrid_storage::{Condition, StoreError, WriteBatch};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::keys::policy_key;
use crate::persist::{decode, encode};
use crate::policy::PolicyRecord;

/// Tries of a change whose record another node changed meanwhile.
const CHANGE_ATTEMPTS: usize = 5;

impl Engine {
    /// The grid's policy record and its bytes (`None`: never written).
    async fn load_policy(&self) -> Result<Option<(PolicyRecord, Vec<u8>)>, EngineError> {
        let loaded = offload(self.store(), |store| store.get(&policy_key())).await?;
        match loaded {
            None => Ok(None),
            Some(bytes) => {
                let record = decode("decision policy", &policy_key(), &bytes)?;
                Ok(Some((record, bytes)))
            }
        }
    }

    /// Applies the grid's policy record if it is newer than the one in force, after writing
    /// the drift fallbacks this node measured since the last call; answers the version in
    /// force.
    pub async fn sync_policy(&self) -> Result<u64, EngineError> {
        let drifted = self.decisions().take_pending_drift();
        if !drifted.is_empty() {
            let regions: Vec<String> = drifted.into_iter().collect();
            let changed = self
                .change_policy(|record| {
                    record.add_drifted(regions.iter().cloned());
                    true
                })
                .await;
            return match changed {
                Ok(record) => Ok(record.map_or(0, |record| record.version)),
                Err(error) => {
                    // Kept in force here; written at a later call.
                    self.decisions().restore_pending_drift(regions);
                    Err(error)
                }
            };
        }
        if let Some((record, _)) = self.load_policy().await? {
            self.decisions().apply_policy_record(&record);
        }
        Ok(self.decisions().policy_version())
    }

    /// Changes the grid's policy record with `change` (which answers false to refuse:
    /// nothing is written, `None` is answered) and applies the result on this node.
    pub async fn change_policy(
        &self,
        change: impl Fn(&mut PolicyRecord) -> bool,
    ) -> Result<Option<PolicyRecord>, EngineError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let loaded = self.load_policy().await?;
            let (mut record, condition) = match loaded {
                Some((record, bytes)) => (record, Condition::Equals(policy_key(), bytes)),
                None => (PolicyRecord::default(), Condition::Absent(policy_key())),
            };
            if !change(&mut record) {
                return Ok(None);
            }
            record.version += 1;
            let mut batch = WriteBatch::new();
            batch.require(condition);
            batch.put(policy_key(), encode(&record));
            match self.commit_batch(batch).await {
                Ok(()) => {
                    self.decisions().apply_policy_record(&record);
                    tracing::warn!(
                        version = record.version,
                        rules_surfaces = ?record.rules_surfaces,
                        rules_regions = ?record.rules_regions,
                        drifted_regions = ?record.drifted_regions,
                        "decision policy changed"
                    );
                    return Ok(Some(record));
                }
                Err(EngineError::Store(StoreError::ConditionFailed { key }))
                    if key == policy_key() => {}
                Err(error) => return Err(error),
            }
        }
        Err(EngineError::Store(StoreError::Unavailable {
            context: "change the decision policy",
            message: format!(
                "the record changed {CHANGE_ATTEMPTS} times while this change read it"
            ),
        }))
    }
}
