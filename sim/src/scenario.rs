//! Scenarios: every parameter of a simulated world, read from a TOML file.
//!
//! A scenario names the network (regions, their locations and time zones), the demand
//! model, the physics that make records wrong, replenishment and cycle counts, the feeds'
//! delays and faults, and the queries asked. Nothing about the world is hidden in code: every
//! field is required (`deny_unknown_fields`, no defaults), so a file is the whole world.
//! The committed scenarios live in `sim/scenarios/` (each documented in its comments) and are
//! compiled in, so `--scenario baseline` works from any directory; `--scenario FILE` reads
//! any other file.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The committed scenarios, by name, as compiled in.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("baseline", include_str!("../scenarios/baseline.toml")),
    (
        "delayed-scans",
        include_str!("../scenarios/delayed-scans.toml"),
    ),
    (
        "duplicate-storm",
        include_str!("../scenarios/duplicate-storm.toml"),
    ),
    (
        "stale-warehouse-feed",
        include_str!("../scenarios/stale-warehouse-feed.toml"),
    ),
    (
        "regional-outage",
        include_str!("../scenarios/regional-outage.toml"),
    ),
    (
        "shrink-drift",
        include_str!("../scenarios/shrink-drift.toml"),
    ),
];

/// A whole simulated world.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (written into the run's manifest).
    pub name: String,
    /// What the scenario exercises.
    pub description: String,
    /// The simulated period.
    pub calendar: Calendar,
    /// Locations and items.
    pub network: Network,
    /// Customer demand.
    pub demand: Demand,
    /// What makes records wrong.
    pub physics: Physics,
    /// Orders on the recorded position.
    pub replenishment: Replenishment,
    /// Cycle counts.
    pub cycle_counts: CycleCounts,
    /// Feed delays, per source.
    pub feeds: Feeds,
    /// Feed faults.
    pub faults: Faults,
    /// Questions asked.
    pub queries: Queries,
}

/// The simulated period.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// First recorded day, `YYYY-MM-DD` (UTC date; each location's day starts at its local
    /// midnight).
    pub start_date: String,
    /// Days simulated before the recorded period so records have drifted as in a running
    /// business; nothing of them is written but the opening balances.
    pub burn_in_days: u32,
    /// Recorded days: their events and queries are written.
    pub days: u32,
    /// First recorded days without queries (the ledger fills up).
    pub query_warmup_days: u32,
}

/// Regions, locations and items.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Items (SKUs); with traces, item i follows M5 item i modulo the file's items.
    pub skus: u32,
    /// Items per family: a mis-scan records a sale against a sibling of the same family.
    pub family_size: u32,
    /// Store opening hour, local time.
    pub store_open_hour: u32,
    /// Store closing hour, local time (24 = midnight).
    pub store_close_hour: u32,
    /// Share of stores that sweep with RFID (the first stores of each region).
    pub rfid_store_share: f64,
    /// The regions.
    pub regions: Vec<Region>,
}

/// One region and its locations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Its name (`us-west`).
    pub name: String,
    /// A fixed-offset IANA zone, `UTC` or `Etc/GMT+N` / `Etc/GMT-N` (N hours west / east).
    pub timezone: String,
    /// Stores (1 to 49).
    pub stores: u32,
    /// Fulfillment centers (0 to 9).
    pub fcs: u32,
    /// Warehouses (1 to 9): they supply the region's stores and FCs.
    pub warehouses: u32,
    /// With `--traces`: the M5 `state_id` whose stores this region's stores follow.
    pub m5_state: String,
}

/// One velocity class of the built-in demand model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityClass {
    /// Its name (`fast`, `slow`, ...).
    pub name: String,
    /// Share of items in it.
    pub share: f64,
    /// Mean units sold per store per day.
    pub units_per_day: f64,
    /// Mean units per customer (>= 1; large means lumpy demand).
    pub units_per_customer: f64,
}

/// Customer demand.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demand {
    /// Built-in model: the velocity classes.
    pub classes: Vec<VelocityClass>,
    /// Built-in model: log-scale spread of a pair's rate around its class mean.
    pub pair_rate_sigma: f64,
    /// Weights of Monday to Sunday.
    pub day_of_week: [f64; 7],
    /// Weights of the 24 local hours (stores sell only while open).
    pub hourly: [f64; 24],
    /// With traces: mean units per customer when splitting a day's units into customers.
    pub trace_units_per_customer: f64,
    /// Share of a store's customers who order online (recorded by `ecom`).
    pub store_ecom_share: f64,
    /// An FC's daily demand for an item as a multiple of one store's.
    pub fc_demand_multiplier: f64,
    /// Chance an item starts a promotion in a given week.
    pub promo_probability_per_week: f64,
    /// Demand multiplier during a promotion.
    pub promo_lift: f64,
    /// Length of a promotion.
    pub promo_days: u32,
}

