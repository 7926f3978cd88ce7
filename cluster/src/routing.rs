//! The routing table: which member answers for each partition, and where it listens.
//!
//! Every round of a node's membership loop publishes a new table from what it read of the
//! grid (an owner counts only while its member record is the incarnation that claimed, not
//! expired, and moving); the router reads it without waiting, as one `Arc`. A call the
//! owner refused (the partition moved since the last round) refreshes the partitions it
//! names from the store itself, one record each, so a retry goes to the new owner without
//! waiting for the next round. `Catalog.GetRoutingTable` serves the same table to clients
//! that go direct.

use std::sync::{Arc, RwLock};

use stockgrid_actors::keys;
use stockgrid_model::partition::Partition;
use stockgrid_storage::{Store, StoreError};

use crate::records::{self, GridTable, MemberRecord, MemberState, OwnerRecord};

/// A member that owns partitions, as the router calls it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Its node id.
    pub node_id: String,
    /// The address its peers and clients call.
    pub address: String,
    /// Its region.
    pub region: String,
}

/// Per partition, the member that answers for it (if any), and its epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// The members that own something (or may), in node id order.
    pub members: Vec<Route>,
    /// Per partition, the index of its owner in `members` (`None`: no routable owner).
    pub owners: Vec<Option<u32>>,
    /// Per partition, its ownership epoch (0: never claimed).
    pub epochs: Vec<u64>,
    /// Increases with every table a node publishes (refreshes included).
    pub version: u64,
}

impl RoutingTable {
    /// The table of `grid` with `routable` the node ids that may answer now (live, or
    /// leaving but still renewing).
    pub fn from_grid(grid: &GridTable, routable: &[String], version: u64) -> Self {
        let mut members: Vec<Route> = Vec::new();
        let mut incarnations: Vec<u64> = Vec::new();
        for member in &grid.members {
            let record = &member.record;
            if routable.contains(&record.node_id) {
                members.push(route_of(record));
                incarnations.push(record.incarnation);
            }
        }
        let mut owners = Vec::with_capacity(grid.owners.len());
        let mut epochs = Vec::with_capacity(grid.owners.len());
        for stored in &grid.owners {
            let (owner, epoch) = match stored {
                None => (None, 0),
                Some(stored) => {
                    let owner = stored.record.owner.as_ref().and_then(|owner| {
                        members
                            .iter()
                            .zip(&incarnations)
                            .position(|(route, incarnation)| {
                                route.node_id == owner.node_id && *incarnation == owner.incarnation
                            })
                            .map(|index| index as u32)
                    });
                    (owner, stored.record.epoch)
                }
            };
            owners.push(owner);
            epochs.push(epoch);
        }
        Self {
            members,
            owners,
            epochs,
            version,
        }
    }

    /// The member answering for `partition` (`None`: nobody can now).
    pub fn owner(&self, partition: Partition) -> Option<&Route> {
        let index = (*self.owners.get(usize::from(partition))?)?;
        self.members.get(index as usize)
    }

    /// Partitions per member index, for status and clients.
    pub fn partitions_of(&self, member: usize) -> Vec<Partition> {
        self.owners
            .iter()
            .enumerate()
            .filter(|(_, owner)| **owner == Some(member as u32))
            .map(|(partition, _)| partition as Partition)
            .collect()
    }
}

fn route_of(record: &MemberRecord) -> Route {
    Route {
        node_id: record.node_id.clone(),
        address: record.address.clone(),
        region: record.region.clone(),
    }
}

/// Where a node's router reads the table: published by its membership loop, refreshed
/// partition by partition from the store when an owner refuses. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Routes {
    node_id: String,
    table: Arc<RwLock<Arc<RoutingTable>>>,
    store: Arc<dyn Store>,
}

