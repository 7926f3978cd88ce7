//! The service on PostgreSQL, each test with a private server: lookups and ingest with
//! duplicates across a restart, reservations racing for the last units, SIGKILL and restart
//! of a `serve` process, and the database stopped or hung (SIGSTOP) under load: writes answer
//! UNAVAILABLE within the store timeout, lookups of pairs the node cannot read answer "not
//! available", nothing acknowledged is lost or applied twice, and the node resumes by itself.

use std::time::{Duration, Instant};

use stockgrid_api::proto::v1 as pb;
use stockgrid_storage::postgres::testing::PrivateServer;
use tonic::Code;

use crate::processes::{ProcessStore, sigkill_and_restart};
use crate::reservations::race_for_the_last_units;
use crate::{T0, TestNode, event};

/// The database every test node uses on its private server.
pub const DATABASE: &str = "grid";

pub fn server() -> PrivateServer {
    let server = PrivateServer::start();
    server.create_database(DATABASE);
    server
}

fn lookup(sku: u64, location: u32, qty: i64) -> pb::GetAvailabilityRequest {
    pb::GetAvailabilityRequest {
        sku,
        location,
        qty,
        surface: pb::Surface::Pickup as i32,
    }
}

async fn entity(node: &TestNode, sku: u64, location: u32) -> pb::EntityState {
    node.inspect()
        .await
        .get_entity_state(pb::GetEntityStateRequest { sku, location })
        .await
        .expect("inspect")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_ingest_with_duplicates_on_postgres() {
    let server = server();
    let node = TestNode::start_on_postgres(&server, |_| {}).await;
    let mut ingest = node.ingest().await;
    let mut events = vec![event(
        "c1",
        "store_inventory",
        "count",
        5,
        2,
        40,
        T0.plus_ms(-60_000),
    )];
    events.extend((0..10).map(|i| event(&format!("s{i}"), "pos", "sale", 5, 2, 1, T0)));
    events.push(event("s0", "pos", "sale", 5, 2, 1, T0));
    let results = ingest
        .ingest_events(pb::IngestEventsRequest { events })
        .await
        .expect("ingest")
        .into_inner()
        .results;
    let statuses: Vec<i32> = results.iter().map(|r| r.status).collect();
    let mut expected = vec![pb::EventStatus::Accepted as i32; 11];
    expected.push(pb::EventStatus::Duplicate as i32);
    assert_eq!(statuses, expected);
    // A retry of the whole request later: every event a duplicate.
    let again = ingest
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event("s3", "pos", "sale", 5, 2, 1, T0)],
        })
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!(again.results[0].status, pb::EventStatus::Duplicate as i32);

    let mut availability = node.availability().await;
    let answer = availability
        .get_availability(lookup(5, 2, 30))
        .await
        .expect("lookup")
        .into_inner();
    assert!(answer.available, "{answer:?}");
    let batch = availability
        .batch_get_availability(pb::BatchGetAvailabilityRequest {
            items: vec![lookup(5, 2, 31), lookup(9, 9, 1)],
        })
        .await
        .expect("batch")
        .into_inner();
    use pb::batch_item_result::Result as Item;
    let reasons: Vec<String> = batch
        .results
        .into_iter()
        .map(|r| match r.result.expect("a result") {
            Item::Answer(answer) => answer.reason,
            Item::Error(error) => panic!("{error:?}"),
        })
        .collect();
    assert_eq!(reasons, ["LEDGER_INSUFFICIENT", "NO_RECORD"]);
    node.node.shutdown().await.expect("shutdown");

    // A new node on the same database reads the pair back from the store.
    let node = TestNode::start_on_postgres(&server, |_| {}).await;
    let state = entity(&node, 5, 2).await;
    assert_eq!((state.on_hand, state.applied_entries), (30, 11));
    let answer = node
        .availability()
        .await
        .get_availability(lookup(5, 2, 30))
        .await
        .expect("lookup")
        .into_inner();
    assert!(answer.available, "{answer:?}");
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_racing_for_the_last_units_on_postgres() {
    let server = server();
    race_for_the_last_units(TestNode::start_on_postgres(&server, |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_on_postgres() {
    let server = server();
    sigkill_and_restart(&ProcessStore {
        location: server.url(DATABASE),
        environment: vec![("PGPASSWORD".to_owned(), server.password().to_owned())],
    })
    .await;
}

/// How the database goes away in an outage drill.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// Fast shutdown, then a start on the same port and data.
    Stopped,
    /// SIGSTOP of every server process, then SIGCONT.
    Hung,
}

/// One ingest call of the load: its event id, how it was answered and how long it took.
struct Call {
    event_id: String,
    answer: Result<i32, Code>,
    took: Duration,
}

async fn ingest_one(node_url: String, event_id: String) -> Call {
    let started = Instant::now();
    let mut client = pb::ingest_client::IngestClient::new(crate::connect(&node_url).await);
    let answer = client
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event(&event_id, "pos", "sale", 7, 1, 1, T0)],
        })
        .await
        .map(|response| response.into_inner().results[0].status)
        .map_err(|status| status.code());
    Call {
        event_id,
        answer,
        took: started.elapsed(),
    }
}

