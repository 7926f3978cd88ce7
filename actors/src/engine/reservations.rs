//! The engine's reservation calls: reserve, commit, release, and the reaper of deadlines.

use std::collections::BTreeMap;
use std::sync::Arc;

use stockgrid_storage::{Condition, StoreError, WriteBatch};

use crate::domain::{PairKey, Surface};
use crate::engine::Engine;
use crate::engine::StoredReservation;
use crate::engine::carts::CartExpiry;
use crate::error::EngineError;
use crate::keys::{IndexFamily, deadline_key, reservation_key};
use crate::reservation::*;
use crate::shard::ShardMessage;
use crate::time::Timestamp;

/// Deadline-index entries handled per reaper pass.
const REAPER_BATCH: usize = 1_000;
/// Tries of a change of a reservation's record that moved while it was read.
pub(crate) const CHANGE_ATTEMPTS: usize = 3;

/// What the reaper did with a reservation whose holds came due.
enum Reaped {
    /// It expired the reservation.
    Expired,
    /// Nothing is left to do for these holds.
    Done,
    /// The holds come due again then.
    Later(Timestamp),
}

/// Requires `reservation_id`'s record to be exactly `expected` for `batch` to apply.
fn require_record(batch: &mut WriteBatch, reservation_id: &str, expected: &[u8]) {
    batch.require(Condition::Equals(
        reservation_key(reservation_id),
        expected.to_vec(),
    ));
}

impl Engine {
    /// Holds every line of a cart or none. Idempotent by request id: a retry returns the
    /// reservation the first call made.
    pub async fn reserve(
        &self,
        request: ReserveRequest,
    ) -> Result<ReservationReport, ReservationError> {
        check_request(&request)?;
        for line in &request.lines {
            self.ownership()
                .check(crate::keys::partition_of(line.pair))
                .map_err(EngineError::from)?;
        }
        let reservation_id = reservation_id_for(&request.request_id);
        let _guard = self.reservation_locks().lock(&reservation_id).await;
        let store = self.store().as_ref();
        if let Some(stored) = self.load_reservation(&reservation_id)? {
            check_same_request(&stored.record, &request)?;
            return self.settle_if_due(stored).await;
        }
        store.check_writable().map_err(EngineError::from)?;
        let now = self.clock().now();
        let ttl = request.ttl_ms.unwrap_or(self.config().reservation_ttl_ms);
        let deadline = now.plus_ms(ttl);
        self.hold_on_shards(
            &reservation_id,
            request.lines.iter().copied().enumerate().collect(),
            request.surface,
            deadline,
        )
        .await?;
        let record = ReservationRecord {
            reservation_id: reservation_id.clone(),
            request_id: request.request_id,
            surface: request.surface,
            lines: request.lines,
            state: ReservationState::Pending,
            created: now,
            deadline,
            release_reason: None,
        };
        // Created only if no record is there (a coordinator of the same request id on another
        // node, or the reaper's tombstone of holds that outlived their call). A failure
        // leaves the holds: the write may have landed, and freeing them could take units
        // from a recorded reservation; a retry finds the record or holds again (the holds
        // already there are kept), and otherwise the reaper frees them at their deadline.
        if !self.write_reservation(&record, None).await? {
            let stored = self
                .load_reservation(&reservation_id)?
                .ok_or_else(|| ReservationError::Changed(reservation_id.clone()))?;
            check_same_request(
                &stored.record,
                &ReserveRequest {
                    request_id: record.request_id.clone(),
                    lines: record.lines.clone(),
                    surface: record.surface,
                    ttl_ms: None,
                },
            )?;
            return self.settle_if_due(stored).await;
        }
        Ok(report(store, record)?)
    }

