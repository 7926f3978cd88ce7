//! The decisions of a pair: the deterministic rules answer stockgrid can always fall back to,
//! and the ml answer of the stock belief, both from the same entity state.
//!
//! Rules: `available = on_hand - reserved - safety_stock(surface) >= qty`, probability 1 or 0,
//! expected on-hand = recorded on-hand. Ml: the model's P(truth - reserved >= qty) against the
//! surface's threshold ([`decide_by_model`]). [`decide_by`] is the one place that chooses
//! between them. A pair never seen, or a store that cannot be read, answers "not available"
//! with the reason: doubt never becomes "in stock".

use serde::{Deserialize, Serialize};

use stockgrid_inference::belief::LedgerFacts;
use stockgrid_inference::decide::{MlReason, decide};
use stockgrid_inference::features::{FeatureVector, Question};
use stockgrid_inference::model::Model;
use stockgrid_inference::shared::SharedFacts;

use crate::domain::Surface;
use crate::ledger::{EntityState, LedgerConfig, ReadView, observation_kind};
use crate::time::Timestamp;

/// Units held back from promises, per surface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyStock {
    units_by_surface: [i64; 5],
}

impl SafetyStock {
    /// The same safety stock on every surface.
    pub fn uniform(units: i64) -> Self {
        Self {
            units_by_surface: [units; 5],
        }
    }

    /// Sets one surface's safety stock.
    pub fn with(mut self, surface: Surface, units: i64) -> Self {
        self.units_by_surface[surface as usize] = units;
        self
    }

    /// The safety stock of a surface.
    pub fn units(&self, surface: Surface) -> i64 {
        self.units_by_surface[surface as usize]
    }
}

/// How an answer was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionMode {
    /// The deterministic ledger rule.
    Rules,
    /// The stock belief and the learned scorer.
    Ml,
}

/// Why an answer is what it is: a short machine-readable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    /// The ledger covers the quantity on top of reservations and safety stock.
    LedgerSufficient,
    /// The ledger does not cover it.
    LedgerInsufficient,
    /// No event for this pair was ever applied.
    NoRecord,
    /// The pair's state could not be read (store poisoned or unreachable).
    StateUnavailable,
    /// The store refuses writes (poisoned: local durability lost) or cannot be reached, so
    /// what the node holds may be behind what it acknowledged: nothing is promised.
    StoreUnavailable,
    /// Ml, promised: the anchor is a recent observation.
    CountRecent,
    /// Ml, promised on the belief.
    BeliefConfident,
    /// Ml, not promised: an expected feed of the location is silent past the staleness policy.
    StaleFeed,
    /// Ml, not promised: the silence of a seller makes phantom stock likely.
    PhantomSuspected,
    /// Ml, not promised: the record itself does not cover the quantity.
    RecordShort,
    /// Ml, not promised: the probability is under the surface's threshold.
    LowConfidence,
    /// Ml, not promised: the model has no threshold for the surface.
    NoThreshold,
    /// Ml, not promised: no model is loaded.
    ModelMissing,
    /// The pair's partition has no owner that answers now (its owner is unreachable, moving
    /// to another node, or this node's lease lapsed): nothing is promised.
    OwnerUnavailable,
}

impl ReasonCode {
    /// The code as written in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::LedgerSufficient => "LEDGER_SUFFICIENT",
            ReasonCode::LedgerInsufficient => "LEDGER_INSUFFICIENT",
            ReasonCode::NoRecord => "NO_RECORD",
            ReasonCode::StateUnavailable => "STATE_UNAVAILABLE",
            ReasonCode::StoreUnavailable => "STORE_UNAVAILABLE",
            ReasonCode::CountRecent => "COUNT_RECENT",
            ReasonCode::BeliefConfident => "BELIEF_CONFIDENT",
            ReasonCode::StaleFeed => "STALE_FEED",
            ReasonCode::PhantomSuspected => "PHANTOM_SUSPECTED",
            ReasonCode::RecordShort => "RECORD_SHORT",
            ReasonCode::LowConfidence => "LOW_CONFIDENCE",
            ReasonCode::NoThreshold => "NO_THRESHOLD",
            ReasonCode::ModelMissing => "MODEL_MISSING",
            ReasonCode::OwnerUnavailable => "OWNER_UNAVAILABLE",
        }
    }
}

/// One availability answer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Show in stock / promise.
    pub available: bool,
    /// P(true sellable - reserved >= qty) the decision used.
    pub probability: f64,
    /// The expected true sellable quantity.
    pub expected_on_hand: f64,
    /// How it was decided.
    pub mode: DecisionMode,
    /// Why.
    pub reason: ReasonCode,
}

