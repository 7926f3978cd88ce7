//! The engine's calls on the location catalog.

use stockgrid_storage::WriteBatch;

use crate::catalog::{Location, MAX_LOCATIONS_PER_UPSERT, list_locations, put_locations};
use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// Inserts or replaces locations, all or none, durably.
    pub async fn upsert_locations(&self, locations: &[Location]) -> Result<usize, EngineError> {
        if locations.len() > MAX_LOCATIONS_PER_UPSERT {
            return Err(EngineError::TooLarge {
                what: "locations",
                actual: locations.len(),
                limit: MAX_LOCATIONS_PER_UPSERT,
            });
        }
        let mut batch = WriteBatch::new();
        put_locations(&mut batch, locations);
        self.commit_batch(batch).await?;
        self.decisions().shared.upsert(locations);
        Ok(locations.len())
    }

    /// Stored locations numbered above `after` (all if `None`), ascending, at most `limit`.
    pub fn list_locations(
        &self,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Location>, EngineError> {
        list_locations(self.store().as_ref(), after, limit)
    }
}
