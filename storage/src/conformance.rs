//! The conformance suite of the [`Store`] contract.
//!
//! Every backend runs the same checks: a backend's test file implements [`Harness`] and
//! invokes [`conformance_tests!`](crate::conformance_tests), which expands to one `#[test]`
//! per check: memory, embedded, PostgreSQL, FoundationDB's logic over its fake, and the real
//! FoundationDB where `FDB_CLUSTER_FILE` names a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Condition, GroupCommitConfig, GroupCommitter, Store, StoreError, WriteBatch};

/// How the suite makes and reopens stores of one backend.
pub trait Harness {
    /// The backend under test.
    type Backend: Store;
    /// A new, empty store.
    fn fresh(&mut self) -> Self::Backend;
    /// Closes `store` and opens it again from its durable state; `None` for backends that
    /// do not outlive their process (the durability check is then skipped for them only).
    fn reopen(&mut self, store: Self::Backend) -> Option<Self::Backend>;
    /// Arms `count` write failures that look like a failed fsync.
    fn inject_write_failures(&self, store: &Self::Backend, count: u32);
    /// A second, independent client of the same store, as another node would open it; `None`
    /// for a store one process owns (its writers then share one handle).
    fn second_client(&mut self, _store: &Self::Backend) -> Option<Self::Backend> {
        None
    }
    /// Makes the answer to the next commit get lost, after the commit was applied
    /// (`applied`) or before it was sent; `false` where a commit's outcome cannot be unknown
    /// (a store in the same process), and the check is then skipped for that backend only.
    fn lose_next_commit_answer(&self, _store: &Self::Backend, _applied: bool) -> bool {
        false
    }
}

fn put(store: &dyn Store, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(key, value);
    store.commit(batch).expect("commit a plain put");
}

fn keys(store: &dyn Store) -> Vec<Vec<u8>> {
    store
        .scan(&[], &[0xff; 8], usize::MAX)
        .expect("scan all")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Put, get, overwrite and delete of single keys.
pub fn point_operations<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    assert_eq!(store.get(b"a").expect("get"), None);
    put(&store, b"a", b"1");
    assert_eq!(store.get(b"a").expect("get"), Some(b"1".to_vec()));
    put(&store, b"a", b"2");
    assert_eq!(store.get(b"a").expect("get"), Some(b"2".to_vec()));
    let mut batch = WriteBatch::new();
    batch.delete(b"a".to_vec());
    store.commit(batch).expect("delete");
    assert_eq!(store.get(b"a").expect("get"), None);
}

/// Scans return `start <= key < end` in byte order, honour the limit, and an empty or
/// inverted range returns nothing.
pub fn ordered_scans<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let mut batch = WriteBatch::new();
    for key in [
        &b"b"[..],
        b"a",
        b"c\x00",
        b"c",
        b"d",
        &[0x00],
        &[0xfe, 0x01],
    ] {
        batch.put(key, key);
    }
    store.commit(batch).expect("commit");
    let got: Vec<Vec<u8>> = store
        .scan(b"a", b"d", 100)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        got,
        vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
            b"c\x00".to_vec()
        ]
    );
    assert_eq!(store.scan(b"a", b"d", 2).expect("scan").len(), 2);
    assert!(store.scan(b"d", b"a", 100).expect("scan").is_empty());
    assert!(store.scan(b"b", b"b", 100).expect("scan").is_empty());
    assert_eq!(keys(&store).first(), Some(&vec![0x00]));
    assert_eq!(keys(&store).last(), Some(&vec![0xfe, 0x01]));
}

