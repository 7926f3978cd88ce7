//! The ml decision: the scorer's P(truth - reserved >= quantity) against the surface's
//! threshold, with a reason code, conservative on doubt.

use serde::{Deserialize, Serialize};

use crate::belief::{BeliefStats, LedgerFacts};
use crate::features::{FeatureVector, Question, features};
use crate::model::Model;
use crate::shared::SharedFacts;

/// Days within which the anchor counts as a recent count.
const RECENT_ANCHOR_DAYS: f64 = 7.0;

/// Why an ml answer is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MlReason {
    /// Promised; the anchor is a recent observation.
    CountRecent,
    /// Promised on the belief.
    BeliefConfident,
    /// Not promised: an expected feed of the location is silent past the staleness policy.
    StaleFeed,
    /// Not promised: phantom stock is likely (the silence of a seller, or the ranker believes
    /// the zero candidate most).
    PhantomSuspected,
    /// Not promised: the record itself does not cover the quantity.
    RecordShort,
    /// Not promised: the probability is under the surface's threshold.
    LowConfidence,
    /// Not promised: the model has no threshold for this surface.
    NoThreshold,
}

impl MlReason {
    /// The code as written in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            MlReason::CountRecent => "COUNT_RECENT",
            MlReason::BeliefConfident => "BELIEF_CONFIDENT",
            MlReason::StaleFeed => "STALE_FEED",
            MlReason::PhantomSuspected => "PHANTOM_SUSPECTED",
            MlReason::RecordShort => "RECORD_SHORT",
            MlReason::LowConfidence => "LOW_CONFIDENCE",
            MlReason::NoThreshold => "NO_THRESHOLD",
        }
    }
}

/// An ml answer and what it was computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MlAnswer {
    /// Promise / show in stock.
    pub available: bool,
    /// P(truth - reserved >= quantity) by the scorer.
    pub probability: f64,
    /// The belief's expected truth.
    pub expected_units: f64,
    /// Why.
    pub reason: MlReason,
    /// The features the scorer saw.
    pub features: FeatureVector,
}

/// Decides one question for a pair against `threshold` (`None`: the model has none).
pub fn decide(
    model: &Model,
    stats: &BeliefStats,
    facts: &LedgerFacts,
    shared: &SharedFacts,
    question: Question,
    threshold: Option<f64>,
) -> MlAnswer {
    let features = features(stats, facts, shared, &model.feature_params(), question);
    let probability = model.scorer.probability(&features.values);
    let expected_units = features.posterior.expected_units();
    let answer = |available, reason| MlAnswer {
        available,
        probability,
        expected_units,
        reason,
        features,
    };
    let Some(threshold) = threshold else {
        return answer(false, MlReason::NoThreshold);
    };
    if features.stale_feed {
        return answer(false, MlReason::StaleFeed);
    }
    if probability >= threshold {
        let recent =
            facts.anchor.is_some() && features.posterior.days_since_anchor <= RECENT_ANCHOR_DAYS;
        return answer(
            true,
            if recent {
                MlReason::CountRecent
            } else {
                MlReason::BeliefConfident
            },
        );
    }
    let reason = if facts.record - facts.reserved.max(0) < question.quantity {
        MlReason::RecordShort
    } else if features.posterior.phantom > 0.5
        || features
            .ranked
            .is_some_and(|ranked| ranked.top() == crate::ranker::ZERO)
    {
        MlReason::PhantomSuspected
    } else {
        MlReason::LowConfidence
    };
    answer(false, reason)
}
