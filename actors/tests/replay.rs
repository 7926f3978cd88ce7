//! `stockgrid replay` through the library: the hand-checked sequence of the engine issue,
//! and input errors that name the file, the line and the field.

use std::path::Path;

use stockgrid_actors::EngineConfig;
use stockgrid_actors::decision::{DecisionMode, SafetyStock};
use stockgrid_actors::replay::{ReplayError, ReplayOptions, run_replay};
use stockgrid_model::formats::FormatError;

fn options(dir: &Path, events: &str, queries: &str) -> ReplayOptions {
    std::fs::write(dir.join("events.jsonl"), events).expect("write events");
    std::fs::write(dir.join("queries.jsonl"), queries).expect("write queries");
    ReplayOptions {
        events: dir.join("events.jsonl"),
        queries: dir.join("queries.jsonl"),
        locations: None,
        out: dir.join("answers.jsonl"),
        mode: DecisionMode::Rules,
        safety_stock: SafetyStock::uniform(0),
        store: Some(stockgrid_storage::StoreLocation::Embedded(dir.join("data"))),
        engine: EngineConfig::default(),
        in_memory: false,
        model: None,
        audit_out: None,
        audit_item_page_rate: 0.0,
    }
}

fn read_answers(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("answers")
        .lines()
        .map(|line| serde_json::from_str(line).expect("answer json"))
        .collect()
}

