//! The shard actor: a supervised ractor actor owning the entities of many pairs.
//!
//! One ractor actor per pair costs ~7.8 KB, so pairs are virtual: every resident pair is one
//! entry of the engine's concurrent map ([`Residents`]: the pair's durable [`Resident`]
//! image behind an `Arc`, what lookups decide from, with the shard's bookkeeping beside the
//! state), there is no second copy in the shard. A shard activates an entity on first touch
//! (snapshot plus log tail from the store) and passivates it when idle (snapshot, then out of
//! memory). While it handles a message it works on the pairs that message touches
//! ([`Entity`], copy-on-write of the map's image) and puts them back once they are durable.
//! The shard is the single writer of its pairs; its mailbox order is their order.
//!
//! Runtime semantics (what a caller may rely on):
//! - Messages are handled one at a time in mailbox order, so the entries of one pair apply
//!   in the order they were sent.
//! - An `Apply` is answered only after its whole batch (log records, identities, snapshots)
//!   is committed and fsync'd through the group committer; the snapshots of its pairs are
//!   published to the shared map before the answer. An answer therefore means durable, and
//!   lookups (which read only the published snapshots) never see what is not durable.
//! - Lookups do not enter the mailbox; it carries writes, holds, activations of cold pairs
//!   (at most a few in flight per shard) and ops calls.
//! - If handling fails (a store error), the touched entities are dropped from memory and
//!   their identities from the tail, so memory never runs ahead of the disk; they reload from
//!   the store on next touch.
//! - If handling panics, the supervisor restarts the shard, which first drops its pairs from
//!   the map (they reload from the store, holds included), so nothing acknowledged is lost and
//!   nothing unacknowledged is half-applied. See [`crate::supervision`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use stockgrid_inference::belief::BeliefStats;
use stockgrid_storage::{Store, WriteBatch};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::audit::Decided;
use crate::audit::{NodeMoment, digest_inputs, put_record};
use crate::config::EngineConfig;
use crate::counters::EngineCounters;
use crate::decision::{Decision, spare_units};
use crate::domain::{EventKind, PairKey, Surface};
use crate::due::Committer;
use crate::error::EngineError;
use crate::keys::{
    checkpoint_key, deadline_key, expiry_key, hold_key, identity_key, log_key, quarantine_key,
    settlement_key, snapshot_key,
};
use crate::ledger::{
    EntityState, EntryRole, LedgerEntry, LedgerView, Outcome, QuarantineReason, ingest,
};
use crate::persist::{
    self, IdentityTail, LoadedEntity, LogRecord, QuarantineRecord, ReadAhead, Snapshot,
    StoreIdentityIndex, encode, load_entity,
};
use crate::policy::{Ask, DecisionContext};
use crate::reservation::{Hold, ReservationLine, Settlement, load_holds};
use crate::shared::SharedDirectory;
use crate::time::{Clock, Timestamp};

/// An entry with its arrival time, as shards receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrivedEntry {
    /// The entry.
    pub entry: LedgerEntry,
    /// When its event arrived.
    pub arrival: Timestamp,
}

/// What a caller learns about one pair for ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityReport {
    /// The ledger.
    pub view: LedgerView,
    /// Quarantined entries still retained (oldest first, at most 100).
    pub quarantined: Vec<QuarantineRecord>,
    /// Log records written for the pair.
    pub log_position: u64,
    /// Reservations holding units of the pair.
    pub holds: Vec<Hold>,
    /// The stock belief's statistics.
    pub belief: BeliefStats,
}

/// A shard's answer to a hold request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HoldOutcome {
    /// Every line is held (durably).
    Held,
    /// A line cannot be promised; nothing was held.
    Refused {
        /// The line's index in the reservation.
        line: usize,
        /// Units spare after reservations and safety stock.
        spare: i64,
        /// The decision that refused it.
        decision: Decision,
    },
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// A resident pair as lookups and its shard share it: its durable snapshot, and the shard's
/// bookkeeping (never stored). Reads see it through `Deref` as the [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resident {
    /// The ledger state at its log position: what lookups decide from.
    pub snapshot: Snapshot,
    /// Log records written since the latest snapshot ([`NEVER_SNAPSHOTTED`]: no snapshot yet).
    pub records_since_snapshot: u32,
    /// When its shard last touched it, in compact seconds.
    pub last_touched: u32,
    /// When a compaction may next delete something, in compact seconds (0: nothing logged):
    /// the oldest stored log record's time until a compaction ran, then the time of the
    /// oldest checkpoint newer than the one it kept. A snapshot asks the store to compact only
    /// once this is past the retention cut-off.
    pub compaction_due_seconds: u32,
}

