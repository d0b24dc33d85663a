use std::net::SocketAddr;

use proto::auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: SocketAddr,
    pub channel: Channel,
    pub auth: AuthServiceClient<Channel>,
}

/// The real auth service (for tokens) and the group service on loopback ports.
pub async fn spawn_app(db: PgPool) -> TestApp {
    let auth_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_addr = auth_listener.local_addr().unwrap();
    tokio::spawn(auth::run(
        auth::Config::for_tests(),
        db.clone(),
        auth_listener,
        std::future::pending(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = group::Config::for_tests(&format!("http://{auth_addr}"));
    tokio::spawn(group::run(config, db, listener, std::future::pending()));
    let channel = testkit::connect(addr).await; // already bound: no sleep
    let auth = AuthServiceClient::new(testkit::connect(auth_addr).await);
    TestApp {
        addr,
        channel,
        auth,
    }
}

impl TestApp {
    /// Registers and logs in `username` with auth; returns the access token.
    pub async fn access_token(&self, username: &str) -> String {
        let mut auth = self.auth.clone();
        let credentials = || (username.to_owned(), "correct horse battery".to_owned());
        let (username, password) = credentials();
        auth.register(auth_pb::RegisterRequest {
            username: username.clone(),
            password: password.clone(),
            display_name: String::new(),
        })
        .await
        .unwrap();
        let login = auth
            .login(auth_pb::LoginRequest {
                username,
                password,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        login.tokens.unwrap().access_token
    }
}
