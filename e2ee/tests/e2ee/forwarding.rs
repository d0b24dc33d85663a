//! Key forwarding: a device re-wraps a message's key for another device of its user, which opens
//! the message with it; and what the receiving device refuses.

use e2ee::{
    Error, ForwardedKey, Forwarder, ReceivedMessage, forward_forwarded_key, forward_key,
    open_forwarded,
};

use crate::helpers::{TestDevice, deliver, device, first_position};

const CONVERSATION: &str = "c0000000-0000-4000-8000-0000000000aa";
const MESSAGE: &str = "01890000-0000-7000-8000-000000000001";
const OTHER_MESSAGE: &str = "01890000-0000-7000-8000-000000000002";

fn sender() -> &'static TestDevice {
    device("alice-laptop")
}

/// alice's laptop sends `text` to bob's phone (bob's laptop is added later).
fn sent_to_bobs_phone(client_message_id: &str, text: &[u8]) -> ReceivedMessage {
    let envelope = e2ee::seal(
        &sender().sender(),
        CONVERSATION,
        client_message_id,
        &[device("bob-phone").recipient.clone()],
        &first_position(),
        text,
    )
    .unwrap();
    deliver(&envelope, &device("bob-phone").device_id)
}

fn forwarder(name: &str) -> Forwarder<'static> {
    let device = device(name);
    Forwarder {
        user_id: &device.user_id,
        device_id: &device.device_id,
        keys: &device.keys,
    }
}

/// bob's phone forwards `message`'s key to bob's laptop.
fn forwarded(message: &ReceivedMessage, message_id: &str) -> ForwardedKey {
    forward_key(
        message,
        message_id,
        &forwarder("bob-phone"),
        &sender().signing_key(),
        &device("bob-laptop").recipient,
    )
    .unwrap()
}

/// bob's laptop opens `message` (without a key of its own) with `key`.
fn open_on_laptop(
    message: &ReceivedMessage,
    message_id: &str,
    key: &ForwardedKey,
    forwarder_name: &str,
) -> Result<Vec<u8>, Error> {
    let laptop = device("bob-laptop");
    let mut without_own_key = message.clone();
    without_own_key.envelope.wrapped_keys.clear();
    open_forwarded(
        &without_own_key,
        message_id,
        key,
        &laptop.device_id,
        &laptop.keys,
        &sender().signing_key(),
        &device(forwarder_name).signing_key(),
    )
    .map(|opened| opened.plaintext)
}

#[test]
fn a_key_forwarded_by_another_device_of_the_user_opens_the_message() {
    let message = sent_to_bobs_phone("m-1", b"before the laptop");

    let key = forwarded(&message, MESSAGE);

    assert_eq!(
        open_on_laptop(&message, MESSAGE, &key, "bob-phone").unwrap(),
        b"before the laptop"
    );
    assert_eq!(key.forwarder_device_id, device("bob-phone").device_id);
    assert_eq!(key.recipient_device_id, device("bob-laptop").device_id);
}

#[test]
fn a_tampered_or_misattributed_forwarded_key_is_refused() {
    let message = sent_to_bobs_phone("m-1", b"secret");
    let key = forwarded(&message, MESSAGE);
    let changed = |change: &dyn Fn(&mut ForwardedKey)| {
        let mut key = key.clone();
        change(&mut key);
        key
    };

    let cases: Vec<(&str, ForwardedKey, &str, Error)> = vec![
        (
            "a flipped bit of the wrapped key",
            changed(&|k| k.wrapped_key[5] ^= 1),
            "bob-phone",
            Error::BadSignature,
        ),
        (
            "a flipped bit of the signature",
            changed(&|k| k.signature[9] ^= 1),
            "bob-phone",
            Error::BadSignature,
        ),
        (
            "verified with another device's key",
            key.clone(),
            "alice-phone",
            Error::BadSignature,
        ),
        (
            "another forwarding device named",
            changed(&|k| {
                k.forwarder_device_id
                    .clone_from(&device("alice-phone").device_id)
            }),
            "bob-phone",
            Error::BadSignature,
        ),
    ];
    for (case, key, forwarder_name, expected) in cases {
        assert_eq!(
            open_on_laptop(&message, MESSAGE, &key, forwarder_name),
            Err(expected),
            "{case}"
        );
    }
    assert!(
        matches!(
            open_on_laptop(&message, OTHER_MESSAGE, &key, "bob-phone"),
            Err(Error::Malformed { .. })
        ),
        "served with another message"
    );
}

