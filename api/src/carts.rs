//! Carts whose lines have several owners, coordinated by the node the call reached.
//!
//! `Reserve`: the request is checked, an existing record for its request id is answered as
//! it stands; otherwise each owner holds its lines (the peer `HoldLines`, or this node's
//! engine), all at once. Only when every line is held is the record created, conditioned on
//! its absence (a concurrent coordinator of the same request id created it first: its record
//! is the answer). If an owner refuses a line, the refusal is recorded first (also only if
//! nothing is recorded), and only then is every owner asked to free what it held: no attempt
//! of the request id can be recorded afterwards, so freeing never takes units from a recorded
//! reservation. If an owner does not answer, or the record's write fails, nothing is freed:
//! a retry holds again (what is held is kept) and finds or writes the record, and otherwise
//! each owner's reaper frees the holds at their deadline (after writing a tombstone, so that
//! no late coordinator records them). `Commit`, `Release` and `GetReservation` read the
//! record, change it conditioned on the bytes read (trying again when it moved), and then
//! free each owner's lines where the change frees them. Units may be held too long, never
//! promised twice.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use stockgrid_actors::domain::PairKey;
use stockgrid_actors::domain::excerpt;
use stockgrid_actors::engine::StoredReservation;
use stockgrid_actors::keys;
use stockgrid_actors::reservation::{
    MAX_HOLD_MS, ReleaseReason, ReservationError, ReservationLine, ReservationRecord,
    ReservationState, ReserveRequest, check_same_request, reservation_id_for,
};
use stockgrid_actors::time::Timestamp;
use stockgrid_cluster::Grid;
use tonic::Status;

use crate::convert;
use crate::proto::v1 as pb;
use crate::router::{ReservationCall, Router, Target};
use crate::service::{Api, OWNER_UNAVAILABLE_PREFIX};
use crate::status::reservation_status;

/// Tries of a conditioned change of a record that moved meanwhile.
const CHANGE_ATTEMPTS: usize = 3;

impl<G: Grid> Api<G> {
    /// A reservation call on a cart whose lines have several owners.
    pub(crate) async fn cart_across_owners(
        &self,
        engine: &G,
        router: &Router,
        call: ReservationCall,
    ) -> Result<pb::Reservation, Status> {
        match call {
            ReservationCall::Reserve(request) => self.reserve_across(engine, router, request).await,
            ReservationCall::Commit(request) => {
                let window = (request.pickup_window_seconds > 0)
                    .then(|| i64::from(request.pickup_window_seconds) * 1_000);
                if let Some(window) = window
                    && !(1..=MAX_HOLD_MS).contains(&window)
                {
                    return Err(reservation_status(&ReservationError::Invalid {
                        field: "pickup_window_seconds".to_owned(),
                        reason: format!("must be 1 to {} seconds", MAX_HOLD_MS / 1000),
                    }));
                }
                let window = window.unwrap_or(engine.config().pickup_window_ms);
                self.change_across(
                    engine,
                    router,
                    &request.reservation_id,
                    None,
                    |record, now| match record.state {
                        ReservationState::Pending => {
                            let mut record = record.clone();
                            record.state = ReservationState::Committed;
                            record.deadline = now.plus_ms(window);
                            Ok(Some((record, None)))
                        }
                        ReservationState::Committed => Ok(None),
                        state => Err(wrong_state(record, state)),
                    },
                )
                .await
            }
            ReservationCall::Release(request) => {
                let reason = convert::release_reason(request.reason)?;
                let not_found = Some(reason == ReleaseReason::ItemNotFound);
                self.change_across(
                    engine,
                    router,
                    &request.reservation_id,
                    not_found,
                    |record: &ReservationRecord, _| match record.state {
                        ReservationState::Pending | ReservationState::Committed => {
                            let mut record = record.clone();
                            record.state = ReservationState::Released;
                            record.release_reason = Some(reason);
                            Ok(Some((record, Some(reason == ReleaseReason::ItemNotFound))))
                        }
                        ReservationState::Released => Ok(None),
                        state => Err(wrong_state(record, state)),
                    },
                )
                .await
            }
            ReservationCall::Get(request) => {
                self.change_across(engine, router, &request.reservation_id, None, |_, _| {
                    Ok(None)
                })
                .await
            }
        }
    }

