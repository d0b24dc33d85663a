//! `chat.v1.ChatService`'s methods: authentication, proto <-> domain, nothing else.
//! Every RPC checks the caller's access token first, so a call that bypasses the gateway is
//! refused too.

use std::{collections::HashMap, pin::Pin};

use common::{credentials::Credentials, ids::parse_uuid};
use futures::StreamExt;
use proto::chat::v1 as pb;
use time::OffsetDateTime;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    Error,
    delivery::{stream::TokenWatch, wire::message_pb},
    ids::{ConversationId, UserId},
    message::Caller,
    metrics::{SendPath, StreamKind},
    service::{Chat, HistoryPage, KeyToForward},
    session::{StreamRequest, serve_stream_requests},
    store::history::Direction,
};

use super::{
    codec::StreamItem,
    convert::{conversation_pb, forwarded_key_pb, open_stream_item, send_response, subscribe_item},
};

/// Implements `chat.v1.ChatService`.
#[derive(Clone)]
pub struct ChatApi {
    validator: token::RemoteValidator,
    chat: Chat,
}

/// Who calls, and with which credentials.
struct Authenticated {
    caller: Caller,
    credentials: Credentials,
    claims: token::AccessClaims,
}

impl ChatApi {
    /// The API, checking tokens with `validator`.
    pub fn new(validator: token::RemoteValidator, chat: Chat) -> Self {
        Self { validator, chat }
    }

    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Authenticated, Status> {
        let claims = self.validator.authenticate(request).await?;
        Ok(Authenticated {
            caller: Caller {
                user: UserId(claims.user_id),
                device: crate::ids::DeviceId(claims.device_id),
            },
            credentials: Credentials::of(request),
            claims,
        })
    }

