//! [`offload`]: store calls made from an async runtime. A backend reached over a network
//! ([`Store::is_remote`]) is called on the runtime's blocking pool, so that a round trip never
//! holds a worker thread that other requests need (DESIGN.md "Storage"); a local backend is
//! called in place, as cheap as before.

use std::sync::Arc;

use crate::{Store, StoreError};

/// Runs `call` on `store`: in place for a local backend, on the blocking pool for a remote
/// one. A panic in `call` is resumed in the caller; a runtime shutting down answers
/// [`StoreError::Unavailable`].
pub async fn offload<T, F>(store: &Arc<dyn Store>, call: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    if !store.is_remote() {
        return call(store.as_ref());
    }
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || call(store.as_ref())).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(StoreError::Unavailable {
            context: "store call",
            message: error.to_string(),
        }),
    }
}
