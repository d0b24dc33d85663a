//! The PostgreSQL pool and the embedded migrations.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::config::DatabaseSettings;

/// Every migration in `migrations/`, embedded at build time. Run by the `migrate` binary (and by
/// `#[sqlx::test(migrations = "../migrations")]` in tests), never by the services themselves: on
/// Kubernetes migrations run once, as a Job before an upgrade, not in every replica.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool. It connects lazily, so a service starts (and reports NOT_SERVING on health)
/// even while the database is briefly unreachable; calls fail with a clear error meanwhile.
///
/// # Errors
/// When the URL cannot be parsed.
pub fn connect_lazy(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(settings.url.expose_secret())
}
