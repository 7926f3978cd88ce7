//! [`EmbeddedStore`]: the on-disk default backend, on fjall (an LSM tree).
//!
//! One fjall database under the data directory, one keyspace holding every key. A commit is
//! one fjall write batch with `PersistMode::SyncAll`: the journal is fsync'd before `commit`
//! returns. Conditions and range deletes are resolved under a commit lock, so a batch is
//! atomic with respect to other commits of this process (the only writer: fjall locks the
//! directory against a second process).
//!
//! Errors follow the three classes of [`StoreError`]: a read that runs out of descriptors or
//! memory is transient; a commit refused because background work (a flush, a compaction)
//! failed and poisoned fjall's handle is transient too (nothing of it was written: the store
//! is closed and reopened from its journal, now or on the next call); a failed journal write
//! or fsync of a commit poisons it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use crate::batch::resolve;
use crate::poison::PoisonState;
use crate::{KeyValue, Store, StoreError, StoreLimits, WriteBatch};

const KEYSPACE_NAME: &str = "stockgrid";
/// Table files the store keeps open at most (fjall's default is 900 on Linux).
pub const MAX_CACHED_FILES: usize = 128;
/// The block cache of [`EmbeddedStore::open`].
pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

/// The embedded LSM store.
pub struct EmbeddedStore {
    path: PathBuf,
    options: EmbeddedOptions,
    /// The open database (`None` between a transient failure and a successful reopen).
    open: RwLock<Option<Fjall>>,
    commit_lock: Mutex<()>,
    poison: PoisonState,
}

/// One open fjall database and its keyspace (both are cheap handles to shared state).
#[derive(Clone)]
struct Fjall {
    database: Database,
    keyspace: Keyspace,
}

impl Fjall {
    fn open(path: &Path, options: EmbeddedOptions) -> Result<Self, fjall::Error> {
        let database = Database::builder(path)
            .cache_size(options.cache_bytes)
            // Memtables are flushed once the journal passes this size, which bounds both
            // recovery time and the journal's share of the disk.
            .max_journaling_size(64 << 20)
            // Table files kept open: well inside the descriptors a node reserves for its store
            // (`connections.reserved_descriptors`), so connections can never starve it.
            .max_cached_files(Some(MAX_CACHED_FILES))
            .open()?;
        let keyspace = database.keyspace(KEYSPACE_NAME, KeyspaceCreateOptions::default)?;
        Ok(Self { database, keyspace })
    }
}

/// Whether a read's error is the process or system running out of something that comes back
/// (descriptors, memory): transient, never a reason to poison.
fn is_transient(error: &fjall::Error) -> bool {
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    let io = match error {
        fjall::Error::Io(io) => Some(io),
        fjall::Error::Storage(fjall::LsmError::Io(io)) => Some(io),
        _ => None,
    };
    io.and_then(std::io::Error::raw_os_error)
        .is_some_and(|code| matches!(code, EMFILE | ENFILE | ENOMEM))
}

/// Options of [`EmbeddedStore::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// Whether `commit` fsyncs before returning (the durability contract). Only batch jobs
    /// whose output is written at their very end (replay) turn this off: a crash loses the
    /// run, which is simply run again; the journal is still fsync'd when the store closes.
    pub sync_commits: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            sync_commits: true,
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend_error(context: &'static str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        context,
        message: error.to_string(),
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store under `path`, recovering from its journal, with
    /// the default options: every commit fsync'd, a 32 MiB block cache.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens the store with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            std::fs::create_dir_all(&path)
                .map_err(|e| backend_error("create data directory", e))?;
            // The store holds inventory, reservations and decision records: a directory it
            // creates is its owner's alone, whatever the umask (a node also sets its umask so
            // that files are 0600). An existing directory is the operator's to set.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| backend_error("restrict data directory", e))?;
        }
        let fjall = Fjall::open(&path, options).map_err(|e| backend_error("open store", e))?;
        Ok(Self {
            path,
            options,
            open: RwLock::new(Some(fjall)),
            commit_lock: Mutex::new(()),
            poison: PoisonState::default(),
        })
    }

    /// The open database, reopening it first after a transient failure.
    fn fjall(&self) -> Result<Fjall, StoreError> {
        if let Some(fjall) = self.open.read().ok().and_then(|open| open.clone()) {
            return Ok(fjall);
        }
        let mut open = self
            .open
            .write()
            .map_err(|_| backend_error("lock store", "poisoned by a panic"))?;
        if let Some(fjall) = open.as_ref() {
            return Ok(fjall.clone());
        }
        match Fjall::open(&self.path, self.options) {
            Ok(fjall) => {
                tracing::info!(path = %self.path.display(), "store reopened after a transient failure");
                *open = Some(fjall.clone());
                Ok(fjall)
            }
            Err(error) => Err(StoreError::Unavailable {
                context: "reopen store",
                message: error.to_string(),
            }),
        }
    }

    /// After fjall refused a batch as poisoned while no write of ours failed: a background
    /// flush or compaction failed (out of descriptors, say) and poisoned fjall's handle. The
    /// journal holds every acknowledged batch and nothing of the refused one (fjall checks
    /// its poison before writing), so the database is closed and reopened from its journal,
    /// now or on the next call, which retries the flush.
    fn close_for_reopen(&self, error: &fjall::Error, context: &'static str) -> StoreError {
        tracing::warn!(%error, context, "background store work failed; reopening the store");
        let old = self.open.write().ok().and_then(|mut open| open.take());
        // Dropped outside the lock: closing waits for fjall's worker threads.
        drop(old);
        let _ = self.fjall();
        StoreError::Unavailable {
            context,
            message: error.to_string(),
        }
    }

    fn read_error(context: &'static str, error: fjall::Error) -> StoreError {
        if is_transient(&error) {
            StoreError::Unavailable {
                context,
                message: error.to_string(),
            }
        } else {
            backend_error(context, error)
        }
    }

    /// Whether `path` holds an embedded store (so read-only tools do not create one).
    pub fn exists_at(path: impl AsRef<Path>) -> bool {
        path.as_ref().join("version").is_file()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the next `count` commits fail as a failed fsync would (tests only).
    pub fn inject_write_failures(&self, count: u32) {
        self.poison.inject_write_failures(count);
    }

    fn keys_in(&self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.fjall()?
            .keyspace
            .range(start..end)
            .map(|guard| {
                guard
                    .into_inner()
                    .map(|(k, _)| k.to_vec())
                    .map_err(|e| Self::read_error("scan keys", e))
            })
            .collect()
    }
}

