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
//! # Why the result does not depend on arrival order
//! On-hand is `settled_units + sum(window)`. The window holds the deltas after the latest
//! anchor that a future anchor could still split; a delta leaves it only when (a) a later
//! anchor covers it, or (b) it is older than `window_floor` = latest arrival - lateness bound -
//! [`FOLD_MARGIN_MS`], and then it is added to `settled_units`. No admissible event can land
//! at or before `window_floor` (admission refuses it), so no future anchor can split a folded
//! delta: folding changes memory, never results.

use serde::{Deserialize, Serialize};

use crate::domain::{Event, EventKind, PairKey, SOURCE_COUNT, Source};
use crate::time::{HOUR_MS, MINUTE_MS, Timestamp};

/// How far behind the latest arrival an arrival may be processed before folding could be
/// unsafe; events older than the window floor are quarantined as late.
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
    /// Its identity (source, event id) was seen with a different payload; the first wins.
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
            QuarantineReason::TooLate { lateness_ms, bound_ms } => {
                write!(f, "arrived {lateness_ms} ms after its event time, beyond the lateness bound of {bound_ms} ms")
            }
            QuarantineReason::FromTheFuture { ahead_ms, skew_ms } => {
                write!(f, "dated {ahead_ms} ms after its arrival, beyond the future skew bound of {skew_ms} ms")
            }
            QuarantineReason::ConflictingDuplicate => {
                f.write_str("same source and event id as an earlier event with a different payload")
            }
            QuarantineReason::HandlerPanicked { message } => write!(f, "handling it panicked the shard: {message}"),
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
        let inbound = (event.kind == EventKind::TransferOut && event.counterparty_location.is_some())
            .then(|| LedgerEntry { event: event.clone(), role: EntryRole::InboundAtCounterparty });
        std::iter::once(LedgerEntry { event, role: EntryRole::Primary }).chain(inbound).collect()
    }

    /// The pair whose entity applies this entry.
    pub fn target(&self) -> PairKey {
        match (self.role, self.event.counterparty_location) {
            (EntryRole::InboundAtCounterparty, Some(counterparty)) => PairKey::new(self.event.pair.sku, counterparty),
            _ => self.event.pair,
        }
    }

    /// The dedup identity of the entry: (source, role, event id).
    pub fn identity(&self) -> Identity {
        Identity { source: self.event.source, role: self.role, event_id: self.event.event_id.clone() }
    }
}

/// The identity exactly-once is defined on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The feed.
    pub source: Source,
    /// The role of the entry (a transfer's counterparty effect has its own identity).
    pub role: EntryRole,
    /// Unique within the source.
    pub event_id: String,
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

/// The identity index could not be read, so whether an event is new is unknown: the event
/// must be neither applied nor called a duplicate, only refused (the caller may retry).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("look up event identity: {0}")]
pub struct IdentityLookupFailed(pub String);

/// Remembers identities and their payload digests for dedup. The engine's implementation
/// keeps a small in-memory tail in front of the store; tests use a plain map.
pub trait IdentityIndex {
    /// Looks the entry's identity up; if it is new, records it with `digest` (the event's
    /// [`Event::payload_digest`]) before returning.
    fn check_and_record(&mut self, entry: &LedgerEntry, digest: u128) -> Result<IdentityCheck, IdentityLookupFailed>;
}

/// The outcome of comparing a payload digest with the one known for its identity.
pub fn compare_digests(known: Option<u128>, digest: u128) -> Option<IdentityCheck> {
    known.map(|known| if known == digest { IdentityCheck::Duplicate } else { IdentityCheck::Conflict })
}

impl IdentityIndex for std::collections::HashMap<Identity, u128> {
    fn check_and_record(&mut self, entry: &LedgerEntry, digest: u128) -> Result<IdentityCheck, IdentityLookupFailed> {
        match self.entry(entry.identity()) {
            std::collections::hash_map::Entry::Occupied(known) => Ok(compare_digests(Some(*known.get()), digest).unwrap_or(IdentityCheck::New)),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(digest);
                Ok(IdentityCheck::New)
            }
        }
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
    /// The units it observed.
    pub units: i64,
}

impl Anchor {
    fn precedence(&self) -> (Timestamp, u8, &str, Source) {
        (self.event_time, self.kind.observation_rank(), &self.event_id, self.source)
    }
}

/// A delta still inside the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowDelta {
    /// Its event time.
    pub event_time: Timestamp,
    /// Its signed units.
    pub units: i64,
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
        (self.shipped_units - self.received_units).max(0)
    }
}

