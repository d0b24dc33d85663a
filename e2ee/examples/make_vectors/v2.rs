//! The vectors of suite V2 and of the strict checks (schema 2 of `testdata/vectors.json`).

use curve25519_dalek::{Scalar, constants::ED25519_BASEPOINT_POINT, edwards::CompressedEdwardsY};
use e2ee::{ChainPosition, ConversationChains, Envelope, ReceivedMessage, RecipientDevice, Sender};
use ed25519_dalek::{SigningKey, VerifyingKey, pkcs8::DecodePrivateKey};
use rsa::{BigUint, RsaPublicKey, pkcs8::EncodePublicKey};
use sha2::{Digest, Sha256, Sha512};

use crate::{
    schema::{
        BadRecipientKeyCase, ChainCase, ChainMessage, Device, EnvelopeCase, NegativeCase,
        SignatureCase, Vectors, anomaly_json, unhex,
    },
    sign, wrap,
};

/// 2027-01-15T08:00:00Z, the sender time of the first V2 vector.
const T0: u64 = 1_800_000_000_000;

struct Spec {
    name: &'static str,
    comment: &'static str,
    sender: &'static str,
    recipients: &'static [&'static str],
    conversation_id: &'static str,
    client_message_id: &'static str,
    plaintext: Vec<u8>,
    counter: u64,
    /// The envelope case whose hash is the previous one (`None`: zeros, or `previous_hash`).
    previous: Option<&'static str>,
    previous_hash: [u8; 32],
    sender_time_ms: u64,
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "v2-direct",
            comment: "V2: alice's laptop to bob's two devices and her own two, the first of its chain",
            sender: "alice-laptop",
            recipients: &["bob-phone", "bob-laptop", "alice-phone", "alice-laptop"],
            conversation_id: "c0000000-0000-4000-8000-000000000001",
            client_message_id: "018f3a52-7b1e-7c3d-9e2f-000000000011",
            plaintext: "hello again, bob \u{1f44b}".as_bytes().to_vec(),
            counter: 1,
            previous: None,
            previous_hash: [0; 32],
            sender_time_ms: T0,
        },
        Spec {
            name: "v2-direct-second",
            comment: "V2: the next message of the same chain, 300 bytes (a 512-byte ciphertext)",
            sender: "alice-laptop",
            recipients: &["bob-phone", "bob-laptop", "alice-phone", "alice-laptop"],
            conversation_id: "c0000000-0000-4000-8000-000000000001",
            client_message_id: "018f3a52-7b1e-7c3d-9e2f-000000000012",
            plaintext: vec![b'a'; 300],
            counter: 2,
            previous: Some("v2-direct"),
            previous_hash: [0; 32],
            sender_time_ms: T0 + 61_000,
        },
        Spec {
            name: "v2-group",
            comment: "V2: bob's phone to five devices (an odd tree), counter 7, 1000 binary bytes",
            sender: "bob-phone",
            recipients: &[
                "carol-desktop",
                "alice-laptop",
                "bob-laptop",
                "alice-phone",
                "bob-phone",
            ],
            conversation_id: "c0000000-0000-4000-8000-000000000002",
            client_message_id: "x2",
            plaintext: (0..1000u32).map(|i| (i * 31 % 251) as u8).collect(),
            counter: 7,
            previous: None,
            previous_hash: Sha256::digest(b"v2-group previous").into(),
            sender_time_ms: T0 + 5_000,
        },
        Spec {
            name: "v2-empty",
            comment: "V2: an empty message is padded to a 256-byte ciphertext like any short one",
            sender: "alice-phone",
            recipients: &["alice-laptop", "alice-phone"],
            conversation_id: "c0000000-0000-4000-8000-000000000001",
            client_message_id: "018f3a52-7b1e-7c3d-9e2f-000000000013",
            plaintext: Vec::new(),
            counter: 1,
            previous: None,
            previous_hash: [0; 32],
            sender_time_ms: T0 + 9_000,
        },
    ]
}

