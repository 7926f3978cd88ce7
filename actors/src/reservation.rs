//! Reservations: what they are and how they are stored (the engine's calls that run them are
//! in `engine/reservations.rs`; their keys in [`crate::keys`]).
//!
//! DESIGN.md "Reservations" is the contract. The pieces:
//! - A **record** per reservation (cluster-wide: a cart may span partitions): request id,
//!   surface, lines, state, deadline. Only the engine writes it, under a per-reservation
//!   lock, so `Commit`, `Release` and expiry of one reservation are serialised.
//! - A **hold** per line (in the pair's partition): the units held at that pair. Only the
//!   pair's shard writes it (single writer per pair), so concurrent reservations of one pair
//!   are linearised by the shard's mailbox and never oversell. A pair's reserved units are the
//!   sum of its holds, rebuilt from these keys when the entity activates.
//! - A **settlement** per picked line (in the pair's partition): written by the shard when a
//!   `pick` event names the reservation.
//! - A **deadline index** (per partition): the reaper scans it up to now and frees what is
//!   due, so PENDING and COMMITTED reservations expire also across restarts.
//!
//! Order of writes, chosen so a crash can only leave units held too long (a false "out of
//! stock" until the deadline), never units promised twice: `Reserve` writes holds (with
//! their deadline keys) before the record; `Release` and expiry write the record before
//! freeing holds. A hold without an active record is freed by the reaper at its deadline.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stockgrid_storage::{Store, WriteBatch};
use xxhash_rust::xxh3::xxh3_128;

use crate::decision::Decision;
use crate::domain::{PairKey, Surface};
use crate::due::{DuePartition, DueTimes};
use crate::error::EngineError;
use crate::keys::{self, IndexFamily, hold_prefix, prefix_end, reservation_key, settlement_key};
use crate::persist::{decode, encode};
use crate::time::Timestamp;

/// Most lines in one reservation.
pub const MAX_LINES: usize = 100;
/// Longest client request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Longest TTL or pickup window a client may ask for (30 days).
pub const MAX_HOLD_MS: i64 = 30 * 24 * 3_600_000;

const ID_PREFIX: &str = "res-";
const ID_LEN: usize = 4 + 32;

/// Where a reservation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationState {
    /// Units held until the TTL.
    Pending,
    /// Order placed; units held until the pickup deadline.
    Committed,
    /// Every line settled by a pick.
    Fulfilled,
    /// Freed by `Release`.
    Released,
    /// Freed because its deadline passed.
    Expired,
}

impl ReservationState {
    /// Whether it still holds units.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ReservationState::Pending | ReservationState::Committed
        )
    }

    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Pending => "PENDING",
            ReservationState::Committed => "COMMITTED",
            ReservationState::Fulfilled => "FULFILLED",
            ReservationState::Released => "RELEASED",
            ReservationState::Expired => "EXPIRED",
        }
    }
}

/// Why units were freed without a (full) pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// The customer cancelled.
    CustomerCancelled,
    /// A nil pick: fewer than the quantity were there.
    ItemNotFound,
    /// The TTL or pickup deadline passed.
    Expired,
    /// A line could not be promised (a cart across owners records its refusal, so that no
    /// later attempt of the same request id can be recorded after its holds were freed).
    Refused,
}

impl ReleaseReason {
    /// The reason as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::CustomerCancelled => "CUSTOMER_CANCELLED",
            ReleaseReason::ItemNotFound => "ITEM_NOT_FOUND",
            ReleaseReason::Expired => "EXPIRED",
            ReleaseReason::Refused => "REFUSED",
        }
    }
}

/// One line of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationLine {
    /// The pair.
    pub pair: PairKey,
    /// Units held (>= 1).
    pub quantity: i64,
}

/// The stored record of a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    /// Its id, derived from the request id.
    pub reservation_id: String,
    /// The client's idempotency key.
    pub request_id: String,
    /// The surface whose decision granted it.
    pub surface: Surface,
    /// Its lines, in request order.
    pub lines: Vec<ReservationLine>,
    /// The state set by the engine (`Fulfilled` is derived from settlements, see
    /// [`ReservationReport`]).
    pub state: ReservationState,
    /// When it was granted.
    pub created: Timestamp,
    /// When it expires if still active.
    pub deadline: Timestamp,
    /// Why it was freed, once released or expired.
    pub release_reason: Option<ReleaseReason>,
}

