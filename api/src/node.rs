//! One stockgrid node: its configuration, and its life from start to graceful shutdown.
//!
//! Start: bind the listener, serve health (NOT_SERVING) at once, then recover (open the
//! embedded store, start the engine, expire reservations whose deadline passed while the
//! node was down), then mark SERVING. While running, a background task expires
//! reservations every second and runs maintenance every minute, and another keeps health
//! NOT_SERVING while the store refuses writes (poisoned). Shutdown: NOT_SERVING,
//! stop accepting, drain in-flight calls, snapshot entities, close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stockgrid_actors::decision::{DecisionMode, SafetyStock};
use stockgrid_actors::domain::Surface;
use stockgrid_actors::experiment::{Experiment, ExperimentSpec};
use stockgrid_actors::ledger::FOLD_MARGIN_MS;
use stockgrid_actors::ownership::Ownership;
use stockgrid_actors::time::{Clock, MINUTE_MS};
use stockgrid_actors::{Engine, EngineConfig, EngineError};
use stockgrid_cluster::node::{ClusterConfig, ClusterNode};
use stockgrid_cluster::routing::Routes;
use stockgrid_inference::model::Model;
use stockgrid_storage::{EmbeddedOptions, OpenSettings, StoreLocation};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::connections::{self, ConnectionLimits};
use crate::router::{Router, RouterLimits};
use crate::server::{self, NodeHealth};
use crate::service::{Api, ServiceLimits};

/// Units held back from promises, per surface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurfaceUnits {
    /// Item and search pages.
    pub item_page: i64,
    /// Store pickup promises.
    pub pickup: i64,
    /// Delivery promises.
    pub delivery: i64,
    /// The substitution engine.
    pub substitution: i64,
    /// Replenishment and ops.
    pub replenishment: i64,
}

/// A node's configuration: TOML file, then environment, then flags (the binary applies the
/// last two). Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address to listen on. Loopback by default until access control exists.
    pub listen: SocketAddr,
    /// Directory of the embedded store (used when `store` is not set).
    pub data_dir: PathBuf,
    /// Where the store lives: a directory, `postgres://USER@HOST:PORT/DATABASE` (password
    /// from `PGPASSWORD` or `store_password_file`, never the URL) or `fdb:CLUSTER-FILE`.
    /// Overrides `data_dir`.
    pub store: Option<String>,
    /// A file holding the database password of a `postgres://` store.
    pub store_password_file: Option<PathBuf>,
    /// The longest a call to a shared store waits before the node answers UNAVAILABLE
    /// (writes) or "not available" (lookups of pairs it cannot read).
    pub store_timeout_ms: u64,
    /// Shard actors.
    pub shards: usize,
    /// Threads of the shards' own runtime, at a lower priority than the API's (0: the shards
    /// share the API's runtime; default 1).
    pub shard_threads: usize,
    /// Events later than this after their event time are quarantined.
    pub lateness_bound_seconds: i64,
    /// Events dated further than this in the future are quarantined.
    pub future_skew_seconds: i64,
    /// How long a pair's event log is kept behind its snapshots, which is how far back
    /// `audit replay` of this node's decisions reaches (none: the shortest allowed, the
    /// lateness bound plus the skew bound plus a margin).
    pub log_retention_seconds: Option<i64>,
    /// How long a PENDING reservation holds when the client names no TTL.
    pub reservation_ttl_seconds: i64,
    /// How long a COMMITTED reservation holds when the client names no pickup window.
    pub pickup_window_seconds: i64,
    /// Safety stock per surface.
    pub safety_stock: SurfaceUnits,
    /// Request limits.
    pub limits: ServiceLimits,
    /// Connection limits (cap, handshake timeout, idle eviction, HTTP/2 streams, keepalive).
    pub connections: ConnectionLimits,
    /// Block cache of the embedded store, in MiB.
    pub cache_mib: u64,
    /// On shutdown, how long in-flight calls and open streams may take to finish.
    pub drain_timeout_seconds: u64,
    /// How availability and reservations are decided.
    pub decisions: DecisionSettings,
    /// The grid this node is part of (`None`: a single node owning every partition).
    pub cluster: Option<ClusterSettings>,
}

