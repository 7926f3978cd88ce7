//! `stockgrid sim evaluate`: how many promises were broken, per scenario, method and surface.
//!
//! For each run folder (written by `sim generate`) and each answers file (written by
//! `stockgrid replay --out`), and for the built-in baselines computed here from the events
//! alone, it counts per surface: promised, true and false positives (a false positive is a
//! broken promise: answered available while the truth held fewer units than wanted), false
//! negatives; the broken-promise rate (FP / promised), recall (TP / truly available) and
//! promised share; the precision-recall curve over the answers' probability; calibration
//! (reliability diagram over 10 equal-width bins, ECE, Brier score); and breakdowns by item
//! velocity, the location's source mix and location kind.
//!
//! Baselines (what a retailer without stockgrid's belief would do):
//! - `ledger+ssK`, K = 0..5: promise when the rules ledger's on-hand minus K covers the
//!   quantity;
//! - `no-sale<C`, C in {0.001, 0.01, 0.05, 0.2}: promise when the ledger covers the quantity
//!   and P(no sale over the open hours since the last sale | in stock) under the pair's recent
//!   sales rate (sales in the last 28 days per open hour) exceeds C.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use stockgrid_actors::catalog::{Location, LocationInput};
use stockgrid_actors::domain::{EventKind, PairKey, Surface};
use stockgrid_actors::ledger::LedgerConfig;
use stockgrid_actors::replay::{read_events, read_locations, read_queries};

use crate::civil::{DAY_MS, HOUR_MS};
use crate::files::Manifest;
use crate::record::{QueryPoint, RecordAt, records_at_queries};
use crate::scenario::{Scenario, utc_offset_hours};

/// Safety stocks of the ledger baselines.
pub const LEDGER_SAFETY_STOCKS: [i64; 6] = [0, 1, 2, 3, 4, 5];
/// Cuts of the no-sale baselines.
pub const NO_SALE_CUTS: [f64; 4] = [0.001, 0.01, 0.05, 0.2];
/// Bins of the reliability diagram.
pub const CALIBRATION_BINS: usize = 10;
/// Units sold per day from which a pair is `fast`.
pub const FAST_UNITS_PER_DAY: f64 = 5.0;
/// Units sold per day from which a pair is `medium` (below: `slow`).
pub const MEDIUM_UNITS_PER_DAY: f64 = 0.5;

/// One query as evaluated.
#[derive(Clone, Debug)]
struct Case {
    surface: Surface,
    wanted: i64,
    truly_available: bool,
    velocity: &'static str,
    source_mix: String,
    kind: String,
}

/// Counts of one method on one set of queries.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Queries.
    pub queries: u64,
    /// Answered available.
    pub promised: u64,
    /// Promised and truly available.
    pub true_positives: u64,
    /// Promised and not truly available: broken promises.
    pub false_positives: u64,
    /// Not promised though truly available.
    pub false_negatives: u64,
}

impl Counts {
    fn add(&mut self, promised: bool, truly_available: bool) {
        self.queries += 1;
        match (promised, truly_available) {
            (true, true) => {
                self.promised += 1;
                self.true_positives += 1;
            }
            (true, false) => {
                self.promised += 1;
                self.false_positives += 1;
            }
            (false, true) => self.false_negatives += 1,
            (false, false) => {}
        }
    }

    /// False positives over promised (0 when nothing was promised).
    pub fn broken_promise_rate(&self) -> f64 {
        ratio(self.false_positives, self.promised)
    }

    /// True positives over truly available.
    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    /// Promised over queries.
    pub fn promised_share(&self) -> f64 {
        ratio(self.promised, self.queries)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The rates of a [`Counts`], for reports.
#[derive(Clone, Debug, Serialize)]
pub struct Rates {
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// FP / promised.
    pub broken_promise_rate: f64,
    /// TP / truly available.
    pub recall: f64,
    /// Promised / queries.
    pub promised_share: f64,
}

impl From<&Counts> for Rates {
    fn from(counts: &Counts) -> Self {
        Rates {
            counts: counts.clone(),
            broken_promise_rate: counts.broken_promise_rate(),
            recall: counts.recall(),
            promised_share: counts.promised_share(),
        }
    }
}

/// One point of a precision-recall curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    /// Promise when the probability is at least this.
    pub threshold: f64,
    /// Broken-promise rate (1 - precision).
    pub broken_promise_rate: f64,
    /// Recall.
    pub recall: f64,
}

/// One bin of the reliability diagram.
#[derive(Clone, Debug, Serialize)]
pub struct CalibrationBin {
    /// Lower edge.
    pub low: f64,
    /// Queries in the bin.
    pub count: u64,
    /// Mean probability answered.
    pub mean_probability: f64,
    /// Share truly available.
    pub observed: f64,
}

/// Calibration of answered probabilities.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// Expected calibration error over 10 equal-width bins.
    pub ece: f64,
    /// Mean squared error of the probability against the outcome.
    pub brier: f64,
    /// The reliability diagram.
    pub bins: Vec<CalibrationBin>,
}