/// What makes records wrong.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Physics {
    /// Invisible shrink (theft, damage), as units per unit sold.
    pub shrink_per_unit_sold: f64,
    /// Invisible shrink independent of sales, units per pair per day.
    pub shrink_units_per_day: f64,
    /// Chance per pair and day of a sudden phantom loss (a case gone at once).
    pub phantom_loss_probability_per_day: f64,
    /// Largest share of the shelf a phantom loss takes.
    pub phantom_loss_max_share: f64,
    /// Chance a store sale is scanned as a sibling item.
    pub miscan_probability: f64,
    /// Chance a shipment arrives short while recorded in full.
    pub short_shipment_probability: f64,
    /// Share of the paperwork quantity a short shipment delivers, low and high.
    pub short_shipment_share: [f64; 2],
    /// Chance a shipment arrives over while recorded as ordered.
    pub over_shipment_probability: f64,
    /// Extra share an over shipment brings, low and high.
    pub over_shipment_share: [f64; 2],
    /// Returns per unit sold.
    pub returns_per_unit_sold: f64,
    /// Share of returns that are not sellable (recorded, not put back).
    pub unsellable_return_share: f64,
    /// Chance a cycle count is off.
    pub count_error_probability: f64,
    /// Largest error of a count that is off, in units.
    pub count_error_max_units: u32,
    /// Chance an RFID sweep misses a tag.
    pub rfid_miss_rate: f64,
    /// Local hour of the daily RFID sweep.
    pub rfid_sweep_hour: u32,
    /// Hours between WMS snapshots at FCs and warehouses.
    pub wms_snapshot_interval_hours: u32,
    /// Chance per location and day that its WMS feed gets stuck repeating one value.
    pub wms_stuck_probability_per_day: f64,
    /// Median length of a stuck spell, hours.
    pub wms_stuck_median_hours: f64,
    /// Opening stock, in days of demand.
    pub opening_cover_days: f64,
}

/// Orders placed on the recorded position.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replenishment {
    /// Order when recorded on-hand plus on order falls to this many days of demand.
    pub reorder_cover_days: f64,
    /// Order up to this many days of demand.
    pub order_up_to_cover_days: f64,
    /// Smallest order, units.
    pub minimum_order_units: u32,
    /// Days from a store's or FC's order to the shipment's arrival.
    pub transfer_lead_days: u32,
    /// Days from a warehouse's vendor order to its receipt.
    pub vendor_lead_days: u32,
    /// Warehouse cover as a multiple of the store cover (warehouses order less often).
    pub warehouse_cover_multiplier: f64,
    /// Local hour shipments leave a sender.
    pub ship_hour: u32,
    /// Local hour shipments arrive.
    pub delivery_hour: u32,
    /// Chance a store's order short at the warehouse is filled by the region's FC.
    pub fc_fills_store_probability: f64,
}

/// Cycle counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleCounts {
    /// Days between scheduled counts of a store pair (staggered across pairs).
    pub interval_days: u32,
    /// Days between scheduled counts of an FC or warehouse pair (WMS bin counts; the
    /// result reaches stockgrid through the next WMS snapshot).
    pub wms_interval_days: u32,
    /// A count is triggered when an item has not sold for this many days...
    pub no_sale_trigger_days: u32,
    /// ...while at least this many units were expected to sell meanwhile.
    pub no_sale_trigger_expected_units: f64,
    /// Local hour of counts.
    pub count_hour: u32,
}

/// Delay of one feed: a log-normal body and a Pareto tail.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedDelay {
    /// Median delay, seconds.
    pub median_seconds: f64,
    /// Log-scale spread of the body.
    pub sigma: f64,
    /// Chance of a tail delay on top.
    pub tail_probability: f64,
    /// Tail minimum, seconds.
    pub tail_scale_seconds: f64,
    /// Tail shape (smaller is heavier).
    pub tail_shape: f64,
}

