//! Facts shared by many pairs, computed once and read by every entity they concern.
//!
//! - Per **location**: opening hours, kind, expected feeds and their health (see [`feeds`]),
//!   the **demand shape** (sales counted by local day of week and by local hour of day, one
//!   profile for all the location's pairs instead of one per pair), and the **unrecorded
//!   losses** its cycle counts revealed.
//! - Per **SKU**: its **sales velocity** across locations (the prior of a new or slow pair's
//!   demand rate) and the unrecorded losses its counts revealed.
//!
//! # Assumptions, stated
//! - Demand at a location is the product of a day-of-week weight and an hour-of-day weight
//!   (no interaction), the same for every item of the location. Both start uniform over the
//!   open hours (a prior of [`BeliefParams::shape_prior_sales`] pseudo sales) and move with
//!   the sales counted. A "demand hour" is an open hour weighted by the shape, so a week has
//!   as many demand hours as open hours.
//! - A SKU's pairs share a sales rate per open hour, up to each pair's own evidence: a pair's
//!   demand rate starts from the SKU's (Gamma, [`BeliefParams::sku_pooling_sales`] pseudo
//!   sales strong) before its own sales move it.
//! - Shrink differs by location and by SKU as two multiplicative factors over the model's
//!   rate, each the ratio of units counts found missing to the units the model expected
//!   missing, pulled to 1 by [`BeliefParams::loss_pooling_units`] pseudo units and kept in
//!   `[1/4, 4]`.
//!
//! Every statistic here is a count or a sum, so it is the same whatever order the events of
//! different pairs are applied in; the parameters are applied at question time.
//!
//! [`feeds`]: crate::feeds

use serde::{Deserialize, Serialize};

use crate::feeds::FeedHealth;
use crate::hours::OpeningHours;
use crate::observation::compact_seconds;
use crate::params::BeliefParams;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const DAY_SECONDS: f64 = 86_400.0;
/// 1970-01-01 was a Thursday: days since the epoch plus this, modulo 7, is 0 on Mondays.
const MONDAY_SHIFT: i64 = 3;
/// The loss factors stay within `[1 / LOSS_FACTOR_BOUND, LOSS_FACTOR_BOUND]`.
const LOSS_FACTOR_BOUND: f64 = 4.0;

/// What a location is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocationKind {
    /// A store (the default).
    #[default]
    Store,
    /// A fulfillment center.
    FulfillmentCenter,
    /// A warehouse.
    Warehouse,
}

/// The location-level facts an entity reads (shared by every pair of the location).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocationFacts {
    /// Its opening hours.
    pub hours: OpeningHours,
    /// Its kind.
    pub kind: LocationKind,
    /// Sources it is expected to send, one bit per source index.
    pub expected_sources: u8,
    /// Its feeds' health.
    pub feeds: FeedHealth,
    /// Its demand shape.
    pub demand: DemandShape,
    /// Unrecorded losses its counts revealed.
    pub losses: LossStats,
}

/// Everything shared an entity reads at a question: its location's facts and its SKU's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SharedFacts {
    /// The pair's location.
    pub location: LocationFacts,
    /// The pair's SKU.
    pub sku: SkuStats,
}

/// A location's sales counted by local day of week (Monday first) and local hour of day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandShape {
    /// Sales per local day of week, Monday = 0.
    pub by_weekday: [u32; 7],
    /// Sales per local hour of day.
    pub by_hour: [u32; 24],
}

/// Local day since the epoch and millisecond within it.
fn local_day(hours: &OpeningHours, time_ms: i64) -> (i64, i64) {
    let local = hours.local_ms(time_ms);
    (local.div_euclid(DAY_MS), local.rem_euclid(DAY_MS))
}