impl Routes {
    /// An empty table for node `node_id`, refreshed from `store`.
    pub fn new(node_id: &str, store: Arc<dyn Store>) -> Self {
        Self {
            node_id: node_id.to_owned(),
            table: Arc::default(),
            store,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The table now (never waits on the loop: the lock is held only to swap an `Arc`).
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table
            .read()
            .map(|table| Arc::clone(&table))
            .unwrap_or_default()
    }

    /// Publishes a table read by the membership loop.
    pub(crate) fn publish(&self, grid: &GridTable, routable: &[String]) {
        if let Ok(mut slot) = self.table.write() {
            let version = slot.version + 1;
            *slot = Arc::new(RoutingTable::from_grid(grid, routable, version));
        }
    }

    /// Reads the ownership of `partitions` from the store (and their owners' member
    /// records), updates the table with them and answers it. Blocking: run it off the async
    /// workers when the store is remote.
    pub fn refresh(&self, partitions: &[Partition]) -> Result<Arc<RoutingTable>, StoreError> {
        let mut found: Vec<(Partition, Option<Route>, u64)> = Vec::with_capacity(partitions.len());
        // A member's record is read once per refresh, however many partitions it owns.
        let mut members: std::collections::HashMap<String, Option<MemberRecord>> =
            std::collections::HashMap::new();
        for &partition in partitions {
            let record: Option<OwnerRecord> = match self.store.get(&keys::owner_key(partition))? {
                None => None,
                Some(bytes) => {
                    records::decode("ownership", &keys::owner_key(partition), &bytes).ok()
                }
            };
            let Some(record) = record else {
                found.push((partition, None, 0));
                continue;
            };
            let route = match &record.owner {
                None => None,
                Some(owner) => {
                    let member = match members.get(&owner.node_id) {
                        Some(member) => member.clone(),
                        None => {
                            let key = keys::member_key(&owner.node_id);
                            let member = self.store.get(&key)?.and_then(|bytes| {
                                records::decode::<MemberRecord>("member", &key, &bytes).ok()
                            });
                            members.insert(owner.node_id.clone(), member.clone());
                            member
                        }
                    };
                    member
                        .filter(|member| {
                            member.incarnation == owner.incarnation
                                && member.state != MemberState::Expired
                        })
                        .map(|member| route_of(&member))
                }
            };
            found.push((partition, route, record.epoch));
        }
        let mut slot = self.table.write().map_err(|_| StoreError::Unavailable {
            context: "refresh routes",
            message: "routing table lock poisoned".to_owned(),
        })?;
        let mut table = RoutingTable::clone(&slot);
        for (partition, route, epoch) in found {
            let index = usize::from(partition);
            if table.owners.len() <= index {
                table.owners.resize(index + 1, None);
                table.epochs.resize(index + 1, 0);
            }
            // A table published meanwhile may be newer than what was read: keep the higher
            // epoch.
            if epoch < table.epochs[index] {
                continue;
            }
            let owner = route.map(|route| {
                match table
                    .members
                    .iter()
                    .position(|m| m.node_id == route.node_id)
                {
                    Some(position) => {
                        table.members[position] = route;
                        position as u32
                    }
                    None => {
                        table.members.push(route);
                        (table.members.len() - 1) as u32
                    }
                }
            });
            table.owners[index] = owner;
            table.epochs[index] = epoch;
        }
        table.version += 1;
        let table = Arc::new(table);
        *slot = Arc::clone(&table);
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Owner, StoredMember, StoredOwner};

    fn member(node_id: &str, incarnation: u64) -> StoredMember {
        StoredMember {
            record: MemberRecord {
                node_id: node_id.to_owned(),
                incarnation,
                address: format!("{node_id}.example:7000"),
                region: "east".to_owned(),
                heartbeat: 1,
                state: MemberState::Active,
                renewed_at_ms: 0,
            },
            bytes: Vec::new(),
        }
    }

    fn owned(node_id: &str, incarnation: u64, epoch: u64) -> Option<StoredOwner> {
        Some(StoredOwner {
            record: OwnerRecord {
                owner: Some(Owner {
                    node_id: node_id.to_owned(),
                    incarnation,
                }),
                epoch,
            },
            bytes: Vec::new(),
        })
    }

    #[test]
    fn an_owner_routes_only_as_the_live_incarnation_that_claimed() {
        let grid = GridTable {
            members: vec![member("a", 1), member("b", 2), member("c", 1)],
            owners: vec![
                owned("a", 1, 3),
                // b claimed as incarnation 1 and came back as 2: that claim is dead.
                owned("b", 1, 4),
                // c is not routable (it stood still for a lease).
                owned("c", 1, 2),
                None,
            ],
        };
        let routable = vec!["a".to_owned(), "b".to_owned()];
        let table = RoutingTable::from_grid(&grid, &routable, 7);
        assert_eq!(table.owner(0).map(|r| r.node_id.as_str()), Some("a"));
        assert_eq!(table.owner(1), None);
        assert_eq!(table.owner(2), None);
        assert_eq!(table.owner(3), None);
        assert_eq!(table.owner(9), None);
        assert_eq!(table.epochs, vec![3, 4, 2, 0]);
        assert_eq!(table.partitions_of(0), vec![0]);
        assert_eq!(table.version, 7);
    }
}
