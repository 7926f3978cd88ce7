//! The `Grid` seam: what the public API asks of the grid, batch-shaped, whoever answers it.
//!
//! A [`Grid`] ingests arrivals, decides lookups, holds units for reservations, inspects pairs
//! and takes admin changes. One node's [`Engine`] is a grid (every partition is local); the
//! router of a cluster will be another (grouping each batch by owner and calling the owners
//! over the peer service), and `stockgrid_api` serves either without knowing which.
//!
//! Calls take and return whole batches where the API has batches (ingest, decide), so that a
//! router can split a batch by owner and merge the answers in order; each item of a batch
//! answers its own error, and an `Err` for the whole call means nothing of it was done.

use std::future::Future;

use stockgrid_actors::EngineConfig;
use stockgrid_actors::audit::{AuditRecord, Decided, Lookup, NodeReplay};
use stockgrid_actors::catalog::Location;
use stockgrid_actors::domain::{Arrival, PairKey, Surface};
use stockgrid_actors::engine::StoredReservation;
use stockgrid_actors::ledger::{EntryScope, Outcome, ReadView};
use stockgrid_actors::policy::{DecisionContext, PolicyRecord};
use stockgrid_actors::reservation::{
    ReleaseReason, ReservationError, ReservationLine, ReservationRecord, ReservationReport,
    ReserveRequest, check_request,
};
use stockgrid_actors::shard::EntityReport;
use stockgrid_actors::time::Timestamp;
use stockgrid_actors::{Engine, EngineError};
use stockgrid_model::partition::Partition;

