//! `chat unlock`: the device keys open without the passphrase for a while.
//!
//! What is kept is the argon2id key derived from the passphrase (not the passphrase, which may
//! open other things, and not the private keys), with its expiry, in a file of mode 0600 in
//! `$XDG_RUNTIME_DIR/chat-unlock/` (0700): the per-user directory in memory that systemd-logind
//! creates at login and removes at the last logout, where ssh-agent and gpg-agent keep their
//! sockets. It opens nothing alone: it opens the profile's `keys.json`, and only as sealed then
//! (sealing again, `chat passphrase`, makes it useless). It is never written under the profile,
//! which lives on disk next to `keys.json` and goes into backups with it; without
//! `$XDG_RUNTIME_DIR`, unlocking is refused.
//!
//! What it does not protect against: while unlocked, anyone who can read the user's files
//! (the same user's processes, root) can open the keys without the passphrase, as they could
//! use an unlocked ssh-agent. Expiry is checked by every reader, which removes an expired file;
//! until a command runs after expiry (or `chat lock`, `chat logout`, or the end of the login
//! session), the file stays in memory.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, Result, keystore, profile::Profile};

/// The longest unlock: a working day.
pub const MAX_UNLOCK: Duration = Duration::from_secs(12 * 3600);

#[derive(Serialize, Deserialize)]
struct UnlockFile {
    /// Unix seconds.
    expires_at: i64,
    /// Hex of the argon2id key.
    key: String,
}

/// Keeps the key that opens `profile`'s keys with `passphrase` for `duration` (at most
/// [`MAX_UNLOCK`]); returns when it ends (Unix seconds).
///
/// # Errors
/// [`Error::Auth`] for a wrong passphrase; [`Error::Usage`] without `$XDG_RUNTIME_DIR`, or for
/// a duration of zero or over the maximum; [`Error::Profile`] when the profile has no keys or
/// the file cannot be written.
pub fn unlock(profile: &Profile, passphrase: &[u8], duration: Duration) -> Result<i64> {
    if duration.is_zero() || duration > MAX_UNLOCK {
        return Err(Error::usage(format!(
            "unlock for 1 minute to {} hours",
            MAX_UNLOCK.as_secs() / 3600
        )));
    }
    let path = unlock_path(profile, true)?;
    let sealed = profile
        .sealed_keys()?
        .ok_or_else(|| Error::auth("not logged in: run `chat login` first"))?;
    let key = keystore::unlock_key(&sealed, passphrase)?;
    let expires_at = crate::session::now() + i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
    let file = UnlockFile {
        expires_at,
        key: hex::encode(key.as_ref()),
    };
    let bytes = Zeroizing::new(
        serde_json::to_vec(&file).map_err(|error| Error::Profile(error.to_string()))?,
    );
    let dir = path.parent().unwrap_or(&path);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    crate::profile::write_atomically(dir, &name, &bytes)?;
    Ok(expires_at)
}

/// The kept key of `profile`, while the unlock lasts; an expired or unreadable file is removed.
#[must_use]
pub fn unlocked_key(profile: &Profile) -> Option<Zeroizing<[u8; 32]>> {
    let path = unlock_path(profile, false).ok()?;
    let bytes = Zeroizing::new(fs::read(&path).ok()?);
    let file: Option<UnlockFile> = serde_json::from_slice(&bytes).ok();
    let key = file
        .filter(|file| file.expires_at > crate::session::now())
        .and_then(|file| {
            let decoded = Zeroizing::new(hex::decode(&file.key).ok()?);
            if decoded.len() != 32 {
                return None;
            }
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(&decoded);
            Some(key)
        });
    if key.is_none() {
        let _ = fs::remove_file(&path);
    }
    key
}

/// Ends the unlock of `profile` (`chat lock`, and at logout); returns whether there was one.
///
/// # Errors
/// [`Error::Profile`] when the file exists but cannot be removed.
pub fn lock(profile: &Profile) -> Result<bool> {
    let Ok(path) = unlock_path(profile, false) else {
        return Ok(false);
    };
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// `$XDG_RUNTIME_DIR/chat-unlock/<hash of the profile's path>.json`; with `create`, the
/// directory is created with mode 0700 (and refused if others may enter it).
fn unlock_path(profile: &Profile, create: bool) -> Result<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .ok_or_else(|| {
            Error::usage(
                "chat unlock keeps the key in $XDG_RUNTIME_DIR (a per-user directory in memory, \
                 set up at login), which is not set here: give the passphrase with \
                 CHAT_PASSPHRASE instead",
            )
        })?;
    let dir = runtime.join("chat-unlock");
    let profile_dir = fs::canonicalize(profile.dir()).unwrap_or_else(|_| profile.dir().into());
    let hash = e2ee::fingerprint(profile_dir.as_os_str().as_encoded_bytes());
    let path = dir.join(format!("{}.json", hex::encode(&hash[..16])));
    if !create {
        return Ok(path);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    if fs::metadata(&dir)?.permissions().mode() & 0o077 != 0 {
        return Err(Error::Profile(format!(
            "{} may be entered by other users: refusing to keep a key there",
            dir.display()
        )));
    }
    Ok(path)
}
