//! The key layout: every key this crate writes is built and parsed here, and nowhere else
//! (DESIGN.md "Storage").
//!
//! A key family is either **per partition** or **cluster-wide**:
//!
//! | scope | key | family |
//! |---|---|---|
//! | partition | `p` partition `e` pair time position | a pair's event log record |
//! | partition | `p` partition `s` pair | a pair's snapshot |
//! | partition | `p` partition `k` pair time position | a pair's checkpoint (snapshot at a log position) |
//! | partition | `p` partition `q` pair time position | a quarantined arrival of a pair |
//! | partition | `p` partition `i` source role event-id | an identity (dedup), scoped to its pair's partition |
//! | partition | `p` partition `h` pair reservation-id | a hold of a reservation at a pair |
//! | partition | `p` partition `z` reservation-id pair | the settlement of a reservation's line by a pick |
//! | partition | `p` partition `t` deadline reservation-id pair | the partition's deadline index (the reaper's) |
//! | partition | `p` partition `a` decision-id | a decision record of one of the partition's pairs |
//! | partition | `p` partition `x` time target | the partition's expiry index (its targets are its own keys) |
//! | cluster | `g` `f` | the format record: layout version, partition count and function |
//! | cluster | `g` `c` location | a location of the catalog |
//! | cluster | `g` `r` reservation-id | a reservation's record (a cart may span partitions) |
//! | cluster | `g` `l` | the learned shared facts (one node's; per partition in a grid) |
//! | cluster | `g` `n` | the cluster's record: its name (a grid's nodes must name the same) |
//! | cluster | `g` `m` node-id | a member of the grid: address, region, heartbeat |
//! | cluster | `g` `o` partition | a partition's owner and epoch (every batch of the owner is conditioned on it) |
//!
//! The partition is two bytes, big-endian ([`stockgrid_model::partition`]), so a partition's
//! data is one key range (`p` partition .. `p` partition+1): what a node claims, hands off and
//! scans. Pairs are 12 bytes (SKU then location, big-endian), times 8 bytes (order-preserving:
//! sign bit flipped), positions 8 bytes big-endian.
//!
//! A store is created with a [`FormatRecord`]; [`check_or_create_format`] refuses a store
//! written by another layout (an older store has no format record and is refused with its
//! version named: layout 3 and before kept SKU-major keys that no partition can own).

use serde::{Deserialize, Serialize};
use stockgrid_model::domain::PairKey;
use stockgrid_model::ledger::{EntryRole, Identity};
use stockgrid_model::partition::{PARTITION_FUNCTION, Partition, PartitionScheme};
use stockgrid_model::time::Timestamp;
use stockgrid_storage::{Store, StoreError, WriteBatch};

/// The key layout this build writes: version 4 put every per-partition family partition first.
pub const LAYOUT_VERSION: u32 = 4;

const PARTITION_SPACE: u8 = b'p';
const CLUSTER_SPACE: u8 = b'g';

const LOG: u8 = b'e';
const SNAPSHOT: u8 = b's';
const CHECKPOINT: u8 = b'k';
const QUARANTINE: u8 = b'q';
const IDENTITY: u8 = b'i';
const HOLD: u8 = b'h';
const SETTLEMENT: u8 = b'z';
const DEADLINE: u8 = b't';
const DECISION: u8 = b'a';
const EXPIRY: u8 = b'x';

const FORMAT: u8 = b'f';
const LOCATION: u8 = b'c';
const RESERVATION: u8 = b'r';
const SHARED_FACTS: u8 = b'l';
const POLICY: u8 = b'd';
const CLUSTER: u8 = b'n';
const MEMBER: u8 = b'm';
const OWNER: u8 = b'o';

/// Bytes before a per-partition key's own part: space, partition, family.
const HEADER: usize = 4;
/// Bytes of a pair in a key.
const PAIR: usize = 12;
/// Bytes of a time in a key.
const TIME: usize = 8;

/// The partition scheme of every store this build creates (named in its format record).
pub const SCHEME: PartitionScheme = PartitionScheme::STANDARD;

/// The partition of `pair` under [`SCHEME`].
pub fn partition_of(pair: PairKey) -> Partition {
    SCHEME.partition(pair)
}

/// Every partition of [`SCHEME`], in key order.
pub fn partitions() -> impl Iterator<Item = Partition> {
    0..SCHEME.count()
}

