//! Real demand: the M5 layout (Walmart item x store x day unit sales, and its calendar).
//!
//! `--traces DIR` points at a folder with `sales_tiny_m5_wide.csv` (or the full
//! `sales_train_validation.csv`: `id,item_id,dept_id,cat_id,store_id,state_id,d_1,...`) and
//! `calendar.csv` (its `date` column, one row per day from `d_1`, or a `d` column naming the
//! day). The files are read, never copied: the project does not ship them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

/// The sales of one M5 file, indexed for the simulator.
#[derive(Clone, Debug)]
pub struct Traces {
    /// Item ids in file order of first appearance (`FOODS_1_033`).
    pub items: Vec<String>,
    /// Store ids per state (`CA` -> `CA_1`, `CA_2`, ...), in file order.
    pub stores_by_state: BTreeMap<String, Vec<String>>,
    /// Day number (days since 1970-01-01) of each column `d_1`, `d_2`, ...
    pub day_numbers: Vec<i64>,
    /// Units sold per (item index, store id), one value per day column.
    pub sales: BTreeMap<(usize, String), Vec<u32>>,
}

/// Sales file names tried, in order.
const SALES_FILES: &[&str] = &["sales_tiny_m5_wide.csv", "sales_train_validation.csv"];

fn unquote(field: &str) -> &str {
    field.trim().trim_matches('"')
}

/// The fields of one CSV row (the M5 files quote no commas).
fn split_row(line: &str) -> Vec<&str> {
    line.split(',').map(unquote).collect()
}

impl Traces {
    /// Reads the M5 files of `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Traces> {
        let sales_path = SALES_FILES
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.exists())
            .with_context(|| {
                format!(
                    "{}: no M5 sales file (expected one of {})",
                    dir.display(),
                    SALES_FILES.join(", ")
                )
            })?;
        let calendar_path = dir.join("calendar.csv");
        let calendar = std::fs::read_to_string(&calendar_path)
            .with_context(|| format!("read {}", calendar_path.display()))?;
        let mut lines = calendar.lines();
        let header = split_row(lines.next().unwrap_or_default());
        let date_column = header
            .iter()
            .position(|h| *h == "date")
            .with_context(|| format!("{}: no `date` column", calendar_path.display()))?;
        let d_column = header.iter().position(|h| *h == "d");
        let mut dates_by_day: BTreeMap<usize, i64> = BTreeMap::new();
        for (row, line) in lines.enumerate() {
            let fields = split_row(line);
            let date = fields.get(date_column).copied().unwrap_or_default();
            let day_number = crate::scenario::parse_date(date).with_context(|| {
                format!(
                    "{}:{}: field `date`: {date:?} is not YYYY-MM-DD",
                    calendar_path.display(),
                    row + 2
                )
            })?;
            let index = match d_column {
                Some(column) => {
                    let d = fields.get(column).copied().unwrap_or_default();
                    d.strip_prefix("d_")
                        .and_then(|n| n.parse::<usize>().ok())
                        .with_context(|| {
                            format!(
                                "{}:{}: field `d`: {d:?} is not d_N",
                                calendar_path.display(),
                                row + 2
                            )
                        })?
                }
                None => row + 1,
            };
            dates_by_day.insert(index, day_number);
        }

        let text = std::fs::read_to_string(&sales_path)
            .with_context(|| format!("read {}", sales_path.display()))?;
        let mut lines = text.lines();
        let header = split_row(lines.next().unwrap_or_default());
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("{}: no `{name}` column", sales_path.display()))
        };
        let (item_column, store_column, state_column) =
            (column("item_id")?, column("store_id")?, column("state_id")?);
        let day_columns: Vec<(usize, usize)> = header
            .iter()
            .enumerate()
            .filter_map(|(at, h)| Some((at, h.strip_prefix("d_")?.parse().ok()?)))
            .collect();
        if day_columns.is_empty() {
            bail!("{}: no day columns d_N", sales_path.display());
        }
        let mut day_numbers = Vec::with_capacity(day_columns.len());
        for (_, d) in &day_columns {
            let date = dates_by_day
                .get(d)
                .with_context(|| format!("{}: no date for d_{d}", calendar_path.display()))?;
            day_numbers.push(*date);
        }
        if day_numbers.windows(2).any(|w| w[1] != w[0] + 1) {
            bail!(
                "{}: the day columns are not consecutive days",
                sales_path.display()
            );
        }
        let mut traces = Traces {
            items: Vec::new(),
            stores_by_state: BTreeMap::new(),
            day_numbers,
            sales: BTreeMap::new(),
        };
        let mut item_index: BTreeMap<String, usize> = BTreeMap::new();
        for (row, line) in lines.enumerate() {
            let line_number = row + 2;
            let fields = split_row(line);
            if fields.len() != header.len() {
                bail!(
                    "{}:{line_number}: {} fields, expected {}",
                    sales_path.display(),
                    fields.len(),
                    header.len()
                );
            }
            let item = fields[item_column].to_owned();
            let index = *item_index.entry(item.clone()).or_insert_with(|| {
                traces.items.push(item);
                traces.items.len() - 1
            });
            let store = fields[store_column].to_owned();
            let stores = traces
                .stores_by_state
                .entry(fields[state_column].to_owned())
                .or_default();
            if !stores.contains(&store) {
                stores.push(store.clone());
            }
            let mut units = Vec::with_capacity(day_columns.len());
            for (at, d) in &day_columns {
                let value = fields[*at].parse::<u32>().with_context(|| {
                    format!(
                        "{}:{line_number}: field `d_{d}`: {:?} is not a unit count",
                        sales_path.display(),
                        fields[*at]
                    )
                })?;
                units.push(value);
            }
            traces.sales.insert((index, store), units);
        }
        if traces.sales.is_empty() {
            bail!("{}: no item-store rows", sales_path.display());
        }
        Ok(traces)
    }

    /// Units of `item` at `store` on the `column`-th day (0 when the row is missing).
    pub fn units(&self, item: usize, store: &str, column: usize) -> u32 {
        self.sales
            .get(&(item, store.to_owned()))
            .and_then(|units| units.get(column))
            .copied()
            .unwrap_or(0)
    }
}
