//! Conversions between the generated proto types and the domain types, each naming the
//! request field it checks.

use stockgrid_actors::audit::{AuditRecord, NodeReplay};
use stockgrid_actors::catalog::{Location, LocationInput};
use stockgrid_actors::decision::{Decision, DecisionMode};
use stockgrid_actors::domain::{Event, PairKey, RawEvent, Surface};
use stockgrid_actors::experiment::Experiment;
use stockgrid_actors::ledger::{Outcome, ReadView};
use stockgrid_actors::persist::RebuildBase;
use stockgrid_actors::policy::PolicySnapshot;
use stockgrid_actors::reservation::{
    LineState, ReleaseReason, ReservationLine, ReservationReport, ReservationState,
};
use stockgrid_actors::shard::EntityReport;
use stockgrid_actors::time::Timestamp;
use tonic::Status;

use crate::proto::v1 as pb;
use crate::status::invalid;

/// The domain surface of a proto surface; `field` names the request field.
pub fn surface(value: i32, field: &str) -> Result<Surface, Status> {
    known_surface(value).ok_or_else(|| match pb::Surface::try_from(value) {
        Ok(_) => invalid(
            field,
            "is required (ITEM_PAGE, PICKUP, DELIVERY, SUBSTITUTION or REPLENISHMENT)",
        ),
        Err(_) => invalid(field, format!("unknown surface {value}")),
    })
}

/// The domain surface of a proto one (`None`: unspecified or unknown).
fn known_surface(value: i32) -> Option<Surface> {
    match pb::Surface::try_from(value) {
        Ok(pb::Surface::ItemPage) => Some(Surface::ItemPage),
        Ok(pb::Surface::Pickup) => Some(Surface::Pickup),
        Ok(pb::Surface::Delivery) => Some(Surface::Delivery),
        Ok(pb::Surface::Substitution) => Some(Surface::Substitution),
        Ok(pb::Surface::Replenishment) => Some(Surface::Replenishment),
        Ok(pb::Surface::Unspecified) | Err(_) => None,
    }
}

/// The proto surface of a domain surface.
pub fn surface_to_proto(surface: Surface) -> pb::Surface {
    match surface {
        Surface::ItemPage => pb::Surface::ItemPage,
        Surface::Pickup => pb::Surface::Pickup,
        Surface::Delivery => pb::Surface::Delivery,
        Surface::Substitution => pb::Surface::Substitution,
        Surface::Replenishment => pb::Surface::Replenishment,
    }
}

/// A checked lookup: pair, quantity, surface. `item` is the request's index in a batch
/// (`None`: a point lookup); errors name the field by its path (`qty`, `items[3].qty`), built
/// only when there is an error.
pub fn lookup(
    request: &pb::GetAvailabilityRequest,
    item: Option<usize>,
) -> Result<(PairKey, i64, Surface), Status> {
    let field = |name: &str| match item {
        Some(index) => format!("items[{index}].{name}"),
        None => name.to_owned(),
    };
    if request.qty < 1 || request.qty > i64::from(i32::MAX) {
        return Err(invalid(
            field("qty"),
            format!("must be 1 to {}, got {}", i32::MAX, request.qty),
        ));
    }
    let surface = match known_surface(request.surface) {
        Some(surface) => surface,
        None => surface(request.surface, &field("surface"))?,
    };
    Ok((
        PairKey::new(request.sku, request.location),
        request.qty,
        surface,
    ))
}

/// The answer of a decision.
pub fn answer(
    decision: &Decision,
    state_version: u32,
    decision_id: String,
) -> pb::AvailabilityAnswer {
    pb::AvailabilityAnswer {
        available: decision.available,
        probability: decision.probability,
        expected_on_hand: decision.expected_on_hand,
        mode: mode_to_proto(decision.mode) as i32,
        reason: decision.reason.as_str().to_owned(),
        state_version: u64::from(state_version),
        decision_id,
    }
}

