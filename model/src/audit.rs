//! Decision audit records: what every promise was computed from, and the replay that proves
//! it (the training-serving skew check).
//!
//!
//! A record holds the decision id, the pair, the question, the moment in the event log (how
//! many arrivals had been applied), a digest of the inputs (the entity's state and its
//! shared facts), the feature vector, the model and mode, and the answer. Every pickup,
//! delivery and reservation decision is recorded; item-page decisions are counted and sampled
//! at a configurable rate (a deterministic hash of the decision id, so a rerun samples the
//! same ones).
//!
//!
//! [`audit_replay`] rebuilds the entities from a replay's event file alone - the same
//! arrivals, in the same order, through the same entity code ([`crate::offline`]) - up to
//! each record's moment, recomputes features and answer, and compares them bit for bit with
//! the record. A node's own records are stored, read back and replayed from its log by the
//! engine (`stockgrid_actors`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use stockgrid_inference::features::FeatureVector;
use stockgrid_inference::model::Model;
use stockgrid_inference::shared::SharedFacts;

use crate::catalog::Location;
use crate::decision::{DecideBy, Decision, DecisionMode, SafetyStock, Threshold, decide_by};
use crate::domain::{Arrival, PairKey, Surface};
use crate::ledger::{EntityState, LedgerConfig, LookupFailed, ReadView};
use crate::offline::InMemoryLedger;
use crate::time::Timestamp;

/// One audited decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unique id of the decision.
    pub decision_id: String,
    /// The pair.
    pub sku: u64,
    /// The pair.
    pub location: u32,
    /// The surface asking.
    pub surface: Surface,
    /// Units asked.
    pub quantity: i64,
    /// When it was asked (milliseconds since the Unix epoch).
    pub time_ms: i64,
    /// Arrivals of the event log applied before it.
    pub arrivals_applied: u64,
    /// xxh3-64 of the entity's state and its shared facts (location and SKU; MessagePack), hex.
    pub inputs_digest: String,
    /// The features the scorer saw (empty in rules mode or for a pair never seen).
    pub features: Vec<f64>,
    /// Model version (empty in rules mode).
    pub model_version: String,
    /// The answer.
    pub decision: Decision,
    /// A node's decision: where it stood in the pair's log and what else it read (absent
    /// from a replay file's records, whose moment is `arrivals_applied` in the events file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeMoment>,
}

/// Where a node's decision stood, and the inputs besides the pair's log it read: what
/// [`Engine::replay_decision`] rebuilds and recomputes it from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NodeMoment {
    /// Decided by the pair's shard from the entity.
    Entity {
        /// Log records of the pair written before the decision (`None`: the pair was not
        /// known).
        log_position: Option<u64>,
        /// The facts shared with its location and SKU, as read: they are learned from
        /// every pair of the location and SKU, concurrently on other shards, so the pair's
        /// log cannot place them; the inputs digest covers them.
        shared: Box<SharedFacts>,
        /// The threshold an ml answer was held against (the model's or an experiment
        /// arm's).
        threshold: Option<f64>,
    },
    /// Decided by rules from the pair's published read view (of version
    /// `arrivals_applied`), whose digest is the inputs digest.
    View,
}

/// Whether a decision id is in the item-page sample at `rate` (deterministic).
pub fn sampled(decision_id: &str, rate: f64) -> bool {
    let hash = xxhash_rust::xxh3::xxh3_64(decision_id.as_bytes());
    (hash as f64 / u64::MAX as f64) < rate
}

/// Whether a surface's decisions are promises (always recorded).
pub fn is_promise(surface: Surface) -> bool {
    matches!(surface, Surface::Pickup | Surface::Delivery)
}

/// xxh3-64 of an entity's state and its shared facts (MessagePack), hex: what a
/// decision read.
pub fn digest_inputs(state: Option<&EntityState>, shared: &SharedFacts) -> String {
    let mut bytes = rmp_serde::to_vec(&state).unwrap_or_default();
    bytes.extend(rmp_serde::to_vec(shared).unwrap_or_default());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// xxh3-64 of a published read view (what a rules decision from the view read), hex.
pub fn digest_view(view: Option<&ReadView>) -> String {
    let bytes = rmp_serde::to_vec(&view).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

fn inputs_digest(state: Option<&EntityState>, ledger: &InMemoryLedger, pair: PairKey) -> String {
    digest_inputs(state, &ledger.shared().shared(pair))
}

/// A decision with what it was made from.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    /// The answer.
    pub decision: Decision,
    /// The pair's state version (entries applied; 0: never seen).
    pub version: u32,
    /// The features, in ml mode.
    pub features: Option<FeatureVector>,
    /// When it was decided.
    pub time: Timestamp,
    /// xxh3-64 of the inputs (state and location facts, or the read view), hex, when asked
    /// for (an audited decision): hashing the state is not free, and most item-page answers
    /// are not recorded.
    pub inputs_digest: Option<String>,
    /// Where it stood and what else it read, when its inputs were digested (for its record).
    pub moment: Option<NodeMoment>,
}

/// One availability question: `quantity` units of `pair` on `surface`, with its inputs
/// digested when `digest` (an audited decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// The pair.
    pub pair: PairKey,
    /// Units wanted.
    pub quantity: i64,
    /// The surface asking.
    pub surface: Surface,
    /// Digest the inputs (the decision will be recorded).
    pub digest: bool,
}

