//! Property tests (proptest) of the envelope format, for both suites that exist (V1, still
//! opened, and V2, what clients seal):
//! - random plaintext sizes and random recipient sets round trip: the server's check passes,
//!   every recipient opens its delivered copy to the plaintext, every other device gets no key;
//! - a single flipped bit anywhere in the serialized `chat.v1.Envelope` the server receives, or
//!   in the serialized `chat.v1.Message` a device receives, or in any one field of either, is
//!   refused: it never panics, and never yields plaintext unless what was flipped is outside
//!   what the format protects (ids of the delivery, V1 wrapped keys of other devices).
//!
//! The devices are the vectors file's (imported once per binary, `helpers::device`): generating
//! RSA keys per case would cost seconds. Case counts are small so that CI stays fast; run more
//! with `PROPTEST_CASES=2000 cargo nextest run -p e2ee --test e2ee properties`.

use e2ee::{ChainPosition, Envelope, Error, ReceivedMessage, SUITE_V1, SUITE_V2};
use proptest::{prelude::*, sample::Index, strategy::ValueTree, test_runner::Config};
use prost::Message as _;
use proto::chat::v1 as pb;

use crate::helpers::{TestDevice, device, open_plaintext};

/// Every device of the vectors file: senders and recipients are drawn from these.
const DEVICES: [&str; 6] = [
    "alice-laptop",
    "alice-phone",
    "bob-phone",
    "bob-laptop",
    "carol-desktop",
    "mallory-laptop",
];

/// `PROPTEST_CASES` when set, else `default`: a fixed `cases` would hide the variable.
fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // A failure shrinks for a bounded time rather than for as long as it takes.
        max_shrink_time: 30_000,
        ..Config::default()
    }
}

/// One sealed message and how it was made.
#[derive(Debug, Clone)]
struct Sealed {
    sender: &'static str,
    recipients: Vec<&'static str>,
    plaintext: Vec<u8>,
    envelope: Envelope,
}

impl Sealed {
    fn sender(&self) -> &'static TestDevice {
        device(self.sender)
    }

    fn signing_key(&self) -> [u8; 32] {
        self.sender().signing_key()
    }
}

/// A canonical UUID text from 128 random bits.
fn uuid_text(bits: u128) -> String {
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Plaintexts around and across the padding buckets (256, 512, 1024, ... bytes of ciphertext).
fn plaintext() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..=300),
        1 => proptest::collection::vec(any::<u8>(), 300..=5000),
    ]
}

fn position() -> impl Strategy<Value = ChainPosition> {
    (1..=u64::MAX, any::<[u8; 32]>(), any::<u64>()).prop_map(
        |(counter, previous_envelope_hash, sender_time_ms)| ChainPosition {
            counter,
            previous_envelope_hash,
            sender_time_ms,
        },
    )
}

/// A message sealed by a random device for a random non-empty set of devices in random order,
/// as V2 (`seal`) or V1 (`seal_with` without a position, the only way to seal V1 now).
fn sealed() -> impl Strategy<Value = Sealed> {
    (
        any::<bool>(),
        proptest::sample::select(&DEVICES[..]),
        proptest::sample::subsequence(&DEVICES[..], 1..=DEVICES.len()).prop_shuffle(),
        plaintext(),
        any::<u128>(),
        ".{0,40}",
        position(),
        any::<([u8; 32], [u8; 12])>(),
    )
        .prop_map(
            |(v2, sender, recipients, plaintext, conversation, message_id, position, key)| {
                let keys: Vec<_> = recipients
                    .iter()
                    .map(|name| device(name).recipient.clone())
                    .collect();
                let conversation = uuid_text(conversation);
                let envelope = e2ee::seal_with(
                    &device(sender).sender(),
                    &conversation,
                    &message_id,
                    &keys,
                    v2.then_some(&position),
                    &plaintext,
                    &key.0,
                    &key.1,
                )
                .expect("sealing for valid devices succeeds");
                Sealed {
                    sender,
                    recipients,
                    plaintext,
                    envelope,
                }
            },
        )
}

/// What the server's check covers: every field but the tree positions (the server computes
/// those) and, in V1, the wrapped keys (the V1 digest binds only device ids and fingerprints)
/// and the chain position (V1 has none: its header ends with the nonce).
fn signed_view(envelope: &Envelope) -> Envelope {
    let mut view = envelope.clone();
    for key in &mut view.wrapped_keys {
        key.leaf_index = 0;
        key.inclusion_proof.clear();
        if envelope.suite == SUITE_V1 {
            key.wrapped_key.clear();
        }
    }
    if envelope.suite == SUITE_V1 {
        clear_chain_position(&mut view);
    }
    view
}

fn clear_chain_position(envelope: &mut Envelope) {
    envelope.sender_counter = 0;
    envelope.previous_envelope_hash.clear();
    envelope.sender_time_ms = 0;
}

