//! Key generation (the one slow test), export and import, and bad keys.

use e2ee::{DEFAULT_RSA_BITS, DeviceKeys, Error, RecipientDevice, Sender};

use crate::{
    helpers::{device, first_position, vectors},
    schema::unhex,
};

const USER: &str = "00000000-0000-4000-8000-0000000000a1";
const DEVICE: &str = "00000000-0000-4000-8000-0000000000d1";
const CONVERSATION: &str = "c0000000-0000-4000-8000-0000000000c1";

#[test]
fn fresh_default_keys_round_trip_a_message_and_survive_export_and_import() {
    let keys = DeviceKeys::generate(DEFAULT_RSA_BITS).unwrap();
    let public = keys.public_keys().clone();
    let me = Sender {
        user_id: USER,
        device_id: DEVICE,
        keys: &keys,
    };
    let recipient = RecipientDevice {
        device_id: DEVICE.into(),
        encryption_spki: public.encryption_spki.clone(),
    };

    let envelope = e2ee::seal(
        &me,
        CONVERSATION,
        "m",
        &[recipient],
        &first_position(),
        b"to myself",
    )
    .unwrap();
    let imported = DeviceKeys::from_pkcs8_der(
        &keys.encryption_pkcs8_der().unwrap(),
        &keys.signing_pkcs8_der().unwrap(),
    )
    .unwrap();
    let message = envelope.delivered_to(DEVICE).unwrap();

    assert_eq!(imported.public_keys(), &public);
    assert_eq!(
        public.encryption_key_fingerprint,
        e2ee::fingerprint(&public.encryption_spki)
    );
    assert_eq!(
        public.signing_key_fingerprint,
        e2ee::fingerprint(&public.signing_public_key)
    );
    let opened = e2ee::open(&message, DEVICE, &imported, &public.signing_public_key).unwrap();
    assert_eq!(opened.plaintext, b"to myself");
    // A 3072-bit modulus: 384-byte wrapped keys.
    assert_eq!(message.envelope.wrapped_keys[0].wrapped_key.len(), 384);
}

#[test]
fn debug_shows_fingerprints_and_never_private_keys() {
    let keys = &device("alice-laptop").keys;
    let secret = hex::encode(keys.signing_pkcs8_der().unwrap());

    let shown = format!("{keys:?}");

    assert!(shown.contains(&e2ee::fingerprint_hex(
        &keys.public_keys().signing_key_fingerprint
    )));
    assert!(!shown.contains(&secret[secret.len() - 64..]));
}

#[test]
fn damaged_private_keys_are_refused_without_panicking() {
    let alice = vectors().device("alice-laptop");
    let (encryption, signing) = (
        unhex(&alice.encryption_private_pkcs8),
        unhex(&alice.signing_private_pkcs8),
    );

    for index in (0..encryption.len()).step_by(41) {
        let mut damaged = encryption.clone();
        damaged[index] ^= 0x55;
        // Most damage is refused. What is accepted (damage in the CRT values, which the rsa
        // crate recomputes, for example) must still be a working key.
        if let Ok(keys) = DeviceKeys::from_pkcs8_der(&damaged, &signing) {
            let public = keys.public_keys();
            let me = Sender {
                user_id: USER,
                device_id: DEVICE,
                keys: &keys,
            };
            let recipient = RecipientDevice {
                device_id: DEVICE.into(),
                encryption_spki: public.encryption_spki.clone(),
            };
            let envelope = e2ee::seal(
                &me,
                CONVERSATION,
                "m",
                &[recipient],
                &first_position(),
                b"x",
            )
            .unwrap();
            let message = envelope.delivered_to(DEVICE).unwrap();
            let opened = e2ee::open(&message, DEVICE, &keys, &public.signing_public_key)
                .map(|opened| opened.plaintext);
            assert_eq!(opened.as_deref(), Ok(&b"x"[..]), "damage at byte {index}");
        }
    }
    for length in [0, 1, 10, encryption.len() / 2, encryption.len() - 1] {
        assert!(DeviceKeys::from_pkcs8_der(&encryption[..length], &signing).is_err());
    }
    for length in [0, 16, signing.len() - 1] {
        assert!(DeviceKeys::from_pkcs8_der(&encryption, &signing[..length]).is_err());
    }
}

#[test]
fn swapped_private_keys_are_refused() {
    let alice = vectors().device("alice-laptop");

    let result = DeviceKeys::from_pkcs8_der(
        &unhex(&alice.signing_private_pkcs8),
        &unhex(&alice.encryption_private_pkcs8),
    );

    assert!(matches!(result, Err(Error::InvalidKey { .. })));
}
