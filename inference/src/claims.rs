//! Each observing source's claim of the quantity, brought to now: the latest cycle count, WMS
//! snapshot and RFID read, each plus the deltas dated after it.
//!
//! The ledger keeps one anchor (the latest read of any kind), so its record is that read's
//! claim. The others are kept here relative to the record: per kind an offset (claim minus
//! record) and the read's time, 20 bytes a pair. A delta moves a claim when it is dated after
//! the claim's read, and the record when it is dated after the anchor; the offset takes the
//! difference. A read that becomes the anchor makes its claim the new record (which the
//! ledger brought to now from its log) and shifts the other offsets by the record's move.
//!
//! Assumption, stated because it is one: a read that does not become the anchor (a late read,
//! dated before it) starts its claim at its units. Deltas dated after it that arrived before
//! it are only in the log, so that claim misses them; the claim's age tells the ranker how far
//! to trust it. Offsets saturate at 16 bits (±32,767 units between a claim and the record).

use serde::{Deserialize, Serialize};

use crate::observation::{ObservationKind, compact_seconds, millis_of};

/// The kinds with a claim, in the order of [`SourceClaims`]' arrays.
pub const CLAIM_KINDS: [ObservationKind; 3] = [
    ObservationKind::Count,
    ObservationKind::Snapshot,
    ObservationKind::RfidRead,
];

fn index_of(kind: ObservationKind) -> usize {
    match kind {
        ObservationKind::Count => 0,
        ObservationKind::Snapshot => 1,
        ObservationKind::RfidRead => 2,
    }
}

fn saturate(offset: i64) -> i16 {
    offset.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// Per observing kind, its latest read brought to now, relative to the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceClaims {
    /// Per kind ([`CLAIM_KINDS`] order): the claim minus the record.
    offsets: [i16; 3],
    /// Per kind: the read's event time in compact seconds (0: never read).
    read_at: [u32; 3],
}

/// One kind's claim at a moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Claim {
    /// Units claimed.
    pub units: i64,
    /// Milliseconds since the read.
    pub age_ms: i64,
}

impl SourceClaims {
    /// A delta of `units` (signed) dated `event_time_ms` was applied; `moved_record`: it
    /// moved the record (it is dated after the anchor).
    pub fn delta(&mut self, units: i64, event_time_ms: i64, moved_record: bool) {
        let at = compact_seconds(event_time_ms);
        for kind in 0..CLAIM_KINDS.len() {
            if self.read_at[kind] == 0 {
                continue;
            }
            let claim_moves = at > self.read_at[kind];
            let change = (i64::from(claim_moves) - i64::from(moved_record)).saturating_mul(units);
            self.offsets[kind] = saturate(i64::from(self.offsets[kind]).saturating_add(change));
        }
    }

    /// A read of `units` of `kind` dated `event_time_ms` was applied; the record went from
    /// `record_before` to `record_after`; `anchored`: the read became the anchor.
    pub fn read(
        &mut self,
        kind: ObservationKind,
        units: i64,
        event_time_ms: i64,
        record_before: i64,
        record_after: i64,
        anchored: bool,
    ) {
        let moved = record_after.saturating_sub(record_before);
        // The other claims keep their units: their offsets follow the record's move.
        for other in 0..CLAIM_KINDS.len() {
            if self.read_at[other] != 0 {
                self.offsets[other] =
                    saturate(i64::from(self.offsets[other]).saturating_sub(moved));
            }
        }
        let this = index_of(kind);
        let at = compact_seconds(event_time_ms);
        if at >= self.read_at[this] {
            self.read_at[this] = at;
            let claim = if anchored { record_after } else { units };
            self.offsets[this] = saturate(claim.saturating_sub(record_after));
        }
    }