/// The durable, deterministic state of one pair's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityState {
    /// The latest anchor, if any.
    pub anchor: Option<Anchor>,
    /// The anchor's units plus every folded delta after it.
    pub settled_units: i64,
    /// Deltas after the anchor that a later anchor could still split, by event time.
    pub window: Vec<WindowDelta>,
    /// No admissible event is dated at or before this (see the module doc).
    pub window_floor: Timestamp,
    /// The latest arrival applied.
    pub latest_arrival: Timestamp,
    /// Units held by active reservations.
    pub reserved_units: i64,
    /// Transfers towards this pair, per sending location.
    pub inbound: Vec<InboundLane>,
    /// Event time of the latest sale.
    pub last_sale: Option<Timestamp>,
    /// Latest event time per source, in compact seconds (0 = never; see
    /// [`Timestamp::to_compact_seconds`]).
    pub source_last_seen: [u32; SOURCE_COUNT],
    /// Entries applied.
    pub applied_entries: u64,
    /// Entries quarantined.
    pub quarantined_entries: u32,
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
    /// Event time of the latest sale.
    pub last_sale: Option<Timestamp>,
    /// The latest anchor.
    pub last_anchor: Option<Anchor>,
    /// Latest event time per source.
    pub source_last_seen: [Option<Timestamp>; SOURCE_COUNT],
    /// Entries applied (the state version).
    pub applied_entries: u64,
    /// Entries quarantined.
    pub quarantined_entries: u32,
}

/// Decides whether an arrival may be applied at all: not too late, not from the future,
/// not at or before the window floor.
pub fn admit(state: &EntityState, event: &Event, arrival: Timestamp, config: &LedgerConfig) -> Result<(), QuarantineReason> {
    let lateness_ms = arrival.0 - event.event_time.0;
    if lateness_ms > config.lateness_bound_ms || event.event_time <= state.window_floor {
        return Err(QuarantineReason::TooLate { lateness_ms, bound_ms: config.lateness_bound_ms });
    }
    if -lateness_ms > config.future_skew_ms {
        return Err(QuarantineReason::FromTheFuture { ahead_ms: -lateness_ms, skew_ms: config.future_skew_ms });
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
) -> Result<Outcome, IdentityLookupFailed> {
    if let Err(reason) = admit(state, &entry.event, arrival, config) {
        state.record_quarantine();
        return Ok(Outcome::Quarantined(reason));
    }
    Ok(match identities.check_and_record(entry, entry.event.payload_digest())? {
        IdentityCheck::Duplicate => Outcome::Duplicate,
        IdentityCheck::Conflict => {
            state.record_quarantine();
            Outcome::Quarantined(QuarantineReason::ConflictingDuplicate)
        }
        IdentityCheck::New => {
            state.apply_admitted(entry, arrival, config);
            Outcome::Applied
        }
    })
}

/// The immutable summary an entity publishes for lookups (what the read path sees).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadView {
    /// Recorded on-hand units.
    pub on_hand_units: i64,
    /// Units held by active reservations.
    pub reserved_units: i64,
    /// Units in transit towards the pair when the view was published.
    pub in_transit_units: i64,
    /// The state version (entries applied) the view reflects.
    pub version: u64,
}

impl EntityState {
    /// Counts a quarantined entry.
    pub fn record_quarantine(&mut self) {
        self.quarantined_entries = self.quarantined_entries.saturating_add(1);
    }

    /// The summary to publish for lookups, as of `now`.
    pub fn read_view(&self, now: Timestamp, config: &LedgerConfig) -> ReadView {
        ReadView {
            on_hand_units: self.on_hand_units(),
            reserved_units: self.reserved_units,
            in_transit_units: self.in_transit_at(now, config).0,
            version: self.applied_entries,
        }
    }

