//! A client's request body that outlives the call it fed, so that ending a response never resets
//! the stream under it.
//!
//! When an upstream ends a call whose client is still sending (chat ending an `OpenStream` with
//! RESOURCE_EXHAUSTED while the client's acknowledgements keep coming), hyper drops the request
//! body as soon as the upstream resets its request side, which can be long before the client has
//! read the response. Once the response is also done, h2 resets the client's stream (RST_STREAM NO_ERROR, and
//! it forgets the stream a second later); DATA the client sends after that is answered with
//! RST_STREAM STREAM_CLOSED. nginx (the Ingress) reads that reset as an upstream failure even
//! after the response's trailers, and drops what it still holds for its client, the status
//! included: the client saw INTERNAL instead of the upstream's status (fault 7, FAULTS.md). A
//! client that stopped reading meets exactly this: its response ends behind a backlog, and its
//! acknowledgements resume as it reads that backlog.
//!
//! So a [`LingeringBody`] dropped before its end hands the body to a task that reads and discards
//! it until the client ends its side (or resets it), for at most [`LINGER`]; then it is dropped
//! and h2 resets the stream with NO_ERROR as before. What a lingering stream costs is bounded: no
//! data is kept (reading releases the client's flow-control window as usual), the stream keeps
//! its slot among the connection's concurrent streams (`GATEWAY_MAX_CONCURRENT_STREAMS`), and it
//! lasts at most [`LINGER`] (and at most the shutdown drain).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

/// How long a dropped request body is still read. The body is dropped when the upstream ends the
/// call, which can be long before the client reads the end: chat ends a slow consumer's stream
/// while its backlog still waits in socket buffers and in nginx, and the client reads it, and
/// acknowledges again, only when it reads again (35 s after the drop in `slow_consumers.rs`;
/// with a bound of 30 s nginx still dropped the status). Two minutes is longer than nginx's
/// `send_timeout` (60 s, ingress-nginx's default), after which nginx itself resets a client that
/// reads nothing, which ends the drain at once.
pub const LINGER: Duration = Duration::from_secs(120);

/// A request body that, dropped before its end, is drained in the background (see the module
/// docs).
pub struct LingeringBody {
    inner: Option<Body>,
    /// The body ended, failed or is known to be complete: nothing to drain.
    finished: bool,
}

impl LingeringBody {
    pub fn new(inner: Body) -> Self {
        Self {
            inner: Some(inner),
            finished: false,
        }
    }

    /// `inner` as it is, dropped when dropped: for requests that must not linger (see
    /// `proxy.rs`: only a streaming request over HTTP/2 does).
    pub fn passthrough(inner: Body) -> Self {
        Self {
            inner: Some(inner),
            finished: true,
        }
    }
}

impl http_body::Body for LingeringBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for LingeringBody {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.finished || body.is_end_stream() {
            return;
        }
        // No runtime (a test dropping a request by hand): the body is dropped as before.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body, LINGER));
        }
    }
}

/// Reads and discards `body` until it ends or fails, for at most `limit`.
async fn drain(mut body: Body, limit: Duration) {
    let reading = async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(limit, reading).await.is_err() {
        tracing::debug!(
            ?limit,
            "a client kept sending after its call ended; its stream is reset"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;

    /// A body fed by the returned sender, one frame at a time.
    fn channel_body() -> (mpsc::Sender<Result<Bytes, Infallible>>, Body) {
        let (sender, receiver) = mpsc::channel(1);
        (sender, Body::from_stream(ReceiverStream::new(receiver)))
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_read_until_the_client_ends_it() {
        let (sender, body) = channel_body();
        let mut lingering = LingeringBody::new(body);
        sender.send(Ok(Bytes::from_static(b"first"))).await.unwrap();
        let first = lingering.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");

        drop(lingering);

        // Still read: more sends than the channel holds go through.
        for _ in 0..5 {
            tokio::time::timeout(
                Duration::from_secs(5),
                sender.send(Ok(Bytes::from_static(b"ack"))),
            )
            .await
            .expect("the dropped body is still read")
            .expect("and not dropped");
        }
    }

    #[tokio::test]
    async fn a_lingering_body_is_dropped_after_the_bound() {
        let (sender, body) = channel_body();
        let limit = Duration::from_millis(200);
        let draining = tokio::spawn(drain(body, limit));
        tokio::time::sleep(limit / 2).await;
        assert!(!sender.is_closed(), "read while it lingers");

        draining.await.unwrap();

        assert!(sender.is_closed(), "dropped after {limit:?}");
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_not_drained() {
        let (sender, body) = channel_body();
        let mut lingering = LingeringBody::new(body);
        drop(sender);
        assert!(lingering.frame().await.is_none());
        assert!(lingering.finished);
        drop(lingering);
    }
}
