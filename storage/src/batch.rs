//! Write batches: operations, conditions and their resolution against existing keys.

use std::collections::HashMap;

use crate::{StoreError, StoreLimits};

/// One write of a batch. Operations apply in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` if present.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Removes every key with `start <= key < end`.
    DeleteRange {
        /// First key removed.
        start: Vec<u8>,
        /// First key kept.
        end: Vec<u8>,
    },
}

/// A precondition checked atomically with the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `key` must be absent.
    Absent(Vec<u8>),
    /// `key` must hold exactly `value`.
    Equals(Vec<u8>, Vec<u8>),
}

/// An atomic group of writes with optional conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Conditions that must all hold, checked before any operation.
    pub conditions: Vec<Condition>,
    /// Operations, applied in order.
    pub operations: Vec<Operation>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.operations.push(Operation::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.operations.push(Operation::Delete { key: key.into() });
        self
    }

    /// Adds a range delete of `start <= key < end`.
    pub fn delete_range(
        &mut self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.operations.push(Operation::DeleteRange {
            start: start.into(),
            end: end.into(),
        });
        self
    }

    /// Adds a condition.
    pub fn require(&mut self, condition: Condition) -> &mut Self {
        self.conditions.push(condition);
        self
    }

    /// Whether the batch has neither operations nor conditions.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty() && self.conditions.is_empty()
    }

    /// Appends the other batch's conditions and operations after this one's.
    pub fn append(&mut self, mut other: WriteBatch) {
        self.conditions.append(&mut other.conditions);
        self.operations.append(&mut other.operations);
    }

    /// Bytes of keys and values the batch carries.
    pub fn byte_size(&self) -> usize {
        self.operations
            .iter()
            .map(|operation| match operation {
                Operation::Put { key, value } => key.len() + value.len(),
                Operation::Delete { key } => key.len(),
                Operation::DeleteRange { start, end } => start.len() + end.len(),
            })
            .sum()
    }

    /// Operations and conditions together: what [`StoreLimits::max_batch_operations`] counts.
    pub fn operation_count(&self) -> usize {
        self.operations.len() + self.conditions.len()
    }

    /// Checks the batch against a store's `limits`; every backend calls this (through
    /// [`resolve`]) before writing anything, so a batch over them is refused whole.
    pub fn check_limits(&self, limits: &StoreLimits) -> Result<(), StoreError> {
        let too_large = |what, actual, limit| StoreError::BatchTooLarge {
            what,
            actual,
            limit,
        };
        let count = self.operation_count();
        if count > limits.max_batch_operations {
            return Err(too_large(
                "operation count",
                count,
                limits.max_batch_operations,
            ));
        }
        let check_key = |key: &[u8]| {
            if key.is_empty() || key.len() > limits.max_key_bytes {
                return Err(too_large(
                    "key length (must be 1 or more)",
                    key.len(),
                    limits.max_key_bytes,
                ));
            }
            Ok(())
        };
        for operation in &self.operations {
            match operation {
                Operation::Put { key, value } => {
                    check_key(key)?;
                    if value.len() > limits.max_value_bytes {
                        return Err(too_large(
                            "value length",
                            value.len(),
                            limits.max_value_bytes,
                        ));
                    }
                }
                Operation::Delete { key } => check_key(key)?,
                Operation::DeleteRange { .. } => {}
            }
        }
        let bytes = self.byte_size();
        if bytes > limits.max_batch_bytes {
            return Err(too_large("byte size", bytes, limits.max_batch_bytes));
        }
        Ok(())
    }
}

/// The net effect of a batch: each written key once, with `Some(value)` to write or `None`
/// to delete, in the order of each key's last operation.
pub type ResolvedWrites = Vec<ResolvedWrite>;

/// One key's net write: `Some(value)` to write, `None` to delete.
pub type ResolvedWrite = (Vec<u8>, Option<Vec<u8>>);

/// Checks the batch against the store's `limits` and its conditions through `read`, and folds
/// its operations, in order, into the net write per key. `existing_keys(start, end)` lists the
/// stored keys of a range, for range deletes. Every backend resolves batches through this one routine so that all of them give
/// ordered operations and conditions the same meaning. The batch is consumed: keys and values
/// move, nothing is copied.
pub fn resolve<R, K>(
    batch: WriteBatch,
    limits: &StoreLimits,
    read: R,
    existing_keys: K,
) -> Result<ResolvedWrites, StoreError>
where
    R: Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError>,
    K: Fn(&[u8], &[u8]) -> Result<Vec<Vec<u8>>, StoreError>,
{
    batch.check_limits(limits)?;
    for condition in &batch.conditions {
        let (key, holds) = match condition {
            Condition::Absent(key) => (key, read(key)?.is_none()),
            Condition::Equals(key, expected) => {
                (key, read(key)?.as_deref() == Some(expected.as_slice()))
            }
        };
        if !holds {
            return Err(StoreError::ConditionFailed { key: key.clone() });
        }
    }
    // Slot per key: later operations on a key overwrite its slot, and a slot emptied by a
    // later operation is skipped, so the output keeps each key once.
    let mut writes: Vec<Option<ResolvedWrite>> = Vec::with_capacity(batch.operations.len());
    let mut slot_of: HashMap<Vec<u8>, usize> = HashMap::with_capacity(batch.operations.len());
    let mut set =
        |writes: &mut Vec<Option<ResolvedWrite>>, key: Vec<u8>, value: Option<Vec<u8>>| {
            if let Some(previous) = slot_of.get(&key) {
                writes[*previous] = None;
            }
            slot_of.insert(key.clone(), writes.len());
            writes.push(Some((key, value)));
        };
    for operation in batch.operations {
        match operation {
            Operation::Put { key, value } => set(&mut writes, key, Some(value)),
            Operation::Delete { key } => set(&mut writes, key, None),
            Operation::DeleteRange { start, end } => {
                if start >= end {
                    continue;
                }
                let mut doomed = existing_keys(&start, &end)?;
                doomed.extend(
                    writes
                        .iter()
                        .flatten()
                        .filter(|(key, value)| value.is_some() && *key >= start && *key < end)
                        .map(|(key, _)| key.clone()),
                );
                for key in doomed {
                    set(&mut writes, key, None);
                }
            }
        }
    }
    Ok(writes.into_iter().flatten().collect())
}
