//! The decision policy of a running engine: which mode answers each surface in each region,
//! with which model, switchable at runtime and effective on the next request.
//!
//! The default mode is configuration (`ml` or `rules`); on top of it, surfaces and regions can
//! be switched to the rules fallback (ops, through the `Admin` gRPC service) - a rules switch
//! always wins. A region whose live features drift from the model's training distribution
//! (PSI over a window of its ml decisions above [`DRIFT_PSI_THRESHOLD`]) falls back to rules
//! on its own, says so in the log and in the policy, and stays there until ops switches the
//! region back. `ml` without a loaded model answers "not promised" with `MODEL_MISSING`: doubt
//! never becomes a promise. Lookups, reservations and the service all decide through
//! [`DecisionContext::decide`], so one switch moves them together.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use stockgrid_inference::drift::DriftWindow;
use stockgrid_inference::features::FEATURE_COUNT;
use stockgrid_inference::model::Model;

use crate::audit::{is_promise, sampled};
use crate::config::EngineConfig;
use crate::decision::{Answered, DecideBy, DecisionMode, Threshold, decide_by};
use crate::domain::{PairKey, Surface};
use crate::experiment::Experiment;
use crate::ledger::EntityState;
use crate::shared::SharedDirectory;
use crate::time::Timestamp;
use stockgrid_inference::shared::SharedFacts;

/// Most regions switched to rules at once.
pub const MAX_RULES_REGIONS: usize = 1_024;
/// Longest region name a switch accepts (the catalog's are at most 64 bytes).
pub const MAX_REGION_BYTES: usize = 128;

/// Ml decisions per region between two drift measurements.
pub const DRIFT_WINDOW_DECISIONS: u64 = 2_000;
/// PSI above which a region falls back to rules on its own.
pub const DRIFT_PSI_THRESHOLD: f64 = 0.25;

#[derive(Debug, Default)]
struct Switches {
    default_mode: Option<DecisionMode>,
    model: Option<Arc<Model>>,
    rules_surfaces: BTreeSet<Surface>,
    rules_regions: BTreeSet<String>,
    /// Regions that fell back to rules because their features drifted.
    drifted_regions: BTreeSet<String>,
}

/// The decision policy's switches as the store keeps them: one record for the whole grid,
/// its version raised by every change, so that an answer does not depend on which node owns
/// the pair and does not change on failover. Every node applies the record it reads
/// ([`DecisionContext::apply_policy_record`]); changes are made to the record
/// (`Engine::change_policy`) and applied from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Raised by every change (0: never written).
    pub version: u64,
    /// Surfaces switched to rules.
    pub rules_surfaces: Vec<Surface>,
    /// Regions switched to rules by an operator.
    pub rules_regions: Vec<String>,
    /// Regions fallen back to rules because their features drifted.
    pub drifted_regions: Vec<String>,
}

impl PolicyRecord {
    /// Switches a surface and a region to rules or back, as
    /// [`DecisionContext::switch_to_rules`] does; `false` when the region would pass
    /// [`MAX_RULES_REGIONS`] (nothing changed).
    pub fn switch_to_rules(
        &mut self,
        surface: Option<Surface>,
        region: Option<&str>,
        rules: bool,
    ) -> bool {
        if let Some(region) = region
            && rules
            && self.rules_regions.len() >= MAX_RULES_REGIONS
            && !self.rules_regions.iter().any(|r| r == region)
        {
            return false;
        }
        if let Some(surface) = surface {
            self.rules_surfaces.retain(|s| *s != surface);
            if rules {
                self.rules_surfaces.push(surface);
                self.rules_surfaces.sort();
            }
        }
        if let Some(region) = region {
            self.rules_regions.retain(|r| r != region);
            if rules {
                self.rules_regions.push(region.to_owned());
                self.rules_regions.sort();
            } else {
                // Switching a region back also lifts a drift fallback: ops has looked.
                self.drifted_regions.retain(|r| r != region);
            }
        }
        true
    }

    /// Adds drift fallbacks (bounded like operator switches).
    pub fn add_drifted(&mut self, regions: impl IntoIterator<Item = String>) {
        for region in regions {
            if !self.drifted_regions.contains(&region)
                && self.drifted_regions.len() < MAX_RULES_REGIONS
            {
                self.drifted_regions.push(region);
            }
        }
        self.drifted_regions.sort();
    }
}

/// The latest drift measurement of a region.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionDrift {
    /// The region.
    pub region: String,
    /// The monitored feature with the largest PSI.
    pub feature: &'static str,
    /// Its PSI.
    pub psi: f64,
    /// Ml decisions measured.
    pub decisions: u64,
    /// Whether the region fell back to rules for it.
    pub fallback: bool,
}