/// Time as an order-preserving 8-byte key part (sign bit flipped).
pub fn time_key(time: Timestamp) -> [u8; 8] {
    (time.0 as u64 ^ (1 << 63)).to_be_bytes()
}

fn time_from_key(bytes: &[u8]) -> Option<Timestamp> {
    let raw = u64::from_be_bytes(bytes.try_into().ok()?);
    Some(Timestamp((raw ^ (1 << 63)) as i64))
}

/// The key right after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; 32]
}

fn in_partition(partition: Partition, family: u8, capacity: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(HEADER + capacity);
    key.push(PARTITION_SPACE);
    key.extend_from_slice(&partition.to_be_bytes());
    key.push(family);
    key
}

fn cluster_wide(family: u8, capacity: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + capacity);
    key.push(CLUSTER_SPACE);
    key.push(family);
    key
}

/// The first key of `partition`'s range (its last is [`partition_end`]).
pub fn partition_start(partition: Partition) -> Vec<u8> {
    let mut key = vec![PARTITION_SPACE];
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The key right after `partition`'s range.
pub fn partition_end(partition: Partition) -> Vec<u8> {
    prefix_end(&partition_start(partition))
}

fn pair_prefix(family: u8, pair: PairKey) -> Vec<u8> {
    let mut key = in_partition(partition_of(pair), family, PAIR + TIME + 8);
    key.extend_from_slice(&pair.to_bytes());
    key
}

fn positioned(family: u8, pair: PairKey, time: Timestamp, position: u64) -> Vec<u8> {
    let mut key = pair_prefix(family, pair);
    key.extend_from_slice(&time_key(time));
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// The log key of a pair's record at `position`, arrived at `arrival`.
pub fn log_key(pair: PairKey, arrival: Timestamp, position: u64) -> Vec<u8> {
    positioned(LOG, pair, arrival, position)
}

/// The prefix of every log key of `pair`.
pub fn log_prefix(pair: PairKey) -> Vec<u8> {
    pair_prefix(LOG, pair)
}

/// The first possible log key of `pair` arrived at or after `time` (a scan's start, or a
/// deletion's end).
pub fn log_from(pair: PairKey, time: Timestamp) -> Vec<u8> {
    let mut key = pair_prefix(LOG, pair);
    key.extend_from_slice(&time_key(time));
    key
}

/// The snapshot key of a pair.
pub fn snapshot_key(pair: PairKey) -> Vec<u8> {
    pair_prefix(SNAPSHOT, pair)
}

/// The key of a checkpoint: the snapshot of `pair` after `position` log records, the last of
/// them logged at `time`.
pub fn checkpoint_key(pair: PairKey, time: Timestamp, position: u64) -> Vec<u8> {
    positioned(CHECKPOINT, pair, time, position)
}

/// The prefix of every checkpoint key of `pair`.
pub fn checkpoint_prefix(pair: PairKey) -> Vec<u8> {
    pair_prefix(CHECKPOINT, pair)
}

/// The key of a quarantine record of `pair`.
pub fn quarantine_key(pair: PairKey, arrival: Timestamp, position: u64) -> Vec<u8> {
    positioned(QUARANTINE, pair, arrival, position)
}

/// The prefix of every quarantine key of `pair`.
pub fn quarantine_prefix(pair: PairKey) -> Vec<u8> {
    pair_prefix(QUARANTINE, pair)
}

/// The time and position in a log, checkpoint or quarantine key (`None`: not such a key).
pub fn time_and_position(key: &[u8]) -> Option<(Timestamp, u64)> {
    let at = HEADER + PAIR;
    let time = time_from_key(key.get(at..at + TIME)?)?;
    let position = u64::from_be_bytes(key.get(at + TIME..at + TIME + 8)?.try_into().ok()?);
    Some((time, position))
}

/// The key of an identity record, in its pair's partition.
pub fn identity_key(identity: &Identity) -> Vec<u8> {
    let mut key = in_partition(identity.partition, IDENTITY, 2 + identity.event_id.len());
    key.push(identity.source as u8);
    key.push(match identity.role {
        EntryRole::Primary => 0,
        EntryRole::InboundAtCounterparty => 1,
    });
    key.extend_from_slice(identity.event_id.as_bytes());
    key
}

/// The key of a hold of `reservation_id` at `pair`.
pub fn hold_key(pair: PairKey, reservation_id: &str) -> Vec<u8> {
    let mut key = hold_prefix(pair);
    key.extend_from_slice(reservation_id.as_bytes());
    key
}

/// The prefix of every hold key of `pair`.
pub fn hold_prefix(pair: PairKey) -> Vec<u8> {
    pair_prefix(HOLD, pair)
}

/// The reservation id in a hold key.
pub fn hold_reservation_id(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.get(HEADER + PAIR..)?).ok()
}

/// The key of the settlement of `reservation_id`'s line at `pair`.
pub fn settlement_key(reservation_id: &str, pair: PairKey) -> Vec<u8> {
    let mut key = in_partition(partition_of(pair), SETTLEMENT, reservation_id.len() + PAIR);
    key.extend_from_slice(reservation_id.as_bytes());
    key.extend_from_slice(&pair.to_bytes());
    key
}

/// The deadline-index key that has the reaper look at `reservation_id`'s line at `pair` at
/// `deadline`.
pub fn deadline_key(deadline: Timestamp, reservation_id: &str, pair: PairKey) -> Vec<u8> {
    let mut key = in_partition(
        partition_of(pair),
        DEADLINE,
        TIME + reservation_id.len() + PAIR,
    );
    key.extend_from_slice(&time_key(deadline));
    key.extend_from_slice(reservation_id.as_bytes());
    key.extend_from_slice(&pair.to_bytes());
    key
}

/// The two time-ordered indexes of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexFamily {
    /// Keys to delete once their time passes (identities, quarantine, decision records).
    Expiry = 0,
    /// Reservation lines to look at once their deadline is reached.
    Deadline = 1,
}

