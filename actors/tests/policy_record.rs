//! The decision policy's record, shared through the store by every engine of a grid: a change
//! made through one is applied by the others when they read it, two changes made at once both
//! land (each conditioned on what it read), and a drift fallback measured by one is written
//! for all.

use std::sync::Arc;

use stockgrid_actors::domain::Surface;
use stockgrid_actors::time::{SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_storage::{MemoryStore, Store};

async fn engine(store: &Arc<dyn Store>) -> Engine {
    Engine::start(
        Arc::clone(store),
        Arc::new(SimulatedClock::starting_at(Timestamp(1_772_445_600_000))),
        EngineConfig::default(),
    )
    .await
    .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_through_one_engine_is_applied_by_the_others() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (first, second) = (engine(&store).await, engine(&store).await);
    assert_eq!(second.sync_policy().await.expect("sync"), 0);

    let changed = first
        .change_policy(|record| record.switch_to_rules(Some(Surface::Pickup), Some("east"), true))
        .await
        .expect("change")
        .expect("written");
    assert_eq!(changed.version, 1);
    assert_eq!(first.decisions().snapshot().rules_regions, vec!["east"]);
    // The other engine answers by its own switches until it reads the record.
    assert!(second.decisions().snapshot().rules_regions.is_empty());
    assert_eq!(second.sync_policy().await.expect("sync"), 1);
    let applied = second.decisions().snapshot();
    assert_eq!(applied.rules_regions, vec!["east"]);
    assert_eq!(applied.rules_surfaces, vec![Surface::Pickup]);
    assert_eq!(applied.version, 1);

    // Two changes at once, through both: both land, one after the other.
    let (a, b) = tokio::join!(
        first.change_policy(|record| record.switch_to_rules(None, Some("west"), true)),
        second.change_policy(|record| record.switch_to_rules(None, Some("north"), true)),
    );
    a.expect("a").expect("written");
    b.expect("b").expect("written");
    first.sync_policy().await.expect("sync");
    second.sync_policy().await.expect("sync");
    for engine in [&first, &second] {
        let snapshot = engine.decisions().snapshot();
        assert_eq!(snapshot.version, 3);
        assert_eq!(snapshot.rules_regions, vec!["east", "north", "west"]);
    }
    // Switching a region back is a change like any other; a refused change writes nothing.
    first
        .change_policy(|record| record.switch_to_rules(None, Some("east"), false))
        .await
        .expect("change")
        .expect("written");
    assert!(
        first
            .change_policy(|_| false)
            .await
            .expect("refused")
            .is_none()
    );
    second.sync_policy().await.expect("sync");
    assert_eq!(
        second.decisions().snapshot().rules_regions,
        vec!["north", "west"]
    );
    assert_eq!(second.decisions().snapshot().version, 4);

    // A restarted engine starts from the record.
    let third = engine(&store).await;
    assert_eq!(third.sync_policy().await.expect("sync"), 4);
    assert_eq!(
        third.decisions().snapshot().rules_surfaces,
        vec![Surface::Pickup]
    );
}
