//! [`GroupCommitter`]: many writers, one fsync.
//!
//! Writers submit batches through a bounded queue (a full queue makes `submit` wait: that is
//! the back-pressure). One committer thread drains whatever is queued, up to the store's
//! declared limits, merges consecutive unconditional batches into one store commit (one
//! fsync), commits each conditional batch on its own in order, and only then answers each
//! writer. A writer's acknowledgement therefore
//! always means "on stable storage". Batches commit in submission order.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError, StoreLimits, WriteBatch};

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
    // A merged commit stays within the store's own limits: it is one atomic batch.
    let limits = store.limits();
    let merged_limits = StoreLimits {
        max_batch_operations: config
            .max_operations_per_commit
            .min(limits.max_batch_operations),
        max_batch_bytes: MAX_GROUP_BYTES.min(limits.max_batch_bytes),
        ..limits
    };
    // A batch drained that would take its group over the limits starts the next group.
    let mut carried: Option<Request> = None;
    loop {
        let Some(first) = carried.take().or_else(|| receiver.blocking_recv()) else {
            break;
        };
        let mut operations = first.batch.operation_count();
        let mut bytes = first.batch.byte_size();
        let mut group = vec![first];
        while let Ok(request) = receiver.try_recv() {
            let (more_operations, more_bytes) =
                (request.batch.operation_count(), request.batch.byte_size());
            if !merged_limits.admits(operations + more_operations, bytes + more_bytes) {
                carried = Some(request);
                break;
            }
            operations += more_operations;
            bytes += more_bytes;
            group.push(request);
        }
        commit_group(store, &limits, group);
    }
}

/// Commits a drained group in order: runs of unconditional batches merged, conditional
/// batches alone (their conditions must see exactly the writes committed before them).
/// A batch over the size limits is refused on its own and never merged, so one bad batch
/// cannot fail its neighbours.
fn commit_group(store: &dyn Store, limits: &StoreLimits, group: Vec<Request>) {
    let mut run: Vec<Request> = Vec::new();
    for request in group {
        if let Err(error) = request.batch.check_limits(limits) {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{KeyValue, MemoryStore};

    /// A memory store that declares small limits and notes the size of every commit; its
    /// first commit waits for `release`, so that what is submitted meanwhile queues up.
    #[derive(Debug, Default)]
    struct SmallStore {
        inner: MemoryStore,
        commits: Mutex<Vec<usize>>,
        hold_first: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    const SMALL: StoreLimits = StoreLimits {
        max_batch_operations: 4,
        max_batch_bytes: 1 << 20,
        max_key_bytes: 64,
        max_value_bytes: 64,
    };

    impl Store for SmallStore {
        fn backend_name(&self) -> &'static str {
            "small"
        }

        fn limits(&self) -> StoreLimits {
            SMALL
        }

        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }

        fn scan(
            &self,
            start: &[u8],
            end: &[u8],
            limit: usize,
        ) -> Result<Vec<KeyValue>, StoreError> {
            self.inner.scan(start, end, limit)
        }

        fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
            let held = self.hold_first.lock().expect("hold").take();
            if let Some(release) = held {
                let _ = release.recv();
            }
            batch.check_limits(&SMALL)?;
            self.commits
                .lock()
                .expect("commits")
                .push(batch.operation_count());
            self.inner.commit(batch)
        }

        fn check_writable(&self) -> Result<(), StoreError> {
            self.inner.check_writable()
        }

        fn disk_bytes(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    /// Batches queued together merge only up to the store's limits, and a batch over them is
    /// refused on its own while every other batch is acknowledged and applied.
    #[test]
    fn merged_commits_stay_within_the_store_limits() {
        let store = Arc::new(SmallStore::default());
        let (release, held) = std::sync::mpsc::channel();
        *store.hold_first.lock().expect("hold") = Some(held);
        let committer = GroupCommitter::start(
            Arc::clone(&store) as Arc<dyn Store>,
            GroupCommitConfig::default(),
        )
        .expect("start");
        let mut tickets = Vec::new();
        for i in 0u8..12 {
            let mut batch = WriteBatch::new();
            batch
                .put(vec![b'a', i], vec![i])
                .put(vec![b'b', i], vec![i]);
            tickets.push(committer.submit_blocking(batch));
        }
        let mut too_large = WriteBatch::new();
        for i in 0u8..5 {
            too_large.put(vec![b'x', i], vec![i]);
        }
        let refused = committer.submit_blocking(too_large);
        // Everything is queued behind the held first commit: let it go.
        release.send(()).expect("release");
        for ticket in tickets {
            ticket.wait_blocking().expect("a batch within the limits");
        }
        assert!(matches!(
            refused.wait_blocking(),
            Err(StoreError::BatchTooLarge { .. })
        ));
        committer.shutdown();
        let commits = store.commits.lock().expect("commits").clone();
        assert!(
            commits.iter().all(|&operations| operations <= 4),
            "{commits:?}"
        );
        assert!(commits.contains(&4), "queued batches merged: {commits:?}");
        assert_eq!(commits.iter().sum::<usize>(), 24);
        assert_eq!(store.scan(b"a", b"c", 100).expect("scan").len(), 24);
        assert_eq!(store.get(&[b'x', 0]).expect("get"), None);
    }
}