/// A method's results on one surface.
#[derive(Clone, Debug, Serialize)]
pub struct SurfaceResult {
    /// Totals.
    pub overall: Rates,
    /// The precision-recall curve (answers with probabilities only).
    pub curve: Vec<CurvePoint>,
    /// The most recall at a broken-promise rate of at most 1% (an exact sweep of the
    /// probability; a method without probabilities has only its own operating point).
    pub recall_at_1pct_broken: f64,
    /// The least broken-promise rate at a recall of at least 95% (`None`: not reachable).
    pub broken_at_95pct_recall: Option<f64>,
    /// Calibration (answers files only).
    pub calibration: Option<Calibration>,
    /// By item velocity (`fast`, `medium`, `slow`).
    pub by_velocity: BTreeMap<String, Rates>,
    /// By the location's expected feeds.
    pub by_source_mix: BTreeMap<String, Rates>,
    /// By location kind.
    pub by_location_kind: BTreeMap<String, Rates>,
}

/// One method (an answers file or a baseline) on one run.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    /// `rules` (an answers file's label) or a baseline's name.
    pub method: String,
    /// Whether it is a built-in baseline.
    pub baseline: bool,
    /// Per surface.
    pub surfaces: BTreeMap<String, SurfaceResult>,
}

/// One run folder's results.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// The folder.
    pub dir: String,
    /// Queries.
    pub queries: usize,
    /// Every method.
    pub methods: Vec<MethodResult>,
}

/// Everything `metrics.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    /// One entry per run folder.
    pub runs: Vec<RunResult>,
}

/// An answers file and its label.
#[derive(Clone, Debug)]
pub struct AnswersSpec {
    /// Shown in tables (`rules`).
    pub label: String,
    /// The file; a relative path not found as given is looked up in each run folder.
    pub path: PathBuf,
}

impl AnswersSpec {
    /// Parses `LABEL=FILE` or `FILE` (label: the file's stem).
    pub fn parse(text: &str) -> AnswersSpec {
        match text.split_once('=') {
            Some((label, path)) if !label.is_empty() => AnswersSpec {
                label: label.to_owned(),
                path: PathBuf::from(path),
            },
            _ => {
                let path = PathBuf::from(text);
                let label = path
                    .file_stem()
                    .map_or_else(|| text.to_owned(), |s| s.to_string_lossy().into_owned());
                AnswersSpec { label, path }
            }
        }
    }

    fn resolve(&self, dir: &Path) -> PathBuf {
        if self.path.is_relative() && !self.path.exists() {
            dir.join(&self.path)
        } else {
            self.path.clone()
        }
    }
}

/// One answer as the evaluator reads it.
#[derive(Clone, Copy, Debug)]
struct Answer {
    available: bool,
    probability: f64,
}

fn read_json_lines(path: &Path) -> anyhow::Result<Vec<(usize, serde_json::Value)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line)
                .map(|value| (index + 1, value))
                .with_context(|| format!("{}:{}: not a JSON object", path.display(), index + 1))
        })
        .collect()
}

/// The lines of a file holding one object per query, in query order (checked by
/// `query_id`), each with its line number.
fn read_in_query_order(
    path: &Path,
    query_ids: &[String],
) -> anyhow::Result<Vec<(usize, serde_json::Value)>> {
    let lines = read_json_lines(path)?;
    if lines.len() != query_ids.len() {
        bail!(
            "{}: {} lines for {} queries (one per query, in query order)",
            path.display(),
            lines.len(),
            query_ids.len()
        );
    }
    for ((line, value), id) in lines.iter().zip(query_ids) {
        if value["query_id"].as_str() != Some(id) {
            bail!(
                "{}:{line}: field `query_id`: expected {id:?} (one line per query, in query order)",
                path.display()
            );
        }
    }
    Ok(lines)
}

