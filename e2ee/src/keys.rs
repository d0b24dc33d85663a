//! A device's private keys, their public halves and fingerprints.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, pkcs8::DecodePrivateKey as _};
use rand_core::OsRng;
use rsa::{
    RsaPrivateKey,
    pkcs8::{EncodePrivateKey, EncodePublicKey},
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    Error,
    format::{DIGEST_LEN, SIGNING_KEY_LEN},
    primitives,
};

/// RSA modulus size of newly generated encryption keys (what auth's docs ask clients to use).
pub const DEFAULT_RSA_BITS: usize = 3072;

/// The private keys of one device: an RSA-OAEP decryption key (content keys are wrapped for
/// it) and an Ed25519 signing key (it signs the envelopes the device sends).
///
/// Both keys are zeroized when dropped. `Debug` shows only the fingerprints.
#[derive(Clone)]
pub struct DeviceKeys {
    encryption: RsaPrivateKey,
    signing: SigningKey,
    public: PublicDeviceKeys,
}

/// The public half of [`DeviceKeys`], as a device uploads it to auth (`auth.v1.DeviceKeys`) and
/// as auth publishes it with its fingerprints (`auth.v1.Device`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicDeviceKeys {
    /// RSA-OAEP key as canonical DER SubjectPublicKeyInfo (`encryption_public_key`).
    pub encryption_spki: Vec<u8>,
    /// SHA-256 of `encryption_spki` (`encryption_key_fingerprint`).
    pub encryption_key_fingerprint: [u8; DIGEST_LEN],
    /// Raw Ed25519 public key (`signing_public_key`).
    pub signing_public_key: [u8; SIGNING_KEY_LEN],
    /// SHA-256 of `signing_public_key` (`signing_key_fingerprint`).
    pub signing_key_fingerprint: [u8; DIGEST_LEN],
}

impl DeviceKeys {
    /// Generates fresh keys: RSA with `rsa_bits` (use [`DEFAULT_RSA_BITS`]; 2048 to 4096 are
    /// accepted) and Ed25519. RSA generation is slow: about a second for 3072 bits.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a size outside 2048 to 4096 bits.
    pub fn generate(rsa_bits: usize) -> Result<Self, Error> {
        if !primitives::RSA_BITS.contains(&rsa_bits) {
            return Err(Error::InvalidKey {
                what: "RSA keys must have 2048 to 4096 bits",
            });
        }
        let encryption =
            RsaPrivateKey::new(&mut OsRng, rsa_bits).map_err(|_| Error::InvalidKey {
                what: "RSA key generation failed",
            })?;
        Self::from_parts(encryption, SigningKey::generate(&mut OsRng))
    }

    /// Imports keys exported with [`encryption_pkcs8_der`](Self::encryption_pkcs8_der) and
    /// [`signing_pkcs8_der`](Self::signing_pkcs8_der) (or any PKCS#8 DER RSA and Ed25519 keys).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when either key does not parse, or the RSA key is not of 2048 to
    /// 4096 bits with exponent 65537, or is inconsistent.
    pub fn from_pkcs8_der(encryption_pkcs8: &[u8], signing_pkcs8: &[u8]) -> Result<Self, Error> {
        let encryption = primitives::parse_rsa_private_key(encryption_pkcs8)?;
        let signing = SigningKey::from_pkcs8_der(signing_pkcs8).map_err(|_| Error::InvalidKey {
            what: "not an Ed25519 private key in PKCS#8 DER",
        })?;
        Self::from_parts(encryption, signing)
    }

    /// The RSA private key as PKCS#8 DER. Keep it secret.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if encoding fails (it does not for keys this type holds).
    pub fn encryption_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let document = self
            .encryption
            .to_pkcs8_der()
            .map_err(|_| Error::InvalidKey {
                what: "the RSA private key cannot be encoded",
            })?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// The Ed25519 private key as PKCS#8 DER. Keep it secret.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if encoding fails (it does not for keys this type holds).
    pub fn signing_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let document = self.signing.to_pkcs8_der().map_err(|_| Error::InvalidKey {
            what: "the Ed25519 private key cannot be encoded",
        })?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// The public keys and their fingerprints.
    #[must_use]
    pub fn public_keys(&self) -> &PublicDeviceKeys {
        &self.public
    }

    pub(crate) fn encryption_key(&self) -> &RsaPrivateKey {
        &self.encryption
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    fn from_parts(encryption: RsaPrivateKey, signing: SigningKey) -> Result<Self, Error> {
        let encryption_spki = encryption
            .to_public_key()
            .to_public_key_der()
            .map_err(|_| Error::InvalidKey {
                what: "the RSA public key cannot be encoded",
            })?
            .into_vec();
        let signing_public_key = signing.verifying_key().to_bytes();
        let public = PublicDeviceKeys {
            encryption_key_fingerprint: fingerprint(&encryption_spki),
            encryption_spki,
            signing_key_fingerprint: fingerprint(&signing_public_key),
            signing_public_key,
        };
        Ok(DeviceKeys {
            encryption,
            signing,
            public,
        })
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKeys")
            .field(
                "encryption_key_fingerprint",
                &fingerprint_hex(&self.public.encryption_key_fingerprint),
            )
            .field(
                "signing_key_fingerprint",
                &fingerprint_hex(&self.public.signing_key_fingerprint),
            )
            .finish_non_exhaustive()
    }
}

/// A key fingerprint as auth computes it: SHA-256 of the key's published bytes (the DER
/// SubjectPublicKeyInfo of an encryption key, the raw 32 bytes of a signing key).
#[must_use]
pub fn fingerprint(public_key: &[u8]) -> [u8; DIGEST_LEN] {
    Sha256::digest(public_key).into()
}

/// Lowercase hex of all the bytes, e.g. for logs and debugging.
#[must_use]
pub fn fingerprint_hex(fingerprint: &[u8]) -> String {
    fingerprint
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A short form to show people: the first 8 bytes as four groups of four lowercase hex digits,
/// e.g. `"3f2a 9c01 77be 0d45"`. Compare [`safety_number`](crate::safety_number)s to
/// authenticate a contact; this only tells devices apart.
#[must_use]
pub fn short_fingerprint(fingerprint: &[u8]) -> String {
    fingerprint
        .iter()
        .take(8)
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|pair| pair.iter().map(|byte| format!("{byte:02x}")).collect())
        .collect::<Vec<String>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_and_print_in_hex() {
        let fingerprint = fingerprint(b"abc");

        assert_eq!(
            fingerprint_hex(&fingerprint),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short_fingerprint(&fingerprint), "ba78 16bf 8f01 cfea");
        assert_eq!(short_fingerprint(&[0xab, 0xcd, 0xef]), "abcd ef");
    }

    #[test]
    fn sizes_outside_2048_to_4096_bits_are_refused_before_any_work() {
        assert!(matches!(
            DeviceKeys::generate(1024),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            DeviceKeys::generate(8192),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn garbage_private_keys_are_refused() {
        assert!(DeviceKeys::from_pkcs8_der(b"", b"").is_err());
        assert!(DeviceKeys::from_pkcs8_der(&[0x30; 10], &[0x30; 10]).is_err());
        assert!(DeviceKeys::from_pkcs8_der(&vec![0u8; 100_000], b"").is_err());
    }
}
