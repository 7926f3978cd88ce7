//! The membership and ownership transactions, each one atomic batch with conditions in the
//! shared store (DESIGN.md "Cluster": the store does ownership, no home-made consensus).
//!
//! - **join**: checks (or creates) the cluster's record, writes the member record of a new
//!   incarnation (the previous one's renewals fail from then on).
//! - **renew**: raises the heartbeat, conditioned on the record being the one last written;
//!   a failed condition means another node expired this one (or a newer incarnation
//!   replaced it): it is expelled and must drop everything and join again.
//! - **expire**: declares a member dead, conditioned on its record being the one seen standing
//!   still for a lease; its renewal then fails.
//! - **claim**: takes partitions, conditioned on each partition's record being the one read
//!   (or absent), raising each epoch by one. The claimer claims only while its lease is
//!   valid; should it have been expired meanwhile, its claim is of no use to it (its lease
//!   has run out, and its owner record, naming an expired member, is claimable at once).
//! - **release**: gives partitions up (a hand-off), conditioned on still owning them; the epoch
//!   stays, and the next owner's claim raises it.
//! - **leave**: removes the member record once everything is released.

use stockgrid_actors::keys;
use stockgrid_model::partition::Partition;
use stockgrid_storage::{Condition, Store, StoreError, WriteBatch};

use crate::records::{
    ClusterRecord, MemberRecord, MemberState, Owner, OwnerRecord, StoredMember, StoredOwner,
    decode, encode,
};

/// Partitions claimed or released in one transaction, at most.
pub const MAX_PARTITIONS_PER_TRANSACTION: usize = 256;

/// Why a transaction of the protocol did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The store failed (nothing was written; try again later).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The store belongs to another cluster.
    #[error(
        "the store belongs to cluster {found:?}, not {expected:?}: start the node with --cluster {found}, or point it at another store"
    )]
    WrongCluster {
        /// The name asked for.
        expected: String,
        /// The name in the store.
        found: String,
    },
    /// This node's member record changed under it: another node expired it, or a newer
    /// incarnation of the same node id replaced it.
    #[error("this node was expelled from the cluster (its member record changed)")]
    Expelled,
    /// A partition's record changed since it was read (another node claimed or released it).
    #[error("partition {0}'s ownership changed since it was read")]
    Raced(Partition),
    /// A record did not decode.
    #[error(transparent)]
    Undecodable(#[from] crate::records::Undecodable),
}

/// Joins `cluster` as `record` (heartbeat 0, active), creating the cluster's record if the
/// store has none.
pub fn join(
    store: &dyn Store,
    cluster: &str,
    record: MemberRecord,
) -> Result<StoredMember, ProtocolError> {
    let cluster_key = keys::cluster_key();
    let mut batch = WriteBatch::new();
    match store.get(&cluster_key)? {
        Some(bytes) => {
            let found: ClusterRecord = decode("cluster", &cluster_key, &bytes)?;
            if found.name != cluster {
                return Err(ProtocolError::WrongCluster {
                    expected: cluster.to_owned(),
                    found: found.name,
                });
            }
            batch.require(Condition::Equals(cluster_key, bytes));
        }
        None => {
            batch.require(Condition::Absent(cluster_key.clone()));
            batch.put(
                cluster_key,
                encode(&ClusterRecord {
                    name: cluster.to_owned(),
                }),
            );
        }
    }
    let bytes = encode(&record);
    batch.put(keys::member_key(&record.node_id), bytes.clone());
    match store.commit(batch) {
        Ok(()) => Ok(StoredMember { record, bytes }),
        // Another node created the cluster's record meanwhile: read it again.
        Err(StoreError::ConditionFailed { .. }) => {
            Err(ProtocolError::Store(StoreError::Unavailable {
                context: "join cluster",
                message: "the cluster's record changed while joining; try again".to_owned(),
            }))
        }
        Err(error) => Err(error.into()),
    }
}

/// Renews `current` (this node's record as last written): heartbeat + 1, in `state`, at wall
/// time `wall_ms`.
pub fn renew(
    store: &dyn Store,
    current: &StoredMember,
    state: MemberState,
    wall_ms: i64,
) -> Result<StoredMember, ProtocolError> {
    let record = MemberRecord {
        heartbeat: current.record.heartbeat + 1,
        state,
        renewed_at_ms: wall_ms,
        ..current.record.clone()
    };
    let bytes = encode(&record);
    let key = keys::member_key(&record.node_id);
    let mut batch = WriteBatch::new();
    batch
        .require(Condition::Equals(key.clone(), current.bytes.clone()))
        .put(key, bytes.clone());
    match store.commit(batch) {
        Ok(()) => Ok(StoredMember { record, bytes }),
        Err(StoreError::ConditionFailed { .. }) => Err(ProtocolError::Expelled),
        Err(error) => Err(error.into()),
    }
}

