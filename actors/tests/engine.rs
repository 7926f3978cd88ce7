//! The engine over real shards: exact recovery from snapshots and log tails, supervision
//! of a panicking shard, passivation, and compaction that keeps the store bounded.

use std::sync::Arc;

use stockgrid_actors::decision::{ReasonCode, SafetyStock};
use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source, Surface};
use stockgrid_actors::keys;
use stockgrid_actors::ledger::{
    EntryScope, LedgerConfig, LedgerEntry, LedgerView, Outcome, QuarantineReason,
};
use stockgrid_actors::offline::InMemoryLedger;
use stockgrid_actors::time::{HOUR_MS, MINUTE_MS, SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_storage::{EmbeddedStore, MemoryStore, Store};

const T0: Timestamp = Timestamp(1_772_445_600_000); // 2026-03-02T10:00:00Z

fn event(
    id: &str,
    source: Source,
    kind: EventKind,
    pair: PairKey,
    quantity: i64,
    event_time: Timestamp,
) -> Event {
    Event::new(id, source, kind, pair, quantity, event_time)
}

fn arrival(event: Event, arrival_time: Timestamp) -> Arrival {
    Arrival {
        event,
        arrival_time,
    }
}

/// A deterministic mixed stream: sales, receipts, counts, transfers, a few late events and
/// duplicates, over `pairs` pairs, one arrival per simulated minute.
fn mixed_stream(pairs: u64, count: usize) -> Vec<Arrival> {
    let mut stream = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..count {
        let now = T0.plus_ms(i as i64 * MINUTE_MS);
        let pair = PairKey::new(1 + next() % pairs, 10 + (next() % 2) as u32);
        let delay = (next() % 30) as i64 * MINUTE_MS;
        let event_time = Timestamp(now.0 - delay);
        let roll = next() % 100;
        let (prefix, source, kind, quantity, event_time) = match roll {
            0..=49 => (
                "s",
                Source::Pos,
                EventKind::Sale,
                1 + (next() % 3) as i64,
                event_time,
            ),
            50..=69 => (
                "r",
                Source::Receiving,
                EventKind::Receipt,
                5 + (next() % 10) as i64,
                event_time,
            ),
            70..=79 => (
                "c",
                Source::StoreInventory,
                EventKind::Count,
                (next() % 40) as i64,
                event_time,
            ),
            80..=84 => (
                "w",
                Source::Wms,
                EventKind::Snapshot,
                (next() % 40) as i64,
                event_time,
            ),
            85..=89 => ("t", Source::Transfer, EventKind::TransferOut, 2, event_time),
            90..=94 => (
                "late",
                Source::Pos,
                EventKind::Sale,
                1,
                Timestamp(now.0 - 30 * HOUR_MS),
            ),
            _ => (
                "a",
                Source::StoreInventory,
                EventKind::Adjustment,
                (next() % 7) as i64 - 3,
                event_time,
            ),
        };
        let mut e = event(
            &format!("{prefix}{i}"),
            source,
            kind,
            pair,
            quantity,
            event_time,
        );
        if kind == EventKind::TransferOut {
            e.counterparty_location = Some(if pair.location == 10 { 11 } else { 10 });
        }
        if roll >= 95 && i > 0 {
            // A duplicate of an earlier arrival.
            let earlier: &Arrival = &stream[(next() % stream.len() as u64) as usize];
            e = earlier.event.clone();
        }
        stream.push(arrival(e, now));
    }
    stream
}

/// An engine over a fresh in-memory store, on a simulated clock reading `T0`.
async fn memory_engine(config: EngineConfig) -> (Arc<MemoryStore>, SimulatedClock, Engine) {
    let store = Arc::new(MemoryStore::new());
    let clock = SimulatedClock::starting_at(T0);
    let engine = Engine::start(store.clone(), Arc::new(clock.clone()), config)
        .await
        .expect("start");
    (store, clock, engine)
}

/// On-hand as the pair's published read view says (`None`: never seen).
async fn on_hand(engine: &Engine, pair: PairKey) -> Option<i32> {
    engine
        .read_view(pair)
        .await
        .expect("view")
        .map(|view| view.on_hand_units)
}

async fn views(engine: &Engine, pairs: u64) -> Vec<Option<LedgerView>> {
    let mut views = Vec::new();
    for sku in 1..=pairs {
        for location in [10, 11] {
            views.push(
                engine
                    .inspect(PairKey::new(sku, location))
                    .await
                    .expect("inspect")
                    .map(|r| r.view),
            );
        }
    }
    views
}

/// The shared facts (demand shapes, SKU velocities, losses, feed health) the engine learns
/// over three shards are the ones an in-memory replay of the same arrivals learns (so an
/// audit replay sees what the node saw), and a restart keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_facts_match_the_replay_and_survive_a_restart() {
    let config = EngineConfig {
        shard_count: 3,
        snapshot_every_records: 5,
        ..EngineConfig::default()
    };
    let (store, clock, engine) = memory_engine(config.clone()).await;
    let stream = mixed_stream(12, 3_000);
    for piece in stream.chunks(250) {
        clock.advance_to(piece[piece.len() - 1].arrival_time);
        engine.ingest(piece.to_vec()).await.expect("ingest");
    }
    let mut replayed = InMemoryLedger::new(LedgerConfig::default(), &[]);
    for arrival in &stream {
        replayed.apply(arrival).expect("apply");
    }
    let learned = engine.decisions().shared.learned();
    assert_eq!(learned, replayed.shared().learned());
    let sku_sales: u64 = learned.skus.iter().map(|(_, sku)| sku.sale_events).sum();
    let counts: u32 = learned
        .locations
        .iter()
        .map(|(.., losses)| losses.counts)
        .sum();
    assert!(
        sku_sales > 1_000 && counts > 100,
        "{sku_sales} sales, {counts} counts"
    );
    let shape_sales: u32 = learned
        .locations
        .iter()
        .map(|(_, _, demand, _)| demand.by_hour.iter().sum::<u32>())
        .sum();
    assert_eq!(u64::from(shape_sales), sku_sales);

    engine.shutdown().await.expect("shutdown");
    let restarted = Engine::start(store, Arc::new(clock.clone()), config)
        .await
        .expect("start again");
    assert_eq!(restarted.decisions().shared.learned(), learned);
}

