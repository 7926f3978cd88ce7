//! Crash safety: the engine runs in a child process (this test binary, re-executed), which
//! ingests batches and prints each acknowledgement; the parent SIGKILLs it mid-stream, then
//! reopens the store and checks that every acknowledged event is applied exactly once.
//!
//! The child prints `sent N` before handing batch N to the engine and `acked N` after the
//! engine answered it, so the parent knows which batches were acknowledged (must be there)
//! and which were in flight (may be there, at most once).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use stockgrid_actors::domain::{Arrival, Event, EventKind, PairKey, Source};
use stockgrid_actors::ledger::Outcome;
use stockgrid_actors::time::{MINUTE_MS, SimulatedClock, Timestamp};
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_storage::{EmbeddedStore, Store};

const CHILD_ENV: &str = "STOCKGRID_CRASH_TEST_CHILD_DIR";
const PAIRS: u64 = 50;
const BATCH_EVENTS: usize = 100;
const T0: Timestamp = Timestamp(1_772_445_600_000);

/// Batch `n`: one receipt of one unit per event, spread over the pairs. Deterministic, so
/// the parent can rebuild exactly what the child sent.
fn batch(n: usize) -> Vec<Arrival> {
    (0..BATCH_EVENTS)
        .map(|i| {
            let id = n * BATCH_EVENTS + i;
            let time = T0.plus_ms((n as i64) * MINUTE_MS);
            let event = Event::new(
                format!("receipt-{id}"),
                Source::Receiving,
                EventKind::Receipt,
                PairKey::new(id as u64 % PAIRS, 1),
                1,
                time,
            );
            Arrival {
                event,
                arrival_time: time,
            }
        })
        .collect()
}

fn config() -> EngineConfig {
    // Frequent snapshots so the crash lands between snapshots and log tails.
    EngineConfig {
        shard_count: 4,
        snapshot_every_records: 7,
        ..EngineConfig::default()
    }
}

async fn run_child(directory: &str) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(directory).expect("open store"));
    let clock = SimulatedClock::starting_at(T0);
    let engine = Engine::start(store, Arc::new(clock.clone()), config())
        .await
        .expect("start engine");
    let mut stdout = std::io::stdout();
    for n in 0.. {
        let arrivals = batch(n);
        clock.advance_to(arrivals[0].arrival_time);
        writeln!(stdout, "sent {n}")
            .and_then(|()| stdout.flush())
            .expect("write");
        let results = engine.ingest(arrivals).await.expect("ingest");
        assert!(
            results.iter().all(|r| matches!(r, Ok(Outcome::Applied))),
            "{results:?}"
        );
        writeln!(stdout, "acked {n}")
            .and_then(|()| stdout.flush())
            .expect("write");
    }
}

async fn run_parent() -> Result<(), String> {
    let directory = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(CHILD_ENV, directory.path())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut sent, mut acked) = (0usize, 0usize);
    // Let it acknowledge a good number of batches, then kill it without warning.
    while acked < 40 {
        let line = lines
            .next()
            .ok_or("child exited early")?
            .map_err(|e| e.to_string())?;
        match line.split_once(' ') {
            Some(("sent", n)) => sent = n.parse::<usize>().map_err(|e| e.to_string())? + 1,
            Some(("acked", n)) => acked = n.parse::<usize>().map_err(|e| e.to_string())? + 1,
            _ => return Err(format!("unexpected child output {line:?}")),
        }
    }
    child.kill().map_err(|e| format!("kill child: {e}"))?; // SIGKILL on Unix.
    child.wait().map_err(|e| e.to_string())?;
    // Output already written by the child before the kill still counts.
    for line in lines.map_while(Result::ok) {
        match line.split_once(' ') {
            Some(("sent", n)) => {
                sent = sent.max(n.parse::<usize>().map_err(|e| e.to_string())? + 1)
            }
            Some(("acked", n)) => {
                acked = acked.max(n.parse::<usize>().map_err(|e| e.to_string())? + 1)
            }
            _ => {}
        }
    }

    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(directory.path()).map_err(|e| format!("reopen: {e}"))?);
    let clock = SimulatedClock::starting_at(T0.plus_ms(sent as i64 * MINUTE_MS));
    let engine = Engine::start(store, Arc::new(clock), config())
        .await
        .map_err(|e| e.to_string())?;
    // Every acknowledged event is there: sending it again is a duplicate.
    for n in 0..acked {
        let results = engine.ingest(batch(n)).await.map_err(|e| e.to_string())?;
        if let Some(bad) = results
            .iter()
            .find(|r| !matches!(r, Ok(Outcome::Duplicate)))
        {
            return Err(format!(
                "acknowledged batch {n} answered {bad:?} after the crash"
            ));
        }
    }
    // In-flight batches may or may not have landed; send them again so each is there once.
    for n in acked..sent {
        engine.ingest(batch(n)).await.map_err(|e| e.to_string())?;
    }
    // Applied exactly once: each pair holds exactly one unit per event ever sent to it.
    for sku in 0..PAIRS {
        let expected = (0..sent * BATCH_EVENTS)
            .filter(|id| *id as u64 % PAIRS == sku)
            .count() as i64;
        let view = engine
            .read_view(PairKey::new(sku, 1))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("pair missing")?;
        if i64::from(view.on_hand_units) != expected {
            return Err(format!(
                "sku {sku}: on hand {} after recovery, expected {expected}",
                view.on_hand_units
            ));
        }
    }
    engine.shutdown().await.map_err(|e| e.to_string())?;
    eprintln!(
        "crash test: killed after {acked} acknowledged and {sent} sent batches; all acknowledged events applied once"
    );
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(directory) = std::env::var(CHILD_ENV) {
        runtime.block_on(run_child(&directory));
        return;
    }
    println!("running 1 test");
    match runtime.block_on(run_parent()) {
        Ok(()) => {
            println!("test crash_after_acknowledgements_loses_nothing ... ok");
            println!("1 passed, 0 failed");
        }
        Err(error) => {
            println!("test crash_after_acknowledgements_loses_nothing ... FAILED: {error}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}
