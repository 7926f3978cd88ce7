//! `stockgrid demo`: the simulator's baseline world played through a real node, by the same
//! driver as the drills ([`crate::drill`]).
//!
//! The world has run for its burn-in months before the first recorded day (records have
//! drifted from the truth as they do in a running business: shrink, phantom losses,
//! mis-scans, noisy counts), so it looks like the worlds the shipped model was trained on.
//! The node (`stockgrid serve`, this same binary, on a temporary store with an accelerated
//! clock) is given the world's locations, then every event as it arrives (late, duplicated,
//! out of order) and every customer question at its time. Each question is also put to the
//! ledger, so the summary shows where the belief and the ledger disagree, why, and which of
//! them the truth sided with. The checks are what the run can know for sure; the command
//! fails if one fails.

use std::path::PathBuf;

use crate::drill::{DrillOptions, DrillReport, run_drill};
use crate::files::GenerateOptions;

/// What the demo plays.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Recorded days played (the first two only warm up: no questions are asked then).
    pub days: u32,
    /// Seed of the world.
    pub seed: u64,
    /// Simulated seconds per wall-clock second.
    pub speed: f64,
    /// Overrides the world's SKU count (fewer for a quicker run).
    pub skus: Option<u32>,
    /// Real daily unit sales in the M5 layout: when given, they drive the world's demand.
    pub traces: Option<PathBuf>,
    /// The `stockgrid` binary to run as the node.
    pub stockgrid: PathBuf,
}

/// A line of the summary: what was checked and whether it held.
#[derive(Clone, Debug)]
pub struct Check {
    /// What it says.
    pub description: String,
    /// Whether it held.
    pub passed: bool,
}

/// The outcome of a demo run.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    /// Human-readable lines, in order.
    pub lines: Vec<String>,
    /// The checks.
    pub checks: Vec<Check>,
}

impl DemoSummary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// Share of answers that must come from the model for "the belief stays live" to hold.
const MIN_ML_SHARE: f64 = 0.9;

/// Runs the demo; `progress` receives a line now and then.
pub async fn run_demo(
    options: &DemoOptions,
    progress: impl FnMut(&str),
) -> anyhow::Result<DemoSummary> {
    if options.days < 3 {
        anyhow::bail!(
            "--days must be at least 3 (the first two recorded days only warm up), got {}",
            options.days
        );
    }
    let scratch = tempfile::tempdir()?;
    let drill = DrillOptions {
        generate: GenerateOptions {
            scenario: "baseline".to_owned(),
            seed: options.seed,
            out: scratch.path().join("unused"),
            traces: options.traces.clone(),
            skus: options.skus,
            threads: 0,
        },
        days: Some(options.days),
        speed: options.speed,
        stockgrid: options.stockgrid.clone(),
        compare_ledger: true,
    };
    let report = run_drill(&drill, progress).await?;
    Ok(summarize(&report))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The summary of a played run.
fn summarize(report: &DrillReport) -> DemoSummary {
    let mut summary = DemoSummary::default();
    let sum = |f: fn(&crate::drill::Bucket) -> u64| -> u64 { report.buckets.iter().map(f).sum() };
    let (events, queries, errors) = (sum(|b| b.events), sum(|b| b.queries), sum(|b| b.errors));
    let (health_checks, serving) = (sum(|b| b.health_checks), sum(|b| b.serving));
    let decisions = &report.decisions;
    let ml = decisions.by_mode.get("ml").copied().unwrap_or(0);
    let answered: u64 = decisions.by_mode.values().sum();
    let lines = &mut summary.lines;
    lines.push(format!(
        "played the {} world (seed {}) from {}: {} events and {} questions through a node in {:.0} s ({:.0} events/s, {:.0} lookups/s)",
        report.scenario,
        report.seed,
        report.start,
        events,
        queries,
        report.wall_seconds,
        events as f64 / report.wall_seconds.max(1e-9),
        queries as f64 / report.wall_seconds.max(1e-9),
    ));
    let policy = report.policy.clone().unwrap_or_default();
    lines.push(format!(
        "decisions: ml (model {}) answered {ml} of {answered} ({:.1}%); regions answering by rules: {}",
        if policy.model_version.is_empty() {
            "none"
        } else {
            &policy.model_version
        },
        percent(ml, answered),
        if policy.rules_regions.is_empty() {
            "none".to_owned()
        } else {
            policy.rules_regions.join(", ")
        },
    ));
    let reasons: Vec<String> = decisions
        .by_reason
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    lines.push(format!("reasons: {}", reasons.join(", ")));
    lines.push(format!(
        "promises: the node made {} and broke {} ({:.1}%); the ledger alone would have made {} and broken {} ({:.1}%)",
        decisions.promised,
        decisions.broken,
        percent(decisions.broken, decisions.promised),
        decisions.ledger_promised,
        decisions.ledger_broken,
        percent(decisions.ledger_broken, decisions.ledger_promised),
    ));
    lines.push(format!(
        "belief and ledger disagree on {} answers; the truth sided with the belief in {} ({:.0}%). The first:",
        decisions.disagreements,
        decisions.node_right,
        percent(decisions.node_right, decisions.disagreements),
    ));
    for d in &decisions.examples {
        lines.push(format!(
            "  {} sku {} at {} x{} ({}): ledger has {} spare, node says {} (p={:.2}, {}); truly {} on hand",
            d.time,
            d.sku,
            d.location,
            d.qty,
            d.surface,
            d.ledger_spare,
            if d.available { "yes" } else { "no" },
            d.probability,
            d.reason,
            d.true_on_hand,
        ));
    }
    let mut check = |description: String, passed: bool| {
        summary.checks.push(Check {
            description,
            passed,
        })
    };
    check(
        format!("every event and question was answered ({errors} calls failed)"),
        errors == 0 && events > 0 && queries > 0,
    );
    check(
        format!("the node was SERVING at every health check ({serving} of {health_checks})"),
        serving == health_checks && health_checks > 0,
    );
    check(
        format!(
            "the belief stayed live: at least {:.0}% of answers from the model, no region fell back to rules on drift",
            MIN_ML_SHARE * 100.0
        ),
        !policy.model_version.is_empty()
            && policy.drift_fallbacks.is_empty()
            && percent(ml, answered) >= MIN_ML_SHARE * 100.0,
    );
    check(
        "every question was also put to the ledger".to_owned(),
        decisions.compared == queries,
    );
    check(
        format!(
            "the node never promised what the ledger could not cover ({} such promises)",
            decisions.beyond_ledger
        ),
        decisions.beyond_ledger == 0,
    );
    summary
}
