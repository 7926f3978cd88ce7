//! The domain model and the engine of stockgrid: events, the deterministic ledger, virtual
//! SKU-location entities on supervised shard actors, their persistence, and replay.
//!
//! This crate may depend on `stockgrid-storage` (bytes and the `Store` contract) and
//! `stockgrid-inference` (pure math), and on nothing else of ours: placement across nodes
//! belongs to `stockgrid-cluster`, the network API to `stockgrid-api`, simulation to
//! `stockgrid-sim`.
//!
//! # Layout
//! - [`time`]: timestamps, RFC 3339, the injected [`time::Clock`].
//! - [`domain`]: keys, sources, kinds, surfaces, events and their validation.
//! - [`ledger`]: the pure core: admission, dedup, ledger arithmetic, anchors, transfers.
//! - [`catalog`]: locations (kind, region, time zone, hours, expected feeds), stored.
//! - [`decision`]: the rules decision and the ml decision of one pair.
//! - [`policy`]: which mode answers each surface and region, switchable at runtime.
//! - [`experiment`]: arms, deterministic assignment, shadow answers, per-arm outcomes.
//! - [`shared`]: facts shared by a location's or a SKU's pairs (hours, kind, feeds, region,
//!   demand shape, velocity, losses), computed once and read by entities.
//! - [`offline`]: the event log through the entity code in memory (replay, training, audit).
//! - [`persist`]: the key layout, log records, snapshots, recovery and the identity tail.
//! - [`reservation`]: reservations: records, holds, settlements, expiry; the engine's calls.
//! - [`shard`]: the shard actor owning many virtual entities; its runtime semantics.
//! - [`supervision`]: the supervisor restarting panicked shards from the store.
//! - [`engine`]: one node's grid: routing, back-pressure, lookups, maintenance.
//! - [`config`]: the engine's configuration and its defaults.
//! - [`replay`]: `stockgrid replay` over the REPLAY.md files.
//! - [`error`]: the crate's error type, [`EngineError`].

pub mod audit;
pub mod catalog;
pub mod config;
pub mod decision;
pub mod domain;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod ledger;
pub mod offline;
pub mod persist;
pub mod policy;
pub mod replay;
pub mod reservation;
pub mod shard;
pub mod shared;
pub mod supervision;
pub mod time;

pub use config::EngineConfig;
pub use engine::{Engine, Lookup};
pub use error::EngineError;