impl std::ops::Deref for Resident {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// A shared [`Resident`]: an `Arc` without a weak count (8 bytes less for each of a billion
/// pairs).
pub type SharedResident = triomphe::Arc<Resident>;

/// Every resident pair of the node, keyed with a fast seeded hash (a lookup hashes its pair
/// once per item: the default SipHash was a tenth of a batch's time). The one map of entity
/// state: a value is only ever replaced by its pair's shard, with a state that is durable.
pub type Residents = DashMap<PairKey, SharedResident, foldhash::fast::RandomState>;

/// The shard of `pair` among `shard_count` (a stable hash).
pub fn shard_of(pair: PairKey, shard_count: usize) -> usize {
    (pair.stable_hash() % shard_count.max(1) as u64) as usize
}

/// Messages a shard handles. Each carries the mailbox permit its sender acquired; dropping
/// the message (handled or not) frees the slot.
#[derive(Debug)]
pub enum ShardMessage {
    /// Apply entries in order; answer one outcome per entry once durable.
    Apply {
        /// The entries.
        entries: Arc<Vec<ArrivedEntry>>,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<Vec<Outcome>>,
    },
    /// Record an entry whose handling panicked as quarantined, without applying it.
    QuarantinePanicked {
        /// The entry.
        entry: ArrivedEntry,
        /// The panic message.
        message: String,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<()>,
    },
    /// Make pairs resident (from the store) and publish their snapshots for lookups; answer
    /// each one's snapshot, in order (`None`: never seen).
    Activate {
        /// The pairs.
        pairs: Vec<PairKey>,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<Vec<Option<SharedResident>>>,
    },
    /// The full state of a pair for ops (`None`: never seen).
    Inspect {
        /// The pair.
        pair: PairKey,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<Option<EntityReport>>,
    },
    /// Snapshot and drop entities untouched since `idle_before`; answer how many.
    Passivate {
        /// The idleness cut-off.
        idle_before: Timestamp,
        /// This shard's pairs the engine found idle (checked again here).
        candidates: Vec<PairKey>,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<usize>,
    },
    /// Drop, without writing anything, every entity and hold of these partitions (this node
    /// no longer owns them, or owned them before: the store has their state); answer how
    /// many entities went.
    Forget {
        /// The partitions.
        partitions: Arc<std::collections::HashSet<u16>>,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<usize>,
    },
    /// Hold units for a reservation at this shard's pairs: all lines or none.
    Hold {
        /// The reservation.
        reservation_id: Arc<str>,
        /// The lines owned by this shard, with their index in the reservation.
        lines: Vec<(usize, ReservationLine)>,
        /// The surface whose decision must grant every line.
        surface: Surface,
        /// When the reaper frees the holds if nothing else does.
        deadline: Timestamp,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<HoldOutcome>,
    },
    /// Free a reservation's holds at these pairs (those it still has).
    Unhold {
        /// The reservation.
        reservation_id: Arc<str>,
        /// The pairs.
        pairs: Vec<PairKey>,
        /// Released ITEM_NOT_FOUND: log the evidence for each pair's belief.
        not_found: bool,
        /// Mailbox slot.
        permit: OwnedSemaphorePermit,
        /// The answer.
        reply: Reply<()>,
    },
}

/// Everything a shard shares with the engine and its supervisor. It outlives restarts.
#[derive(Debug)]
pub struct ShardContext {
    /// The store (reads).
    pub store: Arc<dyn Store>,
    /// The group committer (writes).
    pub committer: Committer,
    /// Every resident entity (of every shard): what lookups decide from.
    pub published: Arc<Residents>,
    /// This shard's number, among `shard_count`.
    pub shard_index: usize,
    /// Shards of the engine.
    pub shard_count: usize,
    /// Recent identities.
    pub identities: Arc<IdentityTail>,
    /// Configuration.
    pub config: Arc<EngineConfig>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The entries of the `Apply` being handled, for the supervisor if it panics.
    pub in_flight: Mutex<Option<Arc<Vec<ArrivedEntry>>>>,
    /// The engine's counters.
    pub counters: Arc<EngineCounters>,
    /// The decision policy and location facts.
    pub decisions: Arc<DecisionContext>,
}

/// A pair the message being handled works on: the map's image, copied on its first change
/// (lookups go on reading the published one until this one is durable and put back).
#[derive(Clone, Debug)]
pub struct Entity {
    resident: SharedResident,
    /// The state changed since it was taken from the map: it goes back only once durable.
    changed: bool,
}

/// [`Resident::records_since_snapshot`] of a pair with no snapshot yet.
pub const NEVER_SNAPSHOTTED: u32 = u32::MAX;

impl Entity {
    /// The ledger state.
    pub fn state(&self) -> &EntityState {
        &self.resident.snapshot.state
    }

    /// Log records written for the pair.
    pub fn log_position(&self) -> u64 {
        self.resident.snapshot.log_position
    }

    /// The image, as lookups will see it.
    pub fn snapshot(&self) -> &Snapshot {
        &self.resident.snapshot
    }

    /// The state, to change (copied first if lookups may still read the published one).
    fn state_mut(&mut self) -> &mut EntityState {
        self.changed = true;
        &mut triomphe::Arc::make_mut(&mut self.resident).snapshot.state
    }

