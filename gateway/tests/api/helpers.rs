use std::net::SocketAddr;

use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1 as chat_pb,
};
use sqlx::PgPool;
use testkit::stack::{NOWHERE, Runtime, Server, start_gateway, uri};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;

use crate::chat_double::{ChatDouble, spawn_chat_double};

pub use testkit::{PASSWORD, stack::upstreams, with_token};

/// The gateway alone (stopped with [`Server::stop`]).
pub type TestApp = Server;

/// The gateway alone; its upstreams point at a port where nothing listens.
pub async fn spawn_app() -> TestApp {
    let nowhere = uri(NOWHERE);
    spawn_gateway(gateway::Config::for_tests(upstreams(
        &nowhere, &nowhere, &nowhere,
    )))
    .await
}

/// The gateway with `config`, once it reports SERVING.
pub async fn spawn_gateway(config: gateway::Config) -> TestApp {
    start_gateway(config, Runtime::Shared, None).await.unwrap()
}

/// Real auth and group services, the chat double, and the gateway in front of them.
pub struct Stack {
    pub gateway: SocketAddr,
    pub channel: Channel,
    pub auth: AuthServiceClient<Channel>,
    pub chat: ChatDouble,
    _services: testkit::stack::Stack,
    gateway_server: Option<Server>,
}

pub async fn spawn_stack(db: PgPool) -> Stack {
    spawn_stack_with(db, auth::Config::for_tests(), |config| config).await
}

/// As [`spawn_stack`], with this auth configuration and the gateway's adjusted by `adjust`
/// (upstreams included).
pub async fn spawn_stack_with(
    db: PgPool,
    auth_config: auth::Config,
    adjust: impl FnOnce(gateway::Config) -> gateway::Config,
) -> Stack {
    let services = testkit::stack::Stack::builder()
        .auth_with(|config| *config = auth_config)
        .group()
        .start(&db)
        .await
        .unwrap();
    let (chat_addr, chat) = spawn_chat_double().await;
    let config = adjust(gateway::Config::for_tests(upstreams(
        &uri(services.auth().addr),
        &uri(chat_addr),
        &uri(services.group().addr),
    )));
    let gateway = start_gateway(config, Runtime::Shared, services.probe_token())
        .await
        .unwrap();
    let channel = testkit::connect(gateway.addr).await;
    Stack {
        gateway: gateway.addr,
        auth: AuthServiceClient::new(channel.clone()),
        channel,
        chat,
        _services: services,
        gateway_server: Some(gateway),
    }
}

impl Stack {
    /// Signals the gateway to shut down (it stops accepting and drains).
    pub fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway_server.take() {
            tokio::spawn(gateway.stop());
        }
    }

    /// Registers and logs in `username` through the gateway; returns the access token.
    pub async fn access_token(&self, username: &str) -> String {
        let mut auth = self.auth.clone();
        auth.register(auth_pb::RegisterRequest {
            username: username.into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await
        .unwrap();
        login(&self.auth, username).await
    }
}

/// Logs `username` (registered with [`PASSWORD`]) in through `auth`, a new session each time;
/// returns its access token.
pub async fn login(auth: &AuthServiceClient<Channel>, username: &str) -> String {
    auth.clone()
        .login(auth_pb::LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

/// A Subscribe from the start of each of `conversations`.
pub fn subscribe_request(conversations: &[&str]) -> chat_pb::SubscribeRequest {
    chat_pb::SubscribeRequest {
        positions: conversations
            .iter()
            .map(|id| chat_pb::ConversationPosition {
                conversation_id: (*id).into(),
                sequence: 0,
            })
            .collect(),
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the raw response (head and body).
pub async fn http1_request(addr: SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    response
}