/// Operations of one batch apply in order, and a range delete removes stored keys and keys
/// put earlier in the same batch, but not keys put after it.
pub fn batch_operations_apply_in_order<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    put(&store, b"k1", b"old");
    put(&store, b"k2", b"old");
    put(&store, b"k9", b"kept");
    let mut batch = WriteBatch::new();
    batch.put(b"k3".to_vec(), b"new".to_vec());
    batch.delete_range(b"k1".to_vec(), b"k5".to_vec());
    batch.put(b"k2".to_vec(), b"after".to_vec());
    batch.delete(b"k4".to_vec());
    batch.put(b"k4".to_vec(), b"revived".to_vec());
    store.commit(batch).expect("commit");
    assert_eq!(store.get(b"k1").expect("get"), None);
    assert_eq!(store.get(b"k2").expect("get"), Some(b"after".to_vec()));
    assert_eq!(store.get(b"k3").expect("get"), None);
    assert_eq!(store.get(b"k4").expect("get"), Some(b"revived".to_vec()));
    assert_eq!(store.get(b"k9").expect("get"), Some(b"kept".to_vec()));
}

/// A failed condition applies nothing of its batch; holding conditions let it through.
pub fn conditions_are_atomic<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    put(&store, b"present", b"v1");
    let mut failing = WriteBatch::new();
    failing.require(Condition::Absent(b"absent".to_vec()));
    failing.require(Condition::Absent(b"present".to_vec()));
    failing.put(b"absent".to_vec(), b"x".to_vec());
    let error = store.commit(failing).expect_err("condition must fail");
    assert!(
        matches!(error, StoreError::ConditionFailed { ref key } if key == b"present"),
        "{error}"
    );
    assert_eq!(store.get(b"absent").expect("get"), None);

    let mut wrong_value = WriteBatch::new();
    wrong_value.require(Condition::Equals(b"present".to_vec(), b"v0".to_vec()));
    wrong_value.put(b"present".to_vec(), b"v2".to_vec());
    assert!(store.commit(wrong_value).is_err());
    assert_eq!(store.get(b"present").expect("get"), Some(b"v1".to_vec()));

    let mut holding = WriteBatch::new();
    holding.require(Condition::Equals(b"present".to_vec(), b"v1".to_vec()));
    holding.require(Condition::Absent(b"absent".to_vec()));
    holding.put(b"present".to_vec(), b"v2".to_vec());
    holding.put(b"absent".to_vec(), b"now".to_vec());
    store.commit(holding).expect("conditions hold");
    assert_eq!(store.get(b"present").expect("get"), Some(b"v2".to_vec()));
    assert_eq!(store.get(b"absent").expect("get"), Some(b"now".to_vec()));
}

/// Oversized or malformed batches are refused whole, against the limits the backend
/// declares: an empty key and a key one byte over the limit, each beside a valid put that must
/// not be applied either; a key at the limit is accepted.
pub fn limits_are_enforced<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    let limits = store.limits();
    assert!(limits.max_key_bytes > 0 && limits.max_batch_operations > 0);
    let over_long_key = vec![b'k'; limits.max_key_bytes + 1];
    for bad in [Vec::new(), over_long_key] {
        let mut batch = WriteBatch::new();
        batch.put(b"fine".to_vec(), b"v".to_vec());
        batch.put(bad, b"refused".to_vec());
        assert!(matches!(
            store.commit(batch),
            Err(StoreError::BatchTooLarge { .. })
        ));
        assert_eq!(store.get(b"fine").expect("get"), None);
    }
    // One operation too many is refused whole as well.
    if limits.max_batch_operations <= 2_000_000 {
        let mut batch = WriteBatch::new();
        batch.put(b"fine".to_vec(), b"v".to_vec());
        for i in 0..limits.max_batch_operations as u32 {
            batch.put(i.to_be_bytes().to_vec(), Vec::new());
        }
        assert!(matches!(
            store.commit(batch),
            Err(StoreError::BatchTooLarge {
                what: "operation count",
                ..
            })
        ));
        assert_eq!(store.get(b"fine").expect("get"), None);
    }
    // The longest key the backend declares is accepted.
    let mut longest = WriteBatch::new();
    longest.put(vec![b'k'; limits.max_key_bytes], b"v".to_vec());
    store.commit(longest).expect("a key at the limit");
}

