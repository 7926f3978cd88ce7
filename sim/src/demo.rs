//! `stockgrid demo`: one node on a free port with a temporary embedded store and a
//! simulated clock, and a simulated store day driven through the node's own gRPC client.
//!
//! The day: every pair is counted at opening; sales follow a built-in demand model (fast and
//! slow items, a midday peak) and arrive late by up to ten minutes, out of order, with a
//! share sent twice; a few events arrive later than the lateness bound; a receipt restocks
//! fast items at noon. Each simulated five minutes the demo looks up a search page (a batch
//! of 100) and single items, and places pickup reservations, of which some are committed
//! and picked (a `pick` event naming the reservation), some cancelled, and some left to
//! expire. The summary checks what the run can know for sure; the command fails if any
//! check fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use stockgrid_actors::time::{Clock, MINUTE_MS, SimulatedClock, Timestamp};
use stockgrid_api::node::{Node, NodeConfig};
use stockgrid_api::proto::v1 as pb;
use tonic::transport::Channel;

use crate::requests::{Rng, item_page_lookup};
use crate::traces::Traces;

/// What the demo simulates.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stores in the network.
    pub stores: u32,
    /// Items per store.
    pub skus: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Real daily unit sales in the M5 layout (`sales_tiny_m5_wide.csv`): when given, the
    /// network is its item-store pairs and each pair sells its units of the last day.
    pub traces: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            stores: 20,
            skus: 100,
            seed: 7,
            traces: None,
        }
    }
}

/// A line of the summary: what was checked and whether it held.
#[derive(Clone, Debug)]
pub struct Check {
    /// What it says.
    pub description: String,
    /// Whether it held.
    pub passed: bool,
}

/// The outcome of a demo run.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    /// Human-readable lines, in order.
    pub lines: Vec<String>,
    /// The checks.
    pub checks: Vec<Check>,
}

impl DemoSummary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// The simulated network: its pairs and the sales each makes in each step.
struct Network {
    stores: u32,
    pairs: Vec<(u64, u32)>,
    /// Units sold per pair per step.
    sales: Vec<Vec<u32>>,
    /// Items that get a noon receipt.
    fast: Vec<bool>,
}

/// Intraday shape: steps from 11:00 to 14:59 sell twice as much.
fn step_weight(step: i64) -> u64 {
    let hour = step * STEP_MS / (60 * MINUTE_MS);
    if (5..=8).contains(&hour) { 2 } else { 1 }
}

impl Network {
    /// The built-in demand model: a fifth of the items sell ~3 units an hour, the rest ~0.3.
    fn built_in(options: &DemoOptions, rng: &mut Rng) -> Network {
        let pairs: Vec<(u64, u32)> = (1..=options.stores)
            .flat_map(|store| (1..=options.skus).map(move |sku| (sku, store)))
            .collect();
        let fast: Vec<bool> = pairs.iter().map(|&(sku, _)| sku % 5 == 0).collect();
        let sales = fast
            .iter()
            .map(|&fast| {
                let per_hour_thousandths = if fast { 3_000 } else { 300 };
                (0..STEPS)
                    .map(|step| {
                        let per_step = per_hour_thousandths * step_weight(step) * STEP_MS as u64
                            / (60 * MINUTE_MS) as u64;
                        u32::from(rng.below(1000) < per_step)
                    })
                    .collect()
            })
            .collect();
        Network {
            stores: options.stores,
            pairs,
            sales,
            fast,
        }
    }

