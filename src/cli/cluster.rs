//! `stockgrid cluster status`: the members of a grid, the partitions each owns and their
//! epochs, and the partitions without a live owner, read from the shared store (read-only).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use stockgrid_actors::keys;
use stockgrid_actors::time::{Clock, WallClock};
use stockgrid_cluster::records::{ClusterRecord, GridTable, decode};
use stockgrid_cluster::status::GridStatus;
use stockgrid_storage::location::OpenSettings;
use stockgrid_storage::{Store, StoreLocation};

/// `stockgrid cluster ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// Members (id, address, region, heartbeat age), partitions per owner with their epochs,
    /// and partitions without a live owner.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The grid's shared store: postgres://USER@HOST:PORT/DATABASE (password from
    /// PGPASSWORD or --store-password-file) or fdb:CLUSTER-FILE.
    #[arg(long, value_name = "URL")]
    store: StoreLocation,
    /// A file whose first line is the database password.
    #[arg(long)]
    store_password_file: Option<PathBuf>,
    /// The cluster's name (the store's must match).
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// A member renewed longer ago than this (by this machine's clock) counts as not live.
    #[arg(long, default_value_t = 6000)]
    lease_ms: i64,
    /// Print the report as JSON (every partition's owner and epoch included).
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    if args.store.is_embedded() {
        bail!(
            "--store {}: a grid runs on a shared store (postgres://... or fdb:FILE), not a directory",
            args.store
        );
    }
    if args.lease_ms <= 0 {
        bail!("--lease-ms must be above zero, got {}", args.lease_ms);
    }
    let location = args.store.clone();
    let settings = OpenSettings {
        password_file: args.store_password_file.clone(),
        ..OpenSettings::default()
    };
    let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || location.open(&settings))
        .await?
        .with_context(|| format!("open store {}", args.store))?;
    let store: Arc<dyn Store> = Arc::new(stockgrid_storage::read_only::ReadOnly(store));
    let cluster = args.cluster.clone();
    let table = tokio::task::spawn_blocking(move || -> anyhow::Result<GridTable> {
        let key = keys::cluster_key();
        match store.get(&key)? {
            None => bail!("the store holds no grid (no node has joined one there)"),
            Some(bytes) => {
                let found: ClusterRecord = decode("cluster", &key, &bytes)?;
                if found.name != cluster {
                    bail!(
                        "the store belongs to cluster {:?}, not {cluster:?}",
                        found.name
                    );
                }
            }
        }
        Ok(GridTable::read(store.as_ref(), keys::SCHEME.count())?)
    })
    .await??;
    let report = GridStatus::of(&args.cluster, &table, WallClock.now().0, args.lease_ms);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "cluster {}: {} members, {} partitions",
        report.cluster,
        report.members.len(),
        report.partitions
    );
    println!(
        "{:<20} {:<24} {:<12} {:<8} {:>5} {:>14} {:>10} {:>13}",
        "node", "address", "region", "state", "live", "heartbeat age", "partitions", "epochs"
    );
    for member in &report.members {
        println!(
            "{:<20} {:<24} {:<12} {:<8} {:>5} {:>11} ms {:>10} {:>13}",
            member.node_id,
            member.address,
            member.region,
            member.state,
            if member.live { "yes" } else { "no" },
            member.heartbeat_age_ms,
            member.partitions,
            format!("{}..{}", member.epochs.0, member.epochs.1),
        );
    }
    match report.without_live_owner.len() {
        0 => println!("every partition has a live owner"),
        count => println!(
            "{count} partitions without a live owner (first: {:?})",
            &report.without_live_owner[..count.min(16)]
        ),
    }
    Ok(())
}
