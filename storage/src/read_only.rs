//! [`ReadOnly`]: a store opened by an offline tool (`inspect`, `audit`) beside the nodes that
//! may be serving it. Reads go through; every write is refused, so the tool never overwrites
//! what a live node wrote (a snapshot older than the node's, the shared facts read at its
//! start).

use std::sync::Arc;

use crate::{KeyValue, Store, StoreError, StoreLimits, WriteBatch};

/// A store whose writes are refused.
#[derive(Debug)]
pub struct ReadOnly(pub Arc<dyn Store>);

fn refused() -> StoreError {
    StoreError::Unavailable {
        context: "write",
        message: "the store was opened read-only by an offline tool; nodes may be serving it"
            .to_owned(),
    }
}

impl Store for ReadOnly {
    fn backend_name(&self) -> &'static str {
        self.0.backend_name()
    }

    fn is_remote(&self) -> bool {
        self.0.is_remote()
    }

    fn limits(&self) -> StoreLimits {
        self.0.limits()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(key)
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.0.get_many(keys)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.0.scan(start, end, limit)
    }

    fn commit(&self, _batch: WriteBatch) -> Result<(), StoreError> {
        Err(refused())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        Err(refused())
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.0.disk_bytes()
    }

    fn live_bytes(&self) -> Result<u64, StoreError> {
        self.0.live_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[test]
    fn reads_go_through_and_writes_are_refused() {
        let inner = Arc::new(MemoryStore::new());
        let mut batch = WriteBatch::new();
        batch.put(b"k".to_vec(), b"v".to_vec());
        inner.commit(batch.clone()).expect("write beneath");
        let store = ReadOnly(inner.clone());
        assert_eq!(store.get(b"k").expect("get"), Some(b"v".to_vec()));
        assert!(store.commit(batch).expect_err("refused").is_transient());
        assert!(store.check_writable().is_err());
        assert_eq!(inner.scan(b"", b"z", 10).expect("scan").len(), 1);
    }
}
