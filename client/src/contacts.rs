//! Users and their devices from auth, and what this device trusts of them.
//!
//! The server is not trusted with keys: every fingerprint is computed here from the key bytes the
//! client uses (the `*_fingerprint` fields auth sends are ignored), and the keys are pinned on
//! first use ([`crate::profile::Contact`]). When the server later lists other keys for a user:
//! - a device whose keys differ from its pin (or that came back after its revocation) is refused
//!   for any contact until the user accepts it (`chat trust`, or `chat verify`);
//! - a new device of a verified contact is refused the same way;
//! - a new device of a contact who is not verified is pinned, and the change is reported first;
//! - a device gone from the list is taken as revoked from that moment.
//!
//! Every change is reported as a [`KeyWarning`] before anything is sealed for the new keys
//! (through the session's warning sink, [`Session::set_warning_sink`], or its queue). Group
//! memberships are pinned too (`groups.rs`), and a change is reported as a
//! [`crate::MembershipWarning`].

use std::collections::{BTreeMap, BTreeSet};

use proto::auth::v1 as auth_pb;
use serde::Serialize;

use crate::{
    Error, Result, Session,
    profile::{Contact, Contacts, PinnedDevice},
    session::now,
    warnings::{KeyWarning, Warning},
};

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

/// What `chat trust` accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trusted {
    /// The user.
    pub username: String,
    /// The user id.
    pub user_id: String,
    /// The devices whose keys were accepted (`device:encryption-fp:signing-fp`).
    pub accepted: Vec<String>,
    /// Whether the user is still marked verified (never after `trust`: compare the safety number
    /// to verify again).
    pub verified: bool,
}

/// Why a message's sender key is not used.
pub(crate) enum SenderKey {
    /// The pinned key, usable for this message.
    Trusted(Vec<u8>),
    /// The device is known but refused for this message.
    Refused(&'static str),
    /// The device is not pinned.
    Unknown,
}

impl Session {
    /// Looks a user up by username, with their devices (reviewing their keys).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown username.
    pub async fn user_by_name(&self, username: &str) -> Result<auth_pb::UserWithDevices> {
        let mut users = self.lookup(Vec::new(), vec![username.to_owned()]).await?;
        users
            .pop()
            .ok_or_else(|| Error::not_found(format!("no user named {username}")))
    }

    /// Looks users up by id (fresh from auth), reviewing their keys.
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
            .ok_or_else(|| Error::not_found(format!("no user with id {user_id}")))
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

    /// Compares `user`'s keys, as computed from the bytes the server sent, with the pinned ones
    /// (see the module docs), and reports what changed.
    pub(crate) fn pin(&self, user: &auth_pb::UserWithDevices) -> Result<()> {
        let Some(profile_user) = &user.user else {
            return Ok(());
        };
        // The user's own devices are pinned too: a device the user did not add (by the server,
        // say) would otherwise silently receive every message this device sends.
        let observed = self.observed_devices(user);
        let mut contacts = self.profile.contacts()?;
        let now = now();
        let (changes, was_verified) = match contacts.get_mut(&profile_user.user_id) {
            None => {
                contacts.insert(
                    profile_user.user_id.clone(),
                    Contact::new(profile_user.username.clone(), observed),
                );
                (Changes::default(), false)
            }
            Some(contact) => {
                let before = contact.clone();
                let changes = review(contact, &observed, now);
                contact.username.clone_from(&profile_user.username);
                if *contact == before {
                    return Ok(());
                }
                (changes, contact.verified)
            }
        };
        self.profile.save_contacts(&contacts)?;
        if !changes.is_empty() {
            let blocked = contacts
                .get(&profile_user.user_id)
                .is_some_and(|contact| !contact.pending.is_empty());
            self.warn(Warning::KeyWarning(KeyWarning {
                own: profile_user.user_id == self.account.user_id,
                user_id: profile_user.user_id.clone(),
                username: profile_user.username.clone(),
                was_verified,
                added: changes.added,
                changed: changes.changed,
                removed: changes.removed,
                blocked,
            }));
        }
        Ok(())
    }

