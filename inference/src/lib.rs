//! Pure math of stockgrid's belief about the true sellable quantity.
//!
//! This crate owns the Bayesian stock belief, the shared feature definition, the learned
//! scorer and the per-surface decision. It has its own small vocabulary of observations
//! ("sold k", "observed c", "received r", "not found") and must not depend on any other
//! stockgrid crate, on tokio, or on any I/O beyond reading and writing model files: it is
//! called from inside an entity's handler and runs in microseconds on a CPU core.
//!
//! # Layout
//! - [`hours`]: opening hours and open-hour counting (no-sale evidence counts open hours).
//! - [`observation`]: the kinds of absolute observation and the compact time (shared by the
//!   belief and the claims).
//! - [`params`]: the belief's parameters (fitted by `train`, shipped in a model).
//! - [`belief`]: per-pair sufficient statistics and the posterior over the truth.
//! - [`claims`]: each observing source's claim (count, WMS snapshot, RFID) brought to now.
//! - [`feeds`]: per-location feed health (last seen, typical gap, staleness).
//! - [`shared`]: facts shared by a location's or a SKU's pairs (demand shape, losses, velocity).
//! - [`features`]: the one feature definition, online and offline.
//! - [`ranker`]: the candidates (each claim of the quantity) and the learned ranker fusing them.
//! - [`model`]: the model file (belief parameters, scorer, thresholds, metadata) and fitting.
//! - [`decide`]: the ml decision with its reason code.
//! - [`drift`]: PSI of live features against the model's training distribution.
//! - [`trees`]: small gradient-boosted trees, the default scorer.
//! - [`stats`]: the normal tail and logistic helpers.
//!
//! The rules decision of the ledger lives in `stockgrid-actors` (module `decision`) and is the
//! fallback every decision here can be switched back to.

pub mod belief;
pub mod claims;
pub mod decide;
pub mod drift;
pub mod features;
pub mod feeds;
pub mod hours;
pub mod model;
pub mod observation;
pub mod params;
pub mod ranker;
pub mod shared;
pub mod stats;
pub mod trees;
