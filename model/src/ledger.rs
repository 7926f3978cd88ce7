//! The pure core: the deterministic ledger of one SKU-location pair.
//!
//! No runtime, no I/O, no clock of its own: every function takes the arrival time it needs.
//! The shard actor, recovery and replay all call the same [`ingest`] and
//! [`EntityState::apply_admitted`], so the service, a recovery and an audit replay compute
//! identical states. DESIGN.md "Ledger semantics" is implemented here exactly:
//!
//! - Deltas change on-hand by their signed units. Absolute observations (`count`,
//!   `snapshot`, `rfid_read`) from an anchoring source anchor on-hand at their event time T:
//!   deltas with event time <= T are taken as already counted, later deltas apply on top.
//!   The latest anchor wins, ordered by (event time, `count` > `snapshot` > `rfid_read`,
//!   larger event id, source).
//! - A `transfer_out` naming a counterparty adds in-transit units at the counterparty (an
//!   [`EntryRole::InboundAtCounterparty`] entry) until the matching `transfer_in`s arrive, or
//!   until its expected time plus a grace period, after which it is flagged overdue.
//! - An event later than the lateness bound, or dated beyond the future skew bound, is
//!   quarantined with its reason and never applied.
//!
//! # Why the result does not depend on arrival order, and where the window lives
//! On-hand is kept as one number: the latest anchor's units plus every applied delta dated
//! after it. A delta dated at or before the anchor changes nothing. When an anchor arrives
//! that becomes the latest, on-hand becomes its units plus the sum of the applied deltas dated
//! after it; that sum is asked of a [`DeltaHistory`], which the engine answers from the
//! pair's event log (and the batch being built), only when some applied delta is dated after
//! the anchor (`latest_delta_time`). So the window of deltas a late anchor may split lives on
//! disk, not in memory: a resident pair costs tens of bytes, not a list of its day.
//!
//! The history must hold every delta an admissible anchor can need: admission refuses events
//! dated at or before the floor (latest arrival - lateness bound - [`FOLD_MARGIN_MS`]), and the
//! engine keeps log records at least that long (`EngineConfig::validate`).

use serde::{Deserialize, Serialize};

use stockgrid_inference::belief::{BeliefStats, Observation, ObservationKind};
use stockgrid_inference::claims::SourceClaims;

use crate::domain::{Event, EventKind, PairKey, SOURCE_COUNT, Source};
use crate::partition::{Partition, PartitionScheme};
use crate::time::{HOUR_MS, MINUTE_MS, MaybeTime, Timestamp, human_duration};

/// How far behind the latest arrival an arrival may be processed; events dated at or before
/// the floor (latest arrival - lateness bound - this) are quarantined as late, so the delta
/// history an anchor needs is always retained.
pub const FOLD_MARGIN_MS: i64 = 5 * MINUTE_MS;

/// The ledger's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerConfig {
    /// An event arriving later than this after its event time is quarantined (default 24 h).
    pub lateness_bound_ms: i64,
    /// An event dated more than this after its arrival is quarantined (default 5 min).
    pub future_skew_ms: i64,
    /// Which sources' observations anchor on-hand (default: all).
    pub anchoring_sources: [bool; SOURCE_COUNT],
    /// Transit time assumed for a `transfer_out` without `expected_time` (default 72 h).
    pub default_transit_ms: i64,
    /// How long past its expected time a shipment still counts as in transit (default 24 h).
    pub transfer_grace_ms: i64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            lateness_bound_ms: 24 * HOUR_MS,
            future_skew_ms: 5 * MINUTE_MS,
            anchoring_sources: [true; SOURCE_COUNT],
            default_transit_ms: 72 * HOUR_MS,
            transfer_grace_ms: 24 * HOUR_MS,
        }
    }
}

impl LedgerConfig {
    /// Whether an observation from `source` anchors on-hand.
    pub fn anchors(&self, source: Source) -> bool {
        self.anchoring_sources[source.index()]
    }
}

/// Why an event was not applied although it was valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuarantineReason {
    /// It arrived later than the lateness bound after its event time.
    TooLate {
        /// Arrival minus event time.
        lateness_ms: i64,
        /// The bound in force.
        bound_ms: i64,
    },
    /// It is dated further in the future than the skew bound allows.
    FromTheFuture {
        /// Event time minus arrival.
        ahead_ms: i64,
        /// The bound in force.
        skew_ms: i64,
    },
    /// Its identity (source, event id, in its pair's partition) was seen with a different
    /// payload; the first wins.
    ConflictingDuplicate,
    /// Handling it made the shard panic; the shard was restarted without it.
    HandlerPanicked {
        /// The panic message.
        message: String,
    },
}