    /// The devices of `user` with keys, as this client computes their pins. This device is
    /// always listed with its own keys, whatever the server says of it.
    fn observed_devices(&self, user: &auth_pb::UserWithDevices) -> BTreeMap<String, PinnedDevice> {
        let now = now();
        let mut observed: BTreeMap<String, PinnedDevice> = user
            .devices
            .iter()
            .filter_map(|device| {
                let keys = device.keys.as_ref()?;
                Some((
                    device.device_id.clone(),
                    pinned(&keys.encryption_public_key, &keys.signing_public_key, now),
                ))
            })
            .collect();
        let is_me = user
            .user
            .as_ref()
            .is_some_and(|u| u.user_id == self.account.user_id);
        if is_me && let Some(mine) = self.public_keys() {
            observed.insert(
                self.account.device_id.clone(),
                pinned(&mine.encryption_spki, &mine.signing_public_key, now),
            );
        }
        observed
    }

    /// The encryption keys to seal for: every device of `users`, each of which must be trusted
    /// (pinned, not revoked, not pending).
    ///
    /// # Errors
    /// [`Error::Untrusted`] naming every user with keys not accepted yet.
    pub(crate) fn trusted_recipients(
        &self,
        users: &[auth_pb::UserWithDevices],
    ) -> Result<Vec<e2ee::RecipientDevice>> {
        let contacts = self.profile.contacts()?;
        let mut recipients = Vec::new();
        let mut untrusted = BTreeSet::new();
        for user in users {
            let user_id = user.user.as_ref().map(|u| u.user_id.as_str()).unwrap_or("");
            let username = user
                .user
                .as_ref()
                .map(|u| u.username.as_str())
                .unwrap_or("");
            let contact = contacts.get(user_id);
            for (device_id, device) in self.observed_devices(user) {
                let encryption_spki =
                    if device_id == self.account.device_id && user_id == self.account.user_id {
                        self.public_keys()
                            .map(|keys| keys.encryption_spki.clone())
                            .unwrap_or_default()
                    } else {
                        let trusted = contact.is_some_and(|contact| {
                            contact.pending.is_empty()
                                && contact.keys.get(&device_id).is_some_and(|pin| {
                                    pin.revoked_at.is_none() && same_keys(pin, &device)
                                })
                        });
                        if !trusted {
                            untrusted.insert(username.to_owned());
                            continue;
                        }
                        spki_of(user, &device_id)
                    };
                recipients.push(e2ee::RecipientDevice {
                    device_id,
                    encryption_spki,
                });
            }
        }
        if untrusted.is_empty() {
            return Ok(recipients);
        }
        let names: Vec<String> = untrusted.into_iter().collect();
        Err(Error::Untrusted(format!(
            "not sent: the keys of {} changed and are not accepted yet. Compare the safety \
             number (chat verify <user>) or accept the keys as they are (chat trust <user>)",
            names.join(", ")
        )))
    }

    /// The safety number with `username`, computed from the key bytes of both users' current
    /// devices. With `mark_verified`, also records that the user compared it: exactly these
    /// keys are then trusted (pending changes accepted) and marked verified until they change.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown user.
    pub async fn safety_number(&self, username: &str, mark_verified: bool) -> Result<SafetyNumber> {
        self.safety_number_if(username, mark_verified.then_some(None))
            .await
    }

    /// Marks `username` verified, as [`Session::safety_number`] does, but only if the safety
    /// number of their keys now is `shown`: the one the user compared (`chat verify` shows it,
    /// then asks), so that keys that changed meanwhile are never marked verified.
    ///
    /// # Errors
    /// [`Error::Usage`] for the user's own name, or when the number changed since it was shown;
    /// [`Error::NotFound`] for an unknown user.
    pub async fn verify(&self, username: &str, shown: &str) -> Result<SafetyNumber> {
        self.safety_number_if(username, Some(Some(shown))).await
    }

