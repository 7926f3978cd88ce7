//! Tests of the pure ledger core: hand-checked cases, and property tests against a
//! reference model that recomputes on-hand from the set of applied events.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::domain::{Event, EventKind, PairKey, Source};
use crate::time::{HOUR_MS, MINUTE_MS, Timestamp};

const PAIR: PairKey = PairKey {
    sku: 7,
    location: 1,
};
const COUNTERPARTY: u32 = 2;

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).expect("test time")
}

fn event(id: &str, source: Source, kind: EventKind, quantity: i64, event_time: Timestamp) -> Event {
    Event::new(id, source, kind, PAIR, quantity, event_time)
}

/// A small world of entities keyed by pair, driven through the pure `ingest`.
#[derive(Default)]
struct World {
    states: HashMap<PairKey, EntityState>,
    identities: HashMap<Identity, u128>,
    history: RecordedDeltas,
    outcomes: Vec<(Event, Outcome)>,
}

impl World {
    fn arrive(&mut self, event: &Event, arrival: Timestamp, config: &LedgerConfig) -> Outcome {
        let mut primary_outcome = Outcome::Duplicate;
        for entry in LedgerEntry::expand(event.clone()) {
            let state = self.states.entry(entry.target()).or_default();
            let outcome = ingest(
                state,
                &entry,
                arrival,
                config,
                &mut self.identities,
                &mut self.history,
            )
            .expect("map lookups never fail");
            if outcome == Outcome::Applied {
                self.history.record(&entry);
            }
            if entry.role == EntryRole::Primary {
                primary_outcome = outcome;
            }
        }
        self.outcomes.push((event.clone(), primary_outcome.clone()));
        primary_outcome
    }

    fn view(&self, pair: PairKey, now: Timestamp, config: &LedgerConfig) -> Option<LedgerView> {
        self.states.get(&pair).map(|state| state.view(now, config))
    }

    fn applied(&self) -> Vec<Event> {
        self.outcomes
            .iter()
            .filter(|(_, o)| *o == Outcome::Applied)
            .map(|(e, _)| e.clone())
            .collect()
    }
}

/// On-hand recomputed from scratch: the latest anchoring observation by precedence, plus
/// every delta strictly after it (or every delta when there is none).
fn reference_on_hand(applied: &[Event], config: &LedgerConfig) -> i64 {
    let anchor = applied
        .iter()
        .filter(|e| e.kind.is_observation() && config.anchors(e.source))
        .max_by(|a, b| {
            (
                a.event_time,
                a.kind.observation_rank(),
                &a.event_id,
                a.source,
            )
                .cmp(&(
                    b.event_time,
                    b.kind.observation_rank(),
                    &b.event_id,
                    b.source,
                ))
        });
    let base = anchor.map_or(0, |a| a.quantity);
    let after = |e: &&Event| anchor.is_none_or(|a| e.event_time > a.event_time);
    base + applied
        .iter()
        .filter(|e| !e.kind.is_observation())
        .filter(after)
        .map(Event::signed_units)
        .sum::<i64>()
}

