//! The `stockgrid` command: wires subcommands to the library crates, nothing more.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use stockgrid_actors::decision::{DecisionMode, SafetyStock};
use stockgrid_actors::domain::{PairKey, Surface};
use stockgrid_actors::persist::RebuildBase;
use stockgrid_actors::replay::{ReplayOptions, ReplayProgress, run_replay};
use stockgrid_actors::time::WallClock;
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_api::node::{Node, NodeConfig};
use stockgrid_inference::model::Model;
use stockgrid_storage::{EmbeddedStore, Store};

/// Real-time inventory availability: a deterministic ledger per SKU-location.
#[derive(Debug, Parser)]
#[command(name = "stockgrid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts a node with a temporary store and drives a simulated store day through it.
    Demo(DemoArgs),
    /// Sends load to a running node and prints throughput and latency percentiles.
    Loadgen(LoadgenArgs),
    /// Runs one node: the gRPC API over an embedded store, until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Runs replay files (events, queries) through the engine and writes answers.jsonl.
    Replay(ReplayArgs),
    /// Prints the full state of one SKU-location pair from a data directory.
    Inspect(InspectArgs),
    /// Trains a model (belief parameters, scorer, per-surface thresholds) from simulator runs.
    Train(TrainArgs),
    /// Decision audit: replay a recorded decision from the event log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Online experiments of a running node.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// The simulator: generate replay files, evaluate answers, drill a node.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Debug, clap::Args)]
struct SimFeaturesArgs {
    /// A simulator run folder (repeatable).
    #[arg(long, required = true)]
    dir: Vec<PathBuf>,
    /// The file to write: `.parquet` or `.csv`.
    #[arg(long)]
    out: PathBuf,
    /// The model whose belief parameters compute the features (default: the shipped one).
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Simulates a scenario and writes the REPLAY.md files (events, queries, truth,
    /// locations) with realism statistics.
    Generate(SimGenerateArgs),
    /// Evaluates answers files (and built-in baselines) against a run's truth; writes
    /// metrics.json and report.html with PNG plots.
    Evaluate(SimEvaluateArgs),
    /// Plays a scenario against a real `stockgrid serve` (started on an accelerated clock)
    /// over gRPC and plots decision quality, ingest lag and health over simulated time.
    Drill(SimDrillArgs),
    /// Replays runs in memory and writes every query's features and label as Parquet or CSV
    /// (for offline analysis and comparison classifiers).
    Features(SimFeaturesArgs),
}

/// `stockgrid sim drill`.
#[derive(Debug, clap::Args)]
struct SimDrillArgs {
    /// A scenario by name or a TOML file.
    #[arg(long)]
    scenario: String,
    /// The run seed.
    #[arg(long, default_value_t = 1000)]
    seed: u64,
    /// M5 traces drive store demand.
    #[arg(long)]
    traces: Option<PathBuf>,
    /// Overrides the scenario's `network.skus`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    skus: Option<u32>,
    /// Recorded days to play (from the first) [default: all].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=366))]
    days: Option<u32>,
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 8000.0)]
    speed: f64,
    /// Folder for drill.json and drill.png (created).
    #[arg(long)]
    report: PathBuf,
}

/// `stockgrid sim evaluate`.
#[derive(Debug, clap::Args)]
struct SimEvaluateArgs {
    /// A folder written by `sim generate` (repeatable: one section per run).
    #[arg(long, required = true)]
    dir: Vec<PathBuf>,
    /// An answers file, as FILE or LABEL=FILE (repeatable); a relative FILE not found as
    /// given is looked up in each --dir.
    #[arg(long)]
    answers: Vec<String>,
    /// Folder for metrics.json, report.html and the plots (created).
    #[arg(long)]
    report: PathBuf,
}

/// `stockgrid sim generate`.
#[derive(Debug, clap::Args)]
struct SimGenerateArgs {
    /// A scenario of sim/scenarios by name (baseline, delayed-scans, duplicate-storm,
    /// stale-warehouse-feed, regional-outage, shrink-drift) or a TOML file.
    #[arg(long)]
    scenario: String,
    /// The run seed (training 1-99, calibration 100-199, evaluation 1000-1099).
    #[arg(long)]
    seed: u64,
    /// Output folder (created; its files are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Real sales traces in the M5 layout (e.g. ../shared/data/m5) drive store demand.
    #[arg(long)]
    traces: Option<PathBuf>,
    /// Overrides the scenario's `network.skus` (for scale runs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    skus: Option<u32>,
    /// Worker threads [default: one per core]; the output does not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the statistics as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WorkloadArg {
    /// One pair per request.
    Point,
    /// `--batch-items` pairs per request.
    Batch,
    /// `--ingest-events` sales per request, each durable before the answer.
    Ingest,
    /// 70% point, 20% batch, 10% ingest.
    Mixed,
}

