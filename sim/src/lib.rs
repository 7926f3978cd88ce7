//! The simulator, evaluation harness, training pipeline and drills of stockgrid.
//!
//! A deterministic (seeded) simulation of a retail network that knows the true stock, the
//! evaluation of answers against that truth, and drills against a real node through the
//! `stockgrid-api` client. It may depend on every library crate (`api`, `cluster`, `actors`,
//! `inference`); nothing but the binary depends on it.
//!
//! # Layout
//! - [`scenario`]: the TOML scenarios (`sim/scenarios/`), every parameter of a world.
//! - [`world`]: the network laid out from a scenario and seed; [`traces`]: the M5 reader.
//! - [`generate`]: the day-by-day simulation; [`files`]: `sim generate`, the REPLAY.md files
//!   and the realism statistics; [`record`]: the rules ledger's record at each query.
//! - [`evaluate`]: `sim evaluate`, broken promises per method and surface; [`report`]:
//!   `metrics.json`, `report.html` and its PNG plots.
//! - [`rng`], [`civil`], [`seeds`]: pinned random streams, fast time text, the seed split.
//! - [`train`]: `stockgrid train`, the model from training and calibration runs.
//! - [`drill`]: `sim drill`, a scenario played against a real `stockgrid serve`.
//! - [`demo`]: `stockgrid demo`; [`loadgen`]: `stockgrid loadgen`; [`floor`]: the floors it
//!   is measured against (a do-nothing gRPC server, the store alone).

pub mod civil;
pub mod demo;
pub mod drill;
pub mod evaluate;
pub mod files;
pub mod floor;
pub mod generate;
pub mod loadgen;
pub mod record;
pub mod report;
mod requests;
pub mod rng;
pub mod scenario;
pub mod seeds;
pub mod traces;
pub mod train;
pub mod world;
