//! The floors stockgrid is measured against: what its figures would be if the node did
//! nothing but what it cannot avoid.
//!
//! - [`serve_floor`]: a gRPC server of the same `Availability` and `Ingest` services that
//!   decodes each request and answers it without deciding or storing anything (every lookup
//!   "available", every event "accepted"), so `stockgrid loadgen` against it measures the cost
//!   of gRPC, HTTP/2 and the load generator on this machine.
//! - [`store_floor`]: the store alone (embedded, or PostgreSQL through its backend) absorbing
//!   the writes a durable ingest makes. The write batches are recorded by running the real
//!   engine over an in-memory store with the load generator's ingest workload, then committed
//!   to a fresh store through the same group committer, from as many submitters as the engine
//!   has shards (each waits for its batch to be durable, as a shard does). Its events per
//!   second is the most a durable ingest could reach on this store with these writes.
//! - [`postgres_floor`]: PostgreSQL alone absorbing the same rows: each recorded batch as one
//!   plain transaction (one `unnest` upsert, READ COMMITTED, no conditions, no commit id) on a
//!   connection per submitter, so the database's own group commit merges their WAL flushes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use stockgrid_actors::domain::Arrival;
use stockgrid_actors::time::{Clock, WallClock};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_api::convert;
use stockgrid_api::proto::v1 as pb;
use stockgrid_storage::group_commit::{GroupCommitConfig, GroupCommitter};
use stockgrid_storage::memory::MemoryStore;
use stockgrid_storage::store::KeyValue;
use stockgrid_storage::{OpenSettings, Store, StoreError, StoreLimits, StoreLocation, WriteBatch};
use tonic::{Request, Response, Status, Streaming};

use crate::loadgen::{Kind, KindReport, LoadReport, counts, sales};
use crate::requests::Rng;

/// The do-nothing services.
#[derive(Clone, Debug, Default)]
struct Floor {
    answers: Arc<AtomicU64>,
}

impl Floor {
    /// An answer shaped like a node's to a question about `sku` at `location` (a decision
    /// id of the same form, a reason code).
    fn answer(&self, sku: u64, location: u32) -> pb::AvailabilityAnswer {
        let n = self.answers.fetch_add(1, Ordering::Relaxed);
        pb::AvailabilityAnswer {
            available: true,
            probability: 1.0,
            expected_on_hand: 1.0,
            mode: pb::DecisionMode::Ml as i32,
            reason: "BELIEF_CONFIDENT".to_owned(),
            state_version: 1,
            decision_id: format!("d-floor-{n:x}/{sku}-{location}"),
        }
    }
}

#[tonic::async_trait]
impl pb::availability_server::Availability for Floor {
    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::AvailabilityAnswer>, Status> {
        let item = request.get_ref();
        Ok(Response::new(self.answer(item.sku, item.location)))
    }

    async fn batch_get_availability(
        &self,
        request: Request<pb::BatchGetAvailabilityRequest>,
    ) -> Result<Response<pb::BatchGetAvailabilityResponse>, Status> {
        let results = request
            .get_ref()
            .items
            .iter()
            .map(|item| pb::BatchItemResult {
                result: Some(pb::batch_item_result::Result::Answer(
                    self.answer(item.sku, item.location),
                )),
            })
            .collect();
        Ok(Response::new(pb::BatchGetAvailabilityResponse { results }))
    }
}

type AckStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::IngestEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for Floor {
    async fn ingest_events(
        &self,
        request: Request<pb::IngestEventsRequest>,
    ) -> Result<Response<pb::IngestEventsResponse>, Status> {
        let results = request
            .get_ref()
            .events
            .iter()
            .map(|_| pb::EventResult {
                status: pb::EventStatus::Accepted as i32,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::IngestEventsResponse { results }))
    }

    type StreamEventsStream = AckStream;

    async fn stream_events(
        &self,
        _request: Request<Streaming<pb::IngestEventsRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        Err(Status::unimplemented("the floor answers unary calls only"))
    }
}

/// Serves the do-nothing services on `address` until the process ends.
pub async fn serve_floor(address: SocketAddr) -> anyhow::Result<()> {
    let floor = Floor::default();
    tonic::transport::Server::builder()
        .add_service(pb::availability_server::AvailabilityServer::new(
            floor.clone(),
        ))
        .add_service(pb::ingest_server::IngestServer::new(floor))
        .serve(address)
        .await
        .with_context(|| format!("serve the floor on {address}"))
}

/// A store that keeps a copy of every batch committed to it (over an in-memory store).
#[derive(Debug, Default)]
struct RecordingStore {
    inner: MemoryStore,
    recording: Mutex<Option<Vec<WriteBatch>>>,
}

