//! The clients of `idle-streams`, in a process of their own (the bench binary started again with
//! [`ARG`]), so that their memory is not counted as the services'. It subscribes one stream per
//! token of the tokens file through the gateway, `--per-connection` streams on each HTTP/2
//! connection, the connections spread over `--sources` source addresses (127.0.0.2, 127.0.0.3,
//! …: one address has about 28,000 ephemeral ports towards one gateway port), waits for every
//! stream's CaughtUp, reads them (heartbeats only) and holds them until its standard input
//! closes.
//!
//! It talks to the bench on standard output, one line each: `started <rss KiB>` (then it waits
//! for `go` on standard input), `progress <streams>` (every tenth of them), `ready <opened> <failed> <milliseconds> [first failure]`, and at the end
//! `ended <streams that ended while held>`.

use std::{
    io::BufRead as _,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, bail};
use proto::chat::v1::chat_service_client::ChatServiceClient;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::memory::{Resident, raise_open_files};
use crate::clients::setup;

/// The first argument that makes the bench binary this client.
pub const ARG: &str = "__idle-streams-client";
/// Streams subscribed at once.
const SUBSCRIBE_CONCURRENCY: usize = 64;
/// A progress line every this share of the streams.
const PROGRESS_STEPS: usize = 10;

/// What the bench asks of the client.
#[derive(Debug)]
struct Args {
    gateway: String,
    tokens: std::path::PathBuf,
    per_connection: usize,
    sources: u8,
}

/// Runs the client with the arguments after [`ARG`].
///
/// # Errors
/// When the arguments or the tokens file are bad; failed streams are reported, not errors.
pub async fn main(raw_args: &[String]) -> anyhow::Result<()> {
    let args = parse(raw_args)?;
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .context("cannot read the tokens file")?
        .lines()
        .map(str::to_owned)
        .collect();
    let connections = tokens.len().div_ceil(args.per_connection.max(1));
    raise_open_files(connections as u64 + 1_024);
    println!("started {}", Resident::own().map_or(0, |own| own.rss_kib));
    // The bench reads everyone's memory before it says go.
    let go = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    if go.trim() != "go" {
        bail!("expected go, read {go:?}");
    }

    let started = Instant::now();
    let mut channels = Vec::with_capacity(connections);
    for index in 0..connections {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(args.sources)) as u8);
        let endpoint = Endpoint::from_shared(format!("http://{}", args.gateway))?
            .local_address(Some(IpAddr::V4(source)));
        channels.push(endpoint.connect_lazy());
    }
    let ended = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    let (opened, failures) = subscribe_all(&channels, &tokens, &args, &ended, &mut readers).await;
    println!(
        "ready {opened} {} {} {}",
        failures.len(),
        started.elapsed().as_millis(),
        failures.first().map_or("", String::as_str)
    );

    // Hold the streams until the bench closes our standard input.
    let _ = tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await;
    println!("ended {}", ended.load(Ordering::Relaxed));
    readers.abort_all();
    Ok(())
}

/// Subscribes a stream per token, `SUBSCRIBE_CONCURRENCY` at a time; each stream then gets a
/// reader task in `readers`. Returns how many opened, and why the others failed.
async fn subscribe_all(
    channels: &[Channel],
    tokens: &[String],
    args: &Args,
    ended: &Arc<AtomicUsize>,
    readers: &mut JoinSet<()>,
) -> (usize, Vec<String>) {
    let mut subscribing = JoinSet::new();
    let mut next = 0;
    let (mut opened, mut failures) = (0, Vec::new());
    while next < tokens.len() || !subscribing.is_empty() {
        while next < tokens.len() && subscribing.len() < SUBSCRIBE_CONCURRENCY {
            let chat = ChatServiceClient::new(channels[next / args.per_connection].clone());
            let token = tokens[next].clone();
            subscribing.spawn(async move { setup::subscribe(chat, &token).await });
            next += 1;
        }
        let Some(joined) = subscribing.join_next().await else {
            break;
        };
        match joined
            .map_err(anyhow::Error::from)
            .and_then(|result| result)
        {
            Ok(mut stream) => {
                opened += 1;
                if opened % (tokens.len() / PROGRESS_STEPS).max(1) == 0 && opened < tokens.len() {
                    println!("progress {opened}");
                }
                let ended = ended.clone();
                readers.spawn(async move {
                    while let Ok(Some(_)) = stream.message().await {}
                    ended.fetch_add(1, Ordering::Relaxed);
                });
            }
            Err(error) => failures.push(format!("{error:#}").replace('\n', " ")),
        }
    }
    (opened, failures)
}

fn parse(raw_args: &[String]) -> anyhow::Result<Args> {
    let mut rest = raw_args.iter();
    let (mut gateway, mut tokens, mut per_connection, mut sources) = (None, None, 1, 1);
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--gateway" => gateway = Some(value.clone()),
            "--tokens" => tokens = Some(value.into()),
            "--per-connection" => per_connection = value.parse()?,
            "--sources" => sources = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    if per_connection == 0 || sources == 0 || sources > 250 {
        bail!("--per-connection must be above 0, --sources within 1..=250");
    }
    Ok(Args {
        gateway: gateway.context("--gateway is required")?,
        tokens: tokens.context("--tokens is required")?,
        per_connection,
        sources,
    })
}
