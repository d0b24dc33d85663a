//! Access tokens, signed in one place and validated the same way everywhere.
//!
//! An access token is a JWT (RFC 9068, `typ: at+jwt`) signed with Ed25519 (`alg: EdDSA`), whose
//! `kid` is the RFC 7638 thumbprint of the signing key. Its claims are [`AccessClaims`]: `iss`,
//! `aud`, `sub` (user), `did` (device), `sid` (session), `iat`, `nbf`, `exp` and `jti`, all
//! required.
//!
//! This crate owns:
//! - the format: [`AccessClaims`], [`SigningKey::sign`];
//! - the keys: [`SigningKey`] (auth's private key, PKCS#8 PEM), [`Jwk`] and [`jwks_json`] (the
//!   published public keys), [`KeySet`] (checked verification keys);
//! - validation: [`Validator`], with static keys (auth) or keys from a [`KeySource`] such as
//!   [`AuthServiceKeySource`] (the gateway and every other service), refreshed periodically and on
//!   unknown `kid`s, remembering tokens that passed (`cache.rs`); [`RemoteValidator`] wraps it for
//!   services that may start before auth;
//! - revocation: [`Revocations`], the sessions and devices revoked within a token's lifetime,
//!   which a validator consults on every call, and streams watch ([`Revocations::ended`]); the
//!   feed that keeps it current from auth's `WatchRevocations` ([`RevocationSource`],
//!   [`AuthServiceRevocationSource`], followed by [`RemoteValidator`]). It fails closed: a list
//!   that has not heard from its feed for its maximum staleness answers UNAVAILABLE;
//! - the errors: [`TokenError`] and its one conversion to an UNAUTHENTICATED `tonic::Status`.
//!
//! It does not issue tokens (auth decides who gets one, for how long, and stores sessions), decide
//! what is revoked (auth does, and publishes it), read configuration or files, serve the JWKS, or
//! handle refresh tokens, which are opaque strings checked by auth's database. It never logs a
//! token.
//!
//! Start with [`Validator`], whose documentation lists the checks in order, then `verify.rs`.
//!
//! jsonwebtoken is used without a crypto feature: the first call into it installs an EdDSA-only
//! crypto provider (`crypto.rs`), so no other crate of a binary should use jsonwebtoken directly.

mod cache;
mod claims;
mod crypto;
mod error;
mod jwk;
mod keys;
mod remote;
mod revocation;
mod revocation_feed;
mod source;
mod validator;
mod verify;

pub use claims::{AccessClaims, Subject};
pub use error::{ACCESS_TOKEN_INVALID, ERROR_DOMAIN, KeyError, KeySourceError, TokenError};
pub use jwk::{ALG_EDDSA, CRV_ED25519, Jwk, KTY_OKP, USE_SIG, jwks_json};
pub use keys::{ACCESS_TOKEN_TYPE, KeySet, SigningKey};
pub use remote::RemoteValidator;
pub use revocation::{CLOCK_MARGIN, DEFAULT_MAX_STALENESS, Revocation, Revocations, Revoked};
pub use revocation_feed::{
    AttachCredential, AuthServiceRevocationSource, FeedMessage, FeedStream, RevocationSource,
};
pub use source::{AuthServiceKeySource, KeySource};
pub use validator::{
    DEFAULT_LEEWAY, KeyRefresh, MAX_ACCESS_TOKEN_LIFETIME, ValidationSettings, Validator,
};

/// The attribute for implementing [`KeySource`] (`#[token::async_trait]`), re-exported so that
/// implementors need no dependency of their own.
pub use async_trait::async_trait;