impl RecordingStore {
    fn start_recording(&self) {
        if let Ok(mut recording) = self.recording.lock() {
            *recording = Some(Vec::new());
        }
    }

    fn recorded(&self) -> Vec<WriteBatch> {
        self.recording
            .lock()
            .ok()
            .and_then(|mut recording| recording.take())
            .unwrap_or_default()
    }
}

impl Store for RecordingStore {
    fn backend_name(&self) -> &'static str {
        "recording"
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
        if let Ok(mut recording) = self.recording.lock()
            && let Some(batches) = recording.as_mut()
        {
            batches.push(batch.clone());
        }
        self.inner.commit(batch)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }

    fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// What [`store_floor`] writes.
#[derive(Clone, Debug)]
pub struct StoreFloorOptions {
    /// The store written: a new (or empty) directory for the embedded store, or a
    /// PostgreSQL database (password from `PGPASSWORD`).
    pub store: StoreLocation,
    /// Sales ingested to record the writes.
    pub events: u64,
    /// Events per ingest request.
    pub ingest_events: usize,
    /// Ingest requests in flight while recording.
    pub concurrency: usize,
    /// Pairs the sales are spread over (each counted once first, not measured).
    pub pairs: u64,
    /// The engine's shard count: the submitters of the replay.
    pub shards: usize,
}

