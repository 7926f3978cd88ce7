//! Decision audit: a record of every promise with what it was computed from, and the replay
//! that proves it (the training-serving skew check).
//!
//! A record holds the decision id, the pair, the question, the moment in the event log (how
//! many arrivals had been applied), a digest of the inputs (the entity's state and its
//! shared facts), the feature vector, the model and mode, and the answer. Every pickup,
//! delivery and reservation decision is recorded; item-page decisions are counted and sampled
//! at a configurable rate (a deterministic hash of the decision id, so a rerun samples the
//! same ones).
//!
//! A running node writes the same records durably in its store (key `a` + decision id) for
//! every pickup and delivery decision and every reservation line it grants, and for the
//! sampled item-page decisions; [`Engine::decision_record`] reads one back by id. There
//! `arrivals_applied` is the pair's state version (entries applied), and [`NodeMoment`] says
//! where the decision stood in the pair's log and which shared facts it read.
//!
//! [`audit_replay`] rebuilds the entities from a replay's event file alone - the same
//! arrivals, in the same order, through the same entity code ([`crate::offline`]) - up to
//! each record's moment, recomputes features and answer, and compares them bit for bit with
//! the record. [`Engine::replay_decision`] does the same for a node's own record from the
//! node's log ([`crate::persist::rebuild_entity`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use stockgrid_inference::model::Model;

use crate::catalog::Location;
use crate::decision::{
    DecideBy, Decision, DecisionMode, SafetyStock, Threshold, decide_by, decide_by_rules,
};
use crate::domain::{Arrival, PairKey, Surface};
use crate::engine::{Decided, Engine, Lookup};
use crate::error::EngineError;
use crate::ledger::{EntityState, LedgerConfig, LookupFailed, ReadView};
use crate::offline::InMemoryLedger;
use crate::persist::{RebuildBase, RebuildTo, decode, encode, expiry_key, rebuild_entity};
use crate::time::Timestamp;
use stockgrid_inference::shared::SharedFacts;
use stockgrid_storage::WriteBatch;

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

const AUDIT_PREFIX: u8 = b'a';

/// The store key of a decision record.
pub fn audit_key(decision_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + decision_id.len());
    key.push(AUDIT_PREFIX);
    key.extend_from_slice(decision_id.as_bytes());
    key
}

/// Adds a decision record to a batch (durable with it), expiring `retention_ms` after the
/// decision's time (deleted by a maintenance pass then).
pub fn put_record(batch: &mut WriteBatch, record: &AuditRecord, retention_ms: i64) {
    let key = audit_key(&record.decision_id);
    batch.put(
        expiry_key(Timestamp(record.time_ms.saturating_add(retention_ms)), &key),
        Vec::new(),
    );
    batch.put(key, encode(record));
}

impl Engine {
    /// Writes decision records durably, in one group commit, before returning. Records have
    /// their own group committer: a promise's record never queues behind ingest batches.
    pub async fn record_decisions(&self, records: &[AuditRecord]) -> Result<(), EngineError> {
        let mut batch = WriteBatch::new();
        let retention_ms = self.decisions().audit_retention_ms();
        for record in records {
            put_record(&mut batch, record, retention_ms);
        }
        self.commit_records(batch).await
    }

    /// [`Engine::decide_recorded`] of many lookups in one pass, answered in order (a lookup
    /// whose pair cannot be read answers its own error). The records of those with `digest`
    /// set are written in one group commit of their own: a promise's record (pickup,
    /// delivery) is durable before any answer is returned; a sampled item-page record is not
    /// a promise and is not waited for (it is durable one group commit later; a crash in
    /// between loses that sample, never a promise's record).
    pub async fn decide_recorded_many(
        &self,
        lookups: &[(String, Lookup)],
    ) -> Result<Vec<Result<Decided, EngineError>>, EngineError> {
        let asks: Vec<Lookup> = lookups.iter().map(|(_, lookup)| *lookup).collect();
        let decided = self.decide_many(&asks).await?;
        let model_version = self.decisions().model_version();
        let retention_ms = self.decisions().audit_retention_ms();
        let (mut promises, mut samples) = (WriteBatch::new(), WriteBatch::new());
        for ((decision_id, lookup), decided) in lookups.iter().zip(&decided) {
            let Ok(decided) = decided else { continue };
            if !lookup.digest {
                continue;
            }
            let record = decided.record(
                decision_id.clone(),
                lookup.pair,
                lookup.quantity,
                lookup.surface,
                model_version.clone(),
            );
            let batch = if is_promise(lookup.surface) {
                &mut promises
            } else {
                &mut samples
            };
            put_record(batch, &record, retention_ms);
        }
        if !samples.is_empty() {
            let ticket = self.submit_records(samples).await;
            tokio::spawn(async move {
                if let Err(error) = ticket.wait().await {
                    tracing::warn!(%error, "sampled decision records not written");
                }
            });
        }
        if !promises.is_empty() {
            self.commit_records(promises).await?;
        }
        Ok(decided)
    }