/// `stockgrid loadgen`.
#[derive(Debug, clap::Args)]
struct LoadgenArgs {
    /// The node, e.g. 127.0.0.1:50051.
    #[arg(long)]
    target: String,
    /// What to send.
    #[arg(long, value_enum)]
    workload: WorkloadArg,
    /// Requests per second (open loop, latency from the intended send time); without it,
    /// closed loop.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Pairs the load is spread over.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pairs: u64,
    /// Items per batch lookup.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch_items: u64,
    /// Events per ingest request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    ingest_events: u64,
    /// Skip counting every pair before measuring.
    #[arg(long)]
    no_preload: bool,
}

/// `stockgrid demo`.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Stores in the simulated network.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    stores: u32,
    /// Items per store.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    skus: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Real sales traces in the M5 layout (e.g. ../shared/data/m5): the network becomes their
    /// item-store pairs (--stores and --skus are then ignored).
    #[arg(long)]
    traces: Option<PathBuf>,
}

/// `stockgrid serve`: settings come from the TOML file, then the environment, then flags.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see ops/stockgrid.example.toml).
    #[arg(long, env = "STOCKGRID_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "STOCKGRID_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Directory of the embedded store [default: ./data].
    #[arg(long, env = "STOCKGRID_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Events later than this after their event time are quarantined [default: 86400].
    #[arg(long, env = "STOCKGRID_LATENESS_BOUND_SECONDS")]
    lateness_bound_seconds: Option<i64>,
    /// Safety stock of one surface, e.g. pickup=2 (repeatable).
    #[arg(long = "surface-safety-stock", value_name = "SURFACE=UNITS")]
    surface_safety_stock: Vec<String>,
    /// Shard actors [default: 8].
    #[arg(long, env = "STOCKGRID_SHARDS")]
    shards: Option<usize>,
    /// Calls served at once before shedding load [default: 4096].
    #[arg(long, env = "STOCKGRID_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Drills: run on simulated time starting at this RFC 3339 instant instead of the wall
    /// clock (lateness, TTLs and staleness follow it).
    #[arg(long, requires = "clock_speed")]
    clock_start: Option<String>,
    /// Drills: simulated seconds per wall-clock second.
    #[arg(long, requires = "clock_start")]
    clock_speed: Option<f64>,
    /// Drills: the wall-clock instant (RFC 3339) at which the clock reads --clock-start
    /// [default: now].
    #[arg(long, requires = "clock_start")]
    clock_anchor: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// The deterministic ledger rule.
    Rules,
    /// The stock belief and the learned scorer (the model of --model, or the shipped one).
    Ml,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ReplayEngine {
    /// The pure entity code in memory: the same ledger and belief, no store, no actors.
    Memory,
    /// Shard actors over the embedded store, as a node runs them.
    Durable,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// events.jsonl (REPLAY.md format).
    #[arg(long)]
    events: PathBuf,
    /// queries.jsonl.
    #[arg(long)]
    queries: PathBuf,
    /// locations.jsonl (optional).
    #[arg(long)]
    locations: Option<PathBuf>,
    /// Where to write answers.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// How answers are decided.
    #[arg(long, value_enum, default_value = "rules")]
    mode: Mode,
    /// Safety stock on every surface, in units.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    safety_stock: i64,
    /// Safety stock of one surface, as SURFACE=UNITS (repeatable; overrides --safety-stock).
    #[arg(long = "surface-safety-stock", value_name = "SURFACE=UNITS")]
    surface_safety_stock: Vec<String>,
    /// Where the entities live while replaying.
    #[arg(long, value_enum, default_value = "memory")]
    engine: ReplayEngine,
    /// Model file for --mode ml (default: the model shipped with this build).
    #[arg(long)]
    model: Option<PathBuf>,
    /// With --engine durable: keep the engine's store here (default: a temporary directory,
    /// removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Lateness bound in hours: later events are quarantined.
    #[arg(long, default_value_t = 24)]
    lateness_bound_hours: i64,
    /// With --engine durable: shard actors.
    #[arg(long, default_value_t = 8)]
    shards: usize,
    /// Also write the quarantined events, with their reasons, to this JSON Lines file.
    #[arg(long)]
    quarantine_out: Option<PathBuf>,
    /// Write an audit record of every pickup and delivery decision (and the sampled
    /// item-page ones) to this JSON Lines file, for `stockgrid audit replay`.
    #[arg(long)]
    audit_out: Option<PathBuf>,
    /// Share of item-page decisions audited, 0 to 1.
    #[arg(long, default_value_t = 0.01)]
    audit_item_page_rate: f64,
}

#[derive(Debug, Subcommand)]
enum ExperimentCommand {
    /// Per arm: decisions, promised share, outcomes of promised reservation lines, the
    /// broken-promise rate and the recall estimate with Wilson 95% intervals.
    Report(ExperimentReportArgs),
}

