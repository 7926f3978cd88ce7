//! The stored location catalog: locations persisted in the store, cluster-wide (the types and
//! their validation are `stockgrid_model::catalog`).

pub use stockgrid_model::catalog::*;

use stockgrid_storage::{Store, WriteBatch};

use crate::error::EngineError;
use crate::keys::{location_key, locations_after};
use crate::persist::{decode, encode};

/// Puts locations into `batch` (insert or replace).
pub fn put_locations(batch: &mut WriteBatch, locations: &[Location]) {
    for location in locations {
        batch.put(location_key(location.location), encode(location));
    }
}

/// Locations numbered above `after` (all if `None`), ascending, at most `limit`.
pub fn list_locations(
    store: &dyn Store,
    after: Option<u32>,
    limit: usize,
) -> Result<Vec<Location>, EngineError> {
    let Some((start, end)) = locations_after(after) else {
        return Ok(Vec::new());
    };
    store
        .scan(&start, &end, limit.min(MAX_PAGE))?
        .into_iter()
        .map(|(key, value)| decode("location", &key, &value).map_err(EngineError::from))
        .collect()
}

/// Every stored location, ascending (page by page).
pub fn all_locations(store: &dyn Store) -> Result<Vec<Location>, EngineError> {
    let mut all: Vec<Location> = Vec::new();
    loop {
        let page = list_locations(store, all.last().map(|l| l.location), MAX_PAGE)?;
        let done = page.len() < MAX_PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use stockgrid_storage::MemoryStore;

    use super::*;

    #[test]
    fn stored_locations_list_in_pages() {
        let store = MemoryStore::new();
        let locations: Vec<Location> = [3u32, 1, 2]
            .into_iter()
            .map(|n| {
                LocationInput {
                    location: n,
                    ..LocationInput::default()
                }
                .validate()
                .expect("valid")
            })
            .collect();
        let mut batch = WriteBatch::new();
        put_locations(&mut batch, &locations);
        store.commit(batch).expect("commit");
        let first = list_locations(&store, None, 2).expect("list");
        assert_eq!(
            first.iter().map(|l| l.location).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let rest = list_locations(&store, Some(2), 2).expect("list");
        assert_eq!(rest.iter().map(|l| l.location).collect::<Vec<_>>(), vec![3]);
    }
}
