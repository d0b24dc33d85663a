//! [`CheckedRequestBody`]: a gRPC request body checked frame by frame on its way to the handler.

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};

use super::{BoxError, schema::Schemas};

/// The size of a gRPC frame header: a flag byte and a 32-bit big-endian length.
const FRAME_HEADER_BYTES: usize = 5;

/// The first problem with a call's request, shared by its request body (which finds it) and its
/// response (which ends with it).
#[derive(Debug, Default)]
pub struct RequestProblem(OnceLock<Status>);

impl RequestProblem {
    /// The problem, once there is one.
    pub fn get(&self) -> Option<&Status> {
        self.0.get()
    }

    fn set(&self, status: Status) {
        let _ = self.0.set(status);
    }
}

/// What a [`CheckedRequestBody`] checks besides the framing.
#[derive(Clone, Default)]
pub struct RequestChecks {
    /// Messages longer than this are refused with RESOURCE_EXHAUSTED before their payload passes.
    pub max_message_bytes: Option<u32>,
    /// Each message is checked as an encoding of this type before it passes.
    pub message_type: Option<(Arc<Schemas>, usize)>,
}

pin_project_lite::pin_project! {
    /// A gRPC request body that reads the 5-byte frame headers as they pass and fails (with the
    /// status the client must get) at the first problem, before the offending message reaches
    /// the handler:
    ///
    /// - a compressed message (flag 1): UNIMPLEMENTED, as no compression is offered;
    /// - any other flag but 0: INVALID_ARGUMENT;
    /// - a message over [`RequestChecks::max_message_bytes`]: RESOURCE_EXHAUSTED;
    /// - a message that is not a valid encoding of [`RequestChecks::message_type`]:
    ///   INVALID_ARGUMENT;
    /// - a body that ends inside a frame: INVALID_ARGUMENT;
    /// - a body the client's transport could not deliver (a broken gRPC-Web encoding, say):
    ///   INVALID_ARGUMENT, or CANCELLED when the client reset its stream.
    ///
    /// The first such status is also kept in the shared [`RequestProblem`], so that the response
    /// path can answer with it whatever the handler made of the broken body. Data passes unchanged and no
    /// exact size is claimed: gRPC needs no content-length, and tonic-web reports a
    /// grpc-web-text body's encoded size, which a proxy would otherwise send on as a wrong one.
    pub struct CheckedRequestBody<B> {
        #[pin]
        inner: B,
        checks: RequestChecks,
        // The current frame: its header as far as read, then the payload bytes still to come.
        header: [u8; FRAME_HEADER_BYTES],
        header_read: usize,
        payload_left: usize,
        // The current message's bytes so far, when messages are checked.
        pieces: Vec<Bytes>,
        problem: Arc<RequestProblem>,
        failed: bool,
    }
}

impl<B> CheckedRequestBody<B> {
    /// Checks `inner` as described on the type; the first problem is also stored in `problem`.
    pub fn new(inner: B, checks: RequestChecks, problem: Arc<RequestProblem>) -> Self {
        Self {
            inner,
            checks,
            header: [0; FRAME_HEADER_BYTES],
            header_read: 0,
            payload_left: 0,
            pieces: Vec::new(),
            problem,
            failed: false,
        }
    }
}

