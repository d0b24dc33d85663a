//! The pure steps of validation: reading the `authorization` header, checking the JOSE header,
//! and verifying signature then claims with jsonwebtoken.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::claims::{AccessClaims, unix_seconds};
use crate::crypto::install_provider;
use crate::error::TokenError;
use crate::jwk::ALG_EDDSA;
use crate::keys::ACCESS_TOKEN_TYPE;

/// Longer tokens are refused unread. Ours are about 600 bytes.
pub(crate) const MAX_TOKEN_LEN: usize = 4096;

/// The JOSE header members that matter. Unknown members are ignored, except that `crit` (an
/// extension the sender says we must understand) is refused since we understand none.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

/// The token of the one `authorization: Bearer <token>` header.
///
/// No header, an empty value or `Bearer` without a token is [`TokenError::Missing`]; several
/// headers, another scheme, non-ASCII or a token with spaces in it is [`TokenError::Malformed`].
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, TokenError> {
    let mut values = headers.get_all("authorization").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key("authorization") {
            TokenError::Malformed
        } else {
            TokenError::Missing
        });
    };
    let value = value.to_str().map_err(|_| TokenError::Malformed)?.trim();
    if value.is_empty() {
        return Err(TokenError::Missing);
    }
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Malformed);
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

/// Checks the JOSE header in order (`typ`, `alg`, `crit`, `kid`) and returns the `kid`. The
/// payload is not looked at.
pub(crate) fn check_header(token: &str) -> Result<String, TokenError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut segments = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    // serde_json refuses duplicate members here, so no two parsers can read different values.
    let header: Header = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;

    let typ = header.typ.as_deref().unwrap_or_default();
    // RFC 9068 §4: "at+jwt" or "application/at+jwt"; media types compare case-insensitively.
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
        || typ.eq_ignore_ascii_case("application/at+jwt"))
    {
        return Err(TokenError::WrongType);
    }
    if header.alg.as_deref() != Some(ALG_EDDSA) {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed);
    }
    match header.kid {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(TokenError::MissingKeyId),
    }
}

/// Whether a `kid` could be one of ours (a base64url SHA-256 thumbprint). Others are refused
/// without asking the key source, so garbage cannot make validators refetch.
pub(crate) fn is_plausible_kid(kid: &str) -> bool {
    kid.len() == 43
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// jsonwebtoken's checks, pinned: EdDSA only; `exp`, `nbf`, `iss`, `aud` and `sub` required;
/// `exp` and `nbf` checked with the leeway; `iss` and `aud` exact.
pub(crate) fn jwt_validation(issuer: &str, audience: &str, leeway_seconds: u64) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.algorithms = vec![Algorithm::EdDSA];
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.leeway = leeway_seconds;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation
}

/// Verifies the signature with `key`, then the claims. The header must have passed
/// [`check_header`].
pub(crate) fn verify(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    issuer: &str,
    audience: &str,
) -> Result<AccessClaims, TokenError> {
    install_provider();
    // jsonwebtoken verifies the signature before it deserializes or checks any claim.
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
        Ok(verified) => AccessClaims::from_verified_payload(&verified.claims, issuer, audience),
        Err(err) => Err(map_jwt_error(err.into_kind(), token)),
    }
}

/// Refuses a token whose `iat` is in the future or whose lifetime (`exp - iat`) is above
/// `max_lifetime`, each beyond the `leeway`. Together with the `exp` check, no accepted token
/// outlives `now + max_lifetime + 2 × leeway`, whatever its signer wrote.
pub(crate) fn check_lifetime(
    claims: &AccessClaims,
    max_lifetime: Duration,
    leeway: Duration,
    now: SystemTime,
) -> Result<(), TokenError> {
    let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
    let leeway = seconds(leeway);
    if claims.issued_at > unix_seconds(now).saturating_add(leeway) {
        return Err(TokenError::IssuedInTheFuture);
    }
    let lifetime = claims.expires_at.saturating_sub(claims.issued_at);
    if lifetime > seconds(max_lifetime).saturating_add(leeway) {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(())
}

fn map_jwt_error(kind: ErrorKind, token: &str) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidClaimFormat(name) => TokenError::InvalidClaim(claim_name(&name)),
        ErrorKind::MissingRequiredClaim(name) => {
            // jsonwebtoken also says "missing" when a claim is present with the wrong type (a
            // string `exp`). This error comes after the signature verified, so the payload may be
            // read to tell the two apart.
            let name = claim_name(&name);
            if payload_has_claim(token, name) {
                TokenError::InvalidClaim(name)
            } else {
                TokenError::MissingClaim(name)
            }
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::UnsupportedAlgorithm,
        ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat => {
            // Every key of a KeySet was checked, so this is a bug, not the client's fault.
            tracing::error!("a checked verification key was refused by the crypto provider");
            TokenError::BadSignature
        }
        _ => TokenError::Malformed,
    }
}

