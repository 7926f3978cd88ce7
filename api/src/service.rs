//! The tonic services of one node: `Availability`, `Ingest`, `Reservations`, `Catalog`,
//! `Admin` and `Inspect`, all served over a [`Grid`] (one node's engine, or later the
//! cluster's router).
//!
//! The node serves before its engine has recovered: until [`Api::set_engine`] is called
//! every call answers UNAVAILABLE ("recovering") and health says NOT_SERVING. Each call
//! first takes an admission permit; when `max_in_flight` calls are running, the next is
//! shed with RESOURCE_EXHAUSTED instead of queueing without bound.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use stockgrid_actors::catalog::MAX_LOCATIONS_PER_UPSERT;
use stockgrid_actors::decision::{owner_unavailable, store_unavailable};
use stockgrid_actors::domain::{Arrival, PairKey, Surface};
use stockgrid_actors::keys;
use stockgrid_actors::ledger::EntryScope;
use stockgrid_actors::policy::MAX_REGION_BYTES;
use stockgrid_actors::reservation::{ReservationError, ReserveRequest};
use stockgrid_actors::{Engine, EngineError, Lookup};
use stockgrid_cluster::Grid;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::errors::decode_status;
use crate::proto::v1 as pb;
use crate::router::{ReservationCall, Router};
use crate::status::{engine_status, invalid, reservation_status, status_of, too_many};

/// Request limits of the services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceLimits {
    /// Most items in one `BatchGetAvailability`.
    pub max_batch_items: usize,
    /// Most events in one `IngestEvents` request or stream message.
    pub max_events_per_request: usize,
    /// Calls served at once; more are shed with RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// Of those, writes (ingest batches, reservation changes, catalog upserts) served at
    /// once: writes are shed first, so lookups keep their slots while ingest runs flat out.
    pub max_writes_in_flight: usize,
    /// Largest request message, in bytes.
    pub max_message_bytes: usize,
    /// A `StreamEvents` call that sends no message for this long is ended (it holds no
    /// admission slot while it waits, but it holds a stream and a task).
    pub stream_idle_timeout_ms: u64,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            max_batch_items: 1_000,
            max_events_per_request: 10_000,
            max_in_flight: 4_096,
            max_writes_in_flight: 256,
            max_message_bytes: 16 << 20,
            stream_idle_timeout_ms: 60_000,
        }
    }
}

/// The most bytes an applied event's result takes in a response: a status and a reason (a
/// QUARANTINED code, or a FAILED event's fixed status message), with field tags.
const MAX_OUTCOME_RESULT_BYTES: usize = 192;
/// Bytes a result's own framing adds inside the response (tag and length).
const RESULT_FRAMING_BYTES: usize = 3;

struct ApiInner<G> {
    engine: OnceLock<G>,
    /// The grid's router (`None`: a single node, which answers everything itself).
    router: OnceLock<Router>,
    limits: ServiceLimits,
    admission: Arc<Semaphore>,
    write_admission: Arc<Semaphore>,
    decision_prefix: String,
    decisions: AtomicU64,
}

/// The services of one node over its grid `G`. Cloning shares them.
pub struct Api<G = Engine> {
    inner: Arc<ApiInner<G>>,
}

impl<G> Clone for Api<G> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<G> std::fmt::Debug for Api<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("limits", &self.inner.limits)
            .field("recovered", &self.inner.engine.get().is_some())
            .finish()
    }
}

type Answer<T> = Result<Response<T>, Status>;

