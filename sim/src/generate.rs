//! The simulation proper: item families lived day by day, producing the events the feeds
//! deliver (with their faults), the queries asked, and the truth at each query.
//!
//! # Model
//! One *family* (a few sibling items) is simulated at a time, all its locations together,
//! because a mis-scan records one item's sale against a sibling and a shipment moves units
//! between two locations of the same item. Families never interact, so they run on several
//! threads; every draw comes from a stream keyed by its pair ([`crate::rng`]), so the result
//! is the same whatever the thread count.
//!
//! Per pair and day, in time order: deliveries arrive (paperwork quantity recorded, the
//! physical quantity possibly short or over); customers buy what is physically there (a
//! customer who finds nothing is a lost sale and nothing is recorded); invisible shrink and
//! sudden phantom losses take units; returns come back (some unsellable, recorded anyway);
//! counts, RFID sweeps and WMS snapshots observe; queries ask. At night each store and FC
//! orders on its *recorded* position (so phantom stock freezes replenishment) from its
//! warehouse, the FC covering a short warehouse; warehouses order from vendors.
//!
//! The burn-in days run the same physics but write nothing: the recorded period opens with
//! each pair's system record as an opening balance, already drifted from the truth as in a
//! business that has been running for months.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use stockgrid_actors::domain::{EventKind, Source, Surface};

use crate::civil::{DAY_MS, HOUR_MS};
use crate::rng::{SimRng, Stream};
use crate::scenario::FeedDelay;
use crate::world::{LocationKind, LocationSpec, World};

/// One arrival of an event, as written to events.jsonl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimEvent {
    /// When it reached us.
    pub ingest_ms: i64,
    /// When it happened.
    pub event_ms: i64,
    /// The item.
    pub sku: u64,
    /// Units (signed for adjustments).
    pub qty: i64,
    /// On a transfer_out: expected arrival (0: none).
    pub expected_ms: i64,
    /// The location.
    pub location: u32,
    /// On transfers: the other end (`u32::MAX`: none).
    pub counterparty: u32,
    /// The pair's event counter: the id is `location-sku-seq`.
    pub seq: u32,
    /// The feed.
    pub source: Source,
    /// What happened.
    pub kind: EventKind,
}

/// No counterparty.
pub const NO_COUNTERPARTY: u32 = u32::MAX;

/// One query with its truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimQuery {
    /// When it is asked.
    pub time_ms: i64,
    /// The item.
    pub sku: u64,
    /// The location.
    pub location: u32,
    /// The pair's query counter: the id is `q-location-sku-seq`.
    pub seq: u32,
    /// Units wanted.
    pub qty: i64,
    /// Who asks.
    pub surface: Surface,
    /// True sellable units at that moment.
    pub true_on_hand: i64,
}

/// What the world did, beyond its files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorldTally {
    /// Units customers wanted during the recorded period.
    pub demanded_units: u64,
    /// Units they could not buy.
    pub lost_units: u64,
    /// Units shrink and phantom losses took.
    pub shrunk_units: u64,
    /// Pairs simulated.
    pub pairs: u64,
}

/// The output of one run, in file order.
#[derive(Debug, Default)]
pub struct Generated {
    /// Arrivals sorted by ingest time (ties in generation order).
    pub events: Vec<SimEvent>,
    /// Queries sorted by time (ties in generation order).
    pub queries: Vec<SimQuery>,
    /// Totals.
    pub tally: WorldTally,
}

struct Shipment {
    arrive_day: u32,
    paperwork: i64,
    physical: i64,
    from: Option<u32>,
}

struct Pair {
    sku: u64,
    family_member: usize,
    location: usize,
    rate: f64,
    units_per_customer: f64,
    trace: Option<Vec<u32>>,
    truth: i64,
    record: i64,
    on_order: i64,
    pending: Vec<Shipment>,
    event_seq: u32,
    query_seq: u32,
    physics: SimRng,
    feeds: SimRng,
    asks: SimRng,
    days_since_sale: u32,
    expected_since_sale: f64,
    count_due: bool,
    next_count_day: u32,
    promo_until: u32,
    last_reported: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    Delivery(usize),
    Count,
    Rfid,
    Snapshot,
    Customer(i64),
    Shrink,
    Phantom,
    Return,
    Query(Surface, i64),
}

