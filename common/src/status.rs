//! A bound on the size of every status a service sends.
//!
//! A gRPC status travels in HTTP/2 headers: its message in `grpc-message` (percent-encoded) and its
//! details in `grpc-status-details-bin` (a base64 `google.rpc.Status`), in the response headers of a
//! trailers-only answer or in the trailers. Headers are limited along the way (the gateway's
//! connection to a service, a client's or a proxy's header-list limit, typically 16 KiB), and a
//! status past such a limit can cost more than its own call. So no status may grow with what a
//! caller sends: feature code bounds its own details by design (chat's `DeviceListMismatch` lists
//! at most a few dozen ids), and [`BoundStatusLayer`], which `grpc::serve` puts in front of every
//! service, enforces the bound on whatever leaves a service, however the status was built:
//!
//! - the message is cut to [`MAX_MESSAGE_BYTES`] of UTF-8 (ending in `…`), so `grpc-message` is at
//!   most three times that once percent-encoded;
//! - the details keep their leading entries while the encoded `google.rpc.Status` fits in
//!   [`MAX_DETAILS_BYTES`] (`ErrorInfo` and `RetryInfo` come first by convention), and its own
//!   copy of the message is cut the same way.
//!
//! Together at most about 8.5 KiB of headers. Cutting is a safety net that logs a warning: a
//! status that needs it is a bug in the code that built it, or a library's echo of a request
//! (tonic-reflection's NOT_FOUND names the symbol asked for).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;

/// Most bytes of a status message (UTF-8, before percent-encoding).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Most bytes of a status's encoded details (`google.rpc.Status`, before base64).
pub const MAX_DETAILS_BYTES: usize = 4096;

const GRPC_MESSAGE: &str = "grpc-message";
const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";
/// What a cut message ends with.
const ELLIPSIS: char = '…';
/// Standard base64 with or without padding (tonic writes none; the gRPC spec allows both).
const BASE64_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Cuts `message` to at most [`MAX_MESSAGE_BYTES`] bytes, at a character boundary, marking the cut
/// with `…`. Also for statuses sent inside messages, such as chat's `SendRejected`.
pub fn bound_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.into();
    }
    let mut end = MAX_MESSAGE_BYTES - ELLIPSIS.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = message[..end].to_owned();
    cut.push(ELLIPSIS);
    cut.into()
}

/// Bounds the status in `headers` (response headers or trailers), if there is one; see the module
/// docs.
pub fn bound_status_headers(headers: &mut HeaderMap) {
    // Percent-encoding never shortens, and base64 of fewer than MAX_DETAILS_BYTES is shorter than
    // this: the common case is decided by the headers' lengths alone.
    let short_details = MAX_DETAILS_BYTES / 3 * 4;
    if let Some(encoded) = headers.get(GRPC_MESSAGE)
        && encoded.len() > MAX_MESSAGE_BYTES
    {
        let message = String::from_utf8_lossy(&percent_decode(encoded.as_bytes())).into_owned();
        if message.len() > MAX_MESSAGE_BYTES {
            tracing::warn!(bytes = message.len(), "status message cut to its bound");
            let bounded = percent_encode(bound_message(&message).as_bytes());
            let value = HeaderValue::try_from(bounded).expect("percent-encoding is visible ASCII");
            headers.insert(GRPC_MESSAGE, value);
        }
    }
    let Some(encoded) = headers.get(GRPC_STATUS_DETAILS) else {
        return;
    };
    if encoded.len() <= short_details {
        return;
    }
    let Ok(details) = BASE64_ANY_PADDING.decode(encoded.as_bytes()) else {
        tracing::warn!("undecodable status details dropped");
        headers.remove(GRPC_STATUS_DETAILS);
        return;
    };
    if details.len() <= MAX_DETAILS_BYTES {
        return;
    }
    match tonic_types::pb::Status::decode(details.as_slice()) {
        Ok(status) => {
            let encoded =
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(bound_details(status));
            let value = HeaderValue::try_from(encoded).expect("base64 is visible ASCII");
            headers.insert(GRPC_STATUS_DETAILS, value);
        }
        Err(_) => {
            tracing::warn!("undecodable status details dropped");
            headers.remove(GRPC_STATUS_DETAILS);
        }
    }
}

/// The encoded `status` within [`MAX_DETAILS_BYTES`]: its message bounded, then its leading
/// details while they fit.
fn bound_details(mut status: tonic_types::pb::Status) -> Vec<u8> {
    status.message = bound_message(&status.message).into_owned();
    let details = std::mem::take(&mut status.details);
    let all = details.len();
    for detail in details {
        status.details.push(detail);
        if status.encoded_len() > MAX_DETAILS_BYTES {
            status.details.pop();
            break;
        }
    }
    tracing::warn!(
        details = all,
        kept = status.details.len(),
        "status details cut to their bound"
    );
    status.encode_to_vec()
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&byte, tail)) = rest.split_first() {
        if let [b'%', high, low, ..] = rest
            && let (Some(high), Some(low)) = (hex(*high), hex(*low))
        {
            decoded.push(u8::try_from(high * 16 + low).expect("two hex digits fit a byte"));
            rest = &rest[3..];
            continue;
        }
        decoded.push(byte);
        rest = tail;
    }
    decoded
}

