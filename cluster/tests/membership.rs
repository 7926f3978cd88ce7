//! Membership loops of several in-process engines over one store, on short timings: every
//! partition gets exactly one owner and the nodes share them; a node that stops renewing is
//! expired and its partitions claimed at a higher epoch (and it stops answering once its
//! lease runs out); a node that leaves hands everything off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockgrid_actors::keys;
use stockgrid_actors::ownership::Ownership;
use stockgrid_actors::time::{SimulatedClock, Timestamp, WallClock};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_cluster::node::{ClusterConfig, ClusterNode};
use stockgrid_cluster::placement::{self, Candidate};
use stockgrid_cluster::records::{GridTable, MemberState};
use stockgrid_storage::{MemoryStore, Store};

const T0: Timestamp = Timestamp(1_772_445_600_000);

fn fast(node_id: &str) -> ClusterConfig {
    ClusterConfig {
        lease: Duration::from_millis(900),
        heartbeat: Duration::from_millis(100),
        lease_margin: Duration::from_millis(200),
        max_moves_per_round: 512,
        ..ClusterConfig::new("test", node_id, "east", &format!("{node_id}:1"))
    }
}

async fn start(store: &Arc<dyn Store>, node_id: &str) -> (Engine, ClusterNode) {
    let engine = Engine::start_owning(
        Arc::clone(store),
        Arc::new(SimulatedClock::starting_at(T0)),
        EngineConfig::default(),
        Ownership::grid(keys::SCHEME.count()),
    )
    .await
    .expect("engine");
    let node = ClusterNode::start(
        engine.clone(),
        Arc::clone(store),
        fast(node_id),
        Arc::new(WallClock),
    )
    .expect("cluster node");
    (engine, node)
}

/// Partitions owned per node id in the store, and partitions without an owner.
fn owners(store: &dyn Store) -> (HashMap<String, Vec<u16>>, usize) {
    let table = GridTable::read(store, keys::SCHEME.count()).expect("table");
    let mut by_node: HashMap<String, Vec<u16>> = HashMap::new();
    let mut unowned = 0;
    for (partition, stored) in table.owners.iter().enumerate() {
        match stored.as_ref().and_then(|s| s.record.owner.as_ref()) {
            Some(owner) => by_node
                .entry(owner.node_id.clone())
                .or_default()
                .push(partition as u16),
            None => unowned += 1,
        }
    }
    (by_node, unowned)
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every partition is owned by its rendezvous target among `live` (no catalog: no regions).
fn placed(store: &dyn Store, live: &[&str]) -> bool {
    let candidates: Vec<Candidate> = live
        .iter()
        .map(|node_id| Candidate {
            node_id,
            region: "east",
        })
        .collect();
    let table = GridTable::read(store, keys::SCHEME.count()).expect("table");
    table.owners.iter().enumerate().all(|(partition, stored)| {
        let owner = stored
            .as_ref()
            .and_then(|s| s.record.owner.as_ref())
            .map(|owner| owner.node_id.as_str());
        owner == placement::target(partition as u16, &candidates, None)
    })
}

/// The store's table and each engine's ownership agree: an engine serves exactly the
/// partitions the store gives it.
fn agrees(store: &dyn Store, engines: &[(&str, &Engine)]) -> bool {
    let (by_node, unowned) = owners(store);
    unowned == 0
        && engines.iter().all(|(node_id, engine)| {
            let mut served: Vec<u16> = engine
                .ownership()
                .owned()
                .into_iter()
                .map(|(partition, _)| partition)
                .filter(|&partition| engine.ownership().serves(partition))
                .collect();
            served.sort_unstable();
            by_node.get(*node_id).cloned().unwrap_or_default() == served
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_shared_failed_over_and_handed_off() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (a, node_a) = start(&store, "a").await;
    let (b, node_b) = start(&store, "b").await;
    let (c, node_c) = start(&store, "c").await;
    wait_for(
        "three nodes to own what placement gives them",
        Duration::from_secs(60),
        || {
            placed(store.as_ref(), &["a", "b", "c"])
                && agrees(store.as_ref(), &[("a", &a), ("b", &b), ("c", &c)])
        },
    )
    .await;
    let (by_node, _) = owners(store.as_ref());
    for (node, partitions) in &by_node {
        // Rendezvous over three nodes: about a third each.
        assert!(
            partitions.len() > 1000 && partitions.len() < 1750,
            "{node} owns {}",
            partitions.len()
        );
    }
    let epochs_before: Vec<u64> = GridTable::read(store.as_ref(), keys::SCHEME.count())
        .expect("table")
        .owners
        .iter()
        .map(|stored| stored.as_ref().map_or(0, |s| s.record.epoch))
        .collect();

    // c stops renewing (a crash, as far as the others can tell).
    let c_partitions = by_node["c"].clone();
    let stopped = Instant::now();
    drop(node_c);
    wait_for("c to stop answering", Duration::from_secs(5), || {
        !c.ownership().serves(c_partitions[0])
    })
    .await;
    let stopped_answering = stopped.elapsed();
    wait_for(
        "a and b to take c's partitions",
        Duration::from_secs(60),
        || {
            let (by_node, _) = owners(store.as_ref());
            !by_node.contains_key("c") && agrees(store.as_ref(), &[("a", &a), ("b", &b)])
        },
    )
    .await;
    let failed_over = stopped.elapsed();
    assert!(
        stopped_answering < failed_over,
        "c stopped answering ({stopped_answering:?}) before its partitions moved ({failed_over:?})"
    );
    let table = GridTable::read(store.as_ref(), keys::SCHEME.count()).expect("table");
    assert_eq!(
        table.member("c").map(|m| m.record.state),
        Some(MemberState::Expired)
    );
    for &partition in &c_partitions {
        let epoch = table.owners[usize::from(partition)]
            .as_ref()
            .expect("owned")
            .record
            .epoch;
        assert!(
            epoch > epochs_before[usize::from(partition)],
            "partition {partition}"
        );
    }

    // b leaves: a ends up with everything, and b's record is gone.
    node_b.leave(Duration::from_secs(30)).await;
    assert!(b.ownership().owned().is_empty());
    wait_for("a to own everything", Duration::from_secs(60), || {
        let (by_node, _) = owners(store.as_ref());
        by_node.len() == 1 && agrees(store.as_ref(), &[("a", &a)])
    })
    .await;
    let table = GridTable::read(store.as_ref(), keys::SCHEME.count()).expect("table");
    assert!(table.member("b").is_none());
    drop(node_a);
    eprintln!("c stopped answering after {stopped_answering:?}; failed over after {failed_over:?}");
}