impl QuarantineReason {
    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            QuarantineReason::TooLate { .. } => "TOO_LATE",
            QuarantineReason::FromTheFuture { .. } => "FROM_THE_FUTURE",
            QuarantineReason::ConflictingDuplicate => "CONFLICTING_DUPLICATE",
            QuarantineReason::HandlerPanicked { .. } => "HANDLER_PANICKED",
        }
    }
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuarantineReason::TooLate {
                lateness_ms,
                bound_ms,
            } => {
                write!(
                    f,
                    "arrived {} after its event time, beyond the lateness bound of {}",
                    human_duration(*lateness_ms),
                    human_duration(*bound_ms)
                )
            }
            QuarantineReason::FromTheFuture { ahead_ms, skew_ms } => {
                write!(
                    f,
                    "dated {} after its arrival, beyond the future skew bound of {}",
                    human_duration(*ahead_ms),
                    human_duration(*skew_ms)
                )
            }
            QuarantineReason::ConflictingDuplicate => {
                f.write_str("same source and event id as an earlier event with a different payload")
            }
            QuarantineReason::HandlerPanicked { message } => {
                write!(f, "handling it panicked the shard: {message}")
            }
        }
    }
}

/// What happened to one arrival.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied to the ledger (possibly without changing on-hand: a covered delta, an older
    /// observation).
    Applied,
    /// Same identity and payload as an applied event: no effect.
    Duplicate,
    /// Not applied, kept with its reason.
    Quarantined(QuarantineReason),
}

/// Which entity an entry is for: the event's own pair, or the counterparty of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryRole {
    /// The event's own pair.
    Primary,
    /// A `transfer_out`'s effect at its counterparty: units now in transit towards it.
    InboundAtCounterparty,
}

/// Which of an event's entries one call applies. A grid's router sends a transfer whose two
/// pairs have two owners to both, each applying its own effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryScope {
    /// Every entry of the event.
    All,
    /// The event's own pair only.
    Primary,
    /// A `transfer_out`'s effect at its counterparty only.
    Counterparty,
}

impl EntryScope {
    /// Whether an entry in `role` is applied under this scope.
    pub fn applies(self, role: EntryRole) -> bool {
        match self {
            EntryScope::All => true,
            EntryScope::Primary => role == EntryRole::Primary,
            EntryScope::Counterparty => role == EntryRole::InboundAtCounterparty,
        }
    }
}

/// One unit of ledger input: an event in a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The event.
    pub event: Event,
    /// For which entity.
    pub role: EntryRole,
}

impl LedgerEntry {
    /// The entries one event produces: itself, plus the in-transit effect at the
    /// counterparty of a `transfer_out` that names one.
    pub fn expand(event: Event) -> Vec<LedgerEntry> {
        let inbound = (event.kind == EventKind::TransferOut
            && event.counterparty_location.is_some())
        .then(|| LedgerEntry {
            event: event.clone(),
            role: EntryRole::InboundAtCounterparty,
        });
        std::iter::once(LedgerEntry {
            event,
            role: EntryRole::Primary,
        })
        .chain(inbound)
        .collect()
    }

    /// The pair of the in-transit effect `event` has at its counterparty, if it has one
    /// (what [`LedgerEntry::expand`] adds, without building it).
    pub fn counterparty_target(event: &Event) -> Option<PairKey> {
        match (event.kind, event.counterparty_location) {
            (EventKind::TransferOut, Some(counterparty)) => {
                Some(PairKey::new(event.pair.sku, counterparty))
            }
            _ => None,
        }
    }

    /// The pair whose entity applies this entry.
    pub fn target(&self) -> PairKey {
        match (self.role, self.event.counterparty_location) {
            (EntryRole::InboundAtCounterparty, Some(counterparty)) => {
                PairKey::new(self.event.pair.sku, counterparty)
            }
            _ => self.event.pair,
        }
    }

    /// The dedup identity of the entry: (source, role, event id), in the partition of the
    /// pair that applies it.
    pub fn identity(&self) -> Identity {
        Identity {
            source: self.event.source,
            role: self.role,
            event_id: self.event.event_id.clone(),
            partition: PartitionScheme::STANDARD.partition(self.target()),
        }
    }
}

