//! Throughput of the engine: the pure core on one core, and durable apply through shards,
//! the group committer and the embedded store on disk.
//!
//! Run: `cargo bench -p stockgrid-actors --bench engine`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source};
use stockgrid_actors::ledger::{
    EntityState, Identity, LedgerConfig, LedgerEntry, RecordedDeltas, ingest,
};
use stockgrid_actors::time::{SECOND_MS, SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_storage::{EmbeddedStore, Store};

const T0: Timestamp = Timestamp(1_772_445_600_000);

/// A realistic mix: mostly sales, some receipts, returns and adjustments, an observation
/// now and then; arrivals up to a few minutes late; one arrival every `spacing_ms`.
fn realistic_stream(pairs: u64, count: usize, spacing_ms: i64, seed: u64) -> Vec<Arrival> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|i| {
            let arrival_time = T0.plus_ms((seed as i64 * count as i64 + i as i64) * spacing_ms);
            let event_time = Timestamp(arrival_time.0 - (next() % 300) as i64 * SECOND_MS);
            let (kind, source, quantity) = match next() % 100 {
                0..=69 => (EventKind::Sale, Source::Pos, 1 + (next() % 3) as i64),
                70..=79 => (EventKind::Receipt, Source::Receiving, 12),
                80..=84 => (EventKind::Return, Source::Pos, 1),
                85..=89 => (EventKind::Adjustment, Source::StoreInventory, 1),
                90..=94 => (
                    EventKind::Count,
                    Source::StoreInventory,
                    (next() % 30) as i64,
                ),
                95..=97 => (EventKind::RfidRead, Source::Rfid, (next() % 30) as i64),
                _ => (EventKind::Snapshot, Source::Wms, (next() % 30) as i64),
            };
            let event = Event::new(
                format!("{seed}-{i}"),
                source,
                kind,
                PairKey::new(next() % pairs, (next() % 4) as u32),
                quantity,
                event_time,
            );
            Arrival {
                event,
                arrival_time,
            }
        })
        .collect()
}

fn pure_core(c: &mut Criterion) {
    let config = LedgerConfig::default();
    let stream = realistic_stream(10_000, 100_000, 10, 7);
    let entries: Vec<(LedgerEntry, Timestamp)> = stream
        .iter()
        .flat_map(|a| {
            LedgerEntry::expand(a.event.clone())
                .into_iter()
                .map(move |e| (e, a.arrival_time))
        })
        .collect();
    let mut group = c.benchmark_group("pure_core");
    group.throughput(Throughput::Elements(entries.len() as u64));
    group.bench_function("apply_admitted", |b| {
        b.iter(|| {
            let mut states: HashMap<PairKey, EntityState> = HashMap::with_capacity(40_000);
            let mut history = RecordedDeltas::default();
            for (entry, arrival) in &entries {
                let _ = states.entry(entry.target()).or_default().apply_admitted(
                    entry,
                    *arrival,
                    &config,
                    &mut history,
                );
                history.record(entry);
            }
            states.len()
        })
    });
    group.bench_function("ingest_with_dedup", |b| {
        b.iter(|| {
            let mut states: HashMap<PairKey, EntityState> = HashMap::with_capacity(40_000);
            let mut identities: HashMap<Identity, u128> = HashMap::with_capacity(entries.len());
            let mut history = RecordedDeltas::default();
            for (entry, arrival) in &entries {
                let state = states.entry(entry.target()).or_default();
                let _ = ingest(
                    state,
                    entry,
                    *arrival,
                    &config,
                    &mut identities,
                    &mut history,
                );
                history.record(entry);
            }
            states.len()
        })
    });
    group.finish();
}

fn durable_apply(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    const PAIRS: u64 = 25_000; // x 4 locations: 100,000 active pairs
    const BATCH: usize = 4_096;
    const BATCHES_IN_FLIGHT: usize = 4;
    // One engine for the whole benchmark, warmed so every pair is active: this measures the
    // steady state of durable apply, not first activations.
    let directory = tempfile::tempdir().expect("temporary directory");
    let clock = SimulatedClock::starting_at(T0);
    let engine = runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory.path()).expect("open"));
        let engine = Engine::start(store, Arc::new(clock.clone()), EngineConfig::default())
            .await
            .expect("start");
        for n in 0..80u64 {
            let batch = realistic_stream(PAIRS, BATCH * 2, 1, n);
            clock.advance_to(batch[batch.len() - 1].arrival_time);
            engine.ingest(batch).await.expect("warm up");
        }
        engine
    });
    let mut seed = 1_000u64;
    let mut group = c.benchmark_group("durable_apply");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((BATCH * BATCHES_IN_FLIGHT) as u64));
    group.bench_function("embedded_store_4_concurrent_batches_of_4096", |b| {
        b.iter_custom(|iterations| {
            let batches: Vec<Vec<Arrival>> = (0..iterations as usize * BATCHES_IN_FLIGHT)
                .map(|_| {
                    seed += 1;
                    realistic_stream(PAIRS, BATCH, 1, seed)
                })
                .collect();
            runtime.block_on(async {
                let started = Instant::now();
                let mut pending: tokio::task::JoinSet<Result<(), stockgrid_actors::EngineError>> =
                    tokio::task::JoinSet::new();
                for batch in batches {
                    if pending.len() >= BATCHES_IN_FLIGHT {
                        pending
                            .join_next()
                            .await
                            .expect("task")
                            .expect("join")
                            .expect("ingest");
                    }
                    clock.advance_to(batch[batch.len() - 1].arrival_time);
                    let engine = engine.clone();
                    pending.spawn(async move { engine.ingest(batch).await.map(|_| ()) });
                }
                while let Some(done) = pending.join_next().await {
                    done.expect("join").expect("ingest");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    runtime.block_on(engine.shutdown()).expect("shutdown");
}

criterion_group!(benches, pure_core, durable_apply);
criterion_main!(benches);
