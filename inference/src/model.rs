//! The model: belief parameters, the learned scorer over the shared features, the staleness
//! policy and one threshold per surface, with their training metadata, in a versioned file.
//!
//! Files are MessagePack (rmp-serde, named fields) and refused on load when their format or
//! feature list is not this build's. A default model trained by `stockgrid train` ships with
//! the crate ([`Model::shipped`]).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2, ArrayView1, Axis};
use serde::{Deserialize, Serialize};

use crate::belief::BeliefParams;
use crate::drift::DriftBaseline;
use crate::features::{FEATURE_COUNT, FEATURE_NAMES, FeatureParams};
use crate::feeds::StalenessPolicy;
use crate::ranker::CandidateRanker;
use crate::stats::sigmoid;
use crate::trees::TreeEnsemble;

/// The file format this build reads and writes.
pub const MODEL_FORMAT: u32 = 1;
/// Largest model file accepted.
pub const MAX_MODEL_BYTES: u64 = 16 << 20;
/// The lowest promise threshold any surface may have: a broken promise costs more than a
/// refusal, so no surface promises what the model thinks is more likely absent than present.
/// Tuning respects it and a model file whose threshold is below it is refused.
pub const MIN_PROMISE_THRESHOLD: f64 = 0.5;

const SHIPPED: &[u8] = include_bytes!("../models/default.model");

/// What turns a feature vector into P(truth - reserved >= quantity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Scorer {
    /// Logistic regression on standardized features (every weight readable).
    Logistic(LogisticScorer),
    /// Small gradient-boosted trees (the default: interactions a line cannot draw).
    BoostedTrees(TreeEnsemble),
}

impl Scorer {
    /// P(truth - reserved >= quantity) for a feature vector.
    pub fn probability(&self, values: &[f64; FEATURE_COUNT]) -> f64 {
        match self {
            Scorer::Logistic(scorer) => scorer.probability(values),
            Scorer::BoostedTrees(trees) => trees.probability(values),
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Scorer::Logistic(scorer) => scorer.validate(),
            Scorer::BoostedTrees(trees) => trees.validate(FEATURE_COUNT),
        }
    }
}

/// A logistic scorer over standardized features: P(available) = sigmoid(w . (x - m) / s + b).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogisticScorer {
    /// Feature means (training set).
    pub means: Vec<f64>,
    /// Feature scales (training set standard deviations, 1 where constant).
    pub scales: Vec<f64>,
    /// Weights of the standardized features.
    pub weights: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
}

impl LogisticScorer {
    fn validate(&self) -> Result<(), String> {
        for (field, values) in [
            ("scorer.means", &self.means),
            ("scorer.scales", &self.scales),
            ("scorer.weights", &self.weights),
        ] {
            if values.len() != FEATURE_COUNT || values.iter().any(|v| !v.is_finite()) {
                return Err(format!("{field}: need {FEATURE_COUNT} finite numbers"));
            }
        }
        if self.scales.iter().any(|s| *s <= 0.0) || !self.intercept.is_finite() {
            return Err("scorer: scales must be positive and the intercept finite".to_owned());
        }
        Ok(())
    }

    /// P(truth - reserved >= quantity) for a feature vector.
    pub fn probability(&self, values: &[f64; FEATURE_COUNT]) -> f64 {
        let x = ArrayView1::from(&values[..]);
        let m = ArrayView1::from(&self.means[..]);
        let s = ArrayView1::from(&self.scales[..]);
        let w = ArrayView1::from(&self.weights[..]);
        let score = ndarray::Zip::from(&x)
            .and(&m)
            .and(&s)
            .and(&w)
            .fold(self.intercept, |sum, x, m, s, w| sum + (x - m) / s * w);
        sigmoid(score)
    }