    async fn reserve_across(
        &self,
        engine: &G,
        router: &Router,
        request: pb::ReserveRequest,
    ) -> Result<pb::Reservation, Status> {
        let reserve = ReserveRequest {
            surface: convert::surface(request.surface, "surface")?,
            lines: convert::lines(&request.lines),
            request_id: request.request_id,
            ttl_ms: (request.ttl_seconds > 0).then(|| i64::from(request.ttl_seconds) * 1_000),
        };
        engine
            .check_reserve(&reserve)
            .map_err(|e| reservation_status(&e))?;
        let reservation_id = reservation_id_for(&reserve.request_id);
        if let Some(stored) = load(engine, &reservation_id).await? {
            return self
                .answer_existing(engine, router, &stored.record, &reserve)
                .await;
        }
        let now = engine.now();
        let deadline = now.plus_ms(reserve.ttl_ms.unwrap_or(engine.config().reservation_ttl_ms));
        let table = router.table();
        let mut groups: BTreeMap<Target, Vec<(usize, ReservationLine)>> = BTreeMap::new();
        for (index, line) in reserve.lines.iter().enumerate() {
            let target = router.target(engine, &table, keys::partition_of(line.pair));
            groups.entry(target).or_default().push((index, *line));
        }
        let holds = groups.iter().map(|(target, lines)| {
            let reservation_id = reservation_id.as_str();
            let surface = reserve.surface;
            async move {
                let first_line = lines.first().map_or(0, |(index, _)| *index);
                let held = match target {
                    Target::Local => engine
                        .hold_lines(reservation_id, lines.clone(), surface, deadline)
                        .await
                        .map_err(|e| reservation_status(&e)),
                    Target::Peer(address) => {
                        let request = pb::HoldLinesRequest {
                            reservation_id: reservation_id.to_owned(),
                            lines: lines
                                .iter()
                                .map(|(index, line)| pb::IndexedLine {
                                    index: *index as u32,
                                    line: Some(line_to_proto(line)),
                                })
                                .collect(),
                            surface: convert::surface_to_proto(surface) as i32,
                            deadline_ms: deadline.0,
                        };
                        router.hold_lines(address, request).await
                    }
                    Target::Nobody => Err(Status::unavailable(format!(
                        "{OWNER_UNAVAILABLE_PREFIX}: a line's partition has no owner answering now; retry"
                    ))),
                };
                // A refusal names its line ("lines[3]: ..."); other failures the group's first.
                held.map_err(|status| (refused_line(&status).unwrap_or(first_line), status))
            }
        });
        let mut failures: Vec<(usize, Status)> = join_all(holds)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        failures.sort_by_key(|(line, _)| *line);
        let pairs: Vec<PairKey> = reserve.lines.iter().map(|line| line.pair).collect();
        let mut record = ReservationRecord {
            reservation_id: reservation_id.clone(),
            request_id: reserve.request_id.clone(),
            surface: reserve.surface,
            lines: reserve.lines.clone(),
            state: ReservationState::Pending,
            created: now,
            deadline,
            release_reason: None,
        };
        if !failures.is_empty() {
            let Some(position) = failures
                .iter()
                .position(|(_, status)| status.code() == tonic::Code::FailedPrecondition)
            else {
                // An owner did not answer or failed: what was held stays (a retry holds
                // again and keeps it; otherwise the owners' reapers free it at the
                // deadline), and the call answers that failure.
                return Err(failures.swap_remove(0).1);
            };
            let refusal = failures.swap_remove(position).1;
            // Refused. The refusal is recorded first, only if nothing is recorded yet: then
            // no attempt of this request id can be recorded after the holds are freed, and
            // freeing cannot take units from another attempt's recorded reservation.
            record.state = ReservationState::Released;
            record.release_reason = Some(ReleaseReason::Refused);
            record.deadline = now;
            return match engine.write_reservation(&record, None).await {
                Ok(true) => {
                    self.free_across(engine, router, &reservation_id, &pairs, false)
                        .await;
                    Err(refusal)
                }
                // Another attempt of this request id recorded first: its record answers.
                Ok(false) => {
                    self.answer_recorded(engine, router, &reservation_id, &reserve)
                        .await
                }
                // Unknown: the holds are left to the owners' reapers.
                Err(_) => Err(refusal),
            };
        }
        match engine.write_reservation(&record, None).await {
            Ok(true) => report(engine, record).await,
            // Another attempt of this request id recorded first (the lines held here are the
            // same reservation's), or the reapers gave up on these holds: what is recorded
            // answers.
            Ok(false) => {
                self.answer_recorded(engine, router, &reservation_id, &reserve)
                    .await
            }
            // The write may have landed: the holds stay, for a retry to find (or for the
            // owners' reapers at the deadline). Freeing them could take units from a recorded
            // reservation.
            Err(error) => Err(reservation_status(&error)),
        }
    }

