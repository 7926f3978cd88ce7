//! Opening hours: how many hours a location was open between two instants, in its own local
//! time.
//!
//! No-sale evidence counts open hours only (DESIGN.md "Time"), and a pair's demand rate is per
//! open hour. Time zones come from the IANA database compiled into the build (jiff's bundled
//! tzdb, no system files read): a zone with daylight saving time gives each instant its own
//! offset; a zone that keeps one offset (`UTC`, `Etc/GMT+6`, `Asia/Kolkata`) that offset. An interval's open hours
//! are counted on the local timeline between its two ends' local times, so they are exact
//! except on the day a clock change falls inside the opening hours (a store open at 2 am on
//! that day), which may count an hour too many or too few.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// When a location is open, in its own local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    /// Local time = UTC + this many minutes: the zone's standard offset (with `zone`) or its
    /// only one.
    pub utc_offset_minutes: i16,
    /// Opening hour, local (0-23).
    pub open_hour: u8,
    /// Closing hour, local (1-24, after `open_hour`).
    pub close_hour: u8,
    /// The IANA zone whose rules give the offset at each instant (daylight saving time
    /// included), by [`zone_key`] of its name; 0: `utc_offset_minutes` always. Not written
    /// when 0, so facts and records of fixed-offset locations keep their bytes.
    #[serde(default, skip_serializing_if = "is_fixed")]
    pub zone: u64,
}

fn is_fixed(zone: &u64) -> bool {
    *zone == 0
}

impl Default for OpeningHours {
    /// Open all day, UTC: the catalog's default for a location it does not know.
    fn default() -> Self {
        Self {
            utc_offset_minutes: 0,
            open_hour: 0,
            close_hour: 24,
            zone: 0,
        }
    }
}

/// Whether `name` is a time zone of the IANA database bundled with this build (`UTC`,
/// `America/Chicago`, `Etc/GMT+6`, ...; compared as the database does, ignoring case).
pub fn is_time_zone(name: &str) -> bool {
    !name.is_empty() && jiff::tz::db().get(name).is_ok()
}

/// A stable key of a zone's canonical name (64-bit FNV-1a): the same in every build and
/// process, so persisted facts find their zone again. Never 0.
pub fn zone_key(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// Every zone of the bundled database with daylight saving rules, by key (built once, on
/// the first question about such a zone).
fn zones() -> &'static [(u64, jiff::tz::TimeZone)] {
    static ZONES: OnceLock<Vec<(u64, jiff::tz::TimeZone)>> = OnceLock::new();
    ZONES.get_or_init(|| {
        let database = jiff::tz::db();
        let mut zones: Vec<(u64, jiff::tz::TimeZone)> = database
            .available()
            .filter_map(|name| {
                let zone = database.get(name.as_str()).ok()?;
                changes_clocks(&zone).then(|| (zone_key(name.as_str()), zone))
            })
            .collect();
        zones.sort_by_key(|(key, _)| *key);
        zones.dedup_by_key(|(key, _)| *key);
        zones
    })
}

/// Whether a zone changes its clocks from 2020 on (daylight saving time, or a change of
/// offset still to come). A zone whose changes are all history (`Asia/Kolkata`), or that has
/// none (`Etc/GMT+6`), keeps one offset: it is stored as that offset alone.
fn changes_clocks(zone: &jiff::tz::TimeZone) -> bool {
    const YEAR_2020_MS: i64 = 1_577_836_800_000; // 2020-01-01T00:00:00Z
    jiff::Timestamp::from_millisecond(YEAR_2020_MS)
        .is_ok_and(|since| zone.following(since).next().is_some())
}

fn zone_by_key(key: u64) -> Option<&'static jiff::tz::TimeZone> {
    let zones = zones();
    zones
        .binary_search_by_key(&key, |(k, _)| *k)
        .ok()
        .map(|index| &zones[index].1)
}

/// The offset of `zone` at `time_ms`, in milliseconds.
fn offset_ms(zone: &jiff::tz::TimeZone, time_ms: i64) -> Option<i64> {
    let instant = jiff::Timestamp::from_millisecond(time_ms).ok()?;
    Some(i64::from(zone.to_offset(instant).seconds()) * 1_000)
}

