//! `stockgrid loadgen`: load against a running node (or one of the floors in
//! [`crate::floor`]) over gRPC, with latencies in hdrhistograms, per request kind.
//!
//! Closed loop (no `rate`): `concurrency` clients each send the next request as soon as the
//! previous answer arrives. Open loop (`rate` requests/s): request *i* is due at
//! `start + i / rate`; a client sends it at that moment (or as soon as it is free) and its
//! latency is measured from the moment it was due, so a stalled server shows up in the
//! tail instead of silently lowering the offered load (no coordinated omission).
//!
//! The mixed workload is 70% point, 20% batch and 10% ingest requests from the same clients;
//! with `ingest_rate` it is instead lookups (7 point to 2 batch; closed loop, or open loop at
//! `rate`) beside ingest sent open loop at that many events per second by clients of its
//! own, which is how the latency of lookups under a given ingest load is measured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use stockgrid_actors::time::{Clock, WallClock};
use stockgrid_api::proto::v1 as pb;
use tonic::transport::Channel;

use crate::requests::{Rng, item_page_lookup};

/// Clients sending the open-loop ingest of a mixed run with an ingest rate.
const INGEST_CLIENTS: usize = 8;
/// Largest latency the histograms hold, in microseconds (2 minutes).
const MAX_LATENCY_US: u64 = 120_000_000;

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `GetAvailability` of one random pair.
    Point,
    /// `BatchGetAvailability` of `batch_items` random pairs.
    Batch,
    /// `IngestEvents` of `ingest_events` sales.
    Ingest,
    /// 70% point, 20% batch, 10% ingest; or, with an ingest rate, lookups beside ingest.
    Mixed,
}

impl Workload {
    /// The name the command line and the JSON report use.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Point => "point",
            Workload::Batch => "batch",
            Workload::Ingest => "ingest",
            Workload::Mixed => "mixed",
        }
    }
}

/// The kind of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// One lookup.
    Point,
    /// A batch of lookups.
    Batch,
    /// A batch of events.
    Ingest,
}

impl Kind {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Point => "point",
            Kind::Batch => "batch",
            Kind::Ingest => "ingest",
        }
    }
}

/// A load run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `http://host:port`.
    pub target: String,
    /// What to send.
    pub workload: Workload,
    /// Requests per second (open loop); `None`: closed loop.
    pub rate: Option<u64>,
    /// Mixed workload only: events per second sent open loop beside closed-loop lookups.
    pub ingest_rate: Option<u64>,
    /// How long to measure.
    pub duration: Duration,
    /// Concurrent clients (each with its own connection).
    pub concurrency: usize,
    /// Pairs the requests are spread over.
    pub pairs: u64,
    /// Items per batch lookup.
    pub batch_items: usize,
    /// Events per ingest request.
    pub ingest_events: usize,
    /// Count every pair once before measuring, so lookups find state.
    pub preload: bool,
    /// Look up only pairs whose partition this grid member owns (by the target's routing
    /// table): to compare a batch sent to its owner with the same batch sent through
    /// another node.
    pub owned_by: Option<String>,
}

