//! A node's membership loop: heartbeat and lease, liveness of the others, claims, hand-offs
//! and losses of partitions (DESIGN.md "Cluster" and "Clocks").
//!
//! A heartbeat task, on its own timer so that a long round never delays it, renews the node's
//! member record (joining first, as a new incarnation, when it has none or was expelled); a
//! renewal that started at `t` extends its lease to `t + lease - margin` by its own monotonic
//! clock, and a failed one lets the lease run out by itself. Every round (one heartbeat
//! interval) the node:
//! 1. takes its member record as the heartbeat last wrote it (a new incarnation drops what
//!    the old one held);
//! 2. reads the grid's table, and notes for every other member when its record last moved,
//!    by its own clock: a member whose record stood still for a whole lease is expired (a
//!    transaction conditioned on the record it saw), so that its partitions may be claimed;
//! 3. reconciles its engine with the table: partitions the table gives it are adopted, those
//!    it lost are dropped;
//! 4. claims, while its lease is valid, the partitions placed on it that are free or whose owner is dead (an owner whose
//!    member record is gone or was replaced by a newer incarnation counts as dead once this
//!    node has seen it so for a lease), and hands off at most `max_moves_per_round` of its
//!    own that are placed on another live member (snapshot, stop, release).
//!
//! The lease is only about answers: writes are fenced by the store whatever the clocks say.
//! A node that others expired finds its renewal refused, drops every partition and joins
//! again; until then its lease, renewed no more, has run out before anyone could expire it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stockgrid_actors::Engine;
use stockgrid_actors::catalog::Location;
use stockgrid_actors::keys;
use stockgrid_model::partition::Partition;
use stockgrid_model::time::{Clock, wall_clock_nanos};
use stockgrid_storage::{Store, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::placement::{self, Candidate};
use crate::protocol::{self, MAX_PARTITIONS_PER_TRANSACTION, ProtocolError};
use crate::records::{
    self, GridTable, MAX_NODE_ID_BYTES, MAX_REGION_BYTES, MemberRecord, MemberState, Owner,
    StoredMember, StoredOwner,
};
use crate::routing::Routes;

/// Rounds between two reads of the catalog (for the partitions' home regions).
const CATALOG_EVERY: u64 = 30;

/// How a node takes part in a grid.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster's name: every node of the store must give the same.
    pub cluster: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// This node's region.
    pub region: String,
    /// Where peers and clients reach this node.
    pub address: String,
    /// How long a member's record may stand still before others expire it.
    pub lease: Duration,
    /// How often the node renews its record.
    pub heartbeat: Duration,
    /// How much earlier than others may expire it the node stops answering.
    pub lease_margin: Duration,
    /// Partitions a node hands off per round when placement moves them (bounded
    /// rebalancing; a leaving node hands off everything at once).
    pub max_moves_per_round: usize,
}

