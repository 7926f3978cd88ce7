//! `stockgrid serve`: one node, its configuration merged from the file, flags and environment.

use super::{parse_surface_safety_stock, read_node_config};
use anyhow::bail;
use std::path::PathBuf;
use std::sync::Arc;
use stockgrid_actors::decision::SafetyStock;
use stockgrid_actors::domain::Surface;
use stockgrid_actors::time::WallClock;
use stockgrid_api::node::{Node, NodeConfig};

/// `stockgrid serve`: settings come from the TOML file, then the environment, then flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (see ops/stockgrid.example.toml).
    #[arg(long, env = "STOCKGRID_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "STOCKGRID_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Where the store lives: a directory for the embedded store [default: ./data], a
    /// PostgreSQL URL postgres://USER@HOST:PORT/DATABASE (the password from PGPASSWORD or
    /// --store-password-file, never the URL), or fdb:CLUSTER-FILE.
    #[arg(long, env = "STOCKGRID_STORE", value_name = "DIR|URL")]
    store: Option<String>,
    /// Directory of the embedded store (the same as --store DIR).
    #[arg(long, env = "STOCKGRID_DATA_DIR", conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// A file whose first line is the database password of a postgres:// store.
    #[arg(long, env = "STOCKGRID_STORE_PASSWORD_FILE")]
    store_password_file: Option<PathBuf>,
    /// The longest a store call may take before writes answer UNAVAILABLE and lookups of
    /// pairs not in memory "not available" [default: 5000].
    #[arg(long, env = "STOCKGRID_STORE_TIMEOUT_MS")]
    store_timeout_ms: Option<u64>,
    /// Events later than this after their event time are quarantined [default: 86400].
    #[arg(long, env = "STOCKGRID_LATENESS_BOUND_SECONDS")]
    lateness_bound_seconds: Option<i64>,
    /// Safety stock of one surface, e.g. pickup=2 (repeatable).
    #[arg(long = "surface-safety-stock", value_name = "SURFACE=UNITS")]
    surface_safety_stock: Vec<String>,
    /// Shard actors [default: 8].
    #[arg(long, env = "STOCKGRID_SHARDS")]
    shards: Option<usize>,
    /// Calls served at once before shedding load [default: 4096].
    #[arg(long, env = "STOCKGRID_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Join the grid of this name on the shared store (with --node-id and --region); without
    /// it the node is a single node owning every partition.
    #[arg(long, env = "STOCKGRID_CLUSTER", value_name = "NAME")]
    cluster: Option<String>,
    /// This node's id in the grid, unique in it (letters, digits, '-', '_', '.').
    #[arg(long, env = "STOCKGRID_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// This node's region: partitions of the region's locations prefer its nodes.
    #[arg(long, env = "STOCKGRID_REGION", value_name = "REGION")]
    region: Option<String>,
    /// Where peers and clients reach this node [default: the listen address].
    #[arg(long, env = "STOCKGRID_ADVERTISE", value_name = "ADDR")]
    advertise: Option<String>,
    /// Drills: run on simulated time starting at this RFC 3339 instant instead of the wall
    /// clock (lateness, TTLs and staleness follow it).
    #[arg(long, requires = "clock_speed")]
    clock_start: Option<String>,
    /// Drills: simulated seconds per wall-clock second.
    #[arg(long, requires = "clock_start")]
    clock_speed: Option<f64>,
    /// Drills: the wall-clock instant (RFC 3339) at which the clock reads --clock-start
    /// [default: now].
    #[arg(long, requires = "clock_start")]
    clock_anchor: Option<String>,
}

pub(crate) fn node_config(args: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => read_node_config(path)?,
        None => NodeConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(store) = &args.store {
        config.store = Some(store.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.store = None;
        config.data_dir = dir.clone();
    }
    if let Some(file) = &args.store_password_file {
        config.store_password_file = Some(file.clone());
    }
    if let Some(timeout) = args.store_timeout_ms {
        config.store_timeout_ms = timeout;
    }
    config.store_location()?;
    if let Some(bound) = args.lateness_bound_seconds {
        config.lateness_bound_seconds = bound;
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if let Some(in_flight) = args.max_in_flight {
        config.limits.max_in_flight = in_flight;
    }
    let defaults = SafetyStock::uniform(0);
    let safety = parse_surface_safety_stock(0, &args.surface_safety_stock)?;
    let units = &mut config.safety_stock;
    for (surface, slot) in [
        (Surface::ItemPage, &mut units.item_page),
        (Surface::Pickup, &mut units.pickup),
        (Surface::Delivery, &mut units.delivery),
        (Surface::Substitution, &mut units.substitution),
        (Surface::Replenishment, &mut units.replenishment),
    ] {
        if safety.units(surface) != defaults.units(surface) {
            *slot = safety.units(surface);
        }
    }
    if args.cluster.is_some()
        || args.node_id.is_some()
        || args.region.is_some()
        || args.advertise.is_some()
    {
        let cluster = config.cluster.get_or_insert_with(Default::default);
        for (flag, slot) in [
            (&args.cluster, &mut cluster.name),
            (&args.node_id, &mut cluster.node_id),
            (&args.region, &mut cluster.region),
        ] {
            if let Some(value) = flag {
                *slot = value.clone();
            }
        }
        if let Some(advertise) = &args.advertise {
            cluster.advertise = Some(advertise.clone());
        }
    }
    if let Some(cluster) = &config.cluster {
        cluster.config(config.listen)?;
    }
    config.engine_config()?;
    Ok(config)
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn termination() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the node");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A node's files hold inventory, reservations and decision records: from here on every
/// file and directory this process creates is its owner's alone (0600 / 0700).
pub(crate) fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    private_files();
    let config = node_config(&args)?;
    let clock: Arc<dyn stockgrid_actors::time::Clock> = match (&args.clock_start, args.clock_speed)
    {
        (Some(start), Some(speed)) => {
            if !(speed.is_finite() && speed > 0.0) {
                bail!("--clock-speed must be a positive number, got {speed}");
            }
            let start = stockgrid_actors::time::Timestamp::parse_rfc3339(start)
                .map_err(|e| anyhow::anyhow!("--clock-start {start:?}: {e}"))?;
            let anchor = match &args.clock_anchor {
                Some(text) => stockgrid_actors::time::Timestamp::parse_rfc3339(text)
                    .map_err(|e| anyhow::anyhow!("--clock-anchor {text:?}: {e}"))?,
                None => stockgrid_actors::time::Clock::now(&WallClock),
            };
            eprintln!("simulated clock from {} at {speed}x", start.to_rfc3339());
            Arc::new(stockgrid_actors::time::AcceleratedClock {
                start,
                anchor_wall_ms: anchor.0,
                speed,
            })
        }
        _ => Arc::new(WallClock),
    };
    let node = Node::start(&config, clock).await?;
    eprintln!(
        "stockgrid serving on {} (store: {}); SIGTERM or Ctrl-C stops it",
        node.address(),
        config.store_location()?
    );
    node.run_until(termination()).await?;
    eprintln!("stockgrid stopped cleanly");
    Ok(())
}
