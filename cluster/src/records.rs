//! The grid's records in the shared store: the cluster's name, one member record per node,
//! one ownership record per partition (DESIGN.md "Cluster"). Keys come from
//! [`stockgrid_actors::keys`]; values are MessagePack.
//!
//! A member record's `heartbeat` counts its renewals: other nodes judge a member alive by
//! seeing it move, by their own clocks, never by comparing wall clocks. `renewed_at_ms` is the
//! member's wall clock at its last renewal, for people reading `cluster status` only.
//!
//! An ownership record names the owner by node id *and* incarnation (a restarted node is a
//! new owner), and the epoch: every claim raises it by one, and every batch the owner writes
//! is conditioned on the record's exact bytes, so the record is written once per ownership
//! and never rewritten by heartbeats.

use serde::{Deserialize, Serialize};
use stockgrid_actors::keys;
use stockgrid_storage::{KeyValue, Store, StoreError};

/// Longest node id, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 64;
/// Longest region name, in bytes.
pub const MAX_REGION_BYTES: usize = 64;

/// The state of a member as it wrote it (or as another node declared it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Serving, renewing its heartbeat, taking partitions.
    Active,
    /// Shutting down: hands its partitions off and takes none.
    Leaving,
    /// Declared dead by another node that saw its heartbeat stand still for a lease: its
    /// partitions may be claimed, and its own renewal fails (it must rejoin).
    Expired,
}

/// A node of the grid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The node's id (`--node-id`).
    pub node_id: String,
    /// A number new at every start of the node.
    pub incarnation: u64,
    /// Where peers and clients reach it (`--advertise`, else `--listen`).
    pub address: String,
    /// Its region (`--region`).
    pub region: String,
    /// Renewals so far: moves with every heartbeat.
    pub heartbeat: u64,
    /// Its state.
    pub state: MemberState,
    /// Its wall clock at the last renewal (milliseconds since the epoch), for display.
    pub renewed_at_ms: i64,
}

/// Who owns a partition, at which epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The owner (`None`: released, waiting for its next owner's claim).
    pub owner: Option<Owner>,
    /// Raised by one at every claim; batches of the owner are fenced on it.
    pub epoch: u64,
}

/// An owning node: its id and incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The node id.
    pub node_id: String,
    /// Its incarnation when it claimed.
    pub incarnation: u64,
}

/// The cluster's own record: the name every node must be started with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster name (`--cluster`).
    pub name: String,
}

/// A record that did not decode.
#[derive(Debug, thiserror::Error)]
#[error("the {what} record under key {key:?} does not decode: {message}")]
pub struct Undecodable {
    what: &'static str,
    key: Vec<u8>,
    message: String,
}

/// Encodes a record (MessagePack with field names, so later versions may add fields).
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(record).expect("cluster records always encode")
}

/// Decodes a record read under `key`.
pub fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, Undecodable> {
    rmp_serde::from_slice(bytes).map_err(|error| Undecodable {
        what,
        key: key.to_vec(),
        message: error.to_string(),
    })
}

/// Checks a node id or region name: printable, no spaces, bounded.
pub fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!(
            "{field}: must be 1 to {max} bytes, got {}",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{field}: {value:?} has {bad:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A member record as read, with the exact bytes (what conditions compare).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    /// The record.
    pub record: MemberRecord,
    /// Its bytes in the store.
    pub bytes: Vec<u8>,
}

/// An ownership record as read, with its exact bytes (`None`: never written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOwner {
    /// The record.
    pub record: OwnerRecord,
    /// Its bytes in the store.
    pub bytes: Vec<u8>,
}

/// The grid as the store holds it: every member and every partition's ownership.
#[derive(Clone, Debug, Default)]
pub struct GridTable {
    /// Members by node id, in id order.
    pub members: Vec<StoredMember>,
    /// Per partition, its ownership record (`None`: never claimed).
    pub owners: Vec<Option<StoredOwner>>,
}

impl GridTable {
    /// Reads every member and ownership record.
    pub fn read(store: &dyn Store, partitions: u16) -> Result<Self, ReadError> {
        let (start, end) = keys::members_range();
        let mut members = Vec::new();
        for (key, bytes) in scan_all(store, &start, &end)? {
            let record: MemberRecord = decode("member", &key, &bytes)?;
            members.push(StoredMember { record, bytes });
        }
        let mut owners: Vec<Option<StoredOwner>> = vec![None; usize::from(partitions)];
        let (start, end) = keys::owners_range();
        for (key, bytes) in scan_all(store, &start, &end)? {
            let Some(partition) = keys::owner_key_partition(&key) else {
                continue;
            };
            let record: OwnerRecord = decode("ownership", &key, &bytes)?;
            if let Some(slot) = owners.get_mut(usize::from(partition)) {
                *slot = Some(StoredOwner { record, bytes });
            }
        }
        Ok(Self { members, owners })
    }

    /// The member record of `node_id`.
    pub fn member(&self, node_id: &str) -> Option<&StoredMember> {
        self.members
            .binary_search_by(|member| member.record.node_id.as_str().cmp(node_id))
            .ok()
            .map(|index| &self.members[index])
    }
}

/// Every key and value of a range, page by page.
fn scan_all(store: &dyn Store, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
    const PAGE: usize = 1024;
    let mut all = Vec::new();
    let mut from = start.to_vec();
    loop {
        let page = store.scan(&from, end, PAGE)?;
        let full = page.len() == PAGE;
        if let Some((last, _)) = page.last() {
            from = last.clone();
            from.push(0);
        }
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// Why the grid's records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A record did not decode.
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_field_by_field() {
        assert!(check_name("node id", "node-1.east_a", MAX_NODE_ID_BYTES).is_ok());
        let spaced = check_name("node id", "node 1", MAX_NODE_ID_BYTES).expect_err("a space");
        assert!(
            spaced.contains("node id") && spaced.contains("' '"),
            "{spaced}"
        );
        assert!(check_name("region", "", MAX_REGION_BYTES).is_err());
        assert!(check_name("region", &"x".repeat(65), MAX_REGION_BYTES).is_err());
    }

    #[test]
    fn records_round_trip() {
        let owner = OwnerRecord {
            owner: Some(Owner {
                node_id: "a".to_owned(),
                incarnation: 7,
            }),
            epoch: 3,
        };
        let bytes = encode(&owner);
        assert_eq!(
            decode::<OwnerRecord>("ownership", b"k", &bytes).expect("decodes"),
            owner
        );
        assert!(decode::<OwnerRecord>("ownership", b"k", b"\xff").is_err());
    }
}
