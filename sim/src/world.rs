//! The simulated network laid out from a scenario and a seed: locations with their kind,
//! region, time zone, hours and feeds; the items carried at each location with their demand;
//! the location-level fault windows (stuck WMS feeds, regional backlogs).
//!
//! Everything here is decided before the first simulated day, from streams keyed by location
//! or pair, so the day-by-day simulation of one item family never depends on another's.

use stockgrid_actors::domain::Source;

use crate::civil::{DAY_MS, HOUR_MS, weekday};
use crate::rng::{SimRng, Stream};
use crate::scenario::{Scenario, ScenarioError, utc_offset_hours};
use crate::traces::Traces;

/// What a location is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocationKind {
    /// A store: sells over the counter, takes pickup orders.
    Store,
    /// A fulfillment center: ships online orders.
    Fc,
    /// A warehouse: supplies stores and FCs.
    Warehouse,
}

impl LocationKind {
    /// The text form of locations.jsonl.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Store => "store",
            LocationKind::Fc => "fc",
            LocationKind::Warehouse => "warehouse",
        }
    }
}

/// One location of the network.
#[derive(Clone, Debug)]
pub struct LocationSpec {
    /// Its number: region (1-based) x 100 + 1..49 stores, 50..59 FCs, 90..99 warehouses.
    pub id: u32,
    /// What it is.
    pub kind: LocationKind,
    /// Index into the scenario's regions.
    pub region: usize,
    /// Local time minus UTC.
    pub utc_offset_ms: i64,
    /// Opening hour, local.
    pub open_hour: u32,
    /// Closing hour, local.
    pub close_hour: u32,
    /// Whether it sweeps with RFID.
    pub rfid: bool,
    /// The feeds it is expected to send.
    pub sources: Vec<Source>,
    /// With traces: the M5 store whose sales it follows, and its clone number.
    pub m5_store: Option<(String, u32)>,
    /// WMS stuck spells, absolute UTC milliseconds `[start, end)`.
    pub wms_stuck: Vec<(i64, i64)>,
    /// Regional backlogs touching it: window `[start, end)`, drain length, sources held.
    pub backlogs: Vec<Backlog>,
}

/// A backlog window of one location's feeds.
#[derive(Clone, Debug)]
pub struct Backlog {
    /// Window start, UTC milliseconds.
    pub start_ms: i64,
    /// Window end.
    pub end_ms: i64,
    /// Milliseconds over which held events drain after the end.
    pub drain_ms: i64,
    /// The sources held back.
    pub sources: Vec<Source>,
}

/// The laid-out world.
#[derive(Clone, Debug)]
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// The run seed.
    pub seed: u64,
    /// Every location, by index.
    pub locations: Vec<LocationSpec>,
    /// Day number (days since 1970-01-01) of simulated day 0 (the first burn-in day).
    pub first_day_number: i64,
    /// Simulated days, burn-in included.
    pub total_days: u32,
    /// Demand weight of each weekday, normalised to mean 1.
    pub weekday_weight: [f64; 7],
    /// The traces, aligned: `trace_column[g]` is the M5 day column of simulated day `g`
    /// (before clone shifts), when traces are used.
    pub traces: Option<(Traces, Vec<i64>)>,
}

/// Shift in days between clones of one M5 row (a second store or item following the same
/// row sees it five weeks apart, the same weekdays).
const CLONE_SHIFT_DAYS: i64 = 35;

