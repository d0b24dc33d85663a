//! Shared fixtures: the vectors file, parsed once, and the devices' keys, imported once.

use std::{collections::HashMap, sync::OnceLock};

use e2ee::{DeviceKeys, Envelope, ReceivedMessage, RecipientDevice, Sender};

use crate::schema::{Device, Vectors};

const VECTORS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/vectors.json");

/// The parsed `testdata/vectors.json`.
pub fn vectors() -> &'static Vectors {
    static VECTORS: OnceLock<Vectors> = OnceLock::new();
    VECTORS.get_or_init(|| {
        let text = std::fs::read_to_string(VECTORS_PATH)
            .unwrap_or_else(|error| panic!("{VECTORS_PATH}: {error}"));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{VECTORS_PATH}: {error}"))
    })
}

/// A device of the vectors file with its imported private keys.
pub struct TestDevice {
    pub user_id: String,
    pub device_id: String,
    pub keys: DeviceKeys,
    pub recipient: RecipientDevice,
}

impl TestDevice {
    pub fn sender(&self) -> Sender<'_> {
        Sender {
            user_id: &self.user_id,
            device_id: &self.device_id,
            keys: &self.keys,
        }
    }

    pub fn signing_key(&self) -> [u8; 32] {
        self.keys.public_keys().signing_public_key
    }
}

/// The device called `name` in the vectors file (`alice-laptop`, `alice-phone`, `bob-phone`,
/// `bob-laptop` (3072-bit), `carol-desktop`, `mallory-laptop`).
pub fn device(name: &str) -> &'static TestDevice {
    static DEVICES: OnceLock<HashMap<String, TestDevice>> = OnceLock::new();
    let devices = DEVICES.get_or_init(|| {
        vectors()
            .devices
            .iter()
            .map(|device: &Device| {
                let test_device = TestDevice {
                    user_id: device.user_id.clone(),
                    device_id: device.device_id.clone(),
                    keys: device.keys(),
                    recipient: device.recipient(),
                };
                (device.name.clone(), test_device)
            })
            .collect()
    });
    devices
        .get(name)
        .unwrap_or_else(|| panic!("no device {name} in the vectors"))
}

/// The envelope as the server delivers it to `device_id`: only that device's entry (with its
/// inclusion proof), with the digest the server computed from the full list.
pub fn deliver(envelope: &Envelope, device_id: &str) -> ReceivedMessage {
    envelope.delivered_to(device_id).unwrap()
}

/// Opens `message` and returns the plaintext alone.
pub fn open_plaintext(
    message: &ReceivedMessage,
    device: &TestDevice,
    sender_key: &[u8],
) -> Result<Vec<u8>, e2ee::Error> {
    e2ee::open(message, &device.device_id, &device.keys, sender_key).map(|opened| opened.plaintext)
}

/// A chain position for tests: counter 1, no predecessor, a fixed time.
pub fn first_position() -> e2ee::ChainPosition {
    e2ee::ChainPosition::first(1_800_000_000_000)
}
