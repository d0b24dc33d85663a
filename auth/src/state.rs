//! What every RPC shares, built once in `run`.

use sqlx::PgPool;

use crate::{
    Config, Error, passwords::Passwords, sessions::Sessions, throttle::LoginThrottle,
    tokens::TokenIssuer,
};

/// The auth service's shared state.
pub struct State {
    pub db: PgPool,
    pub passwords: Passwords,
    pub throttle: LoginThrottle,
    pub sessions: Sessions,
    pub issuer: TokenIssuer,
    pub validator: token::Validator,
    pub max_devices: u32,
}

impl State {
    /// Reads the key material the configuration names and prepares every component.
    ///
    /// # Errors
    /// When a key or secret cannot be read or is malformed, or argon2's parameters are invalid.
    pub fn new(config: &Config, db: PgPool) -> Result<Self, Error> {
        let issuer = TokenIssuer::load(&config.tokens)?;
        let secret = config
            .tokens
            .refresh_token_secret
            .read()
            .map_err(|error| Error::Internal(format!("AUTH_REFRESH_TOKEN_SECRET: {error}")))?;
        let sessions = Sessions::new(&config.tokens, &crate::sessions::decode_secret(&secret)?)?;
        Ok(Self {
            db,
            passwords: Passwords::new(&config.passwords)?,
            throttle: LoginThrottle::new(config.login_throttle.clone()),
            sessions,
            validator: issuer.validator(),
            issuer,
            max_devices: config.max_devices_per_user,
        })
    }
}
