//! Public keys as JSON Web Keys (RFC 7517, RFC 8037 for Ed25519) and their RFC 7638 thumbprints.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::KeyError;

/// The only key type accepted: octet key pair (RFC 8037).
pub const KTY_OKP: &str = "OKP";
/// The only curve accepted.
pub const CRV_ED25519: &str = "Ed25519";
/// The only algorithm accepted, in a JWK `alg` and in a token's header.
pub const ALG_EDDSA: &str = "EdDSA";
/// The only key use accepted: signatures.
pub const USE_SIG: &str = "sig";

/// A public key that verifies access tokens, as published in the JWKS (`GetJwks`, and later the
/// gateway's well-known HTTP path).
///
/// This is plain data: nothing here is checked until [`crate::KeySet::from_jwks`] accepts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key id: the RFC 7638 thumbprint of the key, base64url without padding.
    pub kid: String,
    /// Key type: `OKP`.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
    /// Algorithm: `EdDSA`.
    pub alg: String,
    /// Intended use: `sig`. Serialized as `use`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// Serializes `keys` as a JWK Set: `{"keys":[...]}`.
pub fn jwks_json(keys: &[Jwk]) -> String {
    #[derive(Serialize)]
    struct Jwks<'a> {
        keys: &'a [Jwk],
    }
    serde_json::to_string(&Jwks { keys }).expect("a set of string-only JWKs always serializes")
}

impl Jwk {
    /// The JWK of an Ed25519 public key, with its thumbprint as `kid`.
    pub(crate) fn from_verifying_key(key: &VerifyingKey) -> Self {
        let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
        Jwk {
            kid: thumbprint(&x),
            kty: KTY_OKP.to_owned(),
            crv: CRV_ED25519.to_owned(),
            x,
            alg: ALG_EDDSA.to_owned(),
            use_: USE_SIG.to_owned(),
        }
    }

    /// Checks every field and returns the public key.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] for anything but an OKP / Ed25519 / EdDSA / sig key whose `x` is the
    /// canonical encoding of a valid, non-weak point and whose `kid` is its thumbprint.
    pub(crate) fn to_verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let kid = || self.kid.clone();
        if self.kty != KTY_OKP {
            return Err(KeyError::UnsupportedKeyType {
                kid: kid(),
                kty: self.kty.clone(),
            });
        }
        if self.crv != CRV_ED25519 {
            return Err(KeyError::UnsupportedCurve {
                kid: kid(),
                crv: self.crv.clone(),
            });
        }
        if self.alg != ALG_EDDSA {
            return Err(KeyError::UnsupportedAlgorithm {
                kid: kid(),
                alg: self.alg.clone(),
            });
        }
        if self.use_ != USE_SIG {
            return Err(KeyError::UnsupportedUse {
                kid: kid(),
                use_: self.use_.clone(),
            });
        }
        let invalid = || KeyError::InvalidPublicKey { kid: kid() };
        // The base64 engine refuses padding and non-zero trailing bits, so `x` has exactly one
        // accepted spelling and the thumbprint below is over the same string that was checked.
        let bytes: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| invalid())?
            .try_into()
            .map_err(|_| invalid())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| invalid())?;
        // A small-order key would "verify" signatures that prove nothing.
        if key.is_weak() {
            return Err(invalid());
        }
        let expected = thumbprint(&self.x);
        if self.kid != expected {
            return Err(KeyError::KidMismatch {
                kid: kid(),
                thumbprint: expected,
            });
        }
        Ok(key)
    }
}

impl From<Jwk> for pb::Jwk {
    fn from(jwk: Jwk) -> Self {
        pb::Jwk {
            kid: jwk.kid,
            kty: jwk.kty,
            crv: jwk.crv,
            x: jwk.x,
            alg: jwk.alg,
            r#use: jwk.use_,
        }
    }
}