/// The grid as the public API uses it. Cloning shares it.
pub trait Grid: Clone + Send + Sync + 'static {
    /// The grid's domain time now (the injected clock).
    fn now(&self) -> Timestamp;

    /// Applies arrivals; each answers its own outcome, once everything it caused is durable.
    fn ingest(
        &self,
        arrivals: Vec<Arrival>,
    ) -> impl Future<Output = Result<Vec<Result<Outcome, EngineError>>, EngineError>> + Send;

    /// As [`Grid::ingest`], applying of each event only the effects its scope names (the
    /// router's split of a transfer whose two pairs have two owners).
    fn ingest_scoped(
        &self,
        arrivals: Vec<(Arrival, EntryScope)>,
    ) -> impl Future<Output = Result<Vec<Result<Outcome, EngineError>>, EngineError>> + Send;

    /// Whether this node answers for `partition` now (always, outside a grid).
    fn serves(&self, partition: Partition) -> bool;

    /// The pairs of a reservation's lines, read from the store without settling it
    /// (`None`: no such reservation), for routing its calls to their owners. Blocking.
    fn reservation_pairs(
        &self,
        reservation_id: &str,
    ) -> Result<Option<Vec<PairKey>>, ReservationError>;

    /// The engine's settings (reservation TTL and pickup window among them).
    fn config(&self) -> &EngineConfig;

    /// Checks a reservation request field by field, holding nothing.
    fn check_reserve(&self, request: &ReserveRequest) -> Result<(), ReservationError> {
        check_request(request)
    }

    /// Holds lines of a cart whose lines have several owners, all or none, at this node
    /// (every line's partition must be its own).
    fn hold_lines(
        &self,
        reservation_id: &str,
        lines: Vec<(usize, ReservationLine)>,
        surface: Surface,
        deadline: Timestamp,
    ) -> impl Future<Output = Result<(), ReservationError>> + Send;

    /// Frees a reservation's holds at those of `pairs` this node owns.
    fn free_lines(
        &self,
        reservation_id: &str,
        pairs: Vec<PairKey>,
        not_found: bool,
    ) -> impl Future<Output = ()> + Send;

    /// A reservation's record with its bytes (`None`: none). Blocking.
    fn load_reservation(
        &self,
        reservation_id: &str,
    ) -> Result<Option<StoredReservation>, ReservationError>;

    /// Writes a reservation's record if it still holds `expected` (`None`: if absent);
    /// answers whether it was written.
    fn write_reservation(
        &self,
        record: &ReservationRecord,
        expected: Option<&[u8]>,
    ) -> impl Future<Output = Result<bool, ReservationError>> + Send;

    /// A record's report, each line's state from the store. Blocking.
    fn reservation_report(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationReport, ReservationError>;

    /// Whether a decision of `surface` with this id is recorded (promises always are; item
    /// pages at the sampling rate).
    fn audits(&self, surface: Surface, decision_id: &str) -> bool;

    /// Decides lookups, each with its decision id, in order; the records of those asking for
    /// a digest are written (a promise's before any answer returns).
    fn decide(
        &self,
        lookups: &[(String, Lookup)],
    ) -> impl Future<Output = Result<Vec<Result<Decided, EngineError>>, EngineError>> + Send;

    /// Holds every line of a cart or none (idempotent by request id).
    fn reserve(
        &self,
        request: ReserveRequest,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send;

    /// Commits a pending reservation (the order is placed), holding until the pickup window.
    fn commit(
        &self,
        reservation_id: &str,
        pickup_window_ms: Option<i64>,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send;

    /// Releases a reservation's held units.
    fn release(
        &self,
        reservation_id: &str,
        reason: ReleaseReason,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send;

    /// A reservation and the state of each of its lines.
    fn reservation(
        &self,
        reservation_id: &str,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send;

    /// What a pair's entity holds (`None`: never seen).
    fn inspect(
        &self,
        pair: PairKey,
    ) -> impl Future<Output = Result<Option<EntityReport>, EngineError>> + Send;

    /// The read view a rules lookup of `pair` decides from now (`None`: never seen).
    fn read_view(
        &self,
        pair: PairKey,
    ) -> impl Future<Output = Result<Option<ReadView>, EngineError>> + Send;

    /// A decision record by its id (`None`: not recorded).
    fn decision_record(&self, decision_id: &str) -> Result<Option<AuditRecord>, EngineError>;

    /// Rebuilds a recorded decision from the log and compares it bit for bit (blocking: run
    /// it off the async workers).
    fn replay_decision(&self, decision_id: &str) -> Result<Option<NodeReplay>, EngineError>;

    /// The decision policy: modes, rules switches, experiments, drift fallback.
    fn policy(&self) -> &DecisionContext;

    /// Changes the grid's policy record (`change` answers false to refuse: nothing is
    /// written, `None` answered) and applies it on this node; the others within a second.
    fn change_policy(
        &self,
        change: impl Fn(&mut PolicyRecord) -> bool + Send + Sync,
    ) -> impl Future<Output = Result<Option<PolicyRecord>, EngineError>> + Send;

    /// Inserts or replaces catalog locations, all or none, durably.
    fn upsert_locations(
        &self,
        locations: &[Location],
    ) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// Catalog locations numbered above `after`, ascending, at most `limit`.
    fn list_locations(
        &self,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Location>, EngineError>;
}

/// One node is the whole grid: every partition is its own.
impl Grid for Engine {
    fn now(&self) -> Timestamp {
        self.clock().now()
    }

    fn ingest(
        &self,
        arrivals: Vec<Arrival>,
    ) -> impl Future<Output = Result<Vec<Result<Outcome, EngineError>>, EngineError>> + Send {
        Engine::ingest(self, arrivals)
    }

    fn ingest_scoped(
        &self,
        arrivals: Vec<(Arrival, EntryScope)>,
    ) -> impl Future<Output = Result<Vec<Result<Outcome, EngineError>>, EngineError>> + Send {
        Engine::ingest_scoped(self, arrivals)
    }

    fn serves(&self, partition: Partition) -> bool {
        self.ownership().serves(partition)
    }

    fn reservation_pairs(
        &self,
        reservation_id: &str,
    ) -> Result<Option<Vec<PairKey>>, ReservationError> {
        Engine::reservation_pairs(self, reservation_id)
    }

    fn config(&self) -> &EngineConfig {
        Engine::config(self)
    }

    fn hold_lines(
        &self,
        reservation_id: &str,
        lines: Vec<(usize, ReservationLine)>,
        surface: Surface,
        deadline: Timestamp,
    ) -> impl Future<Output = Result<(), ReservationError>> + Send {
        Engine::hold_lines(self, reservation_id, lines, surface, deadline)
    }

    fn free_lines(
        &self,
        reservation_id: &str,
        pairs: Vec<PairKey>,
        not_found: bool,
    ) -> impl Future<Output = ()> + Send {
        Engine::free_lines(self, reservation_id, pairs, not_found)
    }

    fn load_reservation(
        &self,
        reservation_id: &str,
    ) -> Result<Option<StoredReservation>, ReservationError> {
        Engine::load_reservation(self, reservation_id)
    }

    fn write_reservation(
        &self,
        record: &ReservationRecord,
        expected: Option<&[u8]>,
    ) -> impl Future<Output = Result<bool, ReservationError>> + Send {
        Engine::write_reservation(self, record, expected)
    }

    fn reservation_report(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationReport, ReservationError> {
        Engine::reservation_report(self, record)
    }

    fn audits(&self, surface: Surface, decision_id: &str) -> bool {
        self.decisions().audits(surface, decision_id)
    }

    fn decide(
        &self,
        lookups: &[(String, Lookup)],
    ) -> impl Future<Output = Result<Vec<Result<Decided, EngineError>>, EngineError>> + Send {
        self.decide_recorded_many(lookups)
    }

    fn reserve(
        &self,
        request: ReserveRequest,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send {
        Engine::reserve(self, request)
    }

    fn commit(
        &self,
        reservation_id: &str,
        pickup_window_ms: Option<i64>,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send {
        self.commit_reservation(reservation_id, pickup_window_ms)
    }

    fn release(
        &self,
        reservation_id: &str,
        reason: ReleaseReason,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send {
        self.release_reservation(reservation_id, reason)
    }

    fn reservation(
        &self,
        reservation_id: &str,
    ) -> impl Future<Output = Result<ReservationReport, ReservationError>> + Send {
        self.get_reservation(reservation_id)
    }

    fn inspect(
        &self,
        pair: PairKey,
    ) -> impl Future<Output = Result<Option<EntityReport>, EngineError>> + Send {
        Engine::inspect(self, pair)
    }

    fn read_view(
        &self,
        pair: PairKey,
    ) -> impl Future<Output = Result<Option<ReadView>, EngineError>> + Send {
        Engine::read_view(self, pair)
    }

    fn decision_record(&self, decision_id: &str) -> Result<Option<AuditRecord>, EngineError> {
        Engine::decision_record(self, decision_id)
    }

    fn replay_decision(&self, decision_id: &str) -> Result<Option<NodeReplay>, EngineError> {
        Engine::replay_decision(self, decision_id)
    }

    fn policy(&self) -> &DecisionContext {
        self.decisions()
    }

    fn change_policy(
        &self,
        change: impl Fn(&mut PolicyRecord) -> bool + Send + Sync,
    ) -> impl Future<Output = Result<Option<PolicyRecord>, EngineError>> + Send {
        Engine::change_policy(self, change)
    }

    fn upsert_locations(
        &self,
        locations: &[Location],
    ) -> impl Future<Output = Result<usize, EngineError>> + Send {
        Engine::upsert_locations(self, locations)
    }

    fn list_locations(
        &self,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Location>, EngineError> {
        Engine::list_locations(self, after, limit)
    }
}
