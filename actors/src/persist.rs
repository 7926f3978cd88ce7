//! Persistence glue: how entities, their log and identities are laid out in the store.
//!
//! What is stored under the keys of [`crate::keys`] (each in a partition: a pair's, or for
//! identities and expiry records the partition of the pairs they concern):
//!
//! | key family | value |
//! |---|---|
//! | log | [`LogRecord`] |
//! | snapshot | [`Snapshot`] (the latest: what activation reads) |
//! | checkpoint | [`Snapshot`] (where an audit rebuild may start) |
//! | identity | the event's payload digest (16) |
//! | quarantine | [`QuarantineRecord`] |
//! | expiry | empty (delete the key in its suffix), or a list of keys to delete |
//!
//! The arrival time in a log key is the entity's own latest arrival (never decreasing), so
//! key order is application order, and the log entries older than the retention are one
//! range. Values are MessagePack (rmp-serde), each with a format version byte first (the store's
//! format record, read before anything else, is plain MessagePack: see [`crate::keys`]).
//!
//! The log holds every input that changed an entity, reservations included (a hold granted,
//! a hold freed, a nil pick), so an entity at any logged position can be rebuilt from it
//! alone ([`rebuild_entity`], what `audit replay` of a node's decisions runs). Every
//! snapshot is also kept as a checkpoint; compaction deletes the log only up to the history
//! window before a checkpoint past the retention, so a decision made within the retention
//! can always be rebuilt: from the log's first record if it is still there, else from the
//! newest checkpoint before the decision and the log after it.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stockgrid_storage::{Store, StoreError, WriteBatch};

use crate::domain::PairKey;
use crate::due::{DuePartition, DueTimes};
use crate::keys::{
    self, IndexFamily, checkpoint_key, expiry_key, identity_key, prefix_end, snapshot_key,
};
use crate::ledger::{
    DeltaHistory, EntityState, EntryRole, IdentityCheck, IdentityIndex, LedgerConfig, LedgerEntry,
    LookupFailed, QuarantineReason, compare_digests,
};
use crate::time::{MINUTE_MS, Timestamp};
use stockgrid_model::partition::Partition;

/// The on-disk format version written first in every value. Version 2 added the belief
/// statistics at the end of a snapshot's entity state; version 3 added each source's claim
/// after them, and the `Held` and `Freed` log records (reservation holds in the pair's log).
pub const FORMAT_VERSION: u8 = 3;
/// Versions still read: an older snapshot decodes with the fields added since at their
/// defaults (empty belief statistics, no source claims); every other older value is
/// unchanged.
const READABLE_VERSIONS: std::ops::RangeInclusive<u8> = 1..=FORMAT_VERSION;

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A lookup replaying the log needed failed.
    #[error(transparent)]
    Lookup(#[from] LookupFailed),
    /// A value did not decode.
    #[error("decode {what} under key {key:?}: {message}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// Its key.
        key: Vec<u8>,
        /// The decoder's words.
        message: String,
    },
}

/// Encodes a value with its format version.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT_VERSION];
    // Our records are plain structs of owned data; encoding them cannot fail.
    rmp_serde::encode::write(&mut bytes, value).expect("encode record");
    bytes
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, PersistError> {
    let corrupt = |message: String| PersistError::Corrupt {
        what,
        key: key.to_vec(),
        message,
    };
    match bytes.split_first() {
        Some((version, body)) if READABLE_VERSIONS.contains(version) => {
            rmp_serde::from_slice(body).map_err(|e| corrupt(e.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("unknown format version {version}"))),
        None => Err(corrupt("empty value".to_owned())),
    }
}

/// One record of an entity's event log: what it did with one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord {
    /// The entry was applied.
    Applied {
        /// The entry.
        entry: LedgerEntry,
        /// Its arrival.
        arrival: Timestamp,
    },
    /// The entry was quarantined (it only counts).
    Quarantined {
        /// Its arrival.
        arrival: Timestamp,
    },
    /// A pick for `units` found fewer (a short pick, or a release ITEM_NOT_FOUND): evidence
    /// for the belief, not a change of the ledger.
    NotFound {
        /// Units the pick was for.
        units: u32,
        /// The record just before the pick.
        record_before: i64,
        /// When.
        time: Timestamp,
    },
    /// A reservation hold of `units` was granted: reserved units rise.
    Held {
        /// Units held.
        units: i64,
    },
    /// A hold of `units` was freed (released, expired or settled by a pick).
    Freed {
        /// Units freed.
        units: i64,
    },
}

