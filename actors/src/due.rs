//! When each partition's expiry and deadline indexes next have something due, kept in memory
//! so that a maintenance pass or the reservation reaper reads only the partitions with work
//! (a scan of every one of 4,096 partitions each second would cost more than the work).
//!
//! The times start from one look at each partition's first index entry when the engine
//! starts, are lowered by every commit that adds an index entry ([`DueTimes::note`], after
//! the commit is durable), and are raised once a partition's due entries are handled and
//! their deletion committed ([`DueTimes::settle`]: a compare-and-swap from the value the scan
//! started from, then a second look at the store, so an entry noted while the swap ran is
//! found by that look). An entry that is never noted (a commit whose caller went away before
//! it was durable, or one noted before it was durable: sampled decision records) is found by
//! the refresh every [`FULL_SWEEP_EVERY`]-th call of [`DueTimes::due`] makes of every
//! partition's first entry: it is handled late, never lost.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use std::sync::Arc;
use stockgrid_model::partition::Partition;
use stockgrid_model::time::Timestamp;

use stockgrid_storage::{
    CommitTicket, GroupCommitter, KeyValue, Operation, Store, StoreError, WriteBatch,
};

use crate::error::EngineError;
use crate::keys::{self, IndexFamily};
use crate::ownership::Ownership;

/// Calls of [`DueTimes::due`] between two sweeps of every partition.
pub const FULL_SWEEP_EVERY: u64 = 64;

/// Nothing known to be due.
const NEVER: i64 = i64::MAX;

/// The earliest due time of each partition's expiry index and deadline index.
#[derive(Debug)]
pub struct DueTimes {
    expiry: Box<[AtomicI64]>,
    deadline: Box<[AtomicI64]>,
    calls: [AtomicU64; 2],
    /// Only the partitions this node answers for are read and reported.
    ownership: Ownership,
}

/// A partition whose index has something due, and the time the caller saw (what
/// [`DueTimes::settle`] swaps from).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DuePartition {
    /// The partition.
    pub partition: Partition,
    /// Its earliest due time as read.
    pub observed: i64,
}

impl DueTimes {
    /// Reads the first entry of each owned partition's two indexes (every partition's on a
    /// single node; a grid node reads a partition's when it is granted,
    /// [`DueTimes::refresh_partition`]).
    pub fn load(store: &dyn Store, ownership: Ownership) -> Result<Self, StoreError> {
        let times = Self {
            expiry: keys::partitions().map(|_| AtomicI64::new(NEVER)).collect(),
            deadline: keys::partitions().map(|_| AtomicI64::new(NEVER)).collect(),
            calls: [AtomicU64::new(0), AtomicU64::new(0)],
            ownership,
        };
        for family in [IndexFamily::Expiry, IndexFamily::Deadline] {
            times.refresh(store, family)?;
        }
        Ok(times)
    }

    /// Lowers every owned partition's time of `family` to its first entry in the store.
    fn refresh(&self, store: &dyn Store, family: IndexFamily) -> Result<(), StoreError> {
        for partition in keys::partitions() {
            if self.ownership.epoch(partition).is_some() {
                self.refresh_one(store, family, partition)?;
            }
        }
        Ok(())
    }

