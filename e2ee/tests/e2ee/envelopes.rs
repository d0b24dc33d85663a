//! Round trips, delivery as the server does it, and tampering with every bit of every field.

use e2ee::{Envelope, Error, ReceivedMessage, RecipientDevice};
use ed25519_dalek::{Signer, SigningKey, pkcs8::DecodePrivateKey};

use crate::{
    helpers::{TestDevice, deliver, device, first_position, open_plaintext, vectors},
    schema::unhex,
};

const CONVERSATION: &str = "c0000000-0000-4000-8000-0000000000aa";

/// alice's laptop sends to bob's two devices, alice's phone and carol.
fn sender() -> &'static TestDevice {
    device("alice-laptop")
}

fn recipient_names() -> [&'static str; 4] {
    ["bob-phone", "bob-laptop", "alice-phone", "carol-desktop"]
}

fn recipients() -> Vec<RecipientDevice> {
    recipient_names()
        .iter()
        .map(|name| device(name).recipient.clone())
        .collect()
}

fn seal(plaintext: &[u8]) -> Envelope {
    e2ee::seal(
        &sender().sender(),
        CONVERSATION,
        "m-1",
        &recipients(),
        &first_position(),
        plaintext,
    )
    .unwrap()
}

/// Opens `message` as bob's phone, from alice's laptop.
fn open_as_bob(message: &ReceivedMessage) -> Result<Vec<u8>, Error> {
    open_plaintext(message, device("bob-phone"), &sender().signing_key())
}

/// Signs `envelope` again with `signer`'s key, as a dishonest sender would.
fn resign(message: &mut ReceivedMessage, signer: &str) {
    let private = &vectors().device(signer).signing_private_pkcs8;
    let key = SigningKey::from_pkcs8_der(&unhex(private)).unwrap();
    let envelope = &message.envelope;
    let signed = e2ee::signed_message(
        &envelope.header(&message.recipients_digest),
        &envelope.ciphertext,
    )
    .unwrap();
    message.envelope.signature = key.sign(&signed).to_bytes().to_vec();
}

/// For each bit of the bytes `field` selects (every `step`-th bit), flips it in a copy of
/// `message`, optionally re-signs as alice, and expects `open_as_bob` to fail with `expected`.
fn flip_every_bit(
    message: &ReceivedMessage,
    what: &str,
    step: usize,
    resigned: bool,
    field: impl Fn(&mut ReceivedMessage) -> &mut Vec<u8>,
    expected: &Error,
) {
    let mut copy = message.clone();
    let n_bits = field(&mut copy).len() * 8;
    assert!(n_bits > 0, "{what} is empty");
    for bit in (0..n_bits).step_by(step) {
        let mut tampered = message.clone();
        field(&mut tampered)[bit / 8] ^= 1 << (bit % 8);
        if resigned {
            resign(&mut tampered, "alice-laptop");
        }

        let result = open_as_bob(&tampered);

        assert_eq!(result.as_ref(), Err(expected), "{what}, bit {bit}");
    }
}

#[test]
fn every_recipient_opens_its_own_delivered_copy_for_many_plaintext_sizes() {
    for size in [0, 1, 15, 16, 17, 1000, 64 * 1024] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let envelope = seal(&plaintext);

        for name in recipient_names() {
            let recipient = device(name);
            let delivered = deliver(&envelope, &recipient.device_id);
            assert_eq!(delivered.envelope.wrapped_keys.len(), 1);

            let opened = open_plaintext(&delivered, recipient, &sender().signing_key());

            assert_eq!(
                opened.as_deref(),
                Ok(&plaintext[..]),
                "{name}, {size} bytes"
            );
        }
    }
}

#[test]
fn the_server_verifies_a_send_and_computes_the_digest_it_delivers() {
    let envelope = seal(b"hi");

    let check = envelope.verify_as_sent(&sender().signing_key()).unwrap();

    assert_eq!(
        check.recipients_digest.to_vec(),
        deliver(&envelope, "any").recipients_digest
    );
    assert_eq!(check.inclusions.len(), envelope.wrapped_keys.len());
    assert_eq!(envelope.ciphertext.len(), e2ee::MIN_PADDED_CIPHERTEXT);
    assert_eq!(envelope.nonce.len(), e2ee::NONCE_LEN);
    assert_eq!(envelope.key_commitment.len(), e2ee::KEY_COMMITMENT_LEN);
    assert_eq!(envelope.signature.len(), e2ee::SIGNATURE_LEN);
}