/// A node's part in a grid (the `[cluster]` table; `serve --cluster NAME --node-id ID
/// --region REGION [--advertise ADDR]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// The cluster's name: every node of the store gives the same.
    pub name: String,
    /// This node's id, unique in the cluster (letters, digits, `-`, `_`, `.`).
    pub node_id: String,
    /// This node's region.
    pub region: String,
    /// Where peers and clients reach this node (default: the listen address).
    pub advertise: Option<String>,
    /// How long a member's heartbeat may stand still before the others expire it.
    pub lease_ms: u64,
    /// How often the node renews its heartbeat.
    pub heartbeat_ms: u64,
    /// How much earlier than the others may expire it the node stops answering.
    pub lease_margin_ms: u64,
    /// Partitions handed off per round when placement moves them.
    pub max_moves_per_round: usize,
    /// Deadlines of the calls the router forwards to owners (`[cluster.router]`).
    pub router: RouterLimits,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        let defaults = ClusterConfig::new("", "", "", "");
        Self {
            name: String::new(),
            node_id: String::new(),
            region: String::new(),
            advertise: None,
            lease_ms: defaults.lease.as_millis() as u64,
            heartbeat_ms: defaults.heartbeat.as_millis() as u64,
            lease_margin_ms: defaults.lease_margin.as_millis() as u64,
            max_moves_per_round: defaults.max_moves_per_round,
            router: RouterLimits::default(),
        }
    }
}

impl ClusterSettings {
    /// The membership loop's configuration, for a node listening on `listen`.
    pub fn config(&self, listen: SocketAddr) -> Result<ClusterConfig, NodeError> {
        if self.advertise.is_none() && listen.ip().is_unspecified() {
            return Err(NodeError::Config(format!(
                "cluster advertise: the node listens on {listen}, which peers cannot call; give the address they reach it at (--advertise HOST:PORT)"
            )));
        }
        self.router
            .validate()
            .map_err(|reason| NodeError::Config(format!("cluster router {reason}")))?;
        let address = self.advertise.clone().unwrap_or_else(|| listen.to_string());
        let config = ClusterConfig {
            lease: Duration::from_millis(self.lease_ms),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            lease_margin: Duration::from_millis(self.lease_margin_ms),
            max_moves_per_round: self.max_moves_per_round,
            ..ClusterConfig::new(&self.name, &self.node_id, &self.region, &address)
        };
        config
            .validate()
            .map_err(|reason| NodeError::Config(format!("cluster {reason}")))?;
        Ok(config)
    }
}

/// How availability and reservations are decided (the `[decisions]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionSettings {
    /// `ml` (the stock belief, default) or `rules` (the ledger rule everywhere).
    pub mode: DecisionMode,
    /// Model file (default: the model shipped with this build).
    pub model: Option<PathBuf>,
    /// Surfaces answered by rules from the start (e.g. `["pickup"]`).
    pub rules_surfaces: Vec<Surface>,
    /// Regions answered by rules from the start.
    pub rules_regions: Vec<String>,
    /// An online experiment (arms, assignment salt, shadow), if one runs.
    pub experiment: Option<ExperimentSpec>,
    /// Share of item-page decisions recorded durably (pickup and delivery always are).
    pub audit_item_page_rate: f64,
    /// Days a decision record is kept after its decision (then a maintenance pass deletes
    /// it), at least 1.
    pub audit_retention_days: u32,
}

impl Default for DecisionSettings {
    fn default() -> Self {
        Self {
            mode: DecisionMode::Ml,
            model: None,
            rules_surfaces: Vec::new(),
            rules_regions: Vec::new(),
            experiment: None,
            audit_item_page_rate: 0.01,
            audit_retention_days: stockgrid_actors::policy::DEFAULT_AUDIT_RETENTION_DAYS,
        }
    }
}

