//! `stockgrid demo`: a node on a temporary store, driven through a simulated day.

use anyhow::bail;
use std::path::PathBuf;

/// `stockgrid demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Stores in the simulated network.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    stores: u32,
    /// Items per store.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    skus: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Real sales traces in the M5 layout (e.g. ../shared/data/m5): the network becomes their
    /// item-store pairs (--stores and --skus are then ignored).
    #[arg(long)]
    traces: Option<PathBuf>,
}

pub(crate) async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = stockgrid_sim::demo::DemoOptions {
        stores: args.stores,
        skus: args.skus,
        seed: args.seed,
        traces: args.traces,
    };
    let summary = stockgrid_sim::demo::run_demo(&options, |line| eprintln!("{line}")).await?;
    for line in &summary.lines {
        println!("{line}");
    }
    println!("checks:");
    for check in &summary.checks {
        println!(
            "  [{}] {}",
            if check.passed { "ok" } else { "FAILED" },
            check.description
        );
    }
    if !summary.passed() {
        bail!("a demo check failed");
    }
    println!("all checks hold");
    Ok(())
}
