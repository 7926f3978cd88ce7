//! An engine of a grid node: it answers and writes only for the partitions granted to it,
//! only under a valid lease, and a batch of a partition another node has claimed since is
//! refused by the store (fencing), leaving nothing behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source, Surface};
use stockgrid_actors::keys;
use stockgrid_actors::ledger::Outcome;
use stockgrid_actors::ownership::Ownership;
use stockgrid_actors::time::{SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig, EngineError};
use stockgrid_storage::{MemoryStore, Store, WriteBatch};

const T0: Timestamp = Timestamp(1_772_445_600_000);

fn receipt(id: &str, pair: PairKey, quantity: i64) -> Arrival {
    Arrival {
        event: Event::new(
            id,
            Source::Receiving,
            EventKind::Receipt,
            pair,
            quantity,
            T0,
        ),
        arrival_time: T0,
    }
}

/// Two pairs in different partitions.
fn two_pairs() -> (PairKey, PairKey) {
    let first = PairKey::new(1, 10);
    let second = (11..)
        .map(|location| PairKey::new(1, location))
        .find(|pair| keys::partition_of(*pair) != keys::partition_of(first))
        .expect("another partition");
    (first, second)
}

async fn grid_engine(store: Arc<dyn Store>) -> Engine {
    let clock = Arc::new(SimulatedClock::starting_at(T0));
    Engine::start_owning(
        store,
        clock,
        EngineConfig::default(),
        Ownership::grid(keys::SCHEME.count()),
    )
    .await
    .expect("start")
}

/// Writes `partition`'s ownership record as a claim would, and grants it to the engine.
async fn claim(store: &dyn Store, engine: &Engine, partition: u16, record: &[u8], epoch: u64) {
    let mut batch = WriteBatch::new();
    batch.put(keys::owner_key(partition), record.to_vec());
    store.commit(batch).expect("claim");
    engine
        .adopt_partition(partition, epoch, record.to_vec())
        .await
        .expect("adopt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_node_answers_only_for_its_partitions_and_is_fenced_once_they_are_claimed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let engine = grid_engine(Arc::clone(&store)).await;
    let (mine, theirs) = two_pairs();
    let (my_partition, their_partition) = (keys::partition_of(mine), keys::partition_of(theirs));
    claim(store.as_ref(), &engine, my_partition, b"me@1", 1).await;
    engine
        .ownership()
        .renew_lease(Instant::now() + Duration::from_secs(600));

    let results = engine
        .ingest(vec![receipt("r1", mine, 5), receipt("r2", theirs, 5)])
        .await
        .expect("ingest");
    assert_eq!(results[0].as_ref().ok(), Some(&Outcome::Applied));
    assert!(
        matches!(results[1], Err(EngineError::NotOwner { partition }) if partition == their_partition),
        "{results:?}"
    );
    assert!(
        engine
            .decide(mine, 1, Surface::ItemPage, false)
            .await
            .is_ok()
    );
    assert!(matches!(
        engine.decide(theirs, 1, Surface::ItemPage, false).await,
        Err(EngineError::NotOwner { .. })
    ));
    assert_eq!(
        store.get(&keys::snapshot_key(theirs)).expect("read"),
        None,
        "nothing written for a partition not owned"
    );

    // Without a valid lease, nothing is answered, not even for its own partition.
    engine.ownership().drop_lease();
    assert!(matches!(
        engine.decide(mine, 1, Surface::ItemPage, false).await,
        Err(EngineError::NotOwner { .. })
    ));
    engine
        .ownership()
        .renew_lease(Instant::now() + Duration::from_secs(600));

    // Another node claims the partition (the epoch moves): the next batch is refused by the
    // store, and the node stops answering for it.
    let mut moved = WriteBatch::new();
    moved.put(keys::owner_key(my_partition), b"other@2".to_vec());
    store.commit(moved).expect("the other node's claim");
    let log_before = store
        .scan(
            &keys::log_prefix(mine),
            &keys::prefix_end(&keys::log_prefix(mine)),
            100,
        )
        .expect("scan")
        .len();
    let results = engine
        .ingest(vec![receipt("r3", mine, 7)])
        .await
        .expect("ingest");
    assert!(
        matches!(results[0], Err(EngineError::NotOwner { partition }) if partition == my_partition),
        "{results:?}"
    );
    let log_after = store
        .scan(
            &keys::log_prefix(mine),
            &keys::prefix_end(&keys::log_prefix(mine)),
            100,
        )
        .expect("scan")
        .len();
    assert_eq!(log_before, log_after, "the fenced batch left nothing");
    assert!(!engine.ownership().serves(my_partition));
    assert!(matches!(
        engine.decide(mine, 1, Surface::ItemPage, false).await,
        Err(EngineError::NotOwner { .. })
    ));
    engine.shutdown().await.expect("shutdown");
}

/// A hand-off snapshots the partition's resident pairs, stops answering for it, and the next
/// owner (another engine over the same store) answers exactly what the first one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_leaves_the_next_owner_answering_the_same() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let first = grid_engine(Arc::clone(&store)).await;
    let (pair, _) = two_pairs();
    let partition = keys::partition_of(pair);
    claim(store.as_ref(), &first, partition, b"first@1", 1).await;
    first
        .ownership()
        .renew_lease(Instant::now() + Duration::from_secs(600));
    let results = first
        .ingest(vec![receipt("a", pair, 5), receipt("b", pair, 3)])
        .await
        .expect("ingest");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let before = first.read_view(pair).await.expect("view").expect("seen");
    let snapshotted = first.hand_off_partition(partition).await.expect("hand off");
    assert_eq!(snapshotted, 1);
    assert!(!first.ownership().serves(partition));

    let second = grid_engine(Arc::clone(&store)).await;
    claim(store.as_ref(), &second, partition, b"second@2", 2).await;
    second
        .ownership()
        .renew_lease(Instant::now() + Duration::from_secs(600));
    let after = second.read_view(pair).await.expect("view").expect("seen");
    assert_eq!(before, after);
    // A duplicate is still known to the next owner.
    let again = second
        .ingest(vec![receipt("a", pair, 5)])
        .await
        .expect("ingest");
    assert_eq!(again[0].as_ref().ok(), Some(&Outcome::Duplicate));
    first.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");
}