/// The slots a running write holds: a write slot and a call slot.
type WritePermit = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl<G: Grid> Api<G> {
    /// Services with no engine yet (every call answers UNAVAILABLE until
    /// [`Api::set_engine`]). `node_tag` makes decision ids unique across nodes and restarts.
    pub fn new(limits: ServiceLimits, node_tag: u64) -> Self {
        Self {
            inner: Arc::new(ApiInner {
                engine: OnceLock::new(),
                router: OnceLock::new(),
                limits,
                admission: Arc::new(Semaphore::new(limits.max_in_flight)),
                write_admission: Arc::new(Semaphore::new(limits.max_writes_in_flight)),
                decision_prefix: format!("d-{node_tag:x}-"),
                decisions: AtomicU64::new(0),
            }),
        }
    }

    /// The grid is recovered: serve with it from now on.
    pub fn set_engine(&self, engine: G) {
        let _ = self.inner.engine.set(engine);
    }

    /// The node is part of a grid: route every item to its partition's owner from now on
    /// (set before the engine, so that no call is answered unrouted).
    pub fn set_router(&self, router: Router) {
        let _ = self.inner.router.set(router);
    }

    /// The grid's router (`None`: a single node).
    pub(crate) fn router(&self) -> Option<&Router> {
        self.inner.router.get()
    }

    /// The limits in force.
    pub fn limits(&self) -> ServiceLimits {
        self.inner.limits
    }

    pub(crate) fn engine(&self) -> Result<&G, Status> {
        self.inner
            .engine
            .get()
            .ok_or_else(|| Status::unavailable("node is recovering; retry shortly"))
    }

    /// Admission: a permit per running call, or RESOURCE_EXHAUSTED when full.
    pub(crate) fn admit(&self) -> Result<(OwnedSemaphorePermit, &G), Status> {
        let limit = self.inner.limits.max_in_flight;
        let permit = take_slot(&self.inner.admission, limit, "calls")?;
        Ok((permit, self.engine()?))
    }

    /// Admission of a write: a write slot as well as a call slot, or RESOURCE_EXHAUSTED
    /// when either is full.
    pub(crate) fn admit_write(&self) -> Result<(WritePermit, &G), Status> {
        let limit = self.inner.limits.max_writes_in_flight;
        let write = take_slot(&self.inner.write_admission, limit, "writes")?;
        let (call, engine) = self.admit()?;
        Ok(((write, call), engine))
    }

    /// A new decision id for a lookup of `pair`: the node's prefix, a counter, and the pair
    /// (so that the record is found in its pair's partition from the id alone).
    pub(crate) fn decision_id(&self, pair: PairKey) -> String {
        let n = self.inner.decisions.fetch_add(1, Ordering::Relaxed);
        let prefix = &self.inner.decision_prefix;
        let mut id = String::with_capacity(prefix.len() + 16 + keys::DECISION_ID_SUFFIX_MAX);
        id.push_str(prefix);
        push_hex(&mut id, n);
        keys::push_decision_id_suffix(&mut id, pair);
        id
    }

    /// Answers lookups in one pass, in order. Each is given its decision id here; the records
    /// of promises (pickup, delivery) are durable before any answer returns, sampled
    /// item-page records lingering up to 20 ms to share a commit (`Engine::decide_recorded_many`).
    pub(crate) async fn decide(
        &self,
        engine: &G,
        lookups: Vec<(PairKey, i64, Surface)>,
    ) -> Result<Vec<Result<pb::AvailabilityAnswer, Status>>, Status> {
        let lookups: Vec<(String, Lookup)> = lookups
            .into_iter()
            .map(|(pair, quantity, surface)| {
                let decision_id = self.decision_id(pair);
                let digest = engine.audits(surface, &decision_id);
                let lookup = Lookup {
                    pair,
                    quantity,
                    surface,
                    digest,
                };
                (decision_id, lookup)
            })
            .collect();
        let unavailable = |decision_id| {
            tracing::debug!("lookup while the store is unavailable");
            convert::answer(&store_unavailable(), 0, decision_id)
        };
        match engine.decide(&lookups).await {
            Ok(decided) => Ok(lookups
                .into_iter()
                .zip(decided)
                .map(|((decision_id, _), decided)| match decided {
                    Ok(decided) => Ok(convert::answer(
                        &decided.decision,
                        decided.version,
                        decision_id,
                    )),
                    Err(EngineError::Store(_)) => Ok(unavailable(decision_id)),
                    // Another node owns the pair, or it is moving: "not promised", with the
                    // reason, never an error for the batch.
                    Err(EngineError::NotOwner { .. }) => {
                        Ok(convert::answer(&owner_unavailable(), 0, decision_id))
                    }
                    Err(error) => Err(engine_status(&error)),
                })
                .collect()),
            // A store that refuses writes (or cannot be reached) leaves the node's state in
            // doubt: the answer is "not available" with the reason, never an error and never
            // a promise (DESIGN.md property 6).
            Err(EngineError::Store(_)) => Ok(lookups
                .into_iter()
                .map(|(decision_id, _)| Ok(unavailable(decision_id)))
                .collect()),
            Err(error) => Err(engine_status(&error)),
        }
    }

    /// Applies one batch of events: a result per event, in order (routed to the owners in a
    /// grid).
    async fn ingest_batch(
        &self,
        engine: &G,
        events: Vec<pb::Event>,
    ) -> Result<pb::IngestEventsResponse, Status> {
        let limit = self.inner.limits.max_events_per_request;
        if events.len() > limit {
            return Err(too_many("events", events.len(), limit));
        }
        match self.router() {
            Some(router) => self.ingest_routed(engine, router, events).await,
            None => self.ingest_local(engine, events, None).await,
        }
    }

    /// Refuses a request whose response would pass the size limit, before anything is
    /// applied: `rejected` results are known now; an applied event's result is a status and
    /// at most a short reason code.
    pub(crate) fn check_ingest_response_size(
        &self,
        rejected: &[pb::EventResult],
        applied: usize,
    ) -> Result<(), Status> {
        let response_bytes: usize = rejected
            .iter()
            .filter(|result| result.status == pb::EventStatus::Rejected as i32)
            .map(|result| prost::Message::encoded_len(result) + RESULT_FRAMING_BYTES)
            .sum::<usize>()
            + applied * MAX_OUTCOME_RESULT_BYTES;
        if response_bytes > self.inner.limits.max_message_bytes {
            return Err(Status::resource_exhausted(format!(
                "events: the response would be about {response_bytes} bytes, above the limit of {}; nothing was applied; split the request",
                self.inner.limits.max_message_bytes
            )));
        }
        Ok(())
    }

    /// Applies events on this node's engine, each in its scope (all of it when `scopes` is
    /// `None`): a result per event, in order.
    pub(crate) async fn ingest_local(
        &self,
        engine: &G,
        events: Vec<pb::Event>,
        scopes: Option<Vec<EntryScope>>,
    ) -> Result<pb::IngestEventsResponse, Status> {
        if let Some(scopes) = &scopes
            && scopes.len() != events.len()
        {
            return Err(invalid(
                "scopes",
                format!("{} scopes for {} events", scopes.len(), events.len()),
            ));
        }
        let mut scopes = scopes.map(Vec::into_iter);
        let now = engine.now();
        let mut results: Vec<pb::EventResult> = Vec::with_capacity(events.len());
        let mut arrivals = Vec::with_capacity(events.len());
        let mut positions = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            let scope = scopes
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or(EntryScope::All);
            match convert::event(event) {
                Ok(event) => {
                    positions.push(index);
                    arrivals.push((
                        Arrival {
                            event,
                            arrival_time: now,
                        },
                        scope,
                    ));
                    results.push(pb::EventResult::default());
                }
                Err((field, reason)) => results.push(pb::EventResult {
                    status: pb::EventStatus::Rejected as i32,
                    reason,
                    field: format!("events[{index}].{field}"),
                }),
            }
        }
        // A response over the size limit would fail after the events were applied: refuse
        // the request before anything is.
        self.check_ingest_response_size(&results, arrivals.len())?;
        if !arrivals.is_empty() {
            let outcomes = engine
                .ingest_scoped(arrivals)
                .await
                .map_err(|e| engine_status(&e))?;
            let mut first_failure = None;
            let mut failures = 0usize;
            let mut all_store_transient = true;
            let attempted = positions.len();
            for (index, outcome) in positions.into_iter().zip(outcomes) {
                results[index] = match outcome {
                    Ok(outcome) => convert::event_result(&outcome),
                    Err(error) => {
                        failures += 1;
                        all_store_transient &= matches!(
                            &error,
                            EngineError::Store(store) if store.is_transient() || store.is_outcome_unknown()
                        ) || matches!(error, EngineError::NotOwner { .. });
                        let result = failed_event(&error);
                        first_failure.get_or_insert(error);
                        result
                    }
                };
            }
            if let Some(error) = first_failure {
                // Logged once per request, not once per event.
                tracing::warn!(%error, failures, "ingest: events failed; the client retries them");
                // Nothing applied because the store could not be reached (or the partitions
                // moved): the whole call is UNAVAILABLE, which clients and their retry
                // policies know to retry.
                if failures == attempted && all_store_transient {
                    return Err(status_of(&error));
                }
            }
        }
        Ok(pb::IngestEventsResponse { results })
    }
}

