//! The services' routed paths on a grid node, and the peer service that answers them.
//!
//! A batch is split by who answers each item ([`Router::target`]): this node's engine, or
//! one call per peer, all at once. Items whose owner is unknown, did not answer, or refused
//! (the partition moved) are tried again after the router re-reads their partitions' owners
//! from the store, with a short backoff, for at most the retry budget (a hand-off completes
//! within a heartbeat or two); what still fails answers "not available" with reason
//! `OWNER_UNAVAILABLE` (a lookup), FAILED with that reason (an event), or UNAVAILABLE (a
//! single-item call). An event is acknowledged only once every owner of its effects has it
//! durably: a transfer whose two pairs have two owners is sent to both, each applying its
//! own effect. The peer service answers from this node's partitions only.

use std::collections::HashMap;
use std::pin::Pin;

use futures_util::future::join_all;
use stockgrid_actors::decision::owner_unavailable;
use stockgrid_actors::domain::{PairKey, Surface};
use stockgrid_actors::keys;
use stockgrid_actors::ledger::{EntryScope, LedgerEntry};
use stockgrid_actors::partition::{PARTITION_FUNCTION, Partition};
use stockgrid_actors::reservation::{MAX_LINES, ReservationLine, check_reservation_id};
use stockgrid_actors::time::Timestamp;
use stockgrid_cluster::Grid;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::proto::v1 as pb;
use crate::router::{ReservationCall, Router, Target};
use crate::service::{Api, OWNER_UNAVAILABLE_PREFIX, item_result};
use crate::status::{reservation_status, too_many};

type Pending<'a, T> = Pin<Box<dyn Future<Output = Vec<(usize, Option<T>)>> + Send + 'a>>;

/// One effect of an event to apply at its owner.
#[derive(Clone, Copy, Debug)]
struct Part {
    /// The event's index in the request.
    event: usize,
    scope: EntryScope,
    partition: Partition,
}