    /// PENDING -> COMMITTED: units stay held until the pickup deadline (`None`: the
    /// configured window). Committing a committed reservation returns it unchanged.
    pub async fn commit_reservation(
        &self,
        reservation_id: &str,
        pickup_window_ms: Option<i64>,
    ) -> Result<ReservationReport, ReservationError> {
        check_reservation_id(reservation_id)?;
        if let Some(window) = pickup_window_ms
            && !(1..=MAX_HOLD_MS).contains(&window)
        {
            return Err(ReservationError::Invalid {
                field: "pickup_window_seconds".to_owned(),
                reason: format!("must be 1 to {} seconds", MAX_HOLD_MS / 1000),
            });
        }
        let _guard = self.reservation_locks().lock(reservation_id).await;
        for _ in 0..CHANGE_ATTEMPTS {
            let (current, bytes) = self.current(reservation_id).await?;
            match current.record.state {
                ReservationState::Pending => {}
                ReservationState::Committed => return Ok(current),
                state => {
                    return Err(ReservationError::WrongState {
                        reservation_id: reservation_id.to_owned(),
                        state,
                    });
                }
            }
            let mut record = current.record;
            record.state = ReservationState::Committed;
            record.deadline = self
                .clock()
                .now()
                .plus_ms(pickup_window_ms.unwrap_or(self.config().pickup_window_ms));
            let mut batch = WriteBatch::new();
            require_record(&mut batch, reservation_id, &bytes);
            put_record(&mut batch, &record);
            for line in &record.lines {
                batch.put(
                    deadline_key(record.deadline, reservation_id, line.pair),
                    Vec::new(),
                );
            }
            if self.commit_record_change(batch, reservation_id).await? {
                return Ok(report(self.store().as_ref(), record)?);
            }
        }
        Err(ReservationError::Changed(reservation_id.to_owned()))
    }

    /// PENDING or COMMITTED -> RELEASED: frees what is still held. Releasing a released
    /// reservation returns it unchanged.
    pub async fn release_reservation(
        &self,
        reservation_id: &str,
        reason: ReleaseReason,
    ) -> Result<ReservationReport, ReservationError> {
        check_reservation_id(reservation_id)?;
        let _guard = self.reservation_locks().lock(reservation_id).await;
        for _ in 0..CHANGE_ATTEMPTS {
            let (current, bytes) = self.current(reservation_id).await?;
            match current.record.state {
                ReservationState::Pending | ReservationState::Committed => {}
                ReservationState::Released => return Ok(current),
                state => {
                    return Err(ReservationError::WrongState {
                        reservation_id: reservation_id.to_owned(),
                        state,
                    });
                }
            }
            if let Some(released) = self
                .free(current.record, &bytes, ReservationState::Released, reason)
                .await?
            {
                return Ok(released);
            }
        }
        Err(ReservationError::Changed(reservation_id.to_owned()))
    }

    /// The pairs of a reservation's lines as its record names them, without settling it
    /// (`None`: no such reservation). Any node may read it: a grid's router uses it to send
    /// the reservation's calls to the owners of its lines. Blocking (a store read).
    pub fn reservation_pairs(
        &self,
        reservation_id: &str,
    ) -> Result<Option<Vec<PairKey>>, ReservationError> {
        check_reservation_id(reservation_id)?;
        Ok(load_record(self.store().as_ref(), reservation_id)?
            .map(|record| record.lines.iter().map(|line| line.pair).collect()))
    }

    /// A reservation as it stands now (a passed deadline expires it first).
    pub async fn get_reservation(
        &self,
        reservation_id: &str,
    ) -> Result<ReservationReport, ReservationError> {
        check_reservation_id(reservation_id)?;
        let _guard = self.reservation_locks().lock(reservation_id).await;
        Ok(self.current(reservation_id).await?.0)
    }

