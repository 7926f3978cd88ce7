//! The Bayesian stock belief of one pair: what the events say about the true sellable
//! quantity, beyond the ledger's arithmetic.
//!
//! # The model (its assumptions, stated)
//! The ledger's record `R` is exact arithmetic over what was reported. The truth differs:
//! - **Anchor noise.** The latest absolute observation (count, RFID read, feed snapshot) is a
//!   noisy reading of the truth at its time: counts are nearly exact, RFID under-reads by a
//!   fraction, a snapshot is only as good as its age.
//! - **Drift.** After the anchor, unrecorded losses (shrink) take units away at a rate per
//!   unit sold and per day; short receipts take a fraction of what was received. Both move
//!   the mean down and widen the spread (Poisson-like: variance grows with the mean loss).
//! - **Sales bound it from below.** A sale of `k` means at least `k` were there: the truth is
//!   at least `k` more than the record before it, a bound carried to now.
//! - **Nil picks bound it from above.** A pick that found fewer than `q` says the truth was
//!   below `q` then.
//! - **Phantom inventory.** Separately from the drift, the pair may be *phantom*: recorded but
//!   not sellable (lost, misplaced) - truth 0. It becomes likelier with the days since the
//!   pair's presence was last confirmed (a sale, a positive observation, a receipt), and
//!   **no-sale evidence** updates it: if the pair's demand rate says sales were expected in
//!   the open hours since, and none came, "phantom" explains the silence better. The demand
//!   rate is a Gamma posterior of sales per demand hour (conjugate to Poisson counts), whose
//!   prior is the SKU's velocity across its locations; a demand hour is an open hour weighted
//!   by the location's day-of-week and hour-of-day shape (see [`crate::shared`]), so a silent
//!   Saturday evening says more than a silent Monday morning. The chance of a silent stretch
//!   of `h` demand hours under it is the negative binomial's zero term.
//! - **Shared shrink.** The shrink rates are scaled by the location's and the SKU's loss
//!   factors: what their cycle counts found missing against what the model expected.
//!
//! The state kept per pair is only **sufficient statistics** ([`BeliefStats`], 28 bytes);
//! every parameter ([`BeliefParams`]) is applied when a question is asked. So the belief is a
//! pure function of the event log (rebuilt bit-identically by replaying it), and a new model
//! takes effect at once without rebuilding any state.

use serde::{Deserialize, Serialize};

use crate::claims::SourceClaims;
pub use crate::observation::{ObservationKind, compact_seconds, millis_of};
pub use crate::params::BeliefParams;

use crate::shared::SharedFacts;
use crate::stats::probability_from;

const DAY_HOURS: f64 = 24.0;
const HOUR_MS: f64 = 3_600_000.0;

/// What the ledger tells the belief about one applied event, in the belief's own vocabulary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation {
    /// Customers took `units` (a sale, or a pick of an order); the record was `record_before`.
    Sold {
        /// Units sold.
        units: u32,
        /// The ledger's on-hand just before.
        record_before: i64,
    },
    /// The anchor moved to a new absolute observation of `units`.
    Observed {
        /// Units observed.
        units: i64,
        /// Its kind.
        kind: ObservationKind,
    },
    /// `units` were received (possibly short).
    Received {
        /// Units on the receipt.
        units: u32,
    },
    /// A pick for `units` found fewer (ITEM_NOT_FOUND); the record was `record_before`.
    NotFound {
        /// Units the pick asked for.
        units: u32,
        /// The ledger's on-hand just before.
        record_before: i64,
    },
    /// Any other change the ledger applied (returns, adjustments, transfers).
    Moved,
}

/// The per-pair sufficient statistics: 28 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeliefStats {
    /// Sale events ever applied (the demand rate's count).
    pub sale_events: u32,
    /// First event applied, compact seconds (the demand rate's exposure start; 0: none).
    pub first_seen: u32,
    /// Latest confirmation that units were there (sale, positive observation, receipt).
    pub presence_confirmed: u32,
    /// Units sold after the anchor.
    pub units_sold_since_anchor: u32,
    /// Units received after the anchor.
    pub units_received_since_anchor: u32,
    /// Lower bound on truth - record from sales after the anchor (`i32::MIN`: none).
    pub floor_since_anchor: i32,
    /// Upper bound on truth - record from nil picks after the anchor (`i32::MAX`: none).
    pub ceiling_since_anchor: i32,
}

