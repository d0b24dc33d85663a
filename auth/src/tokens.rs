//! Access tokens: the signing keys (current and previous, for rotation), issuing, the published
//! key set and the validator auth itself uses for its authenticated RPCs.

use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use token::{AccessClaims, Jwk, KeySet, SigningKey, Subject, ValidationSettings, Validator};

use crate::{Error, config::TokenSettings};

/// Signs access tokens with the current key and publishes every key that may still verify one.
pub struct TokenIssuer {
    current: SigningKey,
    previous: Vec<SigningKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    /// Loads the keys named by the configuration (reading key files now).
    ///
    /// # Errors
    /// [`Error::Internal`] naming the unreadable or malformed key (never its content).
    pub fn load(settings: &TokenSettings) -> Result<Self, Error> {
        let read = |what: &str, source: &common::config::SecretSource| {
            source
                .read()
                .map_err(|error| Error::Internal(format!("{what}: {error}")))
        };
        let current_pem = read("AUTH_SIGNING_KEY", &settings.signing_key)?;
        let current = SigningKey::from_pkcs8_pem(current_pem.expose_secret())
            .map_err(|error| Error::Internal(format!("AUTH_SIGNING_KEY: {error}")))?;
        let previous = match &settings.previous_signing_keys {
            None => Vec::new(),
            Some(source) => {
                split_pem_blocks(read("AUTH_PREVIOUS_SIGNING_KEYS", source)?.expose_secret())
                    .iter()
                    .map(|pem| SigningKey::from_pkcs8_pem(pem))
                    .collect::<Result<_, _>>()
                    .map_err(|error| {
                        Error::Internal(format!("AUTH_PREVIOUS_SIGNING_KEYS: {error}"))
                    })?
            }
        };
        Ok(Self {
            current,
            previous,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl: settings.access_token_ttl,
        })
    }

    /// A new access token for the subject, and when it expires.
    pub fn issue(&self, subject: Subject) -> (String, SystemTime) {
        let now = SystemTime::now();
        let claims = AccessClaims::new(&self.issuer, &self.audience, subject, now, self.ttl);
        (self.current.sign(&claims), now + self.ttl)
    }

    /// Every key that may have signed a still-valid token, the current one first.
    pub fn jwks(&self) -> Vec<Jwk> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(SigningKey::public_jwk)
            .collect()
    }

    /// A validator over the same keys, for auth's own authenticated RPCs (no network fetch).
    pub fn validator(&self) -> Validator {
        let keys: Vec<&SigningKey> = std::iter::once(&self.current)
            .chain(&self.previous)
            .collect();
        Validator::with_static_keys(
            ValidationSettings::new(self.issuer.clone(), self.audience.clone()),
            KeySet::from_signing_keys(&keys),
        )
    }
}

/// Splits concatenated PEM blocks.
fn split_pem_blocks(text: &str) -> Vec<String> {
    text.split("-----BEGIN ")
        .filter(|block| !block.trim().is_empty())
        .map(|block| format!("-----BEGIN {block}").trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_pem_blocks_split_into_keys() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let both = format!("{}\n{}", a.to_pkcs8_pem(), b.to_pkcs8_pem());

        let kids: Vec<String> = split_pem_blocks(&both)
            .iter()
            .map(|pem| SigningKey::from_pkcs8_pem(pem).unwrap().kid().to_owned())
            .collect();

        assert_eq!(kids, [a.kid(), b.kid()]);
    }
}