fn content_key_and_nonce(name: &str) -> ([u8; 32], [u8; 12]) {
    let key: [u8; 32] = Sha256::digest(format!("{name} content key")).into();
    let nonce: [u8; 12] = Sha256::digest(format!("{name} nonce"))[..12]
        .try_into()
        .unwrap();
    (key, nonce)
}

#[allow(clippy::too_many_arguments)]
fn seal_v2(
    vectors: &Vectors,
    sender: &str,
    recipients: &[&str],
    conversation_id: &str,
    client_message_id: &str,
    position: &ChainPosition,
    plaintext: &[u8],
    key_name: &str,
) -> Envelope {
    let device = vectors.device(sender);
    let keys = device.keys();
    let recipients: Vec<RecipientDevice> = recipients
        .iter()
        .map(|name| vectors.device(name).recipient())
        .collect();
    let (content_key, nonce) = content_key_and_nonce(key_name);
    e2ee::seal_with(
        &Sender {
            user_id: &device.user_id,
            device_id: &device.device_id,
            keys: &keys,
        },
        conversation_id,
        client_message_id,
        &recipients,
        Some(position),
        plaintext,
        &content_key,
        &nonce,
    )
    .unwrap()
}

pub fn envelope_cases(vectors: &Vectors) -> Vec<EnvelopeCase> {
    let mut cases: Vec<EnvelopeCase> = Vec::new();
    for spec in specs() {
        let previous_envelope_hash = match spec.previous {
            Some(name) => unhex(&cases.iter().find(|c| c.name == name).unwrap().envelope_hash)
                .try_into()
                .unwrap(),
            None => spec.previous_hash,
        };
        let position = ChainPosition {
            counter: spec.counter,
            previous_envelope_hash,
            sender_time_ms: spec.sender_time_ms,
        };
        let envelope = seal_v2(
            vectors,
            spec.sender,
            spec.recipients,
            spec.conversation_id,
            spec.client_message_id,
            &position,
            &spec.plaintext,
            spec.name,
        );
        let (content_key, nonce) = content_key_and_nonce(spec.name);
        let digest = envelope.recipients_digest().unwrap();
        let header = envelope.header(&digest);
        eprintln!("envelope {}", spec.name);
        cases.push(EnvelopeCase {
            name: spec.name.into(),
            comment: spec.comment.into(),
            sender: spec.sender.into(),
            recipients: spec
                .recipients
                .iter()
                .map(|name| name.to_string())
                .collect(),
            plaintext: hex::encode(&spec.plaintext),
            content_key: hex::encode(content_key),
            nonce: hex::encode(nonce),
            recipients_digest: hex::encode(digest),
            key_commitment: hex::encode(&envelope.key_commitment),
            canonical_header: hex::encode(e2ee::canonical_header(&header).unwrap()),
            signed_message: hex::encode(
                e2ee::signed_message(&header, &envelope.ciphertext).unwrap(),
            ),
            envelope_hash: hex::encode(e2ee::envelope_hash(&header, &envelope.ciphertext).unwrap()),
            envelope: (&envelope).into(),
        });
    }
    cases
}

/// (name, comment, opener, expected error, what a dishonest sender does to the envelope before
/// the server sees it (then re-signed), what a malicious server does to the delivered message).
type Tamper = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<fn(&Vectors, &mut Envelope)>,
    Option<fn(&Vectors, &mut ReceivedMessage)>,
);

