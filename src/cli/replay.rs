//! `stockgrid replay`: replay files through the engine (in memory or durable) into answers.

use super::parse_surface_safety_stock;
use anyhow::{Context, bail};
use clap::ValueEnum;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockgrid_actors::EngineConfig;
use stockgrid_actors::decision::DecisionMode;
use stockgrid_actors::replay::{ReplayOptions, ReplayProgress, run_replay};
use stockgrid_inference::model::Model;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Mode {
    /// The deterministic ledger rule.
    Rules,
    /// The stock belief and the learned scorer (the model of --model, or the shipped one).
    Ml,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum ReplayEngine {
    /// The pure entity code in memory: the same ledger and belief, no store, no actors.
    Memory,
    /// Shard actors over the embedded store, as a node runs them.
    Durable,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
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
    /// With --engine durable: keep the engine's store here: a directory, a
    /// postgres://USER@HOST:PORT/DATABASE URL (password from PGPASSWORD) or fdb:CLUSTER-FILE
    /// (default: a temporary directory, removed afterwards). --data-dir is the same.
    #[arg(long, visible_alias = "data-dir", value_name = "DIR|URL")]
    store: Option<stockgrid_storage::StoreLocation>,
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

pub(crate) async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if args.lateness_bound_hours <= 0 {
        bail!(
            "--lateness-bound-hours must be positive, got {}",
            args.lateness_bound_hours
        );
    }
    if args.store.is_some() && matches!(args.engine, ReplayEngine::Memory) {
        bail!("--store (--data-dir) keeps the durable engine's store; add --engine durable");
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
        store: args.store,
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
