//! The location-level facts every entity of a location reads: opening hours, kind, expected
//! feeds (from the catalog) and feed health (from the events), computed once per location.
//!
//! Feed health is updated in arrival order as events are admitted to the engine or a replay
//! (before dedup: a duplicate or a late event carries no newer event time, so it changes
//! nothing), which makes it a function of the arrival sequence alone, the same online and in
//! an audit replay.

use std::sync::Arc;

use dashmap::DashMap;
use stockgrid_inference::features::{LocationFacts, LocationKind};
use stockgrid_inference::hours::OpeningHours;

use crate::catalog::Location;
use crate::domain::Event;

/// Location facts by location number.
#[derive(Debug, Default)]
pub struct LocationDirectory {
    facts: DashMap<u32, LocationFacts>,
    regions: DashMap<u32, Arc<str>>,
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
        feeds: Default::default(),
    }
}

impl LocationDirectory {
    /// A directory of the catalog's locations (others get the defaults when first heard of).
    pub fn from_catalog(locations: &[Location]) -> Self {
        let directory = Self::default();
        directory.upsert(locations);
        directory
    }

    /// Adds or updates catalog entries, keeping what was learned of their feeds.
    pub fn upsert(&self, locations: &[Location]) {
        for location in locations {
            let mut described = location_facts(location);
            if let Some(known) = self.facts.get(&location.location) {
                described.feeds = known.feeds;
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
}
