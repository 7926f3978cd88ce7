//! The in-memory replay: the event log through the same entity code as the service - the pure
//! ledger core ([`ingest`]), the belief statistics it keeps, the shared location and SKU
//! facts - with no store and no actors, at millions of events per second.
//!
//! It is how training sets are built (point-in-time by construction: a query sees exactly the
//! arrivals before it), how `stockgrid replay --engine memory` answers, and how an audit
//! replay rebuilds an entity from the log alone. Arrival order is the log's order: events are
//! applied in `ingest_time` order (file order breaking ties), and each query is answered after
//! every event with `ingest_time <= time` and before any later one.

use std::collections::HashMap;

use crate::catalog::Location;
use crate::domain::{Arrival, PairKey};
use crate::formats::Query;
use crate::ledger::{
    EntityState, EntryRole, Identity, LedgerConfig, LedgerEntry, LookupFailed, Outcome,
    RecordedDeltas, ingest,
};
use crate::shared::SharedDirectory;

/// Every pair's state, built from arrivals in order.
#[derive(Debug)]
pub struct InMemoryLedger {
    config: LedgerConfig,
    states: HashMap<PairKey, EntityState, foldhash::fast::RandomState>,
    identities: HashMap<Identity, u128, foldhash::fast::RandomState>,
    history: RecordedDeltas,
    shared: SharedDirectory,
}

impl InMemoryLedger {
    /// An empty ledger with the catalog's locations.
    pub fn new(config: LedgerConfig, locations: &[Location]) -> Self {
        Self {
            config,
            states: HashMap::default(),
            identities: HashMap::default(),
            history: RecordedDeltas::default(),
            shared: SharedDirectory::from_catalog(locations),
        }
    }

    /// Applies one arrival (both of its entries for a transfer naming a counterparty); the
    /// outcome is the primary entry's.
    pub fn apply(&mut self, arrival: &Arrival) -> Result<Outcome, LookupFailed> {
        self.shared.heard(&arrival.event);
        let mut primary = None;
        for entry in LedgerEntry::expand(arrival.event.clone()) {
            let state = self.states.entry(entry.target()).or_default();
            let before = SharedDirectory::before(state);
            let outcome = ingest(
                state,
                &entry,
                arrival.arrival_time,
                &self.config,
                &mut self.identities,
                &mut self.history,
            )?;
            if outcome == Outcome::Applied {
                self.history.record(&entry);
                self.shared.learn(&entry, &before, state);
            }
            if entry.role == EntryRole::Primary {
                primary = Some(outcome);
            }
        }
        Ok(primary.unwrap_or(Outcome::Duplicate))
    }

    /// A pair's state (`None`: never seen).
    pub fn state(&self, pair: PairKey) -> Option<&EntityState> {
        self.states.get(&pair)
    }

    /// The shared facts of locations and SKUs.
    pub fn shared(&self) -> &SharedDirectory {
        &self.shared
    }

    /// The ledger's rules.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Pairs with a state.
    pub fn pair_count(&self) -> usize {
        self.states.len()
    }
}

/// Replays `events` (in arrival order, as read by `read_events`) and asks every query at its
/// moment: `on_arrival` sees each arrival's outcome, `on_query` each query (by its index in
/// `queries`) with the number of arrivals applied before it and the ledger as of its time. Queries are taken in time order, file order
/// breaking ties.
pub fn replay_in_memory(
    ledger: &mut InMemoryLedger,
    events: &[(usize, Arrival)],
    queries: &[Query],
    mut on_arrival: impl FnMut(usize, &Arrival, Outcome),
    mut on_query: impl FnMut(usize, u64, &InMemoryLedger),
) -> Result<(), LookupFailed> {
    let mut order: Vec<usize> = (0..queries.len()).collect();
    order.sort_by_key(|&index| queries[index].time);
    let mut next_event = 0;
    for index in order {
        let time = queries[index].time;
        while next_event < events.len() && events[next_event].1.arrival_time <= time {
            let (line, arrival) = &events[next_event];
            let outcome = ledger.apply(arrival)?;
            on_arrival(*line, arrival, outcome);
            next_event += 1;
        }
        on_query(index, next_event as u64, ledger);
    }
    for (line, arrival) in &events[next_event..] {
        let outcome = ledger.apply(arrival)?;
        on_arrival(*line, arrival, outcome);
    }
    Ok(())
}
