//! Lookups, ingest, catalog, inspect and health over real gRPC, and the status codes of bad
//! input.

use std::sync::Arc;

use stockgrid_actors::time::{Clock, HOUR_MS, SimulatedClock};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_api::node::{Node, NodeConfig};
use stockgrid_api::proto::v1 as pb;
use stockgrid_storage::{EmbeddedStore, Store};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{T0, TestNode, assert_status, event};

fn lookup(sku: u64, location: u32, qty: i64, surface: pb::Surface) -> pb::GetAvailabilityRequest {
    pb::GetAvailabilityRequest {
        sku,
        location,
        qty,
        surface: surface as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_and_batch_lookups() {
    let node = TestNode::start().await;
    node.stock(1, 10, 5).await;
    let mut client = node.availability().await;

    let answer = client
        .get_availability(lookup(1, 10, 5, pb::Surface::Pickup))
        .await
        .expect("lookup")
        .into_inner();
    assert!(answer.available);
    assert_eq!(answer.reason, "LEDGER_SUFFICIENT");
    assert_eq!(answer.mode, pb::DecisionMode::Rules as i32);
    assert_eq!((answer.probability, answer.expected_on_hand), (1.0, 5.0));
    assert_eq!(answer.state_version, 1);
    assert!(!answer.decision_id.is_empty());
    let too_many = client
        .get_availability(lookup(1, 10, 6, pb::Surface::Pickup))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(
        (too_many.available, too_many.reason.as_str()),
        (false, "LEDGER_INSUFFICIENT")
    );

    let batch = client
        .batch_get_availability(pb::BatchGetAvailabilityRequest {
            items: vec![
                lookup(1, 10, 2, pb::Surface::ItemPage),
                lookup(1, 10, 0, pb::Surface::ItemPage),
                lookup(2, 10, 1, pb::Surface::ItemPage),
                lookup(1, 10, 1, pb::Surface::Unspecified),
            ],
        })
        .await
        .expect("batch")
        .into_inner();
    use pb::batch_item_result::Result as Item;
    let results: Vec<Item> = batch
        .results
        .into_iter()
        .map(|r| r.result.expect("a result per item"))
        .collect();
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[0], Item::Answer(a) if a.available));
    assert!(
        matches!(&results[1], Item::Error(e) if e.code == Code::InvalidArgument as i32 && e.field == "items[1].qty")
    );
    assert!(matches!(&results[2], Item::Answer(a) if !a.available && a.reason == "NO_RECORD"));
    assert!(matches!(&results[3], Item::Error(e) if e.field == "items[3].surface"));

    let oversized = client
        .batch_get_availability(pb::BatchGetAvailabilityRequest {
            items: vec![lookup(1, 10, 1, pb::Surface::ItemPage); 1_001],
        })
        .await
        .expect_err("over the limit");
    assert_status(&oversized, Code::ResourceExhausted, "items");
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reports_each_event_and_applies_the_good_ones() {
    let node = TestNode::start().await;
    let mut ingest = node.ingest().await;
    let late = T0.plus_ms(-25 * HOUR_MS);
    let mut no_id = event("", "pos", "sale", 1, 10, 1, T0);
    no_id.event_id.clear();
    let batch = vec![
        event(
            "c1",
            "store_inventory",
            "count",
            1,
            10,
            10,
            T0.plus_ms(-60_000),
        ),
        event("s1", "pos", "sale", 1, 10, 2, T0),
        event("s1", "pos", "sale", 1, 10, 2, T0),
        event("s2", "pos", "sale", 1, 10, -1, T0),
        event("s3", "pos", "sale", 1, 10, 1, late),
        no_id,
        event("s4", "fax", "sale", 1, 10, 1, T0),
        event("s1", "pos", "sale", 1, 10, 3, T0),
    ];
    let results = ingest
        .ingest_events(pb::IngestEventsRequest { events: batch })
        .await
        .expect("ingest")
        .into_inner()
        .results;
    let statuses: Vec<(i32, &str)> = results
        .iter()
        .map(|r| (r.status, r.field.as_str()))
        .collect();
    use pb::EventStatus::*;
    assert_eq!(
        statuses,
        vec![
            (Accepted as i32, ""),
            (Accepted as i32, ""),
            (Duplicate as i32, ""),
            (Rejected as i32, "events[3].qty"),
            (Quarantined as i32, ""),
            (Rejected as i32, "events[5].event_id"),
            (Rejected as i32, "events[6].source"),
            (Quarantined as i32, ""),
        ]
    );
    assert_eq!(results[4].reason, "TOO_LATE");
    assert_eq!(results[7].reason, "CONFLICTING_DUPLICATE");

    let state = node
        .inspect()
        .await
        .get_entity_state(pb::GetEntityStateRequest {
            sku: 1,
            location: 10,
        })
        .await
        .expect("inspect")
        .into_inner();
    assert_eq!(state.on_hand, 8, "the count and one sale, nothing else");
    assert_eq!(state.quarantined.len(), 2);
    assert_eq!(state.anchor_kind, "count");
    assert_eq!(state.read_view.expect("view").on_hand, 8);

    // A stream of batches is acknowledged batch by batch, in order.
    let batches: Vec<pb::IngestEventsRequest> = (0..3)
        .map(|b| pb::IngestEventsRequest {
            events: (0..50)
                .map(|i| event(&format!("st-{b}-{i}"), "pos", "sale", 2, 10, 1, T0))
                .collect(),
        })
        .collect();
    let mut acks = ingest
        .stream_events(tokio_stream::iter(batches))
        .await
        .expect("stream")
        .into_inner();
    let mut acked = 0;
    while let Some(ack) = acks.message().await.expect("ack") {
        assert_eq!(ack.results.len(), 50);
        assert!(ack.results.iter().all(|r| r.status == Accepted as i32));
        acked += 1;
    }
    assert_eq!(acked, 3);

    let oversized = ingest
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event("x", "pos", "sale", 1, 10, 1, T0); 10_001],
        })
        .await
        .expect_err("over the limit");
    assert_status(&oversized, Code::ResourceExhausted, "events");
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_code_naming_the_field() {
    let node = TestNode::start().await;
    let mut availability = node.availability().await;
    let status = availability
        .get_availability(lookup(1, 10, 0, pb::Surface::Pickup))
        .await
        .expect_err("qty 0");
    assert_status(&status, Code::InvalidArgument, "qty: ");
    let status = availability
        .get_availability(lookup(1, 10, 1, pb::Surface::Unspecified))
        .await
        .expect_err("no surface");
    assert_status(&status, Code::InvalidArgument, "surface: ");

    let mut reservations = node.reservations().await;
    let status = reservations
        .get_reservation(pb::GetReservationRequest {
            reservation_id: "nope".to_owned(),
        })
        .await
        .expect_err("malformed id");
    assert_status(&status, Code::InvalidArgument, "reservation_id: ");
    let unknown = stockgrid_actors::reservation::reservation_id_for("never made");
    let status = reservations
        .get_reservation(pb::GetReservationRequest {
            reservation_id: unknown,
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = reservations
        .reserve(pb::ReserveRequest {
            request_id: "r".to_owned(),
            lines: vec![pb::ReservationLine {
                sku: 1,
                location: 10,
                qty: -2,
            }],
            surface: pb::Surface::Pickup as i32,
            ttl_seconds: 0,
        })
        .await
        .expect_err("negative qty");
    assert_status(&status, Code::InvalidArgument, "lines[0].qty: ");

    let mut catalog = node.catalog().await;
    let status = catalog
        .upsert_locations(pb::UpsertLocationsRequest {
            locations: vec![
                pb::Location {
                    location: 1,
                    kind: "store".to_owned(),
                    ..Default::default()
                },
                pb::Location {
                    location: 2,
                    kind: "kiosk".to_owned(),
                    ..Default::default()
                },
            ],
        })
        .await
        .expect_err("bad kind");
    assert_status(&status, Code::InvalidArgument, "locations[1].kind: ");
    let listed = catalog
        .list_locations(pb::ListLocationsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.locations.is_empty(),
        "nothing of the bad call applied"
    );
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_locations_persist_and_page() {
    let node = TestNode::start().await;
    let mut catalog = node.catalog().await;
    let locations: Vec<pb::Location> = (1..=5)
        .map(|n| pb::Location {
            location: n,
            kind: "fc".to_owned(),
            region: "us-south".to_owned(),
            timezone: "America/Chicago".to_owned(),
            open_hour: 7,
            close_hour: 22,
            sources: vec!["wms".to_owned(), "receiving".to_owned()],
        })
        .collect();
    let upserted = catalog
        .upsert_locations(pb::UpsertLocationsRequest {
            locations: locations.clone(),
        })
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(upserted.upserted, 5);
    let first = catalog
        .list_locations(pb::ListLocationsRequest {
            page_size: 3,
            after: None,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(first.locations, locations[..3].to_vec());
    let rest = catalog
        .list_locations(pb::ListLocationsRequest {
            page_size: 3,
            after: first.next_after,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(rest.locations, locations[3..].to_vec());
    assert_eq!(rest.next_after, None);
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_during_recovery_and_shutdown() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let data_dir = dir.path().to_path_buf();
    let mut node = Node::start_with(&config, async move {
        // Recovery waits for the test: the node must already answer health meanwhile.
        let _ = gate.await;
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&data_dir).expect("open store"));
        let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::starting_at(T0));
        Ok(Engine::start(store, clock, EngineConfig::default()).await?)
    })
    .await
    .expect("start");
    let url = format!("http://{}", node.address());
    let mut health = HealthClient::new(crate::connect(&url).await);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    let status = health.check(check("")).await.expect("health").into_inner();
    assert_eq!(status.status, ServingStatus::NotServing as i32);
    let mut availability = pb::availability_client::AvailabilityClient::connect(url.clone())
        .await
        .expect("connect");
    let refused = availability
        .get_availability(lookup(1, 1, 1, pb::Surface::Pickup))
        .await
        .expect_err("recovering");
    assert_status(&refused, Code::Unavailable, "recovering");

    release.send(()).expect("release recovery");
    node.recovered().await.expect("recovered");
    for service in ["", "stockgrid.v1.Availability", "stockgrid.v1.Reservations"] {
        let status = health
            .check(check(service))
            .await
            .expect("health")
            .into_inner();
        assert_eq!(status.status, ServingStatus::Serving as i32, "{service}");
    }
    let mut watch = health.watch(check("")).await.expect("watch").into_inner();
    let first = watch.message().await.expect("watch").expect("status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(node.shutdown());
    let next = watch.message().await.expect("watch").expect("status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    stopping.await.expect("join").expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_store_refuses_writes_promises_nothing_and_is_not_serving() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..NodeConfig::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
    let engine_store: Arc<dyn Store> = store.clone();
    let mut node = Node::start_with(&config, async move {
        let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::starting_at(T0));
        Ok(Engine::start(engine_store, clock, EngineConfig::default()).await?)
    })
    .await
    .expect("start");
    node.recovered().await.expect("recovered");
    let url = format!("http://{}", node.address());
    store.inject_write_failures(1);
    let mut ingest = pb::ingest_client::IngestClient::connect(url.clone())
        .await
        .expect("connect");
    let first = ingest
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event("a", "pos", "sale", 1, 1, 1, T0)],
        })
        .await
        .expect("answered per event")
        .into_inner();
    assert_eq!(first.results[0].status, pb::EventStatus::Failed as i32);
    let refused = ingest
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event("b", "pos", "sale", 1, 1, 1, T0)],
        })
        .await
        .expect_err("poisoned");
    assert_status(&refused, Code::Unavailable, "poisoned");
    // Lookups answer "not available" with the reason (DESIGN.md property 6), not an error.
    let mut availability = pb::availability_client::AvailabilityClient::connect(url.clone())
        .await
        .expect("connect");
    for surface in [pb::Surface::Pickup, pb::Surface::ItemPage] {
        let answer = availability
            .get_availability(lookup(1, 1, 1, surface))
            .await
            .expect("answered while poisoned")
            .into_inner();
        assert!(!answer.available, "{answer:?}");
        assert_eq!(answer.reason, "STORE_UNAVAILABLE");
    }
    // Health follows the store within its one-second check.
    let mut health = HealthClient::new(crate::connect(&url).await);
    let mut status = ServingStatus::Serving as i32;
    for _ in 0..50 {
        status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::NotServing as i32);
    let _ = node.shutdown().await;
}

