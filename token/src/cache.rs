//! Tokens that already passed every check, so that a client's next call with the same token
//! costs a lookup instead of a signature verification.
//!
//! Every call carries the caller's token, and each hop validates it (the gateway, then the
//! service). On the 2-CPU benchmark machine one validation took 120-160 µs, most of an Ed25519
//! verification, which a client repeats for the same bytes on every call for the token's
//! 15 minutes. What may change for a token between two calls is time, the keys and revocation:
//! an entry answers only while the key set it was verified with is still the validator's, `exp`
//! is checked again (with the leeway) on every hit, and the validator checks revocation after
//! every hit (`revocation.rs`). `nbf`, `iat` and the lifetime need no second look: a token valid
//! once stays so until it expires. Entries are keyed by the token's exact bytes.
//!
//! Bounded: at most [`CAPACITY`] tokens (each about 1 KB with its claims). A full cache first
//! drops expired entries, then an arbitrary eighth of the rest (the map's iteration order depends
//! on its random hash seed), so a working set larger than the cache degrades to verifying more
//! often, never to unbounded memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::claims::{AccessClaims, unix_seconds};
use crate::error::TokenError;
use crate::keys::KeySet;

/// Most tokens held at once.
pub(crate) const CAPACITY: usize = 4096;

/// Verified tokens and their claims.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Verified>>,
}

struct Verified {
    claims: AccessClaims,
    /// The key set the signature was verified with; any other key set means verify again.
    keys: Arc<KeySet>,
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified with `keys`: `Some(Ok)` while it has not
    /// expired, `Some(Err(Expired))` once it has (and the entry is dropped), `None` when it must
    /// be verified.
    pub(crate) fn get(
        &self,
        token: &str,
        keys: &Arc<KeySet>,
        leeway: Duration,
        now: SystemTime,
    ) -> Option<Result<AccessClaims, TokenError>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(token)?;
        if !Arc::ptr_eq(&entry.keys, keys) {
            entries.remove(token);
            return None;
        }
        if is_expired(&entry.claims, leeway, now) {
            entries.remove(token);
            return Some(Err(TokenError::Expired));
        }
        Some(Ok(entry.claims.clone()))
    }

    /// Remembers that `token` verified with `keys` and carries `claims`.
    pub(crate) fn insert(
        &self,
        token: &str,
        keys: Arc<KeySet>,
        claims: AccessClaims,
        leeway: Duration,
        now: SystemTime,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, entry| !is_expired(&entry.claims, leeway, now));
        }
        if entries.len() >= CAPACITY {
            let mut seen = 0;
            entries.retain(|_, _| {
                seen += 1;
                seen > CAPACITY / 8
            });
        }
        entries.insert(token.into(), Verified { claims, keys });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// `exp` as jsonwebtoken checks it: expired once `exp + leeway` is in the past.
fn is_expired(claims: &AccessClaims, leeway: Duration, now: SystemTime) -> bool {
    let leeway = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
    claims.expires_at.saturating_add(leeway) < unix_seconds(now)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::claims::Subject;
    use crate::keys::SigningKey;

    const LEEWAY: Duration = Duration::from_secs(30);
    const LIFETIME: Duration = Duration::from_secs(900);

    fn claims_issued_at(issued: SystemTime) -> AccessClaims {
        let subject = Subject {
            user_id: Uuid::new_v4(),
            device_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
        };
        AccessClaims::new("issuer", "audience", subject, issued, LIFETIME)
    }

    fn key_set() -> Arc<KeySet> {
        Arc::new(KeySet::from_signing_keys(&[&SigningKey::generate()]))
    }

    #[test]
    fn a_token_answers_until_its_expiry_plus_the_leeway_then_is_forgotten() {
        let (cache, keys, issued) = (VerifiedTokens::default(), key_set(), SystemTime::now());
        let claims = claims_issued_at(issued);
        cache.insert("t", keys.clone(), claims.clone(), LEEWAY, issued);

        let at = |after: Duration| cache.get("t", &keys, LEEWAY, issued + after);

        assert_eq!(at(Duration::ZERO), Some(Ok(claims.clone())));
        assert_eq!(at(LIFETIME + LEEWAY), Some(Ok(claims)));
        assert_eq!(
            at(LIFETIME + LEEWAY + Duration::from_secs(1)),
            Some(Err(TokenError::Expired))
        );
        assert_eq!(cache.len(), 0);
        assert_eq!(at(Duration::ZERO), None);
    }

    #[test]
    fn a_token_verified_with_another_key_set_must_be_verified_again() {
        let (cache, now) = (VerifiedTokens::default(), SystemTime::now());
        let (old_keys, new_keys) = (key_set(), key_set());
        cache.insert("t", old_keys.clone(), claims_issued_at(now), LEEWAY, now);

        assert!(cache.get("t", &old_keys, LEEWAY, now).is_some());
        assert_eq!(cache.get("t", &new_keys, LEEWAY, now), None);
        assert_eq!(cache.len(), 0, "the stale entry is dropped");
        assert_eq!(cache.get("other", &old_keys, LEEWAY, now), None);
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_and_never_grows_past_its_capacity() {
        let (cache, keys, now) = (VerifiedTokens::default(), key_set(), SystemTime::now());
        let long_ago = now - LIFETIME - LEEWAY - Duration::from_secs(60);
        for n in 0..CAPACITY / 2 {
            cache.insert(
                &format!("old{n}"),
                keys.clone(),
                claims_issued_at(long_ago),
                LEEWAY,
                now,
            );
        }
        for n in 0..CAPACITY / 2 {
            cache.insert(
                &format!("live{n}"),
                keys.clone(),
                claims_issued_at(now),
                LEEWAY,
                now,
            );
        }
        assert_eq!(cache.len(), CAPACITY);

        cache.insert("one more", keys.clone(), claims_issued_at(now), LEEWAY, now);
        assert_eq!(cache.len(), CAPACITY / 2 + 1, "only the expired half went");
        assert!(cache.get("live0", &keys, LEEWAY, now).is_some());

        for n in 0..CAPACITY {
            cache.insert(
                &format!("new{n}"),
                keys.clone(),
                claims_issued_at(now),
                LEEWAY,
                now,
            );
            assert!(cache.len() <= CAPACITY);
        }
    }
}
