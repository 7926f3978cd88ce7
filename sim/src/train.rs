//! `stockgrid train`: a model from simulator runs.
//!
//! 1. Every run folder is replayed in memory through the entity code
//!    ([`stockgrid_actors::offline`]); at each query the inputs of the one feature definition
//!    are kept (belief statistics, ledger facts, location facts, the question) with the
//!    truth's label (true on-hand >= quantity). Point-in-time by construction.
//! 2. Runs on training seeds fit the model: first the belief's parameters (coordinate search
//!    on the log loss of the belief's own probability), then the logistic scorer on the
//!    features computed with them.
//! 3. Runs on calibration seeds tune one threshold per surface: the lowest probability at
//!    which the surface's broken-promise rate still meets its target, i.e. the most recall
//!    the target allows. The equivalent cost ratio c_FP / c_FN = t / (1 - t) is reported.
//! 4. The training rows are exported (CSV) for inspection; the model is written with its
//!    metadata and a version derived from its content.
//!
//! Runs on evaluation seeds are refused: nothing is fitted on them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ndarray::{Array1, Array2};
use stockgrid_actors::decision::ledger_facts;
use stockgrid_actors::domain::Surface;
use stockgrid_actors::ledger::LedgerConfig;
use stockgrid_actors::offline::{InMemoryLedger, replay_in_memory};
use stockgrid_actors::replay::{read_events, read_locations, read_queries};
use stockgrid_inference::belief::{BeliefParams, BeliefStats, LedgerFacts};
use stockgrid_inference::drift::DriftBaseline;
use stockgrid_inference::features::{FEATURE_NAMES, FeatureParams, Question, features};
use stockgrid_inference::feeds::StalenessPolicy;
use stockgrid_inference::model::{
    LogisticScorer, MIN_PROMISE_THRESHOLD, MODEL_FORMAT, Model, Scorer, SurfaceCalibration,
    TrainingMetadata,
};
use stockgrid_inference::ranker::{CANDIDATE_NAMES, CandidateRanker, RANKER_INPUTS};
use stockgrid_inference::shared::SharedFacts;
use stockgrid_inference::trees::{BoostingOptions, TreeEnsemble};

use crate::evaluate::{read_truth, sweep};
use crate::files::Manifest;
use crate::seeds;

/// Rows used to fit the belief's parameters (an even subsample of the training rows).
const BELIEF_FIT_ROWS: usize = 200_000;
/// Rows used to fit the scorer (an even subsample of the training rows).
const SCORER_FIT_ROWS: usize = 600_000;
/// Rows the candidate ranker is fitted on (a stride sample of the training rows).
const RANKER_FIT_ROWS: usize = 100_000;
/// Gradient steps of the ranker's fit.
const RANKER_ITERATIONS: usize = 150;
/// L2 penalty of the ranker's standardized weights.
const RANKER_L2: f64 = 1e-4;
/// L2 penalty on the standardized scorer weights.
const SCORER_L2: f64 = 1.0;

/// What to train on and where the model goes.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Simulator run folders (training and calibration seeds).
    pub dirs: Vec<PathBuf>,
    /// The model file to write.
    pub out: PathBuf,
    /// Broken-promise target per surface.
    pub targets: BTreeMap<Surface, f64>,
    /// Where to export the training rows (`.parquet` or `.csv`), if anywhere.
    pub export: Option<PathBuf>,
    /// The command line, recorded in the model.
    pub command: String,
    /// Which scorer to fit.
    pub scorer: ScorerKind,
}

/// The scorer `stockgrid train` fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScorerKind {
    /// Gradient-boosted trees (the default).
    BoostedTrees,
    /// Logistic regression.
    Logistic,
}

/// The broken-promise targets of the issue: pickup 1%, delivery 2%, the rest 3%.
pub fn default_targets() -> BTreeMap<Surface, f64> {
    Surface::ALL
        .iter()
        .map(|&surface| {
            let target = match surface {
                Surface::Pickup => 0.01,
                Surface::Delivery => 0.02,
                _ => 0.03,
            };
            (surface, target)
        })
        .collect()
}