    /// The answer to a Reserve whose reservation id is recorded already.
    async fn answer_recorded(
        &self,
        engine: &G,
        router: &Router,
        reservation_id: &str,
        reserve: &ReserveRequest,
    ) -> Result<pb::Reservation, Status> {
        match load(engine, reservation_id).await? {
            Some(stored) => {
                self.answer_existing(engine, router, &stored.record, reserve)
                    .await
            }
            None => Err(reservation_status(&ReservationError::Changed(
                reservation_id.to_owned(),
            ))),
        }
    }

    async fn answer_existing(
        &self,
        engine: &G,
        router: &Router,
        record: &ReservationRecord,
        reserve: &ReserveRequest,
    ) -> Result<pb::Reservation, Status> {
        check_same_request(record, reserve).map_err(|e| reservation_status(&e))?;
        if record.release_reason == Some(ReleaseReason::Refused) {
            return Err(Status::failed_precondition(format!(
                "lines: the cart of request {} was refused (a line could not be promised); reserve with a new request id",
                excerpt(&reserve.request_id)
            )));
        }
        self.change_across(engine, router, &record.reservation_id, None, |_, _| {
            Ok(None)
        })
        .await
    }

    /// Reads a record, settles it if its deadline passed, and applies `change` to what is
    /// left (`Ok(None)`: nothing to change; a change may free the lines, ITEM_NOT_FOUND when
    /// the flag says so), conditioned on the bytes read.
    async fn change_across(
        &self,
        engine: &G,
        router: &Router,
        reservation_id: &str,
        frees_when_unchanged: Option<bool>,
        change: impl Fn(
            &ReservationRecord,
            Timestamp,
        ) -> Result<Option<(ReservationRecord, Option<bool>)>, Status>,
    ) -> Result<pb::Reservation, Status> {
        for _ in 0..CHANGE_ATTEMPTS {
            let stored = load(engine, reservation_id).await?.ok_or_else(|| {
                reservation_status(&ReservationError::NotFound(reservation_id.to_owned()))
            })?;
            let now = engine.now();
            let current = blocking_report(engine, stored.record.clone()).await?;
            let (next, frees) =
                if current.record.state.is_active() && current.record.deadline <= now {
                    let mut expired = current.record.clone();
                    expired.state = ReservationState::Expired;
                    expired.release_reason = Some(ReleaseReason::Expired);
                    (expired, Some(false))
                } else {
                    match change(&current.record, now)? {
                        None => {
                            // Already so (a retry of a call whose answer was lost, perhaps
                            // before it freed everything): free again, which is idempotent.
                            if let Some(not_found) = frees_when_unchanged {
                                let pairs: Vec<PairKey> =
                                    current.record.lines.iter().map(|line| line.pair).collect();
                                self.free_across(engine, router, reservation_id, &pairs, not_found)
                                    .await;
                            }
                            return Ok(convert::reservation(&current));
                        }
                        Some(changed) => changed,
                    }
                };
            let written = engine
                .write_reservation(&next, Some(&stored.bytes))
                .await
                .map_err(|e| reservation_status(&e))?;
            if !written {
                continue;
            }
            if let Some(not_found) = frees {
                let pairs: Vec<PairKey> = next.lines.iter().map(|line| line.pair).collect();
                self.free_across(engine, router, reservation_id, &pairs, not_found)
                    .await;
            }
            if next.state == ReservationState::Expired {
                // Expired on the way: the call itself is answered on what is there now.
                continue;
            }
            return report(engine, next).await;
        }
        Err(Status::aborted(format!(
            "reservation {reservation_id} changed {CHANGE_ATTEMPTS} times while this call read it; retry"
        )))
    }