impl IndexFamily {
    fn byte(self) -> u8 {
        match self {
            IndexFamily::Expiry => EXPIRY,
            IndexFamily::Deadline => DEADLINE,
        }
    }

    /// The end (exclusive) of the times due at `now`: an expiry is due once its time has
    /// passed, a deadline once it is reached.
    pub fn due_before(self, now: Timestamp) -> Timestamp {
        match self {
            IndexFamily::Expiry => now,
            IndexFamily::Deadline => now.plus_ms(1),
        }
    }
}

/// The range of `partition`'s `family` index keys due at `now` (see
/// [`IndexFamily::due_before`]).
pub fn index_due(family: IndexFamily, partition: Partition, now: Timestamp) -> (Vec<u8>, Vec<u8>) {
    let start = in_partition(partition, family.byte(), 0);
    let mut end = start.clone();
    end.extend_from_slice(&time_key(family.due_before(now)));
    (start, end)
}

/// The range of `partition`'s `family` index from time `from` on.
pub fn index_range(
    family: IndexFamily,
    partition: Partition,
    from: Timestamp,
) -> (Vec<u8>, Vec<u8>) {
    let family_start = in_partition(partition, family.byte(), 0);
    let end = prefix_end(&family_start);
    let mut start = family_start;
    start.extend_from_slice(&time_key(from));
    (start, end)
}

/// The family, partition and time of an index key (`None`: not an index key).
pub fn index_entry(key: &[u8]) -> Option<(IndexFamily, Partition, Timestamp)> {
    let family = match *key.get(3)? {
        EXPIRY => IndexFamily::Expiry,
        DEADLINE => IndexFamily::Deadline,
        _ => return None,
    };
    let partition = key_partition(key)?;
    let time = time_from_key(key.get(HEADER..HEADER + TIME)?)?;
    Some((family, partition, time))
}

/// The reservation id and pair of a deadline-index key (`None`: not such a key).
pub fn parse_deadline_key(key: &[u8]) -> Option<(&str, PairKey)> {
    let rest = key.get(HEADER + TIME..)?;
    let split = rest.len().checked_sub(PAIR)?;
    let reservation_id = std::str::from_utf8(&rest[..split]).ok()?;
    Some((reservation_id, PairKey::from_bytes(&rest[split..])?))
}

/// The pair a decision id names: node decision ids end in `/sku-location` (so that a record
/// is found in its pair's partition from the id alone).
pub fn decision_pair(decision_id: &str) -> Option<PairKey> {
    let (_, pair) = decision_id.rsplit_once('/')?;
    let (sku, location) = pair.split_once('-')?;
    Some(PairKey::new(sku.parse().ok()?, location.parse().ok()?))
}