impl DecisionSettings {
    /// Loads the model and applies the settings to an engine's policy.
    fn apply(&self, engine: &Engine, model: Option<Arc<Model>>) {
        let decisions = engine.decisions();
        decisions.configure(self.mode, model);
        decisions.set_audit_item_page_rate(self.audit_item_page_rate);
        decisions.set_audit_retention_days(self.audit_retention_days);
        for surface in &self.rules_surfaces {
            decisions.switch_to_rules(Some(*surface), None, true);
        }
        for region in &self.rules_regions {
            decisions.switch_to_rules(None, Some(region), true);
        }
        decisions.set_experiment(
            self.experiment
                .clone()
                .map(|spec| Arc::new(Experiment::new(spec))),
        );
    }

    /// Adds the configured rules switches to the grid's policy record (a node started with
    /// `rules_surfaces` or `rules_regions` switches the whole grid), then applies the record.
    /// A store that cannot be read leaves the configured switches in force here.
    async fn seed_policy(&self, engine: &Engine) {
        let (surfaces, regions) = (&self.rules_surfaces, &self.rules_regions);
        let synced = if surfaces.is_empty() && regions.is_empty() {
            engine.sync_policy().await.map(|_| ())
        } else {
            engine
                .change_policy(|record| {
                    let before = record.clone();
                    for surface in surfaces {
                        record.switch_to_rules(Some(*surface), None, true);
                    }
                    for region in regions {
                        record.switch_to_rules(None, Some(region), true);
                    }
                    *record != before
                })
                .await
                .and(engine.sync_policy().await)
                .map(|_| ())
        };
        if let Err(error) = synced {
            tracing::warn!(%error, "the grid's decision policy could not be read; the configured switches are in force here");
        }
    }

