//! Time: millisecond timestamps, RFC 3339 text, and the injected clock.
//!
//! Every component reads time from a [`Clock`]. `serve` will use [`WallClock`]; replay, the
//! simulator and drills drive a [`SimulatedClock`], so lateness, TTLs and passivation follow
//! simulated time. Timestamps are whole milliseconds since the Unix epoch (UTC); finer
//! digits in input text are truncated.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

/// An optional time in the 8 bytes of a [`Timestamp`] (`i64::MIN`, no valid event time,
/// stands for none), stored as `Option<Timestamp>` would be: entity state is kept for a
/// billion pairs, and an `Option<Timestamp>` takes 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaybeTime(i64);

impl MaybeTime {
    /// No time.
    pub const NONE: Self = Self(i64::MIN);

    /// The time, if any.
    pub fn get(self) -> Option<Timestamp> {
        (self != Self::NONE).then_some(Timestamp(self.0))
    }
}

impl Default for MaybeTime {
    fn default() -> Self {
        Self::NONE
    }
}

impl From<Option<Timestamp>> for MaybeTime {
    fn from(time: Option<Timestamp>) -> Self {
        time.map_or(Self::NONE, |t| Self(t.0.max(i64::MIN + 1)))
    }
}

impl Serialize for MaybeTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MaybeTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<Timestamp>::deserialize(deserializer).map(Self::from)
    }
}

/// One second, minute and hour in milliseconds.
pub const SECOND_MS: i64 = 1_000;
/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;

impl Timestamp {
    /// Parses RFC 3339 text ("2026-03-02T10:00:00Z", offsets allowed).
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("not an RFC 3339 time ({e})"))?;
        let millis = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(millis)
            .map(Timestamp)
            .map_err(|_| "time out of range".to_owned())
    }

    /// Formats as RFC 3339 in UTC with milliseconds.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("@{}ms", self.0))
    }

    /// Whole seconds since 2020-01-01T00:00:00Z, saturated into a `u32` (good to 2156): the
    /// compact form used where second precision is enough (per-source last-seen times).
    pub fn to_compact_seconds(self) -> u32 {
        const EPOCH_2020_MS: i64 = 1_577_836_800_000;
        ((self.0 - EPOCH_2020_MS).div_euclid(SECOND_MS)).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// The inverse of [`Timestamp::to_compact_seconds`] (0 means "never").
    pub fn from_compact_seconds(seconds: u32) -> Option<Self> {
        const EPOCH_2020_MS: i64 = 1_577_836_800_000;
        (seconds != 0).then(|| Timestamp(EPOCH_2020_MS + i64::from(seconds) * SECOND_MS))
    }

    /// This time plus `millis`, saturating.
    pub fn plus_ms(self, millis: i64) -> Self {
        Timestamp(self.0.saturating_add(millis))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A duration in milliseconds as people read it: "30 h", "1 h 5 min", "42 s", "350 ms".
pub fn human_duration(millis: i64) -> String {
    let sign = if millis < 0 { "-" } else { "" };
    let millis = millis.unsigned_abs();
    let (hours, minutes, seconds) = (
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1_000 % 60,
    );
    let text = match (hours, minutes, seconds, millis % 1_000) {
        (0, 0, 0, ms) => format!("{ms} ms"),
        (0, 0, s, _) => format!("{s} s"),
        (0, m, 0, _) => format!("{m} min"),
        (0, m, s, _) => format!("{m} min {s} s"),
        (h, 0, _, _) => format!("{h} h"),
        (h, m, _, _) => format!("{h} h {m} min"),
    };
    format!("{sign}{text}")
}

/// A source of "now".
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        Timestamp(i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX))
    }
}

/// The wall clock in nanoseconds since the epoch: for tags that must differ between
/// processes and restarts (never for domain time, which comes from a [`Clock`]).
pub fn wall_clock_nanos() -> u64 {
    u64::try_from(since_epoch().as_nanos()).unwrap_or(u64::MAX)
}