    /// Frees a reservation's holds at every owner of `pairs`; failures are logged (each
    /// owner's reaper frees them at their deadline).
    async fn free_across(
        &self,
        engine: &G,
        router: &Router,
        reservation_id: &str,
        pairs: &[PairKey],
        not_found: bool,
    ) {
        let table = router.table();
        let mut groups: BTreeMap<Target, Vec<PairKey>> = BTreeMap::new();
        for &pair in pairs {
            let target = router.target(engine, &table, keys::partition_of(pair));
            groups.entry(target).or_default().push(pair);
        }
        let frees = groups.into_iter().map(|(target, pairs)| async move {
            match target {
                Target::Local => engine.free_lines(reservation_id, pairs, not_found).await,
                Target::Peer(address) => {
                    let request = pb::FreeLinesRequest {
                        reservation_id: reservation_id.to_owned(),
                        lines: pairs
                            .iter()
                            .map(|pair| pb::ReservationLine {
                                sku: pair.sku,
                                location: pair.location,
                                qty: 0,
                            })
                            .collect(),
                        not_found,
                    };
                    let mut freed = router.free_lines(&address, request.clone()).await;
                    if freed.is_err() {
                        // The owner moved or did not answer: once more, at the owner the
                        // store names now.
                        let partitions = pairs.iter().map(|pair| keys::partition_of(*pair)).collect();
                        let table = router.refresh(partitions).await;
                        let owners: Vec<Target> = pairs
                            .iter()
                            .map(|pair| router.target(engine, &table, keys::partition_of(*pair)))
                            .collect();
                        for target in owners {
                            freed = match target {
                                Target::Local => {
                                    engine.free_lines(reservation_id, pairs.clone(), not_found).await;
                                    Ok(())
                                }
                                Target::Peer(address) => {
                                    router.free_lines(&address, request.clone()).await
                                }
                                Target::Nobody => freed,
                            };
                        }
                    }
                    if let Err(status) = freed {
                        tracing::warn!(
                            peer = address,
                            reservation_id,
                            message = status.message(),
                            "freeing a cart's lines at their owner failed; its reaper frees them at their deadline"
                        );
                    }
                }
                Target::Nobody => {}
            }
        });
        join_all(frees).await;
    }
}

fn wrong_state(record: &ReservationRecord, state: ReservationState) -> Status {
    reservation_status(&ReservationError::WrongState {
        reservation_id: record.reservation_id.clone(),
        state,
    })
}

/// The line a refusal names (`lines[3]: ...`).
fn refused_line(status: &Status) -> Option<usize> {
    let rest = status.message().strip_prefix("lines[")?;
    rest.split_once(']')?.0.parse().ok()
}

fn line_to_proto(line: &ReservationLine) -> pb::ReservationLine {
    pb::ReservationLine {
        sku: line.pair.sku,
        location: line.pair.location,
        qty: line.quantity,
    }
}

async fn load<G: Grid>(
    engine: &G,
    reservation_id: &str,
) -> Result<Option<StoredReservation>, Status> {
    let grid = engine.clone();
    let reservation_id = reservation_id.to_owned();
    tokio::task::spawn_blocking(move || grid.load_reservation(&reservation_id))
        .await
        .map_err(|e| Status::internal(format!("reservation read task: {e}")))?
        .map_err(|e| reservation_status(&e))
}

async fn blocking_report<G: Grid>(
    engine: &G,
    record: ReservationRecord,
) -> Result<stockgrid_actors::reservation::ReservationReport, Status> {
    let grid = engine.clone();
    tokio::task::spawn_blocking(move || grid.reservation_report(record))
        .await
        .map_err(|e| Status::internal(format!("reservation report task: {e}")))?
        .map_err(|e| reservation_status(&e))
}

async fn report<G: Grid>(engine: &G, record: ReservationRecord) -> Result<pb::Reservation, Status> {
    Ok(convert::reservation(
        &blocking_report(engine, record).await?,
    ))
}
