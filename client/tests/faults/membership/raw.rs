//! The departing device's receivers: raw streams (not the client library's `Live`) that record
//! every message chat delivers, when, and how each stream ended.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use client::Session;
use futures::{Stream, StreamExt};
use proto::chat::v1::{self as pb, chat_service_client::ChatServiceClient, stream_event::Event};
use tonic::transport::Channel;

use crate::{
    clients::{Tasks, status_name, text_of},
    ledger::Ledger,
};

/// One raw stream's way of opening.
#[derive(Clone, Copy, Debug)]
pub(super) enum StreamKind {
    Subscribe,
    OpenStream,
}

/// What one raw receiver saw.
pub(super) struct Receiver {
    pub(super) name: &'static str,
    pub(super) seen: Mutex<Seen>,
}

#[derive(Default)]
pub(super) struct Seen {
    /// Each message delivered: its sequence, and when.
    pub(super) deliveries: Vec<(u64, Instant)>,
    /// When a stream opened (its first event).
    pub(super) opened: Vec<Instant>,
    /// When a stream ended or could not open, with the status (as the client library maps it).
    pub(super) ends: Vec<(Instant, String)>,
}

impl Receiver {
    pub(super) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A device receiving the group on `kind` streams, resuming from the last sequence it got
/// after every end; it records every message chat delivers into the ledger under `name`.
pub(super) fn raw_receiver(
    name: &'static str,
    kind: StreamKind,
    session: Arc<Session>,
    channel: Channel,
    conversation: String,
    ledger: Arc<Ledger>,
) -> (Tasks, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        name,
        seen: Mutex::default(),
    });
    let recording = receiver.clone();
    let task = tokio::spawn(async move {
        let mut cursor = 0;
        loop {
            let status = receive_once(
                kind,
                &session,
                &channel,
                &conversation,
                &mut cursor,
                &recording,
                &ledger,
            )
            .await;
            recording.seen().ends.push((Instant::now(), status));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    (Tasks::new(vec![task]), receiver)
}

type Events = Pin<Box<dyn Stream<Item = Result<Option<pb::StreamEvent>, tonic::Status>> + Send>>;

/// One stream until it ends; returns its status.
pub(super) async fn receive_once(
    kind: StreamKind,
    session: &Session,
    channel: &Channel,
    conversation: &str,
    cursor: &mut u64,
    receiver: &Receiver,
    ledger: &Ledger,
) -> String {
    let token = match session.access_token_for_tests().await {
        Ok(token) => token,
        Err(error) => return mapped(error),
    };
    let positions = vec![pb::ConversationPosition {
        conversation_id: conversation.to_owned(),
        sequence: *cursor,
    }];
    let mut chat = ChatServiceClient::new(channel.clone());
    let opened = match kind {
        StreamKind::Subscribe => chat
            .subscribe(authorized(pb::SubscribeRequest { positions }, &token))
            .await
            .map(|response| -> Events {
                Box::pin(response.into_inner().map(|item| item.map(|r| r.event)))
            }),
        StreamKind::OpenStream => {
            let start = pb::OpenStreamRequest {
                request: Some(pb::open_stream_request::Request::Start(pb::StartStream {
                    positions,
                })),
            };
            // The request side stays open: the stream lasts until the server ends it.
            let requests = futures::stream::iter([start]).chain(futures::stream::pending());
            chat.open_stream(authorized(requests, &token))
                .await
                .map(|response| -> Events {
                    Box::pin(response.into_inner().map(|item| {
                        item.map(|r| match r.response {
                            Some(pb::open_stream_response::Response::Event(event)) => Some(event),
                            _ => None,
                        })
                    }))
                })
        }
    };
    let mut events = match opened {
        Ok(events) => events,
        Err(status) => return mapped(status.into()),
    };
    let mut first = true;
    while let Some(item) = events.next().await {
        let event = match item {
            Ok(event) => event,
            Err(status) => return mapped(status.into()),
        };
        if std::mem::take(&mut first) {
            receiver.seen().opened.push(Instant::now());
        }
        let Some(pb::StreamEvent {
            event: Some(Event::Message(message)),
        }) = event
        else {
            continue;
        };
        if message.conversation_id != conversation {
            continue;
        }
        let sequence = message.sequence;
        receiver.seen().deliveries.push((sequence, Instant::now()));
        if sequence <= *cursor {
            ledger.shown(
                receiver.name,
                conversation,
                sequence,
                "REDELIVERED".to_owned(),
            );
            continue;
        }
        *cursor = sequence;
        let shown = session.open_message(message).await;
        ledger.shown(receiver.name, conversation, sequence, text_of(shown));
    }
    "ENDED WITHOUT A STATUS".to_owned()
}

pub(super) fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A status as the client library maps it (nginx's error pages and resets are UNAVAILABLE).
pub(super) fn mapped(error: client::Error) -> String {
    error
        .status_code()
        .map_or_else(|| format!("local: {error}"), status_name)
}
