//! A grid of real `stockgrid serve --cluster` processes on a private PostgreSQL server, on
//! short lease timings: the nodes share the partitions (read back with `stockgrid cluster
//! status --json`), and every node serves the routing table the store holds; events sent to
//! any node are acknowledged once their owners have them (a transfer across two owners
//! included), and a batch sent to any node answers as the owners do; after a SIGKILL of one
//! node its partitions get a live owner again, at a higher epoch, lookups in the gap answer
//! OWNER_UNAVAILABLE (never an error), and the new owners hold every event the dead one
//! acknowledged; after a SIGTERM the node hands its partitions off and leaves the member
//! table. A node cut off from the store and its peers (a network name space the test makes)
//! answers none of its pairs once its lease lapses, the others take them over, and it joins
//! again when the cut heals. An owner stopped (SIGSTOP) in the middle of writes past its lease is replaced,
//! answers nothing from its lost partitions once continued, steps down and joins again, and
//! every acknowledged event is counted exactly once, also after a fresh owner reads the
//! pairs back from the store. A rolling restart (SIGTERM and start again, one node at a time) under clients that
//! retry UNAVAILABLE fails no call, loses no acknowledged event and answers at most 1% of
//! lookups OWNER_UNAVAILABLE.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stockgrid_actors::domain::PairKey;
use stockgrid_actors::keys;
use stockgrid_api::proto::v1 as pb;
use stockgrid_storage::postgres::testing::PrivateServer;

use crate::processes::spawn_serve_logged;
use crate::{event, wall_now};

const CLUSTER: &str = "grid-test";
pub(crate) const LEASE_MS: u64 = 3000;

pub(crate) struct GridNode {
    pub(crate) node_id: String,
    pub(crate) child: Child,
    pub(crate) url: String,
    /// What it wrote to stderr (warnings).
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl GridNode {
    pub(crate) fn start(server: &PrivateServer, config: &std::path::Path, node_id: &str) -> Self {
        let store = server.url(crate::postgres::DATABASE);
        Self::start_at(server, config, node_id, "127.0.0.1", &store, None)
    }

    /// A node listening on `host` (a free port), on the store at `store`, inside the network
    /// name space `netns` if given.
    fn start_at(
        server: &PrivateServer,
        config: &std::path::Path,
        node_id: &str,
        host: &str,
        store: &str,
        netns: Option<&str>,
    ) -> Self {
        let mut command = match netns {
            None => Command::new(env!("CARGO_BIN_EXE_stockgrid")),
            Some(netns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", netns])
                    .arg(env!("CARGO_BIN_EXE_stockgrid"));
                command
            }
        };
        command
            .args(["serve", "--listen", &format!("{host}:0"), "--store", store])
            .args([
                "--cluster",
                CLUSTER,
                "--node-id",
                node_id,
                "--region",
                "east",
            ])
            .arg("--config")
            .arg(config)
            .env("PGPASSWORD", server.password());
        let (child, address, log) = spawn_serve_logged(command);
        Self {
            node_id: node_id.to_owned(),
            child,
            url: format!("http://{address}"),
            log,
        }
    }
}

impl Drop for GridNode {
    /// A failed test shows what each node warned about, and stops it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self
                .log
                .lock()
                .map(|log| log.join("\n"))
                .unwrap_or_default();
            eprintln!("--- node {} ({}) warned:\n{log}", self.node_id, self.url);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a grid test's configuration into `dir`: a 3 s lease, a heartbeat every 250 ms, a
/// 500 ms margin, every move of placement in one round.
pub(crate) fn grid_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("grid.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nlease_ms = {LEASE_MS}\nheartbeat_ms = 250\nlease_margin_ms = 500\nmax_moves_per_round = 4096\n"
        ),
    )
    .expect("write config");
    config
}

/// Whether a status shows `members` live members sharing every partition, more than 1,000
/// each (placement has spread them).
pub(crate) fn shared_by(members: usize) -> impl Fn(&serde_json::Value) -> bool + Copy {
    move |status| {
        let (live, without) = ownership(status);
        live.len() == members && without == 0 && live.values().all(|&count| count > 1000)
    }
}

/// The grid as `stockgrid cluster status --json` reports it.
pub(crate) fn status(server: &PrivateServer) -> serde_json::Value {
    try_status(server).expect("a node has joined the grid")
}

/// [`status`], or `None` while no node has joined yet.
fn try_status(server: &PrivateServer) -> Option<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_stockgrid"))
        .args([
            "cluster",
            "status",
            "--json",
            "--cluster",
            CLUSTER,
            "--store",
        ])
        .arg(server.url(crate::postgres::DATABASE))
        .args(["--lease-ms", &LEASE_MS.to_string()])
        .env("PGPASSWORD", server.password())
        .output()
        .expect("run cluster status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("holds no grid") {
        return None;
    }
    assert!(output.status.success(), "cluster status failed: {stderr}");
    Some(serde_json::from_slice(&output.stdout).expect("status JSON"))
}

