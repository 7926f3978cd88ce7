//! The one feature definition: what the scorer sees of a pair at the moment of a question.
//!
//! Called online by the entity at decision time and offline by the training export, which
//! replays the event log through the same entity code, so a feature cannot differ between the
//! two (point-in-time by construction). Candidates - each source's claim of the quantity,
//! brought to now, with its age - are part of it: the ledger's record, the anchor's reading
//! plus the deltas since (with its kind and age), the latest count, WMS snapshot and RFID
//! read each plus the deltas since (their gap to the record and their age are features),
//! the belief's mean, and zero (phantom).
//! The candidate ranker ([`crate::ranker`]) weighs the candidates from the other features
//! and its fused probability is the last feature. Shared features come from [`SharedFacts`]: feed health, the SKU's velocity and the loss
//! factors of the location and the SKU, computed once for all their pairs.

use crate::belief::{
    BeliefParams, BeliefStats, LedgerFacts, ObservationKind, Posterior, posterior,
};
use crate::feeds::StalenessPolicy;
use crate::ranker::{CandidateRanker, Candidates, RANKER_INPUTS, Ranked};
use crate::shared::{LocationKind, SharedFacts};
use crate::stats::logit;

/// Names of the features, in vector order (a model's file repeats them and is refused when
/// they differ).
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "belief_logit",
    "phantom_logit",
    "record_margin",
    "log_record_margin",
    "belief_z",
    "log_hours_since_sale",
    "log_silent_open_hours",
    "log_expected_silent_sales",
    "log_sales_per_day",
    "log_days_since_anchor",
    "anchor_count",
    "anchor_rfid",
    "anchor_snapshot",
    "log_units_sold_since_anchor",
    "log_quantity",
    "kind_fc",
    "kind_warehouse",
    "stale_expected_feed",
    "log_feed_silence_ratio",
    "log_sku_sales_per_day",
    "log_location_loss_factor",
    "log_sku_loss_factor",
    "count_claim_gap",
    "snapshot_claim_gap",
    "rfid_claim_gap",
    "log_count_claim_days",
    "log_snapshot_claim_days",
    "log_rfid_claim_days",
    "fused_logit",
];

/// Number of features.
pub const FEATURE_COUNT: usize = 29;

// The ranker reads every feature but its own output (defined there, checked here).
const _: () = assert!(RANKER_INPUTS == FEATURE_COUNT - 1);

/// The age a source's claim is given when it never read the pair (a year).
const NEVER_READ_DAYS: f64 = 365.0;

/// What the features are computed with: the belief's parameters, the staleness policy and
/// the candidate ranker (`None`: the fused feature is the belief's own probability, which is
/// how the ranker's own training rows are made).
#[derive(Clone, Copy, Debug)]
pub struct FeatureParams<'a> {
    /// The belief's parameters.
    pub belief: &'a BeliefParams,
    /// When a silent feed is stale.
    pub staleness: &'a StalenessPolicy,
    /// The candidate ranker.
    pub ranker: Option<&'a CandidateRanker>,
}

/// The features of one question, with the posterior they were computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureVector {
    /// The values, in [`FEATURE_NAMES`] order.
    pub values: [f64; FEATURE_COUNT],
    /// The belief at that moment.
    pub posterior: Posterior,
    /// P(truth - reserved >= quantity) by the belief alone.
    pub belief_probability: f64,
    /// An expected source is silent past the staleness policy.
    pub stale_feed: bool,
    /// The candidates' claims.
    pub candidates: Candidates,
    /// The ranker's verdict (`None` without a ranker).
    pub ranked: Option<Ranked>,
}

/// One question: `quantity` units at `now_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Question {
    /// Units wanted.
    pub quantity: i64,
    /// When it is asked.
    pub now_ms: i64,
}

fn ln1p_hours(ms: i64) -> f64 {
    (ms.max(0) as f64 / 3_600_000.0).ln_1p()
}

/// How far a source's claim is from the record: sign x ln(1 + |claim - record|) (0 when the
/// source never read the pair, or agrees).
fn claim_gap(facts: &LedgerFacts, kind: ObservationKind, now_ms: i64) -> f64 {
    facts
        .claims
        .claim(kind, facts.record, now_ms)
        .map_or(0.0, |claim| {
            let gap = (claim.units - facts.record) as f64;
            gap.signum() * gap.abs().ln_1p()
        })
}