/// The suffix that makes a decision id name its pair ([`decision_pair`] reads it back).
pub fn decision_id_suffix(pair: PairKey) -> String {
    let mut suffix = String::with_capacity(DECISION_ID_SUFFIX_MAX);
    push_decision_id_suffix(&mut suffix, pair);
    suffix
}

/// The longest [`decision_id_suffix`]: `/`, a `u64`, `-`, a `u32`.
pub const DECISION_ID_SUFFIX_MAX: usize = 1 + 20 + 1 + 10;

/// Appends [`decision_id_suffix`] to `id` (lookups name a decision each: no formatter, no
/// allocation beyond `id`'s own).
pub fn push_decision_id_suffix(id: &mut String, pair: PairKey) {
    let mut digits = itoa::Buffer::new();
    id.push('/');
    id.push_str(digits.format(pair.sku));
    id.push('-');
    id.push_str(digits.format(pair.location));
}

/// The key of the decision record `decision_id` of `pair` (a node's ids name their pair, so
/// [`decision_pair`] finds the key again from the id alone).
pub fn decision_key(pair: PairKey, decision_id: &str) -> Vec<u8> {
    let mut key = in_partition(partition_of(pair), DECISION, decision_id.len());
    key.extend_from_slice(decision_id.as_bytes());
    key
}

/// The expiry-index key that schedules `target` (a per-partition key: the index entry lies in
/// its partition) for deletion at `expires`.
pub fn expiry_key(expires: Timestamp, target: &[u8]) -> Vec<u8> {
    debug_assert!(
        key_partition(target).is_some(),
        "only per-partition keys expire: {target:?}"
    );
    let partition = key_partition(target).unwrap_or_default();
    let mut key = in_partition(partition, EXPIRY, TIME + target.len());
    key.extend_from_slice(&time_key(expires));
    key.extend_from_slice(target);
    key
}

/// The target in an expiry-index key.
pub fn expiry_target(key: &[u8]) -> Option<&[u8]> {
    key.get(HEADER + TIME..)
}

/// The partition of a per-partition key (`None`: a cluster-wide key).
pub fn key_partition(key: &[u8]) -> Option<Partition> {
    match key {
        [PARTITION_SPACE, high, low, ..] => Some(Partition::from_be_bytes([*high, *low])),
        _ => None,
    }
}

/// The key of a location in the catalog.
pub fn location_key(location: u32) -> Vec<u8> {
    let mut key = cluster_wide(LOCATION, 4);
    key.extend_from_slice(&location.to_be_bytes());
    key
}

/// The range of catalog keys of locations numbered above `after` (all if `None`).
pub fn locations_after(after: Option<u32>) -> Option<(Vec<u8>, Vec<u8>)> {
    let start = match after {
        Some(u32::MAX) => return None,
        Some(after) => location_key(after + 1),
        None => cluster_wide(LOCATION, 0),
    };
    Some((start, prefix_end(&cluster_wide(LOCATION, 0))))
}

/// The key of a reservation's record.
pub fn reservation_key(reservation_id: &str) -> Vec<u8> {
    let mut key = cluster_wide(RESERVATION, reservation_id.len());
    key.extend_from_slice(reservation_id.as_bytes());
    key
}

/// The key of the decision policy's record (cluster-wide and versioned).
pub fn policy_key() -> Vec<u8> {
    cluster_wide(POLICY, 0)
}

/// The key of the learned shared facts.
pub fn shared_facts_key() -> Vec<u8> {
    cluster_wide(SHARED_FACTS, 0)
}

/// The key of the cluster's record.
pub fn cluster_key() -> Vec<u8> {
    cluster_wide(CLUSTER, 0)
}

/// The key of `node_id`'s member record.
pub fn member_key(node_id: &str) -> Vec<u8> {
    let mut key = cluster_wide(MEMBER, node_id.len());
    key.extend_from_slice(node_id.as_bytes());
    key
}

/// The range of every member record.
pub fn members_range() -> (Vec<u8>, Vec<u8>) {
    let start = cluster_wide(MEMBER, 0);
    let end = prefix_end(&start);
    (start, end)
}

