//! HTTP/2 floods: rapid reset (CVE-2023-44487), CONTINUATION floods (CVE-2024-27316 family), an
//! HPACK bomb, SETTINGS and PING floods. Each is sent with the raw frame writer for
//! [`FLOOD_FOR`], as fast as the gateway takes it, by an attacker that reconnects whenever the
//! gateway cuts it off.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{
    frames::{
        CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PING, RawH2, SETTINGS,
        SETTINGS_INITIAL_WINDOW_SIZE, frame, grpc_request_block, literal, literal_indexed,
        rst_stream, settings,
    },
    harness::{Bounds, Outcome, Target, mib},
};

/// The longest any flood is sent.
const FLOOD_FOR: Duration = Duration::from_secs(3);
/// How long the gateway may take to close a connection it has decided to close.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// A control frame flood is cut off by count (`gateway/src/frames.rs`: more than 1,000 PING or
/// SETTINGS frames within 10 s with no response between them), long before the idle timeout.
const CONTROL_FLOOD_CLOSED_WITHIN: Duration = Duration::from_secs(1);
const GET_JWKS: &str = "/auth.v1.AuthService/GetJwks";

/// Floods the gateway for [`FLOOD_FOR`] as an attacker that reconnects whenever it is cut off:
/// on each connection, `prelude` then the batches `next_batch` makes (numbered from 0 on each
/// connection) until the gateway closes it. `read` says whether the attacker reads what the
/// gateway sends (otherwise it piles up in the socket buffers). The outcome's `closed_after` is
/// the slowest connection's time from its first byte to its close, or `None` if one was still
/// open [`CLOSE_WITHIN`] after the flood's end.
async fn flood(
    addr: SocketAddr,
    read: bool,
    prelude: &[u8],
    mut next_batch: impl FnMut(u32) -> Vec<u8>,
) -> Outcome {
    let start = Instant::now();
    let (mut connections, mut batches) = (0, 0_u64);
    let mut slowest = Some(Duration::ZERO);
    let mut summaries = Vec::new();
    while start.elapsed() < FLOOD_FOR {
        let (mut raw, unread) = if read {
            (RawH2::connect(addr, &[]).await, None)
        } else {
            let (raw, reader) = RawH2::connect_unread(addr, &[]).await;
            (raw, Some(reader))
        };
        let opened = Instant::now();
        connections += 1;
        raw.send(prelude).await;
        // The last connection is flooded until it is closed too (or CLOSE_WITHIN more).
        let mut n = 0;
        while let Some(left) = (FLOOD_FOR + CLOSE_WITHIN).checked_sub(start.elapsed())
            && raw.closed_at().is_none()
        {
            // A gateway that stops reading stops the flood too (the write never completes).
            match tokio::time::timeout(left, raw.send(&next_batch(n))).await {
                Ok(true) => n += 1,
                Ok(false) | Err(_) => break,
            }
        }
        batches += u64::from(n);
        let closed = match unread {
            Some(reader) => closed_unread(reader, CLOSE_WITHIN).await,
            None => raw.wait_closed(CLOSE_WITHIN).await,
        };
        slowest = slowest
            .zip(closed)
            .map(|(slowest, at)| slowest.max(at - opened));
        summaries.push(raw.summary());
        if closed.is_none() {
            break;
        }
    }
    summaries.sort();
    summaries.dedup();
    Outcome {
        observed: format!(
            "{}; {connections} connection(s), {batches} batches",
            summaries.join(" / ")
        ),
        closed_after: slowest,
    }
}

