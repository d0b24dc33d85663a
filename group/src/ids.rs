//! Identifiers and roles, parsed once at the edge (`api.rs`).

use std::fmt;

use uuid::Uuid;

/// A group; also the id of its conversation in the chat service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub Uuid);

/// A user (auth's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

/// A member's role. Owners may do everything; admins manage plain members and the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Full control, including deleting the group and changing roles.
    Owner,
    /// May rename the group and add or remove plain members.
    Admin,
    /// May read the membership and leave.
    Member,
}

impl Role {
    /// The value stored in `groups.members.role` (and `membership_events.role`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Reads a stored role. Only the three values `members_role_check` allows can be stored.
    pub fn from_stored(value: &str) -> Role {
        match value {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            _ => Role::Member,
        }
    }

    /// Whether this role may manage members and the name (owner or admin).
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
