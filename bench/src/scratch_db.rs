//! The run's scratch database: created fresh on the `DATABASE_URL` server, migrated with
//! `common::db::MIGRATOR`, dropped at the end, also after a failure, a panic or Ctrl-C.

use anyhow::Context as _;
use sqlx::{
    ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions, postgres::PgPoolOptions,
};

/// A migrated database that only this run uses. Dropping the value drops the database, but
/// prefer [`ScratchDb::drop_database`], which reports failures.
#[derive(Debug)]
pub struct ScratchDb {
    admin: PgConnectOptions,
    name: String,
    url: String,
    dropped: bool,
}

impl ScratchDb {
    /// Creates and migrates `bench_<pid>` on the server `admin_url` points at.
    ///
    /// # Errors
    /// When the URL is invalid, the server unreachable, or the user may not create databases.
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let admin: PgConnectOptions = admin_url
            .parse()
            .context("DATABASE_URL is not a valid URL")?;
        let name = format!("bench_{}", std::process::id());
        // A database of this name can only be left over from a killed run whose pid was reused.
        execute(&admin, &drop_statement(&name)).await?;
        execute(&admin, &format!(r#"create database "{name}""#)).await?;
        let options = admin.clone().database(&name);
        let scratch = Self {
            url: options.to_url_lossy().to_string(),
            admin,
            name,
            dropped: false,
        };
        if let Err(error) = migrate(options).await {
            scratch.drop_database().await?;
            return Err(error);
        }
        Ok(scratch)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the services' pools.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database, closing any connection still open to it.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn drop_database(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        execute(&self.admin, &drop_statement(&self.name)).await
    }
}

impl Drop for ScratchDb {
    /// The path taken when a panic unwinds past the run: drop the database from a thread of its
    /// own, since no runtime can be entered from here.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin, statement) = (self.admin.clone(), drop_statement(&self.name));
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(execute(&admin, &statement))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop the scratch database {}: drop it by hand",
                self.name
            );
        }
    }
}

fn drop_statement(name: &str) -> String {
    format!(r#"drop database if exists "{name}" with (force)"#)
}

async fn execute(admin: &PgConnectOptions, statement: &str) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect_with(admin)
        .await
        .context("cannot connect to DATABASE_URL")?;
    sqlx::raw_sql(statement)
        .execute(&mut connection)
        .await
        .with_context(|| format!("`{statement}`"))?;
    connection.close().await?;
    Ok(())
}

async fn migrate(options: PgConnectOptions) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    common::db::MIGRATOR
        .run(&pool)
        .await
        .context("migrating the scratch database")?;
    pool.close().await;
    Ok(())
}
