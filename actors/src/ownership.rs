//! Which partitions this node answers for, and the fence every durable batch it writes carries
//! (DESIGN.md "Cluster": membership and leases).
//!
//! A single node owns every partition and fences nothing. A node of a grid owns the
//! partitions its cluster layer has claimed in the store: for each, the ownership record it
//! wrote (owner and epoch). Every batch that touches one of its partitions is conditioned on
//! that record being unchanged ([`Ownership::fence`]), so once another node has claimed the
//! partition (bumping the epoch), no batch of this node lands there again: fencing is done by
//! the store, never by timing.
//!
//! Answers need more than fencing, since a read writes nothing: a node answers for a
//! partition only while its **lease** is valid by its own monotonic clock
//! ([`Ownership::serves`]). The cluster layer renews the lease with each heartbeat it gets
//! into the store and sets it to expire a margin before any other node could declare this
//! one dead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use stockgrid_storage::{Condition, Operation, WriteBatch};

use crate::keys;
use stockgrid_model::partition::Partition;

/// The partitions a node answers for. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Ownership {
    /// `None`: a single node, owning everything, fencing nothing.
    grid: Option<Arc<GridOwnership>>,
}

#[derive(Debug)]
struct GridOwnership {
    /// Monotonic origin of the lease time.
    anchor: Instant,
    /// Nanoseconds after `anchor` until which the lease is valid (0: none).
    lease_until: AtomicU64,
    /// Per partition: the epoch owned (0: not owned).
    epochs: Vec<AtomicU64>,
    /// Per partition owned: the ownership record as stored (what batches are conditioned on).
    /// Grants and revocations change it and `epochs` together, under its write lock.
    records: RwLock<Vec<Option<Arc<[u8]>>>>,
    /// Partitions lost by a fenced-out batch, whose entities the engine has yet to drop.
    lost: std::sync::Mutex<Vec<Partition>>,
}

/// Why a batch or a call cannot go to a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotOwner {
    /// The partition.
    pub partition: Partition,
}

impl Ownership {
    /// A single node: every partition, no lease, no fence.
    pub fn single() -> Self {
        Self::default()
    }

    /// A node of a grid of `partitions` partitions, owning none until its cluster layer
    /// grants them.
    pub fn grid(partitions: u16) -> Self {
        Self {
            grid: Some(Arc::new(GridOwnership {
                anchor: Instant::now(),
                lease_until: AtomicU64::new(0),
                epochs: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
                records: RwLock::new(vec![None; usize::from(partitions)]),
                lost: std::sync::Mutex::new(Vec::new()),
            })),
        }
    }

    /// Whether this node is part of a grid (its partitions are granted and fenced).
    pub fn is_grid(&self) -> bool {
        self.grid.is_some()
    }

    /// Whether this node may answer for `partition` now: it owns it and its lease is valid.
    pub fn serves(&self, partition: Partition) -> bool {
        let Some(grid) = &self.grid else {
            return true;
        };
        grid.epoch(partition) != 0 && grid.lease_valid()
    }

    /// The refusal for `partition` if this node may not answer for it now.
    pub fn check(&self, partition: Partition) -> Result<(), NotOwner> {
        if self.serves(partition) {
            Ok(())
        } else {
            Err(NotOwner { partition })
        }
    }

    /// The epoch this node owns `partition` at (`None`: not owned; a single node owns every
    /// partition at epoch 0).
    pub fn epoch(&self, partition: Partition) -> Option<u64> {
        match &self.grid {
            None => Some(0),
            Some(grid) => Some(grid.epoch(partition)).filter(|&epoch| epoch != 0),
        }
    }

    /// The partitions owned, whatever the lease (a single node: none listed).
    pub fn owned(&self) -> Vec<(Partition, u64)> {
        let Some(grid) = &self.grid else {
            return Vec::new();
        };
        grid.epochs
            .iter()
            .enumerate()
            .filter_map(|(partition, epoch)| {
                let epoch = epoch.load(Ordering::Acquire);
                (epoch != 0).then_some((partition as Partition, epoch))
            })
            .collect()
    }

