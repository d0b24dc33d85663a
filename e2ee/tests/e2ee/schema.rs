//! The schema of `testdata/vectors.json` (documented in `testdata/README.md`), shared by the
//! tests and `examples/make_vectors.rs`. Every byte string is lowercase hex.

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Vectors {
    pub comment: String,
    pub schema_version: u32,
    pub devices: Vec<Device>,
    pub recipients_digests: Vec<DigestCase>,
    pub envelopes: Vec<EnvelopeCase>,
    pub negative: Vec<NegativeCase>,
    pub safety_numbers: Vec<SafetyNumberCase>,
    /// Schema 2: Ed25519 verifications that must fail exactly as strict verification says.
    #[serde(default)]
    pub signatures: Vec<SignatureCase>,
    /// Schema 2: recipients' encryption keys that sealing must refuse.
    #[serde(default)]
    pub bad_recipient_keys: Vec<BadRecipientKeyCase>,
    /// Schema 2: a chain of V2 envelopes as delivered, with what a receiver flags.
    #[serde(default)]
    pub chains: Vec<ChainCase>,
}

/// An Ed25519 verification with its expected outcome.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignatureCase {
    pub name: String,
    pub comment: String,
    pub public_key: String,
    pub message: String,
    pub signature: String,
    /// `"ok"` or the `e2ee::Error` name (`InvalidKey`, `BadSignature`, `Malformed`).
    pub expected: String,
}

/// An encryption key (SubjectPublicKeyInfo DER) that `seal` refuses with `InvalidRecipientKey`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BadRecipientKeyCase {
    pub name: String,
    pub comment: String,
    pub encryption_spki: String,
}

/// Delivered V2 messages of one conversation, in delivery order, and each one's flags.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChainCase {
    pub name: String,
    pub comment: String,
    pub opener: String,
    pub messages: Vec<ChainMessage>,
}

/// One message of a [`ChainCase`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ChainMessage {
    pub sequence: u64,
    pub server_time_ms: u64,
    pub sender: String,
    pub recipients_digest: String,
    pub recipient_count: u32,
    pub envelope: WireEnvelope,
    pub envelope_hash: String,
    /// The anomalies as `e2ee::ChainAnomaly` serializes them (`{"kind": "gap", ...}`).
    pub anomalies: Vec<serde_json::Value>,
}

/// A device with fixed keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    pub user_id: String,
    pub device_id: String,
    pub rsa_bits: usize,
    pub encryption_private_pkcs8: String,
    pub encryption_spki: String,
    pub encryption_key_fingerprint: String,
    pub signing_private_pkcs8: String,
    pub signing_public_key: String,
    pub signing_key_fingerprint: String,
}

/// A recipients digest computed from a list in the given (unsorted) order.
#[derive(Debug, Serialize, Deserialize)]
pub struct DigestCase {
    pub comment: String,
    pub recipients: Vec<DigestRecipient>,
    pub sorted_device_ids: Vec<String>,
    pub encoded: String,
    pub digest: String,
}

/// One entry of a [`DigestCase`].
#[derive(Debug, Serialize, Deserialize)]
pub struct DigestRecipient {
    pub device_id: String,
    pub key_fingerprint: String,
}

/// A sealed message with everything needed to reproduce it.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnvelopeCase {
    pub name: String,
    pub comment: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub plaintext: String,
    pub content_key: String,
    pub nonce: String,
    pub recipients_digest: String,
    pub key_commitment: String,
    pub canonical_header: String,
    pub signed_message: String,
    pub envelope: WireEnvelope,
    /// V2: the envelope hash (what the sender's next envelope names); empty for V1.
    #[serde(default)]
    pub envelope_hash: String,
}

/// A delivered message that must fail to open with `expected_error`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NegativeCase {
    pub name: String,
    pub comment: String,
    pub opener: String,
    pub sender: String,
    pub recipients_digest: String,
    #[serde(default)]
    pub recipient_count: u32,
    pub envelope: WireEnvelope,
    pub expected_error: String,
}

/// `chat.v1.Envelope` with hex bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEnvelope {
    pub suite: u32,
    pub conversation_id: String,
    pub sender_user_id: String,
    pub sender_device_id: String,
    pub client_message_id: String,
    pub nonce: String,
    pub ciphertext: String,
    pub wrapped_keys: Vec<WireWrappedKey>,
    pub key_commitment: String,
    pub signature: String,
    #[serde(default)]
    pub sender_counter: u64,
    #[serde(default)]
    pub previous_envelope_hash: String,
    #[serde(default)]
    pub sender_time_ms: u64,
}

/// `chat.v1.WrappedKey` with hex bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireWrappedKey {
    pub device_id: String,
    pub key_fingerprint: String,
    pub wrapped_key: String,
    #[serde(default)]
    pub leaf_index: u32,
    #[serde(default)]
    pub inclusion_proof: String,
}

