//! A cart whose lines have several owners (a grid): what each owner does, and the record the
//! coordinating node keeps.
//!
//! The node a `Reserve` reached coordinates (the API's router): it holds each owner's lines
//! at that owner ([`Engine::hold_lines`], all or none per owner), frees what was held if any
//! owner refuses ([`Engine::free_lines`]), and only then creates the record, conditioned on
//! its absence ([`Engine::write_reservation`]), so two coordinators of one request id agree.
//! Commit, release and expiry change the record conditioned on the bytes read, then free each
//! owner's lines. A crash between the steps leaves holds without an active record, which each
//! owner's reaper frees at the hold's deadline: units may be held too long, never promised
//! twice. An owner's reaper that finds a due line of a cross-owner cart still active expires
//! the record itself; one that finds the record moved to a later deadline (a commit) indexes
//! its line again at that deadline.

use std::collections::BTreeMap;
use std::sync::Arc;

use stockgrid_storage::{Condition, WriteBatch};

use crate::domain::{PairKey, Surface};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::keys::{self, reservation_key};
use crate::persist::{decode, encode};
use crate::reservation::*;
use crate::shard::{HoldOutcome, ShardMessage};
use crate::time::Timestamp;

/// A reservation's record with its exact bytes in the store (what a change is conditioned
/// on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReservation {
    /// The record.
    pub record: ReservationRecord,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// What the reaper did with a due line of a cart across owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CartExpiry {
    /// This node expired the record and freed its lines.
    Expired,
    /// The record was already settled; this node freed its lines.
    Settled,
    /// Still held until then: the line comes due again at that time.
    Later(Timestamp),
}

impl Engine {
    /// Holds `lines` (each with its index in the cart) for `reservation_id` until
    /// `deadline`, all or none: every line's partition must be this node's. A refusal frees
    /// what was held and names the first refused line. Holding again lines already held for
    /// the reservation is a no-op, so a retried coordinator does not hold twice.
    pub async fn hold_lines(
        &self,
        reservation_id: &str,
        lines: Vec<(usize, ReservationLine)>,
        surface: Surface,
        deadline: Timestamp,
    ) -> Result<(), ReservationError> {
        for (_, line) in &lines {
            self.ownership()
                .check(keys::partition_of(line.pair))
                .map_err(EngineError::from)?;
        }
        self.store().check_writable().map_err(EngineError::from)?;
        self.hold_on_shards(reservation_id, lines, surface, deadline)
            .await
    }

    /// Frees `reservation_id`'s holds at those of `pairs` this node serves (the others are
    /// their owners' to free). Failures are logged: the deadline index frees them later.
    pub async fn free_lines(&self, reservation_id: &str, pairs: Vec<PairKey>, not_found: bool) {
        let owned: Vec<PairKey> = pairs
            .into_iter()
            .filter(|pair| self.ownership().serves(keys::partition_of(*pair)))
            .collect();
        if let Some(experiment) = self.decisions().experiment() {
            for &pair in &owned {
                if not_found {
                    experiment.record_settlement(reservation_id, pair, false);
                } else {
                    experiment.forget(reservation_id, pair);
                }
            }
        }
        self.free_holds(reservation_id, owned, not_found).await;
    }

    /// A reservation's record with its bytes (`None`: no such reservation). Any node may
    /// read it. Blocking (a store read).
    pub fn load_reservation(
        &self,
        reservation_id: &str,
    ) -> Result<Option<StoredReservation>, ReservationError> {
        check_reservation_id(reservation_id)?;
        let key = reservation_key(reservation_id);
        let Some(bytes) = self.store().get(&key).map_err(EngineError::from)? else {
            return Ok(None);
        };
        let record = decode("reservation", &key, &bytes).map_err(EngineError::from)?;
        Ok(Some(StoredReservation { record, bytes }))
    }

    /// Writes a reservation's record if it still holds `expected` (`None`: only if there is
    /// none yet); answers whether it was written.
    pub async fn write_reservation(
        &self,
        record: &ReservationRecord,
        expected: Option<&[u8]>,
    ) -> Result<bool, ReservationError> {
        let key = reservation_key(&record.reservation_id);
        let mut batch = WriteBatch::new();
        batch.require(match expected {
            None => Condition::Absent(key.clone()),
            Some(bytes) => Condition::Equals(key.clone(), bytes.to_vec()),
        });
        batch.put(key, encode(record));
        self.commit_record_change(batch, &record.reservation_id)
            .await
    }

