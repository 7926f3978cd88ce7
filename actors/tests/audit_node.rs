//! Audit replay of a node's own decision records: every promise a running engine recorded
//! (lookups in ml and rules mode, rules answers from read views, reservation holds) is
//! rebuilt from the engine's event log alone and recomputed bit for bit, across snapshots,
//! log compaction, restarts, reservations, nil picks, short picks and expiries.

use std::sync::Arc;

use stockgrid_actors::audit::{AuditRecord, NodeMoment};
use stockgrid_actors::decision::DecisionMode;
use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source, Surface};
use stockgrid_actors::persist::RebuildBase;
use stockgrid_actors::reservation::{ReleaseReason, ReservationLine, ReserveRequest};
use stockgrid_actors::time::{Clock, HOUR_MS, MINUTE_MS, SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_inference::model::Model;
use stockgrid_storage::{MemoryStore, Store};

const T0: Timestamp = Timestamp(1_772_445_600_000); // 2026-03-02T10:00:00Z

/// A small deterministic generator (xorshift64), so a failure reproduces.
struct Rolls(u64);

impl Rolls {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A short lateness bound and the shortest log retention it allows, and frequent
/// snapshots, so three simulated days compact every pair's log many times over.
fn config() -> EngineConfig {
    let mut config = EngineConfig {
        shard_count: 3,
        snapshot_every_records: 5,
        ..EngineConfig::default()
    };
    config.ledger.lateness_bound_ms = 2 * HOUR_MS;
    config.log_retention_ms = config.identity_retention_ms();
    config
}

async fn start(store: &Arc<MemoryStore>, clock: &SimulatedClock, delivery_rules: bool) -> Engine {
    let store: Arc<dyn Store> = store.clone();
    let engine = Engine::start(store, Arc::new(clock.clone()), config())
        .await
        .expect("start");
    let model = Arc::new(Model::shipped().expect("shipped model"));
    engine.decisions().configure(DecisionMode::Ml, Some(model));
    // Item-page answers are rules from read views; delivery flips between ml and rules.
    engine
        .decisions()
        .switch_to_rules(Some(Surface::ItemPage), None, true);
    engine
        .decisions()
        .switch_to_rules(Some(Surface::Delivery), None, delivery_rules);
    engine.decisions().set_audit_item_page_rate(1.0);
    engine
}

/// What the test knows of each record it caused: its id and when it was made.
struct Made {
    decision_id: String,
    at: Timestamp,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_decision_of_a_node_replays_bit_for_bit_from_its_log() {
    let store = Arc::new(MemoryStore::new());
    let clock = SimulatedClock::starting_at(T0);
    let mut delivery_rules = false;
    let mut engine = start(&store, &clock, delivery_rules).await;
    let pairs: Vec<PairKey> = (1..=4)
        .flat_map(|sku| [PairKey::new(sku, 10), PairKey::new(sku, 11)])
        .collect();
    let mut rolls = Rolls(0x9e37_79b9_7f4a_7c15);
    let mut made: Vec<Made> = Vec::new();
    let mut held: Vec<(String, PairKey, i64)> = Vec::new();
    let steps = 3 * 24 * 60 / 7; // One step every 7 simulated minutes for three days.
    for step in 0..steps {
        let now = T0.plus_ms(step * 7 * MINUTE_MS);
        clock.advance_to(now);
        let pair = pairs[rolls.below(pairs.len() as u64) as usize];
        let event_time = Timestamp(now.0 - rolls.below(20) as i64 * MINUTE_MS);
        let roll = rolls.below(100);
        let ingest = |kind: EventKind, source: Source, quantity: i64, reservation: Option<&str>| {
            let mut event =
                Event::new(format!("e{step}"), source, kind, pair, quantity, event_time);
            event.reservation_id = reservation.map(str::to_owned);
            vec![Arrival {
                event,
                arrival_time: now,
            }]
        };
        match roll {
            0..=39 => {
                let sold = 1 + rolls.below(2) as i64;
                engine
                    .ingest(ingest(EventKind::Sale, Source::Pos, sold, None))
                    .await
                    .expect("ingest");
            }
            40..=49 => {
                let received = 4 + rolls.below(12) as i64;
                engine
                    .ingest(ingest(
                        EventKind::Receipt,
                        Source::Receiving,
                        received,
                        None,
                    ))
                    .await
                    .expect("ingest");
            }
            50..=54 => {
                let counted = rolls.below(25) as i64;
                engine
                    .ingest(ingest(
                        EventKind::Count,
                        Source::StoreInventory,
                        counted,
                        None,
                    ))
                    .await
                    .expect("ingest");
            }
            55..=57 => {
                let snapshot = rolls.below(25) as i64;
                engine
                    .ingest(ingest(EventKind::Snapshot, Source::Wms, snapshot, None))
                    .await
                    .expect("ingest");
            }
            58..=74 => {
                let surface = [Surface::Pickup, Surface::Delivery, Surface::ItemPage]
                    [rolls.below(3) as usize];
                let quantity = 1 + rolls.below(3) as i64;
                let decision_id = format!("d{step}/{}-{}", pair.sku, pair.location);
                engine
                    .decide_recorded(&decision_id, pair, quantity, surface, true)
                    .await
                    .expect("decide and record");
                made.push(Made {
                    decision_id,
                    at: now,
                });
            }
            75..=82 => {
                let quantity = 1 + rolls.below(2) as i64;
                // Delivery holds decide by rules in the shard while delivery is switched.
                let surface = [Surface::Pickup, Surface::Delivery][rolls.below(2) as usize];
                let reserved = engine
                    .reserve(ReserveRequest {
                        request_id: format!("r{step}"),
                        lines: vec![ReservationLine { pair, quantity }],
                        surface,
                        ttl_ms: Some(30 * MINUTE_MS),
                    })
                    .await;
                if let Ok(report) = reserved {
                    let id = report.record.reservation_id.clone();
                    made.push(Made {
                        decision_id: format!("{id}/{}-{}", pair.sku, pair.location),
                        at: now,
                    });
                    held.push((id, pair, quantity));
                }
            }
            83..=87 if !held.is_empty() => {
                let (id, _, _) = held.swap_remove(rolls.below(held.len() as u64) as usize);
                let reason = if rolls.below(2) == 0 {
                    ReleaseReason::ItemNotFound
                } else {
                    ReleaseReason::CustomerCancelled
                };
                let _ = engine.release_reservation(&id, reason).await;
            }
            88..=93 if !held.is_empty() => {
                let (id, at, quantity) = held.swap_remove(rolls.below(held.len() as u64) as usize);
                if engine.commit_reservation(&id, None).await.is_ok() {
                    // A full or a short pick of the held units.
                    let picked = quantity - rolls.below(2) as i64;
                    let mut event = Event::new(
                        format!("p{step}"),
                        Source::Ecom,
                        EventKind::Pick,
                        at,
                        picked.max(1),
                        now,
                    );
                    event.reservation_id = Some(id);
                    engine
                        .ingest(vec![Arrival {
                            event,
                            arrival_time: now,
                        }])
                        .await
                        .expect("ingest pick");
                }
            }
            94..=96 => {
                engine.maintain().await.expect("maintain");
            }
            97 => {
                delivery_rules = !delivery_rules;
                engine
                    .decisions()
                    .switch_to_rules(Some(Surface::Delivery), None, delivery_rules);
            }
            98 => {
                engine.shutdown().await.expect("shutdown");
                engine = start(&store, &clock, delivery_rules).await;
            }
            _ => {}
        }
    }
    let end = clock.now();
    let recent_from = Timestamp(end.0 - config().log_retention_ms);

    let mut identical = 0;
    let mut refused_as_compacted = 0;
    let mut from_checkpoint = 0;
    let mut from_log_start = 0;
    let (mut ml, mut entity_rules, mut views, mut holds) = (0, 0, 0, 0);
    for one in &made {
        let replay = engine
            .replay_decision(&one.decision_id)
            .expect("replay")
            .unwrap_or_else(|| panic!("{} was recorded", one.decision_id));
        let differences = &replay.check.differences;
        if differences.is_empty() {
            identical += 1;
            match replay.base {
                Some(RebuildBase::Checkpoint { .. }) => from_checkpoint += 1,
                Some(RebuildBase::LogStart) => from_log_start += 1,
                None => panic!("{}: identical without a base", one.decision_id),
            }
            let record = engine
                .decision_record(&one.decision_id)
                .expect("read")
                .expect("record");
            if one.decision_id.starts_with("res-") {
                holds += 1;
            }
            match (&record.node, record.decision.mode) {
                (Some(NodeMoment::View), _) => views += 1,
                (_, DecisionMode::Ml) => ml += 1,
                (_, DecisionMode::Rules) => entity_rules += 1,
            }
        } else {
            // Nothing may differ but a rebuild refused because the log was compacted past
            // the decision, and never within the retention.
            assert!(
                differences.iter().all(|d| d.starts_with("rebuild:")),
                "{}: {differences:?}",
                one.decision_id
            );
            assert!(
                one.at < recent_from,
                "{} made within the log retention could not be replayed: {differences:?}",
                one.decision_id
            );
            refused_as_compacted += 1;
        }
    }
    println!(
        "{identical} identical ({from_log_start} from the log start, {from_checkpoint} from a checkpoint; {ml} ml, {entity_rules} rules in the shard, {views} rules from views; {holds} of them holds), {refused_as_compacted} refused as compacted, of {}",
        made.len()
    );
    assert!(from_checkpoint > 0, "no rebuild started from a checkpoint");
    assert!(
        from_log_start > 0,
        "no rebuild started from the log's start"
    );
    assert!(refused_as_compacted > 0, "nothing was ever compacted");
    for (what, count) in [
        ("ml lookups", ml),
        ("rules decisions in the shard (holds)", entity_rules),
        ("rules answers from read views", views),
        ("reservation holds", holds),
    ] {
        assert!(count > 0, "no {what} replayed");
    }
    engine.shutdown().await.expect("shutdown");
}

/// A record altered after the fact is caught: the replay is not a rubber stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_record_does_not_replay_as_identical() {
    let store = Arc::new(MemoryStore::new());
    let clock = SimulatedClock::starting_at(T0);
    let engine = start(&store, &clock, false).await;
    let pair = PairKey::new(7, 10);
    for (index, (kind, quantity)) in [(EventKind::Receipt, 12), (EventKind::Sale, 2)]
        .into_iter()
        .enumerate()
    {
        let time = T0.plus_ms(index as i64 * MINUTE_MS);
        clock.advance_to(time);
        let event = Event::new(format!("a{index}"), Source::Pos, kind, pair, quantity, time);
        engine
            .ingest(vec![Arrival {
                event,
                arrival_time: time,
            }])
            .await
            .expect("ingest");
    }
    let decided = engine
        .decide(pair, 2, Surface::Pickup, true)
        .await
        .expect("decide");
    let id = |name: &str| format!("{name}/{}-{}", pair.sku, pair.location);
    let record = decided.record(
        id("honest"),
        pair,
        2,
        Surface::Pickup,
        engine.decisions().model_version(),
    );
    let mut altered: AuditRecord = record.clone();
    altered.decision_id = id("altered");
    altered.decision.probability += 1e-12;
    let mut moved = record.clone();
    moved.decision_id = id("moved");
    if let Some(NodeMoment::Entity { log_position, .. }) = &mut moved.node {
        *log_position = Some(1); // Before the sale.
    }
    engine
        .record_decisions(&[record, altered, moved])
        .await
        .expect("record");
    let check = |id: &str| {
        engine
            .replay_decision(id)
            .expect("replay")
            .expect("recorded")
            .check
            .differences
    };
    assert_eq!(check(&id("honest")), Vec::<String>::new());
    let differences = check(&id("altered"));
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert!(differences[0].starts_with("answer:"), "{differences:?}");
    let differences = check(&id("moved"));
    assert!(
        differences.iter().any(|d| d.starts_with("inputs digest:")),
        "{differences:?}"
    );
    assert!(
        engine
            .replay_decision("never-made")
            .expect("replay")
            .is_none()
    );
    engine.shutdown().await.expect("shutdown");
}