pub(crate) fn read_truth(path: &Path, query_ids: &[String]) -> anyhow::Result<Vec<i64>> {
    read_in_query_order(path, query_ids)?
        .iter()
        .map(|(line, value)| {
            value["true_on_hand"].as_i64().with_context(|| {
                format!(
                    "{}:{line}: field `true_on_hand`: must be an integer",
                    path.display()
                )
            })
        })
        .collect()
}

fn read_answers(path: &Path, query_ids: &[String]) -> anyhow::Result<Vec<Answer>> {
    read_in_query_order(path, query_ids)?
        .iter()
        .map(|(line, value)| {
            let at = |field: &str, reason: &str| {
                anyhow::anyhow!("{}:{line}: field `{field}`: {reason}", path.display())
            };
            let available = value["available"]
                .as_bool()
                .ok_or_else(|| at("available", "must be true or false"))?;
            let probability = value["probability"]
                .as_f64()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| at("probability", "must be a number in [0, 1]"))?;
            Ok(Answer {
                available,
                probability,
            })
        })
        .collect()
}

/// Open hours of `location` within `[from_ms, to_ms)`.
pub fn open_hours_between(location: &Location, from_ms: i64, to_ms: i64) -> f64 {
    if to_ms <= from_ms {
        return 0.0;
    }
    let offset = utc_offset_hours(&location.timezone).unwrap_or(0) * HOUR_MS;
    let open = i64::from(location.open_hour) * HOUR_MS;
    let close = i64::from(location.close_hour) * HOUR_MS;
    let first_day = (from_ms + offset).div_euclid(DAY_MS);
    let last_day = (to_ms + offset).div_euclid(DAY_MS);
    let mut total = 0;
    for day in first_day..=last_day {
        let start = day * DAY_MS - offset + open;
        let end = day * DAY_MS - offset + close;
        total += (end.min(to_ms) - start.max(from_ms)).max(0);
    }
    total as f64 / HOUR_MS as f64
}

/// P(no sale over the open hours since the last sale | in stock) under the pair's rate.
fn no_sale_probability(record: &RecordAt, location: &Location, now_ms: i64) -> f64 {
    let window_hours = open_hours_between(location, record.window_start_ms, now_ms);
    if record.sales_in_window == 0 || window_hours <= 0.0 {
        return 1.0;
    }
    let rate = f64::from(record.sales_in_window) / window_hours;
    let since = record.last_sale_ms.unwrap_or(record.window_start_ms);
    (-rate * open_hours_between(location, since, now_ms)).exp()
}

/// A location missing from locations.jsonl: the catalog's defaults (a store open all day, UTC).
fn default_location(location: u32) -> Location {
    LocationInput {
        location,
        ..LocationInput::default()
    }
    .validate()
    .unwrap_or_else(|_| unreachable!("the catalog's defaults are valid"))
}

/// Evaluates every run folder against every answers file and the baselines.
pub fn evaluate(
    dirs: &[PathBuf],
    answers: &[AnswersSpec],
    threads: usize,
) -> anyhow::Result<Metrics> {
    let mut runs = Vec::new();
    for dir in dirs {
        runs.push(evaluate_run(dir, answers, threads)?);
    }
    Ok(Metrics { runs })
}

