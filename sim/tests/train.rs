//! `stockgrid train` on small simulator runs: a valid model with a threshold per surface,
//! the same bytes twice, evaluation seeds refused, and the training rows in Parquet.

use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use stockgrid_inference::features::FEATURE_NAMES;
use stockgrid_inference::model::Model;
use stockgrid_sim::files::{GenerateOptions, run_generate};
use stockgrid_sim::train::{ScorerKind, TrainOptions, default_targets, run_train};

fn generate(dir: &Path, scenario: &str, seed: u64) -> PathBuf {
    let out = dir.join(format!("{scenario}-{seed}"));
    run_generate(&GenerateOptions {
        scenario: scenario.to_owned(),
        seed,
        out: out.clone(),
        traces: None,
        skus: Some(4),
        threads: 2,
    })
    .expect("generate");
    out
}

fn options(dirs: Vec<PathBuf>, out: PathBuf, export: Option<PathBuf>) -> TrainOptions {
    TrainOptions {
        dirs,
        out,
        targets: default_targets(),
        export,
        command: "stockgrid train (test)".to_owned(),
        scorer: ScorerKind::BoostedTrees,
    }
}

#[test]
fn train_writes_a_reproducible_model_and_parquet_rows() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dirs = vec![
        generate(scratch.path(), "baseline", 7),
        generate(scratch.path(), "baseline", 107),
    ];
    let first = scratch.path().join("first.model");
    let rows = scratch.path().join("rows.parquet");
    let report = run_train(
        &options(dirs.clone(), first.clone(), Some(rows.clone())),
        |_| {},
    )
    .expect("train");
    let model = Model::load(&first).expect("the written model loads");
    assert_eq!(model, report.model);
    for surface in [
        "item_page",
        "pickup",
        "delivery",
        "substitution",
        "replenishment",
    ] {
        let threshold = model.threshold(surface).expect("a threshold per surface");
        assert!((0.0..=1.0).contains(&threshold), "{surface}: {threshold}");
    }
    assert_eq!(model.training.training_runs, vec!["baseline seed 7"]);
    assert_eq!(model.training.calibration_runs, vec!["baseline seed 107"]);
    assert!(!model.drift.features.is_empty());

    let second = scratch.path().join("second.model");
    run_train(&options(dirs.clone(), second.clone(), None), |_| {}).expect("train again");
    assert_eq!(
        std::fs::read(&first).expect("first"),
        std::fs::read(&second).expect("second"),
        "the same runs give the same model, byte for byte"
    );

    let reader =
        SerializedFileReader::new(std::fs::File::open(&rows).expect("rows")).expect("parquet");
    let metadata = reader.metadata().file_metadata();
    assert_eq!(
        usize::try_from(metadata.num_rows()).expect("rows"),
        model.training.training_rows,
        "one row per training query"
    );
    let columns: Vec<String> = metadata
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(
        &columns[..5],
        ["scenario", "seed", "surface", "quantity", "label"]
    );
    assert_eq!(&columns[5..5 + FEATURE_NAMES.len()], FEATURE_NAMES);

    let evaluation = generate(scratch.path(), "baseline", 1000);
    let error = run_train(
        &options(
            vec![dirs[0].clone(), evaluation],
            scratch.path().join("x.model"),
            None,
        ),
        |_| {},
    )
    .expect_err("evaluation seeds are refused");
    assert!(error.to_string().contains("evaluation seed"), "{error}");
}