    /// Decides `quantity` units of `pair` on `surface` by the policy and, with `record`,
    /// writes the decision's record durably under `decision_id` before returning it (a
    /// promise is answered only once its record is durable).
    pub async fn decide_recorded(
        &self,
        decision_id: &str,
        pair: PairKey,
        quantity: i64,
        surface: Surface,
        record: bool,
    ) -> Result<Decided, EngineError> {
        let decided = self.decide(pair, quantity, surface, record).await?;
        if record {
            let record = decided.record(
                decision_id.to_owned(),
                pair,
                quantity,
                surface,
                self.decisions().model_version(),
            );
            self.record_decisions(std::slice::from_ref(&record)).await?;
        }
        Ok(decided)
    }

    /// A decision record by its id (`None`: no such decision was recorded).
    pub fn decision_record(&self, decision_id: &str) -> Result<Option<AuditRecord>, EngineError> {
        let key = audit_key(decision_id);
        match self.store().get(&key)? {
            Some(bytes) => Ok(Some(decode("decision record", &key, &bytes)?)),
            None => Ok(None),
        }
    }
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
fn differences_from(record: &AuditRecord, again: &AuditRecord) -> Vec<String> {
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

/// A decision recomputed from its rebuilt pair (`None`: not rebuilt), where the rebuild
/// started, and the log position it was rebuilt at.
type Recomputed = (Option<AuditRecord>, Option<RebuildBase>, Option<u64>);

/// The outcome of replaying one of a node's decision records from its store.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReplay {
    /// The comparison (no differences: bit-identical).
    pub check: AuditCheck,
    /// Where the rebuild of the pair started (`None`: it could not be rebuilt; the reason
    /// is among the differences).
    pub base: Option<RebuildBase>,
    /// The log position the decision was rebuilt at (`None`: the pair was not known, or
    /// no position matched).
    pub log_position: Option<u64>,
}

impl Engine {
    /// Rebuilds the pair of a recorded decision from this node's event log alone, up to the
    /// decision's moment (from a checkpoint when the log's start was compacted away),
    /// recomputes the features and the answer with this node's model and configuration,
    /// and compares them bit for bit with the record (`Ok(None)`: no such record).
    ///
    /// An ml record needs the node to run the record's model (a different one is reported
    /// as a difference). A rules answer taken from a read view knows only the view's
    /// version: every log position of that version is tried, and the one whose view has
    /// the recorded digest is the moment.
    pub fn replay_decision(&self, decision_id: &str) -> Result<Option<NodeReplay>, EngineError> {
        let Some(record) = self.decision_record(decision_id)? else {
            return Ok(None);
        };
        let pair = PairKey::new(record.sku, record.location);
        let store = self.store().as_ref();
        let config = self.config();
        let time = Timestamp(record.time_ms);
        let mut differences = Vec::new();
        let (again, base, log_position) = match &record.node {
            None => {
                differences.push(
                    "the record holds no log position (written by a replay, or by a node from before records kept their log position): it cannot be rebuilt from this node's log".to_owned(),
                );
                (None, None, None)
            }
            Some(NodeMoment::Entity {
                log_position,
                shared,
                threshold,
            }) => {
                match rebuild_entity(
                    store,
                    pair,
                    log_position.map_or(RebuildTo::Unknown, RebuildTo::Position),
                    &config.ledger,
                    &mut |_, _| {},
                ) {
                    Ok(rebuilt) => {
                        let state = rebuilt.state.as_ref();
                        // An ml record without a model version answered MODEL_MISSING.
                        let needs_model = record.decision.mode == DecisionMode::Ml
                            && !record.model_version.is_empty();
                        let model = self.decisions().model().filter(|_| needs_model);
                        match &model {
                            Some(model) if model.version != record.model_version => {
                                differences.push(format!(
                                    "model: the record used {}, this node runs {}",
                                    record.model_version, model.version
                                ));
                            }
                            None if needs_model => differences.push(format!(
                                "model: the record used {}, this node has none",
                                record.model_version
                            )),
                            _ => {}
                        }
                        let by = DecideBy {
                            mode: record.decision.mode,
                            model: model.as_deref(),
                            threshold: Threshold::Given(*threshold),
                        };
                        let answered = decide_by(
                            by,
                            state,
                            shared,
                            record.quantity,
                            record.surface,
                            time,
                            &config.ledger,
                            &config.safety_stock,
                        );
                        let (decision, features) = (answered.decision, answered.features);
                        let again = AuditRecord {
                            inputs_digest: digest_inputs(state, shared),
                            features: features.map(|f| f.values.to_vec()).unwrap_or_default(),
                            decision,
                            ..record.clone()
                        };
                        (Some(again), Some(rebuilt.base), *log_position)
                    }
                    Err(error) => {
                        differences.push(format!("rebuild: {error}"));
                        (None, None, None)
                    }
                }
            }
            Some(NodeMoment::View) => self.replay_view_decision(&record, &mut differences)?,
        };
        if let Some(again) = &again {
            differences.extend(differences_from(&record, again));
        }
        Ok(Some(NodeReplay {
            check: AuditCheck {
                decision_id: record.decision_id,
                differences,
            },
            base,
            log_position,
        }))
    }