const TAMPERS: &[Tamper] = &[
    (
        "v2-server-substitutes-wrapped-key",
        "the server puts its own RSA-OAEP ciphertext (of another content key) in bob's phone's \
         entry: refused before any RSA work, where V1 fails only after decrypting it",
        "bob-phone",
        "WrappedKeyNotSigned",
        None,
        Some(|v, m| {
            m.envelope.wrapped_keys[0].wrapped_key = wrap(v.device("bob-phone"), &[0x42; 32])
        }),
    ),
    (
        "v2-server-flips-wrapped-key-bit",
        "one bit of bob's phone's wrapped key flipped by the server",
        "bob-phone",
        "WrappedKeyNotSigned",
        None,
        Some(|_, m| m.envelope.wrapped_keys[0].wrapped_key[7] ^= 1),
    ),
    (
        "v2-bad-inclusion-proof",
        "one bit of the inclusion proof flipped",
        "bob-phone",
        "WrappedKeyNotSigned",
        None,
        Some(|_, m| m.envelope.wrapped_keys[0].inclusion_proof[0] ^= 1),
    ),
    (
        "v2-wrong-leaf-index",
        "the leaf index of another entry",
        "bob-phone",
        "WrappedKeyNotSigned",
        None,
        Some(|_, m| m.envelope.wrapped_keys[0].leaf_index ^= 1),
    ),
    (
        "v2-wrong-recipient-count",
        "one recipient more than the tree has",
        "bob-phone",
        "WrappedKeyNotSigned",
        None,
        Some(|_, m| m.recipient_count += 1),
    ),
    (
        "v2-tampered-counter",
        "the sender counter changed by the server",
        "bob-phone",
        "BadSignature",
        None,
        Some(|_, m| m.envelope.sender_counter += 1),
    ),
    (
        "v2-tampered-previous-hash",
        "the previous envelope hash changed by the server",
        "bob-phone",
        "BadSignature",
        None,
        Some(|_, m| m.envelope.previous_envelope_hash[31] ^= 1),
    ),
    (
        "v2-tampered-time",
        "the sender time changed by the server",
        "bob-phone",
        "BadSignature",
        None,
        Some(|_, m| m.envelope.sender_time_ms += 1),
    ),
    (
        "v2-short-previous-hash",
        "a 31-byte previous envelope hash",
        "bob-phone",
        "Malformed",
        None,
        Some(|_, m| {
            m.envelope.previous_envelope_hash.pop();
        }),
    ),
    (
        "v2-counter-zero",
        "counters start at 1 (signed so by the sender)",
        "bob-phone",
        "Malformed",
        Some(|_, e| e.sender_counter = 0),
        None,
    ),
    (
        "v2-ciphertext-not-a-bucket",
        "a 255-byte ciphertext: V2 ciphertexts are powers of two from 256 bytes",
        "bob-phone",
        "Malformed",
        None,
        Some(|_, m| {
            m.envelope.ciphertext.pop();
        }),
    ),
    (
        "v2-not-a-recipient",
        "mallory's device has no entry",
        "mallory-laptop",
        "NoKeyForThisDevice",
        None,
        None,
    ),
    (
        "v2-stale-key-fingerprint",
        "bob's phone's entry names another key",
        "bob-phone",
        "KeyFingerprintMismatch",
        None,
        Some(|v, m| {
            m.envelope.wrapped_keys[0].key_fingerprint =
                unhex(&v.device("mallory-laptop").encryption_key_fingerprint);
        }),
    ),
    (
        "v2-sender-wraps-garbage",
        "a dishonest sender signed a corrupted wrapped key for bob's phone",
        "bob-phone",
        "UnwrapFailed",
        Some(|v, e| {
            let entry = crate::bob_phone_entry(v, e);
            let last = entry.wrapped_key.len() - 1;
            entry.wrapped_key[last] ^= 1;
        }),
        None,
    ),
    (
        "v2-sender-wraps-another-content-key",
        "a dishonest sender signed another content key for bob's phone",
        "bob-phone",
        "KeyCommitmentMismatch",
        Some(|v, e| {
            crate::bob_phone_entry(v, e).wrapped_key = wrap(v.device("bob-phone"), &[0x42; 32])
        }),
        None,
    ),
    (
        "v2-bad-padding",
        "a dishonest sender encrypted a plaintext whose padding is not zeros",
        "bob-phone",
        "BadPadding",
        Some(|_, e| {
            let (content_key, nonce) = content_key_and_nonce("v2-direct");
            let mut padded = e2ee::pad(b"hello").unwrap();
            *padded.last_mut().unwrap() = 1;
            let digest = e.recipients_digest().unwrap();
            let header = e2ee::canonical_header(&e.header(&digest)).unwrap();
            e.ciphertext =
                e2ee::primitives::aead_encrypt(&content_key, &nonce, &header, &padded).unwrap();
        }),
        None,
    ),
];