/// The identity exactly-once is defined on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The feed.
    pub source: Source,
    /// The role of the entry (a transfer's counterparty effect has its own identity).
    pub role: EntryRole,
    /// Unique within the source (and dedup is scoped to the partition below).
    pub event_id: String,
    /// The partition of the pair applying the entry: identities are scoped to it (DESIGN.md
    /// "Storage"), so an event id reused by the same source at a pair of another partition
    /// is a new identity there, not a conflict.
    pub partition: Partition,
}

/// What the identity index knows of an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityCheck {
    /// Never seen (now recorded).
    New,
    /// Seen with the same payload.
    Duplicate,
    /// Seen with a different payload.
    Conflict,
}

/// Remembers identities and their payload digests for dedup. The engine's implementation
/// keeps a small in-memory tail in front of the store; tests use a plain map.
pub trait IdentityIndex {
    /// Looks the entry's identity up; if it is new, records it with `digest` (the event's
    /// [`Event::payload_digest`]) before returning.
    fn check_and_record(
        &mut self,
        entry: &LedgerEntry,
        digest: u128,
    ) -> Result<IdentityCheck, LookupFailed>;
}

/// The outcome of comparing a payload digest with the one known for its identity.
pub fn compare_digests(known: Option<u128>, digest: u128) -> Option<IdentityCheck> {
    known.map(|known| {
        if known == digest {
            IdentityCheck::Duplicate
        } else {
            IdentityCheck::Conflict
        }
    })
}

impl<S: std::hash::BuildHasher> IdentityIndex for std::collections::HashMap<Identity, u128, S> {
    fn check_and_record(
        &mut self,
        entry: &LedgerEntry,
        digest: u128,
    ) -> Result<IdentityCheck, LookupFailed> {
        match self.entry(entry.identity()) {
            std::collections::hash_map::Entry::Occupied(known) => {
                Ok(compare_digests(Some(*known.get()), digest).unwrap_or(IdentityCheck::New))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(digest);
                Ok(IdentityCheck::New)
            }
        }
    }
}

/// The belief's name for an observation kind (`count`, `rfid_read`; anything else anchoring is
/// a feed snapshot).
pub fn observation_kind(kind: EventKind) -> ObservationKind {
    match kind {
        EventKind::Count => ObservationKind::Count,
        EventKind::RfidRead => ObservationKind::RfidRead,
        _ => ObservationKind::Snapshot,
    }
}

/// The latest anchor: an absolute observation on-hand is measured from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// When it was observed.
    pub event_time: Timestamp,
    /// `count`, `snapshot` or `rfid_read`.
    pub kind: EventKind,
    /// Its source.
    pub source: Source,
    /// Its event id (breaks ties at the same instant and rank).
    pub event_id: Box<str>,
    /// The units it observed (an event's units are within +/-`MAX_EVENT_UNITS`, so they fit;
    /// stored as `i64` would be).
    pub units: i32,
}

impl Anchor {
    fn precedence(&self) -> (Timestamp, u8, &str, Source) {
        (
            self.event_time,
            self.kind.observation_rank(),
            &self.event_id,
            self.source,
        )
    }
}

/// The event log's answer to a late anchor: the applied deltas of a pair dated after a time.
pub trait DeltaHistory {
    /// The sum of the signed units of every applied delta of `pair` (role primary) whose
    /// event time is after `after`.
    fn units_after(&mut self, pair: PairKey, after: Timestamp) -> Result<i64, LookupFailed>;
}

/// A delta history kept in memory: every applied primary delta, per pair. The pure core's
/// tests and benchmarks use it; the engine answers from the event log instead.
#[derive(Clone, Debug, Default)]
pub struct RecordedDeltas(std::collections::HashMap<PairKey, Vec<(Timestamp, i64)>>);

impl RecordedDeltas {
    /// Records an entry that was just applied (only primary deltas are kept).
    pub fn record(&mut self, entry: &LedgerEntry) {
        if entry.role == EntryRole::Primary && !entry.event.kind.is_observation() {
            self.0
                .entry(entry.target())
                .or_default()
                .push((entry.event.event_time, entry.event.signed_units()));
        }
    }
}

impl DeltaHistory for RecordedDeltas {
    fn units_after(&mut self, pair: PairKey, after: Timestamp) -> Result<i64, LookupFailed> {
        let deltas = self.0.get(&pair).map_or(&[][..], Vec::as_slice);
        Ok(deltas
            .iter()
            .filter(|(time, _)| *time > after)
            .fold(0i64, |sum, (_, units)| sum.saturating_add(*units)))
    }
}

