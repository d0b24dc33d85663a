//! The claims of an access token, and their strict reading from a verified payload.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::TokenError;

/// The claims of an access token: who (user, device, session), for whom (issuer, audience) and
/// when. Every field is required in a token.
///
/// Only [`crate::Validator`] turns a token into `AccessClaims`, after its signature verified;
/// there is deliberately no `Deserialize`, so unverified JSON cannot become claims by accident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessClaims {
    /// `iss`: who issued the token (the auth service's configured issuer).
    #[serde(rename = "iss")]
    pub issuer: String,
    /// `aud`: who the token is for; a single string.
    #[serde(rename = "aud")]
    pub audience: String,
    /// `sub`: the user.
    #[serde(rename = "sub")]
    pub user_id: Uuid,
    /// `did`: the device the session belongs to.
    #[serde(rename = "did")]
    pub device_id: Uuid,
    /// `sid`: the session (refresh-token family) that issued the token.
    #[serde(rename = "sid")]
    pub session_id: Uuid,
    /// `iat`: when the token was issued, in seconds since the Unix epoch.
    #[serde(rename = "iat")]
    pub issued_at: i64,
    /// `nbf`: the token is not valid before this, in seconds since the Unix epoch.
    #[serde(rename = "nbf")]
    pub not_before: i64,
    /// `exp`: the token is not valid after this, in seconds since the Unix epoch.
    #[serde(rename = "exp")]
    pub expires_at: i64,
    /// `jti`: a unique id of this token.
    #[serde(rename = "jti")]
    pub token_id: Uuid,
}

/// The user, device and session a token is issued to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The user.
    pub user_id: Uuid,
    /// The user's device.
    pub device_id: Uuid,
    /// The session.
    pub session_id: Uuid,
}

impl AccessClaims {
    /// Claims for a new token issued at `now`, valid from `now` for `lifetime`, with a fresh
    /// random `jti`.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        subject: Subject,
        now: SystemTime,
        lifetime: Duration,
    ) -> Self {
        let issued_at = unix_seconds(now);
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        AccessClaims {
            issuer: issuer.into(),
            audience: audience.into(),
            user_id: subject.user_id,
            device_id: subject.device_id,
            session_id: subject.session_id,
            issued_at,
            not_before: issued_at,
            expires_at: issued_at.saturating_add(lifetime),
            token_id: Uuid::new_v4(),
        }
    }

    /// The user, device and session.
    pub fn subject(&self) -> Subject {
        Subject {
            user_id: self.user_id,
            device_id: self.device_id,
            session_id: self.session_id,
        }
    }

    /// Reads the claims of a payload whose signature has been verified and whose `exp`, `nbf`,
    /// `iss`, `aud` and `sub` jsonwebtoken has checked, checking the rest and every type again:
    /// times must be JSON integers, `aud` a single string, ids canonical non-nil UUIDs.
    pub(crate) fn from_verified_payload(
        payload: &Map<String, Value>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let claims = AccessClaims {
            issuer: string_claim(payload, "iss")?.to_owned(),
            audience: string_claim(payload, "aud")?.to_owned(),
            user_id: uuid_claim(payload, "sub")?,
            device_id: uuid_claim(payload, "did")?,
            session_id: uuid_claim(payload, "sid")?,
            issued_at: time_claim(payload, "iat")?,
            not_before: time_claim(payload, "nbf")?,
            expires_at: time_claim(payload, "exp")?,
            token_id: uuid_claim(payload, "jti")?,
        };
        // jsonwebtoken already compared these; comparing again costs nothing and keeps this
        // function correct on its own.
        if claims.issuer != issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.audience != audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.not_before > claims.expires_at {
            return Err(TokenError::InvalidClaim("nbf"));
        }
        if claims.issued_at > claims.expires_at {
            return Err(TokenError::InvalidClaim("iat"));
        }
        Ok(claims)
    }
}

/// Whole seconds since the Unix epoch (negative before it).
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn claim<'a>(payload: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, TokenError> {
    match payload.get(name) {
        None | Some(Value::Null) => Err(TokenError::MissingClaim(name)),
        Some(value) => Ok(value),
    }
}

fn string_claim<'a>(
    payload: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, TokenError> {
    claim(payload, name)?
        .as_str()
        .ok_or(TokenError::InvalidClaim(name))
}

/// A UUID in its canonical form only (lowercase, hyphenated), so that an id has one spelling
/// wherever it is compared or forwarded; the nil UUID names nobody.
fn uuid_claim(payload: &Map<String, Value>, name: &'static str) -> Result<Uuid, TokenError> {
    let text = string_claim(payload, name)?;
    match Uuid::try_parse(text) {
        Ok(id) if !id.is_nil() && id.hyphenated().to_string() == text => Ok(id),
        _ => Err(TokenError::InvalidClaim(name)),
    }
}

