//! The two cheap denial-of-service attacks an adversarial tester found, against a real
//! `stockgrid serve` process whose descriptor limit is 1,024 (soft and hard): 2,000 TCP
//! connections that never send a byte and 64 event streams that send nothing, held open by
//! the test. While the attack is held, a new client's lookup, ingest and reserve each
//! succeed within 30 s; the store is never poisoned (health stays SERVING, writes are
//! accepted); the node's CPU stays idle (the accept loop never spins); and the node's data
//! directory and files are private to its user.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use stockgrid_api::proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{event, wall_now};

const ATTACK_CONNECTIONS: usize = 2_000;
const IDLE_STREAMS: usize = 64;

/// `stockgrid serve` under `ulimit -n 1024`, with its address.
fn serve_with_descriptor_limit(data_dir: &Path, limit: u32) -> (Child, String) {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_stockgrid"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    crate::processes::spawn_serve(command)
}

/// The test's own soft descriptor limit raised to its hard one: it holds 2,000+ sockets.
fn raise_own_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now > (ATTACK_CONNECTIONS + 200) as u64,
        "the test needs more than {ATTACK_CONNECTIONS} descriptors; its limit is {now}"
    );
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0 // USER_HZ is 100 on Linux
}

async fn channel_to(url: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn serving(url: &str) -> bool {
    let Ok(channel) = channel_to(url).await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32)
}

/// A new client's lookup, ingest and reserve, each retried until it succeeds or `deadline`.
async fn new_client_is_served(url: &str, deadline: Instant, attempt: &str) -> Duration {
    let started = Instant::now();
    loop {
        let result: Result<(), String> = async {
            let channel = channel_to(url).await.map_err(|e| e.to_string())?;
            let answer = pb::availability_client::AvailabilityClient::new(channel.clone())
                .get_availability(pb::GetAvailabilityRequest {
                    sku: 1,
                    location: 1,
                    qty: 1,
                    surface: pb::Surface::Pickup as i32,
                })
                .await
                .map_err(|e| format!("lookup: {e}"))?
                .into_inner();
            if answer.reason == "STORE_UNAVAILABLE" {
                return Err("lookup: store unavailable".to_owned());
            }
            let results = pb::ingest_client::IngestClient::new(channel.clone())
                .ingest_events(pb::IngestEventsRequest {
                    events: vec![event(
                        &format!("sale-{attempt}"),
                        "pos",
                        "sale",
                        2,
                        1,
                        1,
                        wall_now(),
                    )],
                })
                .await
                .map_err(|e| format!("ingest: {e}"))?
                .into_inner()
                .results;
            // A retry of an attempt whose ack was lost finds its sale already applied.
            let applied = [
                pb::EventStatus::Accepted as i32,
                pb::EventStatus::Duplicate as i32,
            ];
            if !applied.contains(&results[0].status) {
                return Err(format!("ingest: {:?}", results[0]));
            }
            pb::reservations_client::ReservationsClient::new(channel)
                .reserve(pb::ReserveRequest {
                    request_id: format!("attack-{attempt}"),
                    lines: vec![pb::ReservationLine {
                        sku: 1,
                        location: 1,
                        qty: 1,
                    }],
                    surface: pb::Surface::ItemPage as i32,
                    ttl_seconds: 0,
                })
                .await
                .map_err(|e| format!("reserve: {e}"))?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => return started.elapsed(),
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "a new client was not served within 30 s of the attack: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn assert_private(path: &Path) {
    let metadata = std::fs::metadata(path).expect("metadata");
    let mode = metadata.permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            assert_private(&entry.expect("entry").path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_silent_streams_do_not_lock_a_node_out() {
    raise_own_descriptor_limit();
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let (mut child, address) = serve_with_descriptor_limit(&data_dir, 1_024);
    let url = format!("http://{address}");
    let started = Instant::now();
    while !serving(&url).await {
        assert!(started.elapsed() < Duration::from_secs(60), "never SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stock for the reservation the new client makes.
    let channel = channel_to(&url).await.expect("connect");
    let stocked = pb::ingest_client::IngestClient::new(channel)
        .ingest_events(pb::IngestEventsRequest {
            events: vec![event(
                "count-1",
                "store_inventory",
                "count",
                1,
                1,
                1_000,
                wall_now(),
            )],
        })
        .await
        .expect("stock")
        .into_inner();
    assert_eq!(stocked.results[0].status, pb::EventStatus::Accepted as i32);

    // The attack: 64 streams that send nothing, then 2,000 connections that send no byte.
    let attack_started = Instant::now();
    let deadline = attack_started + Duration::from_secs(30);
    let stream_channel = channel_to(&url).await.expect("connect");
    let mut streams = Vec::new();
    for _ in 0..IDLE_STREAMS {
        let silent = tokio_stream::pending::<pb::IngestEventsRequest>();
        if let Ok(stream) = pb::ingest_client::IngestClient::new(stream_channel.clone())
            .stream_events(silent)
            .await
        {
            streams.push(stream);
        }
    }
    assert_eq!(streams.len(), IDLE_STREAMS, "every silent stream opened");
    let mut sockets = Vec::with_capacity(ATTACK_CONNECTIONS);
    for _ in 0..ATTACK_CONNECTIONS {
        if let Ok(socket) = tokio::net::TcpStream::connect(&address).await {
            sockets.push(socket);
        }
    }
    assert!(
        sockets.len() > 1_024,
        "only {} attack connections",
        sockets.len()
    );

    // While the attack is held: the node is idle, and a new client is served.
    let pid = child.id();
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_used = cpu_seconds(pid) - cpu_before;
    assert!(
        cpu_used < 1.0,
        "the node used {cpu_used:.2} s of CPU in 3 s with only idle connections"
    );
    new_client_is_served(&url, deadline, "first").await;
    assert!(
        serving(&url).await,
        "health must stay SERVING: the store is not poisoned"
    );
    // Still held, and again: nothing was lost to the attack, nothing poisoned.
    new_client_is_served(&url, deadline + Duration::from_secs(30), "second").await;
    drop(sockets);
    drop(streams);
    // Both acknowledged sales are applied: nothing acknowledged was lost to the attack.
    let state = pb::inspect_client::InspectClient::new(channel_to(&url).await.expect("connect"))
        .get_entity_state(pb::GetEntityStateRequest {
            sku: 2,
            location: 1,
        })
        .await
        .expect("inspect")
        .into_inner();
    assert_eq!((state.applied_entries, state.on_hand), (2, -2), "{state:?}");

    assert_private(&data_dir);
    child.kill().expect("kill");
    child.wait().expect("reap");
}
