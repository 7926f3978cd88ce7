//! The subcommands of `stockgrid`, one module each, and the helpers two of them share.

pub(crate) mod audit;
pub(crate) mod cluster;
pub(crate) mod demo;
pub(crate) mod experiment;
pub(crate) mod inspect;
pub(crate) mod loadgen;
pub(crate) mod replay;
pub(crate) mod serve;
pub(crate) mod sim;
pub(crate) mod train;

use anyhow::{Context, bail};
use std::path::Path;
use stockgrid_actors::decision::SafetyStock;
use stockgrid_actors::domain::Surface;
use stockgrid_api::node::NodeConfig;

/// Splits one `SURFACE=VALUE` argument of `flag` and parses its surface; errors name the flag,
/// the argument and what was expected (`value_name`).
pub(crate) fn surface_and_value<'a>(
    flag: &str,
    item: &'a str,
    value_name: &str,
) -> anyhow::Result<(Surface, &'a str)> {
    let (surface, value) = item
        .split_once('=')
        .with_context(|| format!("{flag} {item:?}: expected SURFACE={value_name}"))?;
    let surface = Surface::parse(surface).with_context(|| {
        format!(
            "{flag} {item:?}: unknown surface {surface:?}; expected one of {}",
            Surface::expected()
        )
    })?;
    Ok((surface, value))
}

/// A uniform safety stock with `--surface-safety-stock SURFACE=UNITS` overrides.
pub(crate) fn parse_surface_safety_stock(
    uniform: i64,
    overrides: &[String],
) -> anyhow::Result<SafetyStock> {
    let mut safety = SafetyStock::uniform(uniform);
    for item in overrides {
        let (surface, units) = surface_and_value("--surface-safety-stock", item, "UNITS")?;
        let units: i64 = units.parse().with_context(|| {
            format!("--surface-safety-stock {item:?}: units must be an integer")
        })?;
        if units < 0 {
            bail!("--surface-safety-stock {item:?}: units must not be negative");
        }
        safety = safety.with(surface, units);
    }
    Ok(safety)
}

/// The node configuration in the TOML file at `path`.
pub(crate) fn read_node_config(path: &Path) -> anyhow::Result<NodeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
    NodeConfig::from_toml(&text).with_context(|| format!("config {}", path.display()))
}
