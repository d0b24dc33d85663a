//! The signing key (auth only) and the set of verification keys (everyone).

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::DecodingKey;
use serde::Serialize;

use crate::claims::AccessClaims;
use crate::error::KeyError;
use crate::jwk::{ALG_EDDSA, Jwk};

/// The `typ` header of every access token (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// An Ed25519 private key that signs access tokens. Only the auth service holds one.
///
/// Its key id is the RFC 7638 thumbprint of the public key, so the same key always has the same
/// `kid` and a `kid` cannot name two keys. `Debug` shows the `kid` only; the key material is
/// zeroized on drop.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    jwk: Jwk,
}

/// The public keys that verify access tokens, by `kid`.
///
/// Every key in a `KeySet` has been checked: OKP / Ed25519 / EdDSA / sig, a valid non-weak
/// point, and a `kid` equal to its thumbprint.
#[derive(Clone, Default)]
pub struct KeySet {
    /// The published form, in the order given (the current signing key first, by convention).
    jwks: Vec<Jwk>,
    /// The same keys for jsonwebtoken. For EdDSA a `DecodingKey` holds the raw 32-byte public key,
    /// whatever the name `from_ed_der` suggests; that is what the crypto provider reads.
    keys: HashMap<String, DecodingKey>,
}

impl SigningKey {
    /// Reads a PKCS#8 PEM Ed25519 private key (`-----BEGIN PRIVATE KEY-----`, as written by
    /// [`SigningKey::to_pkcs8_pem`] or `openssl genpkey -algorithm ed25519`).
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidPrivateKey`] for anything else, without the parser's detail.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| KeyError::InvalidPrivateKey)?;
        Ok(Self::from_dalek(key))
    }

    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key as PKCS#8 PEM (for a `keygen` command). This is the secret: write it only where
    /// secrets go, never to logs.
    pub fn to_pkcs8_pem(&self) -> String {
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes as PKCS#8");
        // `pem` is zeroized when dropped; the copy returned is the caller's to protect.
        pem.as_str().to_owned()
    }

    /// The key id put in the `kid` header of every token this key signs.
    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    /// The public half, as published in the JWKS.
    pub fn public_jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    /// Signs `claims` as a compact JWS with header `{"alg":"EdDSA","typ":"at+jwt","kid":...}`.
    ///
    /// The JWS is assembled here rather than by jsonwebtoken, so signing cannot fail and does
    /// not depend on jsonwebtoken's process-wide crypto provider.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'a str,
            typ: &'a str,
            kid: &'a str,
        }
        let header = Header {
            alg: ALG_EDDSA,
            typ: ACCESS_TOKEN_TYPE,
            kid: self.kid(),
        };
        let mut token = encode_json(&header);
        token.push('.');
        token.push_str(&encode_json(claims));
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        token
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        let jwk = Jwk::from_verifying_key(&key.verifying_key());
        SigningKey { key, jwk }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Checks and collects published keys, for example what `GetJwks` returned.
    ///
    /// # Errors
    ///
    /// The whole set is refused if it is empty or if any key is not an OKP / Ed25519 / EdDSA /
    /// sig key with a valid point and `kid` equal to its thumbprint: a bad key means the publisher
    /// is broken, and half a key set would refuse tokens at random.
    pub fn from_jwks(jwks: &[Jwk]) -> Result<Self, KeyError> {
        if jwks.is_empty() {
            return Err(KeyError::EmptyKeySet);
        }
        let mut set = KeySet::default();
        for jwk in jwks {
            let key = jwk.to_verifying_key()?;
            set.insert(jwk.clone(), &key);
        }
        Ok(set)
    }

    /// The public halves of the given signing keys (auth validates with its own keys).
    pub fn from_signing_keys(signing_keys: &[&SigningKey]) -> Self {
        let mut set = KeySet::default();
        for signing_key in signing_keys {
            set.insert(signing_key.public_jwk(), &signing_key.key.verifying_key());
        }
        set
    }

    /// The keys as published, in the order they were given, for serving a JWKS (see
    /// [`crate::jwks_json`]).
    pub fn jwks(&self) -> &[Jwk] {
        &self.jwks
    }

    /// Whether a key has this `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The key ids, in the order the keys were given.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.jwks.iter().map(|jwk| jwk.kid.as_str())
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key (only [`KeySet::default`] and `from_signing_keys(&[])`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The verification key with this `kid`: the raw 32 bytes, which is what the crypto provider
    /// expects of an EdDSA `DecodingKey`.
    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// Adds a checked key; the `kid` is the thumbprint, so a repeated `kid` is the same key again
    /// and is skipped.
    fn insert(&mut self, jwk: Jwk, key: &ed25519_dalek::VerifyingKey) {
        if !self.keys.contains_key(&jwk.kid) {
            self.keys
                .insert(jwk.kid.clone(), DecodingKey::from_ed_der(key.as_bytes()));
            self.jwks.push(jwk);
        }
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish()
    }
}

fn encode_json(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).expect("strings, integers and UUIDs always serialize");
    URL_SAFE_NO_PAD.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_the_round_trip_through_pkcs8_pem() {
        let key = SigningKey::generate();

        let again = SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();

        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.public_jwk(), key.public_jwk());
    }

    #[test]
    fn a_key_generated_by_openssl_is_read() {
        // `openssl genpkey -algorithm ed25519` (the RFC 8032 test 1 secret key).
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                   -----END PRIVATE KEY-----\n";

        let key = SigningKey::from_pkcs8_pem(pem).unwrap();

        assert_eq!(
            key.public_jwk().x,
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn something_else_than_an_ed25519_pkcs8_key_is_refused() {
        for pem in [
            "",
            "hello",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert_eq!(
                SigningKey::from_pkcs8_pem(pem).unwrap_err(),
                KeyError::InvalidPrivateKey
            );
        }
    }

    #[test]
    fn debug_shows_the_kid_and_not_the_key() {
        let key = SigningKey::generate();
        let pem = key.to_pkcs8_pem();
        let secret_base64 = pem.lines().nth(1).unwrap();

        let debug = format!("{key:?}");

        assert!(debug.contains(key.kid()));
        assert!(!debug.contains(secret_base64));
        assert!(!debug.contains("key:"));
    }

    #[test]
    fn an_empty_key_set_is_refused() {
        assert_eq!(KeySet::from_jwks(&[]).unwrap_err(), KeyError::EmptyKeySet);
    }

    #[test]
    fn one_bad_key_refuses_the_whole_set() {
        let good = SigningKey::generate().public_jwk();
        let bad = Jwk {
            alg: "HS256".to_owned(),
            ..SigningKey::generate().public_jwk()
        };

        assert!(matches!(
            KeySet::from_jwks(&[good, bad]),
            Err(KeyError::UnsupportedAlgorithm { .. })
        ));
    }

    #[test]
    fn published_and_signing_keys_give_the_same_set() {
        let (first, second) = (SigningKey::generate(), SigningKey::generate());

        let published = KeySet::from_jwks(&[first.public_jwk(), second.public_jwk()]).unwrap();
        let own = KeySet::from_signing_keys(&[&first, &second]);

        assert_eq!(published.jwks(), own.jwks());
        assert_eq!(
            published.kids().collect::<Vec<_>>(),
            [first.kid(), second.kid()]
        );
    }
}
