//! The profile directory: one device's account, tokens, sealed private keys, pinned contact keys
//! and stream cursors, as JSON files.
//!
//! The directory is created with mode 0700 and every file with mode 0600. Every write goes to a
//! temporary file in the same directory, is fsynced, then renamed over the old file (and the
//! directory is fsynced), so a crash leaves either the old or the new content, never a mix: a
//! rotated refresh token is never lost.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, Result, keystore::SealedKeys};

/// `account.json`: who this profile is logged in as, on which server, with which device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The gateway URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// The username.
    pub username: String,
    /// The user id.
    pub user_id: String,
    /// This device's id.
    pub device_id: String,
}

/// `tokens.json`: the session's tokens (secret: never printed). Times are Unix seconds.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    /// The access token (bearer).
    pub access_token: String,
    /// When it expires.
    pub access_expires_at: i64,
    /// The refresh token (single use; each refresh returns its successor).
    pub refresh_token: String,
    /// When it expires.
    pub refresh_expires_at: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

/// One pinned contact in `contacts.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The username when last seen.
    pub username: String,
    /// Every device's keys, as `device_id:encryption_fingerprint_hex:signing_fingerprint_hex`.
    pub devices: BTreeSet<String>,
    /// Whether the user compared the safety number of exactly these keys.
    pub verified: bool,
    /// Every Ed25519 key ever seen, by device id (hex), so that messages of a device that was
    /// since revoked still verify.
    #[serde(default)]
    pub signing_keys: BTreeMap<String, String>,
}

/// `contacts.json`: pinned keys by user id.
pub type Contacts = BTreeMap<String, Contact>;
/// `cursors.json`: the last sequence shown, by conversation id.
pub type Cursors = BTreeMap<String, u64>;

/// A profile directory.
#[derive(Clone, Debug)]
pub struct Profile {
    dir: PathBuf,
}

const ACCOUNT: &str = "account.json";
const TOKENS: &str = "tokens.json";
const KEYS: &str = "keys.json";
const CONTACTS: &str = "contacts.json";
const CURSORS: &str = "cursors.json";

impl Profile {
    /// Opens (creating it with mode 0700 if needed) the profile directory `dir`.
    ///
    /// # Errors
    /// [`Error::Profile`] when it cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Profile { dir })
    }

    /// The default directory of profile `name`: `$XDG_CONFIG_HOME/chat/<name>`, else
    /// `$HOME/.config/chat/<name>`.
    ///
    /// # Errors
    /// [`Error::Profile`] when neither variable is set.
    pub fn default_dir(name: &str) -> Result<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
            .ok_or_else(|| Error::Profile("set HOME or XDG_CONFIG_HOME".to_owned()))?;
        Ok(base.join("chat").join(name))
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The account, if logged in (or logged out with the device kept).
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub fn account(&self) -> Result<Option<Account>> {
        self.read(ACCOUNT)
    }

    /// Saves the account.
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub fn save_account(&self, account: &Account) -> Result<()> {
        self.write(ACCOUNT, account)
    }

    /// The tokens, if logged in.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub fn tokens(&self) -> Result<Option<Tokens>> {
        self.read(TOKENS)
    }

    /// Saves the tokens atomically.
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub fn save_tokens(&self, tokens: &Tokens) -> Result<()> {
        self.write(TOKENS, tokens)
    }

    /// Forgets the tokens (logout).
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be removed.
    pub fn remove_tokens(&self) -> Result<()> {
        match fs::remove_file(self.dir.join(TOKENS)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// The sealed private keys, if any.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub fn sealed_keys(&self) -> Result<Option<SealedKeys>> {
        self.read(KEYS)
    }

    /// Saves the sealed private keys.
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub fn save_sealed_keys(&self, keys: &SealedKeys) -> Result<()> {
        self.write(KEYS, keys)
    }

    /// The pinned contacts.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub fn contacts(&self) -> Result<Contacts> {
        Ok(self.read(CONTACTS)?.unwrap_or_default())
    }

    /// Saves the pinned contacts.
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub fn save_contacts(&self, contacts: &Contacts) -> Result<()> {
        self.write(CONTACTS, contacts)
    }

    /// The stream cursors.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub fn cursors(&self) -> Result<Cursors> {
        Ok(self.read(CURSORS)?.unwrap_or_default())
    }

    /// Saves the stream cursors.
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub fn save_cursors(&self, cursors: &Cursors) -> Result<()> {
        self.write(CURSORS, cursors)
    }

    /// A JSON file of the profile that another module owns (`chains.rs`: the suite V2 chains),
    /// or `None` when it does not exist yet.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub(crate) fn read_file<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.read(name)
    }

    /// Writes a JSON file of the profile atomically (see [`Profile::read_file`]).
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub(crate) fn write_file<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        self.write(name, value)
    }

    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| Error::Profile(format!("{name}: {error}"))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Error::Profile(format!("{name}: {error}"))),
        }
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|error| Error::Profile(format!("{name}: {error}")))?;
        write_atomically(&self.dir, name, &bytes)
            .map_err(|error| Error::Profile(format!("{name}: {error}")))
    }
}

/// Writes `bytes` to `dir/name` through a fsynced temporary file (mode 0600) and a rename.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, dir.join(name))?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_dir() -> PathBuf {
        std::env::temp_dir().join(format!("chat-profile-test-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn files_are_private_and_round_trip() {
        let dir = temporary_dir();
        let profile = Profile::open(&dir).unwrap();
        let tokens = Tokens {
            access_token: "a".into(),
            access_expires_at: 1,
            refresh_token: "r".into(),
            refresh_expires_at: 2,
        };

        profile.save_tokens(&tokens).unwrap();
        profile.save_tokens(&tokens).unwrap();

        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(TOKENS)), 0o600);
        assert_eq!(profile.tokens().unwrap().unwrap().refresh_token, "r");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn token_debug_output_hides_the_tokens() {
        let tokens = Tokens {
            access_token: "secret-access".into(),
            access_expires_at: 1,
            refresh_token: "secret-refresh".into(),
            refresh_expires_at: 2,
        };

        assert!(!format!("{tokens:?}").contains("secret"));
    }
}