impl From<pb::Jwk> for Jwk {
    fn from(jwk: pb::Jwk) -> Self {
        Jwk {
            kid: jwk.kid,
            kty: jwk.kty,
            crv: jwk.crv,
            x: jwk.x,
            alg: jwk.alg,
            use_: jwk.r#use,
        }
    }
}

/// The RFC 7638 thumbprint of an Ed25519 key given its base64url `x`: SHA-256 over the required
/// members in lexicographic order, without whitespace (RFC 8037 §2), base64url without padding.
///
/// `x` must already be known to be base64url, which needs no JSON escaping.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"{CRV_ED25519}","kty":"{KTY_OKP}","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Ed25519 public key and thumbprint of RFC 8037, appendices A.2 and A.3.
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    fn rfc8037_jwk() -> Jwk {
        Jwk {
            kid: RFC8037_THUMBPRINT.to_owned(),
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: RFC8037_X.to_owned(),
            alg: "EdDSA".to_owned(),
            use_: "sig".to_owned(),
        }
    }

    #[test]
    fn the_thumbprint_matches_the_rfc_8037_example() {
        assert_eq!(thumbprint(RFC8037_X), RFC8037_THUMBPRINT);
    }

    #[test]
    fn the_rfc_8037_key_is_accepted_and_round_trips_to_the_same_jwk() {
        let key = rfc8037_jwk().to_verifying_key().unwrap();

        assert_eq!(Jwk::from_verifying_key(&key), rfc8037_jwk());
    }

    #[test]
    fn keys_of_another_type_curve_algorithm_or_use_are_refused() {
        let cases: [fn(&mut Jwk); 4] = [
            |jwk| jwk.kty = "EC".to_owned(),
            |jwk| jwk.crv = "Ed448".to_owned(),
            |jwk| jwk.alg = "HS256".to_owned(),
            |jwk| jwk.use_ = "enc".to_owned(),
        ];
        for break_it in cases {
            let mut jwk = rfc8037_jwk();
            break_it(&mut jwk);

            assert!(jwk.to_verifying_key().is_err(), "{jwk:?} was accepted");
        }
    }

    #[test]
    fn a_kid_that_is_not_the_thumbprint_is_refused() {
        let jwk = Jwk {
            kid: "key-1".to_owned(),
            ..rfc8037_jwk()
        };

        let err = jwk.to_verifying_key().unwrap_err();

        assert!(
            matches!(err, KeyError::KidMismatch { thumbprint, .. } if thumbprint == RFC8037_THUMBPRINT)
        );
    }

    #[test]
    fn short_padded_and_small_order_keys_are_refused() {
        let identity_point = URL_SAFE_NO_PAD.encode({
            let mut bytes = [0u8; 32];
            bytes[0] = 1;
            bytes
        });
        for x in [
            &RFC8037_X[..40],
            &format!("{RFC8037_X}="),
            identity_point.as_str(),
        ] {
            let jwk = Jwk {
                x: x.to_owned(),
                kid: thumbprint(x),
                ..rfc8037_jwk()
            };

            assert_eq!(
                jwk.to_verifying_key().unwrap_err(),
                KeyError::InvalidPublicKey {
                    kid: jwk.kid.clone()
                },
                "x = {x:?}"
            );
        }
    }

    #[test]
    fn the_jwks_json_uses_the_standard_member_names() {
        let json: serde_json::Value = serde_json::from_str(&jwks_json(&[rfc8037_jwk()])).unwrap();

        assert_eq!(
            json,
            serde_json::json!({"keys": [{
                "kid": RFC8037_THUMBPRINT, "kty": "OKP", "crv": "Ed25519",
                "x": RFC8037_X, "alg": "EdDSA", "use": "sig",
            }]})
        );
    }

    #[test]
    fn a_jwk_survives_the_round_trip_through_the_proto_type() {
        let jwk = rfc8037_jwk();

        assert_eq!(Jwk::from(pb::Jwk::from(jwk.clone())), jwk);
    }
}
