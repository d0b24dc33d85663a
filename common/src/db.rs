//! The PostgreSQL pool, the embedded migrations, and the status a database failure answers.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{Connection, PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::config::DatabaseSettings;

/// Every migration in `migrations/`, embedded at build time. Run by the `migrate` binary (and by
/// `#[sqlx::test(migrations = "../migrations")]` in tests), never by the services themselves: on
/// Kubernetes migrations run once, as a Job before an upgrade, not in every replica.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(10);

/// Opens a pool. It connects lazily, so a service starts (and reports NOT_SERVING on health)
/// even while the database is briefly unreachable; calls fail with a clear error meanwhile.
///
/// sqlx pings every connection it hands out by default: one extra round trip per query outside a
/// transaction, which was a tenth of a login's CPU cost. Only connections idle for a while (the
/// ones a database restart or a dropped idle TCP connection may have broken) are pinged instead.
///
/// # Errors
/// When the URL cannot be parsed.
pub fn connect_lazy(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_WHEN_IDLE_FOR {
                    // A failed ping makes sqlx discard the connection and take another.
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy(settings.url.expose_secret())
}

/// Whether `error` says the database cannot serve the call right now rather than that the call
/// went wrong: no connection came free within the acquire timeout (every one is busy, or the
/// server is unreachable), the connection broke, or the server refused for lack of resources or
/// while starting or shutting down. Callers answer these with UNAVAILABLE, which clients retry,
/// and every other database error with INTERNAL.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // SQLSTATE class 08: connection exception; class 53: insufficient resources (too
            // many connections, out of memory, disk full); 57P01-57P03: shutting down or
            // starting up.
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// What a client is told when [`is_unavailable`] holds.
pub const UNAVAILABLE_MESSAGE: &str = "the database is busy or unreachable; retry shortly";

/// The status a database failure answers, for each crate's one mapping of its `Error::Db`:
/// UNAVAILABLE when [`is_unavailable`] holds, INTERNAL otherwise. The cause is logged (a warning
/// for the first, which clients retry; an error for the second) and never shown to the client.
pub fn status_of(error: &sqlx::Error) -> tonic::Status {
    if is_unavailable(error) {
        tracing::warn!(%error, "database unavailable");
        tonic::Status::unavailable(UNAVAILABLE_MESSAGE)
    } else {
        tracing::error!(%error, "database error");
        tonic::Status::internal("internal error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_or_unreachable_databases_are_unavailable_and_other_failures_are_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(is_unavailable(&sqlx::Error::Io(refused)));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::Protocol("bad".to_owned())));
    }

    #[test]
    fn database_failures_answer_unavailable_or_internal_never_with_their_cause() {
        let busy = status_of(&sqlx::Error::PoolTimedOut);
        let broken = status_of(&sqlx::Error::Protocol("secret detail".to_owned()));

        assert_eq!(
            (busy.code(), busy.message()),
            (tonic::Code::Unavailable, UNAVAILABLE_MESSAGE)
        );
        assert_eq!(
            (broken.code(), broken.message()),
            (tonic::Code::Internal, "internal error")
        );
    }
}
