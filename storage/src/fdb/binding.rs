//! The real FoundationDB client under [`super::FdbStore`] (feature `fdb`): the crate
//! `foundationdb` at API 7.3, built from its bundled headers and linked against the
//! `libfdb_c` client library of the machine that runs it. The client's network thread starts
//! once per process, on the first open, and lives as long as the process.

use std::path::Path;
use std::sync::OnceLock;

use foundationdb::options::{StreamingMode, TransactionOption};
use foundationdb::{FdbError, RangeOption};

use super::{FdbFailure, FdbStore, KvDatabase, KvTransaction, TRANSACTION_TIMEOUT};
use crate::{KeyValue, StoreError};

/// The prefix (subspace) of every key the store writes.
pub const PREFIX: &[u8] = b"stockgrid";

fn failure(error: FdbError) -> FdbFailure {
    FdbFailure {
        code: error.code(),
        retryable: error.is_retryable(),
        maybe_committed: error.is_maybe_committed(),
    }
}

/// A database of a FoundationDB cluster.
pub struct ClientDatabase {
    database: foundationdb::Database,
}

/// One transaction of the real client.
pub struct ClientTransaction {
    transaction: foundationdb::Transaction,
}

impl KvTransaction for ClientTransaction {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, FdbFailure> {
        let value = self.transaction.get(key, false).await.map_err(failure)?;
        Ok(value.map(|slice| slice.to_vec()))
    }

    async fn get_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, FdbFailure> {
        // One call may answer fewer rows than asked while more exist: read on until the
        // limit or the end of the range.
        let mut rows: Vec<KeyValue> = Vec::new();
        let mut from = start.to_vec();
        while rows.len() < limit && from.as_slice() < end {
            let option = RangeOption {
                limit: Some(limit - rows.len()),
                mode: StreamingMode::WantAll,
                ..RangeOption::from((from.clone(), end.to_vec()))
            };
            let values = self
                .transaction
                .get_range(&option, 1, false)
                .await
                .map_err(failure)?;
            let more = values.more();
            rows.extend(
                values
                    .iter()
                    .map(|pair| (pair.key().to_vec(), pair.value().to_vec())),
            );
            match rows.last() {
                Some((last, _)) if more => {
                    from = last.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(rows)
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        self.transaction.set(key, value);
    }

    fn clear(&self, key: &[u8]) {
        self.transaction.clear(key);
    }

    fn clear_range(&self, start: &[u8], end: &[u8]) {
        self.transaction.clear_range(start, end);
    }

    async fn commit(self) -> Result<(), FdbFailure> {
        match self.transaction.commit().await {
            Ok(_) => Ok(()),
            Err(error) => Err(failure(*error)),
        }
    }
}

impl KvDatabase for ClientDatabase {
    type Transaction = ClientTransaction;

    fn begin(&self) -> Result<ClientTransaction, FdbFailure> {
        let transaction = self.database.create_trx().map_err(failure)?;
        let timeout_ms = TRANSACTION_TIMEOUT.as_millis() as i32;
        transaction
            .set_option(TransactionOption::Timeout(timeout_ms))
            .map_err(failure)?;
        Ok(ClientTransaction { transaction })
    }
}

/// Starts the client's network thread, once per process.
fn start_network() -> Result<(), StoreError> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            let builder = foundationdb::api::FdbApiBuilder::default()
                .build()
                .map_err(|e| e.to_string())?;
            // SAFETY: `boot` must run once per process, before any other call of the client,
            // and the network must not stop while a database is in use: the OnceLock runs it
            // once, and the guard is kept for the life of the process.
            #[allow(unsafe_code)]
            let network = unsafe { builder.boot() }.map_err(|e| e.to_string())?;
            std::mem::forget(network);
            Ok(())
        })
        .clone()
        .map_err(|message| StoreError::Unavailable {
            context: "start the FoundationDB client",
            message,
        })
}

/// The store on the cluster that `cluster_file` names, under [`PREFIX`].
pub fn open(cluster_file: &Path) -> Result<FdbStore<ClientDatabase>, StoreError> {
    open_with_prefix(cluster_file, PREFIX)
}

/// As [`open`], under `prefix` (the conformance suite gives each store its own).
pub fn open_with_prefix(
    cluster_file: &Path,
    prefix: &[u8],
) -> Result<FdbStore<ClientDatabase>, StoreError> {
    start_network()?;
    let path = cluster_file.to_str().ok_or_else(|| StoreError::Backend {
        context: "open the FoundationDB cluster",
        message: format!("{}: not UTF-8", cluster_file.display()),
    })?;
    let database =
        foundationdb::Database::new(Some(path)).map_err(|e| StoreError::Unavailable {
            context: "open the FoundationDB cluster",
            message: format!("{}: {e}", cluster_file.display()),
        })?;
    FdbStore::new(ClientDatabase { database }, prefix)
}
