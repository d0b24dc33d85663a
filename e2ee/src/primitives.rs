//! The only calls into the cryptographic libraries, with the exact parameters of suite V1.
//!
//! Public (but hidden from the docs) so that the Wycheproof tests run their vectors through the
//! same functions the envelope code uses. Not a stable API: use [`seal`](crate::seal) and
//! [`open`](crate::open).

use aes_gcm_siv::{
    Aes256GcmSiv, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use ed25519_dalek::{Signature, VerifyingKey};
use rand_core::{OsRng, RngCore};
use rsa::{
    Oaep, RsaPrivateKey, RsaPublicKey,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey},
    traits::PublicKeyParts,
};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{
    Error,
    format::{CONTENT_KEY_LEN, NONCE_LEN, SIGNATURE_LEN, SIGNING_KEY_LEN},
};

/// RSA moduli accepted for encryption keys, in bits, as auth accepts them.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;
/// Larger than any SubjectPublicKeyInfo of a 4096-bit key (about 550 bytes), as in auth.
const MAX_SPKI_BYTES: usize = 1024;
/// Larger than any PKCS#8 document of a 4096-bit RSA key (about 2,400 bytes).
const MAX_PKCS8_BYTES: usize = 4096;

/// AES-256-GCM-SIV encryption; returns the ciphertext followed by the 16-byte tag.
///
/// # Errors
/// [`Error::EncryptFailed`] for a plaintext longer than AES-GCM-SIV allows (2^36 bytes).
pub fn aead_encrypt(
    key: &[u8; CONTENT_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let cipher = Aes256GcmSiv::new(key.into());
    cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::EncryptFailed {
            what: "the plaintext is too long",
        })
}

/// AES-256-GCM-SIV decryption of a ciphertext followed by its 16-byte tag.
///
/// # Errors
/// [`Error::DecryptFailed`] when the tag does not verify (or the input is shorter than a tag).
pub fn aead_decrypt(
    key: &[u8; CONTENT_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    let cipher = Aes256GcmSiv::new(key.into());
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| Error::DecryptFailed)
}

/// RSA-OAEP encryption with SHA-256, MGF1-SHA-256 and the empty label (randomized).
///
/// # Errors
/// [`Error::EncryptFailed`] when the message is too long for the key or randomness fails.
pub fn rsa_oaep_wrap(public_key: &RsaPublicKey, message: &[u8]) -> Result<Vec<u8>, Error> {
    public_key
        .encrypt(&mut OsRng, Oaep::new::<Sha256>(), message)
        .map_err(|_| Error::EncryptFailed {
            what: "RSA-OAEP wrapping of the content key",
        })
}

/// RSA-OAEP decryption with SHA-256, MGF1-SHA-256 and the empty label, blinded.
///
/// Returns the message whatever its length; [`open`](crate::open) then requires 32 bytes.
///
/// # Errors
/// [`Error::UnwrapFailed`] for a ciphertext of the wrong length, not below the modulus, or whose
/// padding or label hash does not check.
pub fn rsa_oaep_unwrap(
    private_key: &RsaPrivateKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    private_key
        .decrypt_blinded(&mut OsRng, Oaep::new::<Sha256>(), ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| Error::UnwrapFailed)
}

/// Parses and checks a recipient's encryption key: a canonical DER SubjectPublicKeyInfo of an
/// RSA key of 2048 to 4096 bits with exponent 65537 (what auth accepts and publishes, so that
/// the fingerprint of these bytes is the one auth computed).
///
/// # Errors
/// [`Error::InvalidKey`] saying what is wrong.
pub fn parse_rsa_public_key(spki: &[u8]) -> Result<RsaPublicKey, Error> {
    if spki.len() > MAX_SPKI_BYTES {
        return Err(invalid("the encryption key is too large"));
    }
    let key = RsaPublicKey::from_public_key_der(spki)
        .map_err(|_| invalid("not an RSA SubjectPublicKeyInfo in DER"))?;
    check_rsa_parameters(&key)?;
    let canonical = key
        .to_public_key_der()
        .map_err(|_| invalid("the RSA key cannot be re-encoded"))?;
    if canonical.as_bytes() != spki {
        return Err(invalid("the RSA key is not in canonical DER"));
    }
    Ok(key)
}

/// Parses and checks an RSA private key from PKCS#8 DER: 2048 to 4096 bits, exponent 65537,
/// consistent components.
///
/// # Errors
/// [`Error::InvalidKey`] saying what is wrong.
pub fn parse_rsa_private_key(pkcs8: &[u8]) -> Result<RsaPrivateKey, Error> {
    if pkcs8.len() > MAX_PKCS8_BYTES {
        return Err(invalid("the RSA private key is too large"));
    }
    let key = RsaPrivateKey::from_pkcs8_der(pkcs8)
        .map_err(|_| invalid("not an RSA private key in PKCS#8 DER"))?;
    check_rsa_parameters(&key)?;
    key.validate()
        .map_err(|_| invalid("the RSA private key is inconsistent"))?;
    Ok(key)
}

/// Parses a raw 32-byte Ed25519 public key, refusing invalid, non-canonical and small-order
/// points.
///
/// `ed25519-dalek` decodes a y coordinate of p or more (and a negative zero x) as if reduced;
/// such encodings are refused here, as RFC 8032 and the browser's implementation refuse them,
/// so that both accept exactly the same keys.
///
/// # Errors
/// [`Error::InvalidKey`] saying what is wrong.
pub fn parse_ed25519_public_key(bytes: &[u8]) -> Result<VerifyingKey, Error> {
    let bytes: &[u8; SIGNING_KEY_LEN] = bytes
        .try_into()
        .map_err(|_| invalid("an Ed25519 public key must be 32 bytes"))?;
    let key = VerifyingKey::from_bytes(bytes)
        .map_err(|_| invalid("the Ed25519 public key is not a valid point"))?;
    if key.is_weak() {
        return Err(invalid("the Ed25519 public key is of small order"));
    }
    if key.to_edwards().compress().as_bytes() != bytes {
        return Err(invalid("the Ed25519 public key is not canonically encoded"));
    }
    Ok(key)
}

/// Ed25519 verification as the envelope code does it: RFC 8032 with the strict checks of
/// `ed25519-dalek`'s `verify_strict` (canonical `S`, no small-order `R` or key).
///
/// # Errors
/// [`Error::Malformed`] for a signature that is not 64 bytes, [`Error::InvalidKey`] for a bad
/// public key, [`Error::BadSignature`] when it does not verify.
pub fn ed25519_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), Error> {
    let signature: &[u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| Error::Malformed {
        what: "the signature must be 64 bytes",
    })?;
    let key = parse_ed25519_public_key(public_key)?;
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| Error::BadSignature)
}

/// Fills `out` from the operating system's generator.
///
/// # Errors
/// [`Error::Randomness`] when the generator fails.
pub fn fill_random(out: &mut [u8]) -> Result<(), Error> {
    OsRng.try_fill_bytes(out).map_err(|_| Error::Randomness)
}

fn check_rsa_parameters(key: &impl PublicKeyParts) -> Result<(), Error> {
    if !RSA_BITS.contains(&key.n().bits()) {
        return Err(invalid("RSA keys must have 2048 to 4096 bits"));
    }
    if key.e() != &rsa::BigUint::from(65_537u32) {
        return Err(invalid("the RSA public exponent must be 65537"));
    }
    Ok(())
}

fn invalid(what: &'static str) -> Error {
    Error::InvalidKey { what }
}