pub fn negative_cases(vectors: &Vectors) -> Vec<NegativeCase> {
    let base = vectors
        .envelopes
        .iter()
        .find(|c| c.name == "v2-direct")
        .unwrap();
    TAMPERS
        .iter()
        .map(|&(name, comment, opener, expected, by_sender, by_server)| {
            let mut envelope = Envelope::from(&base.envelope);
            if let Some(tamper) = by_sender {
                tamper(vectors, &mut envelope);
                let digest = envelope.recipients_digest().unwrap();
                envelope.signature = sign(vectors.device(&base.sender), &envelope, &digest);
            }
            let mut delivered = envelope
                .delivered_to(&vectors.device(opener).device_id)
                .unwrap();
            if let Some(tamper) = by_server {
                tamper(vectors, &mut delivered);
            }
            NegativeCase {
                name: name.into(),
                comment: comment.into(),
                opener: opener.into(),
                sender: base.sender.clone(),
                recipients_digest: hex::encode(&delivered.recipients_digest),
                recipient_count: delivered.recipient_count,
                envelope: (&delivered.envelope).into(),
                expected_error: expected.into(),
            }
        })
        .collect()
}

pub fn signature_cases(vectors: &Vectors) -> Vec<SignatureCase> {
    let device = vectors.device("alice-laptop");
    let signing = SigningKey::from_pkcs8_der(&unhex(&device.signing_private_pkcs8)).unwrap();
    let public = signing.verifying_key().to_bytes();
    let message = b"chat-e2ee strict verification".to_vec();
    let valid = ed25519_dalek::Signer::sign(&signing, &message).to_bytes();
    let identity = {
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        bytes
    };
    let zero_signature = [&identity[..], &[0u8; 32]].concat();
    let order_8 = unhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa");
    assert!(
        VerifyingKey::from_bytes(&order_8.clone().try_into().unwrap())
            .unwrap()
            .is_weak()
    );
    let mut s_plus_l = valid;
    add_group_order(&mut s_plus_l[32..]);
    let mut high_s = valid;
    high_s[63] |= 0xe0;
    let mut other_message = message.clone();
    other_message.push(b'!');

    let case = |name: &str,
                comment: &str,
                key: &[u8],
                message: &[u8],
                signature: &[u8],
                expected: &str| {
        let actual = e2ee::primitives::ed25519_verify(key, message, signature)
            .map_or_else(|error| error.name().to_owned(), |()| "ok".to_owned());
        assert_eq!(actual, expected, "{name}");
        SignatureCase {
            name: name.into(),
            comment: comment.into(),
            public_key: hex::encode(key),
            message: hex::encode(message),
            signature: hex::encode(signature),
            expected: expected.into(),
        }
    };
    vec![
        case(
            "valid",
            "alice's laptop's signature",
            &public,
            &message,
            &valid,
            "ok",
        ),
        case(
            "identity-key-and-zero-signature",
            "the identity point as the key and R = identity, S = 0: verifies for any message under \
             a lax verifier (Node 20's WebCrypto accepted it)",
            &identity,
            &message,
            &zero_signature,
            "InvalidKey",
        ),
        case(
            "zero-signature-with-a-real-key",
            "R = identity (small order), S = 0",
            &public,
            &message,
            &zero_signature,
            "BadSignature",
        ),
        case(
            "order-8-key",
            "a public key of order 8",
            &order_8,
            &message,
            &valid,
            "InvalidKey",
        ),
        case(
            "non-canonical-key",
            "a valid point of large order with y encoded as y + p",
            &non_canonical_key(),
            &message,
            &valid,
            "InvalidKey",
        ),
        case(
            "non-canonical-s",
            "the valid signature with S + L (the same S modulo L)",
            &public,
            &message,
            &s_plus_l,
            "BadSignature",
        ),
        case(
            "s-high-bits",
            "S with its three top bits set",
            &public,
            &message,
            &high_s,
            "BadSignature",
        ),
        case(
            "mixed-order-r",
            "R with an order-8 component and an S that satisfies the cofactored equation \
             [8][S]B = [8]R + [8][k]A but not [S]B = R + [k]A: strict (cofactorless) verification \
             refuses it, as Rust's verify_strict does",
            &public,
            &message,
            &mixed_order_signature(&signing, &message),
            "BadSignature",
        ),
        case(
            "other-message",
            "the valid signature over another message",
            &public,
            &other_message,
            &valid,
            "BadSignature",
        ),
        case(
            "short-signature",
            "63 bytes",
            &public,
            &message,
            &valid[..63],
            "Malformed",
        ),
        case(
            "short-key",
            "31 bytes",
            &public[..31],
            &message,
            &valid,
            "InvalidKey",
        ),
    ]
}

