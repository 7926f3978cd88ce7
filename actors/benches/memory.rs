//! Resident bytes per active (not passivated) pair, under a realistic event mix.
//!
//! Run: `cargo bench -p stockgrid-actors --bench memory` (optionally `-- PAIRS`, default
//! 1,000,000). A counting global allocator gives the live heap. The engine ingests a
//! simulated day of events for PAIRS pairs through the real shards and embedded store, then:
//! 1. flushes the store's memtable and measures the heap (every pair active);
//! 2. passivates every pair, flushes again and measures (no pair active);
//! 3. reactivates every pair from the store and measures.
//!
//! The store, the identity tail and the caches are the same in all three states, so the
//! differences are what active entities cost: their map entries, read views and heap.

// A global allocator can only be written with `unsafe`; it forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source};
use stockgrid_actors::time::{HOUR_MS, SECOND_MS, SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_storage::{EmbeddedStore, Store};

struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same pointer and layout the caller got from `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const T0: Timestamp = Timestamp(1_772_445_600_000);
const EVENTS_PER_PAIR: u64 = 8;
const BATCH: usize = 8_192;

fn resident_set_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// The event mix of one store-day: mostly sales, a receipt, occasional returns and
/// adjustments; about a third of pairs get a count, RFID read or WMS snapshot; some
/// transfers; delays of up to ten minutes.
fn day_of_events(pairs: u64, batch_index: u64, state: &mut u64) -> Vec<Arrival> {
    let total = pairs * EVENTS_PER_PAIR;
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    (0..BATCH as u64)
        .map(|i| {
            let n = batch_index * BATCH as u64 + i;
            let arrival_time =
                T0.plus_ms((n as i128 * 24 * HOUR_MS as i128 / total as i128) as i64);
            let event_time = Timestamp(arrival_time.0 - (next() % 600) as i64 * SECOND_MS);
            let pair_index = next() % pairs;
            let pair = PairKey::new(pair_index / 4, (pair_index % 4) as u32);
            let (kind, source, quantity) = match next() % 1000 {
                0..=649 => (EventKind::Sale, Source::Pos, 1 + (next() % 2) as i64),
                650..=769 => (EventKind::Receipt, Source::Receiving, 12),
                770..=799 => (EventKind::Return, Source::Pos, 1),
                800..=829 => (EventKind::Adjustment, Source::StoreInventory, 1),
                830..=889 => (
                    EventKind::Count,
                    Source::StoreInventory,
                    (next() % 30) as i64,
                ),
                890..=939 => (EventKind::RfidRead, Source::Rfid, (next() % 30) as i64),
                940..=969 => (EventKind::Snapshot, Source::Wms, (next() % 30) as i64),
                _ => (EventKind::TransferIn, Source::Transfer, 6),
            };
            let event = Event::new(format!("m{n}"), source, kind, pair, quantity, event_time);
            Arrival {
                event,
                arrival_time,
            }
        })
        .collect()
}

fn main() {
    let pairs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let directory = tempfile::tempdir().expect("temporary directory");
        // The default block cache: it is full long before the day ends, and the warm-up cycle
        // below keeps it full for both measurements that are compared.
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path()).expect("open"));
        let clock = SimulatedClock::starting_at(T0);
        // Idle entities are never passivated during the day: every pair stays active.
        let config = EngineConfig { passivate_after_ms: 48 * HOUR_MS, ..EngineConfig::default() };
        let engine = Engine::start(Arc::clone(&store), Arc::new(clock.clone()), config).await.expect("start");
        let batches = pairs * EVENTS_PER_PAIR / BATCH as u64;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let started = std::time::Instant::now();
        for batch_index in 0..batches {
            let batch = day_of_events(pairs, batch_index, &mut state);
            clock.advance_to(batch[batch.len() - 1].arrival_time);
            for result in engine.ingest(batch).await.expect("ingest") {
                result.expect("event");
            }
            if batch_index % 100 == 0 {
                eprintln!("memory bench: {batch_index}/{batches} batches");
            }
        }
        eprintln!("memory bench: ingested {} events in {:.0} s", batches * BATCH as u64, started.elapsed().as_secs_f64());
        let active = engine.resident_entities().await.expect("count");
        store.flush_memory().expect("flush");
        let heap_active = LIVE_BYTES.load(Ordering::Relaxed);

        engine.passivate_all().await.expect("passivate");
        let heap_passive_unflushed = LIVE_BYTES.load(Ordering::Relaxed);
        store.flush_memory().expect("flush");
        let heap_passive = LIVE_BYTES.load(Ordering::Relaxed);
        if std::env::var_os("STOCKGRID_MEMORY_DEBUG").is_some() {
            eprintln!("heap: passive before the store's flush {heap_passive_unflushed}");
        }

        // Reactivate once to warm the store's block cache, passivate, then measure a second
        // reactivation: only the entities differ between the two measurements.
        let reactivate = || async {
            for index in 0..pairs {
                engine.read_view(PairKey::new(index / 4, (index % 4) as u32)).await.expect("read");
            }
        };
        reactivate().await;
        engine.passivate_all().await.expect("passivate");
        store.flush_memory().expect("flush");
        let heap_warm_passive = LIVE_BYTES.load(Ordering::Relaxed);
        let rss_warm_passive = resident_set_bytes();
        reactivate().await;
        let reactivated = engine.resident_entities().await.expect("count");
        let heap_reactivated = LIVE_BYTES.load(Ordering::Relaxed);
        let rss_reactivated = resident_set_bytes();

        let per_pair = |bytes: isize, count: usize| bytes as f64 / count.max(1) as f64;
        if std::env::var_os("STOCKGRID_MEMORY_DEBUG").is_some() {
            eprintln!("heap: active {heap_active}, passive {heap_passive}, warm passive {heap_warm_passive}, reactivated {heap_reactivated}");
        }
        println!("pairs active after the day: {active}; reactivated: {reactivated}");
        println!(
            "heap bytes per active pair: {:.0} live-grown over the day, {:.0} reactivated from snapshots",
            per_pair(heap_active - heap_passive, active),
            per_pair(heap_reactivated - heap_warm_passive, reactivated)
        );
        println!(
            "resident set growth per reactivated pair (includes allocator slack): {:.0}",
            per_pair(rss_reactivated as isize - rss_warm_passive as isize, reactivated)
        );
        engine.shutdown().await.expect("shutdown");
    });
}
