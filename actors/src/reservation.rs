//! Reservations: what they are, where they are stored, and how the engine runs them.
//!
//! DESIGN.md "Reservations" is the contract. The pieces:
//! - A **record** per reservation (`r` + id): request id, surface, lines, state, deadline.
//!   Only the engine writes it, under a per-reservation lock, so `Commit`, `Release` and
//!   expiry of one reservation are serialised.
//! - A **hold** per line (`h` + pair + id): the units held at that pair. Only the pair's
//!   shard writes it (single writer per pair), so concurrent reservations of one pair are
//!   linearised by the shard's mailbox and never oversell. A pair's reserved units are the
//!   sum of its holds, rebuilt from these keys when the entity activates.
//! - A **settlement** per picked line (`z` + id + pair): written by the shard when a `pick`
//!   event names the reservation.
//! - A **deadline index** (`t` + deadline + id + pair): the reaper scans it up to now and
//!   frees what is due, so PENDING and COMMITTED reservations expire also across restarts.
//!
//! Order of writes, chosen so a crash can only leave units held too long (a false "out of
//! stock" until the deadline), never units promised twice: `Reserve` writes holds (with
//! their deadline keys) before the record; `Release` and expiry write the record before
//! freeing holds. A hold without an active record is freed by the reaper at its deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stockgrid_storage::{Store, WriteBatch};
use tokio::task::JoinSet;
use xxhash_rust::xxh3::xxh3_128;

use crate::decision::Decision;
use crate::domain::{PairKey, Surface};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::persist::{decode, encode, prefix_end, time_key};
use crate::shard::{HoldOutcome, ShardMessage};
use crate::time::Timestamp;

/// Most lines in one reservation.
pub const MAX_LINES: usize = 100;
/// Longest client request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Longest TTL or pickup window a client may ask for (30 days).
pub const MAX_HOLD_MS: i64 = 30 * 24 * 3_600_000;

const RECORD_PREFIX: u8 = b'r';
const HOLD_PREFIX: u8 = b'h';
const SETTLEMENT_PREFIX: u8 = b'z';
const DEADLINE_PREFIX: u8 = b't';
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
}