    /// `kind`'s claim at `now_ms`, given the record then (`None`: never read).
    pub fn claim(&self, kind: ObservationKind, record: i64, now_ms: i64) -> Option<Claim> {
        let index = index_of(kind);
        (self.read_at[index] != 0).then(|| Claim {
            units: record.saturating_add(i64::from(self.offsets[index])),
            age_ms: now_ms.saturating_sub(millis_of(self.read_at[index])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_780_000_000_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_newer_anchor_keeps_the_older_claims_brought_forward_by_their_deltas() {
        let mut claims = SourceClaims::default();
        // A count of 10 anchors; then a sale of 2 moves both.
        claims.read(ObservationKind::Count, 10, T, 0, 10, true);
        claims.delta(-2, T + HOUR, true);
        let count = claims.claim(ObservationKind::Count, 8, T + 2 * HOUR);
        assert_eq!(count.map(|c| c.units), Some(8));
        // A WMS snapshot of 20 anchors: the record jumps to 20, the count still claims 8.
        claims.read(ObservationKind::Snapshot, 20, T + 3 * HOUR, 8, 20, true);
        assert_eq!(
            claims
                .claim(ObservationKind::Count, 20, T + 3 * HOUR)
                .map(|c| c.units),
            Some(8)
        );
        // A sale after both moves every claim and the record.
        claims.delta(-3, T + 4 * HOUR, true);
        let at = |kind| claims.claim(kind, 17, T + 5 * HOUR).map(|c| c.units);
        assert_eq!(at(ObservationKind::Count), Some(5));
        assert_eq!(at(ObservationKind::Snapshot), Some(17));
        assert_eq!(at(ObservationKind::RfidRead), None);
        assert_eq!(
            claims
                .claim(ObservationKind::Count, 17, T + 5 * HOUR)
                .map(|c| c.age_ms),
            Some(5 * HOUR)
        );
    }

    #[test]
    fn a_late_delta_moves_only_the_claims_read_before_it() {
        let mut claims = SourceClaims::default();
        claims.read(ObservationKind::Count, 10, T, 0, 10, true);
        claims.read(ObservationKind::Snapshot, 30, T + 2 * HOUR, 10, 30, true);
        // A sale dated between the count and the snapshot: inside the snapshot's reading,
        // after the count's.
        claims.delta(-4, T + HOUR, false);
        let at = |kind| claims.claim(kind, 30, T + 3 * HOUR).map(|c| c.units);
        assert_eq!(at(ObservationKind::Snapshot), Some(30));
        assert_eq!(at(ObservationKind::Count), Some(6));
    }

    #[test]
    fn a_late_read_starts_at_its_units_and_an_older_one_of_its_kind_changes_nothing() {
        let mut claims = SourceClaims::default();
        claims.read(ObservationKind::Snapshot, 30, T + 2 * HOUR, 0, 30, true);
        // An RFID read dated before the snapshot does not anchor.
        claims.read(ObservationKind::RfidRead, 12, T + HOUR, 30, 30, false);
        let rfid = |claims: &SourceClaims| {
            claims
                .claim(ObservationKind::RfidRead, 30, T + 3 * HOUR)
                .map(|c| c.units)
        };
        assert_eq!(rfid(&claims), Some(12));
        // An RFID read older still is not the latest of its kind.
        claims.read(ObservationKind::RfidRead, 99, T, 30, 30, false);
        assert_eq!(rfid(&claims), Some(12));
    }

    #[test]
    fn offsets_saturate_instead_of_wrapping() {
        let mut claims = SourceClaims::default();
        claims.read(ObservationKind::Count, 0, T, 0, 0, true);
        claims.read(
            ObservationKind::Snapshot,
            100_000,
            T + HOUR,
            0,
            100_000,
            true,
        );
        let count = claims.claim(ObservationKind::Count, 100_000, T + 2 * HOUR);
        assert_eq!(count.map(|c| c.units), Some(100_000 - 32_768));
        assert_eq!(std::mem::size_of::<SourceClaims>(), 20);
    }
}