/// The hand-checked sequence, from the example files the README points at.
const HAND_CHECKED_EVENTS: &str = include_str!("../../examples/hand-checked/events.jsonl");
const HAND_CHECKED_QUERIES: &str = include_str!("../../examples/hand-checked/queries.jsonl");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_checked_replay() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = options(dir.path(), HAND_CHECKED_EVENTS, HAND_CHECKED_QUERIES);
    let summary = run_replay(&options, |_| {}).await.expect("replay");
    assert_eq!((summary.applied, summary.duplicates), (4, 1));
    assert_eq!(summary.quarantined_by_reason.get("TOO_LATE"), Some(&1));
    let late = &summary.quarantined[0];
    assert_eq!((late.event_id.as_str(), late.line), ("a1", 6));
    assert!(
        late.detail
            .contains("arrived 30 h after its event time, beyond the lateness bound of 24 h"),
        "{}",
        late.detail
    );

    let answers: Vec<serde_json::Value> = std::fs::read_to_string(&options.out)
        .expect("answers")
        .lines()
        .map(|line| serde_json::from_str(line).expect("answer json"))
        .collect();
    assert_eq!(answers.len(), 3);
    for (answer, (id, available)) in
        answers
            .iter()
            .zip([("q1", true), ("q2", false), ("q3", false)])
    {
        assert_eq!(answer["query_id"], id);
        assert_eq!(answer["available"], available, "{answer}");
        assert_eq!(answer["mode"], "rules");
    }
    assert_eq!(answers[0]["expected_on_hand"], 13.0);
    assert_eq!(answers[0]["probability"], 1.0);
    assert_eq!(answers[1]["expected_on_hand"], 13.0);
    assert_eq!(answers[1]["probability"], 0.0);
    assert_eq!(answers[2]["reason"], "NO_RECORD");

    // The quarantined event stays visible, with its reason, in the pair's durable state.
    let store = std::sync::Arc::new(
        stockgrid_storage::EmbeddedStore::open(dir.path().join("data")).expect("reopen"),
    );
    let engine = stockgrid_actors::Engine::start(
        store,
        std::sync::Arc::new(stockgrid_actors::time::WallClock),
        EngineConfig::default(),
    )
    .await
    .expect("engine");
    let report = engine
        .inspect(stockgrid_actors::domain::PairKey::new(42, 7))
        .await
        .expect("inspect")
        .expect("pair exists");
    assert_eq!(report.view.on_hand_units, 13);
    assert_eq!(report.view.quarantined_entries, 1);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].entry.event.event_id, "a1");
    assert_eq!(report.quarantined[0].reason.code(), "TOO_LATE");
    engine.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_errors_name_file_line_and_field() {
    let cases = [
        (
            HAND_CHECKED_EVENTS.replace(r#""qty":5"#, r#""qty":"five""#),
            HAND_CHECKED_QUERIES.to_owned(),
            "events.jsonl:5: field `qty`",
        ),
        (
            HAND_CHECKED_EVENTS.replace(r#""kind":"receipt""#, r#""kind":"gift""#),
            HAND_CHECKED_QUERIES.to_owned(),
            "events.jsonl:5: field `kind`",
        ),
        (
            HAND_CHECKED_EVENTS.replace(
                r#""ingest_time":"2026-03-02T10:11:00Z""#,
                r#""ingest_time":"soon""#,
            ),
            HAND_CHECKED_QUERIES.to_owned(),
            "events.jsonl:5: field `ingest_time`",
        ),
        (
            HAND_CHECKED_EVENTS.to_owned() + "not json\n",
            HAND_CHECKED_QUERIES.to_owned(),
            "events.jsonl:7: field `<line>`",
        ),
        (
            HAND_CHECKED_EVENTS.to_owned(),
            HAND_CHECKED_QUERIES.replace(r#""qty":14"#, r#""qty":0"#),
            "queries.jsonl:2: field `qty`",
        ),
        (
            HAND_CHECKED_EVENTS.to_owned(),
            HAND_CHECKED_QUERIES.replace(r#""surface":"pickup""#, r#""surface":"kiosk""#),
            "queries.jsonl:1: field `surface`",
        ),
        (
            HAND_CHECKED_EVENTS.to_owned(),
            HAND_CHECKED_QUERIES.replace(r#""query_id":"q2""#, r#""query_id":"q1""#),
            "queries.jsonl:2: field `query_id`",
        ),
    ];
    for (events, queries, expected) in cases {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = options(dir.path(), &events, &queries);
        let error = run_replay(&options, |_| {}).await.expect_err(expected);
        assert!(
            matches!(error, ReplayError::Input(FormatError::Input { .. })),
            "{error}"
        );
        assert!(
            error.to_string().contains(expected),
            "{error} should contain {expected}"
        );
        assert!(!options.out.exists(), "no answers file after a failed run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_replay_answers_as_the_durable_engine_does() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut options = options(dir.path(), HAND_CHECKED_EVENTS, HAND_CHECKED_QUERIES);
    let durable = run_replay(&options, |_| {}).await.expect("durable replay");
    let durable_answers = read_answers(&options.out);
    options.in_memory = true;
    options.out = dir.path().join("memory.jsonl");
    let memory = run_replay(&options, |_| {})
        .await
        .expect("in-memory replay");
    assert_eq!(read_answers(&options.out), durable_answers);
    assert_eq!(
        (
            memory.applied,
            memory.duplicates,
            memory.quarantined_by_reason
        ),
        (
            durable.applied,
            durable.duplicates,
            durable.quarantined_by_reason
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_mode_answers_with_the_shipped_model_and_needs_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut options = options(dir.path(), HAND_CHECKED_EVENTS, HAND_CHECKED_QUERIES);
    options.mode = DecisionMode::Ml;
    options.in_memory = true;
    let error = run_replay(&options, |_| {}).await.expect_err("no model");
    assert!(error.to_string().contains("needs a model"), "{error}");

    let model = stockgrid_inference::model::Model::shipped().expect("shipped model");
    options.model = Some(std::sync::Arc::new(model));
    run_replay(&options, |_| {}).await.expect("ml replay");
    let answers = read_answers(&options.out);
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        assert_eq!(answer["mode"], "ml");
        let probability = answer["probability"].as_f64().expect("probability");
        assert!((0.0..=1.0).contains(&probability), "{answer}");
    }
    // 14 units asked of a record of 13: the belief does not promise what was never there.
    assert_eq!(answers[1]["available"], false, "{}", answers[1]);
    assert_eq!(answers[2]["reason"], "NO_RECORD");
}
