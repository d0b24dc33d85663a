//! Validation of the public keys a device uploads, and their fingerprints.

use rsa::{
    RsaPublicKey,
    pkcs8::{DecodePublicKey, EncodePublicKey},
    traits::PublicKeyParts,
};
use sha2::{Digest, Sha256};

use crate::Error;

/// RSA moduli we accept, in bits: below 2048 is too weak, above 4096 only costs senders time.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;
/// A 4096-bit SubjectPublicKeyInfo is about 550 bytes; anything much larger is not a key we take.
const MAX_SPKI_BYTES: usize = 1024;

/// A device's validated public keys with their fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedKeys {
    /// RSA-OAEP key, DER SubjectPublicKeyInfo, exactly as uploaded (and canonical).
    pub encryption_public_key: Vec<u8>,
    /// SHA-256 of `encryption_public_key`.
    pub encryption_key_fingerprint: [u8; 32],
    /// Ed25519 key, 32 bytes.
    pub signing_public_key: [u8; 32],
    /// SHA-256 of `signing_public_key`.
    pub signing_key_fingerprint: [u8; 32],
}

/// Checks both keys of a device.
///
/// # Errors
/// [`Error::InvalidPublicKey`] with the reason: not DER SPKI, not RSA, wrong size or exponent, a
/// non-canonical encoding (which would make fingerprints ambiguous), or an Ed25519 key that is
/// not a valid point or is of small order.
pub fn validate(encryption_spki: &[u8], signing_key: &[u8]) -> Result<ValidatedKeys, Error> {
    let encryption_public_key = validate_encryption_key(encryption_spki)?;
    let signing_public_key = validate_signing_key(signing_key)?;
    Ok(ValidatedKeys {
        encryption_key_fingerprint: Sha256::digest(&encryption_public_key).into(),
        encryption_public_key,
        signing_key_fingerprint: Sha256::digest(signing_public_key).into(),
        signing_public_key,
    })
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidPublicKey(reason.into())
}

fn validate_encryption_key(spki: &[u8]) -> Result<Vec<u8>, Error> {
    if spki.is_empty() {
        return Err(invalid("the encryption key is missing"));
    }
    if spki.len() > MAX_SPKI_BYTES {
        return Err(invalid("the encryption key is too large"));
    }
    let key = RsaPublicKey::from_public_key_der(spki)
        .map_err(|_| invalid("the encryption key must be an RSA SubjectPublicKeyInfo in DER"))?;
    let bits = key.n().bits();
    if !RSA_BITS.contains(&bits) {
        return Err(invalid(format!(
            "the RSA key has {bits} bits; 2048 to 4096 are accepted"
        )));
    }
    if key.e() != &rsa::BigUint::from(65_537u32) {
        return Err(invalid("the RSA public exponent must be 65537"));
    }
    let canonical = key
        .to_public_key_der()
        .map_err(|_| invalid("the RSA key cannot be re-encoded"))?;
    if canonical.as_bytes() != spki {
        return Err(invalid("the encryption key is not in canonical DER"));
    }
    Ok(spki.to_vec())
}

fn validate_signing_key(bytes: &[u8]) -> Result<[u8; 32], Error> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| invalid("the signing key must be a raw 32-byte Ed25519 public key"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| invalid("the signing key is not a valid Ed25519 point"))?;
    if key.is_weak() {
        return Err(invalid("the signing key is of small order"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use rsa::RsaPrivateKey;

    use super::*;

    fn spki(bits: usize) -> Vec<u8> {
        let mut rng = rand_core::OsRng;
        let private = RsaPrivateKey::new(&mut rng, bits).unwrap();
        private
            .to_public_key()
            .to_public_key_der()
            .unwrap()
            .into_vec()
    }

    fn ed25519() -> [u8; 32] {
        ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng)
            .verifying_key()
            .to_bytes()
    }

    #[test]
    fn a_2048_bit_rsa_key_and_an_ed25519_key_are_accepted_with_their_fingerprints() {
        let (encryption, signing) = (spki(2048), ed25519());

        let keys = validate(&encryption, &signing).unwrap();

        assert_eq!(
            keys.encryption_key_fingerprint,
            <[u8; 32]>::from(Sha256::digest(&encryption))
        );
        assert_eq!(
            keys.signing_key_fingerprint,
            <[u8; 32]>::from(Sha256::digest(signing))
        );
    }

    #[test]
    fn a_1024_bit_rsa_key_is_refused() {
        let error = validate(&spki(1024), &ed25519()).unwrap_err();

        assert!(error.to_string().contains("1024 bits"), "{error}");
    }

    #[test]
    fn garbage_and_truncated_keys_are_refused() {
        let good = spki(2048);

        assert!(validate(b"not a key", &ed25519()).is_err());
        assert!(validate(&good[..good.len() - 1], &ed25519()).is_err());
        assert!(validate(&good, &[0u8; 31]).is_err());
        assert!(validate(&[], &ed25519()).is_err());
    }

    #[test]
    fn a_small_order_ed25519_key_is_refused() {
        // The identity point: valid encoding, but of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;

        let error = validate(&spki(2048), &identity).unwrap_err();

        assert!(error.to_string().contains("small order"), "{error}");
    }
}