/// What a pick did to one held line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Units the pick took.
    pub picked: i64,
    /// Units that were held.
    pub held: i64,
}

/// The state of one line as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineState {
    /// Units held.
    Held,
    /// Settled by a pick of at least the held units.
    Picked {
        /// Units picked.
        picked: i64,
    },
    /// Settled by a short pick: the rest counts as ITEM_NOT_FOUND.
    ShortPicked {
        /// Units picked.
        picked: i64,
    },
    /// Freed by release or expiry.
    Freed,
}

/// A reservation as clients see it: its record and each line's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationReport {
    /// The record; `state` is `Fulfilled` once every line is settled by a pick.
    pub record: ReservationRecord,
    /// One per line, in order.
    pub lines: Vec<LineState>,
}

/// A reservation request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveRequest {
    /// The client's idempotency key.
    pub request_id: String,
    /// The lines; each pair at most once.
    pub lines: Vec<ReservationLine>,
    /// The surface whose decision must grant every line.
    pub surface: Surface,
    /// How long it holds while PENDING (`None`: the configured default).
    pub ttl_ms: Option<i64>,
}

/// Why a reservation call did not do what was asked.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReservationError {
    /// A field of the request is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `lines[2].qty`.
        field: String,
        /// Why.
        reason: String,
    },
    /// No reservation has this id.
    #[error("reservation {0} not found")]
    NotFound(String),
    /// A line cannot be promised: nothing was held.
    #[error(
        "lines[{line}]: {wanted} units of sku {sku} at location {location} cannot be promised ({reason}; {spare} spare after reservations and safety stock)",
        sku = pair.sku, location = pair.location, reason = decision.reason.as_str()
    )]
    Insufficient {
        /// Index of the refused line.
        line: usize,
        /// Its pair.
        pair: PairKey,
        /// Units asked.
        wanted: i64,
        /// Units spare at the moment of the decision.
        spare: i64,
        /// The surface decision that refused it.
        decision: Decision,
    },
    /// The reservation is not in a state that allows the call.
    #[error("reservation {reservation_id} is {}", state.as_str())]
    WrongState {
        /// The reservation.
        reservation_id: String,
        /// Its state.
        state: ReservationState,
    },
    /// The request id was used before with different lines or surface.
    #[error("request_id: already used for reservation {0} with different lines or surface")]
    RequestConflict(String),
    /// The reservation's record changed while the call read it, more times than it tries
    /// again: nothing was done; the caller may retry.
    #[error("reservation {0} changed while this call read it; retry")]
    Changed(String),
    /// The engine failed (store, shard).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Checks that the request that made `record` is `request` (same id, lines and surface). A
/// record with no request id is the reaper's tombstone of holds whose call never recorded
/// them: that reservation expired.
pub fn check_same_request(
    record: &ReservationRecord,
    request: &ReserveRequest,
) -> Result<(), ReservationError> {
    if record.request_id.is_empty() {
        return Err(ReservationError::WrongState {
            reservation_id: record.reservation_id.clone(),
            state: record.state,
        });
    }
    if record.request_id != request.request_id
        || record.lines != request.lines
        || record.surface != request.surface
    {
        return Err(ReservationError::RequestConflict(
            record.reservation_id.clone(),
        ));
    }
    Ok(())
}

/// The reservation id of a request id: stable, so a retried `Reserve` finds its reservation.
pub fn reservation_id_for(request_id: &str) -> String {
    format!("{ID_PREFIX}{:032x}", xxh3_128(request_id.as_bytes()))
}