#[test]
fn hand_checked_sequence() {
    // The acceptance example of the engine issue, on the pure core.
    let config = LedgerConfig::default();
    let mut world = World::default();
    let count = event(
        "c1",
        Source::StoreInventory,
        EventKind::Count,
        10,
        at("2026-03-02T10:00:00Z"),
    );
    let sale = event(
        "s1",
        Source::Pos,
        EventKind::Sale,
        2,
        at("2026-03-02T10:05:00Z"),
    );
    let early_sale = event(
        "s0",
        Source::Pos,
        EventKind::Sale,
        1,
        at("2026-03-02T09:55:00Z"),
    );
    let receipt = event(
        "r1",
        Source::Receiving,
        EventKind::Receipt,
        5,
        at("2026-03-02T10:10:00Z"),
    );
    let late = event(
        "a1",
        Source::StoreInventory,
        EventKind::Adjustment,
        -3,
        at("2026-03-02T10:15:00Z"),
    );

    assert_eq!(
        world.arrive(&count, at("2026-03-02T10:00:00Z"), &config),
        Outcome::Applied
    );
    assert_eq!(
        world.arrive(&sale, at("2026-03-02T10:20:00Z"), &config),
        Outcome::Applied
    );
    assert_eq!(
        world.arrive(&sale, at("2026-03-02T10:21:00Z"), &config),
        Outcome::Duplicate
    );
    assert_eq!(
        world.arrive(&early_sale, at("2026-03-02T10:25:00Z"), &config),
        Outcome::Applied
    );
    assert_eq!(
        world.arrive(&receipt, at("2026-03-02T10:26:00Z"), &config),
        Outcome::Applied
    );
    let outcome = world.arrive(&late, at("2026-03-03T16:15:00Z"), &config);
    assert!(
        matches!(outcome, Outcome::Quarantined(QuarantineReason::TooLate { lateness_ms, .. }) if lateness_ms == 30 * HOUR_MS)
    );

    let view = world
        .view(PAIR, at("2026-03-03T16:16:00Z"), &config)
        .expect("entity");
    assert_eq!(view.on_hand_units, 13);
    assert_eq!(view.quarantined_entries, 1);
    assert_eq!(view.last_sale, Some(at("2026-03-02T10:05:00Z")));
    assert_eq!(view.applied_entries, 4);
}

#[test]
fn an_event_exactly_at_the_lateness_bound_is_applied() {
    let config = LedgerConfig::default();
    let t = at("2026-03-02T10:00:00Z");
    let mut world = World::default();
    world.arrive(
        &event(
            "s1",
            Source::Pos,
            EventKind::Sale,
            1,
            t.plus_ms(23 * HOUR_MS),
        ),
        t.plus_ms(23 * HOUR_MS),
        &config,
    );
    let on_the_bound = event("s2", Source::Pos, EventKind::Sale, 1, t);
    assert_eq!(
        world.arrive(&on_the_bound, t.plus_ms(config.lateness_bound_ms), &config),
        Outcome::Applied
    );
    let past_it = event("s3", Source::Pos, EventKind::Sale, 1, t);
    assert!(matches!(
        world.arrive(&past_it, t.plus_ms(config.lateness_bound_ms + 1), &config),
        Outcome::Quarantined(_)
    ));
    assert_eq!(
        world.view(PAIR, t, &config).expect("entity").on_hand_units,
        -2
    );
}

#[test]
fn same_instant_observations_follow_the_tie_rules() {
    let config = LedgerConfig::default();
    let t = at("2026-03-02T10:00:00Z");
    let mut world = World::default();
    world.arrive(
        &event("w1", Source::Wms, EventKind::Snapshot, 50, t),
        t,
        &config,
    );
    world.arrive(
        &event("c1", Source::StoreInventory, EventKind::Count, 40, t),
        t,
        &config,
    );
    world.arrive(
        &event("r1", Source::Rfid, EventKind::RfidRead, 30, t),
        t,
        &config,
    );
    assert_eq!(
        world.view(PAIR, t, &config).expect("entity").on_hand_units,
        40,
        "count beats snapshot and rfid"
    );
    world.arrive(
        &event("c2", Source::StoreInventory, EventKind::Count, 44, t),
        t,
        &config,
    );
    assert_eq!(
        world.view(PAIR, t, &config).expect("entity").on_hand_units,
        44,
        "larger event id wins a tie"
    );
    world.arrive(
        &event("c0", Source::StoreInventory, EventKind::Count, 1, t),
        t,
        &config,
    );
    assert_eq!(
        world.view(PAIR, t, &config).expect("entity").on_hand_units,
        44
    );
}