/// The key of `partition`'s ownership record: the fence of every batch its owner writes.
pub fn owner_key(partition: Partition) -> Vec<u8> {
    let mut key = cluster_wide(OWNER, 2);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The range of every ownership record, in partition order.
pub fn owners_range() -> (Vec<u8>, Vec<u8>) {
    let start = cluster_wide(OWNER, 0);
    let end = prefix_end(&start);
    (start, end)
}

/// The partition of an ownership record's key (`None`: not such a key).
pub fn owner_key_partition(key: &[u8]) -> Option<Partition> {
    match key {
        [CLUSTER_SPACE, OWNER, high, low] => Some(Partition::from_be_bytes([*high, *low])),
        _ => None,
    }
}

/// The key of the format record.
pub fn format_key() -> Vec<u8> {
    cluster_wide(FORMAT, 0)
}

/// What a store was created with: read by every node that opens it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatRecord {
    /// The key layout ([`LAYOUT_VERSION`] when written by this build).
    pub layout_version: u32,
    /// The partition function's name ([`PARTITION_FUNCTION`]).
    pub partition_function: String,
    /// Its partition count and spread.
    pub scheme: PartitionScheme,
}

impl FormatRecord {
    /// The record this build writes.
    pub fn current() -> Self {
        Self {
            layout_version: LAYOUT_VERSION,
            partition_function: PARTITION_FUNCTION.to_owned(),
            scheme: SCHEME,
        }
    }
}

/// Why a store cannot be used by this build.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store was written by another layout or partitioning.
    #[error(
        "the store's format is key layout {found}; this build reads layout {LAYOUT_VERSION} with its own partitioning only ({detail}). Start a new store (a new --data-dir) and feed it again; no migration exists"
    )]
    Incompatible {
        /// The layout found (`3 or older` for a store without a format record).
        found: String,
        /// What differs.
        detail: String,
    },
}

/// Checks that `store` was created by this layout, or writes the format record into an empty
/// store: a store without one that holds anything was written by layout 3 or older.
pub fn check_or_create_format(store: &dyn Store) -> Result<FormatRecord, FormatError> {
    let key = format_key();
    match store.get(&key)? {
        Some(bytes) => check_format(&bytes),
        None => {
            if !store.scan(&[], &[0xff; 8], 1)?.is_empty() {
                // Nodes starting together on a new store: another may have just written the
                // format record (every process writes it before any other key).
                if let Some(bytes) = store.get(&key)? {
                    return check_format(&bytes);
                }
                return Err(FormatError::Incompatible {
                    found: "3 or older".to_owned(),
                    detail: "its keys are SKU-major, with no format record".to_owned(),
                });
            }
            let record = FormatRecord::current();
            let mut batch = WriteBatch::new();
            batch.require(stockgrid_storage::Condition::Absent(key.clone()));
            batch.put(
                key.clone(),
                rmp_serde::to_vec_named(&record).expect("a format record encodes"),
            );
            match store.commit(batch) {
                Ok(()) => Ok(record),
                // Another node created it first (or the two commits collided): check theirs.
                Err(error) => match store.get(&key)? {
                    Some(bytes) => check_format(&bytes),
                    None => Err(error.into()),
                },
            }
        }
    }
}