/// The standard-time UTC offset of a time zone name in minutes, if the database knows it
/// (for a zone with daylight saving time: its offset at whichever of mid-January and
/// mid-July is not daylight saving time).
pub fn utc_offset_minutes(timezone: &str) -> Option<i16> {
    let zone = jiff::tz::db().get(timezone).ok()?;
    const JANUARY_2026_MS: i64 = 1_768_435_200_000; // 2026-01-15T00:00:00Z
    const JULY_2026_MS: i64 = 1_784_073_600_000; // 2026-07-15T00:00:00Z
    let standard_at = [JANUARY_2026_MS, JULY_2026_MS]
        .into_iter()
        .find(|&ms| {
            jiff::Timestamp::from_millisecond(ms)
                .is_ok_and(|instant| !zone.to_offset_info(instant).dst().is_dst())
        })
        .unwrap_or(JANUARY_2026_MS);
    let minutes = offset_ms(&zone, standard_at)? / 60_000;
    i16::try_from(minutes).ok()
}

impl OpeningHours {
    /// Hours for a named time zone (unknown names count as UTC) and local opening hours.
    pub fn new(timezone: &str, open_hour: u8, close_hour: u8) -> Self {
        let zone = jiff::tz::db()
            .get(timezone)
            .ok()
            .filter(changes_clocks)
            .and_then(|zone| zone.iana_name().map(zone_key))
            .filter(|key| zone_by_key(*key).is_some())
            .unwrap_or(0);
        Self {
            utc_offset_minutes: utc_offset_minutes(timezone).unwrap_or(0),
            open_hour: open_hour.min(23),
            close_hour: close_hour.clamp(open_hour.min(23) + 1, 24),
            zone,
        }
    }

    /// Local time at `time_ms`, as milliseconds on the local timeline.
    pub fn local_ms(&self, time_ms: i64) -> i64 {
        let fixed = i64::from(self.utc_offset_minutes) * 60_000;
        if self.zone == 0 {
            return time_ms + fixed;
        }
        let offset = zone_by_key(self.zone)
            .and_then(|zone| offset_ms(zone, time_ms))
            .unwrap_or(fixed);
        time_ms + offset
    }

    /// Hours open a day.
    pub fn open_hours_per_day(&self) -> f64 {
        f64::from(self.close_hour.saturating_sub(self.open_hour))
    }

