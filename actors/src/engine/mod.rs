//! The engine: one node's grid of virtual entities, its store and its supervisor.
//!
//! [`Engine`] is what the service, replay and tests drive. It places each pair on a shard by
//! a stable hash, sends entries through bounded mailboxes (a full mailbox makes the caller
//! wait: back-pressure), and answers each event only once everything it caused is durable.
//!
//! Lookups never enter a mailbox for a resident pair: each shard publishes the immutable
//! snapshot of every pair it wrote (state and log position) to a concurrent map once it is
//! durable, and a lookup decides on the caller's thread from that snapshot and the shared
//! facts, in every decision mode. A pair that is not resident is answered "never seen" from
//! one point read of the store when it has no snapshot there; only a pair that exists but was
//! passivated is activated through its shard, a bounded number at a time so that a flood of
//! cold lookups cannot queue ahead of writes. A batch is answered in one pass: its cold pairs
//! are activated with one message per shard, then every item decides in order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use stockgrid_storage::offload::offload;
use stockgrid_storage::{CommitTicket, GroupCommitConfig, GroupCommitter, Store, WriteBatch};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

mod audit;
mod carts;
mod catalog;
mod policy_record;
mod reservations;
mod samples;

use crate::audit::NodeMoment;
pub use crate::audit::{Decided, Lookup};
use crate::config::EngineConfig;
pub use crate::counters::EngineCounters;

use crate::decision::{Decision, SafetyStock, decide_by_rules, store_unavailable, unavailable};
use crate::domain::{Arrival, PairKey, Source, Surface};
use crate::due::{Committer, DueTimes};
use crate::error::EngineError;
use crate::keys;
use crate::keys::IndexFamily;
pub use crate::ledger::EntryScope;
use crate::ledger::{EntryRole, LedgerEntry, Outcome, QuarantineReason, ReadView};
use crate::ownership::Ownership;
use crate::persist::{self, IdentityTail, Snapshot};
use crate::policy::{Ask, DecisionContext};
use crate::prefetch::prefetch;
use crate::reservation::ReservationLocks;
use crate::shard::{
    ArrivedEntry, EntityReport, Residents, ShardContext, ShardMessage, SharedResident,
    decide_entity,
};
use crate::supervision::{PanicReport, ShardSupervisor, SupervisorArguments};
use crate::time::{Clock, Timestamp};
pub use carts::StoredReservation;

/// How long a caller waits for a restarting shard before giving up.
const SHARD_RESTART_WAIT: Duration = Duration::from_secs(10);
/// Deliveries tried for one message while its shard restarts for another message's panic.
const DELIVERY_ATTEMPTS: usize = 5;
/// Expired keys deleted per maintenance commit.
const EXPIRY_BATCH: usize = 10_000;
/// Activation messages in flight per shard (on average), so cold lookups leave the
/// mailboxes to writes.
const ACTIVATIONS_PER_SHARD: usize = 2;
/// Pairs activated by one message: a shard handles a message at a time, so this bounds how
/// long an activation delays the writes queued behind it.
const ACTIVATIONS_PER_MESSAGE: usize = 64;

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Entities passivated.
    pub passivated_entities: usize,
    /// Expired keys deleted (identities, quarantine records).
    pub expired_keys: usize,
    /// Reservations that expired (TTL or pickup deadline passed).
    pub expired_reservations: usize,
}

struct ShardHandle {
    actor: watch::Receiver<Option<ActorRef<ShardMessage>>>,
    mailbox: Arc<Semaphore>,
}

struct EngineInner {
    config: Arc<EngineConfig>,
    store: Arc<dyn Store>,
    committer: Committer,
    /// The group committer of decision records, apart from ingest's.
    record_committer: Committer,
    /// Sampled item-page decision records lingering for their shared group commit.
    sampled_records: samples::SampledRecords,
    /// When each partition's expiry and deadline indexes next have work.
    due_times: Arc<DueTimes>,
    /// The shards' own runtime, if configured (kept alive with the engine).
    _shard_runtime: ShardRuntime,
    clock: Arc<dyn Clock>,
    published: Arc<Residents>,
    shards: Vec<ShardHandle>,
    /// Activation messages in flight, over all shards: a flood of lookups of cold pairs
    /// waits here rather than in the mailboxes writes go through.
    activations: Arc<Semaphore>,
    supervisor: ActorRef<()>,
    reports: Arc<Mutex<Vec<PanicReport>>>,
    counters: Arc<EngineCounters>,
    reservation_locks: ReservationLocks,
    decisions: Arc<DecisionContext>,
    /// The partitions this node answers for (all, on a single node).
    ownership: Ownership,
}

/// A running engine. Cloning shares it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

/// Why a shard call did not produce an answer.
enum CallError {
    /// The shard answered with an error.
    Failed(EngineError),
    /// The shard died before answering (it panicked, on this message or an earlier one).
    Lost,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// The per-entry results of a shard call, boxed because the retry path recurses.
type BoxedOutcomes<'a> =
    std::pin::Pin<Box<dyn Future<Output = Vec<Result<Outcome, EngineError>>> + Send + 'a>>;

impl Engine {
    /// Starts an engine over `store`: the group committer, the shards and their supervisor.
    /// Entities are not loaded here; each activates from the store on first touch.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        Self::start_owning(store, clock, config, Ownership::single()).await
    }