#[derive(Debug, clap::Args)]
struct ExperimentReportArgs {
    /// The node's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Prints a decision record from a stopped node's data directory.
    Show(AuditShowArgs),
    /// Rebuilds the entities from the event log alone up to a decision's moment, recomputes
    /// its features and answer, and shows they are bit-identical to the record.
    Replay(AuditReplayArgs),
}

#[derive(Debug, clap::Args)]
struct AuditShowArgs {
    /// The decision's id (from an answer, or RESERVATION_ID/SKU-LOCATION).
    decision_id: String,
    /// The data directory of a stopped node.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
}

/// Either a stopped node's data directory (its own records and event log) or a replay's
/// audit file with the events it was made on.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("records").required(true).args(["data_dir", "audit"])))]
struct AuditReplayArgs {
    /// The decision to check (with --audit, `all`: every record of the file).
    decision_id: String,
    /// The data directory of a stopped node: rebuild from the node's own event log.
    #[arg(long, conflicts_with_all = ["audit", "events", "locations"])]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the node's TOML configuration (its ledger rules, safety stock and
    /// model).
    #[arg(long, requires = "data_dir")]
    config: Option<PathBuf>,
    /// The audit records (`replay --audit-out`).
    #[arg(long, requires = "events")]
    audit: Option<PathBuf>,
    /// The event log the decisions were made on (events.jsonl).
    #[arg(long, requires = "audit")]
    events: Option<PathBuf>,
    /// locations.jsonl, if the replay had one.
    #[arg(long, requires = "audit")]
    locations: Option<PathBuf>,
    /// The model of ml records (default: the node configuration's, else the shipped one).
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// A simulator run folder (`sim generate --out`); runs on training seeds fit the model,
    /// runs on calibration seeds tune the thresholds (repeatable).
    #[arg(long, required = true)]
    dir: Vec<PathBuf>,
    /// Where to write the model.
    #[arg(long)]
    out: PathBuf,
    /// Broken-promise target of a surface, as SURFACE=RATE (repeatable; defaults: pickup=0.01,
    /// delivery=0.02, others 0.03).
    #[arg(long = "target", value_name = "SURFACE=RATE")]
    targets: Vec<String>,
    /// Also export the training rows (features and labels) here: a `.parquet` or `.csv` file.
    #[arg(long)]
    export: Option<PathBuf>,
    /// The scorer to fit: small gradient-boosted trees, or logistic regression.
    #[arg(long, value_enum, default_value = "trees")]
    scorer: TrainScorer,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TrainScorer {
    /// Gradient-boosted trees (150 trees of depth 4).
    Trees,
    /// Logistic regression on standardized features.
    Logistic,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The data directory of a stopped node or a replay's `--data-dir`.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Item number.
    #[arg(long)]
    sku: u64,
    /// Location number.
    #[arg(long)]
    location: u32,
}

fn parse_surface_safety_stock(uniform: i64, overrides: &[String]) -> anyhow::Result<SafetyStock> {
    let mut safety = SafetyStock::uniform(uniform);
    for item in overrides {
        let (surface, units) = item
            .split_once('=')
            .with_context(|| format!("--surface-safety-stock {item:?}: expected SURFACE=UNITS"))?;
        let surface = Surface::parse(surface).with_context(|| {
            format!(
                "--surface-safety-stock {item:?}: unknown surface {surface:?}; expected one of {}",
                Surface::expected()
            )
        })?;
        let units: i64 = units.parse().with_context(|| {
            format!("--surface-safety-stock {item:?}: units must be an integer")
        })?;
        if units < 0 {
            bail!("--surface-safety-stock {item:?}: units must not be negative");
        }
        safety = safety.with(surface, units);
    }
    Ok(safety)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if args.lateness_bound_hours <= 0 {
        bail!(
            "--lateness-bound-hours must be positive, got {}",
            args.lateness_bound_hours
        );
    }
    if args.data_dir.is_some() && matches!(args.engine, ReplayEngine::Memory) {
        bail!("--data-dir keeps the durable engine's store; add --engine durable");
    }
    let mut engine = EngineConfig {
        shard_count: args.shards,
        ..EngineConfig::default()
    };
    engine.ledger.lateness_bound_ms = args.lateness_bound_hours * stockgrid_actors::time::HOUR_MS;
    engine.log_retention_ms = engine.identity_retention_ms();
    engine
        .validate()
        .map_err(|e| anyhow::anyhow!("engine configuration: {e}"))?;
    let options = ReplayOptions {
        events: args.events,
        queries: args.queries,
        locations: args.locations,
        out: args.out.clone(),
        mode: match args.mode {
            Mode::Rules => DecisionMode::Rules,
            Mode::Ml => DecisionMode::Ml,
        },
        safety_stock: parse_surface_safety_stock(args.safety_stock, &args.surface_safety_stock)?,
        data_dir: args.data_dir,
        engine,
        in_memory: matches!(args.engine, ReplayEngine::Memory),
        model: match (&args.mode, &args.model) {
            (Mode::Rules, _) => None,
            (Mode::Ml, Some(path)) => Some(Arc::new(Model::load(path)?)),
            (Mode::Ml, None) => Some(Arc::new(Model::shipped()?)),
        },
        audit_out: args.audit_out,
        audit_item_page_rate: args.audit_item_page_rate,
    };
    let mut last_report = Instant::now();
    let show = |p: &ReplayProgress| {
        let share = if p.events_total == 0 {
            100.0
        } else {
            100.0 * p.events_done as f64 / p.events_total as f64
        };
        eprintln!(
            "replay: events {}/{} ({share:.0}%), queries {}/{}",
            p.events_done, p.events_total, p.queries_done, p.queries_total
        );
    };
    let summary = run_replay(&options, |p| {
        if last_report.elapsed() >= Duration::from_secs(2) {
            show(&p);
            last_report = Instant::now();
        }
    })
    .await?;
    println!(
        "replayed {} events and {} queries in {:.1} s ({:.0} events/s)",
        summary.events,
        summary.queries,
        summary.elapsed_seconds,
        summary.events as f64 / summary.elapsed_seconds.max(1e-9)
    );
    let quarantined: usize = summary.quarantined_by_reason.values().sum();
    println!(
        "applied {}, duplicates {}, quarantined {quarantined}",
        summary.applied, summary.duplicates
    );
    for (reason, count) in &summary.quarantined_by_reason {
        println!("  quarantined {reason}: {count}");
    }
    for item in summary.quarantined.iter().take(5) {
        println!(
            "  line {}: event {} ({}) sku {} location {}: {}",
            item.line, item.event_id, item.source, item.sku, item.location, item.detail
        );
    }
    println!(
        "answered {} queries, {} available; answers in {}",
        summary.queries,
        summary.available_answers,
        args.out.display()
    );
    if let Some(path) = args.quarantine_out {
        let mut text = String::new();
        for item in &summary.quarantined {
            text.push_str(&serde_json::to_string(item)?);
            text.push('\n');
        }
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        println!("quarantined events in {}", path.display());
    }
    Ok(())
}

fn node_config(args: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => read_node_config(path)?,
        None => NodeConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(bound) = args.lateness_bound_seconds {
        config.lateness_bound_seconds = bound;
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if let Some(in_flight) = args.max_in_flight {
        config.limits.max_in_flight = in_flight;
    }
    let defaults = SafetyStock::uniform(0);
    let safety = parse_surface_safety_stock(0, &args.surface_safety_stock)?;
    let units = &mut config.safety_stock;
    for (surface, slot) in [
        (Surface::ItemPage, &mut units.item_page),
        (Surface::Pickup, &mut units.pickup),
        (Surface::Delivery, &mut units.delivery),
        (Surface::Substitution, &mut units.substitution),
        (Surface::Replenishment, &mut units.replenishment),
    ] {
        if safety.units(surface) != defaults.units(surface) {
            *slot = safety.units(surface);
        }
    }
    config.engine_config()?;
    Ok(config)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the node");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    use stockgrid_sim::loadgen::{LoadOptions, Workload, preload, run_load};
    let target = if args.target.contains("://") {
        args.target.clone()
    } else {
        format!("http://{}", args.target)
    };
    let options = LoadOptions {
        target,
        workload: match args.workload {
            WorkloadArg::Point => Workload::Point,
            WorkloadArg::Batch => Workload::Batch,
            WorkloadArg::Ingest => Workload::Ingest,
            WorkloadArg::Mixed => Workload::Mixed,
        },
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        concurrency: args.concurrency as usize,
        pairs: args.pairs,
        batch_items: args.batch_items as usize,
        ingest_events: args.ingest_events as usize,
        preload: !args.no_preload,
    };
    if options.preload {
        let mut last = Instant::now();
        preload(&options, |done| {
            if last.elapsed() >= Duration::from_secs(2) {
                eprintln!("preload: {done}/{} pairs counted", args.pairs);
                last = Instant::now();
            }
        })
        .await
        .context("preload pairs")?;
    }
    eprintln!(
        "loadgen: {:?} for {} s, {} clients, {}",
        args.workload,
        args.duration,
        args.concurrency,
        args.rate.map_or("closed loop".to_owned(), |r| format!(
            "open loop at {r} requests/s"
        ))
    );
    let report = run_load(options).await?;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = stockgrid_sim::demo::DemoOptions {
        stores: args.stores,
        skus: args.skus,
        seed: args.seed,
        traces: args.traces,
    };
    let summary = stockgrid_sim::demo::run_demo(&options, |line| eprintln!("{line}")).await?;
    for line in &summary.lines {
        println!("{line}");
    }
    println!("checks:");
    for check in &summary.checks {
        println!(
            "  [{}] {}",
            if check.passed { "ok" } else { "FAILED" },
            check.description
        );
    }
    if !summary.passed() {
        bail!("a demo check failed");
    }
    println!("all checks hold");
    Ok(())
}

/// A node's files hold inventory, reservations and decision records: from here on every
/// file and directory this process creates is its owner's alone (0600 / 0700).
fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    private_files();
    let config = node_config(&args)?;
    let clock: Arc<dyn stockgrid_actors::time::Clock> = match (&args.clock_start, args.clock_speed)
    {
        (Some(start), Some(speed)) => {
            if !(speed.is_finite() && speed > 0.0) {
                bail!("--clock-speed must be a positive number, got {speed}");
            }
            let start = stockgrid_actors::time::Timestamp::parse_rfc3339(start)
                .map_err(|e| anyhow::anyhow!("--clock-start {start:?}: {e}"))?;
            let anchor = match &args.clock_anchor {
                Some(text) => stockgrid_actors::time::Timestamp::parse_rfc3339(text)
                    .map_err(|e| anyhow::anyhow!("--clock-anchor {text:?}: {e}"))?,
                None => stockgrid_actors::time::Clock::now(&WallClock),
            };
            eprintln!("simulated clock from {} at {speed}x", start.to_rfc3339());
            Arc::new(stockgrid_actors::time::AcceleratedClock {
                start,
                anchor_wall_ms: anchor.0,
                speed,
            })
        }
        _ => Arc::new(WallClock),
    };
    let node = Node::start(&config, clock).await?;
    eprintln!(
        "stockgrid serving on {} (data in {}); SIGTERM or Ctrl-C stops it",
        node.address(),
        config.data_dir.display()
    );
    node.run_until(termination()).await?;
    eprintln!("stockgrid stopped cleanly");
    Ok(())
}

async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    if !EmbeddedStore::exists_at(&args.data_dir) {
        bail!(
            "{} holds no stockgrid store (no data directory of a node or a replay)",
            args.data_dir.display()
        );
    }
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&args.data_dir)
            .with_context(|| format!("open store in {}", args.data_dir.display()))?,
    );
    let engine = Engine::start(store, Arc::new(WallClock), EngineConfig::default()).await?;
    let pair = PairKey::new(args.sku, args.location);
    let report = engine.inspect(pair).await?;
    match report {
        None => println!("no record of {pair}"),
        Some(report) => {
            let view = &report.view;
            println!("{pair}");
            println!(
                "  on_hand {}, reserved {}, in_transit {} ({} overdue transfers)",
                view.on_hand_units,
                view.reserved_units,
                view.in_transit_units,
                view.overdue_transfers
            );
            println!(
                "  applied entries {}, quarantined {}, log position {}",
                view.applied_entries, view.quarantined_entries, report.log_position
            );
            if let Some(anchor) = &view.last_anchor {
                println!(
                    "  last anchor: {} {} units at {} from {} (event {})",
                    anchor.kind, anchor.units, anchor.event_time, anchor.source, anchor.event_id
                );
            }
            if let Some(sale) = view.last_sale {
                println!("  last sale at {sale}");
            }
            for (source, seen) in stockgrid_actors::domain::Source::ALL
                .iter()
                .zip(view.source_last_seen)
            {
                if let Some(seen) = seen {
                    println!("  last seen from {source}: {seen}");
                }
            }
            for record in &report.quarantined {
                println!(
                    "  quarantined {} event {} ({}, arrived {}): {}",
                    record.reason.code(),
                    record.entry.event.event_id,
                    record.entry.event.kind,
                    record.arrival,
                    record.reason
                );
            }
        }
    }
    // Inspection changes nothing; stop without writing snapshots.
    drop(engine);
    Ok(())
}

