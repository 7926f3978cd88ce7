//! `stockgrid sim`: generate worlds, evaluate answers, export features, drill a node.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use stockgrid_inference::model::Model;

#[derive(Debug, clap::Args)]
pub(crate) struct SimFeaturesArgs {
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
pub(crate) enum SimCommand {
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
pub(crate) struct SimDrillArgs {
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
pub(crate) struct SimEvaluateArgs {
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
pub(crate) struct SimGenerateArgs {
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

pub(crate) fn sim_generate(args: SimGenerateArgs) -> anyhow::Result<()> {
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

pub(crate) async fn sim_drill(args: SimDrillArgs) -> anyhow::Result<()> {
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
        compare_ledger: false,
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

pub(crate) fn sim_features(args: SimFeaturesArgs) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(path) => Model::load(path)?,
        None => Model::shipped()?,
    };
    let rows = stockgrid_sim::train::export_features(&args.dir, &model, &args.out)?;
    println!("{rows} queries' features written to {}", args.out.display());
    Ok(())
}

pub(crate) fn sim_evaluate(args: SimEvaluateArgs) -> anyhow::Result<()> {
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

/// Runs a `sim` subcommand.
pub(crate) async fn run(command: SimCommand) -> anyhow::Result<()> {
    match command {
        SimCommand::Generate(args) => sim_generate(args),
        SimCommand::Evaluate(args) => sim_evaluate(args),
        SimCommand::Features(args) => sim_features(args),
        SimCommand::Drill(args) => sim_drill(args).await,
    }
}
