//! Candidates and the learned ranker: which claim of a pair's quantity to believe, fused into
//! the belief as a mixture.
//!
//! Each candidate is a claim of the true quantity brought to now:
//! - **ledger**: the record (the latest anchor plus every delta since, exact arithmetic);
//! - **belief**: the belief's mean if not phantom (the anchor's reading corrected for its
//!   kind's bias, minus expected shrink and short receipts), clipped into the sales floor and
//!   the nil-pick ceiling;
//! - **sales floor**: the least quantity the sales since the anchor prove (absent without one);
//! - **nil-pick ceiling**: the most a nil pick since the anchor allows (absent without one);
//! - **zero**: phantom, nothing sellable;
//! - **count**, **snapshot**, **rfid**: the latest read of each observing source plus the
//!   deltas dated after it ([`crate::claims`]), absent when the source never read the pair.
//!   The anchoring source's claim is the record; the others say what an older read of
//!   another kind would make of the pair now (a frozen WMS feed re-anchoring the record on a
//!   stale value, while the last count, brought forward by the sales since, disagrees).
//!
//! The ranker is a multinomial logistic regression on the standardized shared features (every
//! feature but the fused one): P(candidate c is the claim nearest the truth). Each candidate
//! but zero carries a normal spread around its claim (the residual spread of the truth when
//! it was the nearest, in training); zero is a point mass. The fused probability
//! P(truth >= units) = sum over present candidates of weight x P(claim's normal >= units),
//! weights renormalized over the present ones, is the last feature the scorer sees.

use serde::{Deserialize, Serialize};

use crate::stats::normal_sf;

/// Candidate names, in order.
pub const CANDIDATE_NAMES: [&str; CANDIDATE_COUNT] = [
    "ledger",
    "belief",
    "sales_floor",
    "nil_pick_ceiling",
    "zero",
    "count",
    "snapshot",
    "rfid",
];
/// Number of candidates.
pub const CANDIDATE_COUNT: usize = 8;
/// Index of the zero candidate.
pub const ZERO: usize = 4;
/// Inputs of the ranker: every feature but the last (the fused probability it makes).
pub const RANKER_INPUTS: usize = 28;

/// The candidates' claims at one moment (`None`: absent).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidates {
    /// Claimed units per candidate.
    pub claims: [Option<f64>; CANDIDATE_COUNT],
}

impl Candidates {
    /// The present candidate whose claim is nearest `truth` (the first on ties).
    pub fn nearest(&self, truth: f64) -> usize {
        let mut best = ZERO;
        let mut best_distance = f64::INFINITY;
        for (index, claim) in self.claims.iter().enumerate() {
            if let Some(claim) = claim {
                let distance = (claim - truth).abs();
                if distance < best_distance {
                    best = index;
                    best_distance = distance;
                }
            }
        }
        best
    }
}

/// The trained ranker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRanker {
    /// Input means (training set).
    pub means: Vec<f64>,
    /// Input scales (training standard deviations, 1 where constant).
    pub scales: Vec<f64>,
    /// Weights per candidate (rows) and standardized input (columns), flattened row-major.
    pub weights: Vec<f64>,
    /// Intercept per candidate.
    pub intercepts: Vec<f64>,
    /// Spread of the truth around each candidate's claim when it was the nearest, units.
    pub spreads: Vec<f64>,
}

/// The ranker's verdict at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    /// Weight per candidate (0 for absent ones; they sum to 1).
    pub weights: [f64; CANDIDATE_COUNT],
    /// P(truth >= units) under the fused mixture.
    pub probability: f64,
}

impl Ranked {
    /// The candidate with the largest weight.
    pub fn top(&self) -> usize {
        (0..CANDIDATE_COUNT)
            .max_by(|a, b| self.weights[*a].total_cmp(&self.weights[*b]))
            .unwrap_or(ZERO)
    }
}