    /// The shard's bookkeeping, to change (copied first, like the state).
    fn meta_mut(&mut self) -> &mut Resident {
        triomphe::Arc::make_mut(&mut self.resident)
    }

    fn needs_snapshot(&self, every_records: u64) -> bool {
        let since = self.resident.records_since_snapshot;
        since == NEVER_SNAPSHOTTED && self.log_position() > 0
            || since != NEVER_SNAPSHOTTED && u64::from(since) >= every_records
    }

    fn logged(&mut self) {
        self.changed = true;
        let resident = self.meta_mut();
        resident.snapshot.log_position += 1;
        if resident.records_since_snapshot != NEVER_SNAPSHOTTED {
            resident.records_since_snapshot += 1;
        }
    }

    fn logged_at(&mut self, time: Timestamp) {
        if self.resident.compaction_due_seconds == 0 {
            self.meta_mut().compaction_due_seconds = time.to_compact_seconds().max(1);
        }
    }
}

/// One decision of an entity by the policy, with its moment and, with `digest`, the digest
/// of its inputs and what its record needs to be replayed: the one path of lookups and
/// reservation holds. The shared facts are read once, so the answer, the digest and the
/// record see the same ones while other shards keep learning.
pub(crate) fn decide_entity(
    decisions: &DecisionContext,
    config: &EngineConfig,
    snapshot: Option<&Snapshot>,
    ask: Ask,
    reservation: Option<&Arc<str>>,
    digest: bool,
) -> Decided {
    let state = snapshot.map(|snapshot| &snapshot.state);
    let shared = decisions.shared.shared(ask.pair);
    let answer = decisions.decide(state, &shared, ask, config, reservation);
    Decided {
        decision: answer.decision,
        version: state.map_or(0, |state| state.applied_entries),
        features: answer.features,
        time: ask.now,
        inputs_digest: digest.then(|| digest_inputs(state, &shared)),
        moment: digest.then(|| NodeMoment::Entity {
            log_position: snapshot.map(|snapshot| snapshot.log_position),
            shared: Box::new(shared),
            threshold: answer.threshold,
        }),
    }
}

/// Logs (and applies) the evidence that a pick for `units` found fewer at `pair`.
fn log_not_found(
    batch: &mut WriteBatch,
    pair: PairKey,
    entity: &mut Entity,
    units: i64,
    record_before: i64,
    time: Timestamp,
) {
    let units = u32::try_from(units.max(0)).unwrap_or(u32::MAX);
    entity
        .state_mut()
        .observe_not_found(units, record_before, time);
    append_log(
        batch,
        pair,
        entity,
        &LogRecord::NotFound {
            units,
            record_before,
            time,
        },
    );
}

/// Appends a record that is not an arrival (its effect already applied in memory) to the
/// pair's log, at the entity's latest arrival.
fn append_log(batch: &mut WriteBatch, pair: PairKey, entity: &mut Entity, record: &LogRecord) {
    entity.logged();
    let log_time = entity.state().latest_arrival;
    entity.logged_at(log_time);
    batch.put(
        log_key(pair, log_time, entity.log_position()),
        encode(record),
    );
}

/// The shard actor (stateless: its state is [`ShardState`]).
#[derive(Debug)]
pub struct Shard;

/// A shard's private state: the pairs the message being handled works on, and holds.
#[derive(Debug)]
pub struct ShardState {
    context: Arc<ShardContext>,
    /// The pairs the message being handled touched, taken from the map or the store; put
    /// back (or forgotten) before the next message.
    entities: HashMap<PairKey, Entity>,
    /// Reservation holds of resident entities that have any (most have none, so they are
    /// kept beside the entities rather than in them).
    holds: HashMap<PairKey, Vec<Hold>>,
    /// What the message being applied will read from a remote store, read in one call
    /// before it (empty for a local store, and between messages).
    read_ahead: Arc<ReadAhead>,
}

impl Actor for Shard {
    type Msg = ShardMessage;
    type State = ShardState;
    type Arguments = Arc<ShardContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        context: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A (re)started shard begins empty: its pairs leave the map (a panic may have lost
        // their holds) and activate from the store on first touch.
        context
            .published
            .retain(|pair, _| shard_of(*pair, context.shard_count) != context.shard_index);
        Ok(ShardState {
            context,
            entities: HashMap::new(),
            holds: HashMap::new(),
            read_ahead: Arc::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMessage::Apply {
                entries,
                permit,
                reply,
            } => {
                if let Ok(mut slot) = state.context.in_flight.lock() {
                    *slot = Some(Arc::clone(&entries));
                }
                let result = state.apply(&entries).await;
                if let Ok(mut slot) = state.context.in_flight.lock() {
                    *slot = None;
                }
                let _ = reply.send(result);
                drop(permit);
            }
            ShardMessage::QuarantinePanicked {
                entry,
                message,
                permit,
                reply,
            } => {
                let _ = reply.send(state.quarantine_panicked(&entry, message).await);
                drop(permit);
            }
            ShardMessage::Activate {
                pairs,
                permit,
                reply,
            } => {
                let _ = reply.send(state.activate(&pairs));
                drop(permit);
            }
            ShardMessage::Inspect {
                pair,
                permit,
                reply,
            } => {
                let _ = reply.send(state.inspect(pair));
                drop(permit);
            }
            ShardMessage::Passivate {
                idle_before,
                candidates,
                permit,
                reply,
            } => {
                let _ = reply.send(state.passivate(idle_before, candidates).await);
                drop(permit);
            }
            ShardMessage::Forget {
                partitions,
                permit,
                reply,
            } => {
                let _ = reply.send(Ok(state.forget_partitions(&partitions)));
                drop(permit);
            }
            ShardMessage::Hold {
                reservation_id,
                lines,
                surface,
                deadline,
                permit,
                reply,
            } => {
                let _ = reply.send(state.hold(&reservation_id, &lines, surface, deadline).await);
                drop(permit);
            }
            ShardMessage::Unhold {
                reservation_id,
                pairs,
                not_found,
                permit,
                reply,
            } => {
                let _ = reply.send(state.unhold(&reservation_id, &pairs, not_found).await);
                drop(permit);
            }
        }
        state.put_back_touched();
        Ok(())
    }
}

impl ShardState {
    fn now(&self) -> Timestamp {
        self.context.clock.now()
    }

