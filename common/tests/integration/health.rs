use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn a_service_whose_database_is_unreachable_reports_not_serving() {
    // Nothing listens on port 1 of loopback, so every connection attempt is refused at once.
    let unreachable = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    common::health::track_database(reporter, unreachable, &["test.v1.TestService"]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(common::grpc::serve(
        Routes::new(health_service),
        &[],
        std::sync::Arc::new(common::metrics::Metrics::new(Vec::<String>::new())),
        listener,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let channel = testkit::connect(addr).await;

    let whole_server = testkit::health_status(channel.clone(), "").await;
    let service = testkit::health_status(channel, "test.v1.TestService").await;

    assert_eq!(whole_server, ServingStatus::NotServing);
    assert_eq!(service, ServingStatus::NotServing);
}