impl<G: Grid> Api<G> {
    /// Answers lookups at their owners, a result per item in order.
    pub(crate) async fn answer_routed(
        &self,
        engine: &G,
        router: &Router,
        items: Vec<pb::GetAvailabilityRequest>,
    ) -> Result<Vec<pb::BatchItemResult>, Status> {
        let mut results: Vec<Option<pb::BatchItemResult>> = vec![None; items.len()];
        let mut lookups: Vec<Option<(PairKey, i64, Surface)>> = vec![None; items.len()];
        let mut pending: Vec<usize> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match convert::lookup(item, Some(index)) {
                Ok(lookup) => {
                    lookups[index] = Some(lookup);
                    pending.push(index);
                }
                Err(status) => results[index] = Some(item_result(Err(status))),
            }
        }
        let pair_of = |index: usize| lookups[index].map(|(pair, _, _)| pair);
        let mut table = router.table();
        let mut retry = router.retry();
        while !pending.is_empty() && retry.next().await {
            if retry.is_retry() {
                let partitions = pending
                    .iter()
                    .filter_map(|&index| pair_of(index))
                    .map(keys::partition_of)
                    .collect();
                table = router.refresh(partitions).await;
            }
            let mut groups: HashMap<Target, Vec<usize>> = HashMap::new();
            for index in pending.drain(..) {
                let Some(pair) = pair_of(index) else { continue };
                let target = router.target(engine, &table, keys::partition_of(pair));
                groups.entry(target).or_default().push(index);
            }
            let mut calls: Vec<Pending<'_, pb::BatchItemResult>> = Vec::with_capacity(groups.len());
            for (target, group) in groups {
                match target {
                    Target::Local => {
                        let asked: Vec<(PairKey, i64, Surface)> =
                            group.iter().filter_map(|&index| lookups[index]).collect();
                        calls.push(Box::pin(async move {
                            match self.decide(engine, asked).await {
                                Ok(answers) => group
                                    .into_iter()
                                    .zip(answers)
                                    .map(|(index, answer)| match answer {
                                        Ok(answer) if is_owner_unavailable(&answer) => {
                                            (index, None)
                                        }
                                        answer => (index, Some(item_result(answer))),
                                    })
                                    .collect(),
                                Err(status) => group
                                    .into_iter()
                                    .map(|index| (index, Some(item_result(Err(status.clone())))))
                                    .collect(),
                            }
                        }));
                    }
                    Target::Peer(address) => {
                        let asked: Vec<pb::GetAvailabilityRequest> =
                            group.iter().map(|&index| items[index]).collect();
                        calls.push(Box::pin(async move {
                            match router.decide(&address, asked).await {
                                Ok(response) if response.results.len() == group.len() => group
                                    .into_iter()
                                    .zip(response.results)
                                    .map(|(index, result)| match &result.result {
                                        Some(pb::batch_item_result::Result::Answer(answer))
                                            if is_owner_unavailable(answer) =>
                                        {
                                            (index, None)
                                        }
                                        _ => (index, Some(result)),
                                    })
                                    .collect(),
                                Err(status) if !is_unavailable_owner(&status) => group
                                    .into_iter()
                                    .map(|index| (index, Some(item_result(Err(status.clone())))))
                                    .collect(),
                                answered => {
                                    log_peer_failure(&address, answered.err());
                                    group.into_iter().map(|index| (index, None)).collect()
                                }
                            }
                        }));
                    }
                    Target::Nobody => {
                        calls.push(Box::pin(async move {
                            group.into_iter().map(|index| (index, None)).collect()
                        }));
                    }
                }
            }
            for (index, result) in join_all(calls).await.into_iter().flatten() {
                match result {
                    Some(result) => results[index] = Some(result),
                    None => pending.push(index),
                }
            }
        }
        // Not promised, with the reason: never an error for the batch.
        for index in pending {
            if let Some(pair) = pair_of(index) {
                let answer = convert::answer(&owner_unavailable(), 0, self.decision_id(pair));
                results[index] = Some(item_result(Ok(answer)));
            }
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    item_result(Err(Status::internal("a lookup produced no answer")))
                })
            })
            .collect())
    }

    /// Applies events at the owners of their effects: a result per event, in order, each
    /// once every owner of its effects has it durably.
    pub(crate) async fn ingest_routed(
        &self,
        engine: &G,
        router: &Router,
        events: Vec<pb::Event>,
    ) -> Result<pb::IngestEventsResponse, Status> {
        let mut results: Vec<pb::EventResult> = vec![pb::EventResult::default(); events.len()];
        let mut valid: Vec<bool> = vec![false; events.len()];
        let mut parts: Vec<Part> = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            match convert::event(event.clone()) {
                Ok(parsed) => {
                    valid[index] = true;
                    let primary = keys::partition_of(parsed.pair);
                    // A transfer's effect at its counterparty is a part of its own, sent to
                    // that pair's owner (the same node as the primary's, often: one call).
                    match LedgerEntry::counterparty_target(&parsed).map(keys::partition_of) {
                        None => parts.push(Part {
                            event: index,
                            scope: EntryScope::All,
                            partition: primary,
                        }),
                        Some(counterparty) => {
                            parts.push(Part {
                                event: index,
                                scope: EntryScope::Primary,
                                partition: primary,
                            });
                            parts.push(Part {
                                event: index,
                                scope: EntryScope::Counterparty,
                                partition: counterparty,
                            });
                        }
                    }
                }
                Err((field, reason)) => {
                    results[index] = pb::EventResult {
                        status: pb::EventStatus::Rejected as i32,
                        reason,
                        field: format!("events[{index}].{field}"),
                    }
                }
            }
        }
        let attempted = valid.iter().filter(|valid| **valid).count();
        self.check_ingest_response_size(&results, attempted)?;
        let mut part_results: Vec<Option<pb::EventResult>> = vec![None; parts.len()];
        let mut pending: Vec<usize> = (0..parts.len()).collect();
        let mut table = router.table();
        let mut retry = router.retry();
        while !pending.is_empty() && retry.next().await {
            if retry.is_retry() {
                let partitions = pending.iter().map(|&part| parts[part].partition).collect();
                table = router.refresh(partitions).await;
            }
            let mut groups: HashMap<Target, Vec<usize>> = HashMap::new();
            for part in pending.drain(..) {
                let target = router.target(engine, &table, parts[part].partition);
                groups.entry(target).or_default().push(part);
            }
            let mut calls: Vec<Pending<'_, pb::EventResult>> = Vec::with_capacity(groups.len());
            for (target, group) in groups {
                let asked: Vec<pb::Event> = group
                    .iter()
                    .map(|&part| events[parts[part].event].clone())
                    .collect();
                let scopes: Vec<EntryScope> = group.iter().map(|&part| parts[part].scope).collect();
                match target {
                    Target::Local => calls.push(Box::pin(async move {
                        let applied = self.ingest_local(engine, asked, Some(scopes)).await;
                        event_results(group, applied)
                    })),
                    Target::Peer(address) => calls.push(Box::pin(async move {
                        let request = pb::PeerIngestRequest {
                            events: asked,
                            scopes: scopes
                                .into_iter()
                                .map(|s| scope_to_proto(s) as i32)
                                .collect(),
                        };
                        let applied = router.ingest(&address, request).await;
                        if let Err(status) = &applied {
                            log_peer_failure(&address, Some(status.clone()));
                        }
                        event_results(group, applied)
                    })),
                    Target::Nobody => calls.push(Box::pin(async move {
                        group.into_iter().map(|part| (part, None)).collect()
                    })),
                }
            }
            for (part, result) in join_all(calls).await.into_iter().flatten() {
                match result {
                    Some(result) => part_results[part] = Some(result),
                    None => pending.push(part),
                }
            }
        }
        // An event answers FAILED if any of its effects did, else as its answering effect.
        for (part, result) in parts.iter().zip(part_results) {
            let result = result.unwrap_or_else(|| pb::EventResult {
                status: pb::EventStatus::Failed as i32,
                reason: format!(
                    "{OWNER_UNAVAILABLE_PREFIX}: partition {} has no owner answering now; retry",
                    part.partition
                ),
                field: String::new(),
            });
            let slot = &mut results[part.event];
            let failed = result.status == pb::EventStatus::Failed as i32;
            let slot_failed = slot.status == pb::EventStatus::Failed as i32;
            if !slot_failed && (failed || part.scope != EntryScope::Counterparty) {
                *slot = result;
            }
        }
        let failures: Vec<&pb::EventResult> = results
            .iter()
            .filter(|result| result.status == pb::EventStatus::Failed as i32)
            .collect();
        if let Some(first) = failures.first() {
            tracing::warn!(
                failures = failures.len(),
                reason = first.reason,
                "ingest: events failed; the client retries them"
            );
            // Every event failed because no owner answered: the whole call is UNAVAILABLE,
            // which clients and their retry policies retry (an effect that did land answers
            // duplicate then).
            if failures.len() == attempted
                && failures
                    .iter()
                    .all(|result| result.reason.starts_with(OWNER_UNAVAILABLE_PREFIX))
            {
                return Err(Status::unavailable(first.reason.clone()));
            }
        }
        Ok(pb::IngestEventsResponse { results })
    }

    /// A reservation call at the owner of every line, or coordinated by this node when the
    /// lines have several owners (`crate::carts`).
    pub(crate) async fn reservation_routed(
        &self,
        engine: &G,
        router: &Router,
        pairs: &[PairKey],
        call: ReservationCall,
    ) -> Result<pb::Reservation, Status> {
        let partitions: Vec<Partition> =
            pairs.iter().map(|&pair| keys::partition_of(pair)).collect();
        if partitions.is_empty() {
            return self.reservation_local(engine, call).await;
        }
        let mut table = router.table();
        let mut last = Status::unavailable(OWNER_UNAVAILABLE_PREFIX);
        let mut retry = router.retry();
        while retry.next().await {
            if retry.is_retry() {
                table = router.refresh(partitions.clone()).await;
            }
            let mut targets: Vec<Target> = partitions
                .iter()
                .map(|&partition| router.target(engine, &table, partition))
                .collect();
            targets.sort();
            targets.dedup();
            let answered = match targets.as_slice() {
                [Target::Local] => self.reservation_local(engine, call.clone()).await,
                [Target::Peer(address)] => router.reservation(address.as_str(), call.clone()).await,
                [_] => Err(Status::unavailable(format!(
                    "{OWNER_UNAVAILABLE_PREFIX}: a line's partition has no owner answering now; retry"
                ))),
                _ if targets.contains(&Target::Nobody) => Err(Status::unavailable(format!(
                    "{OWNER_UNAVAILABLE_PREFIX}: a line's partition has no owner answering now; retry"
                ))),
                // Lines of several owners: this node coordinates.
                _ => self.cart_across_owners(engine, router, call.clone()).await,
            };
            match answered {
                // The owner moved (or none answered): read the owners again and retry.
                Err(status) if is_unavailable_owner(&status) => last = status,
                answered => return answered,
            }
        }
        Err(last)
    }

    /// A pair's state at its owner.
    pub(crate) async fn inspect_routed(
        &self,
        engine: &G,
        router: &Router,
        request: pb::GetEntityStateRequest,
    ) -> Result<pb::EntityState, Status> {
        let partition = keys::partition_of(PairKey::new(request.sku, request.location));
        let mut table = router.table();
        let mut last = Status::unavailable(OWNER_UNAVAILABLE_PREFIX);
        let mut retry = router.retry();
        while retry.next().await {
            if retry.is_retry() {
                table = router.refresh(vec![partition]).await;
            }
            let answered = match router.target(engine, &table, partition) {
                Target::Local => self.inspect_local(engine, &request).await,
                Target::Peer(address) => router.entity_state(&address, request).await,
                Target::Nobody => Err(Status::unavailable(format!(
                    "{OWNER_UNAVAILABLE_PREFIX}: partition {partition} has no owner answering now; retry"
                ))),
            };
            match answered {
                Err(status) if is_unavailable_owner(&status) => last = status,
                answered => return answered,
            }
        }
        Err(last)
    }

    /// The routing table as this node knows it, for `Catalog.GetRoutingTable`.
    pub(crate) fn routing_table(&self) -> pb::RoutingTable {
        let scheme = keys::SCHEME;
        let mut table = pb::RoutingTable {
            partition_function: PARTITION_FUNCTION.to_owned(),
            partition_count: u32::from(scheme.count()),
            location_spread: u32::from(scheme.location_spread()),
            single_node: true,
            ..Default::default()
        };
        if let Some(router) = self.router() {
            let routes = router.table();
            table.single_node = false;
            table.members = routes
                .members
                .iter()
                .map(|route| pb::RoutingMember {
                    node_id: route.node_id.clone(),
                    address: route.address.clone(),
                    region: route.region.clone(),
                })
                .collect();
            table.owners = (0..scheme.count())
                .map(|partition| {
                    routes
                        .owners
                        .get(usize::from(partition))
                        .copied()
                        .flatten()
                        .map_or(-1, |index| index as i32)
                })
                .collect();
            table.epochs = (0..scheme.count())
                .map(|partition| {
                    routes
                        .epochs
                        .get(usize::from(partition))
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            table.version = routes.version;
        }
        table
    }
}

/// The results of parts applied by one owner: retry (`None`) what its owner refused or what
/// a failed call left unknown (applying again is safe: a retried effect that had landed
/// answers duplicate).
fn event_results(
    group: Vec<usize>,
    applied: Result<pb::IngestEventsResponse, Status>,
) -> Vec<(usize, Option<pb::EventResult>)> {
    match applied {
        Ok(response) if response.results.len() == group.len() => group
            .into_iter()
            .zip(response.results)
            .map(|(part, result)| {
                let refused = result.status == pb::EventStatus::Failed as i32
                    && result.reason.starts_with(OWNER_UNAVAILABLE_PREFIX);
                (part, (!refused).then_some(result))
            })
            .collect(),
        Ok(_) => {
            tracing::warn!("an owner answered the wrong number of event results");
            group.into_iter().map(|part| (part, None)).collect()
        }
        Err(status) if is_unavailable_owner(&status) => {
            group.into_iter().map(|part| (part, None)).collect()
        }
        // Refused for another reason (overload, a bad request, an internal error): each
        // event fails with it, not retried and not blamed on a missing owner.
        Err(status) => group
            .into_iter()
            .map(|part| {
                (
                    part,
                    Some(pb::EventResult {
                        status: pb::EventStatus::Failed as i32,
                        reason: status.message().to_owned(),
                        field: String::new(),
                    }),
                )
            })
            .collect(),
    }
}

fn is_owner_unavailable(answer: &pb::AvailabilityAnswer) -> bool {
    answer.reason == OWNER_UNAVAILABLE_PREFIX
}

/// Whether a forwarded call failed because the owner could not answer for the partition:
/// unreachable, out of time, or it refused (the partition moved). Retrying is safe: every
/// forwarded call is idempotent (reservations by request id, events by identity).
fn is_unavailable_owner(status: &Status) -> bool {
    // A status made by the transport (the peer's connection went away mid-call, e.g. an h2
    // GOAWAY while it drains on SIGTERM) carries its cause; one the owner answered does not.
    std::error::Error::source(status).is_some()
        || matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
        )
}

