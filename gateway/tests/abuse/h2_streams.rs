//! Attacks that hold resources rather than flood: more streams than the gateway allows, thousands
//! of streams whose responses cannot be sent (zero flow-control window), a huge header list, a
//! client that never reads its responses, and connections that never finish opening.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    frames::{
        CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PREFACE, RawH2,
        SETTINGS_INITIAL_WINDOW_SIZE, frame, grpc_request_block, literal,
    },
    h2_floods::closed_unread,
    harness::{
        Bounds, IDLE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_CONCURRENT_STREAMS,
        Outcome, Target, mib,
    },
};

/// Reflection's answer to "which services": a response of a few hundred bytes from the gateway
/// itself, on a bidirectional stream that stays open until the client ends it.
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const GET_JWKS: &str = "/auth.v1.AuthService/GetJwks";
/// Slack on top of a timeout-based bound, for a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

#[sqlx::test(migrations = "../migrations")]
async fn streams_beyond_the_limit_are_refused(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    let block = grpc_request_block(REFLECTION, "application/grpc", &[]);

    let outcome = target
        .attack(
            Bounds {
                name: "3x GATEWAY_MAX_CONCURRENT_STREAMS streams on one connection",
                rss_growth: mib(32),
                closed_within: Some(Duration::from_secs(2)),
            },
            async move {
                let mut raw = RawH2::connect(addr, &[]).await;
                let start = Instant::now();
                // Streams that stay open (a bidirectional call whose request never ends).
                let opened = MAX_CONCURRENT_STREAMS * 3;
                let bytes: Vec<u8> = (0..opened)
                    .flat_map(|n| frame(HEADERS, END_HEADERS, 2 * n + 1, &block))
                    .collect();
                raw.send(&bytes).await;
                let deadline = Instant::now() + Duration::from_secs(2);
                let refused = loop {
                    let refused = raw.received.lock().unwrap().resets.len();
                    if refused as u32 >= opened - MAX_CONCURRENT_STREAMS || Instant::now() > deadline {
                        break refused;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let last = start.elapsed();
                Outcome {
                    observed: format!("{}; {refused} of {opened} streams refused", raw.summary()),
                    closed_after: (refused as u32 >= opened - MAX_CONCURRENT_STREAMS).then_some(last),
                }
            },
        )
        .await;

    assert!(
        outcome.observed.contains("REFUSED_STREAM") || outcome.observed.contains("GOAWAY"),
        "{outcome:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn thousands_of_streams_with_a_zero_window_do_not_make_the_gateway_buffer(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    let connections = 20;
    // GetJwks through auth: the gateway gets the whole response from upstream and cannot send a
    // byte of its body to this client.
    let block = grpc_request_block(GET_JWKS, "application/grpc", &[]);
    let body = frame(crate::frames::DATA, END_STREAM, 0, &[0, 0, 0, 0, 0]);

    let outcome = target
        .attack(
            Bounds {
                name: "2,000 streams with a zero flow-control window (20 connections)",
                rss_growth: mib(48),
                closed_within: None,
            },
            async move {
                let start = Instant::now();
                let mut raws = Vec::new();
                for _ in 0..connections {
                    let mut raw = RawH2::connect(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
                    let mut bytes = Vec::new();
                    for n in 0..MAX_CONCURRENT_STREAMS {
                        let stream = 2 * n + 1;
                        bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
                        let mut data = body.clone();
                        data[5..9].copy_from_slice(&stream.to_be_bytes());
                        bytes.extend(data);
                    }
                    raw.send(&bytes).await;
                    raws.push(raw);
                }
                // Long enough for every call to have been answered by auth.
                tokio::time::sleep(Duration::from_secs(3)).await;
                let answered: usize = raws.iter().map(|raw| raw.received.lock().unwrap().headers.len()).sum();
                let data: usize = raws.iter().map(|raw| raw.received.lock().unwrap().data_bytes).sum();
                let closed = raws.iter().filter(|raw| raw.closed_at().is_some()).count();
                Outcome {
                    observed: format!(
                        "{answered} response heads, {data} body bytes sent (window 0), {closed} connections closed, held {:?}",
                        start.elapsed()
                    ),
                    closed_after: None,
                }
            },
        )
        .await;

    assert!(outcome.observed.contains(" 0 body bytes"), "{outcome:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_huge_header_list_is_refused(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    // 1 MiB of headers: HEADERS then CONTINUATION frames of 16,000 bytes each, then END_HEADERS.
    let header = literal("x-huge", &[b'h'; 15_980]);

    target
        .attack(
            Bounds {
                name: "1 MiB header list (HTTP/2), on 20 connections",
                rss_growth: mib(32),
                closed_within: Some(Duration::from_secs(2)),
            },
            async move {
                let mut summaries = Vec::new();
                let mut slowest = Some(Duration::ZERO);
                for _ in 0..20 {
                    let mut raw = RawH2::connect(addr, &[]).await;
                    let start = Instant::now();
                    let block = grpc_request_block(GET_JWKS, "application/grpc", &[]);
                    let mut bytes = frame(HEADERS, 0, 1, &block);
                    for n in 0..64 {
                        let flags = if n == 63 { END_HEADERS } else { 0 };
                        bytes.extend(frame(CONTINUATION, flags, 1, &header));
                    }
                    let _ = raw.send(&bytes).await;
                    let answered = raw.wait_answered(Duration::from_secs(2)).await;
                    slowest = slowest.zip(answered).map(|(slowest, at)| slowest.max(at - start));
                    summaries.push(raw.summary());
                }
                summaries.dedup();
                Outcome {
                    observed: summaries.join(" / "),
                    closed_after: slowest,
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_that_never_reads_its_responses_is_disconnected(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    // Reflection listing the services, over and over on one stream: the answers fill the
    // socket buffers, then the gateway's flow-control window, while the client reads nothing.
    let block = grpc_request_block(REFLECTION, "application/grpc", &[]);
    let list_services = [0, 0, 0, 0, 3, 0x3a, 1, b'*'];
    let bound = KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT + SLACK;

    target
        .attack(
            Bounds {
                name: "a client that never reads its responses (HTTP/2)",
                rss_growth: mib(32),
                closed_within: Some(Duration::from_secs(3) + bound),
            },
            async move {
                let (mut raw, reader) =
                    RawH2::connect_unread(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 30)]).await;
                let start = Instant::now();
                let mut sent = 0;
                let mut bytes = Vec::new();
                for stream in (1..2 * MAX_CONCURRENT_STREAMS).step_by(2) {
                    bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
                }
                raw.send(&bytes).await;
                'flood: while start.elapsed() < Duration::from_secs(3) {
                    for stream in (1..2 * MAX_CONCURRENT_STREAMS).step_by(2) {
                        let data = frame(crate::frames::DATA, 0, stream, &list_services);
                        match tokio::time::timeout(Duration::from_millis(500), raw.send(&data)).await {
                            Ok(true) => sent += 1,
                            _ => break 'flood,
                        }
                    }
                }
                let closed = closed_unread(reader, bound).await;
                Outcome {
                    observed: format!("{sent} reflection requests sent, no answer read"),
                    closed_after: closed.map(|at| at - start),
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn half_open_connections_are_closed(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    let bound = IDLE_TIMEOUT + SLACK;

    target
        .attack(
            Bounds {
                name: "1,000 half-open connections (nothing, the preface only, half a request line)",
                rss_growth: mib(32),
                closed_within: Some(bound),
            },
            async move {
                let start = Instant::now();
                let mut connections = Vec::new();
                let mut writers = Vec::new();
                for n in 0..1000 {
                    let Ok(mut tcp) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    let opening: &[u8] = match n % 3 {
                        0 => b"",
                        1 => PREFACE,
                        _ => b"POST /auth.v1.AuthService/GetJwks HT",
                    };
                    let _ = tcp.write_all(opening).await;
                    connections.push(tcp);
                }
                let mut last = start;
                let mut open = 0;
                for tcp in connections {
                    // The write half stays open: dropping it would send FIN.
                    let (reader, writer) = tcp.into_split();
                    writers.push(writer);
                    match closed_unread(reader, bound.saturating_sub(start.elapsed())).await {
                        Some(at) => last = last.max(at),
                        None => open += 1,
                    }
                }
                Outcome {
                    observed: format!("{open} of 1000 still open after {bound:?}"),
                    closed_after: (open == 0).then(|| last - start),
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_http1_client_that_never_reads_its_responses_is_disconnected(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    // Pipelined requests for the key set, whose answers fill the socket buffers unread.
    let request = "GET /.well-known/jwks.json HTTP/1.1\r\nhost: gateway\r\n\r\n".repeat(1000);
    let bound = IDLE_TIMEOUT + KEEPALIVE_TIMEOUT + SLACK;

    target
        .attack(
            Bounds {
                name: "a client that never reads its responses (HTTP/1.1, pipelined)",
                rss_growth: mib(32),
                closed_within: Some(Duration::from_secs(3) + bound),
            },
            async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let (reader, mut writer) = tcp.into_split();
                let start = Instant::now();
                let mut sent = 0;
                while start.elapsed() < Duration::from_secs(3) {
                    match tokio::time::timeout(Duration::from_millis(500), writer.write_all(request.as_bytes())).await {
                        Ok(Ok(())) => sent += 1000,
                        _ => break,
                    }
                }
                let closed = closed_unread(reader, bound).await;
                drop(writer);
                Outcome {
                    observed: format!("{sent} requests sent, no answer read"),
                    closed_after: closed.map(|at| at - start),
                }
            },
        )
        .await;
}
