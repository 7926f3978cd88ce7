//! [`FdbStore`]: the store on FoundationDB, for clusters at retailer scale.
//!
//! The store's logic (limits, conditions, retries with backoff, and the resolution of a commit
//! whose result is unknown) is written against a small transaction interface,
//! [`KvDatabase`] and [`KvTransaction`], so that it is tested here, where no FoundationDB
//! client or server can be installed, with [`fake::FakeDatabase`]: an in-memory database with
//! snapshot reads, conflict checks and injected FoundationDB error codes. The real binding
//! (crate `foundationdb`, API 7.3, its bundled headers) implements the interface behind the
//! `fdb` feature ([`binding`]).
//!
//! # Layout
//! Everything lives under one prefix (a subspace): the store's keys, as the key-layout
//! module of `stockgrid-actors` makes them, under `prefix 0x00`, and commit ids under
//! `prefix 0x01`. A commit writes its id in its own transaction; the next commit of this
//! process clears it once its success is known, so only unresolved or last ids stay.
//!
//! # Limits
//! FoundationDB refuses keys over 10,000 bytes, values over 100,000 bytes and transactions
//! over 10,000,000 bytes, and a transaction may not live longer than 5 s. The declared
//! [`LIMITS`] keep a margin under each (the prefix, the commit id, conflict ranges), so a batch
//! that passes them fits one transaction; a batch over them is refused whole, never split.
//! A transaction gets the 5 s timeout as an option, and a long scan continues in a new
//! transaction when its own grows too old or times out: such a scan is then not one snapshot
//! (the embedded and PostgreSQL stores' scans are).
//!
//! # Unknown results
//! `commit_unknown_result` (1021) means the commit may or may not have happened. The retry
//! reads the batch's id in the same transaction that applies the batch again: found, the
//! batch was applied and the call answers `Ok`; absent, it is applied now, and should the
//! first attempt still land, the retry conflicts on the id key (every attempt reads it) and
//! runs again, and then finds it. Either way the batch is applied exactly once. If the retries
//! run out while the result is unknown (or the transaction timed out), the batch is kept and
//! settled the same way before anything else is read or written.

pub mod fake;

#[cfg(feature = "fdb")]
pub mod binding;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::offload::ClientRuntime;
use crate::poison::PoisonState;
use crate::{Condition, KeyValue, Operation, Store, StoreError, StoreLimits, WriteBatch};

/// FoundationDB error codes the store acts on (fdb's `error_definitions.h`).
pub mod codes {
    /// Transaction too old to perform reads or be committed (the 5 s MVCC window).
    pub const TRANSACTION_TOO_OLD: i32 = 1007;
    /// Transaction not committed due to a conflict with another transaction.
    pub const NOT_COMMITTED: i32 = 1020;
    /// The commit may or may not have happened.
    pub const COMMIT_UNKNOWN_RESULT: i32 = 1021;
    /// The transaction's timeout option expired.
    pub const TRANSACTION_TIMED_OUT: i32 = 1031;
    /// The transaction exceeds 10,000,000 bytes.
    pub const TRANSACTION_TOO_LARGE: i32 = 2101;
}

/// A FoundationDB error, as the store needs to see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbFailure {
    /// The error code.
    pub code: i32,
    /// Whether FoundationDB says the transaction may be retried (its `retryable` predicate).
    pub retryable: bool,
    /// Whether the transaction may have committed (its `maybe_committed` predicate).
    pub maybe_committed: bool,
}

impl FdbFailure {
    /// The failure of `code`, with FoundationDB's own classification of the codes the store
    /// meets (for the fake; the binding asks the client library).
    pub fn of_code(code: i32) -> Self {
        let maybe_committed = matches!(code, codes::COMMIT_UNKNOWN_RESULT | 1039);
        let retryable = maybe_committed
            || matches!(
                code,
                codes::TRANSACTION_TOO_OLD
                    | codes::NOT_COMMITTED
                    | 1009 // future_version
                    | 1037 // process_behind
                    | 1038 // database_locked
                    | 1040 // proxy_memory_limit_exceeded
                    | 1042 // batch_transaction_throttled
                    | 1213 // tag_throttled
            );
        Self {
            code,
            retryable,
            maybe_committed,
        }
    }
}

impl std::fmt::Display for FdbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.code {
            codes::TRANSACTION_TOO_OLD => "transaction_too_old",
            codes::NOT_COMMITTED => "not_committed",
            codes::COMMIT_UNKNOWN_RESULT => "commit_unknown_result",
            codes::TRANSACTION_TIMED_OUT => "transaction_timed_out",
            codes::TRANSACTION_TOO_LARGE => "transaction_too_large",
            _ => "error",
        };
        write!(f, "FoundationDB {name} ({})", self.code)
    }
}