struct FamilyOutput {
    events: Vec<SimEvent>,
    queries: Vec<SimQuery>,
    tally: WorldTally,
}

struct Family<'w> {
    world: &'w World,
    pairs: Vec<Pair>,
    /// Pair index per (family member, location index).
    index: Vec<Vec<Option<usize>>>,
    out: FamilyOutput,
    happenings: Vec<(i64, Happening)>,
}

/// Runs the world on `threads` threads (at least one); the result does not depend on it.
pub fn generate(world: &World, threads: usize) -> Generated {
    let network = &world.scenario.network;
    let families = network.skus.div_ceil(network.family_size) as usize;
    let slots: Vec<Mutex<Option<FamilyOutput>>> = (0..families).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let family = next.fetch_add(1, Ordering::Relaxed);
                    if family >= families {
                        break;
                    }
                    let output = Family::new(world, family as u32).run();
                    if let Ok(mut slot) = slots[family].lock() {
                        *slot = Some(output);
                    }
                }
            });
        }
    });
    let mut generated = Generated::default();
    for slot in slots {
        let Some(output) = slot.into_inner().ok().flatten() else {
            continue;
        };
        generated.events.extend(output.events);
        generated.queries.extend(output.queries);
        let tally = &mut generated.tally;
        tally.demanded_units += output.tally.demanded_units;
        tally.lost_units += output.tally.lost_units;
        tally.shrunk_units += output.tally.shrunk_units;
        tally.pairs += output.tally.pairs;
    }
    // Full keys make the unstable (faster) sorts deterministic: two arrivals equal in every
    // key field are the same event delivered twice at the same instant, identical lines.
    generated
        .events
        .sort_unstable_by_key(|e| (e.ingest_ms, e.location, e.sku, e.seq, e.source));
    generated
        .queries
        .sort_unstable_by_key(|q| (q.time_ms, q.location, q.sku, q.seq));
    generated
}

fn pair_key(sku: u64, location: u32) -> u64 {
    (sku << 20) ^ u64::from(location)
}

impl<'w> Family<'w> {
    fn new(world: &'w World, family: u32) -> Self {
        let scenario = &world.scenario;
        let network = &scenario.network;
        let first = family * network.family_size;
        let last = (first + network.family_size).min(network.skus);
        let mut pairs = Vec::new();
        let mut index = Vec::new();
        for (member, sku_index) in (first..last).enumerate() {
            let sku = u64::from(sku_index) + 1;
            let mut layout = SimRng::derive(world.seed, Stream::Layout, sku);
            let class_weights: Vec<f64> = scenario.demand.classes.iter().map(|c| c.share).collect();
            let class = &scenario.demand.classes[layout.weighted(&class_weights)];
            let item_rate = class.units_per_day;
            let mut by_location = vec![None; world.locations.len()];
            for (at, location) in world.locations.iter().enumerate() {
                if location.kind == LocationKind::Warehouse {
                    continue;
                }
                let key = pair_key(sku, location.id);
                let mut physics = SimRng::derive(world.seed, Stream::Physics, key);
                let multiplier = if location.kind == LocationKind::Fc {
                    scenario.demand.fc_demand_multiplier
                } else {
                    1.0
                };
                let trace = world.trace_demand(sku_index, location).map(|units| {
                    units
                        .iter()
                        .map(|u| (f64::from(*u) * multiplier).round() as u32)
                        .collect::<Vec<_>>()
                });
                let rate = match &trace {
                    Some(units) => {
                        units.iter().map(|u| f64::from(*u)).sum::<f64>() / units.len() as f64
                    }
                    None => {
                        item_rate
                            * multiplier
                            * physics.log_normal(1.0, scenario.demand.pair_rate_sigma)
                    }
                };
                if rate <= 0.0 {
                    continue; // not carried here
                }
                by_location[at] = Some(pairs.len());
                pairs.push(Pair::new(
                    world, sku, member, at, rate, trace, physics, class,
                ));
            }
            // Each region's warehouses carry the item if any location of the region does.
            for (at, location) in world.locations.iter().enumerate() {
                if location.kind != LocationKind::Warehouse {
                    continue;
                }
                let region_rate: f64 = pairs
                    .iter()
                    .filter(|p| {
                        p.family_member == member
                            && world.locations[p.location].region == location.region
                    })
                    .map(|p| p.rate)
                    .sum();
                let warehouses = scenario.network.regions[location.region].warehouses;
                if region_rate <= 0.0 {
                    continue;
                }
                let physics =
                    SimRng::derive(world.seed, Stream::Physics, pair_key(sku, location.id));
                by_location[at] = Some(pairs.len());
                pairs.push(Pair::new(
                    world,
                    sku,
                    member,
                    at,
                    region_rate / f64::from(warehouses),
                    None,
                    physics,
                    class,
                ));
            }
            index.push(by_location);
        }
        let tally = WorldTally {
            pairs: pairs.len() as u64,
            ..WorldTally::default()
        };
        Family {
            world,
            pairs,
            index,
            out: FamilyOutput {
                events: Vec::new(),
                queries: Vec::new(),
                tally,
            },
            happenings: Vec::new(),
        }
    }

