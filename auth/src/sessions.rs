//! Sessions (refresh-token families, RFC 9700) and refresh-token rotation.
//!
//! A refresh token is 256 random bits, base64url; only its SHA-256 is stored. Every use rotates it.
//! The successor of token `t` is HMAC-SHA-256(secret, `t`): the server can hand the *same*
//! successor to a client that retries after losing the response, without ever storing a token,
//! while someone who stole `t` still cannot compute its successor. Presenting a rotated token
//! after the grace period, or once its successor has been used, is reuse: the whole session is
//! revoked. Rows are locked, so concurrent refreshes of one token yield one successor.
//!
//! Every revocation (logout, logout everywhere, reuse) records a `session_revoked` event in its
//! transaction (`devices::record_session_revocations`), which `WatchRevocations` streams to every
//! validator; callers call `Feed::committed` after it returns.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Error,
    config::TokenSettings,
    devices::{DEVICE_COLUMNS, Device, record_session_revocations},
};

/// A refresh token's length in characters: 32 bytes in base64url without padding.
const TOKEN_CHARS: usize = 43;

/// Issues, rotates and revokes sessions.
#[derive(Clone)]
pub struct Sessions {
    successor_key: Hmac<Sha256>,
    idle_ttl: time::Duration,
    max_age: time::Duration,
    reuse_grace: time::Duration,
}

/// A refresh token handed to a client.
#[derive(Debug)]
pub struct IssuedRefreshToken {
    /// The opaque token.
    pub token: SecretString,
    /// Its idle expiry.
    pub expires_at: OffsetDateTime,
}

/// Who a refreshed session belongs to.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct SessionOwner {
    /// The session (family) id.
    pub session_id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// Its device.
    pub device_id: Uuid,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Refreshed {
    /// The token was exchanged for its successor.
    Rotated(SessionOwner, IssuedRefreshToken),
    /// The token had been used already: the session was revoked. The client gets the same answer
    /// as for an invalid token.
    Reused(SessionOwner),
}

/// A session about to be stored.
struct NewSession {
    id: Uuid,
    created_at: OffsetDateTime,
    absolute_expires_at: OffsetDateTime,
    refresh: IssuedRefreshToken,
}

#[derive(sqlx::FromRow)]
struct PresentedToken {
    #[sqlx(flatten)]
    owner: SessionOwner,
    idle_expires_at: OffsetDateTime,
    rotated_at: Option<OffsetDateTime>,
    successor_hash: Option<Vec<u8>>,
    absolute_expires_at: OffsetDateTime,
    session_revoked: bool,
    now: OffsetDateTime,
}

impl Sessions {
    /// Sessions with the configured lifetimes; `secret` is the decoded refresh-token secret.
    ///
    /// # Errors
    /// [`Error::Internal`] when the secret is shorter than 32 bytes.
    pub fn new(settings: &TokenSettings, secret: &[u8]) -> Result<Self, Error> {
        if secret.len() < 32 {
            return Err(Error::Internal(
                "the refresh token secret must be at least 32 bytes".into(),
            ));
        }
        let to_time = |d: std::time::Duration| time::Duration::seconds(d.as_secs() as i64);
        Ok(Self {
            successor_key: Hmac::new_from_slice(secret)
                .map_err(|_| Error::Internal("refresh token secret".into()))?,
            idle_ttl: to_time(settings.refresh_token_idle_ttl),
            max_age: to_time(settings.session_max_age),
            reuse_grace: to_time(settings.refresh_reuse_grace),
        })
    }

