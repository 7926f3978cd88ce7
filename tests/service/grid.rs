//! A grid of real `stockgrid serve --cluster` processes on a private PostgreSQL server, on
//! short lease timings: the nodes share the partitions (read back with `stockgrid cluster
//! status --json`); an event sent to its pair's owner is acknowledged and a lookup sent to
//! another node answers "not available" with reason OWNER_UNAVAILABLE (the router, which
//! forwards it, is not built yet); after a SIGKILL of one node its partitions get a live owner
//! again, at a higher epoch, and the new owner holds every event the dead one acknowledged;
//! after a SIGTERM the node hands its partitions off and leaves the member table.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use stockgrid_actors::domain::PairKey;
use stockgrid_actors::keys;
use stockgrid_api::proto::v1 as pb;
use stockgrid_storage::postgres::testing::PrivateServer;

use crate::processes::spawn_serve;
use crate::{event, wall_now};

const CLUSTER: &str = "grid-test";
const LEASE_MS: u64 = 3000;

struct GridNode {
    node_id: String,
    child: Child,
    url: String,
}

impl GridNode {
    fn start(server: &PrivateServer, config: &std::path::Path, node_id: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stockgrid"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(server.url(crate::postgres::DATABASE))
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
        let (child, address) = spawn_serve(command);
        Self {
            node_id: node_id.to_owned(),
            child,
            url: format!("http://{address}"),
        }
    }
}

/// The grid as `stockgrid cluster status --json` reports it.
fn status(server: &PrivateServer) -> serde_json::Value {
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
fn ownership(status: &serde_json::Value) -> (HashMap<String, usize>, usize) {
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

fn owner_of(status: &serde_json::Value, pair: PairKey) -> (String, u64) {
    let partition = &status["owners"][usize::from(keys::partition_of(pair))];
    (
        partition["owner"].as_str().expect("an owner").to_owned(),
        partition["epoch"].as_u64().expect("epoch"),
    )
}

async fn wait_until(
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
    let config = dir.path().join("grid.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nlease_ms = {LEASE_MS}\nheartbeat_ms = 250\nlease_margin_ms = 500\nmax_moves_per_round = 4096\n"
        ),
    )
    .expect("write config");
    let mut nodes: Vec<GridNode> = ["a", "b", "c"]
        .into_iter()
        .map(|id| GridNode::start(&server, &config, id))
        .collect();
    wait_until(
        "three live members sharing every partition",
        &server,
        |status| {
            let (live, without) = ownership(status);
            live.len() == 3 && without == 0 && live.values().all(|&count| count > 1000)
        },
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

    // Events of pairs spread over the grid, each sent to its pair's owner.
    let pairs: Vec<PairKey> = (0..24u32).map(|i| PairKey::new(7, 100 + i)).collect();
    let url_of = |node_id: &str, nodes: &[GridNode]| {
        nodes
            .iter()
            .find(|node| node.node_id == node_id)
            .map(|node| node.url.clone())
            .expect("a node")
    };
    for (i, pair) in pairs.iter().enumerate() {
        let (owner, _) = owner_of(&status, *pair);
        let channel = crate::connect(&url_of(&owner, &nodes)).await;
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
    // A lookup sent to a node that does not own the pair: not available, and why.
    let pair = pairs[0];
    let (owner, _) = owner_of(&status, pair);
    let other = nodes
        .iter()
        .find(|node| node.node_id != owner)
        .expect("another node");
    let answer = pb::availability_client::AvailabilityClient::new(crate::connect(&other.url).await)
        .get_availability(pb::GetAvailabilityRequest {
            sku: pair.sku,
            location: pair.location,
            qty: 1,
            surface: pb::Surface::ItemPage as i32,
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(!answer.available);
    assert_eq!(answer.reason, "OWNER_UNAVAILABLE");

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
    for (i, pair) in pairs.iter().enumerate() {
        let (owner_before, epoch_before) = owner_of(&before, *pair);
        let (owner_now, epoch_now) = owner_of(&after, *pair);
        if owner_before == "c" {
            assert_ne!(owner_now, "c");
            assert!(
                epoch_now > epoch_before,
                "{pair:?}: epoch {epoch_before} -> {epoch_now}"
            );
        }
        // Every acknowledged event is held by the pair's owner now (which may take a moment
        // to serve what it just claimed: a client retries UNAVAILABLE).
        let mut inspect = pb::inspect_client::InspectClient::new(
            crate::connect(&url_of(&owner_now, &nodes)).await,
        );
        let started = Instant::now();
        let state = loop {
            match inspect
                .get_entity_state(pb::GetEntityStateRequest {
                    sku: pair.sku,
                    location: pair.location,
                })
                .await
            {
                Ok(state) => break state.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && started.elapsed() < Duration::from_secs(15) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("inspect {pair:?}: {status:?}"),
            }
        };
        assert_eq!(state.on_hand, 10 + i as i64, "{pair:?}");
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