#[tonic::async_trait]
impl<G: Grid> pb::availability_server::Availability for Api<G> {
    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Answer<pb::AvailabilityAnswer> {
        let (_permit, engine) = self.admit()?;
        if let Some(router) = self.router() {
            // Checked here first, so that an error names the request's own fields.
            convert::lookup(request.get_ref(), None)?;
            let mut results = self
                .answer_routed(engine, router, vec![request.into_inner()])
                .await?;
            return match results.pop().and_then(|result| result.result) {
                Some(pb::batch_item_result::Result::Answer(answer)) => Ok(Response::new(answer)),
                Some(pb::batch_item_result::Result::Error(error)) => Err(Status::new(
                    tonic::Code::from_i32(error.code),
                    error.message,
                )),
                None => Err(Status::internal("a lookup produced no answer")),
            };
        }
        let lookup = convert::lookup(request.get_ref(), None)?;
        let mut answers = self.decide(engine, vec![lookup]).await?;
        let answer = answers
            .pop()
            .unwrap_or_else(|| Err(Status::internal("a lookup produced no answer")))?;
        Ok(Response::new(answer))
    }

    async fn batch_get_availability(
        &self,
        request: Request<pb::BatchGetAvailabilityRequest>,
    ) -> Answer<pb::BatchGetAvailabilityResponse> {
        let (_permit, engine) = self.admit()?;
        let items = request.into_inner().items;
        let limit = self.inner.limits.max_batch_items;
        if items.len() > limit {
            return Err(too_many("items", items.len(), limit));
        }
        let results = match self.router() {
            Some(router) => self.answer_routed(engine, router, items).await?,
            None => self.answer_local(engine, &items).await?,
        };
        Ok(Response::new(pb::BatchGetAvailabilityResponse { results }))
    }
}