    fn run(mut self) -> FamilyOutput {
        let burn_in = self.world.scenario.calendar.burn_in_days;
        for g in 0..self.world.total_days {
            if g == burn_in {
                self.open_books(g);
            }
            for p in 0..self.pairs.len() {
                self.live_day(p, g);
            }
            self.replenish(g);
        }
        self.out
    }

    fn recorded(&self, g: u32) -> bool {
        g >= self.world.scenario.calendar.burn_in_days
    }

    /// The opening balances of the recorded period: each pair's system record.
    fn open_books(&mut self, g: u32) {
        for p in 0..self.pairs.len() {
            let location = &self.world.locations[self.pairs[p].location];
            let at = self.world.day_start_ms(location, g);
            let record = self.pairs[p].record;
            match location.kind {
                LocationKind::Store if record != 0 => self.emit(
                    p,
                    at,
                    Source::StoreInventory,
                    EventKind::Adjustment,
                    record,
                    None,
                    0,
                ),
                LocationKind::Store => {}
                _ => {
                    self.pairs[p].last_reported = record.max(0);
                    self.emit(
                        p,
                        at,
                        Source::Wms,
                        EventKind::Snapshot,
                        record.max(0),
                        None,
                        0,
                    )
                }
            }
        }
    }

    /// Draws an hour from the demand profile (within `open..close`) and a moment in it.
    fn moment(rng: &mut SimRng, hourly: &[f64; 24], open: u32, close: u32) -> i64 {
        let hour = open as usize + rng.weighted(&hourly[open as usize..close as usize]);
        hour as i64 * HOUR_MS + (rng.unit() * HOUR_MS as f64) as i64
    }