    /// Starts an engine that answers for, and writes to, only the partitions `ownership`
    /// grants it (a node of a grid; [`Engine::start`] is a single node owning everything).
    pub async fn start_owning(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        ownership: Ownership,
    ) -> Result<Self, EngineError> {
        config.validate().map_err(EngineError::Start)?;
        keys::check_or_create_format(store.as_ref()).map_err(|error| match error {
            keys::FormatError::Store(error) => EngineError::from(error),
            incompatible => EngineError::Start(incompatible.to_string()),
        })?;
        let config = Arc::new(config);
        let due_times = Arc::new(DueTimes::load(store.as_ref(), ownership.clone())?);
        // Shards wait for each batch, so the main committer may run groups on several lanes
        // over a remote store; decision records keep one lane (their flush barrier relies on
        // submission order).
        let committer = Committer::new(
            GroupCommitter::start(
                Arc::clone(&store),
                GroupCommitConfig::for_store(store.as_ref()),
            )?,
            Arc::clone(&due_times),
            ownership.clone(),
        );
        let record_committer = Committer::new(
            GroupCommitter::start(Arc::clone(&store), GroupCommitConfig::default())?,
            Arc::clone(&due_times),
            ownership.clone(),
        );
        let published = Arc::new(Residents::default());
        let identities = Arc::new(IdentityTail::new(config.identity_tail_capacity));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(EngineCounters::default());
        let decisions = Arc::new(DecisionContext::default());
        decisions
            .shared
            .upsert(&crate::catalog::all_locations(store.as_ref())?);
        let shared_key = keys::shared_facts_key();
        let restored = if ownership.is_grid() {
            None
        } else {
            store.get(&shared_key)?
        };
        if let Some(bytes) = restored {
            // Statistics, not records: an unreadable value (an older layout) starts them over.
            match persist::decode("shared facts", &shared_key, &bytes) {
                Ok(learned) => decisions.shared.restore(learned),
                Err(error) => tracing::warn!(%error, "shared facts not restored; relearning"),
            }
        }
        let mut contexts = Vec::with_capacity(config.shard_count);
        let mut publishers = Vec::with_capacity(config.shard_count);
        let mut shards = Vec::with_capacity(config.shard_count);
        for shard_index in 0..config.shard_count {
            contexts.push(Arc::new(ShardContext {
                store: Arc::clone(&store),
                committer: committer.clone(),
                published: Arc::clone(&published),
                shard_index,
                shard_count: config.shard_count,
                identities: Arc::clone(&identities),
                config: Arc::clone(&config),
                clock: Arc::clone(&clock),
                in_flight: Mutex::new(None),
                counters: Arc::clone(&counters),
                decisions: Arc::clone(&decisions),
            }));
            let (publisher, actor) = watch::channel(None);
            publishers.push(publisher);
            shards.push(ShardHandle {
                actor,
                mailbox: Arc::new(Semaphore::new(config.mailbox_capacity)),
            });
        }
        let arguments = SupervisorArguments {
            contexts,
            publishers,
            reports: Arc::clone(&reports),
        };
        let shard_runtime = ShardRuntime::start(config.shard_threads)?;
        let spawn = async move { Actor::spawn(None, ShardSupervisor, arguments).await };
        let spawned = match shard_runtime.handle() {
            // Spawned from inside that runtime, the supervisor and its shards run there.
            Some(handle) => handle
                .spawn(spawn)
                .await
                .map_err(|e| EngineError::Start(format!("spawn shard supervisor: {e}")))?,
            None => spawn.await,
        };
        let (supervisor, _) =
            spawned.map_err(|e| EngineError::Start(format!("spawn shard supervisor: {e}")))?;
        let activations = Arc::new(Semaphore::new(config.shard_count * ACTIVATIONS_PER_SHARD));
        Ok(Self {
            inner: Arc::new(EngineInner {
                activations,
                config,
                store,
                committer,
                record_committer,
                sampled_records: samples::SampledRecords::default(),
                due_times,
                clock,
                published,
                shards,
                supervisor,
                reports,
                counters,
                _shard_runtime: shard_runtime,
                reservation_locks: ReservationLocks::default(),
                decisions,
                ownership,
            }),
        })
    }

    /// The partitions this node answers for.
    pub fn ownership(&self) -> &Ownership {
        &self.inner.ownership
    }