impl<G: Grid> Api<G> {
    /// Answers lookups on this node's engine, a result per item in order: items that parse
    /// are decided together in one pass; the others answer their error.
    pub(crate) async fn answer_local(
        &self,
        engine: &G,
        items: &[pb::GetAvailabilityRequest],
    ) -> Result<Vec<pb::BatchItemResult>, Status> {
        let parsed: Vec<Result<(PairKey, i64, Surface), Status>> = items
            .iter()
            .enumerate()
            .map(|(index, item)| convert::lookup(item, Some(index)))
            .collect();
        let lookups: Vec<(PairKey, i64, Surface)> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().copied())
            .collect();
        let mut decided = self.decide(engine, lookups).await?.into_iter();
        Ok(parsed
            .into_iter()
            .map(|parsed| {
                item_result(match parsed {
                    Ok(_) => decided
                        .next()
                        .unwrap_or_else(|| Err(Status::internal("a lookup produced no answer"))),
                    Err(status) => Err(status),
                })
            })
            .collect())
    }
}

/// One item's result in a batch: its answer, or its error with the field at fault.
pub(crate) fn item_result(answer: Result<pb::AvailabilityAnswer, Status>) -> pb::BatchItemResult {
    pb::BatchItemResult {
        result: Some(match answer {
            Ok(answer) => pb::batch_item_result::Result::Answer(answer),
            Err(status) => pb::batch_item_result::Result::Error(pb::ItemError {
                code: status.code() as i32,
                field: status
                    .message()
                    .split_once(": ")
                    .filter(|_| status.code() == tonic::Code::InvalidArgument)
                    .map(|(field, _)| field.to_owned())
                    .unwrap_or_default(),
                message: status.message().to_owned(),
            }),
        }),
    }
}