    fn load_model(&self) -> Result<Option<Arc<Model>>, NodeError> {
        if !(0.0..=1.0).contains(&self.audit_item_page_rate) {
            return Err(NodeError::Config(format!(
                "decisions.audit_item_page_rate must be in [0, 1], got {}",
                self.audit_item_page_rate
            )));
        }
        if self.audit_retention_days == 0 {
            return Err(NodeError::Config(
                "decisions.audit_retention_days must be at least 1".to_owned(),
            ));
        }
        if self.rules_regions.len() > stockgrid_actors::policy::MAX_RULES_REGIONS {
            return Err(NodeError::Config(format!(
                "decisions.rules_regions: {} regions, above the limit of {}",
                self.rules_regions.len(),
                stockgrid_actors::policy::MAX_RULES_REGIONS
            )));
        }
        if let Some(region) = self.rules_regions.iter().find(|region| {
            region.is_empty()
                || region.len() > stockgrid_actors::policy::MAX_REGION_BYTES
                || region.chars().any(char::is_control)
        }) {
            return Err(NodeError::Config(format!(
                "decisions.rules_regions: {:?} is not a region name (1 to {} bytes, no control characters)",
                stockgrid_actors::domain::excerpt(region),
                stockgrid_actors::policy::MAX_REGION_BYTES
            )));
        }
        if let Some(experiment) = &self.experiment {
            experiment
                .validate()
                .map_err(|e| NodeError::Config(format!("decisions.{e}")))?;
        }
        let experiment_uses_ml = self
            .experiment
            .as_ref()
            .is_some_and(|e| e.arms.iter().any(|arm| arm.mode == DecisionMode::Ml));
        if self.mode == DecisionMode::Rules && !experiment_uses_ml {
            return Ok(None);
        }
        let model = match &self.model {
            Some(path) => Model::load(path),
            None => Model::shipped(),
        }
        .map_err(|e| NodeError::Config(format!("decisions.model: {e}")))?;
        Ok(Some(Arc::new(model)))
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./data"),
            store: None,
            store_password_file: None,
            store_timeout_ms: 5000,
            shards: engine.shard_count,
            // A node runs its shards below the API's priority: lookups keep the CPU while
            // ingest runs flat out (docs/measurements.md); an embedded engine does not.
            shard_threads: 1,
            lateness_bound_seconds: engine.ledger.lateness_bound_ms / 1000,
            future_skew_seconds: engine.ledger.future_skew_ms / 1000,
            log_retention_seconds: None,
            reservation_ttl_seconds: engine.reservation_ttl_ms / 1000,
            pickup_window_seconds: engine.pickup_window_ms / 1000,
            safety_stock: SurfaceUnits::default(),
            limits: ServiceLimits::default(),
            connections: ConnectionLimits::default(),
            cache_mib: 64,
            drain_timeout_seconds: 10,
            decisions: DecisionSettings::default(),
            cluster: None,
        }
    }
}

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("{0}")]
    Server(String),
    /// The store or engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl NodeConfig {
    /// Parses a TOML configuration file's text; unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<Self, NodeError> {
        toml::from_str(text).map_err(|e| NodeError::Config(e.to_string()))
    }

    /// Where the store lives: `store` when set, else the directory `data_dir`.
    pub fn store_location(&self) -> Result<StoreLocation, NodeError> {
        match &self.store {
            Some(text) => text
                .parse()
                .map_err(|e| NodeError::Config(format!("store: {e}"))),
            None => Ok(StoreLocation::Embedded(self.data_dir.clone())),
        }
    }

    /// How to open the store.
    pub fn store_settings(&self) -> Result<OpenSettings, NodeError> {
        if !(100..=600_000).contains(&self.store_timeout_ms) {
            return Err(NodeError::Config(format!(
                "store_timeout_ms must be 100 to 600000, got {}",
                self.store_timeout_ms
            )));
        }
        Ok(OpenSettings {
            embedded: EmbeddedOptions {
                cache_bytes: self.cache_mib << 20,
                ..EmbeddedOptions::default()
            },
            password_file: self.store_password_file.clone(),
            operation_timeout: Some(Duration::from_millis(self.store_timeout_ms)),
        })
    }

    /// The engine configuration these settings make, validated.
    pub fn engine_config(&self) -> Result<EngineConfig, NodeError> {
        let mut engine = EngineConfig {
            shard_count: self.shards,
            shard_threads: self.shard_threads,
            reservation_ttl_ms: self.reservation_ttl_seconds.saturating_mul(1000),
            pickup_window_ms: self.pickup_window_seconds.saturating_mul(1000),
            ..EngineConfig::default()
        };
        engine.ledger.lateness_bound_ms = self.lateness_bound_seconds.saturating_mul(1000);
        engine.ledger.future_skew_ms = self.future_skew_seconds.saturating_mul(1000);
        let shortest_log_retention_ms = engine.identity_retention_ms();
        engine.log_retention_ms = match self.log_retention_seconds {
            None => shortest_log_retention_ms,
            Some(seconds) if seconds.saturating_mul(1000) < shortest_log_retention_ms => {
                return Err(NodeError::Config(format!(
                    "log_retention_seconds must be at least the lateness bound plus the skew bound plus {} s ({} s), got {seconds}",
                    FOLD_MARGIN_MS / 1000,
                    shortest_log_retention_ms / 1000
                )));
            }
            Some(seconds) => seconds.saturating_mul(1000),
        };
        let units = self.safety_stock;
        for (name, value) in [
            ("safety_stock.item_page", units.item_page),
            ("safety_stock.pickup", units.pickup),
            ("safety_stock.delivery", units.delivery),
            ("safety_stock.substitution", units.substitution),
            ("safety_stock.replenishment", units.replenishment),
        ] {
            if value < 0 {
                return Err(NodeError::Config(format!(
                    "{name} must not be negative, got {value}"
                )));
            }
        }
        engine.safety_stock = SafetyStock::uniform(0)
            .with(Surface::ItemPage, units.item_page)
            .with(Surface::Pickup, units.pickup)
            .with(Surface::Delivery, units.delivery)
            .with(Surface::Substitution, units.substitution)
            .with(Surface::Replenishment, units.replenishment);
        let limits = self.limits;
        for (name, value) in [
            ("limits.max_batch_items", limits.max_batch_items),
            (
                "limits.max_events_per_request",
                limits.max_events_per_request,
            ),
            ("limits.max_in_flight", limits.max_in_flight),
            ("limits.max_writes_in_flight", limits.max_writes_in_flight),
            ("limits.max_message_bytes", limits.max_message_bytes),
            (
                "limits.stream_idle_timeout_ms",
                usize::try_from(limits.stream_idle_timeout_ms).unwrap_or(usize::MAX),
            ),
        ] {
            if value == 0 {
                return Err(NodeError::Config(format!("{name} must be positive")));
            }
        }
        self.connections.validate().map_err(NodeError::Config)?;
        engine.max_events_per_ingest = limits.max_events_per_request;
        engine.validate().map_err(NodeError::Config)?;
        Ok(engine)
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    address: SocketAddr,
    health: NodeHealth,
    stop_server: Option<oneshot::Sender<()>>,
    /// Stops the task that keeps health in step with the store.
    stop_store_watch: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    drain_timeout: Duration,
    recovery: JoinHandle<Result<Engine, NodeError>>,
    /// The node's membership loop in a grid, once recovery started it.
    cluster: Arc<std::sync::Mutex<Option<ClusterNode>>>,
}

