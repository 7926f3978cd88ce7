//! Belief update per event, the ml decision per point, and the shipped trees scored over
//! varied rows (nested walk against the complete layout, side by side), on one core.
//!
//! `cargo bench -p stockgrid-inference --bench belief`

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use stockgrid_inference::belief::{
    BeliefStats, LedgerFacts, Observation, ObservationKind, compact_seconds,
};
use stockgrid_inference::claims::SourceClaims;
use stockgrid_inference::decide::decide;
use stockgrid_inference::features::Question;
use stockgrid_inference::hours::OpeningHours;
use stockgrid_inference::model::{Model, Scorer};
use stockgrid_inference::shared::{LocationFacts, SharedFacts};
use stockgrid_inference::trees::{Node, TreeEnsemble};

const NOW: i64 = 1_772_409_600_000;
const HOUR: i64 = 3_600_000;

fn bench(c: &mut Criterion) {
    c.bench_function("belief update (one sale)", |b| {
        let mut stats = BeliefStats::default();
        let mut time = NOW;
        b.iter(|| {
            time += 60_000;
            stats.observe(
                black_box(Observation::Sold {
                    units: 1,
                    record_before: 12,
                }),
                black_box(time),
                true,
            );
        });
        black_box(stats);
    });

    let model = Model::shipped().unwrap_or_else(|_| Model::prior());
    let mut stats = BeliefStats::default();
    for hour in 0..200 {
        stats.observe(
            Observation::Sold {
                units: 1,
                record_before: 20,
            },
            NOW - 400 * HOUR + hour * HOUR,
            true,
        );
    }
    // A WMS snapshot, then the count that anchors now: both sources have a claim.
    let mut claims = SourceClaims::default();
    claims.read(ObservationKind::Snapshot, 15, NOW - 400 * HOUR, 0, 15, true);
    claims.read(ObservationKind::Count, 12, NOW - 300 * HOUR, 15, 12, true);
    claims.delta(-5, NOW - 201 * HOUR, true);
    let facts = LedgerFacts {
        record: 7,
        reserved: 1,
        anchor: Some((ObservationKind::Count, 12, NOW - 300 * HOUR)),
        last_sale_ms: Some(NOW - 201 * HOUR),
        claims,
    };
    let mut location = LocationFacts {
        hours: OpeningHours::new("America/Chicago", 8, 22),
        expected_sources: 0b111,
        ..LocationFacts::default()
    };
    for day in 0..30 {
        for source in 0..3 {
            location
                .feeds
                .heard(source, NOW - (30 - day) * 24 * HOUR, &location.hours);
        }
    }
    // A location and SKU with history: a learned demand shape, losses and velocity.
    let mut shared = SharedFacts {
        location,
        ..SharedFacts::default()
    };
    for hour in 0..2_000 {
        let at = NOW - hour * 7 * HOUR / 3;
        shared.location.demand.record_sale(&location.hours, at);
        shared.sku.record_sale();
    }
    for pair in 0..40 {
        shared
            .sku
            .pair_first_seen(0, compact_seconds(NOW - (400 + pair) * HOUR));
        shared.location.losses.record(1, 12, 30 * 86_400);
        shared.sku.losses.record(0, 8, 20 * 86_400);
    }
    c.bench_function("ml decision (one point)", |b| {
        b.iter(|| {
            decide(
                black_box(&model),
                black_box(&stats),
                black_box(&facts),
                black_box(&shared),
                Question {
                    quantity: 2,
                    now_ms: NOW,
                },
                Some(0.9),
            )
        })
    });
}

/// 1,024 rows whose features sit near the trees' own thresholds (a varied workload: a row
/// repeated would let the branch predictor learn its path).
fn varied_rows(trees: &TreeEnsemble) -> Vec<Vec<f64>> {
    let mut thresholds: Vec<Vec<f64>> = vec![Vec::new(); trees.features];
    for tree in &trees.trees {
        for node in tree {
            if let Node::Split {
                feature, threshold, ..
            } = *node
            {
                thresholds[usize::from(feature)].push(threshold);
            }
        }
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..1_024)
        .map(|_| {
            thresholds
                .iter()
                .map(|cuts| {
                    let near = if cuts.is_empty() {
                        0.0
                    } else {
                        cuts[(next() % cuts.len() as u64) as usize]
                    };
                    near + ((next() % 2_001) as f64 / 1_000.0 - 1.0) * 0.01 * (1.0 + near.abs())
                })
                .collect()
        })
        .collect()
}

fn bench_trees(c: &mut Criterion) {
    let model = Model::shipped().expect("shipped model");
    let Scorer::BoostedTrees(trees) = &model.scorer else {
        return; // The shipped scorer is not trees: nothing to compare.
    };
    let rows = varied_rows(trees);
    let mut group = c.benchmark_group("shipped trees, 1,024 varied rows");
    group.bench_function("nested walk", |b| {
        b.iter(|| {
            rows.iter()
                .map(|row| trees.nested_log_odds(black_box(row)))
                .sum::<f64>()
        })
    });
    group.bench_function("complete layout", |b| {
        b.iter(|| {
            rows.iter()
                .map(|row| trees.log_odds(black_box(row)))
                .sum::<f64>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_trees);
criterion_main!(benches);