#[tonic::async_trait]
impl<G: Grid> pb::admin_server::Admin for Api<G> {
    async fn set_rules_fallback(
        &self,
        request: Request<pb::SetRulesFallbackRequest>,
    ) -> Answer<pb::DecisionPolicy> {
        let engine = self.engine()?;
        let request = request.into_inner();
        let surface = match pb::Surface::try_from(request.surface) {
            Ok(pb::Surface::Unspecified) => None,
            _ => Some(convert::surface(request.surface, "surface")?),
        };
        let region = Some(request.region.trim()).filter(|region| !region.is_empty());
        if surface.is_none() && region.is_none() {
            return Err(Status::invalid_argument(
                "surface: name a surface, a region, or both",
            ));
        }
        if let Some(region) = region
            && request.rules_only
        {
            engine
                .policy()
                .check_rules_region(region)
                .map_err(|reason| invalid("region", reason))?;
        } else if region.is_some_and(|region| region.len() > MAX_REGION_BYTES) {
            return Err(invalid(
                "region",
                format!("must be at most {MAX_REGION_BYTES} bytes"),
            ));
        }
        // Written to the grid's policy record, then applied here (the other nodes apply it
        // within a second).
        let rules_only = request.rules_only;
        let changed = match engine
            .change_policy(|record| record.switch_to_rules(surface, region, rules_only))
            .await
        {
            Ok(changed) => changed.is_some(),
            // The store is out of reach: the switch is made on this node alone (a rollback
            // to rules must not wait for the store), in force until the grid's policy
            // changes; the answer's version says it was not written.
            Err(EngineError::Store(error)) => {
                tracing::warn!(%error, "decision policy: the store is out of reach; switched on this node only");
                engine.policy().switch_to_rules(surface, region, rules_only)
            }
            Err(error) => return Err(engine_status(&error)),
        };
        if !changed {
            // The grid's record has no room for the region (the check above saw this
            // node's switches, which may lag by a second).
            return Err(invalid(
                "region",
                format!(
                    "{} regions are already switched to rules; switch one back first",
                    stockgrid_actors::policy::MAX_RULES_REGIONS
                ),
            ));
        }
        tracing::warn!(
            surface = surface.map(|s| s.as_str()),
            region,
            rules_only = request.rules_only,
            "decision policy changed"
        );
        Ok(Response::new(convert::policy(&engine.policy().snapshot())))
    }

    async fn get_decision_record(
        &self,
        request: Request<pb::GetDecisionRecordRequest>,
    ) -> Answer<pb::DecisionRecord> {
        let engine = self.engine()?;
        let decision_id = &request.get_ref().decision_id;
        check_decision_id(decision_id)?;
        match engine
            .decision_record(decision_id)
            .map_err(|e| engine_status(&e))?
        {
            Some(record) => Ok(Response::new(convert::decision_record(&record))),
            None => Err(no_record(decision_id)),
        }
    }

    async fn replay_decision(
        &self,
        request: Request<pb::ReplayDecisionRequest>,
    ) -> Answer<pb::DecisionReplay> {
        let engine = self.engine()?.clone();
        let decision_id = request.into_inner().decision_id;
        check_decision_id(&decision_id)?;
        // Rebuilding scans the pair's log: off the async workers.
        let replayed = tokio::task::spawn_blocking({
            let decision_id = decision_id.clone();
            move || engine.replay_decision(&decision_id)
        })
        .await
        .map_err(|e| Status::internal(format!("replay task: {e}")))?
        .map_err(|e| engine_status(&e))?;
        match replayed {
            Some(replay) => Ok(Response::new(convert::decision_replay(&replay))),
            None => Err(no_record(&decision_id)),
        }
    }

    async fn get_experiment_report(
        &self,
        _request: Request<pb::GetExperimentReportRequest>,
    ) -> Answer<pb::ExperimentReport> {
        let engine = self.engine()?;
        Ok(Response::new(match engine.policy().experiment() {
            Some(experiment) => convert::experiment_report(&experiment),
            None => pb::ExperimentReport::default(),
        }))
    }