impl Node {
    /// Binds, serves health at once (NOT_SERVING), and recovers in the background: opens
    /// the embedded store under `config.data_dir` and starts the engine on `clock`.
    pub async fn start(config: &NodeConfig, clock: Arc<dyn Clock>) -> Result<Node, NodeError> {
        let engine_config = config.engine_config()?;
        let location = config.store_location()?;
        let settings = config.store_settings()?;
        let cluster = match &config.cluster {
            None => None,
            Some(settings) => {
                if matches!(location, StoreLocation::Embedded(_)) {
                    return Err(NodeError::Config(
                        "cluster mode needs a store every node reaches (--store postgres://... or fdb:FILE); the embedded store belongs to one process".to_owned(),
                    ));
                }
                Some((
                    settings.config(config.listen)?,
                    settings.advertise.is_none(),
                ))
            }
        };
        let slot: Arc<std::sync::Mutex<Option<ClusterNode>>> = Arc::default();
        let filled = Arc::clone(&slot);
        let routes: Arc<OnceLock<Routes>> = Arc::default();
        let found_routes = Arc::clone(&routes);
        let bound: Arc<OnceLock<SocketAddr>> = Arc::default();
        let bound_address = Arc::clone(&bound);
        let mut node = Self::start_routed(config, routes, bound, async move {
            let store = tokio::task::spawn_blocking(move || location.open(&settings))
                .await
                .map_err(|e| NodeError::Server(format!("open store: {e}")))?
                .map_err(EngineError::from)?;
            let Some((mut cluster, listen_is_advertised)) = cluster else {
                return Ok(Engine::start(store, clock, engine_config).await?);
            };
            // Peers call the address the listener got (`--listen HOST:0` picks a port).
            if listen_is_advertised && let Some(address) = bound_address.get() {
                cluster.address = address.to_string();
            }
            let ownership = Ownership::grid(stockgrid_actors::keys::SCHEME.count());
            let engine =
                Engine::start_owning(Arc::clone(&store), clock, engine_config, ownership).await?;
            let member = ClusterNode::start(
                engine.clone(),
                store,
                cluster,
                Arc::new(stockgrid_actors::time::WallClock),
            )
            .map_err(NodeError::Config)?;
            let _ = found_routes.set(member.routes());
            if let Ok(mut slot) = filled.lock() {
                *slot = Some(member);
            }
            Ok(engine)
        })
        .await?;
        node.cluster = slot;
        Ok(node)
    }

    /// As [`Node::start`], with the engine made by `recover` (tests use it to hold a node
    /// in recovery).
    pub async fn start_with(
        config: &NodeConfig,
        recover: impl Future<Output = Result<Engine, NodeError>> + Send + 'static,
    ) -> Result<Node, NodeError> {
        Self::start_routed(config, Arc::default(), Arc::default(), recover).await
    }

