//! Attacks that hold resources rather than flood: more streams than the gateway allows, thousands
//! of streams whose responses cannot be sent (zero flow-control window), a huge header list, a
//! client that never reads its responses, and connections that never finish opening.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    frames::{
        CONTINUATION, END_HEADERS, HEADERS, PREFACE, RawH2, SETTINGS_INITIAL_WINDOW_SIZE, frame,
        grpc_request_block, literal, small_receive_buffer, window_update,
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

#[sqlx::test(migrations = "../migrations")]
async fn thousands_of_streams_with_a_zero_window_do_not_make_the_gateway_buffer(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;

    let outcome = target
        .attack(
            Bounds {
                name: "2,000 streams with a zero flow-control window, each with a 40 KB reflection answer ready (20 connections, 500 new streams a second)",
                // One encoded answer held per stream (about 40 KiB) and the stream's state.
                rss_growth: 2000 * 64 * 1024,
                closed_within: None,
            },
            async move {
                let start = Instant::now();
                let mut held = Vec::new();
                for _ in 0..20 {
                    held.push(zero_window_calls(addr).await);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let mut bodies = Vec::new();
                for (_, responses) in held.iter_mut() {
                    for response in responses.drain(..) {
                        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), response).await {
                            bodies.push(response.into_body());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut with_data = 0;
                for body in bodies.iter_mut().step_by(50) {
                    if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), body.data()).await {
                        with_data += 1;
                    }
                }
                Outcome {
                    observed: format!(
                        "{} response heads, {with_data} of {} sampled bodies got a byte (window 0); streams held {} ms, until the client leaves",
                        bodies.len(),
                        bodies.len().div_ceil(50),
                        start.elapsed().as_millis()
                    ),
                    closed_after: None,
                }
            },
        )
        .await;

    assert!(
        outcome.observed.starts_with("2000 response heads, 0 of"),
        "{outcome:?}"
    );
}

type HeldCalls = (
    h2::client::SendRequest<bytes::Bytes>,
    Vec<h2::client::ResponseFuture>,
);

/// A connection that grants no flow-control window to any stream (the `h2` crate, which still
/// answers the gateway's PINGs), with [`MAX_CONCURRENT_STREAMS`] calls on it, each asking
/// reflection for chat's file descriptors: tens of KB the gateway has ready and cannot send.
async fn zero_window_calls(addr: std::net::SocketAddr) -> HeldCalls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut responses = Vec::new();
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
        responses.push(response);
    }
    (sender, responses)
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
    let request = frame(crate::frames::DATA, 0, 1, CHAT_DESCRIPTORS).repeat(2000);
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
