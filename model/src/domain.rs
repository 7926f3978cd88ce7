//! The domain vocabulary: SKU-location keys, sources, event kinds, surfaces, and events
//! validated on the way in.
//!
//! Anything from outside (a replay file, later a gRPC request) arrives as a [`RawEvent`] and
//! becomes an [`Event`] only through [`RawEvent::validate`], which names the first bad field
//! and its reason. An event that fails validation is rejected whole: nothing of it applies.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Longest accepted `event_id` (and `reservation_id`), in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 128;
/// Largest absolute quantity of one event.
pub const MAX_EVENT_UNITS: i64 = 1_000_000_000;

/// One SKU at one location: the identity of a virtual entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PairKey {
    /// Item number.
    pub sku: u64,
    /// Store, fulfillment center or warehouse number.
    pub location: u32,
}

impl PairKey {
    /// A key.
    pub fn new(sku: u64, location: u32) -> Self {
        Self { sku, location }
    }

    /// The 12-byte big-endian form used in storage keys (sorts by sku, then location).
    pub fn to_bytes(self) -> [u8; 12] {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&self.sku.to_be_bytes());
        bytes[8..].copy_from_slice(&self.location.to_be_bytes());
        bytes
    }

    /// The key of [`PairKey::to_bytes`] read back (`None` unless exactly 12 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; 12] = bytes.try_into().ok()?;
        let (sku, location) = bytes.split_at(8);
        Some(Self {
            sku: u64::from_be_bytes(sku.try_into().ok()?),
            location: u32::from_be_bytes(location.try_into().ok()?),
        })
    }

    /// A well-mixed 64-bit hash, stable across runs and machines (used for shard placement).
    pub fn stable_hash(self) -> u64 {
        split_mix(self.sku ^ split_mix(u64::from(self.location)))
    }
}

impl std::fmt::Display for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sku {} at location {}", self.sku, self.location)
    }
}

fn split_mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text form used in files and APIs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the text form.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The accepted texts, for error messages.
            pub fn expected() -> String {
                [$($text),+].join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Where an event comes from.
    Source {
        /// Point-of-sale registers.
        Pos = "pos",
        /// Online orders.
        Ecom = "ecom",
        /// Receiving docks.
        Receiving = "receiving",
        /// Store associates' inventory work (cycle counts, adjustments).
        StoreInventory = "store_inventory",
        /// RFID sweeps.
        Rfid = "rfid",
        /// Warehouse management system feeds.
        Wms = "wms",
        /// The transfer system.
        Transfer = "transfer",
    }
}

impl Source {
    /// Position in [`Source::ALL`], for compact per-source arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Number of sources.
pub const SOURCE_COUNT: usize = 7;

text_enum! {
    /// What an event says happened.
    EventKind {
        /// A customer bought units (-qty).
        Sale = "sale",
        /// A customer returned units (+qty).
        Return = "return",
        /// Units were received (+qty).
        Receipt = "receipt",
        /// Units were picked for an order (-qty).
        Pick = "pick",
        /// A signed correction (+/-qty).
        Adjustment = "adjustment",
        /// Units left for another location (-qty).
        TransferOut = "transfer_out",
        /// Units arrived from another location (+qty).
        TransferIn = "transfer_in",
        /// An associate's cycle count: absolute on-hand at event_time.
        Count = "count",
        /// An RFID sweep: absolute on-hand at event_time.
        RfidRead = "rfid_read",
        /// A WMS or warehouse feed's claim of on-hand at event_time (may be stale).
        Snapshot = "snapshot",
    }
}

impl EventKind {
    /// Whether the event states an absolute on-hand rather than a change.
    pub fn is_observation(self) -> bool {
        matches!(
            self,
            EventKind::Count | EventKind::RfidRead | EventKind::Snapshot
        )
    }

    /// For two observations at the same instant, the higher rank wins:
    /// `count` > `snapshot` > `rfid_read` (DESIGN.md "Ledger semantics"). 0 for deltas.
    pub fn observation_rank(self) -> u8 {
        match self {
            EventKind::Count => 3,
            EventKind::Snapshot => 2,
            EventKind::RfidRead => 1,
            _ => 0,
        }
    }