    /// Applies an admitted, new entry. Also used to replay the event log on recovery, where
    /// admission and dedup were decided when the entry was first applied.
    pub fn apply_admitted(&mut self, entry: &LedgerEntry, arrival: Timestamp, config: &LedgerConfig) {
        let event = &entry.event;
        self.latest_arrival = self.latest_arrival.max(arrival);
        self.applied_entries += 1;
        match entry.role {
            EntryRole::InboundAtCounterparty => {
                let expected_by = event.expected_time.unwrap_or(event.event_time.plus_ms(config.default_transit_ms));
                let lane = self.lane_mut(event.pair.location, expected_by);
                lane.shipped_units += event.quantity;
                lane.expected_by = lane.expected_by.max(expected_by);
            }
            EntryRole::Primary => {
                let seen = &mut self.source_last_seen[event.source.index()];
                *seen = (*seen).max(event.event_time.to_compact_seconds().max(1));
                if event.kind.is_observation() {
                    if config.anchors(event.source) {
                        self.consider_anchor(event);
                    }
                } else {
                    self.apply_delta(event);
                }
            }
        }
        self.inbound.retain(|lane| lane.shipped_units != lane.received_units);
        self.fold(config);
        debug_assert!(self.window.windows(2).all(|w| w[0].event_time <= w[1].event_time), "window out of order");
    }

    fn lane_mut(&mut self, from_location: u32, expected_by: Timestamp) -> &mut InboundLane {
        let index = match self.inbound.iter().position(|lane| lane.from_location == from_location) {
            Some(index) => index,
            None => {
                self.inbound.push(InboundLane { from_location, shipped_units: 0, received_units: 0, expected_by });
                self.inbound.len() - 1
            }
        };
        &mut self.inbound[index]
    }

    fn apply_delta(&mut self, event: &Event) {
        if event.kind == EventKind::Sale {
            self.last_sale = self.last_sale.max(Some(event.event_time));
        }
        if let (EventKind::TransferIn, Some(from)) = (event.kind, event.counterparty_location) {
            self.lane_mut(from, event.event_time).received_units += event.quantity;
        }
        let units = event.signed_units();
        if self.anchor.as_ref().is_some_and(|anchor| event.event_time <= anchor.event_time) {
            return; // Already counted by the anchor.
        }
        let position = self.window.partition_point(|delta| delta.event_time <= event.event_time);
        self.window.insert(position, WindowDelta { event_time: event.event_time, units });
    }

    fn consider_anchor(&mut self, event: &Event) {
        let candidate = Anchor {
            event_time: event.event_time,
            kind: event.kind,
            source: event.source,
            event_id: event.event_id.as_str().into(),
            units: event.quantity,
        };
        if self.anchor.as_ref().is_some_and(|current| current.precedence() >= candidate.precedence()) {
            return; // An older observation: kept by the log, no effect on on-hand.
        }
        self.settled_units = candidate.units;
        self.window.retain(|delta| delta.event_time > candidate.event_time);
        self.anchor = Some(candidate);
    }

    /// Folds window deltas below the floor into `settled_units` and drops transfer lanes
    /// long past their grace period.
    fn fold(&mut self, config: &LedgerConfig) {
        let floor = Timestamp(self.latest_arrival.0 - config.lateness_bound_ms - FOLD_MARGIN_MS);
        if floor <= self.window_floor {
            return;
        }
        self.window_floor = floor;
        let folded = self.window.partition_point(|delta| delta.event_time <= floor);
        self.settled_units += self.window.drain(..folded).map(|delta| delta.units).sum::<i64>();
        let forget_before = floor.0 - config.transfer_grace_ms;
        self.inbound.retain(|lane| lane.expected_by.0 >= forget_before);
    }

    /// Recorded on-hand units.
    pub fn on_hand_units(&self) -> i64 {
        self.settled_units + self.window.iter().map(|delta| delta.units).sum::<i64>()
    }

    /// In-transit units at `now` and the count of overdue lanes.
    pub fn in_transit_at(&self, now: Timestamp, config: &LedgerConfig) -> (i64, u32) {
        let mut units = 0;
        let mut overdue = 0;
        for lane in &self.inbound {
            if lane.outstanding_units() == 0 {
                continue;
            }
            if now.0 > lane.expected_by.0 + config.transfer_grace_ms {
                overdue += 1;
            } else {
                units += lane.outstanding_units();
            }
        }
        (units, overdue)
    }

    /// The ledger's figures at `now`.
    pub fn view(&self, now: Timestamp, config: &LedgerConfig) -> LedgerView {
        let (in_transit_units, overdue_transfers) = self.in_transit_at(now, config);
        LedgerView {
            on_hand_units: self.on_hand_units(),
            reserved_units: self.reserved_units,
            in_transit_units,
            overdue_transfers,
            last_sale: self.last_sale,
            last_anchor: self.anchor.clone(),
            source_last_seen: self.source_last_seen.map(Timestamp::from_compact_seconds),
            applied_entries: self.applied_entries,
            quarantined_entries: self.quarantined_entries,
        }
    }
}

#[cfg(test)]
mod tests;
