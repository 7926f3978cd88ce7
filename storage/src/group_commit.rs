//! [`GroupCommitter`]: many writers, one fsync.
//!
//! Writers submit batches through a bounded queue (a full queue makes `submit` wait: that is
//! the back-pressure). One committer thread drains whatever is queued, merges consecutive
//! unconditional batches into one store commit (one fsync), commits each conditional batch on
//! its own in order, and only then answers each writer. A writer's acknowledgement therefore
//! always means "on stable storage". Batches commit in submission order.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError, WriteBatch};

/// Most bytes merged into one store commit (below the per-batch limit).
const MAX_GROUP_BYTES: usize = 64 << 20;

/// Limits of the group committer.
#[derive(Clone, Copy, Debug)]
pub struct GroupCommitConfig {
    /// Batches that may wait in the queue before `submit` waits.
    pub queue_capacity: usize,
    /// Most operations merged into one store commit.
    pub max_operations_per_commit: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_operations_per_commit: 256 * 1024,
        }
    }
}

struct Request {
    batch: WriteBatch,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Awaits the durable commit of one submitted batch.
#[derive(Debug)]
pub struct CommitTicket(oneshot::Receiver<Result<(), StoreError>>);

impl CommitTicket {
    /// Waits for the commit (async callers).
    pub async fn wait(self) -> Result<(), StoreError> {
        self.0.await.unwrap_or(Err(StoreError::CommitterStopped))
    }

    /// Waits for the commit (blocking callers, outside any async runtime).
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        self.0
            .blocking_recv()
            .unwrap_or(Err(StoreError::CommitterStopped))
    }
}

/// The handle writers submit through. Cloning shares the one committer thread.
#[derive(Clone)]
pub struct GroupCommitter {
    sender: mpsc::Sender<Request>,
    store: Arc<dyn Store>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter")
            .field("backend", &self.store.backend_name())
            .finish_non_exhaustive()
    }
}

impl GroupCommitter {
    /// Starts the committer thread over `store`.
    pub fn start(store: Arc<dyn Store>, config: GroupCommitConfig) -> Result<Self, StoreError> {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let thread_store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name("stockgrid-group-commit".to_owned())
            .spawn(move || run(thread_store.as_ref(), receiver, config))
            .map_err(|e| StoreError::Backend {
                context: "start group committer",
                message: e.to_string(),
            })?;
        Ok(Self {
            sender,
            store,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// The store behind the committer, for reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Queues a batch, waiting while the queue is full; the ticket resolves once it is durable.
    pub async fn submit(&self, batch: WriteBatch) -> CommitTicket {
        let (reply, receiver) = oneshot::channel();
        // A send error means the committer is gone; the dropped reply makes the ticket say so.
        let _ = self.sender.send(Request { batch, reply }).await;
        CommitTicket(receiver)
    }

    /// Queues a batch from a thread outside any async runtime.
    pub fn submit_blocking(&self, batch: WriteBatch) -> CommitTicket {
        let (reply, receiver) = oneshot::channel();
        let _ = self.sender.blocking_send(Request { batch, reply });
        CommitTicket(receiver)
    }

    /// Stops accepting batches, commits what is queued and waits for the thread to end.
    /// Other clones of this handle keep the queue open until they are dropped too.
    pub fn shutdown(self) {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        drop(self.sender);
        if let Some(thread) = thread {
            // Joining only works once every sender is gone; if clones remain, leave the
            // thread to end when they drop rather than block here.
            if thread.is_finished() || Arc::strong_count(&self.thread) == 1 {
                let _ = thread.join();
            }
        }
    }
}

fn run(store: &dyn Store, mut receiver: mpsc::Receiver<Request>, config: GroupCommitConfig) {
    while let Some(first) = receiver.blocking_recv() {
        let mut operations = first.batch.operations.len();
        let mut bytes = first.batch.byte_size();
        let mut group = vec![first];
        while operations < config.max_operations_per_commit && bytes < MAX_GROUP_BYTES {
            match receiver.try_recv() {
                Ok(request) => {
                    operations += request.batch.operations.len();
                    bytes += request.batch.byte_size();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        commit_group(store, group);
    }
}

/// Commits a drained group in order: runs of unconditional batches merged, conditional
/// batches alone (their conditions must see exactly the writes committed before them).
/// A batch over the size limits is refused on its own and never merged, so one bad batch
/// cannot fail its neighbours.
fn commit_group(store: &dyn Store, group: Vec<Request>) {
    let mut run: Vec<Request> = Vec::new();
    for request in group {
        if let Err(error) = request.batch.check_limits() {
            let _ = request.reply.send(Err(error));
        } else if request.batch.conditions.is_empty() {
            run.push(request);
        } else {
            commit_merged(store, std::mem::take(&mut run));
            let result = store.commit(request.batch);
            let _ = request.reply.send(result);
        }
    }
    commit_merged(store, run);
}

fn commit_merged(store: &dyn Store, run: Vec<Request>) {
    if run.is_empty() {
        return;
    }
    let mut merged = WriteBatch::new();
    let mut replies = Vec::with_capacity(run.len());
    for request in run {
        merged.append(request.batch);
        replies.push(request.reply);
    }
    let result = store.commit(merged);
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}