/// Days a decision record is kept after its decision unless configured otherwise.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 730;

/// What the policy is now, for ops.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySnapshot {
    /// The version of the grid's policy record in force (0: none written yet).
    pub version: u64,
    /// The mode where no switch applies.
    pub default_mode: DecisionMode,
    /// The loaded model's version (`None`: none loaded).
    pub model_version: Option<String>,
    /// Surfaces switched to rules.
    pub rules_surfaces: Vec<Surface>,
    /// Regions switched to rules.
    pub rules_regions: Vec<String>,
    /// Regions fallen back to rules on drift.
    pub drifted_regions: Vec<String>,
    /// The latest drift measurement per region.
    pub drift: Vec<RegionDrift>,
    /// Item-page decisions answered.
    pub item_page_decisions: u64,
    /// Item-page decisions recorded (the sample).
    pub item_page_audited: u64,
}

/// The policy plus the location-level facts decisions read: shared by the engine and its
/// shards.
#[derive(Debug, Default)]
pub struct DecisionContext {
    switches: RwLock<Switches>,
    /// Share of item-page decisions recorded, in millionths.
    audit_item_page_millionths: AtomicU64,
    /// Decision-record retention, milliseconds (0: [`DEFAULT_AUDIT_RETENTION_DAYS`]).
    audit_retention_ms: AtomicI64,
    /// Item-page decisions answered, and how many of them were recorded.
    pub item_page_decisions: AtomicU64,
    /// Item-page decisions recorded (the sample).
    pub item_page_audited: AtomicU64,
    experiment: RwLock<Option<Arc<Experiment>>>,
    drift: std::sync::Mutex<HashMap<String, (DriftWindow, Option<RegionDrift>)>>,
    /// Facts shared by a location's or a SKU's pairs (hours, feeds, region, demand shape,
    /// velocity, losses).
    pub shared: SharedDirectory,
    /// The version of the policy record last applied (0: none).
    policy_version: AtomicU64,
    /// Regions this node saw drift in, not yet written to the policy record.
    pending_drift: std::sync::Mutex<BTreeSet<String>>,
}

