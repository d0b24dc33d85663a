//! A minimal HTTP/2 frame writer and reader over TCP, for what the `h2` crate refuses to send:
//! endless CONTINUATION frames, HPACK that expands a thousandfold, streams past the server's
//! limit, resets as fast as the socket takes them. Header blocks are HPACK without Huffman coding
//! and without indexing, except where an attack indexes on purpose.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// Error codes, for the table.
pub fn reason(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        _ => "other",
    }
}

/// One frame: 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend((stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend(id.to_be_bytes());
        payload.extend(value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// An HPACK integer with an `prefix_bits`-bit prefix, `first` holding the pattern bits above it.
pub fn hpack_int(first: u8, prefix_bits: u32, value: usize) -> Vec<u8> {
    let max = (1_usize << prefix_bits) - 1;
    if value < max {
        return vec![first | u8::try_from(value).unwrap()];
    }
    let mut bytes = vec![first | u8::try_from(max).unwrap()];
    let mut rest = value - max;
    while rest >= 128 {
        bytes.push(u8::try_from(rest % 128).unwrap() | 0x80);
        rest /= 128;
    }
    bytes.push(u8::try_from(rest).unwrap());
    bytes
}

fn hpack_string(text: &[u8]) -> Vec<u8> {
    let mut bytes = hpack_int(0, 7, text.len());
    bytes.extend_from_slice(text);
    bytes
}

/// A literal header field without indexing, with a literal name.
pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x00];
    bytes.extend(hpack_string(name.as_bytes()));
    bytes.extend(hpack_string(value));
    bytes
}

/// A literal header field with incremental indexing: it enters the dynamic table at index 62.
pub fn literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x40];
    bytes.extend(hpack_string(name.as_bytes()));
    bytes.extend(hpack_string(value));
    bytes
}

/// The header block of a gRPC POST to `path`: `:method POST`, `:scheme http`, `:path`,
/// `:authority`, `content-type`, `te`, then `extra`.
pub fn grpc_request_block(path: &str, content_type: &str, extra: &[u8]) -> Vec<u8> {
    // Static table: 3 is `:method: POST`, 6 `:scheme: http`; 4 and 1 name `:path` and
    // `:authority` (literal values, without indexing).
    let mut block = vec![0x83, 0x86];
    block.push(0x04);
    block.extend(hpack_string(path.as_bytes()));
    block.push(0x01);
    block.extend(hpack_string(b"gateway"));
    block.extend(literal("content-type", content_type.as_bytes()));
    block.extend(literal("te", b"trailers"));
    block.extend_from_slice(extra);
    block
}

/// What the server sent on a raw connection, as far as the attacks look.
#[derive(Debug, Default)]
pub struct Received {
    /// GOAWAY's error code, if one came.
    pub goaway: Option<u32>,
    /// Streams reset by the server, with the code.
    pub resets: Vec<(u32, u32)>,
    /// Streams that got a HEADERS frame.
    pub headers: Vec<u32>,
    pub data_bytes: usize,
    pub pings: usize,
    pub settings: usize,
}

/// A raw HTTP/2 connection: the writer half for the attack, a reader task recording what comes
/// back (acknowledging the server's SETTINGS, as a client must, unless told not to read at all).
pub struct RawH2 {
    pub writer: OwnedWriteHalf,
    pub received: Arc<Mutex<Received>>,
    closed: watch::Receiver<Option<Instant>>,
}

