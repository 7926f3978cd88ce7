//! The gRPC server of one node: the stockgrid services, `grpc.health.v1` health and server
//! reflection, with explicit message size limits.
//!
//! Health starts NOT_SERVING; the caller marks it SERVING once the engine has recovered and
//! NOT_SERVING again when shutting down, so load balancers stop sending before the drain.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::connections::{self, ConnectionLimits};
use crate::proto::v1 as pb;
use crate::service::Api;
use stockgrid_cluster::Grid;

/// The fully qualified names of the stockgrid services, as health and reflection know them.
pub const SERVICE_NAMES: &[&str] = &[
    "stockgrid.v1.Availability",
    "stockgrid.v1.Ingest",
    "stockgrid.v1.Reservations",
    "stockgrid.v1.Catalog",
    "stockgrid.v1.Inspect",
];

/// The health of a node, as `grpc.health.v1` reports it: overall ("") and per service.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    reporter: HealthReporter,
}

impl NodeHealth {
    /// Marks the node and every service SERVING or NOT_SERVING.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for name in SERVICE_NAMES {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}

/// A running gRPC server.
#[derive(Debug)]
pub struct RunningServer {
    /// Its health.
    pub health: NodeHealth,
    /// Ends when the server has stopped (after `shutdown` resolved and in-flight calls
    /// drained).
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("start gRPC server: {0}")]
pub struct ServerError(String);

/// Starts serving `api` on `listener` (health NOT_SERVING) until `shutdown` resolves, with
/// at most `connection_cap` connections under `connections`' limits.
pub async fn start<G: Grid>(
    listener: TcpListener,
    api: Api<G>,
    connections: ConnectionLimits,
    connection_cap: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, ServerError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = NodeHealth { reporter };
    health.set_serving(false).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError(e.to_string()))?;
    let limit = api.limits().max_message_bytes;
    let router = Server::builder()
        .max_concurrent_streams(connections.max_streams_per_connection)
        .http2_keepalive_interval(Some(Duration::from_millis(
            connections.keepalive_interval_ms,
        )))
        .http2_keepalive_timeout(Some(Duration::from_millis(
            connections.keepalive_timeout_ms,
        )))
        // Bounds on what a peer may make the server hold: resets it provokes, header lists.
        .http2_max_pending_accept_reset_streams(Some(64))
        .http2_max_header_list_size(Some(64 << 10))
        .layer(crate::errors::DecodeErrorLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            pb::availability_server::AvailabilityServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            pb::ingest_server::IngestServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            pb::reservations_server::ReservationsServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            pb::catalog_server::CatalogServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            pb::admin_server::AdminServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            pb::peer_server::PeerServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            pb::inspect_server::InspectServer::new(api)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
    // Capped, with a handshake timeout, idle eviction, keepalive and no Nagle (small answers
    // must not wait for the peer's delayed ACK, ~40 ms).
    let incoming = connections::accept(listener, connections, connection_cap);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown));
    Ok(RunningServer { health, task })
}
