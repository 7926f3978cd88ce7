//! `stockgrid audit`: show a recorded decision, or replay it from the event log.

use super::read_node_config;
use anyhow::{Context, bail};
use clap::Subcommand;
use std::path::PathBuf;
use std::sync::Arc;
use stockgrid_actors::decision::{DecisionMode, SafetyStock};
use stockgrid_actors::persist::RebuildBase;
use stockgrid_actors::time::WallClock;
use stockgrid_actors::{Engine, EngineConfig};
use stockgrid_api::node::NodeConfig;
use stockgrid_inference::model::Model;
use stockgrid_storage::{OpenSettings, Store, StoreLocation};

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Prints a decision record from a stopped node's data directory.
    Show(AuditShowArgs),
    /// Rebuilds the entities from the event log alone up to a decision's moment, recomputes
    /// its features and answer, and shows they are bit-identical to the record.
    Replay(AuditReplayArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditShowArgs {
    /// The decision's id (from an answer, or RESERVATION_ID/SKU-LOCATION).
    decision_id: String,
    /// The store of a stopped node: its data directory, or a postgres:// URL (password
    /// from PGPASSWORD). --data-dir is the same.
    #[arg(
        long = "store",
        visible_alias = "data-dir",
        default_value = "./data",
        value_name = "DIR|URL"
    )]
    data_dir: StoreLocation,
}

/// Either a stopped node's data directory (its own records and event log) or a replay's
/// audit file with the events it was made on.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("records").required(true).args(["data_dir", "audit"])))]
pub(crate) struct AuditReplayArgs {
    /// The decision to check (with --audit, `all`: every record of the file).
    decision_id: String,
    /// The store of a stopped node (its data directory, or a postgres:// URL with the
    /// password in PGPASSWORD): rebuild from the node's own event log. --data-dir is the same.
    #[arg(long = "store", visible_alias = "data-dir", value_name = "DIR|URL", conflicts_with_all = ["audit", "events", "locations"])]
    data_dir: Option<StoreLocation>,
    /// With --data-dir: the node's TOML configuration (its ledger rules, safety stock and
    /// model).
    #[arg(long, requires = "data_dir")]
    config: Option<PathBuf>,
    /// The audit records (`replay --audit-out`).
    #[arg(long, requires = "events")]
    audit: Option<PathBuf>,
    /// The event log the decisions were made on (events.jsonl).
    #[arg(long, requires = "audit")]
    events: Option<PathBuf>,
    /// locations.jsonl, if the replay had one.
    #[arg(long, requires = "audit")]
    locations: Option<PathBuf>,
    /// The model of ml records (default: the node configuration's, else the shipped one).
    #[arg(long)]
    model: Option<PathBuf>,
}

pub(crate) async fn audit_show(args: AuditShowArgs) -> anyhow::Result<()> {
    let engine = open_stopped_node(&args.data_dir, EngineConfig::default()).await?;
    let record = engine.decision_record(&args.decision_id)?;
    engine.shutdown().await?;
    match record {
        Some(record) => {
            println!("{}", serde_json::to_string_pretty(&record)?);
            Ok(())
        }
        None => bail!(
            "no record of decision {:?} in {} (item-page decisions are sampled)",
            args.decision_id,
            args.data_dir
        ),
    }
}

/// `audit replay --data-dir`: one decision of a stopped node, from its own log.
pub(crate) async fn audit_replay_node(
    args: &AuditReplayArgs,
    data_dir: &StoreLocation,
) -> anyhow::Result<()> {
    let node_config = match &args.config {
        Some(path) => read_node_config(path)?,
        None => NodeConfig::default(),
    };
    let engine = open_stopped_node(data_dir, node_config.engine_config()?).await?;
    let model = match args.model.as_ref().or(node_config.decisions.model.as_ref()) {
        Some(path) => Model::load(path)?,
        None => Model::shipped()?,
    };
    // The mode is the record's; the model serves its ml records.
    engine
        .decisions()
        .configure(DecisionMode::Ml, Some(Arc::new(model)));
    let replayed = engine.replay_decision(&args.decision_id);
    engine.shutdown().await?;
    let Some(replay) = replayed? else {
        bail!(
            "no record of decision {:?} in {} (item-page decisions are sampled)",
            args.decision_id,
            data_dir
        );
    };
    let from = match replay.base {
        Some(RebuildBase::LogStart) => "the start of its log".to_owned(),
        Some(RebuildBase::Checkpoint { position, .. }) => {
            format!("the checkpoint after log record {position} (the log before was compacted)")
        }
        None => "nothing".to_owned(),
    };
    if replay.check.differences.is_empty() {
        println!(
            "decision {}: rebuilt from {from} up to log record {}",
            replay.check.decision_id,
            replay.log_position.unwrap_or(0)
        );
        println!("bit-identical: inputs digest, features and answer");
        return Ok(());
    }
    println!("decision {}: DIFFERS", replay.check.decision_id);
    for difference in &replay.check.differences {
        println!("  {difference}");
    }
    bail!("the decision does not replay bit for bit from the node's log")
}