/// What [`e2ee::open`] reads of a delivered message: V1 has no recipients tree and no chain, so
/// its leaf indexes, proofs, recipient count and chain position are not part of it.
fn read_view(message: &ReceivedMessage) -> ReceivedMessage {
    let mut view = message.clone();
    if view.envelope.suite == SUITE_V1 {
        view.recipient_count = 0;
        clear_chain_position(&mut view.envelope);
        for key in &mut view.envelope.wrapped_keys {
            key.leaf_index = 0;
            key.inclusion_proof.clear();
        }
    }
    view
}

/// The delivered copy of `sealed` for `name`, as a device receives it off the wire.
fn delivered_message(sealed: &Sealed, name: &str) -> pb::Message {
    let received = sealed
        .envelope
        .delivered_to(&device(name).device_id)
        .unwrap();
    pb::Message {
        message_id: "0190d5a0-0000-7000-8000-000000000001".into(),
        conversation_id: sealed.envelope.conversation_id.clone(),
        sequence: 42,
        envelope: Some(received.envelope.into()),
        recipients_digest: received.recipients_digest,
        recipient_count: received.recipient_count,
        ..pb::Message::default()
    }
}

/// Flips one bit of `bytes`, chosen by `bit` (nothing when `bytes` is empty).
fn flip(bytes: &mut [u8], bit: Index) {
    if !bytes.is_empty() {
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
}

/// Opens `message` as `name` and asserts the one thing that may come out: the original
/// plaintext, and only when what `open` reads of `message` is what the server delivered
/// (`original`).
fn assert_opens_only_unchanged(
    sealed: &Sealed,
    name: &str,
    message: &ReceivedMessage,
    original: &ReceivedMessage,
) -> Result<(), TestCaseError> {
    let result = open_plaintext(message, device(name), &sealed.signing_key());
    if read_view(message) == read_view(original) {
        prop_assert_eq!(result, Ok(sealed.plaintext.clone()), "{} unchanged", name);
    } else {
        prop_assert!(
            result.is_err(),
            "{name} opened a changed message: {message:?}"
        );
    }
    Ok(())
}

/// The fields of a delivered message, by number, each as bytes to flip a bit of. Strings that
/// a flip leaves invalid UTF-8 would not decode off the wire: `None`, refused.
fn flip_field(message: &mut ReceivedMessage, field: usize, bit: Index) -> Option<&'static str> {
    fn in_string(text: &mut String, bit: Index) -> Option<()> {
        let mut bytes = std::mem::take(text).into_bytes();
        flip(&mut bytes, bit);
        *text = String::from_utf8(bytes).ok()?;
        Some(())
    }
    let envelope = &mut message.envelope;
    let own = &mut envelope.wrapped_keys[0];
    Some(match field {
        0 => {
            envelope.suite ^= 1 << bit.index(32);
            "suite"
        }
        1 => in_string(&mut envelope.conversation_id, bit).map(|()| "conversation_id")?,
        2 => in_string(&mut envelope.sender_user_id, bit).map(|()| "sender_user_id")?,
        3 => in_string(&mut envelope.sender_device_id, bit).map(|()| "sender_device_id")?,
        4 => in_string(&mut envelope.client_message_id, bit).map(|()| "client_message_id")?,
        5 => (flip(&mut envelope.nonce, bit), "nonce").1,
        6 => (flip(&mut envelope.ciphertext, bit), "ciphertext").1,
        7 => (flip(&mut envelope.key_commitment, bit), "key_commitment").1,
        8 => (flip(&mut envelope.signature, bit), "signature").1,
        9 => {
            envelope.sender_counter ^= 1 << bit.index(64);
            "sender_counter"
        }
        10 => {
            (
                flip(&mut envelope.previous_envelope_hash, bit),
                "previous_hash",
            )
                .1
        }
        11 => {
            envelope.sender_time_ms ^= 1 << bit.index(64);
            "sender_time_ms"
        }
        12 => in_string(&mut own.device_id, bit).map(|()| "device_id")?,
        13 => (flip(&mut own.key_fingerprint, bit), "key_fingerprint").1,
        14 => (flip(&mut own.wrapped_key, bit), "wrapped_key").1,
        15 => {
            own.leaf_index ^= 1 << bit.index(32);
            "leaf_index"
        }
        16 => (flip(&mut own.inclusion_proof, bit), "inclusion_proof").1,
        17 => (flip(&mut message.recipients_digest, bit), "digest").1,
        _ => {
            message.recipient_count ^= 1 << bit.index(32);
            "recipient_count"
        }
    })
}

const N_FIELDS: usize = 19;

proptest! {
    // Each case opens the message on six devices (RSA decryptions): about 25 ms.
    #![proptest_config(config(48))]

    #[test]
    fn every_recipient_and_only_a_recipient_opens_a_sealed_message(sealed in sealed()) {
        let envelope = &sealed.envelope;

        let check = envelope.verify_as_sent(&sealed.signing_key());

        let check = check.expect("the server accepts an honest send");
        prop_assert_eq!(check.recipients_digest, envelope.recipients_digest().unwrap());
        let wire = pb::Envelope::from(envelope.clone()).encode_to_vec();
        prop_assert_eq!(&Envelope::from(pb::Envelope::decode(&wire[..]).unwrap()), envelope);
        if envelope.suite == SUITE_V2 {
            prop_assert_eq!(
                envelope.ciphertext.len(),
                e2ee::padded_ciphertext_len(sealed.plaintext.len())
            );
        }
        for name in DEVICES {
            let message = envelope.delivered_to(&device(name).device_id).unwrap();
            let opened = e2ee::open(
                &message,
                &device(name).device_id,
                &device(name).keys,
                &sealed.signing_key(),
            );
            if sealed.recipients.contains(&name) {
                let opened = opened.unwrap();
                prop_assert_eq!(&opened.plaintext, &sealed.plaintext);
                let link = (envelope.suite == SUITE_V2).then(|| e2ee::sealed_link(envelope).unwrap());
                prop_assert_eq!(opened.link, link);
            } else {
                prop_assert_eq!(opened, Err(Error::NoKeyForThisDevice));
            }
        }
    }

}

