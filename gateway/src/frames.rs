//! What the gateway watches of an HTTP/2 connection's frames, below hyper (which exposes neither
//! control frames nor flow control): the frame headers both ways, and the few payloads that move
//! flow-control windows. Two abuses are seen only here (issue 21, section 1):
//!
//! - a flood of PING or SETTINGS frames: each costs the client 9 to 17 bytes and the gateway an
//!   answer, and the connection carries no request, so only the idle timeout ended it. More than
//!   [`MAX_CONTROL_FRAMES`] within [`CONTROL_PERIOD`], with no response frame (HEADERS or DATA)
//!   from the gateway between them, and the connection is closed (GOAWAY ENHANCE_YOUR_CALM where
//!   the GOAWAY can be written at once, then dropped), as grpc-go closes a client that pings more
//!   often than its policy allows;
//! - streams whose client grants no flow-control window: the gateway holds their answers for as
//!   long as the client keeps the connection, which a client with nothing in flight but a zero
//!   window can do for ever. [`FrameWatch::stalled_for`] says for how long a response stream has
//!   been held by the client's windows (its own or the connection's) while no stream of the
//!   connection sent any DATA; the connection loop drops the connection after the send timeout.
//!
//! Only HTTP/2 with prior knowledge (and over TLS: the watch sees the plaintext) is scanned; from
//! the first byte that is not the HTTP/2 preface the watch steps aside.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// More PING and SETTINGS frames (not acknowledgements) than this within [`CONTROL_PERIOD`], with
/// no response frame sent between them, is a flood. A client's keepalive pings every few seconds,
/// or BDP pings (sent while the gateway sends DATA), stay far below.
pub const MAX_CONTROL_FRAMES: u32 = 1_000;
/// The period over which control frames are counted.
pub const CONTROL_PERIOD: Duration = Duration::from_secs(10);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DEFAULT_WINDOW: i64 = 65_535;
/// Streams whose windows are followed; h2 refuses streams beyond `max_concurrent_streams` (the
/// refusal removes them), so this is only a cap against surprises.
const MAX_TRACKED_STREAMS: usize = 10_000;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One connection's watch, shared by its I/O (which feeds it) and its connection loop (which asks
/// whether to drop the connection).
pub struct FrameWatch {
    state: Mutex<State>,
}

impl Default for FrameWatch {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(State {
                mode: Mode::Preface(0),
                inbound: Scanner::default(),
                outbound: Scanner::default(),
                streams: HashMap::new(),
                initial_window: DEFAULT_WINDOW,
                connection_window: DEFAULT_WINDOW,
                highest_stream: 0,
                control_frames: 0,
                control_since: now,
                last_data_sent: now,
                stalled_since: None,
                flooded: false,
            }),
        }
    }
}

