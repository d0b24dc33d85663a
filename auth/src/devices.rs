//! Devices and their public keys: the `auth.devices` and `auth.device_events` queries.
//!
//! Every change to a user's set of keyed devices (keys uploaded, device revoked) writes an event
//! in the same transaction, and so does every revoked session (`sessions.rs`);
//! `WatchDeviceChanges` (device events) and `WatchRevocations` (revoked devices and sessions)
//! stream them through `common::outbox::Feed`, so the caller must call `Feed::committed` after
//! these functions return.

use std::{collections::HashMap, time::Duration};

use common::outbox::{OutboxEvent, OutboxTable};
use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Error, keys::ValidatedKeys, sessions::SessionOwner};

/// One device of a user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Device {
    /// Stable id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Name given by the owner.
    pub name: String,
    /// RSA-OAEP SubjectPublicKeyInfo, once uploaded.
    pub encryption_public_key: Option<Vec<u8>>,
    /// SHA-256 of it.
    pub encryption_key_fingerprint: Option<Vec<u8>>,
    /// Ed25519 public key, once uploaded.
    pub signing_public_key: Option<Vec<u8>>,
    /// SHA-256 of it.
    pub signing_key_fingerprint: Option<Vec<u8>>,
    /// First login.
    pub created_at: OffsetDateTime,
    /// Last login or refresh.
    pub last_seen_at: OffsetDateTime,
}

/// The NOTIFY channel that wakes `WatchDeviceChanges` streams on every replica.
pub const DEVICE_EVENTS_CHANNEL: &str = "auth_device_events";

/// A stored device event: `device` of `user` got keys or was revoked, or one of its sessions was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    /// Increasing id, the consumers' cursor.
    pub id: i64,
    /// The user whose device or session it is.
    pub user_id: Uuid,
    /// The device concerned.
    pub device_id: Uuid,
    /// What happened.
    pub kind: DeviceEventKind,
    /// When it was committed (close enough: the insert's time).
    pub created_at: OffsetDateTime,
}

/// What a [`DeviceEvent`] says (`auth.device_events.kind`, and `session_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEventKind {
    /// The device uploaded (new) keys.
    KeysUploaded,
    /// The device, and every session of it, was revoked.
    DeviceRevoked,
    /// This session of the device was revoked.
    SessionRevoked(Uuid),
}

impl DeviceEvent {
    /// Whether the user's set of keyed devices changed (what `WatchDeviceChanges` streams).
    pub fn changes_devices(&self) -> bool {
        !matches!(self.kind, DeviceEventKind::SessionRevoked(_))
    }

    /// What it revokes, if it is a revocation (what `WatchRevocations` streams).
    pub fn revocation(&self) -> Option<token::Revocation> {
        let revoked = match self.kind {
            DeviceEventKind::KeysUploaded => return None,
            DeviceEventKind::DeviceRevoked => token::Revoked::Device(self.device_id),
            DeviceEventKind::SessionRevoked(session) => token::Revoked::Session(session),
        };
        Some(token::Revocation {
            revoked,
            revoked_at: self.created_at.unix_timestamp(),
        })
    }
}

impl OutboxEvent for DeviceEvent {
    const TABLE: OutboxTable = OutboxTable {
        events: "auth.device_events",
        retention: "auth.device_event_retention",
        columns: "user_id, device_id, kind, session_id, created_at",
        channel: DEVICE_EVENTS_CHANNEL,
    };

    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let kind: String = row.try_get("kind")?;
        let session_id: Option<Uuid> = row.try_get("session_id")?;
        let kind = match (kind.as_str(), session_id) {
            ("keys_uploaded", _) => DeviceEventKind::KeysUploaded,
            ("device_revoked", _) => DeviceEventKind::DeviceRevoked,
            ("session_revoked", Some(session)) => DeviceEventKind::SessionRevoked(session),
            _ => {
                return Err(sqlx::Error::Decode(
                    format!("unknown device event kind {kind:?}").into(),
                ));
            }
        };
        Ok(DeviceEvent {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            device_id: row.try_get("device_id")?,
            kind,
            created_at: row.try_get("created_at")?,
        })
    }

    fn id(&self) -> i64 {
        self.id
    }
}

