//! The suite's gRPC-Web clients: raw HTTP/1.1 over TCP (writes split and paced as a test
//! wants) and HTTP/2 through the `h2` crate, and the decoding of a gRPC-Web answer's status.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub const BINARY: &str = "application/grpc-web+proto";
pub const TEXT: &str = "application/grpc-web-text";

/// A gRPC-Web frame header with `flags` and a declared `length`, then `payload`.
pub fn web_frame(flags: u8, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![flags];
    bytes.extend(length.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub fn base64(bytes: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into_bytes()
}

/// A whole HTTP/1.1 gRPC-Web request (the connection closes after it).
pub fn h1_request(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: {content_type}\r\nx-grpc-web: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Writes `parts` on a fresh connection with `gap` between them while reading until the gateway
/// closes (at most `within`): the raw answer, and when the connection was closed. The writes stop
/// when the answer is complete.
pub async fn h1_exchange(
    addr: SocketAddr,
    parts: &[&[u8]],
    gap: Duration,
    within: Duration,
) -> (Vec<u8>, Option<Instant>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let parts: Vec<Vec<u8>> = parts.iter().map(|part| part.to_vec()).collect();
    let writes = tokio::spawn(async move {
        for (n, part) in parts.iter().enumerate() {
            if n > 0 {
                tokio::time::sleep(gap).await;
            }
            if writer.write_all(part).await.is_err() {
                break;
            }
        }
        // Keeps the write half open (no FIN) until the reading is done.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, reader.read_to_end(&mut answer)).await;
    writes.abort();
    (answer, read.is_ok().then(Instant::now))
}

/// The gRPC status in a gRPC-Web answer: in the head (trailers-only), or in the body's trailers
/// frame (binary or base64).
pub fn grpc_status(answer: &[u8]) -> Option<u32> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    if let Some(status) = status_in(head.as_bytes()) {
        return Some(status);
    }
    let mut body = answer[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    if head.contains("grpc-web-text") {
        body = decode_base64_segments(&body);
    }
    status_in(&body)
}

pub fn status_in(bytes: &[u8]) -> Option<u32> {
    let at = bytes
        .windows(12)
        .position(|w| w.eq_ignore_ascii_case(b"grpc-status:"))?;
    let digits: String = bytes[at + 12..]
        .iter()
        .map(|b| char::from(*b))
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 || body.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[(end + 4 + size).min(body.len())..];
    }
    out
}

/// tonic-web encodes each frame on its own, padded: decode the padded segments one by one.
fn decode_base64_segments(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut segment = Vec::new();
    for byte in body {
        segment.push(*byte);
        if segment.len() % 4 == 0 && *byte == b'=' {
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&segment)
                    .unwrap_or_default(),
            );
            segment.clear();
        }
    }
    if !segment.is_empty() {
        out.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&segment)
                .unwrap_or_default(),
        );
    }
    out
}

/// One gRPC-Web call over HTTP/2 with the `h2` crate, the body sent as one DATA frame per part;
/// the status from the head or the body's trailers frame, or what went wrong instead.
pub async fn h2_call(
    sender: &h2::client::SendRequest<Bytes>,
    path: &str,
    content_type: &str,
    parts: &[&[u8]],
) -> Result<u32, String> {
    let request = http::Request::post(format!("http://gateway{path}"))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(())
        .unwrap();
    let mut ready = sender.clone().ready().await.map_err(|e| e.to_string())?;
    let (response, mut body) = ready
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    for (n, part) in parts.iter().enumerate() {
        body.send_data(Bytes::copy_from_slice(part), n + 1 == parts.len())
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    if let Some(status) = response.headers().get("grpc-status") {
        return status
            .to_str()
            .unwrap_or("?")
            .parse()
            .map_err(|_| format!("{response:?}"));
    }
    let head = format!("{response:?}");
    // tonic-web answers in base64 only to clients that accept it.
    let text = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(TEXT.as_bytes()));
    let mut incoming = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = incoming.data().await {
        let chunk = chunk.map_err(|e| format!("{head}: {e}"))?;
        let _ = incoming.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    if text {
        bytes = decode_base64_segments(&bytes);
    }
    status_in(&bytes).ok_or_else(|| format!("{head}: {raw}"))
}

pub async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    sender
}
