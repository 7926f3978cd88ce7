//! Online experiments: deterministic assignment of traffic to arms, shadow answers, per-arm
//! counters, and the report (broken-promise rate and recall estimate with confidence
//! intervals).
//!
//! - **Assignment**: a location (store) belongs to one arm for the whole experiment:
//!   `xxh3(salt ":" location) mod total weight` picks it, so every node and every restart
//!   agrees, and a new salt reshuffles. (The API carries no customer id yet; the unit is the
//!   store.)
//! - **Arms**: a mode (`rules` or `ml`) and optional per-surface threshold overrides. An arm of
//!   weight 0 serves nothing and is computed in shadow only.
//! - **Shadow**: with `shadow = true` every decision also computes every other arm's answer
//!   (a microsecond or two each); for reservation lines the answers are kept until the line
//!   settles.
//! - **Outcomes**: a reservation line settles as kept (picked in full) or broken (a short pick
//!   or an ITEM_NOT_FOUND release); expiries and cancellations are not outcomes. The broken
//!   rate of an arm is broken / settled over the lines its decisions promised. The recall of
//!   an arm is estimated on lines another arm promised and that were picked in full (truly
//!   there): the share of them this arm's shadow answer would have promised.
//!   Intervals are Wilson 95% intervals. Counters live in memory: a restart starts them over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::decision::DecisionMode;
use crate::domain::{PairKey, Surface};

/// Most arms an experiment may have.
pub const MAX_ARMS: usize = 8;

/// One arm as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    /// Its name (unique in the experiment).
    pub name: String,
    /// `rules` or `ml`.
    pub mode: DecisionMode,
    /// Share of locations (relative to the other arms); 0: shadow only.
    #[serde(default = "one")]
    pub weight: u32,
    /// Per-surface thresholds replacing the model's, in ml mode.
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<Surface, f64>,
}

fn one() -> u32 {
    1
}

/// An experiment as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Its name.
    pub name: String,
    /// The assignment salt.
    pub salt: String,
    /// Compute every arm's answer for every decision.
    #[serde(default)]
    pub shadow: bool,
    /// The arms.
    pub arms: Vec<ArmSpec>,
}

