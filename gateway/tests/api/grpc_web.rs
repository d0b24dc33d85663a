//! A raw gRPC-Web call over HTTP/1.1 (one request on a fresh TCP connection), for the cases a
//! browser client cannot produce or does not show: malformed bodies, and the exact shape of an
//! answer (a status in the head, or in a trailers frame of the body).

use std::net::SocketAddr;

use base64::Engine as _;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What came back, decoded.
#[derive(Debug)]
pub struct GrpcWebResponse {
    pub raw_head: String,
    /// The messages of the body's data frames.
    pub messages: Vec<Vec<u8>>,
    /// The body's trailers frame, as `name: value` lines.
    pub trailers: Option<String>,
}

/// Sends `body` (already gRPC-Web framed; base64 for `application/grpc-web-text`) to `path`.
pub async fn call(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
) -> GrpcWebResponse {
    let head = format!(
        "POST {path} HTTP/1.1\r\ncontent-type: {content_type}\r\nx-grpc-web: 1{extra_headers}"
    );
    let response = crate::helpers::http1_request(addr, &head, body).await;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&response)));
    let raw_head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut body = response[split + 4..].to_vec();
    if raw_head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    if raw_head.to_ascii_lowercase().contains("grpc-web-text") {
        body = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap_or_else(|error| panic!("{error}: {raw_head}"));
    }
    let mut messages = Vec::new();
    let mut trailers = None;
    let mut rest = body.as_slice();
    while rest.len() >= 5 {
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = rest[5..5 + length].to_vec();
        if rest[0] & 0x80 != 0 {
            trailers = Some(String::from_utf8_lossy(&payload).into_owned());
        } else {
            messages.push(payload);
        }
        rest = &rest[5 + length..];
    }
    GrpcWebResponse {
        raw_head,
        messages,
        trailers,
    }
}

impl GrpcWebResponse {
    /// The HTTP status code.
    pub fn http_status(&self) -> u16 {
        self.raw_head[9..12].parse().unwrap()
    }

    /// Whether the status came in the head (a trailers-only answer).
    pub fn status_in_head(&self) -> bool {
        self.header_in(&self.raw_head, "grpc-status").is_some()
    }

    /// The status the client gets: from the trailers frame, else from the head.
    pub fn status(&self) -> Status {
        let source = self.trailers.as_deref().unwrap_or(&self.raw_head);
        let code = self
            .header_in(source, "grpc-status")
            .unwrap_or_else(|| panic!("no grpc-status: {self:?}"));
        let message = self.header_in(source, "grpc-message").unwrap_or_default();
        let message = percent_decode(&message);
        let details = self
            .header_in(source, "grpc-status-details-bin")
            .map(|value| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(value.trim_end_matches('='))
                    .unwrap()
            })
            .unwrap_or_default();
        Status::with_details(
            Code::from(code.parse::<i32>().unwrap()),
            message,
            details.into(),
        )
    }

    /// The `ErrorInfo` reason of the status, if any.
    pub fn reason(&self) -> Option<String> {
        self.status()
            .get_error_details()
            .error_info()
            .map(|info| info.reason.clone())
    }

    fn header_in(&self, block: &str, name: &str) -> Option<String> {
        block.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && index + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[index + 1..index + 3], 16)
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|window| window == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// One gRPC-Web data frame holding `message`.
pub fn frame(message: &[u8]) -> Vec<u8> {
    testkit::grpc_frame(message)
}
