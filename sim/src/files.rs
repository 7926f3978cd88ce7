//! `stockgrid sim generate`: runs a world and writes the REPLAY.md files, then measures how
//! realistic the run was.
//!
//! Files written in the output folder: `events.jsonl` (arrivals in ingest order),
//! `queries.jsonl`, `truth.jsonl`, `locations.jsonl`, `scenario.toml` (the scenario as run)
//! and `manifest.json` (scenario name, seed, traces, counts). Each is written to a temporary
//! name and renamed into place, so a failed run leaves no half-written file under a final
//! name. Lines are formatted by hand on all cores ([`crate::civil`]): this is the hot path of
//! the generator's events-per-second figure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source};
use stockgrid_actors::ledger::LedgerConfig;
use stockgrid_actors::time::Timestamp;

use crate::civil::{push_i64, push_rfc3339, push_u64};
use crate::generate::{Generated, NO_COUNTERPARTY, SimEvent, SimQuery, generate};
use crate::record::{QueryPoint, records_at_queries};
use crate::scenario::Scenario;
use crate::traces::Traces;
use crate::world::World;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// A built-in scenario name or a TOML file.
    pub scenario: String,
    /// The run seed.
    pub seed: u64,
    /// Output folder (created).
    pub out: PathBuf,
    /// M5 traces folder.
    pub traces: Option<PathBuf>,
    /// Overrides `network.skus` (for scale runs).
    pub skus: Option<u32>,
    /// Worker threads (0: one per core).
    pub threads: usize,
}

/// The realism statistics of a run, and its speed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GenerateReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Whether M5 traces drove demand.
    pub traces: bool,
    /// Pairs simulated.
    pub pairs: u64,
    /// Arrivals written (duplicates included).
    pub events: usize,
    /// Queries written.
    pub queries: usize,
    /// Share of query moments at which the rules ledger's on-hand differed from the truth.
    pub record_differs_share: f64,
    /// Share of queries whose pair truly held fewer units than wanted.
    pub truly_out_of_stock_share: f64,
    /// Share of demanded units not sold for want of stock.
    pub lost_sale_share: f64,
    /// Arrivals per source.
    pub events_per_source: BTreeMap<String, usize>,
    /// Seconds simulating and writing the files (the two below together).
    pub generate_seconds: f64,
    /// Of which simulating the world and ordering its arrivals.
    pub simulate_seconds: f64,
    /// Of which formatting and writing the files.
    pub write_seconds: f64,
    /// Arrivals written per second of `generate_seconds`.
    pub events_per_second: f64,
    /// Seconds measuring realism (replaying the ledger).
    pub statistics_seconds: f64,
}

/// The manifest written beside the files.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Whether M5 traces drove demand.
    pub traces: bool,
    /// Arrivals.
    pub events: usize,
    /// Queries.
    pub queries: usize,
    /// First recorded day.
    pub start_date: String,
    /// Recorded days.
    pub days: u32,
}

fn threads_or_cores(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Loads the scenario (with overrides) and lays out the world.
pub fn build_world(options: &GenerateOptions) -> anyhow::Result<World> {
    let (mut scenario, _) = Scenario::load(&options.scenario)?;
    if let Some(skus) = options.skus {
        scenario.network.skus = skus;
        scenario.validate()?;
    }
    let traces = match &options.traces {
        Some(dir) => Some(Traces::read(dir)?),
        None => None,
    };
    Ok(World::new(scenario, options.seed, traces)?)
}

/// Runs `sim generate`.
pub fn run_generate(options: &GenerateOptions) -> anyhow::Result<GenerateReport> {
    let threads = threads_or_cores(options.threads);
    let started = Instant::now();
    let world = build_world(options)?;
    let generated = generate(&world, threads);
    let simulate_seconds = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("create {}", options.out.display()))?;
    write_files(&world, &generated, &options.out, threads)?;
    let generate_seconds = started.elapsed().as_secs_f64();

    let statistics_started = Instant::now();
    let mut report = realism(&world, &generated, threads);
    report.generate_seconds = generate_seconds;
    report.simulate_seconds = simulate_seconds;
    report.write_seconds = generate_seconds - simulate_seconds;
    report.events_per_second = generated.events.len() as f64 / generate_seconds.max(1e-9);
    report.statistics_seconds = statistics_started.elapsed().as_secs_f64();
    Ok(report)
}

