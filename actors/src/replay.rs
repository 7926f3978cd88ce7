//! `stockgrid replay`: the REPLAY.md files through the same entity code as the service,
//! either in memory ([`crate::offline`], the default: the pure ledger core and belief, millions
//! of events per second) or through the durable engine (shard actors and the embedded store,
//! as a node runs them).
//!
//! Events are fed in `ingest_time` order (file order breaking ties), each with its
//! `ingest_time` as its arrival, on a simulated clock; each query is answered after every
//! event with `ingest_time <= time` has been applied and before any later one. Answers are
//! written in query order only once every query is answered (to a temporary file renamed
//! into place), so a failed run never leaves a partial answers file.
//!
//! # Layout
//! - input files: opened here, parsed by `stockgrid_model::formats` (each field checked by
//!   name, so an error says `file:line: field `x`: reason`);
//! - [`run_replay`]: the driver.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use stockgrid_storage::{EmbeddedOptions, OpenSettings, Store, StoreLocation};

use crate::catalog::Location;
use stockgrid_inference::model::Model;

use crate::audit::{AuditRecord, decide_and_record, is_promise, sampled};
use crate::config::EngineConfig;
use crate::decision::{Decision, DecisionMode, SafetyStock, unavailable};
use crate::domain::{Arrival, Surface};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::ledger::Outcome;
use crate::offline::{InMemoryLedger, replay_in_memory};
use crate::time::{Clock, MINUTE_MS, SimulatedClock};
pub use stockgrid_model::formats::Query;
use stockgrid_model::formats::{self, FormatError};

/// Events handed to the engine per ingest call.
const REPLAY_BATCH_EVENTS: usize = 4_096;
/// Simulated time between maintenance passes (passivation, expiry).
const MAINTENANCE_INTERVAL_MS: i64 = 10 * MINUTE_MS;
/// Quarantined arrivals listed in the summary (all are counted).
const MAX_LISTED_QUARANTINES: usize = 10_000;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input file is malformed or unreadable (`file:line: field `x`: reason`).
    #[error(transparent)]
    Input(#[from] FormatError),
    /// A file could not be opened or written.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The options do not make sense.
    #[error("{0}")]
    Usage(String),
    /// The engine failed.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

/// What to replay and how.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// events.jsonl.
    pub events: PathBuf,
    /// queries.jsonl.
    pub queries: PathBuf,
    /// locations.jsonl, optional.
    pub locations: Option<PathBuf>,
    /// Where answers.jsonl goes.
    pub out: PathBuf,
    /// `rules` or `ml`.
    pub mode: DecisionMode,
    /// Safety stock per surface.
    pub safety_stock: SafetyStock,
    /// The engine's store (a directory, a `postgres://` URL, `fdb:`); `None` for a
    /// temporary embedded store removed afterwards.
    pub store: Option<StoreLocation>,
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// Replay in memory (true) or through the durable engine.
    pub in_memory: bool,
    /// The model `ml` mode decides with.
    pub model: Option<Arc<Model>>,
    /// Where to write the audit records (in-memory replay only), if anywhere.
    pub audit_out: Option<PathBuf>,
    /// Share of item-page decisions audited (pickup and delivery always are).
    pub audit_item_page_rate: f64,
}

/// A quarantined arrival, for the summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuarantinedArrival {
    /// Line in events.jsonl.
    pub line: usize,
    /// The event's id.
    pub event_id: String,
    /// Its source.
    pub source: String,
    /// Its pair.
    pub sku: u64,
    /// Its pair.
    pub location: u32,
    /// The reason code.
    pub reason: String,
    /// The reason in words.
    pub detail: String,
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    /// Events read.
    pub events: usize,
    /// Queries answered.
    pub queries: usize,
    /// Locations read.
    pub locations: usize,
    /// Events applied.
    pub applied: usize,
    /// Duplicate arrivals.
    pub duplicates: usize,
    /// Quarantined arrivals, per reason code.
    pub quarantined_by_reason: BTreeMap<String, usize>,
    /// The first quarantined arrivals, in arrival order.
    pub quarantined: Vec<QuarantinedArrival>,
    /// Queries answered "available".
    pub available_answers: usize,
    /// Wall-clock seconds of the run.
    pub elapsed_seconds: f64,
}

