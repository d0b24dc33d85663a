use std::{sync::Arc, time::Duration};

use common::metrics::{Metrics, register_pool, served_method_paths, spawn_server};
use sqlx::PgPool;
use testkit::{metric_sum, scrape_metrics};
use tokio::net::TcpListener;
use tonic::service::Routes;

#[sqlx::test(migrations = false)]
async fn a_served_call_and_the_database_pool_show_on_the_metrics_port(db: PgPool) {
    let mut metrics = Metrics::new(served_method_paths(&[]));
    register_pool(metrics.registry_mut(), db.clone());
    let metrics = Arc::new(metrics);
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let _metrics_server = spawn_server(Some(metrics_listener), metrics.clone()).unwrap();
    let (_reporter, health_service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(common::grpc::serve(
        Routes::new(health_service),
        &[],
        metrics,
        listener,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let check = [
        r#"service="grpc.health.v1.Health""#,
        r#"method="Check""#,
        r#"code="OK""#,
    ];
    let before = scrape_metrics(metrics_addr).await;
    let _connection = db.acquire().await.unwrap();

    testkit::health_status(testkit::connect(addr).await, "").await;
    let after = scrape_metrics(metrics_addr).await;

    assert_eq!(
        metric_sum(&before, "grpc_server_handled_total", &check),
        0.0
    );
    assert_eq!(metric_sum(&after, "grpc_server_handled_total", &check), 1.0);
    assert!(
        metric_sum(&after, "db_pool_connections_in_use", &[]) >= 1.0,
        "{after}"
    );
    assert!(
        metric_sum(&after, "db_pool_max_connections", &[]) >= 1.0,
        "{after}"
    );
    // The acquire probe times a wait at once, then every second; with our connection taken, it
    // waits for (or opens) another one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = scrape_metrics(metrics_addr).await;
        if metric_sum(&scrape, "db_pool_acquire_seconds_count", &[]) >= 1.0 {
            assert!(metric_sum(&scrape, "db_pool_acquire_seconds_sum", &[]) > 0.0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acquire timed: {scrape}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