/// Checks a store's format record against this build's.
fn check_format(bytes: &[u8]) -> Result<FormatRecord, FormatError> {
    let found: FormatRecord =
        rmp_serde::from_slice(bytes).map_err(|error| FormatError::Incompatible {
            found: "unknown".to_owned(),
            detail: format!("its format record does not decode: {error}"),
        })?;
    if found.layout_version != LAYOUT_VERSION {
        return Err(FormatError::Incompatible {
            found: found.layout_version.to_string(),
            detail: "written by another build".to_owned(),
        });
    }
    if found != FormatRecord::current() {
        return Err(FormatError::Incompatible {
            found: found.layout_version.to_string(),
            detail: format!(
                "it has {} partitions spread {} by {:?}; this build uses {} spread {} by {PARTITION_FUNCTION:?}",
                found.scheme.count(),
                found.scheme.location_spread(),
                found.partition_function,
                SCHEME.count(),
                SCHEME.location_spread()
            ),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use stockgrid_storage::MemoryStore;

    use super::*;

    #[test]
    fn a_pairs_keys_lie_in_its_partitions_range() {
        let pair = PairKey::new(42, 7);
        let partition = partition_of(pair);
        let (start, end) = (partition_start(partition), partition_end(partition));
        let identity = Identity {
            source: stockgrid_model::domain::Source::Pos,
            role: EntryRole::Primary,
            event_id: "e-1".to_owned(),
            partition,
        };
        let keys = [
            log_key(pair, Timestamp(5), 1),
            snapshot_key(pair),
            checkpoint_key(pair, Timestamp(5), 1),
            quarantine_key(pair, Timestamp(5), 1),
            identity_key(&identity),
            hold_key(pair, "res-1"),
            settlement_key("res-1", pair),
            deadline_key(Timestamp(9), "res-1", pair),
            decision_key(pair, &format!("d-1{}", decision_id_suffix(pair))),
            expiry_key(Timestamp(9), &snapshot_key(pair)),
        ];
        for key in keys {
            assert!(
                start <= key && key < end,
                "{key:?} outside partition {partition}"
            );
            assert_eq!(key_partition(&key), Some(partition));
        }
        for key in [location_key(7), reservation_key("res-1"), format_key()] {
            assert_eq!(key_partition(&key), None, "{key:?} is cluster-wide");
        }
    }

    /// The layout is an on-disk format: these bytes must never change without a new
    /// [`LAYOUT_VERSION`] (and a format record a build can refuse).
    #[test]
    fn key_bytes_match_the_layout_fixture() {
        let hex = |key: &[u8]| key.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let pair = PairKey::new(42, 7); // Partition 1746 = 0x06d2.
        assert_eq!(
            hex(&log_key(pair, Timestamp(5), 1)),
            "7006d265000000000000002a0000000780000000000000050000000000000001"
        );
        assert_eq!(hex(&snapshot_key(pair)), "7006d273000000000000002a00000007");
        assert_eq!(hex(&reservation_key("r")), "677272");
        assert_eq!(hex(&location_key(7)), "676300000007");
        assert_eq!(hex(&format_key()), "6766");
    }

    #[test]
    fn nodes_starting_together_on_a_new_store_all_accept_its_format() {
        for _ in 0..50 {
            let store = std::sync::Arc::new(MemoryStore::default());
            let starts: Vec<_> = (0..4)
                .map(|_| {
                    let store = std::sync::Arc::clone(&store);
                    std::thread::spawn(move || check_or_create_format(store.as_ref()))
                })
                .collect();
            for start in starts {
                let format = start.join().expect("thread");
                assert_eq!(format.expect("format"), FormatRecord::current());
            }
        }
    }

    #[test]
    fn an_older_store_is_refused_and_a_new_one_gets_a_format_record() {
        let store = MemoryStore::new();
        assert_eq!(
            check_or_create_format(&store).expect("new store"),
            FormatRecord::current()
        );
        assert_eq!(
            check_or_create_format(&store).expect("reopened"),
            FormatRecord::current()
        );
        let older = MemoryStore::new();
        let mut batch = WriteBatch::new();
        batch.put(b"s\0\0\0\0\0\0\0\x2a\0\0\0\x07".to_vec(), vec![3]);
        older.commit(batch).expect("commit");
        let error = check_or_create_format(&older).expect_err("layout 3");
        assert!(error.to_string().contains("layout 3 or older"), "{error}");
    }

    proptest! {
        #[test]
        fn keys_parse_back(
            sku in any::<u64>(),
            location in any::<u32>(),
            time in any::<i64>(),
            position in any::<u64>(),
            id in "res-[0-9a-f]{8}",
        ) {
            let pair = PairKey::new(sku, location);
            prop_assert_eq!(
                time_and_position(&log_key(pair, Timestamp(time), position)),
                Some((Timestamp(time), position))
            );
            let hold = hold_key(pair, &id);
            prop_assert_eq!(hold_reservation_id(&hold), Some(id.as_str()));
            let deadline = deadline_key(Timestamp(time), &id, pair);
            prop_assert_eq!(parse_deadline_key(&deadline), Some((id.as_str(), pair)));
            let decision_id = format!("{id}{}", decision_id_suffix(pair));
            prop_assert_eq!(decision_pair(&decision_id), Some(pair));
            let target = snapshot_key(pair);
            let expiry = expiry_key(Timestamp(time), &target);
            prop_assert_eq!(expiry_target(&expiry), Some(&target[..]));
            let partition = partition_of(pair);
            prop_assert_eq!(
                index_entry(&expiry),
                Some((IndexFamily::Expiry, partition, Timestamp(time)))
            );
            prop_assert_eq!(
                index_entry(&deadline),
                Some((IndexFamily::Deadline, partition, Timestamp(time)))
            );
            prop_assert_eq!(index_entry(&hold), None);
        }
    }
}