/// The proto decision mode of a domain one.
pub fn mode_to_proto(mode: DecisionMode) -> pb::DecisionMode {
    match mode {
        DecisionMode::Rules => pb::DecisionMode::Rules,
        DecisionMode::Ml => pb::DecisionMode::Ml,
    }
}

/// The proto form of a decision policy.
pub fn policy(snapshot: &PolicySnapshot) -> pb::DecisionPolicy {
    pb::DecisionPolicy {
        default_mode: mode_to_proto(snapshot.default_mode) as i32,
        model_version: snapshot.model_version.clone().unwrap_or_default(),
        rules_surfaces: snapshot
            .rules_surfaces
            .iter()
            .map(|surface| surface_to_proto(*surface) as i32)
            .collect(),
        rules_regions: snapshot.rules_regions.clone(),
        version: snapshot.version,
        drifted_regions: snapshot.drifted_regions.clone(),
        item_page_decisions: snapshot.item_page_decisions,
        item_page_audited: snapshot.item_page_audited,
        drift: snapshot
            .drift
            .iter()
            .map(|drift| pb::RegionDrift {
                region: drift.region.clone(),
                feature: drift.feature.to_owned(),
                psi: drift.psi,
                decisions: drift.decisions,
                fallback: drift.fallback,
            })
            .collect(),
    }
}

/// The proto form of a decision replay.
pub fn decision_replay(replay: &NodeReplay) -> pb::DecisionReplay {
    let (rebuilt_from, checkpoint_position) = match replay.base {
        Some(RebuildBase::LogStart) => ("log_start", 0),
        Some(RebuildBase::Checkpoint { position, .. }) => ("checkpoint", position),
        None => ("", 0),
    };
    pb::DecisionReplay {
        decision_id: replay.check.decision_id.clone(),
        identical: replay.check.differences.is_empty(),
        differences: replay.check.differences.clone(),
        rebuilt_from: rebuilt_from.to_owned(),
        checkpoint_position,
        log_position: replay.log_position.unwrap_or(0),
    }
}

/// The proto form of a decision record.
pub fn decision_record(record: &AuditRecord) -> pb::DecisionRecord {
    pb::DecisionRecord {
        decision_id: record.decision_id.clone(),
        sku: record.sku,
        location: record.location,
        surface: surface_to_proto(record.surface) as i32,
        qty: record.quantity,
        time: Timestamp(record.time_ms).to_rfc3339(),
        state_version: record.arrivals_applied,
        inputs_digest: record.inputs_digest.clone(),
        features: record.features.clone(),
        model_version: record.model_version.clone(),
        mode: mode_to_proto(record.decision.mode) as i32,
        available: record.decision.available,
        probability: record.decision.probability,
        expected_on_hand: record.decision.expected_on_hand,
        reason: record.decision.reason.as_str().to_owned(),
    }
}

/// The proto report of a running experiment.
pub fn experiment_report(experiment: &Experiment) -> pb::ExperimentReport {
    let estimate = |(value, low, high): (f64, f64, f64)| pb::Estimate { value, low, high };
    pb::ExperimentReport {
        name: experiment.spec().name.clone(),
        shadow: experiment.spec().shadow,
        arms: experiment
            .report()
            .into_iter()
            .map(|arm| pb::ArmReport {
                name: arm.name,
                mode: mode_to_proto(arm.mode) as i32,
                weight: arm.weight,
                decisions: arm.decisions,
                promised: arm.promised,
                settled: arm.settled,
                broken: arm.broken,
                broken_rate: Some(estimate(arm.broken_rate)),
                recall_sample: arm.recall_sample,
                recall: Some(estimate(arm.recall)),
            })
            .collect(),
    }
}

