//! The one error type of the actors crate.

use stockgrid_storage::StoreError;

/// Why the engine could not do what was asked.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EngineError {
    /// The store refused or failed; poisoned means no write will be accepted until restart.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A stored record could not be read back.
    #[error("{0}")]
    Corrupt(String),
    /// A lookup an event needed (its identity, its pair's delta history) failed, so it was
    /// neither applied nor dropped.
    #[error("{0}")]
    IdentityLookup(String),
    /// A shard did not answer (it failed and was being restarted, or the engine is stopping).
    #[error("shard {shard} unavailable: {reason}")]
    ShardUnavailable {
        /// The shard index.
        shard: usize,
        /// What happened.
        reason: String,
    },
    /// A request exceeds a configured limit.
    #[error("{what} is {actual}, above the limit of {limit}")]
    TooLarge {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// This node does not answer for the pair's partition now: another node owns it, it is
    /// moving, or this node's lease lapsed (a router answers OWNER_UNAVAILABLE).
    #[error("partition {partition} is not served by this node (its owner is elsewhere or moving)")]
    NotOwner {
        /// The partition.
        partition: u16,
    },
    /// The engine could not start.
    #[error("start engine: {0}")]
    Start(String),
    /// An argument is malformed (nothing was done).
    #[error("{field}: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl EngineError {
    /// Whether the store refuses writes from now on.
    pub fn is_poisoned(&self) -> bool {
        matches!(self, EngineError::Store(e) if e.is_poisoned())
    }
}

impl From<crate::ownership::NotOwner> for EngineError {
    fn from(refused: crate::ownership::NotOwner) -> Self {
        EngineError::NotOwner {
            partition: refused.partition,
        }
    }
}
