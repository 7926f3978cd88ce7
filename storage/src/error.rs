//! The one error type of the storage crate.

/// Why a store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// An earlier write or fsync failed, or the disk filled up: the on-disk state is
    /// uncertain, so every write is refused until an operator restarts the node.
    #[error("store is poisoned after a failed write ({cause}); writes are refused until restart")]
    Poisoned {
        /// What failed first.
        cause: String,
    },
    /// A condition of the batch did not hold; nothing of the batch was applied.
    #[error("commit batch: condition failed on key {key:?}")]
    ConditionFailed {
        /// The key whose condition failed, printed as bytes.
        key: Vec<u8>,
    },
    /// The batch exceeds a size limit; nothing was applied.
    #[error("commit batch: {what} is {actual}, above the limit of {limit}")]
    BatchTooLarge {
        /// Which quantity is too large.
        what: &'static str,
        /// Its value.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// An I/O or backend error, with the operation that hit it.
    #[error("{context}: {message}")]
    Backend {
        /// The operation, as a verb phrase ("open store", "read key").
        context: &'static str,
        /// The backend's own description.
        message: String,
    },
    /// The group committer is gone (the node is shutting down).
    #[error("group committer stopped")]
    CommitterStopped,
}

impl StoreError {
    /// Whether this error means the store refuses writes from now on.
    pub fn is_poisoned(&self) -> bool {
        matches!(self, StoreError::Poisoned { .. })
    }
}
