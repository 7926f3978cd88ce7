//! The storage contract of stockgrid and its backends.
//!
//! This crate knows bytes, not inventory: ordered keys, point reads, ordered range scans and
//! atomic, durable, conditional write batches. It must not depend on any other stockgrid
//! crate, and nothing in it may interpret a key or a value. The meaning of keys (event log,
//! snapshots, identities) belongs to `stockgrid-actors`.
//!
//! # Layout
//! - [`store`]: the [`Store`] trait, the contract every backend fulfils.
//! - [`batch`]: [`WriteBatch`], its operations and conditions, and the one routine that
//!   resolves a batch against existing keys (shared by every backend so they agree).
//! - [`location`]: [`StoreLocation`], where a store lives (a directory, a `postgres://` URL,
//!   `fdb:`), and opening any of them.
//! - [`limits`]: [`StoreLimits`], what one atomic batch may carry, declared per backend.
//! - [`error`]: [`StoreError`], including the poisoned state.
//! - [`poison`]: the poisoned state every backend keeps, and the test hook that trips it.
//! - [`memory`]: [`MemoryStore`], an in-memory backend for unit tests and simulation.
//! - [`embedded`]: [`EmbeddedStore`], the on-disk default (fjall, an LSM tree), behind the
//!   `embedded` feature.
//! - [`postgres`]: [`PostgresStore`], the store a cluster's nodes share, behind the
//!   `postgres` feature.
//! - [`fdb`]: [`fdb::FdbStore`], the FoundationDB backend's logic over a transaction
//!   interface, its in-memory fake, and (feature `fdb`) the binding to the real client.
//! - [`group_commit`]: [`GroupCommitter`], which merges batches from many writers into one
//!   fsync'd commit and acknowledges each writer only after that commit.
//! - [`read_only`]: [`read_only::ReadOnly`], a store offline tools open beside live nodes.
//! - [`offload`]: store calls from an async runtime, on the blocking pool for a remote backend.
//! - [`conformance`]: the suite any backend must pass (FoundationDB will run it too).
//!
//! # Durability contract
//! `Store::commit` returns `Ok` only after the batch is on stable storage (fsync). A failed
//! write or fsync, or a full disk, poisons the store: every later write is refused with
//! [`StoreError::Poisoned`], because after such a failure the state on disk is uncertain and
//! stockgrid prefers refusing writes to serving uncertain stock.

pub mod batch;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
pub mod fdb;
pub mod group_commit;
pub mod limits;
pub mod location;
pub mod memory;
pub mod offload;
pub mod poison;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod read_only;
pub mod store;

pub use batch::{Condition, Operation, WriteBatch};
#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::StoreError;
pub use group_commit::{CommitTicket, GroupCommitConfig, GroupCommitter};
pub use limits::StoreLimits;
pub use location::{OpenSettings, StoreLocation};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
pub use store::{KeyValue, Store};

/// 64 bits that differ between processes and between stores of one process: the prefix of
/// commit ids.
pub(crate) fn random_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    // RandomState's keys come from the operating system's randomness once per thread and
    // change with every instance.
    hasher.write_u32(std::process::id());
    hasher.finish()
}
