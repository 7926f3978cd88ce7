//! Feature drift: the population stability index (PSI) of the main features of live
//! decisions against the training rows a model was fitted on.
//!
//! A model carries, for each monitored feature, ten quantile bins of its training values and
//! the share of rows in each. A window of live feature vectors is binned the same way;
//! `PSI = sum over bins of (live - expected) * ln(live / expected)` (shares floored at 1e-4).
//! Rule of thumb: under 0.1 stable, 0.1-0.25 moving, above 0.25 the inputs no longer look like
//! the training world and the model's calibration cannot be trusted.

use serde::{Deserialize, Serialize};

use crate::features::{FEATURE_COUNT, FEATURE_NAMES};

/// The features watched for drift (indices into [`FEATURE_NAMES`]).
pub const MONITORED_FEATURES: [usize; 6] = [0, 2, 5, 8, 9, 18];
/// Bins per monitored feature.
pub const DRIFT_BINS: usize = 10;
const SHARE_FLOOR: f64 = 1e-4;

/// One monitored feature's training distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureBaseline {
    /// Index into the feature vector.
    pub feature: usize,
    /// Upper edges of the bins but the last (which is open above).
    pub edges: Vec<f64>,
    /// Share of training rows per bin.
    pub expected: Vec<f64>,
}

/// The training distributions of the monitored features.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftBaseline {
    /// One per monitored feature (empty: the model has no baseline; drift is not measured).
    pub features: Vec<FeatureBaseline>,
}

fn bin_of(edges: &[f64], value: f64) -> usize {
    edges.partition_point(|edge| *edge < value)
}

impl DriftBaseline {
    /// The baseline of training feature rows.
    pub fn from_rows(rows: &[[f64; FEATURE_COUNT]]) -> Self {
        let features = MONITORED_FEATURES
            .iter()
            .map(|&feature| {
                let mut values: Vec<f64> = rows.iter().map(|row| row[feature]).collect();
                values.sort_by(f64::total_cmp);
                let mut edges: Vec<f64> = Vec::new();
                for bin in 1..DRIFT_BINS {
                    if let Some(&edge) = values.get(bin * values.len() / DRIFT_BINS)
                        && edges.last().is_none_or(|last| edge > *last)
                    {
                        edges.push(edge);
                    }
                }
                let mut counts = vec![0u64; edges.len() + 1];
                for value in &values {
                    counts[bin_of(&edges, *value)] += 1;
                }
                let total = values.len().max(1) as f64;
                FeatureBaseline {
                    feature,
                    edges,
                    expected: counts.iter().map(|&c| c as f64 / total).collect(),
                }
            })
            .collect();
        Self { features }
    }
}

/// Live feature vectors binned against a baseline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriftWindow {
    counts: Vec<Vec<u64>>,
    /// Vectors added.
    pub total: u64,
}

impl DriftWindow {
    /// Adds one live feature vector.
    pub fn add(&mut self, baseline: &DriftBaseline, values: &[f64; FEATURE_COUNT]) {
        if self.counts.len() != baseline.features.len() {
            self.counts = baseline
                .features
                .iter()
                .map(|f| vec![0; f.expected.len()])
                .collect();
        }
        for (counts, feature) in self.counts.iter_mut().zip(&baseline.features) {
            counts[bin_of(&feature.edges, values[feature.feature])] += 1;
        }
        self.total += 1;
    }

    /// The largest PSI over the monitored features, with that feature's name (`None` before
    /// any vector or without a baseline).
    pub fn worst(&self, baseline: &DriftBaseline) -> Option<(&'static str, f64)> {
        self.counts
            .iter()
            .zip(&baseline.features)
            .map(|(counts, feature)| {
                (
                    FEATURE_NAMES[feature.feature],
                    psi(&feature.expected, counts),
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// PSI of live bin counts against expected shares.
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let e = e.max(SHARE_FLOOR);
            let a = (c as f64 / total).max(SHARE_FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(shift: f64, n: usize) -> Vec<[f64; FEATURE_COUNT]> {
        (0..n)
            .map(|i| {
                let mut row = [0.0; FEATURE_COUNT];
                for (k, value) in row.iter_mut().enumerate() {
                    *value = ((i * (k + 7) * 7_919) % 1_000) as f64 / 100.0 + shift;
                }
                row
            })
            .collect()
    }

    #[test]
    fn the_same_population_is_stable_and_a_shifted_one_is_not() {
        let baseline = DriftBaseline::from_rows(&rows(0.0, 20_000));
        assert_eq!(baseline.features.len(), MONITORED_FEATURES.len());
        let mut same = DriftWindow::default();
        for row in rows(0.0, 5_000) {
            same.add(&baseline, &row);
        }
        let (_, stable) = same.worst(&baseline).expect("measured");
        assert!(stable < 0.02, "{stable}");
        let mut shifted = DriftWindow::default();
        for row in rows(4.0, 5_000) {
            shifted.add(&baseline, &row);
        }
        let (_, moved) = shifted.worst(&baseline).expect("measured");
        assert!(moved > 0.25, "{moved}");
        assert!(
            DriftWindow::default()
                .worst(&DriftBaseline::default())
                .is_none()
        );
    }
}
