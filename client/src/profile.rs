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

/// One pinned contact in `contacts.json`: the keys this device trusts for a user, computed from
/// the key bytes themselves (never the fingerprints the server sends).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The username when last seen.
    pub username: String,
    /// The trusted keys of every device seen, by device id; a device that disappeared from the
    /// user's devices stays, with [`PinnedDevice::revoked_at`], so that its earlier messages
    /// still verify.
    #[serde(default)]
    pub keys: BTreeMap<String, PinnedDevice>,
    /// Keys seen but not trusted: a device whose keys differ from its pin (or that came back
    /// after its revocation), or a new device of a verified contact. Nothing is sealed for a user
    /// with pending keys, and no message is verified with them, until the user accepts them
    /// (`chat trust`, or `chat verify`).
    #[serde(default)]
    pub pending: BTreeMap<String, PinnedDevice>,
    /// Whether the user compared the safety number of the trusted keys.
    pub verified: bool,
    /// The direct conversation with this user, once opened: what `chat send` seals for while
    /// the server cannot be reached (with [`PinnedDevice::encryption_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_conversation_id: Option<String>,
    /// Format 1 (before keys were pinned by their bytes): `device:encryption-fp:signing-fp`, the
    /// fingerprints as the server sent them. Read once and converted ([`Contact::upgrade`]).
    #[serde(default, skip_serializing)]
    devices: BTreeSet<String>,
    /// Format 1: the Ed25519 keys (hex) by device id.
    #[serde(default, skip_serializing)]
    signing_keys: BTreeMap<String, String>,
}

/// One device's keys as pinned: what this client computed from the bytes it uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedDevice {
    /// SHA-256 of the RSA SubjectPublicKeyInfo, computed here (hex).
    pub encryption_fingerprint: String,
    /// The Ed25519 public key itself (hex): it verifies the device's messages.
    pub signing_key: String,
    /// The RSA SubjectPublicKeyInfo itself (hex), whose SHA-256 is `encryption_fingerprint`:
    /// what a message is sealed for while the server cannot list the devices. Empty in pins
    /// written before it was kept (filled in when the server next lists the same keys).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encryption_key: String,
    /// When this client first saw these keys (Unix seconds).
    #[serde(default)]
    pub first_seen_at: i64,
    /// When this client first saw the device gone from its owner's devices (Unix seconds, its
    /// clock): the device is revoked from then on, and its messages stamped later are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl Contact {
    /// A contact first seen now with `keys`.
    #[must_use]
    pub fn new(username: String, keys: BTreeMap<String, PinnedDevice>) -> Self {
        Contact {
            username,
            keys,
            ..Contact::default()
        }
    }

    /// Converts a contact read in format 1. Its fingerprints came from the server; they are kept
    /// as the pins (what was trusted on first use then), and every device that had disappeared is
    /// taken as revoked now, its time unknown.
    pub(crate) fn upgrade(&mut self, now: i64) {
        let devices = std::mem::take(&mut self.devices);
        let mut signing_keys = std::mem::take(&mut self.signing_keys);
        for entry in devices {
            let mut parts = entry.splitn(3, ':');
            let (Some(device_id), Some(encryption), Some(_)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let signing_key = signing_keys.remove(device_id).unwrap_or_default();
            self.keys
                .entry(device_id.to_owned())
                .or_insert(PinnedDevice {
                    encryption_fingerprint: encryption.to_owned(),
                    signing_key,
                    first_seen_at: now,
                    ..PinnedDevice::default()
                });
        }
        for (device_id, signing_key) in signing_keys {
            self.keys.entry(device_id).or_insert(PinnedDevice {
                signing_key,
                first_seen_at: now,
                revoked_at: Some(now),
                ..PinnedDevice::default()
            });
        }
    }
}

/// `contacts.json`: pinned keys by user id.
pub type Contacts = BTreeMap<String, Contact>;
/// `cursors.json`: the last sequence shown, by conversation id.
pub type Cursors = BTreeMap<String, u64>;

/// One group in `groups.json`: its members as this device last showed them to the user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPin {
    /// The group's name when last seen.
    pub name: String,
    /// Member user ids and their usernames.
    pub members: BTreeMap<String, String>,
}

/// `groups.json`: group memberships as last shown, by group id.
pub type GroupPins = BTreeMap<String, GroupPin>;

/// What this device has shown of one conversation (`seen/<hash of the conversation id>.json`):
/// the sequence at which each verified message, named by its sending device and client message
/// id, was first shown. The same envelope under another sequence is a replay. At most
/// [`SeenLog::CAPACITY`] entries are kept (the highest sequences): a replay of an older message
/// is not recognised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenLog {
    /// `sender_device_id/client_message_id` to the sequence it was first shown at.
    pub first_shown: BTreeMap<String, u64>,
}