/// Records the writes of a durable ingest, reporting their count and size.
async fn recorded_writes(
    options: &StoreFloorOptions,
    floor: &str,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Vec<WriteBatch>> {
    let batches = record_ingest_writes(options, progress).await?;
    let operations: usize = batches.iter().map(|b| b.operations.len()).sum();
    let bytes: usize = batches.iter().map(WriteBatch::byte_size).sum();
    progress(&format!(
        "{floor}: recorded {} batches, {operations} writes, {:.1} MiB for {} events ({:.1} writes and {:.0} bytes an event)",
        batches.len(),
        bytes as f64 / (1 << 20) as f64,
        options.events,
        operations as f64 / options.events.max(1) as f64,
        bytes as f64 / options.events.max(1) as f64,
    ));
    Ok(batches)
}

/// Each submitter's share of the recorded batches, in recorded order.
fn shares(batches: Vec<WriteBatch>, submitters: usize) -> Vec<Vec<WriteBatch>> {
    let mut shares: Vec<Vec<WriteBatch>> = (0..submitters.max(1)).map(|_| Vec::new()).collect();
    let count = shares.len();
    for (index, batch) in batches.into_iter().enumerate() {
        shares[index % count].push(batch);
    }
    shares
}

/// Records the writes of a durable ingest and measures the store absorbing them.
pub async fn store_floor(
    options: &StoreFloorOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<LoadReport> {
    let batches = recorded_writes(options, "store floor", &mut progress).await?;
    let location = options.store.clone();
    let store = tokio::task::spawn_blocking(move || location.open(&OpenSettings::default()))
        .await?
        .with_context(|| format!("open the store {}", options.store))?;
    let committer = GroupCommitter::start(
        Arc::clone(&store),
        GroupCommitConfig::for_store(store.as_ref()),
    )?;
    // Each submitter commits its share in recorded order, one batch durable at a time.
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares(batches, options.shards) {
        let committer = committer.clone();
        tasks.spawn(async move {
            let mut report = KindReport::default();
            for batch in share {
                let sent = Instant::now();
                let ok = committer.submit(batch).await.wait().await.is_ok();
                report.record(ok, 0, sent.elapsed());
            }
            report
        });
    }
    let mut commits = KindReport::default();
    while let Some(report) = tasks.join_next().await {
        commits.add(&report?);
    }
    let elapsed = start.elapsed();
    committer.shutdown();
    // The floor's items are the events whose writes it absorbed.
    commits.items = options.events;
    Ok(LoadReport::new(
        "store-floor",
        BTreeMap::from([(Kind::Ingest, commits)]),
        elapsed,
    ))
}

/// Records the writes of a durable ingest and measures PostgreSQL alone writing the same rows
/// into a table of its own (`floor_kv`, created if missing) of the database at `url`
/// (password from `PGPASSWORD`): each batch one plain transaction, a connection per
/// submitter.
pub async fn postgres_floor(
    url: &str,
    options: &StoreFloorOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<LoadReport> {
    let batches = recorded_writes(options, "postgres floor", &mut progress).await?;
    let mut config: tokio_postgres::Config = url.parse().context("--postgres-floor URL")?;
    if let Ok(password) = std::env::var("PGPASSWORD") {
        config.password(password);
    }
    let mut clients = Vec::new();
    for _ in 0..options.shards.max(1) {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .context("connect to PostgreSQL")?;
        tokio::spawn(connection);
        clients.push(client);
    }
    clients[0]
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS floor_kv (k bytea PRIMARY KEY, v bytea NOT NULL)",
        )
        .await
        .context("create floor_kv")?;
    // Each batch's net rows, folded before the clock starts: resolving a batch is the
    // store's work, not the database's.
    let shares: Vec<Vec<NetRows>> = shares(batches, options.shards)
        .into_iter()
        .map(|share| share.into_iter().map(net_rows).collect())
        .collect();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut client, share) in clients.into_iter().zip(shares) {
        tasks.spawn(async move {
            let upsert = client
                .prepare(
                    "INSERT INTO floor_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                )
                .await?;
            let delete = client
                .prepare("DELETE FROM floor_kv WHERE k = ANY($1::bytea[])")
                .await?;
            let mut report = KindReport::default();
            for (keys, values, deleted) in share {
                let sent = Instant::now();
                let transaction = client.transaction().await?;
                if !deleted.is_empty() {
                    transaction.execute(&delete, &[&deleted]).await?;
                }
                transaction.execute(&upsert, &[&keys, &values]).await?;
                transaction.commit().await?;
                report.record(true, 0, sent.elapsed());
            }
            anyhow::Ok(report)
        });
    }
    let mut commits = KindReport::default();
    while let Some(report) = tasks.join_next().await {
        commits.add(&report??);
    }
    let elapsed = start.elapsed();
    commits.items = options.events;
    Ok(LoadReport::new(
        "postgres-floor",
        BTreeMap::from([(Kind::Ingest, commits)]),
        elapsed,
    ))
}

/// A batch's net rows: the keys and values put (each key once, its last value) and the keys
/// deleted. Recorded ingest batches carry no conditions and no range deletes.
type NetRows = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn net_rows(batch: WriteBatch) -> NetRows {
    let mut last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for operation in batch.operations {
        match operation {
            stockgrid_storage::Operation::Put { key, value } => {
                last.insert(key, Some(value));
            }
            stockgrid_storage::Operation::Delete { key } => {
                last.insert(key, None);
            }
            stockgrid_storage::Operation::DeleteRange { .. } => {}
        }
    }
    let (mut keys, mut values, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in last {
        match value {
            Some(value) => {
                keys.push(key);
                values.push(value);
            }
            None => deleted.push(key),
        }
    }
    (keys, values, deleted)
}

/// Runs the engine over a recording in-memory store: counts every pair (not recorded), then
/// ingests `options.events` sales the way `stockgrid loadgen --workload ingest` sends them.
async fn record_ingest_writes(
    options: &StoreFloorOptions,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Vec<WriteBatch>> {
    let recording = Arc::new(RecordingStore::default());
    let store: Arc<dyn Store> = Arc::clone(&recording) as Arc<dyn Store>;
    let config = EngineConfig {
        shard_count: options.shards,
        ..EngineConfig::default()
    };
    let engine = Engine::start(store, Arc::new(WallClock), config).await?;
    let run = WallClock.now().0;
    let mut index = 0;
    while index < options.pairs {
        let end = (index + 5_000).min(options.pairs);
        ingest(&engine, counts(index..end, run)).await?;
        index = end;
    }
    progress(&format!(
        "store floor: {} pairs counted; recording the writes of {} sales",
        options.pairs, options.events
    ));
    recording.start_recording();
    let requests = options.events.div_ceil(options.ingest_events.max(1) as u64);
    let next = Arc::new(AtomicU64::new(0));
    let sequence = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency.max(1) {
        let engine = engine.clone();
        let next = Arc::clone(&next);
        let sequence = Arc::clone(&sequence);
        let options = options.clone();
        clients.spawn(async move {
            let mut rng = Rng::seeded(worker as u64 + 1);
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let events = sales(
                    worker,
                    &sequence,
                    &mut rng,
                    options.ingest_events,
                    options.pairs,
                );
                ingest(&engine, events).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    let batches = recording.recorded();
    engine.shutdown().await?;
    Ok(batches)
}

/// Ingests pb events through the same conversion the service uses.
async fn ingest(engine: &Engine, events: Vec<pb::Event>) -> anyhow::Result<()> {
    let now = WallClock.now();
    let arrivals = events
        .into_iter()
        .map(|event| {
            convert::event(event)
                .map(|event| Arrival {
                    event,
                    arrival_time: now,
                })
                .map_err(|(field, reason)| anyhow::anyhow!("{field}: {reason}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for outcome in engine.ingest(arrivals).await? {
        outcome?;
    }
    Ok(())
}