impl ClusterConfig {
    /// A configuration with the default timings: a 6 s lease, a 1 s heartbeat, a 1 s margin,
    /// 64 moves per round.
    pub fn new(cluster: &str, node_id: &str, region: &str, address: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            node_id: node_id.to_owned(),
            region: region.to_owned(),
            address: address.to_owned(),
            lease: Duration::from_secs(6),
            heartbeat: Duration::from_secs(1),
            lease_margin: Duration::from_secs(1),
            max_moves_per_round: 64,
        }
    }

    /// The first field that is wrong, and why.
    pub fn validate(&self) -> Result<(), String> {
        records::check_name("cluster", &self.cluster, MAX_NODE_ID_BYTES)?;
        records::check_name("node id", &self.node_id, MAX_NODE_ID_BYTES)?;
        records::check_name("region", &self.region, MAX_REGION_BYTES)?;
        if self.address.is_empty() {
            return Err("address: must not be empty".to_owned());
        }
        if self.heartbeat.is_zero() {
            return Err("heartbeat: must be above zero".to_owned());
        }
        if self.lease < self.heartbeat * 3 {
            return Err(format!(
                "lease: must be at least three heartbeats ({} ms), got {} ms",
                (self.heartbeat * 3).as_millis(),
                self.lease.as_millis()
            ));
        }
        if self.lease_margin >= self.lease - self.heartbeat {
            return Err(format!(
                "lease margin: must be below the lease minus a heartbeat ({} ms), got {} ms",
                (self.lease - self.heartbeat).as_millis(),
                self.lease_margin.as_millis()
            ));
        }
        if self.lease > Duration::from_secs(3600) {
            return Err(format!(
                "lease: at most an hour (3600000 ms), got {} ms",
                self.lease.as_millis()
            ));
        }
        if self.max_moves_per_round == 0 {
            return Err("max moves per round: must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// What the node last knew of the grid, for routing and status.
#[derive(Clone, Debug, Default)]
pub struct GridView {
    /// This node's member record as last written (`None`: not joined).
    pub me: Option<MemberRecord>,
    /// The table as last read.
    pub table: GridTable,
    /// Node ids this node judges live (itself included while it is active).
    pub live: Vec<String>,
    /// Rounds run.
    pub rounds: u64,
}

/// A node's part in a grid: its membership loop. Dropping it stops the loop without
/// leaving (the others expire the node after a lease); [`ClusterNode::leave`] hands off.
#[derive(Debug)]
pub struct ClusterNode {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    engine: Engine,
    store: Arc<dyn Store>,
    config: ClusterConfig,
    wall: Arc<dyn Clock>,
    view: RwLock<GridView>,
    leaving: AtomicBool,
    stopping: AtomicBool,
    wake: Notify,
    /// This node's member record as last written by the heartbeat (`None`: not joined, or
    /// expelled and not joined again yet).
    me: std::sync::Mutex<Option<StoredMember>>,
    /// Set once the heartbeat must stop (the node left, or is leaving and has released).
    heartbeat_stop: AtomicBool,
    /// The routing table every round publishes.
    routes: Routes,
}

impl ClusterNode {
    /// Starts the membership loop of `engine` (started with a grid ownership) over `store`.
    /// `wall` is the wall clock, for the heartbeat times shown to people.
    pub fn start(
        engine: Engine,
        store: Arc<dyn Store>,
        config: ClusterConfig,
        wall: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        config.validate()?;
        if !engine.ownership().is_grid() {
            return Err("the engine was started as a single node, not as a grid node".to_owned());
        }
        let routes = Routes::new(&config.node_id, Arc::clone(&store));
        let shared = Arc::new(Shared {
            engine,
            store,
            routes,
            config,
            wall,
            view: RwLock::new(GridView::default()),
            leaving: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            me: std::sync::Mutex::new(None),
            heartbeat_stop: AtomicBool::new(false),
        });
        let task = tokio::spawn(run(Arc::clone(&shared)));
        Ok(Self {
            shared,
            task: Some(task),
        })
    }

    /// What the node last knew of the grid.
    pub fn view(&self) -> GridView {
        self.shared
            .view
            .read()
            .map(|view| view.clone())
            .unwrap_or_default()
    }

    /// The routing table this node's rounds publish (for its router).
    pub fn routes(&self) -> Routes {
        self.shared.routes.clone()
    }

    /// Runs a round now rather than at the next heartbeat.
    pub fn nudge(&self) {
        self.shared.wake.notify_one();
    }

    /// Leaves the grid: hands every partition off (snapshots, release), removes the member
    /// record and stops the loop. Within `deadline`; what is left then is expired by the
    /// others after a lease.
    pub async fn leave(mut self, deadline: Duration) {
        self.shared.leaving.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(deadline, task).await.is_err()
        {
            tracing::warn!("leaving the grid took longer than {deadline:?}; stopped");
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the loop keeps between rounds.
struct LoopState {
    /// The incarnation the last round ran as (a new one means this node was expelled and
    /// joined again).
    incarnation: Option<u64>,
    /// Per other member: its record's bytes as last seen, and since when (this node's clock).
    observed: HashMap<String, (Vec<u8>, Instant)>,
    /// Owners whose member record is gone or replaced, and since when this node sees so.
    orphaned_since: HashMap<Owner, Instant>,
    homes: Vec<Option<String>>,
    rounds: u64,
}

async fn run(shared: Arc<Shared>) {
    // Renewals run on their own timer: a long round (claiming thousands of partitions, a
    // slow store) must not make the others expire a healthy node.
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(&shared)));
    let mut state = LoopState {
        incarnation: None,
        observed: HashMap::new(),
        orphaned_since: HashMap::new(),
        homes: Vec::new(),
        rounds: 0,
    };
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            heartbeat.abort();
            return;
        }
        let leaving = shared.leaving.load(Ordering::Acquire);
        if let Err(error) = round(&shared, &mut state, leaving).await {
            tracing::warn!(%error, "grid round failed; trying again at the next heartbeat");
        }
        if leaving {
            shared.heartbeat_stop.store(true, Ordering::Release);
            let _ = heartbeat.await;
            finish_leaving(&shared).await;
            return;
        }
        let _ = tokio::time::timeout(shared.config.heartbeat, shared.wake.notified()).await;
    }
}

/// The heartbeat: joins (as a new incarnation when it has no record or was expelled) and
/// renews every heartbeat interval; a renewal that started at `t` extends the lease to
/// `t + lease - margin`. An expelled node drops its lease and every partition at once.
async fn heartbeat(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut incarnation = wall_clock_nanos();
    let mut tick = tokio::time::interval(config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.stopping.load(Ordering::Acquire) || shared.heartbeat_stop.load(Ordering::Acquire)
        {
            return;
        }
        let leaving = shared.leaving.load(Ordering::Acquire);
        let started = Instant::now();
        let wall_ms = shared.wall.now().0;
        let current = shared.me.lock().ok().and_then(|me| me.clone());
        let renewed = match current {
            None => {
                incarnation += 1;
                let record = MemberRecord {
                    node_id: config.node_id.clone(),
                    incarnation,
                    address: config.address.clone(),
                    region: config.region.clone(),
                    heartbeat: 0,
                    state: MemberState::Active,
                    renewed_at_ms: wall_ms,
                };
                let cluster = config.cluster.clone();
                blocking(&shared.store, move |store| {
                    protocol::join(store, &cluster, record)
                })
                .await
            }
            Some(me) => {
                let member_state = if leaving {
                    MemberState::Leaving
                } else {
                    MemberState::Active
                };
                blocking(&shared.store, move |store| {
                    protocol::renew(store, &me, member_state, wall_ms)
                })
                .await
            }
        };
        match renewed {
            Ok(me) => {
                shared
                    .engine
                    .ownership()
                    .renew_lease(started + config.lease - config.lease_margin);
                if let Ok(mut slot) = shared.me.lock() {
                    *slot = Some(me);
                }
            }
            Err(ProtocolError::Expelled) => {
                tracing::warn!(
                    "expelled from the grid: dropping every partition and joining again"
                );
                expelled(&shared).await;
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed; the lease runs out unless a renewal succeeds");
            }
        }
    }
}

/// Runs `call` on the store off the async workers when the store is remote.
async fn blocking<T, F>(store: &Arc<dyn Store>, call: F) -> Result<T, ProtocolError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, ProtocolError> + Send + 'static,
{
    if !store.is_remote() {
        return call(store.as_ref());
    }
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || call(store.as_ref()))
        .await
        .unwrap_or_else(|error| {
            Err(ProtocolError::Store(StoreError::Unavailable {
                context: "grid round",
                message: error.to_string(),
            }))
        })
}

async fn round(
    shared: &Arc<Shared>,
    state: &mut LoopState,
    leaving: bool,
) -> Result<(), ProtocolError> {
    let config = &shared.config;
    let engine = &shared.engine;
    let ownership = engine.ownership();
    state.rounds += 1;

    // 1. Who this node is now (the heartbeat joins and renews).
    let Some(me) = shared.me.lock().ok().and_then(|me| me.clone()) else {
        return Ok(());
    };
    if state.incarnation != Some(me.record.incarnation) {
        // A new incarnation: whatever the engine still holds belongs to the old one.
        for (partition, _) in ownership.owned() {
            engine
                .drop_partition(partition)
                .await
                .map_err(engine_error)?;
        }
        state.incarnation = Some(me.record.incarnation);
    }
    let my_owner = Owner {
        node_id: me.record.node_id.clone(),
        incarnation: me.record.incarnation,
    };

    // 2. The table and the others' liveness.
    let partitions = keys::SCHEME.count();
    let table = blocking(&shared.store, move |store| {
        GridTable::read(store, partitions).map_err(|error| match error {
            records::ReadError::Store(error) => ProtocolError::Store(error),
            records::ReadError::Undecodable(error) => ProtocolError::Undecodable(error),
        })
    })
    .await?;
    if state.homes.is_empty() || state.rounds % CATALOG_EVERY == 1 {
        let locations = blocking(&shared.store, |store| {
            stockgrid_actors::catalog::all_locations(store).map_err(|error| {
                ProtocolError::Store(StoreError::Unavailable {
                    context: "read the catalog",
                    message: error.to_string(),
                })
            })
        })
        .await?;
        state.homes = home_regions(&locations);
    }
    let now = Instant::now();
    let lease = config.lease;
    let mut live: Vec<Candidate> = Vec::new();
    let mut to_expire: Vec<StoredMember> = Vec::new();
    let mut live_ids: Vec<String> = Vec::new();
    // Members that answer for what they own now: live ones, and leaving ones still renewing
    // (they serve until they release).
    let mut routable_ids: Vec<String> = Vec::new();
    for member in &table.members {
        let record = &member.record;
        if record.node_id == config.node_id {
            routable_ids.push(record.node_id.clone());
            if record.state == MemberState::Active && !leaving {
                live.push(Candidate {
                    node_id: &record.node_id,
                    region: &record.region,
                });
                live_ids.push(record.node_id.clone());
            }
            continue;
        }
        let seen = state
            .observed
            .entry(record.node_id.clone())
            .or_insert_with(|| (member.bytes.clone(), now));
        if seen.0 != member.bytes {
            *seen = (member.bytes.clone(), now);
        }
        let still_for = now.saturating_duration_since(seen.1);
        if record.state != MemberState::Expired && still_for < lease {
            routable_ids.push(record.node_id.clone());
        }
        match record.state {
            MemberState::Expired => {}
            _ if still_for >= lease => to_expire.push(member.clone()),
            MemberState::Active => {
                live.push(Candidate {
                    node_id: &record.node_id,
                    region: &record.region,
                });
                live_ids.push(record.node_id.clone());
            }
            MemberState::Leaving => {}
        }
    }
    state
        .observed
        .retain(|node_id, _| table.member(node_id).is_some());
    let mut expired_now: Vec<String> = Vec::new();
    for member in to_expire {
        let node_id = member.record.node_id.clone();
        if blocking(&shared.store, move |store| protocol::expire(store, &member)).await? {
            tracing::warn!(node = %node_id, "a member's heartbeat stood still for a lease: expired it");
            expired_now.push(node_id);
        }
    }

    // 3 and 4. Reconcile, then decide claims and hand-offs.
    engine.clear_lost_partitions().await.map_err(engine_error)?;
    let is_dead = |owner: &Owner, orphaned_since: &mut HashMap<Owner, Instant>| -> bool {
        if expired_now.contains(&owner.node_id) {
            return true;
        }
        match table.member(&owner.node_id) {
            Some(member) if member.record.incarnation == owner.incarnation => {
                member.record.state == MemberState::Expired
            }
            _ => {
                let since = *orphaned_since.entry(owner.clone()).or_insert(now);
                now.saturating_duration_since(since) >= lease
            }
        }
    };
    let mut to_claim: Vec<(Partition, Option<StoredOwner>)> = Vec::new();
    let mut to_adopt: Vec<(Partition, u64, Vec<u8>)> = Vec::new();
    let mut to_release: Vec<(Partition, StoredOwner)> = Vec::new();
    let mut orphaned_seen: Vec<Owner> = Vec::new();
    for partition in 0..partitions {
        let stored = table.owners[usize::from(partition)].clone();
        let owner = stored.as_ref().and_then(|s| s.record.owner.clone());
        let home = state
            .homes
            .get(usize::from(partition))
            .and_then(|home| home.as_deref());
        let target = placement::target(partition, &live, home);
        match (owner, stored) {
            (Some(owner), Some(stored)) if owner == my_owner => {
                if ownership.epoch(partition) != Some(stored.record.epoch) {
                    to_adopt.push((partition, stored.record.epoch, stored.bytes.clone()));
                }
                let moves = leaving
                    || (to_release.len() < config.max_moves_per_round
                        && target.is_some_and(|target| target != config.node_id));
                if moves {
                    to_release.push((partition, stored));
                }
            }
            (owner, stored) => {
                if ownership.epoch(partition).is_some() {
                    tracing::warn!(partition, "partition lost to another node: dropping it");
                    engine
                        .drop_partition(partition)
                        .await
                        .map_err(engine_error)?;
                }
                if let Some(owner) = &owner
                    && !matches!(table.member(&owner.node_id), Some(m) if m.record.incarnation == owner.incarnation)
                {
                    orphaned_seen.push(owner.clone());
                }
                let claimable = match &owner {
                    None => true,
                    Some(owner) => is_dead(owner, &mut state.orphaned_since),
                };
                if claimable
                    && !leaving
                    && ownership.lease_valid()
                    && target == Some(config.node_id.as_str())
                {
                    to_claim.push((partition, stored));
                }
            }
        }
    }
    state
        .orphaned_since
        .retain(|owner, _| orphaned_seen.contains(owner));
    shared.routes.publish(&table, &routable_ids);
    if let Ok(mut view) = shared.view.write() {
        *view = GridView {
            me: Some(me.record.clone()),
            table,
            live: live_ids,
            rounds: state.rounds,
        };
    }

    engine
        .adopt_partitions(to_adopt)
        .await
        .map_err(engine_error)?;
    for chunk in to_release.chunks(MAX_PARTITIONS_PER_TRANSACTION) {
        for (partition, _) in chunk {
            if let Err(error) = engine.hand_off_partition(*partition).await {
                tracing::warn!(partition, %error, "hand-off snapshots failed; releasing all the same");
            }
        }
        let chunk = chunk.to_vec();
        match blocking(&shared.store, move |store| protocol::release(store, &chunk)).await {
            Ok(()) => {}
            Err(ProtocolError::Raced(partition)) => {
                tracing::warn!(partition, "a released partition had moved already");
            }
            Err(error) => return Err(error),
        }
    }
    for chunk in to_claim.chunks(MAX_PARTITIONS_PER_TRANSACTION) {
        let chunk = chunk.to_vec();
        let me = me.clone();
        match blocking(&shared.store, move |store| {
            protocol::claim(store, &me, &chunk)
        })
        .await
        {
            Ok(claimed) => {
                let adopted = claimed
                    .into_iter()
                    .map(|(partition, stored)| (partition, stored.record.epoch, stored.bytes))
                    .collect();
                engine
                    .adopt_partitions(adopted)
                    .await
                    .map_err(engine_error)?;
            }
            Err(ProtocolError::Raced(partition)) => {
                tracing::debug!(partition, "a claim lost a race; read again next round");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// This node was expelled: nothing of it may be answered or written any more.
async fn expelled(shared: &Arc<Shared>) {
    let ownership = shared.engine.ownership();
    ownership.drop_lease();
    if let Ok(mut me) = shared.me.lock() {
        *me = None;
    }
    for (partition, _) in ownership.owned() {
        if let Err(error) = shared.engine.drop_partition(partition).await {
            tracing::warn!(partition, %error, "dropping a partition failed");
        }
    }
}

/// After the last round of a leaving node (which released what it owned) and its last
/// heartbeat: remove the member record.
async fn finish_leaving(shared: &Arc<Shared>) {
    shared.engine.ownership().drop_lease();
    let me = shared.me.lock().ok().and_then(|mut me| me.take());
    if let Some(me) = me {
        match blocking(&shared.store, move |store| protocol::leave(store, &me)).await {
            Ok(()) => tracing::info!("left the grid"),
            Err(error) => {
                tracing::warn!(%error, "could not remove the member record; the others will expire it")
            }
        }
    }
}

fn home_regions(locations: &[Location]) -> Vec<Option<String>> {
    placement::home_regions(&keys::SCHEME, locations)
}

fn engine_error(error: stockgrid_actors::EngineError) -> ProtocolError {
    ProtocolError::Store(StoreError::Unavailable {
        context: "grid round",
        message: error.to_string(),
    })
}