/// A lookup the pure core needed (identities, delta history) failed in the store behind it,
/// so the entry was neither applied nor dropped: it is refused, and the caller may retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("look up {what}: {message}")]
pub struct LookupFailed {
    /// What was being looked up.
    pub what: &'static str,
    /// What failed.
    pub message: String,
}

/// Transfers from one counterparty towards this pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundLane {
    /// The sending location.
    pub from_location: u32,
    /// Units the sender reported shipped.
    pub shipped_units: i64,
    /// Units this location reported received from it.
    pub received_units: i64,
    /// The latest expected arrival of its shipments.
    pub expected_by: Timestamp,
}

impl InboundLane {
    fn outstanding_units(&self) -> i64 {
        self.shipped_units
            .saturating_sub(self.received_units)
            .max(0)
    }
}

/// The durable, deterministic state of one pair's ledger.
///
/// Laid out for memory: a million of these are resident per node. Rare parts (the anchor's
/// event id, transfer lanes) live behind one pointer each; times that need only seconds are
/// `u32` compact seconds ([`Timestamp::to_compact_seconds`], 0 = never).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityState {
    /// The latest anchor, if any.
    pub anchor: Option<Box<Anchor>>,
    /// Recorded on-hand: the anchor's units plus every applied delta dated after it.
    pub on_hand_units: i64,
    /// The latest event time of an applied delta counted in on-hand (none: no delta after
    /// the anchor), so an anchor dated at or after it needs no history.
    pub latest_delta_time: MaybeTime,
    /// The latest arrival applied.
    pub latest_arrival: Timestamp,
    /// Units held by active reservations.
    pub reserved_units: i64,
    /// Transfers towards this pair, per sending location.
    pub inbound: thin_vec::ThinVec<InboundLane>,
    /// Event time of the latest sale, in compact seconds.
    pub last_sale_seconds: u32,
    /// Latest event time per source, in compact seconds.
    pub source_last_seen: [u32; SOURCE_COUNT],
    /// Entries applied (the state version; wraps after 2^32).
    pub applied_entries: u32,
    /// Entries quarantined.
    pub quarantined_entries: u32,
    /// The stock belief's sufficient statistics (rebuilt by replaying the log like the rest).
    #[serde(default)]
    pub belief: BeliefStats,
    /// Each observing source's claim brought to now, beside the record (the ranker's
    /// candidates; rebuilt by replaying the log like the rest).
    #[serde(default)]
    pub claims: SourceClaims,
}

/// The ledger's figures at one moment: what lookups and tests compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerView {
    /// Recorded on-hand units.
    pub on_hand_units: i64,
    /// Units held by active reservations.
    pub reserved_units: i64,
    /// Units in transit towards this pair and not yet overdue.
    pub in_transit_units: i64,
    /// Inbound lanes past their expected time plus grace.
    pub overdue_transfers: u32,
    /// Event time of the latest sale (to the second).
    pub last_sale: Option<Timestamp>,
    /// The latest anchor.
    pub last_anchor: Option<Anchor>,
    /// Latest event time per source (to the second).
    pub source_last_seen: [Option<Timestamp>; SOURCE_COUNT],
    /// Entries applied (the state version).
    pub applied_entries: u32,
    /// Entries quarantined.
    pub quarantined_entries: u32,
}

/// Decides whether an arrival may be applied at all: not too late, not from the future,
/// not at or before the floor.
pub fn admit(
    state: &EntityState,
    event: &Event,
    arrival: Timestamp,
    config: &LedgerConfig,
) -> Result<(), QuarantineReason> {
    let lateness_ms = arrival.0 - event.event_time.0;
    if lateness_ms > config.lateness_bound_ms || event.event_time <= state.floor(config) {
        return Err(QuarantineReason::TooLate {
            lateness_ms,
            bound_ms: config.lateness_bound_ms,
        });
    }
    if -lateness_ms > config.future_skew_ms {
        return Err(QuarantineReason::FromTheFuture {
            ahead_ms: -lateness_ms,
            skew_ms: config.future_skew_ms,
        });
    }
    Ok(())
}

