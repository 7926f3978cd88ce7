//! The [`Store`] contract.

use crate::{StoreError, StoreLimits, WriteBatch};

/// A key and its value, as returned by scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An ordered key-value store with atomic, durable, conditional batches.
///
/// Keys are compared as byte strings. Every backend must pass [`crate::conformance`].
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs ("embedded", "memory").
    fn backend_name(&self) -> &'static str;

    /// Whether a call may wait on a network round trip (a shared backend): callers on an
    /// async runtime then make it through [`crate::offload::offload`], never on a worker.
    fn is_remote(&self) -> bool {
        false
    }

    /// What one atomic batch may carry on this backend: a larger batch is refused whole
    /// ([`StoreError::BatchTooLarge`]), never split, and the group committer merges batches
    /// only up to these limits.
    fn limits(&self) -> StoreLimits;

    /// The value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The values stored under `keys`, in their order (`None` where absent): one round trip
    /// where the backend is reached over a network, so that a shard needing many keys waits
    /// once. Each value is as [`Store::get`] would return it at some moment of the call.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// The pairs with `start <= key < end`, in key order, at most `limit` of them.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError>;

    /// Applies the batch atomically if all its conditions hold, and returns only once the
    /// batch is durable. On a failed condition nothing is applied. On a failed write or fsync
    /// the store becomes poisoned and the error says so.
    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// `Ok` while writes are accepted; the poison error once they never will be again, and
    /// [`StoreError::Unavailable`] while a shared store is known to be unreachable (writes
    /// would only wait to fail; reads of what a node holds in memory go on).
    fn check_writable(&self) -> Result<(), StoreError>;

    /// Bytes the store occupies on disk (0 for in-memory backends).
    fn disk_bytes(&self) -> Result<u64, StoreError>;

    /// Bytes of live keys and values (a logical size, comparable across backends).
    fn live_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut start = Vec::new();
        loop {
            let page = self.scan(&start, &[0xff; 64], 4096)?;
            let Some((last_key, _)) = page.last() else {
                return Ok(total);
            };
            total += page
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>();
            start = last_key.clone();
            start.push(0);
        }
    }

    /// Makes every committed batch durable now (a no-op where commits already are, as with
    /// the default options of every backend).
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Moves buffered writes out of memory to their on-disk form (they are durable already);
    /// a no-op where meaningless.
    fn flush_memory(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Lets the backend reclaim space now (flush, compact); a no-op where meaningless.
    fn reclaim_space(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