/// Decides one question on an in-memory ledger by `mode` (the one path replay, audit and
/// audit replay share), and the record of it (its inputs digested only with `digest`: most
/// replayed answers are not recorded).
#[allow(clippy::too_many_arguments)]
pub fn decide_and_record(
    ledger: &InMemoryLedger,
    decision_id: String,
    pair: PairKey,
    quantity: i64,
    surface: Surface,
    time: Timestamp,
    arrivals_applied: u64,
    model: Option<&Model>,
    safety_stock: &SafetyStock,
    digest: bool,
) -> AuditRecord {
    let state = ledger.state(pair);
    let by = DecideBy {
        mode: if model.is_some() {
            DecisionMode::Ml
        } else {
            DecisionMode::Rules
        },
        model,
        threshold: Threshold::Model,
    };
    let answered = decide_by(
        by,
        state,
        &ledger.shared().shared(pair),
        quantity,
        surface,
        time,
        ledger.config(),
        safety_stock,
    );
    let decided = Decided {
        decision: answered.decision,
        version: 0,
        features: answered.features,
        time,
        inputs_digest: digest.then(|| inputs_digest(state, ledger, pair)),
        moment: None,
    };
    AuditRecord {
        // The moment in a replay is the number of arrivals applied, not a state version.
        arrivals_applied,
        ..decided.record(
            decision_id,
            pair,
            quantity,
            surface,
            model.map(|m| m.version.clone()),
        )
    }
}

impl Decided {
    /// The audit record of this decision of `quantity` units of `pair` on `surface`, with
    /// the state version as its moment; `model_version` is recorded in ml mode only.
    pub fn record(
        &self,
        decision_id: String,
        pair: PairKey,
        quantity: i64,
        surface: Surface,
        model_version: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            decision_id,
            sku: pair.sku,
            location: pair.location,
            surface,
            quantity,
            time_ms: self.time.0,
            arrivals_applied: u64::from(self.version),
            inputs_digest: self.inputs_digest.clone().unwrap_or_default(),
            features: self.features.map(|f| f.values.to_vec()).unwrap_or_default(),
            model_version: match self.decision.mode {
                DecisionMode::Ml => model_version.unwrap_or_default(),
                DecisionMode::Rules => String::new(),
            },
            decision: self.decision,
            node: self.moment.clone(),
        }
    }
}

/// The outcome of replaying one record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditCheck {
    /// The record's decision id.
    pub decision_id: String,
    /// What differs (empty: bit-identical).
    pub differences: Vec<String>,
}

/// Rebuilds the entities from `events` (in arrival order, as `read_events` returns them)
/// up to each record's moment and recomputes it. `model` must be the record's model for
/// ml records (checked by version).
pub fn audit_replay(
    records: &[AuditRecord],
    events: &[(usize, Arrival)],
    locations: &[Location],
    config: &LedgerConfig,
    model: Option<&Model>,
    safety_stock: &SafetyStock,
) -> Result<Vec<AuditCheck>, LookupFailed> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&index| records[index].arrivals_applied);
    let mut ledger = InMemoryLedger::new(config.clone(), locations);
    let mut applied = 0u64;
    let mut checks: HashMap<usize, AuditCheck> = HashMap::new();
    for index in order {
        let record = &records[index];
        while applied < record.arrivals_applied {
            let Some((_, arrival)) = events.get(applied as usize) else {
                break;
            };
            ledger.apply(arrival)?;
            applied += 1;
        }
        let mut differences = Vec::new();
        if applied != record.arrivals_applied {
            differences.push(format!(
                "the event log has {applied} arrivals; the record was made after {}",
                record.arrivals_applied
            ));
        }
        let record_model = match record.decision.mode {
            DecisionMode::Ml => match model {
                Some(model) if model.version == record.model_version => Some(model),
                Some(model) => {
                    differences.push(format!(
                        "model: the record used {}, the replay has {}",
                        record.model_version, model.version
                    ));
                    Some(model)
                }
                None => {
                    differences.push("model: the record is ml; no model given".to_owned());
                    None
                }
            },
            DecisionMode::Rules => None,
        };
        let again = decide_and_record(
            &ledger,
            record.decision_id.clone(),
            PairKey::new(record.sku, record.location),
            record.quantity,
            record.surface,
            Timestamp(record.time_ms),
            record.arrivals_applied,
            record_model,
            safety_stock,
            true,
        );
        differences.extend(differences_from(record, &again));
        checks.insert(
            index,
            AuditCheck {
                decision_id: record.decision_id.clone(),
                differences,
            },
        );
    }
    Ok((0..records.len())
        .filter_map(|index| checks.remove(&index))
        .collect())
}

/// How a recomputed decision differs from its record, bit for bit (empty: identical).
pub fn differences_from(record: &AuditRecord, again: &AuditRecord) -> Vec<String> {
    let mut differences = Vec::new();
    if again.inputs_digest != record.inputs_digest {
        differences.push(format!(
            "inputs digest: recorded {}, rebuilt {}",
            record.inputs_digest, again.inputs_digest
        ));
    }
    let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    if bits(&again.features) != bits(&record.features) {
        differences.push(format!(
            "features: recorded {:?}, recomputed {:?}",
            record.features, again.features
        ));
    }
    let answer_bits = |d: &Decision| {
        (
            d.available,
            d.probability.to_bits(),
            d.expected_on_hand.to_bits(),
            d.mode,
            d.reason,
        )
    };
    if answer_bits(&again.decision) != answer_bits(&record.decision) {
        differences.push(format!(
            "answer: recorded {:?}, recomputed {:?}",
            record.decision, again.decision
        ));
    }
    differences
}