/// Many keys read in one call come back in the order asked, absent ones as `None`, a key
/// asked twice twice, as single reads would give them.
pub fn get_many_answers_in_order<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    put(&store, b"b", b"2");
    put(&store, b"a", b"1");
    let keys: [&[u8]; 4] = [b"b", b"missing", b"a", b"b"];
    let values = store.get_many(&keys).expect("get_many");
    let singles: Vec<Option<Vec<u8>>> = keys
        .iter()
        .map(|key| store.get(key).expect("get"))
        .collect();
    assert_eq!(
        values,
        vec![
            Some(b"2".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"2".to_vec())
        ]
    );
    assert_eq!(values, singles);
    assert_eq!(
        store.get_many(&[]).expect("nothing asked"),
        Vec::<Option<Vec<u8>>>::new()
    );
}

/// A failed write poisons the store: that commit and every later one is refused, reads go on.
pub fn failed_write_poisons<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    put(&store, b"before", b"1");
    harness.inject_write_failures(&store, 1);
    let mut batch = WriteBatch::new();
    batch.put(b"during".to_vec(), b"2".to_vec());
    assert!(
        store
            .commit(batch)
            .expect_err("injected failure")
            .is_poisoned()
    );
    let mut later = WriteBatch::new();
    later.put(b"after".to_vec(), b"3".to_vec());
    assert!(store.commit(later).expect_err("poisoned").is_poisoned());
    assert!(store.check_writable().is_err());
    assert_eq!(
        store.get(b"before").expect("reads still work"),
        Some(b"1".to_vec())
    );
    assert_eq!(store.get(b"after").expect("get"), None);
}

/// Committed batches survive closing and reopening the store.
pub fn commits_survive_reopen<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    for i in 0u32..200 {
        put(&store, &i.to_be_bytes(), &[7; 100]);
    }
    let mut batch = WriteBatch::new();
    batch.delete_range(10u32.to_be_bytes().to_vec(), 20u32.to_be_bytes().to_vec());
    store.commit(batch).expect("delete range");
    let before: Vec<_> = store.scan(&[], &[0xff; 8], usize::MAX).expect("scan");
    let Some(reopened) = harness.reopen(store) else {
        return;
    };
    let after: Vec<_> = reopened.scan(&[], &[0xff; 8], usize::MAX).expect("scan");
    assert_eq!(before.len(), 190);
    assert_eq!(before, after);
}
/// A condition used as a fence: two writers race to move an epoch from `n` to `n + 1`, each
/// with a write of its own; exactly one commits, and the loser's write is nowhere. On a
/// shared backend the two writers are independent clients, as two nodes would be.
pub fn fences_let_one_racing_writer_through<H: Harness>(harness: &mut H) {
    let first = harness.fresh();
    let second = harness.second_client(&first);
    let store: Arc<dyn Store> = Arc::new(first);
    let other: Arc<dyn Store> = match second {
        Some(second) => Arc::new(second),
        None => Arc::clone(&store),
    };
    put(store.as_ref(), b"epoch", &0u32.to_be_bytes());
    for round in 0u32..12 {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = (0u8..2)
            .map(|writer| {
                let store = Arc::clone(if writer == 0 { &store } else { &other });
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut batch = WriteBatch::new();
                    batch.require(Condition::Equals(
                        b"epoch".to_vec(),
                        round.to_be_bytes().to_vec(),
                    ));
                    batch.put(b"epoch".to_vec(), (round + 1).to_be_bytes().to_vec());
                    batch.put(
                        [&b"won-"[..], &[writer], &round.to_be_bytes()].concat(),
                        b"1".to_vec(),
                    );
                    barrier.wait();
                    store.commit(batch)
                })
            })
            .collect();
        let results: Vec<Result<(), StoreError>> = racers
            .into_iter()
            .map(|racer| racer.join().expect("racer thread"))
            .collect();
        let winners: Vec<u8> = (0u8..2).filter(|&w| results[w as usize].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = 1 - winners[0];
        assert!(
            matches!(
                results[loser as usize],
                Err(StoreError::ConditionFailed { ref key }) if key == b"epoch"
            ),
            "round {round}: {results:?}"
        );
        let written = |writer: u8| {
            store
                .get(&[&b"won-"[..], &[writer], &round.to_be_bytes()].concat())
                .expect("get")
        };
        assert!(written(winners[0]).is_some());
        assert_eq!(written(loser), None, "the loser wrote nothing");
        assert_eq!(
            store.get(b"epoch").expect("get"),
            Some((round + 1).to_be_bytes().to_vec())
        );
    }
}