/// The realism statistics of a generated run.
pub fn realism(world: &World, generated: &Generated, threads: usize) -> GenerateReport {
    let arrivals: Vec<Arrival> = generated.events.iter().map(to_arrival).collect();
    let points: Vec<QueryPoint> = generated
        .queries
        .iter()
        .map(|q| QueryPoint {
            pair: PairKey::new(q.sku, q.location),
            time_ms: q.time_ms,
        })
        .collect();
    let config = LedgerConfig {
        lateness_bound_ms: (world.scenario.faults.lateness_bound_hours * 3_600_000.0) as i64,
        ..LedgerConfig::default()
    };
    let records = records_at_queries(&arrivals, &points, &config, threads);
    let queries = generated.queries.len().max(1) as f64;
    let differs = generated
        .queries
        .iter()
        .zip(&records)
        .filter(|(q, r)| r.on_hand != q.true_on_hand)
        .count();
    let out_of_stock = generated
        .queries
        .iter()
        .filter(|q| q.true_on_hand < q.qty)
        .count();
    let mut events_per_source = BTreeMap::new();
    for event in &generated.events {
        *events_per_source
            .entry(event.source.as_str().to_owned())
            .or_insert(0) += 1;
    }
    let tally = &generated.tally;
    GenerateReport {
        scenario: world.scenario.name.clone(),
        seed: world.seed,
        traces: world.traces.is_some(),
        pairs: tally.pairs,
        events: generated.events.len(),
        queries: generated.queries.len(),
        record_differs_share: differs as f64 / queries,
        truly_out_of_stock_share: out_of_stock as f64 / queries,
        lost_sale_share: tally.lost_units as f64 / tally.demanded_units.max(1) as f64,
        events_per_source,
        ..GenerateReport::default()
    }
}

/// Appends `location-sku-seq`: the id of a pair's `seq`-th event (and, after a `q`, of its
/// `seq`-th query).
fn push_pair_id(out: &mut Vec<u8>, location: u32, sku: u64, seq: u32) {
    push_u64(out, u64::from(location));
    out.push(b'-');
    push_u64(out, sku);
    out.push(b'-');
    push_u64(out, u64::from(seq));
}

/// The event id the files give an arrival.
pub fn event_id(event: &SimEvent) -> String {
    let mut id = Vec::with_capacity(24);
    push_pair_id(&mut id, event.location, event.sku, event.seq);
    String::from_utf8(id).unwrap_or_default()
}

fn to_arrival(event: &SimEvent) -> Arrival {
    let mut domain = Event::new(
        event_id(event),
        event.source,
        event.kind,
        PairKey::new(event.sku, event.location),
        event.qty,
        Timestamp(event.event_ms),
    );
    if event.counterparty != NO_COUNTERPARTY {
        domain.counterparty_location = Some(event.counterparty);
    }
    if event.expected_ms != 0 {
        domain.expected_time = Some(Timestamp(event.expected_ms));
    }
    Arrival {
        event: domain,
        arrival_time: Timestamp(event.ingest_ms),
    }
}

fn push_str_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b"\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\"");
}