fn log_peer_failure(address: &str, status: Option<Status>) {
    match status {
        Some(status) => tracing::debug!(
            peer = address,
            code = ?status.code(),
            message = status.message(),
            "peer call failed; retrying after re-reading the owners"
        ),
        None => tracing::warn!(peer = address, "peer answered the wrong number of results"),
    }
}

fn scope_to_proto(scope: EntryScope) -> pb::EntryScope {
    match scope {
        EntryScope::All => pb::EntryScope::All,
        EntryScope::Primary => pb::EntryScope::Primary,
        EntryScope::Counterparty => pb::EntryScope::Counterparty,
    }
}

fn scope_from_proto(index: usize, value: i32) -> Result<EntryScope, Status> {
    match pb::EntryScope::try_from(value) {
        Ok(pb::EntryScope::All) => Ok(EntryScope::All),
        Ok(pb::EntryScope::Primary) => Ok(EntryScope::Primary),
        Ok(pb::EntryScope::Counterparty) => Ok(EntryScope::Counterparty),
        Err(_) => Err(Status::invalid_argument(format!(
            "scopes[{index}]: unknown entry scope {value}"
        ))),
    }
}

type Answer<T> = Result<Response<T>, Status>;

/// The peer service: answers from this node's own partitions only, never routing again.
#[tonic::async_trait]
impl<G: Grid> pb::peer_server::Peer for Api<G> {
    async fn decide(
        &self,
        request: Request<pb::BatchGetAvailabilityRequest>,
    ) -> Answer<pb::BatchGetAvailabilityResponse> {
        let (_permit, engine) = self.admit()?;
        let items = request.into_inner().items;
        let limit = self.limits().max_batch_items;
        if items.len() > limit {
            return Err(too_many("items", items.len(), limit));
        }
        let results = self.answer_local(engine, &items).await?;
        Ok(Response::new(pb::BatchGetAvailabilityResponse { results }))
    }

