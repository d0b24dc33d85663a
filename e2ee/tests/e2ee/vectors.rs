//! Every case of `testdata/vectors.json`. Nothing here writes the file: that is
//! `examples/make_vectors.rs`.

use std::collections::BTreeSet;

use e2ee::{Envelope, ReceivedMessage, RecipientDevice};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{deliver, device, open_plaintext, vectors},
    schema::{anomaly_json, unhex},
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
fn every_envelope_case_is_reproduced_byte_for_byte_except_what_the_wrapped_keys_change() {
    assert!(vectors().envelopes.len() >= 3);
    for case in &vectors().envelopes {
        let expected = Envelope::from(&case.envelope);
        let sender = device(&case.sender);
        let recipients: Vec<RecipientDevice> = case
            .recipients
            .iter()
            .map(|name| device(name).recipient.clone())
            .collect();

        let position = (expected.suite == e2ee::SUITE_V2).then(|| e2ee::ChainPosition {
            counter: expected.sender_counter,
            previous_envelope_hash: expected.previous_envelope_hash.clone().try_into().unwrap(),
            sender_time_ms: expected.sender_time_ms,
        });
        let resealed = e2ee::seal_with(
            &sender.sender(),
            &expected.conversation_id,
            &expected.client_message_id,
            &recipients,
            position.as_ref(),
            &unhex(&case.plaintext),
            &unhex(&case.content_key).try_into().unwrap(),
            &unhex(&case.nonce).try_into().unwrap(),
        )
        .unwrap();

        // V2's digest binds the randomized wrapped keys, and the ciphertext (its associated
        // data is the header) and the signature depend on it: only their lengths compare.
        let without_wrapped_keys = |envelope: &Envelope| {
            let mut envelope = envelope.clone();
            for key in &mut envelope.wrapped_keys {
                key.wrapped_key.clear();
            }
            if envelope.suite == e2ee::SUITE_V2 {
                envelope.ciphertext = vec![0; envelope.ciphertext.len()];
                envelope.signature.clear();
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
        if expected.suite == e2ee::SUITE_V2 {
            assert_eq!(
                hex::encode(e2ee::envelope_hash(&header, &expected.ciphertext).unwrap()),
                case.envelope_hash,
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn the_vectors_hold_both_suites() {
    let suites: BTreeSet<u32> = vectors()
        .envelopes
        .iter()
        .map(|case| case.envelope.suite)
        .collect();

    assert_eq!(suites, BTreeSet::from([e2ee::SUITE_V1, e2ee::SUITE_V2]));
}

#[test]
fn every_envelope_case_verifies_on_the_server_and_opens_for_each_recipient() {
    for case in &vectors().envelopes {
        let envelope = Envelope::from(&case.envelope);
        let sender_key = device(&case.sender).signing_key();

        let digest = envelope
            .verify_as_sent(&sender_key)
            .unwrap()
            .recipients_digest;

        assert_eq!(hex::encode(digest), case.recipients_digest, "{}", case.name);
        for name in &case.recipients {
            let recipient = device(name);
            let delivered = deliver(&envelope, &recipient.device_id);
            let plaintext = open_plaintext(&delivered, recipient, &sender_key)
                .unwrap_or_else(|error| panic!("{} for {name}: {error}", case.name));
            assert_eq!(
                hex::encode(plaintext),
                case.plaintext,
                "{} for {name}",
                case.name
            );

            if envelope.suite != e2ee::SUITE_V1 {
                // V2 needs the inclusion proof that only a delivered copy carries.
                continue;
            }
            let with_every_entry = ReceivedMessage {
                envelope: envelope.clone(),
                recipients_digest: digest.to_vec(),
                recipient_count: 0,
            };
            let plaintext = open_plaintext(&with_every_entry, recipient, &sender_key).unwrap();
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
        let message = case
            .envelope
            .received(&case.recipients_digest, case.recipient_count);

        let error = open_plaintext(&message, opener, &device(&case.sender).signing_key())
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
        "WrappedKeyNotSigned",
        "UnwrapFailed",
        "KeyCommitmentMismatch",
        "DecryptFailed",
        "BadPadding",
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

#[test]
fn every_signature_case_verifies_strictly_as_expected() {
    assert!(vectors().signatures.len() >= 8);
    for case in &vectors().signatures {
        let result = e2ee::primitives::ed25519_verify(
            &unhex(&case.public_key),
            &unhex(&case.message),
            &unhex(&case.signature),
        );

        let outcome = result.map_or_else(|error| error.name().to_owned(), |()| "ok".to_owned());
        assert_eq!(outcome, case.expected, "{}", case.name);
    }
}

#[test]
fn every_bad_recipient_key_is_refused_by_seal() {
    let sender = device("alice-laptop");
    for case in &vectors().bad_recipient_keys {
        let bad = RecipientDevice {
            device_id: device("carol-desktop").device_id.clone(),
            encryption_spki: unhex(&case.encryption_spki),
        };

        let result = e2ee::seal(
            &sender.sender(),
            "c0000000-0000-4000-8000-000000000001",
            "m",
            &[device("bob-phone").recipient.clone(), bad],
            &e2ee::ChainPosition::first(0),
            b"x",
        );

        assert_eq!(
            result.map(|_| ()).map_err(|error| error.name()),
            Err("InvalidRecipientKey"),
            "{}",
            case.name
        );
    }
}

#[test]
fn every_chain_case_opens_and_flags_what_it_says() {
    assert!(!vectors().chains.is_empty());
    for case in &vectors().chains {
        let opener = device(&case.opener);
        let mut chains = e2ee::ConversationChains::default();
        let mut flagged = 0;
        for message in &case.messages {
            let received = message
                .envelope
                .received(&message.recipients_digest, message.recipient_count);
            let sender = device(&message.sender);

            let opened = e2ee::open(
                &received,
                &opener.device_id,
                &opener.keys,
                &sender.signing_key(),
            )
            .unwrap();

            let link = opened.link.unwrap();
            assert_eq!(hex::encode(link.envelope_hash), message.envelope_hash);
            let anomalies: Vec<_> = chains
                .observe(
                    message.sequence,
                    &sender.device_id,
                    &link,
                    message.server_time_ms,
                )
                .iter()
                .map(anomaly_json)
                .collect();
            assert_eq!(
                anomalies, message.anomalies,
                "{} #{}",
                case.name, message.sequence
            );
            flagged += anomalies.len();
        }
        assert!(flagged > 0, "{} flags nothing", case.name);
    }
}