    fn live_day(&mut self, p: usize, g: u32) {
        let world = self.world;
        let scenario = &world.scenario;
        let demand = &scenario.demand;
        let physics = &scenario.physics;
        let location = &world.locations[self.pairs[p].location];
        let day_start = world.day_start_ms(location, g);
        let kind = location.kind;
        let (open, close) = (location.open_hour, location.close_hour);
        let recorded = self.recorded(g);
        let asks_today =
            recorded && g >= scenario.calendar.burn_in_days + scenario.calendar.query_warmup_days;
        let drift: f64 = scenario
            .faults
            .shrink_drifts
            .iter()
            .filter(|d| {
                scenario.network.regions[location.region].name == d.region
                    && g >= scenario.calendar.burn_in_days + d.from_day
            })
            .map(|d| d.factor)
            .product();
        let mut happenings = std::mem::take(&mut self.happenings);
        happenings.clear();
        let pair = &mut self.pairs[p];
        for (at, shipment) in pair.pending.iter().enumerate() {
            if shipment.arrive_day == g {
                let minute = (pair.physics.unit() * HOUR_MS as f64) as i64;
                happenings.push((
                    day_start + i64::from(scenario.replenishment.delivery_hour) * HOUR_MS + minute,
                    Happening::Delivery(at),
                ));
            }
        }
        let weekday = world.weekday_of(g);
        if kind != LocationKind::Warehouse {
            if pair.promo_until <= g
                && weekday == 0
                && pair.physics.chance(demand.promo_probability_per_week)
            {
                pair.promo_until = g + demand.promo_days;
            }
            let promo = if g < pair.promo_until {
                demand.promo_lift
            } else {
                1.0
            };
            let mut customers: Vec<i64> = Vec::new();
            match &pair.trace {
                Some(units) => {
                    let mut left = i64::from(units[g as usize]);
                    while left > 0 {
                        let size = (pair.physics.geometric(demand.trace_units_per_customer) as i64)
                            .min(left);
                        customers.push(size);
                        left -= size;
                    }
                }
                None => {
                    let units_per_customer = pair.units_per_customer;
                    let mean =
                        pair.rate * world.weekday_weight[weekday] * promo / units_per_customer;
                    for _ in 0..pair.physics.poisson(mean) {
                        customers.push(pair.physics.geometric(units_per_customer) as i64);
                    }
                }
            }
            for size in customers {
                let at = Self::moment(&mut pair.physics, &demand.hourly, open, close);
                happenings.push((day_start + at, Happening::Customer(size)));
            }
            let expected_units = pair.rate * world.weekday_weight[weekday];
            let shrink = pair.physics.poisson(
                (physics.shrink_units_per_day + physics.shrink_per_unit_sold * expected_units)
                    * drift,
            );
            for _ in 0..shrink {
                let at = (pair.physics.unit() * DAY_MS as f64) as i64;
                happenings.push((day_start + at, Happening::Shrink));
            }
            if pair
                .physics
                .chance(physics.phantom_loss_probability_per_day * drift.min(10.0))
            {
                let at = (pair.physics.unit() * DAY_MS as f64) as i64;
                happenings.push((day_start + at, Happening::Phantom));
            }
            for _ in 0..pair
                .physics
                .poisson(physics.returns_per_unit_sold * expected_units)
            {
                let at = Self::moment(&mut pair.physics, &demand.hourly, open, close);
                happenings.push((day_start + at, Happening::Return));
            }
        }
        if pair.next_count_day == g || pair.count_due {
            happenings.push((
                day_start + i64::from(scenario.cycle_counts.count_hour) * HOUR_MS,
                Happening::Count,
            ));
        }
        if location.rfid {
            happenings.push((
                day_start + i64::from(physics.rfid_sweep_hour) * HOUR_MS,
                Happening::Rfid,
            ));
        }
        if kind != LocationKind::Store {
            let step = i64::from(physics.wms_snapshot_interval_hours) * HOUR_MS;
            let offset = (location.id as i64 * 7 * 60_000) % step;
            let mut at = offset;
            while at < DAY_MS {
                happenings.push((day_start + at, Happening::Snapshot));
                at += step;
            }
        }
        if asks_today && kind != LocationKind::Warehouse {
            let queries = &scenario.queries;
            let mut asks = Vec::new();
            let item_page =
                queries.item_page_per_pair_day + queries.item_page_per_unit_demand * pair.rate;
            asks.push((Surface::ItemPage, item_page, 0, 24));
            match kind {
                LocationKind::Store => {
                    asks.push((Surface::Pickup, queries.pickup_per_pair_day, open, close))
                }
                _ => asks.push((Surface::Delivery, queries.delivery_per_pair_day, 0, 24)),
            }
            for (surface, mean, from, to) in asks {
                for _ in 0..pair.asks.poisson(mean) {
                    let at = Self::moment(&mut pair.asks, &demand.hourly, from, to);
                    let qty = 1 + pair.asks.weighted(&queries.quantity_weights) as i64;
                    happenings.push((day_start + at, Happening::Query(surface, qty)));
                }
            }
        }
        happenings.sort_by_key(|(at, _)| *at);
        let mut sold_today = false;
        for (at, happening) in happenings.iter().copied() {
            self.happen(p, g, at, happening, &mut sold_today);
        }
        let pair = &mut self.pairs[p];
        pair.pending.retain(|s| s.arrive_day != g);
        if kind != LocationKind::Warehouse {
            if sold_today {
                pair.days_since_sale = 0;
                pair.expected_since_sale = 0.0;
            } else {
                pair.days_since_sale += 1;
                pair.expected_since_sale += pair.rate * world.weekday_weight[weekday];
            }
            let counts = &scenario.cycle_counts;
            if pair.days_since_sale >= counts.no_sale_trigger_days
                && pair.expected_since_sale >= counts.no_sale_trigger_expected_units
            {
                pair.count_due = true;
            }
        }
        self.happenings = happenings;
    }