/// Delays per source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feeds {
    /// Registers.
    pub pos: FeedDelay,
    /// Online orders.
    pub ecom: FeedDelay,
    /// Receiving docks.
    pub receiving: FeedDelay,
    /// Associates' counts and adjustments.
    pub store_inventory: FeedDelay,
    /// RFID sweeps.
    pub rfid: FeedDelay,
    /// WMS snapshots.
    pub wms: FeedDelay,
    /// Transfers.
    pub transfer: FeedDelay,
}

/// A window in which a region's feeds are held back and delivered in a burst afterwards.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// The region.
    pub region: String,
    /// Recorded day it starts (0 = the first).
    pub start_day: u32,
    /// UTC hour it starts.
    pub start_hour: u32,
    /// How long it lasts.
    pub hours: f64,
    /// The sources held back.
    pub sources: Vec<String>,
    /// Minutes over which the backlog drains after the window.
    pub drain_minutes: f64,
}

/// Shrink multiplied in one region from one day on (feature drift).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShrinkDrift {
    /// The region.
    pub region: String,
    /// Recorded day it starts.
    pub from_day: u32,
    /// Shrink multiplier from then on.
    pub factor: f64,
}

/// Feed faults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Chance an event is delivered twice.
    pub duplicate_probability: f64,
    /// Median gap before the duplicate, seconds.
    pub duplicate_delay_median_seconds: f64,
    /// Chance an event is held back a few minutes (arrives out of order).
    pub reorder_probability: f64,
    /// Longest such hold, minutes.
    pub reorder_max_minutes: f64,
    /// Chance an event arrives later than the lateness bound.
    pub beyond_bound_probability: f64,
    /// The lateness bound the replay applies, hours (events beyond it are quarantined).
    pub lateness_bound_hours: f64,
    /// Regional backlogs.
    pub outages: Vec<Outage>,
    /// Shrink drifts.
    pub shrink_drifts: Vec<ShrinkDrift>,
}