    /// The resident entity of `pair`, activated from the store if needed (`None` if the
    /// store knows nothing of it and `create` is false).
    fn entity(&mut self, pair: PairKey, create: bool) -> Result<Option<&mut Entity>, EngineError> {
        if !self.entities.contains_key(&pair)
            && let Some(resident) = self.context.published.get(&pair).map(|r| r.clone())
        {
            self.entities.insert(
                pair,
                Entity {
                    resident,
                    changed: false,
                },
            );
        }
        if !self.entities.contains_key(&pair) {
            let never_seen = !self.read_ahead.is_empty()
                && self.read_ahead.get(&snapshot_key(pair)) == Some(&None);
            let loaded = if never_seen {
                LoadedEntity::default()
            } else {
                load_entity(
                    self.context.store.as_ref(),
                    pair,
                    &self.context.config.ledger,
                )?
            };
            if !loaded.found && !create {
                return Ok(None);
            }
            let mut entity = Entity {
                resident: SharedResident::new(Resident {
                    snapshot: Snapshot {
                        state: loaded.state,
                        log_position: loaded.log_position,
                    },
                    records_since_snapshot: if loaded.found {
                        u32::try_from(loaded.log_position - loaded.snapshot_position)
                            .unwrap_or(u32::MAX - 1)
                    } else {
                        NEVER_SNAPSHOTTED
                    },
                    last_touched: 0,
                    compaction_due_seconds: loaded
                        .oldest_log_time
                        .map_or(0, |t| t.to_compact_seconds().max(1)),
                }),
                changed: false,
            };
            // Reserved units are the sum of the stored holds, never a snapshot's copy.
            let holds = if loaded.found {
                load_holds(self.context.store.as_ref(), pair)?
            } else {
                Vec::new()
            };
            // Reserved units from the holds are part of the loaded (durable) image.
            triomphe::Arc::make_mut(&mut entity.resident)
                .snapshot
                .state
                .reserved_units = holds
                .iter()
                .fold(0i64, |sum, hold| sum.saturating_add(hold.units));
            if !holds.is_empty() {
                self.holds.insert(pair, holds);
            }
            self.entities.insert(pair, entity);
            self.debug_check_reserved(pair);
        }
        let touched = self.now().to_compact_seconds();
        let entity = self.entities.get_mut(&pair);
        if let Some(entity) = entity {
            if entity.resident.last_touched != touched {
                entity.meta_mut().last_touched = touched;
            }
            return Ok(Some(entity));
        }
        Ok(None)
    }

