//! The gRPC surface of the chat service: proto <-> domain, nothing else.
//!
//! Not implemented yet: every RPC answers UNIMPLEMENTED until the chat issue lands (sending,
//! streams, history, acknowledgements).

use std::pin::Pin;

use common::grpc::not_implemented;
use proto::chat::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Implements `chat.v1.ChatService`.
#[derive(Debug, Default)]
pub struct ChatApi;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::chat_service_server::ChatService for ChatApi {
    type OpenStreamStream = EventStream<pb::OpenStreamResponse>;
    type SubscribeStream = EventStream<pb::SubscribeResponse>;

    async fn open_direct_conversation(
        &self,
        _: Request<pb::OpenDirectConversationRequest>,
    ) -> Result<Response<pb::OpenDirectConversationResponse>, Status> {
        Err(not_implemented("OpenDirectConversation"))
    }

    async fn list_conversations(
        &self,
        _: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        Err(not_implemented("ListConversations"))
    }

    async fn send_message(
        &self,
        _: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        Err(not_implemented("SendMessage"))
    }

    async fn open_stream(
        &self,
        _: Request<Streaming<pb::OpenStreamRequest>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        Err(not_implemented("OpenStream"))
    }

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(not_implemented("Subscribe"))
    }

    async fn list_messages(
        &self,
        _: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        Err(not_implemented("ListMessages"))
    }

    async fn acknowledge(
        &self,
        _: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        Err(not_implemented("Acknowledge"))
    }

    async fn send_typing(
        &self,
        _: Request<pb::SendTypingRequest>,
    ) -> Result<Response<pb::SendTypingResponse>, Status> {
        Err(not_implemented("SendTyping"))
    }
}
