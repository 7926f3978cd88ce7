//! Sampled item-page decision records: not promises, so not waited for, and lingering up to
//! [`SAMPLE_LINGER`] so that the samples of many requests share one commit (one fsync)
//! rather than paying one each. Shutdown writes what lingers, after any flush under way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stockgrid_storage::{StoreLimits, WriteBatch};

use crate::engine::Engine;

/// How long a sampled item-page record waits for others before their group commit: one
/// fsync per linger rather than one per request (at 1% of 300 K lookups a second, a fsync a
/// request cost a quarter of the lookups' throughput).
pub const SAMPLE_LINGER: Duration = Duration::from_millis(20);

/// Most sampled records' operations that linger together (the store's limits may be lower).
const SAMPLE_FLUSH_OPERATIONS: usize = 4096;

/// The sampled records lingering for their shared commit.
#[derive(Debug, Default)]
pub(crate) struct SampledRecords {
    lingering: Mutex<WriteBatch>,
    /// Held by a flush from taking the lingering records until their commit is queued (and,
    /// at a linger's end and at shutdown, done), so that shutdown waits for a flush under way.
    flushing: tokio::sync::Mutex<()>,
    /// Set at shutdown: a linger ending later leaves its records to shutdown's flush.
    closed: AtomicBool,
}

impl SampledRecords {
    fn lingering(&self) -> MutexGuard<'_, WriteBatch> {
        // Only appended to and taken whole: a panic cannot leave it torn.
        self.lingering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Engine {
    /// Adds one request's sampled records to those lingering. The first of a linger schedules
    /// their commit; records that would take the lingering ones past the store's limits (or
    /// [`SAMPLE_FLUSH_OPERATIONS`]) send those on at once, waiting only while the committer's
    /// queue is full (the back-pressure). One request's records over the limits alone are
    /// refused alone, never taking others with them.
    pub(crate) async fn linger_sampled_records(&self, samples: WriteBatch) {
        let limits = self.store().limits();
        let limits = StoreLimits {
            max_batch_operations: limits.max_batch_operations.min(SAMPLE_FLUSH_OPERATIONS),
            ..limits
        };
        let sampled = &self.inner.sampled_records;
        let (first, send_on) = {
            let mut lingering = sampled.lingering();
            let fits = limits.admits(
                lingering.operation_count() + samples.operation_count(),
                lingering.byte_size() + samples.byte_size(),
            );
            let send_on = (!fits && !lingering.is_empty()).then(|| std::mem::take(&mut *lingering));
            let first = lingering.is_empty();
            lingering.append(samples);
            (first, send_on)
        };
        if let Some(batch) = send_on {
            let ticket = {
                let _flushing = sampled.flushing.lock().await;
                self.submit_records(batch).await
            };
            tokio::spawn(async move {
                if let Err(error) = ticket.wait().await {
                    tracing::warn!(%error, "sampled decision records not written");
                }
            });
        }
        if first {
            // The timer holds the engine weakly: it must not keep a stopped engine's store open.
            let engine = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                tokio::time::sleep(SAMPLE_LINGER).await;
                if let Some(inner) = engine.upgrade() {
                    Engine { inner }.flush_sampled_records(false).await;
                }
            });
        }
    }

    /// Commits the lingering sampled records: at a linger's end (`closing` false: nothing once
    /// shutdown has begun) and at shutdown (`closing` true: after any flush under way, and
    /// committed even when nothing lingers, because the committer keeps submission order and
    /// that commit's acknowledgement covers every sampled batch queued before it).
    pub(crate) async fn flush_sampled_records(&self, closing: bool) {
        let sampled = &self.inner.sampled_records;
        if closing {
            sampled.closed.store(true, Ordering::SeqCst);
        } else if sampled.closed.load(Ordering::SeqCst) {
            return;
        }
        let _flushing = sampled.flushing.lock().await;
        let lingering = std::mem::take(&mut *sampled.lingering());
        if lingering.is_empty() && !closing {
            return;
        }
        if let Err(error) = self.commit_records(lingering).await {
            tracing::warn!(%error, "sampled decision records not written");
        }
    }
}