/// A NumericDate as a JSON integer: strings, floats and negative numbers are refused.
fn time_claim(payload: &Map<String, Value>, name: &'static str) -> Result<i64, TokenError> {
    match claim(payload, name)?.as_i64() {
        Some(seconds) if seconds >= 0 => Ok(seconds),
        _ => Err(TokenError::InvalidClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const USER: &str = "0190a4b2-5c3d-7e4f-8a9b-0c1d2e3f4a5b";

    fn payload(overrides: Value) -> Map<String, Value> {
        let mut payload = json!({
            "iss": "auth", "aud": "chat", "sub": USER,
            "did": "5b0c6e1a-3f2d-4c8b-9a7e-1d2c3b4a5f60", "sid": "8e7d6c5b-4a39-4281-9f0e-d1c2b3a49586",
            "iat": 1_700_000_000, "nbf": 1_700_000_000, "exp": 1_700_000_900,
            "jti": "c0ffee00-1234-4abc-8def-0123456789ab",
        });
        for (name, value) in overrides.as_object().unwrap() {
            payload[name] = value.clone();
        }
        payload.as_object().unwrap().clone()
    }

    fn read(overrides: Value) -> Result<AccessClaims, TokenError> {
        AccessClaims::from_verified_payload(&payload(overrides), "auth", "chat")
    }

    #[test]
    fn a_complete_payload_is_read() {
        let claims = read(json!({})).unwrap();

        assert_eq!(claims.user_id.to_string(), USER);
        assert_eq!(claims.expires_at, 1_700_000_900);
    }

    #[test]
    fn the_claims_serialize_to_the_jwt_claim_names() {
        let claims = read(json!({})).unwrap();

        assert_eq!(
            serde_json::to_value(&claims).unwrap(),
            Value::Object(payload(json!({})))
        );
    }

    #[test]
    fn absent_and_null_claims_are_missing() {
        for name in ["did", "sid", "jti", "iat"] {
            let mut without = payload(json!({}));
            without.remove(name);

            assert_eq!(
                AccessClaims::from_verified_payload(&without, "auth", "chat"),
                Err(TokenError::MissingClaim(name))
            );
            assert_eq!(
                read(json!({ name: null })),
                Err(TokenError::MissingClaim(name))
            );
        }
    }

    #[test]
    fn ids_must_be_canonical_non_nil_uuids() {
        let upper = USER.to_uppercase();
        let simple = USER.replace('-', "");
        let urn = format!("urn:uuid:{USER}");
        let nil = Uuid::nil().to_string();
        for bad in [
            "alice",
            upper.as_str(),
            simple.as_str(),
            urn.as_str(),
            nil.as_str(),
        ] {
            assert_eq!(
                read(json!({ "sub": bad })),
                Err(TokenError::InvalidClaim("sub")),
                "{bad}"
            );
        }
        assert_eq!(
            read(json!({ "did": 42 })),
            Err(TokenError::InvalidClaim("did"))
        );
    }

    #[test]
    fn times_must_be_non_negative_integers() {
        assert_eq!(
            read(json!({ "exp": "1700000900" })),
            Err(TokenError::InvalidClaim("exp"))
        );
        assert_eq!(
            read(json!({ "exp": 1_700_000_900.5 })),
            Err(TokenError::InvalidClaim("exp"))
        );
        assert_eq!(
            read(json!({ "iat": -1 })),
            Err(TokenError::InvalidClaim("iat"))
        );
    }

    #[test]
    fn an_audience_list_is_refused_even_when_it_names_us() {
        assert_eq!(
            read(json!({ "aud": ["chat"] })),
            Err(TokenError::InvalidClaim("aud"))
        );
    }

    #[test]
    fn a_token_valid_only_after_it_expires_is_refused() {
        assert_eq!(
            read(json!({ "nbf": 1_700_001_000 })),
            Err(TokenError::InvalidClaim("nbf"))
        );
    }

    #[test]
    fn new_claims_start_now_and_last_for_the_lifetime() {
        let subject = Subject {
            user_id: Uuid::new_v4(),
            device_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);

        let claims = AccessClaims::new("auth", "chat", subject, now, Duration::from_secs(900));

        assert_eq!(
            (claims.issued_at, claims.not_before, claims.expires_at),
            (1_700_000_000, 1_700_000_000, 1_700_000_900)
        );
        assert_eq!(claims.subject(), subject);
        assert!(!claims.token_id.is_nil());
    }
}