impl ExperimentSpec {
    /// Checks the spec; names the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.arms.is_empty() || self.arms.len() > MAX_ARMS {
            return Err(format!(
                "experiment.arms: need 1 to {MAX_ARMS} arms, got {}",
                self.arms.len()
            ));
        }
        if self.arms.iter().map(|a| u64::from(a.weight)).sum::<u64>() == 0 {
            return Err("experiment.arms: at least one arm needs a positive weight".to_owned());
        }
        for (index, arm) in self.arms.iter().enumerate() {
            if arm.name.is_empty() || self.arms[..index].iter().any(|a| a.name == arm.name) {
                return Err(format!(
                    "experiment.arms[{index}].name: {:?} is empty or used twice",
                    arm.name
                ));
            }
            for (surface, threshold) in &arm.thresholds {
                stockgrid_inference::model::check_promise_threshold(*threshold).map_err(
                    |reason| format!("experiment.arms[{index}].thresholds.{surface}: {reason}"),
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ArmCounters {
    decisions: AtomicU64,
    promised: AtomicU64,
    settled: AtomicU64,
    broken: AtomicU64,
    recall_seen: AtomicU64,
    recall_yes: AtomicU64,
}

/// A running experiment.
#[derive(Debug)]
pub struct Experiment {
    spec: ExperimentSpec,
    counters: Vec<ArmCounters>,
    /// Shadow answers of held reservation lines: bit `a` set when arm `a` would promise.
    shadow_answers: DashMap<(Arc<str>, PairKey), (usize, u32)>,
}

/// One arm's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ArmReport {
    /// Its name.
    pub name: String,
    /// Its mode.
    pub mode: DecisionMode,
    /// Its weight.
    pub weight: u32,
    /// Decisions it served.
    pub decisions: u64,
    /// Of which promised.
    pub promised: u64,
    /// Reservation lines it promised that settled (kept or broken).
    pub settled: u64,
    /// Of which broken (short pick or ITEM_NOT_FOUND).
    pub broken: u64,
    /// broken / settled with its Wilson 95% interval.
    pub broken_rate: (f64, f64, f64),
    /// Lines kept under other arms that this arm's shadow answer was known for.
    pub recall_sample: u64,
    /// The share of them it would have promised, with its Wilson 95% interval.
    pub recall: (f64, f64, f64),
}

/// The Wilson 95% interval of `successes` out of `trials`: (estimate, low, high).
pub fn wilson(successes: u64, trials: u64) -> (f64, f64, f64) {
    if trials == 0 {
        return (0.0, 0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n = trials as f64;
    let p = successes as f64 / n;
    let denominator = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denominator;
    let half = z * ((p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt()) / denominator;
    (p, (center - half).max(0.0), (center + half).min(1.0))
}

impl Experiment {
    /// Starts an experiment (the spec must be valid).
    pub fn new(spec: ExperimentSpec) -> Self {
        let counters = spec.arms.iter().map(|_| ArmCounters::default()).collect();
        Self {
            spec,
            counters,
            shadow_answers: DashMap::new(),
        }
    }

    /// Its spec.
    pub fn spec(&self) -> &ExperimentSpec {
        &self.spec
    }

    /// The arm serving a location.
    pub fn arm_of(&self, location: u32) -> usize {
        let total: u64 = self.spec.arms.iter().map(|a| u64::from(a.weight)).sum();
        let key = format!("{}:{location}", self.spec.salt);
        let mut ticket = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % total.max(1);
        for (index, arm) in self.spec.arms.iter().enumerate() {
            let weight = u64::from(arm.weight);
            if ticket < weight {
                return index;
            }
            ticket -= weight;
        }
        0
    }

    /// Counts a decision served by `arm`, with the shadow answers (bit per arm) if any; for
    /// a reservation line the shadow answers are kept until it settles.
    pub fn record_decision(
        &self,
        arm: usize,
        promised: bool,
        shadow: Option<u32>,
        reservation: Option<(&Arc<str>, PairKey)>,
    ) {
        let counters = &self.counters[arm];
        counters.decisions.fetch_add(1, Ordering::Relaxed);
        if promised {
            counters.promised.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some((reservation_id, pair)), true) = (reservation, promised) {
            self.shadow_answers.insert(
                (Arc::clone(reservation_id), pair),
                (arm, shadow.unwrap_or(0)),
            );
        }
    }

    /// A held line settled: `kept` (picked in full) or broken.
    pub fn record_settlement(&self, reservation_id: &str, pair: PairKey, kept: bool) {
        let (arm, shadow) = match self
            .shadow_answers
            .remove(&(Arc::<str>::from(reservation_id), pair))
        {
            Some((_, answers)) => (answers.0, Some(answers.1)),
            None => (self.arm_of(pair.location), None),
        };
        let counters = &self.counters[arm];
        counters.settled.fetch_add(1, Ordering::Relaxed);
        if !kept {
            counters.broken.fetch_add(1, Ordering::Relaxed);
        }
        if let (true, Some(shadow), true) = (kept, shadow, self.spec.shadow) {
            for (other, counters) in self.counters.iter().enumerate() {
                if other != arm {
                    counters.recall_seen.fetch_add(1, Ordering::Relaxed);
                    if shadow & (1 << other) != 0 {
                        counters.recall_yes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// A held line was freed without an outcome (cancelled, expired).
    pub fn forget(&self, reservation_id: &str, pair: PairKey) {
        self.shadow_answers
            .remove(&(Arc::<str>::from(reservation_id), pair));
    }

    /// Every arm's figures now.
    pub fn report(&self) -> Vec<ArmReport> {
        self.spec
            .arms
            .iter()
            .zip(&self.counters)
            .map(|(arm, counters)| {
                let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                let (settled, broken) = (load(&counters.settled), load(&counters.broken));
                let (seen, yes) = (load(&counters.recall_seen), load(&counters.recall_yes));
                ArmReport {
                    name: arm.name.clone(),
                    mode: arm.mode,
                    weight: arm.weight,
                    decisions: load(&counters.decisions),
                    promised: load(&counters.promised),
                    settled,
                    broken,
                    broken_rate: wilson(broken, settled),
                    recall_sample: seen,
                    recall: wilson(yes, seen),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(weights: [u32; 2]) -> ExperimentSpec {
        ExperimentSpec {
            name: "test".to_owned(),
            salt: "s1".to_owned(),
            shadow: true,
            arms: vec![
                ArmSpec {
                    name: "rules".to_owned(),
                    mode: DecisionMode::Rules,
                    weight: weights[0],
                    thresholds: Default::default(),
                },
                ArmSpec {
                    name: "ml".to_owned(),
                    mode: DecisionMode::Ml,
                    weight: weights[1],
                    thresholds: Default::default(),
                },
            ],
        }
    }

    #[test]
    fn assignment_is_deterministic_and_follows_the_weights() {
        let experiment = Experiment::new(spec([1, 3]));
        let again = Experiment::new(spec([1, 3]));
        let ml = (0..10_000u32)
            .filter(|&location| {
                assert_eq!(experiment.arm_of(location), again.arm_of(location));
                experiment.arm_of(location) == 1
            })
            .count();
        assert!(
            (7_200..7_800).contains(&ml),
            "{ml} of 10,000 in the 3/4 arm"
        );
        let shadow_only = Experiment::new(spec([1, 0]));
        assert!((0..1_000).all(|location| shadow_only.arm_of(location) == 0));
        assert!(spec([0, 0]).validate().is_err());
    }

    #[test]
    fn outcomes_and_shadow_answers_make_the_report() {
        let experiment = Experiment::new(spec([1, 1]));
        let id: Arc<str> = Arc::from("r1");
        for sku in 0..10 {
            let pair = PairKey::new(sku, 7);
            // Arm 0 promised; arm 1's shadow would have promised only even skus.
            let shadow = 1 | if sku % 2 == 0 { 2 } else { 0 };
            experiment.record_decision(0, true, Some(shadow), Some((&id, pair)));
            experiment.record_settlement("r1", pair, sku != 9);
        }
        let report = experiment.report();
        assert_eq!((report[0].settled, report[0].broken), (10, 1));
        assert_eq!(report[0].broken_rate.0, 0.1);
        assert!(report[0].broken_rate.1 < 0.1 && report[0].broken_rate.2 > 0.1);
        // Kept lines 0..=8: arm 1 would have promised 0, 2, 4, 6, 8.
        assert_eq!(report[1].recall_sample, 9);
        assert!((report[1].recall.0 - 5.0 / 9.0).abs() < 1e-12);
        assert_eq!(report[0].recall_sample, 0);
        let (estimate, low, high) = wilson(50, 100);
        assert!(estimate == 0.5 && (low - 0.404).abs() < 0.001 && (high - 0.596).abs() < 0.001);
    }
}
