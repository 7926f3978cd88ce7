//! The shared facts every entity reads, computed once: per location its opening hours, kind,
//! expected feeds (from the catalog), feed health, demand shape and the losses its counts
//! revealed; per SKU its velocity across locations and its losses (see
//! `stockgrid_inference::shared` for what each means and assumes).
//!
//! Feed health is updated in arrival order as events are admitted to the engine or a replay
//! (before dedup: a duplicate or a late event carries no newer event time, so it changes
//! nothing). The demand, velocity and loss statistics are learned from events once they are
//! applied (after dedup), by comparing the entity before and after ([`SharedDirectory::learn`]).
//! All of them are counts and sums, so they are a function of the set of events applied,
//! whatever order different pairs' events came in: the same online and in an audit replay.
//!
//! They are persisted by the engine at each maintenance pass and at shutdown
//! ([`SharedDirectory::learned`], [`SharedDirectory::restore`]): a crash loses what was
//! learned since the last pass, which only makes the statistics a little younger.

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use stockgrid_inference::belief::BeliefStats;
use stockgrid_inference::feeds::FeedHealth;
use stockgrid_inference::hours::OpeningHours;
use stockgrid_inference::shared::{
    DemandShape, LocationFacts, LocationKind, LossStats, SharedFacts, SkuStats,
};

use crate::catalog::Location;
use crate::domain::{Event, EventKind, PairKey};
use crate::ledger::{EntityState, EntryRole, LedgerEntry};
use crate::time::Timestamp;

/// The maps' hasher: fast on small integer keys (every event reaches a map here); their
/// iteration order never matters ([`SharedDirectory::learned`] sorts).
type Hasher = foldhash::fast::RandomState;

/// Shared facts by location number and by SKU.
#[derive(Debug, Default)]
pub struct SharedDirectory {
    facts: DashMap<u32, LocationFacts, Hasher>,
    regions: DashMap<u32, Arc<str>, Hasher>,
    skus: DashMap<u64, SkuStats, Hasher>,
}

/// The catalog's description of a location, in the belief's vocabulary.
pub fn location_facts(location: &Location) -> LocationFacts {
    LocationFacts {
        hours: OpeningHours::new(&location.timezone, location.open_hour, location.close_hour),
        kind: match location.kind.as_str() {
            "fc" => LocationKind::FulfillmentCenter,
            "warehouse" => LocationKind::Warehouse,
            _ => LocationKind::Store,
        },
        expected_sources: location
            .sources
            .iter()
            .fold(0u8, |bits, source| bits | 1 << source.index()),
        ..LocationFacts::default()
    }
}

/// What an entity looked like before an entry was applied, as far as the shared statistics
/// care (taken by [`SharedDirectory::before`], compared by [`SharedDirectory::learn`]).
#[derive(Clone, Copy, Debug)]
pub struct Before {
    on_hand_units: i64,
    belief: BeliefStats,
    anchor_time: Option<Timestamp>,
}

/// What the directory learned, as persisted.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedShared {
    /// Per location: feed health, demand shape, losses.
    pub locations: Vec<(u32, FeedHealth, DemandShape, LossStats)>,
    /// Per SKU.
    pub skus: Vec<(u64, SkuStats)>,
}

impl SharedDirectory {
    /// A directory of the catalog's locations (others get the defaults when first heard of).
    pub fn from_catalog(locations: &[Location]) -> Self {
        let directory = Self::default();
        directory.upsert(locations);
        directory
    }

    /// Adds or updates catalog entries, keeping what was learned of them.
    pub fn upsert(&self, locations: &[Location]) {
        for location in locations {
            let mut described = location_facts(location);
            if let Some(known) = self.facts.get(&location.location) {
                described.feeds = known.feeds;
                described.demand = known.demand;
                described.losses = known.losses;
            }
            self.facts.insert(location.location, described);
            match &location.region {
                Some(region) => {
                    self.regions
                        .insert(location.location, Arc::from(region.as_str()));
                }
                None => {
                    self.regions.remove(&location.location);
                }
            }
        }
    }

    /// The region of a location, if the catalog names one.
    pub fn region(&self, location: u32) -> Option<Arc<str>> {
        self.regions
            .get(&location)
            .map(|region| Arc::clone(&region))
    }