impl Default for BeliefStats {
    fn default() -> Self {
        Self {
            sale_events: 0,
            first_seen: 0,
            presence_confirmed: 0,
            units_sold_since_anchor: 0,
            units_received_since_anchor: 0,
            floor_since_anchor: i32::MIN,
            ceiling_since_anchor: i32::MAX,
        }
    }
}

fn clamp_i32(value: i64) -> i32 {
    value.clamp(i64::from(i32::MIN + 1), i64::from(i32::MAX - 1)) as i32
}

impl BeliefStats {
    /// Folds one applied event dated `event_time_ms` in. `after_anchor`: the event is dated
    /// after the ledger's anchor (earlier ones are already inside the anchor's reading and
    /// only teach the demand rate).
    pub fn observe(&mut self, observation: Observation, event_time_ms: i64, after_anchor: bool) {
        let at = compact_seconds(event_time_ms);
        if self.first_seen == 0 || at < self.first_seen {
            self.first_seen = at;
        }
        match observation {
            // A pick of nothing found nothing: no sale, no presence.
            Observation::Sold { units: 0, .. } => {}
            Observation::Sold {
                units,
                record_before,
            } => {
                self.sale_events = self.sale_events.saturating_add(1);
                self.presence_confirmed = self.presence_confirmed.max(at);
                if after_anchor {
                    self.units_sold_since_anchor =
                        self.units_sold_since_anchor.saturating_add(units);
                    let bound = clamp_i32(i64::from(units) - record_before);
                    self.floor_since_anchor = self.floor_since_anchor.max(bound);
                }
            }
            Observation::Observed { units, .. } => {
                // The ledger moved its anchor: everything "since the anchor" starts over.
                self.units_sold_since_anchor = 0;
                self.units_received_since_anchor = 0;
                self.floor_since_anchor = i32::MIN;
                self.ceiling_since_anchor = i32::MAX;
                if units > 0 {
                    self.presence_confirmed = self.presence_confirmed.max(at);
                }
            }
            Observation::Received { units } => {
                if units > 0 {
                    self.presence_confirmed = self.presence_confirmed.max(at);
                }
                if after_anchor {
                    self.units_received_since_anchor =
                        self.units_received_since_anchor.saturating_add(units);
                }
            }
            Observation::NotFound {
                units,
                record_before,
            } => {
                if after_anchor {
                    let bound = clamp_i32(i64::from(units) - 1 - record_before);
                    self.ceiling_since_anchor = self.ceiling_since_anchor.min(bound);
                }
            }
            Observation::Moved => {}
        }
    }
}

/// The ledger's facts about a pair at the moment of a question.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LedgerFacts {
    /// Recorded on-hand.
    pub record: i64,
    /// Units held by active reservations.
    pub reserved: i64,
    /// The anchor: kind, units read and event time in milliseconds.
    pub anchor: Option<(ObservationKind, i64, i64)>,
    /// Event time of the latest sale, milliseconds.
    pub last_sale_ms: Option<i64>,
    /// Each observing source's claim beside the record.
    pub claims: SourceClaims,
}