/// A quarantined entry kept for ops, with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The entry.
    pub entry: LedgerEntry,
    /// Its arrival.
    pub arrival: Timestamp,
    /// Why it was not applied.
    pub reason: QuarantineReason,
}

/// A durable image of an entity at a log position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Log records covered (positions 1..=this).
    pub log_position: u64,
    /// The state after them.
    pub state: EntityState,
}

/// An entity as loaded from the store: its latest snapshot plus its log tail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedEntity {
    /// The state.
    pub state: EntityState,
    /// Log records written so far (the next record gets this plus one).
    pub log_position: u64,
    /// The log position of the snapshot it was loaded from.
    pub snapshot_position: u64,
    /// Whether anything about the pair was found.
    pub found: bool,
    /// The time in the key of the oldest log record still stored, if any.
    pub oldest_log_time: Option<Timestamp>,
}

/// Rebuilds an entity exactly as it was after its last committed record: snapshot, then
/// every later log record through the same pure code that applied it the first time.
///
/// Invariant relied on here: a pair with any log record has a snapshot, because the batch
/// that writes a pair's first log record also writes its first snapshot. A missing snapshot
/// therefore means a pair never seen, answered by one point read (which the LSM's bloom
/// filters make cheap) instead of a range scan.
pub fn load_entity(
    store: &dyn Store,
    pair: PairKey,
    config: &LedgerConfig,
) -> Result<LoadedEntity, PersistError> {
    let mut loaded = LoadedEntity::default();
    let snapshot_key = snapshot_key(pair);
    let Some(bytes) = store.get(&snapshot_key)? else {
        return Ok(loaded);
    };
    let snapshot: Snapshot = decode("snapshot", &snapshot_key, &bytes)?;
    loaded.state = snapshot.state;
    loaded.log_position = snapshot.log_position;
    loaded.snapshot_position = snapshot.log_position;
    loaded.found = true;
    let start = keys::log_prefix(pair);
    scan_all(store, &start, &prefix_end(&start), |key, bytes| {
        let (time, position) = keys::time_and_position(&key).ok_or_else(|| short_key(&key))?;
        if loaded.oldest_log_time.is_none() {
            loaded.oldest_log_time = Some(time);
        }
        if position <= loaded.log_position {
            return Ok(()); // Covered by the snapshot, kept for retention and audit only.
        }
        replay_log_record(
            store,
            config,
            &mut loaded.state,
            position,
            &key,
            &bytes,
            None,
        )?;
        loaded.log_position = position;
        Ok(())
    })?;
    Ok(loaded)
}

fn short_key(key: &[u8]) -> PersistError {
    PersistError::Corrupt {
        what: "log key",
        key: key.to_vec(),
        message: "short key".to_owned(),
    }
}

/// Decodes the log record at `position` and applies it to an entity through the same pure
/// code that applied it the first time (activation, recovery and audit rebuilds alike); a
/// late anchor reads the records before it (complete only from `complete_from` on, when set).
fn replay_log_record(
    store: &dyn Store,
    config: &LedgerConfig,
    state: &mut EntityState,
    position: u64,
    key: &[u8],
    bytes: &[u8],
    complete_from: Option<Timestamp>,
) -> Result<(), PersistError> {
    match decode::<LogRecord>("log record", key, bytes)? {
        LogRecord::Applied { entry, arrival } => {
            let mut history = LogHistory {
                store,
                before_position: position,
                future_skew_ms: config.future_skew_ms,
                pending: &[],
                complete_from,
            };
            state.apply_admitted(&entry, arrival, config, &mut history)?;
        }
        LogRecord::Quarantined { .. } => state.record_quarantine(),
        LogRecord::NotFound {
            units,
            record_before,
            time,
        } => state.observe_not_found(units, record_before, time),
        LogRecord::Held { units } => {
            state.reserved_units = state.reserved_units.saturating_add(units)
        }
        LogRecord::Freed { units } => {
            state.reserved_units = state.reserved_units.saturating_sub(units)
        }
    }
    Ok(())
}

/// Where an audit rebuild of an entity started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildBase {
    /// The pair's first log record: the entity from the log alone.
    LogStart,
    /// A checkpoint (the log before it was compacted away) and the log after it.
    Checkpoint {
        /// Log records the checkpoint covers.
        position: u64,
        /// When its last record was logged.
        time: Timestamp,
    },
}

