//! The FoundationDB backend's logic over the fake database (no FoundationDB can run here):
//! the conformance suite, and each of FoundationDB's error codes the store must handle.

use std::time::Duration;

use stockgrid_storage::conformance::Harness;
use stockgrid_storage::fdb::fake::FakeDatabase;
use stockgrid_storage::fdb::{FdbStore, codes};
use stockgrid_storage::{Condition, Store, StoreError, WriteBatch};

type FakeStore = FdbStore<FakeDatabase>;

fn store_over(database: FakeDatabase) -> FakeStore {
    FdbStore::with_backoff(database, b"test", Duration::from_millis(1)).expect("a store")
}

#[derive(Default)]
struct FakeHarness;

impl Harness for FakeHarness {
    type Backend = FakeStore;
    fn fresh(&mut self) -> FakeStore {
        store_over(FakeDatabase::new())
    }
    fn reopen(&mut self, store: FakeStore) -> Option<FakeStore> {
        let database = store.database().clone();
        drop(store);
        Some(store_over(database))
    }
    fn second_client(&mut self, store: &FakeStore) -> Option<FakeStore> {
        Some(store_over(store.database().clone()))
    }
    fn inject_write_failures(&self, store: &FakeStore, count: u32) {
        store.inject_write_failures(count);
    }
    fn lose_next_commit_answer(&self, store: &FakeStore, applied: bool) -> bool {
        store
            .database()
            .fail_next_commit(codes::COMMIT_UNKNOWN_RESULT, applied);
        true
    }
}

stockgrid_storage::conformance_tests!(FakeHarness);

/// A batch that may land once only: it requires `key` absent and writes it.
fn once(key: &[u8]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.require(Condition::Absent(key.to_vec()));
    batch.put(key.to_vec(), b"v".to_vec());
    batch
}

#[test]
fn conflicts_and_too_old_transactions_are_retried() {
    let store = store_over(FakeDatabase::new());
    for code in [
        codes::NOT_COMMITTED,
        codes::TRANSACTION_TOO_OLD,
        codes::NOT_COMMITTED,
    ] {
        store.database().fail_next_commit(code, false);
    }
    store.commit(once(b"a")).expect("retried until it commits");
    assert_eq!(store.database().commits_attempted(), 4);
    assert_eq!(store.get(b"a").expect("get"), Some(b"v".to_vec()));
    store.database().fail_next_read(codes::TRANSACTION_TOO_OLD);
    assert_eq!(
        store.get(b"a").expect("a read is retried"),
        Some(b"v".to_vec())
    );
}

#[test]
fn an_unknown_result_is_resolved_by_the_batch_id_exactly_once() {
    let store = store_over(FakeDatabase::new());
    // Applied, then the answer lost: the retry finds its id (a blind retry would fail the
    // condition its own first attempt made false).
    store
        .database()
        .fail_next_commit(codes::COMMIT_UNKNOWN_RESULT, true);
    store.commit(once(b"a")).expect("found applied");
    // Not applied: the retry applies it.
    store
        .database()
        .fail_next_commit(codes::COMMIT_UNKNOWN_RESULT, false);
    store.commit(once(b"b")).expect("applied by the retry");
    assert_eq!(store.scan(b"", b"\xff", 10).expect("scan").len(), 2);
}

#[test]
fn a_result_still_unknown_is_resolved_before_the_next_commit() {
    let store = store_over(FakeDatabase::new());
    for _ in 0..8 {
        store
            .database()
            .fail_next_commit(codes::COMMIT_UNKNOWN_RESULT, false);
    }
    let error = store.commit(once(b"a")).expect_err("out of attempts");
    assert!(error.is_outcome_unknown(), "{error}");
    assert_eq!(store.get(b"a").expect("get"), None);
    // The next commit first settles the earlier one: applied once, then its own.
    store.commit(once(b"b")).expect("the next commit");
    assert_eq!(store.get(b"a").expect("get"), Some(b"v".to_vec()));
    assert_eq!(store.get(b"b").expect("get"), Some(b"v".to_vec()));
}

#[test]
fn a_timed_out_commit_counts_as_unknown_and_is_not_retried_blindly() {
    let store = store_over(FakeDatabase::new());
    // The timeout cut the commit after it landed.
    store
        .database()
        .fail_next_commit(codes::TRANSACTION_TIMED_OUT, true);
    let error = store
        .commit(once(b"a"))
        .expect_err("a timeout is not retried");
    assert!(error.is_outcome_unknown(), "{error}");
    let attempted = store.database().commits_attempted();
    // Resolved before the next commit: found by its id, not applied twice.
    store.commit(once(b"b")).expect("the next commit");
    assert_eq!(store.get(b"a").expect("get"), Some(b"v".to_vec()));
    assert_eq!(store.database().commits_attempted(), attempted + 1);
}

#[test]
fn a_transaction_too_large_is_refused_whole_and_not_split() {
    let store = store_over(FakeDatabase::new());
    store
        .database()
        .fail_next_commit(codes::TRANSACTION_TOO_LARGE, false);
    let error = store.commit(once(b"a")).expect_err("too large");
    assert!(matches!(error, StoreError::BatchTooLarge { .. }), "{error}");
    assert_eq!(store.database().commits_attempted(), 1);
    assert_eq!(store.get(b"a").expect("get"), None);
    // Over the declared limits: refused before FoundationDB sees it.
    let mut big = WriteBatch::new();
    big.put(b"big".to_vec(), vec![0; 100_001]);
    assert!(matches!(
        store.commit(big),
        Err(StoreError::BatchTooLarge { .. })
    ));
    assert_eq!(store.database().commits_attempted(), 1);
}