/// One FoundationDB transaction: reads at its read version, writes applied in order at
/// commit.
pub trait KvTransaction: Send + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, FdbFailure>> + Send;
    /// Up to `limit` pairs of `start <= key < end`, in key order.
    fn get_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<KeyValue>, FdbFailure>> + Send;
    /// Sets `key`.
    fn set(&self, key: &[u8], value: &[u8]);
    /// Clears `key`.
    fn clear(&self, key: &[u8]);
    /// Clears `start <= key < end`.
    fn clear_range(&self, start: &[u8], end: &[u8]);
    /// Commits the writes if no key read was changed by another commit meanwhile.
    fn commit(self) -> impl Future<Output = Result<(), FdbFailure>> + Send;
}

/// A FoundationDB database: where transactions begin.
pub trait KvDatabase: Send + Sync + 'static {
    /// Its transactions.
    type Transaction: KvTransaction;
    /// A new transaction, with the 5 s timeout set.
    fn begin(&self) -> Result<Self::Transaction, FdbFailure>;
}

/// What one atomic batch may carry on FoundationDB (see the module documentation).
pub const LIMITS: StoreLimits = StoreLimits {
    max_batch_operations: 100_000,
    max_batch_bytes: 9_000_000,
    max_key_bytes: 9_000,
    max_value_bytes: 90_000,
};

/// The timeout option of every transaction (FoundationDB's own ceiling is 5 s).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts of one commit or read before it answers UNAVAILABLE.
const MAX_ATTEMPTS: u32 = 8;

/// Rows one range read asks for.
const SCAN_PAGE_ROWS: usize = 4096;

/// A batch whose commit ended with its result unknown, kept until it is resolved.
#[derive(Clone, Debug)]
struct Unresolved {
    id: Vec<u8>,
    batch: WriteBatch,
}

struct Inner<D> {
    database: D,
    prefix: Vec<u8>,
    id_prefix: u64,
    next_commit: std::sync::atomic::AtomicU64,
    /// The id of this process's last commit known to have landed (cleared by the next).
    last_id: Mutex<Option<Vec<u8>>>,
    unresolved: Mutex<Vec<Unresolved>>,
    /// Commits share it; settling batches of unknown result takes it alone.
    commit_gate: tokio::sync::RwLock<()>,
    backoff_base: Duration,
    poison: PoisonState,
}

/// The FoundationDB backend over any [`KvDatabase`]. See the module documentation.
pub struct FdbStore<D: KvDatabase> {
    runtime: ClientRuntime,
    inner: Arc<Inner<D>>,
}

impl<D: KvDatabase> std::fmt::Debug for FdbStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(context: &'static str, failure: FdbFailure) -> StoreError {
    StoreError::Unavailable {
        context,
        message: failure.to_string(),
    }
}

impl<D: KvDatabase> FdbStore<D> {
    /// A store over `database`, its keys under `prefix`.
    pub fn new(database: D, prefix: &[u8]) -> Result<Self, StoreError> {
        Self::with_backoff(database, prefix, Duration::from_millis(10))
    }

    /// As [`FdbStore::new`], with the first retry's backoff (tests make it short).
    pub fn with_backoff(database: D, prefix: &[u8], backoff: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            runtime: ClientRuntime::start("stockgrid-fdb", 1)?,
            inner: Arc::new(Inner {
                database,
                prefix: prefix.to_vec(),
                id_prefix: crate::random_salt(),
                next_commit: std::sync::atomic::AtomicU64::new(0),
                last_id: Mutex::new(None),
                unresolved: Mutex::new(Vec::new()),
                commit_gate: tokio::sync::RwLock::new(()),
                backoff_base: backoff,
                poison: PoisonState::default(),
            }),
        })
    }

    /// Makes the next `count` commits fail as a failed fsync would (the conformance suite's
    /// poisoning check; nothing else calls it).
    pub fn inject_write_failures(&self, count: u32) {
        self.inner.poison.inject_write_failures(count);
    }

    /// The database under the store (tests inject failures through it).
    pub fn database(&self) -> &D {
        &self.inner.database
    }
}