/// How far an audit rebuild goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildTo {
    /// Nowhere: the pair was not known (no state).
    Unknown,
    /// Through this many log records.
    Position(u64),
    /// Through the last record stored.
    Last,
}

/// An entity rebuilt as it stood after a number of its log records.
#[derive(Clone, Debug, PartialEq)]
pub struct Rebuilt {
    /// The state (`None` when no record was asked for: the pair was not known).
    pub state: Option<EntityState>,
    /// Where the rebuild started.
    pub base: RebuildBase,
}

/// Why an entity cannot be rebuilt at a log position.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The store failed or a value did not decode.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// The log no longer holds what the rebuild needs.
    #[error("{0}")]
    Compacted(String),
}

/// Rebuilds `pair`'s entity as it stood after its first `to` log records, from the log alone
/// when its first record is still stored, else from the newest checkpoint at or before that
/// position and the log after it.
///
/// Refuses, rather than guess, when the records between the base and `position` are not
/// all stored, or when a late anchor's delta history reaches back before the oldest stored
/// record (the live entity saw deltas the log no longer has).
///
/// `visit` sees the state at every position from the base on (the base's first).
pub fn rebuild_entity(
    store: &dyn Store,
    pair: PairKey,
    to: RebuildTo,
    config: &LedgerConfig,
    visit: &mut dyn FnMut(u64, &EntityState),
) -> Result<Rebuilt, RebuildError> {
    let through = match to {
        RebuildTo::Unknown => {
            return Ok(Rebuilt {
                state: None,
                base: RebuildBase::LogStart,
            });
        }
        RebuildTo::Position(position) => position,
        RebuildTo::Last => u64::MAX,
    };
    let start = keys::log_prefix(pair);
    let mut records: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut oldest: Option<(Timestamp, u64)> = None;
    scan_all(store, &start, &prefix_end(&start), |key, bytes| {
        let (time, at) = keys::time_and_position(&key).ok_or_else(|| short_key(&key))?;
        oldest = Some(oldest.map_or((time, at), |(t, p)| (t.min(time), p.min(at))));
        if at <= through {
            records.push((at, key, bytes));
        }
        Ok(())
    })?;
    // Log keys sort by time, then position; apply in position order.
    records.sort_unstable_by_key(|(at, _, _)| *at);
    let position = match to {
        RebuildTo::Last => records.last().map_or(0, |(at, _, _)| *at),
        _ => through,
    };
    let from_start = oldest.is_some_and(|(_, first)| first == 1);
    let (mut state, base) = if from_start || position == 0 {
        (EntityState::default(), RebuildBase::LogStart)
    } else {
        let checkpoint = newest_checkpoint_at_or_before(store, pair, position)?.ok_or_else(|| {
            RebuildError::Compacted(format!(
                "the log of this pair was compacted past log position {position}, and no checkpoint at or before it is kept"
            ))
        })?;
        (
            checkpoint.state,
            RebuildBase::Checkpoint {
                position: checkpoint.log_position,
                time: checkpoint.time,
            },
        )
    };
    let first_needed = match base {
        RebuildBase::LogStart => 1,
        RebuildBase::Checkpoint { position, .. } => position + 1,
    };
    visit(first_needed - 1, &state);
    let mut expected = first_needed;
    let complete_from = (!from_start)
        .then(|| oldest.map(|(time, _)| time))
        .flatten();
    for (at, key, bytes) in records {
        if at < first_needed {
            continue;
        }
        if at != expected {
            return Err(RebuildError::Compacted(format!(
                "log record {expected} of this pair is not stored (the next is {at})"
            )));
        }
        replay_log_record(store, config, &mut state, at, &key, &bytes, complete_from)?;
        visit(at, &state);
        expected += 1;
    }
    if expected != position + 1 {
        return Err(RebuildError::Compacted(format!(
            "the log of this pair ends at record {}, before position {position}",
            expected - 1
        )));
    }
    Ok(Rebuilt {
        state: Some(state),
        base,
    })
}

/// A checkpoint as read back, with the time in its key.
struct Checkpoint {
    log_position: u64,
    time: Timestamp,
    state: EntityState,
}