/// Progress of a running replay.
#[derive(Clone, Copy, Debug)]
pub struct ReplayProgress {
    /// Events applied so far.
    pub events_done: usize,
    /// Events in total.
    pub events_total: usize,
    /// Queries answered so far.
    pub queries_done: usize,
    /// Queries in total.
    pub queries_total: usize,
}

/// One answer line.
#[derive(Clone, Debug, Serialize)]
struct Answer {
    query_id: String,
    available: bool,
    probability: f64,
    expected_on_hand: f64,
    mode: DecisionMode,
    reason: &'static str,
}

/// Opens an input file for one of the `stockgrid_model::formats` readers.
fn open_input(path: &Path) -> Result<(BufReader<std::fs::File>, String), ReplayError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Io {
        context: "open",
        path: name.clone(),
        source,
    })?;
    Ok((BufReader::new(file), name))
}

/// Reads and validates an events file, sorted by arrival (file order breaking ties); each
/// arrival keeps its line number.
pub fn read_events(path: &Path) -> Result<Vec<(usize, Arrival)>, ReplayError> {
    let (reader, name) = open_input(path)?;
    Ok(formats::events_from(reader, &name)?)
}

/// Reads and validates a queries file, in file order.
pub fn read_queries(path: &Path) -> Result<Vec<Query>, ReplayError> {
    let (reader, name) = open_input(path)?;
    Ok(formats::queries_from(reader, &name)?)
}

/// Reads and validates a locations file.
pub fn read_locations(path: &Path) -> Result<Vec<Location>, ReplayError> {
    let (reader, name) = open_input(path)?;
    Ok(formats::locations_from(reader, &name)?)
}

