//! `stockgrid sim drill`: a scenario played end to end against a real `stockgrid serve`.
//!
//! The drill generates the scenario in memory, starts `stockgrid serve` (this same binary)
//! on a temporary store with an accelerated clock ([`AcceleratedClock`]: the node's
//! lateness and staleness follow simulated time), and plays the run over gRPC at the
//! simulated pace, sped up: each event is sent once the clock reaches its `ingest_time`, each
//! query asked at its time and its answer compared with the truth. A second task polls the
//! node's health. The report (`drill.json`, `drill.png`) shows per six simulated hours the
//! broken-promise rate (overall, and in the regions a fault touches) and recall, the ingest
//! lag (simulated seconds from an event's arrival time to the node's durable ack), and the
//! share of health checks answered SERVING, with the scenario's fault windows shaded.
//!
//! The node is given the world's locations first (kind, region, time zone, hours, expected
//! feeds), as a retailer's catalog would give them. Every answer is tallied by mode and
//! reason; with `compare_ledger`, each question is also put to the ledger (the pair's read
//! view through `Inspect`, as a rules answer reads it), so the report shows where the belief
//! and the ledger disagree and which of them the truth sided with (`stockgrid demo` uses it).
//! At the end the report records the node's decision policy (regions fallen back to rules).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use plotters::prelude::*;
use serde::Serialize;
use stockgrid_actors::time::{AcceleratedClock, Clock, Timestamp, WallClock};
use stockgrid_api::proto::v1 as pb;
use tonic::transport::Channel;

use crate::civil::{DAY_MS, HOUR_MS};
use crate::files::{GenerateOptions, build_world, event_id};
use crate::generate::{NO_COUNTERPARTY, SimEvent, generate};
use crate::report::{draw_error, draw_legend, register_font};

/// Simulated length of one bucket of the report.
pub const BUCKET_MS: i64 = 6 * HOUR_MS;
/// Events per ingest request.
const EVENTS_PER_REQUEST: usize = 2_000;

/// What to drill.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// The world to play.
    pub generate: GenerateOptions,
    /// Recorded days played (from the first); `None`: all.
    pub days: Option<u32>,
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    /// The `stockgrid` binary to run as the node.
    pub stockgrid: PathBuf,
    /// Put each question to the ledger too (one `Inspect` call per query).
    pub compare_ledger: bool,
}

/// Disagreements kept as examples in the report.
const MAX_EXAMPLES: usize = 8;

/// An answer where the belief and the ledger disagreed.
#[derive(Clone, Debug, Serialize)]
pub struct Disagreement {
    /// When it was asked (RFC 3339, simulated).
    pub time: String,
    /// The pair.
    pub sku: u64,
    /// The pair.
    pub location: u32,
    /// Units asked.
    pub qty: i64,
    /// Who asked.
    pub surface: String,
    /// The node's answer.
    pub available: bool,
    /// Its probability.
    pub probability: f64,
    /// Its reason code.
    pub reason: String,
    /// The ledger's spare units (on hand minus reserved) at the moment.
    pub ledger_spare: i64,
    /// The simulator's true on-hand at the moment.
    pub true_on_hand: i64,
}

/// How the node decided, over the whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DecisionTally {
    /// Answers by mode (`ml`, `rules`).
    pub by_mode: std::collections::BTreeMap<String, u64>,
    /// Answers by reason code.
    pub by_reason: std::collections::BTreeMap<String, u64>,
    /// Questions also put to the ledger.
    pub compared: u64,
    /// Of those, promised by the node, and broken (the truth was short).
    pub promised: u64,
    /// Broken promises of the node.
    pub broken: u64,
    /// Of those, what the ledger alone would have promised, and broken.
    pub ledger_promised: u64,
    /// Broken promises the ledger alone would have made.
    pub ledger_broken: u64,
    /// Promises of the node the ledger's spare units did not cover (must stay 0: promises
    /// are capped by the ledger).
    pub beyond_ledger: u64,
    /// Answers where the node and the ledger disagreed.
    pub disagreements: u64,
    /// Of those, where the truth sided with the node.
    pub node_right: u64,
    /// The first disagreements.
    pub examples: Vec<Disagreement>,
}

