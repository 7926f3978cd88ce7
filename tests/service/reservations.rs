//! Reservations over real gRPC: racing clients never oversell, carts are all-or-nothing,
//! retries are idempotent, and a pick event settles its reservation.

use stockgrid_actors::time::Clock;
use stockgrid_api::proto::v1 as pb;
use tonic::Code;

use crate::{TestNode, assert_status, event};

fn line(sku: u64, location: u32, qty: i64) -> pb::ReservationLine {
    pb::ReservationLine { sku, location, qty }
}

fn reserve(request_id: &str, lines: Vec<pb::ReservationLine>) -> pb::ReserveRequest {
    pb::ReserveRequest {
        request_id: request_id.to_owned(),
        lines,
        surface: pb::Surface::Pickup as i32,
        ttl_seconds: 0,
    }
}

async fn reserved(node: &TestNode, sku: u64, location: u32) -> i64 {
    node.inspect()
        .await
        .get_entity_state(pb::GetEntityStateRequest { sku, location })
        .await
        .expect("inspect")
        .into_inner()
        .reserved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clients_never_oversell_the_last_units() {
    race_for_the_last_units(TestNode::start().await).await;
}

/// Thirty clients race for five units: exactly five holds are granted, the others refused
/// as FAILED_PRECONDITION, and the pair holds five reserved units.
pub async fn race_for_the_last_units(node: TestNode) {
    node.stock(7, 1, 5).await;
    let mut tasks = Vec::new();
    for client in 0..30 {
        let channel = node.channel().await;
        tasks.push(tokio::spawn(async move {
            let mut client_api = pb::reservations_client::ReservationsClient::new(channel);
            client_api
                .reserve(reserve(&format!("race-{client}"), vec![line(7, 1, 1)]))
                .await
        }));
    }
    let mut granted = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(reservation) => {
                assert_eq!(
                    reservation.into_inner().state,
                    pb::ReservationState::Pending as i32
                );
                granted += 1;
            }
            Err(status) => assert_status(&status, Code::FailedPrecondition, "cannot be promised"),
        }
    }
    assert_eq!(granted, 5);
    assert_eq!(reserved(&node, 7, 1).await, 5);
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_are_all_or_nothing_and_retries_idempotent() {
    let node = TestNode::start().await;
    node.stock(1, 1, 10).await;
    node.stock(2, 1, 1).await;
    let mut client = node.reservations().await;
    let refused = client
        .reserve(reserve("cart", vec![line(1, 1, 3), line(2, 1, 2)]))
        .await
        .expect_err("second line short");
    assert_status(&refused, Code::FailedPrecondition, "lines[1]");
    assert_eq!(
        reserved(&node, 1, 1).await,
        0,
        "the first line was not held"
    );

    let granted = client
        .reserve(reserve("cart-2", vec![line(1, 1, 3), line(2, 1, 1)]))
        .await
        .expect("granted")
        .into_inner();
    let retried = client
        .reserve(reserve("cart-2", vec![line(1, 1, 3), line(2, 1, 1)]))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(granted, retried);
    assert_eq!(reserved(&node, 1, 1).await, 3);
    let conflict = client
        .reserve(reserve("cart-2", vec![line(1, 1, 4)]))
        .await
        .expect_err("same id, other lines");
    assert_eq!(conflict.code(), Code::AlreadyExists);

    // Commit, then a pick event naming the reservation settles each line.
    let committed = client
        .commit(pb::CommitRequest {
            reservation_id: granted.reservation_id.clone(),
            pickup_window_seconds: 3_600,
        })
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(committed.state, pb::ReservationState::Committed as i32);
    let later = node.clock.now().plus_ms(1_000);
    node.clock.advance_to(later);
    let mut picks = vec![
        event("pick-1", "ecom", "pick", 1, 1, 3, later),
        event("pick-2", "ecom", "pick", 2, 1, 0, later),
    ];
    for pick in &mut picks {
        pick.reservation_id = Some(granted.reservation_id.clone());
    }
    node.ingest()
        .await
        .ingest_events(pb::IngestEventsRequest { events: picks })
        .await
        .expect("picks");
    let settled = client
        .get_reservation(pb::GetReservationRequest {
            reservation_id: granted.reservation_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(settled.state, pb::ReservationState::Fulfilled as i32);
    let states: Vec<i32> = settled.lines.iter().map(|l| l.state).collect();
    assert_eq!(
        states,
        vec![
            pb::LineState::Picked as i32,
            pb::LineState::ShortPicked as i32
        ]
    );
    assert_eq!(reserved(&node, 1, 1).await, 0);
    assert_eq!(reserved(&node, 2, 1).await, 0);

    // Release of a fulfilled reservation is refused; of a pending one, frees its units.
    let refused = client
        .release(pb::ReleaseRequest {
            reservation_id: granted.reservation_id,
            reason: pb::ReleaseReason::CustomerCancelled as i32,
        })
        .await
        .expect_err("fulfilled");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let pending = client
        .reserve(reserve("cart-3", vec![line(1, 1, 2)]))
        .await
        .expect("granted")
        .into_inner();
    let released = client
        .release(pb::ReleaseRequest {
            reservation_id: pending.reservation_id,
            reason: pb::ReleaseReason::ItemNotFound as i32,
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(
        (released.state, released.release_reason.as_str()),
        (pb::ReservationState::Released as i32, "ITEM_NOT_FOUND")
    );
    assert_eq!(reserved(&node, 1, 1).await, 0);
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_assigns_stores_to_arms_and_reports_outcomes_per_arm() {
    use stockgrid_actors::decision::DecisionMode;
    use stockgrid_actors::experiment::{ArmSpec, Experiment, ExperimentSpec};
    let arm = |name: &str, mode| ArmSpec {
        name: name.to_owned(),
        mode,
        weight: 1,
        thresholds: Default::default(),
    };
    let spec = ExperimentSpec {
        name: "rules-vs-ml".to_owned(),
        salt: "test".to_owned(),
        shadow: true,
        arms: vec![
            arm("rules", DecisionMode::Rules),
            arm("ml", DecisionMode::Ml),
        ],
    };
    let node = TestNode::start_configured({
        let spec = spec.clone();
        |config| config.decisions.experiment = Some(spec)
    })
    .await;
    let assignment = Experiment::new(spec);
    let mut client = node.reservations().await;
    // One reservation of 2 units per store; outcomes by store number: picked in full,
    // short-picked, released ITEM_NOT_FOUND, or cancelled (no outcome).
    let stores: Vec<u32> = (1..=24).collect();
    for &store in &stores {
        node.stock(5, store, 10).await;
    }
    let mut expected = [[0u64; 2]; 2]; // [arm][settled, broken]
    let mut kept_in = [0u64; 2];
    let mut picks = Vec::new();
    let later = node.clock.now().plus_ms(1_000);
    for &store in &stores {
        let granted = client
            .reserve(reserve(&format!("exp-{store}"), vec![line(5, store, 2)]))
            .await
            .expect("both arms promise 2 of 10 just counted")
            .into_inner();
        let arm = assignment.arm_of(store);
        match store % 4 {
            0 | 1 => {
                let units = if store % 4 == 0 { 2 } else { 1 };
                let mut pick = event(
                    &format!("pick-{store}"),
                    "ecom",
                    "pick",
                    5,
                    store,
                    units,
                    later,
                );
                pick.reservation_id = Some(granted.reservation_id.clone());
                picks.push(pick);
                expected[arm][0] += 1;
                if units < 2 {
                    expected[arm][1] += 1;
                } else {
                    kept_in[arm] += 1;
                }
            }
            outcome => {
                let not_found = outcome == 2;
                let reason = if not_found {
                    pb::ReleaseReason::ItemNotFound
                } else {
                    pb::ReleaseReason::CustomerCancelled
                };
                client
                    .release(pb::ReleaseRequest {
                        reservation_id: granted.reservation_id,
                        reason: reason as i32,
                    })
                    .await
                    .expect("release");
                if not_found {
                    expected[arm][0] += 1;
                    expected[arm][1] += 1;
                }
            }
        }
    }
    assert!(
        expected[0][0] > 0 && expected[1][0] > 0,
        "both arms get stores: {expected:?}"
    );
    node.clock.advance_to(later);
    node.ingest()
        .await
        .ingest_events(pb::IngestEventsRequest { events: picks })
        .await
        .expect("picks");

    let report = node
        .admin()
        .await
        .get_experiment_report(pb::GetExperimentReportRequest {})
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.name, "rules-vs-ml");
    assert_eq!(report.arms.len(), 2);
    for (index, arm) in report.arms.iter().enumerate() {
        assert_eq!(
            (arm.settled, arm.broken),
            (expected[index][0], expected[index][1]),
            "{arm:?}"
        );
        let rate = arm.broken_rate.as_ref().expect("rate");
        assert!((rate.value - arm.broken as f64 / arm.settled as f64).abs() < 1e-12);
        assert!(rate.low <= rate.value && rate.value <= rate.high);
        // Lines kept under the other arm teach this arm's recall (its shadow answers).
        assert_eq!(arm.recall_sample, kept_in[1 - index], "{arm:?}");
        assert_eq!(arm.promised, arm.decisions, "every hold was granted");
    }
    assert_eq!(report.arms[0].mode, pb::DecisionMode::Rules as i32);
    assert_eq!(report.arms[1].mode, pb::DecisionMode::Ml as i32);
}