/// Scans made while batches rewrite every key of the range see each batch whole or not at
/// all: all keys, in order, each with the same version, across more keys than one page.
pub fn scans_see_whole_batches_during_writes<H: Harness>(harness: &mut H) {
    const KEYS: u32 = 5000;
    const VERSIONS: u32 = 12;
    let store: Arc<dyn Store> = Arc::new(harness.fresh());
    let rewrite = |store: &dyn Store, version: u32| {
        let mut batch = WriteBatch::new();
        for i in 0..KEYS {
            batch.put(
                [&b"s"[..], &i.to_be_bytes()].concat(),
                version.to_be_bytes().to_vec(),
            );
        }
        store.commit(batch).expect("rewrite the range");
    };
    rewrite(store.as_ref(), 0);
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for version in 1..=VERSIONS {
                rewrite(store.as_ref(), version);
            }
        })
    };
    let mut versions_seen = std::collections::BTreeSet::new();
    loop {
        let done = writer.is_finished();
        let pairs = store.scan(b"s", b"t", usize::MAX).expect("scan");
        assert_eq!(pairs.len(), KEYS as usize, "every key, once");
        assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
        let version = &pairs[0].1;
        assert!(
            pairs.iter().all(|(_, v)| v == version),
            "one batch's values, not a mix"
        );
        versions_seen.insert(version.clone());
        if done {
            break;
        }
    }
    writer.join().expect("writer thread");
    assert!(versions_seen.contains(VERSIONS.to_be_bytes().as_slice()));
}

/// A commit whose answer is lost is resolved by its id: applied, it answers `Ok` and is in
/// the store once; not applied, it answers UNAVAILABLE with nothing of it there, or is
/// applied now, once; the next commit goes through. Skipped where an outcome cannot be
/// unknown.
pub fn unknown_outcomes_are_resolved<H: Harness>(harness: &mut H) {
    let store = harness.fresh();
    if !harness.lose_next_commit_answer(&store, true) {
        return;
    }
    // Applied: `Ok`, and not applied twice (a blind retry would fail its own condition).
    let mut applied = WriteBatch::new();
    applied.require(Condition::Absent(b"applied".to_vec()));
    applied.put(b"applied".to_vec(), b"1".to_vec());
    store
        .commit(applied)
        .expect("a lost answer of an applied commit resolves to Ok");
    assert_eq!(store.get(b"applied").expect("get"), Some(b"1".to_vec()));

    // Not applied: the backend either says so (UNAVAILABLE, nothing of it there) or applies
    // it now, exactly once; a condition that held for the lost attempt holds for the retry.
    assert!(harness.lose_next_commit_answer(&store, false));
    let mut lost = WriteBatch::new();
    lost.require(Condition::Absent(b"lost".to_vec()));
    lost.put(b"lost".to_vec(), b"2".to_vec());
    match store.commit(lost) {
        Ok(()) => assert_eq!(store.get(b"lost").expect("get"), Some(b"2".to_vec())),
        Err(error) => {
            assert!(error.is_transient(), "{error}");
            assert_eq!(store.get(b"lost").expect("get"), None);
        }
    }

    put(&store, b"after", b"3");
    assert_eq!(store.get(b"after").expect("get"), Some(b"3".to_vec()));
}

