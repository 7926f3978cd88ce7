//! [`GroupCommitter`]: many writers, one fsync.
//!
//! Writers submit batches through a bounded queue (a full queue makes `submit` wait: that is
//! the back-pressure). One committer thread drains whatever is queued, up to the store's
//! declared limits, merges consecutive unconditional batches into one store commit (one
//! fsync), commits each conditional batch on its own in order, and only then answers each
//! writer. A writer's acknowledgement therefore always means "on stable storage". With one
//! lane (the default) batches commit in submission order.
//!
//! With more lanes (a remote store: a database commits several transactions at once, each on
//! a connection of its own, and merges their log flushes itself), a group is drained whenever
//! a lane is free and committed on that lane while the next group forms. Groups then land in
//! any order: batches submitted while another is unacknowledged may commit before it. Give
//! lanes only to writers that wait for each batch before the next that depends on it.

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
    /// Groups committed at once (1: one at a time, in submission order).
    pub lanes: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_operations_per_commit: 256 * 1024,
            lanes: 1,
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

impl GroupCommitConfig {
    /// The defaults for `store`: [`REMOTE_COMMIT_LANES`] lanes over a remote store, one over
    /// a local one (whose commits serialise on its journal anyway).
    pub fn for_store(store: &dyn Store) -> Self {
        Self {
            lanes: if store.is_remote() {
                REMOTE_COMMIT_LANES
            } else {
                1
            },
            ..Self::default()
        }
    }
}

/// Groups committed at once over a remote store: enough to keep a database's cores busy
/// while each commit waits for its round trips and its log flush.
pub const REMOTE_COMMIT_LANES: usize = 4;

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
            .spawn(move || run(thread_store, receiver, config))
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

fn run(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Request>, config: GroupCommitConfig) {
    // A merged commit stays within the store's own limits: it is one atomic batch.
    let limits = store.limits();
    let merged_limits = StoreLimits {
        max_batch_operations: config
            .max_operations_per_commit
            .min(limits.max_batch_operations),
        max_batch_bytes: MAX_GROUP_BYTES.min(limits.max_batch_bytes),
        ..limits
    };
    let lanes = Lanes::start(&store, config.lanes);
    // A batch drained that would take its group over the limits starts the next group.
    let mut carried: Option<Request> = None;
    loop {
        // Wait for a free lane first: what queues meanwhile joins the next group.
        let lane = lanes.as_ref().map(Lanes::free_lane);
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
        match (&lanes, lane) {
            (Some(lanes), Some(Some(lane))) => lanes.commit_on(lane, group),
            _ => commit_group(store.as_ref(), &limits, group),
        }
    }
    if let Some(lanes) = lanes {
        lanes.finish();
    }
}

/// The worker threads of a committer with more than one lane: each commits one group at a
/// time and hands its lane back when done.
struct Lanes {
    work: Vec<std::sync::mpsc::Sender<Vec<Request>>>,
    free: std::sync::mpsc::Receiver<usize>,
    threads: Vec<JoinHandle<()>>,
}

impl Lanes {
    /// `None` for one lane: the committer thread commits itself.
    fn start(store: &Arc<dyn Store>, lanes: usize) -> Option<Self> {
        if lanes <= 1 {
            return None;
        }
        let limits = store.limits();
        let (free_sender, free) = std::sync::mpsc::channel();
        let mut work = Vec::with_capacity(lanes);
        let mut threads = Vec::with_capacity(lanes);
        for wanted in 0..lanes {
            // A lane's number is its place in `work`, counted over the lanes that started.
            let lane = work.len();
            let (sender, receiver) = std::sync::mpsc::channel::<Vec<Request>>();
            let store = Arc::clone(store);
            let lane_free = free_sender.clone();
            let thread = std::thread::Builder::new()
                .name(format!("stockgrid-commit-lane-{wanted}"))
                .spawn(move || {
                    for group in receiver {
                        commit_group(store.as_ref(), &limits, group);
                        let _ = lane_free.send(lane);
                    }
                });
            match thread {
                Ok(thread) => {
                    work.push(sender);
                    threads.push(thread);
                    let _ = free_sender.send(lane);
                }
                Err(error) => {
                    tracing::warn!(%error, lane = wanted, "a commit lane did not start; fewer lanes");
                }
            }
        }
        if work.is_empty() {
            return None;
        }
        Some(Self {
            work,
            free,
            threads,
        })
    }

    /// Waits for a lane to be free; `None` if none will ever be.
    fn free_lane(&self) -> Option<usize> {
        self.free.recv().ok()
    }

    fn commit_on(&self, lane: usize, group: Vec<Request>) {
        if let Some(sender) = self.work.get(lane) {
            // A lane that ended leaves the group's replies dropped: its writers learn that
            // the committer stopped.
            let _ = sender.send(group);
        }
    }

    /// Lets each lane finish its group and waits for it.
    fn finish(self) {
        drop(self.work);
        for thread in self.threads {
            let _ = thread.join();
        }
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

    /// With two lanes, a group commits while another is still under way: the second batch is
    /// acknowledged while the first commit is held (one lane would wait for it), and both land.
    #[test]
    fn a_second_lane_commits_while_the_first_is_held() {
        let store = Arc::new(SmallStore::default());
        let (release, held) = std::sync::mpsc::channel();
        *store.hold_first.lock().expect("hold") = Some(held);
        let committer = GroupCommitter::start(
            Arc::clone(&store) as Arc<dyn Store>,
            GroupCommitConfig {
                lanes: 2,
                ..GroupCommitConfig::default()
            },
        )
        .expect("start");
        let mut first = WriteBatch::new();
        first.put(b"first".to_vec(), b"1".to_vec());
        let first = committer.submit_blocking(first);
        // Wait until the first commit has begun (and is held), so the second forms a group
        // of its own.
        while store.hold_first.lock().expect("hold").is_some() {
            std::thread::yield_now();
        }
        let mut second = WriteBatch::new();
        second.put(b"second".to_vec(), b"2".to_vec());
        let second = committer.submit_blocking(second);
        let (done, acknowledged) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(second.wait_blocking());
        });
        let result = acknowledged
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the second lane acknowledged its batch while the first was held");
        result.expect("the second batch");
        release.send(()).expect("release");
        first.wait_blocking().expect("the first batch");
        committer.shutdown();
        assert_eq!(store.scan(b"", b"z", 10).expect("scan").len(), 2);
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