fn sim_generate(args: SimGenerateArgs) -> anyhow::Result<()> {
    let options = stockgrid_sim::files::GenerateOptions {
        scenario: args.scenario,
        seed: args.seed,
        out: args.out,
        traces: args.traces,
        skus: args.skus,
        threads: args.threads,
    };
    eprintln!(
        "simulating {} with seed {} ({} seed)...",
        options.scenario,
        options.seed,
        stockgrid_sim::seeds::purpose(options.seed)
    );
    let report = stockgrid_sim::files::run_generate(&options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} seed {}{}: {} pairs, {} events, {} queries -> {}",
        report.scenario,
        report.seed,
        if report.traces { " (M5 traces)" } else { "" },
        report.pairs,
        report.events,
        report.queries,
        options.out.display()
    );
    println!(
        "  wrote in {:.2} s ({:.2} s simulating, {:.2} s writing): {:.0} events/s",
        report.generate_seconds,
        report.simulate_seconds,
        report.write_seconds,
        report.events_per_second
    );
    println!(
        "  record differs from truth at {:.1}% of query moments",
        100.0 * report.record_differs_share
    );
    println!(
        "  truly out of stock at {:.1}% of queries",
        100.0 * report.truly_out_of_stock_share
    );
    println!(
        "  lost sales: {:.1}% of demanded units",
        100.0 * report.lost_sale_share
    );
    let sources: Vec<String> = report
        .events_per_source
        .iter()
        .map(|(source, n)| format!("{source} {n}"))
        .collect();
    println!("  events per source: {}", sources.join(", "));
    Ok(())
}