    /// Real traces: every item-store row of the M5 files ([`Traces`]) sells its last day's
    /// units, spread over the open hours with the intraday shape.
    fn from_traces(dir: &Path, rng: &mut Rng) -> anyhow::Result<Network> {
        let traces = Traces::read(dir)?;
        let mut store_numbers: BTreeMap<&str, u32> = BTreeMap::new();
        for store in traces.stores_by_state.values().flatten() {
            let next = store_numbers.len() as u32 + 1;
            store_numbers.entry(store.as_str()).or_insert(next);
        }
        let mut network = Network {
            stores: store_numbers.len() as u32,
            pairs: Vec::new(),
            sales: Vec::new(),
            fast: Vec::new(),
        };
        let total_weight: u64 = (0..STEPS).map(step_weight).sum();
        for ((item, store), units) in &traces.sales {
            let units = units.last().copied().unwrap_or(0);
            let mut per_step = vec![0u32; STEPS as usize];
            for _ in 0..units {
                let mut pick = rng.below(total_weight);
                let mut step = 0;
                while pick >= step_weight(step) {
                    pick -= step_weight(step);
                    step += 1;
                }
                per_step[step as usize] += 1;
            }
            network
                .pairs
                .push((*item as u64 + 1, store_numbers[store.as_str()]));
            network.fast.push(units >= 10);
            network.sales.push(per_step);
        }
        Ok(network)
    }
}

const DAY_START: Timestamp = Timestamp(1_772_431_200_000); // 2026-03-02T06:00:00Z
const STEP_MS: i64 = 5 * MINUTE_MS;
const STEPS: i64 = 16 * 12; // 06:00 to 22:00

#[derive(Default)]
struct Tally {
    sent: u64,
    accepted: u64,
    duplicates: u64,
    quarantined: u64,
    rejected: u64,
    failed: u64,
    quarantined_by_reason: BTreeMap<String, u64>,
}

struct Clients {
    ingest: pb::ingest_client::IngestClient<Channel>,
    availability: pb::availability_client::AvailabilityClient<Channel>,
    reservations: pb::reservations_client::ReservationsClient<Channel>,
}

fn event(
    id: String,
    source: &str,
    kind: &str,
    pair: (u64, u32),
    qty: i64,
    at: Timestamp,
) -> pb::Event {
    pb::Event {
        event_id: id,
        source: source.to_owned(),
        kind: kind.to_owned(),
        sku: pair.0,
        location: pair.1,
        qty,
        event_time: at.to_rfc3339(),
        ..Default::default()
    }
}

async fn send(
    clients: &mut Clients,
    tally: &mut Tally,
    events: Vec<pb::Event>,
) -> anyhow::Result<()> {
    for chunk in events.chunks(5_000) {
        tally.sent += chunk.len() as u64;
        let results = clients
            .ingest
            .ingest_events(pb::IngestEventsRequest {
                events: chunk.to_vec(),
            })
            .await?
            .into_inner()
            .results;
        for result in results {
            match pb::EventStatus::try_from(result.status) {
                Ok(pb::EventStatus::Accepted) => tally.accepted += 1,
                Ok(pb::EventStatus::Duplicate) => tally.duplicates += 1,
                Ok(pb::EventStatus::Quarantined) => {
                    tally.quarantined += 1;
                    *tally
                        .quarantined_by_reason
                        .entry(result.reason)
                        .or_default() += 1;
                }
                Ok(pb::EventStatus::Rejected) => tally.rejected += 1,
                _ => tally.failed += 1,
            }
        }
    }
    Ok(())
}