#[test]
fn anchoring_is_configurable_per_source() {
    let mut config = LedgerConfig::default();
    config.anchoring_sources[Source::Wms.index()] = false;
    let t = at("2026-03-02T10:00:00Z");
    let mut world = World::default();
    world.arrive(
        &event("r1", Source::Receiving, EventKind::Receipt, 8, t),
        t,
        &config,
    );
    world.arrive(
        &event("w1", Source::Wms, EventKind::Snapshot, 50, t.plus_ms(1)),
        t.plus_ms(1),
        &config,
    );
    let view = world.view(PAIR, t, &config).expect("entity");
    assert_eq!(
        view.on_hand_units, 8,
        "a non-anchoring source's snapshot does not move on-hand"
    );
    assert!(view.source_last_seen[Source::Wms.index()].is_some());
}

#[test]
fn transfers_put_units_in_transit_until_received_or_overdue() {
    let config = LedgerConfig::default();
    let t = at("2026-03-02T10:00:00Z");
    let mut world = World::default();
    let mut out = event("t1", Source::Transfer, EventKind::TransferOut, 6, t);
    out.counterparty_location = Some(COUNTERPARTY);
    out.expected_time = Some(t.plus_ms(10 * HOUR_MS));
    world.arrive(&out, t, &config);
    let destination = PairKey::new(PAIR.sku, COUNTERPARTY);
    assert_eq!(
        world.view(PAIR, t, &config).expect("source").on_hand_units,
        -6
    );
    let view = world.view(destination, t, &config).expect("destination");
    assert_eq!((view.in_transit_units, view.on_hand_units), (6, 0));
    let overdue = world
        .view(destination, t.plus_ms(35 * HOUR_MS), &config)
        .expect("destination");
    assert_eq!(
        (overdue.in_transit_units, overdue.overdue_transfers),
        (0, 1)
    );

    let mut arrived = event(
        "t1-in",
        Source::Transfer,
        EventKind::TransferIn,
        4,
        t.plus_ms(9 * HOUR_MS),
    );
    arrived.pair = destination;
    arrived.counterparty_location = Some(PAIR.location);
    world.arrive(&arrived, t.plus_ms(9 * HOUR_MS), &config);
    let view = world
        .view(destination, t.plus_ms(9 * HOUR_MS), &config)
        .expect("destination");
    assert_eq!((view.in_transit_units, view.on_hand_units), (2, 4));
}

#[test]
fn future_events_and_conflicts_are_quarantined() {
    let config = LedgerConfig::default();
    let t = at("2026-03-02T10:00:00Z");
    let mut world = World::default();
    let future = event(
        "f1",
        Source::Pos,
        EventKind::Sale,
        1,
        t.plus_ms(6 * MINUTE_MS),
    );
    assert!(matches!(
        world.arrive(&future, t, &config),
        Outcome::Quarantined(QuarantineReason::FromTheFuture { .. })
    ));
    let sale = event("s1", Source::Pos, EventKind::Sale, 1, t);
    assert_eq!(world.arrive(&sale, t, &config), Outcome::Applied);
    let mut conflicting = sale.clone();
    conflicting.quantity = 5;
    assert_eq!(
        world.arrive(&conflicting, t, &config),
        Outcome::Quarantined(QuarantineReason::ConflictingDuplicate)
    );
    let view = world.view(PAIR, t, &config).expect("entity");
    assert_eq!((view.on_hand_units, view.quarantined_entries), (-1, 2));
}

// ---------------------------------------------------------------------------------------
// Property tests.

const T0_MS: i64 = 1_772_445_600_000; // 2026-03-02T10:00:00Z