async fn sim_drill(args: SimDrillArgs) -> anyhow::Result<()> {
    let options = stockgrid_sim::drill::DrillOptions {
        generate: stockgrid_sim::files::GenerateOptions {
            scenario: args.scenario,
            seed: args.seed,
            out: args.report.clone(),
            traces: args.traces,
            skus: args.skus,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        days: args.days,
        speed: args.speed,
        stockgrid: std::env::current_exe().context("find the stockgrid binary")?,
    };
    let report = stockgrid_sim::drill::run_drill(&options, |line| eprintln!("{line}")).await?;
    stockgrid_sim::drill::write_drill_report(&report, &args.report)?;
    let total =
        |f: fn(&stockgrid_sim::drill::Bucket) -> u64| -> u64 { report.buckets.iter().map(f).sum() };
    let promised = total(|b| b.promised);
    let broken = total(|b| b.false_positives);
    let truly = total(|b| b.truly_available);
    let hits = total(|b| b.true_positives);
    let checks = total(|b| b.health_checks);
    let serving = total(|b| b.serving);
    let worst_lag = report
        .buckets
        .iter()
        .map(|b| b.max_lag_seconds)
        .fold(0.0f64, f64::max);
    println!(
        "{} seed {}: {} events and {} queries in {:.0} s wall at {}x",
        report.scenario,
        report.seed,
        report.events,
        report.queries,
        report.wall_seconds,
        report.speed
    );
    println!(
        "  broken promises {:.2}% of {promised}, recall {:.1}%, errors {}",
        100.0 * broken as f64 / promised.max(1) as f64,
        100.0 * hits as f64 / truly.max(1) as f64,
        total(|b| b.errors)
    );
    println!(
        "  worst ingest lag {worst_lag:.0} simulated s; health SERVING at {serving} of {checks} checks"
    );
    println!("report: {}", args.report.join("drill.png").display());
    Ok(())
}

async fn experiment_report(args: ExperimentReportArgs) -> anyhow::Result<()> {
    use stockgrid_api::proto::v1 as pb;
    let address = format!("http://{}", args.target);
    let channel = tonic::transport::Channel::from_shared(address.clone())
        .with_context(|| format!("--target {:?}: not an address", args.target))?
        .connect()
        .await
        .with_context(|| format!("connect to {address}"))?;
    let report = pb::admin_client::AdminClient::new(channel)
        .get_experiment_report(pb::GetExperimentReportRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("GetExperimentReport: {}", status.message()))?
        .into_inner();
    if report.name.is_empty() {
        println!("no experiment is running on {}", args.target);
        return Ok(());
    }
    let interval = |estimate: Option<pb::Estimate>| {
        estimate.map_or("-".to_owned(), |e| {
            format!(
                "{:.2}% [{:.2}%, {:.2}%]",
                100.0 * e.value,
                100.0 * e.low,
                100.0 * e.high
            )
        })
    };
    println!(
        "experiment {} ({}shadow answers)",
        report.name,
        if report.shadow { "" } else { "no " }
    );
    println!(
        "  {:<12} {:>6} {:>10} {:>9} {:>8} {:>7} {:>28} {:>8} {:>28}",
        "arm",
        "weight",
        "decisions",
        "promised",
        "settled",
        "broken",
        "broken rate (95%)",
        "sample",
        "recall estimate (95%)"
    );
    for arm in report.arms {
        println!(
            "  {:<12} {:>6} {:>10} {:>9} {:>8} {:>7} {:>28} {:>8} {:>28}",
            arm.name,
            arm.weight,
            arm.decisions,
            arm.promised,
            arm.settled,
            arm.broken,
            interval(arm.broken_rate),
            arm.recall_sample,
            if arm.recall_sample == 0 {
                "- (no shadow sample)".to_owned()
            } else {
                interval(arm.recall)
            }
        );
    }
    Ok(())
}

async fn audit_show(args: AuditShowArgs) -> anyhow::Result<()> {
    let engine = open_stopped_node(&args.data_dir, EngineConfig::default()).await?;
    let record = engine.decision_record(&args.decision_id)?;
    engine.shutdown().await?;
    match record {
        Some(record) => {
            println!("{}", serde_json::to_string_pretty(&record)?);
            Ok(())
        }
        None => bail!(
            "no record of decision {:?} in {} (item-page decisions are sampled)",
            args.decision_id,
            args.data_dir.display()
        ),
    }
}

/// `audit replay --data-dir`: one decision of a stopped node, from its own log.
async fn audit_replay_node(args: &AuditReplayArgs, data_dir: &Path) -> anyhow::Result<()> {
    let node_config = match &args.config {
        Some(path) => read_node_config(path)?,
        None => NodeConfig::default(),
    };
    let engine = open_stopped_node(data_dir, node_config.engine_config()?).await?;
    let model = match args.model.as_ref().or(node_config.decisions.model.as_ref()) {
        Some(path) => Model::load(path)?,
        None => Model::shipped()?,
    };
    // The mode is the record's; the model serves its ml records.
    engine
        .decisions()
        .configure(DecisionMode::Ml, Some(Arc::new(model)));
    let replayed = engine.replay_decision(&args.decision_id);
    engine.shutdown().await?;
    let Some(replay) = replayed? else {
        bail!(
            "no record of decision {:?} in {} (item-page decisions are sampled)",
            args.decision_id,
            data_dir.display()
        );
    };
    let from = match replay.base {
        Some(RebuildBase::LogStart) => "the start of its log".to_owned(),
        Some(RebuildBase::Checkpoint { position, .. }) => {
            format!("the checkpoint after log record {position} (the log before was compacted)")
        }
        None => "nothing".to_owned(),
    };
    if replay.check.differences.is_empty() {
        println!(
            "decision {}: rebuilt from {from} up to log record {}",
            replay.check.decision_id,
            replay.log_position.unwrap_or(0)
        );
        println!("bit-identical: inputs digest, features and answer");
        return Ok(());
    }
    println!("decision {}: DIFFERS", replay.check.decision_id);
    for difference in &replay.check.differences {
        println!("  {difference}");
    }
    bail!("the decision does not replay bit for bit from the node's log")
}

fn read_node_config(path: &Path) -> anyhow::Result<NodeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
    NodeConfig::from_toml(&text).with_context(|| format!("config {}", path.display()))
}