/// The belief brought to one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Posterior {
    /// P(phantom: truth 0 whatever the record).
    pub phantom: f64,
    /// Mean of the truth if not phantom (before truncation).
    pub mean: f64,
    /// Its standard deviation.
    pub sd: f64,
    /// Truth is at least this if not phantom.
    pub lower: f64,
    /// Truth is at most this (infinite: no bound).
    pub upper: f64,
    /// Sales the demand rate expected in the open hours since presence was confirmed.
    pub expected_silent_sales: f64,
    /// Demand rate, sales per demand hour (an open hour of average demand; posterior mean).
    pub rate_per_open_hour: f64,
    /// Open hours since presence was confirmed.
    pub silent_open_hours: f64,
    /// Days since the anchor (or since first seen without one).
    pub days_since_anchor: f64,
    /// The SKU's sales per pair and open hour across its locations (the rate's prior).
    pub sku_sales_per_open_hour: f64,
    /// The location's loss factor on shrink.
    pub location_loss_factor: f64,
    /// The SKU's loss factor on shrink.
    pub sku_loss_factor: f64,
}

impl Posterior {
    /// P(truth >= units).
    pub fn probability_at_least(&self, units: i64) -> f64 {
        if units <= 0 {
            return 1.0;
        }
        let present = probability_from(
            units as f64,
            self.mean,
            self.sd,
            self.lower.max(0.0),
            self.upper,
        );
        (1.0 - self.phantom) * present
    }

    /// Expected truth (the not-phantom mean clipped into its bounds, times P(not phantom)).
    pub fn expected_units(&self) -> f64 {
        (1.0 - self.phantom) * self.bounded_mean()
    }

    /// The not-phantom mean clipped into its bounds. Sales can prove more than a nil pick
    /// allowed (the floor above the ceiling): then the floor wins, as sales are certain.
    pub fn bounded_mean(&self) -> f64 {
        let lower = self.lower.max(0.0);
        self.mean.clamp(lower, self.upper.max(lower))
    }
}