fn arbitrary_event(id: usize) -> impl Strategy<Value = Event> {
    let kinds = prop_oneof![
        4 => Just(EventKind::Sale),
        1 => Just(EventKind::Return),
        2 => Just(EventKind::Receipt),
        1 => Just(EventKind::Pick),
        1 => Just(EventKind::Adjustment),
        1 => Just(EventKind::TransferOut),
        1 => Just(EventKind::TransferIn),
        2 => Just(EventKind::Count),
        1 => Just(EventKind::RfidRead),
        1 => Just(EventKind::Snapshot),
    ];
    // Minute-granularity times over six hours: ties between events are common, so the
    // "at or before the anchor" boundary is exercised.
    (
        kinds,
        prop::sample::select(Source::ALL.to_vec()),
        0i64..20,
        0i64..6 * 60,
        any::<bool>(),
    )
        .prop_map(
            move |(kind, source, quantity, offset_min, with_counterparty)| {
                let mut event = event(
                    &format!("e{id}"),
                    source,
                    kind,
                    quantity,
                    Timestamp(T0_MS + offset_min * MINUTE_MS),
                );
                if kind == EventKind::Adjustment {
                    event.quantity = quantity - 10;
                }
                if matches!(kind, EventKind::TransferOut | EventKind::TransferIn)
                    && with_counterparty
                {
                    event.counterparty_location = Some(COUNTERPARTY);
                }
                event
            },
        )
}

fn arbitrary_events(max: usize) -> impl Strategy<Value = Vec<Event>> {
    (1..max).prop_flat_map(|n| (0..n).map(arbitrary_event).collect::<Vec<_>>())
}

/// Events that are quarantined in any order: far too late, or from the future.
fn never_admissible() -> Vec<Event> {
    vec![
        event(
            "late",
            Source::Pos,
            EventKind::Sale,
            3,
            Timestamp(T0_MS - 48 * HOUR_MS),
        ),
        event(
            "future",
            Source::Wms,
            EventKind::Snapshot,
            99,
            Timestamp(T0_MS + 10 * 24 * HOUR_MS),
        ),
    ]
}

/// Arrival times for an order: every event arrives within the bound, one minute apart.
fn arrival(index: usize) -> Timestamp {
    Timestamp(T0_MS + 6 * HOUR_MS + index as i64 * MINUTE_MS)
}

fn run(events: &[Event], config: &LedgerConfig) -> World {
    let mut world = World::default();
    for (index, event) in events.iter().enumerate() {
        world.arrive(event, arrival(index), config);
    }
    world
}