impl<D: KvDatabase> Inner<D> {
    fn data_key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + 1 + key.len());
        full.extend_from_slice(&self.prefix);
        full.push(0x00);
        full.extend_from_slice(key);
        full
    }

    fn id_key(&self, id: &[u8]) -> Vec<u8> {
        let mut full = self.prefix.clone();
        full.push(0x01);
        full.extend_from_slice(id);
        full
    }

    async fn backoff(&self, attempt: u32) {
        let base = self.backoff_base.saturating_mul(1 << attempt.min(6));
        tokio::time::sleep(base.min(Duration::from_secs(1))).await;
    }

    /// Runs a read transaction `read` until it succeeds or fails for good.
    async fn read<T, F, R>(&self, context: &'static str, mut read: R) -> Result<T, StoreError>
    where
        R: FnMut(D::Transaction) -> F,
        F: Future<Output = Result<T, FdbFailure>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.database.begin() {
                Ok(transaction) => match read(transaction).await {
                    Ok(value) => return Ok(value),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            if !failure.retryable || attempt >= MAX_ATTEMPTS {
                return Err(unavailable(context, failure));
            }
            self.backoff(attempt).await;
        }
    }

    async fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let _shared = self.gate().await?;
        let keys: Vec<Vec<u8>> = keys.iter().map(|key| self.data_key(key)).collect();
        self.read("read keys", |transaction| {
            let keys = keys.clone();
            async move {
                // All asked at once: the client sends them together.
                let reads = keys.iter().map(|key| transaction.get(key));
                futures_util::future::try_join_all(reads).await
            }
        })
        .await
    }

    /// Up to `limit` pairs in key order, page by page in one transaction; when the
    /// transaction grows too old (FoundationDB's 5 s), the scan goes on from the last key in
    /// a new one.
    async fn scan(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let _shared = self.gate().await?;
        let (first, last) = (self.data_key(&start), self.data_key(&end));
        let strip = self.prefix.len() + 1;
        let mut pairs: Vec<KeyValue> = Vec::new();
        let mut from = first;
        let mut attempt = 0;
        while pairs.len() < limit {
            attempt += 1;
            let failure = match self.database.begin() {
                Ok(transaction) => loop {
                    let page = (limit - pairs.len()).min(SCAN_PAGE_ROWS);
                    match transaction.get_range(&from, &last, page).await {
                        Ok(rows) => {
                            let full = rows.len() == page;
                            if let Some((key, _)) = rows.last() {
                                from = key.clone();
                                from.push(0);
                            }
                            pairs.extend(rows.into_iter().map(|(k, v)| (k[strip..].to_vec(), v)));
                            if !full || pairs.len() >= limit {
                                return Ok(pairs);
                            }
                        }
                        Err(failure) => break failure,
                    }
                },
                Err(failure) => failure,
            };
            // Too old or past its 5 s: the scan goes on from its last key in a new one.
            let continues = failure.retryable || failure.code == codes::TRANSACTION_TIMED_OUT;
            if !continues || attempt >= MAX_ATTEMPTS {
                return Err(unavailable("scan keys", failure));
            }
            self.backoff(attempt).await;
        }
        Ok(pairs)
    }

    /// One attempt: `Ok` once the batch is known applied, by this attempt or by an earlier
    /// one whose id it found. Every attempt reads the id: the read is also a conflict range,
    /// so an earlier attempt that lands late makes this one conflict and run again.
    async fn attempt(
        &self,
        batch: &WriteBatch,
        id: &[u8],
    ) -> Result<(), Result<FdbFailure, StoreError>> {
        let transaction = self.database.begin().map_err(Ok)?;
        let id_key = self.id_key(id);
        if transaction.get(&id_key).await.map_err(Ok)?.is_some() {
            return Ok(()); // An earlier attempt landed.
        }
        for condition in &batch.conditions {
            let (key, holds) = match condition {
                Condition::Absent(key) => {
                    let value = transaction.get(&self.data_key(key)).await.map_err(Ok)?;
                    (key, value.is_none())
                }
                Condition::Equals(key, expected) => {
                    let value = transaction.get(&self.data_key(key)).await.map_err(Ok)?;
                    (key, value.as_deref() == Some(expected.as_slice()))
                }
            };
            if !holds {
                return Err(Err(StoreError::ConditionFailed { key: key.clone() }));
            }
        }
        // FoundationDB applies a transaction's mutations in order: a range clear removes
        // what was set before it in the same batch, and not what is set after it.
        for operation in &batch.operations {
            match operation {
                Operation::Put { key, value } => transaction.set(&self.data_key(key), value),
                Operation::Delete { key } => transaction.clear(&self.data_key(key)),
                Operation::DeleteRange { start, end } => {
                    if start < end {
                        transaction.clear_range(&self.data_key(start), &self.data_key(end));
                    }
                }
            }
        }
        transaction.set(&id_key, &[]);
        let previous = self.last_id.lock().ok().and_then(|slot| slot.clone());
        if let Some(previous) = previous {
            transaction.clear(&self.id_key(&previous));
        }
        transaction.commit().await.map_err(Ok)
    }

    /// Commits `batch` under `id` until it is known applied, refused, or out of attempts.
    async fn commit_with_id(&self, batch: &WriteBatch, id: &[u8]) -> Result<(), CommitEnd> {
        let mut maybe_committed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(batch, id).await {
                Ok(()) => {
                    if let Ok(mut slot) = self.last_id.lock() {
                        *slot = Some(id.to_vec());
                    }
                    return Ok(());
                }
                Err(Err(refused)) => return Err(CommitEnd::Refused(refused)),
                Err(Ok(failure)) if failure.code == codes::TRANSACTION_TOO_LARGE => {
                    return Err(CommitEnd::Refused(StoreError::BatchTooLarge {
                        what: "transaction size on FoundationDB",
                        actual: batch.byte_size(),
                        limit: 10_000_000,
                    }));
                }
                Err(Ok(failure)) => {
                    // A timeout may cut a commit in flight: its result is unknown as well,
                    // and it is not retried (the 5 s are the transaction's whole budget), so
                    // it is resolved before the next commit.
                    if failure.maybe_committed || failure.code == codes::TRANSACTION_TIMED_OUT {
                        maybe_committed = true;
                    }
                    if !failure.retryable || attempt >= MAX_ATTEMPTS {
                        return Err(if maybe_committed {
                            CommitEnd::Unknown(failure)
                        } else {
                            CommitEnd::Refused(unavailable("commit batch", failure))
                        });
                    }
                    self.backoff(attempt).await;
                }
            }
        }
    }

    /// Settles every batch left with an unknown result: each applied exactly once (found by
    /// its id, or applied now) or refused, before anything else reads or writes.
    async fn resolve_unknown(&self) -> Result<(), StoreError> {
        let pending: Vec<Unresolved> = self
            .unresolved
            .lock()
            .map(|pending| pending.clone())
            .unwrap_or_default();
        for commit in pending {
            match self.commit_with_id(&commit.batch, &commit.id).await {
                // Settled: applied once, or refused (its condition no longer holds; had the
                // first attempt landed, this one would have found its id).
                Ok(()) | Err(CommitEnd::Refused(_)) => {
                    tracing::warn!("a commit of unknown result was resolved by its id");
                    if let Ok(mut pending) = self.unresolved.lock() {
                        pending.retain(|other| other.id != commit.id);
                    }
                }
                Err(CommitEnd::Unknown(failure)) => {
                    return Err(StoreError::Unavailable {
                        context: "resolve an earlier commit",
                        message: format!("its result is still unknown ({failure})"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Settles what is unresolved (the gate taken alone meanwhile), then holds the gate
    /// shared for the caller's read or commit.
    async fn gate(&self) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, StoreError> {
        let unresolved = self
            .unresolved
            .lock()
            .is_ok_and(|pending| !pending.is_empty());
        if unresolved {
            let _alone = self.commit_gate.write().await;
            self.resolve_unknown().await?;
        }
        Ok(self.commit_gate.read().await)
    }

    /// The batch's limits are checked once, by [`Store::commit`], before it is handed to
    /// this runtime.
    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let _shared = self.gate().await?;
        let sequence = self
            .next_commit
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = self.id_prefix.to_be_bytes().to_vec();
        id.extend_from_slice(&sequence.to_be_bytes());
        match self.commit_with_id(&batch, &id).await {
            Ok(()) => Ok(()),
            Err(CommitEnd::Refused(error)) => Err(error),
            Err(CommitEnd::Unknown(failure)) => {
                if let Ok(mut pending) = self.unresolved.lock() {
                    pending.push(Unresolved { id, batch });
                }
                Err(StoreError::OutcomeUnknown {
                    context: "commit batch",
                    message: format!(
                        "{failure}; resolved by the batch's id before the next commit"
                    ),
                })
            }
        }
    }
}

/// How a commit ended without being known applied.
enum CommitEnd {
    /// Not applied: a failed condition, a batch too large, or a failure before commit.
    Refused(StoreError),
    /// Perhaps applied: out of attempts while the result was unknown.
    Unknown(FdbFailure),
}

impl<D: KvDatabase> Store for FdbStore<D> {
    fn backend_name(&self) -> &'static str {
        "foundationdb"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn limits(&self) -> StoreLimits {
        LIMITS
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut values = self.get_many(&[key])?;
        Ok(values.pop().flatten())
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|key| key.to_vec()).collect();
        let inner = Arc::clone(&self.inner);
        self.runtime
            .run("read keys", async move { inner.get_many(keys).await })
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let (start, end) = (start.to_vec(), end.to_vec());
        let inner = Arc::clone(&self.inner);
        self.runtime.run(
            "scan keys",
            async move { inner.scan(start, end, limit).await },
        )
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.inner.poison.check()?;
        batch.check_limits(&LIMITS)?;
        if self.inner.poison.take_injected_failure() {
            return Err(self
                .inner
                .poison
                .poison("injected write failure".to_owned()));
        }
        let inner = Arc::clone(&self.inner);
        self.runtime
            .run("commit batch", async move { inner.commit(batch).await })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.poison.check()
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