/// The engine of a stopped node over its data directory, for offline tools.
async fn open_stopped_node(data_dir: &Path, config: EngineConfig) -> anyhow::Result<Engine> {
    if !EmbeddedStore::exists_at(data_dir) {
        bail!(
            "{} holds no stockgrid store (no data directory of a node)",
            data_dir.display()
        );
    }
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(data_dir)
            .with_context(|| format!("open store in {}", data_dir.display()))?,
    );
    Ok(Engine::start(store, Arc::new(WallClock), config).await?)
}

fn audit_replay(args: AuditReplayArgs) -> anyhow::Result<()> {
    use stockgrid_actors::audit::{AuditRecord, audit_replay};
    let (Some(audit), Some(events)) = (&args.audit, &args.events) else {
        bail!("give --data-dir, or --audit with --events");
    };
    let text =
        std::fs::read_to_string(audit).with_context(|| format!("read {}", audit.display()))?;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let record: AuditRecord = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an audit record", audit.display(), index + 1))?;
        if args.decision_id == "all" || record.decision_id == args.decision_id {
            records.push(record);
        }
    }
    if records.is_empty() {
        bail!(
            "decision {:?} is not in {}",
            args.decision_id,
            audit.display()
        );
    }
    let events = stockgrid_actors::replay::read_events(events)?;
    let locations = match &args.locations {
        Some(path) => stockgrid_actors::replay::read_locations(path)?,
        None => Vec::new(),
    };
    let model = match &args.model {
        Some(path) => Model::load(path)?,
        None => Model::shipped()?,
    };
    let checks = audit_replay(
        &records,
        &events,
        &locations,
        &EngineConfig::default().ledger,
        Some(&model),
        &SafetyStock::uniform(0),
    )
    .map_err(|e| anyhow::anyhow!("rebuild from the event log: {e}"))?;
    let mut differing = 0;
    for (record, check) in records.iter().zip(&checks) {
        if check.differences.is_empty() {
            if records.len() == 1 {
                println!(
                    "decision {}: {} of sku {} at location {} for {} unit(s) at {}, after {} arrivals",
                    record.decision_id,
                    record.surface,
                    record.sku,
                    record.location,
                    record.quantity,
                    stockgrid_actors::time::Timestamp(record.time_ms),
                    record.arrivals_applied
                );
                println!(
                    "  recorded and recomputed: available {}, probability {}, reason {}, mode {:?}, {} features, inputs {}",
                    record.decision.available,
                    record.decision.probability,
                    record.decision.reason.as_str(),
                    record.decision.mode,
                    record.features.len(),
                    record.inputs_digest
                );
            }
        } else {
            differing += 1;
            println!("decision {}: DIFFERS", check.decision_id);
            for difference in &check.differences {
                println!("  {difference}");
            }
        }
    }
    if differing > 0 {
        bail!(
            "{differing} of {} decision(s) differ from their records",
            records.len()
        );
    }
    println!(
        "bit-identical: {} decision(s) recomputed from the event log",
        records.len()
    );
    Ok(())
}

