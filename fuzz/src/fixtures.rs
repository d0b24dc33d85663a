//! What the targets hold fixed: the e2ee test vectors' devices, one message sealed to one of them
//! (committed, so that a corpus means the same thing in every run), and a token validator with a
//! key derived from a constant.

use std::sync::OnceLock;

use e2ee::{DeviceKeys, RecipientDevice, Sender};
use prost::Message as _;
use proto::chat::v1 as pb;

/// The e2ee crate's test vectors (devices with their private keys).
const VECTORS: &str = include_str!("../../e2ee/testdata/vectors.json");

/// `pb::Message` as the server delivers it to [`RECIPIENT`]: sealed by [`SENDER`] for
/// [`RECIPIENT`] and [`OTHER_RECIPIENT`], V2. Written by `fuzz-seeds --fixture`.
pub const DELIVERED_MESSAGE: &[u8] = include_bytes!("../fixtures/delivered-message.bin");
/// The plaintext of [`DELIVERED_MESSAGE`].
pub const PLAINTEXT: &[u8] = b"meet me at the usual place at nine";
/// The device that sealed [`DELIVERED_MESSAGE`].
pub const SENDER: &str = "alice-laptop";
/// The device [`DELIVERED_MESSAGE`] was delivered to.
pub const RECIPIENT: &str = "bob-phone";
/// The message's other recipient.
pub const OTHER_RECIPIENT: &str = "carol-desktop";

/// The `iss` and `aud` the token validator requires.
pub const ISSUER: &str = "https://auth.fuzz.test";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "chat.fuzz.test";

/// A device of the vectors file with its keys.
pub struct Device {
    /// Its user.
    pub user_id: String,
    /// Its id.
    pub device_id: String,
    /// Its private keys.
    pub keys: DeviceKeys,
    /// Its public encryption key, as auth publishes it.
    pub recipient: RecipientDevice,
}

impl Device {
    /// The device as a sender.
    pub fn sender(&self) -> Sender<'_> {
        Sender {
            user_id: &self.user_id,
            device_id: &self.device_id,
            keys: &self.keys,
        }
    }

    /// Its Ed25519 public key, raw, as auth publishes it.
    pub fn signing_key(&self) -> [u8; 32] {
        self.keys.public_keys().signing_public_key
    }
}

/// The device called `name` in the vectors file.
///
/// # Panics
/// For a name the file does not have.
pub fn device(name: &str) -> &'static Device {
    static DEVICES: OnceLock<Vec<(String, Device)>> = OnceLock::new();
    let devices = DEVICES.get_or_init(|| {
        let vectors: serde_json::Value = serde_json::from_str(VECTORS).expect("vectors.json");
        let field = |device: &serde_json::Value, name: &str| -> String {
            device[name].as_str().expect(name).to_owned()
        };
        let bytes = |device: &serde_json::Value, name: &str| -> Vec<u8> {
            hex::decode(field(device, name)).expect(name)
        };
        vectors["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|device| {
                let keys = DeviceKeys::from_pkcs8_der(
                    &bytes(device, "encryption_private_pkcs8"),
                    &bytes(device, "signing_private_pkcs8"),
                )
                .expect("the vectors' keys import");
                let device_id = field(device, "device_id");
                let recipient = RecipientDevice {
                    device_id: device_id.clone(),
                    encryption_spki: bytes(device, "encryption_spki"),
                };
                let entry = Device {
                    user_id: field(device, "user_id"),
                    device_id,
                    keys,
                    recipient,
                };
                (field(device, "name"), entry)
            })
            .collect()
    });
    devices
        .iter()
        .find(|(device_name, _)| device_name == name)
        .map(|(_, device)| device)
        .unwrap_or_else(|| panic!("no device {name} in the vectors"))
}

/// [`DELIVERED_MESSAGE`], decoded.
///
/// # Panics
/// When the committed fixture does not decode (regenerate it with `fuzz-seeds --fixture`).
pub fn delivered_message() -> &'static pb::Message {
    static MESSAGE: OnceLock<pb::Message> = OnceLock::new();
    MESSAGE.get_or_init(|| pb::Message::decode(DELIVERED_MESSAGE).expect("the fixture decodes"))
}

/// The key that signs the targets' access tokens: fixed, so that a corpus of signed tokens stays
/// meaningful.
pub fn token_signing_key() -> &'static token::SigningKey {
    static KEY: OnceLock<token::SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
        let pem = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key encodes");
        token::SigningKey::from_pkcs8_pem(&pem).expect("the key reads back")
    })
}

/// The same key, for signing what [`token::SigningKey`] would never sign (other headers).
pub fn raw_token_signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

/// A validator that trusts [`token_signing_key`] and requires [`ISSUER`] and [`AUDIENCE`].
pub fn validator() -> &'static token::Validator {
    static VALIDATOR: OnceLock<token::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        token::Validator::with_static_keys(
            token::ValidationSettings::new(ISSUER, AUDIENCE),
            token::KeySet::from_signing_keys(&[token_signing_key()]),
        )
    })
}

/// Runs `future` to completion (the validator's API is async; with static keys it never waits).
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
        })
        .block_on(future)
}