/// Checks a client-supplied reservation id, naming the field.
pub fn check_reservation_id(reservation_id: &str) -> Result<(), ReservationError> {
    let well_formed = reservation_id.len() == ID_LEN
        && reservation_id.starts_with(ID_PREFIX)
        && reservation_id[ID_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed {
        Ok(())
    } else {
        Err(ReservationError::Invalid {
            field: "reservation_id".to_owned(),
            reason: format!(
                "{} is not a reservation id (res- and 32 hex digits, as Reserve returns)",
                crate::domain::excerpt(reservation_id)
            ),
        })
    }
}

/// Checks a reservation request, naming the first bad field.
pub fn check_request(request: &ReserveRequest) -> Result<(), ReservationError> {
    let invalid = |field: String, reason: String| ReservationError::Invalid { field, reason };
    if request.request_id.is_empty() || request.request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(invalid(
            "request_id".to_owned(),
            format!(
                "must be 1 to {MAX_REQUEST_ID_BYTES} bytes, got {}",
                request.request_id.len()
            ),
        ));
    }
    if request.lines.is_empty() || request.lines.len() > MAX_LINES {
        return Err(invalid(
            "lines".to_owned(),
            format!(
                "must hold 1 to {MAX_LINES} lines, got {}",
                request.lines.len()
            ),
        ));
    }
    let mut seen = HashMap::with_capacity(request.lines.len());
    for (index, line) in request.lines.iter().enumerate() {
        if line.quantity < 1 || line.quantity > i64::from(i32::MAX) {
            return Err(invalid(
                format!("lines[{index}].qty"),
                format!("must be 1 to {}, got {}", i32::MAX, line.quantity),
            ));
        }
        if let Some(first) = seen.insert(line.pair, index) {
            return Err(invalid(
                format!("lines[{index}]"),
                format!(
                    "sku {} at location {} repeats lines[{first}]; put the units on one line",
                    line.pair.sku, line.pair.location
                ),
            ));
        }
    }
    if let Some(ttl) = request.ttl_ms
        && !(1..=MAX_HOLD_MS).contains(&ttl)
    {
        return Err(invalid(
            "ttl_seconds".to_owned(),
            format!(
                "must be 1 to {} seconds, got {}",
                MAX_HOLD_MS / 1000,
                ttl / 1000
            ),
        ));
    }
    Ok(())
}

/// A deadline-index entry read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueLine {
    /// The index key itself (to delete once handled).
    pub key: Vec<u8>,
    /// The reservation.
    pub reservation_id: String,
    /// The line's pair.
    pub pair: PairKey,
}

/// Deadline-index entries due at or before `now`, at most `limit`: partition by partition,
/// oldest first within each, from the partitions [`DueTimes`] says have work; and the
/// partitions whose due entries are all among them (to [`DueTimes::settle`] once handled).
pub fn due_lines(
    store: &dyn Store,
    due_times: &DueTimes,
    now: Timestamp,
    limit: usize,
) -> Result<(Vec<DueLine>, Vec<DuePartition>), EngineError> {
    let (found, exhausted) = due_times.due_entries(store, IndexFamily::Deadline, now, limit)?;
    let due = found
        .into_iter()
        .map(|(key, _)| {
            let (reservation_id, pair) = keys::parse_deadline_key(&key)
                .filter(|(id, _)| id.len() == ID_LEN)
                .ok_or_else(|| {
                    EngineError::Corrupt(format!("deadline index key of {} bytes", key.len()))
                })?;
            let reservation_id = reservation_id.to_owned();
            Ok(DueLine {
                key,
                reservation_id,
                pair,
            })
        })
        .collect::<Result<_, EngineError>>()?;
    Ok((due, exhausted))
}

/// Reads a reservation's record.
pub fn load_record(
    store: &dyn Store,
    reservation_id: &str,
) -> Result<Option<ReservationRecord>, EngineError> {
    let key = reservation_key(reservation_id);
    store
        .get(&key)?
        .map(|bytes| decode("reservation", &key, &bytes).map_err(EngineError::from))
        .transpose()
}

/// Puts a reservation's record into `batch`.
pub fn put_record(batch: &mut WriteBatch, record: &ReservationRecord) {
    batch.put(reservation_key(&record.reservation_id), encode(record));
}