/// Per live member, the partitions it owns; and how many partitions lack a live owner.
pub(crate) fn ownership(status: &serde_json::Value) -> (HashMap<String, usize>, usize) {
    let live: HashMap<String, usize> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|member| member["live"] == true)
        .map(|member| {
            (
                member["node_id"].as_str().expect("id").to_owned(),
                member["partitions"].as_u64().expect("count") as usize,
            )
        })
        .collect();
    let without = status["without_live_owner"].as_array().expect("list").len();
    (live, without)
}

pub(crate) fn owner_of(status: &serde_json::Value, pair: PairKey) -> (String, u64) {
    let partition = &status["owners"][usize::from(keys::partition_of(pair))];
    (
        partition["owner"].as_str().expect("an owner").to_owned(),
        partition["epoch"].as_u64().expect("epoch"),
    )
}

pub(crate) async fn wait_until(
    what: &str,
    server: &PrivateServer,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let status = try_status(server);
        if status.as_ref().is_some_and(&done) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}: {:?}; members: {}",
            status.as_ref().map(ownership),
            status
                .as_ref()
                .map(|status| status["members"].to_string())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_shares_partitions_fails_over_on_sigkill_and_hands_off_on_sigterm() {
    let server = crate::postgres::server();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = grid_config(dir.path());
    let mut nodes: Vec<GridNode> = ["a", "b", "c"]
        .into_iter()
        .map(|id| GridNode::start(&server, &config, id))
        .collect();
    wait_until(
        "three live members sharing every partition",
        &server,
        shared_by(3),
    )
    .await;
    // Rebalancing has settled once the owners stay the same for a while.
    let status = loop {
        let first = status(&server);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let second = status(&server);
        if first["owners"] == second["owners"] {
            break second;
        }
    };

    // The routing table any node serves is the one in the store.
    let table = pb::catalog_client::CatalogClient::new(crate::connect(&nodes[0].url).await)
        .get_routing_table(pb::GetRoutingTableRequest {})
        .await
        .expect("routing table")
        .into_inner();
    assert!(!table.single_node);
    assert_eq!(table.partition_count, u32::from(keys::SCHEME.count()));
    for partition in 0..keys::SCHEME.count() {
        let index = table.owners[usize::from(partition)];
        assert!(
            index >= 0,
            "partition {partition} has no owner in the table"
        );
        assert_eq!(
            table.members[index as usize].node_id,
            status["owners"][usize::from(partition)]["owner"]
                .as_str()
                .expect("owner"),
            "partition {partition}"
        );
    }

    // A rules fallback switched through one node is the grid's: every node answers with it
    // within a second or two (the policy record in the store, read every second).
    let switched = pb::admin_client::AdminClient::new(crate::connect(&nodes[0].url).await)
        .set_rules_fallback(pb::SetRulesFallbackRequest {
            region: "drill-west".to_owned(),
            rules_only: true,
            ..Default::default()
        })
        .await
        .expect("switch a region to rules")
        .into_inner();
    assert!(switched.version > 0, "{switched:?}");
    for node in &nodes {
        let mut admin = pb::admin_client::AdminClient::new(crate::connect(&node.url).await);
        let started = Instant::now();
        loop {
            let policy = admin
                .get_decision_policy(pb::GetDecisionPolicyRequest {})
                .await
                .expect("policy")
                .into_inner();
            if policy.version >= switched.version {
                assert!(
                    policy.rules_regions.contains(&"drill-west".to_owned()),
                    "{policy:?}"
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} never applied the grid's policy: {policy:?}",
                node.node_id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Events of pairs spread over the grid, each sent to some node (the router forwards it
    // to the owner and acknowledges once the owner has it durably).
    let pairs: Vec<PairKey> = (0..24u32).map(|i| PairKey::new(7, 100 + i)).collect();
    let owners: std::collections::HashSet<String> = pairs
        .iter()
        .map(|pair| owner_of(&status, *pair).0)
        .collect();
    assert_eq!(owners.len(), 3, "the pairs should span every node");
    for (i, pair) in pairs.iter().enumerate() {
        let channel = crate::connect(&nodes[i % nodes.len()].url).await;
        let results = pb::ingest_client::IngestClient::new(channel)
            .ingest_events(pb::IngestEventsRequest {
                events: vec![event(
                    &format!("r{i}"),
                    "receiving",
                    "receipt",
                    pair.sku,
                    pair.location,
                    10 + i as i64,
                    wall_now(),
                )],
            })
            .await
            .expect("ingest")
            .into_inner()
            .results;
        assert_eq!(
            results[0].status,
            pb::EventStatus::Accepted as i32,
            "{results:?}"
        );
    }
    // A transfer between two pairs of two owners, sent to a third node: acknowledged once
    // both owners have their effect.
    let (from, to) = pairs
        .iter()
        .flat_map(|from| pairs.iter().map(move |to| (*from, *to)))
        .find(|(from, to)| owner_of(&status, *from).0 != owner_of(&status, *to).0)
        .expect("two pairs of two owners");
    let third = nodes
        .iter()
        .find(|node| {
            node.node_id != owner_of(&status, from).0 && node.node_id != owner_of(&status, to).0
        })
        .expect("a third node");
    let transfer = pb::Event {
        counterparty_location: Some(to.location),
        ..event(
            "t1",
            "transfer",
            "transfer_out",
            from.sku,
            from.location,
            3,
            wall_now(),
        )
    };
    let results = pb::ingest_client::IngestClient::new(crate::connect(&third.url).await)
        .ingest_events(pb::IngestEventsRequest {
            events: vec![transfer],
        })
        .await
        .expect("ingest the transfer")
        .into_inner()
        .results;
    assert_eq!(
        results[0].status,
        pb::EventStatus::Accepted as i32,
        "{results:?}"
    );
    let mut inspect_via_a =
        pb::inspect_client::InspectClient::new(crate::connect(&nodes[0].url).await);
    let inbound = inspect_via_a
        .get_entity_state(pb::GetEntityStateRequest {
            sku: to.sku,
            location: to.location,
        })
        .await
        .expect("inspect the counterparty through a")
        .into_inner();
    assert_eq!(inbound.in_transit, 3, "{inbound:?}");

    // A batch sent to any node answers as the owners do, item by item (decision ids aside).
    let batch = pb::BatchGetAvailabilityRequest {
        items: pairs
            .iter()
            .map(|pair| pb::GetAvailabilityRequest {
                sku: pair.sku,
                location: pair.location,
                qty: 1,
                surface: pb::Surface::ItemPage as i32,
            })
            .collect(),
    };
    let mut answers_via = Vec::new();
    for node in &nodes {
        let results =
            pb::availability_client::AvailabilityClient::new(crate::connect(&node.url).await)
                .batch_get_availability(batch.clone())
                .await
                .expect("batch")
                .into_inner()
                .results;
        let answers: Vec<(bool, u64, String, u64)> = results
            .into_iter()
            .map(|result| match result.result {
                Some(pb::batch_item_result::Result::Answer(answer)) => (
                    answer.available,
                    answer.probability.to_bits(),
                    answer.reason,
                    answer.state_version,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        answers_via.push(answers);
    }
    for answers in &answers_via {
        assert_eq!(answers, &answers_via[0]);
        assert!(
            answers
                .iter()
                .all(|(_, _, reason, version)| reason != "OWNER_UNAVAILABLE" && *version > 0),
            "{answers:?}"
        );
    }

    carts_across_owners(&status, &nodes).await;

    // SIGKILL of c: its partitions get a live owner again at a higher epoch.
    let victim = nodes
        .iter()
        .position(|node| node.node_id == "c")
        .expect("c");
    let mut killed = nodes.remove(victim);
    let before = status.clone();
    killed.child.kill().expect("kill -9");
    killed.child.wait().expect("reap");
    let failover = wait_until("c's partitions to move", &server, |status| {
        let (live, without) = ownership(status);
        without == 0 && live.len() == 2 && !live.contains_key("c")
    })
    .await;
    eprintln!(
        "failover after SIGKILL: every partition owned by a live node again after {failover:?}"
    );
    assert!(failover < Duration::from_secs(30), "{failover:?}");
    let after = self::status(&server);
    for pair in &pairs {
        let (owner_before, epoch_before) = owner_of(&before, *pair);
        let (owner_now, epoch_now) = owner_of(&after, *pair);
        if owner_before == "c" {
            assert_ne!(owner_now, "c");
            assert!(
                epoch_now > epoch_before,
                "{pair:?}: epoch {epoch_before} -> {epoch_now}"
            );
        }
    }
    // Through a, every pair is served again: lookups in the gap answer OWNER_UNAVAILABLE,
    // never an error, and every acknowledged event is held by the pair's new owner.
    let mut availability_via_a =
        pb::availability_client::AvailabilityClient::new(crate::connect(&nodes[0].url).await);
    let started = Instant::now();
    loop {
        let results = availability_via_a
            .batch_get_availability(batch.clone())
            .await
            .expect("a batch answers during a failover")
            .into_inner()
            .results;
        let waiting = results
            .iter()
            .filter(|result| match &result.result {
                Some(pb::batch_item_result::Result::Answer(answer)) => {
                    answer.reason == "OWNER_UNAVAILABLE"
                }
                other => panic!("an item failed during the failover: {other:?}"),
            })
            .count();
        if waiting == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{waiting} items still OWNER_UNAVAILABLE"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, pair) in pairs.iter().enumerate() {
        let state = inspect_via_a
            .get_entity_state(pb::GetEntityStateRequest {
                sku: pair.sku,
                location: pair.location,
            })
            .await
            .unwrap_or_else(|status| panic!("inspect {pair:?}: {status:?}"))
            .into_inner();
        let transferred = if *pair == from { -3 } else { 0 };
        assert_eq!(state.on_hand, 10 + i as i64 + transferred, "{pair:?}");
    }

    // SIGTERM of b: it hands off and leaves; a owns everything.
    let leaving = nodes
        .iter()
        .position(|node| node.node_id == "b")
        .expect("b");
    let mut left = nodes.remove(leaving);
    let pid = left.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let exit = left.child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
    wait_until("a to own every partition", &server, |status| {
        let (live, without) = ownership(status);
        without == 0 && live.len() == 1 && live.get("a") == Some(&usize::from(keys::SCHEME.count()))
    })
    .await;
    let members: Vec<String> = self::status(&server)["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|member| member["node_id"].as_str().expect("id").to_owned())
        .collect();
    assert!(!members.contains(&"b".to_owned()), "{members:?}");
    for node in &mut nodes {
        let _ = node.child.kill();
        let _ = node.child.wait();
    }
}

/// A cart whose two lines have two owners, sent to a third node: all or nothing, idempotent,
/// committed and released through other nodes, and expired by the owners' reapers.
async fn carts_across_owners(status: &serde_json::Value, nodes: &[GridNode]) {
    let candidates: Vec<PairKey> = (0..24u32).map(|i| PairKey::new(8, 300 + i)).collect();
    let first = candidates[0];
    let second = *candidates
        .iter()
        .find(|pair| owner_of(status, **pair).0 != owner_of(status, first).0)
        .expect("a pair of another owner");
    let third = nodes
        .iter()
        .find(|node| {
            node.node_id != owner_of(status, first).0 && node.node_id != owner_of(status, second).0
        })
        .expect("a third node");
    let now = wall_now();
    let counts: Vec<pb::Event> = [first, second]
        .iter()
        .map(|pair| {
            event(
                &format!("count-{}-{}", pair.sku, pair.location),
                "store_inventory",
                "count",
                pair.sku,
                pair.location,
                10,
                now,
            )
        })
        .collect();
    let counted = pb::ingest_client::IngestClient::new(crate::connect(&third.url).await)
        .ingest_events(pb::IngestEventsRequest { events: counts })
        .await
        .expect("count")
        .into_inner()
        .results;
    assert!(
        counted
            .iter()
            .all(|result| result.status == pb::EventStatus::Accepted as i32),
        "{counted:?}"
    );
    let line = |pair: PairKey, qty: i64| pb::ReservationLine {
        sku: pair.sku,
        location: pair.location,
        qty,
    };
    let cart =
        |request_id: &str, lines: Vec<pb::ReservationLine>, ttl_seconds: u32| pb::ReserveRequest {
            request_id: request_id.to_owned(),
            lines,
            surface: pb::Surface::Pickup as i32,
            ttl_seconds,
        };
    let mut via_third =
        pb::reservations_client::ReservationsClient::new(crate::connect(&third.url).await);
    let mut via_a =
        pb::reservations_client::ReservationsClient::new(crate::connect(&nodes[0].url).await);
    let mut via_b =
        pb::reservations_client::ReservationsClient::new(crate::connect(&nodes[1].url).await);
    let reserved = |pair: PairKey| {
        let url = nodes[2].url.clone();
        async move {
            pb::inspect_client::InspectClient::new(crate::connect(&url).await)
                .get_entity_state(pb::GetEntityStateRequest {
                    sku: pair.sku,
                    location: pair.location,
                })
                .await
                .expect("inspect")
                .into_inner()
                .reserved
        }
    };

    // The second line cannot be promised: nothing is held at the first line's owner.
    let refused = via_third
        .reserve(cart("across-1", vec![line(first, 3), line(second, 50)], 0))
        .await
        .expect_err("the second line is short");
    crate::assert_status(&refused, tonic::Code::FailedPrecondition, "lines[1]");
    assert_eq!(reserved(first).await, 0);
    // The refusal is recorded: the same request, retried through another node, is refused
    // again (never recorded as held after its holds were freed).
    let again = via_a
        .reserve(cart("across-1", vec![line(first, 3), line(second, 50)], 0))
        .await
        .expect_err("refused again");
    crate::assert_status(&again, tonic::Code::FailedPrecondition, "refused");

    // Both lines held, each at its owner; a retry answers the same reservation.
    let granted = via_third
        .reserve(cart("across-2", vec![line(first, 3), line(second, 1)], 0))
        .await
        .expect("a cart across two owners")
        .into_inner();
    assert_eq!(granted.state, pb::ReservationState::Pending as i32);
    let retried = via_a
        .reserve(cart("across-2", vec![line(first, 3), line(second, 1)], 0))
        .await
        .expect("retry through another node")
        .into_inner();
    assert_eq!(granted, retried);
    assert_eq!((reserved(first).await, reserved(second).await), (3, 1));

    // Committed through one node, released through another: both holds are freed.
    let committed = via_a
        .commit(pb::CommitRequest {
            reservation_id: granted.reservation_id.clone(),
            pickup_window_seconds: 3_600,
        })
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(committed.state, pb::ReservationState::Committed as i32);
    let released = via_b
        .release(pb::ReleaseRequest {
            reservation_id: granted.reservation_id.clone(),
            reason: pb::ReleaseReason::CustomerCancelled as i32,
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.state, pb::ReservationState::Released as i32);
    assert_eq!((reserved(first).await, reserved(second).await), (0, 0));

    // A cart left pending past its TTL: the owners' reapers expire it and free both lines.
    let short = via_third
        .reserve(cart("across-3", vec![line(first, 2), line(second, 2)], 2))
        .await
        .expect("a short-lived cart")
        .into_inner();
    assert_eq!((reserved(first).await, reserved(second).await), (2, 2));
    let started = Instant::now();
    loop {
        let freed = (reserved(first).await, reserved(second).await) == (0, 0);
        if freed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the expired cart's holds were not freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expired = via_b
        .get_reservation(pb::GetReservationRequest {
            reservation_id: short.reservation_id,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(expired.state, pb::ReservationState::Expired as i32);
}

/// Counts of what the clients of a rolling restart saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    answers: AtomicU64,
    owner_unavailable: AtomicU64,
    pub(crate) failed_calls: AtomicU64,
    retried_calls: AtomicU64,
}

/// Sends `call` to the nodes in `urls` in turn until one answers; UNAVAILABLE (a node
/// draining, restarting, or a partition moving) and a call out of time (2 s: a node stopped)
/// are retried on the next node, as a client's retry policy would. Any other error, or 200 tries, is a failed call.
pub(crate) async fn with_retries<T, F, Fut>(
    urls: &RwLock<Vec<String>>,
    channels: &mut HashMap<String, tonic::transport::Channel>,
    turn: &mut usize,
    seen: &Seen,
    call: F,
) -> Option<T>
where
    F: Fn(tonic::transport::Channel) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..200 {
        let url = {
            let urls = urls.read().expect("urls");
            *turn += 1;
            urls[*turn % urls.len()].clone()
        };
        let channel = channels
            .entry(url.clone())
            .or_insert_with(|| {
                tonic::transport::Channel::from_shared(url)
                    .expect("url")
                    .timeout(Duration::from_secs(2))
                    .connect_lazy()
            })
            .clone();
        match call(channel).await {
            Ok(answer) => return Some(answer),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                ) =>
            {
                seen.retried_calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => {
                eprintln!("a call failed: {status:?}");
                break;
            }
        }
    }
    seen.failed_calls.fetch_add(1, Ordering::Relaxed);
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_fails_no_call_and_loses_no_event() {
    let server = crate::postgres::server();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = grid_config(dir.path());
    let ids = ["a", "b", "c"];
    let mut nodes: Vec<GridNode> = ids
        .into_iter()
        .map(|id| GridNode::start(&server, &config, id))
        .collect();
    let settled = shared_by(3);
    wait_until("three members sharing every partition", &server, settled).await;

    let pairs: Vec<PairKey> = (0..24u32).map(|i| PairKey::new(9, 400 + i)).collect();
    let urls = Arc::new(RwLock::new(
        nodes
            .iter()
            .map(|node| node.url.clone())
            .collect::<Vec<_>>(),
    ));
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    // One client looks up every pair in batches; one sends a receipt of one unit at a time,
    // resending what was not acknowledged, and counts what was.
    let lookups = tokio::spawn({
        let (urls, seen, stop, pairs) = (
            Arc::clone(&urls),
            Arc::clone(&seen),
            Arc::clone(&stop),
            pairs.clone(),
        );
        async move {
            let mut channels = HashMap::new();
            let mut turn = 0;
            let batch = pb::BatchGetAvailabilityRequest {
                items: pairs
                    .iter()
                    .map(|pair| pb::GetAvailabilityRequest {
                        sku: pair.sku,
                        location: pair.location,
                        qty: 1,
                        surface: pb::Surface::ItemPage as i32,
                    })
                    .collect(),
            };
            while !stop.load(Ordering::Relaxed) {
                let answered = with_retries(&urls, &mut channels, &mut turn, &seen, |channel| {
                    let batch = batch.clone();
                    async move {
                        pb::availability_client::AvailabilityClient::new(channel)
                            .batch_get_availability(batch)
                            .await
                    }
                })
                .await;
                for result in answered.map(|r| r.into_inner().results).unwrap_or_default() {
                    seen.answers.fetch_add(1, Ordering::Relaxed);
                    match result.result {
                        Some(pb::batch_item_result::Result::Answer(answer))
                            if answer.reason == "OWNER_UNAVAILABLE" =>
                        {
                            seen.owner_unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(pb::batch_item_result::Result::Answer(_)) => {}
                        other => panic!("an item failed: {other:?}"),
                    }
                }
            }
        }
    });
    let ingest = tokio::spawn({
        let (urls, seen, stop, pairs) = (
            Arc::clone(&urls),
            Arc::clone(&seen),
            Arc::clone(&stop),
            pairs.clone(),
        );
        async move {
            let mut channels = HashMap::new();
            let mut turn = 0;
            let mut acknowledged: HashMap<PairKey, i64> = HashMap::new();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let pair = pairs[sent as usize % pairs.len()];
                let receipt = event(
                    &format!("roll-{sent}"),
                    "receiving",
                    "receipt",
                    pair.sku,
                    pair.location,
                    1,
                    wall_now(),
                );
                sent += 1;
                // Resent until acknowledged (accepted, or a duplicate of an earlier try).
                loop {
                    let answered =
                        with_retries(&urls, &mut channels, &mut turn, &seen, |channel| {
                            let receipt = receipt.clone();
                            async move {
                                pb::ingest_client::IngestClient::new(channel)
                                    .ingest_events(pb::IngestEventsRequest {
                                        events: vec![receipt],
                                    })
                                    .await
                            }
                        })
                        .await
                        .expect("an ingest call failed");
                    let status = answered.into_inner().results[0].status;
                    if status == pb::EventStatus::Accepted as i32
                        || status == pb::EventStatus::Duplicate as i32
                    {
                        *acknowledged.entry(pair).or_default() += 1;
                        break;
                    }
                    assert_eq!(status, pb::EventStatus::Failed as i32, "{status}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            acknowledged
        }
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in ids {
        let position = nodes
            .iter()
            .position(|node| node.node_id == id)
            .expect("node");
        let mut old = nodes.remove(position);
        // Out of the clients' rotation first, as a load balancer drains it.
        urls.write().expect("urls").retain(|url| *url != old.url);
        let pid = old.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let exit = old.child.wait().expect("wait");
        assert!(exit.success(), "{id} exited with {exit:?}");
        let restarted = GridNode::start(&server, &config, id);
        wait_until(&format!("{id} back with its share"), &server, settled).await;
        urls.write().expect("urls").push(restarted.url.clone());
        nodes.push(restarted);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    lookups.await.expect("lookups");
    let acknowledged = ingest.await.expect("ingest");

    let answers = seen.answers.load(Ordering::Relaxed);
    let unavailable = seen.owner_unavailable.load(Ordering::Relaxed);
    let share = unavailable as f64 / answers.max(1) as f64;
    eprintln!(
        "rolling restart: {answers} answers, {unavailable} OWNER_UNAVAILABLE ({:.3}%), {} calls retried on UNAVAILABLE, {} events acknowledged",
        100.0 * share,
        seen.retried_calls.load(Ordering::Relaxed),
        acknowledged.values().sum::<i64>()
    );
    assert_eq!(seen.failed_calls.load(Ordering::Relaxed), 0);
    assert!(answers > 1000, "too few answers to judge: {answers}");
    assert!(share <= 0.01, "{:.3}% OWNER_UNAVAILABLE", 100.0 * share);
    // Every acknowledged event is there, through any node.
    let mut inspect = pb::inspect_client::InspectClient::new(crate::connect(&nodes[0].url).await);
    for pair in &pairs {
        let on_hand = inspect
            .get_entity_state(pb::GetEntityStateRequest {
                sku: pair.sku,
                location: pair.location,
            })
            .await
            .map_or(0, |state| state.into_inner().on_hand);
        assert_eq!(
            on_hand,
            acknowledged.get(pair).copied().unwrap_or(0),
            "{pair:?}"
        );
    }
    for node in &mut nodes {
        let _ = node.child.kill();
        let _ = node.child.wait();
    }
}

/// Resends a receipt of one unit until acknowledged; answers whether it was.
async fn send_until_acknowledged(
    urls: &RwLock<Vec<String>>,
    channels: &mut HashMap<String, tonic::transport::Channel>,
    turn: &mut usize,
    seen: &Seen,
    receipt: &pb::Event,
) {
    loop {
        let answered = with_retries(urls, channels, turn, seen, |channel| {
            let receipt = receipt.clone();
            async move {
                pb::ingest_client::IngestClient::new(channel)
                    .ingest_events(pb::IngestEventsRequest {
                        events: vec![receipt],
                    })
                    .await
            }
        })
        .await
        .expect("an ingest call failed");
        let status = answered.into_inner().results[0].status;
        if status == pb::EventStatus::Accepted as i32 || status == pb::EventStatus::Duplicate as i32
        {
            return;
        }
        assert_eq!(status, pb::EventStatus::Failed as i32, "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// On-hand of each pair, asked through the node at `url` (0: never seen).
async fn on_hand_via(url: &str, pairs: &[PairKey]) -> Vec<i64> {
    let mut inspect = pb::inspect_client::InspectClient::new(crate::connect(url).await);
    let mut all = Vec::new();
    for pair in pairs {
        let started = Instant::now();
        loop {
            match inspect
                .get_entity_state(pb::GetEntityStateRequest {
                    sku: pair.sku,
                    location: pair.location,
                })
                .await
            {
                Ok(state) => {
                    all.push(state.into_inner().on_hand);
                    break;
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    all.push(0);
                    break;
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && started.elapsed() < Duration::from_secs(15) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("inspect {pair:?}: {status:?}"),
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_stopped_past_its_lease_is_fenced_steps_down_and_no_state_diverges() {
    let server = crate::postgres::server();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = grid_config(dir.path());
    let mut a = GridNode::start(&server, &config, "a");
    let mut b = GridNode::start(&server, &config, "b");
    let status = {
        wait_until("two members sharing every partition", &server, shared_by(2)).await;
        self::status(&server)
    };
    let pairs: Vec<PairKey> = (0..200u32)
        .map(|i| PairKey::new(10, 500 + i))
        .filter(|pair| owner_of(&status, *pair).0 == "a")
        .take(8)
        .collect();
    assert_eq!(pairs.len(), 8);

    // A writer sends receipts of a's pairs to a (and, when a call to a runs out of time, to
    // b), one at a time, so that a is in the middle of writes when it is stopped.
    let urls = Arc::new(RwLock::new(vec![
        a.url.clone(),
        a.url.clone(),
        b.url.clone(),
    ]));
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (urls, seen, stop, pairs) = (
            Arc::clone(&urls),
            Arc::clone(&seen),
            Arc::clone(&stop),
            pairs.clone(),
        );
        async move {
            let mut channels = HashMap::new();
            let mut turn = 0;
            let mut acknowledged = vec![0i64; pairs.len()];
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let index = sent % pairs.len();
                let pair = pairs[index];
                let receipt = event(
                    &format!("stop-{sent}"),
                    "receiving",
                    "receipt",
                    pair.sku,
                    pair.location,
                    1,
                    wall_now(),
                );
                sent += 1;
                send_until_acknowledged(&urls, &mut channels, &mut turn, &seen, &receipt).await;
                acknowledged[index] += 1;
            }
            acknowledged
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = a.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let stopped = Instant::now();
    wait_until("b to own every partition", &server, |status| {
        let (live, without) = ownership(status);
        without == 0 && live.len() == 1 && live.contains_key("b")
    })
    .await;
    eprintln!(
        "a stopped: b owns every partition after {:?}",
        stopped.elapsed()
    );
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    // At once, a answers nothing from its own partitions any more: its lease ran out while
    // it was stopped (the peer service answers from the callee's own partitions only).
    let answered = pb::peer_client::PeerClient::new(crate::connect(&a.url).await)
        .decide(pb::BatchGetAvailabilityRequest {
            items: pairs
                .iter()
                .map(|pair| pb::GetAvailabilityRequest {
                    sku: pair.sku,
                    location: pair.location,
                    qty: 1,
                    surface: pb::Surface::ItemPage as i32,
                })
                .collect(),
        })
        .await
        .expect("a answers its peer service")
        .into_inner()
        .results;
    for result in answered {
        match result.result {
            Some(pb::batch_item_result::Result::Answer(answer)) => {
                assert_eq!(answer.reason, "OWNER_UNAVAILABLE", "{answer:?}");
                assert!(!answer.available);
            }
            other => panic!("{other:?}"),
        }
    }
    // a steps down (it was expelled), joins again, and the two share the partitions again.
    wait_until("a back beside b", &server, shared_by(2)).await;
    assert!(
        a.log
            .lock()
            .expect("log")
            .iter()
            .any(|line| line.contains("expelled from the grid")),
        "a did not step down: {:?}",
        a.log.lock().expect("log")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.expect("writer");
    assert_eq!(seen.failed_calls.load(Ordering::Relaxed), 0);
    assert!(
        seen.retried_calls.load(Ordering::Relaxed) > 0,
        "no call to a was cut by the stop"
    );
    // Every acknowledged receipt counted exactly once: by the owners now, and again once a
    // fresh owner has read every pair back from the store (b leaves, a takes everything).
    assert_eq!(on_hand_via(&b.url, &pairs).await, acknowledged);
    let pid = b.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    assert!(b.child.wait().expect("wait").success());
    wait_until("a to own every partition", &server, |status| {
        let (live, without) = ownership(status);
        without == 0 && live.len() == 1 && live.contains_key("a")
    })
    .await;
    assert_eq!(on_hand_via(&a.url, &pairs).await, acknowledged);
    let _ = a.child.kill();
    let _ = a.child.wait();
}

/// A network name space joined to this one by a veth pair: the host end 10.231.N.1/30, the
/// name space's end 10.231.N.2/30. Removed (with its veth pair) when dropped.
struct NetCut {
    netns: String,
    inner_link: String,
    host: std::net::Ipv4Addr,
    inner: std::net::Ipv4Addr,
}

impl NetCut {
    /// Makes it; panics (the test fails, it does not skip) when the machine does not allow
    /// it: the test needs root and `ip` (iproute2).
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let subnet = (std::process::id() % 250) as u8 + 1;
        let cut = Self {
            netns: format!("sgcut{tag}"),
            inner_link: format!("sgn{tag}"),
            host: std::net::Ipv4Addr::new(10, 231, subnet, 1),
            inner: std::net::Ipv4Addr::new(10, 231, subnet, 2),
        };
        let host_link = format!("sgh{tag}");
        let _ = Command::new("ip")
            .args(["netns", "del", &cut.netns])
            .status();
        for command in [
            vec!["netns", "add", &cut.netns],
            vec![
                "link",
                "add",
                &host_link,
                "type",
                "veth",
                "peer",
                "name",
                &cut.inner_link,
            ],
            vec!["link", "set", &cut.inner_link, "netns", &cut.netns],
            vec![
                "addr",
                "add",
                &format!("{}/30", cut.host),
                "dev",
                &host_link,
            ],
            vec!["link", "set", &host_link, "up"],
            vec![
                "-n",
                &cut.netns,
                "addr",
                "add",
                &format!("{}/30", cut.inner),
                "dev",
                &cut.inner_link,
            ],
            vec!["-n", &cut.netns, "link", "set", &cut.inner_link, "up"],
            vec!["-n", &cut.netns, "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&command).status();
            assert!(
                status.as_ref().is_ok_and(|status| status.success()),
                "`ip {}` failed ({status:?}): this test makes its own network name space and needs root and iproute2",
                command.join(" ")
            );
        }
        cut
    }

    /// Cuts the name space off (its end of the veth pair down) or joins it again.
    fn set_connected(&self, connected: bool) {
        let state = if connected { "up" } else { "down" };
        let status = Command::new("ip")
            .args(["-n", &self.netns, "link", "set", &self.inner_link, state])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip link set {state} failed");
    }

    /// Runs `call` on a thread inside the name space, on a runtime of its own.
    fn run_inside<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T> + Send>> + Send + 'static,
    ) -> T {
        let path = format!("/var/run/netns/{}", self.netns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the name space");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter the name space");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(call())
        })
        .join()
        .expect("the thread inside the name space")
    }
}

impl Drop for NetCut {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_store_and_its_peers_steps_down_and_rejoins_after_the_cut() {
    let cut = NetCut::new();
    let server = PrivateServer::start_also_on(cut.host);
    server.create_database(crate::postgres::DATABASE);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = grid_config(dir.path());
    // a and b listen on the host's end of the veth pair (which the name space reaches); c
    // runs inside the name space and reaches the store and its peers through the pair only.
    let host = cut.host.to_string();
    let local_store = server.url(crate::postgres::DATABASE);
    let mut nodes: Vec<GridNode> = ["a", "b"]
        .into_iter()
        .map(|id| GridNode::start_at(&server, &config, id, &host, &local_store, None))
        .collect();
    let mut c = GridNode::start_at(
        &server,
        &config,
        "c",
        &cut.inner.to_string(),
        &server.url_at(cut.host, crate::postgres::DATABASE),
        Some(&cut.netns),
    );
    let shared = shared_by(3);
    wait_until("three members sharing every partition", &server, shared).await;
    let status = self::status(&server);
    let pairs: Vec<PairKey> = (0..200u32)
        .map(|i| PairKey::new(11, 600 + i))
        .filter(|pair| owner_of(&status, *pair).0 == "c")
        .take(8)
        .collect();
    assert_eq!(pairs.len(), 8);
    let events: Vec<pb::Event> = pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            event(
                &format!("cut-{i}"),
                "receiving",
                "receipt",
                pair.sku,
                pair.location,
                5 + i as i64,
                wall_now(),
            )
        })
        .collect();
    let results = pb::ingest_client::IngestClient::new(crate::connect(&nodes[0].url).await)
        .ingest_events(pb::IngestEventsRequest { events })
        .await
        .expect("ingest through a, applied by c")
        .into_inner()
        .results;
    assert!(
        results
            .iter()
            .all(|result| result.status == pb::EventStatus::Accepted as i32),
        "{results:?}"
    );
    let expected: Vec<i64> = (0..pairs.len()).map(|i| 5 + i as i64).collect();

    // The cut: c reaches neither the store nor a and b.
    cut.set_connected(false);
    let started = Instant::now();
    let failover = wait_until("a and b to own every partition", &server, |status| {
        let (live, without) = ownership(status);
        without == 0 && live.len() == 2 && !live.contains_key("c")
    })
    .await;
    eprintln!("cut off: a and b own every partition after {failover:?}");
    assert_eq!(on_hand_via(&nodes[0].url, &pairs).await, expected);
    // c, its lease lapsed, answers none of its pairs from inside the cut.
    let c_address = c.url.clone();
    let lookups = pairs.clone();
    let answers = cut.run_inside(move || {
        Box::pin(async move {
            let channel = tonic::transport::Channel::from_shared(c_address)
                .expect("url")
                .connect()
                .await
                .expect("connect to c inside the cut");
            pb::peer_client::PeerClient::new(channel)
                .decide(pb::BatchGetAvailabilityRequest {
                    items: lookups
                        .iter()
                        .map(|pair| pb::GetAvailabilityRequest {
                            sku: pair.sku,
                            location: pair.location,
                            qty: 1,
                            surface: pb::Surface::ItemPage as i32,
                        })
                        .collect(),
                })
                .await
                .expect("c answers inside the cut")
                .into_inner()
                .results
        })
    });
    assert!(started.elapsed() >= Duration::from_millis(LEASE_MS - 500));
    for result in answers {
        match result.result {
            Some(pb::batch_item_result::Result::Answer(answer)) => {
                assert_eq!(answer.reason, "OWNER_UNAVAILABLE", "{answer:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    // The cut heals: c finds itself expelled, joins again and gets its share back.
    cut.set_connected(true);
    wait_until("c back with its share", &server, shared).await;
    assert!(
        c.log
            .lock()
            .expect("log")
            .iter()
            .any(|line| line.contains("expelled from the grid")),
        "c did not step down: {:?}",
        c.log.lock().expect("log")
    );
    assert_eq!(on_hand_via(&c.url, &pairs).await, expected);
    let _ = c.child.kill();
    let _ = c.child.wait();
    for node in &mut nodes {
        let _ = node.child.kill();
        let _ = node.child.wait();
    }
}
