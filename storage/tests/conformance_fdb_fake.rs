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
fn a_result_still_unknown_is_settled_before_the_next_commit() {
    let store = store_over(FakeDatabase::new());
    for _ in 0..8 {
        store
            .database()
            .fail_next_commit(codes::COMMIT_UNKNOWN_RESULT, false);
    }
    let error = store.commit(once(b"a")).expect_err("out of attempts");
    assert!(error.is_outcome_unknown(), "{error}");
    let attempted = store.database().commits_attempted();
    // The next commit first settles the earlier one (applied once: its condition held),
    // then commits its own.
    store.commit(once(b"b")).expect("the next commit");
    assert_eq!(store.database().commits_attempted(), attempted + 2);
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

#[test]
fn a_batch_of_unknown_result_that_landed_is_not_applied_again_over_later_writes() {
    let database = FakeDatabase::new();
    let store = store_over(database.clone());
    let other = store_over(database.clone());
    // An unconditional write times out after it landed: its result is unknown.
    database.fail_next_commit(codes::TRANSACTION_TIMED_OUT, true);
    let mut first = WriteBatch::new();
    first.put(b"k".to_vec(), b"first".to_vec());
    let error = store.commit(first).expect_err("a timeout is not retried");
    assert!(error.is_outcome_unknown(), "{error}");
    // Another node writes the key meanwhile.
    let mut later = WriteBatch::new();
    later.put(b"k".to_vec(), b"later".to_vec());
    other.commit(later).expect("the other node's write");
    // Settling the first batch finds its id: it is not written again over the later value.
    assert_eq!(
        store.get(b"k").expect("a read settles it first"),
        Some(b"later".to_vec())
    );
    let mut next = WriteBatch::new();
    next.put(b"n".to_vec(), b"1".to_vec());
    store.commit(next).expect("the next commit");
    assert_eq!(store.get(b"k").expect("get"), Some(b"later".to_vec()));
}

#[test]
fn a_batch_of_unknown_result_that_did_not_land_is_applied_before_the_next_read() {
    let store = store_over(FakeDatabase::new());
    database_fails_unknown(&store);
    let mut first = WriteBatch::new();
    first.put(b"k".to_vec(), b"first".to_vec());
    let error = store.commit(first).expect_err("unknown");
    assert!(error.is_outcome_unknown(), "{error}");
    // A read settles it before it answers: applied now, once.
    assert_eq!(store.get(b"k").expect("get"), Some(b"first".to_vec()));
}

fn database_fails_unknown(store: &FakeStore) {
    store
        .database()
        .fail_next_commit(codes::TRANSACTION_TIMED_OUT, false);
}
