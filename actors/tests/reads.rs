//! Lookups never wait in a shard's mailbox: they decide from the published snapshots, in
//! both decision modes, while the shard is stuck on a write, and they never see a write that
//! is not durable yet. Cold pairs are activated in one pass and answer as warm ones do.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use stockgrid_actors::audit::NodeMoment;
use stockgrid_actors::decision::{DecisionMode, ReasonCode};
use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source, Surface};
use stockgrid_actors::engine::Decided;
use stockgrid_actors::time::{MINUTE_MS, SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig, Lookup};
use stockgrid_inference::model::Model;
use stockgrid_storage::{
    KeyValue, MemoryStore, Operation, Store, StoreError, StoreLimits, WriteBatch,
};

const T0: Timestamp = Timestamp(1_772_445_600_000); // 2026-03-02T10:00:00Z
const PROMPTLY: Duration = Duration::from_secs(5);

/// A store whose commits wait while its gate is closed (on the group committer's thread):
/// every commit, or only those writing a key that contains `Gate::only`.
#[derive(Debug, Default)]
struct GatedStore {
    inner: MemoryStore,
    gate: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    closed: bool,
    waiting: usize,
    only: Option<Vec<u8>>,
}

impl GatedStore {
    fn close(&self) {
        self.gate.lock().expect("gate").closed = true;
    }

    /// Closes the gate to the commits that write a key containing `pattern` only.
    fn close_to(&self, pattern: &[u8]) {
        let mut gate = self.gate.lock().expect("gate");
        gate.only = Some(pattern.to_vec());
        gate.closed = true;
    }

    fn open(&self) {
        self.gate.lock().expect("gate").closed = false;
        self.changed.notify_all();
    }

    /// Waits until a commit is held at the gate.
    fn wait_for_held_commit(&self) {
        let gate = self.gate.lock().expect("gate");
        let (gate, timeout) = self
            .changed
            .wait_timeout_while(gate, PROMPTLY, |gate| gate.waiting == 0)
            .expect("gate");
        assert!(
            !timeout.timed_out() && gate.waiting > 0,
            "no commit reached the gate"
        );
    }
}

