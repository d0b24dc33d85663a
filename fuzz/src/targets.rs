//! The fuzz targets: one function each, taking the fuzzer's bytes. Each panics only when its
//! property fails (or when the code under test panics, which is a finding too).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use common::grpc_guard::{CheckedRequestBody, RequestChecks, RequestProblem};
use ed25519_dalek::Signer as _;
use http_body::{Body, Frame};
use prost::Message as _;
use proto::chat::v1 as pb;
use tonic::Code;

use crate::fixtures::{self, AUDIENCE, ISSUER, PLAINTEXT, RECIPIENT, SENDER};

/// The server's check of a sent envelope: protobuf bytes → `e2ee::wire` → `verify_as_sent` with
/// the sender's key, then the copies it delivers. Property: no panic, and an envelope the check
/// accepts can be delivered to each of its recipients (what the server does next: a failure
/// there would be an INTERNAL after the message was stored).
pub fn envelope_check(data: &[u8]) {
    let Ok(envelope) = pb::Envelope::decode(data) else {
        return;
    };
    let envelope = e2ee::Envelope::from(envelope);
    let sender_key = fixtures::device(SENDER).signing_key();
    let Ok(check) = envelope.verify_as_sent(&sender_key) else {
        return;
    };
    if envelope.suite == e2ee::SUITE_V2 {
        assert_eq!(check.inclusions.len(), envelope.wrapped_keys.len());
    }
    for key in &envelope.wrapped_keys {
        let delivered = envelope
            .delivered_to(&key.device_id)
            .expect("an accepted envelope is delivered to each of its recipients");
        assert_eq!(delivered.recipients_digest, check.recipients_digest);
    }
}

/// The client's opening of a received message, tampered with: the fuzzer's bytes are edits
/// (3 bytes each: a big-endian offset into the encoded message and a mask XORed into that byte;
/// a 4th byte of 0xff after an edit cuts the message there) applied to
/// [`fixtures::DELIVERED_MESSAGE`]. Property: no panic, and plaintext only for a message whose
/// every protected part is unchanged (then it is the original plaintext).
pub fn open_tampered(data: &[u8]) {
    let original = fixtures::DELIVERED_MESSAGE;
    let mut bytes = original.to_vec();
    for edit in data.chunks(3) {
        let [high, low, mask] = *edit else { break };
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(u16::from_be_bytes([high, low])) % bytes.len();
        if mask == 0 {
            bytes.truncate(at);
        } else {
            bytes[at] ^= mask;
        }
    }
    let Ok(message) = pb::Message::decode(bytes.as_slice()) else {
        return;
    };
    let Ok(received) = e2ee::ReceivedMessage::try_from(message) else {
        return;
    };
    let recipient = fixtures::device(RECIPIENT);
    let sender_key = fixtures::device(SENDER).signing_key();
    let Ok(opened) = e2ee::open(
        &received,
        &recipient.device_id,
        &recipient.keys,
        &sender_key,
    ) else {
        return;
    };
    assert_eq!(
        opened.plaintext, PLAINTEXT,
        "plaintext from a tampered message"
    );
    let original = e2ee::ReceivedMessage::try_from(fixtures::delivered_message().clone())
        .expect("the fixture has an envelope");
    let (was, is) = (&original.envelope, &received.envelope);
    assert_eq!(
        was.header(&original.recipients_digest),
        is.header(&received.recipients_digest),
        "a message opened with a changed header"
    );
    assert_eq!(was.ciphertext, is.ciphertext);
}

