use std::{net::SocketAddr, time::Duration};

use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1::{self as pb, chat_service_client::ChatServiceClient},
};
use sqlx::PgPool;
use testkit::{
    PASSWORD,
    stack::{DEVICE_KEYS, Launch, Runtime, Stack},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

/// Key sets of `testkit::stack::DEVICE_KEYS` for the devices tests create, in order.
const KEY_ORDER: [usize; 5] = [0, 2, 4, 1, 5];

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where the chat replica serves `/metrics`.
    pub metrics: SocketAddr,
    pub auth_addr: SocketAddr,
    /// Where auth serves `/metrics`.
    pub auth_metrics: SocketAddr,
    pub group_addr: SocketAddr,
    /// Where group serves `/metrics`.
    pub group_metrics: SocketAddr,
    pub channel: Channel,
    pub auth: AuthServiceClient<Channel>,
    pub stack: Stack,
    keys_used: std::sync::atomic::AtomicUsize,
}

/// The real auth service (for tokens and devices), group and the chat service on loopback ports.
pub async fn spawn_app(db: PgPool) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// As [`spawn_app`], with chat's configuration adjusted by `configure`.
pub async fn spawn_app_with(db: PgPool, configure: impl FnOnce(&mut chat::Config)) -> TestApp {
    spawn_app_with_auth(db, |_| {}, configure).await
}

/// As [`spawn_app`], with auth's and chat's configurations adjusted.
pub async fn spawn_app_with_auth(
    db: PgPool,
    configure_auth: impl FnOnce(&mut auth::Config),
    configure: impl FnOnce(&mut chat::Config),
) -> TestApp {
    let stack = Stack::builder()
        .auth_with(configure_auth)
        .group()
        .chat_with(configure)
        .metrics()
        .start(db)
        .await
        .unwrap();
    let metrics = |server: &testkit::stack::Server| server.metrics.unwrap();
    TestApp {
        addr: stack.chat().addr,
        metrics: metrics(stack.chat()),
        auth_addr: stack.auth().addr,
        auth_metrics: metrics(stack.auth()),
        group_addr: stack.group().addr,
        group_metrics: metrics(stack.group()),
        channel: testkit::connect(stack.chat().addr).await,
        auth: AuthServiceClient::new(testkit::connect(stack.auth().addr).await),
        stack,
        keys_used: Default::default(),
    }
}

/// Two chat replicas on `db` woken by `bus`: the app's (replica A) and another (replica B), whose
/// address is returned. On NATS, a three-node cluster, also returned (it stops when dropped),
/// with replica A given node 0 and replica B node 1: wake-ups cross the cluster's routes.
pub async fn spawn_two_replicas(
    db: PgPool,
    bus: crate::nats::BusKind,
) -> (TestApp, SocketAddr, Option<crate::nats::NatsCluster>) {
    let cluster = match bus {
        crate::nats::BusKind::Postgres => None,
        crate::nats::BusKind::Nats => Some(crate::nats::NatsCluster::start(3).await),
    };
    let bus_via = |node| {
        cluster
            .as_ref()
            .map_or(chat::BusSettings::Postgres, |cluster| cluster.bus_via(node))
    };
    let (bus_a, bus_b) = (bus_via(0), bus_via(1));
    let app = spawn_app_with(db.clone(), |config| config.bus = bus_a).await;
    let replica_b = spawn_chat(
        &db,
        app.auth_addr,
        app.group_addr,
        |config| config.bus = bus_b,
        std::future::pending(),
    )
    .await;
    (app, replica_b, cluster)
}

