//! A scripted stand-in for the chat service, so the proxy's streaming paths can be tested before
//! the real chat service streams anything. It records what reached it.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::chat::v1::{self as pb, chat_service_server::ChatService};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};

/// What the double saw.
#[derive(Default)]
pub struct Seen {
    /// Request metadata of every call.
    pub metadata: Vec<MetadataMap>,
    /// How many Subscribe streams were dropped by the other side.
    pub cancelled_streams: usize,
}

#[derive(Clone, Default)]
pub struct ChatDouble {
    pub seen: Arc<Mutex<Seen>>,
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn typing(conversation_id: &str) -> pb::StreamEvent {
    pb::StreamEvent {
        event: Some(pb::stream_event::Event::Typing(pb::TypingIndicator {
            conversation_id: conversation_id.into(),
            user_id: "double".into(),
            device_id: "double".into(),
        })),
    }
}

/// Counts a stream as cancelled when its sender notices the receiver is gone.
struct CancelGuard(Arc<Mutex<Seen>>);

impl ChatDouble {
    fn record<T>(&self, request: &Request<T>) {
        self.seen
            .lock()
            .unwrap()
            .metadata
            .push(request.metadata().clone());
    }
}

#[tonic::async_trait]
impl ChatService for ChatDouble {
    type OpenStreamStream = EventStream<pb::OpenStreamResponse>;
    type SubscribeStream = EventStream<pb::SubscribeResponse>;