impl Store for EmbeddedStore {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    fn limits(&self) -> StoreLimits {
        StoreLimits::LOCAL
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.fjall()?
            .keyspace
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| Self::read_error("read key", e))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        // Through a snapshot: a scan sees each commit whole or not at all, even while
        // commits land during it (the keyspace's own iterator reads the newest of each key).
        let fjall = self.fjall()?;
        fjall
            .database
            .snapshot()
            .range(&fjall.keyspace, start..end)
            .take(limit)
            .map(|guard| {
                guard
                    .into_inner()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| Self::read_error("scan range", e))
            })
            .collect()
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.poison.check()?;
        let _guard = self
            .commit_lock
            .lock()
            .map_err(|_| backend_error("lock commit", "poisoned by a panic"))?;
        let writes = resolve(
            batch,
            &self.limits(),
            |key| self.get(key),
            |start, end| self.keys_in(start, end),
        )?;
        if self.poison.take_injected_failure() {
            return Err(self.poison.poison("injected fsync failure".to_owned()));
        }
        let fjall = self.fjall()?;
        let durability = self.options.sync_commits.then_some(PersistMode::SyncAll);
        let mut fjall_batch = fjall.database.batch().durability(durability);
        for (key, value) in writes {
            match value {
                Some(value) => fjall_batch.insert(&fjall.keyspace, key, value),
                None => fjall_batch.remove(&fjall.keyspace, key),
            }
        }
        match fjall_batch.commit() {
            Ok(()) => Ok(()),
            // Poisoned by background work, not by a write of ours (which would have poisoned
            // us too): nothing of this batch was written. Transient; reopen.
            Err(error @ fjall::Error::Poisoned) => {
                drop(fjall);
                Err(self.close_for_reopen(&error, "commit batch"))
            }
            // A failed journal write or fsync (any cause: a full disk, out of memory) leaves
            // the batch in doubt and the page cache untrustworthy: fjall poisons itself and so
            // do we, with fjall's words as the cause.
            Err(error) => Err(self.poison.poison(format!("commit batch: {error}"))),
        }
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.poison.check()
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.fjall()?
            .database
            .disk_space()
            .map_err(|e| backend_error("measure disk space", e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.poison.check()?;
        // Under the commit lock: a failed fsync poisons fjall's handle, and a commit racing
        // it must not mistake that for background work's poison.
        let _guard = self
            .commit_lock
            .lock()
            .map_err(|_| backend_error("lock commit", "poisoned by a panic"))?;
        self.fjall()?
            .database
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.poison.poison(format!("sync journal: {e}")))
    }

    fn flush_memory(&self) -> Result<(), StoreError> {
        let fjall = self.fjall()?;
        fjall
            .keyspace
            .rotate_memtable_and_wait()
            .map_err(|e| backend_error("flush memtable", e))?;
        // Background compactions hold buffers too; let running ones finish (bounded wait).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while fjall.database.active_compactions() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    fn reclaim_space(&self) -> Result<(), StoreError> {
        let fjall = self.fjall()?;
        fjall
            .keyspace
            .rotate_memtable_and_wait()
            .map_err(|e| backend_error("flush memtable", e))?;
        fjall
            .keyspace
            .major_compact()
            .map_err(|e| backend_error("compact keyspace", e))
    }
}