/// A store whose commits fail as a database out of reach does (transient, not poisoned),
/// while `unreachable` is set.
#[derive(Debug)]
struct UnreachableAtWill {
    inner: stockgrid_storage::MemoryStore,
    unreachable: std::sync::atomic::AtomicBool,
}

impl Store for UnreachableAtWill {
    fn backend_name(&self) -> &'static str {
        "unreachable-at-will"
    }
    fn limits(&self) -> stockgrid_storage::StoreLimits {
        self.inner.limits()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, stockgrid_storage::StoreError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<stockgrid_storage::KeyValue>, stockgrid_storage::StoreError> {
        self.inner.scan(start, end, limit)
    }
    fn commit(
        &self,
        batch: stockgrid_storage::WriteBatch,
    ) -> Result<(), stockgrid_storage::StoreError> {
        if self.unreachable.load(std::sync::atomic::Ordering::Acquire) {
            return Err(stockgrid_storage::StoreError::Unavailable {
                context: "commit batch",
                message: "no answer".to_owned(),
            });
        }
        self.inner.commit(batch)
    }
    fn check_writable(&self) -> Result<(), stockgrid_storage::StoreError> {
        self.inner.check_writable()
    }
    fn disk_bytes(&self) -> Result<u64, stockgrid_storage::StoreError> {
        Ok(0)
    }
}

