//! [`PostgresStore`]: the store the nodes of a small cluster share, on PostgreSQL (15 or
//! later), behind the `postgres` feature.
//!
//! # Layout
//! One table of ordered byte keys, `<schema>.kv (k bytea primary key, v bytea)`: bytea
//! compares as unsigned bytes, then by length, which is the order of the [`Store`] contract,
//! so a range scan is an index range scan in key order. A second table,
//! `<schema>.commits (id bytea primary key, at timestamptz)`, holds the id of every commit,
//! written in the commit's own transaction: a commit whose outcome was lost is resolved by its
//! id (below). Ids older than [`COMMIT_ID_RETENTION`] are trimmed.
//!
//! # Client
//! tokio-postgres, pooled by deadpool-postgres. tokio-postgres speaks the extended protocol
//! with prepared statements and pipelines statements sent together on one connection, so a
//! commit's writes go out in one round trip; deadpool keeps a bounded set of connections,
//! drops a closed one and reconnects on demand, which is how the store recovers by itself when
//! the database returns. A batch's rows travel as two bytea arrays through `unnest` in one
//! `INSERT .. ON CONFLICT DO UPDATE` (and one `DELETE .. = ANY`): binary COPY would be faster
//! for bulk loads but cannot upsert without a staging table and two more statements, and group
//! commits are upserts. The pool and its connections run on a small runtime of the store's
//! own; the synchronous [`Store`] calls wait for it without holding a worker of the caller's
//! runtime ([`crate::offload::block_off_workers`]).
//!
//! # Conditions and isolation
//! A commit reads its conditions in the transaction that writes, and locks the rows it reads
//! until it ends: `FOR UPDATE` when the batch writes them too, `FOR SHARE` otherwise. Two
//! writers racing on a fence (`Equals(epoch, 7)` against a claim that moves it to 8) cannot
//! both commit, and their order is the order of the fence: the claim waits for a fenced writer
//! in flight, and a writer after the claim finds the row changed since its snapshot (a
//! serialization failure, retried with backoff from the start, conditions read again, so it
//! then fails its condition and writes nothing). Row locks need no more than REPEATABLE READ,
//! which such commits run at; a batch with an `Absent` condition or a range delete runs at
//! SERIALIZABLE, whose predicate locks hold what row locks cannot (a key's absence, a range's
//! keys). SERIALIZABLE alone would not do for fences: a writer that read epoch 7 may be ordered
//! *before* the claim to 8 and land after the new owner has read the partition; and its
//! predicate locks on a few dozen condition rows escalate to the whole table, so concurrent
//! fenced commits fail each other (a one-member grid then ingested 0.28x of a single node;
//! 0.86x with row locks, docs/measurements.md). A writer stopped in the middle of its
//! transaction holds the claim up (each try fails after `lock_timeout`, and the claimer tries
//! again) for at most the server's `idle_in_transaction_session_timeout` (twice the operation
//! timeout), after which the server ends it and the next try of the claim completes; the
//! stopped writer, resumed, finds its condition moved. Every
//! connection sets `lock_timeout`, `statement_timeout` and
//! `idle_in_transaction_session_timeout`, so a stalled writer holding row locks blocks others
//! for at most the lock timeout and is itself cut off by the server; every call is also bounded
//! on the client side by the operation timeout, after which it answers
//! [`StoreError::Unavailable`].
//!
//! # Lost commits and outages
//! When the answer to COMMIT is lost, the commit inserts its id again on a fresh connection:
//! the insert waits for the lost transaction if the server is still finishing it, then fails
//! on the unique key if it committed (the call answers `Ok`) or succeeds and is rolled back
//! (UNAVAILABLE: nothing was applied). When even that cannot be asked, the id is kept, and
//! every later read and commit settles it first, alone, so nothing reads or writes past a
//! commit that may yet land. A timeout or a broken connection marks the database unreachable:
//! calls are then refused at once, and a probe clears the mark when the database answers.
//!
//! # Passwords
//! A URL that carries a password is refused (it would show in the process list and in logs):
//! the password comes from `PGPASSWORD` or from a file ([`Password`]), and the store's `Debug`
//! and every error leave it out.

#[cfg(feature = "postgres-testing")]
pub mod testing;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};

use crate::batch::{ResolvedWrites, resolve};
use crate::offload::ClientRuntime;
use crate::poison::PoisonState;
use crate::{Condition, KeyValue, Operation, Store, StoreError, StoreLimits, WriteBatch};

/// How long a commit's id is kept: a commit whose outcome is unknown must be resolved within
/// half of it, or the store poisons itself rather than guess.
pub const COMMIT_ID_RETENTION: Duration = Duration::from_secs(3600);

/// The stored keys of each range a batch deletes, by (start, end).
type RangeKeys = HashMap<(Vec<u8>, Vec<u8>), Vec<Vec<u8>>>;

/// Rows a scan asks for in one statement.
const SCAN_PAGE_ROWS: usize = 4096;

/// Keys of one `= ANY` read.
const READ_CHUNK_KEYS: usize = 8192;

/// Attempts of a commit that lost a serialization race, and of a call whose connection broke.
const MAX_ATTEMPTS: u32 = 6;

/// How often the database is probed while it is marked unreachable.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Commits between two trims of old commit ids.
const TRIM_EVERY_COMMITS: u64 = 4096;

/// What one atomic batch may carry: a B-tree index entry must fit a third of a page (about
/// 2.7 KB), so keys stay under 2,000 bytes; batches stay well under the protocol's 1 GB
/// message and within what one transaction writes in the operation timeout.
pub const LIMITS: StoreLimits = StoreLimits {
    max_batch_operations: 200_000,
    max_batch_bytes: 64 << 20,
    max_key_bytes: 2000,
    max_value_bytes: 16 << 20,
};