    /// Opens a session for a device and returns its first refresh token.
    pub async fn open(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        user_id: Uuid,
        device_id: Uuid,
    ) -> Result<(Uuid, IssuedRefreshToken), Error> {
        let session = self.new_session();
        sqlx::query(
            "insert into auth.sessions (id, user_id, device_id, created_at, absolute_expires_at)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(session.id)
        .bind(user_id)
        .bind(device_id)
        .bind(session.created_at)
        .bind(session.absolute_expires_at)
        .execute(&mut **tx)
        .await?;
        insert_token(
            tx,
            session.refresh.token.expose_secret(),
            session.id,
            session.refresh.expires_at,
        )
        .await?;
        Ok((session.id, session.refresh))
    }

    /// For a login that resumes an existing device: marks the device seen and opens a session on
    /// it with its first refresh token, in one statement (one round trip instead of five, since
    /// this is most logins).
    ///
    /// # Errors
    /// [`Error::DeviceNotFound`] when it is not an active device of the user.
    pub async fn open_on_resumed_device(
        &self,
        db: &PgPool,
        user_id: Uuid,
        device_id: Uuid,
    ) -> Result<(Device, Uuid, IssuedRefreshToken), Error> {
        let session = self.new_session();
        // Foreign keys are checked at the end of the statement, when all three rows exist.
        let device: Option<Device> = sqlx::query_as(&format!(
            "with device as (
               update auth.devices set last_seen_at = now(), updated_at = now()
               where id = $1 and user_id = $2 and revoked_at is null
               returning {DEVICE_COLUMNS}
             ), session as (
               insert into auth.sessions (id, user_id, device_id, created_at, absolute_expires_at)
               select $3, user_id, id, $4, $5 from device
               returning id
             ), token as (
               insert into auth.refresh_tokens (token_hash, session_id, idle_expires_at)
               select $6, id, $7 from session
             )
             select {DEVICE_COLUMNS} from device"
        ))
        .bind(device_id)
        .bind(user_id)
        .bind(session.id)
        .bind(session.created_at)
        .bind(session.absolute_expires_at)
        .bind(hash(session.refresh.token.expose_secret()).as_slice())
        .bind(session.refresh.expires_at)
        .fetch_optional(db)
        .await?;
        let device = device.ok_or(Error::DeviceNotFound)?;
        Ok((device, session.id, session.refresh))
    }

    /// A fresh session id and first refresh token, not yet stored.
    fn new_session(&self) -> NewSession {
        let now = OffsetDateTime::now_utc();
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        NewSession {
            id: Uuid::now_v7(),
            created_at: now,
            absolute_expires_at: now + self.max_age,
            refresh: IssuedRefreshToken {
                token: URL_SAFE_NO_PAD.encode(bytes).into(),
                expires_at: (now + self.idle_ttl).min(now + self.max_age),
            },
        }
    }

    /// Exchanges a refresh token for its successor (see the module docs for the rules), or
    /// revokes its session when it was used already.
    ///
    /// # Errors
    /// [`Error::RefreshTokenInvalid`] for an unknown, expired or revoked token.
    pub async fn refresh(&self, db: &PgPool, token: &str) -> Result<Refreshed, Error> {
        if token.len() != TOKEN_CHARS || URL_SAFE_NO_PAD.decode(token).is_err() {
            return Err(Error::RefreshTokenInvalid);
        }
        let mut tx = db.begin().await?;
        // Locking the session serialises every refresh of the family.
        let presented: Option<PresentedToken> = sqlx::query_as(
            "select s.id as session_id, s.user_id, s.device_id, t.idle_expires_at, t.rotated_at,
                    t.successor_hash, s.absolute_expires_at,
                    s.revoked_at is not null as session_revoked, now() as now
             from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id
             where t.token_hash = $1
             for update of t, s",
        )
        .bind(hash(token).as_slice())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(presented) = presented else {
            return Err(Error::RefreshTokenInvalid);
        };
        let now = presented.now;
        if presented.session_revoked || presented.absolute_expires_at <= now {
            return Err(Error::RefreshTokenInvalid);
        }
        let successor = self.successor_of(token);
        match (presented.rotated_at, presented.successor_hash) {
            (None, _) if presented.idle_expires_at <= now => {
                return Err(Error::RefreshTokenInvalid);
            }
            (None, _) => {
                let expires_at = (now + self.idle_ttl).min(presented.absolute_expires_at);
                insert_token(&mut tx, &successor, presented.owner.session_id, expires_at).await?;
                sqlx::query(
                    "update auth.refresh_tokens set rotated_at = $2, successor_hash = $3
                     where token_hash = $1",
                )
                .bind(hash(token).as_slice())
                .bind(now)
                .bind(hash(&successor).as_slice())
                .execute(&mut *tx)
                .await?;
            }
            (Some(rotated_at), Some(successor_hash))
                if now - rotated_at <= self.reuse_grace
                    && !successor_used(&mut tx, &successor_hash).await? => {}
            (Some(_), _) => {
                revoke_family(&mut tx, presented.owner).await?;
                tx.commit().await?;
                tracing::warn!(session_id = %presented.owner.session_id, "refresh token reuse; session revoked");
                return Ok(Refreshed::Reused(presented.owner));
            }
        }
        let expires_at: OffsetDateTime = sqlx::query_scalar(
            "select idle_expires_at from auth.refresh_tokens where token_hash = $1",
        )
        .bind(hash(&successor).as_slice())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("update auth.devices set last_seen_at = now() where id = $1")
            .bind(presented.owner.device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Refreshed::Rotated(
            presented.owner,
            IssuedRefreshToken {
                token: successor.into(),
                expires_at,
            },
        ))
    }