/// A safety number of two users.
#[derive(Debug, Serialize, Deserialize)]
pub struct SafetyNumberCase {
    pub comment: String,
    pub user_a: String,
    pub fingerprints_a: Vec<String>,
    pub user_b: String,
    pub fingerprints_b: Vec<String>,
    pub safety_number: String,
}

impl From<&e2ee::Envelope> for WireEnvelope {
    fn from(envelope: &e2ee::Envelope) -> Self {
        WireEnvelope {
            suite: envelope.suite,
            conversation_id: envelope.conversation_id.clone(),
            sender_user_id: envelope.sender_user_id.clone(),
            sender_device_id: envelope.sender_device_id.clone(),
            client_message_id: envelope.client_message_id.clone(),
            nonce: hex::encode(&envelope.nonce),
            ciphertext: hex::encode(&envelope.ciphertext),
            wrapped_keys: envelope
                .wrapped_keys
                .iter()
                .map(|key| WireWrappedKey {
                    device_id: key.device_id.clone(),
                    key_fingerprint: hex::encode(&key.key_fingerprint),
                    wrapped_key: hex::encode(&key.wrapped_key),
                    leaf_index: key.leaf_index,
                    inclusion_proof: hex::encode(&key.inclusion_proof),
                })
                .collect(),
            key_commitment: hex::encode(&envelope.key_commitment),
            signature: hex::encode(&envelope.signature),
            sender_counter: envelope.sender_counter,
            previous_envelope_hash: hex::encode(&envelope.previous_envelope_hash),
            sender_time_ms: envelope.sender_time_ms,
        }
    }
}

impl From<&WireEnvelope> for e2ee::Envelope {
    fn from(envelope: &WireEnvelope) -> Self {
        e2ee::Envelope {
            suite: envelope.suite,
            conversation_id: envelope.conversation_id.clone(),
            sender_user_id: envelope.sender_user_id.clone(),
            sender_device_id: envelope.sender_device_id.clone(),
            client_message_id: envelope.client_message_id.clone(),
            nonce: unhex(&envelope.nonce),
            ciphertext: unhex(&envelope.ciphertext),
            wrapped_keys: envelope
                .wrapped_keys
                .iter()
                .map(|key| e2ee::WrappedKey {
                    device_id: key.device_id.clone(),
                    key_fingerprint: unhex(&key.key_fingerprint),
                    wrapped_key: unhex(&key.wrapped_key),
                    leaf_index: key.leaf_index,
                    inclusion_proof: unhex(&key.inclusion_proof),
                })
                .collect(),
            key_commitment: unhex(&envelope.key_commitment),
            signature: unhex(&envelope.signature),
            sender_counter: envelope.sender_counter,
            previous_envelope_hash: unhex(&envelope.previous_envelope_hash),
            sender_time_ms: envelope.sender_time_ms,
        }
    }
}

impl Device {
    /// The device's private keys.
    pub fn keys(&self) -> e2ee::DeviceKeys {
        e2ee::DeviceKeys::from_pkcs8_der(
            &unhex(&self.encryption_private_pkcs8),
            &unhex(&self.signing_private_pkcs8),
        )
        .unwrap_or_else(|error| panic!("device {}: {error}", self.name))
    }

    /// The device as a recipient.
    pub fn recipient(&self) -> e2ee::RecipientDevice {
        e2ee::RecipientDevice {
            device_id: self.device_id.clone(),
            encryption_spki: unhex(&self.encryption_spki),
        }
    }
}

impl Vectors {
    /// The device called `name`.
    pub fn device(&self, name: &str) -> &Device {
        self.devices
            .iter()
            .find(|device| device.name == name)
            .unwrap_or_else(|| panic!("no device {name} in the vectors"))
    }
}

/// Decodes hex, panicking with the input on error (test data only).
pub fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_else(|error| panic!("bad hex {text:?}: {error}"))
}

/// A chain anomaly as the vectors write it (the same shape as `ChainAnomaly`'s serde form).
pub fn anomaly_json(anomaly: &e2ee::ChainAnomaly) -> serde_json::Value {
    use e2ee::ChainAnomaly::*;
    use serde_json::json;
    match *anomaly {
        Gap { first, last } => json!({"kind": "gap", "first": first, "last": last}),
        Fork { counter } => json!({"kind": "fork", "counter": counter}),
        Late { counter } => json!({"kind": "late", "counter": counter}),
        TimeAhead { ms } => json!({"kind": "time_ahead", "ms": ms}),
        TimeDelayed { ms } => json!({"kind": "time_delayed", "ms": ms}),
        TimeBackwards { ms } => json!({"kind": "time_backwards", "ms": ms}),
    }
}

impl WireEnvelope {
    /// The delivered message of this envelope with `digest` and `count`.
    pub fn received(&self, digest: &str, count: u32) -> e2ee::ReceivedMessage {
        e2ee::ReceivedMessage {
            envelope: self.into(),
            recipients_digest: unhex(digest),
            recipient_count: count,
        }
    }
}
