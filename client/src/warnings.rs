//! What the session reports about trust: key changes and membership changes, shown to the user
//! before anything is sealed for what changed (see `contacts.rs`).

use serde::Serialize;

use crate::Session;

/// A user's devices differ from the ones pinned in the profile: a device was added, removed or
/// replaced its keys. Either the user changed devices, or someone (the server included) is
/// impersonating them: compare the safety number again (`chat verify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyWarning {
    /// Whether these are the session's own user's devices.
    pub own: bool,
    /// The user id.
    pub user_id: String,
    /// The username.
    pub username: String,
    /// Whether the user was verified (sending to them stops until the change is accepted).
    pub was_verified: bool,
    /// Devices not seen before (`device:encryption-fp:signing-fp`, computed here).
    pub added: Vec<String>,
    /// Devices whose keys differ from their pins, or that came back after their revocation.
    pub changed: Vec<String>,
    /// Devices that disappeared (taken as revoked from now on).
    pub removed: Vec<String>,
    /// Whether nothing is sealed for this user (and no message verified with the new keys) until
    /// the change is accepted: `chat trust <username>` (or `chat verify <username>`).
    pub blocked: bool,
}

impl std::fmt::Display for KeyWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = format!(
            "{} device(s) added, {} with new keys, {} removed",
            self.added.len(),
            self.changed.len(),
            self.removed.len()
        );
        if self.own {
            write!(
                f,
                "WARNING: the devices of your account {} CHANGED ({counts}). If you did not do \
                 this, check `chat devices` and revoke what you do not know",
                self.username
            )?;
        } else {
            write!(
                f,
                "WARNING: the keys of {} CHANGED ({counts}){}",
                self.username,
                if self.was_verified {
                    "; they were verified"
                } else {
                    ""
                }
            )?;
        }
        if self.blocked {
            write!(
                f,
                ". Nothing is sent to {0} until you accept the new keys: compare the safety number \
                 (chat verify {0}) or accept them as they are (chat trust {0})",
                self.username
            )
        } else if self.own {
            Ok(())
        } else {
            write!(
                f,
                ". Compare the safety number again: chat verify {}",
                self.username
            )
        }
    }
}

/// The members of a group differ from the ones last shown (or the group is seen for the first
/// time). A member the server added on its own would read everything sent to the group from now
/// on: check the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MembershipWarning {
    /// The group id.
    pub group_id: String,
    /// The group's name.
    pub group_name: String,
    /// Whether the group is seen for the first time (then `added` lists every other member).
    pub first_seen: bool,
    /// Usernames of the members added.
    pub added: Vec<String>,
    /// Usernames of the members gone.
    pub removed: Vec<String>,
}

impl std::fmt::Display for MembershipWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first_seen {
            return write!(
                f,
                "NOTICE: #{} is new to this device; its other members: {}",
                self.group_name,
                list(&self.added)
            );
        }
        write!(
            f,
            "WARNING: the members of #{} CHANGED (added: {}; removed: {}). What you send now \
             reaches every member: check them with chat group members {}",
            self.group_name,
            list(&self.added),
            list(&self.removed),
            self.group_id
        )
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// What the session reports: key changes and membership changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    /// A user's keys changed.
    KeyWarning(KeyWarning),
    /// A group's members changed.
    MembershipWarning(MembershipWarning),
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::KeyWarning(warning) => warning.fmt(f),
            Warning::MembershipWarning(warning) => warning.fmt(f),
        }
    }
}

/// Receives each warning as soon as it is found: before anything is sealed for what changed.
pub type WarningSink = std::sync::Arc<dyn Fn(&Warning) + Send + Sync>;

impl Session {
    /// Reports a warning: to the sink at once when there is one, else to the queue that
    /// [`Session::take_warnings`] empties.
    pub(crate) fn warn(&self, warning: Warning) {
        let sink = self.warning_sink.lock().expect("not poisoned").clone();
        match sink {
            Some(sink) => sink(&warning),
            None => self.warnings.lock().expect("not poisoned").push(warning),
        }
    }
}
