//! The status of a request body the server could not decode, set where bodies are decoded.
//!
//! tonic decodes a unary request before any handler runs and answers its own statuses: a
//! protobuf that does not parse, a missing or truncated message, or a bad compression flag
//! come back INTERNAL, and a message over the size limit OUT_OF_RANGE. To a client both say
//! the wrong thing: the first is its own bad input (INVALID_ARGUMENT), the second a request
//! too large for this server (RESOURCE_EXHAUSTED, as for every other limit). The size limit
//! itself stays where tonic enforces it, on the length prefix, before the body is buffered.
//!
//! [`DecodeErrorLayer`] wraps every service and rewrites exactly those statuses, recognised
//! by tonic's own messages, in the response headers and trailers (tonic sends a failed
//! decode's status in the trailers). Streams see decode errors as items of their request stream and map them with
//! [`decode_status`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http::{self, HeaderValue};
use tonic::{Code, Status};

/// Messages tonic gives a request body it could not decode, all answered INVALID_ARGUMENT.
const UNDECODABLE_PREFIXES: &[&str] = &[
    "failed to decode Protobuf message",
    "Missing request message",
    "Unexpected EOF decoding stream",
    "protocol error: received message with",
    "Error decompressing",
];

/// The message tonic gives a request over the size limit, answered RESOURCE_EXHAUSTED.
const TOO_LARGE_PREFIX: &str = "Error, decoded message length too large";

/// The code a decode failure deserves, if `code` and `message` are one (`None`: not a decode
/// failure, keep it).
fn decode_code(code: Code, message: &str) -> Option<Code> {
    match code {
        Code::OutOfRange if message.starts_with(TOO_LARGE_PREFIX) => Some(Code::ResourceExhausted),
        Code::Internal
            if UNDECODABLE_PREFIXES
                .iter()
                .any(|prefix| message.starts_with(prefix)) =>
        {
            Some(Code::InvalidArgument)
        }
        _ => None,
    }
}

/// A decode failure of a request stream's message with its proper code; any other status
/// unchanged.
pub fn decode_status(status: Status) -> Status {
    match decode_code(status.code(), status.message()) {
        Some(code) => Status::new(code, format!("request: {}", status.message())),
        None => status,
    }
}

/// Wraps every service of the server with [`DecodeErrors`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeErrorLayer;

impl<S> tower_layer::Layer<S> for DecodeErrorLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrors { inner }
    }
}

/// A service whose decode-failure statuses are rewritten (see the module doc).
#[derive(Clone, Debug)]
pub struct DecodeErrors<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>>
    for DecodeErrors<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<DecodeErrorBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            remap_headers(response.headers_mut());
            Ok(response.map(|inner| DecodeErrorBody { inner }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers get the same rewrite as the headers: tonic sends the
    /// status of a failed unary decode in the trailers.
    pub struct DecodeErrorBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B: http_body::Body> http_body::Body for DecodeErrorBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.project().inner.poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    remap_headers(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn remap_headers(headers: &mut http::HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<i32>().ok())
        .map(Code::from_i32)
    else {
        return;
    };
    let message = headers
        .get("grpc-message")
        .map(|value| percent_decoded(value.as_bytes()))
        .unwrap_or_default();
    if let Some(remapped) = decode_code(code, &message) {
        headers.insert("grpc-status", HeaderValue::from(remapped as i32));
    }
}

/// A `grpc-message` value as text (gRPC percent-encodes spaces and other bytes).
fn percent_decoded(encoded: &[u8]) -> String {
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut index = 0;
    while index < encoded.len() {
        let byte = encoded[index];
        let hex = |at: usize| {
            encoded
                .get(at)
                .and_then(|b| char::from(*b).to_digit(16))
                .map(|d| d as u8)
        };
        match (byte, hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push(high << 4 | low);
                index += 3;
            }
            _ => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_get_the_client_side_codes_and_nothing_else_changes() {
        let garbage = decode_status(Status::internal(
            "failed to decode Protobuf message: GetAvailabilityRequest.qty: invalid wire type",
        ));
        assert_eq!(garbage.code(), Code::InvalidArgument);
        let large = decode_status(Status::out_of_range(
            "Error, decoded message length too large: found 20000000 bytes, the limit is: 16777216 bytes",
        ));
        assert_eq!(large.code(), Code::ResourceExhausted);
        let ours = decode_status(Status::internal("replay task: panicked"));
        assert_eq!(ours.code(), Code::Internal);
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from(13));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("Missing%20request%20message."),
        );
        remap_headers(&mut headers);
        assert_eq!(headers["grpc-status"], "3");
    }
}