    /// For a remote store, reads in one call what applying `entries` would otherwise ask
    /// for one event at a time: the identities the tail does not hold, and the snapshot keys
    /// of pairs not in memory (absent: a pair never seen, created without another read).
    fn read_ahead(&self, entries: &[ArrivedEntry]) -> Result<ReadAhead, EngineError> {
        let store = &self.context.store;
        if !store.is_remote() {
            return Ok(ReadAhead::new());
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for arrived in entries {
            let identity = identity_key(&arrived.entry.identity());
            if !self.context.identities.knows(&identity) {
                keys.push(identity);
            }
            let pair = arrived.entry.target();
            if !self.entities.contains_key(&pair) && !self.context.published.contains_key(&pair) {
                keys.push(snapshot_key(pair));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(ReadAhead::new());
        }
        let asked: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let values = store.get_many(&asked)?;
        Ok(keys.into_iter().zip(values).collect())
    }

    async fn apply(&mut self, entries: &[ArrivedEntry]) -> Result<Vec<Outcome>, EngineError> {
        let mut batch = WriteBatch::new();
        let mut touched: Vec<PairKey> = Vec::new();
        let result = match self.read_ahead(entries) {
            Ok(read_ahead) => {
                self.read_ahead = Arc::new(read_ahead);
                let applied = self.apply_into(entries, &mut batch, &mut touched);
                self.read_ahead = Arc::default();
                applied
            }
            Err(error) => Err(error),
        };
        let committed = match result {
            Ok(outcomes) => self
                .context
                .committer
                .commit(batch)
                .await
                .map(|()| outcomes),
            Err(error) => Err(error),
        };
        match committed {
            Ok(outcomes) => {
                self.publish(&touched);
                Ok(outcomes)
            }
            Err(error) => {
                // Memory ran ahead of the disk: forget it and reload from the store later.
                self.forget(&touched);
                for arrived in entries {
                    self.context.identities.forget(&arrived.entry);
                }
                Err(error)
            }
        }
    }

    fn apply_into(
        &mut self,
        entries: &[ArrivedEntry],
        batch: &mut WriteBatch,
        touched: &mut Vec<PairKey>,
    ) -> Result<Vec<Outcome>, EngineError> {
        let context = Arc::clone(&self.context);
        let read_ahead = Arc::clone(&self.read_ahead);
        let config = &context.config;
        let now = self.now();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut expiring = persist::ExpiringIdentities::default();
        let mut pending_deltas: Vec<(PairKey, Timestamp, i64)> = Vec::new();
        for arrived in entries {
            if config.panic_on_event_id.as_deref() == Some(arrived.entry.event.event_id.as_str()) {
                panic!(
                    "injected fault while applying event {}",
                    arrived.entry.event.event_id
                );
            }
            let pair = arrived.entry.target();
            touched.push(pair);
            let entity = self.entity(pair, true)?.expect("created on demand");
            let mut identities = StoreIdentityIndex {
                tail: &context.identities,
                store: context.store.as_ref(),
                batch,
                retention_ms: config.identity_retention_ms(),
                expiring: &mut expiring,
                read_ahead: &read_ahead,
            };
            let mut history = persist::LogHistory {
                store: context.store.as_ref(),
                before_position: u64::MAX,
                future_skew_ms: config.ledger.future_skew_ms,
                pending: &pending_deltas,
                complete_from: None,
            };
            let before = SharedDirectory::before(entity.state());
            let outcome = ingest(
                entity.state_mut(),
                &arrived.entry,
                arrived.arrival,
                &config.ledger,
                &mut identities,
                &mut history,
            )
            .map_err(|e| EngineError::IdentityLookup(e.to_string()))?;
            let event = &arrived.entry.event;
            if outcome == Outcome::Applied
                && arrived.entry.role == EntryRole::Primary
                && !event.kind.is_observation()
            {
                pending_deltas.push((pair, event.event_time, event.signed_units()));
            }
            match &outcome {
                Outcome::Applied => {
                    context
                        .decisions
                        .shared
                        .learn(&arrived.entry, &before, entity.state());
                    entity.logged();
                    let record = LogRecord::Applied {
                        entry: arrived.entry.clone(),
                        arrival: arrived.arrival,
                    };
                    let log_time = entity.state().latest_arrival;
                    entity.logged_at(log_time);
                    batch.put(
                        log_key(pair, log_time, entity.log_position()),
                        encode(&record),
                    );
                }
                Outcome::Quarantined(reason) => {
                    write_quarantine(batch, config, pair, entity, arrived, reason.clone());
                }
                Outcome::Duplicate => {}
            }
            // A pair's first log record is written with its first snapshot (the invariant
            // `load_entity` relies on), and later ones every `snapshot_every_records`.
            if entity.needs_snapshot(config.snapshot_every_records) {
                write_snapshot(batch, context.store.as_ref(), config, pair, entity, now)?;
            }
            if outcome == Outcome::Applied
                && arrived.entry.role == EntryRole::Primary
                && event.kind == EventKind::Pick
                && let Some(reservation_id) = event.reservation_id.as_deref()
            {
                self.settle_pick(batch, pair, reservation_id, event.quantity);
            }
            outcomes.push(outcome);
        }
        expiring.write_into(batch);
        touched.sort_unstable();
        touched.dedup();
        Ok(outcomes)
    }

    /// A pick naming a reservation settles that reservation's hold at the pair; a pick
    /// naming an unknown or settled reservation applies as a plain delta and is counted.
    fn settle_pick(
        &mut self,
        batch: &mut WriteBatch,
        pair: PairKey,
        reservation_id: &str,
        picked: i64,
    ) {
        let counters = Arc::clone(&self.context.counters);
        match self.take_hold(pair, reservation_id) {
            Some(hold) => {
                if let Some(entity) = self.entities.get_mut(&pair) {
                    append_log(batch, pair, entity, &LogRecord::Freed { units: hold.units });
                }
                if let Some(experiment) = self.context.decisions.experiment() {
                    experiment.record_settlement(reservation_id, pair, picked >= hold.units);
                }
                if picked < hold.units {
                    // A short pick: fewer than the held units were on the shelf.
                    let time = self.now();
                    if let Some(entity) = self.entities.get_mut(&pair) {
                        let record_before = entity.state().on_hand_units + picked;
                        log_not_found(batch, pair, entity, hold.units, record_before, time);
                    }
                }
                batch.delete(hold_key(pair, reservation_id));
                batch.put(
                    settlement_key(reservation_id, pair),
                    encode(&Settlement {
                        picked,
                        held: hold.units,
                    }),
                );
                counters.settled_picks.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                counters.unmatched_picks.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    sku = pair.sku,
                    location = pair.location,
                    reservation_id,
                    "pick names no active hold of this pair; applied as a plain delta"
                );
            }
        }
    }

    /// Removes `reservation_id`'s hold at `pair` from memory, reserved units included.
    fn take_hold(&mut self, pair: PairKey, reservation_id: &str) -> Option<Hold> {
        let list = self.holds.get_mut(&pair)?;
        let position = list
            .iter()
            .position(|h| &*h.reservation_id == reservation_id)?;
        let hold = list.swap_remove(position);
        if list.is_empty() {
            self.holds.remove(&pair);
        }
        if let Some(entity) = self.entities.get_mut(&pair) {
            let state = entity.state_mut();
            state.reserved_units = state.reserved_units.saturating_sub(hold.units);
        }
        self.debug_check_reserved(pair);
        Some(hold)
    }

    fn holds_reservation(&self, pair: PairKey, reservation_id: &str) -> bool {
        self.holds
            .get(&pair)
            .is_some_and(|list| list.iter().any(|h| &*h.reservation_id == reservation_id))
    }

    /// Drops every entity and hold of `partitions` this shard has.
    fn forget_partitions(&mut self, partitions: &std::collections::HashSet<u16>) -> usize {
        let context = Arc::clone(&self.context);
        let mine = |pair: &PairKey| {
            shard_of(*pair, context.shard_count) == context.shard_index
                && partitions.contains(&crate::keys::partition_of(*pair))
        };
        let before = context.published.len();
        context.published.retain(|pair, _| !mine(pair));
        self.holds.retain(|pair, _| !mine(pair));
        self.entities.retain(|pair, _| !mine(pair));
        before.saturating_sub(context.published.len())
    }

    /// Drops entities from memory (and their holds and published snapshots): they reload
    /// from the store on next touch. Used when memory may have run ahead of the disk.
    fn forget(&mut self, pairs: &[PairKey]) {
        for pair in pairs {
            self.entities.remove(pair);
            self.holds.remove(pair);
            self.context.published.remove(pair);
        }
    }

    /// Puts the pairs the message touched back into the map: their state is what the store
    /// holds (those changed were published or forgotten already), and their bookkeeping
    /// (when last touched) is new. A pair still changed here belongs to a message that failed
    /// before its commit: it is forgotten, never published unsaved.
    fn put_back_touched(&mut self) {
        let touched: Vec<(PairKey, Entity)> = self.entities.drain().collect();
        for (pair, entity) in touched {
            if entity.changed {
                // A message that failed half-way (a store error): its change was never
                // durable, so the pair reloads from the store on next touch.
                self.holds.remove(&pair);
                self.context.published.remove(&pair);
            } else {
                self.context.published.insert(pair, entity.resident);
            }
        }
        // Give memory back after a large batch, keeping room for the usual one.
        self.entities.shrink_to(4096);
    }

    /// Grants every line (durably) or none: each line must be available on `surface` for
    /// its quantity on top of what is reserved. A line this reservation already holds (a
    /// retried request) counts as granted and is not held twice.
    async fn hold(
        &mut self,
        reservation_id: &Arc<str>,
        lines: &[(usize, ReservationLine)],
        surface: Surface,
        deadline: Timestamp,
    ) -> Result<HoldOutcome, EngineError> {
        let context = Arc::clone(&self.context);
        let now = self.now();
        let safety = &context.config.safety_stock;
        let mut to_grant = Vec::with_capacity(lines.len());
        for &(index, line) in lines {
            // Activate first: a passivated pair's holds are known only once it is loaded.
            self.entity(line.pair, false)?;
            if self.holds_reservation(line.pair, reservation_id) {
                continue;
            }
            let entity = self.entity(line.pair, false)?;
            let view = entity
                .as_ref()
                .map(|entity| entity.state().read_view(now, &context.config.ledger));
            let ask = Ask {
                pair: line.pair,
                quantity: line.quantity,
                surface,
                now,
            };
            // Reservations decide as lookups do: the policy's mode for the surface and region;
            // a granted line is a promise, so its inputs are digested for its record.
            let decided = decide_entity(
                &context.decisions,
                &context.config,
                entity.map(|entity| entity.snapshot()),
                ask,
                Some(reservation_id),
                true,
            );
            let decision = decided.decision;
            if !decision.available {
                let spare = view.map_or(0, |v| spare_units(&v, surface, safety));
                return Ok(HoldOutcome::Refused {
                    line: index,
                    spare,
                    decision,
                });
            }
            let decision_id = format!(
                "{reservation_id}{}",
                crate::keys::decision_id_suffix(line.pair)
            );
            let record = decided.record(
                decision_id,
                line.pair,
                line.quantity,
                surface,
                context.decisions.model_version(),
            );
            to_grant.push((line, record));
        }
        let mut batch = WriteBatch::new();
        let mut granted = Vec::with_capacity(to_grant.len());
        for (line, record) in to_grant {
            // Every granted line is a promise: its decision record is durable with the hold.
            put_record(&mut batch, &record, context.decisions.audit_retention_ms());
            let Some(entity) = self.entities.get_mut(&line.pair) else {
                continue; // Activated above; a pair is only missing if never seen.
            };
            let state = entity.state_mut();
            state.reserved_units = state.reserved_units.saturating_add(line.quantity);
            append_log(
                &mut batch,
                line.pair,
                entity,
                &LogRecord::Held {
                    units: line.quantity,
                },
            );
            self.holds.entry(line.pair).or_default().push(Hold {
                reservation_id: Arc::clone(reservation_id),
                units: line.quantity,
            });
            self.debug_check_reserved(line.pair);
            batch.put(hold_key(line.pair, reservation_id), encode(&line.quantity));
            batch.put(
                deadline_key(deadline, reservation_id, line.pair),
                Vec::new(),
            );
            granted.push(line.pair);
        }
        self.commit_reservation_change(batch, &granted).await?;
        Ok(HoldOutcome::Held)
    }

    /// Frees `reservation_id`'s holds at `pairs` (those it still has), durably.
    async fn unhold(
        &mut self,
        reservation_id: &str,
        pairs: &[PairKey],
        not_found: bool,
    ) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        let mut freed = Vec::new();
        let now = self.now();
        for &pair in pairs {
            // Activate, so a hold stored before a restart is known.
            if self.entity(pair, false)?.is_none() {
                continue;
            }
            if let Some(hold) = self.take_hold(pair, reservation_id) {
                batch.delete(hold_key(pair, reservation_id));
                if let Some(entity) = self.entities.get_mut(&pair) {
                    append_log(
                        &mut batch,
                        pair,
                        entity,
                        &LogRecord::Freed { units: hold.units },
                    );
                    if not_found {
                        // Released ITEM_NOT_FOUND: the held units were not on the shelf.
                        let record_before = entity.state().on_hand_units;
                        log_not_found(&mut batch, pair, entity, hold.units, record_before, now);
                    }
                }
                freed.push(pair);
            }
        }
        self.commit_reservation_change(batch, &freed).await
    }