/// Units that could still be promised on `surface`: on-hand minus reserved minus the
/// surface's safety stock (saturating: the read view's units are 32-bit, so no sum of them
/// overflows, and a safety stock near `i64::MAX` only makes the answer more negative).
pub fn spare_units(view: &ReadView, surface: Surface, safety_stock: &SafetyStock) -> i64 {
    spare(
        i64::from(view.on_hand_units),
        i64::from(view.reserved_units),
        surface,
        safety_stock,
    )
}

/// On-hand minus reserved minus the surface's safety stock, saturating: the one formula of
/// spare units.
fn spare(on_hand_units: i64, reserved_units: i64, surface: Surface, safety: &SafetyStock) -> i64 {
    on_hand_units
        .saturating_sub(reserved_units)
        .saturating_sub(safety.units(surface))
}

/// The ledger's spare units of a pair's full state on `surface`, as [`spare_units`] counts
/// them on its read view (whose 32-bit units only round towards fewer spare units): the cap
/// every promise obeys, whatever the mode.
pub fn ledger_spare_units(
    state: &EntityState,
    surface: Surface,
    safety_stock: &SafetyStock,
) -> i64 {
    spare(
        state.on_hand_units,
        state.reserved_units,
        surface,
        safety_stock,
    )
}

/// The rules decision for `quantity` units on `surface`, given the pair's published view
/// (`None`: never seen).
pub fn decide_by_rules(
    view: Option<&ReadView>,
    quantity: i64,
    surface: Surface,
    safety_stock: &SafetyStock,
) -> Decision {
    let Some(view) = view else {
        return Decision {
            available: false,
            probability: 0.0,
            expected_on_hand: 0.0,
            mode: DecisionMode::Rules,
            reason: ReasonCode::NoRecord,
        };
    };
    let available = spare_units(view, surface, safety_stock) >= quantity;
    Decision {
        available,
        probability: if available { 1.0 } else { 0.0 },
        expected_on_hand: f64::from(view.on_hand_units),
        mode: DecisionMode::Rules,
        reason: if available {
            ReasonCode::LedgerSufficient
        } else {
            ReasonCode::LedgerInsufficient
        },
    }
}

impl From<MlReason> for ReasonCode {
    fn from(reason: MlReason) -> Self {
        match reason {
            MlReason::CountRecent => ReasonCode::CountRecent,
            MlReason::BeliefConfident => ReasonCode::BeliefConfident,
            MlReason::StaleFeed => ReasonCode::StaleFeed,
            MlReason::PhantomSuspected => ReasonCode::PhantomSuspected,
            MlReason::RecordShort => ReasonCode::RecordShort,
            MlReason::LowConfidence => ReasonCode::LowConfidence,
            MlReason::NoThreshold => ReasonCode::NoThreshold,
        }
    }
}

/// What the ledger knows of a pair, in the belief's vocabulary.
pub fn ledger_facts(state: &EntityState) -> LedgerFacts {
    LedgerFacts {
        record: state.on_hand_units,
        reserved: state.reserved_units,
        anchor: state.anchor.as_deref().map(|anchor| {
            (
                observation_kind(anchor.kind),
                i64::from(anchor.units),
                anchor.event_time.0,
            )
        }),
        last_sale_ms: Timestamp::from_compact_seconds(state.last_sale_seconds).map(|t| t.0),
        claims: state.claims,
    }
}

/// The ml decision for `quantity` units on `surface` at `now`, from a pair's state (`None`:
/// never seen) and the facts it shares with its location and SKU, against `threshold` (the
/// model's for the surface, or an experiment arm's); with the features it saw (`None` when
/// the pair was never seen: there is nothing to score).
pub fn decide_by_model(
    state: Option<&EntityState>,
    shared: &SharedFacts,
    model: &Model,
    quantity: i64,
    surface: Surface,
    now: Timestamp,
    threshold: Option<f64>,
) -> (Decision, Option<FeatureVector>) {
    let Some(state) = state else {
        return (
            Decision {
                mode: DecisionMode::Ml,
                ..decide_by_rules(None, quantity, surface, &SafetyStock::default())
            },
            None,
        );
    };
    let answer = decide(
        model,
        &state.belief,
        &ledger_facts(state),
        shared,
        Question {
            quantity,
            now_ms: now.0,
        },
        threshold,
    );
    (
        Decision {
            available: answer.available,
            probability: answer.probability,
            expected_on_hand: answer.expected_units,
            mode: DecisionMode::Ml,
            reason: answer.reason.into(),
        },
        Some(answer.features),
    )
}