/// Where the password of the database user comes from (never the URL).
#[derive(Clone, Default)]
pub enum Password {
    /// No password (trust or peer authentication).
    #[default]
    None,
    /// The value itself, read from the environment or a file by the caller.
    Given(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::None => f.write_str("None"),
            Password::Given(_) => f.write_str("Given(<redacted>)"),
        }
    }
}

impl Password {
    /// The first line of `file` if one is given (an explicit setting wins), else
    /// `PGPASSWORD` if set, else none.
    pub fn from_environment_or_file(file: Option<&Path>) -> Result<Self, StoreError> {
        let Some(file) = file else {
            return Ok(match std::env::var("PGPASSWORD") {
                Ok(value) => Password::Given(value),
                Err(_) => Password::None,
            });
        };
        let text = std::fs::read_to_string(file).map_err(|e| StoreError::Backend {
            context: "read the store password file",
            message: format!("{}: {e}", file.display()),
        })?;
        let value = text.lines().next().unwrap_or_default().to_owned();
        if value.is_empty() {
            return Err(StoreError::Backend {
                context: "read the store password file",
                message: format!("{}: the first line is empty", file.display()),
            });
        }
        Ok(Password::Given(value))
    }
}

/// How to reach the database and how long to wait for it.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Host, port, user and database, parsed from a `postgres://` URL (no password).
    pub connection: tokio_postgres::Config,
    /// The password, from the environment or a file.
    pub password: Password,
    /// The schema holding the store's tables (one store per schema).
    pub schema: String,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// The longest any call waits (connect, read, write, commit): after it, UNAVAILABLE.
    pub operation_timeout: Duration,
    /// The longest a statement waits for a row lock held by another writer.
    pub lock_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("target", &describe_target(&self.connection))
            .field("password", &self.password)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("operation_timeout", &self.operation_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
}

impl PostgresOptions {
    /// Options for `url` (`postgres://USER@HOST:PORT/DATABASE`) with the defaults: schema
    /// `stockgrid`, 8 connections, a 5 s operation timeout and a 2 s lock timeout. A URL
    /// with a password is refused.
    pub fn from_url(url: &str, password: Password) -> Result<Self, StoreError> {
        let invalid = |message: String| StoreError::Backend {
            context: "parse the store URL",
            message,
        };
        let connection: tokio_postgres::Config = url
            .parse()
            .map_err(|e| invalid(format!("not a PostgreSQL URL ({e})")))?;
        if connection.get_password().is_some() {
            return Err(invalid(
                "the URL carries a password, which would show in the process list and in logs; \
                 remove it and give it in PGPASSWORD or a password file"
                    .to_owned(),
            ));
        }
        if connection.get_user().is_none() {
            return Err(invalid(
                "the URL names no user (postgres://USER@HOST:PORT/DATABASE)".to_owned(),
            ));
        }
        Ok(Self {
            connection,
            password,
            schema: "stockgrid".to_owned(),
            pool_size: 8,
            operation_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
        })
    }
}

/// "host:port/database" of a connection, for logs (never the password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("(user's database)");
    format!("{host}:{port}/{database}")
}

/// The SQL of the store, with its schema's name in place.
struct Statements {
    get: String,
    get_many: String,
    share_conditions: String,
    lock_conditions: String,
    scan: String,
    scan_keys: String,
    delete: String,
    upsert: String,
    record_commit: String,
    trim_commits: String,
    sizes: String,
    live_bytes: String,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let kv = format!("\"{schema}\".kv");
        let commits = format!("\"{schema}\".commits");
        Self {
            get: format!("SELECT v FROM {kv} WHERE k = $1"),
            get_many: format!("SELECT k, v FROM {kv} WHERE k = ANY($1::bytea[])"),
            share_conditions: format!(
                "SELECT k, v FROM {kv} WHERE k = ANY($1::bytea[]) ORDER BY k FOR SHARE"
            ),
            lock_conditions: format!(
                "SELECT k, v FROM {kv} WHERE k = ANY($1::bytea[]) ORDER BY k FOR UPDATE"
            ),
            scan: format!(
                "SELECT k, v FROM {kv} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3::bigint"
            ),
            scan_keys: format!("SELECT k FROM {kv} WHERE k >= $1 AND k < $2 ORDER BY k"),
            delete: format!("DELETE FROM {kv} WHERE k = ANY($1::bytea[])"),
            upsert: format!(
                "INSERT INTO {kv} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            record_commit: format!("INSERT INTO {commits} (id) VALUES ($1)"),
            trim_commits: format!(
                "DELETE FROM {commits} WHERE at < now() - make_interval(secs => $1::float8)"
            ),
            sizes: format!(
                "SELECT (pg_total_relation_size('{kv}') + pg_total_relation_size('{commits}'))::bigint"
            ),
            live_bytes: format!(
                "SELECT coalesce(sum(octet_length(k) + octet_length(v)), 0)::bigint FROM {kv}"
            ),
        }
    }

    fn schema(schema: &str) -> String {
        format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS \"{schema}\".kv (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE IF NOT EXISTS \"{schema}\".commits (
                 id bytea PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());"
        )
    }
}

/// A batch made ready for its attempts: its operations folded into net writes once, unless a
/// range delete needs the stored keys of its range (read in each attempt's transaction).
enum CommitPlan {
    /// Conditions to check, and the net writes.
    Resolved {
        conditions: Vec<Condition>,
        writes: ResolvedWrites,
    },
    /// A batch with range deletes, resolved in each attempt.
    PerAttempt(WriteBatch),
}

impl CommitPlan {
    fn of(batch: WriteBatch) -> Result<Self, StoreError> {
        let has_ranges = batch
            .operations
            .iter()
            .any(|operation| matches!(operation, Operation::DeleteRange { .. }));
        if has_ranges {
            return Ok(CommitPlan::PerAttempt(batch));
        }
        let WriteBatch {
            conditions,
            operations,
        } = batch;
        let unconditional = WriteBatch {
            conditions: Vec::new(),
            operations,
        };
        // Without range deletes and conditions, nothing is read.
        let writes = resolve(unconditional, &LIMITS, |_| Ok(None), |_, _| Ok(Vec::new()))?;
        Ok(CommitPlan::Resolved { conditions, writes })
    }

