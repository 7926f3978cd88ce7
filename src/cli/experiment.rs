//! `stockgrid experiment`: the online experiments of a running node.

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum ExperimentCommand {
    /// Per arm: decisions, promised share, outcomes of promised reservation lines, the
    /// broken-promise rate and the recall estimate with Wilson 95% intervals.
    Report(ExperimentReportArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExperimentReportArgs {
    /// The node's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
}

pub(crate) async fn experiment_report(args: ExperimentReportArgs) -> anyhow::Result<()> {
    use stockgrid_api::proto::v1 as pb;
    let address = format!("http://{}", args.target);
    let channel = tonic::transport::Channel::from_shared(address.clone())
        .with_context(|| format!("--target {:?}: not an address", args.target))?
        .connect()
        .await
        .with_context(|| format!("connect to {address}"))?;
    let report = pb::admin_client::AdminClient::new(channel)
        .get_experiment_report(pb::GetExperimentReportRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("GetExperimentReport: {}", status.message()))?
        .into_inner();
    if report.name.is_empty() {
        println!("no experiment is running on {}", args.target);
        return Ok(());
    }
    let interval = |estimate: Option<pb::Estimate>| {
        estimate.map_or("-".to_owned(), |e| {
            format!(
                "{:.2}% [{:.2}%, {:.2}%]",
                100.0 * e.value,
                100.0 * e.low,
                100.0 * e.high
            )
        })
    };
    println!(
        "experiment {} ({}shadow answers)",
        report.name,
        if report.shadow { "" } else { "no " }
    );
    println!(
        "  {:<12} {:>6} {:>10} {:>9} {:>8} {:>7} {:>28} {:>8} {:>28}",
        "arm",
        "weight",
        "decisions",
        "promised",
        "settled",
        "broken",
        "broken rate (95%)",
        "sample",
        "recall estimate (95%)"
    );
    for arm in report.arms {
        println!(
            "  {:<12} {:>6} {:>10} {:>9} {:>8} {:>7} {:>28} {:>8} {:>28}",
            arm.name,
            arm.weight,
            arm.decisions,
            arm.promised,
            arm.settled,
            arm.broken,
            interval(arm.broken_rate),
            arm.recall_sample,
            if arm.recall_sample == 0 {
                "- (no shadow sample)".to_owned()
            } else {
                interval(arm.recall)
            }
        );
    }
    Ok(())
}

/// Runs an `experiment` subcommand.
pub(crate) async fn run(command: ExperimentCommand) -> anyhow::Result<()> {
    match command {
        ExperimentCommand::Report(args) => experiment_report(args).await,
    }
}
