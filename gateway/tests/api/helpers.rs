use std::{net::SocketAddr, time::Duration};

use http::Uri;
use proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    chat::v1 as chat_pb,
};
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tonic::{Request, transport::Channel};

use crate::chat_double::{ChatDouble, spawn_chat_double};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub server: JoinHandle<anyhow::Result<()>>,
}

/// The gateway alone; its upstreams point at a port where nothing listens.
pub async fn spawn_app() -> TestApp {
    let nowhere: Uri = "http://127.0.0.1:1".parse().unwrap();
    spawn_gateway(gateway::Config::for_tests(upstreams(
        &nowhere, &nowhere, &nowhere,
    )))
    .await
}

pub fn upstreams(auth: &Uri, chat: &Uri, group: &Uri) -> gateway::UpstreamSettings {
    gateway::UpstreamSettings {
        auth: auth.clone().into(),
        chat: chat.clone().into(),
        group: group.clone().into(),
        resolve_interval: Duration::from_secs(10),
        hosts_file: None,
        connect_timeout: Duration::from_millis(500),
        connections_per_address: 2,
    }
}

pub async fn spawn_gateway(config: gateway::Config) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let server = tokio::spawn(gateway::run(config, listener, shutdown));
    TestApp {
        addr,
        stop: Some(stop),
        server,
    }
}

/// Real auth and group services, the chat double, and the gateway in front of them.
pub struct Stack {
    pub gateway: SocketAddr,
    pub channel: Channel,
    pub auth: AuthServiceClient<Channel>,
    pub chat: ChatDouble,
    _gateway: TestApp,
}

pub async fn spawn_stack(db: PgPool) -> Stack {
    spawn_stack_with(db, auth::Config::for_tests(), |config| config).await
}

pub async fn spawn_stack_with(
    db: PgPool,
    auth_config: auth::Config,
    adjust: impl FnOnce(gateway::Config) -> gateway::Config,
) -> Stack {
    let auth_addr = spawn_service(|listener| {
        auth::run(auth_config, db.clone(), listener, std::future::pending())
    })
    .await;
    let auth_url = format!("http://{auth_addr}");
    let group_addr = spawn_service(|listener| {
        group::run(
            group::Config::for_tests(&auth_url),
            db.clone(),
            listener,
            std::future::pending(),
        )
    })
    .await;
    let (chat_addr, chat) = spawn_chat_double().await;
    let uri = |addr: SocketAddr| -> Uri { format!("http://{addr}").parse().unwrap() };
    let config = adjust(gateway::Config::for_tests(upstreams(
        &uri(auth_addr),
        &uri(chat_addr),
        &uri(group_addr),
    )));
    let app = spawn_gateway(config).await;
    let channel = testkit::connect(app.addr).await;
    wait_until_ready(app.addr).await;
    Stack {
        gateway: app.addr,
        auth: AuthServiceClient::new(channel.clone()),
        channel,
        chat,
        _gateway: app,
    }
}

async fn spawn_service<F, Fut>(run: F) -> SocketAddr
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(run(listener));
    addr
}

/// The gateway is ready once it has fetched auth's key set.
async fn wait_until_ready(gateway: SocketAddr) {
    for _ in 0..200 {
        if http1_request(gateway, "GET /readyz HTTP/1.1", b"")
            .await
            .starts_with(b"HTTP/1.1 200")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway did not become ready");
}

impl Stack {
    /// Signals the gateway to shut down (it stops accepting and drains).
    pub fn stop_gateway(&mut self) {
        if let Some(stop) = self._gateway.stop.take() {
            let _ = stop.send(());
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

pub fn with_token<T>(message: T, access_token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {access_token}").parse().unwrap(),
    );
    request
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
