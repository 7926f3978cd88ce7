//! The public gRPC API of stockgrid.
//!
//! This crate owns the protos (`proto/stockgrid/v1`, package `stockgrid.v1`), the generated
//! server and client code ([`proto`]), the tonic services ([`service`]), the server with
//! health and reflection ([`server`]), and the mapping of every internal error to a
//! `tonic::Status` ([`status`]). It may depend on `stockgrid-cluster` and `stockgrid-actors`,
//! never on `stockgrid-sim` or the binary.
//!
//! # Layout
//! - [`proto`]: generated code and the descriptor set.
//! - [`convert`]: proto <-> domain conversions, naming the request field they check.
//! - [`status`]: internal errors -> gRPC status codes.
//! - [`service`]: the five services on one engine; admission (load shedding).
//! - [`server`]: the tonic server, health, reflection, message size limits, HTTP/2 limits.
//! - [`connections`]: accepted connections: the cap, handshake timeout, idle eviction.
//! - [`errors`]: the status of an undecodable or oversized request body.
//! - [`router`]: a grid node's routing: who answers an item, the peer calls.
//! - [`carts`]: carts whose lines have several owners, coordinated by the node reached.
//! - [`routed`]: the services' routed paths and the internal peer service.
//! - [`node`]: one node's configuration, start, recovery, background work and shutdown.

pub mod carts;
pub mod connections;
pub mod convert;
pub mod errors;
pub mod node;
pub mod routed;
pub mod router;
pub mod server;
pub mod service;
pub mod status;

/// Code generated from the protos at build time (vendored protoc), server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    /// Package `stockgrid.v1`.
    pub mod v1 {
        tonic::include_proto!("stockgrid.v1");
    }

    /// The encoded descriptor set of every stockgrid proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("stockgrid_descriptor");
}

pub use service::{Api, ServiceLimits};