/// The node's decision policy at the end of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyAtEnd {
    /// The model answering ml decisions (empty: none).
    pub model_version: String,
    /// Regions answering by rules (switched, or fallen back on drift).
    pub rules_regions: Vec<String>,
    /// Regions that fell back to rules on feature drift, with the drifting feature and PSI.
    pub drift_fallbacks: Vec<(String, String, f64)>,
}

/// One bucket of the drill's time series.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bucket {
    /// Simulated hours since the start of the bucket's run.
    pub hour: f64,
    /// Queries asked.
    pub queries: u64,
    /// Answered available.
    pub promised: u64,
    /// Broken promises.
    pub false_positives: u64,
    /// Truly available.
    pub truly_available: u64,
    /// Promised and truly available.
    pub true_positives: u64,
    /// Of the promises, those at locations of a region with a fault window.
    pub fault_region_promised: u64,
    /// Of the broken promises, those at locations of a region with a fault window.
    pub fault_region_false_positives: u64,
    /// Events acked.
    pub events: u64,
    /// Mean ingest lag, simulated seconds.
    pub mean_lag_seconds: f64,
    /// Largest ingest lag, simulated seconds.
    pub max_lag_seconds: f64,
    /// Health checks made.
    pub health_checks: u64,
    /// Health checks answered SERVING.
    pub serving: u64,
    /// Calls that failed (counted, the drill goes on).
    pub errors: u64,
}

/// The drill's result.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    /// Scenario.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Speed-up.
    pub speed: f64,
    /// Simulated start.
    pub start: String,
    /// Fault windows, simulated hours since the start.
    pub fault_windows: Vec<(f64, f64)>,
    /// Events sent and queries asked.
    pub events: usize,
    /// Queries asked.
    pub queries: usize,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// The series.
    pub buckets: Vec<Bucket>,
    /// How the node decided.
    pub decisions: DecisionTally,
    /// Its decision policy at the end (`None`: it could not be read).
    pub policy: Option<PolicyAtEnd>,
}

fn to_proto(event: &SimEvent) -> pb::Event {
    let time = |ms: i64| {
        let mut text = Vec::with_capacity(24);
        crate::civil::push_rfc3339(&mut text, ms);
        String::from_utf8(text).unwrap_or_default()
    };
    pb::Event {
        event_id: event_id(event),
        source: event.source.as_str().to_owned(),
        kind: event.kind.as_str().to_owned(),
        sku: event.sku,
        location: event.location,
        qty: event.qty,
        event_time: time(event.event_ms),
        reservation_id: None,
        counterparty_location: (event.counterparty != NO_COUNTERPARTY)
            .then_some(event.counterparty),
        expected_time: (event.expected_ms != 0).then(|| time(event.expected_ms)),
    }
}

fn surface_proto(surface: stockgrid_actors::domain::Surface) -> pb::Surface {
    match surface {
        stockgrid_actors::domain::Surface::Pickup => pb::Surface::Pickup,
        stockgrid_actors::domain::Surface::Delivery => pb::Surface::Delivery,
        _ => pb::Surface::ItemPage,
    }
}