    /// Records an admitted event's source and time at its location.
    pub fn heard(&self, event: &Event) {
        let mut facts = self.facts.entry(event.pair.location).or_default();
        let hours = facts.hours;
        facts
            .feeds
            .heard(event.source.index(), event.event_time.0, &hours);
    }

    /// The facts of a location (the defaults if never described nor heard of).
    pub fn facts(&self, location: u32) -> LocationFacts {
        self.facts
            .get(&location)
            .map(|facts| *facts)
            .unwrap_or_default()
    }

    /// Everything shared a pair reads: its location's facts and its SKU's statistics.
    pub fn shared(&self, pair: PairKey) -> SharedFacts {
        SharedFacts {
            location: self.facts(pair.location),
            sku: self.skus.get(&pair.sku).map(|sku| *sku).unwrap_or_default(),
        }
    }

    /// The part of `state` [`learn`](Self::learn) compares against, taken before an entry is
    /// applied to it.
    pub fn before(state: &EntityState) -> Before {
        Before {
            on_hand_units: state.on_hand_units,
            belief: state.belief,
            anchor_time: state.anchor.as_ref().map(|anchor| anchor.event_time),
        }
    }

    /// Learns from a newly applied entry (`state` is the entity after it; `before` what it
    /// was): a sale counts in its location's demand shape and its SKU's velocity, a new pair
    /// in its SKU's exposure, and a cycle count that replaced an earlier anchor in the losses
    /// of its location and SKU.
    pub fn learn(&self, entry: &LedgerEntry, before: &Before, state: &EntityState) {
        if entry.role != EntryRole::Primary {
            return;
        }
        let event = &entry.event;
        let (was, now) = (&before.belief, &state.belief);
        let sold = now.sale_events > was.sale_events;
        let first_seen_moved = now.first_seen != was.first_seen;
        let count_loss = (event.kind == EventKind::Count)
            .then(|| {
                let anchor = state.anchor.as_ref()?;
                let moved = anchor.event_id.as_ref() == event.event_id.as_str()
                    && anchor.source == event.source;
                let previous = before.anchor_time?;
                (moved && previous < event.event_time).then(|| {
                    (
                        before.on_hand_units - state.on_hand_units,
                        was.units_sold_since_anchor,
                        u64::try_from((event.event_time.0 - previous.0) / 1_000).unwrap_or(0),
                    )
                })
            })
            .flatten();
        if sold || count_loss.is_some() {
            let mut facts = self.facts.entry(event.pair.location).or_default();
            let hours = facts.hours;
            if sold {
                facts.demand.record_sale(&hours, event.event_time.0);
            }
            if let Some((lost, sold_units, seconds)) = count_loss {
                facts.losses.record(lost, sold_units, seconds);
            }
        }
        if sold || first_seen_moved || count_loss.is_some() {
            let mut sku = self.skus.entry(event.pair.sku).or_default();
            if first_seen_moved {
                sku.pair_first_seen(was.first_seen, now.first_seen);
            }
            if sold {
                sku.record_sale();
            }
            if let Some((lost, sold_units, seconds)) = count_loss {
                sku.losses.record(lost, sold_units, seconds);
            }
        }
    }

    /// What was learned, for persisting (sorted, so equal directories give equal bytes).
    pub fn learned(&self) -> LearnedShared {
        let mut locations: Vec<_> = self
            .facts
            .iter()
            .map(|facts| (*facts.key(), facts.feeds, facts.demand, facts.losses))
            .collect();
        locations.sort_unstable_by_key(|(location, ..)| *location);
        let mut skus: Vec<_> = self.skus.iter().map(|sku| (*sku.key(), *sku)).collect();
        skus.sort_unstable_by_key(|(sku, _)| *sku);
        LearnedShared { locations, skus }
    }

    /// Takes back what a previous run learned (catalog facts stay as they are).
    pub fn restore(&self, learned: LearnedShared) {
        for (location, feeds, demand, losses) in learned.locations {
            let mut facts = self.facts.entry(location).or_default();
            facts.feeds = feeds;
            facts.demand = demand;
            facts.losses = losses;
        }
        for (sku, stats) in learned.skus {
            self.skus.insert(sku, stats);
        }
    }
}