impl CandidateRanker {
    /// Checks the shapes and that every number is finite.
    pub fn validate(&self) -> Result<(), String> {
        let shapes = [
            ("ranker.means", self.means.len(), RANKER_INPUTS),
            ("ranker.scales", self.scales.len(), RANKER_INPUTS),
            (
                "ranker.weights",
                self.weights.len(),
                RANKER_INPUTS * CANDIDATE_COUNT,
            ),
            ("ranker.intercepts", self.intercepts.len(), CANDIDATE_COUNT),
            ("ranker.spreads", self.spreads.len(), CANDIDATE_COUNT),
        ];
        for (field, got, want) in shapes {
            if got != want {
                return Err(format!("{field}: need {want} numbers, got {got}"));
            }
        }
        let all = [
            &self.means,
            &self.scales,
            &self.weights,
            &self.intercepts,
            &self.spreads,
        ];
        if all.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return Err("ranker: every number must be finite".to_owned());
        }
        if self.scales.iter().chain(&self.spreads).any(|s| *s <= 0.0) {
            return Err("ranker: scales and spreads must be positive".to_owned());
        }
        Ok(())
    }

    /// Candidate weights from the inputs, over the present candidates.
    pub fn weights(&self, inputs: &[f64], candidates: &Candidates) -> [f64; CANDIDATE_COUNT] {
        // Standardized once for every candidate (the same operations as `(x - m) / s * w`
        // term by term, so the same bits).
        let mut standardized = [0.0; RANKER_INPUTS];
        let terms = inputs.len().min(RANKER_INPUTS);
        for (z, ((x, m), s)) in standardized
            .iter_mut()
            .zip(inputs.iter().zip(&self.means).zip(&self.scales))
        {
            *z = (x - m) / s;
        }
        let mut scores = [f64::NEG_INFINITY; CANDIDATE_COUNT];
        for (c, score) in scores.iter_mut().enumerate() {
            if candidates.claims[c].is_none() {
                continue;
            }
            let row = &self.weights[c * RANKER_INPUTS..(c + 1) * RANKER_INPUTS];
            *score = standardized[..terms]
                .iter()
                .zip(row)
                .fold(self.intercepts[c], |sum, (z, w)| sum + z * w);
        }
        softmax(&scores)
    }

    /// The fused verdict: weights and P(truth >= `units`).
    pub fn rank(&self, inputs: &[f64], candidates: &Candidates, units: i64) -> Ranked {
        let weights = self.weights(inputs, candidates);
        let probability = weights
            .iter()
            .zip(&candidates.claims)
            .enumerate()
            .map(|(c, (weight, claim))| match claim {
                Some(_) if units <= 0 => *weight,
                Some(_) if c == ZERO => 0.0,
                Some(claim) => weight * normal_sf((units as f64 - 0.5 - claim) / self.spreads[c]),
                None => 0.0,
            })
            .sum::<f64>()
            .clamp(0.0, 1.0);
        Ranked {
            weights,
            probability,
        }
    }

    /// Fits by full-batch gradient descent on the mean log loss (Adam steps, a fixed number
    /// of iterations from zero weights: deterministic) with an L2 penalty `l2`. `inputs` are
    /// rows of [`RANKER_INPUTS`] values, `candidates` each row's claims and `truths` its true
    /// quantity; a row's label is the candidate nearest its truth.
    pub fn fit(
        inputs: &[Vec<f64>],
        candidates: &[Candidates],
        truths: &[f64],
        l2: f64,
        iterations: usize,
    ) -> Result<Self, String> {
        let n = inputs.len();
        if n == 0 || candidates.len() != n || truths.len() != n {
            return Err("ranker: need at least one row, with candidates and truth".to_owned());
        }
        if inputs.iter().any(|row| row.len() != RANKER_INPUTS) {
            return Err(format!("ranker: every row needs {RANKER_INPUTS} inputs"));
        }
        let mut means = vec![0.0; RANKER_INPUTS];
        for row in inputs {
            for (m, x) in means.iter_mut().zip(row) {
                *m += x / n as f64;
            }
        }
        let mut scales = [0.0; RANKER_INPUTS];
        for row in inputs {
            for ((s, x), m) in scales.iter_mut().zip(row).zip(&means) {
                *s += (x - m) * (x - m) / n as f64;
            }
        }
        let scales: Vec<f64> = scales
            .iter()
            .map(|v| if v.sqrt() > 1e-9 { v.sqrt() } else { 1.0 })
            .collect();
        let standardized: Vec<Vec<f64>> = inputs
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&means)
                    .zip(&scales)
                    .map(|((x, m), s)| (x - m) / s)
                    .collect()
            })
            .collect();
        let labels: Vec<usize> = candidates
            .iter()
            .zip(truths)
            .map(|(c, t)| c.nearest(*t))
            .collect();

        // Parameters: per candidate, the intercept then the weights.
        let width = RANKER_INPUTS + 1;
        let mut theta = vec![0.0; CANDIDATE_COUNT * width];
        let (mut first, mut second) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
        let (rate, beta1, beta2) = (0.05, 0.9, 0.999);
        for step in 1..=iterations {
            let mut gradient = vec![0.0; theta.len()];
            for ((x, present), &label) in standardized.iter().zip(candidates).zip(&labels) {
                let mut scores = [f64::NEG_INFINITY; CANDIDATE_COUNT];
                for (c, score) in scores.iter_mut().enumerate() {
                    if present.claims[c].is_some() {
                        let row = &theta[c * width..(c + 1) * width];
                        *score = row[0] + x.iter().zip(&row[1..]).map(|(a, b)| a * b).sum::<f64>();
                    }
                }
                let p = softmax(&scores);
                for c in 0..CANDIDATE_COUNT {
                    let residual = p[c] - if c == label { 1.0 } else { 0.0 };
                    if residual == 0.0 {
                        continue;
                    }
                    let g = &mut gradient[c * width..(c + 1) * width];
                    g[0] += residual / n as f64;
                    for (gj, xj) in g[1..].iter_mut().zip(x) {
                        *gj += residual * xj / n as f64;
                    }
                }
            }
            for (index, g) in gradient.iter_mut().enumerate() {
                if index % width != 0 {
                    *g += l2 * theta[index];
                }
            }
            let (correct1, correct2) = (1.0 - power_of(beta1, step), 1.0 - power_of(beta2, step));
            for (((t, g), m), v) in theta
                .iter_mut()
                .zip(&gradient)
                .zip(&mut first)
                .zip(&mut second)
            {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                *t -= rate * (*m / correct1) / ((*v / correct2).sqrt() + 1e-8);
            }
        }

        // Spread per candidate: the root mean square of truth - claim when it was nearest.
        let mut sums = [0.0; CANDIDATE_COUNT];
        let mut counts = [0usize; CANDIDATE_COUNT];
        for ((present, truth), &label) in candidates.iter().zip(truths).zip(&labels) {
            if let Some(claim) = present.claims[label] {
                sums[label] += (truth - claim) * (truth - claim);
                counts[label] += 1;
            }
        }
        let spreads = (0..CANDIDATE_COUNT)
            .map(|c| (sums[c] / counts[c].max(1) as f64).sqrt().max(0.5))
            .collect();
        let mut weights = Vec::with_capacity(CANDIDATE_COUNT * RANKER_INPUTS);
        let mut intercepts = Vec::with_capacity(CANDIDATE_COUNT);
        for c in 0..CANDIDATE_COUNT {
            intercepts.push(theta[c * width]);
            weights.extend_from_slice(&theta[c * width + 1..(c + 1) * width]);
        }
        let ranker = Self {
            means,
            scales,
            weights,
            intercepts,
            spreads,
        };
        ranker.validate()?;
        Ok(ranker)
    }
}