/// The token validator. The first byte picks what the rest is:
/// 0. a whole token (any string);
/// 1. a JOSE header (JSON), signed with the validator's key over valid claims;
/// 2. claims (JSON), under a valid header, signed with the validator's key;
/// 3. a signature for a valid token's header and claims;
/// 4. edits (as in [`open_tampered`]) of a valid token.
///
/// Property: no panic, and a token is accepted only with a valid header (`typ` `at+jwt`, `alg`
/// `EdDSA`, the key's `kid`), claims within the rules (issuer, audience, times, lifetime), and,
/// for 3 and 4, claims equal to the valid token's.
pub fn access_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = fixtures::token_signing_key();
    let now = SystemTime::now();
    let valid_claims = token::AccessClaims::new(
        ISSUER,
        AUDIENCE,
        token::Subject {
            user_id: uuid::Uuid::from_u128(1),
            device_id: uuid::Uuid::from_u128(2),
            session_id: uuid::Uuid::from_u128(3),
        },
        now,
        Duration::from_secs(600),
    );
    let valid = key.sign(&valid_claims);
    let mut segments = valid.split('.');
    let (header, claims) = (segments.next().unwrap(), segments.next().unwrap());
    let sign = |header: &str, claims: &str| {
        let input = format!("{header}.{claims}");
        let signature = fixtures::raw_token_signing_key().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    };
    let candidate = match mode % 5 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => sign(&URL_SAFE_NO_PAD.encode(rest), claims),
        2 => sign(header, &URL_SAFE_NO_PAD.encode(rest)),
        3 => format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(rest)),
        _ => {
            let mut bytes = valid.clone().into_bytes();
            for edit in rest.chunks(3) {
                let [high, low, mask] = *edit else { break };
                let at = usize::from(u16::from_be_bytes([high, low])) % bytes.len();
                bytes[at] ^= mask;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    let Ok(accepted) = fixtures::block_on(fixtures::validator().validate(&candidate)) else {
        return;
    };
    if mode % 5 == 1 {
        let header: serde_json::Value =
            serde_json::from_slice(rest).expect("an accepted header is JSON");
        // RFC 9068 §4: "at+jwt" or "application/at+jwt", compared as media types are
        // (case-insensitively), as `token/src/verify.rs` does.
        let typ = header["typ"].as_str().unwrap_or_default();
        assert!(
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
            "{header}"
        );
        assert_eq!(header["alg"], "EdDSA", "{header}");
        assert_eq!(header["kid"], key.kid(), "{header}");
    }
    if matches!(mode % 5, 3 | 4) {
        assert_eq!(
            accepted, valid_claims,
            "a changed token accepted: {candidate}"
        );
    }
    let settings = fixtures::validator().settings();
    let leeway = i64::try_from(settings.leeway.as_secs()).unwrap();
    let max_lifetime = i64::try_from(settings.max_lifetime.as_secs()).unwrap();
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
    assert_eq!(accepted.issuer, ISSUER);
    assert_eq!(accepted.audience, AUDIENCE);
    assert!(accepted.expires_at + leeway >= now, "{accepted:?}");
    assert!(accepted.not_before - leeway <= now, "{accepted:?}");
    assert!(accepted.issued_at - leeway <= now, "{accepted:?}");
    assert!(
        accepted.expires_at - accepted.issued_at <= max_lifetime + leeway,
        "{accepted:?}"
    );
}

/// The largest message [`grpc_request_body`] lets through: small, so that the limit is hit.
const BODY_LIMIT: u32 = 1024;

/// The gRPC framing check every service and the gateway put in front of their handlers
/// (`common::grpc_guard::CheckedRequestBody`), with the gateway's message-size limit. The first
/// byte, plus one, is the size of the pieces the body arrives in (frames split across writes
/// at every offset); the rest is the body. Property: no panic; the data passes unchanged up to
/// the first problem; the outcome is what a plain reading of the whole body gives: OK, or the
/// first frame's problem (UNIMPLEMENTED for the compressed flag, INVALID_ARGUMENT for another
/// flag or a truncated frame, RESOURCE_EXHAUSTED over the limit).
pub fn grpc_request_body(data: &[u8]) {
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let pieces: VecDeque<Bytes> = body
        .chunks(usize::from(piece) + 1)
        .map(Bytes::copy_from_slice)
        .collect();
    let problem = Arc::new(RequestProblem::default());
    let checks = RequestChecks {
        max_message_bytes: Some(BODY_LIMIT),
        message_type: None,
    };
    let mut checked = CheckedRequestBody::new(Pieces(pieces), checks, problem.clone());
    let mut passed = Vec::new();
    let mut outcome = Code::Ok;
    let mut context = Context::from_waker(Waker::noop());
    loop {
        match Pin::new(&mut checked).poll_frame(&mut context) {
            Poll::Ready(Some(Ok(frame))) => {
                passed.extend_from_slice(&frame.into_data().expect("only data frames"));
            }
            Poll::Ready(Some(Err(status))) => {
                outcome = status.code();
                break;
            }
            Poll::Ready(None) => break,
            Poll::Pending => unreachable!("the pieces are all there"),
        }
    }
    assert!(body.starts_with(&passed), "the data passed changed");
    assert_eq!(outcome, plain_reading(body), "body {body:02x?}");
    assert_eq!(problem.get().map(|status| status.code()), {
        (outcome != Code::Ok).then_some(outcome)
    });
    if outcome == Code::Ok {
        assert_eq!(passed, body);
    }
}

/// The outcome of reading `body` as gRPC frames in one piece.
fn plain_reading(mut body: &[u8]) -> Code {
    while !body.is_empty() {
        if body.len() < 5 {
            return Code::InvalidArgument;
        }
        match body[0] {
            0 => {}
            1 => return Code::Unimplemented,
            _ => return Code::InvalidArgument,
        }
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
        if length > BODY_LIMIT {
            return Code::ResourceExhausted;
        }
        let end = 5 + length as usize;
        if body.len() < end {
            return Code::InvalidArgument;
        }
        body = &body[end..];
    }
    Code::Ok
}

/// A request body arriving in the given pieces.
struct Pieces(VecDeque<Bytes>);

impl Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|piece| Ok(Frame::data(piece))))
    }
}

