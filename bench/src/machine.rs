//! Facts about the machine and the run, stated in every report section so that figures from
//! different days and machines are never compared blindly.

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use time::OffsetDateTime;

/// When, where and how this run measured.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// `2026-05-04 09:30 UTC`.
    pub date: String,
    /// CPUs available to this process (what `nproc` prints).
    pub nproc: usize,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal of /proc/meminfo, e.g. `23.5 GiB`.
    pub memory: String,
    /// The database server's version and where it runs.
    pub database: String,
    /// The command that reproduces the run.
    pub command: String,
}

impl RunFacts {
    /// Gathers the facts; what cannot be read is reported as `unknown`, never fails the run.
    pub async fn collect(raw_args: &[String], database_url: &str) -> Self {
        let mut command = String::from("cargo run --release -p bench --");
        for arg in raw_args {
            command.push(' ');
            command.push_str(arg);
        }
        Self {
            date: format_date(OffsetDateTime::now_utc()),
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: cpu_model().unwrap_or_else(|| "unknown CPU".to_owned()),
            memory: total_memory().unwrap_or_else(|| "unknown".to_owned()),
            database: database_version(database_url).await,
            command,
        }
    }

    /// One line for the console.
    pub fn summary(&self) -> String {
        format!(
            "{} | {} CPUs (nproc), {}, {} memory | {}",
            self.date, self.nproc, self.cpu_model, self.memory, self.database
        )
    }
}

fn format_date(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.trim().to_owned())
}

fn total_memory() -> Option<String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
}

async fn database_version(database_url: &str) -> String {
    let version = async {
        let options: PgConnectOptions = database_url.parse().ok()?;
        let host = options.get_host().to_owned();
        let mut connection = PgConnection::connect_with(&options).await.ok()?;
        let version: String = sqlx::query_scalar("show server_version")
            .fetch_one(&mut connection)
            .await
            .ok()?;
        connection.close().await.ok()?;
        Some(format!("PostgreSQL {version} at {host}"))
    };
    version
        .await
        .unwrap_or_else(|| "PostgreSQL (version unknown)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_minutes_in_utc() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();

        assert_eq!(format_date(at), "2023-11-14 22:13 UTC");
    }
}
