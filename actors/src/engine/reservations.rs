//! The engine's reservation calls: reserve, commit, release, and the reaper of deadlines.

use std::collections::BTreeMap;
use std::sync::Arc;

use stockgrid_storage::WriteBatch;

use crate::domain::PairKey;
use crate::engine::Engine;
use crate::engine::carts::CartExpiry;
use crate::error::EngineError;
use crate::keys::{IndexFamily, deadline_key};
use crate::reservation::*;
use crate::shard::ShardMessage;

/// Deadline-index entries handled per reaper pass.
const REAPER_BATCH: usize = 1_000;

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
        if let Some(record) = load_record(store, &reservation_id)? {
            if record.request_id != request.request_id
                || record.lines != request.lines
                || record.surface != request.surface
            {
                return Err(ReservationError::RequestConflict(reservation_id));
            }
            return self.settle_if_due(record).await;
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
        let mut batch = WriteBatch::new();
        put_record(&mut batch, &record);
        if let Err(error) = self.commit_batch(batch).await {
            // The holds stay until the reaper frees them at their deadline if this fails too.
            self.free_holds(&reservation_id, record.lines.iter().map(|l| l.pair), false)
                .await;
            return Err(error.into());
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
        let current = self.current(reservation_id).await?;
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
        put_record(&mut batch, &record);
        for line in &record.lines {
            batch.put(
                deadline_key(record.deadline, reservation_id, line.pair),
                Vec::new(),
            );
        }
        self.commit_batch(batch).await?;
        Ok(report(self.store().as_ref(), record)?)
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
        let current = self.current(reservation_id).await?;
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
        self.free(current.record, ReservationState::Released, reason)
            .await
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
        self.current(reservation_id).await
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
                let stored = match self.load_reservation(reservation_id) {
                    Ok(stored) => stored,
                    Err(ReservationError::Engine(error)) => return Err(error),
                    Err(other) => return Err(EngineError::Corrupt(other.to_string())),
                };
                match stored {
                    Some(stored) if stored.record.state.is_active() => {
                        if stored.record.deadline <= now {
                            match self.settle_if_due(stored.record.clone()).await {
                                Ok(report) if report.record.state == ReservationState::Expired => {
                                    expired += 1;
                                }
                                Ok(_) => {}
                                // A cart with lines other nodes own: its record is expired
                                // here, and each owner frees its own lines.
                                Err(ReservationError::Engine(EngineError::NotOwner { .. })) => {
                                    match self.expire_across_owners(stored).await {
                                        Ok(CartExpiry::Expired) => expired += 1,
                                        Ok(CartExpiry::Settled) => {}
                                        Ok(CartExpiry::Later(deadline)) => {
                                            for line in due
                                                .iter()
                                                .filter(|d| d.reservation_id == reservation_id)
                                            {
                                                reindexed.put(
                                                    deadline_key(
                                                        deadline,
                                                        reservation_id,
                                                        line.pair,
                                                    ),
                                                    Vec::new(),
                                                );
                                            }
                                        }
                                        Err(ReservationError::Engine(error)) => return Err(error),
                                        Err(other) => {
                                            return Err(EngineError::Corrupt(other.to_string()));
                                        }
                                    }
                                }
                                Err(ReservationError::Engine(error)) => return Err(error),
                                Err(other) => return Err(EngineError::Corrupt(other.to_string())),
                            }
                        } else {
                            // Still held, to a later deadline (a cart across owners committed
                            // by another node): this node's lines come due again then.
                            let deadline = stored.record.deadline;
                            for line in due.iter().filter(|d| d.reservation_id == reservation_id) {
                                reindexed.put(
                                    deadline_key(deadline, reservation_id, line.pair),
                                    Vec::new(),
                                );
                            }
                        }
                    }
                    _ => {
                        // No active record: a hold left by an interrupted call, or a
                        // settled reservation. Free what is left at these pairs.
                        let pairs = due
                            .iter()
                            .filter(|d| d.reservation_id == reservation_id)
                            .map(|d| d.pair);
                        self.free_holds(reservation_id, pairs, false).await;
                    }
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

    /// The reservation's report, settling it first if its deadline passed. Caller holds its
    /// lock.
    async fn current(&self, reservation_id: &str) -> Result<ReservationReport, ReservationError> {
        let record = load_record(self.store().as_ref(), reservation_id)?
            .ok_or_else(|| ReservationError::NotFound(reservation_id.to_owned()))?;
        self.settle_if_due(record).await
    }

    /// Expires an active reservation whose deadline has passed (unless picks fulfilled it).
    /// Caller holds its lock.
    async fn settle_if_due(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationReport, ReservationError> {
        // A reservation is answered and changed only by a node that owns every line's
        // partition (in a grid, another node may hold some of them).
        for line in &record.lines {
            self.ownership()
                .check(crate::keys::partition_of(line.pair))
                .map_err(EngineError::from)?;
        }
        let store = self.store().as_ref();
        let current = report(store, record)?;
        let due = current.record.deadline <= self.clock().now();
        if !due || !current.record.state.is_active() {
            return Ok(current);
        }
        // `report` already turned a reservation whose lines were all picked into Fulfilled.
        self.free(
            current.record,
            ReservationState::Expired,
            ReleaseReason::Expired,
        )
        .await
    }

    /// Writes the record's final state, then frees its holds (in that order: a crash in
    /// between leaves units held until the reaper, never a freed reservation still active).
    async fn free(
        &self,
        mut record: ReservationRecord,
        state: ReservationState,
        reason: ReleaseReason,
    ) -> Result<ReservationReport, ReservationError> {
        if let Some(experiment) = self.decisions().experiment() {
            // Lines still held end here: an ITEM_NOT_FOUND release is a broken promise, a
            // cancellation or an expiry is no outcome.
            let before = report(self.store().as_ref(), record.clone())?;
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
        record.state = state;
        record.release_reason = Some(reason);
        let mut batch = WriteBatch::new();
        put_record(&mut batch, &record);
        self.commit_batch(batch).await?;
        self.free_holds(
            &record.reservation_id,
            record.lines.iter().map(|line| line.pair),
            reason == ReleaseReason::ItemNotFound,
        )
        .await;
        Ok(report(self.store().as_ref(), record)?)
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