    async fn ingest(
        &self,
        request: Request<pb::PeerIngestRequest>,
    ) -> Answer<pb::IngestEventsResponse> {
        let (_permit, engine) = self.admit_write()?;
        let request = request.into_inner();
        // A router may send both parts of every transfer of a full request to one owner.
        let limit = 2 * self.limits().max_events_per_request;
        if request.events.len() > limit {
            return Err(too_many("events", request.events.len(), limit));
        }
        let scopes = if request.scopes.is_empty() {
            None
        } else {
            Some(
                request
                    .scopes
                    .iter()
                    .enumerate()
                    .map(|(index, &scope)| scope_from_proto(index, scope))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        let response = self.ingest_local(engine, request.events, scopes).await?;
        Ok(Response::new(response))
    }

    async fn get_entity_state(
        &self,
        request: Request<pb::GetEntityStateRequest>,
    ) -> Answer<pb::EntityState> {
        let (_permit, engine) = self.admit()?;
        Ok(Response::new(
            self.inspect_local(engine, request.get_ref()).await?,
        ))
    }

    async fn reserve(&self, request: Request<pb::ReserveRequest>) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit_write()?;
        let call = ReservationCall::Reserve(request.into_inner());
        Ok(Response::new(self.reservation_local(engine, call).await?))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit_write()?;
        let call = ReservationCall::Commit(request.into_inner());
        Ok(Response::new(self.reservation_local(engine, call).await?))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit_write()?;
        let call = ReservationCall::Release(request.into_inner());
        Ok(Response::new(self.reservation_local(engine, call).await?))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit()?;
        let call = ReservationCall::Get(request.into_inner());
        Ok(Response::new(self.reservation_local(engine, call).await?))
    }

    async fn hold_lines(
        &self,
        request: Request<pb::HoldLinesRequest>,
    ) -> Answer<pb::HoldLinesResponse> {
        let (_permit, engine) = self.admit_write()?;
        let request = request.into_inner();
        check_reservation_id(&request.reservation_id).map_err(|e| reservation_status(&e))?;
        let limit = MAX_LINES;
        if request.lines.len() > limit {
            return Err(too_many("lines", request.lines.len(), limit));
        }
        let mut lines = Vec::with_capacity(request.lines.len());
        for (position, indexed) in request.lines.iter().enumerate() {
            let line = indexed.line.as_ref().ok_or_else(|| {
                Status::invalid_argument(format!("lines[{position}].line: is required"))
            })?;
            if line.qty < 1 || line.qty > i64::from(i32::MAX) {
                return Err(Status::invalid_argument(format!(
                    "lines[{position}].line.qty: must be 1 to {}, got {}",
                    i32::MAX,
                    line.qty
                )));
            }
            lines.push((
                indexed.index as usize,
                ReservationLine {
                    pair: PairKey::new(line.sku, line.location),
                    quantity: line.qty,
                },
            ));
        }
        let surface = convert::surface(request.surface, "surface")?;
        engine
            .hold_lines(
                &request.reservation_id,
                lines,
                surface,
                Timestamp(request.deadline_ms),
            )
            .await
            .map_err(|e| reservation_status(&e))?;
        Ok(Response::new(pb::HoldLinesResponse {}))
    }

    async fn free_lines(
        &self,
        request: Request<pb::FreeLinesRequest>,
    ) -> Answer<pb::FreeLinesResponse> {
        let (_permit, engine) = self.admit_write()?;
        let request = request.into_inner();
        check_reservation_id(&request.reservation_id).map_err(|e| reservation_status(&e))?;
        if request.lines.len() > MAX_LINES {
            return Err(too_many("lines", request.lines.len(), MAX_LINES));
        }
        let pairs: Vec<PairKey> = request
            .lines
            .iter()
            .map(|line| PairKey::new(line.sku, line.location))
            .collect();
        let elsewhere = pairs
            .iter()
            .find(|pair| !engine.serves(keys::partition_of(**pair)))
            .map(|pair| keys::partition_of(*pair));
        engine
            .free_lines(&request.reservation_id, pairs, request.not_found)
            .await;
        // Lines of partitions this node does not serve are their owners' to free: say so,
        // so that the coordinator asks the owner the store names now.
        if let Some(partition) = elsewhere {
            return Err(Status::unavailable(format!(
                "{OWNER_UNAVAILABLE_PREFIX}: partition {partition} is not served by this node"
            )));
        }
        Ok(Response::new(pb::FreeLinesResponse {}))
    }
}