    /// Fits by Newton's method (iteratively reweighted least squares) with an L2 penalty of
    /// `l2` on the standardized weights. `rows` x features, `labels` 0/1.
    pub fn fit(rows: &Array2<f64>, labels: &Array1<f64>, l2: f64) -> Result<Self, String> {
        let (n, d) = rows.dim();
        if n == 0 || d != FEATURE_COUNT || labels.len() != n {
            return Err(format!(
                "training set: {n} rows of {d} features and {} labels; need at least one row of {FEATURE_COUNT}",
                labels.len()
            ));
        }
        let means = rows.mean_axis(Axis(0)).ok_or("no rows")?;
        let scales = rows
            .std_axis(Axis(0), 0.0)
            .mapv(|s| if s > 1e-9 { s } else { 1.0 });
        let standardized = (rows - &means) / &scales;
        // Design matrix with an intercept column in front.
        let mut design = Array2::<f64>::ones((n, d + 1));
        design.slice_mut(ndarray::s![.., 1..]).assign(&standardized);
        let mut beta = Array1::<f64>::zeros(d + 1);
        let positive = labels.sum() / n as f64;
        beta[0] = crate::stats::logit(positive);
        for _ in 0..50 {
            let eta = design.dot(&beta);
            let p = eta.mapv(sigmoid);
            let w = p.mapv(|p| (p * (1.0 - p)).max(1e-9));
            let mut gradient = design.t().dot(&(labels - &p));
            let weighted = &design * &w.view().insert_axis(Axis(1));
            let mut hessian = design.t().dot(&weighted);
            for j in 1..=d {
                hessian[[j, j]] += l2;
                gradient[j] -= l2 * beta[j];
            }
            let mut step = solve_spd(&hessian, &gradient)?;
            // Damped Newton: halve the step until the penalized likelihood does not fall.
            let current = penalized_log_likelihood(&design, labels, &beta, l2);
            let mut accepted = false;
            for _ in 0..30 {
                let trial = &beta + &step;
                if penalized_log_likelihood(&design, labels, &trial, l2) >= current - 1e-12 {
                    beta = trial;
                    accepted = true;
                    break;
                }
                step *= 0.5;
            }
            if !accepted || step.iter().map(|s| s.abs()).fold(0.0, f64::max) < 1e-8 {
                break;
            }
        }
        Ok(Self {
            means: means.to_vec(),
            scales: scales.to_vec(),
            weights: beta.slice(ndarray::s![1..]).to_vec(),
            intercept: beta[0],
        })
    }
}

/// Sum of log P(label) minus the L2 penalty (the intercept is not penalized).
fn penalized_log_likelihood(
    design: &Array2<f64>,
    labels: &Array1<f64>,
    beta: &Array1<f64>,
    l2: f64,
) -> f64 {
    let eta = design.dot(beta);
    let likelihood: f64 = eta
        .iter()
        .zip(labels)
        .map(|(&eta, &label)| {
            // log sigmoid(eta) for label 1, log sigmoid(-eta) for label 0, computed stably.
            let signed = if label > 0.5 { eta } else { -eta };
            -(1.0 + (-signed.abs()).exp()).ln() + signed.min(0.0)
        })
        .sum();
    let penalty: f64 = beta.iter().skip(1).map(|b| b * b).sum::<f64>() * l2 / 2.0;
    likelihood - penalty
}

/// Solves `a x = b` for a symmetric positive definite `a` (Cholesky).
fn solve_spd(a: &Array2<f64>, b: &Array1<f64>) -> Result<Array1<f64>, String> {
    let n = b.len();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let diagonal = a[[i, i]] - sum;
                if diagonal <= 0.0 {
                    return Err(
                        "training set: the features are degenerate (Hessian not positive definite)"
                            .to_owned(),
                    );
                }
                l[[i, j]] = diagonal.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - sum) / l[[j, j]];
            }
        }
    }
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..n {
        let sum: f64 = (0..i).map(|k| l[[i, k]] * y[k]).sum();
        y[i] = (b[i] - sum) / l[[i, i]];
    }
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let sum: f64 = (i + 1..n).map(|k| l[[k, i]] * x[k]).sum();
        x[i] = (y[i] - sum) / l[[i, i]];
    }
    Ok(x)
}

