//! [`GroupCommitter`]: many writers, one fsync.
//!
//! Writers submit batches through a bounded queue (a full queue makes `submit` wait: that is
//! the back-pressure). One committer thread drains whatever is queued, up to the store's
//! declared limits, merges consecutive batches into one store commit (one fsync), conditions
//! included (a condition that fails refuses only the batches carrying it), and only then
//! answers each writer. A writer's acknowledgement therefore always means "on stable storage". With one
//! lane (the default) batches commit in submission order.
//!
//! With more lanes (a remote store: a database commits several transactions at once, each on
//! a connection of its own, and merges their log flushes itself), a group is drained whenever
//! a lane is free and committed on that lane while the next group forms. Groups then land in
//! any order: batches submitted while another is unacknowledged may commit before it. Give
//! lanes only to writers that wait for each batch before the next that depends on it.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::{Condition, Operation, Store, StoreError, StoreLimits, WriteBatch};

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
    /// A ticket that answers `error` at once (a batch refused before it was queued).
    pub fn failed(error: StoreError) -> Self {
        let (reply, receiver) = oneshot::channel();
        let _ = reply.send(Err(error));
        CommitTicket(receiver)
    }

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

/// Commits a drained group in order, merging consecutive batches into one store commit.
///
/// A batch with conditions joins the run before it unless one of its condition keys is
/// written by a batch already in the run: the merged commit checks every condition before any
/// write, so a condition must not depend on a write merged ahead of it. Should the merged
/// commit fail on a condition, the batches that carry it are refused and the others are
/// committed again without them (a fenced writer's batches do not fail their neighbours).
/// A batch over the size limits is refused on its own and never merged.
fn commit_group(store: &dyn Store, limits: &StoreLimits, group: Vec<Request>) {
    let mut run = Run::default();
    for request in group {
        if let Err(error) = request.batch.check_limits(limits) {
            let _ = request.reply.send(Err(error));
            continue;
        }
        if !run.admits(&request.batch) {
            std::mem::take(&mut run).commit(store);
        }
        run.push(request);
    }
    run.commit(store);
}

/// Consecutive batches committed as one.
#[derive(Default)]
struct Run {
    requests: Vec<Request>,
    /// Hashes of the keys the run's batches put or delete, up to `hashed` requests (filled
    /// only once a batch with conditions asks).
    written: HashSet<u64>,
    /// Ranges the run's batches delete, up to `hashed` requests.
    deleted_ranges: Vec<(Vec<u8>, Vec<u8>)>,
    hashed: usize,
    conditional: bool,
}

impl Run {
    fn push(&mut self, request: Request) {
        self.conditional |= !request.batch.conditions.is_empty();
        self.requests.push(request);
    }

    /// Whether `batch` may be merged after the run: none of its condition keys is written by
    /// the run (a hash collision only costs a commit of its own).
    fn admits(&mut self, batch: &WriteBatch) -> bool {
        if batch.conditions.is_empty() || self.requests.is_empty() {
            return true;
        }
        for request in &self.requests[self.hashed..] {
            for operation in &request.batch.operations {
                match operation {
                    Operation::Put { key, .. } | Operation::Delete { key } => {
                        self.written.insert(key_hash(key));
                    }
                    Operation::DeleteRange { start, end } => {
                        self.deleted_ranges.push((start.clone(), end.clone()));
                    }
                }
            }
        }
        self.hashed = self.requests.len();
        batch.conditions.iter().all(|condition| {
            let key = condition_key(condition);
            !self.written.contains(&key_hash(key))
                && !self
                    .deleted_ranges
                    .iter()
                    .any(|(start, end)| key >= start.as_slice() && key < end.as_slice())
        })
    }

