//! [`FakeDatabase`]: an in-memory stand-in for FoundationDB, to test [`super::FdbStore`]
//! where no FoundationDB can run. It keeps what the store relies on: each transaction reads
//! one snapshot; a commit fails with `not_committed` (1020) when a key or range it read was
//! changed by a commit after its snapshot; mutations apply in order; a transaction over
//! 10,000,000 bytes fails with `transaction_too_large` (2101). Tests inject FoundationDB's
//! error codes into the next commits or reads, a commit failure either before or after the
//! commit was applied (`commit_unknown_result` may be either).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{FdbFailure, KvDatabase, KvTransaction, codes};
use crate::KeyValue;

/// A failure a test arms for a coming operation.
#[derive(Clone, Copy, Debug)]
enum Injected {
    /// The next commit fails with `code`, after applying its writes when `applied`.
    Commit { code: i32, applied: bool },
    /// The next read fails with `code`.
    Read { code: i32 },
}

#[derive(Debug, Default)]
struct State {
    data: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    version: u64,
    /// The version that last changed each key.
    changed_at: HashMap<Vec<u8>, u64>,
    injected: VecDeque<Injected>,
    commits_attempted: u64,
}

/// The fake database; clones share one state (two clients of one cluster).
#[derive(Clone, Debug, Default)]
pub struct FakeDatabase {
    state: Arc<Mutex<State>>,
}

impl FakeDatabase {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next commit fails with `code`, after its writes were applied when `applied`.
    pub fn fail_next_commit(&self, code: i32, applied: bool) {
        self.state()
            .injected
            .push_back(Injected::Commit { code, applied });
    }

    /// The next read (get or range) fails with `code`.
    pub fn fail_next_read(&self, code: i32) {
        self.state().injected.push_back(Injected::Read { code });
    }

    /// Commits attempted so far (applied or not).
    pub fn commits_attempted(&self) -> u64 {
        self.state().commits_attempted
    }
}

#[derive(Debug)]
enum Mutation {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    ClearRange(Vec<u8>, Vec<u8>),
}

/// A transaction of the fake: reads see the snapshot taken when it began.
#[derive(Debug)]
pub struct FakeTransaction {
    database: FakeDatabase,
    snapshot: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    read_version: u64,
    /// Ranges read, `[start, end)`; a point read is the range of its key alone.
    reads: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    mutations: Mutex<Vec<Mutation>>,
}

fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

impl FakeTransaction {
    fn injected_read_failure(&self) -> Result<(), FdbFailure> {
        let mut state = self.database.state();
        if let Some(Injected::Read { code }) = state.injected.front().copied() {
            state.injected.pop_front();
            return Err(FdbFailure::of_code(code));
        }
        Ok(())
    }

    fn note_read(&self, start: Vec<u8>, end: Vec<u8>) {
        if let Ok(mut reads) = self.reads.lock() {
            reads.push((start, end));
        }
    }

    fn push(&self, mutation: Mutation) {
        if let Ok(mut mutations) = self.mutations.lock() {
            mutations.push(mutation);
        }
    }
}

impl KvTransaction for FakeTransaction {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, FdbFailure> {
        self.injected_read_failure()?;
        self.note_read(key.to_vec(), key_after(key));
        Ok(self.snapshot.get(key).cloned())
    }

    async fn get_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, FdbFailure> {
        self.injected_read_failure()?;
        if start >= end {
            return Ok(Vec::new());
        }
        let rows: Vec<KeyValue> = self
            .snapshot
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let read_end = match rows.last() {
            Some((last, _)) if rows.len() == limit => key_after(last),
            _ => end.to_vec(),
        };
        self.note_read(start.to_vec(), read_end);
        Ok(rows)
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        self.push(Mutation::Set(key.to_vec(), value.to_vec()));
    }

    fn clear(&self, key: &[u8]) {
        self.push(Mutation::Clear(key.to_vec()));
    }

    fn clear_range(&self, start: &[u8], end: &[u8]) {
        self.push(Mutation::ClearRange(start.to_vec(), end.to_vec()));
    }

    async fn commit(self) -> Result<(), FdbFailure> {
        let mutations = self.mutations.into_inner().unwrap_or_default();
        let reads = self.reads.into_inner().unwrap_or_default();
        let mut state = self.database.state();
        state.commits_attempted += 1;
        let injected = match state.injected.front().copied() {
            Some(Injected::Commit { code, applied }) => {
                state.injected.pop_front();
                Some((code, applied))
            }
            _ => None,
        };
        if let Some((code, false)) = injected {
            return Err(FdbFailure::of_code(code));
        }
        let size: usize = mutations
            .iter()
            .map(|mutation| match mutation {
                Mutation::Set(key, value) => key.len() + value.len(),
                Mutation::Clear(key) => key.len(),
                Mutation::ClearRange(start, end) => start.len() + end.len(),
            })
            .sum();
        if size > 10_000_000 {
            return Err(FdbFailure::of_code(codes::TRANSACTION_TOO_LARGE));
        }
        let conflict = reads.iter().any(|(start, end)| {
            state
                .changed_at
                .iter()
                .any(|(key, &version)| version > self.read_version && key >= start && key < end)
        });
        if conflict {
            return Err(FdbFailure::of_code(codes::NOT_COMMITTED));
        }
        if !mutations.is_empty() {
            state.version += 1;
            let version = state.version;
            let mut data = (*state.data).clone();
            let mut changed = Vec::new();
            for mutation in mutations {
                match mutation {
                    Mutation::Set(key, value) => {
                        changed.push(key.clone());
                        data.insert(key, value);
                    }
                    Mutation::Clear(key) => {
                        data.remove(&key);
                        changed.push(key);
                    }
                    Mutation::ClearRange(start, end) => {
                        if start < end {
                            let doomed: Vec<Vec<u8>> =
                                data.range(start..end).map(|(k, _)| k.clone()).collect();
                            for key in doomed {
                                data.remove(&key);
                                changed.push(key);
                            }
                        }
                    }
                }
            }
            state.data = Arc::new(data);
            for key in changed {
                state.changed_at.insert(key, version);
            }
        }
        match injected {
            Some((code, _applied)) => Err(FdbFailure::of_code(code)),
            None => Ok(()),
        }
    }
}

impl KvDatabase for FakeDatabase {
    type Transaction = FakeTransaction;

    fn begin(&self) -> Result<FakeTransaction, FdbFailure> {
        let state = self.state();
        Ok(FakeTransaction {
            database: self.clone(),
            snapshot: Arc::clone(&state.data),
            read_version: state.version,
            reads: Mutex::new(Vec::new()),
            mutations: Mutex::new(Vec::new()),
        })
    }
}