/// How a model was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetadata {
    /// The command line that made it.
    pub command: String,
    /// Scenario and seed of every training run.
    pub training_runs: Vec<String>,
    /// Scenario and seed of every calibration run.
    pub calibration_runs: Vec<String>,
    /// Training rows.
    pub training_rows: usize,
    /// Calibration rows.
    pub calibration_rows: usize,
    /// Mean log loss on the training rows.
    pub training_log_loss: f64,
    /// Per surface: the broken-promise target, the rate and recall met on the calibration
    /// runs, and the equivalent cost ratio c_FP / c_FN.
    pub surfaces: BTreeMap<String, SurfaceCalibration>,
}

/// A surface's tuned threshold and what it achieved on the calibration runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SurfaceCalibration {
    /// Broken-promise target.
    pub target_broken_rate: f64,
    /// Threshold chosen.
    pub threshold: f64,
    /// Broken-promise rate at it.
    pub broken_rate: f64,
    /// Recall at it.
    pub recall: f64,
    /// Queries of the surface.
    pub queries: usize,
    /// c_FP / c_FN that makes this threshold the cost-optimal one: t / (1 - t).
    pub cost_ratio: f64,
}

/// A complete model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// File format ([`MODEL_FORMAT`]).
    pub format: u32,
    /// Its version: a name and a digest of its content.
    pub version: String,
    /// Feature names it was trained on.
    pub feature_names: Vec<String>,
    /// The belief's parameters.
    pub belief: BeliefParams,
    /// The scorer.
    pub scorer: Scorer,
    /// When a silent feed is stale.
    pub staleness: StalenessPolicy,
    /// Threshold per surface name (`item_page`, `pickup`, ...).
    pub thresholds: BTreeMap<String, f64>,
    /// How it was made.
    pub training: TrainingMetadata,
    /// Training distributions of the monitored features, for drift (PSI).
    #[serde(default)]
    pub drift: DriftBaseline,
    /// The candidate ranker (`None`: the fused feature is the belief's probability).
    #[serde(default)]
    pub ranker: Option<CandidateRanker>,
}

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing failed.
    #[error("model file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The content is not a model this build accepts.
    #[error("model file {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Model {
    /// A model before any training: default belief parameters, a scorer that passes the
    /// belief's own probability through, and no thresholds (so it promises nothing).
    pub fn prior() -> Self {
        let mut weights = vec![0.0; FEATURE_COUNT];
        weights[0] = 1.0;
        Self {
            format: MODEL_FORMAT,
            version: "prior".to_owned(),
            feature_names: FEATURE_NAMES
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            belief: BeliefParams::default(),
            scorer: Scorer::Logistic(LogisticScorer {
                means: vec![0.0; FEATURE_COUNT],
                scales: vec![1.0; FEATURE_COUNT],
                weights,
                intercept: 0.0,
            }),
            staleness: StalenessPolicy::default(),
            thresholds: BTreeMap::new(),
            training: TrainingMetadata::default(),
            drift: DriftBaseline::default(),
            ranker: None,
        }
    }

    /// What this model computes features with.
    pub fn feature_params(&self) -> FeatureParams<'_> {
        FeatureParams {
            belief: &self.belief,
            staleness: &self.staleness,
            ranker: self.ranker.as_ref(),
        }
    }

    /// The default model shipped with this build.
    pub fn shipped() -> Result<Self, ModelError> {
        Self::from_bytes(SHIPPED, "(shipped default model)")
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let name = path.display().to_string();
        let io = |source| ModelError::Io {
            path: name.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_MODEL_BYTES {
            return Err(ModelError::Invalid {
                path: name,
                reason: format!("{size} bytes; the limit is {MAX_MODEL_BYTES}"),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_bytes(&bytes, &name)
    }

    /// Decodes and validates a model.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::Invalid {
            path: name.to_owned(),
            reason,
        };
        let model: Model = rmp_serde::from_slice(bytes)
            .map_err(|e| invalid(format!("not a stockgrid model ({e})")))?;
        model.validate().map_err(invalid)?;
        Ok(model)
    }

    /// Checks what the decision path relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != MODEL_FORMAT {
            return Err(format!(
                "format: {} is not the format {MODEL_FORMAT} this build reads",
                self.format
            ));
        }
        if self.feature_names != FEATURE_NAMES {
            return Err(format!(
                "feature_names: trained on {:?}, this build computes {:?}",
                self.feature_names, FEATURE_NAMES
            ));
        }
        self.scorer.validate()?;
        if let Some(ranker) = &self.ranker {
            ranker.validate()?;
        }
        for (surface, threshold) in &self.thresholds {
            check_promise_threshold(*threshold)
                .map_err(|reason| format!("thresholds.{surface}: {reason}"))?;
        }
        Ok(())
    }

    /// Encodes the model.
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_else(|e| unreachable!("a model encodes: {e}"))
    }

    /// Writes the model atomically (a temporary file beside it, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        let temporary = path.with_extension("model.partial");
        std::fs::write(&temporary, self.to_bytes()).map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)
    }

    /// The threshold of a surface (`None`: the model has none for it).
    pub fn threshold(&self, surface: &str) -> Option<f64> {
        self.thresholds.get(surface).copied()
    }
}