fn recorded_command() -> String {
    let mut words = vec!["stockgrid".to_owned()];
    let mut arguments = std::env::args().skip(1);
    while let Some(word) = arguments.next() {
        if word == "--out" {
            arguments.next();
        } else if !word.starts_with("--out=") {
            words.push(word);
        }
    }
    words.join(" ")
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    use stockgrid_sim::train::{TrainOptions, default_targets, run_train};
    let mut targets = default_targets();
    for item in &args.targets {
        let (surface, rate) = item
            .split_once('=')
            .with_context(|| format!("--target {item:?}: expected SURFACE=RATE"))?;
        let surface = Surface::parse(surface).with_context(|| {
            format!(
                "--target {item:?}: unknown surface {surface:?}; expected one of {}",
                Surface::expected()
            )
        })?;
        let rate: f64 = rate
            .parse()
            .ok()
            .filter(|rate| (0.0..1.0).contains(rate))
            .with_context(|| format!("--target {item:?}: the rate must be a number in [0, 1)"))?;
        targets.insert(surface, rate);
    }
    let options = TrainOptions {
        dirs: args.dir,
        out: args.out,
        targets,
        export: args.export,
        // The arguments without the output path, so the same training gives the same bytes
        // wherever the model is written.
        command: recorded_command(),
        scorer: match args.scorer {
            TrainScorer::Trees => stockgrid_sim::train::ScorerKind::BoostedTrees,
            TrainScorer::Logistic => stockgrid_sim::train::ScorerKind::Logistic,
        },
    };
    let report = run_train(&options, |line| eprintln!("train: {line}"))?;
    let model = &report.model;
    println!(
        "model {} written to {}",
        model.version,
        options.out.display()
    );
    for (surface, tuned) in &model.training.surfaces {
        println!(
            "  {surface:<14} threshold {:.4}  calibration broken {:.2}% (target {:.1}%) recall {:.1}%  c_FP/c_FN {:.1}",
            tuned.threshold,
            100.0 * tuned.broken_rate,
            100.0 * tuned.target_broken_rate,
            100.0 * tuned.recall,
            tuned.cost_ratio
        );
    }
    Ok(())
}

