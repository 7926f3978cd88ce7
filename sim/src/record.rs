//! The record at each query: what the rules-mode ledger says, from the events that had
//! arrived by then.
//!
//! This runs the engine's own pure ledger ([`stockgrid_actors::ledger::ingest`]) per pair,
//! feeding arrivals in `ingest_time` order (file order breaking ties) exactly as `stockgrid
//! replay` does, and reads the pair's on-hand just before each query. The realism statistics
//! of `sim generate` ("record differs from truth") and the evaluator's built-in baselines (the
//! ledger with safety stock, the no-sale rule) both stand on it. Pairs are independent, so
//! they are split over threads.

use std::collections::{BTreeMap, HashMap};

use stockgrid_actors::domain::{Arrival, EventKind, PairKey};
use stockgrid_actors::ledger::{
    EntityState, EntryRole, LedgerConfig, LedgerEntry, Outcome, RecordedDeltas, ingest,
};
use stockgrid_actors::time::Timestamp;

/// How far back the no-sale rule's sales rate looks.
pub const SALES_WINDOW_MS: i64 = 28 * 86_400_000;

/// What the ledger said of a pair just before one query.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecordAt {
    /// Recorded on-hand.
    pub on_hand: i64,
    /// Event time of the latest applied sale.
    pub last_sale_ms: Option<i64>,
    /// Applied sale events dated within [`SALES_WINDOW_MS`] before the query.
    pub sales_in_window: u32,
    /// Start of the window those sales were counted over (later than a full window when the
    /// pair's history is shorter): the first event time seen.
    pub window_start_ms: i64,
}

/// A query's pair and time, as the tracker needs it.
#[derive(Clone, Copy, Debug)]
pub struct QueryPoint {
    /// The pair.
    pub pair: PairKey,
    /// When it is asked.
    pub time_ms: i64,
}

/// The record just before every query (answers in query order).
pub fn records_at_queries(
    arrivals: &[Arrival],
    queries: &[QueryPoint],
    config: &LedgerConfig,
    threads: usize,
) -> Vec<RecordAt> {
    let mut events_by_pair: HashMap<PairKey, Vec<usize>> = HashMap::new();
    for (index, arrival) in arrivals.iter().enumerate() {
        events_by_pair
            .entry(arrival.event.pair)
            .or_default()
            .push(index);
    }
    let mut queries_by_pair: BTreeMap<PairKey, Vec<usize>> = BTreeMap::new();
    for (index, query) in queries.iter().enumerate() {
        queries_by_pair.entry(query.pair).or_default().push(index);
    }
    let work: Vec<(PairKey, Vec<usize>)> = queries_by_pair.into_iter().collect();
    let chunk = work.len().div_ceil(threads.max(1)).max(1);
    let mut results = vec![RecordAt::default(); queries.len()];
    let partial: Vec<Vec<(usize, RecordAt)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                let events_by_pair = &events_by_pair;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for (pair, query_indices) in part {
                        let empty = Vec::new();
                        let event_indices = events_by_pair.get(pair).unwrap_or(&empty);
                        walk_pair(
                            arrivals,
                            event_indices,
                            queries,
                            query_indices,
                            config,
                            &mut out,
                        );
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (index, record) in partial.into_iter().flatten() {
        results[index] = record;
    }
    results
}

fn walk_pair(
    arrivals: &[Arrival],
    event_indices: &[usize],
    queries: &[QueryPoint],
    query_indices: &[usize],
    config: &LedgerConfig,
    out: &mut Vec<(usize, RecordAt)>,
) {
    let mut order: Vec<usize> = event_indices.to_vec();
    order.sort_by_key(|i| (arrivals[*i].arrival_time, *i));
    let mut queries_in_order: Vec<usize> = query_indices.to_vec();
    queries_in_order.sort_by_key(|i| (queries[*i].time_ms, *i));
    let mut state = EntityState::default();
    let mut identities = HashMap::new();
    let mut history = RecordedDeltas::default();
    let mut sale_times: Vec<i64> = Vec::new();
    let mut first_event_ms: Option<i64> = None;
    let mut next_event = 0;
    for query_index in queries_in_order {
        let time = Timestamp(queries[query_index].time_ms);
        while next_event < order.len() && arrivals[order[next_event]].arrival_time <= time {
            let arrival = &arrivals[order[next_event]];
            next_event += 1;
            let entry = LedgerEntry {
                event: arrival.event.clone(),
                role: EntryRole::Primary,
            };
            let outcome = ingest(
                &mut state,
                &entry,
                arrival.arrival_time,
                config,
                &mut identities,
                &mut history,
            );
            if let Ok(Outcome::Applied) = outcome {
                history.record(&entry);
                let event_ms = entry.event.event_time.0;
                first_event_ms = Some(first_event_ms.map_or(event_ms, |f| f.min(event_ms)));
                if entry.event.kind == EventKind::Sale {
                    sale_times.push(event_ms);
                }
            }
        }
        let window_start = (time.0 - SALES_WINDOW_MS).max(first_event_ms.unwrap_or(time.0));
        let sales_in_window = sale_times
            .iter()
            .filter(|t| **t > window_start && **t <= time.0)
            .count() as u32;
        out.push((
            query_index,
            RecordAt {
                on_hand: state.on_hand_units,
                last_sale_ms: sale_times.iter().copied().filter(|t| *t <= time.0).max(),
                sales_in_window,
                window_start_ms: window_start,
            },
        ));
    }
}