    /// `mark`: `None` shows the number; `Some(None)` marks whatever it is; `Some(Some(n))` marks
    /// it only if it is `n`.
    async fn safety_number_if(
        &self,
        username: &str,
        mark: Option<Option<&str>>,
    ) -> Result<SafetyNumber> {
        let them = self.user_by_name(username).await?;
        if mark.is_some()
            && them.user.as_ref().map(|user| &user.user_id) == Some(&self.account.user_id)
        {
            return Err(Error::usage(
                "you cannot verify yourself: compare safety numbers with another user (chat verify \
                 <username>); a change of your own devices is accepted with chat trust <your username>",
            ));
        }
        let me = self.user_by_id(&self.account.user_id.clone(), true).await?;
        let their_id = them.user.clone().unwrap_or_default().user_id;
        let number = e2ee::safety_number(
            &self.account.user_id,
            &fingerprints(&self.observed_devices(&me)),
            &their_id,
            &fingerprints(&self.observed_devices(&them)),
        );
        if let Some(Some(shown)) = mark
            && shown != number
        {
            return Err(Error::usage(format!(
                "the keys of {username} changed while you compared the safety number: nothing was \
                 marked verified; run chat verify {username} again"
            )));
        }
        let verified = if mark.is_some() {
            self.accept(&them, true)?;
            true
        } else {
            // Pending keys are in the number shown and were not verified.
            self.profile
                .contacts()?
                .get(&their_id)
                .is_some_and(|contact| contact.verified && contact.pending.is_empty())
        };
        Ok(SafetyNumber {
            username: username.to_owned(),
            user_id: their_id,
            safety_number: number,
            verified,
        })
    }

    /// Accepts `username`'s current keys as they are (`chat trust`): their pending changes are
    /// trusted and sending to them resumes. They are no longer marked verified: compare the
    /// safety number to verify them again.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown user.
    pub async fn trust(&self, username: &str) -> Result<Trusted> {
        let them = self.user_by_name(username).await?;
        let accepted = self.accept(&them, false)?;
        let user = them.user.unwrap_or_default();
        Ok(Trusted {
            username: user.username,
            user_id: user.user_id,
            accepted,
            verified: false,
        })
    }