/// Starts one chat replica on `db`, stopping when `shutdown` resolves.
pub async fn spawn_chat(
    db: &PgPool,
    auth_addr: SocketAddr,
    group_addr: SocketAddr,
    configure: impl FnOnce(&mut chat::Config),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> SocketAddr {
    spawn_chat_with_metrics(db, auth_addr, group_addr, configure, shutdown)
        .await
        .0
}

/// As [`spawn_chat`], also serving `/metrics`: the replica's address and its metrics port.
pub async fn spawn_chat_with_metrics(
    db: &PgPool,
    auth_addr: SocketAddr,
    group_addr: SocketAddr,
    configure: impl FnOnce(&mut chat::Config),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, SocketAddr) {
    let mut config = chat::Config::for_tests(&format!("http://{auth_addr}"));
    config.group_url = format!("http://{group_addr}");
    configure(&mut config);
    let launch = Launch {
        database: db.into(),
        runtime: Runtime::Shared,
        metrics: true,
        pool_size: None,
    };
    let replica = testkit::stack::start_chat(config, &launch, None)
        .await
        .unwrap();
    let addrs = (replica.addr, replica.metrics.unwrap());
    tokio::spawn(async move {
        shutdown.await;
        let _ = replica.stop().await;
    });
    addrs
}

impl TestApp {
    /// Registers and logs in `username` with auth; returns the access token.
    pub async fn access_token(&self, username: &str) -> String {
        self.register(username).await;
        self.login(username).await.tokens.unwrap().access_token
    }

    /// A new user with one keyed device, talking to this app's chat replica.
    pub async fn user(&self, username: &str) -> TestDevice {
        self.register(username).await;
        self.device(username).await
    }

    /// A new keyed device of an existing user.
    pub async fn device(&self, username: &str) -> TestDevice {
        let login = self.login(username).await;
        let token = login.tokens.unwrap().access_token;
        let used = self
            .keys_used
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key_set = KEY_ORDER[used % KEY_ORDER.len()];
        let upload = with_token(
            auth_pb::UploadDeviceKeysRequest {
                keys: Some(testkit::stack::public_device_keys(key_set)),
            },
            &token,
        );
        self.auth.clone().upload_device_keys(upload).await.unwrap();
        TestDevice {
            user_id: login.user.unwrap().user_id,
            device_id: login.device.unwrap().device_id,
            token,
            keys: DEVICE_KEYS[key_set].clone(),
            chat: ChatServiceClient::new(self.channel.clone()),
            auth: self.auth.clone(),
        }
    }

    async fn register(&self, username: &str) {
        self.auth
            .clone()
            .register(auth_pb::RegisterRequest {
                username: username.to_owned(),
                password: PASSWORD.to_owned(),
                display_name: String::new(),
            })
            .await
            .unwrap();
    }

    async fn login(&self, username: &str) -> auth_pb::LoginResponse {
        self.auth
            .clone()
            .login(auth_pb::LoginRequest {
                username: username.to_owned(),
                password: PASSWORD.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }
}

/// One logged-in device with keys, and a chat client.
#[derive(Clone)]
pub struct TestDevice {
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    pub keys: e2ee::DeviceKeys,
    pub chat: ChatServiceClient<Channel>,
    pub auth: AuthServiceClient<Channel>,
}

pub use testkit::with_token;

impl TestDevice {
    /// The same device talking to another chat replica.
    pub async fn on_replica(&self, addr: SocketAddr) -> TestDevice {
        TestDevice {
            chat: ChatServiceClient::new(testkit::connect(addr).await),
            ..self.clone()
        }
    }

    /// The same device on a connection with small HTTP/2 flow-control windows (64 KiB), so that
    /// a client that does not read soon stops the server from writing.
    pub async fn with_small_windows(&self, addr: SocketAddr) -> TestDevice {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(65_535))
            .connect()
            .await
            .unwrap();
        TestDevice {
            chat: ChatServiceClient::new(channel),
            ..self.clone()
        }
    }

    pub fn request<T>(&self, message: T) -> Request<T> {
        with_token(message, &self.token)
    }

    pub async fn open_direct(&self, peer: &TestDevice) -> pb::Conversation {
        let request = self.request(pb::OpenDirectConversationRequest {
            peer_user_id: peer.user_id.clone(),
        });
        let response = self.chat.clone().open_direct_conversation(request).await;
        response.unwrap().into_inner().conversation.unwrap()
    }

    pub async fn list_conversations(&self) -> Vec<pb::Conversation> {
        let request = self.request(pb::ListConversationsRequest::default());
        let response = self.chat.clone().list_conversations(request).await;
        response.unwrap().into_inner().conversations
    }

    /// Every current device of `users` (with auth's keys), except this device.
    pub async fn recipients(&self, users: &[&str]) -> Vec<e2ee::RecipientDevice> {
        let request = self.request(auth_pb::LookupUsersRequest {
            user_ids: users.iter().map(|user| (*user).to_owned()).collect(),
            usernames: Vec::new(),
        });
        let found = self.auth.clone().lookup_users(request).await.unwrap();
        found
            .into_inner()
            .users
            .into_iter()
            .flat_map(|user| user.devices)
            .filter(|device| device.device_id != self.device_id)
            .map(|device| e2ee::RecipientDevice {
                device_id: device.device_id,
                encryption_spki: device.keys.unwrap().encryption_public_key,
            })
            .collect()
    }

    /// An envelope of `text` for exactly `recipients`.
    pub fn seal(
        &self,
        conversation_id: &str,
        client_message_id: &str,
        recipients: &[e2ee::RecipientDevice],
        text: &str,
    ) -> pb::Envelope {
        let sender = e2ee::Sender {
            user_id: &self.user_id,
            device_id: &self.device_id,
            keys: &self.keys,
        };
        // The server does not follow chains: every test envelope may be a first one.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        e2ee::seal(
            &sender,
            conversation_id,
            client_message_id,
            recipients,
            &e2ee::ChainPosition::first(now_ms),
            text.as_bytes(),
        )
        .unwrap()
        .into()
    }

    /// Signs `envelope` again with this device's key, after the test changed it (what a
    /// dishonest sender can do), over the digest the server will compute.
    pub fn resign(&self, envelope: pb::Envelope) -> pb::Envelope {
        use ed25519_dalek::{Signer, pkcs8::DecodePrivateKey};
        let mut envelope = e2ee::Envelope::from(envelope);
        let digest = envelope.recipients_digest().unwrap();
        let signed = e2ee::signed_message(&envelope.header(&digest), &envelope.ciphertext).unwrap();
        let key =
            ed25519_dalek::SigningKey::from_pkcs8_der(&self.keys.signing_pkcs8_der().unwrap())
                .unwrap();
        envelope.signature = key.sign(&signed).to_bytes().to_vec();
        envelope.into()
    }

    /// Seals `text` for every current device of the conversation's participants and sends it.
    pub async fn send_text(
        &self,
        conversation: &pb::Conversation,
        text: &str,
    ) -> Result<pb::SendMessageResponse, Status> {
        let envelope = self.envelope_for(conversation, text).await;
        self.send(envelope).await
    }

    /// The envelope [`TestDevice::send_text`] sends.
    pub async fn envelope_for(&self, conversation: &pb::Conversation, text: &str) -> pb::Envelope {
        let recipients = self
            .recipients(&[&self.user_id, &conversation.peer_user_id])
            .await;
        let client_message_id = Uuid::new_v4().to_string();
        self.seal(
            &conversation.conversation_id,
            &client_message_id,
            &recipients,
            text,
        )
    }

    pub async fn send(&self, envelope: pb::Envelope) -> Result<pb::SendMessageResponse, Status> {
        let request = self.request(pb::SendMessageRequest {
            envelope: Some(envelope),
        });
        let response = self.chat.clone().send_message(request).await;
        response.map(tonic::Response::into_inner)
    }

    /// Opens a delivered message sent by `sender`; returns the text.
    pub fn open(&self, message: &pb::Message, sender: &TestDevice) -> String {
        let opened = self.try_open(message, sender).unwrap();
        String::from_utf8(opened.plaintext).unwrap()
    }

    /// Opens a delivered message sent by `sender`.
    pub fn try_open(
        &self,
        message: &pb::Message,
        sender: &TestDevice,
    ) -> Result<e2ee::Opened, e2ee::Error> {
        let received = e2ee::ReceivedMessage::try_from(message.clone())?;
        e2ee::open(
            &received,
            &self.device_id,
            &self.keys,
            &sender.keys.public_keys().signing_public_key,
        )
    }

    /// Subscribes, retrying while the server answers UNAVAILABLE (a replica or gateway that has
    /// not fetched auth's token keys yet).
    pub async fn subscribe_when_ready(&self) -> tonic::Streaming<pb::SubscribeResponse> {
        loop {
            let request = self.request(pb::SubscribeRequest::default());
            match self.chat.clone().subscribe(request).await {
                Ok(stream) => return stream.into_inner(),
                Err(status) if status.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
    }

    pub async fn subscribe(
        &self,
        positions: &[(&str, u64)],
    ) -> tonic::Streaming<pb::SubscribeResponse> {
        let request = self.request(pb::SubscribeRequest {
            positions: positions
                .iter()
                .map(|(conversation_id, sequence)| pb::ConversationPosition {
                    conversation_id: (*conversation_id).to_owned(),
                    sequence: *sequence,
                })
                .collect(),
        });
        self.chat
            .clone()
            .subscribe(request)
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn list_messages(
        &self,
        conversation_id: &str,
        direction: pb::Direction,
        from_sequence: u64,
        page_size: u32,
    ) -> Result<pb::ListMessagesResponse, Status> {
        let request = self.request(pb::ListMessagesRequest {
            conversation_id: conversation_id.to_owned(),
            direction: direction as i32,
            from_sequence,
            page_size,
            include_all_recipients: false,
        });
        let response = self.chat.clone().list_messages(request).await;
        response.map(tonic::Response::into_inner)
    }

    pub async fn acknowledge(
        &self,
        conversation_id: &str,
        delivered_sequence: u64,
        read_sequence: u64,
    ) -> Result<pb::AcknowledgeResponse, Status> {
        let request = self.request(pb::AcknowledgeRequest {
            ack: Some(pb::Acknowledgement {
                conversation_id: conversation_id.to_owned(),
                delivered_sequence,
                read_sequence,
            }),
        });
        let response = self.chat.clone().acknowledge(request).await;
        response.map(tonic::Response::into_inner)
    }
}

/// The next event of a Subscribe stream that is not a heartbeat, within 5 s.
pub async fn next_event(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
) -> pb::stream_event::Event {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("an event within 5 s")
            .expect("the stream is healthy")
            .expect("the stream is open");
        match item.event.and_then(|event| event.event) {
            Some(pb::stream_event::Event::Heartbeat(_)) | None => {}
            Some(event) => return event,
        }
    }
}

/// The next message of a Subscribe stream, skipping other events.
pub async fn next_message(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> pb::Message {
    loop {
        if let pb::stream_event::Event::Message(message) = next_event(stream).await {
            return message;
        }
    }
}

/// Waits for `caught_up`, returning the messages replayed before it.
pub async fn replay(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> Vec<pb::Message> {
    let mut messages = Vec::new();
    loop {
        match next_event(stream).await {
            pb::stream_event::Event::Message(message) => messages.push(message),
            pb::stream_event::Event::CaughtUp(_) => return messages,
            _ => {}
        }
    }
}

/// The `chat.v1.DeviceListMismatch` detail of a status.
pub fn device_list_mismatch(status: &Status) -> pb::DeviceListMismatch {
    use prost::Message as _;
    let details = tonic_types::pb::Status::decode(status.details()).unwrap();
    let detail = details
        .details
        .iter()
        .find(|any| any.type_url.ends_with("/chat.v1.DeviceListMismatch"))
        .expect("a DeviceListMismatch detail");
    pb::DeviceListMismatch::decode(detail.value.as_slice()).unwrap()
}

/// The `google.rpc.ErrorInfo` reason of a status.
pub fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// A client of OpenStream: the requests it sends and the responses it reads.
pub struct BidiStream {
    pub requests: mpsc::Sender<pb::OpenStreamRequest>,
    pub responses: tonic::Streaming<pb::OpenStreamResponse>,
}

impl BidiStream {
    /// Opens an OpenStream whose first request is `start` from `positions`.
    pub async fn open(device: &TestDevice, positions: Vec<pb::ConversationPosition>) -> Self {
        let (requests, outgoing) = mpsc::channel(16);
        requests
            .send(pb::OpenStreamRequest {
                request: Some(pb::open_stream_request::Request::Start(pb::StartStream {
                    positions,
                })),
            })
            .await
            .unwrap();
        let responses = device
            .chat
            .clone()
            .open_stream(device.request(ReceiverStream::new(outgoing)))
            .await
            .unwrap()
            .into_inner();
        Self {
            requests,
            responses,
        }
    }

    /// Sends `envelope` as `request_id`.
    pub async fn send(&self, request_id: &str, envelope: pb::Envelope) {
        let send = pb::StreamSend {
            request_id: request_id.to_owned(),
            envelope: Some(envelope),
        };
        self.requests
            .send(pb::OpenStreamRequest {
                request: Some(pb::open_stream_request::Request::Send(send)),
            })
            .await
            .unwrap();
    }

    /// The next response but heartbeats, within 5 s.
    pub async fn next(&mut self) -> pb::open_stream_response::Response {
        loop {
            let response = tokio::time::timeout(Duration::from_secs(5), self.responses.message())
                .await
                .expect("a response within 5 s")
                .unwrap()
                .expect("the stream is open");
            match response.response.unwrap() {
                pb::open_stream_response::Response::Event(pb::StreamEvent {
                    event: Some(pb::stream_event::Event::Heartbeat(_)),
                }) => {}
                other => return other,
            }
        }
    }

    /// The next delivered message.
    pub async fn next_message(&mut self) -> pb::Message {
        loop {
            if let pb::open_stream_response::Response::Event(pb::StreamEvent {
                event: Some(pb::stream_event::Event::Message(message)),
            }) = self.next().await
            {
                return message;
            }
        }
    }
}