/// The one read of the system's wall clock (`clippy.toml` forbids it everywhere else).
#[allow(clippy::disallowed_methods)]
fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// A clock moved by its driver (replay, simulator). It never goes backwards.
#[derive(Clone, Debug, Default)]
pub struct SimulatedClock(Arc<AtomicI64>);

impl SimulatedClock {
    /// A clock reading `start`.
    pub fn starting_at(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// Moves the clock to `time` if that is later than its reading.
    pub fn advance_to(&self, time: Timestamp) {
        self.0.fetch_max(time.0, Ordering::AcqRel);
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::Acquire))
    }
}

/// Simulated time running `speed` times faster than the wall clock: it reads `start` at the
/// wall-clock instant `anchor` and advances `speed` simulated milliseconds per wall
/// millisecond. Drills run `serve` on it so a simulated month passes in minutes while
/// lateness, TTLs and staleness follow simulated time; two processes given the same start,
/// anchor and speed read the same time.
#[derive(Clone, Copy, Debug)]
pub struct AcceleratedClock {
    /// Simulated time at the anchor.
    pub start: Timestamp,
    /// Wall-clock time (ms since the epoch) at which the clock reads `start`.
    pub anchor_wall_ms: i64,
    /// Simulated milliseconds per wall millisecond (> 0).
    pub speed: f64,
}

impl AcceleratedClock {
    /// The simulated time at wall-clock time `wall`.
    pub fn at_wall(&self, wall: Timestamp) -> Timestamp {
        let elapsed = (wall.0 - self.anchor_wall_ms) as f64 * self.speed;
        Timestamp(self.start.0.saturating_add(elapsed as i64))
    }

    /// The wall-clock time at which the clock reads `time`.
    pub fn wall_at(&self, time: Timestamp) -> Timestamp {
        let elapsed = (time.0 - self.start.0) as f64 / self.speed;
        Timestamp(self.anchor_wall_ms.saturating_add(elapsed.ceil() as i64))
    }
}

impl Clock for AcceleratedClock {
    fn now(&self) -> Timestamp {
        self.at_wall(WallClock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accelerated_clock_maps_wall_time_both_ways() {
        let clock = AcceleratedClock {
            start: Timestamp(1_000_000),
            anchor_wall_ms: 5_000,
            speed: 600.0,
        };
        assert_eq!(clock.at_wall(Timestamp(6_000)), Timestamp(1_600_000));
        assert_eq!(clock.wall_at(Timestamp(1_600_000)), Timestamp(6_000));
    }

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = Timestamp::parse_rfc3339("2026-03-02T10:00:00Z").expect("parse");
        assert_eq!(t.to_rfc3339(), "2026-03-02T10:00:00Z");
        let shifted = Timestamp::parse_rfc3339("2026-03-02T11:00:00.5+01:00").expect("parse");
        assert_eq!(shifted.0 - t.0, 500);
        assert!(Timestamp::parse_rfc3339("2026-03-02 10:00").is_err());
    }

    #[test]
    fn compact_seconds_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-03-02T10:00:07Z").expect("parse");
        assert_eq!(
            Timestamp::from_compact_seconds(t.to_compact_seconds()),
            Some(t)
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(30 * HOUR_MS), "30 h");
        assert_eq!(human_duration(HOUR_MS + 5 * MINUTE_MS + 7_000), "1 h 5 min");
        assert_eq!(human_duration(6 * MINUTE_MS), "6 min");
        assert_eq!(human_duration(6 * MINUTE_MS + 1_000), "6 min 1 s");
        assert_eq!(human_duration(42_000), "42 s");
        assert_eq!(human_duration(350), "350 ms");
        assert_eq!(human_duration(-2_000), "-2 s");
    }

    #[test]
    fn simulated_clock_never_goes_back() {
        let clock = SimulatedClock::starting_at(Timestamp(100));
        clock.advance_to(Timestamp(50));
        assert_eq!(clock.now(), Timestamp(100));
        clock.advance_to(Timestamp(150));
        assert_eq!(clock.now(), Timestamp(150));
    }
}