/// Ingest runs without pause while the database goes away for three seconds and returns.
async fn outage_under_load(outage: Outage) {
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let mut server = server();
    let node = TestNode::start_on_postgres(&server, |_| {}).await;
    // Counted a minute before the sales, so that each sale moves the count.
    let counted = node
        .ingest()
        .await
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event(
                "count",
                "store_inventory",
                "count",
                7,
                1,
                100_000,
                T0.plus_ms(-60_000),
            )],
        })
        .await
        .expect("ingest the count")
        .into_inner();
    assert_eq!(counted.results[0].status, pb::EventStatus::Accepted as i32);
    let url = node.url.clone();
    let (stop_load, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn(async move {
        let mut calls = Vec::new();
        for i in 0.. {
            if stopped.try_recv().is_ok() {
                break;
            }
            calls.push(ingest_one(url.clone(), format!("load-{i}")).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        calls
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    match outage {
        Outage::Stopped => server.stop(),
        Outage::Hung => server.pause(),
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // While it is away: a write is refused as UNAVAILABLE within the timeout, and a pair the
    // node holds no memory of answers "not available".
    let during = ingest_one(node.url.clone(), "during".to_owned()).await;
    assert_eq!(during.answer, Err(Code::Unavailable));
    assert!(during.took < TIMEOUT, "took {:?}", during.took);
    let unread = node
        .availability()
        .await
        .get_availability(lookup(8, 1, 1))
        .await
        .expect("a lookup is answered")
        .into_inner();
    assert_eq!(
        (unread.available, unread.reason.as_str()),
        (false, "STORE_UNAVAILABLE")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    match outage {
        Outage::Stopped => server.restart(),
        Outage::Hung => server.resume(),
    }
    // The node resumes by itself: writes are accepted again within a few seconds.
    let back = Instant::now();
    loop {
        let call = ingest_one(node.url.clone(), "after".to_owned()).await;
        if call.answer.is_ok() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "no write accepted 15 s after the database returned: {:?}",
            call.answer
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_load.send(()).expect("stop the load");
    let calls = load.await.expect("load task");

    // Refused: the whole call UNAVAILABLE (a store that could not take any of its events),
    // or the event FAILED, safe to retry (a failure reported by a shard rather than by the
    // store, such as an identity look-up that could not reach it).
    let refused: Vec<&Call> = calls
        .iter()
        .filter(|c| c.answer != Ok(pb::EventStatus::Accepted as i32))
        .collect();
    assert!(!refused.is_empty(), "the outage was felt");
    eprintln!(
        "{outage:?}: {} calls, {} refused, the slowest refusal took {:?}",
        calls.len(),
        refused.len(),
        refused.iter().map(|c| c.took).max().unwrap_or_default()
    );
    for call in &refused {
        assert!(
            matches!(call.answer, Err(Code::Unavailable))
                || call.answer == Ok(pb::EventStatus::Failed as i32),
            "{}: {:?}",
            call.event_id,
            call.answer
        );
        // A write caught in flight when the database vanished waits out the store timeout
        // (the first call to time out marks the database unreachable, and the calls after
        // it are refused at once); 500 ms of slack for the gRPC round trip on a busy machine.
        assert!(
            call.took < TIMEOUT + Duration::from_millis(500),
            "{} took {:?}",
            call.event_id,
            call.took
        );
    }
    let accepted = calls
        .iter()
        .filter(|c| c.answer == Ok(pb::EventStatus::Accepted as i32))
        .count();
    assert!(accepted > 0);
    // A client retries what was refused: each is applied now, or found applied already.
    let mut retried = 0;
    for call in &refused {
        let again = ingest_one(node.url.clone(), call.event_id.clone()).await;
        let status = again.answer.expect("accepted once the database is back");
        assert!(
            status == pb::EventStatus::Accepted as i32
                || status == pb::EventStatus::Duplicate as i32,
            "{}: {status}",
            call.event_id
        );
        retried += 1;
    }
    assert_eq!(retried, refused.len());
    // Every call's event is applied exactly once: the count, each load event, and "after".
    let sales = calls.len() as i64 + 1;
    let state = entity(&node, 7, 1).await;
    assert_eq!(
        (state.applied_entries, state.on_hand),
        (1 + sales as u64, 100_000 - sales)
    );
    node.node.shutdown().await.expect("shutdown");
    // And durably so: a new node reads the same from the database.
    let node = TestNode::start_on_postgres(&server, |_| {}).await;
    let state = entity(&node, 7, 1).await;
    assert_eq!(
        (state.applied_entries, state.on_hand),
        (1 + sales as u64, 100_000 - sales)
    );
    node.node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_refuses_writes_loses_nothing_and_resumes() {
    outage_under_load(Outage::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hung_under_load_refuses_writes_loses_nothing_and_resumes() {
    outage_under_load(Outage::Hung).await;
}