impl Store for GatedStore {
    fn backend_name(&self) -> &'static str {
        "gated"
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.scan(start, end, limit)
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut gate = self.gate.lock().expect("gate");
        if let Some(pattern) = &gate.only {
            let gated = batch.operations.iter().any(|operation| match operation {
                Operation::Put { key, .. } => key.windows(pattern.len()).any(|w| w == pattern),
                _ => false,
            });
            if !gated {
                drop(gate);
                return self.inner.commit(batch);
            }
        }
        gate.waiting += 1;
        self.changed.notify_all();
        let mut gate = self
            .changed
            .wait_while(gate, |gate| gate.closed)
            .expect("gate");
        gate.waiting -= 1;
        drop(gate);
        self.inner.commit(batch)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// An arrival at `T0` of an event dated a minute before (counts) or at `T0` (sales, so
/// that they come after the count).
fn arrival(id: &str, kind: EventKind, source: Source, pair: PairKey, units: i64) -> Arrival {
    let event_time = if kind == EventKind::Count {
        T0.plus_ms(-MINUTE_MS)
    } else {
        T0
    };
    Arrival {
        event: Event::new(id, source, kind, pair, units, event_time),
        arrival_time: T0,
    }
}

/// An engine of one shard (every pair shares its mailbox) over a gated store.
async fn engine(mode: DecisionMode) -> (Engine, Arc<GatedStore>) {
    let store = Arc::new(GatedStore::default());
    let config = EngineConfig {
        shard_count: 1,
        ..EngineConfig::default()
    };
    let engine = Engine::start(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(SimulatedClock::starting_at(T0)),
        config,
    )
    .await
    .expect("engine");
    let model = (mode == DecisionMode::Ml).then(|| Arc::new(Model::shipped().expect("model")));
    engine.decisions().configure(mode, model);
    (engine, store)
}

/// The log position an audited decision read (`None` for a rules decision from a view).
fn log_position(decided: &Decided) -> Option<u64> {
    match &decided.moment {
        Some(NodeMoment::Entity { log_position, .. }) => *log_position,
        _ => None,
    }
}

/// The answers of one batch, every item answered.
async fn batch(engine: &Engine, lookups: &[Lookup]) -> Vec<Decided> {
    engine
        .decide_many(lookups)
        .await
        .expect("batch")
        .into_iter()
        .map(|answer| answer.expect("item"))
        .collect()
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROMPTLY, future)
        .await
        .unwrap_or_else(|_| panic!("{what} waited behind the shard's write"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_from_durable_state_while_the_shard_waits_on_a_write() {
    for mode in [DecisionMode::Rules, DecisionMode::Ml] {
        let (engine, store) = engine(mode).await;
        let counted = PairKey::new(1, 1);
        let count = arrival("c1", EventKind::Count, Source::StoreInventory, counted, 10);
        engine.ingest(vec![count]).await.expect("count");
        let before = engine
            .decide(counted, 1, Surface::ItemPage, true)
            .await
            .expect("lookup");
        assert_eq!(before.version, 1, "{mode:?}");

        store.close();
        let writer = {
            let engine = engine.clone();
            let sale = arrival("s1", EventKind::Sale, Source::Pos, counted, 10);
            tokio::spawn(async move { engine.ingest(vec![sale]).await })
        };
        tokio::task::spawn_blocking({
            let store = Arc::clone(&store);
            move || store.wait_for_held_commit()
        })
        .await
        .expect("gate");
        // The shard is stuck in its write; the sale is applied in its memory, not durable.
        let during = within(
            "a lookup of a resident pair",
            engine.decide(counted, 1, Surface::ItemPage, true),
        )
        .await
        .expect("lookup");
        // The pair's own state is the durable one. (The shared facts of its location and SKU
        // are statistics learned as events are applied, not records: they may already count
        // the sale, and a decision record keeps the values it read.)
        assert_eq!(
            during.version, before.version,
            "{mode:?}: saw a write not yet durable"
        );
        assert_eq!(log_position(&during), log_position(&before), "{mode:?}");
        assert_eq!(during.decision.available, before.decision.available);
        assert_eq!(during.decision.reason, before.decision.reason);
        if mode == DecisionMode::Rules {
            assert_eq!(during, before);
        }
        let unseen = within(
            "a lookup of a pair never seen",
            engine.decide(PairKey::new(9, 9), 1, Surface::Pickup, false),
        )
        .await
        .expect("lookup");
        assert_eq!(unseen.decision.reason, ReasonCode::NoRecord, "{mode:?}");
        assert!(!unseen.decision.available);
        assert_eq!(unseen.version, 0);

        store.open();
        writer.await.expect("writer").expect("sale");
        let after = engine
            .decide(counted, 1, Surface::ItemPage, false)
            .await
            .expect("lookup");
        assert_eq!(after.version, 2, "{mode:?}: the durable sale is published");
        assert!(!after.decision.available, "{mode:?}: every unit was sold");
        engine.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_cold_warm_and_unseen_pairs_answers_as_single_lookups_do() {
    for mode in [DecisionMode::Rules, DecisionMode::Ml] {
        let (engine, _store) = engine(mode).await;
        let arrivals: Vec<Arrival> = (0..40)
            .map(|sku| {
                let pair = PairKey::new(sku, 1);
                arrival(
                    &format!("c{sku}"),
                    EventKind::Count,
                    Source::StoreInventory,
                    pair,
                    (sku % 4) as i64,
                )
            })
            .collect();
        engine.ingest(arrivals).await.expect("counts");
        let lookups: Vec<Lookup> = (0..60)
            .map(|i| Lookup {
                pair: PairKey::new(i % 50, 1), // 40 known, 10 never seen, some twice
                quantity: 1 + (i % 3) as i64,
                surface: if i % 2 == 0 {
                    Surface::Pickup
                } else {
                    Surface::ItemPage
                },
                digest: i % 5 == 0,
            })
            .collect();
        let mut singles = Vec::new();
        for lookup in &lookups {
            singles.push(
                engine
                    .decide(lookup.pair, lookup.quantity, lookup.surface, lookup.digest)
                    .await
                    .expect("lookup"),
            );
        }
        // Every pair cold: the batch activates them (one message for the one shard).
        assert_eq!(engine.passivate_all().await.expect("passivate"), 40);
        assert_eq!(
            batch(&engine, &lookups).await,
            singles,
            "{mode:?}: cold batch"
        );
        assert_eq!(engine.resident_entities().await.expect("count"), 40);
        assert_eq!(
            batch(&engine, &lookups).await,
            singles,
            "{mode:?}: warm batch"
        );
        assert!(singles.iter().any(|d| d.decision.available));
        assert!(
            singles
                .iter()
                .any(|d| d.decision.reason == ReasonCode::NoRecord)
        );
        engine.shutdown().await.expect("shutdown");
    }
}

/// The pair the sampling tests ask about, counted once so that its decision is an ml one.
const SAMPLED_PAIR: PairKey = PairKey {
    sku: 7,
    location: 70,
};

/// An ml engine over a gated store with `SAMPLED_PAIR` counted.
async fn engine_with_a_counted_pair() -> (Engine, Arc<GatedStore>) {
    let (engine, store) = engine(DecisionMode::Ml).await;
    let counted = arrival(
        "count",
        EventKind::Count,
        Source::StoreInventory,
        SAMPLED_PAIR,
        9,
    );
    engine.ingest(vec![counted]).await.expect("ingest");
    (engine, store)
}

/// A sampled (audited) item-page lookup of `SAMPLED_PAIR` under decision id `{id}/7-70`.
fn sampled(id: &str) -> (String, Lookup) {
    (
        format!("{id}/7-70"),
        Lookup {
            pair: SAMPLED_PAIR,
            quantity: 1,
            surface: Surface::ItemPage,
            digest: true,
        },
    )
}

/// A sampled item-page record is not waited for: its answer returns while the store holds
/// every commit, and the record lands once the store lets it (a promise's record, by
/// contrast, is durable before its answer). Samples still lingering at shutdown are written
/// before the engine stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_records_never_hold_an_answer_and_land_after_it() {
    let (engine, store) = engine_with_a_counted_pair().await;
    store.close();
    let answered = within(
        "a sampled lookup",
        engine.decide_recorded_many(&[sampled("d-1")]),
    )
    .await
    .expect("answered");
    assert!(answered[0].is_ok(), "{answered:?}");
    store.wait_for_held_commit();
    assert_eq!(engine.decision_record("d-1/7-70").expect("read"), None);
    store.open();
    let deadline = std::time::Instant::now() + PROMPTLY;
    while engine.decision_record("d-1/7-70").expect("read").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sample never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    engine
        .decide_recorded_many(&[sampled("d-2"), sampled("d-3")])
        .await
        .expect("answered");
    engine.shutdown().await.expect("shutdown");
    let restarted = Engine::start(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(SimulatedClock::starting_at(T0)),
        EngineConfig::default(),
    )
    .await
    .expect("restart");
    for id in ["d-1/7-70", "d-2/7-70", "d-3/7-70"] {
        let record = restarted.decision_record(id).expect("read");
        assert!(
            record.is_some_and(|r| r.decision_id == id),
            "{id} was written"
        );
    }
    restarted.shutdown().await.expect("shutdown");
}

/// Shutdown waits for a flush of sampled records already under way: the linger's end has
/// taken the records and its commit is held at the store when shutdown begins, and when
/// shutdown returns the record is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_sampled_flush_under_way() {
    let (engine, store) = engine_with_a_counted_pair().await;
    store.close_to(b"d-9/7-70");
    engine
        .decide_recorded_many(&[sampled("d-9")])
        .await
        .expect("answered");
    // The linger ends and its commit reaches the gate.
    let waiting = Arc::clone(&store);
    tokio::task::spawn_blocking(move || waiting.wait_for_held_commit())
        .await
        .expect("held");
    let opener = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            store.open();
        })
    };
    engine.shutdown().await.expect("shutdown");
    let written = store
        .inner
        .scan(b"", &[0xff; 8], usize::MAX)
        .expect("scan")
        .iter()
        .any(|(key, _)| key.windows(8).any(|w| w == b"d-9/7-70"));
    assert!(
        written,
        "shutdown returned before the sampled record was durable"
    );
    opener.join().expect("opener");
}