    /// Commits a change of holds and publishes the new views; on failure forgets the pairs so
    /// they reload from the store.
    async fn commit_reservation_change(
        &mut self,
        batch: WriteBatch,
        pairs: &[PairKey],
    ) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.context.committer.commit(batch).await {
            Ok(()) => {
                self.publish(pairs);
                Ok(())
            }
            Err(error) => {
                self.forget(pairs);
                Err(error)
            }
        }
    }

    /// Publishes the resident state of `pairs` to lookups (after it is durable).
    fn publish(&mut self, pairs: &[PairKey]) {
        for pair in pairs {
            self.debug_check_reserved(*pair);
            if let Some(entity) = self.entities.remove(pair) {
                let log_position = entity.log_position();
                let previous = self.context.published.insert(*pair, entity.resident);
                // A pair's log only grows, and so does what lookups see of it.
                debug_assert!(
                    previous.is_none_or(|previous| previous.log_position <= log_position),
                    "published log position of {pair:?} went backwards"
                );
            }
        }
    }

    /// Debug builds: a resident pair's reserved units are the sum of its active holds, and
    /// never negative.
    fn debug_check_reserved(&self, pair: PairKey) {
        if cfg!(debug_assertions)
            && let Some(entity) = self.entities.get(&pair)
        {
            let held = self.holds.get(&pair).map_or(0i64, |holds| {
                holds
                    .iter()
                    .fold(0i64, |sum, hold| sum.saturating_add(hold.units))
            });
            debug_assert_eq!(
                entity.state().reserved_units,
                held,
                "reserved units of {pair:?} are not the sum of its holds"
            );
            debug_assert!(
                entity.state().reserved_units >= 0,
                "{pair:?} reserves below zero"
            );
        }
    }