/// Percent-encoding as the gRPC spec asks of `grpc-message`: everything but printable ASCII, and
/// `%` itself.
fn percent_encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut encoded = String::with_capacity(bytes.len());
    for &byte in bytes {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            write!(encoded, "%{byte:02X}").expect("writing to a String cannot fail");
        }
    }
    encoded
}

/// Bounds every status a service answers with; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundStatusLayer;

impl<S> tower::Layer<S> for BoundStatusLayer {
    type Service = BoundStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundStatus { inner }
    }
}

/// The service of [`BoundStatusLayer`].
#[derive(Debug, Clone)]
pub struct BoundStatus<S> {
    inner: S,
}

impl<S, Request, ResponseBody> tower::Service<Request> for BoundStatus<S>
where
    S: tower::Service<Request, Response = http::Response<ResponseBody>>,
{
    type Response = http::Response<BoundStatusBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoundStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        BoundStatusFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`BoundStatus`].
    pub struct BoundStatusFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResponseBody, Error> Future for BoundStatusFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, Error>>,
{
    type Output = Result<http::Response<BoundStatusBody<ResponseBody>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_ok(|mut response| {
            // A trailers-only answer carries its status in the response headers.
            bound_status_headers(response.headers_mut());
            response.map(|inner| BoundStatusBody { inner })
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers' status is bounded.
    pub struct BoundStatusBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B: Body> Body for BoundStatusBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx).map_ok(|mut frame| {
            if let Some(trailers) = frame.trailers_mut() {
                bound_status_headers(trailers);
            }
            frame
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_name: &str, bytes: usize) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: vec![7; bytes],
        }
    }

    /// Headers with a `grpc-status`, which `Status::from_header_map` needs.
    fn status_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("9"));
        headers
    }

    #[test]
    fn a_short_message_is_kept_and_a_long_one_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);

        let cut = bound_message(&long);

        assert_eq!(bound_message("short"), "short");
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.len() > MAX_MESSAGE_BYTES - 8, "{}", cut.len());
        assert!(cut.ends_with("é…"));
    }

    #[test]
    fn a_long_message_header_is_cut_and_stays_percent_encoded() {
        let mut headers = status_headers();
        let long = format!("100% {}", "ü\n".repeat(2 * MAX_MESSAGE_BYTES));
        headers.insert(
            GRPC_MESSAGE,
            percent_encode(long.as_bytes()).try_into().unwrap(),
        );

        bound_status_headers(&mut headers);

        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(
            status.message().starts_with("100% ü\nü\n"),
            "{}",
            status.message()
        );
        assert!(status.message().ends_with('…'));
    }

    #[test]
    fn details_keep_their_leading_entries_that_fit() {
        let status = tonic_types::pb::Status {
            code: 9,
            message: "m".repeat(3 * MAX_MESSAGE_BYTES),
            details: vec![
                any("google.rpc.ErrorInfo", 40),
                any("chat.v1.Huge", 100_000),
                any("google.rpc.RetryInfo", 10),
            ],
        };
        let mut headers = status_headers();
        let encoded = base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec());
        headers.insert(GRPC_STATUS_DETAILS, encoded.try_into().unwrap());

        bound_status_headers(&mut headers);

        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert!(status.details().len() <= MAX_DETAILS_BYTES);
        let details = tonic_types::pb::Status::decode(status.details()).unwrap();
        assert_eq!(details.details.len(), 1);
        assert!(details.details[0].type_url.ends_with("ErrorInfo"));
        assert!(details.message.len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn a_status_within_the_bounds_is_left_alone() {
        let status = tonic::Status::with_details(
            tonic::Code::FailedPrecondition,
            "refetch and retry",
            tonic_types::pb::Status {
                code: 9,
                message: "refetch and retry".to_owned(),
                details: vec![any("chat.v1.DeviceListMismatch", 3000)],
            }
            .encode_to_vec()
            .into(),
        );
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let before = headers.clone();

        bound_status_headers(&mut headers);

        assert_eq!(headers, before);
    }

    #[test]
    fn percent_decoding_undoes_encoding_and_leaves_stray_percents() {
        let text = "a%b %zz ü \r\n";

        assert_eq!(
            percent_decode(percent_encode(text.as_bytes()).as_bytes()),
            text.as_bytes()
        );
        assert_eq!(percent_decode(b"50%"), b"50%");
        assert_eq!(percent_decode(b"%4"), b"%4");
    }
}