    /// As [`Node::start_with`]; the listener's address is put in `bound` before `recover`
    /// starts, and once `recover` is done a grid node's routes (set by `recover`) make the
    /// services route every item to its owner.
    async fn start_routed(
        config: &NodeConfig,
        routes: Arc<OnceLock<Routes>>,
        bound: Arc<OnceLock<SocketAddr>>,
        recover: impl Future<Output = Result<Engine, NodeError>> + Send + 'static,
    ) -> Result<Node, NodeError> {
        config.engine_config()?;
        let router_limits = config
            .cluster
            .as_ref()
            .map(|cluster| cluster.router)
            .unwrap_or_default();
        let model = config.decisions.load_model()?;
        let decisions = config.decisions.clone();
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Listen {
                    address: config.listen,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| NodeError::Listen {
            address: config.listen,
            source,
        })?;
        let _ = bound.set(address);
        let node_tag = stockgrid_actors::time::wall_clock_nanos();
        let api = Api::new(config.limits, node_tag);
        let (stop_server, stopped) = oneshot::channel::<()>();
        let connection_cap = connections::connection_cap(&config.connections);
        tracing::info!(connection_cap, "connection cap");
        let running = server::start(
            listener,
            api.clone(),
            config.connections,
            connection_cap,
            async {
                let _ = stopped.await;
            },
        )
        .await
        .map_err(|e| NodeError::Server(e.to_string()))?;
        let health = running.health.clone();
        let (stop_store_watch_sender, stop_store_watch) = oneshot::channel::<()>();
        tracing::info!(%address, "listening; recovering");
        let recovery = tokio::spawn({
            let health = health.clone();
            async move {
                let engine = recover.await?;
                decisions.apply(&engine, model);
                decisions.seed_policy(&engine).await;
                // Reservations whose deadline passed while the node was down expire first.
                let expired = engine.expire_reservations().await?;
                if let Some(routes) = routes.get() {
                    let limit = api.limits().max_message_bytes;
                    api.set_router(Router::new(routes.clone(), router_limits, limit));
                }
                api.set_engine(engine.clone());
                health.set_serving(true).await;
                tokio::spawn(watch_store_health(
                    engine.clone(),
                    health.clone(),
                    stop_store_watch,
                ));
                tracing::info!(expired_reservations = expired, "recovered; serving");
                Ok(engine)
            }
        });
        Ok(Node {
            address,
            health,
            stop_server: Some(stop_server),
            stop_store_watch: Some(stop_store_watch_sender),
            server: running.task,
            drain_timeout: Duration::from_secs(config.drain_timeout_seconds),
            recovery,
            cluster: Arc::default(),
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What this node knows of its grid (`None`: a single node, or not started yet).
    pub fn grid_view(&self) -> Option<stockgrid_cluster::node::GridView> {
        let slot = self.cluster.lock().ok()?;
        slot.as_ref().map(ClusterNode::view)
    }

    /// Waits for recovery to finish; answers the engine (for in-process drivers).
    pub async fn recovered(&mut self) -> Result<Engine, NodeError> {
        match (&mut self.recovery).await {
            Ok(Ok(engine)) => {
                // Keep a finished handle so later calls answer the same engine.
                let again = engine.clone();
                self.recovery = tokio::spawn(async move { Ok(again) });
                Ok(engine)
            }
            Ok(Err(error)) => Err(error),
            Err(join) => Err(NodeError::Server(format!("recovery task: {join}"))),
        }
    }

    /// Serves until `signal` resolves, with expiry and maintenance in the background, then
    /// shuts down gracefully.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), NodeError> {
        tokio::pin!(signal);
        let recovered = tokio::select! {
            recovered = self.recovered() => recovered,
            () = &mut signal => return self.shutdown().await,
        };
        let engine = match recovered {
            Ok(engine) => engine,
            Err(error) => {
                self.stop_serving().await;
                return Err(error);
            }
        };
        let background = tokio::spawn(background_work(engine));
        signal.await;
        tracing::info!("shutting down: draining calls");
        background.abort();
        self.shutdown().await
    }

    /// NOT_SERVING, stop accepting and wait for in-flight calls to drain.
    async fn stop_serving(&mut self) {
        if let Some(stop) = self.stop_store_watch.take() {
            let _ = stop.send(());
        }
        self.health.set_serving(false).await;
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        // Long-lived streams (health watches, event streams) would hold the drain open for
        // ever: past the drain timeout the remaining connections are cut.
        match tokio::time::timeout(self.drain_timeout, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "gRPC server ended with an error"),
            Ok(Err(join)) => tracing::warn!(%join, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(
                    timeout_seconds = self.drain_timeout.as_secs(),
                    "calls still open after the drain timeout; closing them"
                );
                self.server.abort();
            }
        }
    }

    /// Graceful shutdown: NOT_SERVING, stop accepting, drain in-flight calls, snapshot
    /// entities, close the store.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop_serving().await;
        let engine = match (&mut self.recovery).await {
            Ok(Ok(engine)) => engine,
            Ok(Err(error)) => return Err(error),
            Err(join) => return Err(NodeError::Server(format!("recovery task: {join}"))),
        };
        // A grid node hands its partitions off before its engine stops.
        let member = self.cluster.lock().ok().and_then(|mut slot| slot.take());
        if let Some(member) = member {
            member
                .leave(self.drain_timeout.max(Duration::from_secs(30)))
                .await;
        }
        engine.shutdown().await?;
        tracing::info!("stopped: store closed");
        Ok(())
    }
}