/// Adds the group order L to the little-endian 32-byte scalar `s` (it stays below 2^256 for
/// any S < L).
fn add_group_order(s: &mut [u8]) {
    let order = unhex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
    let mut carry = 0u16;
    for (byte, add) in s.iter_mut().zip(order) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
}

/// The first y + p (y < 19) that decodes to a point of large order.
fn non_canonical_key() -> Vec<u8> {
    for y in 0u8..19 {
        for sign in [0u8, 0x80] {
            let mut bytes = [0xffu8; 32];
            bytes[0] = 0xed + y;
            bytes[31] = 0x7f | sign;
            if let Ok(key) = VerifyingKey::from_bytes(&bytes)
                && !key.is_weak()
            {
                return bytes.to_vec();
            }
        }
    }
    panic!("no non-canonical encoding of a large-order point");
}

/// A signature `(R + T, r + k'a)` with `T` of order 8 and `k' = H(R + T || A || M)`.
fn mixed_order_signature(signing: &SigningKey, message: &[u8]) -> Vec<u8> {
    let expanded = Sha512::digest(signing.to_bytes());
    let mut scalar_bytes: [u8; 32] = expanded[..32].try_into().unwrap();
    scalar_bytes[0] &= 248;
    scalar_bytes[31] &= 127;
    scalar_bytes[31] |= 64;
    let a = Scalar::from_bytes_mod_order(scalar_bytes);
    let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest(b"mixed-order nonce").into());
    let torsion = CompressedEdwardsY(
        unhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa")
            .try_into()
            .unwrap(),
    )
    .decompress()
    .unwrap();
    let big_r = (r * ED25519_BASEPOINT_POINT + torsion).compress();
    let public = signing.verifying_key().to_bytes();
    let mut hasher = Sha512::new();
    hasher.update(big_r.as_bytes());
    hasher.update(public);
    hasher.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
    let s = r + k * a;
    [big_r.as_bytes().as_slice(), s.as_bytes()].concat()
}

pub fn bad_recipient_key_cases(vectors: &Vectors) -> Vec<BadRecipientKeyCase> {
    let good = unhex(&vectors.device("bob-phone").encryption_spki);
    // Moduli need not be products of primes here: only the key's form is checked.
    let modulus = |bits: u64| {
        let mut bytes = Sha512::digest(format!("modulus {bits}")).to_vec();
        while (bytes.len() as u64) * 8 < bits {
            let more = Sha512::digest(&bytes).to_vec();
            bytes.extend(more);
        }
        bytes.truncate((bits / 8) as usize);
        bytes[0] |= 0x80;
        *bytes.last_mut().unwrap() |= 1;
        BigUint::from_bytes_be(&bytes)
    };
    let spki = |bits: u64, exponent: u32| {
        RsaPublicKey::new_unchecked(modulus(bits), BigUint::from(exponent))
            .to_public_key_der()
            .unwrap()
            .into_vec()
    };
    let mut long_length = vec![good[0], 0x83, 0x00];
    long_length.extend_from_slice(&good[2..]);
    let mut trailing = good.clone();
    trailing.push(0);
    let ed25519 = [
        unhex("302a300506032b6570032100"),
        unhex(&vectors.device("bob-phone").signing_public_key),
    ]
    .concat();
    let cases = [
        (
            "rsa-1024",
            "a 1024-bit modulus (at least 2048 bits)",
            spki(1024, 65_537),
        ),
        (
            "rsa-4104",
            "a 4104-bit modulus (at most 4096 bits)",
            spki(4104, 65_537),
        ),
        (
            "exponent-3",
            "a 2048-bit key with exponent 3 (only 65537)",
            spki(2048, 3),
        ),
        (
            "exponent-65539",
            "a 3072-bit key with exponent 65539",
            spki(3072, 65_539),
        ),
        (
            "non-minimal-length",
            "bob's phone's key with the outer length in a longer form than DER allows",
            long_length,
        ),
        (
            "trailing-byte",
            "bob's phone's key followed by a zero byte",
            trailing,
        ),
        ("ed25519-key", "an Ed25519 SubjectPublicKeyInfo", ed25519),
        ("empty", "no bytes", Vec::new()),
    ];
    cases
        .into_iter()
        .map(|(name, comment, spki)| {
            assert!(
                e2ee::primitives::parse_rsa_public_key(&spki).is_err(),
                "{name} parses"
            );
            BadRecipientKeyCase {
                name: name.into(),
                comment: comment.into(),
                encryption_spki: hex::encode(spki),
            }
        })
        .collect()
}

