//! The processes of the target: auth on a runtime of its own in this process, the gateway
//! binary as a child with the suite's settings, and the legitimate user's account.

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::config::SecretSource;
use proto::auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    ALLOWED_ORIGIN, HEADER_READ_TIMEOUT, IDLE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    MAX_CONCURRENT_STREAMS, MAX_MESSAGE_BYTES, SEND_TIMEOUT, UNARY_TIMEOUT,
};

/// The service secret shared by auth and the gateway here.
const SERVICE_SECRET: &str = "abuse-suite-service-secret-not-for-deployments";
use testkit::PASSWORD;

pub fn gateway_env(auth: SocketAddr) -> Vec<(String, String)> {
    let nowhere = "http://127.0.0.1:1".to_owned();
    let secs = |duration: Duration| duration.as_secs().to_string();
    [
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("METRICS_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("LOG", "info".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("SERVICE_SECRET", SERVICE_SECRET.to_owned()),
        ("AUTH_URL", format!("http://{auth}")),
        // Chat and group are not needed by any attack: their calls answer UNAVAILABLE.
        ("CHAT_URL", nowhere.clone()),
        ("GROUP_URL", nowhere),
        ("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN.to_owned()),
        ("MAX_CONCURRENT_STREAMS", MAX_CONCURRENT_STREAMS.to_string()),
        ("MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES.to_string()),
        ("IDLE_TIMEOUT_SECS", secs(IDLE_TIMEOUT)),
        ("KEEPALIVE_INTERVAL_SECS", secs(KEEPALIVE_INTERVAL)),
        ("KEEPALIVE_TIMEOUT_SECS", secs(KEEPALIVE_TIMEOUT)),
        ("UNARY_TIMEOUT_SECS", secs(UNARY_TIMEOUT)),
        ("HEADER_READ_TIMEOUT_SECS", secs(HEADER_READ_TIMEOUT)),
        ("SEND_TIMEOUT_SECS", secs(SEND_TIMEOUT)),
        // The attacks come from loopback, like the legitimate client: login's per-address limit
        // would otherwise count the attackers' calls against it.
        ("LOGIN_RATE_PER_MINUTE", "100000".to_owned()),
        // And the attacks call GetJwks and reflection (public) far faster than its limit allows:
        // the suite checks what happens past the limit, where a client of many addresses gets.
        ("PUBLIC_RATE_PER_SECOND", "100000".to_owned()),
    ]
    .into_iter()
    .map(|(setting, value)| (format!("GATEWAY_{setting}"), value))
    .collect()
}

/// Starts auth on a runtime of its own thread (with a pool of that runtime), so that an attack's
/// tasks on the test's runtime do not slow auth down.
pub fn start_auth(db: PgPool) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let options = db.connect_options().as_ref().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .unwrap();
            let mut config = auth::Config::for_tests();
            config.service_secret = SecretSource::Inline(SERVICE_SECRET.into());
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = auth::run(config, pool, listener, shutdown).await;
        });
    });
    (addr, stop)
}

/// The address the gateway logged as listening on.
pub async fn listening_addr(log: &PathBuf) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        for line in text
            .lines()
            .filter(|line| line.contains("gateway listening"))
        {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(addr) = value["addr"].as_str() {
                return addr.parse().unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not start; its log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_until_ready(addr: SocketAddr) {
    for _ in 0..500 {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await {
            let request = "GET /readyz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n";
            let mut response = Vec::new();
            if tcp.write_all(request.as_bytes()).await.is_ok()
                && tcp.read_to_end(&mut response).await.is_ok()
                && response.starts_with(b"HTTP/1.1 200")
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway did not become ready");
}

pub async fn register_and_log_in(addr: SocketAddr) -> String {
    let mut auth = AuthServiceClient::new(testkit::connect(addr).await);
    auth.register(auth_pb::RegisterRequest {
        username: "legitimate".into(),
        password: PASSWORD.into(),
        display_name: String::new(),
    })
    .await
    .unwrap();
    auth.login(auth_pb::LoginRequest {
        username: "legitimate".into(),
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