/// Keeps health in step with the store, checked every second: NOT_SERVING while it refuses
/// writes (poisoned: local durability lost), SERVING again once it accepts them.
async fn watch_store_health(engine: Engine, health: NodeHealth, stop: oneshot::Receiver<()>) {
    let mut serving = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        // Only a poisoned store takes the node out of service: while a shared store is
        // unreachable the node still answers lookups (writes are refused call by call).
        let writable = match engine.store().check_writable() {
            Err(error) if error.is_poisoned() => Err(error),
            _ => Ok(()),
        };
        if writable.is_ok() != serving {
            serving = writable.is_ok();
            match writable {
                Ok(()) => tracing::info!("store accepts writes again; serving"),
                Err(error) => tracing::error!(%error, "store refuses writes; health NOT_SERVING"),
            }
            health.set_serving(serving).await;
        }
    }
}

/// Expires reservations every second and runs maintenance every minute (of the engine's
/// clock), until the task is aborted.
pub async fn background_work(engine: Engine) {
    let mut last_maintenance = engine.clock().now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // The grid's decision policy, as any node changed it (and drift measured here).
        if let Err(error) = engine.sync_policy().await {
            tracing::warn!(%error, "decision policy sync failed; retrying next second");
        }
        if let Err(error) = engine.expire_reservations().await {
            tracing::warn!(%error, "reservation expiry failed; retrying next second");
        }
        let now = engine.clock().now();
        if now.0 - last_maintenance.0 >= MINUTE_MS {
            last_maintenance = now;
            match engine.maintain().await {
                Ok(report) => tracing::debug!(?report, "maintenance"),
                Err(error) => tracing::warn!(%error, "maintenance failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_states_the_defaults() {
        let text = include_str!("../../ops/stockgrid.example.toml");
        let parsed = NodeConfig::from_toml(text).expect("example parses");
        assert_eq!(parsed, NodeConfig::default());
        parsed.engine_config().expect("defaults are valid");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let unknown = NodeConfig::from_toml("listen_on = \"x\"").expect_err("unknown key");
        assert!(unknown.to_string().contains("listen_on"), "{unknown}");
        let negative = NodeConfig::from_toml("[safety_stock]\npickup = -1")
            .expect("parses")
            .engine_config()
            .expect_err("negative");
        assert!(
            negative.to_string().contains("safety_stock.pickup"),
            "{negative}"
        );
        let short = NodeConfig::from_toml("log_retention_seconds = 3600")
            .expect("parses")
            .engine_config()
            .expect_err("shorter than the lateness bound");
        assert!(
            short.to_string().contains("log_retention_seconds"),
            "{short}"
        );
        let week = NodeConfig::from_toml("log_retention_seconds = 604800")
            .expect("parses")
            .engine_config()
            .expect("a week is valid");
        assert_eq!(week.log_retention_ms, 604_800_000);
    }
}