impl DemandShape {
    /// Counts a sale dated `time_ms` (local to `hours`).
    pub fn record_sale(&mut self, hours: &OpeningHours, time_ms: i64) {
        let (day, within) = local_day(hours, time_ms);
        let weekday = (day + MONDAY_SHIFT).rem_euclid(7) as usize;
        let hour = (within / HOUR_MS) as usize;
        self.by_weekday[weekday] = self.by_weekday[weekday].saturating_add(1);
        self.by_hour[hour] = self.by_hour[hour].saturating_add(1);
    }

    /// The weights of the shape for a location open `hours`, pulled towards uniform by
    /// `prior_sales` pseudo sales.
    pub fn profile(&self, hours: &OpeningHours, prior_sales: f64) -> DemandProfile {
        let prior = prior_sales.max(1e-9);
        let open = usize::from(hours.open_hour.min(23));
        let close = usize::from(hours.close_hour).clamp(open + 1, 24);
        let open_count = (close - open) as f64;
        let open_sales: f64 = self.by_hour[open..close]
            .iter()
            .map(|&s| f64::from(s))
            .sum();
        let mut hour_cumulative = [0.0; 25];
        for hour in 0..24 {
            let weight = if (open..close).contains(&hour) {
                open_count * (f64::from(self.by_hour[hour]) + prior / open_count)
                    / (open_sales + prior)
            } else {
                0.0
            };
            hour_cumulative[hour + 1] = hour_cumulative[hour] + weight;
        }
        let all_sales: f64 = self.by_weekday.iter().map(|&s| f64::from(s)).sum();
        let mut day_weight = [0.0; 7];
        let mut day_cumulative = [0.0; 8];
        for day in 0..7 {
            day_weight[day] =
                7.0 * (f64::from(self.by_weekday[day]) + prior / 7.0) / (all_sales + prior);
            day_cumulative[day + 1] = day_cumulative[day] + day_weight[day];
        }
        DemandProfile {
            hours: *hours,
            day_weight,
            day_cumulative,
            hour_cumulative,
        }
    }
}

/// A demand shape's weights, ready to integrate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DemandProfile {
    hours: OpeningHours,
    /// Weight per local day of week (mean 1).
    day_weight: [f64; 7],
    /// `day_cumulative[d]`: the weights of days `0..d`.
    day_cumulative: [f64; 8],
    /// `hour_cumulative[h]`: the weights of local hours `0..h` (closed hours weigh 0; the
    /// open hours' weights sum to the number of open hours).
    hour_cumulative: [f64; 25],
}

impl DemandProfile {
    /// Demand hours from a fixed origin (a Monday) to `time_ms`.
    fn cumulative(&self, time_ms: i64) -> f64 {
        let (day, within) = local_day(&self.hours, time_ms);
        let shifted = day + MONDAY_SHIFT;
        let (weeks, weekday) = (shifted.div_euclid(7), shifted.rem_euclid(7) as usize);
        let per_day = self.hour_cumulative[24];
        let whole_days = (weeks as f64 * 7.0 + self.day_cumulative[weekday]) * per_day;
        let hour = (within / HOUR_MS) as usize;
        let fraction = (within % HOUR_MS) as f64 / HOUR_MS as f64;
        let (start, end) = (self.hour_cumulative[hour], self.hour_cumulative[hour + 1]);
        whole_days + self.day_weight[weekday] * (start + fraction * (end - start))
    }

    /// Demand hours in `[from_ms, to_ms)`: open hours weighted by the shape (0 when
    /// `to_ms <= from_ms`).
    pub fn demand_hours_between(&self, from_ms: i64, to_ms: i64) -> f64 {
        if to_ms <= from_ms {
            return 0.0;
        }
        (self.cumulative(to_ms) - self.cumulative(from_ms)).max(0.0)
    }
}

/// Units cycle counts found missing beyond the record, with what the model would have
/// expected missing over the same stretches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossStats {
    /// Counts that corrected an earlier anchor.
    pub counts: u32,
    /// Units the record had over the counts, summed (negative: counts found more).
    pub lost_units: i64,
    /// Units sold between each count and the anchor before it, summed.
    pub sold_units: u64,
    /// Seconds between each count and the anchor before it, summed.
    pub seconds: u64,
}