/// Appends one events.jsonl line.
pub fn push_event_line(out: &mut Vec<u8>, event: &SimEvent) {
    out.extend_from_slice(b"{\"event_id\":\"");
    push_pair_id(out, event.location, event.sku, event.seq);
    out.extend_from_slice(b"\",");
    push_str_field(out, "source", event.source.as_str());
    out.push(b',');
    push_str_field(out, "kind", event.kind.as_str());
    out.extend_from_slice(b",\"sku\":");
    push_u64(out, event.sku);
    out.extend_from_slice(b",\"location\":");
    push_u64(out, u64::from(event.location));
    out.extend_from_slice(b",\"qty\":");
    push_i64(out, event.qty);
    out.extend_from_slice(b",\"event_time\":\"");
    push_rfc3339(out, event.event_ms);
    out.extend_from_slice(b"\",\"ingest_time\":\"");
    push_rfc3339(out, event.ingest_ms);
    out.push(b'"');
    if event.counterparty != NO_COUNTERPARTY {
        out.extend_from_slice(b",\"counterparty_location\":");
        push_u64(out, u64::from(event.counterparty));
    }
    if event.kind == EventKind::TransferOut && event.expected_ms != 0 {
        out.extend_from_slice(b",\"expected_time\":\"");
        push_rfc3339(out, event.expected_ms);
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
}

fn query_id(out: &mut Vec<u8>, query: &SimQuery) {
    out.extend_from_slice(b"{\"query_id\":\"q");
    push_pair_id(out, query.location, query.sku, query.seq);
    out.extend_from_slice(b"\",");
}

fn push_query_line(out: &mut Vec<u8>, query: &SimQuery) {
    query_id(out, query);
    out.extend_from_slice(b"\"time\":\"");
    push_rfc3339(out, query.time_ms);
    out.extend_from_slice(b"\",\"sku\":");
    push_u64(out, query.sku);
    out.extend_from_slice(b",\"location\":");
    push_u64(out, u64::from(query.location));
    out.extend_from_slice(b",\"qty\":");
    push_i64(out, query.qty);
    out.push(b',');
    push_str_field(out, "surface", query.surface.as_str());
    out.extend_from_slice(b"}\n");
}

fn push_truth_line(out: &mut Vec<u8>, query: &SimQuery) {
    query_id(out, query);
    out.extend_from_slice(b"\"true_on_hand\":");
    push_i64(out, query.true_on_hand);
    out.extend_from_slice(b"}\n");
}

/// Formats `items` on `threads` threads and writes them, in order, to `path` (atomically).
fn write_lines<T: Sync>(
    path: &Path,
    items: &[T],
    threads: usize,
    format: impl Fn(&mut Vec<u8>, &T) + Sync,
) -> anyhow::Result<()> {
    const CHUNK: usize = 1 << 16;
    let temporary = path.with_extension("jsonl.tmp");
    let file = std::fs::File::create(&temporary)
        .with_context(|| format!("create {}", temporary.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    for group in items.chunks(CHUNK * threads.max(1)) {
        let buffers: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .chunks(CHUNK)
                .map(|chunk| {
                    let format = &format;
                    scope.spawn(move || {
                        let mut buffer = Vec::with_capacity(chunk.len() * 200);
                        for item in chunk {
                            format(&mut buffer, item);
                        }
                        buffer
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for buffer in buffers {
            writer
                .write_all(&buffer)
                .with_context(|| format!("write {}", temporary.display()))?;
        }
    }
    // Flushed and renamed into place, not fsync'd: generated data can be generated again.
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("rename {}", path.display()))?;
    Ok(())
}

fn write_text(path: &Path, text: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("rename {}", path.display()))
}

/// Writes every file of a run into `out`.
pub fn write_files(
    world: &World,
    generated: &Generated,
    out: &Path,
    threads: usize,
) -> anyhow::Result<()> {
    write_lines(
        &out.join("events.jsonl"),
        &generated.events,
        threads,
        push_event_line,
    )?;
    write_lines(
        &out.join("queries.jsonl"),
        &generated.queries,
        threads,
        push_query_line,
    )?;
    write_lines(
        &out.join("truth.jsonl"),
        &generated.queries,
        threads,
        push_truth_line,
    )?;
    let mut locations = Vec::new();
    for location in &world.locations {
        let sources: Vec<&str> = location
            .sources
            .iter()
            .map(|s| Source::as_str(*s))
            .collect();
        let line = serde_json::json!({
            "location": location.id,
            "kind": location.kind.as_str(),
            "region": world.scenario.network.regions[location.region].name,
            "timezone": world.scenario.network.regions[location.region].timezone,
            "open_hour": location.open_hour,
            "close_hour": location.close_hour,
            "sources": sources,
        });
        locations.extend_from_slice(line.to_string().as_bytes());
        locations.push(b'\n');
    }
    write_text(&out.join("locations.jsonl"), &locations)?;
    let scenario_text = toml::to_string(&world.scenario)?;
    write_text(&out.join("scenario.toml"), scenario_text.as_bytes())?;
    let manifest = Manifest {
        scenario: world.scenario.name.clone(),
        seed: world.seed,
        traces: world.traces.is_some(),
        events: generated.events.len(),
        queries: generated.queries.len(),
        start_date: world.scenario.calendar.start_date.clone(),
        days: world.scenario.calendar.days,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    write_text(&out.join("manifest.json"), &text)
}
