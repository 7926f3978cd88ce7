//! One node's runtime of stockgrid: the key layout, codecs, persistence and recovery, virtual
//! SKU-location entities on supervised shard actors, the engine, the decision policy,
//! experiments, and replay through the engine.
//!
//! This crate may depend on `stockgrid-model` (the pure domain), `stockgrid-storage` (bytes and
//! the `Store` contract) and `stockgrid-inference` (pure math), and on nothing else of ours:
//! placement across nodes belongs to `stockgrid-cluster`, the network API to `stockgrid-api`,
//! simulation to `stockgrid-sim`. The domain modules are re-exported under their old names
//! (`stockgrid_actors::ledger` is `stockgrid_model::ledger`).
//!
//! # Layout (each module uses only those listed before it; `tests/layout.rs` checks it)
//! - [`counters`]: what the engine did since it started.
//! - [`keys`]: the key layout: every key family, per partition or cluster-wide, and the
//!   store's format record.
//! - [`ownership`]: the partitions this node answers for, its lease, and the fence of its
//!   batches.
//! - [`error`]: the crate's error type, [`EngineError`].
//! - [`due`]: when each partition's expiry and deadline indexes next have work.
//! - [`persist`]: log records, snapshots, recovery and the identity tail.
//! - [`catalog`]: the stored location catalog.
//! - [`audit`]: where decision records are stored.
//! - [`config`]: the engine's configuration and its defaults.
//! - [`experiment`]: arms, deterministic assignment, shadow answers, per-arm outcomes.
//! - [`policy`]: which mode answers each surface and region, switchable at runtime.
//! - [`reservation`]: reservation records, holds, settlements, the deadline index.
//! - [`shard`]: the shard actor owning many virtual entities; its runtime semantics.
//! - [`supervision`]: the supervisor restarting panicked shards from the store.
//! - [`engine`]: one node's grid: routing, back-pressure, lookups, reservations, decision
//!   records, maintenance.
//! - [`replay`]: `stockgrid replay` over the REPLAY.md files.

pub use stockgrid_model::{decision, domain, ledger, offline, partition, shared, time};

pub mod audit;
pub mod catalog;
pub mod config;
pub mod counters;
pub mod due;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod keys;
pub mod ownership;
pub mod persist;
pub mod policy;
mod prefetch;
pub mod replay;
pub mod reservation;
pub mod shard;
pub mod supervision;

pub use config::EngineConfig;
pub use engine::{Engine, Lookup};
pub use error::EngineError;
