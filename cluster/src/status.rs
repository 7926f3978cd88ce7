//! What `stockgrid cluster status` reports: the grid as its store holds it.
//!
//! A tool reading the store cannot watch heartbeats move for a lease as nodes do, so it judges
//! a member by the wall-clock time of its last renewal (`renewed_at_ms`): live if active or
//! leaving and renewed within the lease. Clocks of different machines may disagree by a few
//! seconds: the report is for people, and never decides anything.

use serde::Serialize;

use crate::records::{GridTable, MemberState};

/// The grid as a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GridStatus {
    /// The cluster's name.
    pub cluster: String,
    /// Partitions of the store.
    pub partitions: usize,
    /// Every member, by node id.
    pub members: Vec<MemberStatus>,
    /// Per partition: its owner (`None`: released or never claimed) and epoch.
    pub owners: Vec<PartitionStatus>,
    /// Partitions whose owner is not a live member (or that have none).
    pub without_live_owner: Vec<u16>,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberStatus {
    /// Its node id.
    pub node_id: String,
    /// Its address.
    pub address: String,
    /// Its region.
    pub region: String,
    /// `active`, `leaving` or `expired`.
    pub state: &'static str,
    /// Its incarnation.
    pub incarnation: u64,
    /// Renewals so far.
    pub heartbeat: u64,
    /// Milliseconds since its last renewal, by the reader's wall clock.
    pub heartbeat_age_ms: i64,
    /// Whether it counts as live (see the module documentation).
    pub live: bool,
    /// Partitions it owns.
    pub partitions: usize,
    /// Lowest and highest epoch among them (0 when none).
    pub epochs: (u64, u64),
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// Its number.
    pub partition: u16,
    /// Its owner's node id.
    pub owner: Option<String>,
    /// Its epoch.
    pub epoch: u64,
}

impl GridStatus {
    /// The report of `table`, read at wall time `now_ms`, with members live if renewed
    /// within `lease_ms`.
    pub fn of(cluster: &str, table: &GridTable, now_ms: i64, lease_ms: i64) -> Self {
        let mut members: Vec<MemberStatus> = table
            .members
            .iter()
            .map(|member| {
                let record = &member.record;
                let age = now_ms.saturating_sub(record.renewed_at_ms);
                MemberStatus {
                    node_id: record.node_id.clone(),
                    address: record.address.clone(),
                    region: record.region.clone(),
                    state: match record.state {
                        MemberState::Active => "active",
                        MemberState::Leaving => "leaving",
                        MemberState::Expired => "expired",
                    },
                    incarnation: record.incarnation,
                    heartbeat: record.heartbeat,
                    heartbeat_age_ms: age,
                    live: record.state != MemberState::Expired && age <= lease_ms,
                    partitions: 0,
                    epochs: (0, 0),
                }
            })
            .collect();
        let mut owners = Vec::with_capacity(table.owners.len());
        let mut without_live_owner = Vec::new();
        for (partition, stored) in table.owners.iter().enumerate() {
            let partition = partition as u16;
            let record = stored.as_ref().map(|stored| &stored.record);
            let owner = record.and_then(|record| record.owner.as_ref());
            let epoch = record.map_or(0, |record| record.epoch);
            let member = owner.and_then(|owner| {
                let index = table
                    .members
                    .iter()
                    .position(|m| m.record.node_id == owner.node_id)?;
                (table.members[index].record.incarnation == owner.incarnation).then_some(index)
            });
            match member {
                Some(index) => {
                    let status = &mut members[index];
                    status.epochs = if status.partitions == 0 {
                        (epoch, epoch)
                    } else {
                        (status.epochs.0.min(epoch), status.epochs.1.max(epoch))
                    };
                    status.partitions += 1;
                    if !status.live {
                        without_live_owner.push(partition);
                    }
                }
                None => without_live_owner.push(partition),
            }
            owners.push(PartitionStatus {
                partition,
                owner: owner.map(|owner| owner.node_id.clone()),
                epoch,
            });
        }
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Self {
            cluster: cluster.to_owned(),
            partitions: table.owners.len(),
            members,
            owners,
            without_live_owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{MemberRecord, Owner, OwnerRecord, StoredMember, StoredOwner, encode};

    fn member(node_id: &str, state: MemberState, renewed_at_ms: i64) -> StoredMember {
        let record = MemberRecord {
            node_id: node_id.to_owned(),
            incarnation: 1,
            address: format!("{node_id}:1"),
            region: "east".to_owned(),
            heartbeat: 9,
            state,
            renewed_at_ms,
        };
        StoredMember {
            bytes: encode(&record),
            record,
        }
    }

    fn owned(node_id: &str, epoch: u64) -> Option<StoredOwner> {
        let record = OwnerRecord {
            owner: Some(Owner {
                node_id: node_id.to_owned(),
                incarnation: 1,
            }),
            epoch,
        };
        Some(StoredOwner {
            bytes: encode(&record),
            record,
        })
    }

    #[test]
    fn partitions_of_dead_or_missing_owners_are_listed() {
        let table = GridTable {
            members: vec![
                member("a", MemberState::Active, 10_000),
                member("b", MemberState::Active, 1_000),
            ],
            owners: vec![
                owned("a", 3),
                owned("a", 5),
                owned("b", 2),
                None,
                owned("gone", 1),
            ],
        };
        let status = GridStatus::of("test", &table, 11_000, 6_000);
        let a = &status.members[0];
        assert!(a.live && a.partitions == 2 && a.epochs == (3, 5), "{a:?}");
        let b = &status.members[1];
        assert!(!b.live && b.heartbeat_age_ms == 10_000, "{b:?}");
        assert_eq!(status.without_live_owner, vec![2, 3, 4]);
        assert_eq!(status.owners[1].owner.as_deref(), Some("a"));
    }
}
