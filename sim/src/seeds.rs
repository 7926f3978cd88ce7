//! The seed split, decided once: which seeds train, which calibrate, which evaluate.
//!
//! Models are trained on the training seeds, thresholds tuned on the calibration seeds, and
//! every reported figure comes from the evaluation seeds, which nothing is fitted on. The
//! ranges are disjoint and fixed here (and in `sim/scenarios/README.md`); changing them
//! invalidates every figure reported so far.

use std::ops::RangeInclusive;

/// Seeds for building training sets.
pub const TRAINING: RangeInclusive<u64> = 1..=99;
/// Seeds for tuning thresholds and calibration.
pub const CALIBRATION: RangeInclusive<u64> = 100..=199;
/// Seeds for reported figures only.
pub const EVALUATION: RangeInclusive<u64> = 1000..=1099;

/// What a seed is for.
pub fn purpose(seed: u64) -> &'static str {
    if TRAINING.contains(&seed) {
        "training"
    } else if CALIBRATION.contains(&seed) {
        "calibration"
    } else if EVALUATION.contains(&seed) {
        "evaluation"
    } else {
        "unassigned"
    }
}
