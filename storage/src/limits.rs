//! [`StoreLimits`]: what one backend accepts in one atomic batch, declared by the backend
//! itself (DESIGN.md "Storage"). A batch over its store's limits is refused whole, never
//! split; the group committer merges batches only up to them.

/// The most one atomic batch may carry on a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Operations and conditions together.
    pub max_batch_operations: usize,
    /// Key and value bytes of the operations together.
    pub max_batch_bytes: usize,
    /// Longest key (a key is never empty).
    pub max_key_bytes: usize,
    /// Longest value.
    pub max_value_bytes: usize,
}

impl StoreLimits {
    /// The stores of one process (embedded, memory): bounded by memory rather than by a
    /// protocol. Keys stay well under fjall's own 65,536 bytes.
    pub const LOCAL: Self = Self {
        max_batch_operations: 1 << 20,
        max_batch_bytes: 256 << 20,
        max_key_bytes: 16 << 10,
        max_value_bytes: 256 << 20,
    };

    /// Whether a batch of `operations` operations and conditions and `bytes` bytes fits.
    pub fn admits(&self, operations: usize, bytes: usize) -> bool {
        operations <= self.max_batch_operations && bytes <= self.max_batch_bytes
    }
}