    async fn quarantine_panicked(
        &mut self,
        arrived: &ArrivedEntry,
        message: String,
    ) -> Result<(), EngineError> {
        let context = Arc::clone(&self.context);
        let now = self.now();
        let pair = arrived.entry.target();
        let entity = self.entity(pair, true)?.expect("created on demand");
        let mut batch = WriteBatch::new();
        entity.state_mut().record_quarantine();
        write_quarantine(
            &mut batch,
            &context.config,
            pair,
            entity,
            arrived,
            QuarantineReason::HandlerPanicked { message },
        );
        if entity.needs_snapshot(context.config.snapshot_every_records) {
            write_snapshot(
                &mut batch,
                context.store.as_ref(),
                &context.config,
                pair,
                entity,
                now,
            )?;
        }
        let committed = context.committer.commit(batch).await;
        match committed {
            Ok(()) => self.publish(&[pair]),
            Err(_) => self.forget(&[pair]),
        }
        committed
    }

    /// Makes `pairs` resident and publishes their snapshots (those the store knows).
    fn activate(&mut self, pairs: &[PairKey]) -> Result<Vec<Option<SharedResident>>, EngineError> {
        let mut snapshots = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let resident = self
                .entity(*pair, false)?
                .map(|entity| entity.resident.clone());
            if resident.is_some() {
                self.publish(std::slice::from_ref(pair));
            }
            snapshots.push(resident);
        }
        Ok(snapshots)
    }