fn views(
    world: &World,
    now: Timestamp,
    config: &LedgerConfig,
) -> (Option<LedgerView>, Option<LedgerView>) {
    (
        world.view(PAIR, now, config),
        world.view(PairKey::new(PAIR.sku, COUNTERPARTY), now, config),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// (a) Any arrival order of the same event set gives the same state.
    #[test]
    fn any_arrival_order_gives_the_same_state(
        events in arbitrary_events(40),
        seed in any::<u64>(),
    ) {
        let config = LedgerConfig::default();
        let mut all = events.clone();
        all.extend(never_admissible());
        let mut shuffled = all.clone();
        // A seeded Fisher-Yates shuffle: proptest shrinks the seed along with the events.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let now = arrival(all.len());
        let in_order = run(&all, &config);
        let reordered = run(&shuffled, &config);
        prop_assert_eq!(views(&in_order, now, &config), views(&reordered, now, &config));
        prop_assert_eq!(
            in_order.view(PAIR, now, &config).map(|v| v.on_hand_units),
            Some(reference_on_hand(&in_order.applied(), &config))
        );
    }

    /// (b) Any number of duplicates gives the same state as none.
    #[test]
    fn duplicates_change_nothing(
        events in arbitrary_events(30),
        duplicates in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..30),
    ) {
        let config = LedgerConfig::default();
        let mut with_duplicates = events.clone();
        for (which, position) in duplicates {
            let copy = events[which.index(events.len())].clone();
            // A duplicate arrives after its original.
            let original = with_duplicates.iter().position(|e| e.event_id == copy.event_id).unwrap_or(0);
            let at = original + 1 + position.index(with_duplicates.len() - original);
            with_duplicates.insert(at.min(with_duplicates.len()), copy);
        }
        let now = arrival(with_duplicates.len());
        let plain = run(&events, &config);
        let duplicated = run(&with_duplicates, &config);
        prop_assert_eq!(views(&plain, now, &config), views(&duplicated, now, &config));
    }

    /// (c) A delta with event_time at or before the latest anchor never changes on_hand.
    #[test]
    fn deltas_at_or_before_the_anchor_change_nothing(
        events in arbitrary_events(30),
        kind in prop::sample::select(vec![
            EventKind::Sale, EventKind::Return, EventKind::Receipt, EventKind::Pick,
            EventKind::Adjustment, EventKind::TransferOut, EventKind::TransferIn,
        ]),
        quantity in 1i64..50,
        before_ms in prop_oneof![Just(0i64), 0i64..3 * HOUR_MS],
    ) {
        let config = LedgerConfig::default();
        let mut world = run(&events, &config);
        let anchor_time = Timestamp(T0_MS + 3 * HOUR_MS);
        world.arrive(&event("anchor", Source::StoreInventory, EventKind::Count, 12, anchor_time), arrival(events.len()), &config);
        let latest = world.states[&PAIR].anchor.clone().expect("an anchor exists");
        let before = world.view(PAIR, arrival(events.len()), &config).expect("entity").on_hand_units;
        let delta_time = Timestamp(latest.event_time.0 - before_ms);
        let mut delta = event("delta", Source::StoreInventory, kind, quantity, delta_time);
        if kind == EventKind::Adjustment && before_ms % 2 == 0 {
            delta.quantity = -quantity;
        }
        let outcome = world.arrive(&delta, arrival(events.len() + 1), &config);
        prop_assert_eq!(outcome, Outcome::Applied);
        let after = world.view(PAIR, arrival(events.len() + 1), &config).expect("entity").on_hand_units;
        prop_assert_eq!(before, after);
    }

    /// Over days of traffic with delays up to 30 hours (late anchors read the delta history,
    /// some events pass the bound), on-hand always equals the reference recomputed from every
    /// applied event, and exactly the events later than the bound are refused.
    #[test]
    fn on_hand_matches_the_reference_over_days_of_delayed_traffic(
        raw in prop::collection::vec((any::<prop::sample::Index>(), 0i64..5 * 24 * 3_600, 0i64..30 * 3_600), 1..60),
        seed_events in arbitrary_events(60),
    ) {
        let config = LedgerConfig::default();
        let mut arrivals: Vec<(Timestamp, Event)> = raw
            .iter()
            .enumerate()
            .map(|(i, (which, time_s, delay_s))| {
                let mut e = seed_events[which.index(seed_events.len())].clone();
                e.event_id = format!("f{i}");
                e.counterparty_location = None;
                e.event_time = Timestamp(T0_MS + time_s * 1_000);
                (Timestamp(e.event_time.0 + delay_s * 1_000), e)
            })
            .collect();
        arrivals.sort_by_key(|(arrival, _)| *arrival);
        let mut world = World::default();
        for (arrival, e) in &arrivals {
            let outcome = world.arrive(e, *arrival, &config);
            // Arrivals are in order, so exactly the events later than the bound are refused.
            let too_late = arrival.0 - e.event_time.0 > config.lateness_bound_ms;
            prop_assert_eq!(matches!(outcome, Outcome::Quarantined(QuarantineReason::TooLate { .. })), too_late);
            if let Some(state) = world.states.get(&PAIR) {
                prop_assert_eq!(state.on_hand_units, reference_on_hand(&world.applied(), &config));
            }
        }
    }
}