fn newest_checkpoint_at_or_before(
    store: &dyn Store,
    pair: PairKey,
    position: u64,
) -> Result<Option<Checkpoint>, PersistError> {
    let start = keys::checkpoint_prefix(pair);
    let mut newest: Option<(Timestamp, u64, Vec<u8>, Vec<u8>)> = None;
    scan_all(store, &start, &prefix_end(&start), |key, bytes| {
        let (time, at) = keys::time_and_position(&key).ok_or_else(|| short_key(&key))?;
        if at <= position && newest.as_ref().is_none_or(|(_, best, _, _)| at > *best) {
            newest = Some((time, at, key, bytes));
        }
        Ok(())
    })?;
    newest
        .map(|(time, _, key, bytes)| {
            let snapshot: Snapshot = decode("checkpoint", &key, &bytes)?;
            Ok(Checkpoint {
                log_position: snapshot.log_position,
                time,
                state: snapshot.state,
            })
        })
        .transpose()
}

/// Calls `visit` with every key and value in `[start, end)`, a page at a time.
fn scan_all(
    store: &dyn Store,
    start: &[u8],
    end: &[u8],
    mut visit: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), PersistError>,
) -> Result<(), PersistError> {
    let mut cursor = start.to_vec();
    loop {
        let page = store.scan(&cursor, end, 1024)?;
        let Some((last_key, _)) = page.last() else {
            return Ok(());
        };
        cursor = [last_key.as_slice(), &[0]].concat();
        for (key, bytes) in page {
            visit(key, bytes)?;
        }
    }
}

/// A pair's delta history as its event log holds it, for the pure core's late anchors.
pub struct LogHistory<'a> {
    /// The store holding the log.
    pub store: &'a dyn Store,
    /// Only records before this log position count (recovery replays record by record).
    pub before_position: u64,
    /// The future skew bound: a delta is logged no earlier than its event time minus this.
    pub future_skew_ms: i64,
    /// Deltas applied in the batch being built, not committed yet: (pair, event time, units).
    pub pending: &'a [(PairKey, Timestamp, i64)],
    /// The log is only known complete from this time on (an audit rebuild of a compacted
    /// log): a lookup reaching further back fails instead of undercounting.
    pub complete_from: Option<Timestamp>,
}

fn lookup_failed(message: impl std::fmt::Display) -> LookupFailed {
    LookupFailed {
        what: "delta history",
        message: message.to_string(),
    }
}

impl DeltaHistory for LogHistory<'_> {
    fn units_after(&mut self, pair: PairKey, after: Timestamp) -> Result<i64, LookupFailed> {
        let prefix = keys::log_prefix(pair);
        let end = prefix_end(&prefix);
        // A delta dated after `after` arrived no earlier than `after - skew`, and its log key
        // carries a time no earlier than its arrival: the scan starts there.
        let scan_from = Timestamp(after.0 - self.future_skew_ms - 1);
        if let Some(complete_from) = self.complete_from
            && scan_from < complete_from
        {
            return Err(lookup_failed(format!(
                "a late anchor needs the deltas logged since {} ms; the log was compacted up to {} ms",
                scan_from.0, complete_from.0
            )));
        }
        let start = keys::log_from(pair, scan_from);
        let mut units = 0i64;
        scan_all(self.store, &start, &end, |key, bytes| {
            let (_, position) = keys::time_and_position(&key).ok_or_else(|| short_key(&key))?;
            if position >= self.before_position {
                return Ok(());
            }
            if let LogRecord::Applied { entry, .. } = decode("log record", &key, &bytes)? {
                let event = &entry.event;
                if entry.role == EntryRole::Primary
                    && !event.kind.is_observation()
                    && event.event_time > after
                {
                    units = units.saturating_add(event.signed_units());
                }
            }
            Ok(())
        })
        .map_err(lookup_failed)?;
        units += self
            .pending
            .iter()
            .filter(|(p, time, _)| *p == pair && *time > after)
            .map(|(_, _, u)| u)
            .sum::<i64>();
        Ok(units)
    }
}

/// The quarantine records of a pair still retained, oldest first (at most `limit`).
pub fn quarantined_records(
    store: &dyn Store,
    pair: PairKey,
    limit: usize,
) -> Result<Vec<QuarantineRecord>, PersistError> {
    let start = keys::quarantine_prefix(pair);
    let end = prefix_end(&start);
    store
        .scan(&start, &end, limit)?
        .into_iter()
        .map(|(key, bytes)| decode("quarantine record", &key, &bytes))
        .collect()
}

/// What a compaction did, and when the next one may delete something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// The log is kept from this time on (`None`: no checkpoint was old enough, nothing was
    /// deleted).
    pub kept_from: Option<Timestamp>,
    /// The time of the oldest checkpoint newer than the one kept (or the oldest of all, when
    /// none was old enough): no compaction deletes anything before it passes the cut-off
    /// (`None`: no such checkpoint is stored yet).
    pub next_due: Option<Timestamp>,
}