/// `beta` to the power `step` (Adam's bias corrections).
fn power_of(beta: f64, step: usize) -> f64 {
    beta.powi(i32::try_from(step).unwrap_or(i32::MAX))
}

/// Softmax over finite scores; `-inf` entries get weight 0 (all `-inf`: all 0).
fn softmax(scores: &[f64; CANDIDATE_COUNT]) -> [f64; CANDIDATE_COUNT] {
    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut weights = [0.0; CANDIDATE_COUNT];
    if !top.is_finite() {
        return weights;
    }
    let mut total = 0.0;
    for (w, s) in weights.iter_mut().zip(scores) {
        *w = (s - top).exp();
        total += *w;
    }
    for w in &mut weights {
        *w /= total;
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(ledger: f64, floor: Option<f64>) -> Candidates {
        Candidates {
            claims: [
                Some(ledger),
                Some(ledger - 0.5),
                floor,
                None,
                Some(0.0),
                None,
                None,
                None,
            ],
        }
    }

    #[test]
    fn the_ranker_learns_when_to_believe_zero() {
        // Input 0 says "phantom" when high: then the truth is 0, else it is the ledger.
        let mut inputs = Vec::new();
        let mut candidates = Vec::new();
        let mut truths = Vec::new();
        for i in 0..400 {
            let phantom = i % 4 == 0;
            let mut row = vec![0.0; RANKER_INPUTS];
            row[0] = if phantom { 1.0 } else { 0.0 };
            row[1] = (i % 7) as f64;
            inputs.push(row);
            candidates.push(claims(6.0, None));
            truths.push(if phantom { 0.0 } else { 6.0 });
        }
        let ranker = CandidateRanker::fit(&inputs, &candidates, &truths, 1e-4, 300).expect("fit");
        let mut phantom = vec![0.0; RANKER_INPUTS];
        phantom[0] = 1.0;
        let present = vec![0.0; RANKER_INPUTS];
        let says_zero = ranker.rank(&phantom, &claims(6.0, None), 2);
        let says_ledger = ranker.rank(&present, &claims(6.0, None), 2);
        assert_eq!(says_zero.top(), ZERO);
        assert_eq!(says_ledger.top(), 0);
        assert!(says_zero.probability < 0.2, "{says_zero:?}");
        assert!(says_ledger.probability > 0.8, "{says_ledger:?}");
        // Absent candidates get no weight; weights sum to 1.
        assert_eq!(says_ledger.weights[2], 0.0);
        assert!((says_ledger.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Deterministic: the same data, the same ranker.
        assert_eq!(
            CandidateRanker::fit(&inputs, &candidates, &truths, 1e-4, 300).expect("fit"),
            ranker
        );
    }

    #[test]
    fn the_ranker_learns_when_an_older_count_beats_a_frozen_snapshot() {
        // Input 0 says "the WMS feed repeats itself": then the truth is the count brought
        // forward, not the record a stale snapshot re-anchored.
        const COUNT: usize = 5;
        let with_count = |ledger: f64, count: f64| {
            let mut c = claims(ledger, None);
            c.claims[COUNT] = Some(count);
            c
        };
        let mut inputs = Vec::new();
        let mut candidates = Vec::new();
        let mut truths = Vec::new();
        for i in 0..400 {
            let frozen = i % 3 == 0;
            let mut row = vec![0.0; RANKER_INPUTS];
            row[0] = if frozen { 1.0 } else { 0.0 };
            inputs.push(row);
            candidates.push(with_count(9.0, 2.0));
            truths.push(if frozen { 2.0 } else { 9.0 });
        }
        let ranker = CandidateRanker::fit(&inputs, &candidates, &truths, 1e-4, 300).expect("fit");
        let mut frozen = vec![0.0; RANKER_INPUTS];
        frozen[0] = 1.0;
        let says_count = ranker.rank(&frozen, &with_count(9.0, 2.0), 5);
        assert_eq!(says_count.top(), COUNT, "{says_count:?}");
        assert!(says_count.probability < 0.2, "{says_count:?}");
        let fresh = ranker.rank(&vec![0.0; RANKER_INPUTS], &with_count(9.0, 2.0), 5);
        assert_eq!(fresh.top(), 0, "{fresh:?}");
    }

    #[test]
    fn nearest_prefers_the_first_on_ties_and_skips_absent_claims() {
        let c = claims(3.0, Some(5.0));
        assert_eq!(c.nearest(3.0), 0);
        assert_eq!(c.nearest(2.6), 1);
        assert_eq!(c.nearest(6.0), 2);
        assert_eq!(c.nearest(0.2), ZERO);
    }
}