/// The threshold an ml probability is held against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// The model's own for the surface.
    Model,
    /// A given one (an experiment arm's, or the one a record kept; `None`: none).
    Given(Option<f64>),
}

/// How one question is decided: by rules, or by ml with a model (none: `MODEL_MISSING`)
/// against a threshold.
#[derive(Clone, Copy, Debug)]
pub struct DecideBy<'a> {
    /// Rules or ml.
    pub mode: DecisionMode,
    /// The model, in ml mode.
    pub model: Option<&'a Model>,
    /// The threshold, in ml mode.
    pub threshold: Threshold,
}

/// An answer with what it was computed from: in ml mode the features it saw (none for a pair
/// never seen) and the threshold the probability was held against.
#[derive(Clone, Debug)]
pub struct Answered {
    /// The answer.
    pub decision: Decision,
    /// The features, in ml mode.
    pub features: Option<FeatureVector>,
    /// The threshold, in ml mode with a model.
    pub threshold: Option<f64>,
}

/// The one choice between rules and ml, shared by the node's policy, the replay and both
/// audit replays: rules decide from the state's read view at `now`; ml from the state and
/// the shared facts, and promises only what the ledger's spare units also cover.
#[allow(clippy::too_many_arguments)]
pub fn decide_by(
    by: DecideBy<'_>,
    state: Option<&EntityState>,
    shared: &SharedFacts,
    quantity: i64,
    surface: Surface,
    now: Timestamp,
    ledger: &LedgerConfig,
    safety_stock: &SafetyStock,
) -> Answered {
    match (by.mode, by.model) {
        (DecisionMode::Rules, _) => {
            let view = state.map(|state| state.read_view(now, ledger));
            Answered {
                decision: decide_by_rules(view.as_ref(), quantity, surface, safety_stock),
                features: None,
                threshold: None,
            }
        }
        (DecisionMode::Ml, Some(model)) => {
            let threshold = match by.threshold {
                Threshold::Model => model.threshold(surface.as_str()),
                Threshold::Given(threshold) => threshold,
            };
            let (mut decision, features) =
                decide_by_model(state, shared, model, quantity, surface, now, threshold);
            // The model may refuse more than the ledger, never promise more: a promise also
            // needs the ledger's spare units (on-hand - reserved - safety stock) to cover it,
            // so a lookup never says yes where a hold would be refused.
            if decision.available
                && state
                    .is_none_or(|state| ledger_spare_units(state, surface, safety_stock) < quantity)
            {
                decision.available = false;
                decision.reason = ReasonCode::RecordShort;
            }
            Answered {
                decision,
                features,
                threshold,
            }
        }
        (DecisionMode::Ml, None) => Answered {
            decision: model_missing(),
            features: None,
            threshold: None,
        },
    }
}

/// The answer when the pair's state cannot be read: not available, with the reason.
pub fn unavailable() -> Decision {
    Decision {
        available: false,
        probability: 0.0,
        expected_on_hand: 0.0,
        mode: DecisionMode::Rules,
        reason: ReasonCode::StateUnavailable,
    }
}

/// The answer while the store refuses writes or cannot be reached: not available, with the
/// reason (DESIGN.md property 6).
pub fn store_unavailable() -> Decision {
    Decision {
        reason: ReasonCode::StoreUnavailable,
        ..unavailable()
    }
}

/// The answer for a pair whose partition has no owner that answers now: not available.
pub fn owner_unavailable() -> Decision {
    Decision {
        reason: ReasonCode::OwnerUnavailable,
        ..unavailable()
    }
}

/// The answer in ml mode without a model: conservative, not available, with the reason.
pub fn model_missing() -> Decision {
    Decision {
        available: false,
        probability: 0.0,
        expected_on_hand: 0.0,
        mode: DecisionMode::Ml,
        reason: ReasonCode::ModelMissing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_subtract_reservations_and_safety_stock() {
        let view = ReadView {
            on_hand_units: 10,
            reserved_units: 3,
            in_transit_units: 0,
            version: 1,
        };
        let safety = SafetyStock::uniform(0).with(Surface::Pickup, 2);
        assert!(decide_by_rules(Some(&view), 7, Surface::ItemPage, &safety).available);
        assert!(!decide_by_rules(Some(&view), 6, Surface::Pickup, &safety).available);
        let pickup = decide_by_rules(Some(&view), 5, Surface::Pickup, &safety);
        assert_eq!(
            (
                pickup.available,
                pickup.probability,
                pickup.expected_on_hand
            ),
            (true, 1.0, 10.0)
        );
        let never = decide_by_rules(None, 1, Surface::ItemPage, &safety);
        assert_eq!(
            (never.available, never.reason),
            (false, ReasonCode::NoRecord)
        );
    }
}
