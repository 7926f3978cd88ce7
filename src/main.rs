//! The `stockgrid` command: parses the command line and hands each subcommand to its module
//! in [`cli`], which wires it to the library crates.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Real-time inventory availability: a deterministic ledger per SKU-location.
#[derive(Debug, Parser)]
#[command(name = "stockgrid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts a node with a temporary store and drives a simulated store day through it.
    Demo(cli::demo::DemoArgs),
    /// Sends load to a running node (or a floor) and prints throughput and latency percentiles.
    Loadgen(cli::loadgen::LoadgenArgs),
    /// Runs one node: the gRPC API over its store (embedded, PostgreSQL), until SIGTERM or Ctrl-C.
    Serve(cli::serve::ServeArgs),
    /// Runs replay files (events, queries) through the engine and writes answers.jsonl.
    Replay(cli::replay::ReplayArgs),
    /// Prints the full state of one SKU-location pair from a data directory.
    Inspect(cli::inspect::InspectArgs),
    /// Trains a model (belief parameters, scorer, per-surface thresholds) from simulator runs.
    Train(cli::train::TrainArgs),
    /// Decision audit: replay a recorded decision from the event log.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// The grid: its members and who owns which partition.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Online experiments of a running node.
    #[command(subcommand)]
    Experiment(cli::experiment::ExperimentCommand),
    /// The simulator: generate replay files, evaluate answers, drill a node.
    #[command(subcommand)]
    Sim(cli::sim::SimCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,stockgrid_api=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => cli::demo::demo(args).await,
            Command::Loadgen(args) => cli::loadgen::loadgen(args).await,
            Command::Serve(args) => cli::serve::serve(args).await,
            Command::Replay(args) => cli::replay::replay(args).await,
            Command::Inspect(args) => cli::inspect::inspect(args).await,
            Command::Train(args) => cli::train::train(args),
            Command::Audit(command) => cli::audit::run(command).await,
            Command::Experiment(command) => cli::experiment::run(command).await,
            Command::Cluster(command) => cli::cluster::run(command).await,
            Command::Sim(command) => cli::sim::run(command).await,
        }
    })
}
