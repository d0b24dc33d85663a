//! The gRPC surface of the chat service: proto <-> domain, nothing else.
//!
//! Not implemented yet: every RPC answers UNIMPLEMENTED until the chat issue lands (sending,
//! streams, history, acknowledgements).

use std::pin::Pin;

use common::grpc::not_implemented;
use proto::chat::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Implements `chat.v1.ChatService`. Every RPC checks the caller's access
/// token first, so a call that bypasses the gateway is refused too.
#[derive(Clone)]
pub struct ChatApi {
    validator: token::RemoteValidator,
}

impl ChatApi {
    /// The API, checking tokens with `validator`.
    pub fn new(validator: token::RemoteValidator) -> Self {
        Self { validator }
    }
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatApi {
    type OpenStreamStream = EventStream<pb::OpenStreamResponse>;
    type SubscribeStream = EventStream<pb::SubscribeResponse>;

    async fn open_direct_conversation(
        &self,
        request: Request<pb::OpenDirectConversationRequest>,
    ) -> Result<Response<pb::OpenDirectConversationResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("OpenDirectConversation"))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("ListConversations"))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("SendMessage"))
    }

    async fn open_stream(
        &self,
        request: Request<Streaming<pb::OpenStreamRequest>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("OpenStream"))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("Subscribe"))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("ListMessages"))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("Acknowledge"))
    }

    async fn send_typing(
        &self,
        request: Request<pb::SendTypingRequest>,
    ) -> Result<Response<pb::SendTypingResponse>, Status> {
        self.validator.authenticate(&request).await?;
        Err(not_implemented("SendTyping"))
    }
}