/// A `stockgrid serve` child, killed when dropped.
struct NodeProcess(std::process::Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_serving(address: &str) -> anyhow::Result<Channel> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let serving = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status)
                .unwrap_or(0);
            if serving == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                return Ok(channel);
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("the node at {address} did not become SERVING within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the drill; `progress` receives a line now and then.
pub async fn run_drill(
    options: &DrillOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<DrillReport> {
    if !(options.speed.is_finite() && options.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", options.speed);
    }
    let world = build_world(&options.generate)?;
    let generated = generate(&world, options.generate.threads.max(1));
    let first = generated
        .events
        .first()
        .map(|e| e.ingest_ms)
        .context("the scenario produced no events")?;
    let start = Timestamp(first - first.rem_euclid(HOUR_MS));
    let recorded_start = world.scenario.start_day_number()? * DAY_MS;
    let end_ms = match options.days {
        Some(days) => recorded_start + i64::from(days) * DAY_MS,
        None => i64::MAX,
    };
    let events: Vec<&SimEvent> = generated
        .events
        .iter()
        .filter(|e| e.ingest_ms < end_ms)
        .collect();
    let queries: Vec<_> = generated
        .queries
        .iter()
        .filter(|q| q.time_ms < end_ms)
        .collect();
    let last_ms = events
        .last()
        .map_or(start.0, |e| e.ingest_ms)
        .max(queries.last().map_or(start.0, |q| q.time_ms));
    let fault_regions: Vec<&str> = world
        .scenario
        .faults
        .outages
        .iter()
        .map(|o| o.region.as_str())
        .chain(
            world
                .scenario
                .faults
                .shrink_drifts
                .iter()
                .map(|d| d.region.as_str()),
        )
        .collect();
    let fault_locations: std::collections::HashSet<u32> = world
        .locations
        .iter()
        .filter(|l| fault_regions.contains(&world.scenario.network.regions[l.region].name.as_str()))
        .map(|l| l.id)
        .collect();
    let fault_windows: Vec<(f64, f64)> = world
        .scenario
        .faults
        .outages
        .iter()
        .map(|o| {
            let from = recorded_start
                + i64::from(o.start_day) * DAY_MS
                + i64::from(o.start_hour) * HOUR_MS;
            let hours = |ms: i64| (ms - start.0) as f64 / HOUR_MS as f64;
            (hours(from), hours(from + (o.hours * HOUR_MS as f64) as i64))
        })
        .chain(world.scenario.faults.shrink_drifts.iter().map(|d| {
            let from = recorded_start + i64::from(d.from_day) * DAY_MS;
            let hours = |ms: i64| (ms - start.0) as f64 / HOUR_MS as f64;
            (hours(from), hours(last_ms))
        }))
        .collect();

    // The node: this binary's `serve`, on a free port, a temporary store, the drill's clock.
    let scratch = tempfile::tempdir().context("temporary data directory")?;
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
        probe.local_addr()?.to_string()
    };
    let anchor = WallClock.now().plus_ms(3_000);
    let clock = AcceleratedClock {
        start,
        anchor_wall_ms: anchor.0,
        speed: options.speed,
    };
    let child = std::process::Command::new(&options.stockgrid)
        .args(["serve", "--listen", &address, "--data-dir"])
        .arg(scratch.path().join("data"))
        .args(["--clock-start", &start.to_rfc3339()])
        .args(["--clock-speed", &options.speed.to_string()])
        .args(["--clock-anchor", &anchor.to_rfc3339()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {} serve", options.stockgrid.display()))?;
    let node = NodeProcess(child);
    let channel = wait_serving(&address).await?;
    upsert_locations(&channel, &world).await?;
    progress(&format!(
        "node serving on {address}; playing {} events and {} queries from {} at {}x",
        events.len(),
        queries.len(),
        start.to_rfc3339(),
        options.speed
    ));

    let buckets_len = ((last_ms - start.0) / BUCKET_MS + 1).max(1) as usize;
    let buckets = Arc::new(Mutex::new(vec![Bucket::default(); buckets_len]));
    let bucket_of = move |ms: i64| ((ms - start.0).max(0) / BUCKET_MS) as usize;

    // Health, polled every 200 ms of wall time until the play ends.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health_task = {
        let buckets = Arc::clone(&buckets);
        let done = Arc::clone(&done);
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let serving = tokio::time::timeout(
                    Duration::from_secs(1),
                    health.check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    }),
                )
                .await
                .ok()
                .and_then(|r| r.ok())
                .is_some_and(|r| {
                    r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                });
                let at = bucket_of(clock.now().0);
                if let Ok(mut buckets) = buckets.lock()
                    && let Some(bucket) = buckets.get_mut(at)
                {
                    bucket.health_checks += 1;
                    bucket.serving += u64::from(serving);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut ingest = pb::ingest_client::IngestClient::new(channel.clone());
    let mut availability = pb::availability_client::AvailabilityClient::new(channel.clone());
    let mut inspect = pb::inspect_client::InspectClient::new(channel.clone());
    let mut decisions = DecisionTally::default();
    let wall_started = std::time::Instant::now();
    let (mut next_event, mut next_query) = (0, 0);
    let mut last_progress = std::time::Instant::now();
    let mut lag_sums = vec![0.0f64; buckets_len];
    while next_event < events.len() || next_query < queries.len() {
        let now = clock.now().0;
        let event_due = events.get(next_event).is_some_and(|e| e.ingest_ms <= now);
        let query_due = queries.get(next_query).is_some_and(|q| q.time_ms <= now);
        if !event_due && !query_due {
            let next = events
                .get(next_event)
                .map_or(i64::MAX, |e| e.ingest_ms)
                .min(queries.get(next_query).map_or(i64::MAX, |q| q.time_ms));
            let wait = (clock.wall_at(Timestamp(next)).0 - WallClock.now().0).clamp(1, 200);
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            continue;
        }
        // Events first: every event that had arrived by now, then the queries due.
        let mut batch_end = next_event;
        while batch_end < events.len()
            && events[batch_end].ingest_ms <= now
            && batch_end - next_event < EVENTS_PER_REQUEST
        {
            batch_end += 1;
        }
        if batch_end > next_event {
            let batch = &events[next_event..batch_end];
            let request = pb::IngestEventsRequest {
                events: batch.iter().map(|e| to_proto(e)).collect(),
            };
            let outcome = ingest.ingest_events(request).await;
            let acked = clock.now().0;
            let mut buckets = buckets.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            for event in batch {
                let at = bucket_of(event.ingest_ms).min(buckets_len - 1);
                let bucket = &mut buckets[at];
                match &outcome {
                    Ok(_) => {
                        let lag = (acked - event.ingest_ms) as f64 / 1000.0;
                        bucket.events += 1;
                        lag_sums[at] += lag;
                        bucket.max_lag_seconds = bucket.max_lag_seconds.max(lag);
                    }
                    Err(_) => bucket.errors += 1,
                }
            }
            next_event = batch_end;
        }
        while let Some(query) = queries.get(next_query) {
            if query.time_ms > now
                || events
                    .get(next_event)
                    .is_some_and(|e| e.ingest_ms <= query.time_ms)
            {
                break;
            }
            next_query += 1;
            let answer = availability
                .get_availability(pb::GetAvailabilityRequest {
                    sku: query.sku,
                    location: query.location,
                    qty: query.qty,
                    surface: surface_proto(query.surface) as i32,
                })
                .await;
            let ledger_spare = match (&answer, options.compare_ledger) {
                (Ok(_), true) => Some(ledger_spare(&mut inspect, query.sku, query.location).await),
                _ => None,
            };
            let mut buckets = buckets.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let at = bucket_of(query.time_ms).min(buckets_len - 1);
            let bucket = &mut buckets[at];
            let truly = query.true_on_hand >= query.qty;
            match answer {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    tally(&mut decisions, query, &answer, ledger_spare);
                    let promised = answer.available;
                    bucket.queries += 1;
                    bucket.truly_available += u64::from(truly);
                    bucket.promised += u64::from(promised);
                    bucket.true_positives += u64::from(promised && truly);
                    bucket.false_positives += u64::from(promised && !truly);
                    if fault_locations.contains(&query.location) {
                        bucket.fault_region_promised += u64::from(promised);
                        bucket.fault_region_false_positives += u64::from(promised && !truly);
                    }
                }
                Err(_) => bucket.errors += 1,
            }
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = std::time::Instant::now();
            progress(&format!(
                "  {} / {} events, {} / {} queries, simulated {}",
                next_event,
                events.len(),
                next_query,
                queries.len(),
                Timestamp(now).to_rfc3339()
            ));
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = health_task.await;
    let policy = policy_at_end(&channel).await;
    drop(node);
    let mut buckets = Arc::try_unwrap(buckets)
        .map_err(|_| anyhow::anyhow!("health task still running"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    for (index, bucket) in buckets.iter_mut().enumerate() {
        bucket.hour = (index as i64 * BUCKET_MS) as f64 / HOUR_MS as f64;
        if bucket.events > 0 {
            bucket.mean_lag_seconds = lag_sums[index] / bucket.events as f64;
        }
    }
    Ok(DrillReport {
        scenario: world.scenario.name.clone(),
        seed: world.seed,
        speed: options.speed,
        start: start.to_rfc3339(),
        fault_windows,
        events: events.len(),
        queries: queries.len(),
        wall_seconds: wall_started.elapsed().as_secs_f64(),
        buckets,
        decisions,
        policy,
    })
}

/// Gives the node the world's locations, as a retailer's catalog would.
async fn upsert_locations(channel: &Channel, world: &crate::world::World) -> anyhow::Result<()> {
    let locations = world
        .locations
        .iter()
        .map(|location| {
            let region = &world.scenario.network.regions[location.region];
            pb::Location {
                location: location.id,
                kind: location.kind.as_str().to_owned(),
                region: region.name.clone(),
                timezone: region.timezone.clone(),
                open_hour: location.open_hour,
                close_hour: location.close_hour,
                sources: location
                    .sources
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
            }
        })
        .collect();
    pb::catalog_client::CatalogClient::new(channel.clone())
        .upsert_locations(pb::UpsertLocationsRequest { locations })
        .await
        .context("upsert the world's locations")?;
    Ok(())
}

/// The ledger's spare units of a pair now (on hand minus reserved, what a rules answer reads;
/// 0 for a pair never seen).
async fn ledger_spare(
    inspect: &mut pb::inspect_client::InspectClient<Channel>,
    sku: u64,
    location: u32,
) -> i64 {
    match inspect
        .get_entity_state(pb::GetEntityStateRequest { sku, location })
        .await
    {
        Ok(state) => state
            .into_inner()
            .read_view
            .map_or(0, |view| view.on_hand - view.reserved.max(0)),
        Err(_) => 0,
    }
}

/// Counts one answer (and, when the ledger's spare units are known, compares with them).
fn tally(
    decisions: &mut DecisionTally,
    query: &crate::generate::SimQuery,
    answer: &pb::AvailabilityAnswer,
    ledger_spare: Option<i64>,
) {
    let mode = match pb::DecisionMode::try_from(answer.mode) {
        Ok(pb::DecisionMode::Ml) => "ml",
        Ok(pb::DecisionMode::Rules) => "rules",
        _ => "unspecified",
    };
    *decisions.by_mode.entry(mode.to_owned()).or_default() += 1;
    *decisions
        .by_reason
        .entry(answer.reason.clone())
        .or_default() += 1;
    let Some(spare) = ledger_spare else {
        return;
    };
    let truly = query.true_on_hand >= query.qty;
    let ledger_promises = spare >= query.qty;
    decisions.compared += 1;
    decisions.promised += u64::from(answer.available);
    decisions.broken += u64::from(answer.available && !truly);
    decisions.ledger_promised += u64::from(ledger_promises);
    decisions.ledger_broken += u64::from(ledger_promises && !truly);
    decisions.beyond_ledger += u64::from(answer.available && !ledger_promises);
    if answer.available != ledger_promises {
        decisions.disagreements += 1;
        decisions.node_right += u64::from(answer.available == truly);
        if decisions.examples.len() < MAX_EXAMPLES {
            let mut time = Vec::with_capacity(24);
            crate::civil::push_rfc3339(&mut time, query.time_ms);
            decisions.examples.push(Disagreement {
                time: String::from_utf8(time).unwrap_or_default(),
                sku: query.sku,
                location: query.location,
                qty: query.qty,
                surface: query.surface.as_str().to_owned(),
                available: answer.available,
                probability: answer.probability,
                reason: answer.reason.clone(),
                ledger_spare: spare,
                true_on_hand: query.true_on_hand,
            });
        }
    }
}

/// The node's decision policy now (`None`: it did not answer).
async fn policy_at_end(channel: &Channel) -> Option<PolicyAtEnd> {
    let policy = pb::admin_client::AdminClient::new(channel.clone())
        .get_decision_policy(pb::GetDecisionPolicyRequest {})
        .await
        .ok()?
        .into_inner();
    Some(PolicyAtEnd {
        model_version: policy.model_version,
        rules_regions: policy.rules_regions,
        drift_fallbacks: policy
            .drift
            .into_iter()
            .filter(|d| d.fallback)
            .map(|d| (d.region, d.feature, d.psi))
            .collect(),
    })
}

/// One panel of the drill plot: title, unit, and its lines (label, points, color).
type Panel<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a Vec<(f64, f64)>, RGBColor)>,
);

/// Writes `drill.json` and `drill.png` into `out`.
pub fn write_drill_report(report: &DrillReport, out: &Path) -> anyhow::Result<()> {
    register_font();
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    std::fs::write(out.join("drill.json"), serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("write {}", out.join("drill.json").display()))?;
    let path = out.join("drill.png");
    let root = BitMapBackend::new(&path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let panels = root.split_evenly((3, 1));
    let hours = report.buckets.last().map_or(1.0, |b| b.hour + 6.0);
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            None
        } else {
            Some(a as f64 / b as f64)
        }
    };
    let series = |f: &dyn Fn(&Bucket) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .buckets
            .iter()
            .filter_map(|b| f(b).map(|v| (b.hour + 3.0, v)))
            .collect()
    };
    let broken = series(&|b| ratio(b.false_positives, b.promised));
    let recall = series(&|b| ratio(b.true_positives, b.truly_available));
    let fault_broken = series(&|b| ratio(b.fault_region_false_positives, b.fault_region_promised));
    let mean_lag = series(&|b| (b.events > 0).then_some(b.mean_lag_seconds));
    let max_lag = series(&|b| (b.events > 0).then_some(b.max_lag_seconds));
    let serving = series(&|b| ratio(b.serving, b.health_checks));
    let panel_specs: [Panel<'_>; 3] = [
        (
            "decision quality (rules answers vs truth)",
            "share",
            vec![
                ("broken-promise rate", &broken, RGBColor(214, 39, 40)),
                (
                    "broken-promise rate, fault region",
                    &fault_broken,
                    RGBColor(255, 127, 14),
                ),
                ("recall", &recall, RGBColor(31, 119, 180)),
            ],
        ),
        (
            "ingest lag: arrival to durable ack",
            "simulated seconds",
            vec![
                ("mean", &mean_lag, RGBColor(44, 160, 44)),
                ("max", &max_lag, RGBColor(255, 127, 14)),
            ],
        ),
        (
            "health: share of checks SERVING",
            "share",
            vec![("serving", &serving, RGBColor(148, 103, 189))],
        ),
    ];
    for (panel, (title, unit, lines)) in panels.iter().zip(panel_specs) {
        let top = lines
            .iter()
            .flat_map(|(_, points, _)| points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} seed {}: {title}", report.scenario, report.seed),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..hours, 0.0..top)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("simulated hours")
            .y_desc(unit)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_error)?;
        for (from, to) in &report.fault_windows {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*from, 0.0), (*to, top)],
                    RGBColor(255, 200, 200).mix(0.5).filled(),
                )))
                .map_err(draw_error)?;
        }
        for (label, points, color) in lines {
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}
