//! The Store conformance suite on the in-memory backend.

use stockgrid_storage::MemoryStore;
use stockgrid_storage::conformance::Harness;

struct MemoryHarness;

impl Harness for MemoryHarness {
    type Backend = MemoryStore;
    fn fresh(&mut self) -> MemoryStore {
        MemoryStore::new()
    }
    fn reopen(&mut self, _store: MemoryStore) -> Option<MemoryStore> {
        None
    }
    fn inject_write_failures(&self, store: &MemoryStore, count: u32) {
        store.inject_write_failures(count);
    }
}

stockgrid_storage::conformance_tests!(MemoryHarness);
