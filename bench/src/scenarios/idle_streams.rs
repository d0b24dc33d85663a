//! `idle-streams`: the memory an idle subscribed stream costs. Ramps to 50,000 streams (one user
//! and device each) through the gateway and reads every process's resident memory before and
//! after. Goal (chat issue): at most 20 KiB per idle stream (Centrifugo needs about 30 KB per
//! connection).
//!
//! auth, group, chat and the gateway run in this process (`server::ChatStack`); the clients run
//! in a child process (`client.rs`, the bench binary started again), so that this process's
//! growth is the services' alone. Users register at auth first; then, from a quiet start, the
//! child subscribes every stream and this process samples its own memory, the child's and
//! PostgreSQL's (`memory.rs`) as the ramp goes.

mod client;
mod memory;
mod render;

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;

pub use self::client::{ARG as CLIENT_ARG, main as client_main};
use self::memory::{Resident, raise_open_files};
use super::{Context, Outcome, Scenario};
use crate::{
    clients::setup::{self, SharedRsa},
    server::{self, ChatStack},
};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "idle-streams",
    title: "memory per idle subscribed stream, ramped to 50k streams through the gateway",
    run,
};

/// Overrides the number of streams (default 50,000; 500 with `--quick`).
const STREAMS_VAR: &str = "BENCH_IDLE_STREAMS";
/// Sets the streams per client HTTP/2 connection (default: see [`passes`]).
const PER_CONNECTION_VAR: &str = "BENCH_IDLE_STREAMS_PER_CONNECTION";
/// Connections from one source address (one address has about 28,000 ephemeral ports).
const CONNECTIONS_PER_SOURCE: usize = 20_000;
/// At least this many source addresses (127.0.0.2 onwards).
const MIN_SOURCES: usize = 4;
/// How long the ramp may take.
const RAMP_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// RSA key size of the devices' uploaded keys (never used to seal here).
const RSA_BITS: usize = 2048;
/// Goal: at most this much memory per idle stream on the server side.
const GOAL_KIB_PER_STREAM: f64 = 20.0;

fn run(context: &Context) -> Outcome<'_> {
    Box::pin(measure(context))
}

/// Sizes, from `--quick`, the environment, or the defaults.
#[derive(Debug, Clone, Copy)]
struct Plan {
    streams: usize,
    per_connection: usize,
    sources: usize,
    /// Pause before each memory reading, so that the services settle.
    settle: Duration,
}

/// Memory of every process at one point of the ramp.
#[derive(Debug, Clone, Copy)]
struct Sample {
    streams: usize,
    services: Resident,
    clients: Resident,
    postgres: Resident,
}

/// Everything measured, for the report.
struct Measured {
    plan: Plan,
    /// Quiet, before the first stream (the clients process started, with its tokens).
    before: Sample,
    /// During the ramp, then with every stream open and settled.
    ramp: Vec<Sample>,
    opened: usize,
    failed: usize,
    first_failure: String,
    ramp_seconds: f64,
    /// Streams that ended while held.
    ended: Option<usize>,
    open_files: u64,
    setup_seconds: f64,
}

async fn measure(context: &Context) -> anyhow::Result<String> {
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let streams = from_env(STREAMS_VAR)
        .unwrap_or(context.pick(50_000, 500))
        .max(1);
    // This process holds the gateway's end of every client connection, and the clients'
    // process inherits its limit: raise it as far as the hard limit allows.
    let open_files = raise_open_files(streams as u64 + FILES_BESIDE_CONNECTIONS);
    let passes = passes(streams, from_env(PER_CONNECTION_VAR), open_files)?;
    let settle = Duration::from_secs(context.pick(5, 1));
    let mut body = String::new();
    for (pass, (streams, per_connection, title)) in passes.into_iter().enumerate() {
        let plan = Plan {
            streams,
            per_connection,
            sources: streams
                .div_ceil(per_connection)
                .div_ceil(CONNECTIONS_PER_SOURCE)
                .max(MIN_SOURCES),
            settle,
        };
        println!("pass {}: {title}", pass + 1);
        let stack = server::start_chat_stack(&context.database_url, 1).await?;
        // The scratch database's name: the URL's path, without its parameters.
        let database = context
            .database_url
            .rsplit('/')
            .next()
            .and_then(|path| path.split('?').next())
            .unwrap_or_default()
            .to_owned();
        let prefix = format!("idle-streams-{}", pass + 1);
        let measured = measure_with(&stack, plan, (open_files, &database), &prefix).await;
        let stopped = stack.stop().await;
        let measured = measured?;
        stopped?;
        let _ = write!(body, "#### {title}\n\n{}\n", render::render(&measured));
    }
    println!("\n{body}");
    Ok(body)
}