/// Adds to `batch` the compaction of a pair's log as of `cutoff` (now minus the log
/// retention): the newest checkpoint logged before `cutoff` becomes the oldest one kept, and
/// the log is deleted up to `history_ms` before that checkpoint (what rebuilding from it may
/// read for a late anchor).
pub fn compact_log(
    store: &dyn Store,
    batch: &mut WriteBatch,
    pair: PairKey,
    cutoff: Timestamp,
    history_ms: i64,
) -> Result<Compaction, PersistError> {
    let start = keys::checkpoint_prefix(pair);
    let mut kept: Option<(Timestamp, u64)> = None;
    let mut next_due = None;
    scan_all(store, &start, &prefix_end(&start), |key, _| {
        let (time, position) = keys::time_and_position(&key).ok_or_else(|| short_key(&key))?;
        if time < cutoff {
            kept = Some((time, position));
            next_due = None;
        } else if next_due.is_none() {
            next_due = Some(time);
        }
        Ok(())
    })?;
    let Some((time, position)) = kept else {
        return Ok(Compaction {
            kept_from: None,
            next_due,
        });
    };
    batch.delete_range(start, checkpoint_key(pair, time, position));
    let kept_from = Timestamp(time.0.saturating_sub(history_ms));
    batch.delete_range(keys::log_prefix(pair), keys::log_from(pair, kept_from));
    Ok(Compaction {
        kept_from: Some(kept_from),
        next_due,
    })
}

/// Adds to `batch` the deletion of every key whose expiry is before `now` (from at most
/// `limit` expiry records); returns how many expiry records were due.
///
/// An expiry record with an empty value schedules the key in its own suffix; one with a
/// value lists several keys (identities recorded by one batch in the same minute), so
/// dedup costs one expiry record per batch and minute rather than one per event.
pub fn expire(
    store: &dyn Store,
    due_times: &DueTimes,
    batch: &mut WriteBatch,
    now: Timestamp,
    limit: usize,
) -> Result<(usize, Vec<DuePartition>), PersistError> {
    let (found, exhausted) = due_times.due_entries(store, IndexFamily::Expiry, now, limit)?;
    for (key, value) in &found {
        if value.is_empty() {
            let target = keys::expiry_target(key).ok_or_else(|| short_key(key))?;
            batch.delete(target.to_vec());
        } else {
            for target in decode::<Vec<Vec<u8>>>("expiry list", key, value)? {
                batch.delete(target);
            }
        }
        batch.delete(key.clone());
    }
    // The exhausted partitions' due entries are all in `batch`: settle them once committed.
    Ok((found.len(), exhausted))
}

/// Identities recorded by one batch, grouped by their partition and the minute they expire
/// in: an expiry record lists keys of its own partition only, so a partition's data stays one
/// key range that its owner alone deletes from.
#[derive(Debug, Default)]
pub struct ExpiringIdentities {
    groups: Vec<(ExpiryGroup, Vec<Vec<u8>>)>,
}

/// The partition of some identity keys, and the minute they expire in.
type ExpiryGroup = (Partition, Timestamp);

impl ExpiringIdentities {
    fn add(&mut self, expires: Timestamp, key: Vec<u8>) {
        // Round up to the minute: an identity may outlive its bound by under a minute.
        let minute = Timestamp(expires.0.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS);
        let group = (keys::key_partition(&key).unwrap_or_default(), minute);
        match self.groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, keys)) => keys.push(key),
            None => self.groups.push((group, vec![key])),
        }
    }

    /// Writes one expiry record per partition and minute into `batch`. Its key ends with the
    /// group's first identity key, which no other group can hold, so records never collide.
    pub fn write_into(self, batch: &mut WriteBatch) {
        for ((_, minute), keys) in self.groups {
            let key = expiry_key(minute, &keys[0]);
            batch.put(key, encode(&keys));
        }
    }
}

/// The recent identities, kept in memory in front of the store.
///
/// Striped by hash; each stripe keeps two generations and drops the older one when the newer
/// fills, so memory stays bounded and lookups of recent events (duplicate storms) never touch
/// the store. The tail only answers "duplicate" or "conflict" for an identity it holds, with
/// its payload digest; anything else is looked up in the store.
#[derive(Debug)]
pub struct IdentityTail {
    stripes: Vec<Mutex<TailStripe>>,
    generation_capacity: usize,
}