#[test]
fn the_server_refuses_a_forged_sender_and_repeated_devices() {
    let envelope = seal(b"hi");
    let mut repeated = envelope.clone();
    repeated.wrapped_keys.push(repeated.wrapped_keys[0].clone());

    let forged = envelope.verify_as_sent(&device("mallory-laptop").signing_key());

    assert_eq!(forged.map(|_| ()), Err(Error::BadSignature));
    assert!(matches!(
        repeated.verify_as_sent(&sender().signing_key()),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn the_server_sees_a_changed_recipient_list() {
    let mut envelope = seal(b"hi");
    envelope.wrapped_keys.pop();

    assert_eq!(
        envelope.verify_as_sent(&sender().signing_key()).map(|_| ()),
        Err(Error::BadSignature)
    );
}

#[test]
fn the_server_sees_a_changed_wrapped_key() {
    let mut envelope = seal(b"hi");
    envelope.wrapped_keys[1].wrapped_key[0] ^= 1;

    assert_eq!(
        envelope.verify_as_sent(&sender().signing_key()).map(|_| ()),
        Err(Error::BadSignature)
    );
}

#[test]
fn the_server_refuses_ids_that_are_not_canonical_uuids() {
    let sent = seal(b"hi");
    type Field = fn(&mut Envelope);
    let spellings: [Field; 4] = [
        |e| e.conversation_id = e.conversation_id.to_uppercase(),
        |e| e.sender_user_id = format!("{{{}}}", e.sender_user_id),
        |e| e.sender_device_id = e.sender_device_id.replace('-', ""),
        |e| e.wrapped_keys[0].device_id = e.wrapped_keys[0].device_id.to_uppercase(),
    ];

    for (index, respell) in spellings.iter().enumerate() {
        let mut envelope = sent.clone();
        respell(&mut envelope);

        assert!(
            matches!(
                envelope.verify_as_sent(&sender().signing_key()),
                Err(Error::Malformed { .. })
            ),
            "spelling {index}"
        );
    }
}

#[test]
fn a_device_that_is_not_a_recipient_gets_no_key_for_this_device() {
    let envelope = seal(b"not for mallory");
    let mallory = device("mallory-laptop");
    let mut message = deliver(&envelope, &mallory.device_id);
    assert!(message.envelope.wrapped_keys.is_empty());

    let result = open_plaintext(&message, mallory, &sender().signing_key());

    assert_eq!(result, Err(Error::NoKeyForThisDevice));

    // Borrowing bob's entry under mallory's id gets no further than the fingerprint.
    let mut bobs_entry = deliver(&envelope, &device("bob-phone").device_id)
        .envelope
        .wrapped_keys;
    bobs_entry[0].device_id = mallory.device_id.clone();
    message.envelope.wrapped_keys = bobs_entry;
    let result = open_plaintext(&message, mallory, &sender().signing_key());
    assert_eq!(result, Err(Error::KeyFingerprintMismatch));
}

#[test]
fn every_flipped_bit_of_a_signed_field_is_a_bad_signature() {
    let message = deliver(&seal(b"tamper me"), &device("bob-phone").device_id);
    let bad = Error::BadSignature;

    flip_every_bit(
        &message,
        "ciphertext",
        1,
        false,
        |m| &mut m.envelope.ciphertext,
        &bad,
    );
    flip_every_bit(&message, "nonce", 1, false, |m| &mut m.envelope.nonce, &bad);
    flip_every_bit(
        &message,
        "commitment",
        1,
        false,
        |m| &mut m.envelope.key_commitment,
        &bad,
    );
    flip_every_bit(
        &message,
        "signature",
        1,
        false,
        |m| &mut m.envelope.signature,
        &bad,
    );
    flip_every_bit(
        &message,
        "digest",
        1,
        false,
        |m| &mut m.recipients_digest,
        &bad,
    );
}

#[test]
fn every_flipped_bit_of_a_header_string_is_a_bad_signature() {
    let message = deliver(&seal(b"tamper me"), &device("bob-phone").device_id);
    type Field = fn(&mut Envelope) -> &mut String;
    let fields: [(&str, Field); 4] = [
        ("conversation_id", |e| &mut e.conversation_id),
        ("sender_user_id", |e| &mut e.sender_user_id),
        ("sender_device_id", |e| &mut e.sender_device_id),
        ("client_message_id", |e| &mut e.client_message_id),
    ];

    for (what, field) in fields {
        let length = field(&mut message.envelope.clone()).len();
        for index in 0..length {
            // The low seven bits of an ASCII byte: the string stays valid UTF-8.
            for bit in 0..7 {
                let mut tampered = message.clone();
                let mut bytes = std::mem::take(field(&mut tampered.envelope)).into_bytes();
                bytes[index] ^= 1 << bit;
                *field(&mut tampered.envelope) = String::from_utf8(bytes).unwrap();

                let result = open_as_bob(&tampered);

                // A changed UUID that is no longer canonical (uppercase, not hex) is refused
                // before the signature is checked.
                let refused = match result {
                    Err(Error::BadSignature) => true,
                    Err(Error::Malformed { .. }) => what != "client_message_id",
                    _ => false,
                };
                assert!(refused, "{what}[{index}] bit {bit}: {result:?}");
            }
        }
    }
}

#[test]
fn every_flipped_bit_of_the_suite_is_an_unsupported_suite() {
    let message = deliver(&seal(b"x"), &device("bob-phone").device_id);

    for bit in 0..32 {
        let mut tampered = message.clone();
        tampered.envelope.suite ^= 1 << bit;

        let result = open_as_bob(&tampered);

        assert_eq!(
            result,
            Err(Error::UnsupportedSuite {
                suite: tampered.envelope.suite
            })
        );
    }
}

#[test]
fn a_wrapped_key_the_sender_did_not_sign_is_refused_before_any_rsa_work() {
    let message = deliver(&seal(b"x"), &device("bob-phone").device_id);
    let not_signed = Error::WrappedKeyNotSigned;

    flip_every_bit(
        &message,
        "wrapped key",
        1,
        false,
        |m| &mut m.envelope.wrapped_keys[0].wrapped_key,
        &not_signed,
    );
    flip_every_bit(
        &message,
        "inclusion proof",
        1,
        false,
        |m| &mut m.envelope.wrapped_keys[0].inclusion_proof,
        &not_signed,
    );
    let mut chosen = message.clone();
    let bob = &device("bob-phone").recipient;
    let public_key = e2ee::primitives::parse_rsa_public_key(&bob.encryption_spki).unwrap();
    chosen.envelope.wrapped_keys[0].wrapped_key =
        e2ee::primitives::rsa_oaep_wrap(&public_key, &[0x42; 32]).unwrap();
    assert_eq!(open_as_bob(&chosen), Err(not_signed));
}

#[test]
fn flipped_bits_of_a_wrapped_key_signed_by_a_dishonest_sender_fail_to_unwrap() {
    let bob = device("bob-phone");
    let mut envelope = seal(b"x");
    let entry = envelope
        .wrapped_keys
        .iter_mut()
        .find(|key| key.device_id == bob.device_id)
        .unwrap();
    entry.wrapped_key[100] ^= 1;
    let mut message = deliver(&envelope, &bob.device_id);
    resign(&mut message, "alice-laptop");

    assert_eq!(open_as_bob(&message), Err(Error::UnwrapFailed));
}

#[test]
fn the_chain_fields_and_the_padding_are_signed() {
    let position = e2ee::ChainPosition {
        counter: 5,
        previous_envelope_hash: [7; 32],
        sender_time_ms: 1_800_000_000_123,
    };
    let envelope = e2ee::seal(
        &sender().sender(),
        CONVERSATION,
        "m-2",
        &recipients(),
        &position,
        &[9; 300],
    )
    .unwrap();
    let message = deliver(&envelope, &device("bob-phone").device_id);
    let bob = device("bob-phone");

    let opened = e2ee::open(&message, &bob.device_id, &bob.keys, &sender().signing_key()).unwrap();

    assert_eq!(envelope.ciphertext.len(), 512);
    assert_eq!(opened.plaintext, vec![9; 300]);
    let link = opened.link.unwrap();
    assert_eq!(
        (
            link.counter,
            link.previous_envelope_hash,
            link.sender_time_ms
        ),
        (5, [7; 32], 1_800_000_000_123)
    );
    assert_eq!(link, e2ee::sealed_link(&envelope).unwrap());
    let mut counter = message.clone();
    counter.envelope.sender_counter += 1;
    let mut time = message.clone();
    time.envelope.sender_time_ms -= 1;
    for tampered in [counter, time] {
        assert_eq!(open_as_bob(&tampered), Err(Error::BadSignature));
    }
    flip_every_bit(
        &message,
        "previous hash",
        1,
        false,
        |m| &mut m.envelope.previous_envelope_hash,
        &Error::BadSignature,
    );
}

#[test]
fn a_dishonest_sender_signing_tampered_fields_is_caught_after_unwrapping() {
    let message = deliver(&seal(b"tamper me"), &device("bob-phone").device_id);
    let commitment_mismatch = Error::KeyCommitmentMismatch;
    let decrypt_failed = Error::DecryptFailed;

    flip_every_bit(
        &message,
        "commitment",
        7,
        true,
        |m| &mut m.envelope.key_commitment,
        &commitment_mismatch,
    );
    flip_every_bit(
        &message,
        "ciphertext",
        7,
        true,
        |m| &mut m.envelope.ciphertext,
        &decrypt_failed,
    );
    flip_every_bit(
        &message,
        "nonce",
        7,
        true,
        |m| &mut m.envelope.nonce,
        &decrypt_failed,
    );
}

#[test]
fn a_content_key_of_the_wrong_length_fails_to_unwrap() {
    let bob = device("bob-phone");
    let mut envelope = seal(b"x");
    let public_key =
        e2ee::primitives::parse_rsa_public_key(&bob.recipient.encryption_spki).unwrap();
    let entry = envelope
        .wrapped_keys
        .iter_mut()
        .find(|key| key.device_id == bob.device_id)
        .unwrap();
    entry.wrapped_key = e2ee::primitives::rsa_oaep_wrap(&public_key, &[7; 31]).unwrap();
    let mut message = deliver(&envelope, &bob.device_id);
    resign(&mut message, "alice-laptop");

    assert_eq!(open_as_bob(&message), Err(Error::UnwrapFailed));
}

#[test]
fn two_seals_of_the_same_message_share_no_key_nonce_or_ciphertext() {
    let (first, second) = (seal(b"same"), seal(b"same"));

    assert_ne!(first.nonce, second.nonce);
    assert_ne!(first.key_commitment, second.key_commitment);
    assert_ne!(first.ciphertext, second.ciphertext);
}

#[test]
fn seal_refuses_empty_repeated_and_invalid_recipients() {
    let sender = sender().sender();
    let bob = device("bob-phone").recipient.clone();
    let seal_for = |recipients: &[RecipientDevice]| {
        e2ee::seal(
            &sender,
            CONVERSATION,
            "m",
            recipients,
            &first_position(),
            b"x",
        )
    };
    let mut bad_key = device("carol-desktop").recipient.clone();
    bad_key.encryption_spki.push(0);
    let mut signing_key_as_encryption_key = device("alice-phone").recipient.clone();
    signing_key_as_encryption_key.encryption_spki = device("bob-phone").signing_key().to_vec();

    assert!(matches!(seal_for(&[]), Err(Error::Malformed { .. })));
    assert!(matches!(
        seal_for(&[bob.clone(), bob.clone()]),
        Err(Error::Malformed { .. })
    ));
    for recipient in [bad_key, signing_key_as_encryption_key] {
        assert_eq!(
            seal_for(&[bob.clone(), recipient.clone()]),
            Err(Error::InvalidRecipientKey {
                device_id: recipient.device_id
            })
        );
    }
}

#[test]
fn open_fails_without_panicking_on_empty_and_garbage_input() {
    let bob = device("bob-phone");
    let valid = deliver(&seal(b"x"), &bob.device_id);
    let sender_key = sender().signing_key();
    let mut small_order_key = [0u8; 32];
    small_order_key[0] = 1;
    let mut empty_suite_2 = valid.clone();
    empty_suite_2.envelope.nonce.clear();

    let cases: Vec<(ReceivedMessage, Vec<u8>, &str)> = vec![
        (
            ReceivedMessage::default(),
            sender_key.to_vec(),
            "UnsupportedSuite",
        ),
        (empty_suite_2, sender_key.to_vec(), "Malformed"),
        (valid.clone(), Vec::new(), "InvalidKey"),
        (valid.clone(), vec![0; 31], "InvalidKey"),
        (valid.clone(), small_order_key.to_vec(), "InvalidKey"),
        (
            valid.clone(),
            device("mallory-laptop").signing_key().to_vec(),
            "BadSignature",
        ),
        (
            ReceivedMessage {
                recipients_digest: vec![0; 33],
                ..valid.clone()
            },
            sender_key.to_vec(),
            "Malformed",
        ),
        (
            ReceivedMessage {
                envelope: Envelope {
                    ciphertext: vec![1; 15],
                    ..valid.envelope.clone()
                },
                ..valid.clone()
            },
            sender_key.to_vec(),
            "Malformed",
        ),
        (
            ReceivedMessage {
                envelope: Envelope {
                    signature: Vec::new(),
                    ..valid.envelope.clone()
                },
                ..valid.clone()
            },
            sender_key.to_vec(),
            "Malformed",
        ),
    ];

    for (index, (message, key, expected)) in cases.into_iter().enumerate() {
        let result = open_plaintext(&message, bob, &key);

        assert_eq!(
            result.map_err(|error| error.name()),
            Err(expected),
            "case {index}"
        );
    }
}

#[test]
fn an_envelope_crosses_the_generated_proto_types_and_still_opens() {
    use proto::chat::v1 as pb;
    let envelope = seal(b"over the wire");
    let bob = device("bob-phone");
    envelope.verify_as_sent(&sender().signing_key()).unwrap();
    let delivered = deliver(&envelope, &bob.device_id);
    let wire_message = pb::Message {
        envelope: Some(pb::Envelope::from(delivered.envelope)),
        recipients_digest: delivered.recipients_digest,
        recipient_count: delivered.recipient_count,
        ..Default::default()
    };

    let message = ReceivedMessage::try_from(wire_message).unwrap();

    assert_eq!(open_as_bob(&message).unwrap(), b"over the wire");
}