/// ln(1 + days since a source's read) ([`NEVER_READ_DAYS`] when it never read the pair).
fn log_claim_days(facts: &LedgerFacts, kind: ObservationKind, now_ms: i64) -> f64 {
    facts
        .claims
        .claim(kind, facts.record, now_ms)
        .map_or(NEVER_READ_DAYS, |claim| {
            (claim.age_ms.max(0) as f64 / 86_400_000.0).min(NEVER_READ_DAYS)
        })
        .ln_1p()
}

/// Computes the features of `question` for a pair.
pub fn features(
    stats: &BeliefStats,
    facts: &LedgerFacts,
    shared: &SharedFacts,
    settings: &FeatureParams<'_>,
    question: Question,
) -> FeatureVector {
    let (params, staleness) = (settings.belief, settings.staleness);
    let now = question.now_ms;
    let location = &shared.location;
    let belief = posterior(stats, facts, shared, params, now);
    let need = question.quantity + facts.reserved.max(0);
    let belief_probability = belief.probability_at_least(need);
    let margin = (facts.record - need).clamp(-5, 30) as f64;
    let z = ((belief.mean - need as f64 + 0.5) / belief.sd).clamp(-10.0, 10.0);
    let since_sale_ms = match (facts.last_sale_ms, stats.first_seen) {
        (Some(sale), _) => now - sale,
        (None, 0) => 0,
        (None, _) => now - crate::belief::millis_of(stats.first_seen),
    };
    let anchor_kind = facts.anchor.map(|(kind, _, _)| kind);
    let (silence_ratio, stale_feed) =
        location
            .feeds
            .worst_expected(location.expected_sources, now, &location.hours, staleness);
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    let mut values = [
        logit(belief_probability),
        logit(belief.phantom),
        margin,
        (margin + 1.0).max(0.0).ln_1p(),
        z,
        ln1p_hours(since_sale_ms),
        belief.silent_open_hours.ln_1p(),
        belief.expected_silent_sales.ln_1p(),
        (belief.rate_per_open_hour * 24.0).ln_1p(),
        belief.days_since_anchor.ln_1p(),
        flag(anchor_kind == Some(ObservationKind::Count)),
        flag(anchor_kind == Some(ObservationKind::RfidRead)),
        flag(anchor_kind == Some(ObservationKind::Snapshot)),
        f64::from(stats.units_sold_since_anchor).ln_1p(),
        (question.quantity.max(1) as f64).ln(),
        flag(location.kind == LocationKind::FulfillmentCenter),
        flag(location.kind == LocationKind::Warehouse),
        flag(stale_feed),
        silence_ratio.ln_1p().min(10.0),
        (belief.sku_sales_per_open_hour * location.hours.open_hours_per_day()).ln_1p(),
        belief.location_loss_factor.ln(),
        belief.sku_loss_factor.ln(),
        claim_gap(facts, ObservationKind::Count, now),
        claim_gap(facts, ObservationKind::Snapshot, now),
        claim_gap(facts, ObservationKind::RfidRead, now),
        log_claim_days(facts, ObservationKind::Count, now),
        log_claim_days(facts, ObservationKind::Snapshot, now),
        log_claim_days(facts, ObservationKind::RfidRead, now),
        0.0, // the fused probability, below
    ];
    let candidates = candidates_of(facts, &belief, now);
    let ranked = settings
        .ranker
        .map(|ranker| ranker.rank(&values[..RANKER_INPUTS], &candidates, need));
    values[FEATURE_COUNT - 1] =
        logit(ranked.map_or(belief_probability, |ranked| ranked.probability));
    FeatureVector {
        values,
        posterior: belief,
        belief_probability,
        stale_feed,
        candidates,
        ranked,
    }
}

/// Each candidate's claim at the moment of the posterior (see [`crate::ranker`]).
pub fn candidates_of(facts: &LedgerFacts, belief: &Posterior, now_ms: i64) -> Candidates {
    let claim = |kind| {
        facts
            .claims
            .claim(kind, facts.record, now_ms)
            .map(|claim| claim.units.max(0) as f64)
    };
    Candidates {
        claims: [
            Some(facts.record.max(0) as f64),
            Some(belief.bounded_mean()),
            (belief.lower > 0.0).then_some(belief.lower),
            belief.upper.is_finite().then_some(belief.upper),
            Some(0.0),
            claim(ObservationKind::Count),
            claim(ObservationKind::Snapshot),
            claim(ObservationKind::RfidRead),
        ],
    }
}