    /// What ends a stream opened by `who`: its token's expiry or revocation.
    fn token_watch(&self, who: &Authenticated) -> TokenWatch {
        TokenWatch {
            expires_at: OffsetDateTime::from_unix_timestamp(who.claims.expires_at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            revoked: Box::pin(self.validator.revocations().ended(who.claims.subject())),
        }
    }

    /// OpenStream, as `ChatServer` serves it (messages from their shared encoding).
    pub(super) async fn open_stream_items(
        &self,
        request: Request<Streaming<pb::OpenStreamRequest>>,
    ) -> Result<Response<EventStream<StreamItem<pb::OpenStreamResponse>>>, Status> {
        let who = self.authenticate(&request).await?;
        let mut requests = request.into_inner();
        let positions = match requests.message().await? {
            Some(pb::OpenStreamRequest {
                request: Some(pb::open_stream_request::Request::Start(start)),
            }) => positions_of(start.positions)?,
            _ => {
                return Err(
                    Error::InvalidArgument("the first request must be start".to_owned()).into(),
                );
            }
        };
        let (outbox, events) = self
            .chat
            .open_stream(
                &who.credentials,
                who.caller,
                positions,
                self.token_watch(&who),
                StreamKind::OpenStream,
            )
            .await?;
        // A request that fails to arrive ends the requests, as their end does.
        let requests = requests.scan((), |(), request| {
            std::future::ready(request.ok().map(stream_request))
        });
        tokio::spawn(serve_stream_requests(
            self.chat.clone(),
            who.credentials,
            who.caller,
            Box::pin(requests),
            outbox,
        ));
        let events = events.map(|item| item.map(open_stream_item).map_err(Status::from));
        Ok(Response::new(Box::pin(events)))
    }

    /// Subscribe, as `ChatServer` serves it (messages from their shared encoding).
    pub(super) async fn subscribe_items(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream<StreamItem<pb::SubscribeResponse>>>, Status> {
        let who = self.authenticate(&request).await?;
        let positions = positions_of(request.into_inner().positions)?;
        let (_outbox, events) = self
            .chat
            .open_stream(
                &who.credentials,
                who.caller,
                positions,
                self.token_watch(&who),
                StreamKind::Subscribe,
            )
            .await?;
        let events = events.filter_map(|item| async move {
            match item {
                // Subscribe has no sends: their answers are left out.
                Ok(outgoing) => subscribe_item(outgoing).map(Ok),
                Err(error) => Some(Err(Status::from(error))),
            }
        });
        Ok(Response::new(Box::pin(events)))
    }
}

pub(super) type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatApi {
    type OpenStreamStream = EventStream<pb::OpenStreamResponse>;
    type SubscribeStream = EventStream<pb::SubscribeResponse>;

    async fn open_direct_conversation(
        &self,
        request: Request<pb::OpenDirectConversationRequest>,
    ) -> Result<Response<pb::OpenDirectConversationResponse>, Status> {
        let who = self.authenticate(&request).await?;
        let peer = UserId(
            parse_uuid("peer_user_id", &request.get_ref().peer_user_id).map_err(Error::from)?,
        );
        let conversation = self
            .chat
            .open_direct(&who.credentials, who.caller, peer)
            .await?;
        Ok(Response::new(pb::OpenDirectConversationResponse {
            conversation: Some(conversation_pb(conversation)),
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let who = self.authenticate(&request).await?;
        let request = request.into_inner();
        let (conversations, next) = self
            .chat
            .list_conversations(
                &who.credentials,
                who.caller,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: conversations.into_iter().map(conversation_pb).collect(),
            next_page_token: next.map(|token| token.encode()).unwrap_or_default(),
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let who = self.authenticate(&request).await?;
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Error::InvalidArgument("envelope is required".to_owned()))?;
        let committed = self
            .chat
            .send(
                &who.credentials,
                who.caller,
                envelope.into(),
                SendPath::Unary,
            )
            .await?;
        Ok(Response::new(send_response(committed)))
    }

    async fn open_stream(
        &self,
        request: Request<Streaming<pb::OpenStreamRequest>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        let items = self.open_stream_items(request).await?;
        Ok(items.map(|items| Box::pin(items.map(|item| item.map(StreamItem::into_proto))) as _))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let items = self.subscribe_items(request).await?;
        Ok(items.map(|items| Box::pin(items.map(|item| item.map(StreamItem::into_proto))) as _))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let who = self.authenticate(&request).await?;
        let request = request.into_inner();
        let conversation = conversation_id(&request.conversation_id)?;
        let direction = match request.direction() {
            pb::Direction::Forward => Direction::Forward,
            pb::Direction::Backward | pb::Direction::Unspecified => Direction::Backward,
        };
        let (messages, next) = self
            .chat
            .list_messages(
                &who.credentials,
                who.caller,
                conversation,
                HistoryPage {
                    direction,
                    from: request.from_sequence,
                    page_size: request.page_size,
                    include_all_recipients: request.include_all_recipients,
                },
            )
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: messages
                .into_iter()
                .map(|(message, forwarded)| {
                    let message_id = message.id.to_string();
                    pb::Message {
                        forwarded_keys: forwarded
                            .into_iter()
                            .map(|key| forwarded_key_pb(key, &message_id))
                            .collect(),
                        ..message_pb(message)
                    }
                })
                .collect(),
            next_from_sequence: next,
        }))
    }

    async fn forward_keys(
        &self,
        request: Request<pb::ForwardKeysRequest>,
    ) -> Result<Response<pb::ForwardKeysResponse>, Status> {
        let who = self.authenticate(&request).await?;
        let request = request.into_inner();
        let conversation = conversation_id(&request.conversation_id)?;
        let keys = request
            .keys
            .into_iter()
            .map(|key| {
                Ok(KeyToForward {
                    message_id: parse_uuid("message_id", &key.message_id)?,
                    recipient: crate::ids::DeviceId(parse_uuid(
                        "recipient_device_id",
                        &key.recipient_device_id,
                    )?),
                    recipient_key_fingerprint: key.recipient_key_fingerprint,
                    wrapped_key: key.wrapped_key,
                    signature: key.signature,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let outcome = self
            .chat
            .forward_keys(&who.credentials, who.caller, conversation, keys)
            .await?;
        Ok(Response::new(pb::ForwardKeysResponse {
            stored_count: outcome.stored,
            skipped_count: outcome.skipped,
        }))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        let who = self.authenticate(&request).await?;
        let ack = request
            .into_inner()
            .ack
            .ok_or_else(|| Error::InvalidArgument("ack is required".to_owned()))?;
        let conversation = conversation_id(&ack.conversation_id)?;
        let positions = self
            .chat
            .acknowledge(
                &who.credentials,
                who.caller,
                conversation,
                ack.delivered_sequence,
                ack.read_sequence,
            )
            .await?;
        Ok(Response::new(pb::AcknowledgeResponse {
            delivered_sequence: positions.delivered,
            read_sequence: positions.read,
        }))
    }

    async fn send_typing(
        &self,
        request: Request<pb::SendTypingRequest>,
    ) -> Result<Response<pb::SendTypingResponse>, Status> {
        let who = self.authenticate(&request).await?;
        let conversation = conversation_id(&request.get_ref().conversation_id)?;
        self.chat
            .typing(&who.credentials, who.caller, conversation)
            .await?;
        Ok(Response::new(pb::SendTypingResponse {}))
    }
}

/// An OpenStream request after `start`, as the session (`session.rs`) serves it.
fn stream_request(request: pb::OpenStreamRequest) -> StreamRequest {
    use pb::open_stream_request::Request as Kind;
    match request.request {
        Some(Kind::Send(send)) => StreamRequest::Send {
            request_id: send.request_id,
            envelope: send.envelope.map(Into::into),
        },
        Some(Kind::Ack(ack)) => StreamRequest::Ack {
            conversation: conversation_id(&ack.conversation_id),
            delivered_sequence: ack.delivered_sequence,
            read_sequence: ack.read_sequence,
        },
        Some(Kind::Typing(typing)) => StreamRequest::Typing {
            conversation: conversation_id(&typing.conversation_id),
        },
        Some(Kind::Start(_)) | None => StreamRequest::Misplaced,
    }
}

fn conversation_id(value: &str) -> Result<ConversationId, Error> {
    Ok(ConversationId(parse_uuid("conversation_id", value)?))
}

fn positions_of(
    positions: Vec<pb::ConversationPosition>,
) -> Result<HashMap<ConversationId, u64>, Error> {
    positions
        .into_iter()
        .map(|position| {
            Ok((
                conversation_id(&position.conversation_id)?,
                position.sequence,
            ))
        })
        .collect()
}