impl LossStats {
    /// Records a count that found `lost` units fewer than the record, `sold` units sold and
    /// `seconds` after the anchor it replaced.
    pub fn record(&mut self, lost: i64, sold: u32, seconds: u64) {
        self.counts = self.counts.saturating_add(1);
        self.lost_units = self.lost_units.saturating_add(lost);
        self.sold_units = self.sold_units.saturating_add(u64::from(sold));
        self.seconds = self.seconds.saturating_add(seconds);
    }

    /// How many times the model's shrink these counts saw, pulled to 1 by the pooling prior.
    pub fn factor(&self, params: &BeliefParams) -> f64 {
        let expected = params.shrink_per_unit_sold * self.sold_units as f64
            + params.shrink_per_day * self.seconds as f64 / DAY_SECONDS;
        let pooling = params.loss_pooling_units.max(1e-9);
        ((self.lost_units.max(0) as f64 + pooling) / (expected + pooling))
            .clamp(1.0 / LOSS_FACTOR_BOUND, LOSS_FACTOR_BOUND)
    }
}

/// A SKU's statistics across its locations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuStats {
    /// Pairs of the SKU seen.
    pub pairs: u32,
    /// Sum of their first-seen times, compact seconds (exposure = pairs x now - this).
    pub first_seen_sum: u64,
    /// Sale events across its pairs.
    pub sale_events: u64,
    /// Unrecorded losses its counts revealed.
    pub losses: LossStats,
}

impl SkuStats {
    /// A pair's first-seen time moved from `before` (0: new pair) to `after`.
    pub fn pair_first_seen(&mut self, before: u32, after: u32) {
        if before == 0 {
            self.pairs = self.pairs.saturating_add(1);
        } else {
            self.first_seen_sum = self.first_seen_sum.saturating_sub(u64::from(before));
        }
        self.first_seen_sum = self.first_seen_sum.saturating_add(u64::from(after));
    }

    /// Counts a sale event of one of its pairs.
    pub fn record_sale(&mut self) {
        self.sale_events = self.sale_events.saturating_add(1);
    }

