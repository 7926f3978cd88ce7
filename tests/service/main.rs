//! The gRPC service end to end: real nodes on `127.0.0.1:0`, real embedded stores on disk,
//! the generated client, and real `stockgrid serve` processes that are killed and restarted;
//! `postgres` runs a named part of it on private PostgreSQL servers, and their outages.

#![allow(missing_docs)] // Test helpers.

mod api;
mod attacks;
mod grid;
mod hardening;
mod linearizability;
mod postgres;
mod processes;
mod reservations;

use std::sync::Arc;

use stockgrid_actors::time::{Clock, SimulatedClock, Timestamp, WallClock};
use stockgrid_api::node::{Node, NodeConfig};
use stockgrid_api::proto::v1 as pb;
use stockgrid_storage::postgres::testing::PrivateServer;
use tonic::transport::Channel;

/// 2026-03-02T10:00:00Z: the simulated clock of in-process nodes starts here.
pub const T0: Timestamp = Timestamp(1_772_445_600_000);

/// A node running in this process, with its clients.
pub struct TestNode {
    pub node: Node,
    pub clock: Arc<SimulatedClock>,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// A node on a fresh temporary store, with a simulated clock at [`T0`], recovered,
    /// deciding by the ledger rules (the tests of ledger and reservation semantics).
    pub async fn start() -> TestNode {
        Self::start_configured(|config| {
            config.decisions.mode = stockgrid_actors::decision::DecisionMode::Rules;
        })
        .await
    }

    /// As [`TestNode::start`], with the default configuration changed by `configure`.
    pub async fn start_configured(configure: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = NodeConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().join("data"),
            ..NodeConfig::default()
        };
        Self::launch(dir, config, configure).await
    }

    /// A rules node on the database [`postgres::DATABASE`] of a private PostgreSQL server
    /// (its password in a file, store calls bounded by 1 s), with `configure` applied.
    pub async fn start_on_postgres(
        server: &PrivateServer,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = NodeConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            store: Some(server.url(postgres::DATABASE)),
            store_password_file: Some(server.password_file(dir.path())),
            store_timeout_ms: 1000,
            decisions: stockgrid_api::node::DecisionSettings {
                mode: stockgrid_actors::decision::DecisionMode::Rules,
                ..Default::default()
            },
            ..NodeConfig::default()
        };
        Self::launch(dir, config, configure).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        mut config: NodeConfig,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        let clock = Arc::new(SimulatedClock::starting_at(T0));
        configure(&mut config);
        let mut node = Node::start(&config, Arc::clone(&clock) as Arc<dyn Clock>)
            .await
            .expect("start node");
        node.recovered().await.expect("recover");
        let url = format!("http://{}", node.address());
        TestNode {
            node,
            clock,
            url,
            _dir: dir,
        }
    }

    /// The node's simulated clock now.
    pub fn clock_now(&self) -> Timestamp {
        self.clock.now()
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.url).await
    }

    pub async fn availability(&self) -> pb::availability_client::AvailabilityClient<Channel> {
        pb::availability_client::AvailabilityClient::new(self.channel().await)
    }

    pub async fn ingest(&self) -> pb::ingest_client::IngestClient<Channel> {
        pb::ingest_client::IngestClient::new(self.channel().await)
    }

    pub async fn reservations(&self) -> pb::reservations_client::ReservationsClient<Channel> {
        pb::reservations_client::ReservationsClient::new(self.channel().await)
    }

    pub async fn inspect(&self) -> pb::inspect_client::InspectClient<Channel> {
        pb::inspect_client::InspectClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> pb::admin_client::AdminClient<Channel> {
        pb::admin_client::AdminClient::new(self.channel().await)
    }

    pub async fn catalog(&self) -> pb::catalog_client::CatalogClient<Channel> {
        pb::catalog_client::CatalogClient::new(self.channel().await)
    }

    /// Counts `units` of `sku` at `location` (an anchor) at the node's current time.
    pub async fn stock(&self, sku: u64, location: u32, units: i64) {
        let now = self.clock.now();
        let result = self
            .ingest()
            .await
            .ingest_events(pb::IngestEventsRequest {
                events: vec![event(
                    &format!("count-{sku}-{location}-{}", now.0),
                    "store_inventory",
                    "count",
                    sku,
                    location,
                    units,
                    now,
                )],
            })
            .await
            .expect("ingest count")
            .into_inner();
        assert_eq!(result.results[0].status, pb::EventStatus::Accepted as i32);
    }
}

/// A channel to `url`.
pub async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// A proto event.
pub fn event(
    id: &str,
    source: &str,
    kind: &str,
    sku: u64,
    location: u32,
    qty: i64,
    time: Timestamp,
) -> pb::Event {
    pb::Event {
        event_id: id.to_owned(),
        source: source.to_owned(),
        kind: kind.to_owned(),
        sku,
        location,
        qty,
        event_time: time.to_rfc3339(),
        ..Default::default()
    }
}

/// The wall clock's now, for events sent to `serve` processes.
pub fn wall_now() -> Timestamp {
    WallClock.now()
}

/// The message of a failed call must start with the field it names.
pub fn assert_status(status: &tonic::Status, code: tonic::Code, field_or_text: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field_or_text),
        "{:?} should mention {field_or_text}",
        status.message()
    );
}
