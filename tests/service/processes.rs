//! Real `stockgrid serve` processes: SIGKILL, then a restart on the same data directory
//! has every acknowledged event and reservation, and reservations whose TTL passed while
//! the node was down come back EXPIRED; `stockgrid audit replay --store` then replays
//! the promises made before the crash from the stopped node's log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stockgrid_api::proto::v1 as pb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{event, wall_now};

/// Spawns `command` (a `stockgrid serve`, perhaps behind a shell), and answers the child and
/// the address it printed once listening; its stderr keeps being drained.
pub fn spawn_serve(command: Command) -> (Child, String) {
    let (child, address, _) = spawn_serve_logged(command);
    (child, address)
}

/// As [`spawn_serve`], keeping every line the process writes to stderr after it listens (its
/// warnings) in the answered log.
pub fn spawn_serve_logged(
    mut command: Command,
) -> (Child, String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stockgrid serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .expect("read stderr");
        if let Some(rest) = line.strip_prefix("stockgrid serving on ") {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.by_ref().map_while(Result::ok) {
            if let Ok(mut kept) = kept.lock() {
                kept.push(line);
            }
        }
    });
    (child, address, log)
}

/// The store a `stockgrid` process is pointed at: its `--store` argument and the
/// environment it needs (a database password).
#[derive(Clone, Debug)]
pub struct ProcessStore {
    pub location: String,
    pub environment: Vec<(String, String)>,
}

impl ProcessStore {
    pub fn directory(path: &Path) -> Self {
        Self {
            location: path.display().to_string(),
            environment: Vec::new(),
        }
    }

    fn apply(&self, command: &mut Command) {
        command.arg("--store").arg(&self.location);
        for (name, value) in &self.environment {
            command.env(name, value);
        }
    }
}

/// A `stockgrid serve` child process and its address.
struct ServeProcess {
    child: Child,
    url: String,
}

impl ServeProcess {
    fn start(store: &ProcessStore) -> ServeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stockgrid"));
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        store.apply(&mut command);
        let (child, address) = spawn_serve(command);
        ServeProcess {
            child,
            url: format!("http://{address}"),
        }
    }

    async fn wait_serving(&self) {
        let mut health = HealthClient::new(crate::connect(&self.url).await);
        for _ in 0..200 {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("health")
                .into_inner();
            if status.status == ServingStatus::Serving as i32 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node never became SERVING");
    }

    fn kill_hard(mut self) {
        // SIGKILL: no shutdown code runs.
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        self.child.wait().expect("wait for a clean exit")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_and_ttls_run_across_the_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    sigkill_and_restart(&ProcessStore::directory(dir.path())).await;
}

/// A node on `store` is killed (SIGKILL) after acknowledging events and reservations, and
/// restarted on the same store: every acknowledged event is there exactly once, the
/// reservation whose TTL passed meanwhile is EXPIRED, the other still holds, a retried
/// Reserve answers the same reservation, and `audit replay` rebuilds each promise bit for
/// bit from the stopped node's log.
pub async fn sigkill_and_restart(store: &ProcessStore) {
    let node = ServeProcess::start(store);
    node.wait_serving().await;
    let now = wall_now();
    let mut ingest = pb::ingest_client::IngestClient::connect(node.url.clone())
        .await
        .expect("connect");
    let mut events = vec![event(
        "count",
        "store_inventory",
        "count",
        5,
        2,
        40,
        now.plus_ms(-60_000),
    )];
    events.extend((0..200).map(|i| event(&format!("sale-{i}"), "pos", "sale", 5, 2, 0, now)));
    events.push(event("sale-last", "pos", "sale", 5, 2, 3, now));
    let acked = ingest
        .ingest_events(pb::IngestEventsRequest { events })
        .await
        .expect("ingest")
        .into_inner();
    assert!(
        acked
            .results
            .iter()
            .all(|r| r.status == pb::EventStatus::Accepted as i32)
    );
    let mut reservations = pb::reservations_client::ReservationsClient::connect(node.url.clone())
        .await
        .expect("connect");
    let request = |id: &str, qty: i64, ttl_seconds: u32| pb::ReserveRequest {
        request_id: id.to_owned(),
        lines: vec![pb::ReservationLine {
            sku: 5,
            location: 2,
            qty,
        }],
        surface: pb::Surface::Pickup as i32,
        ttl_seconds,
    };
    let long = reservations
        .reserve(request("long", 4, 3_600))
        .await
        .expect("reserve")
        .into_inner();
    let short = reservations
        .reserve(request("short", 6, 1))
        .await
        .expect("reserve")
        .into_inner();
    let promised_lines = [
        format!("{}/5-2", long.reservation_id),
        format!("{}/5-2", short.reservation_id),
    ];
    node.kill_hard();

    // Down for longer than the short reservation's TTL.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let node = ServeProcess::start(store);
    node.wait_serving().await;
    let state = pb::inspect_client::InspectClient::connect(node.url.clone())
        .await
        .expect("connect")
        .get_entity_state(pb::GetEntityStateRequest {
            sku: 5,
            location: 2,
        })
        .await
        .expect("inspect")
        .into_inner();
    assert_eq!(
        state.on_hand, 37,
        "the count and the acknowledged sale survived"
    );
    assert_eq!(state.applied_entries, 202);
    assert_eq!(state.reserved, 4, "only the long reservation still holds");
    let mut reservations = pb::reservations_client::ReservationsClient::connect(node.url.clone())
        .await
        .expect("connect");
    let get = |id: String| pb::GetReservationRequest { reservation_id: id };
    let long_now = reservations
        .get_reservation(get(long.reservation_id))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(long_now.state, pb::ReservationState::Pending as i32);
    let short_now = reservations
        .get_reservation(get(short.reservation_id))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        (short_now.state, short_now.release_reason.as_str()),
        (pb::ReservationState::Expired as i32, "EXPIRED")
    );
    // A retried Reserve after the crash answers the same reservation, not a second hold.
    let retried = reservations
        .reserve(request("long", 4, 3_600))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.state, pb::ReservationState::Pending as i32);
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status}");

    // Each promise made before the crash replays bit for bit from the node's own log, the
    // hold the restart expired included.
    for decision_id in &promised_lines {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stockgrid"));
        command.args(["audit", "replay", decision_id]);
        store.apply(&mut command);
        let output = command.output().expect("run stockgrid audit replay");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{decision_id}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("bit-identical"), "{stdout}");
        assert!(
            stdout.contains("rebuilt from the start of its log"),
            "{stdout}"
        );
    }
}