#[test]
fn a_lying_forwarder_cannot_make_a_message_say_something_else() {
    let message = sent_to_bobs_phone("m-1", b"what alice said");
    let other = sent_to_bobs_phone("m-2", b"something else");

    // bob's phone signs the key of another message as this one's: its signature verifies, but
    // the key does not match the commitment alice signed.
    let mut lie = forwarded(&other, OTHER_MESSAGE);
    lie.message_id = MESSAGE.to_owned();
    let signed =
        e2ee::forwarded_key_signed_message(&lie, &message.envelope.key_commitment).unwrap();
    lie.signature = sign_as(device("bob-phone"), &signed);

    assert_eq!(
        open_on_laptop(&message, MESSAGE, &lie, "bob-phone"),
        Err(Error::KeyCommitmentMismatch)
    );
}

#[test]
fn a_device_forwards_only_keys_it_was_given_and_verified() {
    let message = sent_to_bobs_phone("m-1", b"secret");
    let carols_copy = {
        let mut copy = message.clone();
        copy.envelope.wrapped_keys.clear();
        copy
    };

    let without_key = forward_key(
        &carols_copy,
        MESSAGE,
        &forwarder("carol-desktop"),
        &sender().signing_key(),
        &device("bob-laptop").recipient,
    );
    let with_wrong_sender_key = forward_key(
        &message,
        MESSAGE,
        &forwarder("bob-phone"),
        &device("mallory-laptop").signing_key(),
        &device("bob-laptop").recipient,
    );

    assert_eq!(without_key.unwrap_err(), Error::NoKeyForThisDevice);
    assert_eq!(with_wrong_sender_key.unwrap_err(), Error::BadSignature);
}

/// bob's laptop, which got the key by forwarding from the phone, forwards it on (here back to
/// the phone, the only other device of bob in the vectors: what a third device would get).
fn forwarded_on_by_laptop(
    message: &ReceivedMessage,
    received: &ForwardedKey,
    received_from: &str,
) -> Result<ForwardedKey, Error> {
    let mut laptops_copy = message.clone();
    laptops_copy.envelope.wrapped_keys.clear();
    forward_forwarded_key(
        &laptops_copy,
        MESSAGE,
        received,
        &device(received_from).signing_key(),
        &forwarder("bob-laptop"),
        &sender().signing_key(),
        &device("bob-phone").recipient,
    )
}

#[test]
fn a_key_received_by_forwarding_is_forwarded_on_and_opens_the_message() {
    let message = sent_to_bobs_phone("m-1", b"two hops");
    let first_hop = forwarded(&message, MESSAGE);

    let second_hop = forwarded_on_by_laptop(&message, &first_hop, "bob-phone").unwrap();
    let mut phones_copy = message.clone();
    phones_copy.envelope.wrapped_keys.clear();
    let phone = device("bob-phone");
    let opened = open_forwarded(
        &phones_copy,
        MESSAGE,
        &second_hop,
        &phone.device_id,
        &phone.keys,
        &sender().signing_key(),
        &device("bob-laptop").signing_key(),
    );

    assert_eq!(
        second_hop.forwarder_device_id,
        device("bob-laptop").device_id
    );
    assert_eq!(opened.unwrap().plaintext, b"two hops");
}

#[test]
fn a_key_received_by_forwarding_is_forwarded_on_only_after_every_check_of_opening_it() {
    let message = sent_to_bobs_phone("m-1", b"secret");
    let first_hop = forwarded(&message, MESSAGE);
    let mut other_message = first_hop.clone();
    other_message.message_id = OTHER_MESSAGE.to_owned();
    let mut for_another_device = forwarded(&message, MESSAGE);
    for_another_device.recipient_device_id = device("alice-phone").device_id.clone();
    for_another_device.signature = sign_as(
        device("bob-phone"),
        &e2ee::forwarded_key_signed_message(&for_another_device, &message.envelope.key_commitment)
            .unwrap(),
    );

    assert_eq!(
        forwarded_on_by_laptop(&message, &first_hop, "mallory-laptop").unwrap_err(),
        Error::BadSignature
    );
    assert_eq!(
        forwarded_on_by_laptop(&message, &other_message, "bob-phone").unwrap_err(),
        Error::BadSignature
    );
    assert!(matches!(
        forwarded_on_by_laptop(&message, &for_another_device, "bob-phone").unwrap_err(),
        Error::Malformed { .. }
    ));
}

fn sign_as(device: &TestDevice, message: &[u8]) -> Vec<u8> {
    use ed25519_dalek::{Signer, SigningKey, pkcs8::DecodePrivateKey};
    let key = SigningKey::from_pkcs8_der(&device.keys.signing_pkcs8_der().unwrap()).unwrap();
    key.sign(message).to_bytes().to_vec()
}
