//! The engine's decision records: written durably (their own group commit), read back by id,
//! and replayed from the node's own log ([`Engine::replay_decision`]).

use stockgrid_storage::WriteBatch;

use crate::audit::{
    AuditCheck, AuditRecord, Decided, Lookup, NodeMoment, NodeReplay, Recomputed, differences_from,
    digest_inputs, digest_view, is_promise, put_record,
};
use crate::decision::{DecideBy, DecisionMode, Threshold, decide_by, decide_by_rules};
use crate::domain::{PairKey, Surface};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::keys;
use crate::ledger::{EntityState, ReadView};
use crate::persist::{RebuildBase, RebuildTo, decode, rebuild_entity};
use crate::time::Timestamp;

impl Engine {
    /// Writes decision records durably, in one group commit, before returning. Records have
    /// their own group committer: a promise's record never queues behind ingest batches.
    pub async fn record_decisions(&self, records: &[AuditRecord]) -> Result<(), EngineError> {
        for record in records {
            check_decision_id(
                &record.decision_id,
                PairKey::new(record.sku, record.location),
            )?;
        }
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
    /// a promise and is not waited for: it lingers up to [`super::samples::SAMPLE_LINGER`] so
    /// that the samples of many requests share one commit (a crash in between loses those
    /// samples, never a promise's record).
    pub async fn decide_recorded_many(
        &self,
        lookups: &[(String, Lookup)],
    ) -> Result<Vec<Result<Decided, EngineError>>, EngineError> {
        for (decision_id, lookup) in lookups.iter().filter(|(_, lookup)| lookup.digest) {
            check_decision_id(decision_id, lookup.pair)?;
        }
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
            self.linger_sampled_records(samples).await;
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
        if record {
            check_decision_id(decision_id, pair)?;
        }
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

    /// A decision record by its id (`None`: no such decision was recorded, or the id names no
    /// pair as a node's decision ids do).
    pub fn decision_record(&self, decision_id: &str) -> Result<Option<AuditRecord>, EngineError> {
        let Some(pair) = keys::decision_pair(decision_id) else {
            return Ok(None);
        };
        let key = keys::decision_key(pair, decision_id);
        match self.store().get(&key)? {
            Some(bytes) => Ok(Some(decode("decision record", &key, &bytes)?)),
            None => Ok(None),
        }
    }
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

/// A recorded decision's id must name its pair (`.../sku-location`): the record is kept in
/// the pair's partition and found again from the id alone.
fn check_decision_id(decision_id: &str, pair: PairKey) -> Result<(), EngineError> {
    if keys::decision_pair(decision_id) == Some(pair) {
        Ok(())
    } else {
        Err(EngineError::Invalid {
            field: "decision_id",
            reason: format!(
                "{} must end in {} (the pair it decides)",
                crate::domain::excerpt(decision_id),
                keys::decision_id_suffix(pair)
            ),
        })
    }
}