/// Open files this process needs beside its connections (the services' pools, listeners, the
/// runtime).
const FILES_BESIDE_CONNECTIONS: u64 = 4_096;

/// The passes to run: (streams, streams per connection, title). With
/// `BENCH_IDLE_STREAMS_PER_CONNECTION`, that one; otherwise one stream per connection when the
/// open-files limit allows every stream its own, and when it does not, the streams multiplexed
/// on as few streams per connection as the limit needs, then one stream per connection for as
/// many streams as the limit allows.
fn passes(
    streams: usize,
    per_connection: Option<usize>,
    open_files: u64,
) -> anyhow::Result<Vec<(usize, usize, String)>> {
    let room =
        usize::try_from(open_files.saturating_sub(FILES_BESIDE_CONNECTIONS)).unwrap_or(usize::MAX);
    if room == 0 {
        bail!("RLIMIT_NOFILE is {open_files}, too low for any connection");
    }
    if let Some(per_connection) = per_connection.map(|n| n.max(1)) {
        let connections = streams.div_ceil(per_connection);
        if connections > room {
            bail!(
                "RLIMIT_NOFILE is {open_files}, too low for {connections} connections; set \
                 {PER_CONNECTION_VAR} higher or leave it unset"
            );
        }
        return Ok(vec![(
            streams,
            per_connection,
            format!("{streams} streams, {per_connection} per connection ({PER_CONNECTION_VAR})"),
        )]);
    }
    if streams <= room {
        return Ok(vec![(
            streams,
            1,
            format!("{streams} streams, one per connection"),
        )]);
    }
    let per_connection = streams.div_ceil(room);
    Ok(vec![
        (
            streams,
            per_connection,
            format!(
                "{streams} streams, {per_connection} per connection (RLIMIT_NOFILE {open_files} \
                 allows {room} connections)"
            ),
        ),
        (
            room,
            1,
            format!(
                "{room} streams, one per connection (as many as RLIMIT_NOFILE {open_files} \
                 allows)"
            ),
        ),
    ])
}