    fn successor_of(&self, token: &str) -> String {
        let mut mac = self.successor_key.clone();
        mac.update(b"refresh-token-successor:");
        mac.update(token.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// Revokes one session (logout); returns it unless it was revoked already.
pub async fn revoke(
    db: &PgPool,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<Option<SessionOwner>, Error> {
    let mut tx = db.begin().await?;
    let revoked: Option<SessionOwner> = sqlx::query_as(
        "update auth.sessions set revoked_at = now(), revoked_reason = 'logout'
         where id = $1 and user_id = $2 and revoked_at is null
         returning id as session_id, user_id, device_id",
    )
    .bind(session_id)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    record_session_revocations(&mut tx, revoked.as_slice()).await?;
    tx.commit().await?;
    Ok(revoked)
}

/// Revokes every live session of a user (logout everywhere) and returns them.
pub async fn revoke_all(db: &PgPool, user_id: Uuid) -> Result<Vec<SessionOwner>, Error> {
    let mut tx = db.begin().await?;
    let revoked: Vec<SessionOwner> = sqlx::query_as(
        "update auth.sessions set revoked_at = now(), revoked_reason = 'logout_all'
         where user_id = $1 and revoked_at is null
         returning id as session_id, user_id, device_id",
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    record_session_revocations(&mut tx, &revoked).await?;
    tx.commit().await?;
    Ok(revoked)
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

async fn insert_token(
    tx: &mut Transaction<'_, Postgres>,
    token: &str,
    session_id: Uuid,
    idle_expires_at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "insert into auth.refresh_tokens (token_hash, session_id, idle_expires_at)
         values ($1, $2, $3)",
    )
    .bind(hash(token).as_slice())
    .bind(session_id)
    .bind(idle_expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn successor_used(
    tx: &mut Transaction<'_, Postgres>,
    successor_hash: &[u8],
) -> Result<bool, Error> {
    let rotated: Option<Option<OffsetDateTime>> =
        sqlx::query_scalar("select rotated_at from auth.refresh_tokens where token_hash = $1")
            .bind(successor_hash)
            .fetch_optional(&mut **tx)
            .await?;
    // A missing successor row counts as used: nothing safe can be handed back.
    Ok(!matches!(rotated, Some(None)))
}

async fn revoke_family(
    tx: &mut Transaction<'_, Postgres>,
    session: SessionOwner,
) -> Result<(), Error> {
    let revoked = sqlx::query(
        "update auth.sessions set revoked_at = now(), revoked_reason = 'refresh_reuse'
         where id = $1 and revoked_at is null",
    )
    .bind(session.session_id)
    .execute(&mut **tx)
    .await?;
    if revoked.rows_affected() > 0 {
        record_session_revocations(tx, &[session]).await?;
    }
    Ok(())
}

/// The secret's bytes from its base64 form in the configuration.
///
/// # Errors
/// [`Error::Internal`] when it is not base64.
pub fn decode_secret(secret: &SecretString) -> Result<Vec<u8>, Error> {
    use base64::engine::general_purpose::STANDARD;
    STANDARD
        .decode(secret.expose_secret().trim())
        .or_else(|_| URL_SAFE_NO_PAD.decode(secret.expose_secret().trim()))
        .map_err(|_| Error::Internal("the refresh token secret must be base64".into()))
}
