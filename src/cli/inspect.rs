//! `stockgrid inspect`: the full state of one pair, read from a stopped node's store.

use stockgrid_actors::EngineConfig;
use stockgrid_actors::domain::PairKey;
use stockgrid_storage::StoreLocation;

#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// The store of a stopped node or a replay's `--store`: a data directory or a
    /// postgres:// URL (password from PGPASSWORD). --data-dir is the same.
    #[arg(
        long = "store",
        visible_alias = "data-dir",
        default_value = "./data",
        value_name = "DIR|URL"
    )]
    data_dir: StoreLocation,
    /// Item number.
    #[arg(long)]
    sku: u64,
    /// Location number.
    #[arg(long)]
    location: u32,
}

pub(crate) async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let engine = super::audit::open_stopped_node(&args.data_dir, EngineConfig::default()).await?;
    let pair = PairKey::new(args.sku, args.location);
    let report = engine.inspect(pair).await?;
    match report {
        None => println!("no record of {pair}"),
        Some(report) => {
            let view = &report.view;
            println!("{pair}");
            println!(
                "  on_hand {}, reserved {}, in_transit {} ({} overdue transfers)",
                view.on_hand_units,
                view.reserved_units,
                view.in_transit_units,
                view.overdue_transfers
            );
            println!(
                "  applied entries {}, quarantined {}, log position {}",
                view.applied_entries, view.quarantined_entries, report.log_position
            );
            if let Some(anchor) = &view.last_anchor {
                println!(
                    "  last anchor: {} {} units at {} from {} (event {})",
                    anchor.kind, anchor.units, anchor.event_time, anchor.source, anchor.event_id
                );
            }
            if let Some(sale) = view.last_sale {
                println!("  last sale at {sale}");
            }
            for (source, seen) in stockgrid_actors::domain::Source::ALL
                .iter()
                .zip(view.source_last_seen)
            {
                if let Some(seen) = seen {
                    println!("  last seen from {source}: {seen}");
                }
            }
            for record in &report.quarantined {
                println!(
                    "  quarantined {} event {} ({}, arrived {}): {}",
                    record.reason.code(),
                    record.entry.event.event_id,
                    record.entry.event.kind,
                    record.arrival,
                    record.reason
                );
            }
        }
    }
    // Inspection changes nothing; stop without writing snapshots.
    drop(engine);
    Ok(())
}