    /// A rules decision answered from a read view: the view of the log position of the
    /// recorded version whose digest is the recorded one, and the answer from it. The view's
    /// in-transit units are recomputed at the decision's time: a view published before a
    /// transfer turned overdue would differ there, and is reported as differing, not hidden.
    fn replay_view_decision(
        &self,
        record: &AuditRecord,
        differences: &mut Vec<String>,
    ) -> Result<Recomputed, EngineError> {
        let pair = PairKey::new(record.sku, record.location);
        let store = self.store().as_ref();
        let config = self.config();
        let time = Timestamp(record.time_ms);
        let version = u32::try_from(record.arrivals_applied).unwrap_or(u32::MAX);
        let again_from = |view: Option<ReadView>| AuditRecord {
            inputs_digest: digest_view(view.as_ref()),
            features: Vec::new(),
            decision: decide_by_rules(
                view.as_ref(),
                record.quantity,
                record.surface,
                &config.safety_stock,
            ),
            ..record.clone()
        };
        if version == 0 && record.inputs_digest == digest_view(None) {
            return Ok((Some(again_from(None)), Some(RebuildBase::LogStart), None));
        }
        let mut matched: Option<(u64, ReadView)> = None;
        let mut base_version: Option<u32> = None;
        let mut visit = |position: u64, state: &EntityState| {
            base_version.get_or_insert(state.applied_entries);
            if matched.is_none() && state.applied_entries == version {
                let view = state.read_view(time, &config.ledger);
                if digest_view(Some(&view)) == record.inputs_digest {
                    matched = Some((position, view));
                }
            }
        };
        match rebuild_entity(store, pair, RebuildTo::Last, &config.ledger, &mut visit) {
            Ok(rebuilt) => match matched {
                Some((position, view)) => Ok((
                    Some(again_from(Some(view))),
                    Some(rebuilt.base),
                    Some(position),
                )),
                None if base_version.is_some_and(|base| base > version) => {
                    differences.push(format!(
                        "rebuild: the log of this pair was compacted past state version {version}"
                    ));
                    Ok((None, Some(rebuilt.base), None))
                }
                None => {
                    differences.push(format!(
                        "inputs digest: no log position of state version {version} gives the recorded view"
                    ));
                    Ok((None, Some(rebuilt.base), None))
                }
            },
            Err(error) => {
                differences.push(format!("rebuild: {error}"));
                Ok((None, None, None))
            }
        }
    }
}
