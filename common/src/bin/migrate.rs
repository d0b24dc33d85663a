//! Applies every pending migration in `migrations/` to the database named by `MIGRATE_DATABASE_URL`
//! and exits. The one-command local stack runs it before the services start; on Kubernetes it runs
//! as a Helm hook Job before install and upgrade.

use common::config::{DatabaseSettings, EnvReader};
use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("info", common::telemetry::LogFormat::Pretty)?;
    let lookup = |key: &str| std::env::var(key).ok();
    let settings = DatabaseSettings::from_env(
        &EnvReader::new("MIGRATE", &lookup),
        1,
        "migrations run on one",
    )?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(settings.url.expose_secret())
        .await?;
    common::db::MIGRATOR.run(&pool).await?;
    let applied = common::db::MIGRATOR.iter().count();
    tracing::info!(migrations = applied, "database schema is up to date");
    Ok(())
}