/// The columns a [`Device`] is read from.
pub(crate) const DEVICE_COLUMNS: &str =
    "id, user_id, name, encryption_public_key, encryption_key_fingerprint,
    signing_public_key, signing_key_fingerprint, created_at, last_seen_at";

/// Creates a device for a login, unless the user already has `max_devices` active ones.
///
/// # Errors
/// [`Error::TooManyDevices`] at the limit.
pub async fn create_device(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    name: &str,
    max_devices: u32,
) -> Result<Device, Error> {
    // Lock the user so that concurrent logins cannot both pass the limit.
    sqlx::query("select 1 from auth.users where id = $1 for update")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let active: i64 = sqlx::query_scalar(
        "select count(*) from auth.devices where user_id = $1 and revoked_at is null",
    )
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    if active >= i64::from(max_devices) {
        return Err(Error::TooManyDevices { max: max_devices });
    }
    Ok(sqlx::query_as(&format!(
        "insert into auth.devices (id, user_id, name) values ($1, $2, $3) returning {DEVICE_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(name)
    .fetch_one(&mut **tx)
    .await?)
}

/// Stores (or replaces) the public keys of an active device and records the change for
/// `WatchDeviceChanges`.
///
/// # Errors
/// [`Error::DeviceNotFound`] when it is not an active device of the user.
pub async fn set_keys(
    db: &PgPool,
    user_id: Uuid,
    device_id: Uuid,
    keys: &ValidatedKeys,
) -> Result<Device, Error> {
    let mut tx = db.begin().await?;
    let device: Device = sqlx::query_as(&format!(
        "update auth.devices set encryption_public_key = $3, encryption_key_fingerprint = $4,
           signing_public_key = $5, signing_key_fingerprint = $6, keys_updated_at = now(),
           updated_at = now()
         where id = $1 and user_id = $2 and revoked_at is null returning {DEVICE_COLUMNS}"
    ))
    .bind(device_id)
    .bind(user_id)
    .bind(&keys.encryption_public_key)
    .bind(keys.encryption_key_fingerprint.as_slice())
    .bind(keys.signing_public_key.as_slice())
    .bind(keys.signing_key_fingerprint.as_slice())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::DeviceNotFound)?;
    record_event(&mut tx, user_id, device_id, "keys_uploaded").await?;
    tx.commit().await?;
    Ok(device)
}

/// The user's active devices (with or without keys), oldest first.
pub async fn list_active(db: &PgPool, user_id: Uuid) -> Result<Vec<Device>, Error> {
    Ok(sqlx::query_as(&format!(
        "select {DEVICE_COLUMNS} from auth.devices
         where user_id = $1 and revoked_at is null order by created_at, id"
    ))
    .bind(user_id)
    .fetch_all(db)
    .await?)
}

/// The active devices with keys of each user, ordered by device id.
pub async fn keyed_devices_of(
    db: &PgPool,
    user_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Device>>, Error> {
    let devices: Vec<Device> = sqlx::query_as(&format!(
        "select {DEVICE_COLUMNS} from auth.devices
         where user_id = any($1) and revoked_at is null and encryption_public_key is not null
         order by id"
    ))
    .bind(user_ids)
    .fetch_all(db)
    .await?;
    let mut by_user: HashMap<Uuid, Vec<Device>> = HashMap::new();
    for device in devices {
        by_user.entry(device.user_id).or_default().push(device);
    }
    Ok(by_user)
}

/// The device if it is an active device of the user.
///
/// # Errors
/// [`Error::DeviceNotFound`] otherwise.
pub async fn get_active(db: &PgPool, user_id: Uuid, device_id: Uuid) -> Result<Device, Error> {
    sqlx::query_as(&format!(
        "select {DEVICE_COLUMNS} from auth.devices
         where id = $1 and user_id = $2 and revoked_at is null"
    ))
    .bind(device_id)
    .bind(user_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::DeviceNotFound)
}

/// Renames an active device of the user; the name must already be checked (`check_name`).
///
/// # Errors
/// [`Error::DeviceNotFound`] when it is not an active device of the user.
pub async fn rename(
    db: &PgPool,
    user_id: Uuid,
    device_id: Uuid,
    name: &str,
) -> Result<Device, Error> {
    // No device event: a name changes no key, so the senders' cached device lists stay right.
    sqlx::query_as(&format!(
        "update auth.devices set name = $3, updated_at = now()
         where id = $1 and user_id = $2 and revoked_at is null returning {DEVICE_COLUMNS}"
    ))
    .bind(device_id)
    .bind(user_id)
    .bind(name)
    .fetch_optional(db)
    .await?
    .ok_or(Error::DeviceNotFound)
}

/// Revokes an active device of the user and every session it has, in one transaction.
///
/// # Errors
/// [`Error::DeviceNotFound`] when it is not an active device of the user.
pub async fn revoke(db: &PgPool, user_id: Uuid, device_id: Uuid) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    let revoked = sqlx::query(
        "update auth.devices set revoked_at = now(), updated_at = now()
         where id = $1 and user_id = $2 and revoked_at is null",
    )
    .bind(device_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    if revoked.rows_affected() == 0 {
        return Err(Error::DeviceNotFound);
    }
    sqlx::query(
        "update auth.sessions set revoked_at = now(), revoked_reason = 'device_revoked'
         where device_id = $1 and revoked_at is null",
    )
    .bind(device_id)
    .execute(&mut *tx)
    .await?;
    record_event(&mut tx, user_id, device_id, "device_revoked").await?;
    tx.commit().await?;
    Ok(())
}

/// Where a revocation follower starting afresh should begin: after the newest event older than
/// `window` (revocations before it refuse no unexpired token), and never before the events kept.
pub async fn recent_revocations_start(db: &PgPool, window: Duration) -> Result<u64, Error> {
    let cursor: i64 = sqlx::query_scalar(
        "select greatest(r.pruned_through, coalesce((
             select max(id) from auth.device_events
             where created_at < now() - make_interval(secs => $1)
         ), 0))
         from auth.device_event_retention r",
    )
    .bind(window.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(cursor).unwrap_or_default())
}