/// The whole per-arrival path of the pure core: admission, dedup, application.
pub fn ingest(
    state: &mut EntityState,
    entry: &LedgerEntry,
    arrival: Timestamp,
    config: &LedgerConfig,
    identities: &mut impl IdentityIndex,
    history: &mut impl DeltaHistory,
) -> Result<Outcome, LookupFailed> {
    if let Err(reason) = admit(state, &entry.event, arrival, config) {
        state.record_quarantine();
        return Ok(Outcome::Quarantined(reason));
    }
    Ok(
        match identities.check_and_record(entry, entry.event.payload_digest())? {
            IdentityCheck::Duplicate => Outcome::Duplicate,
            IdentityCheck::Conflict => {
                state.record_quarantine();
                Outcome::Quarantined(QuarantineReason::ConflictingDuplicate)
            }
            IdentityCheck::New => {
                state.apply_admitted(entry, arrival, config, history)?;
                Outcome::Applied
            }
        },
    )
}

/// The immutable summary an entity publishes for lookups (what the read path sees), in 16
/// bytes: unit counts saturate at +/-2^31, far beyond any real shelf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadView {
    /// Recorded on-hand units.
    pub on_hand_units: i32,
    /// Units held by active reservations.
    pub reserved_units: i32,
    /// Units in transit towards the pair when the view was published.
    pub in_transit_units: i32,
    /// The state version (entries applied) the view reflects.
    pub version: u32,
}

