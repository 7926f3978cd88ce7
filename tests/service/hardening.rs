//! Hostile and unlucky clients over real gRPC (issue 13): every failure an adversarial
//! tester found against a release build, as a test. Promises stop at the ledger's spare
//! units in every mode; extreme quantities are rejected; undecodable and oversized bodies get
//! the client-side codes; error messages never quote input of any size; a response that
//! would pass its limit is refused before anything is applied; time zones, regions and other
//! inputs are validated; idle streams hold no admission slot.

use std::time::Duration;

use stockgrid_api::proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::{TestNode, assert_status, event};

fn lookup(sku: u64, location: u32, qty: i64, surface: pb::Surface) -> pb::GetAvailabilityRequest {
    pb::GetAvailabilityRequest {
        sku,
        location,
        qty,
        surface: surface as i32,
    }
}

fn reserve(
    request_id: &str,
    sku: u64,
    location: u32,
    qty: i64,
    surface: pb::Surface,
) -> pb::ReserveRequest {
    pb::ReserveRequest {
        request_id: request_id.to_owned(),
        lines: vec![pb::ReservationLine { sku, location, qty }],
        surface: surface as i32,
        ttl_seconds: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_lookups_stop_at_the_ledger_on_every_surface_in_ml_mode() {
    // The default node decides with the shipped model (ml), as the tester's did.
    let node = TestNode::start_configured(|_| {}).await;
    let mut reservations = node.reservations().await;
    let mut availability = node.availability().await;
    for (index, surface) in [
        pb::Surface::Delivery,
        pb::Surface::Pickup,
        pb::Surface::ItemPage,
    ]
    .into_iter()
    .enumerate()
    {
        let sku = 100 + index as u64;
        node.stock(sku, 1, 50).await;
        let mut granted = 0;
        for n in 0..60 {
            match reservations
                .reserve(reserve(&format!("{surface:?}-{n}"), sku, 1, 1, surface))
                .await
            {
                Ok(_) => granted += 1,
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    assert!(!status.message().contains("-1 spare"), "{status:?}");
                }
            }
        }
        assert!(
            granted <= 50,
            "{surface:?}: granted {granted} one-unit holds on 50 units"
        );
        // Hold whatever is left by rules, then ask in ml mode again: with everything on hand
        // reserved, nothing more is promised, whatever the model's probability.
        let mut admin = node.admin().await;
        let switch = |rules_only| pb::SetRulesFallbackRequest {
            surface: surface as i32,
            region: String::new(),
            rules_only,
        };
        admin
            .set_rules_fallback(switch(true))
            .await
            .expect("to rules");
        for n in granted..50 {
            reservations
                .reserve(reserve(
                    &format!("{surface:?}-rest-{n}"),
                    sku,
                    1,
                    1,
                    surface,
                ))
                .await
                .expect("rules hold the rest");
        }
        admin
            .set_rules_fallback(switch(false))
            .await
            .expect("back to ml");
        let state = node
            .inspect()
            .await
            .get_entity_state(pb::GetEntityStateRequest { sku, location: 1 })
            .await
            .expect("inspect")
            .into_inner();
        assert_eq!((state.on_hand, state.reserved), (50, 50));
        let answer = availability
            .get_availability(lookup(sku, 1, 1, surface))
            .await
            .expect("answered")
            .into_inner();
        assert!(!answer.available, "{surface:?}: {answer:?}");
        assert_eq!(answer.mode, pb::DecisionMode::Ml as i32);
        reservations
            .reserve(reserve(&format!("{surface:?}-over"), sku, 1, 1, surface))
            .await
            .expect_err("nothing spare");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_quantities_are_rejected_and_never_wrap_the_ledger() {
    let node = TestNode::start().await;
    let now = node.clock_now();
    let mut ingest = node.ingest().await;
    let results = ingest
        .ingest_events(pb::IngestEventsRequest {
            events: vec![
                event(
                    "a-min",
                    "store_inventory",
                    "adjustment",
                    5,
                    1,
                    i64::MIN,
                    now,
                ),
                event(
                    "a-max",
                    "store_inventory",
                    "adjustment",
                    5,
                    1,
                    i64::MAX,
                    now,
                ),
                event(
                    "a-min1",
                    "store_inventory",
                    "adjustment",
                    5,
                    1,
                    i64::MIN + 1,
                    now,
                ),
                event("s-11", "pos", "sale", 5, 1, 11, now),
            ],
        })
        .await
        .expect("answered per event")
        .into_inner()
        .results;
    for (index, result) in results.iter().take(3).enumerate() {
        assert_eq!(
            result.status,
            pb::EventStatus::Rejected as i32,
            "{result:?}"
        );
        assert_eq!(result.field, format!("events[{index}].qty"));
    }
    assert_eq!(results[3].status, pb::EventStatus::Accepted as i32);
    let answer = node
        .availability()
        .await
        .get_availability(lookup(5, 1, 1_000_000, pb::Surface::Pickup))
        .await
        .expect("answered")
        .into_inner();
    assert!(!answer.available, "{answer:?}");
    let refused = node
        .reservations()
        .await
        .reserve(reserve("huge", 5, 1, 2_000_000_000, pb::Surface::Pickup))
        .await
        .expect_err("not enough stock");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let huge = node
        .reservations()
        .await
        .reserve(reserve("too-huge", 5, 1, i64::MAX, pb::Surface::Pickup))
        .await
        .expect_err("out of range");
    assert_status(&huge, Code::InvalidArgument, "lines[0].qty");
}

/// A codec that sends and receives raw bytes, to put any body on the wire.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        let bytes = bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src));
        Ok(Some(bytes.to_vec()))
    }
}

async fn raw_call(node: &TestNode, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut client = tonic::client::Grpc::new(node.channel().await)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    client.ready().await.expect("ready");
    client
        .unary(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
        .expect_err("a bad body is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_bodies_are_invalid_and_oversized_ones_exhausted() {
    let node = TestNode::start().await;
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff; 7],
        vec![
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        vec![0x08],
        vec![0x12, 0x05, 0x01],
        b"not a protobuf at all".to_vec(),
    ];
    for path in [
        "/stockgrid.v1.Availability/GetAvailability",
        "/stockgrid.v1.Ingest/IngestEvents",
        "/stockgrid.v1.Reservations/Reserve",
        "/stockgrid.v1.Catalog/UpsertLocations",
        "/stockgrid.v1.Admin/SetRulesFallback",
    ] {
        for body in &bodies {
            let status = raw_call(&node, path, body.clone()).await;
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{path} {body:?}: {status:?}"
            );
        }
    }
    let oversized = raw_call(
        &node,
        "/stockgrid.v1.Ingest/IngestEvents",
        vec![0u8; (16 << 20) + 1],
    )
    .await;
    assert_eq!(oversized.code(), Code::ResourceExhausted, "{oversized:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_quote_a_short_prefix_of_the_input() {
    let node = TestNode::start().await;
    let now = node.clock_now();
    let long = "x".repeat(20_000);
    let results = node
        .ingest()
        .await
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event("ok", &long, "sale", 1, 1, 1, now)],
        })
        .await
        .expect("answered per event")
        .into_inner()
        .results;
    assert_eq!(results[0].field, "events[0].source");
    assert!(results[0].reason.len() < 300, "{}", results[0].reason.len());
    let status = node
        .reservations()
        .await
        .commit(pb::CommitRequest {
            reservation_id: long.clone(),
            pickup_window_seconds: 0,
        })
        .await
        .expect_err("not a reservation id");
    assert_status(&status, Code::InvalidArgument, "reservation_id");
    assert!(status.message().len() < 300, "{}", status.message().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_its_limit_is_refused_before_anything_is_applied() {
    let node = TestNode::start_configured(|config| {
        config.decisions.mode = stockgrid_actors::decision::DecisionMode::Rules;
        config.limits.max_message_bytes = 4096;
    })
    .await;
    let now = node.clock_now();
    // One good event and many rejections whose reasons fill more than 4 KiB.
    let mut events = vec![event("good", "pos", "sale", 9, 9, 1, now)];
    for n in 0..60 {
        events.push(event(&format!("bad-{n}"), "fax", "sale", 9, 9, 1, now));
    }
    let status = node
        .ingest()
        .await
        .ingest_events(pb::IngestEventsRequest { events })
        .await
        .expect_err("response too large");
    assert_status(&status, Code::ResourceExhausted, "nothing was applied");
    let never = node
        .inspect()
        .await
        .get_entity_state(pb::GetEntityStateRequest {
            sku: 9,
            location: 9,
        })
        .await
        .expect_err("never seen");
    assert_eq!(never.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_zones_and_admin_inputs_are_validated_and_bounded() {
    let node = TestNode::start().await;
    let mut catalog = node.catalog().await;
    let refused = catalog
        .upsert_locations(pb::UpsertLocationsRequest {
            locations: vec![pb::Location {
                location: 1,
                kind: "store".to_owned(),
                timezone: "Mars/Olympus".to_owned(),
                close_hour: 24,
                ..Default::default()
            }],
        })
        .await
        .expect_err("not a time zone");
    assert_status(&refused, Code::InvalidArgument, "locations[0].timezone");
    catalog
        .upsert_locations(pb::UpsertLocationsRequest {
            locations: vec![pb::Location {
                location: 1,
                kind: "store".to_owned(),
                timezone: "America/Chicago".to_owned(),
                close_hour: 24,
                ..Default::default()
            }],
        })
        .await
        .expect("a real time zone");

    let mut admin = node.admin().await;
    let limit = stockgrid_actors::policy::MAX_RULES_REGIONS;
    for n in 0..limit {
        admin
            .set_rules_fallback(pb::SetRulesFallbackRequest {
                surface: pb::Surface::Unspecified as i32,
                region: format!("r{n}"),
                rules_only: true,
            })
            .await
            .expect("within the limit");
    }
    let refused = admin
        .set_rules_fallback(pb::SetRulesFallbackRequest {
            surface: pb::Surface::Unspecified as i32,
            region: "one-too-many".to_owned(),
            rules_only: true,
        })
        .await
        .expect_err("past the limit");
    assert_status(&refused, Code::InvalidArgument, "region");
    let long = admin
        .set_rules_fallback(pb::SetRulesFallbackRequest {
            surface: pb::Surface::Unspecified as i32,
            region: "r".repeat(129),
            rules_only: false,
        })
        .await
        .expect_err("too long");
    assert_status(&long, Code::InvalidArgument, "region");
    let policy = admin
        .get_decision_policy(pb::GetDecisionPolicyRequest {})
        .await
        .expect("policy")
        .into_inner();
    assert_eq!(policy.rules_regions.len(), limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_hold_no_admission_slot_and_end_after_the_idle_timeout() {
    let node = TestNode::start_configured(|config| {
        config.decisions.mode = stockgrid_actors::decision::DecisionMode::Rules;
        config.limits.max_in_flight = 16;
        config.limits.stream_idle_timeout_ms = 3_000;
    })
    .await;
    node.stock(1, 1, 10).await;
    // 64 streams that send nothing, over one connection, held open.
    let channel = node.channel().await;
    let mut idle = Vec::new();
    for _ in 0..64 {
        let mut client = pb::ingest_client::IngestClient::new(channel.clone());
        let silent = tokio_stream::pending::<pb::IngestEventsRequest>();
        idle.push(
            client
                .stream_events(silent)
                .await
                .expect("stream opened")
                .into_inner(),
        );
    }
    let answer = node
        .availability()
        .await
        .get_availability(lookup(1, 1, 1, pb::Surface::Pickup))
        .await
        .expect("a lookup is admitted");
    assert!(answer.into_inner().available);
    let now = node.clock_now();
    node.ingest()
        .await
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event("s1", "pos", "sale", 1, 1, 1, now)],
        })
        .await
        .expect("an ingest is admitted");
    node.reservations()
        .await
        .reserve(reserve("r1", 1, 1, 1, pb::Surface::Pickup))
        .await
        .expect("a reserve is admitted");
    // Past the idle timeout each silent stream is ended by the node.
    let ended = tokio::time::timeout(Duration::from_secs(20), idle[0].next())
        .await
        .expect("ended within the timeout");
    let status = ended.expect("an item").expect_err("ended with a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}