/// The domain event of a proto event, or the bad field (without the `events[i].` prefix).
pub fn event(event: pb::Event) -> Result<Event, (&'static str, String)> {
    let raw = RawEvent {
        event_id: Some(event.event_id),
        source: Some(event.source),
        kind: Some(event.kind),
        sku: Some(event.sku),
        location: Some(event.location),
        qty: Some(event.qty),
        event_time: Some(event.event_time),
        ingest_time: None,
        reservation_id: event.reservation_id,
        counterparty_location: event.counterparty_location,
        expected_time: event.expected_time,
    };
    raw.validate().map_err(|e| (e.field, e.reason))
}

/// The proto event of a domain event.
pub fn event_to_proto(event: &Event) -> pb::Event {
    pb::Event {
        event_id: event.event_id.clone(),
        source: event.source.as_str().to_owned(),
        kind: event.kind.as_str().to_owned(),
        sku: event.pair.sku,
        location: event.pair.location,
        qty: event.quantity,
        event_time: event.event_time.to_rfc3339(),
        reservation_id: event.reservation_id.clone(),
        counterparty_location: event.counterparty_location,
        expected_time: event.expected_time.map(Timestamp::to_rfc3339),
    }
}

/// The per-event result of an outcome.
pub fn event_result(outcome: &Outcome) -> pb::EventResult {
    match outcome {
        Outcome::Applied => pb::EventResult {
            status: pb::EventStatus::Accepted as i32,
            ..Default::default()
        },
        Outcome::Duplicate => pb::EventResult {
            status: pb::EventStatus::Duplicate as i32,
            ..Default::default()
        },
        Outcome::Quarantined(reason) => pb::EventResult {
            status: pb::EventStatus::Quarantined as i32,
            reason: reason.code().to_owned(),
            field: String::new(),
        },
    }
}

/// Reservation lines (checked by the engine, which names `lines[i].qty`).
pub fn lines(lines: &[pb::ReservationLine]) -> Vec<ReservationLine> {
    lines
        .iter()
        .map(|line| ReservationLine {
            pair: PairKey::new(line.sku, line.location),
            quantity: line.qty,
        })
        .collect()
}

/// A checked release reason.
pub fn release_reason(value: i32) -> Result<ReleaseReason, Status> {
    match pb::ReleaseReason::try_from(value) {
        Ok(pb::ReleaseReason::CustomerCancelled) => Ok(ReleaseReason::CustomerCancelled),
        Ok(pb::ReleaseReason::ItemNotFound) => Ok(ReleaseReason::ItemNotFound),
        _ => Err(invalid(
            "reason",
            "must be CUSTOMER_CANCELLED or ITEM_NOT_FOUND",
        )),
    }
}