    fn refresh_one(
        &self,
        store: &dyn Store,
        family: IndexFamily,
        partition: Partition,
    ) -> Result<(), StoreError> {
        if let Some(first) = first_due(store, family, partition, Timestamp(i64::MIN))? {
            self.slot(family, partition)
                .fetch_min(first.0, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Reads `partition`'s two indexes again (it was just granted: another node may have
    /// added entries since this one last owned it).
    pub fn refresh_partition(
        &self,
        store: &dyn Store,
        partition: Partition,
    ) -> Result<(), StoreError> {
        for family in [IndexFamily::Expiry, IndexFamily::Deadline] {
            self.refresh_one(store, family, partition)?;
        }
        Ok(())
    }

    fn slot(&self, family: IndexFamily, partition: Partition) -> &AtomicI64 {
        let slots = match family {
            IndexFamily::Expiry => &self.expiry,
            IndexFamily::Deadline => &self.deadline,
        };
        &slots[usize::from(partition)]
    }

    /// The index entries a batch adds (to [`DueTimes::note`] once it is durable).
    pub fn entries_of(batch: &WriteBatch) -> Vec<(IndexFamily, Partition, Timestamp)> {
        let mut entries: Vec<(IndexFamily, Partition, Timestamp)> = batch
            .operations
            .iter()
            .filter_map(|operation| match operation {
                Operation::Put { key, .. } => keys::index_entry(key),
                _ => None,
            })
            .collect();
        entries.sort_unstable_by_key(|&(family, partition, time)| (family, partition, time));
        entries.dedup_by_key(|&mut (family, partition, _)| (family, partition));
        entries
    }

    /// Index entries were committed: their partitions have something due at these times.
    pub fn note(&self, entries: &[(IndexFamily, Partition, Timestamp)]) {
        for &(family, partition, time) in entries {
            self.slot(family, partition)
                .fetch_min(time.0, Ordering::AcqRel);
        }
    }

    /// The partitions of `family` with something due at `now`. Every
    /// [`FULL_SWEEP_EVERY`]-th call first refreshes every partition's time from the store.
    pub fn due(
        &self,
        store: &dyn Store,
        family: IndexFamily,
        now: Timestamp,
    ) -> Result<Vec<DuePartition>, StoreError> {
        let calls = self.calls[family as usize].fetch_add(1, Ordering::Relaxed);
        if calls % FULL_SWEEP_EVERY == FULL_SWEEP_EVERY - 1 {
            self.refresh(store, family)?;
        }
        let before = family.due_before(now).0;
        Ok(keys::partitions()
            .filter_map(|partition| {
                let observed = self.slot(family, partition).load(Ordering::Acquire);
                (observed < before && self.ownership.serves(partition)).then_some(DuePartition {
                    partition,
                    observed,
                })
            })
            .collect())
    }

    /// The entries of `family` due at `now`, at most `limit`: partition by partition, oldest
    /// first within each, from the partitions with work; and the partitions whose due entries
    /// are all among them (to [`DueTimes::settle`] once they are handled).
    pub fn due_entries(
        &self,
        store: &dyn Store,
        family: IndexFamily,
        now: Timestamp,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, Vec<DuePartition>), StoreError> {
        let mut entries = Vec::new();
        let mut exhausted = Vec::new();
        for due in self.due(store, family, now)? {
            if entries.len() >= limit {
                break;
            }
            let (start, end) = keys::index_due(family, due.partition, now);
            entries.extend(store.scan(&start, &end, limit - entries.len())?);
            if entries.len() < limit {
                exhausted.push(due);
            }
        }
        Ok((entries, exhausted))
    }

    /// Every entry of `due` due at `now` was handled and its deletion committed: the
    /// partition's next due time is its first entry from then on (read from the store),
    /// unless a commit lowered it since.
    pub fn settle(
        &self,
        store: &dyn Store,
        family: IndexFamily,
        due: DuePartition,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let from = family.due_before(now);
        let next = first_due(store, family, due.partition, from)?;
        let slot = self.slot(family, due.partition);
        let swapped = slot
            .compare_exchange(
                due.observed,
                next.map_or(NEVER, |t| t.0),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if swapped {
            // A note between the read above and the swap was overwritten; its entry is
            // durable before it is noted, so a second read finds it.
            if let Some(again) = first_due(store, family, due.partition, from)? {
                slot.fetch_min(again.0, Ordering::AcqRel);
            }
        }
        Ok(())
    }
}

/// A group committer that tells the due times about the index entries it made durable: every
/// write of the engine and its shards goes through one.
#[derive(Clone, Debug)]
pub struct Committer {
    group: GroupCommitter,
    due_times: Arc<DueTimes>,
    ownership: Ownership,
}

impl Committer {
    /// Commits through `group`, noting index entries in `due_times` and fencing every batch
    /// with `ownership`.
    pub fn new(group: GroupCommitter, due_times: Arc<DueTimes>, ownership: Ownership) -> Self {
        Self {
            group,
            due_times,
            ownership,
        }
    }

    /// Commits `batch` durably (merged into a group commit), conditioned on this node still
    /// owning every partition it touches: [`EngineError::NotOwner`] if it does not, or lost
    /// one before the batch landed (nothing of it was written).
    pub async fn commit(&self, mut batch: WriteBatch) -> Result<(), EngineError> {
        let fenced_from = batch.conditions.len();
        self.ownership.fence(&mut batch)?;
        // The fences just added, to tell which grant a refusal was about.
        let fences: Vec<(u16, Vec<u8>)> = batch.conditions[fenced_from..]
            .iter()
            .filter_map(|condition| match condition {
                stockgrid_storage::Condition::Equals(key, record) => {
                    Some((keys::owner_key_partition(key)?, record.clone()))
                }
                stockgrid_storage::Condition::Absent(_) => None,
            })
            .collect();
        let entries = DueTimes::entries_of(&batch);
        match self.group.submit(batch).await.wait().await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed { key }) => {
                let fenced_on = keys::owner_key_partition(&key)
                    .and_then(|partition| fences.iter().find(|(p, _)| *p == partition))
                    .map(|(_, record)| record.as_slice());
                return Err(match self.ownership.fenced_out(&key, fenced_on) {
                    Some(partition) => EngineError::NotOwner { partition },
                    None => StoreError::ConditionFailed { key }.into(),
                });
            }
            Err(error) => return Err(error.into()),
        }
        self.due_times.note(&entries);
        Ok(())
    }

    /// Queues `batch` without waiting for it to be durable. Its index entries are noted now;
    /// should a scan settle the partition before the batch lands, the entries are found by
    /// the next refresh ([`FULL_SWEEP_EVERY`]).
    pub async fn submit(&self, mut batch: WriteBatch) -> CommitTicket {
        if let Err(refused) = self.ownership.fence(&mut batch) {
            return CommitTicket::failed(StoreError::ConditionFailed {
                key: keys::owner_key(refused.partition),
            });
        }
        let entries = DueTimes::entries_of(&batch);
        self.due_times.note(&entries);
        self.group.submit(batch).await
    }

    /// Stops the group committer after what it holds.
    pub fn shutdown(self) {
        self.group.shutdown();
    }
}

/// The due time of the first entry of `partition`'s `family` index at or after `from`.
fn first_due(
    store: &dyn Store,
    family: IndexFamily,
    partition: Partition,
    from: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let (start, end) = keys::index_range(family, partition, from);
    Ok(store
        .scan(&start, &end, 1)?
        .first()
        .and_then(|(key, _)| keys::index_entry(key))
        .map(|(_, _, time)| time))
}

#[cfg(test)]
mod tests {
    use stockgrid_model::domain::PairKey;
    use stockgrid_storage::MemoryStore;

    use super::*;

    #[test]
    fn only_partitions_with_work_are_due_and_a_lowering_is_never_lost() {
        let store = MemoryStore::new();
        let pair = PairKey::new(42, 7);
        let partition = keys::partition_of(pair);
        let mut batch = WriteBatch::new();
        batch.put(
            keys::deadline_key(Timestamp(100), "res-1", pair),
            Vec::new(),
        );
        store.commit(batch).expect("commit");
        let times = DueTimes::load(&store, Ownership::single()).expect("load");
        let due_at = |now: i64| {
            times
                .due(&store, IndexFamily::Deadline, Timestamp(now))
                .expect("due")
        };
        assert!(due_at(99).is_empty());
        let due = due_at(100);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].partition, partition);

        // A commit lowers the time while the scan of `due` runs: the settle keeps it.
        let mut batch = WriteBatch::new();
        batch.put(keys::deadline_key(Timestamp(50), "res-2", pair), Vec::new());
        let entries = DueTimes::entries_of(&batch);
        store.commit(batch).expect("commit");
        times.note(&entries);
        times
            .settle(&store, IndexFamily::Deadline, due[0], Timestamp(100))
            .expect("settle");
        assert_eq!(due_at(60).len(), 1);

        // A note the swap overwrites (its entry durable, not yet due): the second read of
        // `settle` finds it.
        let later = DuePartition {
            partition,
            observed: 50,
        };
        let mut batch = WriteBatch::new();
        batch.put(
            keys::deadline_key(Timestamp(300), "res-3", pair),
            Vec::new(),
        );
        store.commit(batch).expect("commit");
        let mut batch = WriteBatch::new();
        batch.delete(keys::deadline_key(Timestamp(50), "res-2", pair));
        batch.delete(keys::deadline_key(Timestamp(100), "res-1", pair));
        store.commit(batch).expect("commit");
        times
            .settle(&store, IndexFamily::Deadline, later, Timestamp(200))
            .expect("settle");
        assert!(due_at(299).is_empty());
        assert_eq!(due_at(300).len(), 1);
    }

    #[test]
    fn an_entry_never_noted_is_found_by_the_refresh() {
        let store = MemoryStore::new();
        let times = DueTimes::load(&store, Ownership::single()).expect("load");
        let pair = PairKey::new(7, 3);
        let mut batch = WriteBatch::new();
        batch.put(
            keys::expiry_key(Timestamp(10), &keys::snapshot_key(pair)),
            Vec::new(),
        );
        store.commit(batch).expect("commit"); // Not through a committer: never noted.
        let found: Vec<usize> = (0..FULL_SWEEP_EVERY)
            .map(|_| {
                times
                    .due(&store, IndexFamily::Expiry, Timestamp(20))
                    .expect("due")
                    .len()
            })
            .collect();
        assert_eq!(
            found[..FULL_SWEEP_EVERY as usize - 1].iter().sum::<usize>(),
            0
        );
        assert_eq!(found.last(), Some(&1));
    }
}
