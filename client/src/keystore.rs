//! Private keys at rest (`keys.json`): the device's PKCS#8 keys encrypted with AES-256-GCM-SIV
//! under a key derived from a passphrase by argon2id, with a random salt and nonce stored beside
//! the ciphertext.

use aes_gcm_siv::{
    Aes256GcmSiv, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Associated data of the ciphertext: binds it to this format.
const AAD: &[u8] = b"chat-client device keys v1";

/// argon2id costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// OWASP's first argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        KdfParams {
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// The content of `keys.json`. Byte strings are hex.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedKeys {
    /// Format version (1).
    pub version: u32,
    /// Always `argon2id`.
    pub kdf: String,
    /// The argon2id costs.
    pub kdf_params: KdfParams,
    /// 16 random bytes.
    pub salt: String,
    /// 12 random bytes.
    pub nonce: String,
    /// AES-256-GCM-SIV of: RSA PKCS#8 length (u32 big-endian), RSA PKCS#8, Ed25519 PKCS#8.
    pub ciphertext: String,
}

/// Encrypts `keys` under `passphrase`.
///
/// # Errors
/// [`Error::Crypto`] if key derivation or encryption fails.
pub fn seal_keys(
    keys: &e2ee::DeviceKeys,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<SealedKeys> {
    let encryption = keys.encryption_pkcs8_der()?;
    let signing = keys.signing_pkcs8_der()?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(encryption.len() + signing.len() + 4));
    let encryption_len = u32::try_from(encryption.len())
        .map_err(|_| Error::Crypto("the RSA key is too large".to_owned()))?;
    plaintext.extend_from_slice(&encryption_len.to_be_bytes());
    plaintext.extend_from_slice(&encryption);
    plaintext.extend_from_slice(&signing);

    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let cipher = cipher(passphrase, &salt, params)?;
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: AAD,
            },
        )
        .map_err(|_| Error::Crypto("encrypting the keys failed".to_owned()))?;
    Ok(SealedKeys {
        version: 1,
        kdf: "argon2id".to_owned(),
        kdf_params: params,
        salt: hex::encode(salt),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    })
}

/// Decrypts keys sealed by [`seal_keys`].
///
/// # Errors
/// [`Error::Auth`] for a wrong passphrase (or an altered file); [`Error::Profile`] for a file
/// in another format.
pub fn open_keys(sealed: &SealedKeys, passphrase: &[u8]) -> Result<e2ee::DeviceKeys> {
    let malformed = || Error::Profile("keys.json is malformed".to_owned());
    if sealed.version != 1 || sealed.kdf != "argon2id" {
        return Err(Error::Profile(
            "keys.json has an unknown format version".to_owned(),
        ));
    }
    let salt = hex::decode(&sealed.salt).map_err(|_| malformed())?;
    let nonce = hex::decode(&sealed.nonce).map_err(|_| malformed())?;
    let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| malformed())?;
    if nonce.len() != 12 {
        return Err(malformed());
    }
    let cipher = cipher(passphrase, &salt, sealed.kdf_params)?;
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: AAD,
                },
            )
            .map_err(|_| Error::Auth("wrong passphrase for the device keys".to_owned()))?,
    );
    let (length, rest) = plaintext.split_at_checked(4).ok_or_else(malformed)?;
    let length = u32::from_be_bytes(length.try_into().map_err(|_| malformed())?) as usize;
    let (encryption, signing) = rest.split_at_checked(length).ok_or_else(malformed)?;
    Ok(e2ee::DeviceKeys::from_pkcs8_der(encryption, signing)?)
}

fn cipher(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Aes256GcmSiv> {
    let params = Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|_| Error::Profile("keys.json has invalid argon2 parameters".to_owned()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|_| Error::Crypto("deriving the key failed".to_owned()))?;
    Aes256GcmSiv::new_from_slice(key.as_ref())
        .map_err(|_| Error::Crypto("bad key length".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_cost: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn keys_open_with_the_right_passphrase_only() {
        let keys = e2ee::DeviceKeys::generate(2048).unwrap();

        let sealed = seal_keys(&keys, b"right", CHEAP).unwrap();

        let opened = open_keys(&sealed, b"right").unwrap();
        assert_eq!(opened.public_keys(), keys.public_keys());
        assert!(matches!(open_keys(&sealed, b"wrong"), Err(Error::Auth(_))));
        let json = serde_json::to_string(&sealed).unwrap();
        let private_hex = hex::encode(&*keys.signing_pkcs8_der().unwrap());
        assert!(!json.contains(&private_hex));
    }
}