impl World {
    /// Lays out the world of `scenario` under `seed`, with M5 traces when given.
    pub fn new(
        scenario: Scenario,
        seed: u64,
        traces: Option<Traces>,
    ) -> Result<World, ScenarioError> {
        let first_recorded = scenario.start_day_number()?;
        let burn_in = i64::from(scenario.calendar.burn_in_days);
        let total_days = scenario.calendar.burn_in_days + scenario.calendar.days;
        let first_day_number = first_recorded - burn_in;
        let mean_weekday = scenario.demand.day_of_week.iter().sum::<f64>() / 7.0;
        let mut weekday_weight = [1.0; 7];
        for (weight, raw) in weekday_weight.iter_mut().zip(scenario.demand.day_of_week) {
            *weight = if mean_weekday > 0.0 {
                raw / mean_weekday
            } else {
                1.0
            };
        }
        let mut locations = Vec::new();
        for (region_index, region) in scenario.network.regions.iter().enumerate() {
            let utc_offset_ms = utc_offset_hours(&region.timezone).unwrap_or(0) * HOUR_MS;
            let base = (region_index as u32 + 1) * 100;
            let rfid_stores =
                (f64::from(region.stores) * scenario.network.rfid_store_share).round() as u32;
            let m5_stores = traces
                .as_ref()
                .and_then(|t| t.stores_by_state.get(&region.m5_state));
            if traces.is_some() && m5_stores.is_none_or(|s| s.is_empty()) {
                return Err(ScenarioError::Invalid {
                    name: scenario.name.clone(),
                    field: format!("network.regions[{region_index}].m5_state"),
                    reason: format!("{:?} has no stores in the traces", region.m5_state),
                });
            }
            let m5_for = |index: u32| {
                m5_stores.map(|stores| {
                    let n = stores.len() as u32;
                    (stores[(index % n) as usize].clone(), index / n)
                })
            };
            let new_location = |id: u32, kind: LocationKind, sources: Vec<Source>| {
                let (open_hour, close_hour) = match kind {
                    LocationKind::Store => (
                        scenario.network.store_open_hour,
                        scenario.network.store_close_hour,
                    ),
                    _ => (0, 24),
                };
                LocationSpec {
                    id,
                    kind,
                    region: region_index,
                    utc_offset_ms,
                    open_hour,
                    close_hour,
                    rfid: sources.contains(&Source::Rfid),
                    sources,
                    m5_store: None,
                    wms_stuck: Vec::new(),
                    backlogs: Vec::new(),
                }
            };
            for store in 0..region.stores {
                let mut sources = vec![
                    Source::Pos,
                    Source::Ecom,
                    Source::StoreInventory,
                    Source::Transfer,
                ];
                if store < rfid_stores {
                    sources.push(Source::Rfid);
                }
                locations.push(LocationSpec {
                    m5_store: m5_for(store),
                    ..new_location(base + 1 + store, LocationKind::Store, sources)
                });
            }
            for fc in 0..region.fcs {
                let sources = vec![Source::Ecom, Source::Wms, Source::Transfer];
                locations.push(LocationSpec {
                    m5_store: m5_for(fc + 1),
                    ..new_location(base + 50 + fc, LocationKind::Fc, sources)
                });
            }
            for warehouse in 0..region.warehouses {
                let sources = vec![Source::Wms, Source::Receiving, Source::Transfer];
                locations.push(new_location(
                    base + 90 + warehouse,
                    LocationKind::Warehouse,
                    sources,
                ));
            }
        }
        let recorded_start_ms = first_recorded * DAY_MS;
        for location in &mut locations {
            let region = &scenario.network.regions[location.region];
            for outage in &scenario.faults.outages {
                if outage.region != region.name {
                    continue;
                }
                let start_ms = recorded_start_ms
                    + i64::from(outage.start_day) * DAY_MS
                    + i64::from(outage.start_hour) * HOUR_MS;
                location.backlogs.push(Backlog {
                    start_ms,
                    end_ms: start_ms + (outage.hours * HOUR_MS as f64) as i64,
                    drain_ms: (outage.drain_minutes * 60_000.0) as i64,
                    sources: outage
                        .sources
                        .iter()
                        .filter_map(|s| Source::parse(s))
                        .collect(),
                });
            }
            if location.kind != LocationKind::Store {
                let physics = &scenario.physics;
                let mut rng = SimRng::derive(seed, Stream::Layout, u64::from(location.id));
                let mut day = 0;
                while day < total_days {
                    if rng.chance(physics.wms_stuck_probability_per_day) {
                        let start = (first_day_number + i64::from(day)) * DAY_MS
                            + (rng.unit() * DAY_MS as f64) as i64;
                        let hours = rng.log_normal(physics.wms_stuck_median_hours, 0.7);
                        let end = start + (hours * HOUR_MS as f64) as i64;
                        location.wms_stuck.push((start, end));
                        day += 1 + (hours / 24.0) as u32;
                    } else {
                        day += 1;
                    }
                }
            }
        }
        let traces = match traces {
            None => None,
            Some(traces) => {
                let columns = traces.day_numbers.len() as i64;
                let last_day = first_day_number + i64::from(total_days) - 1;
                let m5_last = *traces.day_numbers.last().unwrap_or(&0);
                let back = (weekday(m5_last) as i64 - weekday(last_day) as i64).rem_euclid(7);
                let last_column = columns - 1 - back;
                let aligned = (0..i64::from(total_days))
                    .map(|g| last_column - (i64::from(total_days) - 1 - g))
                    .collect();
                Some((traces, aligned))
            }
        };
        Ok(World {
            scenario,
            seed,
            locations,
            first_day_number,
            total_days,
            weekday_weight,
            traces,
        })
    }

    /// UTC milliseconds of local midnight starting simulated day `g` at `location`.
    pub fn day_start_ms(&self, location: &LocationSpec, g: u32) -> i64 {
        (self.first_day_number + i64::from(g)) * DAY_MS - location.utc_offset_ms
    }

    /// Weekday (0 = Monday) of simulated day `g`.
    pub fn weekday_of(&self, g: u32) -> usize {
        weekday(self.first_day_number + i64::from(g))
    }

    /// The daily units of item `sku_index` at `location` from the traces, per simulated day
    /// (`None` without traces or for warehouses).
    pub fn trace_demand(&self, sku_index: u32, location: &LocationSpec) -> Option<Vec<u32>> {
        let (traces, columns) = self.traces.as_ref()?;
        let (store, store_clone) = location.m5_store.as_ref()?;
        let items = traces.items.len() as u32;
        let item = (sku_index % items) as usize;
        let clone = i64::from(sku_index / items) + i64::from(*store_clone);
        let row = traces.sales.get(&(item, store.clone()))?;
        let width = row.len() as i64;
        Some(
            columns
                .iter()
                .map(|column| {
                    let at = (column - clone * CLONE_SHIFT_DAYS).rem_euclid(width);
                    row[at as usize]
                })
                .collect(),
        )
    }
}
