//! Attacks that hold resources rather than flood: more streams than the gateway allows, thousands
//! of streams whose responses cannot be sent (zero flow-control window), a huge header list, a
//! client that never reads its responses, and connections that never finish opening.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    frames::{
        CONTINUATION, DATA, END_HEADERS, HEADERS, PREFACE, RawH2, SETTINGS_INITIAL_WINDOW_SIZE,
        frame, grpc_request_block, literal, small_receive_buffer, window_update,
    },
    h2_floods::closed_unread,
    harness::{
        Bounds, IDLE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_CONCURRENT_STREAMS,
        Outcome, SEND_TIMEOUT, Target, mib,
    },
    kernel::released,
};

/// Reflection's answer to "which services": a response of a few hundred bytes from the gateway
/// itself, on a bidirectional stream that stays open until the client ends it.
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const GET_JWKS: &str = "/auth.v1.AuthService/GetJwks";
/// A reflection request (one gRPC frame) for the file defining `chat.v1.ChatService` and its
/// dependencies.
const CHAT_DESCRIPTORS: &[u8] = b"\0\0\0\0\x15\x22\x13chat.v1.ChatService";
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
                    if refused as u32 >= opened - MAX_CONCURRENT_STREAMS
                        || Instant::now() > deadline
                    {
                        break refused;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let last = start.elapsed();
                Outcome {
                    observed: format!("{}; {refused} of {opened} streams refused", raw.summary()),
                    closed_after: (refused as u32 >= opened - MAX_CONCURRENT_STREAMS)
                        .then_some(last),
                }
            },
        )
        .await;

    assert!(
        outcome.observed.contains("REFUSED_STREAM") || outcome.observed.contains("GOAWAY"),
        "{outcome:?}"
    );
}

/// Connections of [`zero_window_calls`] and [`one_byte_window_calls`], opened this far apart.
const HELD_CONNECTIONS: u32 = 20;
const HELD_INTERVAL: Duration = Duration::from_millis(300);

#[sqlx::test(migrations = "../migrations")]
async fn streams_held_by_flow_control_are_let_go_within_the_send_timeout(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    // From the first response held to the drop: the send timeout, up to a quarter more (the
    // connection is checked every quarter), then slack; counted here from the connection's start.
    let bound = SEND_TIMEOUT + SEND_TIMEOUT / 4 + SLACK;

    let outcome = target
        .attack(
            Bounds {
                name: "2,000 streams held by flow control, each with a 40 KB reflection answer ready: 20 connections of 100 streams, one every 300 ms, alternately window 0 (h2 crate) and window 1 byte with the streams left open (raw frames)",
                // Each connection holds up to 100 encoded answers (about 40 KiB each) until it
                // is dropped; about 8 connections are held at once (2.5 s / 300 ms).
                rss_growth: mib(64),
                closed_within: Some(bound),
            },
            async move {
                let mut connections = Vec::new();
                for n in 0..HELD_CONNECTIONS {
                    let opened = Instant::now();
                    let held = if n % 2 == 0 {
                        zero_window_calls(addr).await
                    } else {
                        one_byte_window_calls(addr).await
                    };
                    connections.push((opened, held));
                    tokio::time::sleep(HELD_INTERVAL).await;
                }
                let (mut heads, mut data_bytes, mut open) = (0, 0, 0);
                let mut slowest = Duration::ZERO;
                for (opened, held) in connections {
                    heads += held.heads;
                    data_bytes += held.data_bytes;
                    let left = (bound + SLACK).saturating_sub(opened.elapsed());
                    match tokio::time::timeout(left, held.closed).await {
                        Ok(Ok(closed)) => slowest = slowest.max(closed - opened),
                        _ => open += 1,
                    }
                }
                Outcome {
                    observed: format!(
                        "{heads} response heads, {data_bytes} body bytes sent (1 per stream on a 1-byte window); {open} of {HELD_CONNECTIONS} connections still open; each dropped when no stream had sent for the send timeout"
                    ),
                    closed_after: (open == 0).then_some(slowest),
                }
            },
        )
        .await;

    let streams = HELD_CONNECTIONS * MAX_CONCURRENT_STREAMS;
    assert!(
        outcome.observed.starts_with(&format!(
            "{streams} response heads, {} body bytes",
            streams / 2
        )),
        "{outcome:?}"
    );
}