fn payload_has_claim(token: &str, name: &str) -> bool {
    let payload = token.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|claims| claims.get(name).is_some_and(|value| !value.is_null()))
}

fn claim_name(name: &str) -> &'static str {
    match name {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn header_only(json: &str) -> String {
        format!("{}.e30.AAAA", encode(json))
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("authorization", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc"] {
            assert_eq!(bearer_token(&headers(&[value])), Ok("abc"), "{value}");
        }
    }

    #[test]
    fn no_header_an_empty_one_or_a_bare_scheme_is_missing() {
        for values in [&[][..], &[""], &["Bearer"], &["Bearer   "]] {
            assert_eq!(
                bearer_token(&headers(values)),
                Err(TokenError::Missing),
                "{values:?}"
            );
        }
    }

    #[test]
    fn other_schemes_several_headers_and_spaces_in_the_token_are_malformed() {
        for values in [
            &["Basic YWxpY2U6cHc="][..],
            &["Bearer a", "Bearer a"],
            &["Bearer a b"],
            &["Bearerabc"],
        ] {
            assert_eq!(
                bearer_token(&headers(values)),
                Err(TokenError::Malformed),
                "{values:?}"
            );
        }
    }

    #[test]
    fn header_rules_apply_in_order() {
        let kid = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
        let cases = [
            (r#"{"alg":"none","kid":"k"}"#, Err(TokenError::WrongType)),
            (
                r#"{"alg":"none","typ":"JWT","kid":"k"}"#,
                Err(TokenError::WrongType),
            ),
            (
                r#"{"alg":"none","typ":"at+jwt","kid":"k"}"#,
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                r#"{"alg":"eddsa","typ":"at+jwt","kid":"k"}"#,
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                r#"{"typ":"at+jwt","kid":"k"}"#,
                Err(TokenError::UnsupportedAlgorithm),
            ),
            (
                r#"{"alg":"EdDSA","typ":"at+jwt","crit":["b64"],"b64":false,"kid":"k"}"#,
                Err(TokenError::Malformed),
            ),
            (
                r#"{"alg":"EdDSA","typ":"at+jwt"}"#,
                Err(TokenError::MissingKeyId),
            ),
            (
                r#"{"alg":"EdDSA","typ":"at+jwt","kid":""}"#,
                Err(TokenError::MissingKeyId),
            ),
            (
                r#"{"alg":"EdDSA","typ":"at+jwt","alg":"EdDSA","kid":"k"}"#,
                Err(TokenError::Malformed),
            ),
            (
                r#"{"alg":"EdDSA","typ":"application/AT+JWT","kid":"k"}"#,
                Ok("k".to_owned()),
            ),
            (
                &format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#),
                Ok(kid.to_owned()),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(check_header(&header_only(header)), expected, "{header}");
        }
    }

    #[test]
    fn tokens_of_the_wrong_shape_or_size_are_malformed() {
        let good_header = encode(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}"#);
        let too_long = format!("{good_header}.{}.AAAA", "A".repeat(MAX_TOKEN_LEN));
        for token in [
            "",
            "abc",
            &format!("{good_header}.e30"),
            &format!("{good_header}.e30.AA.AA"),
            &format!("{good_header}=.e30.AA"),
            "!!!.e30.AA",
            &format!("{}.e30.AA", encode("[]")),
            &too_long,
        ] {
            assert_eq!(check_header(token), Err(TokenError::Malformed), "{token}");
        }
    }

    #[test]
    fn only_thumbprint_shaped_kids_are_plausible() {
        assert!(is_plausible_kid(
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        ));
        assert!(!is_plausible_kid("key-1"));
        assert!(!is_plausible_kid(
            "kPrK/qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        ));
    }
}
