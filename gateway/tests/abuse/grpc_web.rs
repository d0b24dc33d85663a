//! gRPC-Web abuse over HTTP/1.1 (raw TCP) and HTTP/2 (the `h2` crate): malformed length
//! prefixes, flags and base64, requests split across writes at every offset, bodies and heads
//! that trickle in (slowloris), and CORS preflights from origins that are not allowed.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    frames::{CONTINUATION, HEADERS, RawH2, frame, grpc_request_block},
    harness::{
        ALLOWED_ORIGIN, Bounds, HEADER_READ_TIMEOUT, IDLE_TIMEOUT, MAX_MESSAGE_BYTES, Outcome,
        Target, UNARY_TIMEOUT, mib,
    },
    web_client::{
        BINARY, TEXT, base64, grpc_status, h1_exchange, h1_request, h2_call, h2_connect, web_frame,
    },
};

const GET_JWKS: &str = "/auth.v1.AuthService/GetJwks";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
const OK: u32 = 0;
const INVALID_ARGUMENT: u32 = 3;
const RESOURCE_EXHAUSTED: u32 = 8;
const OUT_OF_RANGE: u32 = 11;
const UNIMPLEMENTED: u32 = 12;
const SLACK: Duration = Duration::from_secs(2);

/// Every malformed body, the content type it is sent with, and the status it must get.
fn malformed_cases() -> Vec<(&'static str, &'static str, Vec<u8>, u32)> {
    let junk = [b'j'; 10];
    let mut cases = Vec::new();
    for path in [GET_JWKS, HEALTH] {
        // A finding left to `common::grpc_guard` (ABUSE.md): the gateway's own services get no
        // message size limit from the guard, so tonic's own (4 MiB) answers OUT_OF_RANGE.
        let too_large = if path == HEALTH {
            OUT_OF_RANGE
        } else {
            RESOURCE_EXHAUSTED
        };
        cases.extend([
            (path, BINARY, web_frame(0, 100, &junk), INVALID_ARGUMENT),
            (path, BINARY, web_frame(0, u32::MAX, &junk), too_large),
            (
                path,
                BINARY,
                web_frame(0, MAX_MESSAGE_BYTES + 1, &junk),
                too_large,
            ),
            (path, BINARY, vec![0, 0, 0], INVALID_ARGUMENT),
            (path, BINARY, web_frame(0x80, 0, &[]), INVALID_ARGUMENT),
            (path, BINARY, web_frame(0x02, 0, &[]), INVALID_ARGUMENT),
            (path, BINARY, web_frame(0x01, 0, &[]), UNIMPLEMENTED),
            (
                path,
                TEXT,
                base64(&web_frame(0, 100, &junk)),
                INVALID_ARGUMENT,
            ),
            (
                path,
                TEXT,
                base64(&web_frame(0x80, 0, &[])),
                INVALID_ARGUMENT,
            ),
            (path, TEXT, b"!!!!".to_vec(), INVALID_ARGUMENT),
            (path, TEXT, b"AAAAA".to_vec(), INVALID_ARGUMENT),
            (path, TEXT, b"AAAA!AAA".to_vec(), INVALID_ARGUMENT),
            (path, TEXT, b"AAAAAA-_".to_vec(), INVALID_ARGUMENT),
        ]);
    }
    cases
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_grpc_web_requests_get_their_status_under_load(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;

    target
        .attack(
            Bounds {
                name: "malformed gRPC-Web (length prefixes, flags, base64), HTTP/1.1 and HTTP/2, 4 clients for 3 s",
                rss_growth: mib(32),
                closed_within: None,
            },
            async move {
                let clients = (0..4).map(|_| {
                    tokio::spawn(async move {
                        let sender = h2_connect(addr).await;
                        let start = Instant::now();
                        let mut wrong = Vec::new();
                        let mut n = 0;
                        while start.elapsed() < Duration::from_secs(3) {
                            for (path, content_type, body, expected) in malformed_cases() {
                                let request = h1_request(path, content_type, &body);
                                let (answer, _) = h1_exchange(addr, &[&request], Duration::ZERO, Duration::from_secs(5)).await;
                                let over_h1 = grpc_status(&answer);
                                let over_h2 = h2_call(&sender, path, content_type, &[&body]).await.ok();
                                n += 2;
                                for (protocol, status) in [("HTTP/1.1", over_h1), ("HTTP/2", over_h2)] {
                                    if status != Some(expected) {
                                        wrong.push(format!("{protocol} {path} {content_type} {body:02x?}: {status:?}, expected {expected}"));
                                    }
                                }
                            }
                        }
                        (n, wrong)
                    })
                });
                let mut total = 0;
                let mut wrong = Vec::new();
                for client in clients.collect::<Vec<_>>() {
                    let (n, mut w) = client.await.unwrap();
                    total += n;
                    wrong.append(&mut w);
                }
                wrong.dedup();
                assert!(wrong.is_empty(), "{} wrong answers: {wrong:#?}", wrong.len());
                Outcome {
                    observed: format!("{total} requests, each answered with its status (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED)"),
                    closed_after: None,
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_oversized_length_prefix_is_refused_before_its_body_arrives(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;

    target
        .attack(
            Bounds {
                name: "4 GiB length prefix, then 1 GiB of body as fast as it goes (HTTP/1.1)",
                rss_growth: mib(32),
                closed_within: Some(Duration::from_secs(3)),
            },
            async move {
                let start = Instant::now();
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST {GET_JWKS} HTTP/1.1\r\nhost: gateway\r\ncontent-type: {BINARY}\r\n\
                     x-grpc-web: 1\r\ncontent-length: {}\r\n\r\n",
                    1_u64 << 30
                );
                tcp.write_all(head.as_bytes()).await.unwrap();
                tcp.write_all(&web_frame(0, u32::MAX, &[])).await.unwrap();
                let (mut reader, mut writer) = tcp.into_split();
                let junk = vec![b'j'; 64 * 1024];
                let flood = tokio::spawn(async move {
                    let mut sent = 0_u64;
                    while sent < 1 << 30 && writer.write_all(&junk).await.is_ok() {
                        sent += junk.len() as u64;
                    }
                    sent
                });
                let mut answer = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer))
                        .await;
                let closed = read.is_ok().then(|| start.elapsed());
                flood.abort();
                let status = grpc_status(&answer);
                assert_eq!(
                    status,
                    Some(RESOURCE_EXHAUSTED),
                    "{}",
                    String::from_utf8_lossy(&answer)
                );
                Outcome {
                    observed: "RESOURCE_EXHAUSTED, the rest of the body unread, connection closed"
                        .to_owned(),
                    closed_after: closed,
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn requests_split_across_writes_at_every_offset_are_answered_alike(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    // GetJwks with an unknown field, so that the body is longer than a frame header.
    let mut message = vec![0x7a, 20];
    message.extend([b'x'; 20]);
    let body = web_frame(0, message.len() as u32, &message);

    target
        .attack(
            Bounds {
                name: "gRPC-Web requests split in two writes at every offset (HTTP/1.1 head and body, HTTP/2 body)",
                rss_growth: mib(32),
                closed_within: None,
            },
            async move {
                let mut n = 0;
                for (content_type, body) in [(BINARY, body.clone()), (TEXT, base64(&body))] {
                    let request = h1_request(GET_JWKS, content_type, &body);
                    for offset in 1..request.len() {
                        let (first, second) = request.split_at(offset);
                        let (answer, _) = h1_exchange(addr, &[first, second], Duration::from_millis(2), Duration::from_secs(5)).await;
                        assert_eq!(grpc_status(&answer), Some(OK), "HTTP/1.1 {content_type} split at {offset}: {}", String::from_utf8_lossy(&answer));
                        n += 1;
                    }
                    let sender = h2_connect(addr).await;
                    for offset in 1..body.len() {
                        let (first, second) = body.split_at(offset);
                        let status = h2_call(&sender, GET_JWKS, content_type, &[first, second]).await;
                        assert_eq!(status, Ok(OK), "HTTP/2 {content_type} split at {offset}");
                        n += 1;
                    }
                }
                Outcome {
                    observed: format!("{n} split requests, every one OK"),
                    closed_after: None,
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn bodies_that_never_end_are_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    let bound = UNARY_TIMEOUT + SLACK;

    target
        .attack(
            Bounds {
                name: "slowloris on the body: 200 unary calls (proxied and the gateway's own) sending a byte per 500 ms (HTTP/1.1)",
                rss_growth: mib(32),
                closed_within: Some(bound),
            },
            async move {
                let start = Instant::now();
                let calls = (0..200).map(|n| {
                    tokio::spawn(async move {
                        let path = if n % 2 == 0 { GET_JWKS } else { HEALTH };
                        let head = format!(
                            "POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: {BINARY}\r\n\
                             x-grpc-web: 1\r\ncontent-length: 1005\r\n\r\n"
                        );
                        let mut parts: Vec<Vec<u8>> = vec![head.into_bytes(), web_frame(0, 1000, &[])];
                        parts.extend((0..1000).map(|_| vec![0x7a]));
                        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                        let (answer, closed) = h1_exchange(addr, &parts, Duration::from_millis(500), bound).await;
                        (path, grpc_status(&answer), closed)
                    })
                });
                let mut last = start;
                let mut statuses = Vec::new();
                let mut open = 0;
                for call in calls.collect::<Vec<_>>() {
                    let (path, status, closed) = call.await.unwrap();
                    statuses.push(format!("{path}: {status:?}"));
                    match closed {
                        Some(at) => last = last.max(at),
                        None => open += 1,
                    }
                }
                statuses.sort();
                statuses.dedup();
                Outcome {
                    observed: format!("{} ; {open} of 200 still open", statuses.join(", ")),
                    closed_after: (open == 0).then(|| last - start),
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn heads_that_never_end_are_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    let bound = HEADER_READ_TIMEOUT.max(IDLE_TIMEOUT) + SLACK;

    target
        .attack(
            Bounds {
                name: "slowloris on the headers: 200 HTTP/1.1 heads and 50 HTTP/2 header blocks, a byte per 500 ms",
                rss_growth: mib(32),
                closed_within: Some(bound),
            },
            async move {
                let start = Instant::now();
                let h1 = (0..200).map(|_| {
                    tokio::spawn(async move {
                        let mut parts: Vec<Vec<u8>> = vec![format!("POST {GET_JWKS} HTTP/1.1\r\nx-slow: ").into_bytes()];
                        parts.extend((0..1000).map(|_| b"s".to_vec()));
                        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                        h1_exchange(addr, &parts, Duration::from_millis(500), bound).await.1
                    })
                });
                let h2 = (0..50).map(|_| {
                    tokio::spawn(async move {
                        let mut raw = RawH2::connect(addr, &[]).await;
                        let block = grpc_request_block(GET_JWKS, "application/grpc", &[]);
                        raw.send(&frame(HEADERS, 0, 1, &block)).await;
                        while raw.closed_at().is_none() && start.elapsed() < bound {
                            if !raw.send(&frame(CONTINUATION, 0, 1, &[0x00])).await {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        raw.wait_closed(bound.saturating_sub(start.elapsed())).await
                    })
                });
                let tasks: Vec<_> = h1.chain(h2).collect();
                let mut last = start;
                let mut open = 0;
                for task in tasks {
                    match task.await.unwrap() {
                        Some(at) => last = last.max(at),
                        None => open += 1,
                    }
                }
                Outcome {
                    observed: format!("{open} of 250 still open"),
                    closed_after: (open == 0).then(|| last - start),
                }
            },
        )
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn preflights_from_disallowed_origins_get_no_cors_grant(db: PgPool) {
    let mut target = Target::start(db).await;
    let addr = target.addr;
    let preflight = |origin: &str, close: bool| {
        format!(
            "OPTIONS {GET_JWKS} HTTP/1.1\r\nhost: gateway\r\norigin: {origin}\r\n\
             access-control-request-method: POST\r\n\
             access-control-request-headers: content-type,x-grpc-web,authorization\r\n{}\r\n",
            if close { "connection: close\r\n" } else { "" }
        )
    };

    target
        .attack(
            Bounds {
                name: "1,500 CORS preflights from disallowed origins (5 connections, 500 a second, pipelined)",
                rss_growth: mib(32),
                closed_within: None,
            },
            async move {
                // 5 connections, each sending 10 pipelined preflights every 100 ms for 3 s.
                let connections = (0..5).map(|c| {
                    let batches: Vec<Vec<u8>> = (0..30)
                        .map(|batch| {
                            let mut requests = String::new();
                            for n in 0..10 {
                                let origin = match n % 4 {
                                    0 => "http://evil.example".to_owned(),
                                    1 => "null".to_owned(),
                                    2 => format!("{ALLOWED_ORIGIN}.evil.example"),
                                    _ => format!("http://{c}.allowed.example"),
                                };
                                requests.push_str(&preflight(&origin, batch == 29 && n == 9));
                            }
                            requests.into_bytes()
                        })
                        .collect();
                    tokio::spawn(async move {
                        let parts: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
                        h1_exchange(addr, &parts, Duration::from_millis(100), Duration::from_secs(10)).await.0
                    })
                });
                let mut answers = 0;
                let mut grants = 0;
                for connection in connections.collect::<Vec<_>>() {
                    let text = String::from_utf8_lossy(&connection.await.unwrap()).to_ascii_lowercase();
                    answers += text.matches("http/1.1 ").count();
                    grants += text.matches("access-control-allow-origin").count();
                }
                let (allowed, _) = h1_exchange(addr, &[preflight(ALLOWED_ORIGIN, true).as_bytes()], Duration::ZERO, Duration::from_secs(5)).await;
                let allowed = String::from_utf8_lossy(&allowed).to_ascii_lowercase();
                assert_eq!(answers, 1500, "every preflight is answered");
                assert_eq!(grants, 0, "no disallowed origin is granted access");
                assert!(allowed.contains(&format!("access-control-allow-origin: {ALLOWED_ORIGIN}")), "{allowed}");
                Outcome {
                    observed: format!("{answers} answered, {grants} with Access-Control-Allow-Origin; the allowed origin still granted"),
                    closed_after: None,
                }
            },
        )
        .await;
}