/// The engine of a stopped node over its store, for offline tools: read-only over a shared
/// store, which nodes may still be serving.
pub(crate) async fn open_stopped_node(
    location: &StoreLocation,
    config: EngineConfig,
) -> anyhow::Result<Engine> {
    if !location.holds_a_store() {
        bail!("{location} holds no stockgrid store (no data directory of a node)");
    }
    let opening = location.clone();
    let mut store: Arc<dyn Store> =
        tokio::task::spawn_blocking(move || opening.open(&OpenSettings::default()))
            .await?
            .with_context(|| format!("open store {location}"))?;
    if !location.is_embedded() {
        // Nodes may be serving a shared store: read it, never write to it (the embedded
        // store's lock already keeps a running node out).
        store = Arc::new(stockgrid_storage::read_only::ReadOnly(store));
    }
    Ok(Engine::start(store, Arc::new(WallClock), config).await?)
}

pub(crate) fn audit_replay(args: AuditReplayArgs) -> anyhow::Result<()> {
    use stockgrid_actors::audit::{AuditRecord, audit_replay};
    let (Some(audit), Some(events)) = (&args.audit, &args.events) else {
        bail!("give --data-dir, or --audit with --events");
    };
    let text =
        std::fs::read_to_string(audit).with_context(|| format!("read {}", audit.display()))?;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let record: AuditRecord = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an audit record", audit.display(), index + 1))?;
        if args.decision_id == "all" || record.decision_id == args.decision_id {
            records.push(record);
        }
    }
    if records.is_empty() {
        bail!(
            "decision {:?} is not in {}",
            args.decision_id,
            audit.display()
        );
    }
    let events = stockgrid_actors::replay::read_events(events)?;
    let locations = match &args.locations {
        Some(path) => stockgrid_actors::replay::read_locations(path)?,
        None => Vec::new(),
    };
    let model = match &args.model {
        Some(path) => Model::load(path)?,
        None => Model::shipped()?,
    };
    let checks = audit_replay(
        &records,
        &events,
        &locations,
        &EngineConfig::default().ledger,
        Some(&model),
        &SafetyStock::uniform(0),
    )
    .map_err(|e| anyhow::anyhow!("rebuild from the event log: {e}"))?;
    let mut differing = 0;
    for (record, check) in records.iter().zip(&checks) {
        if check.differences.is_empty() {
            if records.len() == 1 {
                println!(
                    "decision {}: {} of sku {} at location {} for {} unit(s) at {}, after {} arrivals",
                    record.decision_id,
                    record.surface,
                    record.sku,
                    record.location,
                    record.quantity,
                    stockgrid_actors::time::Timestamp(record.time_ms),
                    record.arrivals_applied
                );
                println!(
                    "  recorded and recomputed: available {}, probability {}, reason {}, mode {:?}, {} features, inputs {}",
                    record.decision.available,
                    record.decision.probability,
                    record.decision.reason.as_str(),
                    record.decision.mode,
                    record.features.len(),
                    record.inputs_digest
                );
            }
        } else {
            differing += 1;
            println!("decision {}: DIFFERS", check.decision_id);
            for difference in &check.differences {
                println!("  {difference}");
            }
        }
    }
    if differing > 0 {
        bail!(
            "{differing} of {} decision(s) differ from their records",
            records.len()
        );
    }
    println!(
        "bit-identical: {} decision(s) recomputed from the event log",
        records.len()
    );
    Ok(())
}

/// Runs an `audit` subcommand.
pub(crate) async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Replay(args) => match args.data_dir.clone() {
            Some(data_dir) => audit_replay_node(&args, &data_dir).await,
            None => audit_replay(args),
        },
        AuditCommand::Show(args) => audit_show(args).await,
    }
}
