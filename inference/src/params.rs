//! The belief's parameters, apart from the belief so that the shared facts (which pool
//! with them) and the belief both read them without reading each other.

use serde::{Deserialize, Serialize};

/// The belief's noise and drift parameters: fitted by `stockgrid train`, shipped in a model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BeliefParams {
    /// Standard deviation of a cycle count, units.
    pub count_sd: f64,
    /// Fraction of the truth an RFID sweep misses on average.
    pub rfid_under_read: f64,
    /// Standard deviation of an RFID read, units.
    pub rfid_sd: f64,
    /// Standard deviation of a fresh feed snapshot, units.
    pub snapshot_sd: f64,
    /// Standard deviation of the record of a pair never observed, units.
    pub unanchored_sd: f64,
    /// Extra relative spread of any reading (times the units read).
    pub relative_sd: f64,
    /// Units lost unrecorded per unit sold.
    pub shrink_per_unit_sold: f64,
    /// Units lost unrecorded per day.
    pub shrink_per_day: f64,
    /// Fraction of received units that were not there.
    pub receipt_short_rate: f64,
    /// Variance added per day since the anchor (unit^2).
    pub drift_variance_per_day: f64,
    /// P(phantom) just after presence was confirmed.
    pub phantom_base: f64,
    /// Phantom hazard per day without confirmed presence.
    pub phantom_per_day: f64,
    /// Gamma prior of the demand rate: shape (pseudo sales).
    pub rate_prior_sales: f64,
    /// Gamma prior of the demand rate: rate (pseudo open hours).
    pub rate_prior_hours: f64,
    /// Pseudo sales of the uniform prior of a location's demand shape.
    #[serde(default = "default_shape_prior_sales")]
    pub shape_prior_sales: f64,
    /// How many pseudo sales the SKU's velocity weighs in a pair's demand-rate prior.
    #[serde(default = "default_sku_pooling_sales")]
    pub sku_pooling_sales: f64,
    /// Pseudo units pulling a location's or SKU's loss factor to 1.
    #[serde(default = "default_loss_pooling_units")]
    pub loss_pooling_units: f64,
}

fn default_shape_prior_sales() -> f64 {
    100.0
}

fn default_sku_pooling_sales() -> f64 {
    1.0
}

fn default_loss_pooling_units() -> f64 {
    20.0
}

impl Default for BeliefParams {
    fn default() -> Self {
        Self {
            count_sd: 0.7,
            rfid_under_read: 0.05,
            rfid_sd: 1.0,
            snapshot_sd: 1.5,
            unanchored_sd: 2.0,
            relative_sd: 0.05,
            shrink_per_unit_sold: 0.01,
            shrink_per_day: 0.005,
            receipt_short_rate: 0.01,
            drift_variance_per_day: 0.02,
            phantom_base: 0.01,
            phantom_per_day: 0.003,
            rate_prior_sales: 0.5,
            rate_prior_hours: 100.0,
            shape_prior_sales: default_shape_prior_sales(),
            sku_pooling_sales: default_sku_pooling_sales(),
            loss_pooling_units: default_loss_pooling_units(),
        }
    }
}
