//! What PostgreSQL itself does on this machine: pgbench (from the PostgreSQL packages) inserting
//! rows shaped like a message into a scratch table of the run's database, one row per
//! transaction and 50 rows per transaction, from 32 clients; and one client's commit latency.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use std::process::Command;

/// The payload of every inserted row, like a short message's ciphertext, signature and key.
pub const PAYLOAD_BYTES: usize = 400;
/// Clients of the throughput runs.
const CLIENTS: u32 = 32;
/// Rows per transaction of the batched run.
const BATCH: u32 = 50;
const TABLE: &str = "public.pgbench_messages";

/// pgbench's figures.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    /// Single-row inserts from [`CLIENTS`] clients.
    pub single_rows_per_second: f64,
    /// [`BATCH`]-row inserts from [`CLIENTS`] clients.
    pub batched_rows_per_second: f64,
    /// One client, single-row inserts: the average transaction.
    pub one_commit: Duration,
}

/// The two insert scripts, as the report shows them.
pub fn describe() -> String {
    format!(
        "-- single row, pgbench -n -c {CLIENTS} -j 2 -T <s>\n{}\n-- batch, pgbench -n -c {CLIENTS} -j 2 -T <s>\n{}\n-- commit latency: the single-row script, pgbench -n -c 1 -T <s>\n",
        single_row(),
        batch()
    )
}

fn single_row() -> String {
    format!(
        "insert into {TABLE} (conversation_id, sequence, payload) values (gen_random_uuid(), 1, decode(repeat('ab', {PAYLOAD_BYTES}), 'hex'));"
    )
}

fn batch() -> String {
    format!(
        "insert into {TABLE} (conversation_id, sequence, payload) select gen_random_uuid(), n, decode(repeat('ab', {PAYLOAD_BYTES}), 'hex') from generate_series(1, {BATCH}) as n;"
    )
}

/// Runs the three measurements, `seconds` each, against `database_url`.
///
/// # Errors
/// When pgbench is missing or fails.
pub async fn measure(database_url: &str, seconds: u32) -> anyhow::Result<Reference> {
    create_table(database_url).await?;
    let dir = tempdir()?;
    let single_path = dir.join("single.sql");
    let batch_path = dir.join("batch.sql");
    std::fs::write(&single_path, single_row())?;
    std::fs::write(&batch_path, batch())?;
    let single = run(database_url, &single_path, CLIENTS, seconds).await?;
    let batched = run(database_url, &batch_path, CLIENTS, seconds).await?;
    let one = run(database_url, &single_path, 1, seconds).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Reference {
        single_rows_per_second: single.tps,
        batched_rows_per_second: batched.tps * f64::from(BATCH),
        one_commit: one.latency,
    })
}

/// One client's commit latency only (the single-row script, `pgbench -c 1`, for `seconds`):
/// the average single-row insert and commit.
///
/// # Errors
/// When pgbench is missing or fails.
pub async fn one_commit(database_url: &str, seconds: u32) -> anyhow::Result<Duration> {
    create_table(database_url).await?;
    let dir = tempdir()?;
    let single_path = dir.join("single.sql");
    std::fs::write(&single_path, single_row())?;
    let one = run(database_url, &single_path, 1, seconds).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(one?.latency)
}

/// The one-commit script, as the report shows it.
pub fn describe_one_commit() -> String {
    format!("-- pgbench -n -c 1 -T <s>\n{}\n", single_row())
}

async fn create_table(database_url: &str) -> anyhow::Result<()> {
    let db = sqlx::PgPool::connect(database_url).await?;
    sqlx::query(&format!(
        "create table if not exists {TABLE} (
           conversation_id uuid not null, sequence bigint not null, payload bytea not null,
           primary key (conversation_id, sequence))"
    ))
    .execute(&db)
    .await?;
    db.close().await;
    Ok(())
}

struct Run {
    tps: f64,
    latency: Duration,
}

async fn run(
    database_url: &str,
    script: &PathBuf,
    clients: u32,
    seconds: u32,
) -> anyhow::Result<Run> {
    let mut command = Command::new("pgbench");
    command
        .args([
            "-n",
            "-j",
            "2",
            "-c",
            &clients.to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(script)
        // sqlx's own URL parameters (the scratch database sets some) mean nothing to libpq.
        .arg(database_url.split('?').next().unwrap_or(database_url))
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("cannot run pgbench (it comes with the PostgreSQL server packages)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // "latency average = 1.234 ms" and "tps = 812.3 (without initial connection time)".
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse::<f64>().ok())
    };
    let tps = field("tps = ").context("pgbench printed no tps")?;
    let latency_ms = field("latency average = ").context("pgbench printed no latency")?;
    Ok(Run {
        tps,
        latency: Duration::from_secs_f64(latency_ms / 1000.0),
    })
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