/// `Ok` when `threshold` may be held against a promise probability: in
/// [[`MIN_PROMISE_THRESHOLD`], 1]; else why not.
pub fn check_promise_threshold(threshold: f64) -> Result<(), String> {
    if (MIN_PROMISE_THRESHOLD..=1.0).contains(&threshold) {
        Ok(())
    } else {
        Err(format!(
            "{threshold} is not in [{MIN_PROMISE_THRESHOLD}, 1] (no surface promises below the floor)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_fit_recovers_a_separating_direction() {
        let n = 400;
        let mut rows = Array2::<f64>::zeros((n, FEATURE_COUNT));
        let mut labels = Array1::<f64>::zeros(n);
        for i in 0..n {
            let x = (i as f64 / n as f64) * 4.0 - 2.0;
            rows[[i, 2]] = x;
            rows[[i, 5]] = ((i * 7919) % 13) as f64; // noise
            labels[i] = if (x + 0.3 * (((i * 31) % 7) as f64 - 3.0)) > 0.0 {
                1.0
            } else {
                0.0
            };
        }
        let scorer = LogisticScorer::fit(&rows, &labels, 1.0).expect("fits");
        assert!(scorer.weights[2] > 1.0, "{scorer:?}");
        let mut high = [0.0; FEATURE_COUNT];
        high[2] = 2.0;
        let mut low = high;
        low[2] = -2.0;
        assert!(scorer.probability(&high) > 0.9 && scorer.probability(&low) < 0.1);
    }

    #[test]
    fn the_shipped_model_loads_and_bad_files_are_refused_with_the_reason() {
        let model = Model::shipped().expect("the shipped model is valid");
        assert!(model.threshold("pickup").is_some());
        let mut wrong = model.clone();
        wrong.feature_names[0] = "something_else".to_owned();
        let error = Model::from_bytes(&wrong.to_bytes(), "x").expect_err("refused");
        assert!(error.to_string().contains("feature_names"), "{error}");
        let mut lax = model.clone();
        lax.thresholds.insert("delivery".to_owned(), 0.19);
        let error = Model::from_bytes(&lax.to_bytes(), "x").expect_err("below the floor");
        assert!(error.to_string().contains("thresholds.delivery"), "{error}");
        for threshold in model.thresholds.values() {
            assert!(*threshold >= MIN_PROMISE_THRESHOLD, "{threshold}");
        }
        let error = Model::from_bytes(b"not msgpack", "x").expect_err("refused");
        assert!(
            error.to_string().contains("not a stockgrid model"),
            "{error}"
        );
    }
}