    fn happen(&mut self, p: usize, g: u32, at: i64, happening: Happening, sold_today: &mut bool) {
        let world = self.world;
        let scenario = &world.scenario;
        let physics = &scenario.physics;
        let location = &world.locations[self.pairs[p].location];
        let kind = location.kind;
        let recorded = self.recorded(g);
        match happening {
            Happening::Delivery(at_index) => {
                let pair = &mut self.pairs[p];
                let shipment = &pair.pending[at_index];
                let (paperwork, physical, from) =
                    (shipment.paperwork, shipment.physical, shipment.from);
                pair.truth += physical;
                pair.record += paperwork;
                pair.on_order -= paperwork;
                match from {
                    Some(sender) => self.emit(
                        p,
                        at,
                        Source::Transfer,
                        EventKind::TransferIn,
                        paperwork,
                        Some(sender),
                        0,
                    ),
                    None => self.emit(
                        p,
                        at,
                        Source::Receiving,
                        EventKind::Receipt,
                        paperwork,
                        None,
                        0,
                    ),
                }
            }
            Happening::Customer(wanted) => {
                let pair = &mut self.pairs[p];
                let bought = wanted.min(pair.truth.max(0));
                if recorded {
                    self.out.tally.demanded_units += wanted as u64;
                    self.out.tally.lost_units += (wanted - bought) as u64;
                }
                if bought == 0 {
                    return;
                }
                pair.truth -= bought;
                *sold_today = true;
                let source = if kind == LocationKind::Store
                    && !pair.physics.chance(scenario.demand.store_ecom_share)
                {
                    Source::Pos
                } else {
                    Source::Ecom
                };
                let miscan =
                    source == Source::Pos && pair.physics.chance(physics.miscan_probability);
                let member = pair.family_member;
                let sibling = if miscan && self.index.len() > 1 {
                    let offset = 1 + pair.physics.below(self.index.len() as u64 - 1) as usize;
                    self.index[(member + offset) % self.index.len()][pair.location]
                } else {
                    None
                };
                let target = sibling.unwrap_or(p);
                self.pairs[target].record -= bought;
                self.emit(target, at, source, EventKind::Sale, bought, None, 0);
            }
            Happening::Shrink => {
                let pair = &mut self.pairs[p];
                if pair.truth > 0 {
                    pair.truth -= 1;
                    if recorded {
                        self.out.tally.shrunk_units += 1;
                    }
                }
            }
            Happening::Phantom => {
                let pair = &mut self.pairs[p];
                let most = (pair.truth as f64 * physics.phantom_loss_max_share).floor() as u64;
                if most > 0 {
                    let lost = 1 + pair.physics.below(most) as i64;
                    pair.truth -= lost;
                    if recorded {
                        self.out.tally.shrunk_units += lost as u64;
                    }
                }
            }
            Happening::Return => {
                let pair = &mut self.pairs[p];
                if !pair.physics.chance(physics.unsellable_return_share) {
                    pair.truth += 1;
                }
                pair.record += 1;
                self.emit(p, at, Source::Pos, EventKind::Return, 1, None, 0);
            }
            Happening::Count => {
                let interval = if kind == LocationKind::Store {
                    scenario.cycle_counts.interval_days
                } else {
                    scenario.cycle_counts.wms_interval_days
                };
                let pair = &mut self.pairs[p];
                let mut counted = pair.truth.max(0);
                if pair.physics.chance(physics.count_error_probability) {
                    let error = 1 + pair
                        .physics
                        .below(u64::from(physics.count_error_max_units.max(1)))
                        as i64;
                    counted = if pair.physics.chance(0.5) {
                        counted + error
                    } else {
                        (counted - error).max(0)
                    };
                }
                pair.record = counted;
                pair.count_due = false;
                pair.next_count_day = g + interval;
                pair.days_since_sale = 0;
                pair.expected_since_sale = 0.0;
                if kind == LocationKind::Store {
                    self.emit(
                        p,
                        at,
                        Source::StoreInventory,
                        EventKind::Count,
                        counted,
                        None,
                        0,
                    );
                }
            }
            Happening::Rfid => {
                let pair = &mut self.pairs[p];
                let read = pair
                    .physics
                    .binomial(pair.truth.max(0) as u64, 1.0 - physics.rfid_miss_rate)
                    as i64;
                self.emit(p, at, Source::Rfid, EventKind::RfidRead, read, None, 0);
            }
            Happening::Snapshot => {
                let stuck = location
                    .wms_stuck
                    .iter()
                    .any(|(start, end)| (*start..*end).contains(&at));
                let pair = &mut self.pairs[p];
                if !stuck {
                    pair.last_reported = pair.record.max(0);
                }
                let value = pair.last_reported;
                self.emit(p, at, Source::Wms, EventKind::Snapshot, value, None, 0);
            }
            Happening::Query(surface, qty) => {
                let pair = &mut self.pairs[p];
                pair.query_seq += 1;
                self.out.queries.push(SimQuery {
                    time_ms: at,
                    sku: pair.sku,
                    location: location.id,
                    seq: pair.query_seq,
                    qty,
                    surface,
                    true_on_hand: pair.truth.max(0),
                });
            }
        }
    }

