//! One OpenStream session's requests after `start`, as domain values: sends go through the same
//! path as SendMessage (several in flight, for group commit), acknowledgements and typing
//! indicators as their unary RPCs but without an answer. `api/` turns `chat.v1` requests into
//! [`StreamRequest`]s; this module owns what a session does with them.

use std::sync::Arc;

use common::credentials::Credentials;
use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;

use crate::{
    Error,
    delivery::stream::{Outbox, Outgoing, SendAnswer},
    ids::ConversationId,
    message::Caller,
    metrics::SendPath,
    service::Chat,
};

/// A request on an open stream, after `start`.
pub enum StreamRequest {
    /// A send, answered on the stream under `request_id`.
    Send {
        /// The client's id for the answer.
        request_id: String,
        /// The envelope; `None` is refused.
        envelope: Option<e2ee::Envelope>,
    },
    /// An acknowledgement of positions in a conversation (a malformed id is refused).
    Ack {
        /// The conversation.
        conversation: Result<ConversationId, Error>,
        /// Delivered up to here.
        delivered_sequence: u64,
        /// Read up to here.
        read_sequence: u64,
    },
    /// The caller types in a conversation (a malformed id is refused).
    Typing {
        /// The conversation.
        conversation: Result<ConversationId, Error>,
    },
    /// A second `start`, or an empty request: ends the stream with INVALID_ARGUMENT.
    Misplaced,
}

/// Serves `requests` until they end or the stream closes. Refused acknowledgements and typing
/// indicators have no answer and are logged at debug level only.
pub async fn serve_stream_requests(
    chat: Chat,
    credentials: Credentials,
    caller: Caller,
    mut requests: impl Stream<Item = StreamRequest> + Unpin,
    outbox: Outbox,
) {
    // The stream stops reading requests while this many sends wait for their commit.
    let in_flight = Arc::new(Semaphore::new(chat.limits.max_stream_sends_in_flight));
    let credentials = Arc::new(credentials);
    loop {
        let request = tokio::select! {
            request = requests.next() => request,
            () = outbox.closed() => return,
        };
        // The client finished sending (it may still read) or went away.
        let Some(request) = request else {
            return;
        };
        match request {
            StreamRequest::Send {
                request_id,
                envelope,
            } => {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let (chat, credentials, outbox) =
                    (chat.clone(), credentials.clone(), outbox.clone());
                tokio::spawn(async move {
                    let outcome = match envelope {
                        Some(envelope) => {
                            chat.send(&credentials, caller, envelope, SendPath::Stream)
                                .await
                        }
                        None => Err(Error::InvalidArgument("envelope is required".to_owned())),
                    };
                    let item = Outgoing::SendAnswer(Box::new(SendAnswer {
                        request_id,
                        outcome,
                    }));
                    let _ = outbox.push(item).await;
                    drop(permit);
                });
            }
            StreamRequest::Ack {
                conversation,
                delivered_sequence,
                read_sequence,
            } => {
                let result = match conversation {
                    Ok(conversation) => {
                        outbox.acknowledged(conversation, delivered_sequence);
                        chat.acknowledge(
                            &credentials,
                            caller,
                            conversation,
                            delivered_sequence,
                            read_sequence,
                        )
                        .await
                        .map(drop)
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "acknowledgement on a stream refused");
                }
            }
            StreamRequest::Typing { conversation } => {
                let result = match conversation {
                    Ok(conversation) => chat.typing(&credentials, caller, conversation).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "typing indicator on a stream refused");
                }
            }
            StreamRequest::Misplaced => {
                outbox.end(Error::InvalidArgument(
                    "start must come first and only once".to_owned(),
                ));
                return;
            }
        }
    }
}