    /// The signed change in on-hand of a delta of `qty` units (0 for observations).
    pub fn signed_units(self, qty: i64) -> i64 {
        match self {
            EventKind::Sale | EventKind::Pick | EventKind::TransferOut => -qty,
            EventKind::Return
            | EventKind::Receipt
            | EventKind::TransferIn
            | EventKind::Adjustment => qty,
            EventKind::Count | EventKind::RfidRead | EventKind::Snapshot => 0,
        }
    }
}

text_enum! {
    /// Who asks for availability; each surface has its own safety stock and threshold.
    Surface {
        /// A product or search page.
        ItemPage = "item_page",
        /// A store pickup promise.
        Pickup = "pickup",
        /// A delivery promise.
        Delivery = "delivery",
        /// The substitution engine.
        Substitution = "substitution",
        /// Replenishment and ops.
        Replenishment = "replenishment",
    }
}

/// A validated inventory event. Arrival time is not part of it: the same event may arrive
/// several times (duplicates), and each arrival has its own time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique within its source.
    pub event_id: String,
    /// The feed it came from.
    pub source: Source,
    /// What happened.
    pub kind: EventKind,
    /// The pair it is about.
    pub pair: PairKey,
    /// Units: >= 0, except adjustments, which are signed.
    pub quantity: i64,
    /// When it happened at the source.
    pub event_time: Timestamp,
    /// On a `pick`: the reservation it fulfils.
    pub reservation_id: Option<String>,
    /// On a transfer: the other end.
    pub counterparty_location: Option<u32>,
    /// On a `transfer_out`: when it should arrive.
    pub expected_time: Option<Timestamp>,
}

impl Event {
    /// An event with no optional field set (no reservation, counterparty or expected time).
    pub fn new(
        event_id: impl Into<String>,
        source: Source,
        kind: EventKind,
        pair: PairKey,
        quantity: i64,
        event_time: Timestamp,
    ) -> Self {
        Self {
            event_id: event_id.into(),
            source,
            kind,
            pair,
            quantity,
            event_time,
            reservation_id: None,
            counterparty_location: None,
            expected_time: None,
        }
    }

    /// A 128-bit digest (XXH3-128, a fixed, versioned algorithm) of a canonical encoding of
    /// every field; arrival time is not a field. Two arrivals of one identity are duplicates
    /// when their digests are equal and a conflict when they differ. Different payloads share
    /// a digest with probability 2^-128, so the digest stands for the payload on disk and in
    /// memory without storing it twice.
    pub fn payload_digest(&self) -> u128 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut text = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        text(self.event_id.as_bytes());
        text(
            self.reservation_id
                .as_deref()
                .unwrap_or("\u{0}none")
                .as_bytes(),
        );
        let mut fixed = [0u8; 51];
        fixed[0] = self.source as u8;
        fixed[1] = self.kind as u8;
        fixed[2..10].copy_from_slice(&self.pair.sku.to_le_bytes());
        fixed[10..14].copy_from_slice(&self.pair.location.to_le_bytes());
        fixed[14..22].copy_from_slice(&self.quantity.to_le_bytes());
        fixed[22..30].copy_from_slice(&self.event_time.0.to_le_bytes());
        fixed[30] = u8::from(self.counterparty_location.is_some());
        fixed[31..35].copy_from_slice(&self.counterparty_location.unwrap_or(0).to_le_bytes());
        fixed[35] = u8::from(self.expected_time.is_some());
        fixed[36..44].copy_from_slice(&self.expected_time.map_or(0, |t| t.0).to_le_bytes());
        fixed[44] = u8::from(self.reservation_id.is_some());
        hasher.update(&fixed);
        hasher.digest128()
    }

    /// The signed change in on-hand this event makes (0 for observations).
    pub fn signed_units(&self) -> i64 {
        self.kind.signed_units(self.quantity)
    }
}

/// An event with the time it reached us.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// The event.
    pub event: Event,
    /// When it arrived (`ingest_time` in replay files, the service clock when served).
    pub arrival_time: Timestamp,
}

/// Why an event was rejected: the field and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct InvalidEvent {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidEvent {
    /// An error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// An event as it arrives from outside, before validation. Text fields stay text so that
/// validation, not deserialisation, names what is wrong.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RawEvent {
    /// See [`Event::event_id`].
    pub event_id: Option<String>,
    /// See [`Event::source`].
    pub source: Option<String>,
    /// See [`Event::kind`].
    pub kind: Option<String>,
    /// See [`PairKey::sku`].
    pub sku: Option<u64>,
    /// See [`PairKey::location`].
    pub location: Option<u32>,
    /// See [`Event::quantity`].
    pub qty: Option<i64>,
    /// See [`Event::event_time`].
    pub event_time: Option<String>,
    /// The arrival time, in replay files.
    pub ingest_time: Option<String>,
    /// See [`Event::reservation_id`].
    pub reservation_id: Option<String>,
    /// See [`Event::counterparty_location`].
    pub counterparty_location: Option<u32>,
    /// See [`Event::expected_time`].
    pub expected_time: Option<String>,
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, InvalidEvent> {
    value.ok_or_else(|| InvalidEvent::new(field, "is required"))
}