/// The proto reservation of a report.
pub fn reservation(report: &ReservationReport) -> pb::Reservation {
    let record = &report.record;
    pb::Reservation {
        reservation_id: record.reservation_id.clone(),
        request_id: record.request_id.clone(),
        state: match record.state {
            ReservationState::Pending => pb::ReservationState::Pending,
            ReservationState::Committed => pb::ReservationState::Committed,
            ReservationState::Fulfilled => pb::ReservationState::Fulfilled,
            ReservationState::Released => pb::ReservationState::Released,
            ReservationState::Expired => pb::ReservationState::Expired,
        } as i32,
        surface: surface_to_proto(record.surface) as i32,
        lines: record
            .lines
            .iter()
            .zip(&report.lines)
            .map(|(line, state)| {
                let (state, picked_qty) = match *state {
                    LineState::Held => (pb::LineState::Held, 0),
                    LineState::Picked { picked } => (pb::LineState::Picked, picked),
                    LineState::ShortPicked { picked } => (pb::LineState::ShortPicked, picked),
                    LineState::Freed => (pb::LineState::Freed, 0),
                };
                pb::ReservationLineStatus {
                    line: Some(pb::ReservationLine {
                        sku: line.pair.sku,
                        location: line.pair.location,
                        qty: line.quantity,
                    }),
                    state: state as i32,
                    picked_qty,
                }
            })
            .collect(),
        created_time: record.created.to_rfc3339(),
        deadline: record.deadline.to_rfc3339(),
        release_reason: record
            .release_reason
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// A checked location; errors name `locations[i].field`.
pub fn location(index: usize, location: pb::Location) -> Result<Location, Status> {
    LocationInput {
        location: location.location,
        kind: Some(location.kind).filter(|k| !k.is_empty()),
        region: Some(location.region).filter(|r| !r.is_empty()),
        timezone: Some(location.timezone).filter(|t| !t.is_empty()),
        open_hour: Some(i64::from(location.open_hour)),
        close_hour: Some(i64::from(location.close_hour)).filter(|&h| h != 0),
        sources: location.sources,
    }
    .validate()
    .map_err(|e| invalid(format!("locations[{index}].{}", e.field), e.reason))
}

/// The proto location of a stored one.
pub fn location_to_proto(location: &Location) -> pb::Location {
    pb::Location {
        location: location.location,
        kind: location.kind.clone(),
        region: location.region.clone().unwrap_or_default(),
        timezone: location.timezone.clone(),
        open_hour: u32::from(location.open_hour),
        close_hour: u32::from(location.close_hour),
        sources: location
            .sources
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
    }
}

fn time_or_empty(time: Option<Timestamp>) -> String {
    time.map(Timestamp::to_rfc3339).unwrap_or_default()
}

/// The ops view of an entity, with the reservations holding its units.
pub fn entity_state(
    report: &EntityReport,
    read_view: Option<ReadView>,
    reservations: Vec<pb::Reservation>,
) -> pb::EntityState {
    let view = &report.view;
    let anchor = view.last_anchor.as_ref();
    pb::EntityState {
        on_hand: view.on_hand_units,
        reserved: view.reserved_units,
        in_transit: view.in_transit_units,
        anchor_kind: anchor
            .map(|a| a.kind.as_str().to_owned())
            .unwrap_or_default(),
        anchor_source: anchor
            .map(|a| a.source.as_str().to_owned())
            .unwrap_or_default(),
        anchor_time: time_or_empty(anchor.map(|a| a.event_time)),
        anchor_units: anchor.map_or(0, |a| i64::from(a.units)),
        last_sale: time_or_empty(view.last_sale),
        sources: stockgrid_actors::domain::Source::ALL
            .iter()
            .zip(view.source_last_seen.iter())
            .filter_map(|(source, seen)| {
                seen.map(|time| pb::SourceLastSeen {
                    source: source.as_str().to_owned(),
                    last_seen: time.to_rfc3339(),
                })
            })
            .collect(),
        applied_entries: u64::from(view.applied_entries),
        quarantined_entries: u64::from(view.quarantined_entries),
        log_position: report.log_position,
        quarantined: report
            .quarantined
            .iter()
            .map(|q| pb::QuarantinedEvent {
                event: Some(event_to_proto(&q.entry.event)),
                arrival: q.arrival.to_rfc3339(),
                reason: q.reason.code().to_owned(),
            })
            .collect(),
        reservations,
        read_view: read_view.map(|v| pb::ReadViewState {
            on_hand: i64::from(v.on_hand_units),
            reserved: i64::from(v.reserved_units),
            in_transit: i64::from(v.in_transit_units),
            version: u64::from(v.version),
        }),
        overdue_transfers: view.overdue_transfers,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use stockgrid_actors::domain::MAX_EVENT_UNITS;

    use super::*;

    /// A refused lookup names its field by its path: bare for a point lookup, under
    /// `items[i].` in a batch; quantity first, then the surface (unspecified or unknown).
    #[test]
    fn lookup_errors_name_the_field_by_its_path() {
        let message = |request: &pb::GetAvailabilityRequest, item| {
            lookup(request, item)
                .expect_err("refused")
                .message()
                .to_owned()
        };
        let zero = pb::GetAvailabilityRequest {
            sku: 1,
            location: 1,
            qty: 0,
            surface: pb::Surface::ItemPage as i32,
        };
        assert!(message(&zero, None).starts_with("qty: must be 1 to "));
        assert!(message(&zero, Some(2)).starts_with("items[2].qty: must be 1 to "));
        let unspecified = pb::GetAvailabilityRequest {
            qty: 1,
            surface: pb::Surface::Unspecified as i32,
            ..zero
        };
        assert!(message(&unspecified, None).starts_with("surface: is required"));
        assert!(message(&unspecified, Some(2)).starts_with("items[2].surface: is required"));
        let unknown = pb::GetAvailabilityRequest {
            surface: 99,
            ..unspecified
        };
        assert_eq!(
            message(&unknown, Some(0)),
            "items[0].surface: unknown surface 99"
        );
        let fine = pb::GetAvailabilityRequest {
            surface: pb::Surface::Pickup as i32,
            ..unspecified
        };
        assert_eq!(
            lookup(&fine, Some(5)).expect("valid"),
            (PairKey::new(1, 1), 1, Surface::Pickup)
        );
    }

    /// Quantities a hostile client sends: the integer extremes, the bounds and one past them.
    fn extreme_quantity() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(i64::from(u32::MAX)),
            Just(i64::from(i32::MAX)),
            Just(i64::from(i32::MAX) + 1),
            Just(MAX_EVENT_UNITS),
            Just(MAX_EVENT_UNITS + 1),
            Just(-MAX_EVENT_UNITS),
            Just(-MAX_EVENT_UNITS - 1),
            Just(0i64),
            any::<i64>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// A lookup converts exactly when its quantity is 1 to `i32::MAX`, and otherwise names
        /// `qty` in a short message.
        #[test]
        fn lookups_convert_only_quantities_in_range(qty in extreme_quantity(), surface in 0i32..7) {
            let request = pb::GetAvailabilityRequest { sku: 1, location: 1, qty, surface };
            let in_range = (1..=i64::from(i32::MAX)).contains(&qty);
            match lookup(&request, Some(2)) {
                Ok((_, quantity, _)) => {
                    prop_assert!(in_range);
                    prop_assert_eq!(quantity, qty);
                }
                Err(status) => {
                    prop_assert!(!in_range || !(1..=5).contains(&surface), "{status:?}");
                    prop_assert!(status.message().starts_with("items[2]."));
                    prop_assert!(status.message().len() < 200);
                }
            }
        }

        /// An event converts only with a quantity within +/-1e9 (negative only on an
        /// adjustment); a refusal names `qty` and quotes no more than a short prefix.
        #[test]
        fn events_convert_only_quantities_in_range(
            qty in extreme_quantity(),
            adjustment in any::<bool>(),
            id_bytes in 1usize..40_000,
        ) {
            let valid = pb::Event {
                event_id: "e".to_owned(),
                source: "pos".to_owned(),
                kind: if adjustment { "adjustment" } else { "receipt" }.to_owned(),
                sku: 1,
                location: 1,
                qty,
                event_time: "2026-03-02T10:00:00Z".to_owned(),
                ..Default::default()
            };
            let hostile = pb::Event {
                event_id: "e".repeat(id_bytes.min(64)),
                source: "x".repeat(id_bytes),
                ..valid.clone()
            };
            let error = event_conversion(hostile);
            prop_assert!(error.len() < 300, "{} bytes", error.len());
            let in_range = (-MAX_EVENT_UNITS..=MAX_EVENT_UNITS).contains(&qty) && (qty >= 0 || adjustment);
            match super::event(valid) {
                Ok(converted) => {
                    prop_assert!(in_range);
                    prop_assert_eq!(converted.quantity, qty);
                }
                Err((field, reason)) => {
                    prop_assert!(!in_range, "{field}: {reason}");
                    prop_assert_eq!(field, "qty");
                }
            }
        }
    }

    /// The reason a conversion gives, or "" when it converts.
    fn event_conversion(event: pb::Event) -> String {
        match super::event(event) {
            Ok(_) => String::new(),
            Err((field, reason)) => format!("{field}: {reason}"),
        }
    }
}