    /// Echoes the conversation id back as the message id; conversation "fail" answers
    /// FAILED_PRECONDITION with error details, "huge" the same with details of about 420 KB (as
    /// a mismatch over 10,000 devices once did); conversation "slow" takes 5 s.
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        self.record(&request);
        let conversation_id = request
            .into_inner()
            .envelope
            .unwrap_or_default()
            .conversation_id;
        match conversation_id.as_str() {
            "fail" => {
                let details = ErrorDetails::with_error_info("DEVICE_LIST_MISMATCH", "chat.v1", []);
                Err(Status::with_error_details(
                    Code::FailedPrecondition,
                    "devices changed",
                    details,
                ))
            }
            "huge" => Err(huge_status()),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Response::new(pb::SendMessageResponse::default()))
            }
            _ => Ok(Response::new(pb::SendMessageResponse {
                message_id: conversation_id,
                sequence: 1,
                ..Default::default()
            })),
        }
    }

    /// Streams `positions.len()` typing events (one per position, echoing its conversation id),
    /// then stays open until the client goes away, which it records. A first conversation
    /// "refuse" is refused at once (a trailers-only RESOURCE_EXHAUSTED with an `ErrorInfo`, as
    /// chat refuses a 17th stream); after a conversation "end" the stream ends with
    /// ABORTED and an `ErrorInfo` in trailers, after "huge" with FAILED_PRECONDITION and 420 KB
    /// of details.
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.record(&request);
        let positions = request.into_inner().positions;
        if positions.first().map(|p| p.conversation_id.as_str()) == Some("refuse") {
            let details = ErrorDetails::with_error_info("TOO_MANY_STREAMS", "chat.v1", []);
            return Err(Status::with_error_details(
                Code::ResourceExhausted,
                "too many open streams for this device",
                details,
            ));
        }
        let (events, receiver) = mpsc::channel(16);
        let guard = CancelGuard(self.seen.clone());
        tokio::spawn(async move {
            for position in positions {
                let event = pb::SubscribeResponse {
                    event: Some(typing(&position.conversation_id)),
                };
                if events.send(Ok(event)).await.is_err() {
                    break;
                }
                let ending = match position.conversation_id.as_str() {
                    "end" => Some(Status::with_error_details(
                        Code::Aborted,
                        "the stream ends here",
                        ErrorDetails::with_error_info("STREAM_ENDED", "chat.v1", []),
                    )),
                    "huge" => Some(huge_status()),
                    _ => None,
                };
                if let Some(status) = ending {
                    let _ = events.send(Err(status)).await;
                    return;
                }
            }
            events.closed().await;
            drop(guard);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    /// Reads the first request before answering, as chat does (send `start` first), then
    /// answers every `typing` request with a typing event for the same conversation. A stream
    /// whose first request is an `ack` is refused with INVALID_ARGUMENT and an `ErrorInfo`, as
    /// chat refuses it (trailers-only).
    async fn open_stream(
        &self,
        request: Request<Streaming<pb::OpenStreamRequest>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        self.record(&request);
        let mut incoming = request.into_inner();
        let first = incoming.next().await.transpose()?;
        let first = match first.and_then(|message| message.request) {
            Some(pb::open_stream_request::Request::Ack(_)) => {
                return Err(Status::with_error_details(
                    Code::InvalidArgument,
                    "the first request must be start",
                    ErrorDetails::with_error_info("FIRST_REQUEST_NOT_START", "chat.v1", []),
                ));
            }
            other => other,
        };
        let mut incoming = tokio_stream::iter(first.map(|request| {
            Ok(pb::OpenStreamRequest {
                request: Some(request),
            })
        }))
        .chain(incoming);
        let outgoing = async_stream_from(
            move |sender: mpsc::Sender<Result<pb::OpenStreamResponse, Status>>| async move {
                while let Some(Ok(message)) = incoming.next().await {
                    if let Some(pb::open_stream_request::Request::Typing(typing_in)) =
                        message.request
                    {
                        let event = pb::OpenStreamResponse {
                            response: Some(pb::open_stream_response::Response::Event(typing(
                                &typing_in.conversation_id,
                            ))),
                        };
                        if sender.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
            },
        );
        Ok(Response::new(outgoing))
    }

    async fn open_direct_conversation(
        &self,
        _: Request<pb::OpenDirectConversationRequest>,
    ) -> Result<Response<pb::OpenDirectConversationResponse>, Status> {
        Err(Status::unimplemented("double"))
    }

    async fn list_conversations(
        &self,
        _: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        Err(Status::unimplemented("double"))
    }

    async fn list_messages(
        &self,
        _: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        Err(Status::unimplemented("double"))
    }

    async fn forward_keys(
        &self,
        _: Request<pb::ForwardKeysRequest>,
    ) -> Result<Response<pb::ForwardKeysResponse>, Status> {
        // Answered, so that a call the gateway let through is told from one it refused.
        Ok(Response::new(pb::ForwardKeysResponse::default()))
    }

    async fn acknowledge(
        &self,
        _: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        Err(Status::unimplemented("double"))
    }

    async fn send_typing(
        &self,
        _: Request<pb::SendTypingRequest>,
    ) -> Result<Response<pb::SendTypingResponse>, Status> {
        Err(Status::unimplemented("double"))
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.lock().unwrap().cancelled_streams += 1;
    }
}

/// A status whose details take about 420 KB (base64 in `grpc-status-details-bin`).
pub fn huge_status() -> Status {
    let devices: Vec<String> = (0..10_000)
        .map(|index| format!("{:032x}", u128::from(index as u32)))
        .collect();
    Status::with_error_details(
        Code::FailedPrecondition,
        "devices changed",
        ErrorDetails::with_error_info(
            "DEVICE_LIST_MISMATCH",
            "chat.v1",
            [("devices".to_owned(), devices.join(","))],
        ),
    )
}

fn async_stream_from<T, F, Fut>(produce: F) -> EventStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(produce(sender));
    Box::pin(ReceiverStream::new(receiver))
}

/// Serves the double on a loopback port.
pub async fn spawn_chat_double() -> (SocketAddr, ChatDouble) {
    let double = ChatDouble::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Checks what it receives as every real service does (`common::grpc::serve`), but sends
    // metadata of any size, as a broken upstream could.
    let server = tonic::transport::Server::builder()
        .layer(
            common::grpc_guard::GrpcGuardLayer::new(common::grpc_guard::workspace_schemas())
                .max_response_metadata_bytes(usize::MAX),
        )
        .add_service(pb::chat_service_server::ChatServiceServer::new(
            double.clone(),
        ))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (addr, double)
}
