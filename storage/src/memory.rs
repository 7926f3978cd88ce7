//! [`MemoryStore`]: an in-memory backend for unit tests and the simulator.
//!
//! It honours the whole contract except surviving a process exit. Its `commit` is atomic
//! under one lock, and it can be told to fail writes so poisoning can be tested.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use crate::batch::resolve;
use crate::poison::PoisonState;
use crate::{KeyValue, Store, StoreError, StoreLimits, WriteBatch};

/// An ordered map behind a lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    poison: PoisonState,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `count` commits fail as a failed fsync would (tests only).
    pub fn inject_write_failures(&self, count: u32) {
        self.poison.inject_write_failures(count);
    }

    fn lock_error() -> StoreError {
        StoreError::Backend {
            context: "lock memory store",
            message: "lock poisoned by a panic".to_owned(),
        }
    }
}

fn range_of<'a>(
    map: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: &[u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    let range = if start < end {
        Some(map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))))
    } else {
        None
    };
    range.into_iter().flatten()
}

impl Store for MemoryStore {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    fn limits(&self) -> StoreLimits {
        StoreLimits::LOCAL
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let map = self.map.read().map_err(|_| Self::lock_error())?;
        Ok(map.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        let map = self.map.read().map_err(|_| Self::lock_error())?;
        Ok(range_of(&map, start, end)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.poison.check()?;
        let mut map = self.map.write().map_err(|_| Self::lock_error())?;
        let writes = resolve(
            batch,
            &self.limits(),
            |key| Ok(map.get(key).cloned()),
            |start, end| Ok(range_of(&map, start, end).map(|(k, _)| k.clone()).collect()),
        )?;
        if self.poison.take_injected_failure() {
            return Err(self.poison.poison("injected fsync failure".to_owned()));
        }
        for (key, value) in writes {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.poison.check()
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
