//! Placement, membership and routing of SKU-location partitions across nodes.
//!
//! This crate will own key -> partition (a fixed count, e.g. 4,096) -> node by rendezvous
//! hashing over live members, region-aware; the router that fans a batch out to owners in
//! parallel with deadlines and merges the answers; and the internal peer RPC. It may depend
//! on `stockgrid-actors` (the entities it routes to) and nothing above it (`api`, `sim`).
//! Multi-node durability and ownership belong to the shared store (FoundationDB), not to a
//! home-made consensus.
//!
//! # Layout
//! Empty until the multi-node work: a single node owns every partition, and
//! `stockgrid_actors::engine::Engine` is the whole grid.