fn parse_time(text: &str, field: &'static str) -> Result<Timestamp, InvalidEvent> {
    Timestamp::parse_rfc3339(text).map_err(|reason| InvalidEvent::new(field, reason))
}

/// Most characters of client text an error message quotes.
pub const EXCERPT_CHARS: usize = 32;

/// Client text as an error message quotes it: at most its first [`EXCERPT_CHARS`]
/// characters, Debug-escaped, and its size when cut, so that a message never grows with its
/// input (a 20 KB id must not make an INVALID_ARGUMENT too large to deliver).
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

fn check_identifier(text: &str, field: &'static str) -> Result<(), InvalidEvent> {
    if text.is_empty() {
        return Err(InvalidEvent::new(field, "must not be empty"));
    }
    if text.len() > MAX_IDENTIFIER_BYTES {
        return Err(InvalidEvent::new(
            field,
            format!(
                "is {} bytes, above the limit of {MAX_IDENTIFIER_BYTES}",
                text.len()
            ),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidEvent::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

impl RawEvent {
    /// Validates every field and builds the event, or names the first bad field.
    /// `ingest_time` is not checked here: it is the arrival, handled by [`RawEvent::arrival`].
    pub fn validate(&self) -> Result<Event, InvalidEvent> {
        let event_id = required(self.event_id.clone(), "event_id")?;
        check_identifier(&event_id, "event_id")?;
        let source_text = required(self.source.as_deref(), "source")?;
        let source = Source::parse(source_text).ok_or_else(|| {
            InvalidEvent::new(
                "source",
                format!(
                    "unknown source {}; expected one of {}",
                    excerpt(source_text),
                    Source::expected()
                ),
            )
        })?;
        let kind_text = required(self.kind.as_deref(), "kind")?;
        let kind = EventKind::parse(kind_text).ok_or_else(|| {
            InvalidEvent::new(
                "kind",
                format!(
                    "unknown kind {}; expected one of {}",
                    excerpt(kind_text),
                    EventKind::expected()
                ),
            )
        })?;
        let sku = required(self.sku, "sku")?;
        let location = required(self.location, "location")?;
        let quantity = required(self.qty, "qty")?;
        // A range check, not `abs()`: `i64::MIN.abs()` overflows (and wraps to itself in a
        // release build, which once let `i64::MIN` through).
        if !(-MAX_EVENT_UNITS..=MAX_EVENT_UNITS).contains(&quantity) {
            return Err(InvalidEvent::new(
                "qty",
                format!("{quantity} is beyond +/-{MAX_EVENT_UNITS}"),
            ));
        }
        if quantity < 0 && kind != EventKind::Adjustment {
            return Err(InvalidEvent::new(
                "qty",
                format!("{quantity} is negative; only an adjustment may be"),
            ));
        }
        let event_time = parse_time(
            required(self.event_time.as_deref(), "event_time")?,
            "event_time",
        )?;

        let reservation_id = match &self.reservation_id {
            Some(id) if kind != EventKind::Pick => {
                return Err(InvalidEvent::new(
                    "reservation_id",
                    format!(
                        "is only allowed on a pick, not on a {kind} ({})",
                        excerpt(id)
                    ),
                ));
            }
            Some(id) => {
                check_identifier(id, "reservation_id")?;
                Some(id.clone())
            }
            None => None,
        };
        let is_transfer = matches!(kind, EventKind::TransferOut | EventKind::TransferIn);
        let counterparty_location = match self.counterparty_location {
            Some(_) if !is_transfer => {
                return Err(InvalidEvent::new(
                    "counterparty_location",
                    format!("is only allowed on a transfer, not on a {kind}"),
                ));
            }
            Some(other) if other == location => {
                return Err(InvalidEvent::new(
                    "counterparty_location",
                    "must differ from location",
                ));
            }
            other => other,
        };
        let expected_time = match self.expected_time.as_deref() {
            Some(_) if kind != EventKind::TransferOut => {
                return Err(InvalidEvent::new(
                    "expected_time",
                    format!("is only allowed on a transfer_out, not on a {kind}"),
                ));
            }
            Some(text) => Some(parse_time(text, "expected_time")?),
            None => None,
        };
        Ok(Event {
            event_id,
            source,
            kind,
            pair: PairKey::new(sku, location),
            quantity,
            event_time,
            reservation_id,
            counterparty_location,
            expected_time,
        })
    }

    /// Validates the event and its `ingest_time` (required in replay files).
    pub fn arrival(&self) -> Result<Arrival, InvalidEvent> {
        let event = self.validate()?;
        let arrival_time = parse_time(
            required(self.ingest_time.as_deref(), "ingest_time")?,
            "ingest_time",
        )?;
        Ok(Arrival {
            event,
            arrival_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to a valid raw event.
    type Mutation = fn(&mut RawEvent);

    fn raw() -> RawEvent {
        RawEvent {
            event_id: Some("e1".into()),
            source: Some("pos".into()),
            kind: Some("sale".into()),
            sku: Some(1),
            location: Some(2),
            qty: Some(3),
            event_time: Some("2026-03-02T10:00:00Z".into()),
            ingest_time: Some("2026-03-02T10:01:00Z".into()),
            ..RawEvent::default()
        }
    }

    #[test]
    fn a_good_event_validates() {
        let arrival = raw().arrival().expect("valid");
        assert_eq!(arrival.event.signed_units(), -3);
        assert_eq!(arrival.arrival_time.0 - arrival.event.event_time.0, 60_000);
    }

    #[test]
    fn excerpts_are_short_whatever_the_input() {
        assert_eq!(excerpt("pos"), "\"pos\"");
        let long = excerpt(&"x".repeat(20_000));
        assert!(long.len() < 60 && long.ends_with("(20000 bytes)"), "{long}");
        let wide = excerpt(&"é".repeat(100));
        assert!(wide.contains("(200 bytes)"), "{wide}");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.event_id = None, "event_id"),
            (|r| r.event_id = Some(String::new()), "event_id"),
            (|r| r.event_id = Some("x".repeat(200)), "event_id"),
            (|r| r.source = Some("fax".into()), "source"),
            (|r| r.kind = Some("theft".into()), "kind"),
            (|r| r.sku = None, "sku"),
            (|r| r.location = None, "location"),
            (|r| r.qty = Some(-1), "qty"),
            (|r| r.qty = Some(MAX_EVENT_UNITS + 1), "qty"),
            (|r| r.qty = Some(i64::MAX), "qty"),
            (|r| r.qty = Some(i64::MIN), "qty"),
            (
                |r| {
                    r.kind = Some("adjustment".into());
                    r.qty = Some(i64::MIN);
                },
                "qty",
            ),
            (
                |r| {
                    r.kind = Some("adjustment".into());
                    r.qty = Some(-MAX_EVENT_UNITS - 1);
                },
                "qty",
            ),
            (|r| r.event_time = Some("yesterday".into()), "event_time"),
            (|r| r.reservation_id = Some("r1".into()), "reservation_id"),
            (
                |r| r.counterparty_location = Some(9),
                "counterparty_location",
            ),
            (
                |r| r.expected_time = Some("2026-03-02T10:00:00Z".into()),
                "expected_time",
            ),
            (|r| r.ingest_time = None, "ingest_time"),
        ];
        for (mutate, field) in cases {
            let mut event = raw();
            mutate(&mut event);
            let error = event.arrival().expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn adjustments_may_be_negative_and_transfers_need_another_location() {
        let mut adjustment = raw();
        adjustment.kind = Some("adjustment".into());
        adjustment.qty = Some(-4);
        assert_eq!(adjustment.validate().expect("valid").signed_units(), -4);
        let mut transfer = raw();
        transfer.kind = Some("transfer_out".into());
        transfer.counterparty_location = Some(2);
        assert_eq!(
            transfer.validate().expect_err("same location").field,
            "counterparty_location"
        );
    }

    #[test]
    fn digest_ignores_nothing_but_arrival() {
        let a = raw().validate().expect("valid");
        let mut later = raw();
        later.ingest_time = Some("2026-03-02T12:00:00Z".into());
        assert_eq!(
            a.payload_digest(),
            later.validate().expect("valid").payload_digest()
        );
        let variants: Vec<Mutation> = vec![
            |r| r.qty = Some(4),
            |r| r.sku = Some(9),
            |r| r.location = Some(9),
            |r| r.source = Some("ecom".into()),
            |r| r.event_time = Some("2026-03-02T10:00:01Z".into()),
            |r| r.event_id = Some("e2".into()),
            |r| {
                r.kind = Some("pick".into());
                r.reservation_id = Some("r".into());
            },
        ];
        let pick = {
            let mut r = raw();
            r.kind = Some("pick".into());
            r.validate().expect("valid").payload_digest()
        };
        for (index, mutate) in variants.into_iter().enumerate() {
            let mut other = raw();
            mutate(&mut other);
            let digest = other.validate().expect("valid").payload_digest();
            assert_ne!(a.payload_digest(), digest, "variant {index}");
            assert_ne!(pick, digest, "variant {index}");
        }
    }

    #[test]
    fn digest_is_stable_across_builds() {
        // Digests are stored on disk: this value must never change for the same event.
        assert_eq!(
            raw().validate().expect("valid").payload_digest(),
            184_397_724_147_938_004_387_079_091_934_036_702_783
        );
    }
}
