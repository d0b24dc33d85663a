//! Following another service's change events from a background task, one per replica and per
//! event stream: group's `WatchMembershipEvents` (`group_events.rs`) and auth's
//! `WatchDeviceChanges` (`device_events.rs`), both with the deployment's service credential.
//!
//! While a stream is followed its cache is trusted; when the stream ends, cannot be opened, or
//! brings neither an event nor a heartbeat for [`SILENCE_BOUND`], the cache is emptied and bypassed (every check asks the other service) until it follows
//! again. It resumes after the last event seen, so open client streams get the changes they
//! missed late rather than never; without a position (first start, or fallen out of the other
//! service's retention: OUT_OF_RANGE) it starts at the newest event, and client streams learn
//! what they missed when they reconnect.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::metrics::WatchMetrics;

/// First pause before reconnecting; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause before reconnecting: also the longest a cache stays bypassed once the other
/// service is back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often chat pings its connections to group and auth, and how long a ping may go
/// unanswered before the connection is dropped: a link that stalls without a reset (a dead
/// network path) would otherwise leave the event stream "followed" and its cache trusted for as
/// long as the stall lasts. With these, such a stall ends the stream, and the cache is bypassed,
/// within their sum: the longest a removed member or a revoked device may still be accepted as a
/// recipient (the fault suite's `membership.rs` measures that window in PostgreSQL and asserts a
/// bound; `FAULTS.md`, fault 5). A reset leaves no window: the stream ends before the change.
const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an event stream may bring nothing, no event and no heartbeat, before its cache stops
/// being trusted and the stream is opened again. Group and auth send a heartbeat each time
/// they have sent everything committed, at least once per poll of their outbox (at most 5 s, a
/// bound both enforce in their configuration): silence for twice that means the other service's
/// reads of its outbox stall, and changes committed meanwhile (through another replica) would go
/// unseen on a link that looks healthy, where the keepalive above finds nothing wrong. The
/// longest a removed member or a revoked device may then still be accepted as a recipient is
/// this bound (fault 5 of issue 20 measures it: `FAULTS.md`).
pub const SILENCE_BOUND: Duration = Duration::from_secs(10);

/// A lazily connected channel to `url` (group or auth) that notices a dead link by itself: for
/// every channel whose event streams chat trusts (memberships, devices, revocations). Balanced
/// over every pod the name resolves to (a headless Service), re-resolved (`common::balance`).
///
/// # Errors
/// When `url` is not a valid URI.
pub fn peer_channel(url: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    common::balance::channel(url, |endpoint| {
        endpoint
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
    })
}

/// One kind of change events, and what to do with them.
pub trait EventSource: Send + Sync + 'static {
    /// One event as the other service sends it.
    type Event: Send;
    /// For logs.
    const NAME: &'static str;
    /// The `events` label of its metrics.
    const LABEL: &'static str;

    /// Opens the event stream after `after` (`None`: from the newest event on).
    fn open(
        &self,
        after: Option<u64>,
    ) -> impl Future<Output = Result<tonic::Streaming<Self::Event>, tonic::Status>> + Send;

    /// The event's id, the resume position (for a heartbeat: every event up to it was sent).
    fn event_id(event: &Self::Event) -> u64;

    /// Whether this is a heartbeat rather than an event: it only proves the stream is current.
    fn is_heartbeat(event: &Self::Event) -> bool;

    /// Applies one event (invalidate caches, tell client streams).
    fn apply(&self, event: Self::Event);

    /// Whether events are being followed (the cache may be trusted).
    fn set_following(&self, following: bool);
}

/// Follows `source` until `stop` fires, reconnecting with backoff; `metrics` counts its
/// connections and whether it is followed.
pub async fn follow<S: EventSource>(source: S, stop: CancellationToken, metrics: WatchMetrics) {
    tokio::select! {
        () = follow_forever(&source, &metrics) => {}
        () = stop.cancelled() => {}
    }
    source.set_following(false);
    metrics.following(S::LABEL, false);
}

async fn follow_forever<S: EventSource>(source: &S, metrics: &WatchMetrics) {
    let mut last_event: Option<u64> = None;
    let mut backoff = MIN_BACKOFF;
    let mut was_following = true; // log the first failure loudly
    loop {
        match follow_once(source, &mut last_event, metrics).await {
            Ok(()) => {
                backoff = MIN_BACKOFF;
                was_following = true;
                tracing::info!(events = S::NAME, "event stream ended; reconnecting");
            }
            Err(status) => {
                if status.code() == Code::OutOfRange {
                    last_event = None;
                }
                if was_following {
                    tracing::warn!(events = S::NAME, %status, "cannot follow events; not caching until then");
                } else {
                    tracing::debug!(events = S::NAME, %status, "cannot follow events");
                }
                was_following = false;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One event stream, from `last_event` on, until it ends (`Ok`) or fails.
async fn follow_once<S: EventSource>(
    source: &S,
    last_event: &mut Option<u64>,
    metrics: &WatchMetrics,
) -> Result<(), tonic::Status> {
    let mut events = source.open(*last_event).await?;
    source.set_following(true);
    metrics.following(S::LABEL, true);
    let result = loop {
        let Ok(message) = tokio::time::timeout(SILENCE_BOUND, events.message()).await else {
            break Err(tonic::Status::deadline_exceeded(format!(
                "no event and no heartbeat for {SILENCE_BOUND:?}"
            )));
        };
        match message {
            Ok(Some(event)) => {
                *last_event = Some(S::event_id(&event));
                if !S::is_heartbeat(&event) {
                    source.apply(event);
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    source.set_following(false);
    metrics.following(S::LABEL, false);
    result
}
