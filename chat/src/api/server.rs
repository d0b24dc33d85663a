//! The chat server as tonic serves it: the generated `ChatServiceServer`, except that the two
//! long-lived streams (Subscribe, OpenStream) use [`StreamCodec`], for two reasons:
//!
//! - Messages are written from their shared encoding (`wire.rs`), not converted and serialised
//!   once per recipient: a stream's items are [`StreamItem`]s.
//! - tonic's default codec gives every call an 8 KiB encoding buffer up front (and OpenStream an
//!   8 KiB decoding buffer too). A unary call frees it at once, but a stream holds it for hours:
//!   on an idle stream it was a third of the server's memory per stream (`bench idle-streams`).
//!   Here a stream's buffers start at `codec::STREAM_BUFFER_BYTES` and grow when a message
//!   needs more.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use proto::chat::v1 as pb;
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codegen::{BoxFuture, Service, http},
    server::{Grpc, NamedService, ServerStreamingService, StreamingService},
};

use super::{
    codec::{StreamCodec, StreamItem},
    handlers::{ChatApi, EventStream},
};
use pb::chat_service_server::ChatServiceServer;

const SUBSCRIBE: &str = "/chat.v1.ChatService/Subscribe";
const OPEN_STREAM: &str = "/chat.v1.ChatService/OpenStream";

/// `chat.v1.ChatService`, ready for `tonic::service::Routes`.
#[derive(Clone)]
pub struct ChatServer {
    api: Arc<ChatApi>,
    generated: ChatServiceServer<ChatApi>,
}

impl ChatServer {
    /// Serves `api`.
    pub fn new(api: ChatApi) -> Self {
        let api = Arc::new(api);
        Self {
            generated: ChatServiceServer::from_arc(api.clone()),
            api,
        }
    }
}

impl NamedService for ChatServer {
    const NAME: &'static str = <ChatServiceServer<ChatApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for ChatServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let api = self.api.clone();
        match request.uri().path() {
            SUBSCRIBE => Box::pin(async move {
                let mut grpc = Grpc::new(StreamCodec::default());
                Ok(grpc.server_streaming(Subscribe(api), request).await)
            }),
            OPEN_STREAM => Box::pin(async move {
                let mut grpc = Grpc::new(StreamCodec::default());
                Ok(grpc.streaming(OpenStream(api), request).await)
            }),
            _ => self.generated.call(request),
        }
    }
}

struct Subscribe(Arc<ChatApi>);

impl ServerStreamingService<pb::SubscribeRequest> for Subscribe {
    type Response = StreamItem<pb::SubscribeResponse>;
    type ResponseStream = EventStream<Self::Response>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<pb::SubscribeRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.subscribe_items(request).await })
    }
}

struct OpenStream(Arc<ChatApi>);

impl StreamingService<pb::OpenStreamRequest> for OpenStream {
    type Response = StreamItem<pb::OpenStreamResponse>;
    type ResponseStream = EventStream<Self::Response>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<pb::OpenStreamRequest>>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.open_stream_items(request).await })
    }
}