/// A router sends a transfer whose two pairs have two owners to both, each applying its
/// own effect: applied that way, in two scoped calls, every pair ends as when each event is
/// applied whole, and each event answers as it did whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_effects_applied_apart_end_as_whole_events() {
    let stream = mixed_stream(6, 400);
    let (_, _, whole) = memory_engine(EngineConfig::default()).await;
    let (_, _, split) = memory_engine(EngineConfig::default()).await;
    let mut transfers = 0;
    for chunk in stream.chunks(25) {
        let expected = whole.ingest(chunk.to_vec()).await.expect("ingest whole");
        let primary: Vec<(Arrival, EntryScope)> = chunk
            .iter()
            .map(|arrival| (arrival.clone(), EntryScope::Primary))
            .collect();
        let answered = split.ingest_scoped(primary).await.expect("ingest primary");
        let counterparty: Vec<(Arrival, EntryScope)> = chunk
            .iter()
            .filter(|arrival| LedgerEntry::counterparty_target(&arrival.event).is_some())
            .map(|arrival| (arrival.clone(), EntryScope::Counterparty))
            .collect();
        transfers += counterparty.len();
        for result in split
            .ingest_scoped(counterparty)
            .await
            .expect("ingest counterparty")
        {
            // A duplicate transfer's effect is a duplicate at the counterparty too.
            assert!(
                matches!(result, Ok(Outcome::Applied | Outcome::Duplicate)),
                "{result:?}"
            );
        }
        let expected: Vec<Option<Outcome>> = expected.into_iter().map(Result::ok).collect();
        let answered: Vec<Option<Outcome>> = answered.into_iter().map(Result::ok).collect();
        assert_eq!(answered, expected);
    }
    assert!(transfers > 0, "the stream should hold transfers");
    assert_eq!(views(&split, 6).await, views(&whole, 6).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_rebuilds_exactly_the_acknowledged_state() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = SimulatedClock::starting_at(T0);
    // Frequent snapshots and short idleness: recovery must combine snapshots, log tails and
    // passivated entities.
    let config = EngineConfig {
        shard_count: 3,
        snapshot_every_records: 5,
        passivate_after_ms: 20 * MINUTE_MS,
        ..EngineConfig::default()
    };
    let engine = Engine::start(Arc::clone(&store), Arc::new(clock.clone()), config.clone())
        .await
        .expect("start");
    let stream = mixed_stream(12, 3_000);
    for piece in stream.chunks(200) {
        clock.advance_to(piece[piece.len() - 1].arrival_time);
        for result in engine.ingest(piece.to_vec()).await.expect("ingest") {
            result.expect("event result");
        }
        engine.maintain().await.expect("maintain");
    }
    let before = views(&engine, 12).await;
    assert!(
        before.iter().flatten().any(|v| v.quarantined_entries > 0),
        "the stream has late events"
    );
    assert!(
        before
            .iter()
            .flatten()
            .any(|v| v.in_transit_units > 0 || v.overdue_transfers > 0),
        "the stream has transfers"
    );

    // A second engine over the same store knows only what is durable: it must agree exactly.
    let recovered = Engine::start(Arc::clone(&store), Arc::new(clock.clone()), config)
        .await
        .expect("start again");
    assert_eq!(views(&recovered, 12).await, before);
    // And it keeps deduplicating across the restart: the recent arrivals, sent again, are
    // duplicates (or quarantined again, if they were), and change no figure but the
    // quarantine count.
    let recent = &stream[stream.len() - 500..];
    let again = recovered
        .ingest(recent.to_vec())
        .await
        .expect("ingest again");
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Ok(Outcome::Duplicate) | Ok(Outcome::Quarantined(_)))),
        "{again:?}"
    );
    assert!(
        again
            .iter()
            .filter(|r| matches!(r, Ok(Outcome::Duplicate)))
            .count()
            > 400
    );
    let without_quarantine_counts = |views: Vec<Option<LedgerView>>| {
        views
            .into_iter()
            .map(|v| {
                v.map(|v| LedgerView {
                    quarantined_entries: 0,
                    ..v
                })
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_quarantine_counts(views(&recovered, 12).await),
        without_quarantine_counts(before)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_shard_restarts_and_the_poisoned_message_is_quarantined() {
    let config = EngineConfig {
        shard_count: 1,
        panic_on_event_id: Some("poison".to_owned()),
        ..EngineConfig::default()
    };
    let (_store, _clock, engine) = memory_engine(config).await;
    let (a, b, c) = (PairKey::new(1, 1), PairKey::new(2, 1), PairKey::new(3, 1));
    let first = vec![
        arrival(
            event("a1", Source::StoreInventory, EventKind::Count, a, 10, T0),
            T0,
        ),
        arrival(
            event("b1", Source::StoreInventory, EventKind::Count, b, 20, T0),
            T0,
        ),
    ];
    assert!(
        engine
            .ingest(first)
            .await
            .expect("ingest")
            .iter()
            .all(|r| matches!(r, Ok(Outcome::Applied)))
    );

    let second = vec![
        arrival(
            event("a2", Source::Pos, EventKind::Sale, a, 1, T0.plus_ms(1)),
            T0.plus_ms(1),
        ),
        arrival(
            event("poison", Source::Pos, EventKind::Sale, b, 1, T0.plus_ms(1)),
            T0.plus_ms(1),
        ),
        arrival(
            event(
                "c1",
                Source::Receiving,
                EventKind::Receipt,
                c,
                4,
                T0.plus_ms(1),
            ),
            T0.plus_ms(1),
        ),
    ];
    let results = engine.ingest(second).await.expect("ingest");
    assert!(
        matches!(results[0], Ok(Outcome::Applied)),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(&results[1], Ok(Outcome::Quarantined(QuarantineReason::HandlerPanicked { message })) if message.contains("injected fault")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Ok(Outcome::Applied)),
        "{:?}",
        results[2]
    );

    let reports = engine.panic_reports();
    assert!(!reports.is_empty());
    assert!(
        reports
            .iter()
            .any(|r| r.in_flight.len() == 1 && r.in_flight[0].entry.event.event_id == "poison")
    );
    // The other pairs of the shard kept their state; the poisoned message is on record.
    let safety = SafetyStock::uniform(0);
    assert_eq!(on_hand(&engine, a).await, Some(9));
    assert_eq!(on_hand(&engine, c).await, Some(4));
    let b_report = engine.inspect(b).await.expect("inspect").expect("b exists");
    assert_eq!(b_report.view.on_hand_units, 20);
    assert_eq!(b_report.quarantined.len(), 1);
    assert_eq!(b_report.quarantined[0].reason.code(), "HANDLER_PANICKED");
    let decision = engine
        .decide_by_rules(b, 20, Surface::Pickup, &safety)
        .await;
    assert_eq!(
        (decision.available, decision.reason),
        (true, ReasonCode::LedgerSufficient)
    );
    engine.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_entities_are_passivated_and_reactivated_from_the_store() {
    let (_store, clock, engine) = memory_engine(EngineConfig::default()).await;
    let pair = PairKey::new(5, 5);
    engine
        .ingest(vec![arrival(
            event("r", Source::Receiving, EventKind::Receipt, pair, 7, T0),
            T0,
        )])
        .await
        .expect("ingest");
    assert_eq!(engine.resident_entities().await.expect("count"), 1);
    clock.advance_to(T0.plus_ms(2 * HOUR_MS));
    assert_eq!(
        engine
            .maintain()
            .await
            .expect("maintain")
            .passivated_entities,
        1
    );
    assert_eq!(engine.resident_entities().await.expect("count"), 0);
    assert_eq!(on_hand(&engine, pair).await, Some(7));
    assert_eq!(engine.resident_entities().await.expect("count"), 1);
    assert_eq!(
        engine.read_view(PairKey::new(6, 6)).await.expect("view"),
        None,
        "unknown pairs stay unknown"
    );
    assert_eq!(
        engine.resident_entities().await.expect("count"),
        1,
        "a lookup of an unknown pair activates nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_store_refuses_writes_and_answers_not_available() {
    let (memory, _clock, engine) = memory_engine(EngineConfig::default()).await;
    let pair = PairKey::new(8, 8);
    engine
        .ingest(vec![arrival(
            event("r", Source::Receiving, EventKind::Receipt, pair, 7, T0),
            T0,
        )])
        .await
        .expect("ingest");
    memory.inject_write_failures(1);
    let failed = engine
        .ingest(vec![arrival(
            event("s", Source::Pos, EventKind::Sale, pair, 1, T0),
            T0,
        )])
        .await
        .expect("ingest");
    assert!(
        failed[0].as_ref().is_err_and(|e| e.is_poisoned()),
        "{failed:?}"
    );
    let refused = engine
        .ingest(vec![arrival(
            event("s2", Source::Pos, EventKind::Sale, pair, 1, T0),
            T0,
        )])
        .await;
    assert!(refused.is_err_and(|e| e.is_poisoned()));
    let decision = engine
        .decide_by_rules(pair, 1, Surface::Pickup, &SafetyStock::uniform(0))
        .await;
    assert_eq!(
        (decision.available, decision.reason),
        (false, ReasonCode::StoreUnavailable)
    );
}

/// Simulates `days` of traffic on the same pairs at the same rate and returns the store's
/// live bytes at the end.
async fn live_bytes_after(days: i64, directory: &std::path::Path) -> (u64, u64) {
    let store = Arc::new(EmbeddedStore::open(directory).expect("open"));
    let clock = SimulatedClock::starting_at(T0);
    let engine = Engine::start(
        store.clone(),
        Arc::new(clock.clone()),
        EngineConfig {
            shard_count: 2,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("start");
    let pairs = 40u64;
    let per_pair_interval = 30 * MINUTE_MS;
    let steps = days * 24 * HOUR_MS / per_pair_interval;
    for step in 0..steps {
        let now = T0.plus_ms(step * per_pair_interval);
        let batch: Vec<Arrival> = (0..pairs)
            .map(|sku| {
                let pair = PairKey::new(sku, 1);
                let e = if step % 48 == 0 {
                    event(
                        &format!("c{step}-{sku}"),
                        Source::StoreInventory,
                        EventKind::Count,
                        pair,
                        30,
                        now,
                    )
                } else if step % 2 == 0 {
                    event(
                        &format!("s{step}-{sku}"),
                        Source::Pos,
                        EventKind::Sale,
                        pair,
                        1,
                        now,
                    )
                } else {
                    event(
                        &format!("l{step}-{sku}"),
                        Source::Pos,
                        EventKind::Sale,
                        pair,
                        1,
                        Timestamp(now.0 - 30 * HOUR_MS),
                    )
                };
                arrival(e, now.plus_ms(MINUTE_MS))
            })
            .collect();
        clock.advance_to(now.plus_ms(MINUTE_MS));
        engine.ingest(batch).await.expect("ingest");
        if step % 4 == 0 {
            engine.maintain().await.expect("maintain");
        }
    }
    engine.shutdown().await.expect("shutdown");
    store.reclaim_space().expect("reclaim");
    (
        store.live_bytes().expect("live bytes"),
        store.disk_bytes().expect("disk bytes"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_store_bounded_by_pairs_not_events() {
    let short_dir = tempfile::tempdir().expect("temporary directory");
    let long_dir = tempfile::tempdir().expect("temporary directory");
    // Both histories outlast every retention (log 24 h, identities 24 h, quarantine 7 days).
    let (short_live, short_disk) = live_bytes_after(9, short_dir.path()).await;
    let (long_live, long_disk) = live_bytes_after(18, long_dir.path()).await;
    eprintln!(
        "9 days: {short_live} live bytes, {short_disk} on disk; 18 days: {long_live} live bytes, {long_disk} on disk"
    );
    // Twice the events; the store holds the same window of them either way (the log
    // retention, plus the history before the oldest checkpoint kept for audit rebuilds).
    assert!(
        long_live as f64 <= short_live as f64 * 1.25,
        "live bytes grew with history: {short_live} -> {long_live}"
    );
    assert!(
        long_disk as f64 <= short_disk as f64 * 1.5,
        "disk grew with history: {short_disk} -> {long_disk}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_replays_a_late_anchor_against_only_the_earlier_log() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = SimulatedClock::starting_at(T0);
    // No snapshot after the first: recovery replays every later record from the log.
    let config = EngineConfig {
        snapshot_every_records: 1_000,
        ..EngineConfig::default()
    };
    let engine = Engine::start(Arc::clone(&store), Arc::new(clock.clone()), config.clone())
        .await
        .expect("start");
    let pair = PairKey::new(77, 7);
    let minute = |m: i64| T0.plus_ms(m * MINUTE_MS);
    let stream = vec![
        arrival(
            event(
                "r",
                Source::Receiving,
                EventKind::Receipt,
                pair,
                50,
                minute(0),
            ),
            minute(1),
        ),
        arrival(
            event("s1", Source::Pos, EventKind::Sale, pair, 1, minute(5)),
            minute(6),
        ),
        // A count dated before the sale, arriving after it: the sale applies on top.
        arrival(
            event(
                "c",
                Source::StoreInventory,
                EventKind::Count,
                pair,
                20,
                minute(4),
            ),
            minute(7),
        ),
        arrival(
            event("s2", Source::Pos, EventKind::Sale, pair, 2, minute(8)),
            minute(9),
        ),
    ];
    for item in stream {
        clock.advance_to(item.arrival_time);
        assert!(matches!(
            engine.ingest(vec![item]).await.expect("ingest")[0],
            Ok(Outcome::Applied)
        ));
    }
    assert_eq!(on_hand(&engine, pair).await, Some(17));
    let recovered = Engine::start(store, Arc::new(clock.clone()), config)
        .await
        .expect("start again");
    assert_eq!(on_hand(&recovered, pair).await, Some(17));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_of_two_conflicting_events_in_one_batch_always_wins() {
    for attempt in 0..20u64 {
        let (_store, _clock, engine) = memory_engine(EngineConfig::default()).await;
        // Same identity, different pairs on different shards of one partition (identities are
        // scoped to a partition): they would race if sent together.
        let first = PairKey::new(1, 1);
        let second = (2..1000)
            .map(|sku| PairKey::new(sku, 1))
            .find(|p| {
                engine.shard_of(*p) != engine.shard_of(first)
                    && keys::partition_of(*p) == keys::partition_of(first)
            })
            .expect("another shard in the same partition");
        let (a, b) = if attempt % 2 == 0 {
            (first, second)
        } else {
            (second, first)
        };
        let batch = vec![
            arrival(event("same", Source::Pos, EventKind::Sale, a, 1, T0), T0),
            arrival(event("other", Source::Pos, EventKind::Sale, b, 1, T0), T0),
            arrival(event("same", Source::Pos, EventKind::Sale, b, 1, T0), T0),
        ];
        let results = engine.ingest(batch).await.expect("ingest");
        assert!(matches!(results[0], Ok(Outcome::Applied)), "{results:?}");
        assert!(matches!(results[1], Ok(Outcome::Applied)), "{results:?}");
        assert!(
            matches!(
                results[2],
                Ok(Outcome::Quarantined(QuarantineReason::ConflictingDuplicate))
            ),
            "{results:?}"
        );
        assert_eq!(on_hand(&engine, a).await, Some(-1));
        assert_eq!(on_hand(&engine, b).await, Some(-1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_makes_senders_wait_and_loses_nothing() {
    // One shard with a one-message mailbox: 40 concurrent callers must queue behind it.
    let config = EngineConfig {
        shard_count: 1,
        mailbox_capacity: 1,
        ..EngineConfig::default()
    };
    let (_store, _clock, engine) = memory_engine(config).await;
    let pair = PairKey::new(9, 9);
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..40i64 {
        let engine = engine.clone();
        callers.spawn(async move {
            let batch = (0..25)
                .map(|i| {
                    arrival(
                        event(
                            &format!("r{caller}-{i}"),
                            Source::Receiving,
                            EventKind::Receipt,
                            pair,
                            1,
                            T0,
                        ),
                        T0,
                    )
                })
                .collect();
            engine
                .ingest(batch)
                .await
                .expect("ingest")
                .into_iter()
                .all(|r| matches!(r, Ok(Outcome::Applied)))
        });
    }
    while let Some(all_applied) = callers.join_next().await {
        assert!(all_applied.expect("caller"));
    }
    assert_eq!(on_hand(&engine, pair).await, Some(1_000));
}

/// A decision record is readable by its id until its retention passes, and a maintenance
/// pass after that deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_records_expire_after_their_retention() {
    use stockgrid_actors::audit::AuditRecord;
    use stockgrid_actors::decision::decide_by_rules;

    let (_store, clock, engine) = memory_engine(EngineConfig::default()).await;
    engine.decisions().set_audit_retention_days(2);
    let record = AuditRecord {
        decision_id: "d-retention-0/1-10".to_owned(),
        sku: 1,
        location: 10,
        surface: Surface::Pickup,
        quantity: 1,
        time_ms: T0.0,
        arrivals_applied: 0,
        inputs_digest: String::new(),
        features: Vec::new(),
        model_version: String::new(),
        decision: decide_by_rules(None, 1, Surface::Pickup, &SafetyStock::default()),
        node: None,
    };
    engine
        .record_decisions(std::slice::from_ref(&record))
        .await
        .expect("record");
    clock.advance_to(T0.plus_ms(47 * HOUR_MS));
    engine.maintain().await.expect("maintain");
    assert_eq!(
        engine.decision_record("d-retention-0/1-10").expect("read"),
        Some(record)
    );
    clock.advance_to(T0.plus_ms(49 * HOUR_MS));
    engine.maintain().await.expect("maintain");
    assert_eq!(
        engine.decision_record("d-retention-0/1-10").expect("read"),
        None
    );
}

/// The shared facts are statistics: a value the build cannot read (an older layout, a torn
/// write) is logged and relearned, and the engine starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_shared_facts_are_relearned_not_fatal() {
    let store = Arc::new(MemoryStore::new());
    let mut batch = stockgrid_storage::WriteBatch::new();
    stockgrid_actors::keys::check_or_create_format(store.as_ref()).expect("a new store");
    batch.put(
        stockgrid_actors::keys::shared_facts_key(),
        vec![1, 0xc1, 0xc1],
    );
    store.commit(batch).expect("commit");
    let clock = SimulatedClock::starting_at(T0);
    let engine = Engine::start(store, Arc::new(clock), EngineConfig::default())
        .await
        .expect("starts despite the unreadable value");
    assert_eq!(
        engine.decisions().shared.learned(),
        Default::default(),
        "nothing restored"
    );
}

/// Shards on a runtime of their own (lower priority) apply, answer and recover as on the
/// caller's runtime, and a panicked shard is restarted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_their_own_runtime_apply_and_recover() {
    let config = EngineConfig {
        shard_threads: 1,
        panic_on_event_id: Some("boom".to_owned()),
        ..EngineConfig::default()
    };
    let (store, clock, engine) = memory_engine(config.clone()).await;
    let pair = PairKey::new(1, 10);
    let results = engine
        .ingest(vec![
            arrival(
                event("c1", Source::StoreInventory, EventKind::Count, pair, 9, T0),
                T0,
            ),
            arrival(event("boom", Source::Pos, EventKind::Sale, pair, 1, T0), T0),
            arrival(
                event(
                    "s1",
                    Source::Pos,
                    EventKind::Sale,
                    pair,
                    2,
                    T0.plus_ms(60_000),
                ),
                T0.plus_ms(60_000),
            ),
        ])
        .await
        .expect("ingest");
    assert!(
        matches!(
            results[1],
            Ok(Outcome::Quarantined(
                QuarantineReason::HandlerPanicked { .. }
            ))
        ),
        "{results:?}"
    );
    assert_eq!(on_hand(&engine, pair).await, Some(7), "{results:?}");
    engine.shutdown().await.expect("shutdown");
    let again = Engine::start(store, Arc::new(clock), config)
        .await
        .expect("start again");
    assert_eq!(on_hand(&again, pair).await, Some(7));
}