    async fn get_decision_policy(
        &self,
        _request: Request<pb::GetDecisionPolicyRequest>,
    ) -> Answer<pb::DecisionPolicy> {
        let engine = self.engine()?;
        Ok(Response::new(convert::policy(&engine.policy().snapshot())))
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::IngestEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<G: Grid> pb::ingest_server::Ingest for Api<G> {
    async fn ingest_events(
        &self,
        request: Request<pb::IngestEventsRequest>,
    ) -> Answer<pb::IngestEventsResponse> {
        let (_permit, engine) = self.admit_write()?;
        let events = request.into_inner().events;
        Ok(Response::new(self.ingest_batch(engine, events).await?))
    }

    type StreamEventsStream = AckStream;

    async fn stream_events(
        &self,
        request: Request<Streaming<pb::IngestEventsRequest>>,
    ) -> Answer<Self::StreamEventsStream> {
        self.engine()?;
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let api = self.clone();
        let idle = Duration::from_millis(self.inner.limits.stream_idle_timeout_ms);
        tokio::spawn(async move {
            // One batch at a time: each ack is sent once its batch is durable, in order. An
            // admission slot is held only while a batch is applied, never while the stream
            // waits for the next one; a stream silent for the idle timeout is ended.
            loop {
                let message = match tokio::time::timeout(idle, inbound.next()).await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(_) => {
                        let _ = sender
                            .send(Err(Status::deadline_exceeded(format!(
                                "stream idle: no message for {} ms; open a new stream when there are events",
                                idle.as_millis()
                            ))))
                            .await;
                        break;
                    }
                };
                let ack = match message {
                    Ok(batch) => match api.admit_write() {
                        Ok((_permit, engine)) => api.ingest_batch(engine, batch.events).await,
                        Err(status) => Err(status),
                    },
                    Err(status) => Err(decode_status(status)),
                };
                let failed = ack.is_err();
                // A client that stops reading its acks is as idle as one that stops sending.
                match tokio::time::timeout(idle, sender.send(ack)).await {
                    Ok(Ok(())) if !failed => {}
                    _ => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

#[tonic::async_trait]
impl<G: Grid> pb::reservations_server::Reservations for Api<G> {
    async fn reserve(&self, request: Request<pb::ReserveRequest>) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit_write()?;
        let request = request.into_inner();
        let reservation = match self.router() {
            Some(router) => {
                let pairs: Vec<PairKey> = request
                    .lines
                    .iter()
                    .map(|line| PairKey::new(line.sku, line.location))
                    .collect();
                self.reservation_routed(engine, router, &pairs, ReservationCall::Reserve(request))
                    .await?
            }
            None => self.reserve_local(engine, request).await?,
        };
        Ok(Response::new(reservation))
    }

    async fn commit(&self, request: Request<pb::CommitRequest>) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit_write()?;
        let call = ReservationCall::Commit(request.into_inner());
        Ok(Response::new(self.reservation_call(engine, call).await?))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit_write()?;
        let call = ReservationCall::Release(request.into_inner());
        Ok(Response::new(self.reservation_call(engine, call).await?))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Answer<pb::Reservation> {
        let (_permit, engine) = self.admit()?;
        let call = ReservationCall::Get(request.into_inner());
        Ok(Response::new(self.reservation_call(engine, call).await?))
    }
}

impl<G: Grid> Api<G> {
    /// A call on an existing reservation: on this node, or in a grid at the owner of its
    /// lines (read from its record).
    async fn reservation_call(
        &self,
        engine: &G,
        call: ReservationCall,
    ) -> Result<pb::Reservation, Status> {
        let Some(router) = self.router() else {
            return self.reservation_local(engine, call).await;
        };
        let reservation_id = match &call {
            ReservationCall::Reserve(_) => {
                return Err(Status::internal("reserve has no reservation id yet"));
            }
            ReservationCall::Commit(request) => request.reservation_id.clone(),
            ReservationCall::Release(request) => request.reservation_id.clone(),
            ReservationCall::Get(request) => request.reservation_id.clone(),
        };
        let grid = engine.clone();
        let pairs = tokio::task::spawn_blocking(move || grid.reservation_pairs(&reservation_id))
            .await
            .map_err(|e| Status::internal(format!("reservation lookup task: {e}")))?
            .map_err(|e| reservation_status(&e))?;
        match pairs {
            Some(pairs) => self.reservation_routed(engine, router, &pairs, call).await,
            // Not found (answered by the local call, in its words).
            None => self.reservation_local(engine, call).await,
        }
    }

    /// A reservation call on this node's engine.
    pub(crate) async fn reservation_local(
        &self,
        engine: &G,
        call: ReservationCall,
    ) -> Result<pb::Reservation, Status> {
        let report = match call {
            ReservationCall::Reserve(request) => return self.reserve_local(engine, request).await,
            ReservationCall::Commit(request) => {
                let window = (request.pickup_window_seconds > 0)
                    .then(|| i64::from(request.pickup_window_seconds) * 1_000);
                engine.commit(&request.reservation_id, window).await
            }
            ReservationCall::Release(request) => {
                let reason = convert::release_reason(request.reason)?;
                engine.release(&request.reservation_id, reason).await
            }
            ReservationCall::Get(request) => engine.reservation(&request.reservation_id).await,
        };
        let report = report.map_err(|e| reservation_status(&e))?;
        Ok(convert::reservation(&report))
    }

    async fn reserve_local(
        &self,
        engine: &G,
        request: pb::ReserveRequest,
    ) -> Result<pb::Reservation, Status> {
        let reserve = ReserveRequest {
            surface: convert::surface(request.surface, "surface")?,
            lines: convert::lines(&request.lines),
            request_id: request.request_id,
            ttl_ms: (request.ttl_seconds > 0).then(|| i64::from(request.ttl_seconds) * 1_000),
        };
        let report = engine
            .reserve(reserve)
            .await
            .map_err(|e| reservation_status(&e))?;
        Ok(convert::reservation(&report))
    }
}

#[tonic::async_trait]
impl<G: Grid> pb::catalog_server::Catalog for Api<G> {
    async fn upsert_locations(
        &self,
        request: Request<pb::UpsertLocationsRequest>,
    ) -> Answer<pb::UpsertLocationsResponse> {
        let (_permit, engine) = self.admit_write()?;
        let locations = request.into_inner().locations;
        if locations.len() > MAX_LOCATIONS_PER_UPSERT {
            return Err(too_many(
                "locations",
                locations.len(),
                MAX_LOCATIONS_PER_UPSERT,
            ));
        }
        let locations = locations
            .into_iter()
            .enumerate()
            .map(|(index, location)| convert::location(index, location))
            .collect::<Result<Vec<_>, _>>()?;
        let upserted = engine
            .upsert_locations(&locations)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(Response::new(pb::UpsertLocationsResponse {
            upserted: upserted as u32,
        }))
    }

    async fn get_routing_table(
        &self,
        _request: Request<pb::GetRoutingTableRequest>,
    ) -> Answer<pb::RoutingTable> {
        let (_permit, _engine) = self.admit()?;
        Ok(Response::new(self.routing_table()))
    }

    async fn list_locations(
        &self,
        request: Request<pb::ListLocationsRequest>,
    ) -> Answer<pb::ListLocationsResponse> {
        let (_permit, engine) = self.admit()?;
        let request = request.get_ref();
        let page = match request.page_size {
            0 => stockgrid_actors::catalog::MAX_PAGE,
            n => (n as usize).min(stockgrid_actors::catalog::MAX_PAGE),
        };
        let locations = engine
            .list_locations(request.after, page)
            .map_err(|e| engine_status(&e))?;
        let next_after = (locations.len() == page)
            .then(|| locations.last().map(|l| l.location))
            .flatten();
        Ok(Response::new(pb::ListLocationsResponse {
            locations: locations.iter().map(convert::location_to_proto).collect(),
            next_after,
        }))
    }
}

#[tonic::async_trait]
impl<G: Grid> pb::inspect_server::Inspect for Api<G> {
    async fn get_entity_state(
        &self,
        request: Request<pb::GetEntityStateRequest>,
    ) -> Answer<pb::EntityState> {
        let (_permit, engine) = self.admit()?;
        let request = request.into_inner();
        let state = match self.router() {
            Some(router) => self.inspect_routed(engine, router, request).await?,
            None => self.inspect_local(engine, &request).await?,
        };
        Ok(Response::new(state))
    }
}

impl<G: Grid> Api<G> {
    /// What this node's engine holds for a pair, with its reservations and read view.
    pub(crate) async fn inspect_local(
        &self,
        engine: &G,
        request: &pb::GetEntityStateRequest,
    ) -> Result<pb::EntityState, Status> {
        let pair = PairKey::new(request.sku, request.location);
        let report = engine
            .inspect(pair)
            .await
            .map_err(|e| engine_status(&e))?
            .ok_or_else(|| Status::not_found(format!("{pair} was never seen")))?;
        let mut reservations = Vec::with_capacity(report.holds.len());
        for hold in &report.holds {
            // A cart whose other lines another node owns is read from its record as stored.
            let found = match engine.reservation(&hold.reservation_id).await {
                Err(ReservationError::Engine(EngineError::NotOwner { .. })) => engine
                    .load_reservation(&hold.reservation_id)
                    .and_then(|stored| {
                        stored
                            .map(|stored| engine.reservation_report(stored.record))
                            .transpose()
                    })
                    .and_then(|report| {
                        report.ok_or_else(|| {
                            ReservationError::NotFound(hold.reservation_id.to_string())
                        })
                    }),
                found => found,
            };
            match found {
                Ok(found) => reservations.push(convert::reservation(&found)),
                // A hold whose record was never written (an interrupted Reserve) until the
                // reaper frees it: shown with what is known.
                Err(_) => reservations.push(pb::Reservation {
                    reservation_id: hold.reservation_id.to_string(),
                    ..Default::default()
                }),
            }
        }
        let read_view = engine
            .read_view(pair)
            .await
            .map_err(|e| engine_status(&e))?;
        Ok(convert::entity_state(&report, read_view, reservations))
    }
}

/// The FAILED result of an event the engine could not apply, in the status's words (store
/// internals go to the log, not the client). An event of a partition this node does not
/// serve starts with `OWNER_UNAVAILABLE`, which routers retry on and clients may match.
pub(crate) fn failed_event(error: &EngineError) -> pb::EventResult {
    let message = status_of(error).message().to_owned();
    pb::EventResult {
        status: pb::EventStatus::Failed as i32,
        reason: match error {
            EngineError::NotOwner { .. } => format!("{OWNER_UNAVAILABLE_PREFIX}: {message}"),
            _ => message,
        },
        field: String::new(),
    }
}

/// How a FAILED event result or an UNAVAILABLE status says the pair's owner did not answer.
pub(crate) const OWNER_UNAVAILABLE_PREFIX: &str = "OWNER_UNAVAILABLE";

/// A slot of `slots` (which holds `limit`), or RESOURCE_EXHAUSTED naming the `what` in flight.
fn take_slot(
    slots: &Arc<Semaphore>,
    limit: usize,
    what: &str,
) -> Result<OwnedSemaphorePermit, Status> {
    Arc::clone(slots).try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "load shed: {limit} {what} in flight; retry with backoff"
        ))
    })
}

fn check_decision_id(decision_id: &str) -> Result<(), Status> {
    if decision_id.is_empty() || decision_id.len() > 256 {
        return Err(Status::invalid_argument(
            "decision_id: must be 1 to 256 bytes",
        ));
    }
    Ok(())
}

fn no_record(decision_id: &str) -> Status {
    Status::not_found(format!(
        "decision_id: no record of decision {} (item-page decisions are sampled)",
        stockgrid_actors::domain::excerpt(decision_id)
    ))
}

/// Appends `n` in lower-case hexadecimal, without leading zeros (as `{n:x}` writes it).
fn push_hex(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buffer = [0u8; 16];
    let mut start = buffer.len();
    let mut rest = n;
    loop {
        start -= 1;
        buffer[start] = DIGITS[(rest & 0xf) as usize];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    for &digit in &buffer[start..] {
        out.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn push_hex_writes_what_the_formatter_writes(n in any::<u64>(), small in 0u64..300) {
            for value in [n, small, u64::MAX, 0] {
                let mut written = String::from("d-");
                super::push_hex(&mut written, value);
                prop_assert_eq!(written, format!("d-{value:x}"));
            }
        }
    }
}
