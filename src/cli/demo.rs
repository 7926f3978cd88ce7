//! `stockgrid demo`: the simulator's baseline world played through a real node.

use anyhow::{Context, bail};
use std::path::PathBuf;

/// `stockgrid demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Recorded days played (at least 3: questions start on the third).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=28))]
    days: u32,
    /// Seed of the world.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 8_640.0)]
    speed: f64,
    /// Items in the world (default: the scenario's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    skus: Option<u32>,
    /// Real sales traces in the M5 layout (e.g. ../shared/data/m5) to drive the demand.
    #[arg(long)]
    traces: Option<PathBuf>,
}

pub(crate) async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = stockgrid_sim::demo::DemoOptions {
        days: args.days,
        seed: args.seed,
        speed: args.speed,
        skus: args.skus,
        traces: args.traces,
        stockgrid: std::env::current_exe().context("find this binary to run the node")?,
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
