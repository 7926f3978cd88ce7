//! The router of a grid node: which node answers an item, and the peer calls that reach it.
//!
//! Any node of a grid serves the whole public API. An item (a lookup, an event's effect, a
//! reservation's lines, an inspected pair) belongs to its pair's partition; the node that
//! serves that partition now is this node (its engine answers) or a peer, called over the
//! internal `stockgrid.v1.Peer` service, one call per owner with a deadline. The table comes
//! from the membership loop ([`Routes`]); an item whose owner is unknown, unreachable or
//! refuses (the partition moved) is tried again after the router re-reads those partitions'
//! owners from the store, with a short backoff while the retry budget lasts (500 ms by
//! default: a hand-off completes within a heartbeat or two), and answers OWNER_UNAVAILABLE
//! if that fails too. A peer call is
//! answered from the callee's own partitions only: a call travels at most one hop.
//!
//! This lives beside the services rather than in `stockgrid-cluster` because it speaks the
//! protos; the cluster crate owns the table it reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockgrid_actors::partition::Partition;
use stockgrid_cluster::Grid;
use stockgrid_cluster::routing::{Routes, RoutingTable};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::proto::v1 as pb;
use crate::proto::v1::peer_client::PeerClient;

/// Deadlines of the calls a router makes to owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterLimits {
    /// A forwarded read (lookups, inspect, a reservation's state), in milliseconds.
    pub read_deadline_ms: u64,
    /// A forwarded write (events, reservation changes), in milliseconds: the owner answers
    /// once its commit is durable, so this covers a commit under load.
    pub write_deadline_ms: u64,
    /// Connecting to a peer, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long items whose owner is unknown, unreachable or moving are tried again (after
    /// re-reading their owners from the store, with a backoff from 25 ms to 200 ms) before
    /// they answer OWNER_UNAVAILABLE, in milliseconds; 0: one retry, at once.
    pub retry_budget_ms: u64,
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self {
            read_deadline_ms: 2_000,
            write_deadline_ms: 10_000,
            connect_timeout_ms: 1_000,
            retry_budget_ms: 500,
        }
    }
}

impl RouterLimits {
    /// Checks the deadlines, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("read_deadline_ms", self.read_deadline_ms),
            ("write_deadline_ms", self.write_deadline_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if !(1..=600_000).contains(&value) {
                return Err(format!("{name}: must be 1 to 600000, got {value}"));
            }
        }
        if self.retry_budget_ms > 60_000 {
            return Err(format!(
                "retry_budget_ms: must be at most 60000, got {}",
                self.retry_budget_ms
            ));
        }
        Ok(())
    }
}

/// Who answers an item now.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Target {
    /// This node's engine.
    Local,
    /// A peer, by the address it serves on.
    Peer(String),
    /// Nobody can now (no live owner is known).
    Nobody,
}

/// A grid node's router: the routing table and a connection per peer.
#[derive(Debug)]
pub struct Router {
    routes: Routes,
    limits: RouterLimits,
    max_message_bytes: usize,
    peers: Mutex<HashMap<String, PeerClient<Channel>>>,
}

