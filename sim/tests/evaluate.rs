//! `sim evaluate` on a real run: the engine's rules answers (through `stockgrid replay`'s
//! code) against the truth, and the report a user opens.

use stockgrid_actors::EngineConfig;
use stockgrid_actors::decision::{DecisionMode, SafetyStock};
use stockgrid_actors::replay::{ReplayOptions, run_replay};
use stockgrid_sim::evaluate::{AnswersSpec, evaluate};
use stockgrid_sim::files::{GenerateOptions, run_generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_answers_are_the_ledger_baseline_and_the_report_has_its_plots() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let run = scratch.path().join("run");
    run_generate(&GenerateOptions {
        scenario: "regional-outage".to_owned(),
        seed: 1002,
        out: run.clone(),
        traces: None,
        skus: Some(6),
        threads: 2,
    })
    .expect("generate");
    let mut engine = EngineConfig::default();
    engine.log_retention_ms = engine.identity_retention_ms();
    run_replay(
        &ReplayOptions {
            events: run.join("events.jsonl"),
            queries: run.join("queries.jsonl"),
            locations: Some(run.join("locations.jsonl")),
            out: run.join("rules.jsonl"),
            mode: DecisionMode::Rules,
            safety_stock: SafetyStock::uniform(0),
            store: None,
            engine,
            in_memory: false,
            model: None,
            audit_out: None,
            audit_item_page_rate: 0.0,
        },
        |_| {},
    )
    .await
    .expect("replay");

    let metrics = evaluate(
        std::slice::from_ref(&run),
        &[AnswersSpec::parse("rules=rules.jsonl")],
        2,
    )
    .expect("evaluate");
    let result = &metrics.runs[0];
    assert_eq!(result.scenario, "regional-outage");
    let method = |name: &str| {
        result
            .methods
            .iter()
            .find(|m| m.method == name)
            .unwrap_or_else(|| panic!("no method {name}"))
    };
    let rules = method("rules");
    let ledger = method("ledger+ss0");
    let safer = method("ledger+ss3");
    for surface in ["item_page", "pickup", "delivery"] {
        let engine_counts = &rules.surfaces[surface].overall.counts;
        // The evaluator's own ledger (the pure core, fed as replay feeds the engine) and the
        // engine's answers agree query by query, so their counts are equal.
        assert_eq!(
            engine_counts, &ledger.surfaces[surface].overall.counts,
            "{surface}: the engine's rules answers and the ledger baseline differ"
        );
        assert!(engine_counts.queries > 100, "{surface}: {engine_counts:?}");
        assert!(
            engine_counts.false_positives > 0,
            "{surface}: the naive ledger breaks some promises in this world"
        );
        let safe = &safer.surfaces[surface].overall;
        assert!(safe.recall <= rules.surfaces[surface].overall.recall);
        let calibration = rules.surfaces[surface]
            .calibration
            .as_ref()
            .expect("answers have a calibration");
        assert!(calibration.brier > 0.0 && calibration.ece >= 0.0);
        assert!(!rules.surfaces[surface].curve.is_empty());
    }

    let report = scratch.path().join("report");
    stockgrid_sim::report::write_report(&metrics, &report).expect("report");
    let html = std::fs::read_to_string(report.join("report.html")).expect("html");
    for image in [
        "01-regional-outage-pr.png",
        "01-regional-outage-reliability.png",
    ] {
        assert!(html.contains(image), "the page shows {image}");
        let png = std::fs::read(report.join(image)).expect("png");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{image} is a PNG");
        assert!(
            png.len() > 10_000,
            "{image} has a drawing ({} bytes)",
            png.len()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("metrics.json")).expect("json"))
            .expect("metrics.json parses");
    assert_eq!(
        json["runs"][0]["methods"].as_array().map(Vec::len),
        Some(11)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_answers_are_the_same_through_the_durable_engine_and_in_memory() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let run = scratch.path().join("run");
    run_generate(&GenerateOptions {
        scenario: "stale-warehouse-feed".to_owned(),
        seed: 1004,
        out: run.clone(),
        traces: None,
        skus: Some(4),
        threads: 2,
    })
    .expect("generate");
    let model =
        std::sync::Arc::new(stockgrid_inference::model::Model::shipped().expect("shipped model"));
    let mut engine = EngineConfig::default();
    engine.log_retention_ms = engine.identity_retention_ms();
    let mut answers = Vec::new();
    for in_memory in [true, false] {
        let out = run.join(format!("ml-{in_memory}.jsonl"));
        run_replay(
            &ReplayOptions {
                events: run.join("events.jsonl"),
                queries: run.join("queries.jsonl"),
                locations: Some(run.join("locations.jsonl")),
                out: out.clone(),
                mode: DecisionMode::Ml,
                safety_stock: SafetyStock::uniform(0),
                store: None,
                engine: engine.clone(),
                in_memory,
                model: Some(std::sync::Arc::clone(&model)),
                audit_out: None,
                audit_item_page_rate: 0.0,
            },
            |_| {},
        )
        .await
        .expect("replay");
        answers.push(std::fs::read_to_string(out).expect("answers"));
    }
    assert!(answers[0].lines().count() > 100);
    assert!(answers[0].contains("\"mode\":\"ml\""));
    // Same entity code, same feed health, same decision: byte-identical answers.
    assert_eq!(answers[0], answers[1]);
}
