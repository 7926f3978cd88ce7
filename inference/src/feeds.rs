//! Feed health per location: when each source was last heard from, and how long it usually
//! goes quiet, so a silent expected feed can be called stale.
//!
//! A shared, location-level feature: every entity of a location reads the same figures.
//! Silence is counted in the location's open hours, against a typical gap learned online
//! (an exponentially weighted mean of the open-hour gaps between successive new event times),
//! so a feed that naturally reports daily is not stale after an hour, and a store's night is
//! not silence.

use serde::{Deserialize, Serialize};

use crate::hours::OpeningHours;
use crate::observation::compact_seconds;

/// Most sources a location tracks (the domain has 7).
pub const MAX_SOURCES: usize = 8;
const EPOCH_2020_MS: i64 = 1_577_836_800_000;
/// Weight of the newest gap in the typical gap.
const GAP_WEIGHT: f32 = 0.1;
/// Silence is measured against a typical gap of at least this many open hours: a feed that
/// reports in bursts (a morning count sweep, a snapshot of every pair at once) learns a
/// typical gap of seconds, and an hour's quiet after its burst must not read as a silence
/// of hundreds of gaps.
const MIN_TYPICAL_GAP_OPEN_HOURS: f64 = 1.0;

/// When a silent feed counts as stale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StalenessPolicy {
    /// Never stale before this many open hours of silence.
    pub min_silent_open_hours: f64,
    /// Stale after this many typical gaps of silence.
    pub typical_gaps: f64,
}

impl Default for StalenessPolicy {
    fn default() -> Self {
        Self {
            min_silent_open_hours: 24.0,
            typical_gaps: 12.0,
        }
    }
}

/// One location's feeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedHealth {
    /// Latest event time per source, compact seconds (0: never).
    pub last_seen: [u32; MAX_SOURCES],
    /// Typical open-hour gap between new event times per source.
    pub typical_gap_open_hours: [f32; MAX_SOURCES],
}

impl FeedHealth {
    /// Records an event of `source` dated `event_time_ms`.
    pub fn heard(&mut self, source: usize, event_time_ms: i64, hours: &OpeningHours) {
        let Some(last) = self.last_seen.get_mut(source) else {
            return;
        };
        let at = compact_seconds(event_time_ms);
        if at <= *last {
            return;
        }
        if *last != 0 {
            let gap =
                hours.open_hours_between(EPOCH_2020_MS + i64::from(*last) * 1_000, event_time_ms);
            let typical = &mut self.typical_gap_open_hours[source];
            *typical = if *typical == 0.0 {
                gap as f32
            } else {
                *typical + GAP_WEIGHT * (gap as f32 - *typical)
            };
        }
        *last = at;
    }

    /// Open hours `source` has been silent at `now_ms`, and that over its typical gap (at
    /// least [`MIN_TYPICAL_GAP_OPEN_HOURS`]; 0 if it was never heard: a source never heard
    /// has no rhythm to miss).
    pub fn silence_ratio(&self, source: usize, now_ms: i64, hours: &OpeningHours) -> (f64, f64) {
        let (Some(&last), Some(&typical)) = (
            self.last_seen.get(source),
            self.typical_gap_open_hours.get(source),
        ) else {
            return (0.0, 0.0);
        };
        if last == 0 {
            return (0.0, 0.0);
        }
        let silent = hours.open_hours_between(EPOCH_2020_MS + i64::from(last) * 1_000, now_ms);
        (
            silent,
            silent / f64::from(typical).max(MIN_TYPICAL_GAP_OPEN_HOURS),
        )
    }

    /// The worst silence ratio among `expected` sources, and whether any is stale.
    pub fn worst_expected(
        &self,
        expected: u8,
        now_ms: i64,
        hours: &OpeningHours,
        policy: &StalenessPolicy,
    ) -> (f64, bool) {
        let mut worst = 0.0f64;
        let mut stale = false;
        for source in (0..MAX_SOURCES).filter(|s| expected & (1 << s) != 0) {
            let (silent, ratio) = self.silence_ratio(source, now_ms, hours);
            worst = worst.max(ratio);
            stale |= silent > policy.min_silent_open_hours && ratio > policy.typical_gaps;
        }
        (worst, stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_772_409_600_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_burst_does_not_make_an_hour_of_quiet_look_like_a_long_silence() {
        let hours = OpeningHours::default();
        let mut health = FeedHealth::default();
        // A count sweep: 2,000 events a few milliseconds apart.
        for i in 0..2_000 {
            health.heard(2, T0 + 6 * HOUR + i * 1_000, &hours);
        }
        let (silent, ratio) = health.silence_ratio(2, T0 + 8 * HOUR + 2_000_000, &hours);
        assert!(silent > 1.9 && ratio <= silent, "{silent} {ratio}");
    }

    #[test]
    fn a_feed_is_stale_after_many_typical_gaps_of_open_hours() {
        let hours = OpeningHours::default();
        let mut health = FeedHealth::default();
        for day in 0..20 {
            health.heard(5, T0 + day * 24 * HOUR, &hours);
        }
        let last = T0 + 19 * 24 * HOUR;
        let policy = StalenessPolicy::default();
        assert!(
            !health
                .worst_expected(1 << 5, last + 48 * HOUR, &hours, &policy)
                .1
        );
        assert!(
            health
                .worst_expected(1 << 5, last + 13 * 24 * HOUR, &hours, &policy)
                .1
        );
        // Not expected, or never heard: never stale.
        assert!(
            !health
                .worst_expected(1 << 4, last + 400 * 24 * HOUR, &hours, &policy)
                .1
        );
        // Late events do not move the last-seen time back.
        health.heard(5, T0, &hours);
        assert_eq!(health.last_seen[5], compact_seconds(last));
    }
}
