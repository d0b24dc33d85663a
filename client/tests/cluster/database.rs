//! A fresh database for one run on the server `DATABASE_URL` names (ci/test.sh sets it), empty:
//! the `migrate` binary creates the schemas, as the chart's Job does.

use sqlx::{Connection, Executor, PgConnection};

/// A uniquely named database; [`TestDatabase::drop`] removes it.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// Its URL, for the services and `migrate`.
    pub url: String,
}

impl TestDatabase {
    /// Creates the database.
    pub async fn create() -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL names a PostgreSQL server (ci/test.sh sets it)");
        let name = format!("cluster_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        admin
            .execute(format!("create database {name}").as_str())
            .await
            .unwrap();
        Self {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        }
    }

    /// Drops the database, disconnecting whatever is still connected to it.
    pub async fn drop(self) {
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        admin
            .execute(format!("drop database if exists {} with (force)", self.name).as_str())
            .await
            .unwrap();
    }
}

/// `url` (`postgres://user@host:port/db?options`) naming `database` instead.
fn with_database(url: &str, database: &str) -> String {
    let (base, options) = match url.split_once('?') {
        Some((base, options)) => (base, format!("?{options}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |index| authority_start + index);
    format!("{}/{database}{options}", &base[..path_start])
}

#[test]
fn a_database_url_is_pointed_at_another_database() {
    for (url, expected) in [
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/other",
        ),
        (
            "postgres://u:p@db:5432/postgres?sslmode=disable",
            "postgres://u:p@db:5432/other?sslmode=disable",
        ),
        ("postgres://u@db:5432", "postgres://u@db:5432/other"),
    ] {
        assert_eq!(with_database(url, "other"), expected);
    }
}