/// The belief of a pair at `now_ms`, given its statistics, the ledger's facts, the facts
/// shared with its location and SKU, and the parameters.
pub fn posterior(
    stats: &BeliefStats,
    facts: &LedgerFacts,
    shared: &SharedFacts,
    params: &BeliefParams,
    now_ms: i64,
) -> Posterior {
    let hours = &shared.location.hours;
    let record = facts.record as f64;
    let (mut mean, mut variance, since_ms) = match facts.anchor {
        Some((kind, units, time_ms)) => {
            let read = units.max(0) as f64;
            let relative = params.relative_sd * read;
            let (bias, sd) = match kind {
                ObservationKind::Count => (0.0, params.count_sd),
                ObservationKind::RfidRead => {
                    let under = params.rfid_under_read.clamp(0.0, 0.9);
                    (read * under / (1.0 - under), params.rfid_sd)
                }
                ObservationKind::Snapshot => (0.0, params.snapshot_sd),
            };
            (record + bias, sd * sd + relative * relative, time_ms)
        }
        None => (
            record,
            params.unanchored_sd * params.unanchored_sd,
            if stats.first_seen == 0 {
                now_ms
            } else {
                millis_of(stats.first_seen)
            },
        ),
    };
    let days = ((now_ms - since_ms) as f64 / HOUR_MS / DAY_HOURS).max(0.0);
    let location_loss_factor = shared.location.losses.factor(params);
    let sku_loss_factor = shared.sku.losses.factor(params);
    let loss = location_loss_factor
        * sku_loss_factor
        * (params.shrink_per_unit_sold * f64::from(stats.units_sold_since_anchor)
            + params.shrink_per_day * days)
        + params.receipt_short_rate * f64::from(stats.units_received_since_anchor);
    mean -= loss;
    variance += loss + params.drift_variance_per_day * days;

    let lower = if stats.floor_since_anchor == i32::MIN {
        0.0
    } else {
        (record + f64::from(stats.floor_since_anchor)).max(0.0)
    };
    let upper = if stats.ceiling_since_anchor == i32::MAX {
        f64::INFINITY
    } else {
        (record + f64::from(stats.ceiling_since_anchor)).max(0.0)
    };

    // Demand rate per open hour, learned over the stretch up to the latest confirmation.
    let first_ms = if stats.first_seen == 0 {
        now_ms
    } else {
        millis_of(stats.first_seen)
    };
    let confirmed_ms = if stats.presence_confirmed == 0 {
        first_ms
    } else {
        millis_of(stats.presence_confirmed)
    };
    // Exposure in demand hours (open hours weighted by the location's shape); the prior is
    // the SKU's velocity across its locations.
    let profile = shared
        .location
        .demand
        .profile(hours, params.shape_prior_sales);
    let sku_rate =
        shared
            .sku
            .sales_per_open_hour(now_ms, hours.open_hours_per_day().max(1.0), params);
    let prior_sales = params.sku_pooling_sales.max(1e-9);
    let shape = prior_sales + f64::from(stats.sale_events);
    let rate_hours = prior_sales / sku_rate + profile.demand_hours_between(first_ms, confirmed_ms);
    let silent_demand_hours = profile.demand_hours_between(confirmed_ms, now_ms);
    let silent_hours = hours.open_hours_between(confirmed_ms, now_ms);
    // P(no sale in the silent stretch | present): the negative binomial's zero term.
    let silent_if_present = (rate_hours / (rate_hours + silent_demand_hours)).powf(shape);
    let days_unconfirmed = ((now_ms - confirmed_ms) as f64 / HOUR_MS / DAY_HOURS).max(0.0);
    let prior =
        1.0 - (1.0 - params.phantom_base) * (-params.phantom_per_day * days_unconfirmed).exp();
    let phantom = if record <= 0.0 {
        0.0 // Nothing recorded: the record itself already says zero.
    } else {
        prior / (prior + (1.0 - prior) * silent_if_present)
    };
    Posterior {
        phantom,
        mean,
        sd: variance.max(1e-6).sqrt(),
        lower,
        upper,
        expected_silent_sales: shape / rate_hours * silent_demand_hours,
        rate_per_open_hour: shape / rate_hours,
        silent_open_hours: silent_hours,
        days_since_anchor: days,
        sku_sales_per_open_hour: sku_rate,
        location_loss_factor,
        sku_loss_factor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_772_409_600_000;
    const DAY: i64 = 86_400_000;

    fn counted(units: i64, days_ago: i64) -> LedgerFacts {
        LedgerFacts {
            record: units,
            reserved: 0,
            anchor: Some((ObservationKind::Count, units, NOW - days_ago * DAY)),
            last_sale_ms: None,
            claims: SourceClaims::default(),
        }
    }

    fn at(stats: &BeliefStats, facts: &LedgerFacts, now: i64) -> Posterior {
        posterior(
            stats,
            facts,
            &SharedFacts::default(),
            &BeliefParams::default(),
            now,
        )
    }

    #[test]
    fn silence_of_a_seller_raises_phantom() {
        // A pair that sold every 2 hours for 20 days, counted at 5.
        let mut stats = BeliefStats::default();
        for hour in 0..240 {
            let time = NOW - 30 * DAY + hour * 2 * 3_600_000;
            stats.observe(
                Observation::Sold {
                    units: 1,
                    record_before: 6,
                },
                time,
                true,
            );
        }
        let facts = counted(5, 30);
        let last_sale = NOW - 30 * DAY + 239 * 2 * 3_600_000;
        let soon = at(&stats, &facts, last_sale + 3_600_000);
        let later = at(&stats, &facts, last_sale + 3 * DAY);
        assert!(soon.phantom < 0.05, "{soon:?}");
        assert!(later.phantom > 0.9, "{later:?}");
        assert!(later.probability_at_least(1) < 0.1);
        // A slow seller's silence says little: known for 60 days, one sale 30 days ago.
        let mut slow = BeliefStats::default();
        slow.observe(
            Observation::Observed {
                units: 6,
                kind: ObservationKind::Count,
            },
            NOW - 60 * DAY,
            false,
        );
        slow.observe(
            Observation::Sold {
                units: 1,
                record_before: 6,
            },
            NOW - 30 * DAY,
            true,
        );
        assert!(at(&slow, &facts, NOW).phantom < 0.3);
    }

    #[test]
    fn a_pick_of_nothing_confirms_nothing() {
        let mut stats = BeliefStats::default();
        stats.observe(
            Observation::Sold {
                units: 0,
                record_before: 5,
            },
            NOW,
            true,
        );
        assert_eq!((stats.sale_events, stats.presence_confirmed), (0, 0));
    }

    #[test]
    fn sales_bound_from_below_and_nil_picks_from_above() {
        let mut stats = BeliefStats::default();
        // The record said 1 but 3 were sold at once: at least 2 more than recorded.
        stats.observe(
            Observation::Sold {
                units: 3,
                record_before: 1,
            },
            NOW - 3_600_000,
            true,
        );
        let facts = LedgerFacts {
            record: -2,
            ..counted(-2, 1)
        };
        let posterior = at(&stats, &facts, NOW);
        assert_eq!(posterior.lower, 0.0);
        let mut stats = BeliefStats::default();
        stats.observe(
            Observation::NotFound {
                units: 1,
                record_before: 4,
            },
            NOW - 3_600_000,
            true,
        );
        let posterior = at(&stats, &counted(4, 1), NOW);
        assert_eq!(posterior.upper, 0.0);
        assert_eq!(posterior.probability_at_least(1), 0.0);
    }

    /// A nil pick, then sales proving more than it allowed: the floor ends above the
    /// ceiling. The belief still answers (found by the node audit test, where it panicked).
    #[test]
    fn a_floor_above_the_ceiling_still_answers() {
        let mut stats = BeliefStats::default();
        stats.observe(
            Observation::NotFound {
                units: 2,
                record_before: 10,
            },
            NOW - 2 * 3_600_000,
            true,
        );
        stats.observe(
            Observation::Sold {
                units: 12,
                record_before: 10,
            },
            NOW - 3_600_000,
            true,
        );
        let posterior = at(&stats, &counted(10, 1), NOW);
        assert!(posterior.lower > posterior.upper, "{posterior:?}");
        assert_eq!(posterior.bounded_mean(), posterior.lower);
        let expected = posterior.expected_units();
        assert!(expected.is_finite() && expected >= 0.0, "{expected}");
        // Promises stay conservative: nothing above the ceiling is promised.
        let above_ceiling = posterior.upper as i64 + 1;
        assert_eq!(posterior.probability_at_least(above_ceiling), 0.0);
    }

    #[test]
    fn rfid_reads_are_corrected_upward_and_age_widens() {
        let stats = BeliefStats::default();
        let rfid = LedgerFacts {
            anchor: Some((ObservationKind::RfidRead, 19, NOW - DAY)),
            ..counted(19, 1)
        };
        assert!(at(&stats, &rfid, NOW).mean > 19.5);
        let fresh = at(&stats, &counted(10, 1), NOW);
        let old = at(&stats, &counted(10, 300), NOW);
        assert!(old.sd > fresh.sd && old.mean < fresh.mean);
    }

    proptest! {
        /// Probabilities are probabilities, fall as more units are asked, and the statistics
        /// do not depend on the order the same events arrive in.
        #[test]
        fn probabilities_are_monotone_and_stats_order_free(
            sales in proptest::collection::vec((1u32..4, -3i64..30, 0i64..(40 * DAY)), 0..12),
            record in -5i64..40, anchor_days in 0i64..100, now_offset in 0i64..(10 * DAY),
        ) {
            let mut forward = BeliefStats::default();
            for &(units, before, ago) in &sales {
                forward.observe(Observation::Sold { units, record_before: before }, NOW - ago, true);
            }
            let mut backward = BeliefStats::default();
            for &(units, before, ago) in sales.iter().rev() {
                backward.observe(Observation::Sold { units, record_before: before }, NOW - ago, true);
            }
            prop_assert_eq!(forward, backward);
            let facts = LedgerFacts { record, ..counted(record, anchor_days) };
            let posterior = at(&forward, &facts, NOW + now_offset);
            let mut previous = 1.0;
            for units in 0..45 {
                let p = posterior.probability_at_least(units);
                prop_assert!((0.0..=1.0).contains(&p));
                prop_assert!(p <= previous + 1e-12);
                previous = p;
            }
        }
    }
}