/// Many writers through one group committer: every acknowledged batch is visible, in order
/// per writer.
pub fn group_commit_acknowledges_durable_batches<H: Harness>(harness: &mut H) {
    let store: Arc<dyn Store> = Arc::new(harness.fresh());
    let committer =
        GroupCommitter::start(Arc::clone(&store), GroupCommitConfig::default()).expect("start");
    let writers: Vec<_> = (0u8..4)
        .map(|writer| {
            let committer = committer.clone();
            std::thread::spawn(move || {
                let mut tickets = Vec::new();
                for i in 0u32..250 {
                    let mut batch = WriteBatch::new();
                    let key = [&[writer][..], &i.to_be_bytes()].concat();
                    batch.put(key, i.to_be_bytes().to_vec());
                    // Each writer also overwrites one shared key per writer: the last write wins.
                    batch.put(vec![b'L', writer], i.to_be_bytes().to_vec());
                    tickets.push(committer.submit_blocking(batch));
                }
                tickets.into_iter().all(|t| t.wait_blocking().is_ok())
            })
        })
        .collect();
    for writer in writers {
        assert!(writer.join().expect("writer thread"));
    }
    for writer in 0u8..4 {
        assert_eq!(
            store.get(&[b'L', writer]).expect("get"),
            Some(249u32.to_be_bytes().to_vec())
        );
        let rows = store
            .scan(&[writer], &[writer + 1], usize::MAX)
            .expect("scan");
        assert_eq!(rows.len(), 250);
    }
    committer.shutdown();
}