#[derive(Debug, Default)]
struct TailStripe {
    current: HashMap<Box<[u8]>, u128>,
    previous: HashMap<Box<[u8]>, u128>,
}

impl TailStripe {
    fn get(&self, key: &[u8]) -> Option<u128> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .copied()
    }
}

const TAIL_STRIPES: usize = 64;

impl IdentityTail {
    /// A tail holding at least `capacity` recent identities (and at most twice that).
    pub fn new(capacity: usize) -> Self {
        Self {
            stripes: (0..TAIL_STRIPES)
                .map(|_| Mutex::new(TailStripe::default()))
                .collect(),
            generation_capacity: (capacity / TAIL_STRIPES).max(16),
        }
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<TailStripe> {
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        &self.stripes[(hash as usize) % TAIL_STRIPES]
    }

    /// Whether the tail holds an identity under `key`.
    pub fn knows(&self, key: &[u8]) -> bool {
        self.stripe(key)
            .lock()
            .is_ok_and(|stripe| stripe.get(key).is_some())
    }

    /// What the tail knows of the identity stored under `key`, or `None`.
    fn check(&self, key: &[u8], digest: u128) -> Option<IdentityCheck> {
        let stripe = self.stripe(key).lock().ok()?;
        compare_digests(stripe.get(key), digest)
    }

    /// Forgets the identity of `entry` if the tail holds it with this digest: its batch was
    /// not committed, so a retry must not look like a duplicate.
    pub fn forget(&self, entry: &LedgerEntry) {
        let key = identity_key(&entry.identity());
        let digest = entry.event.payload_digest();
        if let Ok(mut guard) = self.stripe(&key).lock() {
            let stripe = &mut *guard;
            for generation in [&mut stripe.current, &mut stripe.previous] {
                if generation.get(&key[..]) == Some(&digest) {
                    generation.remove(&key[..]);
                }
            }
        }
    }

    /// Records the identity under `key`, unless another writer did first: then what that
    /// writer recorded decides.
    fn insert_if_absent(&self, key: &[u8], digest: u128) -> Result<(), IdentityCheck> {
        let Ok(mut stripe) = self.stripe(key).lock() else {
            return Ok(()); // A panicked writer: the store stays the authority.
        };
        if let Some(check) = compare_digests(stripe.get(key), digest) {
            return Err(check);
        }
        if stripe.current.len() >= self.generation_capacity {
            stripe.previous = std::mem::take(&mut stripe.current);
        }
        stripe.current.insert(key.into(), digest);
        Ok(())
    }
}

/// The identity index of one shard's batch: the shared tail, then the store; new identities
/// are added to the batch being built so they commit with the entries they identify.
pub struct StoreIdentityIndex<'a> {
    /// The shared tail.
    pub tail: &'a IdentityTail,
    /// The store behind it.
    pub store: &'a dyn Store,
    /// The batch the new identities go into.
    pub batch: &'a mut WriteBatch,
    /// When a recorded identity may be forgotten: event time plus this.
    pub retention_ms: i64,
    /// New identities to schedule for expiry, written once the batch is complete.
    pub expiring: &'a mut ExpiringIdentities,
    /// Values read ahead for the message being applied (one batched read from a remote
    /// store), consulted before the store.
    pub read_ahead: &'a ReadAhead,
}

/// Values of keys read in one batched call before a message is applied (`None`: absent),
/// so that a remote store is asked once per message rather than once per event.
pub type ReadAhead = HashMap<Vec<u8>, Option<Vec<u8>>>;

fn decode_digest(key: &[u8], bytes: &[u8]) -> Result<u128, LookupFailed> {
    match bytes {
        [version, digest @ ..] if READABLE_VERSIONS.contains(version) && digest.len() == 16 => Ok(
            u128::from_le_bytes(digest.try_into().expect("16 bytes checked")),
        ),
        _ => Err(LookupFailed {
            what: "event identity",
            message: format!("identity record under key {key:?} is malformed"),
        }),
    }
}