    /// Frees every reservation whose deadline has passed (and holds left by an interrupted
    /// call); answers how many reservations expired. Run by maintenance and by `serve` every
    /// second; the deadline index is durable, so this also works after a restart.
    pub async fn expire_reservations(&self) -> Result<usize, EngineError> {
        let mut expired = 0;
        loop {
            let now = self.clock().now();
            let (due, exhausted) =
                due_lines(self.store().as_ref(), self.due_times(), now, REAPER_BATCH)?;
            // Due lines come partition by partition: one cart's lines may be far apart.
            let mut ids: Vec<&str> = due.iter().map(|d| d.reservation_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut reindexed = WriteBatch::new();
            for reservation_id in ids {
                let _guard = self.reservation_locks().lock(reservation_id).await;
                let pairs: Vec<PairKey> = due
                    .iter()
                    .filter(|d| d.reservation_id == reservation_id)
                    .map(|d| d.pair)
                    .collect();
                match self.reap(reservation_id, &pairs, now).await {
                    Ok(Reaped::Expired) => expired += 1,
                    Ok(Reaped::Done) => {}
                    Ok(Reaped::Later(deadline)) => {
                        for &pair in &pairs {
                            reindexed.put(deadline_key(deadline, reservation_id, pair), Vec::new());
                        }
                    }
                    Err(ReservationError::Engine(error)) => return Err(error),
                    Err(other) => return Err(EngineError::Corrupt(other.to_string())),
                }
            }
            let mut batch = WriteBatch::new();
            for line in &due {
                batch.delete(line.key.clone());
            }
            batch.append(reindexed);
            if !batch.is_empty() {
                self.commit_batch(batch).await?;
            }
            for partition in exhausted {
                self.due_times().settle(
                    self.store().as_ref(),
                    IndexFamily::Deadline,
                    partition,
                    now,
                )?;
            }
            if due.len() < REAPER_BATCH {
                return Ok(expired);
            }
        }
    }

    /// The reaper's part for one reservation whose holds at `pairs` (this node's) came due.
    /// Caller holds its lock.
    async fn reap(
        &self,
        reservation_id: &str,
        pairs: &[PairKey],
        now: Timestamp,
    ) -> Result<Reaped, ReservationError> {
        let mut loaded = self.load_reservation(reservation_id)?;
        if loaded.is_none() {
            // Holds of a call that never recorded its reservation. A tombstone first, so
            // that a coordinator still under way cannot record it after they are freed.
            let tombstone = ReservationRecord {
                reservation_id: reservation_id.to_owned(),
                request_id: String::new(),
                surface: Surface::Pickup,
                lines: Vec::new(),
                state: ReservationState::Expired,
                created: now,
                deadline: now,
                release_reason: Some(ReleaseReason::Expired),
            };
            if self.write_reservation(&tombstone, None).await? {
                self.free_holds(reservation_id, pairs.iter().copied(), false)
                    .await;
                return Ok(Reaped::Done);
            }
            // Recorded meanwhile (by a coordinator, or another owner's tombstone).
            loaded = self.load_reservation(reservation_id)?;
        }
        let Some(stored) = loaded else {
            return Ok(Reaped::Later(now));
        };
        // Holds at pairs that are none of the record's lines (left by a request that reused
        // the id with other lines) belong to no reservation.
        let (lines, strays): (Vec<PairKey>, Vec<PairKey>) = pairs
            .iter()
            .partition(|pair| stored.record.lines.iter().any(|line| line.pair == **pair));
        if !strays.is_empty() {
            self.free_holds(reservation_id, strays, false).await;
        }
        if !stored.record.state.is_active() {
            // Settled: free what is left at these pairs.
            self.free_holds(reservation_id, lines, false).await;
            return Ok(Reaped::Done);
        }
        if stored.record.deadline > now {
            // Still held, to a later deadline (a cart across owners committed by another
            // node): this node's lines come due again then.
            return Ok(Reaped::Later(stored.record.deadline));
        }
        match self.settle_if_due(stored.clone()).await {
            Ok(report) if report.record.state == ReservationState::Expired => Ok(Reaped::Expired),
            Ok(_) => Ok(Reaped::Done),
            Err(ReservationError::Changed(_)) => Ok(Reaped::Later(now)),
            // A cart with lines other nodes own: its record is expired here, and each owner
            // frees its own lines.
            Err(ReservationError::Engine(EngineError::NotOwner { .. })) => {
                Ok(match self.expire_across_owners(stored).await? {
                    CartExpiry::Expired => Reaped::Expired,
                    CartExpiry::Settled => Reaped::Done,
                    CartExpiry::Later(deadline) => Reaped::Later(deadline),
                })
            }
            Err(error) => Err(error),
        }
    }

    /// The reservation's report, settling it first if its deadline passed, with the bytes
    /// of its record as stored now (what a change is conditioned on). Caller holds its lock.
    async fn current(
        &self,
        reservation_id: &str,
    ) -> Result<(ReservationReport, Vec<u8>), ReservationError> {
        for _ in 0..CHANGE_ATTEMPTS {
            let stored = self
                .load_reservation(reservation_id)?
                .ok_or_else(|| ReservationError::NotFound(reservation_id.to_owned()))?;
            let bytes = stored.bytes.clone();
            match self.settle_if_due(stored).await {
                // Expired just now: what is stored now is the expired record.
                Ok(current) if current.record.state == ReservationState::Expired => {
                    if let Some(now) = self.load_reservation(reservation_id)? {
                        return Ok((current, now.bytes));
                    }
                }
                Ok(current) => return Ok((current, bytes)),
                Err(ReservationError::Changed(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Err(ReservationError::Changed(reservation_id.to_owned()))
    }

    /// Expires an active reservation whose deadline has passed (unless picks fulfilled it).
    /// Caller holds its lock. Answers `Changed` if the record moved since it was read.
    async fn settle_if_due(
        &self,
        stored: StoredReservation,
    ) -> Result<ReservationReport, ReservationError> {
        // A reservation is answered and changed only by a node that owns every line's
        // partition (in a grid, another node may hold some of them).
        for line in &stored.record.lines {
            self.ownership()
                .check(crate::keys::partition_of(line.pair))
                .map_err(EngineError::from)?;
        }
        let store = self.store().as_ref();
        let current = report(store, stored.record)?;
        let due = current.record.deadline <= self.clock().now();
        if !due || !current.record.state.is_active() {
            return Ok(current);
        }
        let reservation_id = current.record.reservation_id.clone();
        // `report` already turned a reservation whose lines were all picked into Fulfilled.
        self.free(
            current.record,
            &stored.bytes,
            ReservationState::Expired,
            ReleaseReason::Expired,
        )
        .await?
        .ok_or(ReservationError::Changed(reservation_id))
    }

    /// Writes the record's final state if the record is still `expected`, then frees its
    /// holds (in that order: a crash in between leaves units held until the reaper, never a
    /// freed reservation still active). `None`: the record had moved; nothing was done.
    async fn free(
        &self,
        mut record: ReservationRecord,
        expected: &[u8],
        state: ReservationState,
        reason: ReleaseReason,
    ) -> Result<Option<ReservationReport>, ReservationError> {
        let before = report(self.store().as_ref(), record.clone())?;
        record.state = state;
        record.release_reason = Some(reason);
        let mut batch = WriteBatch::new();
        require_record(&mut batch, &record.reservation_id, expected);
        put_record(&mut batch, &record);
        if !self
            .commit_record_change(batch, &record.reservation_id)
            .await?
        {
            return Ok(None);
        }
        if let Some(experiment) = self.decisions().experiment() {
            // Lines still held end here: an ITEM_NOT_FOUND release is a broken promise, a
            // cancellation or an expiry is no outcome.
            for (line, line_state) in record.lines.iter().zip(&before.lines) {
                if *line_state == LineState::Held {
                    if reason == ReleaseReason::ItemNotFound {
                        experiment.record_settlement(&record.reservation_id, line.pair, false);
                    } else {
                        experiment.forget(&record.reservation_id, line.pair);
                    }
                }
            }
        }
        self.free_holds(
            &record.reservation_id,
            record.lines.iter().map(|line| line.pair),
            reason == ReleaseReason::ItemNotFound,
        )
        .await;
        Ok(Some(report(self.store().as_ref(), record)?))
    }

    /// Commits a batch conditioned on a reservation's record; answers false when the
    /// record had moved (nothing was written).
    pub(crate) async fn commit_record_change(
        &self,
        batch: WriteBatch,
        reservation_id: &str,
    ) -> Result<bool, ReservationError> {
        let key = reservation_key(reservation_id);
        match self.commit_batch(batch).await {
            Ok(()) => Ok(true),
            Err(EngineError::Store(StoreError::ConditionFailed { key: failed }))
                if failed == key =>
            {
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Asks the owning shards to free `reservation_id`'s holds at `pairs`. Failures are
    /// logged, not returned: the deadline index frees the holds later.
    pub(crate) async fn free_holds(
        &self,
        reservation_id: &str,
        pairs: impl IntoIterator<Item = PairKey>,
        not_found: bool,
    ) {
        let mut by_shard: BTreeMap<usize, Vec<PairKey>> = BTreeMap::new();
        for pair in pairs {
            by_shard.entry(self.shard_of(pair)).or_default().push(pair);
        }
        let shared_id: Arc<str> = Arc::from(reservation_id);
        for (shard, pairs) in by_shard {
            let reservation_id = Arc::clone(&shared_id);
            let freed = self
                .call_shard(shard, |permit, reply| ShardMessage::Unhold {
                    reservation_id,
                    pairs,
                    not_found,
                    permit,
                    reply,
                })
                .await;
            if let Err(error) = freed {
                tracing::warn!(shard, reservation_id = %shared_id, %error, "freeing holds failed; the reaper frees them at their deadline");
            }
        }
    }
}