    /// Records that this node owns `partition` at `epoch`, with `record` the ownership
    /// record as stored (epochs start at 1).
    pub fn grant(&self, partition: Partition, epoch: u64, record: Vec<u8>) {
        let Some(grid) = &self.grid else {
            return;
        };
        let index = usize::from(partition);
        if index >= grid.epochs.len() || epoch == 0 {
            return;
        }
        if let Ok(mut records) = grid.records.write() {
            records[index] = Some(record.into());
            grid.epochs[index].store(epoch, Ordering::Release);
        }
    }

    /// Stops answering for `partition` and fencing batches to it: they are refused.
    pub fn revoke(&self, partition: Partition) {
        let Some(grid) = &self.grid else {
            return;
        };
        let index = usize::from(partition);
        if index >= grid.epochs.len() {
            return;
        }
        if let Ok(mut records) = grid.records.write() {
            grid.epochs[index].store(0, Ordering::Release);
            records[index] = None;
        }
    }

    /// Stops answering for `partition` (reads and new work are refused) while its batches
    /// in flight, and a hand-off's snapshots, are still fenced and written.
    pub fn stop_serving(&self, partition: Partition) {
        if let Some(epoch) = self
            .grid
            .as_ref()
            .and_then(|grid| grid.epochs.get(usize::from(partition)))
        {
            epoch.store(0, Ordering::Release);
        }
    }

    /// The ownership record batches to `partition` are conditioned on (`None`: not owned,
    /// or a single node).
    pub fn record(&self, partition: Partition) -> Option<Arc<[u8]>> {
        let grid = self.grid.as_ref()?;
        let records = grid.records.read().ok()?;
        records.get(usize::from(partition))?.clone()
    }

    /// Extends the lease to `until` (by this node's monotonic clock).
    pub fn renew_lease(&self, until: Instant) {
        if let Some(grid) = &self.grid {
            let nanos = until
                .saturating_duration_since(grid.anchor)
                .as_nanos()
                .min(u128::from(u64::MAX)) as u64;
            grid.lease_until.store(nanos.max(1), Ordering::Release);
        }
    }

    /// Ends the lease at once: nothing is answered until it is renewed.
    pub fn drop_lease(&self) {
        if let Some(grid) = &self.grid {
            grid.lease_until.store(0, Ordering::Release);
        }
    }

    /// Whether the lease is valid now (a single node: always).
    pub fn lease_valid(&self) -> bool {
        self.grid.as_ref().is_none_or(|grid| grid.lease_valid())
    }

    /// Adds to `batch` the fence of every partition it touches: the condition that this
    /// node's ownership record is still the one in the store. A batch touching a partition
    /// this node does not own is refused whole.
    pub fn fence(&self, batch: &mut WriteBatch) -> Result<(), NotOwner> {
        let Some(grid) = &self.grid else {
            return Ok(());
        };
        let mut partitions: Vec<Partition> = Vec::new();
        let mut note = |key: &[u8]| {
            if let Some(partition) = keys::key_partition(key)
                && !partitions.contains(&partition)
            {
                partitions.push(partition);
            }
        };
        for operation in &batch.operations {
            match operation {
                Operation::Put { key, .. } | Operation::Delete { key } => note(key),
                Operation::DeleteRange { start, .. } => note(start),
            }
        }
        for condition in &batch.conditions {
            match condition {
                Condition::Absent(key) | Condition::Equals(key, _) => note(key),
            }
        }
        if partitions.is_empty() {
            return Ok(());
        }
        let records = grid.records.read().map_err(|_| NotOwner {
            partition: partitions[0],
        })?;
        let mut fences = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let record = records
                .get(usize::from(partition))
                .and_then(Option::as_ref)
                .ok_or(NotOwner { partition })?;
            fences.push(Condition::Equals(
                keys::owner_key(partition),
                record.to_vec(),
            ));
        }
        drop(records);
        batch.conditions.extend(fences);
        Ok(())
    }

    /// The partition whose fence `key` is (a batch refused on it was fenced out: this node
    /// lost the partition). If the batch was fenced on the record this node still holds
    /// (`fenced_on`, the record the batch carried; `None`: unknown), the node stops answering
    /// for it and notes it for [`Ownership::take_lost`]; a batch fenced on an older grant
    /// leaves a newer one alone.
    pub fn fenced_out(&self, key: &[u8], fenced_on: Option<&[u8]>) -> Option<Partition> {
        let partition = keys::owner_key_partition(key)?;
        let grid = self.grid.as_ref()?;
        let held = self.record(partition);
        let same_grant = match (fenced_on, held.as_deref()) {
            (Some(fenced_on), Some(held)) => fenced_on == held,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if same_grant {
            self.revoke(partition);
            if let Ok(mut lost) = grid.lost.lock() {
                lost.push(partition);
            }
        }
        Some(partition)
    }

    /// The partitions lost by fenced-out batches since the last call, not owned again since:
    /// what the engine must still drop from memory.
    pub fn take_lost(&self) -> Vec<Partition> {
        let Some(grid) = &self.grid else {
            return Vec::new();
        };
        let lost = grid
            .lost
            .lock()
            .map(|mut lost| std::mem::take(&mut *lost))
            .unwrap_or_default();
        lost.into_iter()
            .filter(|&partition| grid.epoch(partition) == 0 && self.record(partition).is_none())
            .collect()
    }
}