/// Runs a replay and writes the answers; `progress` is called as work advances.
pub async fn run_replay(
    options: &ReplayOptions,
    progress: impl FnMut(ReplayProgress),
) -> Result<ReplaySummary, ReplayError> {
    if options.mode == DecisionMode::Ml && options.model.is_none() {
        return Err(ReplayError::Usage("--mode ml needs a model".to_owned()));
    }
    if options.audit_out.is_some() && !options.in_memory {
        return Err(ReplayError::Usage(
            "--audit-out is written by the in-memory replay; leave out --engine durable".to_owned(),
        ));
    }
    let started = std::time::Instant::now();
    let events = read_events(&options.events)?;
    let queries = read_queries(&options.queries)?;
    let locations = match &options.locations {
        Some(path) => read_locations(path)?,
        None => Vec::new(),
    };
    let mut summary = ReplaySummary {
        events: events.len(),
        queries: queries.len(),
        locations: locations.len(),
        ..ReplaySummary::default()
    };
    let answers = if options.in_memory {
        answer_in_memory(
            options,
            &events,
            &queries,
            &locations,
            &mut summary,
            progress,
        )?
    } else {
        answer_durably(
            options,
            &events,
            &queries,
            &locations,
            &mut summary,
            progress,
        )
        .await?
    };
    summary.available_answers = answers.iter().filter(|a| a.available).count();
    write_answers(&options.out, answers.into_iter())?;
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

impl ReplaySummary {
    fn count(&mut self, line: usize, arrival: &Arrival, outcome: Outcome) {
        match outcome {
            Outcome::Applied => self.applied += 1,
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Quarantined(reason) => {
                *self
                    .quarantined_by_reason
                    .entry(reason.code().to_owned())
                    .or_default() += 1;
                if self.quarantined.len() < MAX_LISTED_QUARANTINES {
                    self.quarantined.push(QuarantinedArrival {
                        line,
                        event_id: arrival.event.event_id.clone(),
                        source: arrival.event.source.to_string(),
                        sku: arrival.event.pair.sku,
                        location: arrival.event.pair.location,
                        reason: reason.code().to_owned(),
                        detail: reason.to_string(),
                    });
                }
            }
        }
    }
}

fn answer_of(query: &Query, decision: &Decision) -> Answer {
    Answer {
        query_id: query.query_id.clone(),
        available: decision.available,
        probability: decision.probability,
        expected_on_hand: decision.expected_on_hand,
        mode: decision.mode,
        reason: decision.reason.as_str(),
    }
}

/// Events handled between two progress reports of the in-memory replay.
const PROGRESS_EVERY_EVENTS: usize = 100_000;

fn answer_in_memory(
    options: &ReplayOptions,
    events: &[(usize, Arrival)],
    queries: &[Query],
    locations: &[Location],
    summary: &mut ReplaySummary,
    mut progress: impl FnMut(ReplayProgress),
) -> Result<Vec<Answer>, ReplayError> {
    let mut ledger = InMemoryLedger::new(options.engine.ledger.clone(), locations);
    let mut answers: Vec<Option<Answer>> = vec![None; queries.len()];
    let mut audit: Vec<Option<AuditRecord>> = vec![None; queries.len()];
    let mut events_done = 0;
    let queries_done = std::cell::Cell::new(0);
    let report = |events_done, queries_done| ReplayProgress {
        events_done,
        events_total: events.len(),
        queries_done,
        queries_total: queries.len(),
    };
    replay_in_memory(
        &mut ledger,
        events,
        queries,
        |line, arrival, outcome| {
            summary.count(line, arrival, outcome);
            events_done += 1;
            if events_done % PROGRESS_EVERY_EVENTS == 0 {
                progress(report(events_done, queries_done.get()));
            }
        },
        |index, applied, ledger| {
            let query = &queries[index];
            let model = match options.mode {
                DecisionMode::Ml => options.model.as_deref(),
                DecisionMode::Rules => None,
            };
            let audited = options.audit_out.is_some()
                && (is_promise(query.surface)
                    || query.surface == Surface::ItemPage
                        && sampled(&query.query_id, options.audit_item_page_rate));
            let record = decide_and_record(
                ledger,
                query.query_id.clone(),
                query.pair,
                query.quantity,
                query.surface,
                query.time,
                applied,
                model,
                &options.safety_stock,
                audited,
            );
            let decision = record.decision;
            if audited {
                audit[index] = Some(record);
            }
            answers[index] = Some(answer_of(query, &decision));
            queries_done.set(queries_done.get() + 1);
        },
    )
    .map_err(|e| ReplayError::Engine(EngineError::Corrupt(e.to_string())))?;
    progress(report(events.len(), queries.len()));
    if let Some(path) = &options.audit_out {
        write_json_lines(path, audit.into_iter().flatten())?;
    }
    Ok(answers.into_iter().flatten().collect())
}

async fn answer_durably(
    options: &ReplayOptions,
    events: &[(usize, Arrival)],
    queries: &[Query],
    locations: &[Location],
    summary: &mut ReplaySummary,
    mut progress: impl FnMut(ReplayProgress),
) -> Result<Vec<Answer>, ReplayError> {
    let temporary_dir;
    let location = match &options.store {
        Some(location) => location.clone(),
        None => {
            temporary_dir = tempfile::tempdir().map_err(|source| ReplayError::Io {
                context: "create temporary store",
                path: "(temp)".to_owned(),
                source,
            })?;
            StoreLocation::Embedded(temporary_dir.path().to_path_buf())
        }
    };
    // A replay is a batch job whose answers are written at its very end: fsync'ing every
    // group commit would buy nothing, so the embedded store syncs once, when the run is done.
    let settings = OpenSettings {
        embedded: EmbeddedOptions {
            sync_commits: false,
            ..EmbeddedOptions::default()
        },
        ..OpenSettings::default()
    };
    let store: Arc<dyn Store> = location.open(&settings).map_err(EngineError::from)?;
    let first_time = events
        .first()
        .map(|(_, a)| a.arrival_time)
        .into_iter()
        .chain(queries.iter().map(|q| q.time))
        .min()
        .unwrap_or_default();
    let clock = SimulatedClock::starting_at(first_time);
    let store_handle = Arc::clone(&store);
    let mut config = options.engine.clone();
    config.safety_stock = options.safety_stock;
    let engine = Engine::start(store, Arc::new(clock.clone()), config).await?;
    engine
        .decisions()
        .configure(options.mode, options.model.clone());
    engine.decisions().shared.upsert(locations);

    let mut query_order: Vec<usize> = (0..queries.len()).collect();
    query_order.sort_by_key(|&index| queries[index].time); // Stable: file order breaks ties.
    let mut answers: Vec<Option<Answer>> = vec![None; queries.len()];
    let mut next_event = 0;
    let mut next_maintenance = first_time.plus_ms(MAINTENANCE_INTERVAL_MS);
    let mut queries_done = 0;
    for query_index in query_order
        .into_iter()
        .map(Some)
        .chain(std::iter::once(None))
    {
        let horizon = query_index.map(|index| queries[index].time);
        // Apply every event that arrived at or before the query's time.
        while next_event < events.len()
            && horizon.is_none_or(|h| events[next_event].1.arrival_time <= h)
        {
            let mut end = next_event;
            let batch_start_time = events[next_event].1.arrival_time;
            while end < events.len()
                && end - next_event < REPLAY_BATCH_EVENTS
                && horizon.is_none_or(|h| events[end].1.arrival_time <= h)
                // Keep a batch within one maintenance interval of simulated time.
                && events[end].1.arrival_time.0 - batch_start_time.0 < MAINTENANCE_INTERVAL_MS
            {
                end += 1;
            }
            let chunk = &events[next_event..end];
            let chunk_end_time = chunk[chunk.len() - 1].1.arrival_time;
            clock.advance_to(chunk_end_time);
            let results = engine
                .ingest(chunk.iter().map(|(_, arrival)| arrival.clone()).collect())
                .await?;
            for ((line, arrival), result) in chunk.iter().zip(results) {
                summary.count(*line, arrival, result?);
            }
            next_event = end;
            if clock.now() >= next_maintenance {
                engine.maintain().await?;
                next_maintenance = clock.now().plus_ms(MAINTENANCE_INTERVAL_MS);
            }
            progress(ReplayProgress {
                events_done: next_event,
                events_total: events.len(),
                queries_done,
                queries_total: queries.len(),
            });
        }
        let Some(index) = query_index else { break };
        let query = &queries[index];
        clock.advance_to(query.time);
        let decision = match engine
            .decide(query.pair, query.quantity, query.surface, false)
            .await
        {
            Ok(decided) => decided.decision,
            Err(error) => {
                tracing::warn!(%error, query = query.query_id, "decision failed; answering not available");
                unavailable()
            }
        };
        answers[index] = Some(answer_of(query, &decision));
        queries_done += 1;
    }
    progress(ReplayProgress {
        events_done: events.len(),
        events_total: events.len(),
        queries_done,
        queries_total: queries.len(),
    });
    engine.shutdown().await?;
    store_handle.sync().map_err(EngineError::from)?;
    Ok(answers.into_iter().flatten().collect())
}

fn write_answers(path: &Path, answers: impl Iterator<Item = Answer>) -> Result<(), ReplayError> {
    write_json_lines(path, answers)
}

/// Writes one JSON object per line to a temporary file beside `path`, syncs it and renames it
/// into place: a reader never sees half a file.
pub fn write_json_lines<T: Serialize>(
    path: &Path,
    items: impl Iterator<Item = T>,
) -> Result<(), ReplayError> {
    let io = |context: &'static str| {
        let path = path.display().to_string();
        move |source| ReplayError::Io {
            context,
            path,
            source,
        }
    };
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary =
        tempfile::NamedTempFile::new_in(directory).map_err(io("create answers file beside"))?;
    let mut writer = BufWriter::new(temporary);
    for item in items {
        serde_json::to_writer(&mut writer, &item).map_err(|e| io("write answers to")(e.into()))?;
        writer.write_all(b"\n").map_err(io("write answers to"))?;
    }
    let temporary = writer
        .into_inner()
        .map_err(|e| io("write answers to")(e.into_error()))?;
    temporary
        .as_file()
        .sync_all()
        .map_err(io("sync answers file"))?;
    temporary
        .persist(path)
        .map_err(|e| io("move answers into place at")(e.error))?;
    Ok(())
}
