//! `stockgrid loadgen`: load against a node or one of its floors, reported as text or JSON.

use anyhow::{Context, bail};
use clap::ValueEnum;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum WorkloadArg {
    /// One pair per request.
    Point,
    /// `--batch-items` pairs per request.
    Batch,
    /// `--ingest-events` sales per request, each durable before the answer.
    Ingest,
    /// 70% point, 20% batch, 10% ingest; with `--ingest-rate`, lookups beside open-loop ingest.
    Mixed,
}

/// `stockgrid loadgen`: exactly one of `--target`, `--serve-floor` and `--store-floor`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["target", "serve_floor", "store_floor", "postgres_floor"])))]
pub(crate) struct LoadgenArgs {
    /// The node (or floor) to load, e.g. 127.0.0.1:50051.
    #[arg(long, requires = "workload")]
    target: Option<String>,
    /// Serve the point and batch floor on this address until stopped: the same gRPC
    /// services answering without deciding or storing anything.
    #[arg(long, value_name = "ADDR")]
    serve_floor: Option<SocketAddr>,
    /// Measure the store floor: the store alone absorbing the writes of `--events` sales of
    /// a durable ingest; a new directory for the embedded store, or a postgres:// URL
    /// (password from PGPASSWORD) of an empty database.
    #[arg(long, value_name = "DIR|URL")]
    store_floor: Option<stockgrid_storage::StoreLocation>,
    /// Measure PostgreSQL alone writing the same rows (plain transactions, no conditions or
    /// commit ids) into the database at this URL (password from PGPASSWORD).
    #[arg(long, value_name = "URL", conflicts_with = "store_floor")]
    postgres_floor: Option<String>,
    /// What to send.
    #[arg(long, value_enum)]
    workload: Option<WorkloadArg>,
    /// Requests per second (open loop, latency from the intended send time); without it,
    /// closed loop.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// With `--workload mixed`: events per second of ingest sent open loop (by clients of its
    /// own) beside lookups (7 point to 2 batch; open loop at `--rate` requests/s if given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ingest_rate: Option<u64>,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Pairs the load is spread over.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pairs: u64,
    /// Items per batch lookup.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch_items: u64,
    /// Events per ingest request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    ingest_events: u64,
    /// With `--store-floor`: sales whose writes are recorded and replayed.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    events: u64,
    /// With `--store-floor`: the engine's shards (the node's default is 8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    shards: u64,
    /// Skip counting every pair before measuring.
    #[arg(long)]
    no_preload: bool,
    /// Look up only pairs whose partition this grid member owns (by the target's routing
    /// table), e.g. to send the same batches to their owner and through another node.
    #[arg(long, value_name = "NODE_ID")]
    owned_by: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    use stockgrid_sim::loadgen::{LoadOptions, Workload, preload, run_load};
    if let Some(address) = args.serve_floor {
        eprintln!("loadgen: serving the floor on {address} until stopped");
        return stockgrid_sim::floor::serve_floor(address).await;
    }
    let floor_options =
        |store: stockgrid_storage::StoreLocation| stockgrid_sim::floor::StoreFloorOptions {
            store,
            events: args.events,
            ingest_events: args.ingest_events as usize,
            concurrency: args.concurrency as usize,
            pairs: args.pairs,
            shards: args.shards as usize,
        };
    let report = if let Some(store) = &args.store_floor {
        if let stockgrid_storage::StoreLocation::Embedded(dir) = store
            && dir.exists()
            && dir
                .read_dir()
                .context("read --store-floor")?
                .next()
                .is_some()
        {
            bail!(
                "--store-floor: {} is not empty; name a new directory",
                dir.display()
            );
        }
        let options = floor_options(store.clone());
        stockgrid_sim::floor::store_floor(&options, |line| eprintln!("{line}")).await?
    } else if let Some(url) = &args.postgres_floor {
        // The recording runs on a temporary in-memory store; `store` is unused here.
        let options = floor_options(stockgrid_storage::StoreLocation::default());
        stockgrid_sim::floor::postgres_floor(url, &options, |line| eprintln!("{line}")).await?
    } else {
        let (Some(target), Some(workload)) = (&args.target, args.workload) else {
            bail!("--target needs --workload");
        };
        if args.ingest_rate.is_some() && !matches!(workload, WorkloadArg::Mixed) {
            bail!("--ingest-rate: only with --workload mixed");
        }
        let target = if target.contains("://") {
            target.clone()
        } else {
            format!("http://{target}")
        };
        let options = LoadOptions {
            target,
            workload: match workload {
                WorkloadArg::Point => Workload::Point,
                WorkloadArg::Batch => Workload::Batch,
                WorkloadArg::Ingest => Workload::Ingest,
                WorkloadArg::Mixed => Workload::Mixed,
            },
            rate: args.rate,
            ingest_rate: args.ingest_rate,
            duration: Duration::from_secs(args.duration),
            concurrency: args.concurrency as usize,
            pairs: args.pairs,
            batch_items: args.batch_items as usize,
            ingest_events: args.ingest_events as usize,
            preload: !args.no_preload,
            owned_by: args.owned_by.clone(),
        };
        if options.preload {
            let mut last = Instant::now();
            preload(&options, |done| {
                if last.elapsed() >= Duration::from_secs(2) {
                    eprintln!("preload: {done}/{} pairs counted", args.pairs);
                    last = Instant::now();
                }
            })
            .await
            .context("preload pairs")?;
        }
        eprintln!(
            "loadgen: {:?} for {} s, {} clients, {}{}",
            workload,
            args.duration,
            args.concurrency,
            args.rate.map_or("closed loop".to_owned(), |r| format!(
                "open loop at {r} requests/s"
            )),
            args.ingest_rate.map_or(String::new(), |r| format!(
                ", ingest open loop at {r} events/s"
            ))
        );
        run_load(options).await?
    };
    if args.json {
        println!("{}", report.json());
    } else {
        for line in report.lines() {
            println!("{line}");
        }
    }
    Ok(())
}
