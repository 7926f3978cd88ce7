//! Pure math of stockgrid's belief about the true sellable quantity.
//!
//! This crate owns the Bayesian stock belief, the ranking of conflicting candidate claims and
//! the per-surface decision thresholds. It has its own small vocabulary of observations
//! ("sold k at t", "counted c at t") and must not depend on any other stockgrid crate, on
//! tokio, or on any I/O: it is called from inside an entity's handler and must run in
//! microseconds on a CPU core.
//!
//! # Layout
//! Empty until the inference issue lands: the rules decision of the ledger lives in
//! `stockgrid-actors` (module `decision`) and is the fallback this crate's decisions will
//! always be switchable back to.
