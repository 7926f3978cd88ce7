//! The `stockgrid` command as a user runs it: a real process, real files, a real store on
//! disk. (The gRPC end-to-end tests of the service are in `tests/service/`.)

use std::path::Path;
use std::process::{Command, Output};

fn stockgrid(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stockgrid"))
        .args(arguments)
        .output()
        .expect("run stockgrid")
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/hand-checked")
        .join(name)
        .display()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command failed and its error output says `needle`.
fn assert_fails_saying(output: &Output, needle: &str) {
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "expected a failure: {stderr}");
    assert!(stderr.contains(needle), "{stderr} should say {needle}");
}

#[test]
fn replay_then_inspect_the_hand_checked_example() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let answers = dir.path().join("answers.jsonl");
    let quarantine = dir.path().join("quarantined.jsonl");
    let data = dir.path().join("data");
    let output = stockgrid(&[
        "replay",
        "--events",
        &example("events.jsonl"),
        "--queries",
        &example("queries.jsonl"),
        "--locations",
        &example("locations.jsonl"),
        "--out",
        answers.to_str().expect("utf-8 path"),
        "--engine",
        "durable",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--quarantine-out",
        quarantine.to_str().expect("utf-8 path"),
    ]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("applied 4, duplicates 1, quarantined 1"),
        "{stdout}"
    );
    assert!(stdout.contains("quarantined TOO_LATE: 1"), "{stdout}");
    let answers = std::fs::read_to_string(&answers).expect("answers");
    let lines: Vec<serde_json::Value> = answers
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["expected_on_hand"], 13.0);
    assert_eq!(lines[0]["available"], true);
    assert_eq!(lines[1]["expected_on_hand"], 13.0);
    assert_eq!(lines[1]["available"], false);
    let quarantined = std::fs::read_to_string(&quarantine).expect("quarantine file");
    assert!(
        quarantined.contains("\"event_id\":\"a1\"") && quarantined.contains("TOO_LATE"),
        "{quarantined}"
    );

    let inspected = stockgrid(&[
        "inspect",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--sku",
        "42",
        "--location",
        "7",
    ]);
    let stdout = text(&inspected.stdout);
    assert!(
        inspected.status.success(),
        "{stdout}{}",
        text(&inspected.stderr)
    );
    assert!(stdout.contains("on_hand 13"), "{stdout}");
    assert!(stdout.contains("quarantined TOO_LATE event a1"), "{stdout}");
    assert!(stdout.contains("last anchor: count 10 units"), "{stdout}");
}

#[test]
fn bad_input_names_the_file_line_and_field_and_fails() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let events = dir.path().join("events.jsonl");
    let good = std::fs::read_to_string(example("events.jsonl")).expect("example");
    std::fs::write(&events, good.replace("\"qty\":5", "\"qty\":-5")).expect("write");
    let answers = dir.path().join("answers.jsonl");
    let output = stockgrid(&[
        "replay",
        "--events",
        events.to_str().expect("utf-8 path"),
        "--queries",
        &example("queries.jsonl"),
        "--out",
        answers.to_str().expect("utf-8 path"),
    ]);
    assert_fails_saying(&output, "events.jsonl:5: field `qty`");
    assert!(!answers.exists());
}

#[test]
fn inspect_refuses_a_directory_without_a_store() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = stockgrid(&[
        "inspect",
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--sku",
        "1",
        "--location",
        "1",
    ]);
    assert_fails_saying(&output, "holds no stockgrid store");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "nothing created"
    );
}

#[test]
fn ml_mode_answers_with_the_shipped_model_and_a_bad_model_file_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let answers = dir.path().join("answers.jsonl");
    let (events, queries) = (example("events.jsonl"), example("queries.jsonl"));
    let replay = |extra: &[&str]| {
        let mut arguments = vec![
            "replay",
            "--events",
            &events,
            "--queries",
            &queries,
            "--out",
            answers.to_str().expect("utf-8 path"),
            "--mode",
            "ml",
        ];
        arguments.extend_from_slice(extra);
        stockgrid(&arguments)
    };
    let output = replay(&[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let answers_text = std::fs::read_to_string(&answers).expect("answers");
    assert_eq!(answers_text.lines().count(), 3);
    assert!(answers_text.contains("\"mode\":\"ml\""), "{answers_text}");

    let bad = dir.path().join("bad.model");
    std::fs::write(&bad, b"not a model").expect("write");
    let output = replay(&["--model", bad.to_str().expect("utf-8 path")]);
    assert_fails_saying(&output, "not a stockgrid model");
    let audit = dir.path().join("audit.jsonl");
    let output = replay(&[
        "--engine",
        "durable",
        "--audit-out",
        audit.to_str().expect("utf-8 path"),
    ]);
    assert_fails_saying(&output, "written by the in-memory replay");
}

#[test]
fn the_demo_plays_the_baseline_world_with_the_belief_live_and_its_checks_hold() {
    let output = stockgrid(&["demo", "--skus", "20", "--speed", "20000"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    for needle in [
        "events/s",
        "lookups/s",
        "decisions: ml (model sg1-",
        "regions answering by rules: none",
        "belief and ledger disagree on",
        "all checks hold",
    ] {
        assert!(stdout.contains(needle), "{stdout} should say {needle}");
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn sim_generate_names_a_bad_scenario_and_a_drill_plays_against_a_real_node() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let unknown = stockgrid(&[
        "sim",
        "generate",
        "--scenario",
        "no-such-scenario",
        "--seed",
        "1",
        "--out",
        &scratch.path().join("x").display().to_string(),
    ]);
    assert_fails_saying(&unknown, "not a built-in scenario (baseline, delayed-scans");

    let report = scratch.path().join("drill");
    let output = stockgrid(&[
        "sim",
        "drill",
        "--scenario",
        "regional-outage",
        "--skus",
        "3",
        "--days",
        "4",
        "--speed",
        "40000",
        "--report",
        &report.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("drill.json")).expect("drill.json"))
            .expect("json");
    let buckets = json["buckets"].as_array().expect("buckets");
    let sum = |field: &str| {
        buckets
            .iter()
            .map(|b| b[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("errors"), 0, "{}", text(&output.stdout));
    assert!(
        sum("queries") > 50,
        "queries were answered: {}",
        sum("queries")
    );
    assert!(sum("events") > 500, "events were acked: {}", sum("events"));
    assert!(sum("health_checks") > 0 && sum("serving") == sum("health_checks"));
    let png = std::fs::read(report.join("drill.png")).expect("drill.png");
    assert!(png.starts_with(b"\x89PNG"));
}
