//! The chat server as tonic serves it: the generated `ChatServiceServer`, except that the two
//! long-lived streams (Subscribe, OpenStream) use [`StreamCodec`], for two reasons:
//!
//! - Messages are written from their shared encoding (`wire.rs`), not converted and serialised
//!   once per recipient: a stream's items are [`StreamItem`]s.
//! - tonic's default codec gives every call an 8 KiB encoding buffer up front (and OpenStream an
//!   8 KiB decoding buffer too). A unary call frees it at once, but a stream holds it for hours:
//!   on an idle stream it was a third of the server's memory per stream (`bench idle-streams`).
//!   Here a stream's buffers start at [`STREAM_BUFFER_BYTES`] and grow when a message needs more.

use std::{
    convert::Infallible,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
};

use proto::chat::v1 as pb;
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    codegen::{BoxFuture, Service, http},
    server::{Grpc, NamedService, ServerStreamingService, StreamingService},
};
use tonic_prost::ProstCodec;

use super::{ChatApi, EventStream};
use crate::wire::DeviceMessage;
use pb::chat_service_server::ChatServiceServer;

/// A stream's initial encoding (and, for OpenStream, decoding) buffer. A heartbeat takes about
/// 20 bytes; a message grows the buffer to its size once.
const STREAM_BUFFER_BYTES: usize = 512;
/// tonic's default: encoded messages are handed to the connection once this much is buffered.
const YIELD_THRESHOLD: usize = 32 * 1024;

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

/// One item of a response stream of type `T` (`SubscribeResponse` or `OpenStreamResponse`).
#[derive(Debug)]
pub enum StreamItem<T> {
    /// A message, written from its shared encoding as `T { event: StreamEvent { message } }`.
    Message(Box<DeviceMessage>),
    /// Anything else, encoded by prost.
    Other(T),
}

/// A response of a stream that carries `StreamEvent`s (at field 1, which `wire.rs` relies on).
pub trait EventResponse {
    /// The response carrying `event`.
    fn event(event: pb::StreamEvent) -> Self;
}

impl EventResponse for pb::SubscribeResponse {
    fn event(event: pb::StreamEvent) -> Self {
        Self { event: Some(event) }
    }
}

impl EventResponse for pb::OpenStreamResponse {
    fn event(event: pb::StreamEvent) -> Self {
        Self {
            response: Some(pb::open_stream_response::Response::Event(event)),
        }
    }
}

impl<T: EventResponse> StreamItem<T> {
    /// The item as a prost value.
    pub fn into_proto(self) -> T {
        match self {
            Self::Message(message) => T::event(pb::StreamEvent {
                event: Some(pb::stream_event::Event::Message(message.to_pb())),
            }),
            Self::Other(response) => response,
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

/// Protobuf through prost like tonic's default codec, but encoding [`StreamItem`]s, with
/// [`STREAM_BUFFER_BYTES`] buffers.
struct StreamCodec<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for StreamCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StreamCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = StreamItem<T>;
    type Decode = U;
    type Encoder = StreamEncoder<T>;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        StreamEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffers())
    }
}

struct StreamEncoder<T>(PhantomData<fn(T)>);

impl<T: prost::Message> Encoder for StreamEncoder<T> {
    type Item = StreamItem<T>;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            StreamItem::Message(message) => message.encode_event(buf),
            // The buffer grows as needed, so prost cannot run out of room.
            StreamItem::Other(other) => other
                .encode(buf)
                .map_err(|error| Status::internal(format!("encoding a response: {error}")))?,
        }
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

fn buffers() -> BufferSettings {
    BufferSettings::new(STREAM_BUFFER_BYTES, YIELD_THRESHOLD)
}
