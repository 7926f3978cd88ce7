//! The one mapping of internal errors to gRPC statuses.
//!
//! INVALID_ARGUMENT names the field; RESOURCE_EXHAUSTED is an oversized request or shed
//! load; FAILED_PRECONDITION is insufficient stock or a reservation in the wrong state;
//! UNAVAILABLE is a poisoned store, a shard restarting, or a node still recovering.

use stockgrid_actors::EngineError;
use stockgrid_actors::reservation::ReservationError;
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

/// The status of an engine error.
pub fn engine_status(error: &EngineError) -> Status {
    match error {
        EngineError::Store(store) => Status::unavailable(format!("store: {store}")),
        EngineError::ShardUnavailable { .. } | EngineError::IdentityLookup(_) => {
            Status::unavailable(error.to_string())
        }
        EngineError::TooLarge {
            what,
            actual,
            limit,
        } => too_many(what, *actual, *limit),
        EngineError::Corrupt(_) | EngineError::Start(_) => Status::internal(error.to_string()),
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
        ReservationError::Engine(engine) => engine_status(engine),
    }
}

#[cfg(test)]
mod tests {
    use stockgrid_storage::StoreError;
    use tonic::Code;

    use super::*;

    #[test]
    fn codes_follow_the_status_model() {
        let poisoned = EngineError::Store(StoreError::Poisoned {
            cause: "fsync failed".to_owned(),
        });
        assert_eq!(engine_status(&poisoned).code(), Code::Unavailable);
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