    /// Hours open in `[from_ms, to_ms)` (0 when `to_ms <= from_ms`).
    pub fn open_hours_between(&self, from_ms: i64, to_ms: i64) -> f64 {
        if to_ms <= from_ms {
            return 0.0;
        }
        // Both ends on the local timeline (each with its own offset), counted there.
        let (from_ms, to_ms) = (self.local_ms(from_ms), self.local_ms(to_ms));
        if to_ms <= from_ms {
            return 0.0; // Inside the hour a clock change repeats.
        }
        let offset = 0;
        let open = i64::from(self.open_hour) * HOUR_MS;
        let close = i64::from(self.close_hour) * HOUR_MS;
        let per_day = close - open;
        let first_day = (from_ms + offset).div_euclid(DAY_MS);
        let last_day = (to_ms + offset).div_euclid(DAY_MS);
        let clipped = |day: i64| {
            let start = day * DAY_MS - offset + open;
            let end = day * DAY_MS - offset + close;
            (end.min(to_ms) - start.max(from_ms)).max(0)
        };
        let total = if last_day == first_day {
            clipped(first_day)
        } else {
            // The first and last days are partial; every day between is a whole one.
            clipped(first_day) + clipped(last_day) + (last_day - first_day - 1) * per_day
        };
        total as f64 / HOUR_MS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_772_409_600_000; // 2026-03-02T00:00:00Z

    #[test]
    fn counts_only_open_hours_in_local_time() {
        let chicago = OpeningHours::new("America/Chicago", 8, 20);
        // 00:00Z-24:00Z on one day is 18:00-18:00 local: 2 h (18-20) + 10 h (08-18).
        assert_eq!(chicago.open_hours_between(T0, T0 + DAY_MS), 12.0);
        assert_eq!(chicago.open_hours_between(T0, T0 + 3 * DAY_MS), 36.0);
        assert_eq!(
            OpeningHours::default().open_hours_between(T0, T0 + HOUR_MS),
            1.0
        );
        assert_eq!(chicago.open_hours_between(T0 + HOUR_MS, T0), 0.0);
        assert_eq!(utc_offset_minutes("Etc/GMT+6"), Some(-360));
        assert_eq!(utc_offset_minutes("Asia/Kolkata"), Some(330));
        assert_eq!(utc_offset_minutes("Mars/Olympus"), None);
        assert!(is_time_zone("America/Chicago") && is_time_zone("UTC"));
        assert!(!is_time_zone("Mars/Olympus") && !is_time_zone(""));
        assert_eq!(utc_offset_minutes("America/Chicago"), Some(-360));
        assert_eq!(utc_offset_minutes("Australia/Sydney"), Some(600));
        // Half-hour zones count half hours: 08:00-20:00 in Kolkata is 02:30-14:30 UTC.
        let kolkata = OpeningHours::new("Asia/Kolkata", 8, 20);
        assert_eq!(kolkata.open_hours_between(T0, T0 + 3 * HOUR_MS), 0.5);
    }

    #[test]
    fn daylight_saving_time_moves_the_open_hours() {
        let new_york = OpeningHours::new("America/New_York", 8, 20);
        assert_ne!(new_york.zone, 0);
        // 12:00Z-24:00Z is 08:00-20:00 EDT in July (12 open hours) but 07:00-19:00 EST in
        // January (11).
        let july = 1_783_944_000_000; // 2026-07-13T12:00:00Z
        let january = 1_768_305_600_000; // 2026-01-13T12:00:00Z
        assert_eq!(new_york.open_hours_between(july, july + 12 * HOUR_MS), 12.0);
        assert_eq!(
            new_york.open_hours_between(january, january + 12 * HOUR_MS),
            11.0
        );
        // A week over the spring change (2026-03-08) still counts 12 hours a day.
        let before = 1_772_712_000_000; // 2026-03-05T12:00:00Z, 07:00 EST
        let hours = new_york.open_hours_between(before, before + 7 * DAY_MS);
        assert!((83.0..=85.0).contains(&hours), "{hours}");
        // Zones that keep one offset keep the old encoding and arithmetic.
        let fixed = OpeningHours::new("Etc/GMT+6", 8, 20);
        assert_eq!((fixed.zone, fixed.utc_offset_minutes), (0, -360));
        let kolkata = OpeningHours::new("Asia/Kolkata", 8, 20);
        assert_eq!((kolkata.zone, kolkata.utc_offset_minutes), (0, 330));
        assert_eq!(OpeningHours::new("UTC", 0, 24), OpeningHours::default());
        assert_eq!(zone_key("America/New_York"), zone_key("america/new_york"));
    }

    proptest! {
        /// Splitting an interval anywhere adds up; the fast path agrees with day-by-day sums.
        #[test]
        fn open_hours_are_additive(
            offset in -10i8..=10, open in 0u8..23, span in 1u8..=24,
            start in 0i64..(40 * DAY_MS), cut in 0i64..(20 * DAY_MS), rest in 0i64..(20 * DAY_MS),
        ) {
            let hours = OpeningHours { utc_offset_minutes: i16::from(offset) * 30, open_hour: open,
                close_hour: (open + span).min(24), zone: 0 };
            let (a, b, c) = (T0 + start, T0 + start + cut, T0 + start + cut + rest);
            let whole = hours.open_hours_between(a, c);
            let parts = hours.open_hours_between(a, b) + hours.open_hours_between(b, c);
            prop_assert!((whole - parts).abs() < 1e-9);
            prop_assert!(whole <= (c - a) as f64 / HOUR_MS as f64 + 1e-9);
        }
    }
}
