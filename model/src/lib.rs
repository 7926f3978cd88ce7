//! The pure domain of stockgrid: what an event, a pair, a ledger, a reservation and a decision
//! are, with no runtime around them. No tokio, no store, no network (Cargo keeps them out:
//! this crate depends on `stockgrid-inference` alone of ours), so the same code runs in a
//! node's shards, in the in-memory replay, in training and in an audit replay.
//!
//! # Layout (each module uses only those listed before it; `tests/layout.rs` checks it)
//! - [`time`]: timestamps, RFC 3339, the injected [`time::Clock`] (and the one wall clock).
//! - [`domain`]: pairs, sources, kinds, surfaces, events and their validation.
//! - [`partition`]: the partition of a pair (DESIGN.md "Cluster").
//! - [`ledger`]: admission, dedup, ledger arithmetic, anchors, transfers; the entity state.
//! - [`catalog`]: locations (kind, region, time zone, hours, expected feeds), validated.
//! - [`decision`]: the rules decision and the ml decision of one pair.
//! - [`shared`]: facts shared by a location's or a SKU's pairs, computed once.
//! - [`formats`]: the REPLAY.md input files, parsed field by field.
//! - [`offline`]: the event log through the entity code in memory.
//! - [`audit`]: decision records and their replay from an event file.

pub mod audit;
pub mod catalog;
pub mod decision;
pub mod domain;
pub mod formats;
pub mod ledger;
pub mod offline;
pub mod partition;
pub mod shared;
pub mod time;
