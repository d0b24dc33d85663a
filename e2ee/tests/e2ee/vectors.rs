//! Every case of `testdata/vectors.json`. Nothing here writes the file: that is
//! `examples/make_vectors.rs`.

use std::collections::BTreeSet;

use e2ee::{Envelope, ReceivedMessage, RecipientDevice};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{deliver, device, vectors},
    schema::unhex,
};

#[test]
fn every_device_imports_to_the_public_keys_and_fingerprints_of_the_file() {
    for expected in &vectors().devices {
        let public = device(&expected.name).keys.public_keys();

        assert_eq!(
            hex::encode(&public.encryption_spki),
            expected.encryption_spki
        );
        assert_eq!(
            hex::encode(public.encryption_key_fingerprint),
            expected.encryption_key_fingerprint
        );
        assert_eq!(
            hex::encode(public.signing_public_key),
            expected.signing_public_key
        );
        assert_eq!(
            hex::encode(public.signing_key_fingerprint),
            expected.signing_key_fingerprint
        );
    }
}

#[test]
fn every_recipients_digest_case_matches() {
    assert!(!vectors().recipients_digests.is_empty());
    for case in &vectors().recipients_digests {
        let fingerprints: Vec<Vec<u8>> = case
            .recipients
            .iter()
            .map(|recipient| unhex(&recipient.key_fingerprint))
            .collect();

        let digest = e2ee::recipients_digest(
            case.recipients
                .iter()
                .zip(&fingerprints)
                .map(|(recipient, fingerprint)| (recipient.device_id.as_str(), &fingerprint[..])),
        )
        .unwrap();

        assert_eq!(hex::encode(digest), case.digest, "{}", case.comment);
        assert_eq!(
            hex::encode(Sha256::digest(unhex(&case.encoded))),
            case.digest,
            "{}",
            case.comment
        );
        let mut sorted: Vec<&str> = case
            .recipients
            .iter()
            .map(|r| r.device_id.as_str())
            .collect();
        sorted.sort_by_key(|id| id.as_bytes());
        assert_eq!(sorted, case.sorted_device_ids, "{}", case.comment);
    }
}

#[test]
fn every_envelope_case_is_reproduced_byte_for_byte_except_the_randomized_wrapped_keys() {
    assert!(vectors().envelopes.len() >= 3);
    for case in &vectors().envelopes {
        let expected = Envelope::from(&case.envelope);
        let sender = device(&case.sender);
        let recipients: Vec<RecipientDevice> = case
            .recipients
            .iter()
            .map(|name| device(name).recipient.clone())
            .collect();

        let resealed = e2ee::seal_with(
            &sender.sender(),
            &expected.conversation_id,
            &expected.client_message_id,
            &recipients,
            &unhex(&case.plaintext),
            &unhex(&case.content_key).try_into().unwrap(),
            &unhex(&case.nonce).try_into().unwrap(),
        )
        .unwrap();

        let without_wrapped_keys = |envelope: &Envelope| {
            let mut envelope = envelope.clone();
            for key in &mut envelope.wrapped_keys {
                key.wrapped_key.clear();
            }
            envelope
        };
        assert_eq!(
            without_wrapped_keys(&resealed),
            without_wrapped_keys(&expected),
            "{}",
            case.name
        );
        let digest = expected.recipients_digest().unwrap();
        let header = expected.header(&digest);
        assert_eq!(hex::encode(digest), case.recipients_digest, "{}", case.name);
        assert_eq!(
            hex::encode(e2ee::key_commitment(
                &unhex(&case.content_key).try_into().unwrap()
            )),
            case.key_commitment,
            "{}",
            case.name
        );
        assert_eq!(
            hex::encode(e2ee::canonical_header(&header).unwrap()),
            case.canonical_header,
            "{}",
            case.name
        );
        assert_eq!(
            hex::encode(e2ee::signed_message(&header, &expected.ciphertext).unwrap()),
            case.signed_message,
            "{}",
            case.name
        );
    }
}

#[test]
fn every_envelope_case_verifies_on_the_server_and_opens_for_each_recipient() {
    for case in &vectors().envelopes {
        let envelope = Envelope::from(&case.envelope);
        let sender_key = device(&case.sender).signing_key();

        let digest = envelope.verify_as_sent(&sender_key).unwrap();

        assert_eq!(hex::encode(digest), case.recipients_digest, "{}", case.name);
        for name in &case.recipients {
            let recipient = device(name);
            let delivered = deliver(&envelope, &recipient.device_id);
            let plaintext = e2ee::open(
                &delivered,
                &recipient.device_id,
                &recipient.keys,
                &sender_key,
            )
            .unwrap_or_else(|error| panic!("{} for {name}: {error}", case.name));
            assert_eq!(
                hex::encode(plaintext),
                case.plaintext,
                "{} for {name}",
                case.name
            );

            let with_every_entry = ReceivedMessage {
                envelope: envelope.clone(),
                recipients_digest: digest.to_vec(),
            };
            let plaintext = e2ee::open(
                &with_every_entry,
                &recipient.device_id,
                &recipient.keys,
                &sender_key,
            )
            .unwrap();
            assert_eq!(
                hex::encode(plaintext),
                case.plaintext,
                "{} for {name}",
                case.name
            );
        }
    }
}

#[test]
fn every_negative_case_fails_with_its_expected_error() {
    for case in &vectors().negative {
        let opener = device(&case.opener);
        let message = ReceivedMessage {
            envelope: Envelope::from(&case.envelope),
            recipients_digest: unhex(&case.recipients_digest),
        };

        let error = e2ee::open(
            &message,
            &opener.device_id,
            &opener.keys,
            &device(&case.sender).signing_key(),
        )
        .expect_err(&case.name);

        assert_eq!(error.name(), case.expected_error, "{}: {error}", case.name);
    }
}

#[test]
fn the_negative_cases_cover_every_way_open_can_fail() {
    let covered: BTreeSet<&str> = vectors()
        .negative
        .iter()
        .map(|case| case.expected_error.as_str())
        .collect();

    for name in [
        "UnsupportedSuite",
        "Malformed",
        "BadSignature",
        "NoKeyForThisDevice",
        "KeyFingerprintMismatch",
        "UnwrapFailed",
        "KeyCommitmentMismatch",
        "DecryptFailed",
    ] {
        assert!(covered.contains(name), "no negative case expects {name}");
    }
}

#[test]
fn every_safety_number_case_matches_from_both_sides() {
    assert!(!vectors().safety_numbers.is_empty());
    for case in &vectors().safety_numbers {
        let decode = |list: &[String]| -> Vec<[u8; 32]> {
            list.iter()
                .map(|fingerprint| unhex(fingerprint).try_into().unwrap())
                .collect()
        };
        let (a, b) = (decode(&case.fingerprints_a), decode(&case.fingerprints_b));

        assert_eq!(
            e2ee::safety_number(&case.user_a, &a, &case.user_b, &b),
            case.safety_number,
            "{}",
            case.comment
        );
        assert_eq!(
            e2ee::safety_number(&case.user_b, &b, &case.user_a, &a),
            case.safety_number,
            "{}",
            case.comment
        );
    }
}