async fn measure_with(
    stack: &ChatStack,
    plan: Plan,
    (open_files, database): (u64, &str),
    prefix: &str,
) -> anyhow::Result<Measured> {
    let setup_started = Instant::now();
    println!("setup: {} users, one device each", plan.streams);
    let rsa = std::sync::Arc::new(SharedRsa::generate(RSA_BITS)?);
    let users = setup::register_users(stack.auth(), &rsa, prefix, plan.streams).await?;
    let tokens_path =
        std::env::temp_dir().join(format!("bench-idle-streams-{}.tokens", std::process::id()));
    let tokens: Vec<&str> = users.iter().map(|user| user.token.as_str()).collect();
    std::fs::write(&tokens_path, tokens.join("\n"))?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    println!("  registered in {setup_seconds:.1} s");

    let mut child = Command::new(std::env::current_exe()?)
        .arg(CLIENT_ARG)
        .args(["--gateway", &stack.gateway().addr.to_string()])
        .arg("--tokens")
        .arg(&tokens_path)
        .args(["--per-connection", &plan.per_connection.to_string()])
        .args(["--sources", &plan.sources.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the clients process")?;
    let ramped = ramp(&mut child, plan, database).await;
    // Closing its standard input lets the child end; kill it if it does not.
    drop(child.stdin.take());
    let waited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    let _ = std::fs::remove_file(&tokens_path);
    let (mut measured, mut lines) = ramped?;
    waited.await?;
    while let Ok(line) = lines.try_recv() {
        if let Some(count) = line.strip_prefix("ended ") {
            measured.ended = count.trim().parse().ok();
        }
    }
    drop(users);
    measured.setup_seconds = setup_seconds;
    measured.open_files = open_files;
    Ok(measured)
}

/// Follows the child's lines through the ramp, sampling memory at each progress line, and once
/// more when every stream is open and settled.
async fn ramp(
    child: &mut Child,
    plan: Plan,
    database: &str,
) -> anyhow::Result<(Measured, mpsc::UnboundedReceiver<String>)> {
    let pid = child.id().to_string();
    let stdout = child.stdout.take().context("no stdout")?;
    let (line_tx, mut lines) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("clients-stdout".to_owned())
        .spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    let sample = |streams| Sample {
        streams,
        services: Resident::own().unwrap_or_default(),
        clients: Resident::of(&pid).unwrap_or_default(),
        postgres: Resident::postgres(database),
    };
    let deadline = tokio::time::Instant::now() + RAMP_TIMEOUT;
    let mut next_line = async || {
        tokio::time::timeout_at(deadline, lines.recv())
            .await
            .context("the ramp took too long")?
            .context("the clients process ended early")
    };
    let first = next_line().await?;
    if !first.starts_with("started") {
        bail!("the clients process said {first:?}");
    }
    tokio::time::sleep(plan.settle).await;
    let before = sample(0);
    {
        use std::io::Write as _;
        let stdin = child.stdin.as_mut().context("no stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
    }
    println!(
        "  before: services {} MiB, clients {} MiB",
        before.services.rss_kib / 1024,
        before.clients.rss_kib / 1024
    );
    let mut ramp = Vec::new();
    let ready = loop {
        let line = next_line().await?;
        if let Some(count) = line.strip_prefix("progress ") {
            let streams = count.trim().parse()?;
            ramp.push(sample(streams));
            println!(
                "  {streams} streams: services {} MiB",
                ramp.last().map_or(0, |s| s.services.rss_kib / 1024)
            );
        } else if let Some(ready) = line.strip_prefix("ready ") {
            break ready.to_owned();
        }
    };
    let mut fields = ready.splitn(4, ' ');
    let mut number =
        || -> anyhow::Result<u64> { Ok(fields.next().context("short ready line")?.parse()?) };
    let (opened, failed, millis) = (number()? as usize, number()? as usize, number()?);
    let first_failure = fields.next().unwrap_or("").to_owned();
    println!(
        "  {opened} streams open ({failed} failed) in {:.1} s",
        millis as f64 / 1e3
    );
    tokio::time::sleep(plan.settle).await;
    ramp.push(sample(opened));
    Ok((
        Measured {
            plan,
            before,
            ramp,
            opened,
            failed,
            first_failure,
            ramp_seconds: millis as f64 / 1e3,
            ended: None,
            open_files: 0,
            setup_seconds: 0.0,
        },
        lines,
    ))
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn every_stream_gets_its_own_connection_when_the_limit_allows() {
        let passes = passes(50_000, None, 60_000).unwrap();
        assert_eq!(
            passes.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
            [(50_000, 1)]
        );
    }

    #[test]
    fn a_low_limit_multiplexes_then_measures_one_per_connection_as_far_as_it_goes() {
        let passes = passes(50_000, None, 20_000).unwrap();
        assert_eq!(
            passes.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
            [(50_000, 4), (15_904, 1)]
        );
    }

    #[test]
    fn an_explicit_setting_is_one_pass_and_must_fit() {
        let passes = passes(50_000, Some(50), 20_000).unwrap();
        assert_eq!(
            passes.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
            [(50_000, 50)]
        );
        assert!(passes_fail(50_000, Some(1), 20_000));
    }

    fn passes_fail(streams: usize, per_connection: Option<usize>, open_files: u64) -> bool {
        passes(streams, per_connection, open_files).is_err()
    }
}
