//! The one mapping of internal errors to gRPC statuses.
//!
//! INVALID_ARGUMENT names the field; RESOURCE_EXHAUSTED is an oversized request or shed
//! load; FAILED_PRECONDITION is insufficient stock or a reservation in the wrong state;
//! UNAVAILABLE is a poisoned store, a shard restarting, or a node still recovering.

use stockgrid_actors::EngineError;
use stockgrid_actors::reservation::ReservationError;
use stockgrid_storage::StoreError;
use tonic::Status;

/// INVALID_ARGUMENT for `field`, whose message starts with the field's name.
pub fn invalid(field: impl AsRef<str>, reason: impl AsRef<str>) -> Status {
    Status::invalid_argument(format!("{}: {}", field.as_ref(), reason.as_ref()))
}

/// RESOURCE_EXHAUSTED for a list longer than its limit.
pub fn too_many(field: &str, actual: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "{field}: {actual} items, above the limit of {limit}; split the request"
    ))
}

/// The status of an engine error, with the error logged (store internals, paths and
/// library words go to the log, never to clients).
pub fn engine_status(error: &EngineError) -> Status {
    match error {
        EngineError::Store(store) => {
            tracing::warn!(error = %store, "store error answered UNAVAILABLE")
        }
        EngineError::Corrupt(_) | EngineError::Start(_) => {
            tracing::error!(%error, "internal error answered INTERNAL");
        }
        _ => {}
    }
    status_of(error)
}

/// The status of an engine error, without logging it (the caller logs once for many).
pub fn status_of(error: &EngineError) -> Status {
    match error {
        EngineError::Store(store) => store_status(store),
        EngineError::ShardUnavailable { .. }
        | EngineError::IdentityLookup(_)
        | EngineError::NotOwner { .. } => Status::unavailable(error.to_string()),
        EngineError::TooLarge {
            what,
            actual,
            limit,
        } => too_many(what, *actual, *limit),
        EngineError::Corrupt(_) | EngineError::Start(_) => {
            Status::internal("internal error; the node's log has the details")
        }
        EngineError::Invalid { .. } => Status::invalid_argument(error.to_string()),
    }
}

/// The status of a store error, in words that hold no internals.
fn store_status(error: &StoreError) -> Status {
    match error {
        StoreError::Poisoned { .. } => Status::unavailable(
            "store refuses writes after a failed write or fsync (poisoned); an operator must restart the node",
        ),
        StoreError::BatchTooLarge { what, limit, .. } => Status::resource_exhausted(format!(
            "request too large for one atomic write: {what} above {limit}; split the request"
        )),
        _ => Status::unavailable("store unavailable; retry with backoff"),
    }
}

/// The status of a reservation error.
pub fn reservation_status(error: &ReservationError) -> Status {
    match error {
        ReservationError::Invalid { field, reason } => invalid(field, reason),
        ReservationError::NotFound(_) => Status::not_found(error.to_string()),
        ReservationError::Insufficient { .. } | ReservationError::WrongState { .. } => {
            Status::failed_precondition(error.to_string())
        }
        ReservationError::RequestConflict(_) => Status::already_exists(error.to_string()),
        ReservationError::Changed(_) => Status::aborted(error.to_string()),
        ReservationError::Engine(engine) => engine_status(engine),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn codes_follow_the_status_model() {
        let poisoned = EngineError::Store(StoreError::Poisoned {
            cause: "fsync failed".to_owned(),
        });
        assert_eq!(engine_status(&poisoned).code(), Code::Unavailable);
        assert!(!engine_status(&poisoned).message().contains("fsync failed"));
        let internal = EngineError::Store(StoreError::Backend {
            context: "read key",
            message: "/var/lib/stockgrid/000042.sst: checksum mismatch".to_owned(),
        });
        assert!(!engine_status(&internal).message().contains("sst"));
        let large = EngineError::TooLarge {
            what: "events",
            actual: 10_001,
            limit: 10_000,
        };
        assert_eq!(engine_status(&large).code(), Code::ResourceExhausted);
        let status = invalid("items[2].qty", "must be >= 1");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("items[2].qty: "));
    }
}
