//! Opening hours: how many hours a location was open between two instants.
//!
//! No-sale evidence counts open hours only (DESIGN.md "Time"), and a pair's demand rate is per
//! open hour. Time zones are fixed UTC offsets: `UTC`, `Etc/GMT±N`, and the standard-time
//! offsets of the common zone names of the Americas, Europe, Asia and Oceania (daylight saving
//! is not modelled: an hour of error for half the year moves an open-hour count by at most one
//! hour a day). An unknown name counts as UTC.

use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// When a location is open, in its own local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    /// Local time = UTC + this many minutes.
    pub utc_offset_minutes: i16,
    /// Opening hour, local (0-23).
    pub open_hour: u8,
    /// Closing hour, local (1-24, after `open_hour`).
    pub close_hour: u8,
}

impl Default for OpeningHours {
    /// Open all day, UTC: the catalog's default for a location it does not know.
    fn default() -> Self {
        Self {
            utc_offset_minutes: 0,
            open_hour: 0,
            close_hour: 24,
        }
    }
}

/// Standard-time offsets of common zone names, in minutes.
#[rustfmt::skip]
const NAMED_ZONES: &[(&str, i16)] = &[
    ("UTC", 0), ("Etc/UTC", 0), ("Etc/GMT", 0), ("GMT", 0),
    ("America/New_York", -300), ("America/Detroit", -300), ("America/Toronto", -300),
    ("America/Indiana/Indianapolis", -300), ("America/Chicago", -360),
    ("America/Mexico_City", -360), ("America/Denver", -420), ("America/Phoenix", -420),
    ("America/Boise", -420), ("America/Los_Angeles", -480), ("America/Vancouver", -480),
    ("America/Anchorage", -540), ("Pacific/Honolulu", -600), ("America/Halifax", -240),
    ("America/Puerto_Rico", -240), ("America/Bogota", -300), ("America/Lima", -300),
    ("America/Guayaquil", -300), ("America/Caracas", -240), ("America/Santiago", -240),
    ("America/Sao_Paulo", -180), ("America/Argentina/Buenos_Aires", -180),
    ("Europe/London", 0), ("Europe/Dublin", 0), ("Europe/Lisbon", 0),
    ("Europe/Berlin", 60), ("Europe/Paris", 60), ("Europe/Madrid", 60), ("Europe/Rome", 60),
    ("Europe/Amsterdam", 60), ("Europe/Brussels", 60), ("Europe/Vienna", 60),
    ("Europe/Zurich", 60), ("Europe/Stockholm", 60), ("Europe/Oslo", 60),
    ("Europe/Copenhagen", 60), ("Europe/Warsaw", 60), ("Europe/Prague", 60),
    ("Europe/Budapest", 60), ("Europe/Athens", 120), ("Europe/Helsinki", 120),
    ("Europe/Bucharest", 120), ("Europe/Kiev", 120), ("Europe/Kyiv", 120),
    ("Europe/Istanbul", 180), ("Europe/Moscow", 180), ("Africa/Johannesburg", 120),
    ("Africa/Cairo", 120), ("Africa/Lagos", 60), ("Africa/Nairobi", 180),
    ("Asia/Dubai", 240), ("Asia/Karachi", 300), ("Asia/Kolkata", 330), ("Asia/Dhaka", 360),
    ("Asia/Bangkok", 420), ("Asia/Jakarta", 420), ("Asia/Shanghai", 480),
    ("Asia/Hong_Kong", 480), ("Asia/Singapore", 480), ("Asia/Taipei", 480),
    ("Asia/Manila", 480), ("Asia/Seoul", 540), ("Asia/Tokyo", 540),
    ("Australia/Perth", 480), ("Australia/Brisbane", 600), ("Australia/Sydney", 600),
    ("Australia/Melbourne", 600), ("Pacific/Auckland", 720),
];

/// The standard-time UTC offset of a time zone name in minutes, if known.
pub fn utc_offset_minutes(timezone: &str) -> Option<i16> {
    if let Some((_, minutes)) = NAMED_ZONES.iter().find(|(name, _)| *name == timezone) {
        return Some(*minutes);
    }
    let rest = timezone.strip_prefix("Etc/GMT")?;
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (-1, &rest[1..]),
        b'-' => (1, &rest[1..]),
        _ => return None,
    };
    let hours: i16 = digits.parse().ok()?;
    (0..=14).contains(&hours).then_some(sign * hours * 60)
}

impl OpeningHours {
    /// Hours for a named time zone (unknown names count as UTC) and local opening hours.
    pub fn new(timezone: &str, open_hour: u8, close_hour: u8) -> Self {
        Self {
            utc_offset_minutes: utc_offset_minutes(timezone).unwrap_or(0),
            open_hour: open_hour.min(23),
            close_hour: close_hour.clamp(open_hour.min(23) + 1, 24),
        }
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
        let offset = i64::from(self.utc_offset_minutes) * 60_000;
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
        // Half-hour zones count half hours: 08:00-20:00 in Kolkata is 02:30-14:30 UTC.
        let kolkata = OpeningHours::new("Asia/Kolkata", 8, 20);
        assert_eq!(kolkata.open_hours_between(T0, T0 + 3 * HOUR_MS), 0.5);
    }

    proptest! {
        /// Splitting an interval anywhere adds up; the fast path agrees with day-by-day sums.
        #[test]
        fn open_hours_are_additive(
            offset in -10i8..=10, open in 0u8..23, span in 1u8..=24,
            start in 0i64..(40 * DAY_MS), cut in 0i64..(20 * DAY_MS), rest in 0i64..(20 * DAY_MS),
        ) {
            let hours = OpeningHours { utc_offset_minutes: i16::from(offset) * 30, open_hour: open,
                close_hour: (open + span).min(24) };
            let (a, b, c) = (T0 + start, T0 + start + cut, T0 + start + cut + rest);
            let whole = hours.open_hours_between(a, c);
            let parts = hours.open_hours_between(a, b) + hours.open_hours_between(b, c);
            prop_assert!((whole - parts).abs() < 1e-9);
            prop_assert!(whole <= (c - a) as f64 / HOUR_MS as f64 + 1e-9);
        }
    }
}