fn saturate(units: i64) -> i32 {
    units.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

impl EntityState {
    /// Counts a quarantined entry.
    pub fn record_quarantine(&mut self) {
        self.quarantined_entries = self.quarantined_entries.saturating_add(1);
    }

    /// The summary to publish for lookups, as of `now`.
    pub fn read_view(&self, now: Timestamp, config: &LedgerConfig) -> ReadView {
        ReadView {
            on_hand_units: saturate(self.on_hand_units),
            reserved_units: saturate(self.reserved_units),
            in_transit_units: saturate(self.in_transit_at(now, config).0),
            version: self.applied_entries,
        }
    }

    /// Folds in the evidence of a pick for `units` that found fewer, when the record was
    /// `record_before`: the truth was below `units` then (the belief's ceiling).
    pub fn observe_not_found(&mut self, units: u32, record_before: i64, time: Timestamp) {
        let after_anchor = self
            .anchor
            .as_ref()
            .is_none_or(|anchor| time > anchor.event_time);
        self.belief.observe(
            Observation::NotFound {
                units,
                record_before,
            },
            time.0,
            after_anchor,
        );
    }

    /// No admissible event is dated at or before this (see the module doc).
    pub fn floor(&self, config: &LedgerConfig) -> Timestamp {
        Timestamp(
            self.latest_arrival
                .0
                .saturating_sub(config.lateness_bound_ms + FOLD_MARGIN_MS),
        )
    }

    /// Applies an admitted, new entry. Also used to replay the event log on recovery, where
    /// admission and dedup were decided when the entry was first applied. On a failed
    /// history lookup nothing is changed.
    pub fn apply_admitted(
        &mut self,
        entry: &LedgerEntry,
        arrival: Timestamp,
        config: &LedgerConfig,
        history: &mut impl DeltaHistory,
    ) -> Result<(), LookupFailed> {
        let event = &entry.event;
        match entry.role {
            EntryRole::InboundAtCounterparty => {
                let expected_by = event
                    .expected_time
                    .unwrap_or(event.event_time.plus_ms(config.default_transit_ms));
                let lane = self.lane_mut(event.pair.location, expected_by);
                lane.shipped_units = lane.shipped_units.saturating_add(event.quantity);
                lane.expected_by = lane.expected_by.max(expected_by);
            }
            EntryRole::Primary => {
                let after_anchor = self
                    .anchor
                    .as_ref()
                    .is_none_or(|anchor| event.event_time > anchor.event_time);
                let record_before = self.on_hand_units;
                let observation = if event.kind.is_observation() {
                    let moved =
                        config.anchors(event.source) && self.consider_anchor(event, history)?;
                    self.claims.read(
                        observation_kind(event.kind),
                        event.quantity,
                        event.event_time.0,
                        record_before,
                        self.on_hand_units,
                        moved,
                    );
                    moved.then_some(Observation::Observed {
                        units: event.quantity,
                        kind: observation_kind(event.kind),
                    })
                } else {
                    self.apply_delta(event);
                    self.claims
                        .delta(event.signed_units(), event.event_time.0, after_anchor);
                    let units = u32::try_from(event.quantity.max(0)).unwrap_or(u32::MAX);
                    Some(match event.kind {
                        EventKind::Sale | EventKind::Pick => Observation::Sold {
                            units,
                            record_before,
                        },
                        EventKind::Receipt | EventKind::TransferIn => {
                            Observation::Received { units }
                        }
                        _ => Observation::Moved,
                    })
                };
                if let Some(observation) = observation {
                    self.belief
                        .observe(observation, event.event_time.0, after_anchor);
                }
                let seen = &mut self.source_last_seen[event.source.index()];
                *seen = (*seen).max(event.event_time.to_compact_seconds().max(1));
            }
        }
        self.latest_arrival = self.latest_arrival.max(arrival);
        self.applied_entries = self.applied_entries.wrapping_add(1);
        let forget_before = self.floor(config).0 - config.transfer_grace_ms;
        self.inbound.retain(|lane| {
            lane.shipped_units != lane.received_units && lane.expected_by.0 >= forget_before
        });
        Ok(())
    }

    fn lane_mut(&mut self, from_location: u32, expected_by: Timestamp) -> &mut InboundLane {
        let index = match self
            .inbound
            .iter()
            .position(|lane| lane.from_location == from_location)
        {
            Some(index) => index,
            None => {
                self.inbound.push(InboundLane {
                    from_location,
                    shipped_units: 0,
                    received_units: 0,
                    expected_by,
                });
                self.inbound.len() - 1
            }
        };
        &mut self.inbound[index]
    }

    fn apply_delta(&mut self, event: &Event) {
        if event.kind == EventKind::Sale {
            self.last_sale_seconds = self
                .last_sale_seconds
                .max(event.event_time.to_compact_seconds().max(1));
        }
        if let (EventKind::TransferIn, Some(from)) = (event.kind, event.counterparty_location) {
            let lane = self.lane_mut(from, event.event_time);
            lane.received_units = lane.received_units.saturating_add(event.quantity);
        }
        if self
            .anchor
            .as_ref()
            .is_some_and(|anchor| event.event_time <= anchor.event_time)
        {
            return; // Already counted by the anchor.
        }
        self.on_hand_units = self.on_hand_units.saturating_add(event.signed_units());
        self.latest_delta_time =
            MaybeTime::from(self.latest_delta_time.get().max(Some(event.event_time)));
    }

    /// Makes `event` the anchor if it takes precedence; says whether it did.
    fn consider_anchor(
        &mut self,
        event: &Event,
        history: &mut impl DeltaHistory,
    ) -> Result<bool, LookupFailed> {
        let candidate = Anchor {
            event_time: event.event_time,
            kind: event.kind,
            source: event.source,
            event_id: event.event_id.as_str().into(),
            units: event
                .quantity
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        };
        if self
            .anchor
            .as_ref()
            .is_some_and(|current| current.precedence() >= candidate.precedence())
        {
            return Ok(false); // An older observation: kept by the log, no effect on on-hand.
        }
        // Deltas dated after the anchor apply on top of it; only the log knows them, and it is
        // asked only when some applied delta is dated after the anchor.
        let after = match self.latest_delta_time.get() {
            Some(latest) if latest > candidate.event_time => {
                history.units_after(event.pair, candidate.event_time)?
            }
            _ => {
                self.latest_delta_time = MaybeTime::NONE;
                0
            }
        };
        self.on_hand_units = i64::from(candidate.units).saturating_add(after);
        self.anchor = Some(Box::new(candidate));
        Ok(true)
    }

    /// In-transit units at `now` and the count of overdue lanes.
    pub fn in_transit_at(&self, now: Timestamp, config: &LedgerConfig) -> (i64, u32) {
        let mut units: i64 = 0;
        let mut overdue = 0;
        for lane in &self.inbound {
            if lane.outstanding_units() == 0 {
                continue;
            }
            if now.0 > lane.expected_by.0 + config.transfer_grace_ms {
                overdue += 1;
            } else {
                units = units.saturating_add(lane.outstanding_units());
            }
        }
        (units, overdue)
    }

    /// The ledger's figures at `now`.
    pub fn view(&self, now: Timestamp, config: &LedgerConfig) -> LedgerView {
        let (in_transit_units, overdue_transfers) = self.in_transit_at(now, config);
        LedgerView {
            on_hand_units: self.on_hand_units,
            reserved_units: self.reserved_units,
            in_transit_units,
            overdue_transfers,
            last_sale: Timestamp::from_compact_seconds(self.last_sale_seconds),
            last_anchor: self.anchor.as_deref().cloned(),
            source_last_seen: self.source_last_seen.map(Timestamp::from_compact_seconds),
            applied_entries: self.applied_entries,
            quarantined_entries: self.quarantined_entries,
        }
    }
}

#[cfg(test)]
mod tests;