impl FrameWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        common::sync::lock(&self.state)
    }

    /// Notes bytes read from the client; `true` once the client has flooded control frames.
    pub fn read(&self, bytes: &[u8]) -> bool {
        let mut state = self.state();
        let rest = match state.mode {
            Mode::Preface(matched) => {
                let n = (PREFACE.len() - matched).min(bytes.len());
                if bytes[..n] != PREFACE[matched..matched + n] {
                    state.mode = Mode::Other;
                    return false;
                }
                state.mode = if matched + n == PREFACE.len() {
                    Mode::Http2
                } else {
                    Mode::Preface(matched + n)
                };
                &bytes[n..]
            }
            Mode::Http2 => bytes,
            Mode::Other => return false,
        };
        let state = &mut *state;
        let mut inbound = std::mem::take(&mut state.inbound);
        inbound.feed(rest, |event| state.inbound_event(event));
        state.inbound = inbound;
        state.flooded
    }

    /// Notes bytes written to the client.
    pub fn wrote(&self, bytes: &[u8]) {
        let mut state = self.state();
        if state.mode != Mode::Http2 {
            return;
        }
        let state = &mut *state;
        let mut outbound = std::mem::take(&mut state.outbound);
        outbound.feed(bytes, |event| state.outbound_event(event));
        state.outbound = outbound;
    }

    /// A GOAWAY ENHANCE_YOUR_CALM to write now, if the gateway's output is between frames (a
    /// frame written in part cannot be interrupted).
    pub fn goaway(&self) -> Option<Vec<u8>> {
        let state = self.state();
        if state.mode != Mode::Http2 || !state.outbound.between_frames() {
            return None;
        }
        let debug = b"too many PING or SETTINGS frames";
        let mut payload = state.highest_stream.to_be_bytes().to_vec();
        payload.extend(ENHANCE_YOUR_CALM.to_be_bytes());
        payload.extend_from_slice(debug);
        let length = u32::try_from(payload.len()).unwrap_or_default();
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend([GOAWAY, 0, 0, 0, 0, 0]);
        frame.extend(payload);
        Some(frame)
    }

    /// How long a response stream has been held by the client's flow-control windows with no
    /// DATA sent on the connection, as of `now` (zero when none is held). Asked periodically:
    /// a stream found held is counted from the first time it is asked.
    pub fn stalled_for(&self, now: Instant) -> Duration {
        let mut state = self.state();
        let held = state.streams.values().any(|stream| {
            stream.responding && (stream.window <= 0 || state.connection_window <= 0)
        });
        if !held {
            state.stalled_since = None;
            return Duration::ZERO;
        }
        let since = *state.stalled_since.get_or_insert(now);
        now.saturating_duration_since(since.max(state.last_data_sent))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// This many bytes of the preface seen so far.
    Preface(usize),
    Http2,
    /// HTTP/1.1: nothing to watch.
    Other,
}

struct State {
    mode: Mode,
    inbound: Scanner,
    outbound: Scanner,
    /// Open streams, by id.
    streams: HashMap<u32, Stream>,
    /// The client's `SETTINGS_INITIAL_WINDOW_SIZE`: every stream's send window starts there.
    initial_window: i64,
    connection_window: i64,
    highest_stream: u32,
    control_frames: u32,
    control_since: Instant,
    last_data_sent: Instant,
    stalled_since: Option<Instant>,
    flooded: bool,
}

struct Stream {
    /// What the gateway may still send on it.
    window: i64,
    /// The gateway has sent its response head.
    responding: bool,
}

impl State {
    fn inbound_event(&mut self, event: Event) {
        match event {
            Event::Frame(frame) => match frame.kind {
                HEADERS if frame.stream > self.highest_stream => {
                    self.highest_stream = frame.stream;
                    if self.streams.len() < MAX_TRACKED_STREAMS {
                        let window = self.initial_window;
                        self.streams.insert(
                            frame.stream,
                            Stream {
                                window,
                                responding: false,
                            },
                        );
                    }
                }
                RST_STREAM => {
                    self.streams.remove(&frame.stream);
                }
                PING | SETTINGS if frame.flags & ACK == 0 => self.control_frame(),
                _ => {}
            },
            Event::WindowIncrement { stream, increment } => {
                let increment = i64::from(increment & 0x7fff_ffff);
                if stream == 0 {
                    self.connection_window += increment;
                } else if let Some(stream) = self.streams.get_mut(&stream) {
                    stream.window += increment;
                }
            }
            Event::Setting { id, value } => {
                if id == SETTINGS_INITIAL_WINDOW_SIZE {
                    let value = i64::from(value);
                    let delta = value - self.initial_window;
                    for stream in self.streams.values_mut() {
                        stream.window += delta;
                    }
                    self.initial_window = value;
                }
            }
        }
    }

    fn outbound_event(&mut self, event: Event) {
        let Event::Frame(frame) = event else {
            return;
        };
        match frame.kind {
            HEADERS | DATA => {
                // A response frame: the client is getting answers, not only flooding.
                self.control_frames = 0;
                if frame.kind == DATA {
                    let length = i64::from(frame.length);
                    self.connection_window -= length;
                    if let Some(stream) = self.streams.get_mut(&frame.stream) {
                        stream.window -= length;
                    }
                    if frame.length > 0 {
                        self.last_data_sent = Instant::now();
                    }
                }
                if frame.flags & END_STREAM != 0 {
                    self.streams.remove(&frame.stream);
                } else if let Some(stream) = self.streams.get_mut(&frame.stream) {
                    stream.responding = true;
                }
            }
            RST_STREAM => {
                self.streams.remove(&frame.stream);
            }
            _ => {}
        }
    }