impl DecisionContext {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Switches> {
        self.switches
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Switches> {
        self.switches
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the default mode and the model.
    pub fn configure(&self, default_mode: DecisionMode, model: Option<Arc<Model>>) {
        let mut switches = self.write();
        switches.default_mode = Some(default_mode);
        switches.model = model;
    }

    /// Whether `region` may be switched to rules: a name of 1 to [`MAX_REGION_BYTES`] bytes
    /// without control characters, and room for it among at most [`MAX_RULES_REGIONS`]
    /// switched regions (every answer of the policy lists them). Else why not.
    pub fn check_rules_region(&self, region: &str) -> Result<(), String> {
        if region.is_empty() || region.len() > MAX_REGION_BYTES {
            return Err(format!(
                "must be 1 to {MAX_REGION_BYTES} bytes, got {}",
                region.len()
            ));
        }
        if region.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        let switches = self.read();
        if switches.rules_regions.len() >= MAX_RULES_REGIONS
            && !switches.rules_regions.contains(region)
        {
            return Err(format!(
                "{MAX_RULES_REGIONS} regions are already switched to rules; switch one back first"
            ));
        }
        Ok(())
    }

    /// Switches a surface (or, with `None`, nothing) and a region (or nothing) to the rules
    /// fallback (`rules`) or back; effective on the next decision. A region past
    /// [`MAX_RULES_REGIONS`] is not added, and the answer is `false` (nothing changed;
    /// [`DecisionContext::check_rules_region`] says why); otherwise `true`.
    pub fn switch_to_rules(
        &self,
        surface: Option<Surface>,
        region: Option<&str>,
        rules: bool,
    ) -> bool {
        let mut switches = self.write();
        if let Some(surface) = surface {
            if rules {
                switches.rules_surfaces.insert(surface);
            } else {
                switches.rules_surfaces.remove(&surface);
            }
        }
        if let Some(region) = region {
            if rules {
                if switches.rules_regions.len() >= MAX_RULES_REGIONS
                    && !switches.rules_regions.contains(region)
                {
                    return false;
                }
                switches.rules_regions.insert(region.to_owned());
            } else {
                switches.rules_regions.remove(region);
                // Switching a region back also lifts a drift fallback: ops has looked.
                switches.drifted_regions.remove(region);
                if let Some((window, latest)) = self.drift_windows().get_mut(region) {
                    *window = DriftWindow::default();
                    if let Some(latest) = latest {
                        latest.fallback = false;
                    }
                }
            }
        }
        true
    }

    fn drift_windows(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (DriftWindow, Option<RegionDrift>)>> {
        self.drift
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts an ml decision's features in its region's window; every
    /// [`DRIFT_WINDOW_DECISIONS`] it measures the PSI and, above [`DRIFT_PSI_THRESHOLD`],
    /// switches the region to rules and says so.
    fn watch_drift(&self, model: &Model, location: u32, values: &[f64; FEATURE_COUNT]) {
        if model.drift.features.is_empty() {
            return;
        }
        let Some(region) = self.shared.region(location) else {
            return;
        };
        let measured = {
            let mut windows = self.drift_windows();
            if !windows.contains_key(&*region) {
                windows.insert(region.to_string(), (DriftWindow::default(), None));
            }
            let Some((window, latest)) = windows.get_mut(&*region) else {
                return; // Cannot happen: inserted just above, under the same lock.
            };
            window.add(&model.drift, values);
            if window.total < DRIFT_WINDOW_DECISIONS {
                return;
            }
            let Some((feature, psi)) = window.worst(&model.drift) else {
                return;
            };
            let drift = RegionDrift {
                region: region.to_string(),
                feature,
                psi,
                decisions: window.total,
                fallback: psi > DRIFT_PSI_THRESHOLD,
            };
            *window = DriftWindow::default();
            *latest = Some(drift.clone());
            drift
        };
        if measured.fallback {
            tracing::warn!(
                region = measured.region,
                feature = measured.feature,
                psi = measured.psi,
                "feature drift above {DRIFT_PSI_THRESHOLD}: the region falls back to rules"
            );
            self.write().drifted_regions.insert(measured.region.clone());
            // The grid learns it through the policy record (`Engine::sync_policy`).
            self.pending_drift
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(measured.region);
        }
    }

    /// The version of the policy record last applied (0: none yet).
    pub fn policy_version(&self) -> u64 {
        self.policy_version.load(Ordering::Acquire)
    }

    /// Applies the grid's policy record: its switches replace this node's, and a region no
    /// longer fallen back starts a fresh drift window. Only a record newer than the one
    /// applied is (so a switch made here alone while the store was out of reach stays until
    /// the grid's policy changes).
    pub fn apply_policy_record(&self, record: &PolicyRecord) {
        let mut switches = self.write();
        if record.version <= self.policy_version.load(Ordering::Acquire) {
            return;
        }
        let lifted: Vec<String> = switches
            .drifted_regions
            .iter()
            .filter(|region| !record.drifted_regions.contains(region))
            .cloned()
            .collect();
        switches.rules_surfaces = record.rules_surfaces.iter().copied().collect();
        switches.rules_regions = record.rules_regions.iter().cloned().collect();
        switches.drifted_regions = record.drifted_regions.iter().cloned().collect();
        self.policy_version.store(record.version, Ordering::Release);
        drop(switches);
        let mut windows = self.drift_windows();
        for region in lifted {
            if let Some((window, latest)) = windows.get_mut(&region) {
                *window = DriftWindow::default();
                if let Some(latest) = latest {
                    latest.fallback = false;
                }
            }
        }
    }

    /// Regions whose drift this node measured since the last call, for the policy record.
    pub fn take_pending_drift(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .pending_drift
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts back regions whose drift could not be written yet.
    pub fn restore_pending_drift(&self, regions: impl IntoIterator<Item = String>) {
        self.pending_drift
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(regions);
    }

    /// Starts (or, with `None`, ends) an experiment.
    pub fn set_experiment(&self, experiment: Option<Arc<Experiment>>) {
        *self
            .experiment
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = experiment;
    }

    /// The running experiment, if any.
    pub fn experiment(&self) -> Option<Arc<Experiment>> {
        self.experiment
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether a rules switch (surface, region, or a region's drift) covers this decision:
    /// switches win over the default mode and over experiment arms.
    fn switched_to_rules(&self, surface: Surface, location: u32) -> bool {
        self.switched_in(&self.read(), surface, location)
    }

    /// [`Self::switched_to_rules`] under switches already read (one read of the lock a
    /// decision: both worker threads take it for every lookup).
    fn switched_in(&self, switches: &Switches, surface: Surface, location: u32) -> bool {
        switches.rules_surfaces.contains(&surface)
            || ((!switches.rules_regions.is_empty() || !switches.drifted_regions.is_empty())
                && self.shared.region(location).is_some_and(|region| {
                    switches.rules_regions.contains(&*region)
                        || switches.drifted_regions.contains(&*region)
                }))
    }

    /// Sets the share of item-page decisions recorded (0 to 1).
    pub fn set_audit_item_page_rate(&self, rate: f64) {
        self.audit_item_page_millionths
            .store((rate.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Keeps decision records written from now on for `days` days after their decision
    /// (at least one).
    pub fn set_audit_retention_days(&self, days: u32) {
        self.audit_retention_ms.store(
            i64::from(days.max(1)) * 24 * crate::time::HOUR_MS,
            Ordering::Relaxed,
        );
    }

    /// How long decision records are kept after their decision, milliseconds.
    pub fn audit_retention_ms(&self) -> i64 {
        match self.audit_retention_ms.load(Ordering::Relaxed) {
            0 => i64::from(DEFAULT_AUDIT_RETENTION_DAYS) * 24 * crate::time::HOUR_MS,
            set => set,
        }
    }

    /// Whether a decision is recorded: always for pickup and delivery, for the item page in
    /// the configured sample (counted either way).
    pub fn audits(&self, surface: Surface, decision_id: &str) -> bool {
        if is_promise(surface) {
            return true;
        }
        if surface != Surface::ItemPage {
            return false;
        }
        self.item_page_decisions.fetch_add(1, Ordering::Relaxed);
        let rate = self.audit_item_page_millionths.load(Ordering::Relaxed) as f64 / 1e6;
        let chosen = sampled(decision_id, rate);
        if chosen {
            self.item_page_audited.fetch_add(1, Ordering::Relaxed);
        }
        chosen
    }

    /// The loaded model, if any.
    pub fn model(&self) -> Option<Arc<Model>> {
        self.read().model.clone()
    }

    /// The version of the loaded model, if any.
    pub fn model_version(&self) -> Option<String> {
        self.read()
            .model
            .as_ref()
            .map(|model| model.version.clone())
    }

    /// The policy now.
    pub fn snapshot(&self) -> PolicySnapshot {
        let switches = self.read();
        PolicySnapshot {
            version: self.policy_version(),
            default_mode: switches.default_mode.unwrap_or(DecisionMode::Rules),
            model_version: switches.model.as_ref().map(|m| m.version.clone()),
            rules_surfaces: switches.rules_surfaces.iter().copied().collect(),
            rules_regions: switches.rules_regions.iter().cloned().collect(),
            drifted_regions: switches.drifted_regions.iter().cloned().collect(),
            drift: {
                let windows = self.drift_windows();
                let mut drift: Vec<RegionDrift> = windows
                    .values()
                    .filter_map(|(_, latest)| latest.clone())
                    .collect();
                drift.sort_by(|a, b| a.region.cmp(&b.region));
                drift
            },
            item_page_decisions: self.item_page_decisions.load(Ordering::Relaxed),
            item_page_audited: self.item_page_audited.load(Ordering::Relaxed),
        }
    }

    /// The mode and model for a surface at a location (the model only in ml mode), outside
    /// any experiment.
    pub fn mode_for(&self, surface: Surface, location: u32) -> (DecisionMode, Option<Arc<Model>>) {
        let switches = self.read();
        match Self::mode_in(&switches, self.switched_in(&switches, surface, location)) {
            DecisionMode::Rules => (DecisionMode::Rules, None),
            DecisionMode::Ml => (DecisionMode::Ml, switches.model.clone()),
        }
    }

    /// The mode under `switches` of a decision that a switch does or does not cover.
    fn mode_in(switches: &Switches, switched: bool) -> DecisionMode {
        if switched {
            DecisionMode::Rules
        } else {
            switches.default_mode.unwrap_or(DecisionMode::Rules)
        }
    }

    /// Whether a decision must go to the owning shard (ml, or an experiment that may need
    /// ml): rules alone are answered from the read view.
    pub fn needs_entity(&self, surface: Surface, location: u32) -> bool {
        let switched = {
            let switches = self.read();
            let switched = self.switched_in(&switches, surface, location);
            if Self::mode_in(&switches, switched) == DecisionMode::Ml {
                return true;
            }
            switched
        };
        !switched
            && self
                .experiment
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some()
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_as(
        &self,
        state: Option<&EntityState>,
        shared: &SharedFacts,
        ask: &Ask,
        config: &EngineConfig,
        mode: DecisionMode,
        model: Option<&Arc<Model>>,
        threshold: Threshold,
    ) -> Answered {
        let by = DecideBy {
            mode,
            model: model.map(Arc::as_ref),
            threshold,
        };
        let answer = decide_by(
            by,
            state,
            shared,
            ask.quantity,
            ask.surface,
            ask.now,
            &config.ledger,
            &config.safety_stock,
        );
        if let (Some(model), Some(features)) = (model, &answer.features) {
            self.watch_drift(model, ask.pair.location, &features.values);
        }
        answer
    }

    /// The decision of `ask` from the pair's state (`None`: never seen), by the mode the
    /// policy gives - or, in a running experiment, the location's arm (counted, with every
    /// arm's shadow answer when configured; `reservation` names the reservation a hold
    /// decides for, so its outcome can be credited) - with the features in ml mode.
    pub fn decide(
        &self,
        state: Option<&EntityState>,
        shared: &SharedFacts,
        ask: Ask,
        config: &EngineConfig,
        reservation: Option<&Arc<str>>,
    ) -> Answered {
        if let Some(experiment) = self.experiment()
            && !self.switched_to_rules(ask.surface, ask.pair.location)
        {
            let model = self.read().model.clone();
            let arm_answer = |arm: usize| {
                let spec = &experiment.spec().arms[arm];
                // An arm without a threshold for the surface uses the model's.
                let threshold = spec
                    .thresholds
                    .get(&ask.surface)
                    .map_or(Threshold::Model, |&threshold| {
                        Threshold::Given(Some(threshold))
                    });
                self.decide_as(
                    state,
                    shared,
                    &ask,
                    config,
                    spec.mode,
                    model.as_ref(),
                    threshold,
                )
            };
            let arm = experiment.arm_of(ask.pair.location);
            let served = arm_answer(arm);
            let shadow = experiment.spec().shadow.then(|| {
                (0..experiment.spec().arms.len()).fold(0u32, |bits, other| {
                    let available = if other == arm {
                        served.decision.available
                    } else {
                        arm_answer(other).decision.available
                    };
                    bits | (u32::from(available) << other)
                })
            });
            experiment.record_decision(
                arm,
                served.decision.available,
                shadow,
                reservation.map(|id| (id, ask.pair)),
            );
            return served;
        }
        let (mode, model) = self.mode_for(ask.surface, ask.pair.location);
        self.decide_as(
            state,
            shared,
            &ask,
            config,
            mode,
            model.as_ref(),
            Threshold::Model,
        )
    }
}

/// One question to decide.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ask {
    /// The pair.
    pub pair: PairKey,
    /// Units wanted.
    pub quantity: i64,
    /// The surface asking.
    pub surface: Surface,
    /// When.
    pub now: Timestamp,
}

#[cfg(test)]
mod tests {
    use stockgrid_inference::drift::DriftBaseline;

    use super::*;
    use crate::catalog::LocationInput;

    fn row(i: usize, shift: f64) -> [f64; FEATURE_COUNT] {
        let mut row = [0.0; FEATURE_COUNT];
        for (k, value) in row.iter_mut().enumerate() {
            *value = ((i * (k + 3) * 7_919) % 1_000) as f64 / 100.0 + shift;
        }
        row
    }

    #[test]
    fn a_drifting_region_falls_back_to_rules_until_switched_back() {
        let mut model = Model::prior();
        let training: Vec<_> = (0..10_000).map(|i| row(i, 0.0)).collect();
        model.drift = DriftBaseline::from_rows(&training);
        let model = Arc::new(model);
        let context = DecisionContext::default();
        context.configure(DecisionMode::Ml, Some(Arc::clone(&model)));
        let location = |number: u32, region: &str| {
            LocationInput {
                location: number,
                region: Some(region.to_owned()),
                ..LocationInput::default()
            }
            .validate()
            .expect("valid")
        };
        context
            .shared
            .upsert(&[location(1, "steady"), location(2, "moving")]);
        for i in 0..DRIFT_WINDOW_DECISIONS as usize {
            context.watch_drift(&model, 1, &row(i, 0.0));
            context.watch_drift(&model, 2, &row(i, 5.0));
        }
        assert_eq!(context.mode_for(Surface::Pickup, 1).0, DecisionMode::Ml);
        assert_eq!(context.mode_for(Surface::Pickup, 2).0, DecisionMode::Rules);
        let snapshot = context.snapshot();
        let moving = snapshot
            .drift
            .iter()
            .find(|d| d.region == "moving")
            .expect("measured");
        assert!(
            moving.fallback && moving.psi > DRIFT_PSI_THRESHOLD,
            "{moving:?}"
        );
        let steady = snapshot
            .drift
            .iter()
            .find(|d| d.region == "steady")
            .expect("measured");
        assert!(!steady.fallback && steady.psi < 0.1, "{steady:?}");
        // Ops switches the region back: ml again, with a fresh window.
        context.switch_to_rules(None, Some("moving"), false);
        assert_eq!(context.mode_for(Surface::Pickup, 2).0, DecisionMode::Ml);
    }
}