    /// Nightly orders on the recorded position.
    fn replenish(&mut self, g: u32) {
        let world = self.world;
        let plan = &world.scenario.replenishment;
        for member in 0..self.index.len() {
            for (at, location) in world.locations.iter().enumerate() {
                let Some(p) = self.index[member][at] else {
                    continue;
                };
                let pair = &self.pairs[p];
                let cover = if location.kind == LocationKind::Warehouse {
                    plan.warehouse_cover_multiplier
                } else {
                    1.0
                };
                let position = pair.record.max(0) + pair.on_order;
                let reorder = (pair.rate * plan.reorder_cover_days * cover).ceil() as i64;
                if position > reorder {
                    continue;
                }
                let up_to = (pair.rate * plan.order_up_to_cover_days * cover).ceil() as i64;
                let wanted = (up_to - position).max(i64::from(plan.minimum_order_units));
                if location.kind == LocationKind::Warehouse {
                    let (physical, paperwork) = self.shipment_physics(p, wanted);
                    let pair = &mut self.pairs[p];
                    pair.on_order += paperwork;
                    pair.pending.push(Shipment {
                        arrive_day: g + plan.vendor_lead_days,
                        paperwork,
                        physical,
                        from: None,
                    });
                    continue;
                }
                let region = location.region;
                let warehouses: Vec<usize> = world
                    .locations
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.region == region && l.kind == LocationKind::Warehouse)
                    .filter_map(|(w, _)| self.index[member][w])
                    .collect();
                let mut left = wanted;
                if !warehouses.is_empty() {
                    let supplier = warehouses[at % warehouses.len()];
                    let available = self.pairs[supplier].record.max(0);
                    let shipped = left.min(available);
                    if shipped > 0 {
                        self.ship(supplier, p, shipped, g);
                        left -= shipped;
                    }
                }
                if left > 0
                    && location.kind == LocationKind::Store
                    && self.pairs[p]
                        .physics
                        .chance(plan.fc_fills_store_probability)
                {
                    let fc = world
                        .locations
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| l.region == region && l.kind == LocationKind::Fc)
                        .find_map(|(f, _)| self.index[member][f]);
                    if let Some(fc) = fc {
                        let spare = self.pairs[fc].record
                            - (self.pairs[fc].rate * plan.reorder_cover_days).ceil() as i64;
                        let shipped = left.min(spare);
                        if shipped > 0 {
                            self.ship(fc, p, shipped, g);
                        }
                    }
                }
            }
        }
    }

    /// Short or over delivery of a shipment of `paperwork` units: (physical, paperwork).
    fn shipment_physics(&mut self, p: usize, paperwork: i64) -> (i64, i64) {
        let physics = &self.world.scenario.physics;
        let rng = &mut self.pairs[p].physics;
        let share = if rng.chance(physics.short_shipment_probability) {
            rng.uniform(
                physics.short_shipment_share[0],
                physics.short_shipment_share[1],
            )
        } else if rng.chance(physics.over_shipment_probability) {
            1.0 + rng.uniform(
                physics.over_shipment_share[0],
                physics.over_shipment_share[1],
            )
        } else {
            1.0
        };
        let physical = ((paperwork as f64 * share).round() as i64).max(0);
        (physical, paperwork)
    }

    fn ship(&mut self, sender: usize, receiver: usize, paperwork: i64, g: u32) {
        let world = self.world;
        let plan = &world.scenario.replenishment;
        let held = self.pairs[sender].truth.max(0);
        let (mut physical, mut paperwork) = self.shipment_physics(sender, paperwork);
        if physical > held {
            // The picker finds fewer than the shipment needs: the shipment (and its paperwork)
            // is what could be picked, and the sender's record learns its shelf is empty.
            physical = held;
            paperwork = held;
            self.pairs[sender].record = paperwork;
        }
        if paperwork == 0 {
            return;
        }
        let from = &world.locations[self.pairs[sender].location];
        let to = &world.locations[self.pairs[receiver].location];
        let ship_at = world.day_start_ms(from, g) + i64::from(plan.ship_hour) * HOUR_MS;
        let arrive_day = g + plan.transfer_lead_days;
        let expected =
            world.day_start_ms(to, arrive_day) + i64::from(plan.delivery_hour) * HOUR_MS + HOUR_MS;
        self.pairs[sender].truth -= physical;
        self.pairs[sender].record -= paperwork;
        self.emit(
            sender,
            ship_at,
            Source::Transfer,
            EventKind::TransferOut,
            paperwork,
            Some(to.id),
            expected,
        );
        let receiver_pair = &mut self.pairs[receiver];
        receiver_pair.on_order += paperwork;
        receiver_pair.pending.push(Shipment {
            arrive_day,
            paperwork,
            physical,
            from: Some(from.id),
        });
    }

    /// Writes an event of pair `p` (during the recorded period) with its arrivals.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        p: usize,
        event_ms: i64,
        source: Source,
        kind: EventKind,
        qty: i64,
        counterparty: Option<u32>,
        expected_ms: i64,
    ) {
        let burn_in_end = self.world.day_start_ms(
            &self.world.locations[self.pairs[p].location],
            self.world.scenario.calendar.burn_in_days,
        );
        if event_ms < burn_in_end {
            return;
        }
        let world = self.world;
        let location = &world.locations[self.pairs[p].location];
        let pair = &mut self.pairs[p];
        pair.event_seq += 1;
        let event = SimEvent {
            ingest_ms: 0,
            event_ms,
            sku: pair.sku,
            qty,
            expected_ms,
            location: location.id,
            counterparty: counterparty.unwrap_or(NO_COUNTERPARTY),
            seq: pair.event_seq,
            source,
            kind,
        };
        let faults = &world.scenario.faults;
        let first = arrival(&mut pair.feeds, world, location, source, event_ms);
        self.out.events.push(SimEvent {
            ingest_ms: first,
            ..event
        });
        if pair.feeds.chance(faults.duplicate_probability) {
            let gap = pair
                .feeds
                .log_normal(faults.duplicate_delay_median_seconds, 1.0);
            let again = first + (gap * 1000.0) as i64;
            self.out.events.push(SimEvent {
                ingest_ms: again,
                ..event
            });
        }
    }
}