/// The request-message check every service runs before tonic decodes (`grpc_guard::Schemas`,
/// which reads the descriptor sets), against prost's decoding of the generated type. The first
/// byte picks the method, the rest is the message. Property: the check accepts exactly what
/// prost decodes: what it lets through but prost refuses becomes tonic's INTERNAL, and what it
/// refuses but prost reads is a valid request answered INVALID_ARGUMENT.
pub fn grpc_message_schema(data: &[u8]) {
    let Some((&method, message)) = data.split_first() else {
        return;
    };
    let (path, prost_reads) = SCHEMA_METHODS[usize::from(method) % SCHEMA_METHODS.len()];
    let schemas = common::grpc_guard::workspace_schemas();
    let index = schemas
        .request_type(path)
        .unwrap_or_else(|| panic!("{path} is in the descriptor sets"));
    let checked = schemas.check(index, message);
    let decoded = prost_reads(message);
    assert_eq!(
        checked.is_ok(),
        decoded.is_ok(),
        "{path}: the check says {checked:?}, prost says {decoded:?}, for {message:02x?}"
    );
}

type ProstRead = fn(&[u8]) -> Result<(), prost::DecodeError>;

fn reads<M: prost::Message + Default>(bytes: &[u8]) -> Result<(), prost::DecodeError> {
    M::decode(bytes).map(drop)
}

/// Methods whose request types cover what the schemas know: nested and repeated messages, maps,
/// oneofs, enums, strings, bytes, integers of every encoding.
const SCHEMA_METHODS: [(&str, ProstRead); 8] = [
    (
        "/chat.v1.ChatService/SendMessage",
        reads::<pb::SendMessageRequest>,
    ),
    (
        "/chat.v1.ChatService/OpenStream",
        reads::<pb::OpenStreamRequest>,
    ),
    (
        "/chat.v1.ChatService/Subscribe",
        reads::<pb::SubscribeRequest>,
    ),
    (
        "/chat.v1.ChatService/ListMessages",
        reads::<pb::ListMessagesRequest>,
    ),
    (
        "/auth.v1.AuthService/Login",
        reads::<proto::auth::v1::LoginRequest>,
    ),
    (
        "/auth.v1.AuthService/UploadDeviceKeys",
        reads::<proto::auth::v1::UploadDeviceKeysRequest>,
    ),
    (
        "/group.v1.GroupService/AddMembers",
        reads::<proto::group::v1::AddMembersRequest>,
    ),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        reads::<tonic_reflection::pb::v1::ServerReflectionRequest>,
    ),
];

/// A NOTIFY payload from another chat replica (anyone who can NOTIFY on the channel can send
/// one): read without panicking, and every event read is written back as itself
/// (`chat::fuzz_bus_payload`).
pub fn bus_payload(data: &[u8]) {
    chat::fuzz_bus_payload(&String::from_utf8_lossy(data));
}
