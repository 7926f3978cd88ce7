//! `sim generate`: determinism and realism, on the committed scenario files.

use std::path::{Path, PathBuf};

use stockgrid_sim::files::{GenerateOptions, run_generate};

const FILES: &[&str] = &[
    "events.jsonl",
    "queries.jsonl",
    "truth.jsonl",
    "locations.jsonl",
    "scenario.toml",
    "manifest.json",
];

fn options(scenario: &str, seed: u64, out: &Path, threads: usize) -> GenerateOptions {
    GenerateOptions {
        scenario: scenario.to_owned(),
        seed,
        out: out.to_path_buf(),
        traces: None,
        skus: None,
        threads,
    }
}

/// The M5 traces beside the project (`../shared/data/m5`), or `STOCKGRID_M5_DIR`.
fn m5_dir() -> PathBuf {
    let dir = std::env::var_os("STOCKGRID_M5_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/m5"),
        PathBuf::from,
    );
    assert!(
        dir.join("calendar.csv").exists(),
        "the M5 traces are needed by this test and were not found at {} \
         (set STOCKGRID_M5_DIR to their folder)",
        dir.display()
    );
    dir
}

#[test]
fn the_same_seed_gives_byte_identical_files_whatever_the_threads() {
    let scratch = tempfile::tempdir().expect("temp dir");
    for scenario in ["baseline", "regional-outage"] {
        let one = scratch.path().join(format!("{scenario}-one"));
        let three = scratch.path().join(format!("{scenario}-three"));
        let other_seed = scratch.path().join(format!("{scenario}-other"));
        run_generate(&options(scenario, 1000, &one, 1)).expect("generate");
        run_generate(&options(scenario, 1000, &three, 3)).expect("generate");
        run_generate(&options(scenario, 1001, &other_seed, 2)).expect("generate");
        for file in FILES {
            let a = std::fs::read(one.join(file)).expect("read");
            let b = std::fs::read(three.join(file)).expect("read");
            assert!(!a.is_empty(), "{scenario}: {file} is empty");
            assert!(
                a == b,
                "{scenario}: {file} differs between two runs of one seed"
            );
        }
        for file in ["events.jsonl", "queries.jsonl", "truth.jsonl"] {
            let a = std::fs::read(one.join(file)).expect("read");
            let c = std::fs::read(other_seed.join(file)).expect("read");
            assert!(
                a != c,
                "{scenario}: {file} is the same for seeds 1000 and 1001"
            );
        }
    }
}

#[test]
fn the_files_follow_the_replay_format() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("run");
    let report = run_generate(&options("duplicate-storm", 7, &out, 2)).expect("generate");
    let events = stockgrid_actors::replay::read_events(&out.join("events.jsonl")).expect("events");
    let queries =
        stockgrid_actors::replay::read_queries(&out.join("queries.jsonl")).expect("queries");
    let locations =
        stockgrid_actors::replay::read_locations(&out.join("locations.jsonl")).expect("locations");
    assert_eq!(events.len(), report.events);
    assert_eq!(queries.len(), report.queries);
    assert_eq!(
        locations.len(),
        (4 + 3 + 3) + 3 + 3,
        "stores, FCs and warehouses"
    );
    assert!(
        events
            .windows(2)
            .all(|w| w[0].1.arrival_time <= w[1].1.arrival_time),
        "events are written in arrival order"
    );
    let duplicated = report.events - {
        let mut ids: Vec<(String, String)> = events
            .iter()
            .map(|(_, a)| (a.event.source.to_string(), a.event.event_id.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    assert!(
        duplicated * 5 > report.events,
        "duplicate-storm repeats about 30% of events, got {duplicated} of {}",
        report.events
    );
    let truth = std::fs::read_to_string(out.join("truth.jsonl")).expect("truth");
    assert_eq!(truth.lines().count(), queries.len());
    for (line, query) in truth.lines().zip(&queries) {
        let value: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(value["query_id"], query.query_id.as_str());
        assert!(value["true_on_hand"].as_i64().is_some_and(|t| t >= 0));
    }
}

#[test]
fn baseline_with_m5_traces_is_as_wrong_as_real_records() {
    let traces = m5_dir();
    let scratch = tempfile::tempdir().expect("temp dir");
    for seed in [1000, 1001] {
        assert_eq!(stockgrid_sim::seeds::purpose(seed), "evaluation");
        let mut options = options("baseline", seed, &scratch.path().join("run"), 0);
        options.traces = Some(traces.clone());
        let report = run_generate(&options).expect("generate");
        assert!(report.traces);
        assert!(report.queries > 10_000, "{} queries", report.queries);
        assert!(
            (0.40..=0.70).contains(&report.record_differs_share),
            "seed {seed}: record differs from truth at {:.1}% of query moments, expected 40-70%",
            100.0 * report.record_differs_share
        );
        assert!(
            (0.04..=0.12).contains(&report.truly_out_of_stock_share),
            "seed {seed}: {:.1}% of queries truly out of stock, expected 4-12%",
            100.0 * report.truly_out_of_stock_share
        );
    }
}
