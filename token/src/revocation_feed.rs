//! Following auth's `WatchRevocations` into a [`Revocations`] list, from a background task that
//! reconnects with backoff and resumes after the last event id it saw, so that a disconnection
//! delays revocations but never loses one.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use proto::auth::internal::v1 as pb;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::{Body, Bytes, StdError};
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::revocation::{Revocation, Revocations, Revoked};

/// First pause before reconnecting; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause before reconnecting; well below the default maximum staleness, so that a
/// replica restart of auth does not make the list stale.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One message of a revocation feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedMessage {
    /// A revocation, with its event id (the resume position).
    Revocation {
        /// Resume after this.
        event_id: u64,
        /// What was revoked, and when.
        revocation: Revocation,
    },
    /// Everything committed until now has been sent; resume after `event_id`.
    Heartbeat {
        /// Resume after this.
        event_id: u64,
    },
}

/// The messages of one feed connection; an error ends it.
pub type FeedStream = Pin<Box<dyn Stream<Item = Result<FeedMessage, Status>> + Send>>;

/// Where revocations come from: auth's `WatchRevocations` ([`AuthServiceRevocationSource`]).
#[async_trait]
pub trait RevocationSource: Send + Sync {
    /// Opens the feed after `after_event_id` (0: from the oldest revocation kept).
    ///
    /// # Errors
    /// Any failure to open it; the follower retries with backoff (from 0 after OUT_OF_RANGE).
    async fn watch(&self, after_event_id: u64) -> Result<FeedStream, Status>;
}

/// Adds the deployment's service credential to a `WatchRevocations` request (for example
/// `move |request| credential.attach(request)` with a `common::service_credential::ServiceCredential`).
pub type AttachCredential = Arc<
    dyn Fn(Request<pb::WatchRevocationsRequest>) -> Request<pb::WatchRevocationsRequest>
        + Send
        + Sync,
>;

/// Follows `auth.internal.v1.AuthInternalService/WatchRevocations` over any gRPC transport `T`
/// (a tonic `Channel`, or the gateway's own connection pool).
pub struct AuthServiceRevocationSource<T> {
    client: pb::auth_internal_service_client::AuthInternalServiceClient<T>,
    credential: AttachCredential,
}

impl<T> AuthServiceRevocationSource<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// A source calling auth over `transport`, with the service credential `credential` adds.
    pub fn new(transport: T, credential: AttachCredential) -> Self {
        Self {
            client: pb::auth_internal_service_client::AuthInternalServiceClient::new(transport),
            credential,
        }
    }
}

#[async_trait]
impl<T> RevocationSource for AuthServiceRevocationSource<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    async fn watch(&self, after_event_id: u64) -> Result<FeedStream, Status> {
        let request =
            (self.credential)(Request::new(pb::WatchRevocationsRequest { after_event_id }));
        let messages = self
            .client
            .clone()
            .watch_revocations(request)
            .await?
            .into_inner();
        Ok(Box::pin(messages.filter_map(|message| match message {
            Ok(message) => feed_message(message).map(Ok),
            Err(status) => Some(Err(status)),
        })))
    }
}

/// Reads one `WatchRevocationsResponse`. Auth writes ids from its database, so a malformed one
/// is a bug: logged, and skipped rather than retried forever.
fn feed_message(message: pb::WatchRevocationsResponse) -> Option<FeedMessage> {
    match message.item? {
        pb::watch_revocations_response::Item::Heartbeat(heartbeat) => {
            Some(FeedMessage::Heartbeat {
                event_id: heartbeat.event_id,
            })
        }
        pb::watch_revocations_response::Item::Revocation(revocation) => {
            let event_id = revocation.event_id;
            let revoked = if revocation.session_id.is_empty() {
                Uuid::try_parse(&revocation.device_id).map(Revoked::Device)
            } else {
                Uuid::try_parse(&revocation.session_id).map(Revoked::Session)
            };
            let Ok(revoked) = revoked else {
                tracing::error!(event_id, "ignoring a malformed revocation");
                return None;
            };
            Some(FeedMessage::Revocation {
                event_id,
                revocation: Revocation {
                    revoked,
                    // Without a time, keep it for as long as from now: never shorter.
                    revoked_at: revocation.revoked_at.map_or_else(
                        || crate::claims::unix_seconds(std::time::SystemTime::now()),
                        |at| at.seconds,
                    ),
                },
            })
        }
    }
}

/// How one feed connection ended.
enum Ended {
    /// The list was dropped: stop.
    ListDropped,
    /// The connection failed or ended; `caught_up` says whether it had caught up.
    Failed { status: Status, caught_up: bool },
}

/// Feeds `list` from `source` until the list is dropped.
pub(crate) async fn follow(list: Weak<Revocations>, source: Arc<dyn RevocationSource>) {
    let mut cursor = 0;
    let mut backoff = MIN_BACKOFF;
    let mut healthy = true; // log the first failure loudly, the retries quietly
    loop {
        let (status, caught_up) = match follow_once(&list, source.as_ref(), &mut cursor).await {
            Ended::ListDropped => return,
            Ended::Failed { status, caught_up } => (status, caught_up),
        };
        if caught_up || healthy {
            tracing::warn!(%status, "revocation feed interrupted; reconnecting");
        } else {
            tracing::debug!(%status, "cannot follow the revocation feed yet");
        }
        healthy = false;
        if caught_up {
            backoff = MIN_BACKOFF;
        }
        if status.code() == Code::OutOfRange {
            // Revocations are kept far longer than tokens live: nothing needed is lost.
            cursor = 0;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection, from `cursor` on, until it fails or the list is dropped.
async fn follow_once(
    list: &Weak<Revocations>,
    source: &dyn RevocationSource,
    cursor: &mut u64,
) -> Ended {
    let mut messages = match source.watch(*cursor).await {
        Ok(messages) => messages,
        Err(status) => {
            return Ended::Failed {
                status,
                caught_up: false,
            };
        }
    };
    let mut caught_up = false;
    loop {
        let message = messages.next().await;
        let Some(list) = list.upgrade() else {
            return Ended::ListDropped;
        };
        let status = match message {
            Some(Ok(FeedMessage::Revocation {
                event_id,
                revocation,
            })) => {
                list.revoke(revocation);
                *cursor = event_id;
                continue;
            }
            Some(Ok(FeedMessage::Heartbeat { event_id })) => {
                list.caught_up();
                *cursor = event_id;
                caught_up = true;
                continue;
            }
            Some(Err(status)) => status,
            None => Status::unavailable("the revocation feed ended"),
        };
        return Ended::Failed { status, caught_up };
    }
}