/// One query's inputs to the feature definition, with its label.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// The pair's belief statistics at the query.
    pub stats: BeliefStats,
    /// The ledger's facts at the query (`None`: pair never seen).
    pub facts: Option<LedgerFacts>,
    /// The facts it shares with its location and SKU.
    pub shared: SharedFacts,
    /// The question.
    pub question: Question,
    /// The surface asking.
    pub surface: Surface,
    /// True on-hand >= quantity.
    pub label: bool,
    /// True on-hand (the ranker's target: which candidate was nearest).
    pub truth: i64,
}

/// A run's cases.
#[derive(Debug)]
pub struct RunCases {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its folder.
    pub dir: PathBuf,
    /// One case per query, in query order.
    pub cases: Vec<Case>,
}

/// Replays a run folder in memory and keeps every query's feature inputs and label.
pub fn run_cases(dir: &Path) -> anyhow::Result<RunCases> {
    let manifest_path = dir.join("manifest.json");
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{}: not a simulator manifest", manifest_path.display()))?;
    let events = read_events(&dir.join("events.jsonl"))?;
    let queries = read_queries(&dir.join("queries.jsonl"))?;
    let locations_path = dir.join("locations.jsonl");
    let locations = if locations_path.exists() {
        read_locations(&locations_path)?
    } else {
        Vec::new()
    };
    let ids: Vec<String> = queries.iter().map(|q| q.query_id.clone()).collect();
    let truth = read_truth(&dir.join("truth.jsonl"), &ids)?;
    let mut ledger = InMemoryLedger::new(LedgerConfig::default(), &locations);
    let mut cases: Vec<Option<Case>> = vec![None; queries.len()];
    replay_in_memory(
        &mut ledger,
        &events,
        &queries,
        |_, _, _| {},
        |index, _, ledger| {
            let query = &queries[index];
            let state = ledger.state(query.pair);
            cases[index] = Some(Case {
                stats: state.map(|s| s.belief).unwrap_or_default(),
                facts: state.map(ledger_facts),
                shared: ledger.shared().shared(query.pair),
                question: Question {
                    quantity: query.quantity,
                    now_ms: query.time.0,
                },
                surface: query.surface,
                label: truth[index] >= query.quantity,
                truth: truth[index],
            });
        },
    )
    .map_err(|e| anyhow::anyhow!("{}: replay: {e}", dir.display()))?;
    Ok(RunCases {
        manifest,
        dir: dir.to_path_buf(),
        cases: cases.into_iter().flatten().collect(),
    })
}

fn belief_probability(case: &Case, params: &BeliefParams) -> Option<f64> {
    let facts = case.facts.as_ref()?;
    let posterior = stockgrid_inference::belief::posterior(
        &case.stats,
        facts,
        &case.shared,
        params,
        case.question.now_ms,
    );
    Some(posterior.probability_at_least(case.question.quantity + facts.reserved.max(0)))
}

fn log_loss(cases: &[&Case], params: &BeliefParams) -> f64 {
    let mut total = 0.0;
    let mut count = 0usize;
    for case in cases {
        if let Some(p) = belief_probability(case, params) {
            let p = p.clamp(1e-4, 1.0 - 1e-4);
            total -= if case.label { p.ln() } else { (1.0 - p).ln() };
            count += 1;
        }
    }
    total / count.max(1) as f64
}

