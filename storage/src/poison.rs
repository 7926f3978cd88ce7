//! The poisoned state every backend keeps, and the test hook that trips it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::StoreError;

/// Remembers the first write failure; from then on every write is refused.
#[derive(Debug, Default)]
pub struct PoisonState {
    poisoned: AtomicBool,
    cause: Mutex<Option<String>>,
    injected_failures: AtomicU32,
}

impl PoisonState {
    /// `Ok` while healthy, the poison error once a write has failed.
    pub fn check(&self) -> Result<(), StoreError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self.cause.lock().map(|c| c.clone()).unwrap_or_default();
        Err(StoreError::Poisoned {
            cause: cause.unwrap_or_else(|| "unknown".to_owned()),
        })
    }

    /// Records a write failure and returns the error to hand back.
    pub fn poison(&self, cause: String) -> StoreError {
        if let Ok(mut slot) = self.cause.lock() {
            slot.get_or_insert(cause);
        }
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(error = %self.check().err().map(|e| e.to_string()).unwrap_or_default(), "store poisoned");
        self.check().err().unwrap_or(StoreError::Poisoned {
            cause: "unknown".to_owned(),
        })
    }

    /// Makes the next `count` durable writes fail as a failed fsync would. Tests use this to
    /// check that a failed fsync poisons the store; nothing else should call it.
    pub fn inject_write_failures(&self, count: u32) {
        self.injected_failures.store(count, Ordering::Release);
    }

    /// Consumes one injected failure, if any is armed.
    pub fn take_injected_failure(&self) -> bool {
        self.injected_failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}