impl<B> Body for CheckedRequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let outcome = match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => Scan {
                    checks: this.checks,
                    header: this.header,
                    header_read: this.header_read,
                    payload_left: this.payload_left,
                    pieces: this.pieces,
                }
                .data(data)
                .map(|()| Some(frame)),
                None => Ok(Some(frame)),
            },
            Poll::Ready(Some(Err(error))) => Err(client_body_error(error.into())),
            Poll::Ready(None) if *this.header_read > 0 || *this.payload_left > 0 => {
                Err(Status::invalid_argument(
                    "the request ended inside a gRPC message (a truncated frame)",
                ))
            }
            Poll::Ready(None) => Ok(None),
        };
        Poll::Ready(match outcome {
            Ok(frame) => frame.map(Ok),
            Err(status) => {
                *this.failed = true;
                this.problem.set(status.clone());
                Some(Err(status))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        // Inside a frame the body is not over even if the inner one is: the next poll reports the
        // truncation.
        self.failed
            || (self.inner.is_end_stream() && self.header_read == 0 && self.payload_left == 0)
    }

    fn size_hint(&self) -> SizeHint {
        // Never exact, see the type's docs.
        let mut hint = SizeHint::new();
        hint.set_lower(self.inner.size_hint().lower());
        hint
    }
}

/// The framing state of a [`CheckedRequestBody`], borrowed while one chunk is scanned.
struct Scan<'a> {
    checks: &'a RequestChecks,
    header: &'a mut [u8; FRAME_HEADER_BYTES],
    header_read: &'a mut usize,
    payload_left: &'a mut usize,
    pieces: &'a mut Vec<Bytes>,
}

impl Scan<'_> {
    fn data(mut self, data: &Bytes) -> Result<(), Status> {
        let mut at = 0;
        while at < data.len() {
            if *self.payload_left > 0 {
                let taken = (data.len() - at).min(*self.payload_left);
                if self.checks.message_type.is_some() {
                    self.pieces.push(data.slice(at..at + taken));
                }
                at += taken;
                *self.payload_left -= taken;
                if *self.payload_left == 0 {
                    self.message_complete()?;
                }
                continue;
            }
            let taken = (data.len() - at).min(FRAME_HEADER_BYTES - *self.header_read);
            self.header[*self.header_read..*self.header_read + taken]
                .copy_from_slice(&data[at..at + taken]);
            *self.header_read += taken;
            at += taken;
            if *self.header_read == FRAME_HEADER_BYTES {
                *self.header_read = 0;
                self.frame_header()?;
            }
        }
        Ok(())
    }

    fn frame_header(&mut self) -> Result<(), Status> {
        match self.header[0] {
            0 => {}
            1 => {
                return Err(Status::unimplemented(
                    "compressed messages are not supported: send them uncompressed",
                ));
            }
            flag => {
                return Err(Status::invalid_argument(format!(
                    "malformed gRPC frame: unknown flag {flag:#04x} (a request message starts with 0)"
                )));
            }
        }
        let [_, length @ ..] = *self.header;
        let length = u32::from_be_bytes(length);
        if let Some(limit) = self.checks.max_message_bytes
            && length > limit
        {
            return Err(message_too_large(limit));
        }
        *self.payload_left = usize::try_from(length).unwrap_or(usize::MAX);
        if length == 0 {
            self.message_complete()?;
        }
        Ok(())
    }

    fn message_complete(&mut self) -> Result<(), Status> {
        let Some((schemas, message_type)) = &self.checks.message_type else {
            return Ok(());
        };
        let pieces = std::mem::take(self.pieces);
        let checked = match pieces.as_slice() {
            [] => schemas.check(*message_type, &[]),
            [one] => schemas.check(*message_type, one),
            many => {
                let mut whole = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
                for piece in many {
                    whole.extend_from_slice(piece);
                }
                schemas.check(*message_type, &whole)
            }
        };
        checked.map_err(|malformed| {
            Status::invalid_argument(format!("the request message is not valid: {malformed}"))
        })
    }
}

/// The RESOURCE_EXHAUSTED a message over `limit` bytes gets.
pub fn message_too_large(limit: u32) -> Status {
    Status::resource_exhausted(format!("a request message is larger than {limit} bytes"))
}

/// What the client gets when its request body could not be read: CANCELLED if it reset the
/// stream (it is gone), INVALID_ARGUMENT otherwise (a broken gRPC-Web encoding, an HTTP/1.1 body
/// shorter than announced, a stream reset with an error).
fn client_body_error(error: BoxError) -> Status {
    let status = Status::from_error(error);
    if status.code() == Code::Cancelled {
        return status;
    }
    let message = status.message().trim_start_matches("tonic-web: ");
    Status::invalid_argument(format!("the request body is malformed: {message}"))
}
