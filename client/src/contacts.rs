//! Users and their devices from auth, pinned on first use (TOFU), safety numbers and
//! verification.

use std::collections::BTreeSet;

use proto::auth::v1 as auth_pb;
use serde::Serialize;

use crate::{Error, Result, Session, profile::Contact};

/// A contact's keys differ from the ones pinned in the profile: a device was added, removed or
/// replaced its keys. Either the contact changed devices, or someone (the server included) is
/// impersonating them: compare the safety number again (`chat verify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyWarning {
    /// Whether these are the session's own user's devices.
    pub own: bool,
    /// The user id.
    pub user_id: String,
    /// The username.
    pub username: String,
    /// Whether the old keys had been verified (the verification is now void).
    pub was_verified: bool,
    /// Device keys not seen before (`device:encryption-fp:signing-fp`).
    pub added: Vec<String>,
    /// Device keys that disappeared.
    pub removed: Vec<String>,
}

impl std::fmt::Display for KeyWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.own {
            return write!(
                f,
                "WARNING: the devices of your account {} CHANGED ({} added, {} removed). \
                 If you did not do this, check `chat devices` and revoke what you do not know",
                self.username,
                self.added.len(),
                self.removed.len()
            );
        }
        write!(
            f,
            "WARNING: the keys of {} CHANGED ({} device key(s) added, {} removed){}. \
             Compare the safety number again: chat verify {}",
            self.username,
            self.added.len(),
            self.removed.len(),
            if self.was_verified {
                "; they were verified, and no longer are"
            } else {
                ""
            },
            self.username
        )
    }
}

/// The safety number of the session's user and another user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SafetyNumber {
    /// The other user's name.
    pub username: String,
    /// The other user's id.
    pub user_id: String,
    /// 60 digits in 12 groups of 5.
    pub safety_number: String,
    /// Whether the user is now marked verified.
    pub verified: bool,
}

impl Session {
    /// Looks a user up by username, with their devices (pinning their keys).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown username.
    pub async fn user_by_name(&self, username: &str) -> Result<auth_pb::UserWithDevices> {
        let mut users = self.lookup(Vec::new(), vec![username.to_owned()]).await?;
        users
            .pop()
            .ok_or_else(|| Error::NotFound(format!("no user named {username}")))
    }

    /// Looks users up by id (fresh from auth), pinning their keys.
    pub(crate) async fn users_by_id(
        &self,
        user_ids: Vec<String>,
    ) -> Result<Vec<auth_pb::UserWithDevices>> {
        let mut found = Vec::with_capacity(user_ids.len());
        for chunk in user_ids.chunks(100) {
            found.extend(self.lookup(chunk.to_vec(), Vec::new()).await?);
        }
        Ok(found)
    }

    /// A user by id, from this session's cache unless `fresh`.
    pub(crate) async fn user_by_id(
        &self,
        user_id: &str,
        fresh: bool,
    ) -> Result<auth_pb::UserWithDevices> {
        if !fresh && let Some(user) = self.users.lock().expect("not poisoned").get(user_id) {
            return Ok(user.clone());
        }
        self.users_by_id(vec![user_id.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound(format!("no user with id {user_id}")))
    }

    async fn lookup(
        &self,
        user_ids: Vec<String>,
        usernames: Vec<String>,
    ) -> Result<Vec<auth_pb::UserWithDevices>> {
        let request = auth_pb::LookupUsersRequest {
            user_ids,
            usernames,
        };
        let response = self
            .call(request, |request| {
                let mut auth = self.auth.clone();
                async move { auth.lookup_users(request).await }
            })
            .await?;
        for user in &response.users {
            self.pin(user)?;
            let id = user.user.as_ref().map(|u| u.user_id.clone());
            self.users
                .lock()
                .expect("not poisoned")
                .insert(id.unwrap_or_default(), user.clone());
        }
        Ok(response.users)
    }

    /// Compares `user`'s keys with the pinned ones: pins them the first time, and records a
    /// [`KeyWarning`] (and drops the verified mark) when they changed.
    pub(crate) fn pin(&self, user: &auth_pb::UserWithDevices) -> Result<()> {
        let Some(profile_user) = &user.user else {
            return Ok(());
        };
        // The user's own devices are pinned too: a device the user did not add (by the server,
        // say) would otherwise silently receive every message this device sends.
        let devices = device_key_set(user);
        let mut contacts = self.profile.contacts()?;
        let warning = match contacts.get_mut(&profile_user.user_id) {
            None => {
                contacts.insert(
                    profile_user.user_id.clone(),
                    Contact {
                        username: profile_user.username.clone(),
                        devices,
                        verified: false,
                        signing_keys: signing_keys(user),
                    },
                );
                None
            }
            Some(contact) if contact.devices == devices => return Ok(()),
            Some(contact) => {
                contact.signing_keys.extend(signing_keys(user));
                let warning = KeyWarning {
                    own: profile_user.user_id == self.account.user_id,
                    user_id: profile_user.user_id.clone(),
                    username: profile_user.username.clone(),
                    was_verified: contact.verified,
                    added: devices.difference(&contact.devices).cloned().collect(),
                    removed: contact.devices.difference(&devices).cloned().collect(),
                };
                contact.devices = devices;
                contact.verified = false;
                contact.username.clone_from(&profile_user.username);
                Some(warning)
            }
        };
        self.profile.save_contacts(&contacts)?;
        if let Some(warning) = warning {
            self.warnings.lock().expect("not poisoned").push(warning);
        }
        Ok(())
    }

    /// The safety number with `username`, computed from both users' current keys. With
    /// `mark_verified`, also records that the user compared it (until their keys change).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown user.
    pub async fn safety_number(&self, username: &str, mark_verified: bool) -> Result<SafetyNumber> {
        let them = self.user_by_name(username).await?;
        let me = self.user_by_id(&self.account.user_id.clone(), true).await?;
        let their_id = them.user.clone().unwrap_or_default().user_id;
        let number = e2ee::safety_number(
            &self.account.user_id,
            &fingerprints(&me),
            &their_id,
            &fingerprints(&them),
        );
        let mut contacts = self.profile.contacts()?;
        let contact = contacts.entry(their_id.clone()).or_default();
        if mark_verified {
            contact.verified = true;
        }
        let verified = contact.verified;
        if mark_verified {
            self.profile.save_contacts(&contacts)?;
        }
        Ok(SafetyNumber {
            username: username.to_owned(),
            user_id: their_id,
            safety_number: number,
            verified,
        })
    }
}

/// The pinned form of a user's device keys.
fn device_key_set(user: &auth_pb::UserWithDevices) -> BTreeSet<String> {
    user.devices
        .iter()
        .map(|device| {
            format!(
                "{}:{}:{}",
                device.device_id,
                hex::encode(&device.encryption_key_fingerprint),
                hex::encode(&device.signing_key_fingerprint)
            )
        })
        .collect()
}

/// Both fingerprints of every device, for the safety number.
fn fingerprints(user: &auth_pb::UserWithDevices) -> Vec<[u8; 32]> {
    user.devices
        .iter()
        .flat_map(|device| {
            [
                &device.encryption_key_fingerprint,
                &device.signing_key_fingerprint,
            ]
        })
        .filter_map(|fingerprint| fingerprint.as_slice().try_into().ok())
        .collect()
}

fn signing_keys(user: &auth_pb::UserWithDevices) -> std::collections::BTreeMap<String, String> {
    user.devices
        .iter()
        .filter_map(|device| {
            let keys = device.keys.as_ref()?;
            Some((
                device.device_id.clone(),
                hex::encode(&keys.signing_public_key),
            ))
        })
        .collect()
}