    /// A record's report: each line's state from its settlement, read from the store.
    /// Blocking.
    pub fn reservation_report(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationReport, ReservationError> {
        Ok(report(self.store().as_ref(), record)?)
    }

    /// The reaper's part of a due line of a cart some of whose lines other nodes own: an
    /// active, due record is expired (conditioned on what was read) and this node frees its
    /// holds; a record another node already settled only has them freed; a record moved to a
    /// later deadline (committed) answers that deadline, to index the line at again. The
    /// other owners free theirs when their own index comes due.
    pub(crate) async fn expire_across_owners(
        &self,
        mut stored: StoredReservation,
    ) -> Result<CartExpiry, ReservationError> {
        for _ in 0..3 {
            let current = self.reservation_report(stored.record.clone())?;
            let pairs = current.record.lines.iter().map(|line| line.pair).collect();
            if !current.record.state.is_active() {
                self.free_lines(&current.record.reservation_id, pairs, false)
                    .await;
                return Ok(CartExpiry::Settled);
            }
            if current.record.deadline > self.clock().now() {
                return Ok(CartExpiry::Later(current.record.deadline));
            }
            let mut record = current.record;
            record.state = ReservationState::Expired;
            record.release_reason = Some(ReleaseReason::Expired);
            if self.write_reservation(&record, Some(&stored.bytes)).await? {
                self.free_lines(&record.reservation_id, pairs, false).await;
                return Ok(CartExpiry::Expired);
            }
            // Changed meanwhile (committed, released, expired by another owner): again.
            match self.load_reservation(&record.reservation_id)? {
                Some(again) => stored = again,
                None => return Ok(CartExpiry::Settled),
            }
        }
        // Still moving: the line stays due, for the next pass.
        Ok(CartExpiry::Later(self.clock().now()))
    }

    /// Holds `lines` on their shards in parallel; if one refuses, frees the others and
    /// answers the refusal of the lowest line index.
    pub(crate) async fn hold_on_shards(
        &self,
        reservation_id: &str,
        lines: Vec<(usize, ReservationLine)>,
        surface: Surface,
        deadline: Timestamp,
    ) -> Result<(), ReservationError> {
        let wanted: BTreeMap<usize, ReservationLine> = lines.iter().copied().collect();
        let shared_id: Arc<str> = Arc::from(reservation_id);
        let mut by_shard: BTreeMap<usize, Vec<(usize, ReservationLine)>> = BTreeMap::new();
        for (index, line) in lines {
            by_shard
                .entry(self.shard_of(line.pair))
                .or_default()
                .push((index, line));
        }
        let mut calls = tokio::task::JoinSet::new();
        for (shard, lines) in by_shard {
            let engine = self.clone();
            let reservation_id = Arc::clone(&shared_id);
            calls.spawn(async move {
                let pairs: Vec<PairKey> = lines.iter().map(|(_, line)| line.pair).collect();
                let outcome = engine
                    .call_shard(shard, |permit, reply| ShardMessage::Hold {
                        reservation_id,
                        lines,
                        surface,
                        deadline,
                        permit,
                        reply,
                    })
                    .await;
                (pairs, outcome)
            });
        }
        let mut held: Vec<PairKey> = Vec::new();
        let mut refusal: Option<ReservationError> = None;
        while let Some(joined) = calls.join_next().await {
            let (pairs, outcome) = joined.map_err(|e| EngineError::ShardUnavailable {
                shard: usize::MAX,
                reason: format!("hold task failed: {e}"),
            })?;
            match outcome {
                Ok(HoldOutcome::Held) => held.extend(pairs),
                Ok(HoldOutcome::Refused {
                    line,
                    spare,
                    decision,
                }) => {
                    let first = match &refusal {
                        Some(ReservationError::Insufficient { line: other, .. }) => line < *other,
                        Some(_) => false,
                        None => true,
                    };
                    if first {
                        let asked = wanted.get(&line).copied();
                        refusal = Some(ReservationError::Insufficient {
                            line,
                            pair: asked.map_or(PairKey::new(0, 0), |line| line.pair),
                            wanted: asked.map_or(0, |line| line.quantity),
                            spare,
                            decision,
                        });
                    }
                }
                Err(error) => refusal = Some(error.into()),
            }
        }
        match refusal {
            None => Ok(()),
            Some(refusal) => {
                if let Some(experiment) = self.decisions().experiment() {
                    for &pair in &held {
                        experiment.forget(reservation_id, pair);
                    }
                }
                self.free_holds(reservation_id, held, false).await;
                Err(refusal)
            }
        }
    }
}