/// Declares `seen` dead: it stood still for a lease. `false` if it moved meanwhile.
pub fn expire(store: &dyn Store, seen: &StoredMember) -> Result<bool, ProtocolError> {
    let record = MemberRecord {
        state: MemberState::Expired,
        ..seen.record.clone()
    };
    let key = keys::member_key(&record.node_id);
    let mut batch = WriteBatch::new();
    batch
        .require(Condition::Equals(key.clone(), seen.bytes.clone()))
        .put(key, encode(&record));
    match store.commit(batch) {
        Ok(()) => Ok(true),
        Err(StoreError::ConditionFailed { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Claims `partitions` for `me` (the owner it names), each from the record read (`None`:
/// never claimed); answers each partition's new record. All or none.
pub fn claim(
    store: &dyn Store,
    me: &StoredMember,
    partitions: &[(Partition, Option<StoredOwner>)],
) -> Result<Vec<(Partition, StoredOwner)>, ProtocolError> {
    let mut batch = WriteBatch::new();
    let owner = Owner {
        node_id: me.record.node_id.clone(),
        incarnation: me.record.incarnation,
    };
    let mut claimed = Vec::with_capacity(partitions.len());
    for (partition, previous) in partitions {
        let key = keys::owner_key(*partition);
        let epoch = match previous {
            Some(previous) => {
                batch.require(Condition::Equals(key.clone(), previous.bytes.clone()));
                previous.record.epoch + 1
            }
            None => {
                batch.require(Condition::Absent(key.clone()));
                1
            }
        };
        let record = OwnerRecord {
            owner: Some(owner.clone()),
            epoch,
        };
        let bytes = encode(&record);
        batch.put(key, bytes.clone());
        claimed.push((*partition, StoredOwner { record, bytes }));
    }
    match store.commit(batch) {
        Ok(()) => Ok(claimed),
        Err(StoreError::ConditionFailed { key }) => Err(ProtocolError::Raced(
            keys::owner_key_partition(&key).unwrap_or_default(),
        )),
        Err(error) => Err(error.into()),
    }
}

/// Releases `partitions`, each still owned as `held`: the owner is cleared, the epoch kept.
pub fn release(
    store: &dyn Store,
    partitions: &[(Partition, StoredOwner)],
) -> Result<(), ProtocolError> {
    let mut batch = WriteBatch::new();
    for (partition, held) in partitions {
        let key = keys::owner_key(*partition);
        batch
            .require(Condition::Equals(key.clone(), held.bytes.clone()))
            .put(
                key,
                encode(&OwnerRecord {
                    owner: None,
                    epoch: held.record.epoch,
                }),
            );
    }
    match store.commit(batch) {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed { key }) => Err(ProtocolError::Raced(
            keys::owner_key_partition(&key).unwrap_or_default(),
        )),
        Err(error) => Err(error.into()),
    }
}

/// Removes this node's member record (after releasing everything it owned).
pub fn leave(store: &dyn Store, me: &StoredMember) -> Result<(), ProtocolError> {
    let key = keys::member_key(&me.record.node_id);
    let mut batch = WriteBatch::new();
    batch
        .require(Condition::Equals(key.clone(), me.bytes.clone()))
        .delete(key);
    match store.commit(batch) {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed { .. }) => Err(ProtocolError::Expelled),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use stockgrid_storage::MemoryStore;

    use super::*;

    fn member(node_id: &str, incarnation: u64) -> MemberRecord {
        MemberRecord {
            node_id: node_id.to_owned(),
            incarnation,
            address: "127.0.0.1:1".to_owned(),
            region: "east".to_owned(),
            heartbeat: 0,
            state: MemberState::Active,
            renewed_at_ms: 0,
        }
    }

    #[test]
    fn a_store_belongs_to_one_cluster() {
        let store = MemoryStore::default();
        join(&store, "prod", member("a", 1)).expect("join");
        let error = join(&store, "test", member("b", 1)).expect_err("another cluster");
        assert!(error.to_string().contains("--cluster prod"), "{error}");
    }

    #[test]
    fn an_expired_member_cannot_renew() {
        let store = MemoryStore::default();
        let a = join(&store, "c", member("a", 1)).expect("join");
        let a = renew(&store, &a, MemberState::Active, 1).expect("renew");
        let seen = a.clone();
        assert!(expire(&store, &seen).expect("expire"));
        assert!(matches!(
            renew(&store, &a, MemberState::Active, 2),
            Err(ProtocolError::Expelled)
        ));
    }

    #[test]
    fn claims_raise_the_epoch_and_race_on_the_record_read() {
        let store = MemoryStore::default();
        let a = join(&store, "c", member("a", 1)).expect("join a");
        let b = join(&store, "c", member("b", 1)).expect("join b");
        let first = claim(&store, &a, &[(3, None)]).expect("claim");
        assert_eq!(first[0].1.record.epoch, 1);
        // b read the partition as never claimed: its claim loses the race.
        assert!(matches!(
            claim(&store, &b, &[(3, None)]),
            Err(ProtocolError::Raced(3))
        ));
        release(&store, &first).expect("release");
        let released: OwnerRecord = decode(
            "ownership",
            b"",
            &store
                .get(&keys::owner_key(3))
                .expect("read")
                .expect("record"),
        )
        .expect("decode");
        assert_eq!(released.owner, None);
        assert_eq!(released.epoch, 1);
        let stored = StoredOwner {
            bytes: encode(&released),
            record: released,
        };
        let second = claim(&store, &b, &[(3, Some(stored))]).expect("claim");
        assert_eq!(second[0].1.record.epoch, 2);
        // a's release of what it no longer holds is refused.
        assert!(matches!(
            release(&store, &first),
            Err(ProtocolError::Raced(3))
        ));
    }
}