impl ReleaseReason {
    /// The reason as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::CustomerCancelled => "CUSTOMER_CANCELLED",
            ReleaseReason::ItemNotFound => "ITEM_NOT_FOUND",
            ReleaseReason::Expired => "EXPIRED",
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
    /// The engine failed (store, shard).
    #[error(transparent)]
    Engine(#[from] EngineError),
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

/// The key of a reservation's record.
pub fn record_key(reservation_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + reservation_id.len());
    key.push(RECORD_PREFIX);
    key.extend_from_slice(reservation_id.as_bytes());
    key
}

/// The key of a hold of `reservation_id` at `pair`.
pub fn hold_key(pair: PairKey, reservation_id: &str) -> Vec<u8> {
    let mut key = hold_prefix(pair);
    key.extend_from_slice(reservation_id.as_bytes());
    key
}

fn hold_prefix(pair: PairKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(13 + ID_LEN);
    key.push(HOLD_PREFIX);
    key.extend_from_slice(&pair.to_bytes());
    key
}

/// The key of the settlement of `reservation_id`'s line at `pair`.
pub fn settlement_key(reservation_id: &str, pair: PairKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(13 + ID_LEN);
    key.push(SETTLEMENT_PREFIX);
    key.extend_from_slice(reservation_id.as_bytes());
    key.extend_from_slice(&pair.to_bytes());
    key
}

/// The deadline-index key that has the reaper look at `reservation_id`'s line at `pair` at
/// `deadline`.
pub fn deadline_key(deadline: Timestamp, reservation_id: &str, pair: PairKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(21 + ID_LEN);
    key.push(DEADLINE_PREFIX);
    key.extend_from_slice(&time_key(deadline));
    key.extend_from_slice(reservation_id.as_bytes());
    key.extend_from_slice(&pair.to_bytes());
    key
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

/// Deadline-index entries due at or before `now`, oldest first, at most `limit`.
pub fn due_lines(
    store: &dyn Store,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<DueLine>, EngineError> {
    let start = vec![DEADLINE_PREFIX];
    let mut end = vec![DEADLINE_PREFIX];
    end.extend_from_slice(&time_key(now.plus_ms(1)));
    let mut due = Vec::new();
    for (key, _) in store.scan(&start, &end, limit)? {
        let rest = &key[9..];
        if rest.len() != ID_LEN + 12 {
            return Err(EngineError::Corrupt(format!(
                "deadline index key of {} bytes",
                key.len()
            )));
        }
        let reservation_id = String::from_utf8_lossy(&rest[..ID_LEN]).into_owned();
        let pair = PairKey::from_bytes(&rest[ID_LEN..])
            .ok_or_else(|| EngineError::Corrupt("deadline index key pair".to_owned()))?;
        due.push(DueLine {
            key,
            reservation_id,
            pair,
        });
    }
    Ok(due)
}

/// Reads a reservation's record.
pub fn load_record(
    store: &dyn Store,
    reservation_id: &str,
) -> Result<Option<ReservationRecord>, EngineError> {
    let key = record_key(reservation_id);
    store
        .get(&key)?
        .map(|bytes| decode("reservation", &key, &bytes).map_err(EngineError::from))
        .transpose()
}

/// Puts a reservation's record into `batch`.
pub fn put_record(batch: &mut WriteBatch, record: &ReservationRecord) {
    batch.put(record_key(&record.reservation_id), encode(record));
}

/// The holds stored for a pair: (reservation id, units).
pub fn load_holds(store: &dyn Store, pair: PairKey) -> Result<Vec<Hold>, EngineError> {
    let start = hold_prefix(pair);
    store
        .scan(&start, &prefix_end(&start), usize::MAX)?
        .into_iter()
        .map(|(key, value)| {
            let units: i64 = decode("hold", &key, &value)?;
            Ok(Hold {
                reservation_id: String::from_utf8_lossy(&key[13..]).into(),
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
    async fn lock(&self, reservation_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = (xxh3_128(reservation_id.as_bytes()) as usize) % self.stripes.len();
        self.stripes[stripe].lock().await
    }
}

/// Deadline-index entries handled per reaper pass.
const REAPER_BATCH: usize = 1_000;

impl Engine {
    /// Holds every line of a cart or none. Idempotent by request id: a retry returns the
    /// reservation the first call made.
    pub async fn reserve(
        &self,
        request: ReserveRequest,
    ) -> Result<ReservationReport, ReservationError> {
        check_request(&request)?;
        let reservation_id = reservation_id_for(&request.request_id);
        let _guard = self.reservation_locks().lock(&reservation_id).await;
        let store = self.store().as_ref();
        if let Some(record) = load_record(store, &reservation_id)? {
            if record.request_id != request.request_id
                || record.lines != request.lines
                || record.surface != request.surface
            {
                return Err(ReservationError::RequestConflict(reservation_id));
            }
            return self.settle_if_due(record).await;
        }
        store.check_writable().map_err(EngineError::from)?;
        let now = self.clock().now();
        let ttl = request.ttl_ms.unwrap_or(self.config().reservation_ttl_ms);
        let deadline = now.plus_ms(ttl);
        let shared_id: Arc<str> = Arc::from(reservation_id.as_str());
        let mut by_shard: BTreeMap<usize, Vec<(usize, ReservationLine)>> = BTreeMap::new();
        for (index, line) in request.lines.iter().enumerate() {
            by_shard
                .entry(self.shard_of(line.pair))
                .or_default()
                .push((index, *line));
        }
        let mut calls = JoinSet::new();
        for (shard, lines) in by_shard {
            let engine = self.clone();
            let reservation_id = Arc::clone(&shared_id);
            let surface = request.surface;
            calls.spawn(async move {
                let pairs: Vec<PairKey> = lines.iter().map(|(_, line)| line.pair).collect();
                let outcome = engine
                    .call_shard(shard, |permit, reply| ShardMessage::Hold {
                        reservation_id,
                        lines,
                        surface,
                        deadline,
                        permit,
                        reply,
                    })
                    .await;
                (shard, pairs, outcome)
            });
        }
        let mut held: Vec<(usize, Vec<PairKey>)> = Vec::new();
        let mut refusal: Option<ReservationError> = None;
        while let Some(joined) = calls.join_next().await {
            let (shard, pairs, outcome) = joined.map_err(|e| EngineError::ShardUnavailable {
                shard: usize::MAX,
                reason: format!("hold task failed: {e}"),
            })?;
            match outcome {
                Ok(HoldOutcome::Held) => held.push((shard, pairs)),
                Ok(HoldOutcome::Refused {
                    line,
                    spare,
                    decision,
                }) => {
                    let first = match &refusal {
                        Some(ReservationError::Insufficient { line: other, .. }) => line < *other,
                        Some(_) => false,
                        None => true,
                    };
                    if first {
                        refusal = Some(ReservationError::Insufficient {
                            line,
                            pair: request.lines[line].pair,
                            wanted: request.lines[line].quantity,
                            spare,
                            decision,
                        });
                    }
                }
                Err(error) => refusal = Some(error.into()),
            }
        }
        if let Some(refusal) = refusal {
            let pairs: Vec<PairKey> = held.into_iter().flat_map(|(_, p)| p).collect();
            if let Some(experiment) = self.decisions().experiment() {
                for &pair in &pairs {
                    experiment.forget(&reservation_id, pair);
                }
            }
            self.free_holds(&reservation_id, pairs, false).await;
            return Err(refusal);
        }
        let record = ReservationRecord {
            reservation_id: reservation_id.clone(),
            request_id: request.request_id,
            surface: request.surface,
            lines: request.lines,
            state: ReservationState::Pending,
            created: now,
            deadline,
            release_reason: None,
        };
        let mut batch = WriteBatch::new();
        put_record(&mut batch, &record);
        if let Err(error) = self.commit_batch(batch).await {
            // The holds stay until the reaper frees them at their deadline if this fails too.
            self.free_holds(&reservation_id, record.lines.iter().map(|l| l.pair), false)
                .await;
            return Err(error.into());
        }
        Ok(report(store, record)?)
    }

    /// PENDING -> COMMITTED: units stay held until the pickup deadline (`None`: the
    /// configured window). Committing a committed reservation returns it unchanged.
    pub async fn commit_reservation(
        &self,
        reservation_id: &str,
        pickup_window_ms: Option<i64>,
    ) -> Result<ReservationReport, ReservationError> {
        check_reservation_id(reservation_id)?;
        if let Some(window) = pickup_window_ms
            && !(1..=MAX_HOLD_MS).contains(&window)
        {
            return Err(ReservationError::Invalid {
                field: "pickup_window_seconds".to_owned(),
                reason: format!("must be 1 to {} seconds", MAX_HOLD_MS / 1000),
            });
        }
        let _guard = self.reservation_locks().lock(reservation_id).await;
        let current = self.current(reservation_id).await?;
        match current.record.state {
            ReservationState::Pending => {}
            ReservationState::Committed => return Ok(current),
            state => {
                return Err(ReservationError::WrongState {
                    reservation_id: reservation_id.to_owned(),
                    state,
                });
            }
        }
        let mut record = current.record;
        record.state = ReservationState::Committed;
        record.deadline = self
            .clock()
            .now()
            .plus_ms(pickup_window_ms.unwrap_or(self.config().pickup_window_ms));
        let mut batch = WriteBatch::new();
        put_record(&mut batch, &record);
        for line in &record.lines {
            batch.put(
                deadline_key(record.deadline, reservation_id, line.pair),
                Vec::new(),
            );
        }
        self.commit_batch(batch).await?;
        Ok(report(self.store().as_ref(), record)?)
    }

    /// PENDING or COMMITTED -> RELEASED: frees what is still held. Releasing a released
    /// reservation returns it unchanged.
    pub async fn release_reservation(
        &self,
        reservation_id: &str,
        reason: ReleaseReason,
    ) -> Result<ReservationReport, ReservationError> {
        check_reservation_id(reservation_id)?;
        let _guard = self.reservation_locks().lock(reservation_id).await;
        let current = self.current(reservation_id).await?;
        match current.record.state {
            ReservationState::Pending | ReservationState::Committed => {}
            ReservationState::Released => return Ok(current),
            state => {
                return Err(ReservationError::WrongState {
                    reservation_id: reservation_id.to_owned(),
                    state,
                });
            }
        }
        self.free(current.record, ReservationState::Released, reason)
            .await
    }

    /// A reservation as it stands now (a passed deadline expires it first).
    pub async fn get_reservation(
        &self,
        reservation_id: &str,
    ) -> Result<ReservationReport, ReservationError> {
        check_reservation_id(reservation_id)?;
        let _guard = self.reservation_locks().lock(reservation_id).await;
        self.current(reservation_id).await
    }

    /// Frees every reservation whose deadline has passed (and holds left by an interrupted
    /// call); answers how many reservations expired. Run by maintenance and by `serve` every
    /// second; the deadline index is durable, so this also works after a restart.
    pub async fn expire_reservations(&self) -> Result<usize, EngineError> {
        let mut expired = 0;
        loop {
            let now = self.clock().now();
            let due = due_lines(self.store().as_ref(), now, REAPER_BATCH)?;
            let mut ids: Vec<&str> = due.iter().map(|d| d.reservation_id.as_str()).collect();
            ids.dedup();
            for reservation_id in ids {
                let _guard = self.reservation_locks().lock(reservation_id).await;
                match load_record(self.store().as_ref(), reservation_id)? {
                    Some(record) if record.state.is_active() => {
                        if record.deadline <= now {
                            match self.settle_if_due(record).await {
                                Ok(report) if report.record.state == ReservationState::Expired => {
                                    expired += 1;
                                }
                                Ok(_) => {}
                                Err(ReservationError::Engine(error)) => return Err(error),
                                Err(other) => return Err(EngineError::Corrupt(other.to_string())),
                            }
                        }
                    }
                    _ => {
                        // No active record: a hold left by an interrupted call, or a
                        // settled reservation. Free what is left at these pairs.
                        let pairs = due
                            .iter()
                            .filter(|d| d.reservation_id == reservation_id)
                            .map(|d| d.pair);
                        self.free_holds(reservation_id, pairs, false).await;
                    }
                }
            }
            let mut batch = WriteBatch::new();
            for line in &due {
                batch.delete(line.key.clone());
            }
            if !batch.is_empty() {
                self.commit_batch(batch).await?;
            }
            if due.len() < REAPER_BATCH {
                return Ok(expired);
            }
        }
    }

    /// The reservation's report, settling it first if its deadline passed. Caller holds its
    /// lock.
    async fn current(&self, reservation_id: &str) -> Result<ReservationReport, ReservationError> {
        let record = load_record(self.store().as_ref(), reservation_id)?
            .ok_or_else(|| ReservationError::NotFound(reservation_id.to_owned()))?;
        self.settle_if_due(record).await
    }

    /// Expires an active reservation whose deadline has passed (unless picks fulfilled it).
    /// Caller holds its lock.
    async fn settle_if_due(
        &self,
        record: ReservationRecord,
    ) -> Result<ReservationReport, ReservationError> {
        let store = self.store().as_ref();
        let current = report(store, record)?;
        let due = current.record.deadline <= self.clock().now();
        if !due || !current.record.state.is_active() {
            return Ok(current);
        }
        // `report` already turned a reservation whose lines were all picked into Fulfilled.
        self.free(
            current.record,
            ReservationState::Expired,
            ReleaseReason::Expired,
        )
        .await
    }

    /// Writes the record's final state, then frees its holds (in that order: a crash in
    /// between leaves units held until the reaper, never a freed reservation still active).
    async fn free(
        &self,
        mut record: ReservationRecord,
        state: ReservationState,
        reason: ReleaseReason,
    ) -> Result<ReservationReport, ReservationError> {
        if let Some(experiment) = self.decisions().experiment() {
            // Lines still held end here: an ITEM_NOT_FOUND release is a broken promise, a
            // cancellation or an expiry is no outcome.
            let before = report(self.store().as_ref(), record.clone())?;
            for (line, line_state) in record.lines.iter().zip(&before.lines) {
                if *line_state == LineState::Held {
                    if reason == ReleaseReason::ItemNotFound {
                        experiment.record_settlement(&record.reservation_id, line.pair, false);
                    } else {
                        experiment.forget(&record.reservation_id, line.pair);
                    }
                }
            }
        }
        record.state = state;
        record.release_reason = Some(reason);
        let mut batch = WriteBatch::new();
        put_record(&mut batch, &record);
        self.commit_batch(batch).await?;
        self.free_holds(
            &record.reservation_id,
            record.lines.iter().map(|line| line.pair),
            reason == ReleaseReason::ItemNotFound,
        )
        .await;
        Ok(report(self.store().as_ref(), record)?)
    }

    /// Asks the owning shards to free `reservation_id`'s holds at `pairs`. Failures are
    /// logged, not returned: the deadline index frees the holds later.
    async fn free_holds(
        &self,
        reservation_id: &str,
        pairs: impl IntoIterator<Item = PairKey>,
        not_found: bool,
    ) {
        let mut by_shard: BTreeMap<usize, Vec<PairKey>> = BTreeMap::new();
        for pair in pairs {
            by_shard.entry(self.shard_of(pair)).or_default().push(pair);
        }
        let shared_id: Arc<str> = Arc::from(reservation_id);
        for (shard, pairs) in by_shard {
            let reservation_id = Arc::clone(&shared_id);
            let freed = self
                .call_shard(shard, |permit, reply| ShardMessage::Unhold {
                    reservation_id,
                    pairs,
                    not_found,
                    permit,
                    reply,
                })
                .await;
            if let Err(error) = freed {
                tracing::warn!(shard, reservation_id = %shared_id, %error, "freeing holds failed; the reaper frees them at their deadline");
            }
        }
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
        let id = reservation_id_for("x");
        let pair = PairKey::new(7, 9);
        let early = deadline_key(Timestamp(1_000), &id, pair);
        let late = deadline_key(Timestamp(2_000), &id, pair);
        assert!(early < late);
    }
}
