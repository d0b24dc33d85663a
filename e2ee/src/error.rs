//! The one error type of the crate.

/// Everything that can go wrong while sealing, opening or verifying an envelope, or handling keys.
///
/// Each failure of [`open`](crate::open) has its own variant, in the order `open` checks them.
/// Show them to the user as "this message could not be decrypted", and never send which one it
/// was back to anybody: telling a remote party why an unwrap failed is a padding oracle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The envelope names a suite this crate does not implement (`CIPHER_SUITE_V1` = 1 and
    /// `CIPHER_SUITE_V2` = 2 are).
    #[error("unsupported cipher suite {suite}")]
    UnsupportedSuite {
        /// The suite number the envelope carries.
        suite: u32,
    },
    /// A field has the wrong length or shape (for example an 11-byte nonce or a 63-byte
    /// signature), or a sender's recipient list is empty or repeats a device.
    #[error("malformed envelope: {what}")]
    Malformed {
        /// Which field, and what is wrong with it.
        what: &'static str,
    },
    /// The Ed25519 signature does not verify with the sender device's key over the canonical
    /// header and the ciphertext: a forged sender, or any changed header field, nonce, key
    /// commitment, recipients digest or ciphertext.
    #[error("the signature does not verify with the sender device's key")]
    BadSignature,
    /// The envelope has no wrapped key for this device (it was not a recipient).
    #[error("the message carries no wrapped key for this device")]
    NoKeyForThisDevice,
    /// The envelope wraps the content key for this device, but for another encryption key than
    /// the one it holds now (the device replaced its keys since).
    #[error("the message's key for this device was wrapped for another encryption key")]
    KeyFingerprintMismatch,
    /// Suite V2: this device's wrapped key is not one the sender signed: its inclusion proof does
    /// not lead from the entry (device, fingerprint, wrapped key) to the signed recipients
    /// digest. Checked before any RSA work, so that only a sender device can choose what this
    /// device decrypts.
    #[error("the wrapped key for this device is not bound to the signed recipients digest")]
    WrappedKeyNotSigned,
    /// RSA-OAEP decryption of the wrapped key failed, or did not yield 32 bytes.
    #[error("the content key could not be unwrapped")]
    UnwrapFailed,
    /// The unwrapped content key does not match the envelope's key commitment.
    #[error("the content key does not match the key commitment")]
    KeyCommitmentMismatch,
    /// AES-256-GCM-SIV decryption failed (wrong key, nonce, header or ciphertext).
    #[error("the ciphertext could not be decrypted")]
    DecryptFailed,
    /// Suite V2: the decrypted plaintext is not padded as the format says (length prefix,
    /// zeros, the bucket of that length).
    #[error("the decrypted plaintext is not padded canonically")]
    BadPadding,
    /// A key of this device or of the sender is unusable: not parseable, wrong size or exponent,
    /// or an Ed25519 point that is invalid or of small order.
    #[error("invalid key: {what}")]
    InvalidKey {
        /// Which key, and what is wrong with it.
        what: &'static str,
    },
    /// A recipient's encryption key is not a canonical DER SubjectPublicKeyInfo of an RSA key of
    /// 2048 to 4096 bits with exponent 65537 (what auth publishes).
    #[error("invalid encryption key for recipient device {device_id}")]
    InvalidRecipientKey {
        /// The recipient device.
        device_id: String,
    },
    /// Encryption failed: RSA-OAEP wrapping, or a plaintext too long for AES-GCM-SIV.
    #[error("encryption failed: {what}")]
    EncryptFailed {
        /// What could not be encrypted.
        what: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Randomness,
}

impl Error {
    /// The variant's name, e.g. `"BadSignature"`: stable, and the `expected_error` of the
    /// negative cases in `testdata/vectors.json`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Error::UnsupportedSuite { .. } => "UnsupportedSuite",
            Error::Malformed { .. } => "Malformed",
            Error::BadSignature => "BadSignature",
            Error::NoKeyForThisDevice => "NoKeyForThisDevice",
            Error::KeyFingerprintMismatch => "KeyFingerprintMismatch",
            Error::WrappedKeyNotSigned => "WrappedKeyNotSigned",
            Error::UnwrapFailed => "UnwrapFailed",
            Error::KeyCommitmentMismatch => "KeyCommitmentMismatch",
            Error::DecryptFailed => "DecryptFailed",
            Error::BadPadding => "BadPadding",
            Error::InvalidKey { .. } => "InvalidKey",
            Error::InvalidRecipientKey { .. } => "InvalidRecipientKey",
            Error::EncryptFailed { .. } => "EncryptFailed",
            Error::Randomness => "Randomness",
        }
    }
}