    /// The per-reservation locks serialising calls on one reservation.
    pub(crate) fn reservation_locks(&self) -> &ReservationLocks {
        &self.inner.reservation_locks
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// What the engine did since it started.
    pub fn counters(&self) -> &EngineCounters {
        &self.inner.counters
    }

    /// Shard panics seen so far (most recent last).
    pub fn panic_reports(&self) -> Vec<PanicReport> {
        self.inner
            .reports
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The shard that owns `pair`.
    pub fn shard_of(&self, pair: PairKey) -> usize {
        crate::shard::shard_of(pair, self.inner.shards.len())
    }

    /// Applies a batch of arrivals; answers one result per arrival, in order, each only
    /// once durable. An event's result is its own pair's outcome; it is an error if any
    /// effect of it (a transfer's in-transit at the counterparty) could not be made durable,
    /// in which case the caller may retry: what was applied answers "duplicate".
    pub async fn ingest(
        &self,
        arrivals: Vec<Arrival>,
    ) -> Result<Vec<Result<Outcome, EngineError>>, EngineError> {
        self.ingest_scoped(
            arrivals
                .into_iter()
                .map(|arrival| (arrival, EntryScope::All))
                .collect(),
        )
        .await
    }

    /// As [`Engine::ingest`], applying of each event only the effects its scope names: a
    /// grid's router sends a transfer whose two pairs have two owners to both, each applying
    /// its own effect. An event's result is the outcome of the effect its scope answers for
    /// (the primary one, or the counterparty's when only that is applied).
    pub async fn ingest_scoped(
        &self,
        arrivals: Vec<(Arrival, EntryScope)>,
    ) -> Result<Vec<Result<Outcome, EngineError>>, EngineError> {
        let limit = self.inner.config.max_events_per_ingest;
        if arrivals.len() > limit {
            return Err(EngineError::TooLarge {
                what: "events in one ingest",
                actual: arrivals.len(),
                limit,
            });
        }
        self.inner.store.check_writable()?;
        // Location feed health follows the arrival sequence, before dispatch to the shards,
        // so it is the same whatever the shards' scheduling (and in an audit replay).
        // (A counterparty's effect alone is not its location's feed being heard.)
        for (arrival, scope) in &arrivals {
            if *scope != EntryScope::Counterparty {
                self.inner.decisions.shared.heard(&arrival.event);
            }
        }
        let event_count = arrivals.len();
        // The shards of one round run in parallel, so two events of one identity must not
        // share a round: the n-th arrival of an identity in this batch goes to round n. The
        // first of them therefore always wins a conflict (same identity, other payload, maybe
        // another pair and shard), whatever the scheduling: replays stay deterministic.
        let mut occurrences: HashMap<(Source, &str), usize> = HashMap::with_capacity(event_count);
        let rounds_of: Vec<usize> = arrivals
            .iter()
            .map(|(arrival, _)| {
                let seen = occurrences
                    .entry((arrival.event.source, arrival.event.event_id.as_str()))
                    .or_insert(0);
                *seen += 1;
                *seen - 1
            })
            .collect();
        drop(occurrences);
        let round_count = rounds_of.iter().max().map_or(0, |last| last + 1);
        let mut rounds: Vec<Vec<(usize, (Arrival, EntryScope))>> =
            (0..round_count).map(|_| Vec::new()).collect();
        for (index, (arrival, round)) in arrivals.into_iter().zip(rounds_of).enumerate() {
            rounds[round].push((index, arrival));
        }
        let mut results: Vec<Option<Result<Outcome, EngineError>>> =
            (0..event_count).map(|_| None).collect();
        for round in rounds {
            self.ingest_round(round, &mut results).await?;
        }
        let results: Vec<Result<Outcome, EngineError>> = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(EngineError::Corrupt(
                        "event produced no primary entry".to_owned(),
                    ))
                })
            })
            .collect();
        let counters = &self.inner.counters;
        for result in &results {
            let counter = match result {
                Ok(Outcome::Applied) => &counters.applied_events,
                Ok(Outcome::Duplicate) => &counters.duplicate_events,
                Ok(Outcome::Quarantined(_)) => &counters.quarantined_events,
                Err(_) => &counters.failed_events,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(results)
    }

    /// Applies one round of arrivals (no identity twice), all shards in parallel, and fills
    /// in each arrival's result by its index.
    async fn ingest_round(
        &self,
        round: Vec<(usize, (Arrival, EntryScope))>,
        results: &mut [Option<Result<Outcome, EngineError>>],
    ) -> Result<(), EngineError> {
        let mut per_shard: Vec<Vec<(usize, EntryRole, ArrivedEntry)>> =
            (0..self.inner.shards.len()).map(|_| Vec::new()).collect();
        let mut answering: Vec<EntryRole> = vec![EntryRole::Primary; results.len()];
        let ownership = &self.inner.ownership;
        for (index, (arrival, scope)) in round {
            if scope == EntryScope::Counterparty {
                answering[index] = EntryRole::InboundAtCounterparty;
            }
            for entry in LedgerEntry::expand(arrival.event) {
                if !scope.applies(entry.role) {
                    continue;
                }
                // An entry of a partition this node does not answer for is not applied here:
                // its event answers NotOwner (what was applied elsewhere answers duplicate
                // when the event is sent again).
                if let Err(refused) = ownership.check(keys::partition_of(entry.target())) {
                    results[index] = Some(Err(refused.into()));
                    continue;
                }
                let shard = self.shard_of(entry.target());
                per_shard[shard].push((
                    index,
                    entry.role,
                    ArrivedEntry {
                        entry,
                        arrival: arrival.arrival_time,
                    },
                ));
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (shard, routed) in per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, routed)| !routed.is_empty())
        {
            let engine = self.clone();
            tasks.spawn(async move {
                let (tags, entries): (Vec<(usize, EntryRole)>, Vec<ArrivedEntry>) = routed
                    .into_iter()
                    .map(|(index, role, entry)| ((index, role), entry))
                    .unzip();
                let results = engine.apply_on_shard(shard, entries).await;
                tags.into_iter().zip(results).collect::<Vec<_>>()
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let pieces = joined.map_err(|e| EngineError::ShardUnavailable {
                shard: usize::MAX,
                reason: e.to_string(),
            })?;
            for ((index, role), result) in pieces {
                let slot = &mut results[index];
                match (role, result) {
                    (_, Err(error)) if !matches!(slot, Some(Err(_))) => *slot = Some(Err(error)),
                    (role, Ok(outcome))
                        if role == answering[index] && !matches!(slot, Some(Err(_))) =>
                    {
                        *slot = Some(Ok(outcome))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Applies entries on one shard; if the shard dies handling them, retries them one per
    /// message to find and quarantine the one that panics, so the others still apply.
    fn apply_on_shard(&self, shard: usize, entries: Vec<ArrivedEntry>) -> BoxedOutcomes<'_> {
        Box::pin(async move {
            let count = entries.len();
            let shared = Arc::new(entries);
            match self.send_apply(shard, Arc::clone(&shared)).await {
                Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                Err(CallError::Failed(error)) => (0..count).map(|_| Err(error.clone())).collect(),
                Err(CallError::Lost) if count == 1 => {
                    vec![self.resolve_lost_entry(shard, &shared[0]).await]
                }
                Err(CallError::Lost) => {
                    let mut results = Vec::with_capacity(count);
                    for entry in shared.iter() {
                        results.extend(self.apply_on_shard(shard, vec![entry.clone()]).await);
                    }
                    results
                }
            }
        })
    }

    /// One `Apply` message to a shard.
    async fn send_apply(
        &self,
        shard: usize,
        entries: Arc<Vec<ArrivedEntry>>,
    ) -> Result<Vec<Outcome>, CallError> {
        self.call(shard, move |permit, reply| ShardMessage::Apply {
            entries,
            permit,
            reply,
        })
        .await
    }

    /// A single entry whose shard died: if it was the message being handled, it is the
    /// poisoned one and is quarantined; otherwise it was only queued behind the panic and is
    /// delivered again.
    async fn resolve_lost_entry(
        &self,
        shard: usize,
        entry: &ArrivedEntry,
    ) -> Result<Outcome, EngineError> {
        for _ in 0..DELIVERY_ATTEMPTS {
            let culprit = self.panic_reports().into_iter().rev().find(|report| {
                report.shard == shard
                    && report.in_flight.len() == 1
                    && report.in_flight[0] == *entry
            });
            if let Some(report) = culprit {
                let message = report.message;
                let quarantined = entry.clone();
                let reason_message = message.clone();
                let recorded = self
                    .call(shard, move |permit, reply| {
                        ShardMessage::QuarantinePanicked {
                            entry: quarantined,
                            message: reason_message,
                            permit,
                            reply,
                        }
                    })
                    .await;
                match recorded {
                    Ok(()) => {
                        return Ok(Outcome::Quarantined(QuarantineReason::HandlerPanicked {
                            message,
                        }));
                    }
                    // Cast into the dying shard's mailbox before its replacement was
                    // published: deliver it again to the restarted shard.
                    Err(CallError::Lost) => continue,
                    Err(CallError::Failed(error)) => return Err(error),
                }
            }
            match self.send_apply(shard, Arc::new(vec![entry.clone()])).await {
                Ok(mut outcomes) => {
                    return outcomes
                        .pop()
                        .ok_or_else(|| EngineError::Corrupt("empty shard answer".to_owned()));
                }
                Err(CallError::Failed(error)) => return Err(error),
                Err(CallError::Lost) => continue,
            }
        }
        Err(EngineError::ShardUnavailable {
            shard,
            reason: "shard kept failing while this entry waited".to_owned(),
        })
    }

    fn call_error(&self, shard: usize, error: CallError) -> EngineError {
        match error {
            CallError::Failed(error) => error,
            CallError::Lost => EngineError::ShardUnavailable {
                shard,
                reason: "shard failed while handling the request".to_owned(),
            },
        }
    }

    /// Commits a batch durably through the group committer.
    pub(crate) async fn commit_batch(&self, batch: WriteBatch) -> Result<(), EngineError> {
        self.inner.committer.commit(batch).await
    }

    /// When each partition's expiry and deadline indexes next have work.
    pub(crate) fn due_times(&self) -> &DueTimes {
        &self.inner.due_times
    }

    /// Commits decision records durably through their own group committer.
    pub(crate) async fn commit_records(&self, batch: WriteBatch) -> Result<(), EngineError> {
        self.inner.record_committer.commit(batch).await
    }

    /// Queues decision records on their group committer (waiting only while its queue is
    /// full); the ticket resolves once they are durable.
    pub(crate) async fn submit_records(&self, batch: WriteBatch) -> CommitTicket {
        self.inner.record_committer.submit(batch).await
    }

    /// Sends one message to a shard and awaits the answer, as an [`EngineError`].
    pub(crate) async fn call_shard<T>(
        &self,
        shard: usize,
        make: impl FnOnce(OwnedSemaphorePermit, Reply<T>) -> ShardMessage,
    ) -> Result<T, EngineError> {
        self.call(shard, make)
            .await
            .map_err(|e| self.call_error(shard, e))
    }

    /// Sends one message to a shard through its bounded mailbox and awaits the answer.
    async fn call<T>(
        &self,
        shard: usize,
        make: impl FnOnce(OwnedSemaphorePermit, Reply<T>) -> ShardMessage,
    ) -> Result<T, CallError> {
        let handle = &self.inner.shards[shard];
        let stopped = |reason: &str| {
            CallError::Failed(EngineError::ShardUnavailable {
                shard,
                reason: reason.to_owned(),
            })
        };
        let permit = Arc::clone(&handle.mailbox)
            .acquire_owned()
            .await
            .map_err(|_| stopped("engine stopped"))?;
        let (reply, answer) = oneshot::channel();
        let mut message = make(permit, reply);
        let mut actor_watch = handle.actor.clone();
        for _ in 0..DELIVERY_ATTEMPTS {
            let actor =
                tokio::time::timeout(SHARD_RESTART_WAIT, actor_watch.wait_for(Option::is_some))
                    .await
                    .map_err(|_| stopped("restart took too long"))?
                    .map_err(|_| stopped("supervisor stopped"))?
                    .clone();
            let Some(actor) = actor else { continue };
            match actor.cast(message) {
                Ok(()) => {
                    return match answer.await {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(error)) => Err(CallError::Failed(error)),
                        Err(_) => Err(CallError::Lost),
                    };
                }
                Err(ractor::MessagingErr::SendErr(returned)) => {
                    // The actor died before taking it: wait for its replacement and resend.
                    message = returned;
                    let _ = tokio::time::timeout(SHARD_RESTART_WAIT, actor_watch.changed()).await;
                }
                Err(_) => return Err(stopped("shard refused the message")),
            }
        }
        Err(stopped("shard kept restarting"))
    }

    /// The read view of a pair as of now (`None`: never seen), from its published snapshot.
    pub async fn read_view(&self, pair: PairKey) -> Result<Option<ReadView>, EngineError> {
        let now = self.clock().now();
        Ok(self
            .snapshot(pair)
            .await?
            .map(|snapshot| snapshot.state.read_view(now, &self.inner.config.ledger)))
    }

    /// The durable state of a pair that lookups decide from (`None`: never seen): the
    /// published snapshot, or the pair activated through its shard if it exists but is not
    /// resident.
    pub async fn snapshot(&self, pair: PairKey) -> Result<Option<SharedResident>, EngineError> {
        self.snapshots(&[pair])
            .await
            .pop()
            .unwrap_or_else(|| Err(EngineError::Corrupt("no snapshot answer".to_owned())))
    }

    /// [`Engine::snapshot`] of many pairs, in order: the cold ones activated with one
    /// message per shard. A pair whose state cannot be read answers its own error.
    pub async fn snapshots(
        &self,
        pairs: &[PairKey],
    ) -> Vec<Result<Option<SharedResident>, EngineError>> {
        let published = &self.inner.published;
        let mut snapshots: Vec<Result<Option<SharedResident>, EngineError>> =
            Vec::with_capacity(pairs.len());
        let mut cold: Vec<Vec<(usize, PairKey)>> = Vec::new();
        if pairs.len() > 1 {
            // The entities lie scattered over memory: ask for all of them first, so that
            // their cache misses overlap rather than stall each look-up below in turn.
            for pair in pairs {
                if let Some(entry) = published.get(pair) {
                    prefetch(triomphe::Arc::as_ptr(entry.value()));
                }
            }
        }
        // Pairs not resident: one batched read says which were ever seen (a snapshot is
        // written with a pair's first log record), off the runtime's workers for a remote store.
        let mut unresident: Vec<(usize, PairKey)> = Vec::new();
        let ownership = &self.inner.ownership;
        for (index, &pair) in pairs.iter().enumerate() {
            // Checked again for every read: a node whose lease lapsed answers nothing.
            if let Err(refused) = ownership.check(keys::partition_of(pair)) {
                snapshots.push(Err(refused.into()));
                continue;
            }
            let snapshot = published.get(&pair).map(|entry| entry.value().clone());
            if snapshot.is_none() {
                unresident.push((index, pair));
            }
            snapshots.push(Ok(snapshot));
        }
        if !unresident.is_empty() {
            let keys: Vec<Vec<u8>> = unresident
                .iter()
                .map(|&(_, pair)| keys::snapshot_key(pair))
                .collect();
            let seen = offload(self.store(), move |store| {
                let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                store.get_many(&keys)
            })
            .await;
            match seen {
                Ok(seen) => {
                    for ((index, pair), snapshot) in unresident.into_iter().zip(seen) {
                        if snapshot.is_some() {
                            if cold.is_empty() {
                                cold = (0..self.inner.shards.len()).map(|_| Vec::new()).collect();
                            }
                            cold[self.shard_of(pair)].push((index, pair));
                        }
                    }
                }
                Err(error) => {
                    for (index, _) in unresident {
                        snapshots[index] = Err(error.clone().into());
                    }
                }
            }
        }
        if cold.is_empty() {
            return snapshots;
        }
        let mut activations = tokio::task::JoinSet::new();
        for (shard, waiting) in cold.into_iter().enumerate() {
            for chunk in waiting.chunks(ACTIVATIONS_PER_MESSAGE) {
                let engine = self.clone();
                let chunk = chunk.to_vec();
                activations.spawn(async move {
                    let pairs: Vec<PairKey> = chunk.iter().map(|&(_, pair)| pair).collect();
                    let activated = engine.activate(shard, pairs).await;
                    (chunk, activated)
                });
            }
        }
        while let Some(joined) = activations.join_next().await {
            let Ok((chunk, activated)) = joined else {
                continue; // Cannot happen (the task does not panic); its items answer below.
            };
            match activated {
                Ok(activated) => {
                    for ((index, _), snapshot) in chunk.into_iter().zip(activated) {
                        snapshots[index] = Ok(snapshot);
                    }
                }
                Err(error) => {
                    for (index, _) in chunk {
                        snapshots[index] = Err(error.clone());
                    }
                }
            }
        }
        snapshots
    }

    /// Activates `pairs` on `shard`, once an activation slot is free.
    async fn activate(
        &self,
        shard: usize,
        pairs: Vec<PairKey>,
    ) -> Result<Vec<Option<SharedResident>>, EngineError> {
        let _slot =
            self.inner
                .activations
                .acquire()
                .await
                .map_err(|_| EngineError::ShardUnavailable {
                    shard,
                    reason: "engine stopped".to_owned(),
                })?;
        self.call_shard(shard, |permit, reply| ShardMessage::Activate {
            pairs,
            permit,
            reply,
        })
        .await
    }

    /// Sends one message to the shard owning `pair` and awaits the answer.
    async fn call_for_pair<T>(
        &self,
        pair: PairKey,
        make: impl FnOnce(OwnedSemaphorePermit, Reply<T>) -> ShardMessage,
    ) -> Result<T, EngineError> {
        self.call_shard(self.shard_of(pair), make).await
    }

    /// The rules decision for `quantity` units of `pair` on `surface`. A state that cannot
    /// be read, or a poisoned store, answers "not available" with the reason.
    pub async fn decide_by_rules(
        &self,
        pair: PairKey,
        quantity: i64,
        surface: Surface,
        safety_stock: &SafetyStock,
    ) -> Decision {
        match self
            .rules_decision(pair, quantity, surface, safety_stock)
            .await
        {
            Ok((decision, _)) => decision,
            Err(error) if error.is_poisoned() => store_unavailable(),
            Err(error) => {
                tracing::warn!(sku = pair.sku, location = pair.location, %error, "read view failed; answering not available");
                unavailable()
            }
        }
    }

    /// The rules decision and the view it read, or why the state could not be read (a
    /// poisoned store counts: its state may be behind what was acknowledged).
    pub async fn rules_decision(
        &self,
        pair: PairKey,
        quantity: i64,
        surface: Surface,
        safety_stock: &SafetyStock,
    ) -> Result<(Decision, Option<ReadView>), EngineError> {
        self.refuse_if_poisoned()?;
        let view = self.read_view(pair).await?;
        let decision = decide_by_rules(view.as_ref(), quantity, surface, safety_stock);
        Ok((decision, view))
    }

    /// The poison error of a store that refuses writes for good: the node's memory may then
    /// be behind what was acknowledged, so nothing is read from it. A shared store that is
    /// only unreachable is no reason: what the node holds in memory is all durable.
    fn refuse_if_poisoned(&self) -> Result<(), EngineError> {
        match self.inner.store.check_writable() {
            Err(error) if error.is_poisoned() => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// The decision policy and the location facts decisions read.
    pub fn decisions(&self) -> &DecisionContext {
        &self.inner.decisions
    }

    /// The decision for `quantity` units of `pair` on `surface` by the mode the policy gives
    /// now (rules or ml, or the location's experiment arm), with the state version it
    /// reflects (0: never seen), the features it saw in ml mode and, with `digest`, a digest
    /// of its inputs. Decided on the caller's thread from the pair's published snapshot.
    pub async fn decide(
        &self,
        pair: PairKey,
        quantity: i64,
        surface: Surface,
        digest: bool,
    ) -> Result<Decided, EngineError> {
        let ask = Lookup {
            pair,
            quantity,
            surface,
            digest,
        };
        self.decide_many(&[ask])
            .await?
            .pop()
            .unwrap_or_else(|| Err(EngineError::Corrupt("no decision".to_owned())))
    }

    /// [`Engine::decide`] of many lookups in one pass, answered in order: the snapshots are
    /// gathered first (cold pairs activated with one message per shard), then each lookup
    /// decides in turn, so the policy's counters (drift, experiments) see them in order. A
    /// lookup whose pair cannot be read answers its own error; a store refusing writes fails
    /// them all (the node's state is in doubt).
    pub async fn decide_many(
        &self,
        lookups: &[Lookup],
    ) -> Result<Vec<Result<Decided, EngineError>>, EngineError> {
        self.refuse_if_poisoned()?;
        let pairs: Vec<PairKey> = lookups.iter().map(|lookup| lookup.pair).collect();
        let snapshots = self.snapshots(&pairs).await;
        // The anchors hang off the states: ask for them all before the first decision.
        for resident in snapshots.iter().flatten().flatten() {
            if let Some(anchor) = &resident.snapshot.state.anchor {
                prefetch(&raw const **anchor);
            }
        }
        let now = self.clock().now();
        Ok(lookups
            .iter()
            .zip(snapshots)
            .map(|(lookup, snapshot)| {
                snapshot.map(|snapshot| {
                    self.decide_from(
                        lookup,
                        snapshot.as_deref().map(|resident| &resident.snapshot),
                        now,
                    )
                })
            })
            .collect())
    }

    /// One lookup's decision from the pair's snapshot (`None`: never seen) at `now`.
    fn decide_from(&self, lookup: &Lookup, snapshot: Option<&Snapshot>, now: Timestamp) -> Decided {
        let config = &self.inner.config;
        let Lookup {
            pair,
            quantity,
            surface,
            digest,
        } = *lookup;
        if !self.decisions().needs_entity(surface, pair.location) {
            let view = snapshot.map(|snapshot| snapshot.state.read_view(now, &config.ledger));
            return Decided {
                decision: decide_by_rules(view.as_ref(), quantity, surface, &config.safety_stock),
                version: view.map_or(0, |v| v.version),
                features: None,
                time: now,
                inputs_digest: digest.then(|| crate::audit::digest_view(view.as_ref())),
                moment: digest.then_some(NodeMoment::View),
            };
        }
        let ask = Ask {
            pair,
            quantity,
            surface,
            now,
        };
        decide_entity(self.decisions(), config, snapshot, ask, None, digest)
    }

    /// The full state of a pair for ops (`None`: never seen).
    pub async fn inspect(&self, pair: PairKey) -> Result<Option<EntityReport>, EngineError> {
        self.inner.ownership.check(keys::partition_of(pair))?;
        self.call_for_pair(pair, |permit, reply| ShardMessage::Inspect {
            pair,
            permit,
            reply,
        })
        .await
    }

    /// Entities resident in memory, over all shards.
    pub async fn resident_entities(&self) -> Result<usize, EngineError> {
        Ok(self.inner.published.len())
    }

    /// One maintenance pass: passivates entities idle past the configured time, and deletes
    /// expired identities and quarantine records.
    pub async fn maintain(&self) -> Result<MaintenanceReport, EngineError> {
        let now = self.inner.clock.now();
        let idle_before = Timestamp(now.0 - self.inner.config.passivate_after_ms);
        let expired_reservations = self.expire_reservations().await?;
        let mut report = MaintenanceReport {
            passivated_entities: self.passivate(idle_before).await?,
            expired_keys: 0,
            expired_reservations,
        };
        let store = self.inner.store.as_ref();
        loop {
            let mut batch = WriteBatch::new();
            let (due, exhausted) =
                persist::expire(store, &self.inner.due_times, &mut batch, now, EXPIRY_BATCH)?;
            if due > 0 {
                self.commit_batch(batch).await?;
                report.expired_keys += due;
            }
            for partition in exhausted {
                self.inner
                    .due_times
                    .settle(store, IndexFamily::Expiry, partition, now)?;
            }
            if due < EXPIRY_BATCH {
                break;
            }
        }
        self.save_shared().await?;
        Ok(report)
    }

    /// Persists what the shared facts learned (demand shapes, velocities, losses, feed
    /// health), so a restart continues from it.
    async fn save_shared(&self) -> Result<(), EngineError> {
        if self.inner.ownership.is_grid() {
            // One cluster-wide record written by every node would hold the last writer's
            // facts only: a grid node keeps its statistics in memory (merging them per
            // partition through the store is the grid's shared-facts work, not done yet).
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        batch.put(
            keys::shared_facts_key(),
            persist::encode(&self.inner.decisions.shared.learned()),
        );
        self.commit_batch(batch).await
    }

    /// Snapshots and drops every resident entity now, whatever its idleness (ops and
    /// measurements; shutdown does the same).
    pub async fn passivate_all(&self) -> Result<usize, EngineError> {
        self.passivate(Timestamp(i64::MAX)).await
    }

    /// Passivates the pairs idle before `idle_before`: one pass over the map finds them, and
    /// each shard with any gets its own (it checks each again: a write may have come since).
    async fn passivate(&self, idle_before: Timestamp) -> Result<usize, EngineError> {
        let cutoff = idle_before.to_compact_seconds();
        let mut idle: Vec<Vec<PairKey>> = vec![Vec::new(); self.inner.shards.len()];
        let ownership = &self.inner.ownership;
        for entry in self.inner.published.iter() {
            // Pairs of partitions this node no longer owns are dropped, not snapshotted
            // (their snapshots would be fenced out, and fail the other pairs' batch).
            if entry.value().last_touched < cutoff
                && ownership.epoch(keys::partition_of(*entry.key())).is_some()
            {
                idle[self.shard_of(*entry.key())].push(*entry.key());
            }
        }
        let mut total = 0;
        for (shard, candidates) in idle.into_iter().enumerate() {
            if candidates.is_empty() {
                continue;
            }
            total += self
                .call_shard(shard, |permit, reply| ShardMessage::Passivate {
                    idle_before,
                    candidates,
                    permit,
                    reply,
                })
                .await?;
        }
        let published = &self.inner.published;
        if total > 0 && published.capacity() > 2 * published.len() + 1024 {
            published.shrink_to_fit();
        }
        Ok(total)
    }

    /// Starts answering for `partition`, claimed in the store at `epoch` with the ownership
    /// record `record` (every batch to it is conditioned on that record from now on).
    pub async fn adopt_partition(
        &self,
        partition: u16,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<(), EngineError> {
        self.adopt_partitions(vec![(partition, epoch, record)])
            .await
    }

    /// [`Engine::adopt_partition`] of many partitions at once: what the shards hold of them
    /// is dropped with one message per shard (nothing of an earlier ownership may linger:
    /// other owners may have written since), they are granted, and their index times are
    /// read again. Their pairs activate from the store on first touch.
    pub async fn adopt_partitions(
        &self,
        adopted: Vec<(u16, u64, Vec<u8>)>,
    ) -> Result<(), EngineError> {
        if adopted.is_empty() {
            return Ok(());
        }
        let partitions: Vec<u16> = adopted.iter().map(|(partition, _, _)| *partition).collect();
        self.forget_partitions(&partitions).await?;
        for (partition, epoch, record) in adopted {
            self.inner.ownership.grant(partition, epoch, record);
        }
        // Answers need no index times: they are read once the partitions already serve.
        let due_times = Arc::clone(&self.inner.due_times);
        offload(self.store(), move |store| {
            for partition in partitions {
                due_times.refresh_partition(store, partition)?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Hands `partition` off: stops answering for it, snapshots its resident entities (so
    /// that the next owner activates them from fresh snapshots) and drops them. The caller
    /// then releases it in the store. The snapshots are fenced like every write: if the
    /// partition was lost meanwhile, they are refused and the entities dropped all the same.
    pub async fn hand_off_partition(&self, partition: u16) -> Result<usize, EngineError> {
        // Refuse new work first; in-flight messages of the shards finish before the
        // passivation message below, each shard handling one message at a time.
        let record = self.inner.ownership.record(partition);
        self.inner.ownership.stop_serving(partition);
        let mut candidates: Vec<Vec<PairKey>> = vec![Vec::new(); self.inner.shards.len()];
        for entry in self.inner.published.iter() {
            if keys::partition_of(*entry.key()) == partition {
                candidates[self.shard_of(*entry.key())].push(*entry.key());
            }
        }
        let mut snapshotted = 0;
        let mut result = Ok(());
        if record.is_some() {
            for (shard, candidates) in candidates.into_iter().enumerate() {
                if candidates.is_empty() {
                    continue;
                }
                match self
                    .call_shard(shard, |permit, reply| ShardMessage::Passivate {
                        idle_before: Timestamp(i64::MAX),
                        candidates,
                        permit,
                        reply,
                    })
                    .await
                {
                    Ok(count) => snapshotted += count,
                    Err(error) => result = Err(error),
                }
            }
        }
        self.inner.ownership.revoke(partition);
        self.forget_partitions(&[partition]).await?;
        result.map(|()| snapshotted)
    }

    /// Drops from memory the partitions lost by fenced-out batches since the last call (the
    /// membership loop calls it every round); answers how many partitions.
    pub async fn clear_lost_partitions(&self) -> Result<usize, EngineError> {
        let lost = self.inner.ownership.take_lost();
        if !lost.is_empty() {
            self.forget_partitions(&lost).await?;
        }
        Ok(lost.len())
    }

    /// Stops answering for `partition` at once and drops what this node holds of it,
    /// writing nothing (it was lost: fenced out, or the lease lapsed and another node
    /// claimed it).
    pub async fn drop_partition(&self, partition: u16) -> Result<usize, EngineError> {
        self.inner.ownership.revoke(partition);
        self.forget_partitions(&[partition]).await
    }

    async fn forget_partitions(&self, partitions: &[u16]) -> Result<usize, EngineError> {
        let partitions: Arc<std::collections::HashSet<u16>> =
            Arc::new(partitions.iter().copied().collect());
        let mut forgotten = 0;
        for shard in 0..self.inner.shards.len() {
            let partitions = Arc::clone(&partitions);
            forgotten += self
                .call_shard(shard, |permit, reply| ShardMessage::Forget {
                    partitions,
                    permit,
                    reply,
                })
                .await?;
        }
        Ok(forgotten)
    }

    /// Snapshots every resident entity and the shared facts' statistics, stops the shards and
    /// the supervisor, and waits for the committer to drain. Every acknowledged event was
    /// durable already; this makes the next start faster and keeps what the shared facts
    /// learned since the last maintenance pass.
    pub async fn shutdown(self) -> Result<(), EngineError> {
        let snapshot_result = if self.inner.store.check_writable().is_ok() {
            match self.passivate(Timestamp(i64::MAX)).await {
                Ok(_) => self.save_shared().await,
                Err(error) => Err(error),
            }
        } else {
            Ok(())
        };
        for handle in &self.inner.shards {
            handle.mailbox.close();
        }
        // Wait for the shards and the supervisor to end, so their handles of the committer
        // (and through it the store) are gone when this returns and the store can close.
        let supervisor = &self.inner.supervisor;
        let reason = Some("engine shutdown".to_owned());
        supervisor
            .stop_children_and_wait(reason.clone(), Some(SHARD_RESTART_WAIT))
            .await;
        if let Err(error) = supervisor
            .stop_and_wait(reason, Some(SHARD_RESTART_WAIT))
            .await
        {
            tracing::warn!(%error, "shard supervisor did not stop in time");
        }
        self.flush_sampled_records(true).await;
        self.inner.committer.clone().shutdown();
        self.inner.record_committer.clone().shutdown();
        snapshot_result
    }
}

/// The shards' own runtime at a lower priority ([`EngineConfig::shard_threads`]), or none.
struct ShardRuntime(Option<tokio::runtime::Runtime>);

/// How much lower the shards' threads run than the callers' (Linux nice).
const SHARD_NICE: i32 = 10;

impl ShardRuntime {
    fn start(threads: usize) -> Result<Self, EngineError> {
        if threads == 0 {
            return Ok(Self(None));
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("stockgrid-shard")
            .on_thread_start(|| {
                // This thread only: Linux applies a process priority per thread.
                if let Err(error) = rustix::process::setpriority_process(None, SHARD_NICE) {
                    tracing::warn!(%error, "shard thread keeps the callers' priority");
                }
            })
            .enable_all()
            .build()
            .map(|runtime| Self(Some(runtime)))
            .map_err(|e| EngineError::Start(format!("start the shards' runtime: {e}")))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for ShardRuntime {
    fn drop(&mut self) {
        // The engine may be dropped on an async worker, where a blocking shutdown panics.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