/// Quantities a hostile client sends: the integer extremes, the validation bounds and one
/// past them, `u32::MAX`, and anything else.
fn extreme_quantity() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MIN + 1),
        Just(i64::MAX),
        Just(i64::MAX - 1),
        Just(i64::from(u32::MAX)),
        Just(-i64::from(u32::MAX)),
        Just(crate::domain::MAX_EVENT_UNITS),
        Just(-crate::domain::MAX_EVENT_UNITS),
        Just(crate::domain::MAX_EVENT_UNITS + 1),
        Just(-crate::domain::MAX_EVENT_UNITS - 1),
        any::<i64>(),
        -5i64..5,
    ]
}

fn any_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        Just(EventKind::Sale),
        Just(EventKind::Return),
        Just(EventKind::Receipt),
        Just(EventKind::Adjustment),
        Just(EventKind::Count),
        Just(EventKind::Snapshot),
        Just(EventKind::RfidRead),
        Just(EventKind::Pick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Validation admits exactly the quantities within +/-1e9 (negative only on an
    /// adjustment), whatever the value; and the admitted ones, sums that would overflow
    /// included, move on-hand without a panic (this test runs with overflow checks) and
    /// within what they could add up to.
    #[test]
    fn extreme_quantities_are_rejected_or_applied_without_overflow(
        steps in proptest::collection::vec((any_kind(), extreme_quantity()), 1..60),
    ) {
        let config = LedgerConfig::default();
        let mut world = World::default();
        let mut admitted = 0i64;
        for (n, (kind, quantity)) in steps.iter().enumerate() {
            let raw = crate::domain::RawEvent {
                event_id: Some(format!("e{n}")),
                source: Some("store_inventory".to_owned()),
                kind: Some(kind.as_str().to_owned()),
                sku: Some(PAIR.sku),
                location: Some(PAIR.location),
                qty: Some(*quantity),
                event_time: Some(arrival(n).to_rfc3339()),
                ..Default::default()
            };
            let in_range = (-crate::domain::MAX_EVENT_UNITS..=crate::domain::MAX_EVENT_UNITS)
                .contains(quantity)
                && (*quantity >= 0 || *kind == EventKind::Adjustment);
            match raw.validate() {
                Ok(event) => {
                    prop_assert!(in_range, "{kind:?} {quantity} was admitted");
                    world.arrive(&event, arrival(n), &config);
                    admitted += 1;
                }
                Err(error) => {
                    prop_assert!(!in_range, "{kind:?} {quantity} refused: {error}");
                    prop_assert_eq!(error.field, "qty");
                }
            }
            if let Some(view) = world.view(PAIR, arrival(n), &config) {
                prop_assert!(view.on_hand_units.unsigned_abs() <= (admitted as u64) * 1_000_000_000);
            }
        }
    }

    /// The pure core itself, fed quantities validation would refuse (as a corrupt log could):
    /// no panic, no wrap-around. Adding a positive delta never lowers on-hand, and a negative
    /// one never raises it; the sums saturate at the integer bounds.
    #[test]
    fn the_ledger_saturates_instead_of_wrapping(
        quantities in proptest::collection::vec(extreme_quantity(), 1..40),
    ) {
        let config = LedgerConfig::default();
        let mut state = EntityState::default();
        let mut history = RecordedDeltas::default();
        for (n, quantity) in quantities.iter().enumerate() {
            let before = state.on_hand_units;
            let event = event(&format!("a{n}"), Source::StoreInventory, EventKind::Adjustment, *quantity, arrival(n));
            let entry = LedgerEntry::expand(event).into_iter().next().expect("one entry");
            state.apply_admitted(&entry, arrival(n), &config, &mut history).expect("no lookup");
            history.record(&entry);
            if *quantity >= 0 {
                prop_assert!(state.on_hand_units >= before, "{before} + {quantity} -> {}", state.on_hand_units);
            } else {
                prop_assert!(state.on_hand_units <= before, "{before} + {quantity} -> {}", state.on_hand_units);
            }
        }
        let view = state.read_view(arrival(quantities.len()), &config);
        prop_assert!(i64::from(view.on_hand_units).signum() == state.on_hand_units.signum());
    }
}
