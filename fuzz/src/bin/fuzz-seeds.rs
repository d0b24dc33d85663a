//! Writes the seed corpus of every fuzz target (`corpus/<target>/seed-*`) from what the tests
//! send: sealed envelopes (V1 and V2), a valid access token and its parts, framed requests,
//! bus payloads. With `--fixture`, first writes `fixtures/delivered-message.bin` (a new sealing:
//! the corpus of `open_tampered` then means other edits, so do it only when the format changes).
//!
//! `cargo run -p fuzz --bin fuzz-seeds [-- --fixture]`, from anywhere.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use e2ee::ChainPosition;
use fuzz::fixtures::{self, AUDIENCE, ISSUER, OTHER_RECIPIENT, PLAINTEXT, RECIPIENT, SENDER};
use prost::Message as _;
use proto::chat::v1 as pb;

const CONVERSATION: &str = "c0000000-0000-4000-8000-000000000001";

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if std::env::args().any(|argument| argument == "--fixture") {
        write_fixture(&root);
    }
    let corpus = root.join("corpus");

    let envelopes = sealed_envelopes();
    let encoded: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|envelope| pb::Envelope::from(envelope.clone()).encode_to_vec())
        .collect();
    write(&corpus, "envelope_check", &encoded);

    // No edit (the fixture opens), a flip in the ciphertext's area, a cut.
    write(
        &corpus,
        "open_tampered",
        &[vec![], vec![0x01, 0x00, 0x01], vec![0x00, 0x40, 0x00]],
    );

    let token = fixtures::token_signing_key().sign(&token::AccessClaims::new(
        ISSUER,
        AUDIENCE,
        token::Subject {
            user_id: uuid::Uuid::from_u128(1),
            device_id: uuid::Uuid::from_u128(2),
            session_id: uuid::Uuid::from_u128(3),
        },
        SystemTime::now(),
        Duration::from_secs(600),
    ));
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
        fixtures::token_signing_key().kid()
    );
    let claims = r#"{"iss":"https://auth.fuzz.test","aud":"chat.fuzz.test","sub":"00000000-0000-0000-0000-000000000001","did":"00000000-0000-0000-0000-000000000002","sid":"00000000-0000-0000-0000-000000000003","iat":1700000000,"nbf":1700000000,"exp":1700000600,"jti":"00000000-0000-0000-0000-000000000004"}"#;
    write(
        &corpus,
        "access_token",
        &[
            [&[0u8][..], token.as_bytes()].concat(),
            [&[1u8][..], header.as_bytes()].concat(),
            [&[2u8][..], claims.as_bytes()].concat(),
            vec![3; 65],
            vec![4, 0, 10, 1],
        ],
    );

    let requests: Vec<Vec<u8>> = encoded
        .iter()
        .map(|envelope| {
            pb::SendMessageRequest {
                envelope: Some(pb::Envelope::decode(envelope.as_slice()).unwrap()),
            }
            .encode_to_vec()
        })
        .collect();
    let framed: Vec<Vec<u8>> = requests
        .iter()
        .take(2)
        .flat_map(|request| {
            let short = request[..request.len().min(200)].to_vec();
            [frame(&short), [frame(&short), frame(&[])].concat()]
        })
        .enumerate()
        .map(|(index, body)| [vec![u8::try_from(index * 7).unwrap()], body].concat())
        .collect();
    write(&corpus, "grpc_request_body", &framed);

    let stream_start = pb::OpenStreamRequest {
        request: Some(pb::open_stream_request::Request::Start(pb::StartStream {
            positions: vec![pb::ConversationPosition {
                conversation_id: CONVERSATION.to_owned(),
                sequence: 42,
            }],
        })),
    };
    let list = pb::ListMessagesRequest {
        conversation_id: CONVERSATION.to_owned(),
        direction: 1,
        from_sequence: 7,
        page_size: 50,
        include_all_recipients: true,
    };
    let mut schema_seeds: Vec<Vec<u8>> = requests
        .iter()
        .take(2)
        .map(|request| [&[0u8][..], request].concat())
        .collect();
    schema_seeds.push([&[1u8][..], &stream_start.encode_to_vec()].concat());
    schema_seeds.push([&[3u8][..], &list.encode_to_vec()].concat());
    let login = proto::auth::v1::LoginRequest {
        username: "alice".to_owned(),
        password: "correct horse battery".to_owned(),
        device_id: String::new(),
        device_name: "laptop".to_owned(),
    };
    schema_seeds.push([&[4u8][..], &login.encode_to_vec()].concat());
    write(&corpus, "grpc_message_schema", &schema_seeds);

    write(
        &corpus,
        "bus_payload",
        &[
            format!("m {CONVERSATION} 17").into_bytes(),
            format!(
                "r {CONVERSATION} {} {} 17 12\nt {CONVERSATION} {} {}",
                fixtures::device(SENDER).user_id,
                fixtures::device(SENDER).device_id,
                fixtures::device(RECIPIENT).user_id,
                fixtures::device(RECIPIENT).device_id,
            )
            .into_bytes(),
        ],
    );
}

/// A V2 envelope and a V1 one, each from the sender to both recipients.
fn sealed_envelopes() -> Vec<e2ee::Envelope> {
    let sender = fixtures::device(SENDER);
    let recipients = [
        fixtures::device(RECIPIENT).recipient.clone(),
        fixtures::device(OTHER_RECIPIENT).recipient.clone(),
    ];
    let v2 = e2ee::seal(
        &sender.sender(),
        CONVERSATION,
        "m-0001",
        &recipients,
        &ChainPosition::first(1_700_000_000_000),
        PLAINTEXT,
    )
    .expect("sealing works");
    let v1 = e2ee::seal_with(
        &sender.sender(),
        CONVERSATION,
        "m-0002",
        &recipients[..1],
        None,
        b"hi",
        &[9; 32],
        &[8; 12],
    )
    .expect("sealing works");
    vec![v2, v1]
}

/// Writes the message the fixture holds: the V2 envelope as delivered to the recipient.
fn write_fixture(root: &Path) {
    let envelope = sealed_envelopes().remove(0);
    let delivered = envelope.delivered_to(&fixtures::device(RECIPIENT).device_id);
    let delivered = delivered.expect("delivered to a recipient");
    let message = pb::Message {
        message_id: "01890000-0000-7000-8000-000000000001".to_owned(),
        conversation_id: CONVERSATION.to_owned(),
        sequence: 1,
        sent_at: None,
        envelope: Some(delivered.envelope.into()),
        recipients_digest: delivered.recipients_digest,
        recipient_count: delivered.recipient_count,
        forwarded_keys: Vec::new(),
    };
    let path = root.join("fixtures/delivered-message.bin");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, message.encode_to_vec()).unwrap();
    println!("wrote {}", path.display());
}

fn frame(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).unwrap().to_be_bytes();
    [&[0u8][..], &length, message].concat()
}

fn write(corpus: &Path, target: &str, inputs: &[Vec<u8>]) {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (index, input) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{index}")), input).unwrap();
    }
    println!("{target}: {} seeds", inputs.len());
}