fn feed_delay(source: Source, world: &World) -> &FeedDelay {
    let feeds = &world.scenario.feeds;
    match source {
        Source::Pos => &feeds.pos,
        Source::Ecom => &feeds.ecom,
        Source::Receiving => &feeds.receiving,
        Source::StoreInventory => &feeds.store_inventory,
        Source::Rfid => &feeds.rfid,
        Source::Wms => &feeds.wms,
        Source::Transfer => &feeds.transfer,
    }
}

/// When an event that happened at `event_ms` reaches us.
fn arrival(
    rng: &mut SimRng,
    world: &World,
    location: &LocationSpec,
    source: Source,
    event_ms: i64,
) -> i64 {
    let delay = feed_delay(source, world);
    let faults = &world.scenario.faults;
    let mut seconds = rng.log_normal(delay.median_seconds, delay.sigma);
    if rng.chance(delay.tail_probability) {
        seconds += rng.pareto(delay.tail_scale_seconds, delay.tail_shape);
    }
    if rng.chance(faults.reorder_probability) {
        seconds += rng.uniform(0.0, faults.reorder_max_minutes * 60.0);
    }
    if rng.chance(faults.beyond_bound_probability) {
        seconds = faults.lateness_bound_hours * 3600.0 + rng.uniform(3600.0, 86_400.0);
    }
    let seconds = seconds.min(30.0 * 86_400.0);
    let mut ingest = event_ms + (seconds * 1000.0) as i64;
    for backlog in &location.backlogs {
        if backlog.sources.contains(&source)
            && (ingest >= backlog.start_ms && event_ms < backlog.end_ms)
        {
            let drain = (rng.unit() * backlog.drain_ms as f64) as i64;
            ingest = ingest.max(backlog.end_ms + drain);
        }
    }
    ingest
}