/// An ingest whose events all fail because the store cannot be reached is answered
/// UNAVAILABLE as a whole (what gRPC retry policies retry); once the store answers, the
/// retried events apply, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_the_store_cannot_take_is_unavailable_as_a_whole() {
    let store = Arc::new(UnreachableAtWill {
        inner: stockgrid_storage::MemoryStore::new(),
        unreachable: std::sync::atomic::AtomicBool::new(false),
    });
    let engine_store: Arc<dyn Store> = store.clone();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..NodeConfig::default()
    };
    let mut node = Node::start_with(&config, async move {
        let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::starting_at(T0));
        Ok(Engine::start(engine_store, clock, EngineConfig::default()).await?)
    })
    .await
    .expect("start");
    node.recovered().await.expect("recovered");
    let url = format!("http://{}", node.address());
    let mut ingest = pb::ingest_client::IngestClient::connect(url)
        .await
        .expect("connect");
    let events = vec![
        event("a", "pos", "sale", 1, 1, 1, T0),
        event("b", "pos", "sale", 2, 1, 1, T0),
    ];
    store
        .unreachable
        .store(true, std::sync::atomic::Ordering::Release);
    let refused = ingest
        .ingest_events(pb::IngestEventsRequest {
            events: events.clone(),
        })
        .await
        .expect_err("nothing applied");
    assert_status(&refused, Code::Unavailable, "retry");
    store
        .unreachable
        .store(false, std::sync::atomic::Ordering::Release);
    let applied = ingest
        .ingest_events(pb::IngestEventsRequest { events })
        .await
        .expect("applied once the store answers")
        .into_inner();
    assert!(
        applied
            .results
            .iter()
            .all(|r| r.status == pb::EventStatus::Accepted as i32),
        "{applied:?}"
    );
    let _ = node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_fallback_switches_over_grpc_on_the_next_request() {
    // The default node decides with the shipped model.
    let node = TestNode::start_configured(|_| {}).await;
    let mut catalog = node.catalog().await;
    catalog
        .upsert_locations(pb::UpsertLocationsRequest {
            locations: vec![pb::Location {
                location: 10,
                kind: "store".to_owned(),
                region: "us-south".to_owned(),
                close_hour: 24,
                ..Default::default()
            }],
        })
        .await
        .expect("upsert location");
    node.stock(1, 10, 20).await;
    let mut client = node.availability().await;
    let mut admin = node.admin().await;
    let ask = |surface| lookup(1, 10, 2, surface);
    let mode_of = |answer: &pb::AvailabilityAnswer| pb::DecisionMode::try_from(answer.mode);

    let policy = admin
        .get_decision_policy(pb::GetDecisionPolicyRequest {})
        .await
        .expect("policy")
        .into_inner();
    assert_eq!(policy.default_mode, pb::DecisionMode::Ml as i32);
    assert!(policy.model_version.starts_with("sg1-"), "{policy:?}");
    let before = client
        .get_availability(ask(pb::Surface::Pickup))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(mode_of(&before), Ok(pb::DecisionMode::Ml), "{before:?}");

    // Pickup to rules: the very next pickup request is answered by rules, item page is not.
    let policy = admin
        .set_rules_fallback(pb::SetRulesFallbackRequest {
            surface: pb::Surface::Pickup as i32,
            region: String::new(),
            rules_only: true,
        })
        .await
        .expect("switch")
        .into_inner();
    assert_eq!(policy.rules_surfaces, vec![pb::Surface::Pickup as i32]);
    let pickup = client
        .get_availability(ask(pb::Surface::Pickup))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(mode_of(&pickup), Ok(pb::DecisionMode::Rules));
    assert_eq!(pickup.reason, "LEDGER_SUFFICIENT");
    let item_page = client
        .get_availability(ask(pb::Surface::ItemPage))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(mode_of(&item_page), Ok(pb::DecisionMode::Ml));

    // A region switch covers every surface of its locations; switching back restores ml.
    admin
        .set_rules_fallback(pb::SetRulesFallbackRequest {
            surface: pb::Surface::Unspecified as i32,
            region: "us-south".to_owned(),
            rules_only: true,
        })
        .await
        .expect("switch region");
    let item_page = client
        .get_availability(ask(pb::Surface::ItemPage))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(mode_of(&item_page), Ok(pb::DecisionMode::Rules));
    for (surface, region) in [
        (pb::Surface::Pickup, ""),
        (pb::Surface::Unspecified, "us-south"),
    ] {
        admin
            .set_rules_fallback(pb::SetRulesFallbackRequest {
                surface: surface as i32,
                region: region.to_owned(),
                rules_only: false,
            })
            .await
            .expect("switch back");
    }
    let pickup = client
        .get_availability(ask(pb::Surface::Pickup))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(mode_of(&pickup), Ok(pb::DecisionMode::Ml));

    // Naming neither a surface nor a region is an error that says so.
    let status = admin
        .set_rules_fallback(pb::SetRulesFallbackRequest::default())
        .await
        .expect_err("nothing to switch");
    assert_status(&status, Code::InvalidArgument, "surface");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promises_are_recorded_durably_and_readable_by_decision_id() {
    let node =
        TestNode::start_configured(|config| config.decisions.audit_item_page_rate = 0.0).await;
    node.stock(3, 30, 12).await;
    let mut client = node.availability().await;
    let mut admin = node.admin().await;
    let answer = client
        .get_availability(lookup(3, 30, 2, pb::Surface::Pickup))
        .await
        .expect("lookup")
        .into_inner();
    let record = admin
        .get_decision_record(pb::GetDecisionRecordRequest {
            decision_id: answer.decision_id.clone(),
        })
        .await
        .expect("the pickup decision is recorded")
        .into_inner();
    assert_eq!((record.sku, record.location, record.qty), (3, 30, 2));
    assert_eq!(
        (
            record.available,
            record.probability,
            record.mode,
            record.reason.as_str()
        ),
        (
            answer.available,
            answer.probability,
            answer.mode,
            answer.reason.as_str()
        )
    );
    assert_eq!(
        record.features.len(),
        stockgrid_inference::features::FEATURE_COUNT,
        "{record:?}"
    );
    assert!(record.model_version.starts_with("sg1-"));
    assert_eq!(record.state_version, answer.state_version);
    assert_eq!(record.inputs_digest.len(), 16);

    // Item-page decisions are counted; at a sample rate of 0 none is recorded.
    let page = client
        .get_availability(lookup(3, 30, 1, pb::Surface::ItemPage))
        .await
        .expect("lookup")
        .into_inner();
    let status = admin
        .get_decision_record(pb::GetDecisionRecordRequest {
            decision_id: page.decision_id,
        })
        .await
        .expect_err("not sampled");
    assert_status(&status, Code::NotFound, "decision_id");
    let policy = admin
        .get_decision_policy(pb::GetDecisionPolicyRequest {})
        .await
        .expect("policy")
        .into_inner();
    assert_eq!(
        (policy.item_page_decisions, policy.item_page_audited),
        (1, 0)
    );

    // A granted reservation line is a promise too, recorded with the hold.
    let reservation = node
        .reservations()
        .await
        .reserve(pb::ReserveRequest {
            request_id: "audited-cart".to_owned(),
            lines: vec![pb::ReservationLine {
                sku: 3,
                location: 30,
                qty: 2,
            }],
            surface: pb::Surface::Pickup as i32,
            ttl_seconds: 0,
        })
        .await
        .expect("reserve")
        .into_inner();
    let line = admin
        .get_decision_record(pb::GetDecisionRecordRequest {
            decision_id: format!("{}/3-30", reservation.reservation_id),
        })
        .await
        .expect("the reservation line is recorded")
        .into_inner();
    assert!(line.available);
    assert_eq!(line.mode, pb::DecisionMode::Ml as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_decisions_replay_bit_for_bit_from_the_nodes_log_over_grpc() {
    let node = TestNode::start_configured(|_| {}).await; // Ml, the default.
    node.stock(4, 40, 9).await;
    let mut client = node.availability().await;
    let mut admin = node.admin().await;
    let pickup = client
        .get_availability(lookup(4, 40, 2, pb::Surface::Pickup))
        .await
        .expect("lookup")
        .into_inner();
    let reservation = node
        .reservations()
        .await
        .reserve(pb::ReserveRequest {
            request_id: "replayed-cart".to_owned(),
            lines: vec![pb::ReservationLine {
                sku: 4,
                location: 40,
                qty: 3,
            }],
            surface: pb::Surface::Pickup as i32,
            ttl_seconds: 0,
        })
        .await
        .expect("reserve")
        .into_inner();
    // A decision made while units are held reads the hold from the log too.
    let while_held = client
        .get_availability(lookup(4, 40, 1, pb::Surface::Delivery))
        .await
        .expect("lookup")
        .into_inner();
    // More happens after the decisions; each is rebuilt at its own moment.
    node.clock.advance_to(T0.plus_ms(60_000));
    node.stock(4, 40, 2).await;
    for decision_id in [
        pickup.decision_id,
        format!("{}/4-40", reservation.reservation_id),
        while_held.decision_id,
    ] {
        let replay = admin
            .replay_decision(pb::ReplayDecisionRequest {
                decision_id: decision_id.clone(),
            })
            .await
            .expect("replay")
            .into_inner();
        assert!(replay.identical, "{decision_id}: {:?}", replay.differences);
        assert_eq!(replay.decision_id, decision_id);
        assert_eq!(replay.rebuilt_from, "log_start");
        assert!(replay.log_position >= 1, "{replay:?}");
    }
    let status = admin
        .replay_decision(pb::ReplayDecisionRequest {
            decision_id: "no-such-decision".to_owned(),
        })
        .await
        .expect_err("unknown");
    assert_status(&status, Code::NotFound, "decision_id");
    let status = admin
        .replay_decision(pb::ReplayDecisionRequest::default())
        .await
        .expect_err("empty");
    assert_status(&status, Code::InvalidArgument, "decision_id");
}
