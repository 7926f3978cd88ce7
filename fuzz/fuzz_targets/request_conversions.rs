//! The gRPC request conversions: any bytes that decode as a request message convert to
//! domain values or to an error naming the field, never a panic or an overflow, and an
//! error message never grows with its input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use stockgrid_api::convert;
use stockgrid_api::proto::v1 as pb;

/// Longest error message a conversion may produce, whatever its input.
const MAX_MESSAGE_BYTES: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            if let Ok(request) = pb::GetAvailabilityRequest::decode(body) {
                match convert::lookup(&request, Some(3)) {
                    Ok((_, quantity, _)) => assert!(quantity >= 1),
                    Err(status) => assert!(status.message().len() <= MAX_MESSAGE_BYTES),
                }
            }
        }
        1 => {
            if let Ok(request) = pb::IngestEventsRequest::decode(body) {
                for event in request.events {
                    if let Err((_, reason)) = convert::event(event) {
                        assert!(reason.len() <= MAX_MESSAGE_BYTES, "{}", reason.len());
                    }
                }
            }
        }
        2 => {
            if let Ok(request) = pb::UpsertLocationsRequest::decode(body) {
                for (index, location) in request.locations.into_iter().enumerate() {
                    if let Err(status) = convert::location(index, location) {
                        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
                    }
                }
            }
        }
        3 => {
            if let Ok(request) = pb::ReserveRequest::decode(body) {
                let _ = convert::surface(request.surface, "surface");
                let _ = convert::lines(&request.lines);
            }
        }
        _ => {
            if let Ok(request) = pb::ReleaseRequest::decode(body) {
                let _ = convert::release_reason(request.reason);
            }
        }
    }
});