    /// The condition keys the batch also writes (locked for update from the start: two
    /// writers upgrading share locks on one row would wait for each other).
    fn written_condition_keys(&self) -> std::collections::HashSet<&[u8]> {
        let conditioned: std::collections::HashSet<&[u8]> = self
            .conditions()
            .iter()
            .map(|condition| match condition {
                Condition::Absent(key) | Condition::Equals(key, _) => key.as_slice(),
            })
            .collect();
        if conditioned.is_empty() {
            return conditioned;
        }
        match self {
            CommitPlan::Resolved { writes, .. } => writes
                .iter()
                .map(|(key, _)| key.as_slice())
                .filter(|key| conditioned.contains(key))
                .collect(),
            CommitPlan::PerAttempt(batch) => conditioned
                .into_iter()
                .filter(|&key| {
                    batch.operations.iter().any(|operation| match operation {
                        Operation::Put { key: written, .. }
                        | Operation::Delete { key: written } => written.as_slice() == key,
                        Operation::DeleteRange { start, end } => {
                            key >= start.as_slice() && key < end.as_slice()
                        }
                    })
                })
                .collect(),
        }
    }

    fn conditions(&self) -> &[Condition] {
        match self {
            CommitPlan::Resolved { conditions, .. } => conditions,
            CommitPlan::PerAttempt(batch) => &batch.conditions,
        }
    }

    fn range_deletes(&self) -> impl Iterator<Item = &Operation> {
        let operations: &[Operation] = match self {
            CommitPlan::Resolved { .. } => &[],
            CommitPlan::PerAttempt(batch) => &batch.operations,
        };
        operations.iter()
    }
}

/// Checks `conditions` against the values read in the transaction (`current`).
fn check_conditions(
    conditions: &[Condition],
    current: &HashMap<Vec<u8>, Vec<u8>>,
) -> Result<(), StoreError> {
    for condition in conditions {
        let (key, holds) = match condition {
            Condition::Absent(key) => (key, !current.contains_key(key)),
            Condition::Equals(key, expected) => (key, current.get(key) == Some(expected)),
        };
        if !holds {
            return Err(StoreError::ConditionFailed { key: key.clone() });
        }
    }
    Ok(())
}

/// A commit whose outcome was lost, not yet resolved.
#[derive(Clone, Debug)]
struct UnresolvedCommit {
    id: Vec<u8>,
    since: Instant,
}

/// What the store's own runtime shares with the calls it runs.
struct Shared {
    pool: Pool,
    statements: Statements,
    operation_timeout: Duration,
    poison: PoisonState,
    /// The commit whose outcome is unknown, resolved before any other commit is written.
    unresolved: Mutex<Vec<UnresolvedCommit>>,
    /// Commits share it; resolving an unknown outcome takes it alone, so that no commit
    /// starts before the outcome is known.
    commit_gate: tokio::sync::RwLock<()>,
    /// A fault armed by a test: lose the answer of the next commit, after it was applied
    /// (`true`) or before COMMIT was sent (`false`).
    lost_answer: Mutex<Option<bool>>,
    /// A fault armed by a test: the next commit stops after reading its conditions, its
    /// transaction open, until this is answered or dropped.
    stalled_commit: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// A fault armed by a test: this many resolutions by id fail as if the database were
    /// unreachable.
    failing_resolutions: std::sync::atomic::AtomicU32,
    id_prefix: u64,
    next_commit: AtomicU64,
    target: String,
    /// Set when calls stopped reaching the database: calls then fail at once, until the
    /// probe started with it gets an answer.
    unreachable: AtomicBool,
    /// The store itself, for the probe task.
    me: Weak<Shared>,
}

/// The PostgreSQL backend. See the module documentation.
pub struct PostgresStore {
    runtime: ClientRuntime,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt from the start (a serialization race, a broken connection
    /// before anything was committed).
    Retry(StoreError),
    /// The database could not be reached (no connection, a broken one, a server shutting
    /// down): worth another attempt, and if the last one fails too, the store is marked
    /// unreachable until a background probe reaches it again.
    Unreachable(StoreError),
    /// Final.
    Fail(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Failure::Retry(error) | Failure::Unreachable(error) | Failure::Fail(error) => error,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Fail(error)
    }
}

/// The class of a PostgreSQL error (DESIGN.md "Storage").
fn classify(context: &'static str, error: &tokio_postgres::Error) -> Failure {
    let message = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    let unavailable = StoreError::Unavailable {
        context,
        message: message.clone(),
    };
    let Some(code) = error.code() else {
        // No SQL state: the connection closed, broke or timed out (the database is away), or
        // the client itself refused something (a type it cannot encode: a fault of ours,
        // which must not mark the database down).
        let connection_failed = error.is_closed()
            || std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
            || message.starts_with("timeout");
        return if connection_failed {
            Failure::Unreachable(unavailable)
        } else {
            Failure::Fail(StoreError::Backend { context, message })
        };
    };
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        return Failure::Retry(unavailable);
    }
    let class = &code.code()[..2];
    match class {
        // Connection exceptions, shutdowns, a server starting: a fresh connection may do.
        "08" | "57" if *code != SqlState::QUERY_CANCELED => Failure::Unreachable(unavailable),
        // Statement or lock timeout, resources (disk full, too many connections), locks.
        "57" | "53" | "55" => Failure::Fail(unavailable),
        _ => Failure::Fail(StoreError::Backend { context, message }),
    }
}

