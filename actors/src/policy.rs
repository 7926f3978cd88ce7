//! The decision policy of a running engine: which mode answers each surface in each region,
//! with which model, switchable at runtime and effective on the next request.
//!
//! The default mode is configuration (`ml` or `rules`); on top of it, surfaces and regions can
//! be switched to the rules fallback (ops, through the `Admin` gRPC service) - a rules switch
//! always wins. `ml` without a loaded model answers "not promised" with `MODEL_MISSING`: doubt
//! never becomes a promise. Lookups, reservations and the service all decide through
//! [`DecisionContext::decide`], so one switch moves them together.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use stockgrid_inference::features::FeatureVector;
use stockgrid_inference::model::Model;

use crate::config::EngineConfig;
use crate::decision::{Decision, DecisionMode, ReasonCode, decide_by_model, decide_by_rules};
use crate::domain::{PairKey, Surface};
use crate::ledger::EntityState;
use crate::locations::LocationDirectory;
use crate::time::Timestamp;

#[derive(Debug, Default)]
struct Switches {
    default_mode: Option<DecisionMode>,
    model: Option<Arc<Model>>,
    rules_surfaces: BTreeSet<Surface>,
    rules_regions: BTreeSet<String>,
}

/// What the policy is now, for ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySnapshot {
    /// The mode where no switch applies.
    pub default_mode: DecisionMode,
    /// The loaded model's version (`None`: none loaded).
    pub model_version: Option<String>,
    /// Surfaces switched to rules.
    pub rules_surfaces: Vec<Surface>,
    /// Regions switched to rules.
    pub rules_regions: Vec<String>,
}

/// The policy plus the location-level facts decisions read: shared by the engine and its
/// shards.
#[derive(Debug, Default)]
pub struct DecisionContext {
    switches: RwLock<Switches>,
    /// Location facts (hours, kind, expected feeds, feed health, region).
    pub locations: LocationDirectory,
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

    /// Switches a surface (or, with `None`, nothing) and a region (or nothing) to the rules
    /// fallback (`rules`) or back; effective on the next decision.
    pub fn switch_to_rules(&self, surface: Option<Surface>, region: Option<&str>, rules: bool) {
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
                switches.rules_regions.insert(region.to_owned());
            } else {
                switches.rules_regions.remove(region);
            }
        }
    }

    /// The policy now.
    pub fn snapshot(&self) -> PolicySnapshot {
        let switches = self.read();
        PolicySnapshot {
            default_mode: switches.default_mode.unwrap_or(DecisionMode::Rules),
            model_version: switches.model.as_ref().map(|m| m.version.clone()),
            rules_surfaces: switches.rules_surfaces.iter().copied().collect(),
            rules_regions: switches.rules_regions.iter().cloned().collect(),
        }
    }

    /// The mode and model for a surface at a location (the model only in ml mode).
    pub fn mode_for(&self, surface: Surface, location: u32) -> (DecisionMode, Option<Arc<Model>>) {
        let switches = self.read();
        let rules = switches.default_mode.unwrap_or(DecisionMode::Rules) == DecisionMode::Rules
            || switches.rules_surfaces.contains(&surface)
            || (!switches.rules_regions.is_empty()
                && self
                    .locations
                    .region(location)
                    .is_some_and(|region| switches.rules_regions.contains(&*region)));
        if rules {
            (DecisionMode::Rules, None)
        } else {
            (DecisionMode::Ml, switches.model.clone())
        }
    }

    /// The decision for `quantity` units of `pair` on `surface` at `now`, from its state
    /// (`None`: never seen), by the mode the policy gives; with the features in ml mode.
    pub fn decide(
        &self,
        state: Option<&EntityState>,
        pair: PairKey,
        quantity: i64,
        surface: Surface,
        now: Timestamp,
        config: &EngineConfig,
    ) -> (Decision, Option<FeatureVector>) {
        match self.mode_for(surface, pair.location) {
            (DecisionMode::Rules, _) => {
                let view = state.map(|state| state.read_view(now, &config.ledger));
                (
                    decide_by_rules(view.as_ref(), quantity, surface, &config.safety_stock),
                    None,
                )
            }
            (DecisionMode::Ml, Some(model)) => {
                let location = self.locations.facts(pair.location);
                decide_by_model(state, &location, &model, quantity, surface, now)
            }
            (DecisionMode::Ml, None) => (
                Decision {
                    available: false,
                    probability: 0.0,
                    expected_on_hand: 0.0,
                    mode: DecisionMode::Ml,
                    reason: ReasonCode::ModelMissing,
                },
                None,
            ),
        }
    }
}