    /// Commits the run as one batch; on a failed condition, refuses the batches holding it
    /// and commits the rest again.
    fn commit(self, store: &dyn Store) {
        let mut requests = self.requests;
        let keep_copies = self.conditional && requests.len() > 1;
        while !requests.is_empty() {
            let mut merged = WriteBatch::new();
            if keep_copies {
                for request in &requests {
                    merged.append(request.batch.clone());
                }
            } else {
                for request in &mut requests {
                    merged.append(std::mem::take(&mut request.batch));
                }
            }
            let result = store.commit(merged);
            let failed_key = match &result {
                Err(StoreError::ConditionFailed { key }) if keep_copies => key.clone(),
                _ => {
                    for request in requests {
                        let _ = request.reply.send(result.clone());
                    }
                    return;
                }
            };
            // The batches holding a condition on that key: one fails it; with several, the
            // key's value tells which (it may have moved since: then each batch commits alone).
            let on_key = |request: &Request| {
                request
                    .batch
                    .conditions
                    .iter()
                    .any(|condition| condition_key(condition) == failed_key.as_slice())
            };
            let holders = requests.iter().filter(|request| on_key(request)).count();
            let current = if holders > 1 {
                store.get(&failed_key).ok()
            } else {
                None
            };
            let fails = |request: &Request| match &current {
                None => on_key(request),
                Some(value) => request.batch.conditions.iter().any(|condition| {
                    condition_key(condition) == failed_key.as_slice()
                        && !condition_holds(condition, value.as_deref())
                }),
            };
            let known = !(holders > 1 && current.is_none()) && requests.iter().any(fails);
            if !known {
                // Nothing tells which batch failed: commit each alone, in order.
                for request in requests {
                    let result = store.commit(request.batch);
                    let _ = request.reply.send(result);
                }
                return;
            }
            let (refused, others): (Vec<Request>, Vec<Request>) =
                requests.into_iter().partition(|request| fails(request));
            for request in refused {
                let _ = request.reply.send(result.clone());
            }
            requests = others;
        }
    }
}

fn condition_holds(condition: &Condition, value: Option<&[u8]>) -> bool {
    match condition {
        Condition::Absent(_) => value.is_none(),
        Condition::Equals(_, expected) => value == Some(expected.as_slice()),
    }
}

fn condition_key(condition: &Condition) -> &[u8] {
    match condition {
        Condition::Absent(key) | Condition::Equals(key, _) => key,
    }
}

fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{KeyValue, MemoryStore};

    /// A memory store that declares small limits and notes the size of every commit; its
    /// first commit waits for `release`, so that what is submitted meanwhile queues up.
    #[derive(Debug)]
    struct SmallStore {
        inner: MemoryStore,
        limits: StoreLimits,
        commits: Mutex<Vec<usize>>,
        hold_first: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl Default for SmallStore {
        fn default() -> Self {
            Self::with_limits(SMALL)
        }
    }

    impl SmallStore {
        fn with_limits(limits: StoreLimits) -> Self {
            Self {
                inner: MemoryStore::default(),
                limits,
                commits: Mutex::default(),
                hold_first: Mutex::default(),
            }
        }

        /// Makes the first commit wait until the returned sender is used (or dropped).
        fn hold_first_commit(&self) -> std::sync::mpsc::Sender<()> {
            let (release, held) = std::sync::mpsc::channel();
            *self.hold_first.lock().expect("hold") = Some(held);
            release
        }
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
            self.limits
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
            batch.check_limits(&self.limits)?;
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

    fn put_if(key: &[u8], condition: Condition) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.require(condition).put(key.to_vec(), b"v".to_vec());
        batch
    }

    /// Conditional batches queued together are merged into one commit; when one condition
    /// fails, only the batches that carry it are refused and the others land, in a second
    /// commit; a batch whose condition reads a key written earlier in the group is not merged
    /// with that write, so it sees it.
    #[test]
    fn conditional_batches_merge_and_a_failed_condition_refuses_only_its_batches() {
        let store = Arc::new(SmallStore::with_limits(StoreLimits {
            max_batch_operations: 1000,
            ..SMALL
        }));
        let mut fences = WriteBatch::new();
        fences
            .put(b"fence-a".to_vec(), b"1".to_vec())
            .put(b"fence-b".to_vec(), b"1".to_vec());
        store.commit(fences).expect("fences");
        store.commits.lock().expect("commits").clear();
        let release = store.hold_first_commit();
        let committer = GroupCommitter::start(
            Arc::clone(&store) as Arc<dyn Store>,
            GroupCommitConfig::default(),
        )
        .expect("start");
        // The first commit is held, so what follows queues and is drained as one group.
        let first = committer.submit_blocking(put_if(
            b"first",
            Condition::Equals(b"fence-a".to_vec(), b"1".to_vec()),
        ));
        while store.hold_first.lock().expect("hold").is_some() {
            std::thread::yield_now();
        }
        let held_by_a = committer.submit_blocking(put_if(
            b"a1",
            Condition::Equals(b"fence-a".to_vec(), b"1".to_vec()),
        ));
        let fenced_out = committer.submit_blocking(put_if(
            b"b1",
            Condition::Equals(b"fence-b".to_vec(), b"0".to_vec()),
        ));
        let also_a = committer.submit_blocking(put_if(
            b"a2",
            Condition::Equals(b"fence-a".to_vec(), b"1".to_vec()),
        ));
        let mut move_fence = WriteBatch::new();
        move_fence.put(b"fence-a".to_vec(), b"2".to_vec());
        let moved = committer.submit_blocking(move_fence);
        let after_move = committer.submit_blocking(put_if(
            b"a3",
            Condition::Equals(b"fence-a".to_vec(), b"1".to_vec()),
        ));
        release.send(()).expect("release");
        first.wait_blocking().expect("the first batch");
        held_by_a
            .wait_blocking()
            .expect("a batch whose condition holds");
        assert!(matches!(
            fenced_out.wait_blocking(),
            Err(StoreError::ConditionFailed { ref key }) if key == b"fence-b"
        ));
        also_a
            .wait_blocking()
            .expect("a batch whose condition holds");
        moved.wait_blocking().expect("the fence moved");
        assert!(
            matches!(
                after_move.wait_blocking(),
                Err(StoreError::ConditionFailed { ref key }) if key == b"fence-a"
            ),
            "a condition must see the writes queued before it"
        );
        committer.shutdown();
        let present = |key: &[u8]| store.get(key).expect("get").is_some();
        assert!(present(b"first") && present(b"a1") && present(b"a2"));
        assert!(!present(b"b1") && !present(b"a3"));
        // Operations and conditions per commit: first; [a1, b1, a2, move], refused on
        // fence-b; [a1, a2, move]; a3 alone, refused on fence-a.
        let commits = store.commits.lock().expect("commits").clone();
        assert_eq!(commits, vec![2, 7, 5, 2], "{commits:?}");
    }

    /// One generated batch: conditions on a few keys and writes to a few keys, all drawn
    /// from a small key space so that conditions and writes meet.
    fn arbitrary_batch() -> impl proptest::strategy::Strategy<Value = WriteBatch> {
        use proptest::prelude::*;
        let key = (0u8..4).prop_map(|k| vec![b'k', k]);
        let value = (0u8..2).prop_map(|v| vec![v]);
        let condition = prop_oneof![
            key.clone().prop_map(Condition::Absent),
            (key.clone(), value.clone()).prop_map(|(k, v)| Condition::Equals(k, v)),
        ];
        let operation = prop_oneof![
            (key.clone(), value).prop_map(|(key, value)| Operation::Put { key, value }),
            key.prop_map(|key| Operation::Delete { key }),
        ];
        (
            proptest::collection::vec(condition, 0..3),
            proptest::collection::vec(operation, 1..3),
        )
            .prop_map(|(conditions, operations)| WriteBatch {
                conditions,
                operations,
            })
    }

    proptest::proptest! {
        /// Batches drained as one group answer, one by one, exactly as if each had been
        /// committed alone in submission order, and leave the same keys behind.
        #[test]
        fn a_group_answers_as_batches_committed_one_by_one(
            batches in proptest::collection::vec(arbitrary_batch(), 1..12),
        ) {
            let sequential = MemoryStore::default();
            let expected: Vec<bool> = batches
                .iter()
                .map(|batch| sequential.commit(batch.clone()).is_ok())
                .collect();
            let store = Arc::new(SmallStore::with_limits(StoreLimits {
                max_batch_operations: 1000,
                ..SMALL
            }));
            let release = store.hold_first_commit();
            let committer = GroupCommitter::start(
                Arc::clone(&store) as Arc<dyn Store>,
                GroupCommitConfig::default(),
            )
            .expect("start");
            let mut opener = WriteBatch::new();
            opener.put(b"opener".to_vec(), b"1".to_vec());
            let opener = committer.submit_blocking(opener);
            while store.hold_first.lock().expect("hold").is_some() {
                std::thread::yield_now();
            }
            let tickets: Vec<CommitTicket> = batches
                .into_iter()
                .map(|batch| committer.submit_blocking(batch))
                .collect();
            release.send(()).expect("release");
            opener.wait_blocking().expect("the opener");
            let got: Vec<bool> = tickets
                .into_iter()
                .map(|ticket| ticket.wait_blocking().is_ok())
                .collect();
            committer.shutdown();
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert_eq!(
                store.scan(b"k", b"l", 100).expect("scan"),
                sequential.scan(b"k", b"l", 100).expect("scan")
            );
        }
    }
}
