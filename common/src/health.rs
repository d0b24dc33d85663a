//! gRPC health that tells the truth: a service reports SERVING only while its database answers.

use std::time::Duration;

use sqlx::PgPool;
use tonic_health::{ServingStatus, server::HealthReporter};

/// How often the database is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long one probe may take before the database counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes `db` now and then every few seconds in a background task, and sets the health of
/// `services` and of the whole server (the empty service name, which Kubernetes probes ask for) to
/// SERVING while it answers and NOT_SERVING while it does not. Returns once the first probe is
/// done, so a freshly started service already reports its real state.
pub async fn track_database(
    reporter: HealthReporter,
    db: PgPool,
    services: &'static [&'static str],
) {
    let probe = move || {
        let (reporter, db) = (reporter.clone(), db.clone());
        async move {
            let reachable =
                tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("select 1").execute(&db))
                    .await
                    .is_ok_and(|result| result.is_ok());
            let status = if reachable {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in services.iter().copied().chain([""]) {
                reporter.set_service_status(service, status).await;
            }
            reachable
        }
    };
    let mut was_reachable = probe().await;
    if !was_reachable {
        tracing::warn!("database unreachable; reporting NOT_SERVING until it answers");
    }
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(PROBE_INTERVAL);
        interval.tick().await;
        loop {
            interval.tick().await;
            let reachable = probe().await;
            if reachable != was_reachable {
                if reachable {
                    tracing::info!("database reachable again; SERVING");
                } else {
                    tracing::error!("database unreachable; NOT_SERVING");
                }
                was_reachable = reachable;
            }
        }
    });
}
