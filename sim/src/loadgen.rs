//! `stockgrid loadgen`: load against a running node over gRPC, with latencies in an
//! hdrhistogram.
//!
//! Closed loop (no `rate`): `concurrency` clients each send the next request as soon as the
//! previous answer arrives. Open loop (`rate` requests/s): request *i* is due at
//! `start + i / rate`; a client sends it at that moment (or as soon as it is free) and its
//! latency is measured from the moment it was due, so a stalled server shows up in the
//! tail instead of silently lowering the offered load (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use stockgrid_actors::time::{Clock, WallClock};
use stockgrid_api::proto::v1 as pb;
use tonic::transport::Channel;

use crate::requests::{Rng, item_page_lookup};

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `GetAvailability` of one random pair.
    Point,
    /// `BatchGetAvailability` of `batch_items` random pairs.
    Batch,
    /// `IngestEvents` of `ingest_events` sales.
    Ingest,
    /// 70% point, 20% batch, 10% ingest.
    Mixed,
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
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests answered OK.
    pub requests: u64,
    /// Items (lookups or events) in those requests.
    pub items: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time of the measurement.
    pub elapsed: Duration,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    /// The report as printed by the command.
    pub fn lines(&self) -> Vec<String> {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        vec![
            format!(
                "{} requests in {:.1} s: {:.0} requests/s, {:.0} items/s, {} errors",
                self.requests,
                seconds,
                self.requests as f64 / seconds,
                self.items as f64 / seconds,
                self.errors
            ),
            format!(
                "latency ms: p50 {:.3}, p90 {:.3}, p99 {:.3}, p999 {:.3}, max {:.3}",
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(0.999),
                self.latency_us.max() as f64 / 1000.0
            ),
        ]
    }
}

fn pair_of(index: u64) -> (u64, u32) {
    (1 + index / 100, 1 + (index % 100) as u32)
}

async fn connect(target: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(target.to_owned())?.connect().await?)
}

fn sales(
    worker: usize,
    sequence: &AtomicU64,
    rng: &mut Rng,
    options: &LoadOptions,
) -> Vec<pb::Event> {
    let now = WallClock.now().to_rfc3339();
    (0..options.ingest_events)
        .map(|_| {
            let n = sequence.fetch_add(1, Ordering::Relaxed);
            let (sku, location) = pair_of(rng.below(options.pairs));
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

/// Counts every pair once (`count` events of 1,000,000 units), in batches of 5,000.
pub async fn preload(options: &LoadOptions, mut progress: impl FnMut(u64)) -> anyhow::Result<()> {
    let mut client = pb::ingest_client::IngestClient::new(connect(&options.target).await?);
    let now = WallClock.now().plus_ms(-60_000).to_rfc3339();
    let run = WallClock.now().0;
    let mut index = 0;
    while index < options.pairs {
        let end = (index + 5_000).min(options.pairs);
        let events = (index..end)
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
            .collect();
        client
            .ingest_events(pb::IngestEventsRequest { events })
            .await?;
        index = end;
        progress(index);
    }
    Ok(())
}

/// Runs the load and measures it.
pub async fn run_load(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let options = Arc::new(options);
    let start = Instant::now() + Duration::from_millis(200);
    let deadline = start + options.duration;
    let next_request = Arc::new(AtomicU64::new(0));
    let sequence = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(options.concurrency);
    for worker in 0..options.concurrency {
        let options = Arc::clone(&options);
        let next_request = Arc::clone(&next_request);
        let sequence = Arc::clone(&sequence);
        let channel = connect(&options.target).await?;
        workers.push(tokio::spawn(async move {
            let mut availability =
                pb::availability_client::AvailabilityClient::new(channel.clone());
            let mut ingest = pb::ingest_client::IngestClient::new(channel);
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
            let mut rng = Rng::seeded(worker as u64 + 1);
            let (mut requests, mut items, mut errors) = (0u64, 0u64, 0u64);
            loop {
                let due = match options.rate {
                    Some(rate) => {
                        let i = next_request.fetch_add(1, Ordering::Relaxed);
                        start + Duration::from_nanos(i * 1_000_000_000 / rate.max(1))
                    }
                    None => Instant::now().max(start),
                };
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let kind = match options.workload {
                    Workload::Mixed => match rng.below(10) {
                        0..=6 => Workload::Point,
                        7..=8 => Workload::Batch,
                        _ => Workload::Ingest,
                    },
                    other => other,
                };
                let (ok, count) = match kind {
                    Workload::Point | Workload::Mixed => {
                        let (sku, location) = pair_of(rng.below(options.pairs));
                        let request = item_page_lookup(sku, location);
                        (availability.get_availability(request).await.is_ok(), 1)
                    }
                    Workload::Batch => {
                        let items = (0..options.batch_items)
                            .map(|_| {
                                let (sku, location) = pair_of(rng.below(options.pairs));
                                item_page_lookup(sku, location)
                            })
                            .collect();
                        let answered = availability
                            .batch_get_availability(pb::BatchGetAvailabilityRequest { items })
                            .await;
                        (answered.is_ok(), options.batch_items as u64)
                    }
                    Workload::Ingest => {
                        let events = sales(worker, &sequence, &mut rng, &options);
                        let answered = ingest
                            .ingest_events(pb::IngestEventsRequest { events })
                            .await;
                        (answered.is_ok(), options.ingest_events as u64)
                    }
                };
                let latency = Instant::now().saturating_duration_since(due);
                if ok {
                    requests += 1;
                    items += count;
                    histogram.saturating_record(latency.as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
            }
            (requests, items, errors, histogram)
        }));
    }
    let mut report = LoadReport {
        requests: 0,
        items: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?,
    };
    for worker in workers {
        let (requests, items, errors, histogram) = worker.await?;
        report.requests += requests;
        report.items += items;
        report.errors += errors;
        report.latency_us.add(&histogram)?;
    }
    report.elapsed = Instant::now().saturating_duration_since(start);
    Ok(report)
}
