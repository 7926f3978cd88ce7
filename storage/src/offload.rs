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

/// Runs `wait`, a call that blocks its thread (a remote store's round trip), without holding
/// a worker of the runtime it is called from: on a worker of a multi-threaded runtime the
/// worker's other tasks move to a fresh thread first (`block_in_place`); off a runtime, or
/// on a blocking-pool thread, it simply runs. On a single-threaded runtime (tests) there is
/// no other worker to hand over to, and it runs in place.
pub fn block_off_workers<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// A small runtime of a remote backend's own, on which its client's futures run, and the one
/// way synchronous [`Store`] calls wait for them: without holding a worker of the caller's
/// runtime ([`block_off_workers`]), from any thread, inside a runtime or not.
#[derive(Debug)]
pub struct ClientRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    name: &'static str,
}

impl ClientRuntime {
    /// Starts a runtime of `threads` workers named `name`.
    pub fn start(name: &'static str, threads: usize) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable {
                context: "start a store client runtime",
                message: e.to_string(),
            })?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            name,
        })
    }

    /// The runtime's handle (to build clients that spawn on it).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `future` on this runtime and waits for its result.
    pub fn run<T, F>(&self, context: &'static str, future: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = sender.send(future.await);
        });
        block_off_workers(|| receiver.recv()).unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                context,
                message: format!("the {} runtime stopped", self.name),
            })
        })
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        // Dropped anywhere, an async context included: the workers stop in the background.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