impl RawH2 {
    /// Connects, sends the preface and `initial` SETTINGS, acknowledges the server's SETTINGS,
    /// and starts reading.
    pub async fn connect(addr: SocketAddr, initial: &[(u16, u32)]) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (reader, writer) = handshake(tcp, initial).await;
        let received = Arc::new(Mutex::new(Received::default()));
        let (closed_tx, closed) = watch::channel(None);
        tokio::spawn(read_frames(reader, received.clone(), closed_tx));
        Self {
            writer,
            received,
            closed,
        }
    }

    /// As [`RawH2::connect`], but never reads again after the handshake: the server's frames
    /// pile up in the socket buffers.
    pub async fn connect_unread(addr: SocketAddr, initial: &[(u16, u32)]) -> (Self, OwnedReadHalf) {
        let (reader, writer) = handshake(small_receive_buffer(addr).await, initial).await;
        let (_, closed) = watch::channel(None);
        let raw = Self {
            writer,
            received: Arc::default(),
            closed,
        };
        (raw, reader)
    }

    /// Writes `bytes`; `false` once the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).await.is_ok()
    }

    /// When the server closed the connection (EOF or reset), if it has.
    pub fn closed_at(&self) -> Option<Instant> {
        *self.closed.borrow()
    }

    /// Waits up to `within` for the server to close the connection; when it did.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<Instant> {
        let _ = tokio::time::timeout(within, self.closed.wait_for(Option::is_some)).await;
        self.closed_at()
    }

    /// Waits up to `within` for the server to close the connection, answer a stream or reset
    /// one, whichever comes first; when it did.
    pub async fn wait_answered(&mut self, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(at) = self.closed_at() {
                return Some(at);
            }
            let answered = {
                let received = self.received.lock().unwrap();
                !received.headers.is_empty() || !received.resets.is_empty()
            };
            if answered {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// A summary for the table.
    pub fn summary(&self) -> String {
        let received = self.received.lock().unwrap();
        let mut parts = Vec::new();
        if let Some(code) = received.goaway {
            parts.push(format!("GOAWAY {}", reason(code)));
        }
        if !received.resets.is_empty() {
            let mut codes: Vec<&str> = received.resets.iter().map(|(_, c)| reason(*c)).collect();
            codes.dedup();
            parts.push(format!(
                "{} RST_STREAM ({})",
                received.resets.len(),
                codes.join(", ")
            ));
        }
        if !received.headers.is_empty() {
            parts.push(format!("{} responses", received.headers.len()));
        }
        if parts.is_empty() {
            parts.push("nothing".to_owned());
        }
        parts.join(", ")
    }
}

/// A connection whose receive buffer is small, so that a client that reads nothing blocks the
/// gateway's writes soon (the kernel would otherwise take megabytes for it).
pub async fn small_receive_buffer(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The preface and SETTINGS both ways, the server's acknowledged.
async fn handshake(tcp: TcpStream, initial: &[(u16, u32)]) -> (OwnedReadHalf, OwnedWriteHalf) {
    tcp.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    writer.write_all(PREFACE).await.unwrap();
    writer.write_all(&settings(initial)).await.unwrap();
    // The server's SETTINGS is its first frame.
    let mut header = [0; 9];
    reader.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], SETTINGS, "the server's first frame");
    let length =
        usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0; length];
    reader.read_exact(&mut payload).await.unwrap();
    writer
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    (reader, writer)
}

async fn read_frames(
    mut reader: OwnedReadHalf,
    received: Arc<Mutex<Received>>,
    closed: watch::Sender<Option<Instant>>,
) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        while buffer.len() >= 9 {
            let length =
                usize::from(buffer[0]) << 16 | usize::from(buffer[1]) << 8 | usize::from(buffer[2]);
            if buffer.len() < 9 + length {
                break;
            }
            let (kind, flags) = (buffer[3], buffer[4]);
            let stream =
                u32::from_be_bytes([buffer[5], buffer[6], buffer[7], buffer[8]]) & 0x7fff_ffff;
            let payload = &buffer[9..9 + length];
            let mut received = received.lock().unwrap();
            match kind {
                GOAWAY if payload.len() >= 8 => {
                    received.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                RST_STREAM if payload.len() >= 4 => {
                    received
                        .resets
                        .push((stream, u32::from_be_bytes(payload[..4].try_into().unwrap())));
                }
                HEADERS => received.headers.push(stream),
                DATA => received.data_bytes += length,
                PING if flags & ACK != 0 => received.pings += 1,
                SETTINGS if flags & ACK == 0 => received.settings += 1,
                _ => {}
            }
            buffer.drain(..9 + length);
        }
    }
    let _ = closed.send(Some(Instant::now()));
}