fn evaluate_run(dir: &Path, answers: &[AnswersSpec], threads: usize) -> anyhow::Result<RunResult> {
    let manifest_path = dir.join("manifest.json");
    let manifest: Option<Manifest> = std::fs::read(&manifest_path)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes))
        .transpose()
        .with_context(|| format!("{}: not a run manifest", manifest_path.display()))?;
    let scenario_path = dir.join("scenario.toml");
    let scenario = match std::fs::read_to_string(&scenario_path) {
        Ok(text) => Some(Scenario::parse(
            &scenario_path.display().to_string(),
            &text,
        )?),
        Err(_) => None,
    };
    let events = read_events(&dir.join("events.jsonl"))?;
    let queries = read_queries(&dir.join("queries.jsonl"))?;
    let locations_path = dir.join("locations.jsonl");
    let locations: HashMap<u32, Location> = if locations_path.exists() {
        read_locations(&locations_path)?
            .into_iter()
            .map(|l| (l.location, l))
            .collect()
    } else {
        HashMap::new()
    };
    let query_ids: Vec<String> = queries.iter().map(|q| q.query_id.clone()).collect();
    let truth = read_truth(&dir.join("truth.jsonl"), &query_ids)?;
    let answer_sets: Vec<(String, Vec<Answer>)> = answers
        .iter()
        .map(|spec| {
            Ok((
                spec.label.clone(),
                read_answers(&spec.resolve(dir), &query_ids)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;

    // Velocity: units sold per day over the recorded period, from the events.
    let (first_ms, last_ms) = events
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), (_, a)| {
            (lo.min(a.event.event_time.0), hi.max(a.event.event_time.0))
        });
    let days = ((last_ms - first_ms) as f64 / DAY_MS as f64).max(1.0);
    let mut sold: HashMap<PairKey, (i64, std::collections::HashSet<String>)> = HashMap::new();
    for (_, arrival) in &events {
        if arrival.event.kind == EventKind::Sale {
            let entry = sold.entry(arrival.event.pair).or_default();
            if entry.1.insert(format!(
                "{}/{}",
                arrival.event.source, arrival.event.event_id
            )) {
                entry.0 += arrival.event.quantity;
            }
        }
    }
    let arrivals: Vec<_> = events.into_iter().map(|(_, a)| a).collect();
    let points: Vec<QueryPoint> = queries
        .iter()
        .map(|q| QueryPoint {
            pair: q.pair,
            time_ms: q.time.0,
        })
        .collect();
    let config = LedgerConfig {
        lateness_bound_ms: scenario.as_ref().map_or(24 * HOUR_MS, |s| {
            (s.faults.lateness_bound_hours * HOUR_MS as f64) as i64
        }),
        ..LedgerConfig::default()
    };
    let records = records_at_queries(&arrivals, &points, &config, threads);

    let cases: Vec<Case> = queries
        .iter()
        .zip(&truth)
        .map(|(query, true_on_hand)| {
            let location = locations
                .get(&query.pair.location)
                .cloned()
                .unwrap_or_else(|| default_location(query.pair.location));
            let per_day = sold.get(&query.pair).map_or(0, |s| s.0) as f64 / days;
            let velocity = if per_day >= FAST_UNITS_PER_DAY {
                "fast"
            } else if per_day >= MEDIUM_UNITS_PER_DAY {
                "medium"
            } else {
                "slow"
            };
            let mut sources: Vec<&str> = location.sources.iter().map(|s| s.as_str()).collect();
            sources.sort_unstable();
            Case {
                surface: query.surface,
                wanted: query.quantity,
                truly_available: *true_on_hand >= query.quantity,
                velocity,
                source_mix: if sources.is_empty() {
                    "unknown".to_owned()
                } else {
                    sources.join("+")
                },
                kind: location.kind.clone(),
            }
        })
        .collect();

    let mut methods = Vec::new();
    for (label, set) in &answer_sets {
        let decisions: Vec<(bool, Option<f64>)> = set
            .iter()
            .map(|a| (a.available, Some(a.probability)))
            .collect();
        methods.push(method_result(label, false, &cases, &decisions));
    }
    for safety in LEDGER_SAFETY_STOCKS {
        let decisions: Vec<(bool, Option<f64>)> = records
            .iter()
            .zip(&cases)
            .map(|(record, case)| (record.on_hand - safety >= case.wanted, None))
            .collect();
        methods.push(method_result(
            &format!("ledger+ss{safety}"),
            true,
            &cases,
            &decisions,
        ));
    }
    for cut in NO_SALE_CUTS {
        let decisions: Vec<(bool, Option<f64>)> = records
            .iter()
            .zip(&cases)
            .zip(&queries)
            .map(|((record, case), query)| {
                let location = locations
                    .get(&query.pair.location)
                    .cloned()
                    .unwrap_or_else(|| default_location(query.pair.location));
                let probability = no_sale_probability(record, &location, query.time.0);
                (record.on_hand >= case.wanted && probability > cut, None)
            })
            .collect();
        methods.push(method_result(
            &format!("no-sale<{cut}"),
            true,
            &cases,
            &decisions,
        ));
    }
    Ok(RunResult {
        scenario: manifest
            .as_ref()
            .map(|m| m.scenario.clone())
            .or_else(|| scenario.as_ref().map(|s| s.name.clone()))
            .unwrap_or_else(|| dir.display().to_string()),
        seed: manifest.as_ref().map_or(0, |m| m.seed),
        dir: dir.display().to_string(),
        queries: queries.len(),
        methods,
    })
}

fn grouped<'a>(
    cases: &'a [&'a Case],
    decisions: &'a [(bool, Option<f64>)],
    key: impl Fn(&Case) -> String,
) -> BTreeMap<String, Rates> {
    let mut groups: BTreeMap<String, Counts> = BTreeMap::new();
    for (case, (promised, _)) in cases.iter().zip(decisions) {
        groups
            .entry(key(case))
            .or_default()
            .add(*promised, case.truly_available);
    }
    groups
        .iter()
        .map(|(k, c)| (k.clone(), Rates::from(c)))
        .collect()
}

