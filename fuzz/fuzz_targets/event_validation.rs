//! Event validation and the ledger it feeds: any field values, valid or not, never panic or
//! overflow; an event that validates applies to an in-memory ledger (the pure entity code a
//! node runs) without panic, and the units it records stay within what the events could add.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stockgrid_actors::domain::{Arrival, RawEvent};
use stockgrid_actors::ledger::LedgerConfig;
use stockgrid_actors::offline::InMemoryLedger;
use stockgrid_actors::time::Timestamp;

const KINDS: &[&str] = &[
    "sale", "return", "receipt", "adjustment", "count", "snapshot", "rfid_read", "pick",
    "transfer_out", "transfer_in",
];
const SOURCES: &[&str] = &["pos", "store_inventory", "wms", "rfid", "ecom", "transfer"];

#[derive(Arbitrary, Debug)]
struct FuzzEvent {
    event_id: String,
    source: (u8, Option<String>),
    kind: (u8, Option<String>),
    sku: u64,
    location: u8,
    qty: i64,
    event_offset_seconds: i32,
    arrival_offset_seconds: u16,
    raw_time: Option<String>,
    reservation_id: Option<String>,
    counterparty_location: Option<u8>,
    expected_offset_seconds: Option<i32>,
}

const T0: i64 = 1_772_445_600_000; // 2026-03-02T10:00:00Z

fn pick(choice: &(u8, Option<String>), names: &[&str]) -> String {
    match &choice.1 {
        Some(text) if choice.0 % 8 == 0 => text.clone(),
        _ => names[usize::from(choice.0) % names.len()].to_owned(),
    }
}

fuzz_target!(|events: Vec<FuzzEvent>| {
    let mut ledger = InMemoryLedger::new(LedgerConfig::default(), &[]);
    let mut clock = T0;
    for event in events.iter().take(64) {
        let event_time = Timestamp(T0 + i64::from(event.event_offset_seconds) * 1_000);
        clock += i64::from(event.arrival_offset_seconds) * 1_000;
        let raw = RawEvent {
            event_id: Some(event.event_id.clone()),
            source: Some(pick(&event.source, SOURCES)),
            kind: Some(pick(&event.kind, KINDS)),
            sku: Some(event.sku % 4),
            location: Some(u32::from(event.location % 4)),
            qty: Some(event.qty),
            event_time: Some(event.raw_time.clone().unwrap_or_else(|| event_time.to_rfc3339())),
            ingest_time: None,
            reservation_id: event.reservation_id.clone(),
            counterparty_location: event.counterparty_location.map(|l| u32::from(l % 8)),
            expected_time: event
                .expected_offset_seconds
                .map(|s| Timestamp(T0 + i64::from(s) * 1_000).to_rfc3339()),
        };
        let Ok(valid) = raw.validate() else {
            continue;
        };
        let pair = valid.pair;
        let arrival = Arrival {
            event: valid,
            arrival_time: Timestamp(clock),
        };
        let _ = ledger.apply(&arrival);
        if let Some(state) = ledger.state(pair) {
            // Every event is within +/-1e9 units and at most 64 apply: no record can pass this.
            let bound = 64 * stockgrid_actors::domain::MAX_EVENT_UNITS;
            assert!(state.on_hand_units.abs() <= bound, "{}", state.on_hand_units);
        }
    }
});