fn bounds(name: &'static str, closed_within: Option<Duration>) -> Bounds {
    Bounds {
        name,
        rss_growth: mib(16),
        closed_within,
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn rapid_reset_is_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let block = grpc_request_block(GET_JWKS, "application/grpc", &[]);
    // 50 streams opened and cancelled at once per write.
    let batch = |n: u32| {
        let mut bytes = Vec::new();
        for i in 0..50 {
            let stream = 2 * (n * 50 + i) + 1;
            bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
            bytes.extend(rst_stream(stream, 0x8));
        }
        bytes
    };

    let name = "HTTP/2 rapid reset (CVE-2023-44487), 50 streams per batch";
    let attack = flood(target.addr, true, &[], batch);
    target
        .attack(bounds(name, Some(CLOSE_WITHIN)), attack)
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_continuation_flood_is_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let opening = frame(
        HEADERS,
        0,
        1,
        &grpc_request_block(GET_JWKS, "application/grpc", &[]),
    );
    let header = frame(CONTINUATION, 0, 1, &literal("x-flood", &[b'a'; 16_000]));

    let name = "CONTINUATION flood, 16 KB frames (CVE-2024-27316)";
    let attack = flood(target.addr, true, &opening, |_| header.clone());
    target
        .attack(bounds(name, Some(CLOSE_WITHIN)), attack)
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_flood_of_empty_continuation_frames_is_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let opening = frame(
        HEADERS,
        0,
        1,
        &grpc_request_block(GET_JWKS, "application/grpc", &[]),
    );
    let empty: Vec<u8> = (0..1000)
        .flat_map(|_| frame(CONTINUATION, 0, 1, &[]))
        .collect();

    let name = "CONTINUATION flood, empty frames (1,000 per batch)";
    let attack = flood(target.addr, true, &opening, |_| empty.clone());
    target
        .attack(bounds(name, Some(CLOSE_WITHIN)), attack)
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_hpack_bomb_is_refused_without_decoding_it_into_memory(db: PgPool) {
    let mut target = Target::start(db).await;
    // One 4,000-byte header enters the dynamic table, then 12,000 one-byte references to it:
    // a 16 KB frame that decodes to 48 MB of header list, on stream after stream.
    let mut bomb = literal_indexed("x-bomb", &[b'b'; 4000]);
    bomb.extend(std::iter::repeat_n(0xbe, 12_000));
    let block = grpc_request_block(GET_JWKS, "application/grpc", &bomb);

    let name = "HPACK bomb (16 KB frames decoding to 48 MB each)";
    let attack = flood(target.addr, true, &[], |n| {
        frame(HEADERS, END_HEADERS | END_STREAM, 2 * n + 1, &block)
    });
    target
        .attack(bounds(name, Some(CLOSE_WITHIN)), attack)
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_settings_flood_from_a_client_that_never_reads_is_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let batch: Vec<u8> = (0..100)
        .flat_map(|_| settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]))
        .collect();

    let name = "SETTINGS flood (100 per batch), acknowledgements never read";
    let attack = flood(target.addr, false, &[], |_| batch.clone());
    target
        .attack(bounds(name, Some(CONTROL_FLOOD_CLOSED_WITHIN)), attack)
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_settings_flood_that_is_read_is_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let batch: Vec<u8> = (0..100).flat_map(|_| frame(SETTINGS, 0, 0, &[])).collect();

    let name = "SETTINGS flood (100 per batch), acknowledgements read";
    let attack = flood(target.addr, true, &[], |_| batch.clone());
    let outcome = target
        .attack(bounds(name, Some(CONTROL_FLOOD_CLOSED_WITHIN)), attack)
        .await;
    assert!(
        outcome.observed.starts_with("GOAWAY ENHANCE_YOUR_CALM;"),
        "{outcome:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_ping_flood_from_a_client_that_never_reads_is_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let batch: Vec<u8> = (0..1000_u64)
        .flat_map(|n| frame(PING, 0, 0, &n.to_be_bytes()))
        .collect();

    let name = "PING flood (1,000 per batch), answers never read";
    let attack = flood(target.addr, false, &[], |_| batch.clone());
    target
        .attack(bounds(name, Some(CONTROL_FLOOD_CLOSED_WITHIN)), attack)
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_ping_flood_that_is_read_is_cut_off(db: PgPool) {
    let mut target = Target::start(db).await;
    let batch: Vec<u8> = (0..1000_u64)
        .flat_map(|n| frame(PING, 0, 0, &n.to_be_bytes()))
        .collect();

    let name = "PING flood (1,000 per batch), answers read";
    let attack = flood(target.addr, true, &[], |_| batch.clone());
    let outcome = target
        .attack(bounds(name, Some(CONTROL_FLOOD_CLOSED_WITHIN)), attack)
        .await;
    assert!(
        outcome.observed.starts_with("GOAWAY ENHANCE_YOUR_CALM;"),
        "{outcome:?}"
    );
}

/// When the connection whose read half is `reader` was closed by the server (FIN or reset), if
/// within `within`. Nothing is read: the kernel reports the close even with unread data
/// waiting, and reading would let a gateway that is stuck writing to this client go on.
pub async fn closed_unread(
    reader: tokio::net::tcp::OwnedReadHalf,
    within: Duration,
) -> Option<Instant> {
    let closed = async {
        loop {
            match reader.ready(tokio::io::Interest::READABLE).await {
                Ok(ready) if !ready.is_read_closed() => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => return Instant::now(),
            }
        }
    };
    tokio::time::timeout(within, closed).await.ok()
}

#[sqlx::test(migrations = "../migrations")]
async fn calls_reset_once_forwarded_do_not_cost_other_clients_their_upstream_connection(
    db: PgPool,
) {
    let mut target = Target::start(db).await;
    let block = grpc_request_block(GET_JWKS, "application/grpc", &[]);
    let addr = target.addr;

    // Unlike the rapid reset above, each call is reset only after the gateway has had time to
    // forward it: every reset then becomes a reset of a stream on the gateway's connection to
    // auth, which all clients share.
    let name =
        "HTTP/2 rapid reset after forwarding: 50 calls opened, reset 5 ms later, 500 a second";
    let attack = async move {
        let start = Instant::now();
        let (mut connections, mut calls) = (0, 0_u32);
        let mut summaries = Vec::new();
        while start.elapsed() < FLOOD_FOR {
            let mut raw = RawH2::connect(addr, &[]).await;
            connections += 1;
            let mut next = 1;
            while start.elapsed() < FLOOD_FOR && raw.closed_at().is_none() {
                let streams: Vec<u32> = (0..50).map(|i| next + 2 * i).collect();
                next += 100;
                let opened: Vec<u8> = streams
                    .iter()
                    .flat_map(|stream| frame(HEADERS, END_HEADERS, *stream, &block))
                    .collect();
                let reset: Vec<u8> = streams
                    .iter()
                    .flat_map(|stream| rst_stream(*stream, 0x8))
                    .collect();
                if !raw.send(&opened).await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                if !raw.send(&reset).await {
                    break;
                }
                calls += 50;
                // 500 calls a second: each is real work for the gateway and auth, and the
                // suite lifts the per-address limit on public calls, as for a client of many
                // addresses (see ABUSE.md, finding 8).
                tokio::time::sleep(Duration::from_millis(95)).await;
            }
            summaries.push(raw.summary());
        }
        summaries.sort();
        summaries.dedup();
        Outcome {
            observed: format!(
                "{}; {connections} connection(s), {calls} calls reset",
                summaries.join(" / ")
            ),
            closed_after: None,
        }
    };
    target.attack(bounds(name, None), attack).await;
}