fn method_result(
    label: &str,
    baseline: bool,
    cases: &[Case],
    decisions: &[(bool, Option<f64>)],
) -> MethodResult {
    let mut surfaces = BTreeMap::new();
    for surface in [Surface::ItemPage, Surface::Pickup, Surface::Delivery] {
        let (selected, chosen): (Vec<&Case>, Vec<(bool, Option<f64>)>) = cases
            .iter()
            .zip(decisions)
            .filter(|(case, _)| case.surface == surface)
            .map(|(case, decision)| (case, *decision))
            .unzip();
        if selected.is_empty() {
            continue;
        }
        let mut overall = Counts::default();
        for (case, (promised, _)) in selected.iter().zip(&chosen) {
            overall.add(*promised, case.truly_available);
        }
        let scored: Vec<(f64, bool)> = selected
            .iter()
            .zip(&chosen)
            .filter_map(|(case, (_, p))| p.map(|p| (p, case.truly_available)))
            .collect();
        let (curve, calibration, points) = if scored.len() == selected.len() {
            (
                pr_curve(&scored),
                Some(calibration(&scored)),
                operating_points(&scored),
            )
        } else {
            let own = (overall.broken_promise_rate(), overall.recall());
            (Vec::new(), None, vec![(0.0, 0.0), own])
        };
        let recall_at_1pct_broken = points
            .iter()
            .filter(|(broken, _)| *broken <= 0.01)
            .map(|(_, recall)| *recall)
            .fold(0.0, f64::max);
        let broken_at_95pct_recall = points
            .iter()
            .filter(|(_, recall)| *recall >= 0.95)
            .map(|(broken, _)| *broken)
            .reduce(f64::min);
        surfaces.insert(
            surface.as_str().to_owned(),
            SurfaceResult {
                overall: Rates::from(&overall),
                curve,
                recall_at_1pct_broken,
                broken_at_95pct_recall,
                calibration,
                by_velocity: grouped(&selected, &chosen, |c| c.velocity.to_owned()),
                by_source_mix: grouped(&selected, &chosen, |c| c.source_mix.clone()),
                by_location_kind: grouped(&selected, &chosen, |c| c.kind.clone()),
            },
        );
    }
    MethodResult {
        method: label.to_owned(),
        baseline,
        surfaces,
    }
}

/// The broken-promise rate and recall when promising at `probability >= threshold`, for
/// every distinct probability (at most 101 thresholds: a grid when there are more).
pub fn pr_curve(scored: &[(f64, bool)]) -> Vec<CurvePoint> {
    let mut thresholds: Vec<f64> = scored.iter().map(|(p, _)| *p).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    if thresholds.len() > 101 {
        thresholds = (0..=100).map(|i| f64::from(i) / 100.0).collect();
    }
    thresholds
        .into_iter()
        .map(|threshold| {
            let mut counts = Counts::default();
            for (p, truly) in scored {
                counts.add(*p >= threshold, *truly);
            }
            CurvePoint {
                threshold,
                broken_promise_rate: counts.broken_promise_rate(),
                recall: counts.recall(),
            }
        })
        .collect()
}