/// Writers that wait for each batch, through a committer of four lanes: every batch is
/// acknowledged and visible, and each writer's last write is the one that stays.
pub fn group_commit_lanes_acknowledge_waiting_writers<H: Harness>(harness: &mut H) {
    let store: Arc<dyn Store> = Arc::new(harness.fresh());
    let committer = GroupCommitter::start(
        Arc::clone(&store),
        GroupCommitConfig {
            lanes: 4,
            ..GroupCommitConfig::default()
        },
    )
    .expect("start");
    let writers: Vec<_> = (0u8..6)
        .map(|writer| {
            let committer = committer.clone();
            std::thread::spawn(move || {
                for i in 0u32..60 {
                    let mut batch = WriteBatch::new();
                    batch.put(
                        [&[b'w', writer][..], &i.to_be_bytes()].concat(),
                        vec![writer],
                    );
                    batch.put(vec![b'L', writer], i.to_be_bytes().to_vec());
                    committer
                        .submit_blocking(batch)
                        .wait_blocking()
                        .expect("acknowledged");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
    committer.shutdown();
    for writer in 0u8..6 {
        assert_eq!(
            store.get(&[b'L', writer]).expect("get"),
            Some(59u32.to_be_bytes().to_vec())
        );
        let rows = store
            .scan(&[b'w', writer], &[b'w', writer + 1], usize::MAX)
            .expect("scan");
        assert_eq!(rows.len(), 60);
    }
}

/// One operation of the random model check.
#[derive(Clone, Debug)]
pub enum ModelOperation {
    /// Put a key (index into a small key space) to a value.
    Put(u8, u8),
    /// Delete a key.
    Delete(u8),
    /// Delete a key range.
    DeleteRange(u8, u8),
}

/// Applies random batches to the backend and to a `BTreeMap` model and compares them after
/// each batch: point reads, and full and partial scans.
pub fn matches_model<H: Harness>(harness: &mut H, batches: &[Vec<ModelOperation>]) {
    let store = harness.fresh();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let key = |k: u8| vec![b'm', k];
    for operations in batches {
        let mut batch = WriteBatch::new();
        for operation in operations {
            match *operation {
                ModelOperation::Put(k, v) => {
                    batch.put(key(k), vec![v]);
                    model.insert(key(k), vec![v]);
                }
                ModelOperation::Delete(k) => {
                    batch.delete(key(k));
                    model.remove(&key(k));
                }
                ModelOperation::DeleteRange(a, b) => {
                    batch.delete_range(key(a), key(b));
                    if a < b {
                        let doomed: Vec<_> = model
                            .range(key(a)..key(b))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            model.remove(&k);
                        }
                    }
                }
            }
        }
        store.commit(batch).expect("commit");
        let all: BTreeMap<_, _> = store
            .scan(b"m", b"n", usize::MAX)
            .expect("scan")
            .into_iter()
            .collect();
        assert_eq!(all, model);
        let partial = store.scan(&key(8), &key(24), 3).expect("scan");
        let expected: Vec<_> = model
            .range(key(8)..key(24))
            .take(3)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(partial, expected);
    }
}

/// The proptest strategy for [`matches_model`].
pub fn model_batches() -> impl proptest::strategy::Strategy<Value = Vec<Vec<ModelOperation>>> {
    use proptest::prelude::*;
    let operation = prop_oneof![
        4 => (0u8..32, any::<u8>()).prop_map(|(k, v)| ModelOperation::Put(k, v)),
        2 => (0u8..32).prop_map(ModelOperation::Delete),
        1 => (0u8..32, 0u8..32).prop_map(|(a, b)| ModelOperation::DeleteRange(a, b)),
    ];
    proptest::collection::vec(proptest::collection::vec(operation, 0..12), 1..8)
}

/// Expands to one `#[test]` per conformance check for the harness built by `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        #[test]
        fn point_operations() {
            $crate::conformance::point_operations(&mut $make);
        }
        #[test]
        fn ordered_scans() {
            $crate::conformance::ordered_scans(&mut $make);
        }
        #[test]
        fn batch_operations_apply_in_order() {
            $crate::conformance::batch_operations_apply_in_order(&mut $make);
        }
        #[test]
        fn conditions_are_atomic() {
            $crate::conformance::conditions_are_atomic(&mut $make);
        }
        #[test]
        fn limits_are_enforced() {
            $crate::conformance::limits_are_enforced(&mut $make);
        }
        #[test]
        fn get_many_answers_in_order() {
            $crate::conformance::get_many_answers_in_order(&mut $make);
        }
        #[test]
        fn failed_write_poisons() {
            $crate::conformance::failed_write_poisons(&mut $make);
        }
        #[test]
        fn commits_survive_reopen() {
            $crate::conformance::commits_survive_reopen(&mut $make);
        }
        #[test]
        fn group_commit_acknowledges_durable_batches() {
            $crate::conformance::group_commit_acknowledges_durable_batches(&mut $make);
        }
        #[test]
        fn group_commit_lanes_acknowledge_waiting_writers() {
            $crate::conformance::group_commit_lanes_acknowledge_waiting_writers(&mut $make);
        }
        #[test]
        fn fences_let_one_racing_writer_through() {
            $crate::conformance::fences_let_one_racing_writer_through(&mut $make);
        }
        #[test]
        fn scans_see_whole_batches_during_writes() {
            $crate::conformance::scans_see_whole_batches_during_writes(&mut $make);
        }
        #[test]
        fn unknown_outcomes_are_resolved() {
            $crate::conformance::unknown_outcomes_are_resolved(&mut $make);
        }
        /// One harness for all cases: a fresh store per case, not a fresh server.
        #[test]
        fn matches_model() {
            let harness = std::cell::RefCell::new($make);
            let mut runner = proptest::test_runner::TestRunner::new(
                proptest::test_runner::Config::with_cases(64),
            );
            let outcome = runner.run(&$crate::conformance::model_batches(), |batches| {
                $crate::conformance::matches_model(&mut *harness.borrow_mut(), &batches);
                Ok(())
            });
            if let Err(failure) = outcome {
                panic!("{failure}");
            }
        }
    };
}
