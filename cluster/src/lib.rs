//! Placement, membership and routing of SKU-location partitions across nodes.
//!
//! This crate owns the [`Grid`] seam that the public API serves (one node's engine implements
//! it), membership, leases, claims and hand-offs, placement by rendezvous hashing over live
//! members, and the routing table a node's router reads. The router itself, which speaks the
//! protos (grouping a batch by owner, calling the owners over the peer service with
//! deadlines and merging the answers), is `stockgrid_api::router`. It may depend on
//! `stockgrid-actors` (the entities it routes to) and nothing above it (`api`, `sim`).
//! Multi-node durability and ownership belong to the shared store, not to a home-made
//! consensus.
//!
//! # Layout
//! - [`grid`]: the [`Grid`] trait and its implementation by one node's engine.
//! - [`records`]: the cluster's, members' and partitions' records in the store.
//! - [`placement`]: rendezvous hashing over live members, region-aware.
//! - [`protocol`]: join, renew, expire, claim, release and leave, each one conditioned batch.
//! - [`node`]: a node's membership loop: heartbeat and lease, liveness, claims, hand-offs.
//! - [`routing`]: which member answers for each partition, as the router reads it.
//! - [`status`]: the grid as `stockgrid cluster status` reports it.

pub mod grid;
pub mod node;
pub mod placement;
pub mod protocol;
pub mod records;
pub mod routing;
pub mod status;

pub use grid::Grid;