/// (broken-promise rate, recall) at every distinct probability, promising at `p >= it`:
/// the exact curve, with "promise nothing" as its first point.
pub fn operating_points(scored: &[(f64, bool)]) -> Vec<(f64, f64)> {
    std::iter::once((0.0, 0.0))
        .chain(
            sweep(scored)
                .into_iter()
                .map(|(_, broken, recall)| (broken, recall)),
        )
        .collect()
}

/// (threshold, broken-promise rate, recall) for every distinct probability, highest first:
/// promising every answer with `probability >= threshold`.
pub fn sweep(scored: &[(f64, bool)]) -> Vec<(f64, f64, f64)> {
    let mut sorted = scored.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = sorted.iter().filter(|(_, truly)| *truly).count().max(1) as f64;
    let mut points = Vec::new();
    let (mut promised, mut broken) = (0usize, 0usize);
    let mut index = 0;
    while index < sorted.len() {
        let threshold = sorted[index].0;
        while index < sorted.len() && sorted[index].0 == threshold {
            promised += 1;
            broken += usize::from(!sorted[index].1);
            index += 1;
        }
        points.push((
            threshold,
            broken as f64 / promised as f64,
            (promised - broken) as f64 / positives,
        ));
    }
    points
}

/// Reliability diagram, ECE and Brier score.
pub fn calibration(scored: &[(f64, bool)]) -> Calibration {
    let mut sums = vec![(0u64, 0.0f64, 0u64); CALIBRATION_BINS];
    let mut brier = 0.0;
    for (p, truly) in scored {
        let bin = ((p * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
        let outcome = if *truly { 1.0 } else { 0.0 };
        sums[bin].0 += 1;
        sums[bin].1 += p;
        sums[bin].2 += u64::from(*truly);
        brier += (p - outcome) * (p - outcome);
    }
    let total = scored.len().max(1) as f64;
    let bins: Vec<CalibrationBin> = sums
        .iter()
        .enumerate()
        .map(|(index, (count, p_sum, positives))| CalibrationBin {
            low: index as f64 / CALIBRATION_BINS as f64,
            count: *count,
            mean_probability: if *count == 0 {
                0.0
            } else {
                p_sum / *count as f64
            },
            observed: ratio(*positives, *count),
        })
        .collect();
    let ece = bins
        .iter()
        .map(|b| b.count as f64 / total * (b.observed - b.mean_probability).abs())
        .sum();
    Calibration {
        ece,
        brier: brier / total,
        bins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_calibration_by_hand() {
        let mut counts = Counts::default();
        for (promised, truly) in [(true, true), (true, false), (false, true), (false, false)] {
            counts.add(promised, truly);
        }
        assert_eq!(counts.broken_promise_rate(), 0.5);
        assert_eq!(counts.recall(), 0.5);
        assert_eq!(counts.promised_share(), 0.5);
        // Perfectly calibrated in two bins: ECE 0; Brier by hand.
        let scored = [
            (0.25, true),
            (0.25, false),
            (0.25, false),
            (0.25, false),
            (1.0, true),
        ];
        let result = calibration(&scored);
        assert!(result.ece.abs() < 1e-12, "{}", result.ece);
        let brier = (0.75f64.powi(2) + 3.0 * 0.25f64.powi(2)) / 5.0;
        assert!((result.brier - brier).abs() < 1e-12);
        let curve = pr_curve(&scored);
        assert_eq!(curve.len(), 2);
        assert_eq!(curve[1].threshold, 1.0);
        assert_eq!(curve[1].broken_promise_rate, 0.0);
        assert_eq!(curve[1].recall, 0.5);
    }

    #[test]
    fn open_hours_follow_the_local_day() {
        let store = Location {
            location: 1,
            kind: "store".to_owned(),
            region: None,
            timezone: "Etc/GMT+6".to_owned(), // UTC-6
            open_hour: 8,
            close_hour: 20,
            sources: Vec::new(),
        };
        // 2026-03-02 00:00 UTC is 2026-03-01 18:00 local: two open hours left that day.
        let midnight_utc = 20_514 * DAY_MS;
        let hours = open_hours_between(&store, midnight_utc, midnight_utc + DAY_MS);
        // Local 18:00-20:00 (2 h) and 08:00-18:00 of the next day (10 h).
        assert!((hours - 12.0).abs() < 1e-9, "{hours}");
    }
}