fn sim_features(args: SimFeaturesArgs) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(path) => Model::load(path)?,
        None => Model::shipped()?,
    };
    let rows = stockgrid_sim::train::export_features(&args.dir, &model, &args.out)?;
    println!("{rows} queries' features written to {}", args.out.display());
    Ok(())
}

fn sim_evaluate(args: SimEvaluateArgs) -> anyhow::Result<()> {
    use stockgrid_sim::evaluate::{AnswersSpec, evaluate};
    let answers: Vec<AnswersSpec> = args.answers.iter().map(|a| AnswersSpec::parse(a)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("evaluating {} run(s)...", args.dir.len());
    let metrics = evaluate(&args.dir, &answers, threads)?;
    stockgrid_sim::report::write_report(&metrics, &args.report)?;
    for run in &metrics.runs {
        println!(
            "{} (seed {}), {} queries:",
            run.scenario, run.seed, run.queries
        );
        println!(
            "  {:<16} {:>22} {:>22} {:>22} {:>30}",
            "method",
            "item_page broken/recall",
            "pickup broken/recall",
            "delivery broken/recall",
            "pickup R@1% / B@95% / ECE"
        );
        for method in &run.methods {
            let cell = |surface: &str| {
                method.surfaces.get(surface).map_or("-".to_owned(), |r| {
                    format!(
                        "{:.2}% / {:.1}%",
                        100.0 * r.overall.broken_promise_rate,
                        100.0 * r.overall.recall
                    )
                })
            };
            let pickup = method.surfaces.get("pickup").map_or("-".to_owned(), |r| {
                format!(
                    "{:.1}% / {} / {}",
                    100.0 * r.recall_at_1pct_broken,
                    r.broken_at_95pct_recall
                        .map_or("-".to_owned(), |b| format!("{:.2}%", 100.0 * b)),
                    r.calibration
                        .as_ref()
                        .map_or("-".to_owned(), |c| format!("{:.4}", c.ece))
                )
            });
            println!(
                "  {:<16} {:>22} {:>22} {:>22} {:>30}",
                method.method,
                cell("item_page"),
                cell("pickup"),
                cell("delivery"),
                pickup
            );
        }
    }
    println!("report: {}", args.report.join("report.html").display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,stockgrid_api=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo(args).await,
            Command::Loadgen(args) => loadgen(args).await,
            Command::Serve(args) => serve(args).await,
            Command::Replay(args) => replay(args).await,
            Command::Inspect(args) => inspect(args).await,
            Command::Train(args) => train(args),
            Command::Audit(AuditCommand::Replay(args)) => match args.data_dir.clone() {
                Some(data_dir) => audit_replay_node(&args, &data_dir).await,
                None => audit_replay(args),
            },
            Command::Audit(AuditCommand::Show(args)) => audit_show(args).await,
            Command::Experiment(ExperimentCommand::Report(args)) => experiment_report(args).await,
            Command::Sim(SimCommand::Generate(args)) => sim_generate(args),
            Command::Sim(SimCommand::Evaluate(args)) => sim_evaluate(args),
            Command::Sim(SimCommand::Features(args)) => sim_features(args),
            Command::Sim(SimCommand::Drill(args)) => sim_drill(args).await,
        }
    })
}
