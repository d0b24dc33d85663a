use std::net::SocketAddr;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: SocketAddr,
    pub channel: Channel,
}

pub async fn spawn_app(db: PgPool) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(auth::run(
        auth::Config::for_tests(),
        db,
        listener,
        std::future::pending(),
    ));
    let channel = testkit::connect(addr).await; // already bound: no sleep
    TestApp { addr, channel }
}