    fn inspect(&mut self, pair: PairKey) -> Result<Option<EntityReport>, EngineError> {
        let now = self.now();
        let context = Arc::clone(&self.context);
        let Some(entity) = self.entity(pair, false)? else {
            return Ok(None);
        };
        let view = entity.state().view(now, &context.config.ledger);
        let belief = entity.state().belief;
        let log_position = entity.log_position();
        let quarantined = persist::quarantined_records(context.store.as_ref(), pair, 100)?;
        Ok(Some(EntityReport {
            view,
            quarantined,
            log_position,
            holds: self.holds.get(&pair).cloned().unwrap_or_default(),
            belief,
        }))
    }

    /// Snapshots and drops the `candidates` still idle before `idle_before`.
    async fn passivate(
        &mut self,
        idle_before: Timestamp,
        candidates: Vec<PairKey>,
    ) -> Result<usize, EngineError> {
        let cutoff = idle_before.to_compact_seconds();
        let now = self.now();
        let config = Arc::clone(&self.context.config);
        let context = Arc::clone(&self.context);
        let idle: Vec<PairKey> = candidates
            .into_iter()
            .filter(|pair| {
                shard_of(*pair, context.shard_count) == context.shard_index
                    && context
                        .published
                        .get(pair)
                        .is_some_and(|resident| resident.last_touched < cutoff)
            })
            .collect();
        let mut batch = WriteBatch::new();
        for pair in &idle {
            let Some(resident) = context.published.get(pair).map(|r| r.clone()) else {
                continue;
            };
            let mut entity = Entity {
                resident,
                changed: false,
            };
            if entity.resident.records_since_snapshot > 0 {
                write_snapshot(
                    &mut batch,
                    self.context.store.as_ref(),
                    &config,
                    *pair,
                    &mut entity,
                    now,
                )?;
            }
        }
        if !batch.is_empty() {
            self.context.committer.commit(batch).await?;
        }
        self.forget(&idle);
        Ok(idle.len())
    }
}

fn write_quarantine(
    batch: &mut WriteBatch,
    config: &EngineConfig,
    pair: PairKey,
    entity: &mut Entity,
    arrived: &ArrivedEntry,
    reason: QuarantineReason,
) {
    entity.logged();
    let position = entity.log_position();
    let log_time = entity.state().latest_arrival.max(arrived.arrival);
    entity.logged_at(log_time);
    batch.put(
        log_key(pair, log_time, position),
        encode(&LogRecord::Quarantined {
            arrival: arrived.arrival,
        }),
    );
    let key = quarantine_key(pair, arrived.arrival, position);
    let record = QuarantineRecord {
        entry: arrived.entry.clone(),
        arrival: arrived.arrival,
        reason,
    };
    batch.put(
        expiry_key(
            arrived.arrival.plus_ms(config.quarantine_retention_ms),
            &key,
        ),
        Vec::new(),
    );
    batch.put(key, encode(&record));
}

fn write_snapshot(
    batch: &mut WriteBatch,
    store: &dyn Store,
    config: &EngineConfig,
    pair: PairKey,
    entity: &mut Entity,
    now: Timestamp,
) -> Result<(), EngineError> {
    let snapshot = encode(entity.snapshot());
    // The same image, kept as a checkpoint an audit rebuild may start from.
    batch.put(
        checkpoint_key(pair, entity.state().latest_arrival, entity.log_position()),
        snapshot.clone(),
    );
    batch.put(snapshot_key(pair), snapshot);
    let cutoff = Timestamp(now.0 - config.log_retention_ms);
    let due = Timestamp::from_compact_seconds(entity.resident.compaction_due_seconds);
    if due.is_some_and(|due| due < cutoff) {
        let compaction =
            persist::compact_log(store, batch, pair, cutoff, config.identity_retention_ms())?;
        // The checkpoint written above is not in the store yet: it is the next one due when
        // no stored checkpoint is newer than the one kept.
        let next_due = compaction.next_due.unwrap_or(entity.state().latest_arrival);
        entity.meta_mut().compaction_due_seconds = next_due.to_compact_seconds().max(1);
    }
    entity.meta_mut().records_since_snapshot = 0;
    Ok(())
}
