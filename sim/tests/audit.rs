//! Audit replay on a simulator run: every promise the ml replay made is rebuilt from the
//! event log alone and recomputed bit for bit; a tampered record is caught.

use std::sync::Arc;

use stockgrid_actors::EngineConfig;
use stockgrid_actors::audit::{AuditRecord, audit_replay};
use stockgrid_actors::decision::{DecisionMode, SafetyStock};
use stockgrid_actors::domain::Surface;
use stockgrid_actors::replay::{
    ReplayOptions, read_events, read_locations, read_queries, run_replay,
};
use stockgrid_inference::model::Model;
use stockgrid_sim::files::{GenerateOptions, run_generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_of_a_run_replays_bit_identical() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let run = scratch.path().join("run");
    run_generate(&GenerateOptions {
        scenario: "baseline".to_owned(),
        seed: 1003,
        out: run.clone(),
        traces: None,
        skus: Some(8),
        threads: 2,
    })
    .expect("generate");
    let model = Arc::new(Model::shipped().expect("shipped model"));
    let audit_path = scratch.path().join("audit.jsonl");
    run_replay(
        &ReplayOptions {
            events: run.join("events.jsonl"),
            queries: run.join("queries.jsonl"),
            locations: Some(run.join("locations.jsonl")),
            out: scratch.path().join("ml.jsonl"),
            mode: DecisionMode::Ml,
            safety_stock: SafetyStock::uniform(0),
            store: None,
            engine: EngineConfig::default(),
            in_memory: true,
            model: Some(Arc::clone(&model)),
            audit_out: Some(audit_path.clone()),
            audit_item_page_rate: 0.05,
        },
        |_| {},
    )
    .await
    .expect("replay");

    let records: Vec<AuditRecord> = std::fs::read_to_string(&audit_path)
        .expect("audit file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("audit record"))
        .collect();
    let queries = read_queries(&run.join("queries.jsonl")).expect("queries");
    let promises = queries
        .iter()
        .filter(|q| matches!(q.surface, Surface::Pickup | Surface::Delivery))
        .count();
    let audited_promises = records
        .iter()
        .filter(|r| matches!(r.surface, Surface::Pickup | Surface::Delivery))
        .count();
    assert!(promises > 100, "{promises} promises");
    assert_eq!(audited_promises, promises, "every promise is audited");
    let item_pages = records.len() - audited_promises;
    assert!(item_pages > 0, "item-page decisions are sampled");
    assert!(records.iter().all(|r| r.decision.mode == DecisionMode::Ml));
    assert!(records.iter().any(|r| !r.features.is_empty()));

    let events = read_events(&run.join("events.jsonl")).expect("events");
    let locations = read_locations(&run.join("locations.jsonl")).expect("locations");
    let ledger = EngineConfig::default().ledger;
    let safety = SafetyStock::uniform(0);
    let checks = audit_replay(
        &records,
        &events,
        &locations,
        &ledger,
        Some(&model),
        &safety,
    )
    .expect("rebuild");
    assert_eq!(checks.len(), records.len());
    for check in &checks {
        assert!(
            check.differences.is_empty(),
            "{}: {:?}",
            check.decision_id,
            check.differences
        );
    }

    // The check can fail: a nudged probability, a feature, or other inputs differ.
    let mut tampered = records[..3].to_vec();
    tampered[0].decision.probability =
        f64::from_bits(tampered[0].decision.probability.to_bits() ^ 1);
    if let Some(feature) = tampered[1].features.first_mut() {
        *feature += 1e-12;
    } else {
        tampered[1].decision.available = !tampered[1].decision.available;
    }
    tampered[2].inputs_digest = "0000000000000000".to_owned();
    let checks = audit_replay(
        &tampered,
        &events,
        &locations,
        &ledger,
        Some(&model),
        &safety,
    )
    .expect("rebuild");
    assert!(
        checks.iter().all(|check| !check.differences.is_empty()),
        "{checks:?}"
    );
}