/// The holds stored for a pair: (reservation id, units).
pub fn load_holds(store: &dyn Store, pair: PairKey) -> Result<Vec<Hold>, EngineError> {
    let start = hold_prefix(pair);
    store
        .scan(&start, &prefix_end(&start), usize::MAX)?
        .into_iter()
        .map(|(key, value)| {
            let units: i64 = decode("hold", &key, &value)?;
            let reservation_id = keys::hold_reservation_id(&key)
                .ok_or_else(|| EngineError::Corrupt(format!("hold key of {} bytes", key.len())))?;
            Ok(Hold {
                reservation_id: reservation_id.into(),
                units,
            })
        })
        .collect()
}

/// A hold of units at one pair by one reservation, as a shard keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The reservation.
    pub reservation_id: Arc<str>,
    /// Units held.
    pub units: i64,
}

/// The report of a record: each line's state from its settlement, if any.
pub fn report(
    store: &dyn Store,
    record: ReservationRecord,
) -> Result<ReservationReport, EngineError> {
    let mut lines = Vec::with_capacity(record.lines.len());
    for line in &record.lines {
        let key = settlement_key(&record.reservation_id, line.pair);
        let settled: Option<Settlement> = store
            .get(&key)?
            .map(|bytes| decode("settlement", &key, &bytes))
            .transpose()?;
        lines.push(match settled {
            Some(s) if s.picked >= s.held => LineState::Picked { picked: s.picked },
            Some(s) => LineState::ShortPicked { picked: s.picked },
            None if record.state.is_active() => LineState::Held,
            None => LineState::Freed,
        });
    }
    let mut record = record;
    let all_picked = lines
        .iter()
        .all(|l| matches!(l, LineState::Picked { .. } | LineState::ShortPicked { .. }));
    if record.state.is_active() && all_picked {
        record.state = ReservationState::Fulfilled;
    }
    Ok(ReservationReport { record, lines })
}

/// Locks serialising the calls on one reservation (striped by id).
#[derive(Debug)]
pub struct ReservationLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for ReservationLocks {
    fn default() -> Self {
        Self {
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl ReservationLocks {
    pub(crate) async fn lock(&self, reservation_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = (xxh3_128(reservation_id.as_bytes()) as usize) % self.stripes.len();
        self.stripes[stripe].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_checked() {
        let id = reservation_id_for("cart-1");
        assert_eq!(id, reservation_id_for("cart-1"));
        assert_ne!(id, reservation_id_for("cart-2"));
        assert!(check_reservation_id(&id).is_ok());
        let error = check_reservation_id("res-XYZ").expect_err("malformed");
        assert!(error.to_string().starts_with("reservation_id: "), "{error}");
    }

    #[test]
    fn requests_are_checked_naming_the_field() {
        let pair = PairKey::new(1, 2);
        let good = ReserveRequest {
            request_id: "r".to_owned(),
            lines: vec![ReservationLine { pair, quantity: 1 }],
            surface: Surface::Pickup,
            ttl_ms: None,
        };
        assert!(check_request(&good).is_ok());
        let field_of = |request: &ReserveRequest| match check_request(request) {
            Err(ReservationError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        let mut bad = good.clone();
        bad.request_id.clear();
        assert_eq!(field_of(&bad), "request_id");
        let mut bad = good.clone();
        bad.lines.push(ReservationLine {
            pair: PairKey::new(1, 3),
            quantity: 0,
        });
        assert_eq!(field_of(&bad), "lines[1].qty");
        let mut bad = good.clone();
        bad.lines.push(ReservationLine { pair, quantity: 2 });
        assert_eq!(field_of(&bad), "lines[1]");
        let mut bad = good;
        bad.ttl_ms = Some(MAX_HOLD_MS + 1);
        assert_eq!(field_of(&bad), "ttl_seconds");
    }

    #[test]
    fn deadline_keys_order_by_time() {
        use crate::keys::deadline_key;
        let id = reservation_id_for("x");
        let pair = PairKey::new(7, 9);
        let early = deadline_key(Timestamp(1_000), &id, pair);
        let late = deadline_key(Timestamp(2_000), &id, pair);
        assert!(early < late);
    }
}
