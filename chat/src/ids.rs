//! Ids, parsed once at the edge (`api/`) so feature code never sees a malformed one.

use std::fmt;

use uuid::Uuid;

use crate::Error;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A conversation (for groups, the group id).
    ConversationId
);
id!(
    /// A user of the auth service.
    UserId
);
id!(
    /// A device of the auth service.
    DeviceId
);

/// Parses a UUID that an envelope's signature covers: only its canonical text (lowercase,
/// hyphenated) is accepted, because the server stores the UUID and delivers that text, so an
/// envelope signed over any other spelling could never be verified by its recipients.
///
/// # Errors
/// [`Error::InvalidArgument`] when `value` is not a UUID in canonical text.
pub fn parse_canonical_uuid(field: &str, value: &str) -> Result<Uuid, Error> {
    if !e2ee::is_canonical_uuid(value) {
        return Err(Error::InvalidArgument(format!(
            "{field} must be a UUID in canonical form (lowercase, hyphenated)"
        )));
    }
    Ok(common::ids::parse_uuid(field, value)?)
}