impl SeenLog {
    /// Entries kept per conversation.
    pub const CAPACITY: usize = 2000;

    /// Records a verified message shown at `sequence`. Returns the sequence it was first shown
    /// at when that is another one (a replay), else `None`.
    pub fn record(
        &mut self,
        sender_device_id: &str,
        client_message_id: &str,
        sequence: u64,
    ) -> Option<u64> {
        let key = format!("{sender_device_id}/{client_message_id}");
        match self.first_shown.get(&key) {
            Some(&first) if first != sequence => Some(first),
            Some(_) => None,
            None => {
                self.first_shown.insert(key, sequence);
                if self.first_shown.len() > Self::CAPACITY {
                    let oldest = self
                        .first_shown
                        .iter()
                        .min_by_key(|(_, sequence)| **sequence)
                        .map(|(key, _)| key.clone());
                    if let Some(oldest) = oldest {
                        self.first_shown.remove(&oldest);
                    }
                }
                None
            }
        }
    }
}

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
const GROUPS: &str = "groups.json";
const SEEN: &str = "seen";

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
        let mut contacts: Contacts = self.read(CONTACTS)?.unwrap_or_default();
        let now = crate::session::now();
        for contact in contacts.values_mut() {
            contact.upgrade(now);
        }
        Ok(contacts)
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

    /// The group memberships last shown.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub fn groups(&self) -> Result<GroupPins> {
        Ok(self.read(GROUPS)?.unwrap_or_default())
    }

    /// Saves the group memberships last shown.
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub fn save_groups(&self, groups: &GroupPins) -> Result<()> {
        self.write(GROUPS, groups)
    }

    /// What was shown of a conversation (for replay detection).
    ///
    /// # Errors
    /// [`Error::Profile`] for an unreadable file.
    pub fn seen(&self, conversation_id: &str) -> Result<SeenLog> {
        Ok(self.read(&seen_file(conversation_id))?.unwrap_or_default())
    }

    /// Saves what was shown of a conversation.
    ///
    /// # Errors
    /// [`Error::Profile`] when the file cannot be written.
    pub fn save_seen(&self, conversation_id: &str, seen: &SeenLog) -> Result<()> {
        let dir = self.dir.join(SEEN);
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        self.write(&seen_file(conversation_id), seen)
    }

    /// Forgets the seen logs (a new account in this profile).
    ///
    /// # Errors
    /// [`Error::Profile`] when the directory cannot be removed.
    pub fn remove_seen(&self) -> Result<()> {
        match fs::remove_dir_all(self.dir.join(SEEN)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
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

/// The seen log's file: named by a hash of the conversation id, which comes from the server and
/// must not choose a path.
fn seen_file(conversation_id: &str) -> String {
    let hash = e2ee::fingerprint(conversation_id.as_bytes());
    format!("{SEEN}/{}.json", hex::encode(&hash[..16]))
}

/// Writes `bytes` to `dir/name` through a fsynced temporary file (mode 0600) and a rename.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let target = dir.join(name);
    let dir = target.parent().unwrap_or(dir);
    let file_name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &target)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Whether two usernames name the same account: the server compares them in NFKC, lowercased
/// (`BOB`, `bob` and full-width `ｂｏｂ` are one user), and answers with the name as registered.
#[must_use]
pub fn same_username(a: &str, b: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    let canonical = |name: &str| name.nfkc().collect::<String>().to_lowercase();
    canonical(a) == canonical(b)
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
    fn the_seen_log_flags_another_sequence_and_keeps_the_newest_entries() {
        let mut seen = SeenLog::default();

        assert_eq!(seen.record("d", "m", 5), None);
        assert_eq!(seen.record("d", "m", 5), None, "the same message again");
        assert_eq!(seen.record("d", "m", 9), Some(5), "a replay");
        assert_eq!(seen.record("other", "m", 9), None);
        for n in 0..SeenLog::CAPACITY as u64 {
            seen.record("d", &format!("x{n}"), 100 + n);
        }

        assert_eq!(seen.first_shown.len(), SeenLog::CAPACITY);
        assert!(
            !seen.first_shown.contains_key("d/m"),
            "the oldest went first"
        );
    }

    #[test]
    fn seen_logs_are_named_by_a_hash_not_by_the_servers_id() {
        let dir = temporary_dir();
        let profile = Profile::open(&dir).unwrap();
        let mut seen = SeenLog::default();
        seen.record("d", "m", 1);

        profile.save_seen("../../escape", &seen).unwrap();

        assert_eq!(profile.seen("../../escape").unwrap(), seen);
        let files: Vec<_> = fs::read_dir(dir.join(SEEN)).unwrap().collect();
        assert_eq!(files.len(), 1);
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