/// Backoff before attempt `attempt` (1-based) of a retried call: 5 ms doubling, jittered.
fn backoff(attempt: u32, salt: u64) -> Duration {
    let base = 5u64 << attempt.min(7);
    let jitter = (salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % base.max(1);
    Duration::from_millis(base / 2 + jitter / 2)
}

/// A pooled connection that is thrown away, not reused, unless the call using it finished
/// cleanly: a connection left mid-transaction or stuck on a hung server must not serve the
/// next call.
struct Checkout {
    client: Option<Object>,
    healthy: bool,
}

impl Checkout {
    fn client(&mut self) -> &mut Object {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !self.healthy
        {
            drop(Object::take(client));
        }
    }
}

impl Shared {
    /// A pooled connection, refused at once while the database is marked unreachable (a
    /// node then answers UNAVAILABLE without waiting out a timeout per call).
    async fn checkout(&self, context: &'static str) -> Result<Checkout, Failure> {
        if self.unreachable.load(Ordering::Acquire) {
            return Err(Failure::Fail(StoreError::Unavailable {
                context,
                message: "the database is unreachable; reconnecting in the background".to_owned(),
            }));
        }
        self.connect_pooled(context).await
    }

    async fn connect_pooled(&self, context: &'static str) -> Result<Checkout, Failure> {
        match self.pool.get().await {
            Ok(client) => Ok(Checkout {
                client: Some(client),
                healthy: false,
            }),
            // A refusal by the server (a wrong password, a missing database) is final; no
            // answer at all is the database being unreachable.
            Err(deadpool_postgres::PoolError::Backend(error)) => match classify(context, &error) {
                Failure::Fail(error) => Err(Failure::Fail(error)),
                other => Err(Failure::Unreachable(other.into_error())),
            },
            Err(other) => Err(Failure::Unreachable(StoreError::Unavailable {
                context,
                message: other.to_string(),
            })),
        }
    }

    /// Marks the database unreachable and starts the probe that clears the mark once it
    /// answers again (on the store's own runtime).
    fn mark_unreachable(&self, cause: &str) {
        if self.unreachable.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(target = %self.target, %cause, "the database is unreachable; refusing store calls until it answers");
        if let Some(shared) = self.me.upgrade() {
            tokio::spawn(async move { shared.probe_until_reachable().await });
        }
    }

    async fn probe_until_reachable(&self) {
        let started = Instant::now();
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let answered = tokio::time::timeout(self.operation_timeout, async {
                let mut checkout = self.connect_pooled("probe the database").await.ok()?;
                checkout.client().simple_query("SELECT 1").await.ok()?;
                checkout.healthy = true;
                Some(())
            })
            .await;
            if let Ok(Some(())) = answered {
                self.unreachable.store(false, Ordering::Release);
                tracing::info!(
                    target = %self.target,
                    down_ms = started.elapsed().as_millis() as u64,
                    "the database answers again"
                );
                return;
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been tried
    /// [`MAX_ATTEMPTS`] times.
    async fn with_retries<T, F, A>(&self, mut attempt: A) -> Result<T, StoreError>
    where
        A: FnMut() -> F,
        F: Future<Output = Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Fail(error)) => return Err(error),
                Err(Failure::Retry(error)) if tries >= MAX_ATTEMPTS => return Err(error),
                Err(Failure::Unreachable(error)) if tries >= MAX_ATTEMPTS => {
                    self.mark_unreachable(&error.to_string());
                    return Err(error);
                }
                Err(Failure::Retry(_) | Failure::Unreachable(_)) => {
                    tokio::time::sleep(backoff(tries, self.next_commit.load(Ordering::Relaxed)))
                        .await;
                }
            }
        }
    }

    async fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let _shared = self.gate(Instant::now() + self.operation_timeout).await?;
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(READ_CHUNK_KEYS) {
            let rows = self
                .with_retries(|| async {
                    let mut checkout = self.checkout("read keys").await?;
                    let client = checkout.client();
                    let statement = client
                        .prepare_cached(&self.statements.get_many)
                        .await
                        .map_err(|e| classify("read keys", &e))?;
                    let keys: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                    let rows = client
                        .query(&statement, &[&keys])
                        .await
                        .map_err(|e| classify("read keys", &e))?;
                    checkout.healthy = true;
                    Ok(rows)
                })
                .await?;
            for row in rows {
                found.insert(row.get(0), row.get(1));
            }
        }
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    async fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        let _shared = self.gate(Instant::now() + self.operation_timeout).await?;
        self.with_retries(|| async {
            let mut checkout = self.checkout("read key").await?;
            let client = checkout.client();
            let statement = client
                .prepare_cached(&self.statements.get)
                .await
                .map_err(|e| classify("read key", &e))?;
            let row = client
                .query_opt(&statement, &[&key.as_slice()])
                .await
                .map_err(|e| classify("read key", &e))?;
            checkout.healthy = true;
            Ok(row.map(|row| row.get(0)))
        })
        .await
    }

    /// Up to `limit` pairs of `start <= key < end` in key order, page by page in one
    /// REPEATABLE READ transaction, so that a long scan sees one consistent state.
    async fn scan(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let _shared = self.gate(Instant::now() + self.operation_timeout).await?;
        self.with_retries(|| async {
            let context = "scan keys";
            let mut checkout = self.checkout(context).await?;
            let client = checkout.client();
            let statement = client
                .prepare_cached(&self.statements.scan)
                .await
                .map_err(|e| classify(context, &e))?;
            let transaction = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| classify(context, &e))?;
            let mut pairs: Vec<KeyValue> = Vec::new();
            let mut from = start.clone();
            loop {
                let page = (limit - pairs.len()).min(SCAN_PAGE_ROWS);
                let rows = transaction
                    .query(
                        &statement,
                        &[&from.as_slice(), &end.as_slice(), &(page as i64)],
                    )
                    .await
                    .map_err(|e| classify(context, &e))?;
                let full = rows.len() == page;
                pairs.extend(rows.into_iter().map(|row| (row.get(0), row.get(1))));
                if !full || pairs.len() >= limit {
                    break;
                }
                from = pairs.last().map(|(key, _)| key.clone()).unwrap_or_default();
                from.push(0);
            }
            transaction
                .commit()
                .await
                .map_err(|e| classify(context, &e))?;
            checkout.healthy = true;
            Ok(pairs)
        })
        .await
    }

    /// One try of a commit: conditions read and writes made in one SERIALIZABLE transaction
    /// that also records `id`. `committing` is set just before COMMIT is sent: after that, a
    /// failure leaves the outcome unknown.
    async fn try_commit(
        &self,
        plan: &CommitPlan,
        id: &[u8],
        committing: &mut bool,
    ) -> Result<(), Failure> {
        let context = "commit batch";
        let mut checkout = self.checkout(context).await?;
        let client = checkout.client();
        let fail = |e: tokio_postgres::Error| classify(context, &e);
        let statements = &self.statements;
        // Equals conditions are held by row locks (below), which need no more than REPEATABLE
        // READ: a row changed since the snapshot fails its lock with a serialization failure,
        // retried. SERIALIZABLE is kept for what row locks cannot hold: the absence of a key
        // and the keys of a deleted range. (Under SERIALIZABLE, reading a few dozen condition
        // rows escalates its predicate locks to the whole table, and concurrent fenced commits
        // then fail each other: measured, a one-member grid ingested 0.28x of a single node.)
        let needs_serializable = plan
            .conditions()
            .iter()
            .any(|condition| matches!(condition, Condition::Absent(_)))
            || plan.range_deletes().next().is_some();
        let isolation = if needs_serializable {
            IsolationLevel::Serializable
        } else {
            IsolationLevel::RepeatableRead
        };
        let transaction = client
            .build_transaction()
            .isolation_level(isolation)
            .start()
            .await
            .map_err(fail)?;
        // What the batch's conditions and range deletes need to know, read in the transaction.
        // Rows read for conditions are locked: a writer that moves one (a claim moving a
        // partition's epoch) waits for this transaction to end, so that it cannot be ordered
        // before a batch that read the old value and lands after it. Rows the batch writes
        // too are locked for update at once, the others shared.
        let written = plan.written_condition_keys();
        let (locked_keys, shared_keys): (Vec<&[u8]>, Vec<&[u8]>) = plan
            .conditions()
            .iter()
            .map(|condition| match condition {
                Condition::Absent(key) | Condition::Equals(key, _) => key.as_slice(),
            })
            .partition(|key| written.contains(key));
        let mut current: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for (keys, sql) in [
            (&locked_keys, &statements.lock_conditions),
            (&shared_keys, &statements.share_conditions),
        ] {
            if keys.is_empty() {
                continue;
            }
            let statement = transaction.prepare_cached(sql).await.map_err(fail)?;
            for row in transaction.query(&statement, &[keys]).await.map_err(fail)? {
                current.insert(row.get(0), row.get(1));
            }
        }
        let stall = self
            .stalled_commit
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(stall) = stall {
            // Blocking on purpose: the call is frozen as in a stopped process, past its own
            // deadline (a timer cannot end a poll that does not return).
            let _ = stall.recv();
        }
        let mut ranges: RangeKeys = HashMap::new();
        for operation in plan.range_deletes() {
            if let Operation::DeleteRange { start, end } = operation
                && start < end
                && !ranges.contains_key(&(start.clone(), end.clone()))
            {
                let statement = transaction
                    .prepare_cached(&statements.scan_keys)
                    .await
                    .map_err(fail)?;
                let keys = transaction
                    .query(&statement, &[&start.as_slice(), &end.as_slice()])
                    .await
                    .map_err(fail)?
                    .into_iter()
                    .map(|row| row.get(0))
                    .collect();
                ranges.insert((start.clone(), end.clone()), keys);
            }
        }
        let resolved = match plan {
            CommitPlan::Resolved { conditions, writes } => {
                check_conditions(conditions, &current).map(|()| std::borrow::Cow::Borrowed(writes))
            }
            CommitPlan::PerAttempt(batch) => resolve(
                batch.clone(),
                &LIMITS,
                |key| Ok(current.get(key).cloned()),
                |start, end| {
                    Ok(ranges
                        .get(&(start.to_vec(), end.to_vec()))
                        .cloned()
                        .unwrap_or_default())
                },
            )
            .map(std::borrow::Cow::Owned),
        };
        let writes = match resolved {
            Ok(writes) => writes,
            Err(error) => {
                // A failed condition is an answer, not a fault: the connection stays.
                transaction.rollback().await.map_err(fail)?;
                checkout.healthy = true;
                return Err(Failure::Fail(error));
            }
        };
        let mut deleted: Vec<&[u8]> = Vec::new();
        let mut put_keys: Vec<&[u8]> = Vec::new();
        let mut put_values: Vec<&[u8]> = Vec::new();
        // In key order, so that concurrent commits touching the same rows lock them in the
        // same order and never deadlock.
        let mut ordered: Vec<&(Vec<u8>, Option<Vec<u8>>)> = writes.iter().collect();
        ordered.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in ordered {
            match value {
                Some(value) => {
                    put_keys.push(key);
                    put_values.push(value);
                }
                None => deleted.push(key),
            }
        }
        let delete = transaction
            .prepare_cached(&statements.delete)
            .await
            .map_err(fail)?;
        let upsert = transaction
            .prepare_cached(&statements.upsert)
            .await
            .map_err(fail)?;
        let record = transaction
            .prepare_cached(&statements.record_commit)
            .await
            .map_err(fail)?;
        // Sent together: tokio-postgres pipelines them on the connection.
        let deletes = async {
            if deleted.is_empty() {
                Ok(0)
            } else {
                transaction.execute(&delete, &[&deleted]).await
            }
        };
        let puts = async {
            if put_keys.is_empty() {
                Ok(0)
            } else {
                transaction
                    .execute(&upsert, &[&put_keys, &put_values])
                    .await
            }
        };
        let recorded = async { transaction.execute(&record, &[&id]).await };
        if let Err(error) = futures_util::future::try_join3(deletes, puts, recorded).await {
            if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                // Only the id can collide (the upsert never does): an earlier attempt of this
                // very batch landed.
                transaction.rollback().await.map_err(fail)?;
                checkout.healthy = true;
                return Ok(());
            }
            return Err(fail(error));
        }
        let lost_answer = self
            .lost_answer
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        *committing = true;
        if lost_answer == Some(false) {
            // The test fault: the connection "breaks" as COMMIT is sent; the open transaction
            // goes with it and the server rolls it back.
            return Err(Failure::Fail(StoreError::Unavailable {
                context,
                message: "injected: the connection broke as COMMIT was sent".to_owned(),
            }));
        }
        if let Err(error) = transaction.commit().await {
            let rolled_back = error.code().is_some_and(|code| {
                *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
            });
            if rolled_back {
                // A serialization failure found at commit time: the server rolled the
                // transaction back, so nothing was applied and the outcome is known. Any other
                // error (a backend terminated after committing locally, say) leaves it
                // unknown.
                *committing = false;
            }
            return Err(fail(error));
        }
        checkout.healthy = true;
        if lost_answer == Some(true) {
            return Err(Failure::Fail(StoreError::Unavailable {
                context,
                message: "injected: the answer to COMMIT was lost".to_owned(),
            }));
        }
        Ok(())
    }

    /// Whether the commit `id` was applied: inserting the id waits for a transaction that
    /// still holds it (the lost commit, if the server is still finishing it), then fails
    /// with a unique violation if that transaction committed and succeeds if it did not. The
    /// probe is rolled back.
    async fn was_applied(&self, id: &[u8]) -> Result<bool, Failure> {
        let context = "resolve a commit of unknown outcome";
        let injected = self
            .failing_resolutions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(Failure::Fail(StoreError::Unavailable {
                context,
                message: "injected: the database did not answer".to_owned(),
            }));
        }
        let mut checkout = self.checkout(context).await?;
        let client = checkout.client();
        let transaction = client
            .transaction()
            .await
            .map_err(|e| classify(context, &e))?;
        let statement = transaction
            .prepare_cached(&self.statements.record_commit)
            .await
            .map_err(|e| classify(context, &e))?;
        let applied = match transaction.execute(&statement, &[&id]).await {
            Ok(_) => false,
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => true,
            Err(error) => return Err(classify(context, &error)),
        };
        transaction
            .rollback()
            .await
            .map_err(|e| classify(context, &e))?;
        checkout.healthy = true;
        Ok(applied)
    }

    fn has_unresolved(&self) -> bool {
        self.unresolved
            .lock()
            .is_ok_and(|pending| !pending.is_empty())
    }

    fn forget_unresolved(&self, id: &[u8]) {
        if let Ok(mut pending) = self.unresolved.lock() {
            pending.retain(|commit| commit.id != id);
        }
    }

    /// Resolves every commit of unknown outcome, by its id, before anything else reads or
    /// writes: `Ok` once none is left (the caller holds the gate alone). A read after a lost
    /// commit must see it if it landed, or a retried event could be applied twice.
    async fn resolve_unknown(&self, deadline: Instant) -> Result<(), StoreError> {
        let pending: Vec<UnresolvedCommit> = self
            .unresolved
            .lock()
            .map(|pending| pending.clone())
            .unwrap_or_default();
        for commit in pending {
            if commit.since.elapsed() > COMMIT_ID_RETENTION / 2 {
                return Err(self.poison.poison(format!(
                    "the outcome of a commit stayed unknown for {} s, longer than its id is kept",
                    commit.since.elapsed().as_secs()
                )));
            }
            let resolved = tokio::time::timeout_at(
                deadline.into(),
                self.with_retries(|| self.was_applied(&commit.id)),
            )
            .await;
            match resolved {
                Ok(Ok(applied)) => {
                    tracing::warn!(
                        applied,
                        "a commit of unknown outcome was resolved by its id"
                    );
                    self.forget_unresolved(&commit.id);
                }
                Ok(Err(error)) => {
                    return Err(StoreError::Unavailable {
                        context: "resolve an earlier commit",
                        message: format!("its outcome is still unknown: {error}"),
                    });
                }
                Err(_) => {
                    return Err(StoreError::Unavailable {
                        context: "resolve an earlier commit",
                        message:
                            "its outcome is still unknown: the database did not answer in time"
                                .to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Resolves what is unresolved (the gate taken alone meanwhile), then holds the gate
    /// shared for the caller's read or commit.
    async fn gate(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, StoreError> {
        if self.has_unresolved() {
            let _alone = self.commit_gate.write().await;
            self.resolve_unknown(deadline).await?;
        }
        Ok(self.commit_gate.read().await)
    }

    /// The batch's poison and limit checks are made once, by [`Store::commit`], before it
    /// is handed to this runtime (and the limits once more by `resolve`, as every backend's).
    async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        // One deadline bounds the whole call: resolving earlier commits, the attempts, and
        // settling this one's outcome if its answer is lost.
        let deadline = Instant::now() + self.operation_timeout;
        // An earlier commit of unknown outcome is resolved before anything else is written.
        let _shared = self.gate(deadline).await?;
        let plan = CommitPlan::of(batch)?;
        let sequence = self.next_commit.fetch_add(1, Ordering::Relaxed);
        let mut id = self.id_prefix.to_be_bytes().to_vec();
        id.extend_from_slice(&sequence.to_be_bytes());
        let mut committing = false;
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            let attempt = tokio::time::timeout_at(
                deadline.into(),
                self.try_commit(&plan, &id, &mut committing),
            )
            .await;
            match attempt {
                Ok(Ok(())) => break Ok(()),
                Ok(Err(failure)) if !committing => match failure {
                    Failure::Retry(error) if tries >= MAX_ATTEMPTS => break Err(error),
                    Failure::Unreachable(error) if tries >= MAX_ATTEMPTS => {
                        self.mark_unreachable(&error.to_string());
                        break Err(error);
                    }
                    Failure::Retry(_) | Failure::Unreachable(_) => {
                        tokio::time::sleep(backoff(tries, sequence)).await;
                    }
                    Failure::Fail(error) => break Err(error),
                },
                Err(_) if !committing => {
                    let message =
                        format!("no answer within {} ms", self.operation_timeout.as_millis());
                    self.mark_unreachable(&message);
                    break Err(StoreError::Unavailable {
                        context: "commit batch",
                        message,
                    });
                }
                // COMMIT was sent and its answer lost: applied or not, only the id can say.
                Ok(Err(failure)) => {
                    break self
                        .settle_lost_commit(id, failure.into_error().to_string(), deadline)
                        .await;
                }
                Err(_) => {
                    let cause = "the answer to COMMIT timed out";
                    let settled = self
                        .settle_lost_commit(id, cause.to_owned(), deadline)
                        .await;
                    if settled.is_err() {
                        self.mark_unreachable(cause);
                    }
                    break settled;
                }
            }
        };
        if outcome.is_ok() && sequence % TRIM_EVERY_COMMITS == TRIM_EVERY_COMMITS - 1 {
            self.trim_commit_ids().await;
        }
        outcome
    }

    /// Resolves a commit whose COMMIT answer was lost: `Ok` if it was applied, UNAVAILABLE
    /// if it was not (nothing of it is in the store), OUTCOME UNKNOWN if the database cannot
    /// say yet (the id is kept and resolved before the next commit).
    async fn settle_lost_commit(
        &self,
        id: Vec<u8>,
        cause: String,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        tracing::warn!(%cause, "commit outcome unknown; resolving it by the batch's id");
        if let Ok(mut pending) = self.unresolved.lock() {
            pending.push(UnresolvedCommit {
                id: id.clone(),
                since: Instant::now(),
            });
        }
        let applied =
            tokio::time::timeout_at(deadline.into(), self.with_retries(|| self.was_applied(&id)))
                .await;
        match applied {
            Ok(Ok(applied)) => {
                self.forget_unresolved(&id);
                if applied {
                    Ok(())
                } else {
                    Err(StoreError::Unavailable {
                        context: "commit batch",
                        message: format!("the commit was lost and not applied ({cause})"),
                    })
                }
            }
            Ok(Err(error)) => Err(StoreError::OutcomeUnknown {
                context: "commit batch",
                message: format!("{cause}; resolving it failed: {error}"),
            }),
            Err(_) => Err(StoreError::OutcomeUnknown {
                context: "commit batch",
                message: format!("{cause}; the database did not answer the resolution in time"),
            }),
        }
    }

    /// Deletes commit ids older than [`COMMIT_ID_RETENTION`] (best effort).
    async fn trim_commit_ids(&self) {
        let trimmed = async {
            let mut checkout = self.checkout("trim commit ids").await.ok()?;
            let client = checkout.client();
            let seconds = COMMIT_ID_RETENTION.as_secs_f64();
            let rows = client
                .execute(self.statements.trim_commits.as_str(), &[&seconds])
                .await
                .ok()?;
            checkout.healthy = true;
            Some(rows)
        }
        .await;
        tracing::debug!(?trimmed, "trimmed old commit ids");
    }

    async fn single_number(&self, context: &'static str, sql: &str) -> Result<u64, StoreError> {
        self.with_retries(|| async {
            let mut checkout = self.checkout(context).await?;
            let client = checkout.client();
            let row = client
                .query_one(sql, &[])
                .await
                .map_err(|e| classify(context, &e))?;
            checkout.healthy = true;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
        .await
    }
}

impl PostgresStore {
    /// Connects, creates the schema and tables if missing, and checks that the database
    /// answers. Fails with [`StoreError::Unavailable`] when it cannot be reached.
    pub fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let schema = &options.schema;
        let valid_schema = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit();
        if !valid_schema {
            return Err(StoreError::Backend {
                context: "open store",
                message: format!(
                    "schema {schema:?}: 1-63 lower-case letters, digits and '_', not starting with a digit"
                ),
            });
        }
        let runtime = ClientRuntime::start("stockgrid-postgres", 2)?;
        let mut connection = options.connection.clone();
        if let Password::Given(password) = &options.password {
            connection.password(password.as_bytes());
        }
        let millis = |d: Duration| d.as_millis().max(1);
        let session = format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            millis(options.operation_timeout),
            millis(options.lock_timeout),
            millis(options.operation_timeout * 2),
        );
        let session = match connection.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {session}"),
            _ => session,
        };
        connection.options(&session).keepalives(true);
        // The URL's own settings win over these defaults.
        if connection.get_application_name().is_none() {
            connection.application_name("stockgrid");
        }
        if connection.get_connect_timeout().is_none() {
            connection.connect_timeout(options.operation_timeout);
        }
        if connection.get_tcp_user_timeout().is_none() {
            connection.tcp_user_timeout(options.operation_timeout);
        }
        if connection.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            connection.keepalives_idle(Duration::from_secs(10));
        }
        let manager = Manager::from_config(
            connection,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _entered = runtime.handle().enter();
            Pool::builder(manager)
                .max_size(options.pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(options.operation_timeout))
                .create_timeout(Some(options.operation_timeout))
                .recycle_timeout(Some(options.operation_timeout))
                .build()
                .map_err(|e| StoreError::Backend {
                    context: "open store",
                    message: e.to_string(),
                })?
        };
        let salt = crate::random_salt();
        let shared = Arc::new_cyclic(|me| Shared {
            pool,
            statements: Statements::new(schema),
            operation_timeout: options.operation_timeout,
            poison: PoisonState::default(),
            unresolved: Mutex::new(Vec::new()),
            commit_gate: tokio::sync::RwLock::new(()),
            lost_answer: Mutex::new(None),
            stalled_commit: Mutex::new(None),
            failing_resolutions: std::sync::atomic::AtomicU32::new(0),
            id_prefix: salt,
            next_commit: AtomicU64::new(0),
            target: describe_target(&options.connection),
            unreachable: AtomicBool::new(false),
            me: me.clone(),
        });
        let store = Self { runtime, shared };
        let create = Statements::schema(schema);
        let tables = [format!("\"{schema}\".kv"), format!("\"{schema}\".commits")];
        store.run("create the store's tables", move |shared| async move {
            shared
                .with_retries(|| async {
                    let context = "create the store's tables";
                    let mut checkout = shared.checkout(context).await?;
                    // Tables created beforehand need no CREATE privilege (PostgreSQL checks it
                    // before it looks at IF NOT EXISTS).
                    let existing = checkout
                        .client()
                        .query_one(
                            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
                            &[&tables[0], &tables[1]],
                        )
                        .await
                        .map_err(|e| classify(context, &e))?;
                    if existing.get::<_, bool>(0) {
                        checkout.healthy = true;
                        return Ok(());
                    }
                    match checkout.client().batch_execute(&create).await {
                        Ok(()) => {
                            checkout.healthy = true;
                            Ok(())
                        }
                        // Two nodes creating the tables at once: one loses, and retries.
                        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                            Err(Failure::Retry(StoreError::Unavailable {
                                context,
                                message: error.to_string(),
                            }))
                        }
                        Err(error) => Err(classify(context, &error)),
                    }
                })
                .await
        })?;
        tracing::info!(target = %store.shared.target, "opened the PostgreSQL store");
        Ok(store)
    }

    /// Makes the next `count` commits fail as a failed fsync would (the conformance suite's
    /// poisoning check; nothing else calls it).
    pub fn inject_write_failures(&self, count: u32) {
        self.shared.poison.inject_write_failures(count);
    }

    /// Makes the answer to the next commit get lost: after the commit was applied
    /// (`applied`), or as COMMIT is sent (the transaction then rolls back). The conformance
    /// suite's check of unknown outcomes; nothing else calls it.
    pub fn lose_next_commit_answer(&self, applied: bool) {
        if let Ok(mut slot) = self.shared.lost_answer.lock() {
            *slot = Some(applied);
        }
    }

    /// Freezes the next commit after it has read its conditions, its transaction open and
    /// its client thread blocked, until the returned sender is used or dropped: a writer
    /// stopped in the middle of a transaction (the fencing test's; nothing else calls it).
    pub fn stall_next_commit(&self) -> std::sync::mpsc::Sender<()> {
        let (release, stalled) = std::sync::mpsc::channel();
        if let Ok(mut slot) = self.shared.stalled_commit.lock() {
            *slot = Some(stalled);
        }
        release
    }

    /// Makes the next `count` resolutions of a lost commit fail, as if the database did not
    /// answer them (the check that reads and commits settle it first; nothing else calls it).
    pub fn fail_next_resolutions(&self, count: u32) {
        self.shared
            .failing_resolutions
            .store(count, Ordering::Release);
    }

    /// Runs `work` on the store's runtime and waits for it without holding a worker of the
    /// caller's runtime.
    fn run<T, F>(
        &self,
        context: &'static str,
        work: impl FnOnce(Arc<Shared>) -> F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.run(context, work(Arc::clone(&self.shared)))
    }

    /// As [`PostgresStore::run`], bounded by the operation timeout (reads: nothing to
    /// resolve when they are cut short).
    fn run_read<T, F>(
        &self,
        context: &'static str,
        work: impl FnOnce(Arc<Shared>) -> F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let timeout = self.shared.operation_timeout;
        self.run(context, move |shared| {
            let future = work(Arc::clone(&shared));
            async move {
                match tokio::time::timeout(timeout, future).await {
                    Ok(result) => result,
                    Err(_) => {
                        let message = format!("no answer within {} ms", timeout.as_millis());
                        shared.mark_unreachable(&message);
                        Err(StoreError::Unavailable { context, message })
                    }
                }
            }
        })
    }
}

impl Store for PostgresStore {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn limits(&self) -> StoreLimits {
        LIMITS
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.run_read(
            "read key",
            move |shared| async move { shared.get(key).await },
        )
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = keys.iter().map(|key| key.to_vec()).collect();
        self.run_read("read keys", move |shared| async move {
            shared.get_many(keys).await
        })
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let (start, end) = (start.to_vec(), end.to_vec());
        self.run_read("scan keys", move |shared| async move {
            shared.scan(start, end, limit).await
        })
    }

    /// Applies the batch in one SERIALIZABLE transaction with its conditions, durable once
    /// PostgreSQL acknowledges COMMIT (its WAL is flushed with the server's default
    /// `synchronous_commit = on`). A commit whose answer is lost is resolved by its id before
    /// this call returns, or, when the database cannot say, before the next commit.
    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.shared.poison.check()?;
        batch.check_limits(&LIMITS)?;
        if self.shared.poison.take_injected_failure() {
            return Err(self
                .shared
                .poison
                .poison("injected write failure".to_owned()));
        }
        self.run("commit batch", move |shared| async move {
            shared.commit(batch).await
        })
    }

    /// The poison error once poisoned; UNAVAILABLE while the database is known unreachable
    /// (a write would only wait to fail).
    fn check_writable(&self) -> Result<(), StoreError> {
        self.shared.poison.check()?;
        if self.shared.unreachable.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable {
                context: "write",
                message: "the database is unreachable; reconnecting in the background".to_owned(),
            });
        }
        Ok(())
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.run_read("measure the store", |shared| async move {
            let sql = shared.statements.sizes.clone();
            shared.single_number("measure the store", &sql).await
        })
    }

    fn live_bytes(&self) -> Result<u64, StoreError> {
        self.run_read("measure the store", |shared| async move {
            let sql = shared.statements.live_bytes.clone();
            shared.single_number("measure the store", &sql).await
        })
    }
}