/// A store reached over a network, whose reads, once armed, wait until released.
#[derive(Debug, Default)]
struct RemoteStore {
    inner: MemoryStore,
    armed: std::sync::atomic::AtomicBool,
    released: Mutex<bool>,
    changed: Condvar,
}

impl RemoteStore {
    /// A read under way waits here (at most `PROMPTLY`); whether it was released in time.
    fn round_trip(&self) -> bool {
        if !self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        let released = self.released.lock().expect("released");
        let (released, _) = self
            .changed
            .wait_timeout_while(released, PROMPTLY, |released| !*released)
            .expect("released");
        *released
    }

    fn release(&self) {
        *self.released.lock().expect("released") = true;
        self.changed.notify_all();
    }
}

impl Store for RemoteStore {
    fn backend_name(&self) -> &'static str {
        "remote"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.round_trip() {
            return Err(StoreError::Unavailable {
                context: "read key",
                message: "never released".to_owned(),
            });
        }
        self.inner.get(key)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.scan(start, end, limit)
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.inner.commit(batch)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// A lookup that must read a remote store (a pair not resident) does not hold the runtime's
/// only worker for the round trip: another task runs meanwhile, and here it is that task that
/// lets the read finish. Were the read made on the worker, the other task could never run and
/// the read would give up after `PROMPTLY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_remote_read_never_holds_a_runtime_worker() {
    let store = Arc::new(RemoteStore::default());
    let engine = Engine::start(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(SimulatedClock::starting_at(T0)),
        EngineConfig {
            shard_count: 1,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let lookup = Lookup {
        pair: PairKey::new(3, 30),
        quantity: 1,
        surface: Surface::ItemPage,
        digest: false,
    };
    let reading = tokio::spawn({
        let engine = engine.clone();
        async move { engine.decide_many(&[lookup]).await }
    });
    let releaser = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.release() }
    });
    releaser.await.expect("the other task ran");
    let answers = reading.await.expect("lookup").expect("answered");
    let decided = answers[0].as_ref().expect("read in time");
    assert_eq!(decided.decision.reason, ReasonCode::NoRecord);
    engine.shutdown().await.expect("shutdown");
}
