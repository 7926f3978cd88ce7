//! The Store conformance suite on the embedded (fjall) backend, on a real disk.

use stockgrid_storage::EmbeddedStore;
use stockgrid_storage::conformance::Harness;

#[derive(Default)]
struct EmbeddedHarness {
    directories: Vec<tempfile::TempDir>,
}

impl Harness for EmbeddedHarness {
    type Backend = EmbeddedStore;
    fn fresh(&mut self) -> EmbeddedStore {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(directory.path()).expect("open embedded store");
        self.directories.push(directory);
        store
    }
    fn reopen(&mut self, store: EmbeddedStore) -> Option<EmbeddedStore> {
        let path = store.path().to_path_buf();
        drop(store);
        Some(EmbeddedStore::open(path).expect("reopen embedded store"))
    }
    fn inject_write_failures(&self, store: &EmbeddedStore, count: u32) {
        store.inject_write_failures(count);
    }
}

stockgrid_storage::conformance_tests!(EmbeddedHarness::default());