/// Questions asked, per pair and day.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queries {
    /// Item-page lookups per pair and day (stores and FCs)...
    pub item_page_per_pair_day: f64,
    /// ...plus this many per unit of the pair's demand rate.
    pub item_page_per_unit_demand: f64,
    /// Pickup promises per store pair and day (while the store is open).
    pub pickup_per_pair_day: f64,
    /// Delivery promises per FC pair and day.
    pub delivery_per_pair_day: f64,
    /// Weights of 1, 2, 3, ... units wanted.
    pub quantity_weights: Vec<f64>,
}

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Neither a built-in name nor a readable file.
    #[error(
        "scenario {0:?}: not a built-in scenario ({names}) nor a readable file: {1}",
        names = built_in_names()
    )]
    NotFound(String, String),
    /// The TOML does not parse or misses a field.
    #[error("scenario {0}: {1}")]
    Parse(String, String),
    /// A value is out of range.
    #[error("scenario {name}: field `{field}`: {reason}")]
    Invalid {
        /// The scenario.
        name: String,
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// The names of the built-in scenarios, comma separated.
pub fn built_in_names() -> String {
    BUILT_IN
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Scenario {
    /// A built-in scenario by name, or a TOML file by path.
    pub fn load(name_or_file: &str) -> Result<(Scenario, String), ScenarioError> {
        let (origin, text) = match BUILT_IN.iter().find(|(name, _)| *name == name_or_file) {
            Some((name, text)) => ((*name).to_owned(), (*text).to_owned()),
            None => {
                let text = std::fs::read_to_string(Path::new(name_or_file))
                    .map_err(|e| ScenarioError::NotFound(name_or_file.to_owned(), e.to_string()))?;
                (name_or_file.to_owned(), text)
            }
        };
        let scenario = Self::parse(&origin, &text)?;
        Ok((scenario, text))
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse(origin.to_owned(), e.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn invalid(&self, field: &str, reason: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            name: self.name.clone(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// The first day, as days since 1970-01-01.
    pub fn start_day_number(&self) -> Result<i64, ScenarioError> {
        parse_date(&self.calendar.start_date)
            .ok_or_else(|| self.invalid("calendar.start_date", "must be a date YYYY-MM-DD"))
    }

    /// Checks every range the simulator relies on, naming the field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.start_day_number()?;
        let probability = |field: &str, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(self.invalid(
                    field,
                    format!("must be a probability in [0, 1], got {value}"),
                ))
            }
        };
        let non_negative = |field: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(self.invalid(field, format!("must be finite and >= 0, got {value}")))
            }
        };
        let hour = |field: &str, value: u32| {
            if value < 24 {
                Ok(())
            } else {
                Err(self.invalid(field, format!("must be an hour 0 to 23, got {value}")))
            }
        };
        let calendar = &self.calendar;
        if calendar.days == 0 || calendar.days > 366 {
            return Err(self.invalid("calendar.days", "must be 1 to 366"));
        }
        if calendar.burn_in_days > 3_660 {
            return Err(self.invalid("calendar.burn_in_days", "must be at most 3660"));
        }
        if calendar.query_warmup_days >= calendar.days {
            return Err(self.invalid("calendar.query_warmup_days", "must be below days"));
        }
        let network = &self.network;
        if network.skus == 0 || network.skus > 10_000_000 {
            return Err(self.invalid("network.skus", "must be 1 to 10,000,000"));
        }
        if network.family_size == 0 {
            return Err(self.invalid("network.family_size", "must be at least 1"));
        }
        hour("network.store_open_hour", network.store_open_hour)?;
        if network.store_close_hour <= network.store_open_hour || network.store_close_hour > 24 {
            return Err(self.invalid(
                "network.store_close_hour",
                "must be after store_open_hour and at most 24",
            ));
        }
        probability("network.rfid_store_share", network.rfid_store_share)?;
        if network.regions.is_empty() || network.regions.len() > 40 {
            return Err(self.invalid("network.regions", "must list 1 to 40 regions"));
        }
        for (index, region) in network.regions.iter().enumerate() {
            let field = |name: &str| format!("network.regions[{index}].{name}");
            if utc_offset_hours(&region.timezone).is_none() {
                return Err(self.invalid(
                    &field("timezone"),
                    format!(
                        "{:?}: the simulator uses fixed-offset zones: UTC or Etc/GMT+N / Etc/GMT-N",
                        region.timezone
                    ),
                ));
            }
            if !(1..=49).contains(&region.stores) {
                return Err(self.invalid(&field("stores"), "must be 1 to 49"));
            }
            if region.fcs > 9 {
                return Err(self.invalid(&field("fcs"), "must be 0 to 9"));
            }
            if !(1..=9).contains(&region.warehouses) {
                return Err(self.invalid(&field("warehouses"), "must be 1 to 9"));
            }
        }
        let demand = &self.demand;
        if demand.classes.is_empty() {
            return Err(self.invalid("demand.classes", "must list at least one class"));
        }
        for (index, class) in demand.classes.iter().enumerate() {
            non_negative(&format!("demand.classes[{index}].share"), class.share)?;
            non_negative(
                &format!("demand.classes[{index}].units_per_day"),
                class.units_per_day,
            )?;
            if class.units_per_customer < 1.0 {
                return Err(self.invalid(
                    &format!("demand.classes[{index}].units_per_customer"),
                    "must be at least 1",
                ));
            }
        }
        if demand.classes.iter().map(|c| c.share).sum::<f64>() <= 0.0 {
            return Err(self.invalid("demand.classes", "shares must not all be zero"));
        }
        for (index, weight) in demand.day_of_week.iter().enumerate() {
            non_negative(&format!("demand.day_of_week[{index}]"), *weight)?;
        }
        for (index, weight) in demand.hourly.iter().enumerate() {
            non_negative(&format!("demand.hourly[{index}]"), *weight)?;
        }
        let open_weight: f64 = demand.hourly
            [network.store_open_hour as usize..network.store_close_hour as usize]
            .iter()
            .sum();
        if open_weight <= 0.0 {
            return Err(self.invalid("demand.hourly", "no weight in the stores' open hours"));
        }
        non_negative("demand.pair_rate_sigma", demand.pair_rate_sigma)?;
        if demand.trace_units_per_customer < 1.0 {
            return Err(self.invalid("demand.trace_units_per_customer", "must be at least 1"));
        }
        probability("demand.store_ecom_share", demand.store_ecom_share)?;
        non_negative("demand.fc_demand_multiplier", demand.fc_demand_multiplier)?;
        probability(
            "demand.promo_probability_per_week",
            demand.promo_probability_per_week,
        )?;
        non_negative("demand.promo_lift", demand.promo_lift)?;
        let physics = &self.physics;
        non_negative("physics.shrink_per_unit_sold", physics.shrink_per_unit_sold)?;
        non_negative("physics.shrink_units_per_day", physics.shrink_units_per_day)?;
        for (field, value) in [
            (
                "physics.phantom_loss_probability_per_day",
                physics.phantom_loss_probability_per_day,
            ),
            (
                "physics.phantom_loss_max_share",
                physics.phantom_loss_max_share,
            ),
            ("physics.miscan_probability", physics.miscan_probability),
            (
                "physics.short_shipment_probability",
                physics.short_shipment_probability,
            ),
            (
                "physics.over_shipment_probability",
                physics.over_shipment_probability,
            ),
            (
                "physics.unsellable_return_share",
                physics.unsellable_return_share,
            ),
            (
                "physics.count_error_probability",
                physics.count_error_probability,
            ),
            ("physics.rfid_miss_rate", physics.rfid_miss_rate),
            (
                "physics.wms_stuck_probability_per_day",
                physics.wms_stuck_probability_per_day,
            ),
            (
                "faults.duplicate_probability",
                self.faults.duplicate_probability,
            ),
            (
                "faults.reorder_probability",
                self.faults.reorder_probability,
            ),
            (
                "faults.beyond_bound_probability",
                self.faults.beyond_bound_probability,
            ),
            (
                "replenishment.fc_fills_store_probability",
                self.replenishment.fc_fills_store_probability,
            ),
        ] {
            probability(field, value)?;
        }
        for (field, [low, high]) in [
            ("physics.short_shipment_share", physics.short_shipment_share),
            ("physics.over_shipment_share", physics.over_shipment_share),
        ] {
            if !(0.0..=1.0).contains(&low) || !(low..=1.0).contains(&high) {
                return Err(self.invalid(field, "must be [low, high] with 0 <= low <= high <= 1"));
            }
        }
        non_negative(
            "physics.returns_per_unit_sold",
            physics.returns_per_unit_sold,
        )?;
        non_negative(
            "physics.wms_stuck_median_hours",
            physics.wms_stuck_median_hours,
        )?;
        non_negative("physics.opening_cover_days", physics.opening_cover_days)?;
        hour("physics.rfid_sweep_hour", physics.rfid_sweep_hour)?;
        if !(1..=24).contains(&physics.wms_snapshot_interval_hours) {
            return Err(self.invalid("physics.wms_snapshot_interval_hours", "must be 1 to 24"));
        }
        let replenishment = &self.replenishment;
        non_negative(
            "replenishment.reorder_cover_days",
            replenishment.reorder_cover_days,
        )?;
        if replenishment.order_up_to_cover_days < replenishment.reorder_cover_days {
            return Err(self.invalid(
                "replenishment.order_up_to_cover_days",
                "must be at least reorder_cover_days",
            ));
        }
        if replenishment.transfer_lead_days == 0 || replenishment.vendor_lead_days == 0 {
            return Err(self.invalid(
                "replenishment.transfer_lead_days",
                "lead times must be at least one day",
            ));
        }
        non_negative(
            "replenishment.warehouse_cover_multiplier",
            replenishment.warehouse_cover_multiplier,
        )?;
        hour("replenishment.ship_hour", replenishment.ship_hour)?;
        hour("replenishment.delivery_hour", replenishment.delivery_hour)?;
        hour("cycle_counts.count_hour", self.cycle_counts.count_hour)?;
        if self.cycle_counts.interval_days == 0 {
            return Err(self.invalid("cycle_counts.interval_days", "must be at least 1"));
        }
        if self.cycle_counts.wms_interval_days == 0 {
            return Err(self.invalid("cycle_counts.wms_interval_days", "must be at least 1"));
        }
        for (name, feed) in self.feeds.by_source() {
            let field = |f: &str| format!("feeds.{name}.{f}");
            non_negative(&field("median_seconds"), feed.median_seconds)?;
            non_negative(&field("sigma"), feed.sigma)?;
            probability(&field("tail_probability"), feed.tail_probability)?;
            non_negative(&field("tail_scale_seconds"), feed.tail_scale_seconds)?;
            if feed.tail_shape <= 0.0 {
                return Err(self.invalid(&field("tail_shape"), "must be > 0"));
            }
        }
        let faults = &self.faults;
        non_negative(
            "faults.duplicate_delay_median_seconds",
            faults.duplicate_delay_median_seconds,
        )?;
        non_negative("faults.reorder_max_minutes", faults.reorder_max_minutes)?;
        if faults.lateness_bound_hours <= 0.0 {
            return Err(self.invalid("faults.lateness_bound_hours", "must be > 0"));
        }
        let region_known = |name: &str| network.regions.iter().any(|r| r.name == name);
        for (index, outage) in faults.outages.iter().enumerate() {
            let field = |f: &str| format!("faults.outages[{index}].{f}");
            if !region_known(&outage.region) {
                return Err(self.invalid(&field("region"), "names no region of the network"));
            }
            if outage.start_day >= calendar.days {
                return Err(self.invalid(&field("start_day"), "must be a recorded day"));
            }
            hour(&field("start_hour"), outage.start_hour)?;
            non_negative(&field("hours"), outage.hours)?;
            non_negative(&field("drain_minutes"), outage.drain_minutes)?;
            for source in &outage.sources {
                if stockgrid_actors::domain::Source::parse(source).is_none() {
                    return Err(self.invalid(&field("sources"), format!("{source:?} is no source")));
                }
            }
        }
        for (index, drift) in faults.shrink_drifts.iter().enumerate() {
            let field = |f: &str| format!("faults.shrink_drifts[{index}].{f}");
            if !region_known(&drift.region) {
                return Err(self.invalid(&field("region"), "names no region of the network"));
            }
            non_negative(&field("factor"), drift.factor)?;
        }
        let queries = &self.queries;
        for (field, value) in [
            (
                "queries.item_page_per_pair_day",
                queries.item_page_per_pair_day,
            ),
            (
                "queries.item_page_per_unit_demand",
                queries.item_page_per_unit_demand,
            ),
            ("queries.pickup_per_pair_day", queries.pickup_per_pair_day),
            (
                "queries.delivery_per_pair_day",
                queries.delivery_per_pair_day,
            ),
        ] {
            non_negative(field, value)?;
        }
        if queries.quantity_weights.is_empty()
            || queries
                .quantity_weights
                .iter()
                .any(|w| w.is_nan() || *w < 0.0)
            || queries.quantity_weights.iter().sum::<f64>() <= 0.0
        {
            return Err(self.invalid(
                "queries.quantity_weights",
                "must list non-negative weights, not all zero",
            ));
        }
        Ok(())
    }
}

impl Feeds {
    /// Each source's delay with the source's name.
    pub fn by_source(&self) -> [(&'static str, &FeedDelay); 7] {
        [
            ("pos", &self.pos),
            ("ecom", &self.ecom),
            ("receiving", &self.receiving),
            ("store_inventory", &self.store_inventory),
            ("rfid", &self.rfid),
            ("wms", &self.wms),
            ("transfer", &self.transfer),
        ]
    }
}

/// The UTC offset of a fixed-offset zone: `UTC`, `Etc/UTC`, `Etc/GMT`, `Etc/GMT+N` (N hours
/// *west* of Greenwich, so UTC-N, as IANA names them) or `Etc/GMT-N`.
pub fn utc_offset_hours(timezone: &str) -> Option<i64> {
    match timezone {
        "UTC" | "Etc/UTC" | "Etc/GMT" => return Some(0),
        _ => {}
    }
    let rest = timezone.strip_prefix("Etc/GMT")?;
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (-1, &rest[1..]),
        b'-' => (1, &rest[1..]),
        _ => return None,
    };
    let hours: i64 = digits.parse().ok()?;
    (0..=14).contains(&hours).then_some(sign * hours)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = crate::civil::days_from_civil(year, month, day);
    (crate::civil::civil_from_days(days) == (year, month, day)).then_some(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_parses_and_validates() {
        for (name, _) in BUILT_IN {
            let (scenario, _) = Scenario::load(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(scenario.name, *name);
        }
    }

    #[test]
    fn a_missing_or_unknown_field_is_named() {
        let (_, text) = Scenario::load("baseline").expect("baseline");
        let without = text.replace("rfid_miss_rate", "rfid_mis_rate");
        let error = Scenario::parse("edited", &without).expect_err("unknown field");
        assert!(error.to_string().contains("rfid_mis_rate"), "{error}");
        let bad = text.replace("miscan_probability = ", "miscan_probability = 1");
        let error = Scenario::parse("edited", &bad).expect_err("out of range");
        assert!(
            error.to_string().contains("physics.miscan_probability"),
            "{error}"
        );
    }

    #[test]
    fn fixed_offset_zones() {
        assert_eq!(utc_offset_hours("Etc/GMT+8"), Some(-8));
        assert_eq!(utc_offset_hours("Etc/GMT-3"), Some(3));
        assert_eq!(utc_offset_hours("UTC"), Some(0));
        assert_eq!(utc_offset_hours("America/Chicago"), None);
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("1970-01-02"), Some(1));
    }
}