impl Pair {
    #[allow(clippy::too_many_arguments)]
    fn new(
        world: &World,
        sku: u64,
        family_member: usize,
        location: usize,
        rate: f64,
        trace: Option<Vec<u32>>,
        mut physics: SimRng,
        class: &crate::scenario::VelocityClass,
    ) -> Pair {
        let scenario = &world.scenario;
        let id = world.locations[location].id;
        let key = pair_key(sku, id);
        let opening = (rate * scenario.physics.opening_cover_days).round() as i64;
        let interval = if world.locations[location].kind == LocationKind::Store {
            scenario.cycle_counts.interval_days
        } else {
            scenario.cycle_counts.wms_interval_days
        };
        let next_count_day = physics.below(u64::from(interval)) as u32;
        Pair {
            sku,
            family_member,
            location,
            rate,
            units_per_customer: class.units_per_customer,
            trace,
            truth: opening,
            record: opening,
            on_order: 0,
            pending: Vec::new(),
            event_seq: 0,
            query_seq: 0,
            physics,
            feeds: SimRng::derive(world.seed, Stream::Feeds, key),
            asks: SimRng::derive(world.seed, Stream::Queries, key),
            days_since_sale: 0,
            expected_since_sale: 0.0,
            count_due: false,
            next_count_day,
            promo_until: 0,
            last_reported: opening,
        }
    }
}