type ParamField = (&'static str, fn(&mut BeliefParams) -> &mut f64);

const FITTED_PARAMS: [ParamField; 13] = [
    ("phantom_per_day", |p| &mut p.phantom_per_day),
    ("phantom_base", |p| &mut p.phantom_base),
    ("shrink_per_unit_sold", |p| &mut p.shrink_per_unit_sold),
    ("shrink_per_day", |p| &mut p.shrink_per_day),
    ("count_sd", |p| &mut p.count_sd),
    ("snapshot_sd", |p| &mut p.snapshot_sd),
    ("unanchored_sd", |p| &mut p.unanchored_sd),
    ("rfid_under_read", |p| &mut p.rfid_under_read),
    ("drift_variance_per_day", |p| &mut p.drift_variance_per_day),
    ("rate_prior_hours", |p| &mut p.rate_prior_hours),
    ("sku_pooling_sales", |p| &mut p.sku_pooling_sales),
    ("shape_prior_sales", |p| &mut p.shape_prior_sales),
    ("loss_pooling_units", |p| &mut p.loss_pooling_units),
];

/// Fits the belief's parameters by coordinate search on the log loss: each parameter in turn
/// is scaled by factors around its value, keeping the best, for a few rounds.
pub fn fit_belief(cases: &[&Case], progress: &mut impl FnMut(String)) -> BeliefParams {
    let mut params = BeliefParams::default();
    let mut best = log_loss(cases, &params);
    progress(format!("belief: start log loss {best:.5}"));
    for round in 0..3 {
        for (name, field) in FITTED_PARAMS {
            for factor in [0.25, 0.5, 0.8, 1.25, 2.0, 4.0] {
                let mut trial = params;
                *field(&mut trial) *= factor;
                let loss = log_loss(cases, &trial);
                if loss < best - 1e-7 {
                    best = loss;
                    params = trial;
                }
            }
            progress(format!(
                "belief: round {} {name} = {:.5} (log loss {best:.5})",
                round + 1,
                *field(&mut params)
            ));
        }
    }
    params
}

/// The features of a case under `params` (`None` for a pair never seen: rules answer those).
fn case_features(
    case: &Case,
    settings: &FeatureParams<'_>,
) -> Option<stockgrid_inference::features::FeatureVector> {
    let facts = case.facts.as_ref()?;
    Some(features(
        &case.stats,
        facts,
        &case.shared,
        settings,
        case.question,
    ))
}

/// The threshold that maximizes promises kept while the broken-promise rate stays at or under
/// `target`, never below [`MIN_PROMISE_THRESHOLD`]; with its rate and recall. `scored`:
/// (probability, truly available), a row the ledger cannot cover scored 0.
pub fn tune_threshold(scored: &[(f64, bool)], target: f64) -> SurfaceCalibration {
    let mut best = SurfaceCalibration {
        target_broken_rate: target,
        threshold: 1.0, // promise nothing unless some cut meets the target
        broken_rate: 0.0,
        recall: 0.0,
        queries: scored.len(),
        cost_ratio: f64::INFINITY,
    };
    for (threshold, rate, recall) in sweep(scored) {
        if threshold >= MIN_PROMISE_THRESHOLD && rate <= target && recall > best.recall {
            best.threshold = threshold;
            best.broken_rate = rate;
            best.recall = recall;
            best.cost_ratio = threshold / (1.0 - threshold).max(1e-12);
        }
    }
    best
}

/// What training did.
#[derive(Debug)]
pub struct TrainReport {
    /// The model written.
    pub model: Model,
}

/// Trains a model from run folders and writes it.
pub fn run_train(
    options: &TrainOptions,
    mut progress: impl FnMut(String),
) -> anyhow::Result<TrainReport> {
    if options.dirs.is_empty() {
        bail!(
            "--dir: give at least one simulator run on a training seed and one on a calibration seed"
        );
    }
    let mut training = Vec::new();
    let mut calibration = Vec::new();
    for dir in &options.dirs {
        let run = run_cases(dir)?;
        let label = format!("{}/{}", run.manifest.scenario, run.manifest.seed);
        match seeds::purpose(run.manifest.seed) {
            "training" => training.push(run),
            "calibration" => calibration.push(run),
            purpose => bail!(
                "--dir {}: seed {} is a{} {purpose} seed; train uses training seeds {:?} and calibration seeds {:?} only",
                dir.display(),
                run.manifest.seed,
                if purpose.starts_with(['a', 'e', 'u']) {
                    "n"
                } else {
                    ""
                },
                seeds::TRAINING,
                seeds::CALIBRATION
            ),
        }
        progress(format!("read {label}"));
    }
    if training.is_empty() || calibration.is_empty() {
        bail!(
            "--dir: need runs on both training seeds {:?} and calibration seeds {:?} (got {} and {})",
            seeds::TRAINING,
            seeds::CALIBRATION,
            training.len(),
            calibration.len()
        );
    }
    let training_cases: Vec<&Case> = training.iter().flat_map(|run| &run.cases).collect();
    let calibration_cases: Vec<&Case> = calibration.iter().flat_map(|run| &run.cases).collect();

    let stride = training_cases.len().div_ceil(BELIEF_FIT_ROWS).max(1);
    let belief_sample: Vec<&Case> = training_cases.iter().step_by(stride).copied().collect();
    let params = fit_belief(&belief_sample, &mut progress);
    let staleness = StalenessPolicy::default();

    // The ranker learns from the features without it, on a sample of the training rows.
    let without_ranker = FeatureParams {
        belief: &params,
        staleness: &staleness,
        ranker: None,
    };
    let stride = training_cases.len().div_ceil(RANKER_FIT_ROWS).max(1);
    let ranker_rows: Vec<_> = training_cases
        .iter()
        .step_by(stride)
        .filter_map(|case| case_features(case, &without_ranker).map(|f| (f, case.truth)))
        .collect();
    progress(format!("ranker: fitting on {} rows", ranker_rows.len()));
    let ranker = CandidateRanker::fit(
        &ranker_rows
            .iter()
            .map(|(f, _)| f.values[..RANKER_INPUTS].to_vec())
            .collect::<Vec<_>>(),
        &ranker_rows
            .iter()
            .map(|(f, _)| f.candidates)
            .collect::<Vec<_>>(),
        &ranker_rows
            .iter()
            .map(|(_, truth)| *truth as f64)
            .collect::<Vec<_>>(),
        RANKER_L2,
        RANKER_ITERATIONS,
    )
    .map_err(anyhow::Error::msg)?;
    progress(format!(
        "ranker: spreads {:?} (units, {})",
        ranker
            .spreads
            .iter()
            .map(|s| (s * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        CANDIDATE_NAMES.join(", ")
    ));
    let settings = FeatureParams {
        belief: &params,
        staleness: &staleness,
        ranker: Some(&ranker),
    };

    let stride = training_cases.len().div_ceil(SCORER_FIT_ROWS).max(1);
    let rows: Vec<([f64; FEATURE_NAMES.len()], bool)> = training_cases
        .iter()
        .step_by(stride)
        .filter_map(|case| case_features(case, &settings).map(|f| (f.values, case.label)))
        .collect();
    let mut design = Array2::<f64>::zeros((rows.len(), FEATURE_NAMES.len()));
    let mut labels = Array1::<f64>::zeros(rows.len());
    for (index, (values, label)) in rows.iter().enumerate() {
        design
            .row_mut(index)
            .assign(&ndarray::ArrayView1::from(&values[..]));
        labels[index] = f64::from(u8::from(*label));
    }
    progress(format!("scorer: fitting on {} rows", rows.len()));
    let scorer = match options.scorer {
        ScorerKind::Logistic => Scorer::Logistic(
            LogisticScorer::fit(&design, &labels, SCORER_L2).map_err(anyhow::Error::msg)?,
        ),
        ScorerKind::BoostedTrees => {
            let flags: Vec<bool> = rows.iter().map(|(_, label)| *label).collect();
            Scorer::BoostedTrees(
                TreeEnsemble::fit(&design, &flags, &BoostingOptions::default())
                    .map_err(anyhow::Error::msg)?,
            )
        }
    };
    let training_log_loss = rows
        .iter()
        .map(|(values, label)| {
            let p = scorer.probability(values).clamp(1e-6, 1.0 - 1e-6);
            if *label { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / rows.len().max(1) as f64;
    progress(format!("scorer: training log loss {training_log_loss:.5}"));

    let mut model = Model {
        format: MODEL_FORMAT,
        version: String::new(),
        feature_names: FEATURE_NAMES
            .iter()
            .map(|name| (*name).to_owned())
            .collect(),
        belief: params,
        scorer,
        staleness,
        thresholds: BTreeMap::new(),
        training: TrainingMetadata {
            command: options.command.clone(),
            training_runs: run_labels(&training),
            calibration_runs: run_labels(&calibration),
            training_rows: rows.len(),
            calibration_rows: calibration_cases.len(),
            training_log_loss,
            surfaces: BTreeMap::new(),
        },
        drift: DriftBaseline::from_rows(
            &rows.iter().map(|(values, _)| *values).collect::<Vec<_>>(),
        ),
        ranker: Some(ranker.clone()),
    };
    // Thresholds on the calibration runs, scored as the decision scores them (a stale feed
    // is never promised; a pair never seen neither, nor a quantity the ledger's spare units
    // do not cover: the model may refuse more than the ledger, never promise more).
    let mut by_surface: BTreeMap<Surface, Vec<(f64, bool)>> = BTreeMap::new();
    for case in &calibration_cases {
        let ledger_covers = case.facts.is_some_and(|facts| {
            facts.record.saturating_sub(facts.reserved) >= case.question.quantity
        });
        let score = case_features(case, &settings)
            .filter(|f| !f.stale_feed && ledger_covers)
            .map_or(0.0, |f| model.scorer.probability(&f.values));
        by_surface
            .entry(case.surface)
            .or_default()
            .push((score, case.label));
    }
    let everything: Vec<(f64, bool)> = by_surface.values().flatten().copied().collect();
    for (&surface, &target) in &options.targets {
        let scored = by_surface.get(&surface).unwrap_or(&everything);
        let tuned = tune_threshold(scored, target);
        progress(format!(
            "threshold {surface}: {:.4} for broken {:.4} (target {target}) at recall {:.4} over {} queries; c_FP/c_FN = {:.1}",
            tuned.threshold, tuned.broken_rate, tuned.recall, tuned.queries, tuned.cost_ratio
        ));
        model
            .thresholds
            .insert(surface.as_str().to_owned(), tuned.threshold);
        model
            .training
            .surfaces
            .insert(surface.as_str().to_owned(), tuned);
    }
    model.version = format!(
        "sg{MODEL_FORMAT}-{:016x}",
        xxhash_rust::xxh3::xxh3_64(&model.to_bytes())
    );
    if let Some(path) = &options.export {
        export_rows(path, &training, &settings)?;
        progress(format!("training rows exported to {}", path.display()));
    }
    model.save(&options.out)?;
    Ok(TrainReport { model })
}

fn run_labels(runs: &[RunCases]) -> Vec<String> {
    runs.iter()
        .map(|run| format!("{} seed {}", run.manifest.scenario, run.manifest.seed))
        .collect()
}

/// Replays run folders and writes their feature rows (CSV) under a model's belief parameters:
/// `stockgrid sim features`, for offline analysis and the comparison classifiers.
pub fn export_features(dirs: &[PathBuf], model: &Model, path: &Path) -> anyhow::Result<usize> {
    let runs = dirs
        .iter()
        .map(|dir| run_cases(dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    export_rows(path, &runs, &model.feature_params())?;
    Ok(runs.iter().map(|run| run.cases.len()).sum())
}

/// Writes every case as a row - run, surface, quantity, label, the features and the belief's
/// own probability (pairs never seen have no features and no row) - as Parquet (a `.parquet`
/// path, for pandas or polars) or CSV (a `.csv` path).
pub fn export_rows(
    path: &Path,
    runs: &[RunCases],
    settings: &FeatureParams<'_>,
) -> anyhow::Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => export_parquet(path, runs, settings),
        Some("csv") => export_csv(path, runs, settings),
        _ => bail!(
            "export {}: the file name must end in .parquet or .csv",
            path.display()
        ),
    }
}

fn export_parquet(
    path: &Path,
    runs: &[RunCases],
    settings: &FeatureParams<'_>,
) -> anyhow::Result<()> {
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let mut schema = String::from(
        "message training_rows { REQUIRED BYTE_ARRAY scenario (UTF8); REQUIRED INT64 seed; \
         REQUIRED BYTE_ARRAY surface (UTF8); REQUIRED INT64 quantity; REQUIRED BOOLEAN label; ",
    );
    for name in FEATURE_NAMES {
        schema.push_str(&format!("REQUIRED DOUBLE {name}; "));
    }
    schema.push_str("REQUIRED DOUBLE belief_probability; }");
    let schema = std::sync::Arc::new(parse_message_type(&schema)?);
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary = tempfile::NamedTempFile::new_in(directory)
        .with_context(|| format!("create a file beside {}", path.display()))?;
    let mut writer = SerializedFileWriter::new(
        temporary.reopen()?,
        schema,
        std::sync::Arc::new(WriterProperties::builder().build()),
    )?;
    for run in runs {
        let rows: Vec<(&Case, stockgrid_inference::features::FeatureVector)> = run
            .cases
            .iter()
            .filter_map(|case| case_features(case, settings).map(|f| (case, f)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let text = |values: Vec<&str>| values.into_iter().map(ByteArray::from).collect::<Vec<_>>();
        let mut group = writer.next_row_group()?;
        let mut index = 0usize;
        while let Some(mut column) = group.next_column()? {
            match index {
                0 => column.typed::<ByteArrayType>().write_batch(
                    &text(vec![run.manifest.scenario.as_str(); rows.len()]),
                    None,
                    None,
                )?,
                1 => column.typed::<Int64Type>().write_batch(
                    &vec![i64::try_from(run.manifest.seed).unwrap_or(i64::MAX); rows.len()],
                    None,
                    None,
                )?,
                2 => column.typed::<ByteArrayType>().write_batch(
                    &text(rows.iter().map(|(case, _)| case.surface.as_str()).collect()),
                    None,
                    None,
                )?,
                3 => column.typed::<Int64Type>().write_batch(
                    &rows
                        .iter()
                        .map(|(case, _)| case.question.quantity)
                        .collect::<Vec<_>>(),
                    None,
                    None,
                )?,
                4 => column.typed::<BoolType>().write_batch(
                    &rows.iter().map(|(case, _)| case.label).collect::<Vec<_>>(),
                    None,
                    None,
                )?,
                feature if feature < 5 + FEATURE_NAMES.len() => {
                    column.typed::<DoubleType>().write_batch(
                        &rows
                            .iter()
                            .map(|(_, f)| f.values[feature - 5])
                            .collect::<Vec<_>>(),
                        None,
                        None,
                    )?
                }
                _ => column.typed::<DoubleType>().write_batch(
                    &rows
                        .iter()
                        .map(|(_, f)| f.belief_probability)
                        .collect::<Vec<_>>(),
                    None,
                    None,
                )?,
            };
            column.close()?;
            index += 1;
        }
        group.close()?;
    }
    writer.close()?;
    temporary
        .persist(path)
        .map_err(|e| anyhow::anyhow!("move into place at {}: {}", path.display(), e.error))?;
    Ok(())
}

fn export_csv(path: &Path, runs: &[RunCases], settings: &FeatureParams<'_>) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let write = |out: &mut std::io::BufWriter<std::fs::File>, text: &str| {
        out.write_all(text.as_bytes())
            .with_context(|| format!("write {}", path.display()))
    };
    write(
        &mut out,
        &format!(
            "scenario,seed,surface,quantity,label,{},belief_probability\n",
            FEATURE_NAMES.join(",")
        ),
    )?;
    for run in runs {
        for case in &run.cases {
            let Some(vector) = case_features(case, settings) else {
                continue;
            };
            let mut line = format!(
                "{},{},{},{},{}",
                run.manifest.scenario,
                run.manifest.seed,
                case.surface,
                case.question.quantity,
                u8::from(case.label)
            );
            for value in vector.values {
                line.push_str(&format!(",{value}"));
            }
            line.push_str(&format!(",{}\n", vector.belief_probability));
            write(&mut out, &line)?;
        }
    }
    out.flush()
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_keeps_the_most_recall_the_target_allows() {
        // 100 answers: probability 0.5 + i/200, truly available unless i is 10, 20, 30, 40 or
        // 95.
        let upper: Vec<(f64, bool)> = (0..100)
            .map(|i| {
                (
                    0.5 + f64::from(i) / 200.0,
                    ![10, 20, 30, 40, 95].contains(&i),
                )
            })
            .collect();
        // Promising i >= 41 breaks 1 of 59 (1.7%); i >= 31 breaks 2 of 69 (2.9%).
        let tuned = tune_threshold(&upper, 0.02);
        assert_eq!(tuned.threshold, 0.5 + 41.0 / 200.0);
        assert!((tuned.broken_rate - 1.0 / 59.0).abs() < 1e-12);
        assert!((tuned.recall - 58.0 / 95.0).abs() < 1e-12);
        // The same answers at probability i/100: every cut meeting 2% lies below the floor
        // but the floor itself (i >= 50 breaks 1 of 50, 2.0%).
        let scored: Vec<(f64, bool)> = (0..100)
            .map(|i| (f64::from(i) / 100.0, ![10, 20, 30, 40, 95].contains(&i)))
            .collect();
        let tuned = tune_threshold(&scored, 0.02);
        assert_eq!(tuned.threshold, 0.5);
        // No cut meets an impossible target: nothing is promised.
        let tuned = tune_threshold(&[(0.9, false), (0.8, true)], 0.0);
        assert_eq!((tuned.threshold, tuned.recall), (1.0, 0.0));
        // A target met only below the floor promises from the floor up.
        let tuned = tune_threshold(&scored, 0.05);
        assert_eq!(tuned.threshold, 0.5);
        assert!((tuned.broken_rate - 1.0 / 50.0).abs() < 1e-12);
    }
}