impl IdentityIndex for StoreIdentityIndex<'_> {
    fn check_and_record(
        &mut self,
        entry: &LedgerEntry,
        digest: u128,
    ) -> Result<IdentityCheck, LookupFailed> {
        let key = identity_key(&entry.identity());
        if let Some(check) = self.tail.check(&key, digest) {
            return Ok(check);
        }
        let stored = match self.read_ahead.get(&key) {
            Some(value) => value.clone(),
            None => self.store.get(&key).map_err(|e| LookupFailed {
                what: "event identity",
                message: e.to_string(),
            })?,
        };
        let stored = stored
            .map(|bytes| decode_digest(&key, &bytes))
            .transpose()?;
        if let Some(check) = compare_digests(stored, digest) {
            return Ok(check);
        }
        if let Err(check) = self.tail.insert_if_absent(&key, digest) {
            return Ok(check);
        }
        self.expiring.add(
            entry.event.event_time.plus_ms(self.retention_ms),
            key.clone(),
        );
        let mut value = Vec::with_capacity(17);
        value.push(FORMAT_VERSION);
        value.extend_from_slice(&digest.to_le_bytes());
        self.batch.put(key, value);
        Ok(IdentityCheck::New)
    }
}

impl From<PersistError> for crate::error::EngineError {
    fn from(error: PersistError) -> Self {
        use crate::error::EngineError;
        match error {
            PersistError::Store(store) => EngineError::Store(store),
            PersistError::Lookup(lookup) => EngineError::IdentityLookup(lookup.to_string()),
            corrupt @ PersistError::Corrupt { .. } => EngineError::Corrupt(corrupt.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{Event, EventKind, Source};
    use crate::ledger::RecordedDeltas;

    fn event(id: &str, kind: EventKind, quantity: i64, time: Timestamp) -> Event {
        Event::new(
            id,
            Source::StoreInventory,
            kind,
            PairKey::new(42, 7),
            quantity,
            time,
        )
    }

    /// The snapshot and log record of the format fixture: changing how either is written
    /// changes the bytes, and the fixture test fails until the format version is raised.
    fn fixture_records() -> (Snapshot, LogRecord) {
        let t = Timestamp(1_772_445_600_000);
        let config = LedgerConfig::default();
        let mut state = EntityState::default();
        let mut history = RecordedDeltas::default();
        for (entry, arrival) in [
            (event("c1", EventKind::Count, 10, t), t),
            (
                event("s1", EventKind::Sale, 2, t.plus_ms(300_000)),
                t.plus_ms(1_200_000),
            ),
        ]
        .map(|(event, arrival)| {
            (
                LedgerEntry {
                    event,
                    role: EntryRole::Primary,
                },
                arrival,
            )
        }) {
            state
                .apply_admitted(&entry, arrival, &config, &mut history)
                .expect("in-memory history");
            history.record(&entry);
        }
        let record = LogRecord::Applied {
            entry: LedgerEntry {
                event: event("r1", EventKind::Receipt, 5, t.plus_ms(600_000)),
                role: EntryRole::Primary,
            },
            arrival: t.plus_ms(660_000),
        };
        (
            Snapshot {
                log_position: 2,
                state,
            },
            record,
        )
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An expiry record lists keys of its own partition only, so a partition's owner never
    /// deletes another partition's identities.
    #[test]
    fn identity_expiry_records_stay_in_their_partition() {
        let identity = |event_id: &str, sku: u64| {
            let pair = PairKey::new(sku, 7);
            let entry = LedgerEntry {
                event: Event::new(
                    event_id.to_owned(),
                    Source::Pos,
                    EventKind::Sale,
                    pair,
                    1,
                    Timestamp(0),
                ),
                role: EntryRole::Primary,
            };
            identity_key(&entry.identity())
        };
        let first = identity("a", 1);
        let other = (2..1000)
            .map(|sku| identity("b", sku))
            .find(|key| keys::key_partition(key) != keys::key_partition(&first))
            .expect("a pair in another partition");
        let mut expiring = ExpiringIdentities::default();
        expiring.add(Timestamp(MINUTE_MS), first.clone());
        expiring.add(Timestamp(MINUTE_MS), other.clone());
        let mut batch = WriteBatch::new();
        expiring.write_into(&mut batch);
        let store = stockgrid_storage::MemoryStore::new();
        store.commit(batch).expect("commit");
        let records = store.scan(&[], &[0xff; 4], 100).expect("scan");
        assert_eq!(records.len(), 2, "one record per partition");
        for (key, value) in records {
            let listed: Vec<Vec<u8>> = decode("expiry list", &key, &value).expect("decodes");
            assert!(
                listed
                    .iter()
                    .all(|target| keys::key_partition(target) == keys::key_partition(&key)),
                "{listed:?} under {key:?}"
            );
        }
    }

    #[test]
    fn on_disk_format_matches_the_fixture() {
        let fixture = include_str!("../fixtures/format-v3.txt");
        let mut lines = fixture.lines().filter(|l| !l.starts_with('#'));
        let (snapshot, record) = fixture_records();
        assert_eq!(
            lines.next(),
            Some(hex(&encode(&snapshot)).as_str()),
            "snapshot bytes changed: raise FORMAT_VERSION"
        );
        assert_eq!(
            lines.next(),
            Some(hex(&encode(&record)).as_str()),
            "log record bytes changed: raise FORMAT_VERSION"
        );
    }

    /// The fixture of an older version: its snapshot and log record, decoded.
    fn decode_fixture(fixture: &str) -> (Snapshot, LogRecord) {
        let mut lines = fixture.lines().filter(|l| !l.starts_with('#'));
        let unhex = |text: &str| -> Vec<u8> {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
                .collect()
        };
        let snapshot = decode("snapshot", b"s", &unhex(lines.next().expect("snapshot")))
            .expect("snapshot decodes");
        let record = decode("log record", b"e", &unhex(lines.next().expect("record")))
            .expect("log record decodes");
        (snapshot, record)
    }

    #[test]
    fn version_one_values_still_decode() {
        let (snapshot, decoded) = decode_fixture(include_str!("../fixtures/format-v1.txt"));
        let (mut expected, record) = fixture_records();
        // Everything but the belief statistics and the claims, which version 1 did not keep.
        expected.state.belief = Default::default();
        expected.state.claims = Default::default();
        assert_eq!(snapshot, expected);
        assert_eq!(decoded, record);
    }

    #[test]
    fn version_two_values_still_decode() {
        let (snapshot, decoded) = decode_fixture(include_str!("../fixtures/format-v2.txt"));
        let (mut expected, record) = fixture_records();
        // Everything but the source claims, which version 2 did not keep.
        expected.state.claims = Default::default();
        assert_eq!(snapshot, expected);
        assert_eq!(decoded, record);
    }

    #[test]
    fn stored_values_of_another_version_are_refused() {
        let (snapshot, _) = fixture_records();
        let mut bytes = encode(&snapshot);
        bytes[0] = FORMAT_VERSION + 1;
        let error = decode::<Snapshot>("snapshot", b"s", &bytes).expect_err("unknown version");
        assert!(
            error.to_string().contains("unknown format version"),
            "{error}"
        );
        assert!(decode::<Snapshot>("snapshot", b"s", &[]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// A pair's log keys sort by time, then position, whatever the values (signed times
        /// included), and all lie under the pair's log prefix: what recovery's ordered scans
        /// rely on. (Across pairs, keys sort by partition first: see `crate::keys`.)
        #[test]
        fn log_keys_sort_like_their_fields(
            sku in any::<u64>(),
            location in any::<u32>(),
            a in (any::<i64>(), any::<u64>()),
            b in (any::<i64>(), any::<u64>()),
        ) {
            let pair = PairKey::new(sku, location);
            let key = |(time, position): (i64, u64)| crate::keys::log_key(pair, Timestamp(time), position);
            prop_assert_eq!(key(a).cmp(&key(b)), a.cmp(&b));
            let prefix = crate::keys::log_prefix(pair);
            prop_assert!(key(a).starts_with(&prefix) && key(b).starts_with(&prefix));
        }

        /// Log records and snapshots decode to what was encoded.
        #[test]
        fn records_round_trip(quantity in -1_000i64..1_000, time in 0i64..4_000_000_000_000, id in "[a-z0-9-]{1,40}") {
            let kind = if quantity < 0 { EventKind::Adjustment } else { EventKind::Receipt };
            let entry = LedgerEntry { event: event(&id, kind, quantity, Timestamp(time)), role: EntryRole::Primary };
            let record = LogRecord::Applied { entry: entry.clone(), arrival: Timestamp(time + 1) };
            prop_assert_eq!(decode::<LogRecord>("log record", b"e", &encode(&record)).expect("decode"), record);
            let mut state = EntityState::default();
            state.apply_admitted(&entry, Timestamp(time + 1), &LedgerConfig::default(), &mut RecordedDeltas::default()).expect("apply");
            let snapshot = Snapshot { log_position: 1, state };
            prop_assert_eq!(decode::<Snapshot>("snapshot", b"s", &encode(&snapshot)).expect("decode"), snapshot);
        }
    }
}