/// Calls on one connection whose client grants them no window, and when the gateway closed it.
struct HeldCalls {
    heads: u32,
    data_bytes: usize,
    closed: tokio::task::JoinHandle<Instant>,
}

/// A connection that grants no flow-control window to any stream (the `h2` crate), with
/// [`MAX_CONCURRENT_STREAMS`] calls on it, each asking reflection for chat's file descriptors:
/// tens of KB the gateway has ready and cannot send.
async fn zero_window_calls(addr: std::net::SocketAddr) -> HeldCalls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut calls = Vec::new();
    for _ in 0..MAX_CONCURRENT_STREAMS {
        let mut ready = sender.clone().ready().await.unwrap();
        let request = http::Request::post(format!("http://gateway{REFLECTION}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut body) = ready.send_request(request, false).unwrap();
        body.send_data(bytes::Bytes::from_static(CHAT_DESCRIPTORS), true)
            .unwrap();
        calls.push((response, body));
    }
    let mut held = Vec::new();
    let mut heads = 0;
    for (response, body) in calls {
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), response).await {
            heads += 1;
            // Dropped, a stream would be reset (CANCEL), which lets the gateway go.
            held.push((response, body));
        }
    }
    let closed = tokio::spawn(async move {
        let _ = connection.await;
        drop((sender, held));
        Instant::now()
    });
    HeldCalls {
        heads,
        data_bytes: 0,
        closed,
    }
}