/// The figures of one kind of request (or of all of them).
#[derive(Debug, Clone)]
pub struct KindReport {
    /// Requests answered OK.
    pub requests: u64,
    /// Items (lookups or events) in those requests.
    pub items: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Lookups answered "not available" with reason OWNER_UNAVAILABLE (a grid whose owner
    /// did not answer): fast, but no answer.
    pub owner_unavailable: u64,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Default for KindReport {
    fn default() -> Self {
        Self::new()
    }
}

impl KindReport {
    /// No requests yet.
    pub fn new() -> Self {
        Self {
            requests: 0,
            items: 0,
            errors: 0,
            owner_unavailable: 0,
            latency_us: Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("histogram bounds"),
        }
    }

    /// Adds `other`'s requests to these.
    pub fn add(&mut self, other: &KindReport) {
        self.requests += other.requests;
        self.items += other.items;
        self.errors += other.errors;
        self.owner_unavailable += other.owner_unavailable;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// Counts one request (its items and latency only when `ok`).
    pub fn record(&mut self, ok: bool, items: u64, latency: Duration) {
        if ok {
            self.requests += 1;
            self.items += items;
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency_us.saturating_record(micros.max(1));
        } else {
            self.errors += 1;
        }
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn json(&self, seconds: f64) -> serde_json::Value {
        json!({
            "requests": self.requests,
            "requests_per_s": self.requests as f64 / seconds,
            "items_per_s": self.items as f64 / seconds,
            "errors": self.errors,
            "owner_unavailable": self.owner_unavailable,
            "latency_ms": {
                "p50": self.latency_ms(0.5),
                "p90": self.latency_ms(0.9),
                "p99": self.latency_ms(0.99),
                "p999": self.latency_ms(0.999),
                "max": self.latency_us.max() as f64 / 1000.0,
            },
        })
    }

    fn lines(&self, seconds: f64, label: &str) -> [String; 2] {
        [
            format!(
                "{label}{} requests in {seconds:.1} s: {:.0} requests/s, {:.0} items/s, {} errors",
                self.requests,
                self.requests as f64 / seconds,
                self.items as f64 / seconds,
                self.errors
            ),
            format!(
                "{label}latency ms: p50 {:.3}, p90 {:.3}, p99 {:.3}, p999 {:.3}, max {:.3}",
                self.latency_ms(0.5),
                self.latency_ms(0.9),
                self.latency_ms(0.99),
                self.latency_ms(0.999),
                self.latency_us.max() as f64 / 1000.0
            ),
        ]
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// The workload's name (`point`, `batch`, `ingest`, `mixed`, or a floor's).
    pub workload: String,
    /// Every request.
    pub total: KindReport,
    /// The requests of each kind sent.
    pub by_kind: BTreeMap<Kind, KindReport>,
    /// Wall time of the measurement.
    pub elapsed: Duration,
}

impl LoadReport {
    /// A report of the requests in `by_kind`.
    pub fn new(workload: &str, by_kind: BTreeMap<Kind, KindReport>, elapsed: Duration) -> Self {
        let mut total = KindReport::new();
        for report in by_kind.values() {
            total.add(report);
        }
        Self {
            workload: workload.to_owned(),
            total,
            by_kind,
            elapsed,
        }
    }

    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as printed by the command.
    pub fn lines(&self) -> Vec<String> {
        let seconds = self.seconds();
        let mut lines = self.total.lines(seconds, "").to_vec();
        if self.by_kind.len() > 1 {
            for (kind, report) in &self.by_kind {
                lines.extend(report.lines(seconds, &format!("  {}: ", kind.name())));
            }
        }
        lines
    }

    /// The report as one JSON object (`stockgrid loadgen --json`).
    pub fn json(&self) -> serde_json::Value {
        let seconds = self.seconds();
        let mut value = self.total.json(seconds);
        value["workload"] = json!(self.workload);
        value["seconds"] = json!(seconds);
        value["by_kind"] = self
            .by_kind
            .iter()
            .map(|(kind, report)| (kind.name().to_owned(), report.json(seconds)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        value
    }
}

/// The reason of a lookup whose owner did not answer.
const OWNER_UNAVAILABLE: &str = "OWNER_UNAVAILABLE";

fn pair_of(index: u64) -> (u64, u32) {
    (1 + index / 100, 1 + (index % 100) as u32)
}

async fn connect(target: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(target.to_owned())?.connect().await?)
}

/// `count` sales at random pairs, with ids unique to this run.
pub(crate) fn sales(
    worker: usize,
    sequence: &AtomicU64,
    rng: &mut Rng,
    count: usize,
    pairs: u64,
) -> Vec<pb::Event> {
    let now = WallClock.now().to_rfc3339();
    (0..count)
        .map(|_| {
            let n = sequence.fetch_add(1, Ordering::Relaxed);
            let (sku, location) = pair_of(rng.below(pairs));
            pb::Event {
                event_id: format!("lg-{worker}-{n}"),
                source: "pos".to_owned(),
                kind: "sale".to_owned(),
                sku,
                location,
                qty: 1,
                event_time: now.clone(),
                ..Default::default()
            }
        })
        .collect()
}

/// `count` of every pair in `range` (`count` events of 1,000,000 units).
pub(crate) fn counts(range: std::ops::Range<u64>, run: i64) -> Vec<pb::Event> {
    let now = WallClock.now().plus_ms(-60_000).to_rfc3339();
    range
        .map(|i| {
            let (sku, location) = pair_of(i);
            pb::Event {
                event_id: format!("lg-count-{run}-{i}"),
                source: "store_inventory".to_owned(),
                kind: "count".to_owned(),
                sku,
                location,
                qty: 1_000_000,
                event_time: now.clone(),
                ..Default::default()
            }
        })
        .collect()
}

/// Counts every pair once, in batches of 5,000.
pub async fn preload(options: &LoadOptions, mut progress: impl FnMut(u64)) -> anyhow::Result<()> {
    let mut client = pb::ingest_client::IngestClient::new(connect(&options.target).await?);
    let run = WallClock.now().0;
    let mut index = 0;
    while index < options.pairs {
        let end = (index + 5_000).min(options.pairs);
        client
            .ingest_events(pb::IngestEventsRequest {
                events: counts(index..end, run),
            })
            .await?;
        index = end;
        progress(index);
    }
    Ok(())
}

/// How a client picks and paces its requests.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// Requests of the workload, closed or open loop at the run's `rate`.
    Workload,
    /// Lookups, 7 point to 2 batch: closed loop, or open loop at the run's `rate`.
    Lookups,
    /// Ingest requests, open loop at this many requests per second (shared by the role).
    Ingest { requests_per_s: f64 },
}

/// The pairs (by index) whose partition `node_id` owns in the target's routing table.
async fn pairs_owned_by(options: &LoadOptions, node_id: &str) -> anyhow::Result<Vec<u64>> {
    let table = pb::catalog_client::CatalogClient::new(connect(&options.target).await?)
        .get_routing_table(pb::GetRoutingTableRequest {})
        .await?
        .into_inner();
    anyhow::ensure!(
        !table.single_node,
        "--owned-by: the target is not a grid node"
    );
    let member = table
        .members
        .iter()
        .position(|member| member.node_id == node_id)
        .ok_or_else(|| anyhow::anyhow!("--owned-by: {node_id:?} owns no partition now"))?;
    let count = u16::try_from(table.partition_count)?;
    let spread = u16::try_from(table.location_spread)?;
    let scheme = stockgrid_actors::partition::PartitionScheme::new(count, spread)
        .map_err(|reason| anyhow::anyhow!("routing table: {reason}"))?;
    let owned: Vec<u64> = (0..options.pairs)
        .filter(|&index| {
            let (sku, location) = pair_of(index);
            let partition = scheme.partition(stockgrid_actors::domain::PairKey::new(sku, location));
            table.owners.get(usize::from(partition)) == Some(&(member as i32))
        })
        .collect();
    anyhow::ensure!(
        !owned.is_empty(),
        "--owned-by: none of the {} pairs is owned by {node_id:?}",
        options.pairs
    );
    Ok(owned)
}

/// Runs the load and measures it.
pub async fn run_load(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let owned = match &options.owned_by {
        Some(node_id) => Some(Arc::new(pairs_owned_by(&options, node_id).await?)),
        None => None,
    };
    let options = Arc::new(options);
    let start = Instant::now() + Duration::from_millis(200);
    let deadline = start + options.duration;
    let sequence = Arc::new(AtomicU64::new(0));
    let mut roles: Vec<Role> = Vec::new();
    match (options.workload, options.ingest_rate) {
        (Workload::Mixed, Some(events_per_s)) => {
            roles.extend((0..options.concurrency).map(|_| Role::Lookups));
            let requests_per_s = events_per_s as f64 / options.ingest_events.max(1) as f64;
            roles.extend((0..INGEST_CLIENTS).map(|_| Role::Ingest { requests_per_s }));
        }
        _ => roles.extend((0..options.concurrency).map(|_| Role::Workload)),
    }
    // One schedule per open-loop role, shared by its clients.
    let workload_schedule = Arc::new(AtomicU64::new(0));
    let ingest_schedule = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(roles.len());
    for (worker, role) in roles.into_iter().enumerate() {
        let options = Arc::clone(&options);
        let sequence = Arc::clone(&sequence);
        let schedule = Arc::clone(match role {
            Role::Ingest { .. } => &ingest_schedule,
            _ => &workload_schedule,
        });
        let channel = connect(&options.target).await?;
        let owned = owned.clone();
        workers.push(tokio::spawn(async move {
            let lookup_pair = |rng: &mut Rng| match &owned {
                Some(owned) => pair_of(owned[rng.below(owned.len() as u64) as usize]),
                None => pair_of(rng.below(options.pairs)),
            };
            let mut availability =
                pb::availability_client::AvailabilityClient::new(channel.clone());
            let mut ingest = pb::ingest_client::IngestClient::new(channel);
            let mut reports: BTreeMap<Kind, KindReport> = BTreeMap::new();
            let mut rng = Rng::seeded(worker as u64 + 1);
            let per_request = |rate: f64| Duration::from_secs_f64(1.0 / rate.max(1e-9));
            loop {
                let open_loop = match role {
                    Role::Workload => options.rate.map(|rate| per_request(rate as f64)),
                    Role::Lookups => options.rate.map(|rate| per_request(rate as f64)),
                    Role::Ingest { requests_per_s } => Some(per_request(requests_per_s)),
                };
                let due = match open_loop {
                    Some(interval) => {
                        let i = schedule.fetch_add(1, Ordering::Relaxed);
                        start + interval.mul_f64(i as f64)
                    }
                    None => Instant::now().max(start),
                };
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let kind = match (role, options.workload) {
                    (Role::Ingest { .. }, _) => Kind::Ingest,
                    (Role::Lookups, _) => {
                        if rng.below(9) < 7 {
                            Kind::Point
                        } else {
                            Kind::Batch
                        }
                    }
                    (Role::Workload, Workload::Point) => Kind::Point,
                    (Role::Workload, Workload::Batch) => Kind::Batch,
                    (Role::Workload, Workload::Ingest) => Kind::Ingest,
                    (Role::Workload, Workload::Mixed) => match rng.below(10) {
                        0..=6 => Kind::Point,
                        7..=8 => Kind::Batch,
                        _ => Kind::Ingest,
                    },
                };
                let mut unanswered = 0;
                let (ok, count) = match kind {
                    Kind::Point => {
                        let (sku, location) = lookup_pair(&mut rng);
                        let request = item_page_lookup(sku, location);
                        let answered = availability.get_availability(request).await;
                        if let Ok(answer) = &answered {
                            unanswered += u64::from(answer.get_ref().reason == OWNER_UNAVAILABLE);
                        }
                        (answered.is_ok(), 1)
                    }
                    Kind::Batch => {
                        let items = (0..options.batch_items)
                            .map(|_| {
                                let (sku, location) = lookup_pair(&mut rng);
                                item_page_lookup(sku, location)
                            })
                            .collect();
                        let answered = availability
                            .batch_get_availability(pb::BatchGetAvailabilityRequest { items })
                            .await;
                        if let Ok(answered) = &answered {
                            unanswered += answered
                                .get_ref()
                                .results
                                .iter()
                                .filter(|result| {
                                    matches!(
                                        &result.result,
                                        Some(pb::batch_item_result::Result::Answer(answer))
                                            if answer.reason == OWNER_UNAVAILABLE
                                    )
                                })
                                .count() as u64;
                        }
                        (answered.is_ok(), options.batch_items as u64)
                    }
                    Kind::Ingest => {
                        let events = sales(
                            worker,
                            &sequence,
                            &mut rng,
                            options.ingest_events,
                            options.pairs,
                        );
                        let answered = ingest
                            .ingest_events(pb::IngestEventsRequest { events })
                            .await;
                        (answered.is_ok(), options.ingest_events as u64)
                    }
                };
                let latency = Instant::now().saturating_duration_since(due);
                let report = reports.entry(kind).or_default();
                report.record(ok, count, latency);
                report.owner_unavailable += unanswered;
            }
            reports
        }));
    }
    let mut by_kind: BTreeMap<Kind, KindReport> = BTreeMap::new();
    for worker in workers {
        for (kind, report) in worker.await? {
            by_kind.entry(kind).or_default().add(&report);
        }
    }
    let elapsed = Instant::now().saturating_duration_since(start);
    Ok(LoadReport::new(options.workload.name(), by_kind, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_report_has_every_field_the_measurements_read() {
        let mut point = KindReport::new();
        point.record(true, 1, Duration::from_millis(2));
        point.record(false, 1, Duration::from_millis(1));
        let mut ingest = KindReport::new();
        ingest.record(true, 1_000, Duration::from_millis(20));
        let by_kind = BTreeMap::from([(Kind::Point, point), (Kind::Ingest, ingest)]);
        let report = LoadReport::new("mixed", by_kind, Duration::from_secs(2));
        let value = report.json();
        assert_eq!(value["workload"], "mixed");
        assert_eq!(value["requests"], 2);
        assert_eq!(value["errors"], 1);
        assert_eq!(value["seconds"], 2.0);
        assert_eq!(value["requests_per_s"], 1.0);
        assert_eq!(value["items_per_s"], 500.5);
        for quantile in ["p50", "p90", "p99", "p999", "max"] {
            assert!(value["latency_ms"][quantile].is_f64(), "{quantile}");
        }
        assert_eq!(value["by_kind"]["point"]["requests"], 1);
        assert_eq!(value["by_kind"]["ingest"]["items_per_s"], 500.0);
        let p99 = value["by_kind"]["ingest"]["latency_ms"]["p99"]
            .as_f64()
            .expect("p99");
        assert!((p99 - 20.0).abs() < 0.1, "{p99}");
        assert!(value["by_kind"].get("batch").is_none());
    }
}
