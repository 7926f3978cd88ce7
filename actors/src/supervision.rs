//! The shard supervisor: restarts a shard that panics and reports the message that did it.
//!
//! A shard's handler panicking means its in-memory entities may be half-updated. The
//! supervisor (a ractor actor linked to every shard) then:
//! 1. takes the shard's in-flight entries, and removes their identities from the identity
//!    tail (their batch never committed, so a retry must not look like a duplicate);
//! 2. records a [`PanicReport`] and logs it at ERROR;
//! 3. spawns a fresh shard with the same context: it starts empty and reloads entities
//!    from the store on first touch, so acknowledged work is all there and nothing
//!    unacknowledged survives;
//! 4. publishes the new actor to the engine through a watch channel.
//!
//! The engine, seeing its call fail, retries the entries one message each; an entry that
//! panics alone is the poisoned message, and is quarantined with reason `HANDLER_PANICKED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;

use crate::shard::{ArrivedEntry, Shard, ShardContext, ShardMessage};

/// What the supervisor saw when a shard panicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicReport {
    /// The shard.
    pub shard: usize,
    /// The panic, as ractor reported it.
    pub message: String,
    /// The entries being handled (empty if the panic was outside an `Apply`).
    pub in_flight: Vec<ArrivedEntry>,
}

/// The supervisor actor.
#[derive(Debug)]
pub struct ShardSupervisor;

/// Startup input of the supervisor.
#[derive(Debug)]
pub struct SupervisorArguments {
    /// One context per shard.
    pub contexts: Vec<Arc<ShardContext>>,
    /// Where the current actor of each shard is published.
    pub publishers: Vec<watch::Sender<Option<ActorRef<ShardMessage>>>>,
    /// Where panic reports go.
    pub reports: Arc<Mutex<Vec<PanicReport>>>,
}

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    arguments: SupervisorArguments,
    shard_of_actor: HashMap<ActorId, usize>,
}

/// Panic reports kept in memory (the oldest are dropped past this).
const MAX_PANIC_REPORTS: usize = 1_000;

impl Actor for ShardSupervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            arguments,
            shard_of_actor: HashMap::new(),
        };
        for shard in 0..state.arguments.contexts.len() {
            spawn_shard(&myself, &mut state, shard).await?;
        }
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(()); // Starts and clean stops need nothing.
        };
        let Some(shard) = state.shard_of_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let context = &state.arguments.contexts[shard];
        let in_flight = context
            .in_flight
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        let in_flight: Vec<ArrivedEntry> = in_flight
            .map(|entries| entries.as_ref().clone())
            .unwrap_or_default();
        for arrived in &in_flight {
            context.identities.forget(&arrived.entry);
        }
        let report = PanicReport {
            shard,
            message: error.to_string(),
            in_flight,
        };
        tracing::error!(
            shard,
            panic = %report.message,
            in_flight_entries = report.in_flight.len(),
            "shard panicked; restarting it from the store"
        );
        if let Ok(mut reports) = state.arguments.reports.lock() {
            if reports.len() >= MAX_PANIC_REPORTS {
                reports.remove(0);
            }
            reports.push(report);
        }
        let _ = state.arguments.publishers[shard].send(None);
        spawn_shard(&myself, state, shard).await
    }
}

async fn spawn_shard(
    myself: &ActorRef<()>,
    state: &mut SupervisorState,
    shard: usize,
) -> Result<(), ActorProcessingErr> {
    let context = Arc::clone(&state.arguments.contexts[shard]);
    let (actor, _handle) = Actor::spawn_linked(None, Shard, context, myself.get_cell()).await?;
    state.shard_of_actor.insert(actor.get_id(), shard);
    let _ = state.arguments.publishers[shard].send(Some(actor));
    Ok(())
}
