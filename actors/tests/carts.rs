//! A cart whose lines have two owners, as a grid's coordinating node drives it: each owner
//! holds its own line, the record is created only once both are held (and only once), and
//! the owners' reapers expire it and free both lines, whichever runs first or both at once;
//! a cart committed to a later deadline keeps its holds past the first one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source, Surface};
use stockgrid_actors::keys;
use stockgrid_actors::ownership::Ownership;
use stockgrid_actors::reservation::{
    ReservationLine, ReservationRecord, ReservationState, reservation_id_for,
};
use stockgrid_actors::time::{Clock, MINUTE_MS, SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_storage::{MemoryStore, Store, WriteBatch};

const T0: Timestamp = Timestamp(1_772_445_600_000);

struct Owners {
    clock: SimulatedClock,
    first: (Engine, PairKey),
    second: (Engine, PairKey),
}

/// Two engines of one store, each owning the partition of one pair, with 10 units counted.
async fn owners() -> Owners {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let clock = SimulatedClock::starting_at(T0);
    let first_pair = PairKey::new(1, 10);
    let second_pair = (11..)
        .map(|location| PairKey::new(1, location))
        .find(|pair| keys::partition_of(*pair) != keys::partition_of(first_pair))
        .expect("another partition");
    let mut engines = Vec::new();
    for (name, pair) in [("a", first_pair), ("b", second_pair)] {
        let engine = Engine::start_owning(
            Arc::clone(&store),
            Arc::new(clock.clone()),
            EngineConfig::default(),
            Ownership::grid(keys::SCHEME.count()),
        )
        .await
        .expect("start");
        let partition = keys::partition_of(pair);
        let record = format!("{name}@1").into_bytes();
        let mut batch = WriteBatch::new();
        batch.put(keys::owner_key(partition), record.clone());
        store.commit(batch).expect("claim");
        engine
            .adopt_partition(partition, 1, record)
            .await
            .expect("adopt");
        engine
            .ownership()
            .renew_lease(Instant::now() + Duration::from_secs(3_600));
        let count = Arrival {
            event: Event::new(
                format!("count-{name}"),
                Source::StoreInventory,
                EventKind::Count,
                pair,
                10,
                T0,
            ),
            arrival_time: T0,
        };
        let results = engine.ingest(vec![count]).await.expect("count");
        assert!(results[0].is_ok(), "{results:?}");
        engines.push((engine, pair));
    }
    let second = engines.pop().expect("b");
    let first = engines.pop().expect("a");
    Owners {
        clock,
        first,
        second,
    }
}

async fn reserved(owner: &(Engine, PairKey)) -> i32 {
    owner
        .0
        .read_view(owner.1)
        .await
        .expect("view")
        .map_or(0, |view| view.reserved_units)
}

/// Holds both lines, each at its owner, and creates the record: what the coordinator does.
async fn reserve_across(owners: &Owners, request_id: &str, ttl_ms: i64) -> ReservationRecord {
    let reservation_id = reservation_id_for(request_id);
    let deadline = owners.clock.now().plus_ms(ttl_ms);
    let lines = vec![
        ReservationLine {
            pair: owners.first.1,
            quantity: 2,
        },
        ReservationLine {
            pair: owners.second.1,
            quantity: 1,
        },
    ];
    for (index, (engine, _)) in [&owners.first, &owners.second].into_iter().enumerate() {
        engine
            .hold_lines(
                &reservation_id,
                vec![(index, lines[index])],
                Surface::Pickup,
                deadline,
            )
            .await
            .expect("hold");
    }
    let record = ReservationRecord {
        reservation_id: reservation_id.clone(),
        request_id: request_id.to_owned(),
        surface: Surface::Pickup,
        lines,
        state: ReservationState::Pending,
        created: owners.clock.now(),
        deadline,
        release_reason: None,
    };
    assert!(
        owners
            .first
            .0
            .write_reservation(&record, None)
            .await
            .expect("create")
    );
    // A second coordinator of the same request finds it created.
    assert!(
        !owners
            .second
            .0
            .write_reservation(&record, None)
            .await
            .expect("create again")
    );
    record
}

async fn reap_both_at_once(owners: &Owners) {
    let (first, second) = tokio::join!(
        owners.first.0.expire_reservations(),
        owners.second.0.expire_reservations()
    );
    first.expect("reap a");
    second.expect("reap b");
}

fn state(owners: &Owners, reservation_id: &str) -> ReservationState {
    owners
        .first
        .0
        .load_reservation(reservation_id)
        .expect("load")
        .expect("a record")
        .record
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_reapers_expire_a_cart_across_them_and_free_both_lines() {
    let owners = owners().await;
    let record = reserve_across(&owners, "cart", MINUTE_MS).await;
    assert_eq!(
        (
            reserved(&owners.first).await,
            reserved(&owners.second).await
        ),
        (2, 1)
    );
    // Before the deadline nothing moves.
    reap_both_at_once(&owners).await;
    assert_eq!(
        (
            reserved(&owners.first).await,
            reserved(&owners.second).await
        ),
        (2, 1)
    );

    owners.clock.advance_to(T0.plus_ms(2 * MINUTE_MS));
    reap_both_at_once(&owners).await;
    assert_eq!(
        state(&owners, &record.reservation_id),
        ReservationState::Expired
    );
    assert_eq!(
        (
            reserved(&owners.first).await,
            reserved(&owners.second).await
        ),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_committed_to_a_later_deadline_keeps_its_holds_until_then() {
    let owners = owners().await;
    let record = reserve_across(&owners, "committed", MINUTE_MS).await;
    let stored = owners
        .first
        .0
        .load_reservation(&record.reservation_id)
        .expect("load")
        .expect("a record");
    let mut committed = stored.record.clone();
    committed.state = ReservationState::Committed;
    committed.deadline = T0.plus_ms(60 * MINUTE_MS);
    assert!(
        owners
            .second
            .0
            .write_reservation(&committed, Some(&stored.bytes))
            .await
            .expect("commit")
    );
    // Past the pending deadline: the owners index their lines again at the committed one.
    owners.clock.advance_to(T0.plus_ms(2 * MINUTE_MS));
    reap_both_at_once(&owners).await;
    assert_eq!(
        state(&owners, &record.reservation_id),
        ReservationState::Committed
    );
    assert_eq!(
        (
            reserved(&owners.first).await,
            reserved(&owners.second).await
        ),
        (2, 1)
    );
    // Past the committed deadline, one owner's reaper after the other.
    owners.clock.advance_to(T0.plus_ms(61 * MINUTE_MS));
    owners.second.0.expire_reservations().await.expect("reap b");
    assert_eq!(
        state(&owners, &record.reservation_id),
        ReservationState::Expired
    );
    assert_eq!(reserved(&owners.second).await, 0);
    owners.first.0.expire_reservations().await.expect("reap a");
    assert_eq!(
        (
            reserved(&owners.first).await,
            reserved(&owners.second).await
        ),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_whose_call_never_recorded_them_are_tombstoned_then_freed() {
    let owners = owners().await;
    let reservation_id = reservation_id_for("lost-coordinator");
    let deadline = T0.plus_ms(MINUTE_MS);
    for (index, (engine, pair)) in [&owners.first, &owners.second].into_iter().enumerate() {
        let line = ReservationLine {
            pair: *pair,
            quantity: 1,
        };
        engine
            .hold_lines(
                &reservation_id,
                vec![(index, line)],
                Surface::Pickup,
                deadline,
            )
            .await
            .expect("hold");
    }
    owners.clock.advance_to(T0.plus_ms(2 * MINUTE_MS));
    reap_both_at_once(&owners).await;
    assert_eq!(
        (
            reserved(&owners.first).await,
            reserved(&owners.second).await
        ),
        (0, 0)
    );
    assert_eq!(state(&owners, &reservation_id), ReservationState::Expired);
    // A coordinator that comes back late cannot record the reservation any more.
    let late = ReservationRecord {
        reservation_id: reservation_id.clone(),
        request_id: "lost-coordinator".to_owned(),
        surface: Surface::Pickup,
        lines: Vec::new(),
        state: ReservationState::Pending,
        created: T0,
        deadline,
        release_reason: None,
    };
    assert!(
        !owners
            .first
            .0
            .write_reservation(&late, None)
            .await
            .expect("write")
    );
}
