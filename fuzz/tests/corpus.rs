//! Replays every committed input of every fuzz target on stable (CI): the corpus
//! (`corpus/<target>/`) and the inputs that once failed (`regressions/<target>/`). A target whose
//! corpus is missing fails: the replay would prove nothing.

use std::path::{Path, PathBuf};

use fuzz::{fixtures, targets};

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(
        corpus.len() >= 2,
        "corpus/{target} has {} inputs: run `cargo run -p fuzz --bin fuzz-seeds`",
        corpus.len()
    );
    let regressions = inputs("regressions", target);
    for (path, input) in corpus.iter().chain(&regressions) {
        let outcome = std::panic::catch_unwind(|| run(input));
        assert!(outcome.is_ok(), "{} fails {target}", path.display());
    }
    println!(
        "{target}: {} corpus inputs and {} regressions replayed",
        corpus.len(),
        regressions.len()
    );
}

#[test]
fn envelope_check() {
    replay("envelope_check", targets::envelope_check);
}

#[test]
fn open_tampered() {
    replay("open_tampered", targets::open_tampered);
}

#[test]
fn access_token() {
    replay("access_token", targets::access_token);
}

#[test]
fn grpc_request_body() {
    replay("grpc_request_body", targets::grpc_request_body);
}

#[test]
fn grpc_message_schema() {
    replay("grpc_message_schema", targets::grpc_message_schema);
}

#[test]
fn bus_payload() {
    replay("bus_payload", targets::bus_payload);
}

/// The fixture the tampering starts from must open, or `open_tampered` tests nothing.
#[test]
fn the_untampered_fixture_opens_to_its_plaintext() {
    let message = e2ee::ReceivedMessage::try_from(fixtures::delivered_message().clone()).unwrap();
    let recipient = fixtures::device(fixtures::RECIPIENT);
    let sender_key = fixtures::device(fixtures::SENDER).signing_key();
    let opened = e2ee::open(&message, &recipient.device_id, &recipient.keys, &sender_key).unwrap();
    assert_eq!(opened.plaintext, fixtures::PLAINTEXT);
}

/// The properties can fail: a tampered token that still validates would be caught.
#[test]
fn the_properties_catch_what_they_claim_to() {
    // A valid token passes mode 0 (a whole token) without tripping the claim checks.
    let valid = fixtures::token_signing_key().sign(&token::AccessClaims::new(
        fixtures::ISSUER,
        fixtures::AUDIENCE,
        token::Subject {
            user_id: uuid::Uuid::from_u128(1),
            device_id: uuid::Uuid::from_u128(2),
            session_id: uuid::Uuid::from_u128(3),
        },
        std::time::SystemTime::now(),
        std::time::Duration::from_secs(600),
    ));
    let accepted = fixtures::block_on(fixtures::validator().validate(&valid));
    assert!(accepted.is_ok(), "{accepted:?}");
    targets::access_token(&[&[0u8][..], valid.as_bytes()].concat());
    // A body cut inside a frame is INVALID_ARGUMENT in both readings (no panic).
    targets::grpc_request_body(&[0, 0, 0, 0, 0, 9, 1, 2]);
}