    /// Sales per pair per open hour at `now_ms` (a Gamma posterior mean with the model's
    /// demand prior), for a location open `open_hours_per_day`.
    pub fn sales_per_open_hour(
        &self,
        now_ms: i64,
        open_hours_per_day: f64,
        params: &BeliefParams,
    ) -> f64 {
        let pair_seconds = (u64::from(self.pairs) * u64::from(compact_seconds(now_ms)))
            .saturating_sub(self.first_seen_sum);
        let open_hours = pair_seconds as f64 / 3_600.0 * open_hours_per_day / 24.0;
        (self.sale_events as f64 + params.rate_prior_sales) / (open_hours + params.rate_prior_hours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MONDAY: i64 = 1_772_409_600_000; // 2026-03-02T00:00:00Z, a Monday

    #[test]
    fn a_uniform_shape_counts_open_hours() {
        let hours = OpeningHours::new("America/Chicago", 8, 20);
        let profile = DemandShape::default().profile(&hours, 100.0);
        let demand = profile.demand_hours_between(MONDAY, MONDAY + 3 * DAY_MS);
        assert!((demand - 36.0).abs() < 1e-9, "{demand}");
    }

    #[test]
    fn busy_hours_and_days_weigh_more() {
        let hours = OpeningHours::default();
        let mut shape = DemandShape::default();
        // Every sale on Saturdays between 17:00 and 18:00.
        for _ in 0..1_000 {
            shape.record_sale(&hours, MONDAY + 5 * DAY_MS + 17 * HOUR_MS + 1_000);
        }
        assert_eq!(shape.by_weekday[5], 1_000);
        assert_eq!(shape.by_hour[17], 1_000);
        let profile = shape.profile(&hours, 10.0);
        let saturday_evening = profile.demand_hours_between(
            MONDAY + 5 * DAY_MS + 17 * HOUR_MS,
            MONDAY + 5 * DAY_MS + 18 * HOUR_MS,
        );
        let monday_morning =
            profile.demand_hours_between(MONDAY + 9 * HOUR_MS, MONDAY + 10 * HOUR_MS);
        assert!(saturday_evening > 100.0 * monday_morning);
        // A whole week still has as many demand hours as open hours.
        let week = profile.demand_hours_between(MONDAY, MONDAY + 7 * DAY_MS);
        assert!((week - 168.0).abs() < 1e-6, "{week}");
    }

    #[test]
    fn loss_factors_follow_the_counts_and_stay_bounded() {
        let params = BeliefParams::default();
        let mut losses = LossStats::default();
        assert_eq!(losses.factor(&params), 1.0);
        // 1,000 counts, each 30 days after the last with 10 units sold, finding 2 missing.
        for _ in 0..1_000 {
            losses.record(2, 10, 30 * 86_400);
        }
        let expected_per_count = params.shrink_per_unit_sold * 10.0 + params.shrink_per_day * 30.0;
        assert!(2.0 / expected_per_count > LOSS_FACTOR_BOUND);
        assert_eq!(losses.factor(&params), LOSS_FACTOR_BOUND);
        let mut honest = LossStats::default();
        for _ in 0..1_000 {
            honest.record(0, 10, 30 * 86_400);
        }
        assert_eq!(honest.factor(&params), 1.0 / LOSS_FACTOR_BOUND);
    }

    #[test]
    fn sku_velocity_is_sales_per_pair_open_hour() {
        let params = BeliefParams::default();
        let mut sku = SkuStats::default();
        let start = compact_seconds(MONDAY);
        for _ in 0..100 {
            sku.pair_first_seen(0, start);
        }
        for _ in 0..12_000 {
            sku.record_sale();
        }
        // 100 pairs x 10 days x 12 open hours = 12,000 open hours, 12,000 sales: ~1 per hour.
        let rate = sku.sales_per_open_hour(MONDAY + 10 * DAY_MS, 12.0, &params);
        assert!((rate - 1.0).abs() < 0.01, "{rate}");
        // A first-seen moved earlier adds exposure.
        sku.pair_first_seen(start, start - 86_400);
        assert_eq!(sku.pairs, 100);
        assert!(sku.sales_per_open_hour(MONDAY + 10 * DAY_MS, 12.0, &params) < rate);
    }

    proptest! {
        /// Demand hours add up over a split, and with no sales they are the open hours.
        #[test]
        fn demand_hours_are_additive(
            offset in -10i8..=10, open in 0u8..23, span in 1u8..=24,
            sales in proptest::collection::vec(0i64..(14 * DAY_MS), 0..50),
            start in 0i64..(40 * DAY_MS), cut in 0i64..(20 * DAY_MS), rest in 0i64..(20 * DAY_MS),
        ) {
            let hours = OpeningHours { zone: 0, utc_offset_minutes: i16::from(offset) * 30, open_hour: open,
                close_hour: (open + span).min(24) };
            let (a, b, c) = (MONDAY + start, MONDAY + start + cut, MONDAY + start + cut + rest);
            let uniform = DemandShape::default().profile(&hours, 50.0);
            prop_assert!((uniform.demand_hours_between(a, c) - hours.open_hours_between(a, c)).abs() < 1e-6);
            let mut shape = DemandShape::default();
            for sale in sales {
                shape.record_sale(&hours, MONDAY + sale);
            }
            let profile = shape.profile(&hours, 50.0);
            let whole = profile.demand_hours_between(a, c);
            let parts = profile.demand_hours_between(a, b) + profile.demand_hours_between(b, c);
            prop_assert!((whole - parts).abs() < 1e-6);
            prop_assert!(whole >= 0.0);
        }
    }
}