    /// Pins exactly the keys `user` has now, marking them verified or not.
    fn accept(&self, user: &auth_pb::UserWithDevices, verified: bool) -> Result<Vec<String>> {
        let profile_user = user.user.clone().unwrap_or_default();
        let observed = self.observed_devices(user);
        let mut contacts = self.profile.contacts()?;
        let contact = contacts
            .entry(profile_user.user_id.clone())
            .or_insert_with(|| Contact::new(profile_user.username.clone(), BTreeMap::new()));
        let mut accepted = Vec::new();
        for (device_id, device) in &observed {
            let known = contact
                .keys
                .get(device_id)
                .is_some_and(|pin| pin.revoked_at.is_none() && same_keys(pin, device));
            if known {
                keep_encryption_key(contact.keys.get_mut(device_id), device);
            } else {
                accepted.push(describe(device_id, device));
                contact.keys.insert(device_id.clone(), device.clone());
            }
        }
        let now = now();
        for (device_id, pin) in &mut contact.keys {
            if !observed.contains_key(device_id) && pin.revoked_at.is_none() {
                pin.revoked_at = Some(now);
            }
        }
        contact.pending.clear();
        contact.verified = verified;
        contact.username = profile_user.username;
        self.profile.save_contacts(&contacts)?;
        Ok(accepted)
    }
}

/// The pinned Ed25519 key of a sender's device, for a message the server stamped `sent_at`
/// (Unix seconds): refused for a device revoked before then, or a new device not accepted
/// yet.
pub(crate) fn pinned_sender_key(
    contacts: &Contacts,
    user_id: &str,
    device_id: &str,
    sent_at: i64,
) -> SenderKey {
    let Some(contact) = contacts.get(user_id) else {
        return SenderKey::Unknown;
    };
    // Only the trusted pin verifies: a pending key never does (a message signed with it
    // fails against the pin), while the pinned key still verifies what it signed.
    let Some(pin) = contact.keys.get(device_id) else {
        if contact.pending.contains_key(device_id) {
            return SenderKey::Refused(
                "the sender's device is new and not accepted yet (chat trust)",
            );
        }
        return SenderKey::Unknown;
    };
    // Stamped in the second the revocation was noticed: given the benefit of the doubt (the
    // stamp is the server's clock, the revocation this device's).
    if pin
        .revoked_at
        .is_some_and(|revoked_at| sent_at > revoked_at)
    {
        return SenderKey::Refused("the sending device was revoked before this message");
    }
    match hex::decode(&pin.signing_key) {
        Ok(key) if !key.is_empty() => SenderKey::Trusted(key),
        _ => SenderKey::Unknown,
    }
}

/// What a review found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Reviews the devices the server lists now (`observed`) against `contact`'s pins, updating them
/// (see the module docs). A change already pending is not reported again.
fn review(contact: &mut Contact, observed: &BTreeMap<String, PinnedDevice>, now: i64) -> Changes {
    let mut changes = Changes::default();
    for (device_id, device) in observed {
        let already_pending = contact
            .pending
            .get(device_id)
            .is_some_and(|pending| same_keys(pending, device));
        match contact.keys.get(device_id) {
            Some(pin) if pin.revoked_at.is_none() && same_keys(pin, device) => {
                contact.pending.remove(device_id);
                keep_encryption_key(contact.keys.get_mut(device_id), device);
            }
            Some(_) => {
                if !already_pending {
                    contact.pending.insert(device_id.clone(), device.clone());
                    changes.changed.push(describe(device_id, device));
                }
            }
            None if contact.verified => {
                if !already_pending {
                    contact.pending.insert(device_id.clone(), device.clone());
                    changes.added.push(describe(device_id, device));
                }
            }
            None => {
                contact.keys.insert(device_id.clone(), device.clone());
                changes.added.push(describe(device_id, device));
            }
        }
    }
    for (device_id, pin) in &mut contact.keys {
        if pin.revoked_at.is_none() && !observed.contains_key(device_id) {
            pin.revoked_at = Some(now);
            changes.removed.push(describe(device_id, pin));
        }
    }
    contact
        .pending
        .retain(|device_id, _| observed.contains_key(device_id));
    changes
}

fn pinned(encryption_spki: &[u8], signing_key: &[u8], now: i64) -> PinnedDevice {
    PinnedDevice {
        encryption_fingerprint: hex::encode(e2ee::fingerprint(encryption_spki)),
        signing_key: hex::encode(signing_key),
        encryption_key: hex::encode(encryption_spki),
        first_seen_at: now,
        revoked_at: None,
    }
}

/// Fills in the key bytes of a pin written before they were kept, from the same keys (same
/// fingerprint) listed now: what sealing without the server needs.
fn keep_encryption_key(pin: Option<&mut PinnedDevice>, observed: &PinnedDevice) {
    if let Some(pin) = pin
        && pin.encryption_key.is_empty()
    {
        pin.encryption_key.clone_from(&observed.encryption_key);
    }
}

fn same_keys(a: &PinnedDevice, b: &PinnedDevice) -> bool {
    a.encryption_fingerprint == b.encryption_fingerprint && a.signing_key == b.signing_key
}

/// `device:encryption-fp:signing-fp`, the fingerprints computed here.
fn describe(device_id: &str, device: &PinnedDevice) -> String {
    let signing = hex::decode(&device.signing_key)
        .map(|key| hex::encode(e2ee::fingerprint(&key)))
        .unwrap_or_default();
    format!("{device_id}:{}:{signing}", device.encryption_fingerprint)
}

fn spki_of(user: &auth_pb::UserWithDevices, device_id: &str) -> Vec<u8> {
    user.devices
        .iter()
        .find(|device| device.device_id == device_id)
        .and_then(|device| device.keys.as_ref())
        .map(|keys| keys.encryption_public_key.clone())
        .unwrap_or_default()
}

/// Both fingerprints of every device, computed from the pinned keys, for the safety number.
fn fingerprints(devices: &BTreeMap<String, PinnedDevice>) -> Vec<[u8; 32]> {
    devices
        .values()
        .flat_map(|device| {
            let encryption = hex::decode(&device.encryption_fingerprint).ok();
            let signing = hex::decode(&device.signing_key)
                .ok()
                .map(|key| e2ee::fingerprint(&key).to_vec());
            [encryption, signing]
        })
        .flatten()
        .filter_map(|fingerprint| fingerprint.as_slice().try_into().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(encryption: &[u8], signing: &[u8]) -> PinnedDevice {
        pinned(encryption, signing, 1)
    }

    fn observed(devices: &[(&str, PinnedDevice)]) -> BTreeMap<String, PinnedDevice> {
        devices
            .iter()
            .map(|(id, device)| ((*id).to_owned(), device.clone()))
            .collect()
    }

    #[test]
    fn a_device_with_other_keys_is_pending_for_any_contact_and_reported_once() {
        let mut contact = Contact::new("bob".into(), observed(&[("d1", device(b"e1", b"s1"))]));
        let substituted = observed(&[("d1", device(b"mallory", b"s1"))]);

        let first = review(&mut contact, &substituted, 5);
        let again = review(&mut contact, &substituted, 6);

        assert_eq!(first.changed.len(), 1);
        assert!(again.is_empty(), "{again:?}");
        assert!(contact.pending.contains_key("d1"));
        assert_eq!(contact.keys["d1"], device(b"e1", b"s1"), "the pin stays");
    }

    #[test]
    fn a_new_device_is_pinned_for_an_unverified_contact_and_pending_for_a_verified_one() {
        let old = observed(&[("d1", device(b"e1", b"s1"))]);
        let with_ghost = observed(&[("d1", device(b"e1", b"s1")), ("d2", device(b"e2", b"s2"))]);
        let mut unverified = Contact::new("bob".into(), old.clone());
        let mut verified = Contact::new("bob".into(), old);
        verified.verified = true;

        let unverified_changes = review(&mut unverified, &with_ghost, 5);
        let verified_changes = review(&mut verified, &with_ghost, 5);

        assert_eq!(unverified_changes.added.len(), 1);
        assert!(unverified.keys.contains_key("d2") && unverified.pending.is_empty());
        assert_eq!(verified_changes.added.len(), 1);
        assert!(!verified.keys.contains_key("d2") && verified.pending.contains_key("d2"));
    }

    #[test]
    fn a_device_gone_is_revoked_from_then_and_its_return_is_pending() {
        let mut contact = Contact::new(
            "bob".into(),
            observed(&[("d1", device(b"e1", b"s1")), ("d2", device(b"e2", b"s2"))]),
        );

        let gone = review(&mut contact, &observed(&[("d1", device(b"e1", b"s1"))]), 7);
        let back = review(
            &mut contact,
            &observed(&[("d1", device(b"e1", b"s1")), ("d2", device(b"e2", b"s2"))]),
            8,
        );

        assert_eq!(gone.removed.len(), 1);
        assert_eq!(contact.keys["d2"].revoked_at, Some(7));
        assert_eq!(back.changed.len(), 1);
        assert!(contact.pending.contains_key("d2"));
    }

    #[test]
    fn only_a_trusted_pin_verifies_and_not_after_its_revocation() {
        let mut contact = Contact::new("bob".into(), observed(&[("d1", device(b"e1", b"s1"))]));
        contact.verified = true;
        review(
            &mut contact,
            &observed(&[
                ("d1", device(b"e1", b"mallory")),
                ("d2", device(b"e2", b"s2")),
            ]),
            5,
        );
        let contacts = Contacts::from([("u".to_owned(), contact)]);
        let key = |device_id, sent_at| pinned_sender_key(&contacts, "u", device_id, sent_at);

        assert!(matches!(key("d1", 6), SenderKey::Trusted(k) if k == b"s1"));
        assert!(matches!(key("d2", 6), SenderKey::Refused(_)));
        assert!(matches!(key("d3", 6), SenderKey::Unknown));

        let mut contacts = contacts;
        review(contacts.get_mut("u").unwrap(), &BTreeMap::new(), 7);
        let key = |sent_at| pinned_sender_key(&contacts, "u", "d1", sent_at);
        assert!(
            matches!(key(7), SenderKey::Trusted(_)),
            "the second it was noticed"
        );
        assert!(matches!(key(8), SenderKey::Refused(_)));
    }

    #[test]
    fn contacts_of_format_1_keep_their_pins() {
        let json = r#"{"u1": {"username": "bob", "verified": true,
            "devices": ["d1:aa:bb"], "signing_keys": {"d1": "0102", "d0": "0304"}}}"#;
        let mut contacts: Contacts = serde_json::from_str(json).unwrap();

        let contact = contacts.get_mut("u1").unwrap();
        contact.upgrade(9);

        assert!(contact.verified);
        assert_eq!(contact.keys["d1"].encryption_fingerprint, "aa");
        assert_eq!(contact.keys["d1"].signing_key, "0102");
        assert_eq!(contact.keys["d0"].revoked_at, Some(9));
        assert!(
            !serde_json::to_string(contact)
                .unwrap()
                .contains("signing_keys")
        );
    }
}