impl Router {
    /// A router over `routes`, with messages up to `max_message_bytes` each way.
    pub fn new(routes: Routes, limits: RouterLimits, max_message_bytes: usize) -> Self {
        Self {
            routes,
            limits,
            max_message_bytes,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The table as the membership loop last published it (or a refresh updated it).
    pub fn table(&self) -> Arc<RoutingTable> {
        self.routes.table()
    }

    /// Who answers for `partition`: this node while its engine serves it, else the owner the
    /// table names.
    pub(crate) fn target<G: Grid>(
        &self,
        grid: &G,
        table: &RoutingTable,
        partition: Partition,
    ) -> Target {
        if grid.serves(partition) {
            return Target::Local;
        }
        match table.owner(partition) {
            Some(route) if route.node_id == self.routes.node_id() => Target::Local,
            Some(route) => Target::Peer(route.address.clone()),
            None => Target::Nobody,
        }
    }

    /// The retries of one call's items whose owner did not answer.
    pub(crate) fn retry(&self) -> Retry {
        Retry {
            started: Instant::now(),
            budget: Duration::from_millis(self.limits.retry_budget_ms),
            attempts: 0,
        }
    }

    /// Re-reads the owners of `partitions` from the store (after an owner refused or did not
    /// answer), off the async workers.
    pub(crate) async fn refresh(&self, mut partitions: Vec<Partition>) -> Arc<RoutingTable> {
        partitions.sort_unstable();
        partitions.dedup();
        let routes = self.routes.clone();
        let refreshed = tokio::task::spawn_blocking(move || routes.refresh(&partitions)).await;
        match refreshed {
            Ok(Ok(table)) => table,
            Ok(Err(error)) => {
                tracing::debug!(%error, "routes: refresh from the store failed");
                self.routes.table()
            }
            Err(error) => {
                tracing::debug!(%error, "routes: refresh task failed");
                self.routes.table()
            }
        }
    }

    /// The peer client of `address` (connected lazily; reconnects by itself).
    fn peer(&self, address: &str) -> Result<PeerClient<Channel>, Status> {
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| Status::internal("peer table lock poisoned"))?;
        if let Some(client) = peers.get(address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| {
                Status::unavailable(format!("peer address {address:?} is not usable: {error}"))
            })?
            .connect_timeout(Duration::from_millis(self.limits.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let client = PeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        peers.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    fn read_deadline(&self) -> Duration {
        Duration::from_millis(self.limits.read_deadline_ms)
    }

    fn write_deadline(&self) -> Duration {
        Duration::from_millis(self.limits.write_deadline_ms)
    }

    /// Decides `items` at the peer `address`.
    pub(crate) async fn decide(
        &self,
        address: &str,
        items: Vec<pb::GetAvailabilityRequest>,
    ) -> Result<pb::BatchGetAvailabilityResponse, Status> {
        let mut client = self.peer(address)?;
        let deadline = self.read_deadline();
        let request = pb::BatchGetAvailabilityRequest { items };
        bounded(deadline, client.decide(with_deadline(request, deadline))).await
    }

    /// Applies events (each in its scope) at the peer `address`, answered once durable.
    pub(crate) async fn ingest(
        &self,
        address: &str,
        request: pb::PeerIngestRequest,
    ) -> Result<pb::IngestEventsResponse, Status> {
        let mut client = self.peer(address)?;
        let deadline = self.write_deadline();
        bounded(deadline, client.ingest(with_deadline(request, deadline))).await
    }

    /// A pair's state at the peer `address`.
    pub(crate) async fn entity_state(
        &self,
        address: &str,
        request: pb::GetEntityStateRequest,
    ) -> Result<pb::EntityState, Status> {
        let mut client = self.peer(address)?;
        let deadline = self.read_deadline();
        bounded(
            deadline,
            client.get_entity_state(with_deadline(request, deadline)),
        )
        .await
    }

    /// A reservation call at the peer `address`.
    pub(crate) async fn reservation(
        &self,
        address: &str,
        call: ReservationCall,
    ) -> Result<pb::Reservation, Status> {
        let mut client = self.peer(address)?;
        let read = self.read_deadline();
        let write = self.write_deadline();
        match call {
            ReservationCall::Reserve(request) => {
                bounded(write, client.reserve(with_deadline(request, write))).await
            }
            ReservationCall::Commit(request) => {
                bounded(write, client.commit(with_deadline(request, write))).await
            }
            ReservationCall::Release(request) => {
                bounded(write, client.release(with_deadline(request, write))).await
            }
            ReservationCall::Get(request) => {
                bounded(read, client.get_reservation(with_deadline(request, read))).await
            }
        }
    }
}

impl Router {
    /// Holds lines of a cart across owners at the peer `address`.
    pub(crate) async fn hold_lines(
        &self,
        address: &str,
        request: pb::HoldLinesRequest,
    ) -> Result<(), Status> {
        let mut client = self.peer(address)?;
        let deadline = self.write_deadline();
        bounded(
            deadline,
            client.hold_lines(with_deadline(request, deadline)),
        )
        .await
        .map(|_| ())
    }

    /// Frees a reservation's holds at the peer `address`.
    pub(crate) async fn free_lines(
        &self,
        address: &str,
        request: pb::FreeLinesRequest,
    ) -> Result<(), Status> {
        let mut client = self.peer(address)?;
        let deadline = self.write_deadline();
        bounded(
            deadline,
            client.free_lines(with_deadline(request, deadline)),
        )
        .await
        .map(|_| ())
    }
}

/// The tries of one call's items: the first at once, one retry at once, then more with a
/// backoff (25 ms doubling to 200 ms) while the budget lasts.
#[derive(Debug)]
pub(crate) struct Retry {
    started: Instant,
    budget: Duration,
    attempts: u32,
}

impl Retry {
    /// Whether to try (again), after the backoff due.
    pub(crate) async fn next(&mut self) -> bool {
        self.attempts += 1;
        if self.attempts <= 2 {
            return true;
        }
        let elapsed = self.started.elapsed();
        if elapsed >= self.budget {
            return false;
        }
        let backoff = Duration::from_millis(25 << (self.attempts - 3).min(3));
        tokio::time::sleep(backoff.min(self.budget - elapsed)).await;
        true
    }

    /// Whether the try under way is a retry (the owners are read again first).
    pub(crate) fn is_retry(&self) -> bool {
        self.attempts > 1
    }
}

/// A reservation call forwarded whole to the owner of every line.
#[derive(Clone, Debug)]
pub(crate) enum ReservationCall {
    Reserve(pb::ReserveRequest),
    Commit(pb::CommitRequest),
    Release(pb::ReleaseRequest),
    Get(pb::GetReservationRequest),
}

fn with_deadline<T>(message: T, deadline: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    request
}

/// Waits for a peer's answer at most `deadline` (the owner also knows it, from the
/// `grpc-timeout` header).
async fn bounded<T>(
    deadline: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the owner did not answer within {} ms",
            deadline.as_millis()
        ))),
    }
}