/// A connection granting each stream a 1-byte window (raw frames), with
/// [`MAX_CONCURRENT_STREAMS`] reflection calls whose requests never end: each response sends one
/// byte, then its stream waits for window (a response's head and the first byte do not make it
/// idle), and its answer waits in the gateway's HTTP/2 send buffer.
async fn one_byte_window_calls(addr: std::net::SocketAddr) -> HeldCalls {
    let mut raw = RawH2::connect(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1)]).await;
    let block = grpc_request_block(REFLECTION, "application/grpc", &[]);
    let bytes: Vec<u8> = (0..MAX_CONCURRENT_STREAMS)
        .flat_map(|n| {
            let mut call = frame(HEADERS, END_HEADERS, 2 * n + 1, &block);
            call.extend(frame(DATA, 0, 2 * n + 1, CHAT_DESCRIPTORS));
            call
        })
        .collect();
    raw.send(&bytes).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let (heads, data_bytes) = loop {
        let (heads, data_bytes) = {
            let received = raw.received.lock().unwrap();
            (received.headers.len(), received.data_bytes)
        };
        if (heads as u32 >= MAX_CONCURRENT_STREAMS && data_bytes >= heads)
            || Instant::now() > deadline
        {
            break (heads as u32, data_bytes);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let closed = tokio::spawn(async move {
        raw.wait_closed(Duration::from_secs(60))
            .await
            .unwrap_or_else(Instant::now)
    });
    HeldCalls {
        heads,
        data_bytes,
        closed,
    }
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
                    slowest = slowest
                        .zip(answered)
                        .map(|(slowest, at)| slowest.max(at - start));
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
    // Reflection asked for chat's file descriptors (tens of KB each) over and over on one
    // stream, with every window opened wide: the answers fill the socket buffers while the
    // client reads nothing.
    let block = grpc_request_block(REFLECTION, "application/grpc", &[]);
    let request = frame(DATA, 0, 1, CHAT_DESCRIPTORS).repeat(2000);
    let bound = SEND_TIMEOUT.min(KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT) + SLACK;

    target
        .attack(
            Bounds {
                name: "a client that never reads its responses (HTTP/2, reflection answers)",
                rss_growth: mib(16),
                closed_within: Some(bound),
            },
            async move {
                let (mut raw, reader) =
                    RawH2::connect_unread(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 30)]).await;
                let client = reader.local_addr().unwrap();
                let start = Instant::now();
                let mut prelude = window_update(0, 1 << 30);
                prelude.extend(frame(HEADERS, END_HEADERS, 1, &block));
                // Within the gateway's initial receive window (64 KB), which it never has to
                // widen: 2,000 requests whose answers come to tens of MB.
                prelude.extend(&request);
                raw.send(&prelude).await;
                let closed = released(addr, client, bound).await;
                drop(reader);
                Outcome {
                    observed: "2,000 requests sent at once, no answer read; the gateway let go of the connection".to_owned(),
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
    // Asked to close at the idle timeout; a client that never takes the GOAWAY (it sent only the
    // preface) is dropped one keepalive timeout later.
    let bound = IDLE_TIMEOUT + KEEPALIVE_TIMEOUT + SLACK;

    target
        .attack(
            Bounds {
                name: "1,000 half-open connections (nothing, the preface only, half a request line)",
                rss_growth: mib(32),
                closed_within: Some(bound),
            },
            async move {
                let mut connections = Vec::new();
                let mut writers = Vec::new();
                for n in 0..1000 {
                    let Ok(mut tcp) = TcpStream::connect(addr).await else {
                        continue;
                    };
                    let opened = Instant::now();
                    let opening: &[u8] = match n % 3 {
                        0 => b"",
                        1 => PREFACE,
                        _ => b"POST /auth.v1.AuthService/GetJwks HT",
                    };
                    let _ = tcp.write_all(opening).await;
                    connections.push((tcp, opened));
                }
                let mut slowest = Duration::ZERO;
                let mut open = 0;
                for (tcp, opened) in connections {
                    // The write half stays open: dropping it would send FIN.
                    let (reader, writer) = tcp.into_split();
                    writers.push(writer);
                    match closed_unread(reader, bound.saturating_sub(opened.elapsed())).await {
                        Some(at) => slowest = slowest.max(at - opened),
                        None => open += 1,
                    }
                }
                Outcome {
                    observed: format!("{open} of 1000 still open {bound:?} after they opened"),
                    closed_after: (open == 0).then_some(slowest),
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_http1_client_that_never_reads_its_responses_is_disconnected(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    // Pipelined gRPC-Web calls to reflection, whose answers (tens of KB each) fill the socket
    // buffers unread.
    let request = format!(
        "POST {REFLECTION} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
        CHAT_DESCRIPTORS.len()
    );
    let mut request = request.into_bytes();
    request.extend_from_slice(CHAT_DESCRIPTORS);
    let request = request.repeat(1000);
    let bound = SEND_TIMEOUT + SLACK;

    target
        .attack(
            Bounds {
                name: "a client that never reads its responses (HTTP/1.1, pipelined)",
                rss_growth: mib(32),
                closed_within: Some(bound),
            },
            async move {
                let tcp = small_receive_buffer(addr).await;
                let client = tcp.local_addr().unwrap();
                let (reader, mut writer) = tcp.into_split();
                let start = Instant::now();
                let mut sent = 0;
                while start.elapsed() < Duration::from_secs(3) {
                    match tokio::time::timeout(Duration::from_millis(500), writer.write_all(&request)).await {
                        Ok(Ok(())) => sent += 1000,
                        _ => break,
                    }
                }
                let blocked = start.elapsed();
                let closed = released(addr, client, bound).await;
                drop((reader, writer));
                Outcome {
                    observed: format!("{sent} requests sent, no answer read; the gateway stopped reading after {} ms", blocked.as_millis()),
                    closed_after: closed.map(|at| at - start - blocked),
                }
            },
        )
        .await;
}