proptest! {
    // About 5 ms a case.
    #![proptest_config(config(160))]

    #[test]
    fn a_flipped_bit_of_a_sent_envelope_is_refused_by_the_server_and_opens_nowhere(
        sealed in sealed(),
        bit in any::<Index>(),
    ) {
        let mut wire = pb::Envelope::from(sealed.envelope.clone()).encode_to_vec();
        flip(&mut wire, bit);

        // What does not decode, the server refuses (INVALID_ARGUMENT) before any check.
        let Ok(decoded) = pb::Envelope::decode(&wire[..]) else { return Ok(()) };
        let tampered = Envelope::from(decoded);
        let check = tampered.verify_as_sent(&sealed.signing_key());

        if signed_view(&tampered) != signed_view(&sealed.envelope) {
            prop_assert!(check.is_err(), "the server accepted {tampered:?}");
            return Ok(());
        }
        // Only what the format leaves to the server changed (a V1 wrapped key): each recipient
        // opens the original plaintext or nothing.
        for name in &sealed.recipients {
            let device_id = &device(name).device_id;
            let Ok(message) = tampered.delivered_to(device_id) else { continue };
            let original = sealed.envelope.delivered_to(device_id).unwrap();
            assert_opens_only_unchanged(&sealed, name, &message, &original)?;
        }
    }

    #[test]
    fn a_flipped_bit_of_a_delivered_message_opens_to_nothing(
        sealed in sealed(),
        recipient in any::<Index>(),
        bit in any::<Index>(),
    ) {
        let name = sealed.recipients[recipient.index(sealed.recipients.len())];
        let delivered = delivered_message(&sealed, name);
        let original = ReceivedMessage::try_from(delivered.clone()).unwrap();
        let mut wire = delivered.encode_to_vec();
        flip(&mut wire, bit);

        let Ok(decoded) = pb::Message::decode(&wire[..]) else { return Ok(()) };
        let Ok(message) = ReceivedMessage::try_from(decoded) else { return Ok(()) };

        // Message ids, sequence and conversation of the delivery are outside the envelope: a
        // flip there leaves `message` equal to `original`, which must still open.
        assert_opens_only_unchanged(&sealed, name, &message, &original)?;
    }

    #[test]
    fn a_flipped_bit_of_any_field_of_a_delivered_message_opens_to_nothing(
        sealed in sealed(),
        recipient in any::<Index>(),
        field in 0..N_FIELDS,
        bit in any::<Index>(),
    ) {
        let name = sealed.recipients[recipient.index(sealed.recipients.len())];
        let original = ReceivedMessage::try_from(delivered_message(&sealed, name)).unwrap();
        let mut message = original.clone();

        let Some(what) = flip_field(&mut message, field, bit) else { return Ok(()) };

        let result = open_plaintext(&message, device(name), &sealed.signing_key());

        if read_view(&message) == read_view(&original) {
            prop_assert_eq!(result, Ok(sealed.plaintext.clone()), "{}", what);
        } else {
            prop_assert!(result.is_err(), "{what} flipped, and {name} opened it");
        }
    }

    #[test]
    fn a_flipped_bit_of_any_signed_field_of_a_sent_envelope_is_refused_by_the_server(
        sealed in sealed(),
        field in 0..N_FIELDS,
        bit in any::<Index>(),
    ) {
        // The server sees the full list: flip in the first sealed entry, which `flip_field`
        // calls the own one.
        let mut message = ReceivedMessage {
            envelope: sealed.envelope.clone(),
            recipients_digest: Vec::new(),
            recipient_count: 0,
        };
        let Some(what) = flip_field(&mut message, field, bit) else { return Ok(()) };

        let check = message.envelope.verify_as_sent(&sealed.signing_key());

        if signed_view(&message.envelope) == signed_view(&sealed.envelope) {
            prop_assert!(check.is_ok(), "{what}: {check:?}");
        } else {
            prop_assert!(check.is_err(), "{what} flipped, and the server accepted it");
        }
    }
}

#[test]
fn the_v1_suite_is_still_sealed_by_the_strategy() {
    // The properties above cover both suites only if the strategy draws both.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let suites: std::collections::HashSet<u32> = (0..16)
        .map(|_| {
            sealed()
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .envelope
                .suite
        })
        .collect();

    assert_eq!(suites, [SUITE_V1, SUITE_V2].into());
}
