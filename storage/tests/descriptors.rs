//! Running out of file descriptors is transient for the embedded store (DESIGN.md "Storage"):
//! with the process's descriptor limit down to what is already open, writes may be refused
//! as unavailable but the store is never poisoned, nothing acknowledged is lost, and once
//! descriptors are back the store serves again by itself, without a restart. (A flush forced
//! while no descriptor is free waits until one is: fjall retries it; this test does not
//! force one.)
//!
//! Its own test binary: the descriptor limit is the whole process's.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use stockgrid_storage::{EmbeddedStore, Store, WriteBatch};

/// Descriptors open now (the listing's own handle, open while it counts, excluded).
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64) - 1
}

fn put(
    store: &EmbeddedStore,
    key: &str,
    value: &[u8],
) -> Result<(), stockgrid_storage::StoreError> {
    let mut batch = WriteBatch::new();
    batch.put(key.as_bytes().to_vec(), value.to_vec());
    store.commit(batch)
}

#[test]
fn running_out_of_descriptors_refuses_writes_but_never_poisons() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    let mut acknowledged = Vec::new();
    for n in 0..200 {
        let key = format!("before-{n:04}");
        put(&store, &key, &[7; 512]).expect("write with descriptors to spare");
        acknowledged.push(key);
    }

    let original = getrlimit(Resource::Nofile);
    let scarce = Rlimit {
        current: Some(open_descriptors()),
        maximum: original.maximum,
    };
    setrlimit(Resource::Nofile, scarce).expect("lower the descriptor limit");
    let mut refused = 0;
    for n in 0..200 {
        let key = format!("during-{n:04}");
        match put(&store, &key, &[8; 512]) {
            Ok(()) => acknowledged.push(key),
            Err(error) => {
                assert!(
                    error.is_transient(),
                    "out of descriptors must be transient: {error}"
                );
                refused += 1;
            }
        }
    }
    assert!(store.check_writable().is_ok(), "the store was poisoned");
    setrlimit(Resource::Nofile, original).expect("restore the descriptor limit");

    // Descriptors are back: the store serves again by itself (a reopen, where fjall's own
    // handle was poisoned by background work).
    let mut served = false;
    for n in 0..50 {
        match put(&store, &format!("after-{n:04}"), &[9; 512]) {
            Ok(()) => {
                served = true;
                break;
            }
            Err(error) => assert!(error.is_transient(), "{error}"),
        }
    }
    assert!(served, "no write succeeded once descriptors were back");
    store
        .flush_memory()
        .expect("flush with descriptors to spare");
    assert!(store.check_writable().is_ok());
    for key in &acknowledged {
        assert!(
            store.get(key.as_bytes()).expect("read").is_some(),
            "acknowledged {key} lost ({refused} writes were refused)"
        );
    }
}