impl GridOwnership {
    fn epoch(&self, partition: Partition) -> u64 {
        self.epochs
            .get(usize::from(partition))
            .map_or(0, |epoch| epoch.load(Ordering::Acquire))
    }

    fn lease_valid(&self) -> bool {
        let until = self.lease_until.load(Ordering::Acquire);
        until != 0 && (self.anchor.elapsed().as_nanos() as u64) < until
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::PairKey;

    fn batch_for(pair: PairKey) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(keys::snapshot_key(pair), b"state".to_vec());
        batch.put(keys::location_key(7), b"catalog".to_vec());
        batch
    }

    #[test]
    fn a_single_node_serves_everything_and_fences_nothing() {
        let ownership = Ownership::single();
        let pair = PairKey::new(1, 2);
        assert!(ownership.serves(keys::partition_of(pair)));
        let mut batch = batch_for(pair);
        ownership.fence(&mut batch).expect("no fence needed");
        assert!(batch.conditions.is_empty());
    }

    #[test]
    fn a_grid_node_answers_only_for_granted_partitions_under_a_valid_lease() {
        let ownership = Ownership::grid(keys::SCHEME.count());
        let pair = PairKey::new(1, 2);
        let partition = keys::partition_of(pair);
        let mut batch = batch_for(pair);
        assert_eq!(ownership.fence(&mut batch), Err(NotOwner { partition }));
        ownership.grant(partition, 3, b"me@3".to_vec());
        assert!(!ownership.serves(partition), "no lease yet");
        ownership.renew_lease(Instant::now() + Duration::from_secs(60));
        assert!(ownership.serves(partition));
        assert!(!ownership.serves(partition.wrapping_add(1) % keys::SCHEME.count()));
        ownership.fence(&mut batch).expect("owned");
        // One fence, for the one partition; the cluster-wide key needs none.
        assert_eq!(
            batch.conditions,
            vec![Condition::Equals(
                keys::owner_key(partition),
                b"me@3".to_vec()
            )]
        );
        ownership.renew_lease(Instant::now());
        assert!(!ownership.serves(partition), "the lease lapsed");
        ownership.renew_lease(Instant::now() + Duration::from_secs(60));
        // A batch fenced on an older grant leaves the current one alone.
        assert_eq!(
            ownership.fenced_out(&keys::owner_key(partition), Some(b"me@2")),
            Some(partition)
        );
        assert!(ownership.serves(partition));
        assert_eq!(
            ownership.fenced_out(&keys::owner_key(partition), Some(b"me@3")),
            Some(partition)
        );
        assert_eq!(ownership.take_lost(), vec![partition]);
        assert!(!ownership.serves(partition), "fenced out");
        assert_eq!(ownership.epoch(partition), None);
    }
}
