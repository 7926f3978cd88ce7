//! `stockgrid train`: a model from simulator runs.

use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct TrainArgs {
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
pub(crate) enum TrainScorer {
    /// Gradient-boosted trees (150 trees of depth 4).
    Trees,
    /// Logistic regression on standardized features.
    Logistic,
}

pub(crate) fn recorded_command() -> String {
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

pub(crate) fn train(args: TrainArgs) -> anyhow::Result<()> {
    use stockgrid_sim::train::{TrainOptions, default_targets, run_train};
    let mut targets = default_targets();
    for item in &args.targets {
        let (surface, rate) = super::surface_and_value("--target", item, "RATE")?;
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