/// Runs the demo; `progress` receives a line now and then.
pub async fn run_demo(
    options: &DemoOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<DemoSummary> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(SimulatedClock::starting_at(DAY_START));
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("data"),
        ..NodeConfig::default()
    };
    let mut rng = Rng::seeded(options.seed);
    let network = match &options.traces {
        Some(dir) => Network::from_traces(dir, &mut rng)?,
        None => Network::built_in(options, &mut rng),
    };
    let mut node = Node::start(&config, Arc::clone(&clock) as Arc<dyn Clock>).await?;
    let engine = node.recovered().await?;
    let url = format!("http://{}", node.address());
    progress(&format!(
        "node serving on {} with a temporary store; simulating {} pairs in {} stores ({}), 06:00-22:00",
        node.address(),
        network.pairs.len(),
        network.stores,
        if options.traces.is_some() {
            "M5 sales of the last day"
        } else {
            "built-in demand"
        }
    ));
    let channel = Channel::from_shared(url)?.connect().await?;
    let mut clients = Clients {
        ingest: pb::ingest_client::IngestClient::new(channel.clone()),
        availability: pb::availability_client::AvailabilityClient::new(channel.clone()),
        reservations: pb::reservations_client::ReservationsClient::new(channel.clone()),
    };
    let mut catalog = pb::catalog_client::CatalogClient::new(channel.clone());
    catalog
        .upsert_locations(pb::UpsertLocationsRequest {
            locations: (1..=network.stores)
                .map(|store| pb::Location {
                    location: store,
                    kind: "store".to_owned(),
                    region: if store % 2 == 0 {
                        "us-south"
                    } else {
                        "us-west"
                    }
                    .to_owned(),
                    timezone: "UTC".to_owned(),
                    open_hour: 6,
                    close_hour: 22,
                    sources: vec![
                        "pos".to_owned(),
                        "store_inventory".to_owned(),
                        "receiving".to_owned(),
                    ],
                })
                .collect(),
        })
        .await?;

    let pairs = &network.pairs;
    let mut tally = Tally::default();
    let mut duplicates_sent = 0u64;
    let mut late_sent = 0u64;
    let mut lookups = 0u64;
    let mut lookup_time = std::time::Duration::ZERO;
    let mut ingest_time = std::time::Duration::ZERO;
    let mut samples: Vec<String> = Vec::new();
    let mut reservation_outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut refused_reservations = 0u64;
    let mut pending_commits: Vec<(String, (u64, u32), i64, i64)> = Vec::new();
    let mut left_to_expire: Vec<String> = Vec::new();
    let mut next_event = 0u64;
    let started = Instant::now();

    // Opening counts.
    let opening: Vec<pb::Event> = pairs
        .iter()
        .enumerate()
        .map(|(index, &pair)| {
            next_event += 1;
            // Traces: about the day's sales on the shelf, so some pairs run short by evening.
            let day_units: u32 = match options.traces {
                Some(_) => network.sales[index].iter().sum(),
                None => 0,
            };
            let units = i64::from(day_units) * 9 / 10 + 5 + rng.below(20) as i64;
            event(
                format!("count-{next_event}"),
                "store_inventory",
                "count",
                pair,
                units,
                DAY_START,
            )
        })
        .collect();
    clock.advance_to(DAY_START.plus_ms(MINUTE_MS));
    let t = Instant::now();
    send(&mut clients, &mut tally, opening).await?;
    ingest_time += t.elapsed();

    let mut delayed: Vec<(Timestamp, pb::Event)> = Vec::new();
    for step in 0..STEPS {
        let step_start = DAY_START.plus_ms(step * STEP_MS + MINUTE_MS);
        let step_end = step_start.plus_ms(STEP_MS);
        let hour = step * STEP_MS / (60 * MINUTE_MS);
        for (index, &pair) in pairs.iter().enumerate() {
            for _ in 0..network.sales[index][step as usize] {
                next_event += 1;
                let at = step_start.plus_ms(rng.below(STEP_MS as u64) as i64);
                let arrival = at.plus_ms(rng.below(10 * MINUTE_MS as u64) as i64);
                let sale = event(format!("sale-{next_event}"), "pos", "sale", pair, 1, at);
                if rng.chance(30) {
                    duplicates_sent += 1;
                    delayed.push((
                        arrival.plus_ms(rng.below(5 * MINUTE_MS as u64) as i64),
                        sale.clone(),
                    ));
                }
                delayed.push((arrival, sale));
            }
            if hour == 6 && step % 12 == 0 && network.fast[index] {
                next_event += 1;
                delayed.push((
                    step_start.plus_ms(MINUTE_MS),
                    event(
                        format!("receipt-{next_event}"),
                        "receiving",
                        "receipt",
                        pair,
                        12,
                        step_start,
                    ),
                ));
            }
        }
        if step % 24 == 0 {
            // A scanner that comes back online with day-old sales: later than the bound.
            for _ in 0..5 {
                next_event += 1;
                late_sent += 1;
                let pair = pairs[rng.below(pairs.len() as u64) as usize];
                let old = step_start.plus_ms(-25 * 60 * MINUTE_MS);
                delayed.push((
                    step_start,
                    event(format!("late-{next_event}"), "pos", "sale", pair, 1, old),
                ));
            }
        }
        clock.advance_to(step_end);
        let (due, later): (Vec<_>, Vec<_>) = delayed
            .into_iter()
            .partition(|(arrival, _)| *arrival <= step_end);
        delayed = later;
        // Arrivals in this window, out of order within it.
        let mut batch: Vec<pb::Event> = due.into_iter().map(|(_, e)| e).collect();
        for i in (1..batch.len()).rev() {
            batch.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let t = Instant::now();
        send(&mut clients, &mut tally, batch).await?;
        ingest_time += t.elapsed();

        // A search page and a few single items.
        let t = Instant::now();
        let page: Vec<pb::GetAvailabilityRequest> = (0..100)
            .map(|_| {
                let (sku, location) = pairs[rng.below(pairs.len() as u64) as usize];
                item_page_lookup(sku, location)
            })
            .collect();
        let answers = clients
            .availability
            .batch_get_availability(pb::BatchGetAvailabilityRequest {
                items: page.clone(),
            })
            .await?
            .into_inner();
        lookups += page.len() as u64;
        for _ in 0..10 {
            let (sku, location) = pairs[rng.below(pairs.len() as u64) as usize];
            let answer = clients
                .availability
                .get_availability(pb::GetAvailabilityRequest {
                    sku,
                    location,
                    qty: 2,
                    surface: pb::Surface::Pickup as i32,
                })
                .await?
                .into_inner();
            lookups += 1;
            if step % 48 == 0 && samples.len() < (2 * (step / 48 + 1)) as usize {
                samples.push(format!(
                    "  {} sku {sku} at store {location}, 2 units for pickup: {} ({}, p={:.0}, on hand {:.0})",
                    clock.now().to_rfc3339(),
                    if answer.available { "promised" } else { "not promised" },
                    answer.reason,
                    answer.probability,
                    answer.expected_on_hand
                ));
            }
        }
        lookup_time += t.elapsed();
        if step % 48 == 0
            && let Some(pb::BatchItemResult {
                result: Some(pb::batch_item_result::Result::Answer(a)),
            }) = answers.results.first()
        {
            samples.push(format!(
                "  {} sku {} at store {}, item page: {} ({})",
                clock.now().to_rfc3339(),
                page[0].sku,
                page[0].location,
                if a.available {
                    "in stock"
                } else {
                    "out of stock"
                },
                a.reason
            ));
        }

        // Pickup reservations: commit and pick, cancel, or leave to expire.
        for n in 0..4 {
            let pair = pairs[rng.below(pairs.len() as u64) as usize];
            let qty = 1 + rng.below(2) as i64;
            let request_id = format!("cart-{step}-{n}");
            let reserved = clients
                .reservations
                .reserve(pb::ReserveRequest {
                    request_id: request_id.clone(),
                    lines: vec![pb::ReservationLine {
                        sku: pair.0,
                        location: pair.1,
                        qty,
                    }],
                    surface: pb::Surface::Pickup as i32,
                    ttl_seconds: 15 * 60,
                })
                .await;
            let reservation = match reserved {
                Ok(r) => r.into_inner(),
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    refused_reservations += 1;
                    continue;
                }
                Err(status) => return Err(status.into()),
            };
            let id = reservation.reservation_id;
            match rng.below(10) {
                0..=5 => {
                    clients
                        .reservations
                        .commit(pb::CommitRequest {
                            reservation_id: id.clone(),
                            pickup_window_seconds: 3_600,
                        })
                        .await?;
                    pending_commits.push((id, pair, qty, step + 2));
                }
                6..=7 => {
                    clients
                        .reservations
                        .release(pb::ReleaseRequest {
                            reservation_id: id,
                            reason: pb::ReleaseReason::CustomerCancelled as i32,
                        })
                        .await?;
                    *reservation_outcomes
                        .entry("cancelled by the customer")
                        .or_default() += 1;
                }
                _ => left_to_expire.push(id),
            }
        }
        // Orders picked two steps after commit (a pick event naming the reservation).
        let (due_picks, waiting): (Vec<_>, Vec<_>) = pending_commits
            .into_iter()
            .partition(|(_, _, _, at)| *at <= step);
        pending_commits = waiting;
        let mut picks = Vec::new();
        for (id, pair, qty, _) in due_picks {
            next_event += 1;
            let mut pick = event(
                format!("pick-{next_event}"),
                "ecom",
                "pick",
                pair,
                qty,
                clock.now(),
            );
            pick.reservation_id = Some(id);
            picks.push(pick);
        }
        send(&mut clients, &mut tally, picks).await?;
        engine.expire_reservations().await?;
        if step % 24 == 23 {
            progress(&format!(
                "  {} simulated: {} events sent, {} lookups, {} reservations so far",
                clock.now().to_rfc3339(),
                tally.sent,
                lookups,
                4 * (step + 1)
            ));
        }
    }
    // Close of day: let the rest arrive, then every pending reservation's TTL passes.
    clock.advance_to(clock.now().plus_ms(2 * 60 * MINUTE_MS));
    let rest: Vec<pb::Event> = delayed.into_iter().map(|(_, e)| e).collect();
    send(&mut clients, &mut tally, rest).await?;
    engine.expire_reservations().await?;
    let wall = started.elapsed();

    // Final states of every reservation.
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut expired_as_expected = true;
    for id in &left_to_expire {
        let r = clients
            .reservations
            .get_reservation(pb::GetReservationRequest {
                reservation_id: id.clone(),
            })
            .await?
            .into_inner();
        expired_as_expected &= r.state == pb::ReservationState::Expired as i32;
    }
    for step in 0..STEPS {
        for n in 0..4 {
            let id = stockgrid_actors::reservation::reservation_id_for(&format!("cart-{step}-{n}"));
            if let Ok(r) = clients
                .reservations
                .get_reservation(pb::GetReservationRequest { reservation_id: id })
                .await
            {
                let state = pb::ReservationState::try_from(r.into_inner().state).map_or(
                    "?".to_owned(),
                    |s| {
                        s.as_str_name()
                            .trim_start_matches("RESERVATION_STATE_")
                            .to_owned()
                    },
                );
                *states.entry(state).or_default() += 1;
            }
        }
    }
    // How the node decided: ml, or rules where drift made a region fall back.
    let policy = pb::admin_client::AdminClient::new(channel.clone())
        .get_decision_policy(pb::GetDecisionPolicyRequest {})
        .await?
        .into_inner();
    // Never oversold: no pair holds more than it has.
    let mut inspect = pb::inspect_client::InspectClient::new(channel);
    let mut oversold = 0;
    for &(sku, location) in pairs.iter() {
        let state = inspect
            .get_entity_state(pb::GetEntityStateRequest { sku, location })
            .await?
            .into_inner();
        if state.reserved > state.on_hand.max(0) {
            oversold += 1;
        }
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(format!("http://{}", node.address()))?
            .connect()
            .await?,
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status
        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    node.shutdown().await?;

    let mut summary = DemoSummary::default();
    let lines = &mut summary.lines;
    lines.push(format!(
        "simulated one store day in {:.1} s of wall time",
        wall.as_secs_f64()
    ));
    lines.push(format!(
        "ingested {} events in {:.1} s over gRPC ({:.0} events/s, each fsync'd before its ack)",
        tally.sent,
        ingest_time.as_secs_f64(),
        tally.sent as f64 / ingest_time.as_secs_f64().max(1e-9)
    ));
    lines.push(format!(
        "  accepted {}, duplicates {}, quarantined {}, rejected {}, failed {}",
        tally.accepted, tally.duplicates, tally.quarantined, tally.rejected, tally.failed
    ));
    for (reason, count) in &tally.quarantined_by_reason {
        lines.push(format!("  quarantined {reason}: {count}"));
    }
    lines.push(format!(
        "answered {lookups} lookups in {:.1} s ({:.0} lookups/s; search pages of 100 and single items)",
        lookup_time.as_secs_f64(),
        lookups as f64 / lookup_time.as_secs_f64().max(1e-9)
    ));
    lines.push(format!(
        "decisions: {} (model {})",
        policy
            .default_mode()
            .as_str_name()
            .trim_start_matches("DECISION_MODE_")
            .to_lowercase(),
        if policy.model_version.is_empty() {
            "none"
        } else {
            &policy.model_version
        }
    ));
    for drift in &policy.drift {
        lines.push(format!(
            "  region {}: {} (largest feature drift: {} PSI {:.2} over {} decisions{})",
            drift.region,
            if drift.fallback { "rules" } else { "ml" },
            drift.feature,
            drift.psi,
            drift.decisions,
            if drift.fallback {
                "; above 0.25 a region falls back to rules until switched back"
            } else {
                ""
            }
        ));
    }
    lines.push("a sample of answers:".to_owned());
    lines.extend(samples);
    lines.push(format!(
        "reservations refused (not enough stock): {refused_reservations}"
    ));
    lines.push("reservations by final state:".to_owned());
    for (state, count) in &states {
        lines.push(format!("  {state}: {count}"));
    }
    for (what, count) in &reservation_outcomes {
        lines.push(format!("  of which {what}: {count}"));
    }
    let check = |description: String, passed: bool| Check {
        description,
        passed,
    };
    summary.checks = vec![
        check(
            format!("every one of the {duplicates_sent} duplicates sent was answered DUPLICATE"),
            tally.duplicates == duplicates_sent,
        ),
        check(
            format!(
                "every one of the {late_sent} events later than the bound was quarantined TOO_LATE"
            ),
            tally
                .quarantined_by_reason
                .get("TOO_LATE")
                .copied()
                .unwrap_or(0)
                == late_sent
                && tally.quarantined == late_sent,
        ),
        check(
            "no event was rejected or failed".to_owned(),
            tally.rejected == 0 && tally.failed == 0,
        ),
        check(
            format!(
                "no pair holds more units than it has ({} pairs inspected)",
                pairs.len()
            ),
            oversold == 0,
        ),
        check(
            format!(
                "all {} reservations left alone expired after their TTL",
                left_to_expire.len()
            ),
            expired_as_expected,
        ),
        check(
            "no reservation is still PENDING or COMMITTED at the end of the day".to_owned(),
            !states.contains_key("PENDING") && !states.contains_key("COMMITTED"),
        ),
        check(
            "the node answered SERVING until shutdown, then stopped cleanly".to_owned(),
            serving,
        ),
    ];
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_in_the_m5_layout_become_pairs_selling_their_last_day() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            dir.path().join("calendar.csv"),
            "date,wm_yr_wk\n2011-01-29,11101\n2011-01-30,11101\n",
        )
        .expect("write calendar");
        std::fs::write(
            dir.path().join("sales_tiny_m5_wide.csv"),
            "id,item_id,dept_id,cat_id,store_id,state_id,d_1,d_2\n\
             a,FOODS_1,F,F,CA_1,CA,4,7\n\
             b,FOODS_1,F,F,TX_1,TX,0,0\n\
             c,HOBBIES_2,H,H,CA_1,CA,1,12\n",
        )
        .expect("write traces");
        let network = Network::from_traces(dir.path(), &mut Rng::seeded(1)).expect("traces");
        assert_eq!(network.stores, 2);
        assert_eq!(network.pairs, vec![(1, 1), (1, 2), (2, 1)]);
        let daily: Vec<u32> = network.sales.iter().map(|s| s.iter().sum()).collect();
        assert_eq!(daily, vec![7, 0, 12]);
        assert_eq!(network.fast, vec![false, false, true]);

        std::fs::write(
            dir.path().join("sales_tiny_m5_wide.csv"),
            "id,item_id,store_id,state_id,d_1,d_2\na,X,S,CA,many,1\n",
        )
        .expect("write traces");
        let error = Network::from_traces(dir.path(), &mut Rng::seeded(1))
            .err()
            .expect("a bad count is an error");
        assert!(error.to_string().contains(":2: field `d_1`"), "{error}");
    }
}