/// Records that `sessions` were revoked, in the revoking transaction, for `WatchRevocations`.
pub(crate) async fn record_session_revocations(
    tx: &mut Transaction<'_, Postgres>,
    sessions: &[SessionOwner],
) -> Result<(), Error> {
    if sessions.is_empty() {
        return Ok(());
    }
    lock_events(tx).await?;
    let column = |field: fn(&SessionOwner) -> Uuid| sessions.iter().map(field).collect::<Vec<_>>();
    sqlx::query(
        "insert into auth.device_events (user_id, device_id, session_id, kind)
         select user_id, device_id, session_id, 'session_revoked'
         from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as s(user_id, device_id, session_id)",
    )
    .bind(column(|owner| owner.user_id))
    .bind(column(|owner| owner.device_id))
    .bind(column(|owner| owner.session_id))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn record_event(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    device_id: Uuid,
    kind: &str,
) -> Result<(), Error> {
    lock_events(tx).await?;
    sqlx::query("insert into auth.device_events (user_id, device_id, kind) values ($1, $2, $3)")
        .bind(user_id)
        .bind(device_id)
        .bind(kind)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Serialises the event writers until `tx` ends. Event ids come from an identity column at
/// insert time; serialising the writers makes commit order equal id order, so a reader resuming
/// "after id N" can never skip a late commit.
async fn lock_events(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('auth.device_events'))")
        .execute(&mut **tx)
        .await?;
    Ok(())
}