    fn control_frame(&mut self) {
        if self.control_since.elapsed() > CONTROL_PERIOD {
            self.control_frames = 0;
            self.control_since = Instant::now();
        }
        self.control_frames += 1;
        if self.control_frames > MAX_CONTROL_FRAMES {
            self.flooded = true;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    length: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

enum Event {
    /// A frame's header (its payload may follow in later bytes).
    Frame(FrameHead),
    WindowIncrement {
        stream: u32,
        increment: u32,
    },
    Setting {
        id: u16,
        value: u32,
    },
}

/// Splits a byte stream into frames as it comes, keeping no payload but WINDOW_UPDATE's and
/// SETTINGS' (a few bytes at a time).
#[derive(Default)]
struct Scanner {
    head: [u8; 9],
    head_len: usize,
    /// The frame whose payload is being read, and how much of it is left.
    current: Option<(FrameHead, u32)>,
    unit: [u8; 6],
    unit_len: usize,
}

impl Scanner {
    fn between_frames(&self) -> bool {
        self.current.is_none() && self.head_len == 0
    }

    fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Event)) {
        while !bytes.is_empty() {
            let Some((frame, left)) = self.current else {
                let n = (9 - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len == 9 {
                    let h = self.head;
                    let frame = FrameHead {
                        length: u32::from_be_bytes([0, h[0], h[1], h[2]]),
                        kind: h[3],
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    };
                    self.head_len = 0;
                    self.unit_len = 0;
                    on_event(Event::Frame(frame));
                    if frame.length > 0 {
                        self.current = Some((frame, frame.length));
                    }
                }
                continue;
            };
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
            let (payload, rest) = bytes.split_at(n);
            bytes = rest;
            let read_before = frame.length - left;
            let left = left - u32::try_from(n).unwrap_or(left);
            self.current = (left > 0).then_some((frame, left));
            match frame.kind {
                WINDOW_UPDATE if read_before < 4 => {
                    for &byte in payload.iter().take(4 - read_before as usize) {
                        self.unit[self.unit_len] = byte;
                        self.unit_len += 1;
                    }
                    if self.unit_len == 4 {
                        let u = self.unit;
                        on_event(Event::WindowIncrement {
                            stream: frame.stream,
                            increment: u32::from_be_bytes([u[0], u[1], u[2], u[3]]),
                        });
                    }
                }
                SETTINGS if frame.flags & ACK == 0 => {
                    for &byte in payload {
                        self.unit[self.unit_len] = byte;
                        self.unit_len += 1;
                        if self.unit_len == 6 {
                            let u = self.unit;
                            self.unit_len = 0;
                            on_event(Event::Setting {
                                id: u16::from_be_bytes([u[0], u[1]]),
                                value: u32::from_be_bytes([u[2], u[3], u[4], u[5]]),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        bytes.extend([kind, flags]);
        bytes.extend(stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Feeds `bytes` one byte at a time, as the worst split a socket can make.
    fn read_bytewise(watch: &FrameWatch, bytes: &[u8]) -> bool {
        bytes.iter().fold(false, |_, byte| watch.read(&[*byte]))
    }

    #[test]
    fn http1_is_not_watched() {
        let watch = FrameWatch::default();
        let ping = frame(PING, 0, 0, &[0; 8]).repeat(2_000);
        assert!(!watch.read(b"POST / HTTP/1.1\r\n"));
        assert!(!watch.read(&ping));
        assert!(watch.goaway().is_none());
    }

    #[test]
    fn a_ping_flood_is_seen_across_any_split_and_answers_reset_the_count() {
        let watch = FrameWatch::default();
        assert!(!read_bytewise(&watch, PREFACE));
        let ping = frame(PING, 0, 0, &[7; 8]);
        let acks = frame(PING, ACK, 0, &[7; 8]).repeat(5_000);
        assert!(!watch.read(&acks), "acknowledgements are not counted");
        assert!(!read_bytewise(&watch, &ping.repeat(900)));
        // A response frame from the gateway starts the count again.
        watch.wrote(&frame(HEADERS, 0, 1, &[0x88]));
        assert!(!watch.read(&ping.repeat(1_000)));
        assert!(watch.read(&ping));
        let goaway = watch.goaway().unwrap();
        assert_eq!(goaway[3], GOAWAY);
        assert_eq!(goaway[13..17], ENHANCE_YOUR_CALM.to_be_bytes());
    }

    #[test]
    fn a_settings_flood_is_seen() {
        let watch = FrameWatch::default();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]).repeat(1_001));
        assert!(watch.read(&bytes));
    }

    #[test]
    fn no_goaway_in_the_middle_of_a_frame() {
        let watch = FrameWatch::default();
        watch.read(PREFACE);
        let data = frame(DATA, 0, 1, &[0; 100]);
        watch.wrote(&data[..50]);
        assert!(watch.goaway().is_none());
        watch.wrote(&data[50..]);
        assert!(watch.goaway().is_some());
    }

    #[test]
    fn a_stream_held_by_a_zero_window_is_a_stall_until_the_window_opens() {
        let watch = FrameWatch::default();
        let mut opening = PREFACE.to_vec();
        // The client grants streams 10 bytes, then opens stream 1.
        opening.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 10]));
        opening.extend(frame(HEADERS, 0x4, 1, &[0x83]));
        assert!(!read_bytewise(&watch, &opening));
        let start = Instant::now();
        watch.wrote(&frame(HEADERS, 0x4, 1, &[0x88]));
        assert_eq!(watch.stalled_for(start), Duration::ZERO, "a window left");
        watch.wrote(&frame(DATA, 0, 1, &[0; 10]));
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(watch.stalled_for(later), Duration::ZERO, "first seen");
        assert_eq!(
            watch.stalled_for(later + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        read_bytewise(&watch, &frame(WINDOW_UPDATE, 0, 1, &1_u32.to_be_bytes()));
        assert_eq!(
            watch.stalled_for(later),
            Duration::ZERO,
            "the window opened"
        );
        // A window of zero for every stream, by SETTINGS.
        watch.read(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
        watch.stalled_for(later);
        assert!(watch.stalled_for(later + Duration::from_secs(1)) > Duration::ZERO);
        // The stream ends (the client resets it): nothing held.
        watch.read(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        assert_eq!(
            watch.stalled_for(later + Duration::from_secs(2)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_stream_with_a_window_and_nothing_to_send_is_not_a_stall() {
        let watch = FrameWatch::default();
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(HEADERS, 0x4, 1, &[0x83]));
        watch.read(&opening);
        watch.wrote(&frame(HEADERS, 0x4, 1, &[0x88]));
        watch.wrote(&frame(DATA, 0, 1, &[0; 1_000]));
        let later = Instant::now() + Duration::from_secs(600);
        watch.stalled_for(later);
        assert_eq!(
            watch.stalled_for(later + Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_connection_window_holds_every_stream() {
        let watch = FrameWatch::default();
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(HEADERS, 0x4, 1, &[0x83]));
        opening.extend(frame(HEADERS, 0x4, 3, &[0x83]));
        opening.extend(frame(WINDOW_UPDATE, 0, 1, &100_000_u32.to_be_bytes()));
        watch.read(&opening);
        watch.wrote(&frame(HEADERS, 0x4, 1, &[0x88]));
        watch.wrote(&frame(HEADERS, 0x4, 3, &[0x88]));
        watch.wrote(&frame(DATA, 0, 1, &vec![0; 65_535]));
        let later = Instant::now() + Duration::from_secs(1);
        watch.stalled_for(later);
        assert!(watch.stalled_for(later + Duration::from_secs(1)) > Duration::ZERO);
    }
}
