//! How the two long-lived streams (Subscribe, OpenStream) are encoded: their items
//! ([`StreamItem`]: a message from its shared encoding in `wire.rs`, anything else through
//! prost) and the codec that writes them with small buffers (see `server.rs` for why).

use std::marker::PhantomData;

use proto::chat::v1 as pb;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
};
use tonic_prost::ProstCodec;

use crate::delivery::wire::DeviceMessage;

/// A stream's initial encoding (and, for OpenStream, decoding) buffer. A heartbeat takes about
/// 20 bytes; a message grows the buffer to its size once.
const STREAM_BUFFER_BYTES: usize = 512;
/// tonic's default: encoded messages are handed to the connection once this much is buffered.
const YIELD_THRESHOLD: usize = 32 * 1024;

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

/// Protobuf through prost like tonic's default codec, but encoding [`StreamItem`]s, with
/// [`STREAM_BUFFER_BYTES`] buffers.
pub(super) struct StreamCodec<T, U>(PhantomData<fn() -> (T, U)>);

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

pub(super) struct StreamEncoder<T>(PhantomData<fn(T)>);

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
