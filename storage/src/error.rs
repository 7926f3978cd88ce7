//! The one error type of the storage crate. Store errors come in three classes (DESIGN.md
//! "Storage"): **unavailable** ([`StoreError::Unavailable`]: transient, refuse or retry the
//! call, never poison), **outcome unknown** (a commit whose result was lost; backends over a
//! network resolve it by the batch's own id), and **poisoned** ([`StoreError::Poisoned`]:
//! local durability lost, writes refused until the store is reopened).

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
    /// A transient failure: the store ran out of something that comes back (file
    /// descriptors, memory) or could not be reached. Nothing of the operation was
    /// acknowledged; retrying later may succeed, and the store is not poisoned.
    #[error("{context}: store temporarily unavailable ({message})")]
    Unavailable {
        /// The operation, as a verb phrase.
        context: &'static str,
        /// The backend's own description.
        message: String,
    },
    /// A commit whose result was lost (the connection dropped while the commit was under
    /// way): it may or may not have been applied. A backend over a network resolves this by
    /// the batch's own id before it writes anything else; the error reaches its caller only
    /// when that resolution could not be made either, and the caller retries (every write of
    /// the engine is idempotent by its ids).
    #[error("{context}: commit outcome unknown ({message})")]
    OutcomeUnknown {
        /// The operation, as a verb phrase.
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

    /// Whether the failure is transient (DESIGN.md "Storage": unavailable, not poisoned).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Whether a commit may or may not have been applied (DESIGN.md "Storage": outcome
    /// unknown).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, StoreError::OutcomeUnknown { .. })
    }
}