pub fn chain_cases(vectors: &Vectors) -> Vec<ChainCase> {
    const CONVERSATION: &str = "c0000000-0000-4000-8000-000000000003";
    let recipients = ["bob-phone", "alice-laptop"];
    let link_of = |envelope: &Envelope| {
        envelope
            .chain_link(&envelope.recipients_digest().unwrap())
            .unwrap()
    };
    let mut chain: Vec<Envelope> = Vec::new();
    let mut previous = [0u8; 32];
    for counter in 1..=5u64 {
        let time = if counter == 5 {
            T0 + 5_000 + 10 * 60 * 1000
        } else {
            T0 + counter * 1000
        };
        let envelope = seal_v2(
            vectors,
            "alice-laptop",
            &recipients,
            CONVERSATION,
            &format!("chain-{counter}"),
            &ChainPosition {
                counter,
                previous_envelope_hash: previous,
                sender_time_ms: time,
            },
            format!("message {counter}").as_bytes(),
            &format!("chain {counter}"),
        );
        previous = link_of(&envelope).envelope_hash;
        chain.push(envelope);
    }
    let fork = seal_v2(
        vectors,
        "alice-laptop",
        &recipients,
        CONVERSATION,
        "chain-3-fork",
        &ChainPosition {
            counter: 3,
            previous_envelope_hash: link_of(&chain[1]).envelope_hash,
            sender_time_ms: T0 + 3000,
        },
        b"another message 3",
        "chain fork",
    );
    // Delivery order: 1, 2, 4 (3 missing), 3 (late), another 3 (a fork), 5 (its time ahead).
    let order = [&chain[0], &chain[1], &chain[3], &chain[2], &fork, &chain[4]];
    let opener = vectors.device("bob-phone");
    let mut state = ConversationChains::default();
    let messages = order
        .iter()
        .enumerate()
        .map(|(index, envelope)| {
            let sequence = index as u64 + 1;
            let server_time_ms = T0 + sequence * 1000 + 500;
            let delivered = envelope.delivered_to(&opener.device_id).unwrap();
            let link = link_of(envelope);
            let anomalies =
                state.observe(sequence, &envelope.sender_device_id, &link, server_time_ms);
            ChainMessage {
                sequence,
                server_time_ms,
                sender: "alice-laptop".into(),
                recipients_digest: hex::encode(&delivered.recipients_digest),
                recipient_count: delivered.recipient_count,
                envelope: (&delivered.envelope).into(),
                envelope_hash: hex::encode(link.envelope_hash),
                anomalies: anomalies.iter().map(anomaly_json).collect(),
            }
        })
        .collect();
    let _: &Device = opener;
    vec![ChainCase {
        name: "gap-late-fork-time".into(),
        comment: "alice's laptop's chain as bob's phone receives it: counters 1, 2, 4 (a gap: 3 \
                  missing), 3 (late), another envelope numbered 3 (a fork), 5 (sealed 10 minutes \
                  ahead of the server's time)"
            .into(),
        opener: "bob-phone".into(),
        messages,
    }]
}
